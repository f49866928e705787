"""``python -m anpvs``: the command line (same as the ``anpvs`` script)."""

import sys

from .cli import main

sys.exit(main())
