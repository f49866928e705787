"""Tests of self-describing checkpoints (STYLE rule 8): round trip, atomic writes, loud rejection."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

import anpvs
from anpvs.core.errors import TrainingError
from anpvs.models import create_model
from anpvs.models.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_save,
    load_model,
    make_checkpoint,
    read_checkpoint,
)
from anpvs.training.loop import fit
from anpvs.training.run_config import build_config, config_from_dict

pytestmark = pytest.mark.usefixtures("fake_git")


@pytest.mark.parametrize(("name", "kwargs"), [("lenet5_caffe", {"num_classes": 100}),
                                              ("lenet5_caffe_bbd", {"mask_init": 0.5})])
def test_round_trip_reproduces_outputs_and_metadata(tmp_path: Path, fake_git: str, name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    cfg = build_config({"method.name": "anp_vs", "train.epochs": 3})
    path = tmp_path / "sub" / "checkpoint.pt"
    atomic_save(make_checkpoint(model, config=cfg.to_dict(), epoch=2, metrics={"acc": 91.5}), path)

    # weights_only=True: nothing but tensors and primitive containers inside
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == 1

    loaded, ckpt = load_model(path)
    assert not loaded.training
    assert type(loaded) is type(model)
    assert ckpt["model_name"] == name
    assert ckpt["model_kwargs"] == kwargs
    assert ckpt["epoch"] == 2
    assert ckpt["metrics"] == {"acc": 91.5}
    assert ckpt["anpvs_version"] == anpvs.__version__
    assert ckpt["git_commit"] == fake_git
    assert config_from_dict(ckpt["config"]) == cfg
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][k], v)


def test_state_dict_keys_have_no_wrapper_prefix() -> None:
    model = create_model("lenet5_caffe")
    ckpt = make_checkpoint(model)
    assert set(ckpt["state_dict"]) == set(model.state_dict())
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["state_dict"])


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_save({"format": FORMAT, "epoch": 1}, path)
    before = path.read_bytes()
    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):  # write part of the file, then die (disk full, Ctrl-C, ...)
        real_save(obj, f, *args, **kwargs)
        f.truncate(10)  # atomic_save hands torch.save the open temporary file
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"format": FORMAT, "epoch": 2}, path)
    assert path.read_bytes() == before
    assert read_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"], "a temporary file was left behind"


def test_atomic_save_keeps_the_old_file_on_keyboard_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_save({"format": FORMAT, "epoch": 1}, path)

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"format": FORMAT, "epoch": 2}, path)
    assert read_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


class Payload:
    """An arbitrary class: unpickling it would run code, so weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.x = 1


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "random bytes": tmp_path / "random.pt",
        "pickled object": tmp_path / "object.pt",
        "torch pickle of an object": tmp_path / "torch_object.pt",
        "dict without header": tmp_path / "plain.pt",
        "truncated checkpoint": tmp_path / "truncated.pt",
        "empty file": tmp_path / "empty.pt",
    }
    files["random bytes"].write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    files["pickled object"].write_bytes(pickle.dumps(Payload()))
    torch.save({"format": FORMAT, "payload": Payload()}, files["torch pickle of an object"])
    torch.save({"state_dict": create_model("lenet5_caffe").state_dict()}, files["dict without header"])
    atomic_save(make_checkpoint(create_model("lenet5_caffe")), tmp_path / "good.pt")
    files["truncated checkpoint"].write_bytes((tmp_path / "good.pt").read_bytes()[:2000])
    files["empty file"].write_bytes(b"")
    return files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the plain pickle
def test_read_checkpoint_rejects_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    for what, path in _bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path)
        message = str(info.value)
        assert str(path.name) in message, what
        assert "\n" not in message, f"{what}: the error is not one line: {message!r}"
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    assert read_checkpoint(tmp_path / "good.pt")["model_name"] == "lenet5_caffe"


def test_fit_refuses_to_overwrite_a_run(tiny_config) -> None:
    cfg = tiny_config()
    run = Path(cfg.out)
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"previous run")
    with pytest.raises(TrainingError, match="--resume"):
        fit(cfg, progress=False)
    assert (run / "checkpoint.pt").read_bytes() == b"previous run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]
