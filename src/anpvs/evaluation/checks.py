"""Sanity checks of a robustness evaluation, in code (STYLE rule 10).

Each check returns a list of warning texts (empty: nothing suspicious) and also emits each of them with
``warnings.warn(..., AnpvsEvaluationWarning)``. Every text ends with a link to its section of
``docs/checks.md``, which explains what the warning means, why it matters and what to do.

Model checks, on one batch:

* :func:`check_stochastic_forward`: two eval-mode forwards of the same batch differ;
* :func:`check_probability_output`: the model returns probabilities instead of logits;
* :func:`check_zero_gradients`: the input gradient of the loss vanishes (gradient masking).

Result checks, on accuracies in %:

* :func:`check_robust_above_clean`: an attack raised the accuracy;
* :func:`check_black_box_below_white_box`: a transfer attack beat the white-box attack;
* :func:`check_eps_sweep`: the accuracy does not fall towards 0 as eps grows, or rises with eps.

:func:`anpvs.jobs.check.check_checkpoint` runs all of them on a checkpoint (``anpvs check``).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..attacks import PGD, eval_mode

DOCS = "docs/checks.md"

#: eps of the sweep as multiples of the training radius attack.eps (plus the box-filling radius, see :func:`sweep_eps`)
SWEEP_MULTIPLES = (0.0, 1 / 3, 2 / 3, 1.0, 5 / 3)


class AnpvsEvaluationWarning(UserWarning):
    """A robustness evaluation looks unreliable; the message links to its section of ``docs/checks.md``."""


def _flag(anchor: str, message: str) -> str:
    text = f"{message} See {DOCS}#{anchor}"
    warnings.warn(text, AnpvsEvaluationWarning, stacklevel=3)
    return text


# --- model checks -----------------------------------------------------------------------------------------------

def check_stochastic_forward(model: nn.Module, x: Tensor, *, n: int = 3, rtol: float = 1e-4,
                             eot: int = 1) -> list[str]:
    """(a) ``n`` eval-mode forwards of ``x`` differ by more than ``rtol`` (relative to the largest logit).

    A stochastic model (e.g. a Bayesian network with weight sampling on) must be attacked with EOT;
    with ``eot > 1`` the evaluation already does that and nothing is reported."""
    with torch.no_grad(), eval_mode(model):
        outs = [model(x) for _ in range(max(n, 2))]
    scale = outs[0].abs().max().clamp_min(1e-12)
    diff = max(((o - outs[0]).abs().max() / scale).item() for o in outs[1:])
    changed = sum((o.argmax(1) != outs[0].argmax(1)).sum().item() for o in outs[1:])
    if (diff <= rtol and changed == 0) or eot > 1:
        return []
    return [_flag("stochastic-forward",
                  f"the model is stochastic in eval mode: {len(outs)} forwards of the same {len(x)} images differ "
                  f"by up to {diff:.2g} (relative) and change {changed} predictions; attack it with EOT "
                  f"(anpvs eval --eot N) and predict with a sample ensemble (--sample-weights --ensemble K).")]


def check_probability_output(model: nn.Module, x: Tensor, *, atol: float = 1e-5) -> list[str]:
    """(b) every output row is non-negative and sums to 1: the model returns probabilities, not logits."""
    with torch.no_grad(), eval_mode(model):
        out = model(x)
    if out.min() >= -atol and out.max() <= 1 + atol and ((out.sum(1) - 1).abs() <= atol).all():
        return [_flag("probability-output",
                      "the model's outputs are non-negative and every row sums to 1: they look like probabilities, "
                      "but attacks and metrics expect logits (cross-entropy on probabilities saturates).")]
    return []


def check_zero_gradients(model: nn.Module, x: Tensor, y: Tensor, *, atol: float = 0.0) -> list[str]:
    """(c) the input gradient of the cross-entropy is zero (max |grad| <= ``atol``) for some examples.

    This is the gradient PGD's cross-entropy sees. Besides non-differentiable layers it also catches logit
    margins so large (above ~100) that the softmax saturates and the gradient underflows to 0 in float32."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(model):
        logits = model(x)
        if logits.requires_grad:
            loss = F.cross_entropy(logits, y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        else:  # the graph was cut (detach, no_grad, a non-differentiable op): no gradient at all
            grad = None
    per_example = torch.zeros(len(x)) if grad is None else grad.detach().flatten(1).abs().amax(1).cpu()
    n_zero = int((per_example <= atol).sum())
    if n_zero == 0:
        return []
    return [_flag("zero-gradients",
                  f"the input gradient of the loss is zero for {n_zero} of {len(x)} examples "
                  f"({100.0 * n_zero / len(x):.0f}%): gradient-based attacks cannot move them, so their robust "
                  f"accuracy is overestimated (gradient masking).")]


def check_model(model: nn.Module, x: Tensor, y: Tensor, *, eot: int = 1) -> list[str]:
    """Checks (a) to (c) on one batch."""
    return (check_stochastic_forward(model, x, eot=eot) + check_probability_output(model, x)
            + check_zero_gradients(model, x, y))


# --- result checks ----------------------------------------------------------------------------------------------

def check_robust_above_clean(clean_acc: float, robust: Mapping[str, float], *, tol: float = 0.0) -> list[str]:
    """(d) an attack's accuracy (%) is above the clean accuracy (%) by more than ``tol`` points."""
    return [_flag("robust-above-clean",
                  f"accuracy under {name} ({acc:.2f}%) is above the clean accuracy ({clean_acc:.2f}%): the attack "
                  f"made the model more accurate, so it is not optimising the right objective.")
            for name, acc in robust.items() if acc > clean_acc + tol]


def check_black_box_below_white_box(white: Mapping[str, float], black: Mapping[str, float], *,
                                    tol: float = 0.0) -> list[str]:
    """(e) a transfer (black-box) attack leaves a lower accuracy (%) than the same white-box attack."""
    return [_flag("black-box-below-white-box",
                  f"the black-box (transfer) {name} leaves {black[name]:.2f}% accuracy, below the white-box "
                  f"{name}'s {white[name]:.2f}%: an attack without access to the model beat one with full access, "
                  f"so the white-box attack is weak on this model.")
            for name in white if name in black and black[name] < white[name] - tol]


def check_metrics(metrics: Mapping[str, Any], *, tol: float = 0.0) -> list[str]:
    """Checks (d) and (e) on the metrics of :func:`anpvs.evaluation.evaluate.evaluate` (``clean_acc``, ``<name>_acc``,
    ``bb_<name>_acc``), then the warnings AutoAttack's own checks gave (``<name>_flags``)."""
    accs = {k[:-4]: v for k, v in metrics.items() if k.endswith("_acc") and k != "clean_acc"}
    white = {k: v for k, v in accs.items() if not k.startswith("bb_")}
    black = {k.removeprefix("bb_"): v for k, v in accs.items() if k.startswith("bb_")}
    out = check_robust_above_clean(metrics["clean_acc"], white, tol=tol)
    out += check_robust_above_clean(metrics["clean_acc"], {f"black-box {k}": v for k, v in black.items()}, tol=tol)
    out += check_black_box_below_white_box(white, black, tol=tol)
    # AutoAttack's own reliability checks (e.g. Square finding points the gradient attacks missed)
    return out + [f"{k[:-6]}: AutoAttack's check: {m}" for k, v in metrics.items() if k.endswith("_flags") for m in v]


def check_eps_sweep(eps: Sequence[float], acc: Sequence[float], *, max_final_acc: float = 5.0,
                    tol: float | None = None, n: int | None = None) -> list[str]:
    """(f) accuracy (%) against growing eps: warn if the accuracy at the largest eps is above
    ``max_final_acc``, or if it rises by more than ``tol`` points over its value at a smaller eps.

    ``tol`` defaults to ``max(1, 200 / n)`` points: one point, or two examples of an ``n``-image test set."""
    if len(eps) != len(acc) or not eps:
        raise ValueError("eps and acc must be non-empty and of equal length")
    order = sorted(range(len(eps)), key=lambda i: eps[i])
    eps, acc = [eps[i] for i in order], [acc[i] for i in order]
    tol = (max(1.0, 200.0 / n) if n else 1.0) if tol is None else tol
    out = []
    if acc[-1] > max_final_acc:
        out.append(_flag("eps-sweep",
                         f"the accuracy does not fall towards 0 as eps grows: {acc[-1]:.2f}% at eps={eps[-1]:g} "
                         f"(expected <= {max_final_acc:g}%); the attack cannot find adversarial examples even "
                         f"where they must exist."))
    rises = [(eps[j], acc[j], eps[i], acc[i]) for i in range(1, len(acc)) for j in range(i)
             if acc[i] > acc[j] + tol]
    if rises:
        e0, a0, e1, a1 = max(rises, key=lambda r: r[3] - r[1])
        out.append(_flag("eps-sweep",
                         f"the accuracy rises with eps: {a0:.2f}% at eps={e0:g} but {a1:.2f}% at eps={e1:g} "
                         f"(more than {tol:.2g} points); a larger ball contains the smaller one, so the attack "
                         f"is not converging."))
    return out


# --- the eps sweep ----------------------------------------------------------------------

def sweep_eps(eps: float, norm: str, input_shape: Sequence[int]) -> list[float]:
    """Radii of the sweep: ``SWEEP_MULTIPLES`` of ``eps`` plus the radius that reaches every image of the
    [0, 1] box (1.0 for L-inf, ``sqrt(C*H*W)`` for L2), where a working attack must reach 0% accuracy."""
    top = 1.0 if norm == "linf" else math.sqrt(math.prod(input_shape))
    return sorted({round(m * eps, 6) for m in SWEEP_MULTIPLES if m * eps < top} | {top})


def sweep_step(eps: float, step_size: float, steps: int) -> float:
    """The step at radius ``eps``: the evaluation step, grown to ``2.5 eps / steps`` so that large radii are
    reachable within the steps (Madry et al.'s rule of thumb)."""
    return max(step_size, 2.5 * eps / steps)


def eps_sweep(model: nn.Module, images: Tensor, labels: Tensor, eps_values: Sequence[float], *,
              step_size: float | None = None, steps: int, step_for: Callable[[float], float] | None = None,
              norm: str = "linf", eot: int = 1, ensemble: int = 1, batch_size: int = 500, seed: int = 0,
              progress: bool = False) -> tuple[float, list[dict[str, float]]]:
    """PGD accuracy at each radius; returns ``(clean_acc, [{"eps", "step_size", "acc", "vulnerability"}, ...])``.

    The step at radius ``eps`` is ``step_for(eps)``, by default :func:`sweep_step` of ``step_size`` (the
    sanity check's rule; the accuracy-vs-eps figure passes a step proportional to eps). eps 0 is the clean
    accuracy itself (no attack is run)."""
    from .evaluate import evaluate

    if step_for is None:
        if step_size is None:
            raise ValueError("eps_sweep needs step_size or step_for")
        step_for = functools.partial(sweep_step, step_size=step_size, steps=steps)
    attacks = {f"eps{i}": PGD(eps=e, step_size=step_for(e), steps=steps, norm=norm, eot=eot)
               for i, e in enumerate(eps_values) if e > 0}
    m = evaluate(model, images, labels, attacks, batch_size=batch_size, seed=seed, progress=progress,
                 ensemble=ensemble)
    rows = []
    for i, e in enumerate(eps_values):
        key = f"eps{i}"
        rows.append({"eps": e, "step_size": attacks[key].step_size if key in attacks else 0.0,
                     "acc": m[f"{key}_acc"] if key in attacks else m["clean_acc"],
                     "vulnerability": m[f"{key}_vulnerability"] if key in attacks else 0.0})
    return m["clean_acc"], rows


__all__ = [
    "DOCS",
    "AnpvsEvaluationWarning",
    "check_black_box_below_white_box",
    "check_eps_sweep",
    "check_metrics",
    "check_model",
    "check_probability_output",
    "check_robust_above_clean",
    "check_stochastic_forward",
    "check_zero_gradients",
    "eps_sweep",
    "sweep_eps",
    "sweep_step",
]
