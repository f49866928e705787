"""Tests of the analytic efficiency metrics against the totals of docs/reference.md §6."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anpvs.metrics import (
    UNIT_TOTALS,
    analytic_flops,
    analytic_memory,
    efficiency_report,
    full_units,
    measured_flops,
    unit_sparsity,
    weight_stats,
)

LENET_FULL = [20, 50, 800, 500]
LENET_ANPVS = [4, 23, 61, 129]  # an n_active consistent with the paper's MNIST ANP-VS row
VGG_FULL = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
VGG_PRUNED = [20, 33, 64, 70, 100, 90, 80, 60, 40, 30, 20, 10, 5, 5, 7]


# --------------------------------------------------------------------------- known totals


@pytest.mark.parametrize("arch", ["lenet5_caffe", "vgg16"])
def test_full_units_sum_to_unit_totals(arch: str) -> None:
    assert sum(full_units(arch)) == UNIT_TOTALS[arch]
    assert UNIT_TOTALS == {"lenet5_caffe": 1370, "vgg16": 5248}
    assert full_units("lenet5_caffe") == LENET_FULL
    assert full_units("vgg16") == VGG_FULL


def test_lenet_full_model_totals() -> None:
    assert analytic_flops("lenet5_caffe", LENET_FULL) == 4_615_940
    assert analytic_memory("lenet5_caffe", LENET_FULL) == 477_410
    r = efficiency_report("lenet5_caffe", LENET_FULL)
    assert r["memory_pct"] == 100.0
    assert r["flops_speedup"] == 1.0
    assert r["unit_sparsity"] == 0.0


def test_lenet_paper_anpvs_row() -> None:
    # Paper Table 1, MNIST ANP-VS: memory 6.81 %, xFLOPs 10.57 (5-run mean; this config: 10.60),
    # sparsity 84.16 %.
    r = efficiency_report("lenet5_caffe", LENET_ANPVS)
    assert r["memory"] == 32_498  # 14,500 + 8,700 + 7,998 + 1,300
    assert r["flops"] == 435_599
    assert round(r["memory_pct"], 2) == 6.81
    assert round(r["flops_speedup"], 2) == 10.60
    assert round(r["unit_sparsity"], 2) == 84.16
    assert r["active_units"] == LENET_ANPVS


def test_vgg_full_model_totals() -> None:
    assert analytic_flops("vgg16", VGG_FULL) == 627_329_546
    assert analytic_memory("vgg16", VGG_FULL) == 16_655_818
    assert analytic_memory("vgg16", VGG_FULL, num_classes=100) == 16_701_988
    r = efficiency_report("vgg16", VGG_FULL, num_classes=100)
    assert (r["memory_pct"], r["flops_speedup"], r["unit_sparsity"]) == (100.0, 1.0, 0.0)


def test_vgg_legacy_memory_reproduces_reference_bugs() -> None:
    # The reference adds the head (dense14 + dense15) inside the 13-step conv loop (docs/reference.md §7.3).
    assert analytic_memory("vgg16", VGG_FULL, legacy_memory=True) == 19_881_538
    assert analytic_memory("vgg16", VGG_FULL, num_classes=100, legacy_memory=True) == 20_481_748
    # With the full model 12 extra heads is the whole difference: 512*512 + 3*512 + 512*C + C each.
    for c, corrected in ((10, 16_655_818), (100, 16_701_988)):
        head = 512 * 512 + 3 * 512 + 512 * c + c
        assert analytic_memory("vgg16", VGG_FULL, num_classes=c, legacy_memory=True) == corrected + 12 * head


def test_vgg_bn14_charged_on_outputs() -> None:
    # docs/reference.md §7.4: BN14 acts on dense14's d15 outputs, the reference charges 2*d14.
    d14, d15, c = VGG_PRUNED[13], VGG_PRUNED[14], 10
    conv_only = analytic_memory("vgg16", VGG_PRUNED) - (d14 * d15 + d15 + 2 * d15) - (d15 * c + c)
    legacy_head = d14 * d15 + d15 + 2 * d14 + d15 * c + c
    assert analytic_memory("vgg16", VGG_PRUNED, legacy_memory=True) == conv_only + 13 * legacy_head


def test_legacy_flag_is_noop_for_lenet() -> None:
    for active in (LENET_FULL, LENET_ANPVS):
        assert analytic_memory("lenet5_caffe", active, legacy_memory=True) == analytic_memory(
            "lenet5_caffe", active
        )


def test_pruning_reduces_costs_and_sparsity_formula() -> None:
    r = efficiency_report("vgg16", VGG_PRUNED, num_classes=100)
    assert r["flops"] < r["flops_orig"] and r["memory"] < r["memory_orig"]
    assert r["unit_sparsity"] == pytest.approx(100 - sum(VGG_PRUNED) / 5248 * 100)
    assert unit_sparsity("vgg16", [0] * 15) == 100.0


def test_all_pruned_lenet_has_infinite_speedup() -> None:
    r = efficiency_report("lenet5_caffe", [0, 0, 0, 0])
    assert r["flops"] == 0 and r["flops_speedup"] == float("inf")
    assert r["unit_sparsity"] == 100.0


# --------------------------------------------------------------------------- validation


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="lenet5_caffe, vgg16"):
        analytic_flops("resnet18", LENET_FULL)
    with pytest.raises(ValueError, match="unknown architecture"):
        full_units("vgg19")


@pytest.mark.parametrize(
    ("active", "match"),
    [
        ([20, 50, 800], "4 masked layers, got 3"),
        ([21, 50, 800, 500], r"active\[0\] = 21 is outside \[0, 20\]"),
        ([20, 50, -1, 500], r"active\[2\] = -1"),
    ],
)
def test_bad_active_counts_raise(active: list[int], match: str) -> None:
    for fn in (analytic_flops, analytic_memory, efficiency_report):
        with pytest.raises(ValueError, match=match):
            fn("lenet5_caffe", active)
    with pytest.raises(ValueError, match=match):
        unit_sparsity("lenet5_caffe", active)


def test_non_integer_counts_and_bad_classes_raise() -> None:
    with pytest.raises(TypeError, match="integer"):
        analytic_flops("lenet5_caffe", [20.0, 50, 800, 500])
    with pytest.raises(ValueError, match="num_classes"):
        analytic_memory("vgg16", VGG_FULL, num_classes=0)
    # integer tensors are accepted, e.g. straight from a mask's n_active
    assert analytic_flops("lenet5_caffe", torch.tensor(LENET_FULL)) == 4_615_940


# --------------------------------------------------------------------------- FlopCounterMode cross-check


class _TakeFirst(nn.Module):
    """Keeps the first ``n`` flattened features: stands in for the gather of bbd3's kept inputs."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.n]


