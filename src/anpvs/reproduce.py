"""Old import path of ``anpvs reproduce``: an alias of :mod:`anpvs.jobs.reproduce` (the same module object)."""

import sys

from .jobs import reproduce as _moved

sys.modules[__name__] = _moved
