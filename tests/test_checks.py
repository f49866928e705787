"""The sanity checks of ``anpvs.evaluation.checks``: each fires on a model broken on purpose and stays silent on a
healthy one."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from _toys import Blind, Detached, Noisy, Rounded, Softmaxed, TemplateLinear, toy_data

from anpvs.attacks import PGD
from anpvs.evaluation.checks import (
    DOCS,
    AnpvsEvaluationWarning,
    check_black_box_below_white_box,
    check_eps_sweep,
    check_metrics,
    check_model,
    check_probability_output,
    check_robust_above_clean,
    check_stochastic_forward,
    check_zero_gradients,
    eps_sweep,
    sweep_eps,
    sweep_step,
)
from anpvs.evaluation.evaluate import evaluate

torch.set_num_threads(1)
DOCS_PATH = Path(__file__).resolve().parents[1] / DOCS


@pytest.fixture
def data():
    return toy_data(100)


def _anchor(text: str) -> str:
    m = re.search(re.escape(DOCS) + r"#([a-z0-9-]+)$", text)
    assert m, f"warning does not end with a {DOCS} link: {text}"
    return m.group(1)


def test_healthy_model_is_silent(data):
    x, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnpvsEvaluationWarning)
        assert check_model(TemplateLinear(), x, y) == []
        clean, rows = eps_sweep(TemplateLinear(), x, y, sweep_eps(0.3, "linf", x.shape[1:]), step_size=0.01, steps=20)
        assert check_robust_above_clean(clean, {r["eps"]: r["acc"] for r in rows}) == []
        assert check_eps_sweep([r["eps"] for r in rows], [r["acc"] for r in rows], n=len(x)) == []
    assert clean == 100.0 and rows[-1]["acc"] == 0.0  # robust at eps 0.3, broken at eps 1.0


def test_stochastic_forward_fires_and_eot_silences_it(data):
    x, _ = data
    with pytest.warns(AnpvsEvaluationWarning, match="stochastic in eval mode"):
        found = check_stochastic_forward(Noisy(), x)
    assert len(found) == 1 and _anchor(found[0]) == "stochastic-forward"
    assert check_stochastic_forward(Noisy(), x, eot=10) == []  # the evaluation already uses EOT


def test_probability_output_fires(data):
    x, _ = data
    with pytest.warns(AnpvsEvaluationWarning, match="probabilities"):
        found = check_probability_output(Softmaxed(), x)
    assert _anchor(found[0]) == "probability-output"


@pytest.mark.parametrize("model_cls", [Rounded, Detached, Blind])
def test_zero_gradients_fire(data, model_cls):
    x, y = data
    with pytest.warns(AnpvsEvaluationWarning, match="gradient"):
        found = check_zero_gradients(model_cls(), x, y)
    assert _anchor(found[0]) == "zero-gradients" and f"for {len(x)} of {len(x)}" in found[0]


def test_zero_gradients_confident_but_healthy_vs_saturated(data):
    # Margins of ~30 logits keep a tiny non-zero gradient; margins of several hundred underflow the softmax in
    # float32, and then PGD's cross-entropy gradient really is 0 (vanishing gradients): the check fires.
    x, y = data
    assert check_zero_gradients(TemplateLinear(scale=10.0), x, y) == []
    with pytest.warns(AnpvsEvaluationWarning):
        assert check_zero_gradients(TemplateLinear(scale=100.0), x, y)


def test_check_restores_the_training_flag(data):
    x, y = data
    model = TemplateLinear().train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnpvsEvaluationWarning)
        check_model(model, x, y)
    assert model.training and not any(model.modes_seen)  # checked in eval mode, mode restored


def _images_of(y: torch.Tensor) -> torch.Tensor:
    return toy_data(10)[0][y]  # toy_data(10) holds one image of each class, in class order


def test_robust_above_clean_fires_by_construction(data):
    x, y = data
    y = y.clone()
    y[:20] = (y[:20] + 1) % 10  # 20% wrong labels: clean accuracy 80%

    def fixer(model, x_, y_):  # an "attack" that replaces each image by a clean image of its label
        return _images_of(y_)

    metrics = evaluate(TemplateLinear(), x, y, {"fixer": fixer})
    assert metrics["clean_acc"] == 80.0 and metrics["fixer_acc"] == 100.0
    with pytest.warns(AnpvsEvaluationWarning, match="above the clean accuracy"):
        found = check_metrics(metrics)
    assert [_anchor(w) for w in found] == ["robust-above-clean"]
    assert check_robust_above_clean(80.0, {"pgd": 80.0}) == []


def test_black_box_below_white_box_fires_on_gradient_masking(data):
    # White-box PGD cannot move the rounded model (zero gradient); PGD on a smooth twin transfers.
    x, y = data
    pgd = PGD(eps=0.45, step_size=sweep_step(0.45, 0.01, 20), steps=20)
    metrics = evaluate(Rounded(), x, y, {"pgd": pgd}, source=TemplateLinear())
    assert metrics["bb_pgd_acc"] < metrics["pgd_acc"]
    with pytest.warns(AnpvsEvaluationWarning, match="black-box"):
        found = check_metrics(metrics)
    assert [_anchor(w) for w in found] == ["black-box-below-white-box"]
    healthy = evaluate(TemplateLinear(), x, y, {"pgd": pgd}, source=TemplateLinear())
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnpvsEvaluationWarning)
        assert check_metrics(healthy) == []
    assert check_black_box_below_white_box({"pgd": 50.0}, {"pgd": 49.5}, tol=1.0) == []


def test_eps_sweep_fires_when_accuracy_stays_high(data):
    x, _ = data
    y = torch.zeros(len(x), dtype=torch.long)  # the blind model always says 0: every eps leaves 100%
    clean, rows = eps_sweep(Blind(), x, y, sweep_eps(0.3, "linf", x.shape[1:]), step_size=0.01, steps=5)
    assert [r["acc"] for r in rows] == [100.0] * 6
    with pytest.warns(AnpvsEvaluationWarning, match="does not fall towards 0"):
        found = check_eps_sweep([r["eps"] for r in rows], [r["acc"] for r in rows])
    assert [_anchor(w) for w in found] == ["eps-sweep"]


def test_eps_sweep_fires_when_accuracy_rises():
    with pytest.warns(AnpvsEvaluationWarning, match="rises with eps"):
        found = check_eps_sweep([0.0, 0.1, 0.2, 1.0], [90.0, 10.0, 40.0, 0.0])
    assert len(found) == 1 and "10.00% at eps=0.1 but 40.00% at eps=0.2" in found[0]
    assert check_eps_sweep([0.0, 0.1, 0.2, 1.0], [90.0, 10.0, 11.0, 0.0], n=100) == []  # 1 example: noise


def test_sweep_radii_and_steps():
    assert sweep_eps(0.3, "linf", (1, 28, 28)) == [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]
    assert sweep_eps(0.03, "linf", (3, 32, 32)) == [0.0, 0.01, 0.02, 0.03, 0.05, 1.0]
    assert sweep_eps(1.0, "l2", (1, 28, 28))[-1] == 28.0  # L2 diameter of the [0, 1] box
    assert sweep_step(0.1, 0.01, 40) == 0.01 and sweep_step(1.0, 0.01, 40) == 0.0625


def test_every_warning_anchor_is_documented():
    text = DOCS_PATH.read_text()
    anchors = {"stochastic-forward", "probability-output", "zero-gradients", "robust-above-clean",
               "black-box-below-white-box", "eps-sweep"}
    headings = set(re.findall(r"^## `?([a-z0-9-]+)`?\s*$", text, flags=re.M))
    assert anchors <= headings, f"missing in {DOCS}: {anchors - headings}"
