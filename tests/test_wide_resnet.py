"""WRN-d-k with Beta-Bernoulli masks on its blocks' hidden channels: the architecture's arguments, compaction
(logits, latents and input gradients of the masked network), TorchScript export, and a short ANP-VS run on
CIFAR-shaped data that prunes, compacts and evaluates (the checks of tests/test_resnet.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from anpvs.models import create_model

sys.path.insert(0, str(Path(__file__).parent))
from test_resnet import _private_cache, check_compacted_network, pruned, short_anp_vs_run  # noqa: E402, F401


def test_depth_and_widen_factor_set_the_blocks_and_widths() -> None:
    model = create_model("wide_resnet_bbd", depth=16, widen_factor=2, width=0.5)
    assert len(model.blocks) == 6 and model.unit_widths == (16, 16, 32, 32, 64, 64)
    assert model.stem.out_channels == 8 and len(model.latent_names()) == 7
    for depth in (12, 9):
        with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
            create_model("wide_resnet", depth=depth)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_wide_resnet_compacts_to_the_masked_function(tmp_path: Path) -> None:
    check_compacted_network(pruned("wide_resnet_bbd", depth=16, widen_factor=2, width=0.25), tmp_path)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_wide_resnet_anp_vs_run_prunes_compacts_and_evaluates(tmp_path: Path, fake_git: str) -> None:
    del fake_git
    short_anp_vs_run("wide_resnet", tmp_path, width=0.125)
