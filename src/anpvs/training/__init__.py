"""Training: the one loop shared by every method (:mod:`.loop`, :func:`~.loop.fit`), a run's config resolved against
the plug-ins (:mod:`.run_config`, :func:`~.run_config.build_config`), the step and its optimizers (:mod:`.step`), the
divergence guard (:mod:`.divergence`) and the run folder's lock (:mod:`.runlock`)."""
