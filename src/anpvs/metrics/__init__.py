"""Metrics of anpvs.

* :mod:`anpvs.metrics.efficiency`: analytic FLOPs, memory and unit sparsity of a unit-pruned
  network (the paper's efficiency columns), FlopCounterMode cross-check, weight statistics.
* :mod:`anpvs.metrics.vulnerability`: latent-feature vulnerability (metric and VS loss).
"""

from anpvs.metrics import efficiency as _efficiency
from anpvs.metrics.efficiency import (
    analytic_flops,
    analytic_memory,
    efficiency_report,
    full_units,
    measured_flops,
    unit_sparsity,
    weight_stats,
)
from anpvs.metrics.vulnerability import vulnerability

__all__ = [
    # efficiency
    "ARCHS",
    "UNIT_TOTALS",
    "analytic_flops",
    "analytic_memory",
    "efficiency_report",
    "full_units",
    "measured_flops",
    "unit_sparsity",
    "weight_stats",
    # vulnerability
    "vulnerability",
]


def __getattr__(name: str):
    if name in ("ARCHS", "UNIT_TOTALS"):  # computed from the registered architectures on first use
        return getattr(_efficiency, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
