"""Data-parallel training with torchrun (gloo on CPU): the same result as one process on the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from anpvs.core.distributed import World, shard_bounds
from anpvs.data import ArrayDataset, BatchLoader

TINY = ["--train-limit", "256", "--test-limit", "32", "--batch-size", "32", "--quiet",
        "--set", "train.schedule=constant"]


def _run(args: list[str], nproc: int, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "anpvs", *args]
    else:
        cmd = [sys.executable, "-m", "anpvs", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["state_dict"]


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_shards_cover_the_batch_exactly():
    for n in (7, 32, 33):
        parts = [shard_bounds(n, World(r, 3)) for r in range(3)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    data = ArrayDataset(torch.arange(64 * 4, dtype=torch.uint8).view(64, 1, 2, 2), torch.arange(64) % 10)
    full = list(BatchLoader(data, 16, shuffle=True, seed=3))
    halves = [list(BatchLoader(data, 16, shuffle=True, seed=3, shard=(r, 2))) for r in range(2)]
    for b, (x, y) in enumerate(full):
        assert torch.equal(torch.cat([halves[0][b][0], halves[1][b][0]]), x)
        assert torch.equal(torch.cat([halves[0][b][1], halves[1][b][1]]), y)
    with pytest.raises(ValueError, match="multiple of the process count"):
        BatchLoader(data, 15, shuffle=True, shard=(0, 2))


def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    args = ["train", "--method", "standard", "--epochs", "2", *TINY]
    _run([*args, "--out", str(tmp_path / "one")], 1, tmp_path)
    _run([*args, "--out", str(tmp_path / "two")], 2, tmp_path)
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys()
    # 16 Adam steps; the only difference is the order of the gradient sums (all-reduce of two halves)
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    for a, b in zip(_log(tmp_path / "one"), _log(tmp_path / "two"), strict=True):
        assert a["epoch"] == b["epoch"] and a["acc"] == pytest.approx(b["acc"], abs=1e-3)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-3)


@pytest.mark.slow
def test_two_process_anp_vs_resumes_exactly(tmp_path):
    """kill -9 of a 2-process ANP-VS run after its first checkpoint, then --resume: the weights of the
    uninterrupted run (masks are parameters like any other; rank 0 checkpoints every rank's RNG state)."""
    args = ["train", "--method", "anp_vs", "--pgd-steps", "2", "--epochs", "3", *TINY,
            "--train-limit", "1024"]
    _run([*args, "--out", str(tmp_path / "straight")], 2, tmp_path)
    run = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "anpvs",
           *args, "--out", str(run)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not ((run / "log.jsonl").exists() and (run / "log.jsonl").read_text()):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(_log(run)) < 3, "the run finished before it could be interrupted"
    _run([*args, "--resume", "--out", str(run)], 2, tmp_path)
    a, b = _weights(tmp_path / "straight"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a), "resume under torchrun must reach the same weights"
    assert [r["epoch"] for r in _log(run)] == [1, 2, 3]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert len(ckpt["rng"]["ranks"]) == 2


def test_only_rank_zero_checks_the_run_folder(tmp_path, monkeypatch):
    """Rank 0 creates and locks --out before it writes the marker; another rank checking the folder in
    between saw the lock alone and refused the folder as someone else's (a race that failed a torchrun job
    with exit 2). Ranks above 0 leave the folder to rank 0, and a lock alone is anpvs's own."""
    from anpvs.training import loop
    from anpvs.training.runlock import LOCK_NAME, foreign_entries

    half_made = tmp_path / "run"
    half_made.mkdir()
    (half_made / LOCK_NAME).write_text("123\n")
    assert foreign_entries(half_made) == []
    (half_made / "notes.txt").write_text("someone's")
    assert foreign_entries(half_made) == ["notes.txt"]

    seen = []
    monkeypatch.setattr(loop, "prepare_run_dir", lambda *a, **k: seen.append("prepare"))
    monkeypatch.setattr(loop, "_fit", lambda cfg, **k: seen.append("fit") or {"epoch": 0})
    monkeypatch.setenv("RANK", "1")
    loop.fit(object())
    assert seen == ["fit"]
