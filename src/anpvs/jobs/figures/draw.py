"""``anpvs figures DIR``: every figure of a reproduction folder, from its runs (first seed of each row)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...attacks import PGD, eval_mode
from ...core.config import EvalSpec
from ...io.atomic import write_json
from ...io.rundir import ReproDir, RunDir
from ..context import job_device, open_run
from .compute import accuracy_vs_eps, feature_vulnerability, input_distortion, loss_surface
from .plot import (
    FiguresUnavailable,
    plot_accuracy_vs_eps,
    plot_active_units,
    plot_distortion_heatmaps,
    plot_loss_surfaces,
    plot_training_curves,
    plot_vulnerability_histograms,
    require_matplotlib,
)

log = logging.getLogger(__name__)

#: rows of the paper's figures (row keys of a reproduction)
HISTOGRAM_ROWS = ("standard", "bp", "at", "anp_vs")
HEATMAP_ROWS = ("standard", "anp_vs")
SURFACE_ROWS = ("at", "anp_vs")
DEFAULT_EPS_FACTORS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)




def figure_spec(specs: dict[str, EvalSpec]) -> EvalSpec:
    """The one evaluation spec of a figure: every run's own (:meth:`EvalSpec.of` its config), which must agree
    on the attack (radius, norm, step, steps, restarts), as the panels compare the runs under one attack."""
    first_key, first = next(iter(specs.items()))
    for key, spec in specs.items():
        if spec.attack_settings() != first.attack_settings():
            raise FiguresUnavailable(f"the runs {first_key!r} and {key!r} are evaluated under different attacks "
                                     f"({first.attack_settings()} vs {spec.attack_settings()}); one figure compares "
                                     f"runs under one attack")
    return first


def draw_figures(out: str | Path, *, device: str = "auto", n_images: int | None = None,
                 progress: bool = False) -> list[Path]:
    """Draw every figure of a reproduction folder (``anpvs reproduce --out DIR``) into ``DIR/figures``.

    Uses the first seed's run of each row and the first ``n_images`` test images (default: the
    protocol's ``figures.n_images`` or 256). Returns the PNG paths."""
    require_matplotlib()
    out = Path(out)
    repro = ReproDir(out)
    manifest = repro.read_manifest(FiguresUnavailable)
    opts = manifest.get("figures") or {}
    n_images = n_images or int(opts.get("n_images", 256))
    eps_factors = [float(f) for f in opts.get("eps_factors", DEFAULT_EPS_FACTORS)]
    dev, _ = job_device(device)
    seed = manifest["seeds"][0]
    runs: dict[str, dict[str, Any]] = {}
    for row in manifest["rows"]:
        ckpt = repro.row(row["key"], seed).checkpoint
        if ckpt.is_file():
            label = f"{row['label']} (ablation)" if row.get("ablation") else row["label"]
            runs[row["key"]] = {"label": label, "checkpoint": ckpt}
    if not runs:
        raise FiguresUnavailable(f"no finished runs of seed {seed} in {out / 'runs'}")
    fig_dir = repro.figures
    paths: list[Path] = []

    logs = {r["label"]: RunDir.of(r["checkpoint"]).read_log() for r in runs.values()}
    paths.append(plot_training_curves(logs, fig_dir / "training_curves.png"))
    p = plot_active_units(logs, fig_dir / "active_units.png")
    if p is not None:
        paths.append(p)

    models: dict[str, nn.Module] = {}
    epochs: dict[str, int] = {}
    opened = {}
    for key, r in runs.items():
        opened[key] = run = open_run(r["checkpoint"], device=dev)
        models[key], epochs[key] = run.model, run.ckpt.get("epoch")
    e = figure_spec({key: EvalSpec.of(run.cfg) for key, run in opened.items()})
    first = next(iter(opened.values()))  # one test set for every panel (the runs of a reproduction share it)
    data = first.test_data(test_limit=first.cfg.data.test_limit, download=False)
    x = data.test.images[:n_images].float().div(255)
    y = data.test.labels[:n_images]
    attack = PGD(eps=e.eps, step_size=e.step_size, steps=e.steps, restarts=e.restarts, norm=e.norm)
    what = f"{data.name}, {len(x)} test images, PGD-{e.steps} eps {e.eps}"
    log.info("figures: %d runs, %s", len(runs), what)

    hist = [k for k in HISTOGRAM_ROWS if k in models]
    if hist:
        vuln = {}
        for k in hist:
            torch.manual_seed(0)
            vuln[runs[k]["label"]] = feature_vulnerability(models[k], x, y, attack)
        names = getattr(models[hist[0]], "latent_names", lambda: None)()
        paths.append(plot_vulnerability_histograms(vuln, fig_dir / "vulnerability_histograms.png",
                                                   layer_names=names))

    heat = [k for k in HEATMAP_ROWS if k in models]
    if heat:
        maps = {}
        for k in heat:
            torch.manual_seed(0)
            maps[runs[k]["label"]] = input_distortion(models[k], x[:1], y[:1], attack)
        paths.append(plot_distortion_heatmaps(x[0], maps, fig_dir / "input_distortion.png",
                                              caption=f"Input-layer distortion of test image 0 (label {int(y[0])}), "
                                                      f"white-box PGD-{e.steps}, eps {e.eps}"))

    cache_path = fig_dir / "accuracy_vs_eps.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    eps_list = [round(f * e.eps, 6) for f in eps_factors]
    curves = {}
    for k, model in models.items():
        key = {"checkpoint": str(runs[k]["checkpoint"]), "epoch": epochs[k], "n": len(x), "eps": eps_list,
               "steps": e.steps, "step_per_eps": e.step_size / e.eps if e.eps else 0.0,
               "sweep": "checks.eps_sweep"}  # curves of the older per-eps loop are recomputed
        hit = cache.get(k)
        if not hit or {kk: hit.get(kk) for kk in key} != key:
            acc = accuracy_vs_eps(model, x, y, eps_list, steps=e.steps, step_per_eps=key["step_per_eps"])
            hit = cache[k] = {**key, "acc": acc}
        curves[runs[k]["label"]] = (eps_list, hit["acc"])
    fig_dir.mkdir(parents=True, exist_ok=True)
    write_json(cache_path, cache)
    paths.append(plot_accuracy_vs_eps(curves, fig_dir / "accuracy_vs_eps.png", eps_ref=e.eps,
                                      title=f"White-box PGD-{e.steps} accuracy vs eps ({data.name}, {len(x)} images)"))

    surf = [k for k in SURFACE_ROWS if k in models]
    if surf:
        idx = 0
        with torch.no_grad():  # the first test image every compared model classifies correctly
            ok = torch.ones(len(x), dtype=torch.bool)
            for k in surf:
                with eval_mode(models[k]):
                    ok &= (models[k](x.to(dev)).argmax(1) == y.to(dev)).cpu()
            if ok.any():
                idx = int(ok.nonzero()[0])
        surfaces = {runs[k]["label"]: loss_surface(models[k], x[idx:idx + 1], y[idx:idx + 1], e.eps) for k in surf}
        paths.append(plot_loss_surfaces(surfaces, fig_dir / "loss_surface.png",
                                        caption=f"Loss around test image {idx} (label {int(y[idx])}): "
                                                f"x + a sign(grad) + b random sign, a, b in [-{e.eps}, {e.eps}]"))
    log.info("figures written to %s", fig_dir)
    return paths


__all__ = ["DEFAULT_EPS_FACTORS", "HEATMAP_ROWS", "HISTOGRAM_ROWS", "SURFACE_ROWS", "draw_figures", "figure_spec"]
