"""Compacted networks compute the masked networks' eval forward with the pruned units physically removed."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from anpvs.metrics.efficiency import analytic_flops, measured_flops, weight_stats
from anpvs.models import create_model
from anpvs.models.compact import (
    ConstantInputConv2d,
    compact,
    compact_from_state_dict,
    compact_stats,
)
from anpvs.models.lenet5_caffe import CompactLeNet5Caffe
from anpvs.models.vgg16 import AFTER_BLOCK, CompactVGG16

torch.set_num_threads(1)

PRUNED_A_UC = -10.0  # a = softplus(-10) = 4.5e-5, so E[pi] < 1e-3: pruned


def _set_mask(mask: nn.Module, pruned: list[int] | torch.Tensor, gen: torch.Generator) -> None:
    """Random kept-unit parameters (E[pi] spread over (0, 1)) and ``PRUNED_A_UC`` on ``pruned``."""
    n = mask.num_units
    with torch.no_grad():
        mask.a_uc.copy_(torch.rand(n, generator=gen) * 4.0 - 1.5)
        mask.b_uc.copy_(torch.rand(n, generator=gen) * 1.5)
        mask.a_uc[torch.as_tensor(pruned, dtype=torch.long)] = PRUNED_A_UC
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.as_tensor(pruned, dtype=torch.long)] = False
    assert torch.equal(mask.keep_mask(), keep)
    assert bool((mask.expected_pi()[keep] > 0.01).all())  # kept units get a non-trivial scale


def _assert_same_logits(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(b.abs().max())))


# --------------------------------------------------------------------------- LeNet5-Caffe


def _pruned_lenet() -> tuple[nn.Module, dict[str, int]]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create_model("lenet5_caffe_bbd").eval()
    pruned1 = [0, 3, 7]
    pruned2 = [1, 2, 10, 20, 49]  # whole conv2 channels: their 16 flattened positions are dead inputs
    pruned3 = torch.randperm(800, generator=gen)[:300]
    dead_by_mask3 = 5  # a kept conv2 channel whose 16 positions are all pruned by mask3 -> removed too
    pruned3 = torch.unique(torch.cat([pruned3, torch.arange(dead_by_mask3 * 16, dead_by_mask3 * 16 + 16)]))
    pruned4 = torch.randperm(500, generator=gen)[:180]
    for mask, pruned in zip((model.mask1, model.mask2, model.mask3, model.mask4),
                            (pruned1, pruned2, pruned3, pruned4), strict=True):
        _set_mask(mask, pruned, gen)
    # effective counts by hand
    keep3 = torch.ones(800, dtype=torch.bool)
    keep3[pruned3] = False
    keep2 = torch.ones(50, dtype=torch.bool)
    keep2[pruned2] = False
    live = keep3.view(50, 16) & keep2[:, None]
    counts = {
        "c1": 20 - len(pruned1),
        "c2": int(live.any(1).sum()),
        "f3": int(live.sum()),
        "h4": 500 - len(pruned4),
    }
    assert counts["c2"] == 50 - len(pruned2) - 1
    assert 0 < counts["f3"] < counts["c2"] * 16  # some positions of kept channels are gathered away
    return model, counts


def _lenet_params(c1: int, c2: int, f3: int, h4: int, num_classes: int = 10) -> int:
    return (25 * c1 + c1) + (25 * c1 * c2 + c2) + (f3 * h4 + h4) + (h4 * num_classes + num_classes)


def test_lenet_compact_matches_masked_forward_and_counts() -> None:
    model, n = _pruned_lenet()
    small = compact(model)
    assert isinstance(small, CompactLeNet5Caffe) and not small.training
    assert (small.conv1.out_channels, small.conv2.out_channels) == (n["c1"], n["c2"])
    assert (small.dense3.in_features, small.dense3.out_features) == (n["f3"], n["h4"])
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _assert_same_logits(small(x), model(x))
    hand = _lenet_params(n["c1"], n["c2"], n["f3"], n["h4"])
    assert sum(p.numel() for p in small.parameters()) == hand
    assert weight_stats(small)["params"] == hand
    # compaction does not touch the masked model
    assert model.conv1.weight.shape == (20, 1, 5, 5) and not model.training


def test_lenet_compact_flops_match_analytic_formula() -> None:
    # docs/decisions.md item 5: the analytic FLOPs of docs/reference.md §6 for the active counts equal
    # FlopCounterMode's count on
    # the compacted network plus the terms FlopCounterMode does not see (see measured_flops).
    model, n = _pruned_lenet()
    c1, c2, f3, h4 = n["c1"], n["c2"], n["f3"], n["h4"]
    measured = measured_flops(compact(model), (1, 28, 28))
    assert measured == 2 * (25 * c1 * 576 + 25 * c1 * c2 * 64 + f3 * h4 + h4 * 10)
    uncounted = (c1 * 24 * 24 + c2 * 8 * 8) + (c1 * 12 * 12 * 4 + c2 * 4 * 4 * 4) + h4
    assert analytic_flops("lenet5_caffe", [c1, c2, f3, h4]) - uncounted == measured
    # the reference's counts (n_active per mask) include the dead inputs, so they never undercount
    n_active = [m.n_active() for m in (model.mask1, model.mask2, model.mask3, model.mask4)]
    assert n_active[1] > c2 and n_active[2] > f3
    assert analytic_flops("lenet5_caffe", n_active) > analytic_flops("lenet5_caffe", [c1, c2, f3, h4])

    stats = compact_stats(model)
    assert stats["compact_flops"] == measured
    assert stats["dense_flops"] == 4_586_000
    assert stats["counted_flops_speedup"] == pytest.approx(4_586_000 / measured)
    assert stats["compact_params"] == _lenet_params(c1, c2, f3, h4)
    assert stats["compact_bytes"] > 4 * stats["compact_params"]  # plus the int64 gather index


def test_lenet_all_positions_kept_needs_no_gather() -> None:
    gen = torch.Generator().manual_seed(3)
    model = create_model("lenet5_caffe_bbd").eval()
    _set_mask(model.mask2, [4, 9], gen)
    _set_mask(model.mask3, torch.cat([torch.arange(64, 80), torch.arange(144, 160)]), gen)  # channels 4 and 9
    small = compact(model)
    assert small.dense3_index is None and "dense3_index" not in small.state_dict()
    assert small.dense3.in_features == 48 * 16
    x = torch.rand(4, 1, 28, 28, generator=gen)
    with torch.no_grad():
        _assert_same_logits(small(x), model(x))


def test_lenet_layer_with_no_unit_keeps_a_zero_placeholder() -> None:
    gen = torch.Generator().manual_seed(4)
    model = create_model("lenet5_caffe_bbd").eval()
    _set_mask(model.mask2, list(range(50)), gen)
    small = compact(model)
    assert small.conv2.out_channels == 1 and small.dense3.in_features == 1
    x = torch.rand(3, 1, 28, 28, generator=gen)
    with torch.no_grad():
        _assert_same_logits(small(x), model(x))


# --------------------------------------------------------------------------- VGG-16

VGG_PRUNED = {
    0: [0, 5, 9, 33],  # followed by dropout 0.3
    1: [3, 4, 60],  # followed by max-pool
    4: [10, 11, 200],  # followed by dropout 0.4
    6: [0, 100, 255],  # followed by max-pool
    9: [7, 300],  # followed by max-pool; its constants are all zero below (plain conv next)
    12: [1, 2, 500],  # followed by max-pool and the head: constants fold into dense14's bias
}
VGG_PRUNED14 = [1, 2, 3, 40, 41]  # 1, 2 are pruned by mask13 too; 3, 40, 41 are conv13 channels without consumer
VGG_PRUNED15 = [0, 17, 511]


def _pruned_vgg() -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create_model("vgg16_bbd", num_classes=10)
    for i, mask in enumerate(model.masks):
        _set_mask(mask, VGG_PRUNED.get(i, []), gen)
    _set_mask(model.mask14, VGG_PRUNED14, gen)
    _set_mask(model.mask15, VGG_PRUNED15, gen)
    with torch.no_grad():
        for i, bn in enumerate([*model.bns, model.bn14]):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            bn.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
            bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.3)
            pruned = VGG_PRUNED.get(i, [])
            # pruned channels: a positive constant ReLU(beta - gamma*mu/sigma) after BN, except in layer 10
            bn.bias[pruned] = -5.0 if i == 9 else torch.rand(len(pruned), generator=gen) + 1.0
    return model.eval()


def test_vgg_compact_matches_masked_forward() -> None:
    model = _pruned_vgg()
    small = compact(model)
    assert isinstance(small, CompactVGG16) and not small.training
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, latents = model.forward_intermediates(x)
        _assert_same_logits(small(x), logits)
        # every block's kept channels match too, border positions included (the logits alone would
        # hide a border error of ~1e-5: see test_vgg_pruned_constant_is_not_a_plain_bias_at_the_border)
        h = small.normalize(x)
        for i, (conv, bn, after) in enumerate(zip(small.convs, small.bns, AFTER_BLOCK, strict=True)):
            h = F.relu(bn(conv(h)))
            keep = model.masks[i].keep_mask() & (model.mask14.keep_mask() if i == 12 else True)
            torch.testing.assert_close(h, latents[i][:, keep], rtol=1e-5, atol=1e-5)
            h = F.max_pool2d(h, 2) if after == "M" else h

    widths = [conv.out_channels - len(VGG_PRUNED.get(i, [])) for i, conv in enumerate(model.convs)]
    widths[12] = 512 - len(set(VGG_PRUNED[12]) | set(VGG_PRUNED14))  # kept by mask13 but pruned by mask14: removed
    assert [c.out_channels for c in small.convs] == widths
    assert small.dense14.in_features == widths[12] and small.dense14.out_features == 512 - len(VGG_PRUNED15)
    # the layers after a block with non-zero pruned constants carry the exact border term
    const_layers = [i for i, c in enumerate(small.convs) if isinstance(c, ConstantInputConv2d)]
    assert const_layers == [1, 2, 5, 7]

    c_in = 3
    hand = 0
    for i, w in enumerate(widths):
        hand += c_in * w * 9 + w + 2 * w + (9 * w if i in const_layers else 0)
        c_in = w
    hidden = 512 - len(VGG_PRUNED15)
    hand += widths[12] * hidden + hidden + 2 * hidden + hidden * 10 + 10
    assert sum(p.numel() for p in small.parameters()) == hand
    stats = compact_stats(model)
    assert stats["compact_params"] == hand
    assert weight_stats(small)["params"] == hand  # what `anpvs eval` of the compacted checkpoint prints
    assert stats["dense_flops"] == measured_flops(create_model("vgg16"), (3, 32, 32))
    assert stats["compact_flops"] < stats["dense_flops"] and stats["counted_flops_speedup"] > 1.0


def test_vgg_pruned_constant_is_not_a_plain_bias_at_the_border() -> None:
    # Why ConstantInputConv2d exists: with SAME zero padding a constant input channel adds a different
    # amount on the border than in the interior, so folding it into the bias would be wrong there.
    model = _pruned_vgg()
    conv = compact(model).convs[1]
    with torch.no_grad():
        cmap = conv.constant_map(32, 32)
    interior = cmap[:, 1:-1, 1:-1]
    assert torch.allclose(interior, interior[:, :1, :1].expand_as(interior))
    assert not torch.allclose(cmap[:, 0, 0], cmap[:, 5, 5], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("stride", "padding", "dilation", "size"), [(1, 1, 1, 7), (2, 2, 1, 9), (1, 2, 2, 6)])
def test_constant_input_conv_equals_conv_over_constant_channels(stride: int, padding: int, dilation: int,
                                                                size: int) -> None:
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 5, 3, 3, generator=gen)  # input channels 3, 4 are removed constants
    bias = torch.randn(4, generator=gen)
    consts = torch.tensor([0.0, 0.0, 0.0, 0.7, 1.3])
    x = torch.randn(2, 5, size, size, generator=gen)
    x[:, 3:] = consts[3:].view(1, 2, 1, 1)
    full = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    conv = ConstantInputConv2d(3, 4, 3, stride=stride, padding=padding, dilation=dilation)
    with torch.no_grad():
        conv.weight.copy_(weight[:, :3])
        conv.bias.copy_(bias)
        conv.const_weight.copy_((weight * consts.view(1, -1, 1, 1)).sum(1, keepdim=True))
        torch.testing.assert_close(conv(x[:, :3]), full, rtol=1e-5, atol=1e-5)


def test_unpruned_models_compact_to_the_same_size() -> None:
    torch.manual_seed(0)
    x28 = torch.rand(3, 1, 28, 28)
    x32 = torch.rand(2, 3, 32, 32)
    for name, x in (("lenet5_caffe", x28), ("lenet5_caffe_bbd", x28), ("vgg16", x32), ("vgg16_bbd", x32)):
        model = create_model(name).eval()
        small = compact(model)
        params = weight_stats(model)["params"]
        assert sum(p.numel() for p in small.parameters()) == params, name
        stats = compact_stats(model)
        assert stats["compact_params"] == params and stats["compact_flops"] == stats["dense_flops"], name
        with torch.no_grad():
            _assert_same_logits(small(x), model(x))


def test_compacted_state_dict_round_trips_with_weights_only() -> None:
    for model, x in ((_pruned_lenet()[0], torch.rand(2, 1, 28, 28)), (_pruned_vgg(), torch.rand(2, 3, 32, 32))):
        small = compact(model)
        assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in small.parameters())
        buf = io.BytesIO()
        torch.save(small.state_dict(), buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
        rebuilt = compact_from_state_dict(state)
        assert type(rebuilt) is type(small)
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(x), small(x), rtol=0, atol=0)


def test_efficiency_reports_compact_keys() -> None:
    from anpvs.evaluation.evaluate import efficiency

    model, n = _pruned_lenet()
    eff = efficiency(model)
    assert eff["compact_params"] == _lenet_params(n["c1"], n["c2"], n["f3"], n["h4"])
    assert eff["dense_flops"] == 4_586_000 and eff["counted_flops_speedup"] > 1.0
    assert {"compact_bytes", "compact_flops"} <= set(eff)
    # the widths that compute, counted by hand: conv2 channel 5 is kept by its mask but feeds nothing
    assert eff["compact_widths"] == {"conv1": n["c1"], "conv2": n["c2"], "dense3_in": n["f3"], "dense3": n["h4"]}
    assert eff["active_units"][1] == n["c2"] + 1


def test_compact_rejects_other_models() -> None:
    with pytest.raises(TypeError, match="LeNet5Caffe and VGG16"):
        compact(nn.Linear(2, 2))
