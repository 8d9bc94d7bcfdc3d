"""``python -m flowforge``: the ``flowforge`` command."""

import sys

from .cli import main

sys.exit(main())
