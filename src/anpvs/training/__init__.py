"""Training: the one loop shared by every method (:mod:`.loop`, :func:`~.loop.fit`), the step and its optimizers
(:mod:`.step`), the divergence guard (:mod:`.divergence`) and the run folder's lock (:mod:`.runlock`)."""
