"""Sparsifiers: the pruning schemes the training loop drives through one small protocol (:class:`Sparsifier`).

A sparsifier owns parameters of the model that are trained apart from the weights (their own optimizer and
LR schedule, their own loss), adds its scalars to the epoch log and says when training cannot go on. The
loop (:class:`anpvs.step.TrainStep`, :func:`anpvs.train.fit`) iterates over :func:`sparsifiers_of` and names
no scheme. Every module of this package is imported on the first lookup of :data:`anpvs.registry.SPARSIFIERS`,
so a new scheme is one file here with ``@register_sparsifier("name")``.

ADMM (:mod:`anpvs.methods.admm`) prunes the weights themselves and needs no parameters of its own: it plugs
in through the method hooks (``on_step_end``, ``on_epoch_end``, ``epoch_metrics``, ``state_dict``).
"""

from .base import Sparsifier, register_sparsifier, sparsifiers_of

__all__ = ["Sparsifier", "register_sparsifier", "sparsifiers_of"]
