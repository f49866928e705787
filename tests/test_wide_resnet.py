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


def test_depth_and_widen_factor_are_config_keys() -> None:
    # WRN-16-2 from the config (--set model.depth=16 --set model.widen_factor=2), masked for ANP-VS
    from anpvs.core.errors import ConfigError
    from anpvs.methods import build_method
    from anpvs.training.loop import build_model
    from anpvs.training.run_config import build_config

    cfg = build_config({"data.name": "cifar10", "model.name": "wide_resnet", "method.name": "anp_vs",
                        "model.depth": 16, "model.widen_factor": 2, "model.width": 0.25})
    model = build_model(cfg, build_method(cfg, 64), (3, 32, 32), 10)
    assert model.model_name == "wide_resnet_bbd" and len(model.blocks) == 6
    assert model.model_kwargs["depth"] == 16 and model.model_kwargs["widen_factor"] == 2
    bad = build_config({"data.name": "cifar10", "model.name": "wide_resnet", "model.depth": 35})
    with pytest.raises(ConfigError, match=r"model 'wide_resnet': depth must be 6n \+ 4 .*\(got 35\); change the"):
        build_model(bad, build_method(bad, 64), (3, 32, 32), 10)
