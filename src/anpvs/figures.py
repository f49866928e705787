"""Old import path of ``anpvs figures`` (now the package :mod:`anpvs.jobs.figures`)."""

from .jobs.figures import (
    FiguresUnavailable,
    accuracy_vs_eps,
    draw_figures,
    feature_vulnerability,
    input_distortion,
    loss_surface,
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
