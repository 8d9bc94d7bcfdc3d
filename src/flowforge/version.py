"""The installed package's version, read from its metadata (pyproject.toml holds the only literal)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flowforge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
