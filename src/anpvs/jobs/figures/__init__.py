"""The paper's figures (section 5 of the paper), drawn from trained runs with matplotlib (extra ``plots``).

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

:func:`draw_figures` draws all of them from a folder written by :func:`anpvs.jobs.reproduce.reproduce`
(``anpvs figures DIR``).
"""


from .compute import accuracy_vs_eps, feature_vulnerability, input_distortion, loss_surface
from .draw import draw_figures
from .plot import (
    FiguresUnavailable,
    plot_accuracy_vs_eps,
    plot_active_units,
    plot_distortion_heatmaps,
    plot_loss_surfaces,
    plot_training_curves,
    plot_vulnerability_histograms,
    require_matplotlib,
    training_panels,
)

__all__ = ["FiguresUnavailable", "accuracy_vs_eps", "draw_figures", "feature_vulnerability", "input_distortion",
           "loss_surface", "plot_accuracy_vs_eps", "plot_active_units", "plot_distortion_heatmaps",
           "plot_loss_surfaces", "plot_training_curves", "plot_vulnerability_histograms", "require_matplotlib",
           "training_panels"]
