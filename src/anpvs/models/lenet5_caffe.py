"""LeNet5-Caffe (20-50-800-500), the MNIST network of the paper (docs/reference.md §3).

conv1 5x5 1->20 -> mask1 -> ReLU -> maxpool2 -> conv2 5x5 20->50 -> mask2 -> ReLU -> maxpool2
-> flatten 800 -> mask3 -> dense3 800->500 -> ReLU -> mask4 -> dense4 500->C.

In the plain model the masks are identities; in ``lenet5_caffe_bbd`` they are Beta-Bernoulli
dropout layers (4 masks: 20 conv1 channels, 50 conv2 channels, the 800 flattened inputs and the
500 hidden units). Both share parameter names, so a Standard checkpoint loads into the masked one.

Its compacted network is :class:`CompactLeNet5Caffe` (:meth:`LeNet5Caffe.compact_state`, docs/compact.md);
the paper's analytic FLOPs and memory are :meth:`LeNet5Caffe.analytic_flops` / ``analytic_memory``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..metrics.efficiency import conv_flops, conv_memory, dense_flops, dense_memory, pool_flops
from ..nn.beta_bernoulli import BetaBernoulliDropout
from ..nn.fast import FastConv2d, max_pool2d
from . import register_model
from .base import Classifier, glorot_init_
from .compaction import (
    CompactNetwork,
    LatentMaps,
    Layout,
    check_index,
    conv_pool,
    dims,
    index_of,
    pool,
    rows,
    scale_of,
    select,
)

# 28x28 input, VALID 5x5 convs -> 24x24 and 8x8 outputs, each followed by a 2x2 pool
_CONV_OUT_SIDES = (24, 8)
_KERNEL = 5


class CompactLeNet5Caffe(CompactNetwork, nn.Module):
    """LeNet5-Caffe with ``c1``, ``c2`` conv channels, ``f3`` dense3 inputs and ``h4`` hidden units.

    conv1 5x5 -> ReLU -> pool -> conv2 5x5 -> ReLU -> pool -> flatten (``c2 * 16``) -> [gather ``f3``]
    -> dense3 -> ReLU -> dense4. The gather (buffer ``dense3_index``) exists only when some flattened
    positions of the kept channels are pruned (``gather=True``).
    """

    arch = "lenet5_caffe"
    signature = "conv1.weight"
    eval_only = ("latent_maps.", "conv2_probe.", "dense3_probe.")

    def __init__(self, c1: int, c2: int, f3: int, h4: int, num_classes: int = 10, in_channels: int = 1, *,
                 gather: bool = False, latents: Sequence[tuple[int, int]] | None = None, probe2: int = 0,
                 probe3: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = FastConv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.register_buffer("dense3_index", torch.zeros(f3, dtype=torch.long) if gather else None)
        self.dense3 = nn.Linear(f3, h4)
        self.dense4 = nn.Linear(h4, num_classes)
        # latent maps (evaluation only, see LatentMaps): conv2 channels and dense3 units that the masked
        # model computes (and the vulnerability compares) but that do not reach the logits
        self.latent_maps = LatentMaps(latents) if latents else None
        self.conv2_probe = nn.Conv2d(c1, probe2, 5) if probe2 else None
        self.dense3_probe = nn.Linear(f3, probe3) if probe3 else None

    def latent_names(self) -> list[str]:
        return ["conv1", "conv2", "dense3"]

    def forward(self, x: Tensor) -> Tensor:
        # ReLU after the pool: the same values (ReLU is monotone), on a quarter of the elements
        h = F.relu(conv_pool(self.conv1, x))
        h = F.relu(conv_pool(self.conv2, h)).flatten(1)
        if self.dense3_index is not None:
            h = h.index_select(1, self.dense3_index)
        return self.dense4(F.relu(self.dense3(h)))

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(logits, latents)``; with latent maps the latents are the masked model's, full width."""
        a1 = F.relu(self.conv1(x))
        p1 = pool(a1)
        a2 = F.relu(self.conv2(p1))
        h = pool(a2).flatten(1)
        if self.dense3_index is not None:
            h = h.index_select(1, self.dense3_index)
        a3 = F.relu(self.dense3(h))
        logits = self.dense4(a3)
        if self.latent_maps is None:
            return logits, [a1, a2, a3]
        extra2 = [F.relu(self.conv2_probe(p1))] if self.conv2_probe is not None else []
        extra3 = [F.relu(self.dense3_probe(h))] if self.dense3_probe is not None else []
        maps = self.latent_maps
        return logits, [maps(0, a1), maps(1, a2, *extra2), maps(2, a3, *extra3)]

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> CompactLeNet5Caffe:
        """Rebuild the network (shapes read from ``state_dict``) and load ``state_dict`` into it."""
        c1, in_channels = state_dict["conv1.weight"].shape[:2]
        h4, f3 = state_dict["dense3.weight"].shape
        net = cls(c1, state_dict["conv2.weight"].shape[0], f3, h4, state_dict["dense4.weight"].shape[0],
                  in_channels, gather="dense3_index" in state_dict, latents=LatentMaps.sizes(state_dict),
                  probe2=rows(state_dict, "conv2_probe.weight"), probe3=rows(state_dict, "dense3_probe.weight"))
        net.load_state_dict(state_dict)
        return net

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.conv1.in_channels, 28, 28)

    def widths(self) -> dict[str, int]:
        return {"conv1": self.conv1.out_channels, "conv2": self.conv2.out_channels,
                "dense3_in": self.dense3.in_features, "dense3": self.dense3.out_features}

    @classmethod
    def layout(cls, state_dict: Mapping[str, Tensor], source: nn.Module) -> Layout:
        (c1, cin), c2 = dims(state_dict, "conv1.weight", 4)[:2], dims(state_dict, "conv2.weight", 4)[0]
        (h4, f3), classes = dims(state_dict, "dense3.weight", 2), dims(state_dict, "dense4.weight", 2)[0]
        full = {"conv1": source.conv1.out_channels, "conv2": source.conv2.out_channels,
                "dense3_in": source.dense3.in_features, "dense3": source.dense3.out_features}
        flat = c2 * (full["dense3_in"] // full["conv2"])  # conv2 channels x 16 positions
        if "dense3_index" in state_dict:
            check_index(state_dict, "dense3_index", f3, flat)
        elif f3 != flat:
            raise ValueError(f"dense3 takes {f3} inputs but conv2 gives {flat}")
        return Layout(got={"conv1": c1, "conv2": c2, "dense3_in": f3, "dense3": h4}, full=full, kept=[c1, c2, h4],
                      probes=[0, rows(state_dict, "conv2_probe.weight"), rows(state_dict, "dense3_probe.weight")],
                      fills=[full["conv1"], full["conv2"], full["dense3"]], in_channels=cin, classes=classes)



class LeNet5Caffe(Classifier):
    arch = "lenet5_caffe"
    widths = (20, 50, 800, 500)
    unit_widths = widths
    paper_units = widths
    compact_class = CompactLeNet5Caffe

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, bbd: bool = False,
                 mask_init: float = -1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.input_shape = (in_channels, 28, 28)
        self.conv1 = FastConv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.dense3 = nn.Linear(800, 500)
        self.dense4 = nn.Linear(500, num_classes)

        def mask(n: int) -> nn.Module:
            return BetaBernoulliDropout(n, a_init=mask_init) if bbd else nn.Identity()

        self.mask1, self.mask2, self.mask3, self.mask4 = (mask(n) for n in self.widths)
        glorot_init_(self)

    def unit_weights(self) -> list[tuple[Tensor, int, int | None]]:
        """Per mask: the weight whose slice ``k`` along ``dim`` makes (or, for inputs no layer of their own makes,
        uses) unit ``k``, and the mask of the conv channels those units are positions of (L1 pruning's scores)."""
        return [(self.conv1.weight, 0, None), (self.conv2.weight, 0, None),
                (self.dense3.weight, 1, 1), (self.dense3.weight, 0, None)]

    def latent_names(self) -> list[str]:
        return ["conv1", "conv2", "dense3"]

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        z1 = F.relu(self.mask1(self.conv1(x)))
        z2 = F.relu(self.mask2(self.conv2(max_pool2d(z1, 2))))
        h = self.mask3(max_pool2d(z2, 2).flatten(1))
        z3 = F.relu(self.dense3(h))
        logits = self.dense4(self.mask4(z3))
        return logits, [z1, z2, z3]

    def compact_state(self, latents: bool = False) -> dict[str, Tensor]:
        """:class:`CompactLeNet5Caffe`'s state (anpvs.models.compact: pruned units removed, E[pi] folded in; a flattened
        input of dense3 survives only if its conv2 channel and its own mask3 unit are both kept)."""
        model = self
        w1 = model.conv1.weight
        e1 = scale_of(model.mask1, model.conv1.out_channels, w1)
        e2 = scale_of(model.mask2, model.conv2.out_channels, w1)
        e3 = scale_of(model.mask3, model.dense3.in_features, w1)
        e4 = scale_of(model.mask4, model.dense3.out_features, w1)
        c2_all = model.conv2.out_channels
        spatial = model.dense3.in_features // c2_all  # 16 flattened positions per conv2 channel
        # a flattened input of dense3 is live if its conv2 channel and its own mask3 unit are both kept
        pos_live = (e3 > 0) & (e2 > 0).repeat_interleave(spatial)
        ch_live = pos_live.view(c2_all, spatial).any(1)  # conv2 channels with at least one live position
        idx1, idx2, idx3, idx4 = index_of(e1 > 0), index_of(ch_live), index_of(pos_live), index_of(e4 > 0)
        # position of each live flattened input in the compact flatten (kept channels only, in order)
        rank = torch.cumsum(ch_live.long(), 0) - 1
        gather_idx = rank[idx3 // spatial] * spatial + idx3 % spatial
        n_flat = max(idx2.numel(), 1) * spatial
        if idx3.numel() == 0:
            gather_idx = torch.zeros(1, dtype=torch.long, device=w1.device)  # reads the placeholder's 0
        gather = not torch.equal(gather_idx, torch.arange(n_flat, device=w1.device))
        all_in = torch.arange(model.conv1.in_channels, device=w1.device)
        sd = {
            "conv1.weight": select(select(model.conv1.weight, 0, idx1, e1), 1, all_in),
            "conv1.bias": select(model.conv1.bias, 0, idx1, e1),
            "conv2.weight": select(select(model.conv2.weight, 0, idx2, e2), 1, idx1),
            "conv2.bias": select(model.conv2.bias, 0, idx2, e2),
            "dense3.weight": select(select(model.dense3.weight, 0, idx4), 1, idx3, e3),
            "dense3.bias": select(model.dense3.bias, 0, idx4),
            "dense4.weight": select(model.dense4.weight, 1, idx4, e4),
            "dense4.bias": model.dense4.bias.detach().clone(),
        }
        if gather:
            sd["dense3_index"] = gather_idx
        if latents:
            # conv2 channels kept by mask2 whose positions mask3 all prunes, dense3 units pruned by mask4: the
            # masked model computes them (they are in its latents) but they never reach the logits
            idx2p, idx4p = index_of((e2 > 0) & ~ch_live), index_of(e4 <= 0)
            if idx2p.numel():
                sd["conv2_probe.weight"] = select(select(model.conv2.weight, 0, idx2p, e2), 1, idx1)
                sd["conv2_probe.bias"] = select(model.conv2.bias, 0, idx2p, e2)
            if idx4p.numel():
                sd["dense3_probe.weight"] = select(select(model.dense3.weight, 0, idx4p), 1, idx3, e3)
                sd["dense3_probe.bias"] = select(model.dense3.bias, 0, idx4p)
            maps = ((idx1, model.conv1.out_channels), (torch.cat([idx2, idx2p]), c2_all),
                    (torch.cat([idx4, idx4p]), model.dense3.out_features))
            for i, (index, width) in enumerate(maps):
                sd[f"latent_maps.index{i}"] = index
                sd[f"latent_maps.fill{i}"] = w1.new_zeros(width)  # removed LeNet units output 0
        return sd

    @staticmethod
    def analytic_flops(active: Sequence[int], num_classes: int) -> int:
        """The paper's FLOPs (docs/reference.md §6): conv1 (1 -> c1, 24x24), pool, conv2 (c1 -> c2, 8x8), pool,
        dense3 (f3 -> h4, with activation), dense4 (h4 -> num_classes, no activation). Full model: 4,615,940."""
        c1, c2, f3, h4 = active
        s1, s2 = _CONV_OUT_SIDES
        return (conv_flops(s1, 1, c1, _KERNEL) + pool_flops(s1, c1) + conv_flops(s2, c1, c2, _KERNEL)
                + pool_flops(s2, c2) + dense_flops(f3, h4, activation=True)
                + dense_flops(h4, num_classes, activation=False))

    @staticmethod
    def analytic_memory(active: Sequence[int], num_classes: int, legacy: bool = False) -> int:
        """The paper's memory (docs/reference.md §6): conv1, conv2, dense3 and dense4; full model: 477,410.
        ``legacy`` has no effect (the reference formula for LeNet has neither memory bug)."""
        c1, c2, f3, h4 = active
        s1, s2 = _CONV_OUT_SIDES
        return (conv_memory(s1, 1, c1, _KERNEL, batch_norm=False) + conv_memory(s2, c1, c2, _KERNEL, batch_norm=False)
                + dense_memory(f3, h4, batch_norm=False) + dense_memory(h4, num_classes, batch_norm=False))


@register_model("lenet5_caffe")
def lenet5_caffe(num_classes: int = 10, in_channels: int = 1) -> LeNet5Caffe:
    """LeNet5-Caffe without masks (Standard, AT, TRADES, ... rows)."""
    return LeNet5Caffe(num_classes, in_channels)


@register_model("lenet5_caffe_bbd", config_keys={"mask_init": "mask_init"})
def lenet5_caffe_bbd(num_classes: int = 10, in_channels: int = 1, mask_init: float = -1.0) -> LeNet5Caffe:
    """LeNet5-Caffe with 4 Beta-Bernoulli dropout masks (BP, ANP, ANP-VS rows).

    ``mask_init`` is the initial ``a_uc`` of every mask (reference: -1.0, i.e. E[pi] = 0.24).
    """
    return LeNet5Caffe(num_classes, in_channels, bbd=True, mask_init=mask_init)
