"""The one error of the ``flowforge`` command, and the argument parser that raises it.

Every mistake a user can cause (an unknown name, a bad number, an unwritable folder, a missing or
unreadable run, data a model cannot fit) is raised as :class:`CLIError`; :func:`flowforge.cli.main`
turns it into one ``flowforge: error: ...`` line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class CLIError(Exception):
    """A mistake in what the user asked for; the message is the whole report, one line."""


class Parser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are :class:`CLIError` (one line, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(message)
