"""Metrics of anpvs.

* :mod:`anpvs.metrics.efficiency`: analytic FLOPs, memory and unit sparsity of a unit-pruned
  network (the paper's efficiency columns), FlopCounterMode cross-check, weight statistics.
* :mod:`anpvs.metrics.vulnerability`: latent-feature vulnerability (metric and VS loss).
"""

from anpvs.metrics.efficiency import (
    ARCHS,
    UNIT_TOTALS,
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
