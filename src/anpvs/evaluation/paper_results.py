"""The paper's own numbers (ANP-VS, ICML 2020, Table 1; the reference README's three tables), as data.

Transcribed from the paper's Table 1 (mean of five runs; docs/reference.md §9). Rows are keyed by this project's method
names, values by the metric keys of :mod:`anpvs.evaluation.evaluate`, so a table can print the paper's number
beside ours. Two caveats the tables repeat in their footnotes:

* the paper's "Sparsity" of ADMM is a *weight* sparsity (unstructured pruning), every other row's
  is a *unit* sparsity (docs/decisions.md item 5; docs/reference.md §6); it is stored under ``unit_sparsity`` because
  that is the column it sits in;
* AT BNN's 200 % memory and 0.50x FLOPs are constants written by the authors (mean and sigma per
  weight), not measurements.
"""

from __future__ import annotations

from typing import Any

#: metric keys in the order of the paper's columns (Clean, WB, BB, V_WB, V_BB, Memory, FLOPs, Sparsity)
PAPER_KEYS: tuple[str, ...] = ("clean_acc", "pgd_acc", "bb_pgd_acc", "pgd_vulnerability", "bb_pgd_vulnerability",
                               "memory_pct", "flops_speedup", "unit_sparsity")

#: paper row label -> this project's row (method) key
PAPER_ROWS: dict[str, str] = {"Standard": "standard", "BP": "bp", "AT": "at", "AT BNN": "at_bnn",
                              "Pretrained AT": "pretrained_at", "ADMM": "admm", "TRADES": "trades",
                              "ANP-VS": "anp_vs"}

_TABLES: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": {  # MNIST, LeNet5-Caffe
        "Standard": (99.29, 0.00, 8.02, 0.129, 0.113, 100.0, 1.00, 0.00),
        "BP": (99.34, 0.00, 12.99, 0.091, 0.078, 4.14, 9.68, 83.48),
        "AT": (99.14, 88.03, 94.18, 0.045, 0.040, 100.0, 1.00, 0.00),
        "AT BNN": (99.16, 88.44, 94.87, 0.364, 0.199, 200.0, 0.50, 0.00),
        "Pretrained AT": (99.18, 88.26, 94.49, 0.412, 0.381, 100.0, 1.00, 0.00),
        "ADMM": (99.01, 88.47, 94.61, 0.041, 0.038, 100.0, 1.00, 80.00),
        "TRADES": (99.07, 89.67, 95.04, 0.037, 0.033, 100.0, 1.00, 0.00),
        "ANP-VS": (99.05, 91.31, 95.43, 0.017, 0.015, 6.81, 10.57, 84.16),
    },
    "cifar10": {  # CIFAR-10, VGG-16
        "Standard": (92.76, 13.79, 41.65, 0.077, 0.065, 100.0, 1.00, 0.00),
        "BP": (92.91, 14.30, 42.88, 0.037, 0.033, 12.41, 2.34, 75.92),
        "AT": (87.50, 49.85, 63.70, 0.050, 0.047, 100.0, 1.00, 0.00),
        "AT BNN": (86.69, 51.87, 64.92, 0.267, 0.238, 200.0, 0.50, 0.00),
        "Pretrained AT": (87.50, 52.25, 66.10, 0.041, 0.036, 100.0, 1.00, 0.00),
        "ADMM": (78.15, 47.37, 62.15, 0.034, 0.030, 100.0, 1.00, 75.00),
        "TRADES": (80.33, 52.08, 64.80, 0.045, 0.042, 100.0, 1.00, 0.00),
        "ANP-VS": (88.18, 56.21, 71.44, 0.019, 0.016, 12.27, 2.41, 76.53),
    },
    "cifar100": {  # CIFAR-100, VGG-16
        "Standard": (67.44, 2.81, 14.94, 0.143, 0.119, 100.0, 1.00, 0.00),
        "BP": (69.40, 3.12, 16.39, 0.067, 0.059, 18.59, 1.95, 63.48),
        "AT": (57.79, 19.07, 32.47, 0.079, 0.071, 100.0, 1.00, 0.00),
        "AT BNN": (53.75, 19.40, 30.38, 0.446, 0.385, 200.0, 0.50, 0.00),
        "Pretrained AT": (57.14, 19.86, 35.42, 0.071, 0.065, 100.0, 1.00, 0.00),
        "ADMM": (52.52, 19.65, 31.30, 0.060, 0.056, 100.0, 1.00, 75.00),
        "TRADES": (56.70, 21.21, 32.81, 0.065, 0.060, 100.0, 1.00, 0.00),
        "ANP-VS": (59.15, 22.35, 37.01, 0.035, 0.030, 16.74, 2.02, 66.80),
    },
}

#: what each table was run on (for captions)
PAPER_SETTINGS: dict[str, str] = {
    "mnist": "MNIST, LeNet5-Caffe",
    "cifar10": "CIFAR-10, VGG-16",
    "cifar100": "CIFAR-100, VGG-16",
}

#: footnotes that belong to the paper's numbers themselves: ``(row the note is about or None, text)``
PAPER_NOTES: list[tuple[str | None, str]] = [
    (None, "Paper numbers: ANP-VS (Madaan, Shin, Hwang, ICML 2020) Table 1, mean of five runs (docs/reference.md §9)."),
    ("admm", "The paper's ADMM sparsity is a weight sparsity (unstructured pruning); every other paper sparsity is "
             "a unit sparsity. Compare ADMM with our weight-sparsity column."),
    ("at_bnn", "The paper's AT BNN memory (200 %) and FLOPs (0.50x) are constants written by its authors (mean and "
               "sigma per weight), not measurements."),
]


def paper_notes(rows: list[str] | tuple[str, ...]) -> list[str]:
    """The footnotes of :data:`PAPER_NOTES` that concern a table showing ``rows`` (row keys)."""
    return [text for row, text in PAPER_NOTES if row is None or row in rows]


def paper_table(table: str) -> dict[str, dict[str, Any]]:
    """``{row key: {metric key: value}}`` for ``table`` in ``mnist | cifar10 | cifar100``."""
    if table not in _TABLES:
        raise KeyError(f"no paper table {table!r}; valid: {', '.join(_TABLES)}")
    return {PAPER_ROWS[label]: dict(zip(PAPER_KEYS, values, strict=True)) for label, values in _TABLES[table].items()}


def paper_labels() -> dict[str, str]:
    """``{row key: the paper's row label}``."""
    return {key: label for label, key in PAPER_ROWS.items()}


TABLES: tuple[str, ...] = tuple(_TABLES)

__all__ = ["PAPER_KEYS", "PAPER_NOTES", "PAPER_ROWS", "PAPER_SETTINGS", "TABLES", "paper_labels", "paper_notes",
           "paper_table"]
