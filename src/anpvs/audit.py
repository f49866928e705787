"""Old import path of ``anpvs audit``: an alias of :mod:`anpvs.jobs.audit` (the same module object)."""

import sys

from .jobs import audit as _moved

sys.modules[__name__] = _moved
