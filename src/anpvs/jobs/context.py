"""What every job starts with: a run opened from its checkpoint (model, config, device, test data).

``anpvs eval``, ``anpvs check`` and ``anpvs figures`` all open checkpoints through :func:`open_run`, so a
checkpoint is read, checked, rebuilt and moved to its device one way, and the test data of a run is
loaded with the run's own data settings one way."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..core import distributed
from ..core.config import Config
from ..core.device import resolve_device
from ..core.errors import ConfigError, DataError
from ..data import DataSplits, canonical_name, load_dataset
from ..models.base import output_classes
from ..models.checkpoint import checkpoint_name, load_model
from ..training.run_config import checkpoint_config

#: EOT samples of the attacks and size of the prediction ensemble under ``sample_weights`` when not given
SAMPLED_EOT = 10
SAMPLED_ENSEMBLE = 10


@dataclasses.dataclass
class RunContext:
    """A checkpoint opened for a job: its rebuilt model (on ``device``), the checkpoint dict and its config."""

    checkpoint: Path
    model: torch.nn.Module
    ckpt: dict[str, Any]
    cfg: Config
    device: torch.device
    world: distributed.World | None = None

    def test_data(self, *, data_dir: str | None = None, test_limit: int | None = None,
                  download: bool | None = None, dataset: str | None = None) -> DataSplits:
        """The run's dataset (test split of ``test_limit`` seeded images, or all) from ``data_dir`` or the
        run's ``data.dir``; ``download`` defaults to the run's ``data.download``.

        ``dataset``: another registered dataset instead (e.g. ``mnist_test_sample``, real MNIST test digits
        bundled with the package), read from ``data_dir`` only and downloaded only if ``download``; its images
        and classes must be the model's (:class:`ConfigError`, one line, otherwise). The subset of
        ``test_limit`` images is drawn with the run's data seed."""
        d = self.cfg.data
        if not is_other_dataset(dataset, d.name):
            return load_dataset(d.name, data_dir or d.dir, download=d.download if download is None else download,
                                test_limit=test_limit, seed=d.seed)
        name = canonical_dataset(dataset)
        data = load_dataset(name, data_dir, download=bool(download), test_limit=test_limit, seed=d.seed)
        self._check_fits(data)
        return data

    def _check_fits(self, data: DataSplits) -> None:
        """The model takes ``data``'s images and predicts as many classes as it has."""
        trained = self.ckpt.get("data") or {}
        shape, classes = trained.get("input_shape"), trained.get("num_classes")
        classes = classes if classes is not None else (self.ckpt.get("model_kwargs") or {}).get("num_classes")
        what = f"{self.checkpoint} was trained on {trained.get('name', 'its dataset')}"
        if shape is not None and tuple(shape) != tuple(data.input_shape):
            raise ConfigError(f"{what}, images of shape {tuple(shape)}; {data.name} has images of shape "
                              f"{tuple(data.input_shape)}")
        if classes is not None and int(classes) != data.num_classes:
            raise ConfigError(f"{what} with {classes} classes; {data.name} has {data.num_classes}")
        # checkpoints without data metadata: the model must at least take the images
        out_classes = output_classes(self.model, data.test.images[:1].to(self.device).float().div(255))
        if out_classes is None:
            raise ConfigError(f"{self.checkpoint} does not accept {data.name}'s images of shape "
                              f"{tuple(data.input_shape)}")
        if out_classes != data.num_classes:
            raise ConfigError(f"{self.checkpoint} predicts {out_classes} classes; {data.name} has "
                              f"{data.num_classes}")


def canonical_dataset(name: str) -> str:
    """:func:`anpvs.data.canonical_name` for a dataset the user named on the command line: an unknown name is a
    usage error (:class:`ConfigError`, exit 2), not a damaged dataset."""
    try:
        return canonical_name(name)
    except DataError as e:
        raise ConfigError(str(e)) from None


def dataset_record(default: Path, dataset: str | None) -> tuple[Path, str | None]:
    """The record path for evaluating on ``dataset`` instead of the run's own (``default`` with ``_NAME`` added,
    so the run's own record is not replaced) and the dataset's canonical name; ``(default, None)`` without one."""
    if dataset is None:
        return default, None
    name = canonical_dataset(dataset)
    return default.with_name(f"{default.stem}_{name}{default.suffix}"), name


def is_other_dataset(dataset: str | None, run_dataset: str) -> bool:
    """Whether ``dataset`` asks for another dataset than the run's own (``None``: the run's)."""
    return dataset is not None and canonical_dataset(dataset) != run_dataset


def job_device(device: str | torch.device, *, sharded: bool = False) -> tuple[torch.device, distributed.World | None]:
    """The device of a job; ``sharded``: under torchrun, set up the process group and use this rank's device."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if not sharded:
        return dev, None
    world = distributed.setup(dev)  # torchrun: the test set is sharded over ranks, rank 0 writes the record
    return distributed.device_for(dev, world), world


def open_run(checkpoint: str | Path, *, device: str | torch.device = "auto", sharded: bool = False) -> RunContext:
    """Resolve the device, load and check the checkpoint, rebuild its model there and its config (a saved config
    that does not rebuild is a damaged checkpoint, :func:`anpvs.training.run_config.checkpoint_config`)."""
    dev, world = job_device(device, sharded=sharded)
    model, ckpt = load_model(checkpoint, map_location=dev)
    cfg = checkpoint_config(ckpt, checkpoint_name(checkpoint))
    return RunContext(Path(checkpoint), model, ckpt, cfg, dev, world)


def check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {batch_size})")


def sampling_setup(model: torch.nn.Module, sample_weights: bool, eot: int | None,
                   ensemble: int | None) -> tuple[int, int]:
    """Validate the EOT / weight-sampling options, switch weight sampling on if asked; returns ``(eot, ensemble)``."""
    if (eot is not None and eot < 1) or (ensemble is not None and ensemble < 1):
        raise ConfigError(f"--eot and --ensemble must be >= 1 (got {eot}, {ensemble})")
    if not sample_weights:
        if ensemble not in (None, 1):
            raise ConfigError("--ensemble averages forwards with sampled weights: it needs --sample-weights")
        return eot or 1, 1
    try:
        from ..nn.bayes import set_sampling
    except ImportError:  # the Bayesian layers are an optional part of the tree
        raise ConfigError("--sample-weights needs anpvs.nn.bayes, which this installation lacks") from None
    if set_sampling(model, True) == 0:
        raise ConfigError(f"--sample-weights needs a Bayesian model (e.g. lenet5_caffe_bnn); "
                          f"{getattr(model, 'model_name', type(model).__name__)} has no Bayesian layers")
    return eot or SAMPLED_EOT, ensemble or SAMPLED_ENSEMBLE


__all__ = ["SAMPLED_ENSEMBLE", "SAMPLED_EOT", "RunContext", "canonical_dataset", "check_batch_size",
           "dataset_record", "is_other_dataset", "job_device", "open_run", "sampling_setup"]