def _compact_lenet(c1: int, c2: int, f3: int, h4: int) -> nn.Sequential:
    assert f3 <= c2 * 16
    return nn.Sequential(
        nn.Conv2d(1, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), _TakeFirst(f3),
        nn.Linear(f3, h4), nn.ReLU(), nn.Linear(h4, 10),
    )  # fmt: skip


def _lenet_analytic_minus_measured(c1: int, c2: int, f3: int, h4: int) -> int:
    """Terms the analytic formula has and FlopCounterMode lacks (see ``measured_flops``).

    conv: -1 + bias + ReLU = +1 per output; pool: C*H_out*W_out*4; dense3: +1 per output;
    dense4 (no activation): -1 + bias = 0.
    """
    conv = c1 * 24 * 24 + c2 * 8 * 8
    pool = c1 * 12 * 12 * 4 + c2 * 4 * 4 * 4
    return conv + pool + h4


def test_measured_flops_of_full_lenet() -> None:
    # 2 x MACs: 2*(25*20*576 + 500*50*64 + 800*500 + 500*10)
    assert measured_flops(_compact_lenet(*LENET_FULL), (1, 28, 28)) == 4_586_000


@pytest.mark.parametrize("active", [LENET_FULL, LENET_ANPVS, [7, 9, 100, 33]])
def test_analytic_lenet_flops_match_compacted_model(active: list[int]) -> None:
    measured = measured_flops(_compact_lenet(*active), (1, 28, 28))
    assert analytic_flops("lenet5_caffe", active) - _lenet_analytic_minus_measured(*active) == measured


def _compact_vgg(widths: list[int], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for i, w in enumerate(widths[:13]):
        layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        if i in (1, 3, 6, 9, 12):
            layers.append(nn.MaxPool2d(2))
        c_in = w
    d14, d15 = widths[13:]
    layers += [
        nn.Flatten(), _TakeFirst(d14),
        nn.Linear(d14, d15), nn.BatchNorm1d(d15), nn.ReLU(), nn.Linear(d15, num_classes),
    ]  # fmt: skip
    return nn.Sequential(*layers)


@pytest.mark.parametrize(("active", "num_classes"), [(VGG_FULL, 10), (VGG_PRUNED, 100)])
def test_analytic_vgg_flops_match_compacted_model(active: list[int], num_classes: int) -> None:
    # Built on the meta device: FlopCounterMode only needs shapes, so this costs no compute.
    with torch.device("meta"):
        model = _compact_vgg(active, num_classes)
    measured = measured_flops(model, (3, 32, 32))
    sides = (32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2)
    conv = sum(c * s * s for c, s in zip(active[:13], sides, strict=True))
    pool = sum(active[i] * (sides[i] // 2) ** 2 * 4 for i in (1, 3, 6, 9, 12))
    # dense14: +1 per output; dense15: +1 per output too (the reference charges it an activation)
    dense = active[14] + num_classes
    assert analytic_flops("vgg16", active, num_classes=num_classes) - (conv + pool + dense) == measured


def test_measured_flops_restores_training_mode() -> None:
    model = _compact_lenet(*LENET_ANPVS).train()
    model[0].eval()
    measured_flops(model, (1, 28, 28))
    assert model.training and not model[0].training and model[3].training


# --------------------------------------------------------------------------- weight statistics


class _WithMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)  # 54 weights + 3 biases
        self.bn = nn.BatchNorm2d(3)  # 3 + 3 affine; running stats are buffers
        self.fc = nn.Linear(4, 5, bias=False)  # 20 weights
        self.mask_logit = nn.Parameter(torch.zeros(7))  # not a weight layer: ignored


def test_weight_stats_counts() -> None:
    model = _WithMask()
    with torch.no_grad():
        model.conv.weight.fill_(1.0)
        model.fc.weight.fill_(1.0)
        model.conv.weight[0].zero_()  # 18 zeros
        model.fc.weight[:2].zero_()  # 8 zeros
    s = weight_stats(model)
    assert s["params"] == 54 + 3 + 6 + 20
    assert s["bytes"] == 4 * s["params"]
    assert s["weights"] == 74
    assert s["zero_weights"] == 26
    assert s["weight_sparsity"] == pytest.approx(26 / 74 * 100)


def test_weight_stats_of_full_lenet() -> None:
    s = weight_stats(_compact_lenet(*LENET_FULL))
    assert s["params"] == 431_080  # 520 + 25,050 + 400,500 + 5,010
    assert s["weights"] == 430_500
    assert weight_stats(nn.ReLU()) == {
        "params": 0, "bytes": 0, "weights": 0, "zero_weights": 0, "weight_sparsity": 0.0,
    }  # fmt: skip
