"""``flowforge export RUN``: a fitted run's ``log_prob`` or sampler as a ``torch.export`` program or an ONNX file.

The run is read by :func:`~flowforge.cli.runs.load_run` (runs of ``fit`` and ``demo``: target, table and
image runs); runs without a flow model (``vae``, ``mcmc``, ``compare``) are refused. The file is written
by :func:`flowforge.export.export_model` (a temporary name moved into place), never onto a file of the run,
and an existing one is replaced only with ``--overwrite`` (``--force``).

The programs work in the model's dtype (float32). Table runs: ``x`` is in the data's units (the
whitening is part of the model) and a conditional run's program takes the raw context values and
standardises them as ``flowforge sample`` does. Image runs: ``x`` is the model's value in ``(0, 1)``
(``floor(x · levels)`` is the grey level), and a class-conditional run takes int64 labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .. import export
from . import runs
from .errors import CLIError
from .validators import integer

SUFFIXES = {"torch-export": ".pt2", "onnx": ".onnx"}
"""The file name ending each ``--format`` needs."""

sample_count = integer(2, 2**20, "2^20 rows of noise, the count the sampler is traced at")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``export``."""
    parser.add_argument("run", metavar="RUN", help="run folder written by fit or demo")
    parser.add_argument("--format", required=True, choices=export.FORMATS, help="torch-export (.pt2) or onnx (.onnx)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help=".pt2 or .onnx, not a file of the run")
    parser.add_argument(
        "--what", choices=export.METHODS, default="log_prob", help="log_prob (default) or sample (from given noise)"
    )
    parser.add_argument(
        "--num-samples", type=sample_count, metavar="N", help="--what sample: fix the number of samples (default: any)"
    )
    parser.add_argument("--overwrite", "--force", action="store_true", help="replace -o if it exists")


def _check_output(args: argparse.Namespace) -> Path:
    suffix = SUFFIXES[args.format]
    output = Path(args.output)
    if output.is_dir():
        raise CLIError(f"-o {args.output!r} is a folder; give a file name ending in {suffix}")
    if output.suffix.lower() != suffix:
        raise CLIError(f"--format {args.format} writes a {suffix} file; -o must end in {suffix}, got {args.output!r}")
    runs.check_output(output, args.run, args.overwrite)
    if not output.parent.is_dir():
        raise CLIError(f"cannot write {args.output!r}: folder {str(output.parent)!r} does not exist")
    return output


def _context_scaling(run: runs.Run) -> tuple[torch.Tensor, torch.Tensor] | None:
    if run.config["kind"] != "table" or not run.config.get("context_names"):
        return None
    return run.statistics["context_mean"].double(), run.statistics["context_std"].double()


def run(args: argparse.Namespace) -> None:
    """``export``: write the run's ``--what`` as ``--format`` to ``-o``."""
    if args.num_samples is not None and args.what != "sample":
        raise CLIError("--num-samples applies to --what sample (log_prob programs take any batch)")
    output = _check_output(args)
    kind = runs.read_run_config(args.run)["kind"]
    if kind not in runs.SAMPLED_KINDS:
        raise CLIError(f"{str(args.run)!r} is a {kind} run; export takes runs of fit and demo, which hold a flow")
    loaded = runs.load_run(args.run)
    fixed = args.num_samples is not None
    try:
        export.export_model(
            loaded.model,
            output,
            method=args.what,
            format=args.format,
            batch_size=args.num_samples if fixed else 4,
            dynamic_batch=not fixed,
            context_scaling=_context_scaling(loaded),
        )
    except (NotImplementedError, TypeError, ValueError) as error:
        raise CLIError(f"cannot export {args.what} of {str(args.run)!r}: {error}") from None
    except ImportError as error:
        raise CLIError(str(error)) from None
    except OSError as error:
        raise CLIError(f"cannot write {args.output!r}: {error.strerror or error}") from None
    inputs, outputs = export.io_names(loaded.model, args.what)
    rows = str(args.num_samples) if fixed else "any number of"
    print(
        f"wrote {args.what} of {args.run} to {args.output} ({args.format}): inputs {', '.join(inputs)}; "
        f"outputs {', '.join(outputs)}; {rows} rows"
    )
