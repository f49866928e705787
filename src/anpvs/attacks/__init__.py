"""Attacks take the model at call time: ``attack(model, x, y) -> x_adv``."""

from .autoattack import AutoAttack, OptionalDependencyError, autoattack_flags
from .base import Ball, ThreatSpec, eval_mode
from .pgd import ATTACK_LOSSES, FGSM, PGD

__all__ = ["ATTACK_LOSSES", "FGSM", "PGD", "AutoAttack", "Ball", "OptionalDependencyError", "ThreatSpec",
           "autoattack_flags", "eval_mode"]
