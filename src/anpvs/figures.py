"""Old import path of ``anpvs figures``: an alias of :mod:`anpvs.jobs.figures` (the same module object)."""

import sys

from .jobs import figures as _moved

sys.modules[__name__] = _moved
