"""Tables in the paper's column layout, from evaluation records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: (header, metric key, digits) in the order of the paper's Table 1
COLUMNS: list[tuple[str, str, int]] = [
    ("Clean acc (%)", "clean_acc", 2),
    ("White-box PGD acc (%)", "pgd_acc", 2),
    ("Black-box acc (%)", "bb_pgd_acc", 2),
    ("White-box vuln.", "pgd_vulnerability", 3),
    ("Black-box vuln.", "bb_pgd_vulnerability", 3),
    ("Memory (%)", "memory_pct", 2),
    ("FLOPs (x)", "flops_speedup", 2),
    ("Sparsity (%)", "unit_sparsity", 2),
]


def _fmt(values: Sequence[float], digits: int) -> str:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "-"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(rows: dict[str, list[dict[str, Any]]], columns: list[tuple[str, str, int]] = COLUMNS) -> str:
    """``rows`` maps a row label to the metric dicts of its seeds; cells show mean (± sample std over seeds)."""
    header = "| Model | " + " | ".join(h for h, _, _ in columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    lines = [header, sep]
    for label, seeds in rows.items():
        cells = [_fmt([m.get(key) for m in seeds], digits) for _, key, digits in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
