"""Sparsifiers: the pruning schemes the training loop drives through one small protocol (:class:`Sparsifier`).

A sparsifier owns parameters of the model that are trained apart from the weights (their own optimizer and
LR schedule, their own loss), adds its scalars to the epoch log and says when training cannot go on. The
loop (:class:`anpvs.training.step.TrainStep`, :func:`anpvs.training.loop.fit`) iterates over
:func:`sparsifiers_of` and names no scheme. Every module of this package is imported on the first lookup of
:data:`anpvs.core.registry.SPARSIFIERS`, so a new scheme is one file here with ``@register_sparsifier("name")``.

A method may bring its own scheme (:meth:`anpvs.methods.base.Method.sparsifiers`): ADMM weight pruning
(:mod:`anpvs.sparsifiers.admm`) adds a penalty to the loss, updates Z/U after epochs, re-applies its masks
after steps and keeps its state in the method's checkpoint state; it owns no parameters.
"""

from .base import Sparsifier, register_sparsifier, sparsifiers_of

__all__ = ["Sparsifier", "register_sparsifier", "sparsifiers_of"]
