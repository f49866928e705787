"""The paper's figures (SPEC B section 10), drawn from trained runs with matplotlib (extra ``plots``).

Computations (torch, no matplotlib) and drawings (matplotlib's object API, no pyplot, so no GUI
backend is touched) are separate functions:

* :func:`feature_vulnerability` -> :func:`plot_vulnerability_histograms`: per latent layer, the
  distortion ``|z(x) - z(x_adv)|`` of every feature (unit / channel position) averaged over test
  images, one histogram per model, the count of zero-distortion features highlighted;
* :func:`input_distortion` -> :func:`plot_distortion_heatmaps`: the first latent layer's distortion
  of one test image, averaged over channels;
* :func:`plot_training_curves`, :func:`plot_active_units`: the per-epoch ``log.jsonl`` of each run;
* :func:`accuracy_vs_eps` -> :func:`plot_accuracy_vs_eps`: white-box PGD accuracy against eps;
* :func:`loss_surface` -> :func:`plot_loss_surfaces`: cross-entropy over ``x + a d1 + b d2`` (d1 the
  sign of the input gradient, d2 a random sign direction, a, b in [-eps, eps], clipped to [0, 1]).

:func:`draw_figures` draws all of them from a folder written by :func:`anpvs.reproduce.reproduce`
(``anpvs figures DIR``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .attacks import PGD, eval_mode
from .errors import AnpvsError

log = logging.getLogger(__name__)

#: rows of the paper's figures (row keys of a reproduction)
HISTOGRAM_ROWS = ("standard", "bp", "at", "anp_vs")
HEATMAP_ROWS = ("standard", "anp_vs")
SURFACE_ROWS = ("at", "anp_vs")
DEFAULT_EPS_FACTORS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)


class FiguresUnavailable(AnpvsError, RuntimeError):
    """matplotlib is not installed (or there is nothing to draw from)."""


def _figure(**kwargs: Any):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise FiguresUnavailable("figures need matplotlib: pip install 'anpvs[plots]'") from None
    return Figure(**kwargs)


def require_matplotlib() -> None:
    """Raise :class:`FiguresUnavailable` with a one-line message when matplotlib is missing."""
    _figure()


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _plain_log_axis(axis) -> None:
    """Log scale with plain tick labels (mathtext labels make layout ~10x slower) and no minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _margins(fig, *, top: float = 0.8, bottom: float = 0.55, left: float = 0.6, right: float = 0.15,
             **space: float) -> None:
    """``subplots_adjust`` with margins in inches (cheap; matplotlib's layout engines are slow on a busy CPU)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, **space)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------------------------------------
# Computations
# --------------------------------------------------------------------------------------------------------


def _batches(x: Tensor, y: Tensor, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


def feature_vulnerability(model: nn.Module, x: Tensor, y: Tensor, attack: PGD, *,
                          batch_size: int = 250) -> list[Tensor]:
    """Per latent layer, ``mean_images |z(x) - z(x_adv)|`` of every feature (shape ``(C, H, W)`` or ``(D,)``).

    ``x_adv`` is ``attack`` on ``model`` itself (white-box); the model runs in test mode."""
    sums: list[Tensor] | None = None
    device = next(model.parameters()).device
    with eval_mode(model):
        for xb, yb in _batches(x, y, batch_size):
            xb, yb = xb.to(device), yb.to(device)
            x_adv = attack(model, xb, yb)
            with torch.no_grad():
                _, z = model.forward_intermediates(xb)
                _, z_adv = model.forward_intermediates(x_adv)
            d = [(a - b).abs().sum(0).cpu() for a, b in zip(z, z_adv, strict=True)]
            sums = d if sums is None else [s + t for s, t in zip(sums, d, strict=True)]
    assert sums is not None, "no images"
    return [s / len(x) for s in sums]


def input_distortion(model: nn.Module, x: Tensor, y: Tensor, attack: PGD) -> Tensor:
    """``mean_channels |z1(x) - z1(x_adv)|`` of the first latent layer for one image ``x`` (1, C, H, W)."""
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    with eval_mode(model):
        x_adv = attack(model, x, y)
        with torch.no_grad():
            z1 = model.forward_intermediates(x)[1][0]
            z1_adv = model.forward_intermediates(x_adv)[1][0]
    d = (z1 - z1_adv).abs()[0]
    return (d.mean(0) if d.dim() == 3 else d).cpu()


def accuracy_vs_eps(model: nn.Module, x: Tensor, y: Tensor, eps_list: Sequence[float], *, steps: int,
                    step_per_eps: float, seed: int = 0, batch_size: int = 250) -> list[float]:
    """White-box PGD accuracy (%) at each eps; the step size is ``step_per_eps * eps`` (the table's ratio)."""
    device = next(model.parameters()).device
    accs = []
    with eval_mode(model):
        for eps in eps_list:
            torch.manual_seed(seed)
            correct = 0
            for xb, yb in _batches(x, y, batch_size):
                xb, yb = xb.to(device), yb.to(device)
                if eps > 0:
                    xb = PGD(eps=eps, step_size=step_per_eps * eps, steps=steps)(model, xb, yb)
                with torch.no_grad():
                    correct += (model(xb).argmax(1) == yb).sum().item()
            accs.append(100.0 * correct / len(x))
    return accs


def loss_surface(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, n: int = 21,
                 d2: Tensor | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-entropy of ``model`` at ``clip(x + a d1 + b d2, 0, 1)`` on an ``n x n`` grid of ``a, b`` in
    ``[-eps, eps]``, for one image ``x`` (1, C, H, W). ``d1`` is the sign of the input gradient of the loss,
    ``d2`` a random sign direction (drawn from ``seed`` unless given). Returns ``(a, b, loss)`` grids."""
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    if d2 is None:
        g = torch.Generator().manual_seed(seed)
        d2 = torch.randint(0, 2, x.shape, generator=g).float().mul_(2).sub_(1)
    d2 = d2.to(device)
    with eval_mode(model):
        xg = x.clone().requires_grad_(True)
        d1 = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)[0].sign()
        coords = torch.linspace(-eps, eps, n, device=device)
        a, b = torch.meshgrid(coords, coords, indexing="ij")
        pts = (x + a.reshape(-1, 1, 1, 1) * d1 + b.reshape(-1, 1, 1, 1) * d2).clamp(0, 1)
        with torch.no_grad():
            losses = torch.cat([F.cross_entropy(model(p), y.expand(len(p)), reduction="none")
                                for p in pts.split(256)])
    return a.cpu().numpy(), b.cpu().numpy(), losses.reshape(n, n).cpu().numpy()


# --------------------------------------------------------------------------------------------------------
# Drawings
# --------------------------------------------------------------------------------------------------------


def _pick_layers(n: int, most: int = 4) -> list[int]:
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


def plot_vulnerability_histograms(vuln: dict[str, list[Tensor]], path: str | Path, *,
                                  layer_names: Sequence[str] | None = None, bins: int = 40) -> Path:
    """One histogram per (layer, model) of per-feature vulnerability; zero-distortion features in red, counted."""
    labels = list(vuln)
    n_layers = len(next(iter(vuln.values())))
    layers = _pick_layers(n_layers)
    names = list(layer_names or [f"layer {i + 1}" for i in range(n_layers)])
    fig = _figure(figsize=(3.2 * len(labels), 2.6 * len(layers)))
    axes = fig.subplots(len(layers), len(labels), squeeze=False)
    colors = _colors(labels)
    for r, li in enumerate(layers):
        values = {lab: vuln[lab][li].flatten().numpy() for lab in labels}
        top = max(float(v.max()) for v in values.values()) or 1.0
        edges = np.linspace(0.0, top, bins + 1)
        for c, lab in enumerate(labels):
            ax = axes[r][c]
            v = values[lab]
            zero = v <= 1e-12
            ax.hist(v[~zero], bins=edges, color=colors[lab], alpha=0.85)
            width = edges[1] - edges[0]  # the zero-distortion bar sits just left of 0, beside the first bin
            ax.bar([-width], [int(zero.sum())], width=width, color="tab:red", align="edge", label="zero distortion")
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
            ax.set_title(f"{lab}: {names[li]}\nzero: {int(zero.sum())}/{v.size} ({100 * zero.mean():.1f}%), "
                         f"mean {v.mean():.3f}", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == len(layers) - 1:
                ax.set_xlabel("|z(x) - z(x_adv)| per feature", fontsize=8)
            if c == 0:
                ax.set_ylabel("features", fontsize=8)
    fig.suptitle("Feature vulnerability (white-box PGD), per latent layer; red: zero-distortion features",
                 fontsize=10)
    _margins(fig, top=0.95, hspace=0.8, wspace=0.3)
    return _save(fig, path)


def plot_distortion_heatmaps(image: Tensor, maps: dict[str, Tensor], path: str | Path, *,
                             caption: str = "") -> Path:
    """The input image and, per model, the channel-mean distortion of the first latent layer (shared scale)."""
    labels = list(maps)
    fig = _figure(figsize=(3.0 * (len(labels) + 1), 3.2))
    axes = fig.subplots(1, len(labels) + 1, squeeze=False)[0]
    img = image.detach().cpu()
    if img.dim() == 4:
        img = img[0]
    if img.shape[0] == 1:
        axes[0].imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        axes[0].imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    axes[0].set_title("test image", fontsize=9)
    vmax = max(float(m.max()) for m in maps.values()) or 1.0
    im = None
    for ax, lab in zip(axes[1:], labels, strict=True):
        im = ax.imshow(maps[lab].numpy(), cmap="inferno", vmin=0, vmax=vmax)
        ax.set_title(f"{lab}\nmean distortion {float(maps[lab].mean()):.4f}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        w, h = fig.get_size_inches()
        cax = fig.add_axes((1 - 0.95 / w, 0.1 / h, 0.12 / w, 1 - 0.95 / h))
        fig.colorbar(im, cax=cax).set_label("mean over channels of |z1(x) - z1(x_adv)|", fontsize=8)
    fig.suptitle(caption or "Input-layer distortion under white-box PGD", fontsize=10)
    _margins(fig, top=0.85, bottom=0.1, left=0.1, right=1.1, wspace=0.08)
    return _save(fig, path)


def _scalar(v: Any) -> float | None:
    if isinstance(v, dict):  # per-layer values (e.g. KL): their sum
        vals = [x for x in v.values() if isinstance(x, (int, float))]
        return float(sum(vals)) if vals else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def training_panels(logs: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[str], list[str]]]:
    """The panels of :func:`plot_training_curves`: ``(title, log keys, run labels)`` for each metric that at
    least one log has. The masks' KL panel holds the runs with masks only (TRADES logs its own KL term
    under the same key)."""
    labels = [lab for lab, rows in logs.items() if rows]
    keys = {k for lab in labels for r in logs[lab] for k in r}
    masked = [lab for lab in labels if any(isinstance(r.get("active_units"), dict) for r in logs[lab])]
    val_keys = sorted(k for k in keys if k.startswith("val_"))
    panels = [("training loss", ["loss"], labels), ("training accuracy (%)", ["acc"], labels),
              ("training adversarial accuracy (%)", ["adv_acc"], labels),
              ("validation accuracy (%)", val_keys, labels), ("KL (masks)", ["kl"], masked)]
    return [(t, ks, labs) for t, ks, labs in panels if labs and any(k in keys for k in ks)]


def plot_training_curves(logs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Loss, training accuracy, adversarial accuracy, validation accuracy and KL per epoch (panels present
    in at least one log, see :func:`training_panels`), one line per run."""
    from matplotlib.ticker import MaxNLocator

    labels = [lab for lab, rows in logs.items() if rows]
    if not labels:
        raise FiguresUnavailable("no training logs to plot")
    panels = training_panels(logs)
    cols = min(3, len(panels))
    fig = _figure(figsize=(4.2 * cols, 3.2 * math.ceil(len(panels) / cols)))
    axes = np.atleast_1d(fig.subplots(math.ceil(len(panels) / cols), cols, squeeze=False)).flatten()
    colors = _colors(labels)
    styles = ["-", "--", ":", "-."]
    for ax, (title, ks, labs) in zip(axes, panels, strict=False):
        for lab in labs:
            for j, k in enumerate(ks):
                pts = [(r["epoch"], _scalar(r.get(k))) for r in logs[lab]]
                pts = [(e, v) for e, v in pts if v is not None]
                if pts:
                    ax.plot(*zip(*pts, strict=True), styles[j % 4], color=colors[lab], marker=".",
                            label=lab if len(ks) == 1 else f"{lab} {k.removeprefix('val_')}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        if title.startswith("KL"):
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
        ax.legend(fontsize=6)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    _margins(fig, top=0.35, hspace=0.45, wspace=0.25)
    return _save(fig, path)


def plot_active_units(logs: dict[str, list[dict[str, Any]]], path: str | Path) -> Path | None:
    """Active units per masked layer and epoch, one panel per run with masks; ``None`` when no run has any."""
    from matplotlib.ticker import MaxNLocator

    masked = {lab: rows for lab, rows in logs.items() if any(isinstance(r.get("active_units"), dict) for r in rows)}
    if not masked:
        return None
    fig = _figure(figsize=(4.0 * len(masked), 3.2))
    axes = fig.subplots(1, len(masked), squeeze=False)[0]
    for ax, (lab, rows) in zip(axes, masked.items(), strict=True):
        layers = next(r["active_units"] for r in rows if isinstance(r.get("active_units"), dict))
        for name in layers:
            pts = [(r["epoch"], r["active_units"][name]) for r in rows if isinstance(r.get("active_units"), dict)]
            ax.plot(*zip(*pts, strict=True), marker=".", label=name)
        ax.set_yscale("log")
        _plain_log_axis(ax.yaxis)
        ax.set_title(f"{lab}: active units", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    _margins(fig, top=0.4, wspace=0.25)
    return _save(fig, path)


def plot_accuracy_vs_eps(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
                         eps_ref: float | None = None, title: str = "") -> Path:
    """Accuracy (%) against eps, one line per model; a dotted line at the table's eps."""
    fig = _figure(figsize=(5.5, 4.0))
    ax = fig.subplots()
    colors = _colors(list(curves))
    for lab, (eps, acc) in curves.items():
        ax.plot(eps, acc, marker="o", color=colors[lab], label=lab)
    if eps_ref is not None:
        ax.axvline(eps_ref, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("eps (L-inf, pixel units)")
    ax.set_ylabel("accuracy under white-box PGD (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title or "Robustness against the attack radius", fontsize=10)
    ax.legend(fontsize=7)
    _margins(fig, top=0.4)
    return _save(fig, path)


def plot_loss_surfaces(surfaces: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path, *,
                       caption: str = "") -> Path:
    """3-D loss surfaces side by side with a shared z-axis."""
    labels = list(surfaces)
    fig = _figure(figsize=(4.6 * len(labels), 4.8))
    top = max(float(z.max()) for _, _, z in surfaces.values())
    bottom = min(float(z.min()) for _, _, z in surfaces.values())
    for i, lab in enumerate(labels):
        a, b, z = surfaces[lab]
        ax = fig.add_subplot(1, len(labels), i + 1, projection="3d")
        ax.plot_surface(a, b, z, cmap="viridis", vmin=bottom, vmax=top, linewidth=0, antialiased=True)
        ax.set_zlim(bottom, top)
        ax.set_title(f"{lab}\nloss range {float(z.min()):.3f} .. {float(z.max()):.3f}", fontsize=9)
        ax.set_xlabel("a (gradient sign)", fontsize=7)
        ax.set_ylabel("b (random sign)", fontsize=7)
        ax.set_zlabel("cross-entropy", fontsize=7)
        ax.tick_params(labelsize=6)
    import textwrap

    text = textwrap.fill(caption or "Loss surface around one test input", width=int(14 * fig.get_size_inches()[0]))
    fig.suptitle(text, fontsize=10)
    _margins(fig, top=0.95 + 0.17 * text.count("\n"), bottom=0.1, left=0.0, right=0.3, wspace=0.1)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------------
# From a reproduction folder
# --------------------------------------------------------------------------------------------------------


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def draw_figures(out: str | Path, *, device: str = "auto", n_images: int | None = None,
                 progress: bool = False) -> list[Path]:
    """Draw every figure of a reproduction folder (``anpvs reproduce --out DIR``) into ``DIR/figures``.

    Uses the first seed's run of each row and the first ``n_images`` test images (default: the
    protocol's ``figures.n_images`` or 256). Returns the PNG paths."""
    from .checkpoint import load_model
    from .config import config_from_dict
    from .data import load_dataset
    from .runtime import resolve_device

    require_matplotlib()
    out = Path(out)
    manifest_path = out / "reproduce.json"
    if not manifest_path.is_file():
        raise FiguresUnavailable(f"{str(out)!r} is not a reproduction folder (no reproduce.json); "
                                 f"run anpvs reproduce --out {out} first")
    from .reproduce import read_manifest

    manifest = read_manifest(manifest_path, FiguresUnavailable)
    opts = manifest.get("figures") or {}
    n_images = n_images or int(opts.get("n_images", 256))
    eps_factors = [float(f) for f in opts.get("eps_factors", DEFAULT_EPS_FACTORS)]
    dev = resolve_device(device)
    seed = manifest["seeds"][0]
    runs: dict[str, dict[str, Any]] = {}
    for row in manifest["rows"]:
        ckpt = out / "runs" / row["key"] / f"seed{seed}" / "checkpoint.pt"
        if ckpt.is_file():
            label = f"{row['label']} (ablation)" if row.get("ablation") else row["label"]
            runs[row["key"]] = {"label": label, "checkpoint": ckpt}
    if not runs:
        raise FiguresUnavailable(f"no finished runs of seed {seed} in {out / 'runs'}")
    fig_dir = out / "figures"
    paths: list[Path] = []

    logs = {r["label"]: _read_log(r["checkpoint"].parent / "log.jsonl") for r in runs.values()}
    paths.append(plot_training_curves(logs, fig_dir / "training_curves.png"))
    p = plot_active_units(logs, fig_dir / "active_units.png")
    if p is not None:
        paths.append(p)

    models: dict[str, nn.Module] = {}
    epochs: dict[str, int] = {}
    for key, r in runs.items():
        models[key], ckpt = load_model(r["checkpoint"], map_location=dev)
        epochs[key] = ckpt.get("epoch")
    cfg = config_from_dict(ckpt["config"])
    d, e = cfg.data, cfg.eval
    data = load_dataset(d.name, d.dir, test_limit=d.test_limit, seed=d.seed)
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
               "steps": e.steps, "step_per_eps": e.step_size / e.eps if e.eps else 0.0}
        hit = cache.get(k)
        if not hit or {kk: hit.get(kk) for kk in key} != key:
            acc = accuracy_vs_eps(model, x, y, eps_list, steps=e.steps, step_per_eps=key["step_per_eps"])
            hit = cache[k] = {**key, "acc": acc}
        curves[runs[k]["label"]] = (eps_list, hit["acc"])
    fig_dir.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache, indent=2) + "\n")
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


__all__ = ["FiguresUnavailable", "accuracy_vs_eps", "draw_figures", "feature_vulnerability", "input_distortion",
           "loss_surface", "plot_accuracy_vs_eps", "plot_active_units", "plot_distortion_heatmaps",
           "plot_loss_surfaces", "plot_training_curves", "plot_vulnerability_histograms", "require_matplotlib",
           "training_panels"]
