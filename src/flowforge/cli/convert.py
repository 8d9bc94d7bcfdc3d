"""``flowforge convert TABLE.csv TABLE.npy``: a CSV table as a ``.npy`` file, once, in bounded memory.

A ``.npy`` file is what ``flowforge fit --data`` reads a batch at a time (``--stream``,
automatic above 1 GiB); a CSV file is parsed into memory whole, which limits it to
:data:`~flowforge.cli.data.MAX_TEXT_BYTES`. The conversion (:func:`~flowforge.streaming.csv_to_npy`)
parses the rows a chunk at a time, checks every value (a missing or non-numeric one is an error naming
its line and column), and moves the file into place only when it is complete; an existing file is
replaced only with ``--overwrite``. The column names of the header are printed with their indices,
which ``--columns`` and ``--context`` then take.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..datasets import DataError
from ..streaming import csv_to_npy
from .errors import CLIError

DTYPES: dict[str, type[np.floating]] = {"float64": np.float64, "float32": np.float32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``convert``."""
    parser.add_argument("source", metavar="TABLE.csv", help="a CSV (or .txt) table of numbers, UTF-8")
    parser.add_argument("target", metavar="TABLE.npy", help="the .npy file to write")
    parser.add_argument("--delimiter", default=",", help="field separator (default ,; \\t or tab for tabs)")
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default="float64", help="float64 (default, exact) or float32 (half the size)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace TABLE.npy if it exists")


def run(args: argparse.Namespace) -> None:
    """Convert ``args.source`` into ``args.target`` and print its shape and columns."""
    source, target = Path(args.source), Path(args.target)
    delimiter = {"\\t": "\t", "tab": "\t"}.get(args.delimiter, args.delimiter)
    if len(delimiter) != 1:
        raise CLIError(f"--delimiter must be one character (or \\t, tab), got {args.delimiter!r}")
    if source.suffix.lower() in (".npy", ".npz"):
        raise CLIError(f"{args.source!r} is a NumPy file already; convert reads a CSV table (.csv, .txt)")
    if target.suffix.lower() != ".npy":
        raise CLIError(f"the converted table is written as .npy; name the file *.npy, got {args.target!r}")
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise CLIError(f"{args.target!r} is the file being converted; name another")
    if target.is_dir():
        raise CLIError(f"{args.target!r} is a folder; give a file name ending in .npy")
    if target.exists() and not args.overwrite:
        raise CLIError(f"{args.target!r} exists; pass --overwrite to replace it")
    if not target.parent.is_dir():
        raise CLIError(f"cannot write {args.target!r}: folder {str(target.parent)!r} does not exist")
    try:
        (rows, width), names = csv_to_npy(source, target, delimiter, DTYPES[args.dtype])
    except DataError as error:
        raise CLIError(str(error)) from None
    print(f"wrote {target}: {rows} rows x {width} columns ({args.dtype})")
    print("columns (by index for --columns and --context): " + ", ".join(f"{i} {n}" for i, n in enumerate(names)))
