"""Old import path of ``anpvs audit`` (now :mod:`anpvs.jobs.audit`)."""

from .jobs.audit import MAX_FINAL_ACC, AuditError, audit, markdown

__all__ = ["MAX_FINAL_ACC", "AuditError", "audit", "markdown"]
