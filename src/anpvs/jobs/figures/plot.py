"""The figures' drawings: matplotlib's object API, no pyplot, so no GUI backend is touched."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ...core.errors import AnpvsError
from ...io.atomic import atomic_stream


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
    """``fig`` as a PNG through the one atomic writer (never through a symbolic link)."""
    path = Path(path)
    atomic_stream(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    return path




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
    least one log has. Validation accuracies (clean, PGD) share a panel; the validation vulnerability, on
    another scale, has its own. The masks' KL panel holds the runs with masks only (TRADES logs its own KL
    term under the same key)."""
    labels = [lab for lab, rows in logs.items() if rows]
    keys = {k for lab in labels for r in logs[lab] for k in r}
    masked = [lab for lab in labels if any(isinstance(r.get("active_units"), dict) for r in logs[lab])]
    val_acc = sorted(k for k in keys if k.startswith("val_") and k.endswith("_acc"))
    panels = [("training loss", ["loss"], labels), ("training accuracy (%)", ["acc"], labels),
              ("training adversarial accuracy (%)", ["adv_acc"], labels),
              ("validation accuracy (%)", val_acc, labels),
              ("validation vulnerability", ["val_vulnerability"], labels), ("KL (masks)", ["kl"], masked)]
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
    """Active units per masked layer and epoch, one panel per run with masks; ``None`` when no run has any.

    Runs whose masked layers are the same (the runs of one reproduction) share one legend beside the panels, so
    that no legend covers the curves; otherwise each panel has its own."""
    import matplotlib
    from matplotlib.ticker import LogLocator, MaxNLocator

    masked = {lab: rows for lab, rows in logs.items() if any(isinstance(r.get("active_units"), dict) for r in rows)}
    if not masked:
        return None
    layer_sets = [list(next(r["active_units"] for r in rows if isinstance(r.get("active_units"), dict)))
                  for rows in masked.values()]
    shared = all(names == layer_sets[0] for names in layer_sets)
    legend_w = 0.9 if shared else 0.0
    fig = _figure(figsize=(4.0 * len(masked) + legend_w, 3.2))
    axes = fig.subplots(1, len(masked), squeeze=False)[0]
    palette = matplotlib.colormaps["tab20"]  # 20 distinct colours: VGG-16 has 15 masked layers
    for ax, (lab, rows), layers in zip(axes, masked.items(), layer_sets, strict=True):
        for i, name in enumerate(layers):
            pts = [(r["epoch"], r["active_units"][name]) for r in rows if isinstance(r.get("active_units"), dict)]
            ax.plot(*zip(*pts, strict=True), marker=".", label=name, color=palette(i % 20))
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        _plain_log_axis(ax.yaxis)
        ax.set_title(f"{lab}: active units", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        if not shared:
            ax.legend(fontsize=6)
    if shared:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="center right", fontsize=6, frameon=False)
    _margins(fig, top=0.4, right=0.15 + legend_w, wspace=0.25)
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


__all__ = ["FiguresUnavailable", "plot_accuracy_vs_eps", "plot_active_units", "plot_distortion_heatmaps",
           "plot_loss_surfaces", "plot_training_curves", "plot_vulnerability_histograms", "require_matplotlib",
           "training_panels"]
