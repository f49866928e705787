"""One script for a GPU machine (under 10 minutes on one H100-class GPU): the VGG-16 AT step in fp32, bf16 and
channels_last against the textbook loop (``bench_vgg16.py``), then one short AT and one short ANP-VS epoch on real
CIFAR-10 images with ``fit()``, the loop ``anpvs train`` runs; writes one JSON file.

A GPU machine that reaches no package registry brings its own PyTorch; install anpvs beside it without
dependencies, with the data in the working tree::

    pip install --no-deps --no-build-isolation -e .
    python benchmarks/gpu_cifar10.py --data-dir data/cifar10-jpeg --out gpu_cifar10.json

``--quick`` runs everything at toy scale (a CPU smoke test; the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vgg16  # noqa: E402

from anpvs.io.rundir import RunDir  # noqa: E402
from anpvs.training.loop import fit  # noqa: E402
from anpvs.training.run_config import build_config  # noqa: E402


def short_epoch(method: str, *, data_dir: str, device: str, width: float, train_limit: int, batch: int,
                precision: str, init: str | None, out: Path) -> dict:
    cfg = build_config({"data.name": "cifar10", "data.dir": data_dir, "data.train_limit": train_limit,
                        "data.test_limit": 500, "method.name": method, "model.width": width,
                        "train.epochs": 1, "train.batch_size": batch, "train.precision": precision,
                        "device": device, "out": str(out), "init": init, "seed": 0})
    t0 = time.perf_counter()
    summary = fit(cfg, progress=False)
    seconds = time.perf_counter() - t0
    epoch_s = RunDir(out).read_log()[-1]["epoch_time_s"]  # the training epoch alone (no loading, no evaluation)
    return {"method": method, "width": width, "images": train_limit, "batch": batch, "precision": precision,
            "epoch_time_s": epoch_s, "img_per_s": round(train_limit / epoch_s, 1),
            "wall_s_with_loading_and_eval": round(seconds, 1), "checkpoint_epoch": summary.get("epoch")}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="CIFAR-10: the python batches or the JPEG layout")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=float, default=1.0, help="VGG-16 width multiplier (1: the paper's network)")
    p.add_argument("--train-limit", type=int, default=10000, help="images of each short epoch")
    p.add_argument("--quick", action="store_true", help="toy scale: a smoke test that runs on a CPU")
    p.add_argument("--out", default="gpu_cifar10.json")
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.train_limit = 0.125, 16
    result: dict = {"script": "gpu_cifar10", "device": args.device,
                    "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                    "torch": torch.__version__}
    bench_args = ["--device", args.device, "--width", str(args.width), "--data-dir", args.data_dir]
    result["step_benchmark"] = bench_vgg16.main(bench_args + (["--quick"] if args.quick else ["--rounds", "3",
                                                                                              "--reps", "3"]))
    batch = 8 if args.quick else 64
    precisions = ["fp32"] + (["bf16"] if bench_vgg16.native_bf16(torch.device(args.device))[0] else [])
    epochs = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in precisions:
            std = short_epoch("standard", data_dir=args.data_dir, device=args.device, width=args.width,
                              train_limit=args.train_limit, batch=batch, precision=precision, init=None,
                              out=Path(tmp) / f"standard_{precision}")
            epochs.append(std)
            epochs.append(short_epoch("at", data_dir=args.data_dir, device=args.device, width=args.width,
                                      train_limit=args.train_limit, batch=batch, precision=precision, init=None,
                                      out=Path(tmp) / f"at_{precision}"))
            epochs.append(short_epoch("anp_vs", data_dir=args.data_dir, device=args.device, width=args.width,
                                      train_limit=args.train_limit, batch=batch, precision=precision,
                                      init=str(Path(tmp) / f"standard_{precision}" / "checkpoint.pt"),
                                      out=Path(tmp) / f"anp_vs_{precision}"))
    result["short_epochs"] = epochs
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"written": args.out, "short_epochs": epochs}, indent=2))
    return result


if __name__ == "__main__":
    main()
