"""``python -m flowforge.cli``: the ``flowforge`` command."""

import sys

from . import main

sys.exit(main())
