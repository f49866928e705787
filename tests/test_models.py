"""Contract tests of every registered model (STYLE rule 2, docs/reference.md §1 and §3).

Parametrized over ``list_models()``, so a newly registered variant is tested without editing this
file; models are built with their default ``model_kwargs`` only.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from anpvs.models import create_model, list_models
from anpvs.models.base import output_classes
from anpvs.models.checkpoint import CheckpointError, load_weights

# input (C, H, W) of each architecture family (``model.arch``)
INPUT_SHAPES = {"lenet5_caffe": (1, 28, 28), "vgg16": (3, 32, 32), "resnet18": (3, 32, 32), "wide_resnet": (3, 32, 32)}

# docs/reference.md §1: the latents the vulnerability compares, per architecture, for a batch of N.
VGG_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG_SIZES = (32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2)
LATENT_SHAPES = {
    "lenet5_caffe": [(20, 24, 24), (50, 8, 8), (500,)],
    # 13 conv ReLU outputs (before pool/dropout), then dense14 before BN and after BN+ReLU
    "vgg16": [(c, s, s) for c, s in zip(VGG_WIDTHS, VGG_SIZES, strict=True)] + [(512,), (512,)],
    # the 8 block outputs (after the residual addition and ReLU)
    "resnet18": [(c, s, s) for c, s in ((64, 32), (128, 16), (256, 8), (512, 4)) for _ in range(2)],
    # WRN-28-4: each block's pre-activation ReLU(BN1(x)) (12 blocks), then the head's ReLU(BN(x))
    "wide_resnet": [(16, 32, 32)] + [(64, 32, 32)] * 4 + [(128, 16, 16)] * 4 + [(256, 8, 8)] * 4,
}

BATCH = 2


def _inputs(model: torch.nn.Module, n: int = BATCH) -> torch.Tensor:
    assert model.arch in INPUT_SHAPES, (
        f"model arch {model.arch!r} is new: add its input shape to INPUT_SHAPES and its latents to LATENT_SHAPES")
    return torch.rand(n, *INPUT_SHAPES[model.arch], generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def built():
    """``built(name, num_classes=10)``: one instance per (name, num_classes) for this module.

    Building VGG-16 (Glorot init of 15M weights) costs more than the tests themselves; tests that
    need an untouched model (gradients, weights) call ``create_model`` directly."""
    cache: dict[tuple[str, int], torch.nn.Module] = {}

    def get(name: str, num_classes: int = 10) -> torch.nn.Module:
        if (name, num_classes) not in cache:
            torch.manual_seed(0)
            cache[name, num_classes] = create_model(name, num_classes=num_classes)
        return cache[name, num_classes].eval()

    yield get
    cache.clear()


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", list_models())
def test_logits_shape(built, name: str, num_classes: int) -> None:
    model = built(name, num_classes)
    x = _inputs(model)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (BATCH, num_classes)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_gets_a_finite_gradient(built, name: str) -> None:
    # timm's test_model_backward: num_params == num_grad, so no parameter is silently left out of the graph.
    model = built(name).train()
    model.zero_grad(set_to_none=True)
    x = _inputs(model)
    y = torch.tensor([1, 3])
    F.cross_entropy(model(x), y).backward()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert params
    no_grad = [n for n, p in params.items() if p.grad is None]
    assert no_grad == []
    not_finite = [n for n, p in params.items() if not torch.isfinite(p.grad).all()]
    assert not_finite == []
    assert sum(p.grad.abs().sum() for p in params.values()) > 0
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", list_models())
def test_eval_forward_is_deterministic(built, name: str) -> None:
    # Evaluation and attacks assume the test-mode network is a fixed function (docs/decisions.md item 3).
    model = built(name)
    x = _inputs(model)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", list_models())
def test_forward_intermediates_returns_the_spec_latents(built, name: str) -> None:
    model = built(name)
    x = _inputs(model)
    with torch.no_grad():
        logits, latents = model.forward_intermediates(x)
        plain = model(x)
    expected = [(BATCH, *s) for s in LATENT_SHAPES[model.arch]]
    assert [tuple(z.shape) for z in latents] == expected
    assert torch.equal(logits, plain)
    # latents are post-ReLU features except VGG's pre-BN dense14 output (the 14th entry)
    pre_activation = {13} if model.arch == "vgg16" else set()
    for i, z in enumerate(latents):
        if i not in pre_activation:
            assert (z >= 0).all(), f"latent {i} of {name} is not a ReLU output"


def test_vgg_pre_bn_latent_is_dense14_output(built) -> None:
    # docs/reference.md §1: the VGG list ends with dense14's linear output, then ReLU(BN14(.)) of the same tensor.
    model = built("vgg16")
    with torch.no_grad():
        _, latents = model.forward_intermediates(_inputs(model))
        after = F.relu(model.bn14(latents[13]))
    torch.testing.assert_close(latents[14], after)


def test_unknown_model_name_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError) as info:
        create_model("vgg61")
    message = str(info.value)
    assert "vgg61" in message
    for name in list_models():
        assert name in message


def test_create_model_records_name_and_kwargs() -> None:
    # Checkpoints rebuild models from these two attributes (STYLE rule 8).
    model = create_model("lenet5_caffe", num_classes=100)
    assert model.model_name == "lenet5_caffe"
    assert model.model_kwargs == {"num_classes": 100}


BASES_WITH_MASKS = [n for n in list_models() if f"{n}_bbd" in list_models()]


@pytest.mark.parametrize("base", BASES_WITH_MASKS)
def test_standard_weights_load_into_masked_variant(base: str) -> None:
    # BP / ANP / ANP-VS start from a Standard checkpoint (docs/decisions.md item 7; docs/reference.md §4).
    plain = create_model(base)
    masked = create_model(f"{base}_bbd")
    fresh_masks = {k: v.clone() for k, v in masked.state_dict().items() if k.endswith(("a_uc", "b_uc"))}
    missing = load_weights(masked, plain.state_dict())
    assert missing and all(k.endswith((".a_uc", ".b_uc")) for k in missing)
    assert set(missing) == set(fresh_masks)
    state = masked.state_dict()
    for k, v in plain.state_dict().items():
        assert torch.equal(state[k], v), k
    for k, v in fresh_masks.items():
        assert torch.equal(state[k], v), k


def test_load_weights_rejects_mismatches() -> None:
    model = create_model("lenet5_caffe")
    with pytest.raises(CheckpointError, match="shape"):
        load_weights(model, create_model("lenet5_caffe", num_classes=100).state_dict())
    state = create_model("lenet5_caffe").state_dict()
    del state["conv1.weight"]
    with pytest.raises(CheckpointError, match="conv1.weight"):
        load_weights(model, state)
    state = create_model("lenet5_caffe").state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="extra.weight"):
        load_weights(model, state)


def test_output_classes_counts_the_classes_or_reports_a_misfit_in_eval_mode() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.BatchNorm1d(8),
                              torch.nn.Linear(8, 5))
    net.train()
    net[2].eval()  # a submodule whose flag differs from its parent's
    before = {name: m.training for name, m in net.named_modules()}
    seen: list[bool] = []
    for m in net.modules():
        m.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    assert output_classes(net, torch.rand(1, 3, 2, 2)) == 5
    assert seen and not any(seen)  # every module ran in eval mode
    assert output_classes(net, torch.rand(1, 1, 28, 28)) is None  # 784 features, not 12: a RuntimeError
    assert {name: m.training for name, m in net.named_modules()} == before
