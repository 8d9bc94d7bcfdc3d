"""``flowforge sample RUN``: samples from a fitted run, written as ``.npy`` or ``.csv``.

The output is never a file of the run (its ``samples.csv``, or a link to its ``model.pt``), and an
existing one is replaced only with ``--overwrite``.

The run is read by :func:`~flowforge.cli.runs.load_run`, and its kind decides how samples are drawn:
target runs sample the flow; table runs sample in the data's units, at the ``--context`` values of a
conditional run; image runs write integer grey levels, of one ``--label`` for a class-conditional run.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from . import runs
from .data import draw_samples
from .errors import CLIError
from .models import data_log_prob
from .validators import MAX_SAMPLE_BYTES, integer, non_negative_int, sample_memory, seed_value

sample_count = integer(1, MAX_SAMPLE_BYTES // 8, "2^28: one value takes 8 bytes, and the samples are held in memory")

CHUNK = 2**18
"""Rows per batch when sampling a target run."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sample``."""
    parser.add_argument("run", metavar="RUN", help="run folder written by fit or demo")
    parser.add_argument("-n", "--num-samples", type=sample_count, required=True, help="how many (1e6 works too)")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help=".npy or .csv, not a file of the run")
    parser.add_argument("--overwrite", action="store_true", help="replace -o if it exists")
    parser.add_argument("--seed", type=seed_value, default=None)
    parser.add_argument("--log-prob", action="store_true", help="append log q(x) as the last column")
    parser.add_argument("--context", metavar="VALUES", help="conditional runs: the context values, comma-separated")
    parser.add_argument("--label", type=non_negative_int, help="class-conditional image runs: the class")


def _data_run_context(args: argparse.Namespace, config: dict, statistics: dict) -> torch.Tensor | None:
    """The context of a data run's samples: standardised context rows, class labels, or None."""
    if config["kind"] == "images":
        if args.context is not None:
            raise CLIError("image runs take --label, not --context")
        if not config["class_cond"]:
            if args.label is not None:
                raise CLIError("this run is not class-conditional; --label does not apply")
            return None
        if args.label is not None and args.label >= 10:
            raise CLIError(f"--label must be a class in 0..9, got {args.label}")
        if args.label is None:
            return torch.randint(10, (args.num_samples,))
        return torch.full((args.num_samples,), args.label, dtype=torch.long)
    if args.label is not None:
        raise CLIError("--label applies to class-conditional image runs")
    names = config["context_names"]
    if not names:
        if args.context is not None:
            raise CLIError("this run is not conditional; --context does not apply")
        return None
    if args.context is None:
        raise CLIError(f"this run is conditional on {', '.join(names)}: give --context with {len(names)} values")
    try:
        values = [float(v) for v in args.context.split(",")]
    except ValueError:
        values = []
    if len(values) != len(names) or not all(math.isfinite(v) for v in values):
        raise CLIError(f"--context needs {len(names)} numbers ({', '.join(names)}), got {args.context!r}")
    context = (torch.tensor(values, dtype=torch.float64) - statistics["context_mean"]) / statistics["context_std"]
    return context.expand(args.num_samples, -1)


@torch.no_grad()
def _samples_and_header(args: argparse.Namespace, run: runs.Run) -> tuple[np.ndarray, list[str] | None]:
    model, config = run.model, run.config
    if config["kind"] == "target":
        if args.context is not None or args.label is not None:
            raise CLIError("--context and --label apply to conditional data runs; this run fits a target density")
        chunks = []
        for start in range(0, args.num_samples, CHUNK):
            x, log_q = model.sample(min(CHUNK, args.num_samples - start))
            chunks.append(torch.cat([x, log_q[:, None]], 1) if args.log_prob else x)
        return torch.cat(chunks).numpy(), [f"x{i + 1}" for i in range(model.p.n_dims)]
    context = _data_run_context(args, config, run.statistics)
    if config["kind"] == "images" and (args.log_prob or Path(args.output).suffix.lower() != ".npy"):
        raise CLIError("image samples are written as .npy grey levels, without --log-prob")
    samples = draw_samples(model, config, args.num_samples, context)
    if args.log_prob:  # in the data's units, through the whitening in float64
        log_q = torch.cat(
            [data_log_prob(model, samples[i : i + CHUNK], None if context is None else context[i : i + CHUNK]).cpu()
             for i in range(0, len(samples), CHUNK)]
        )  # fmt: skip
        samples = torch.cat([samples, log_q[:, None]], 1)
    return samples.numpy(), config["names"]  # None for images, which are written as .npy only


def run(args: argparse.Namespace) -> None:
    """``sample``: draw ``-n`` samples of the run and write them to ``-o``."""
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise CLIError(f"output must end in .npy or .csv, got {args.output!r}")
    runs.check_output(args.output, args.run, args.overwrite)
    loaded = runs.load_run(args.run)
    config = loaded.config
    columns = (
        int(np.prod(config["shape"])) if config["kind"] == "images"
        else len(config["names"]) if config["kind"] != "target" else loaded.model.p.n_dims
    )  # fmt: skip
    sample_memory(args.num_samples, columns + args.log_prob, "-n")
    if args.seed is not None:
        torch.manual_seed(args.seed)
    samples, names = _samples_and_header(args, loaded)
    values = samples[:, :-1] if args.log_prob else samples
    broken = int((~np.isfinite(values.reshape(len(values), -1))).any(1).sum())
    if broken or (args.log_prob and np.isnan(samples[:, -1]).any()):
        raise CLIError(
            f"the model of {args.run!r} gives non-finite samples or log-densities ({broken} of {len(samples)} rows "
            "with non-finite values): its weights are damaged or beyond what float32 holds; nothing was written"
        )
    output = Path(args.output)
    if not output.parent.is_dir():
        raise CLIError(f"cannot write {args.output!r}: folder {str(output.parent)!r} does not exist")
    try:
        if suffix == ".npy":
            runs.save_npy(output, samples)
        else:
            runs.save_csv(output, samples, [*(names or []), *(["log_q"] if args.log_prob else [])])
    except OSError as error:
        raise CLIError(f"cannot write {args.output!r}: {error.strerror or error}") from None
    print(f"wrote {args.num_samples} samples to {args.output}")
