"""The ``flowforge`` command: fit a flow and look at it, list targets, sample a run, export a run's
density or sampler, run MCMC, compare flows of several depths, train a VAE with a flow posterior.

One module per subcommand group, each adding its own options and running its command:
:mod:`~flowforge.cli.fit` (``fit``, ``demo``, ``targets``), :mod:`~flowforge.cli.data` (``fit --data``),
:mod:`~flowforge.cli.sampling` (``mcmc``, ``compare``), :mod:`~flowforge.cli.vae` (``vae``),
:mod:`~flowforge.cli.sample` (``sample``), :mod:`~flowforge.cli.export` (``export``: a torch.export
program or an ONNX file) and :mod:`~flowforge.cli.convert` (``convert``: a CSV table as ``.npy``).
They share one error type (:mod:`~flowforge.cli.errors`),
one set of argument checks (:mod:`~flowforge.cli.validators`) and one writer and reader of run folders
(:mod:`~flowforge.cli.runs`), which records each run's kind in its ``config.json``.

Errors a user can cause (unknown names, bad numbers, unwritable folders, missing runs) end in one
``flowforge: error: ...`` line and exit status 2, without a traceback; so does a file the command
cannot write (a full disk, a read-only folder), which is never left half-written.

SIGINT, SIGTERM and SIGHUP stop the command (one ignored when it starts, as under ``nohup``, stays
ignored): inside a training loop at the next step or batch boundary, with the loop's checkpoint
written; elsewhere at once. Either way the run folder is marked ``"interrupted"``, one line says
which signal stopped the command (and where its checkpoint is, and how to resume), and the exit
status is 128 + the signal's number: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from ..training.checkpoint import ResumeError
from ..training.interrupt import InterruptingSignals, signal_name
from ..version import __version__
from . import convert, export, fit, runs, sample, sampling, vae
from .errors import CLIError, Parser

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; each sets ``handler``, the function that runs it."""
    parser = Parser(prog="flowforge", description="Fit normalizing flows and look at them.")
    parser.add_argument("--version", action="version", version=f"flowforge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def command(name: str, summary: str, handler) -> argparse.ArgumentParser:
        subparser = commands.add_parser(name, help=summary)
        subparser.set_defaults(handler=handler, command_parser=subparser)
        return subparser

    fit.add_arguments(
        command("fit", "fit a flow to a target density or to data (--data) and write a run folder", fit.run)
    )
    fit.add_arguments(
        command("demo", "the seed workflow: 16 Planar layers to TwoModes(2, 0.1), 20000 annealed steps", fit.run),
        demo=True,
    )
    sampling.add_mcmc_arguments(
        command("mcmc", "sample a target with Metropolis-Hastings or HMC chains and picture them", sampling.run_mcmc)
    )
    sampling.add_compare_arguments(
        command(
            "compare",
            "target | MCMC samples | flows of several depths K, side by side (Rezende & Mohamed)",
            sampling.run_compare,
        )
    )
    vae.add_arguments(
        command("vae", "train a VAE with a flow posterior on the bundled digits; ELBO and log-likelihood", vae.run)
    )
    command("targets", "list the targets that can be fitted", fit.run_targets)
    sample.add_arguments(command("sample", "draw samples from a fitted run", sample.run))
    export.add_arguments(
        command("export", "write a fitted run's log_prob or sampler as a torch.export program or ONNX file", export.run)
    )
    convert.add_arguments(
        command("convert", "convert a CSV table into a .npy file that fit --data reads a batch at a time", convert.run)
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: the process's arguments); 0 on success, 2 on a user error or a
    file that cannot be written, 128 + the signal's number when SIGINT (130), SIGTERM (143) or SIGHUP
    (129) stopped it."""
    parser = build_parser()
    command, args = None, None
    with InterruptingSignals() as signals:
        try:
            args = parser.parse_args(argv)
            command = args.command
            args.argv = list(sys.argv[1:] if argv is None else argv)
            if getattr(args, "resume", None) is not None:
                args = runs.resume_arguments(parser, args)
            elif getattr(args, "out_required", False) and args.out is None:
                raise CLIError(f"{command} needs --out DIR, the run folder to write (or --resume RUN)")
            args.handler(args)
        except CLIError as error:
            return _error(str(error))
        except KeyboardInterrupt as error:
            number = getattr(error, "signal_number", None) or (signals.received[-1] if signals.received else None)
            return _interrupted(number, getattr(error, "checkpoint", None) or runs.saved_state(args), command)
        except ResumeError as error:
            return _error(f"cannot resume the run: {error}")
        except OSError as error:
            return _error(_cannot_write(error))
        if signals.received:  # an interruption that some code caught and dropped: still report it
            return _interrupted(signals.received[-1], None, command)
    return 0


def _error(message: str) -> int:
    print(f"flowforge: error: {message}", file=sys.stderr)
    return 2


def _interrupted(number: int | None, checkpoint: Path | None, command: str | None) -> int:
    """Report an interruption by signal ``number`` (None: a KeyboardInterrupt raised by code); returns the
    exit status, 128 + the signal's number."""
    line = "flowforge: interrupted" + (f" by {signal_name(number)}" if number is not None else "")
    if checkpoint is not None:
        run = shlex.quote(str(Path(checkpoint).parent))
        line += f", checkpoint saved in {run}; continue with `flowforge {_resuming(command)} --resume {run}`"
    print(line, file=sys.stderr)
    return 128 + (number if number is not None else signal.SIGINT)


def _resuming(command: str | None) -> str:
    """The command that resumes a run of ``command``: ``vae`` for a VAE, else ``fit`` (a demo is a fit)."""
    return "vae" if command == "vae" else "fit"


def _cannot_write(error: OSError) -> str:
    """One line for a file operation that failed (a full disk, a read-only or missing folder)."""
    reason = error.strerror or str(error) or type(error).__name__
    return f"cannot write {error.filename}: {reason}" if error.filename is not None else f"cannot write: {reason}"
