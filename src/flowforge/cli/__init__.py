"""The ``flowforge`` command: fit a flow and look at it, list targets, sample a run, run MCMC,
compare flows of several depths, train a VAE with a flow posterior.

One module per subcommand group, each adding its own options and running its command:
:mod:`~flowforge.cli.fit` (``fit``, ``demo``, ``targets``), :mod:`~flowforge.cli.data` (``fit --data``),
:mod:`~flowforge.cli.sampling` (``mcmc``, ``compare``), :mod:`~flowforge.cli.vae` (``vae``) and
:mod:`~flowforge.cli.sample` (``sample``). They share one error type (:mod:`~flowforge.cli.errors`),
one set of argument checks (:mod:`~flowforge.cli.validators`) and one writer and reader of run folders
(:mod:`~flowforge.cli.runs`), which records each run's kind in its ``config.json``.

Errors a user can cause (unknown names, bad numbers, unwritable folders, missing runs) end in one
``flowforge: error: ...`` line and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..version import __version__
from . import fit, sample, sampling, vae
from .errors import CLIError, Parser

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; each sets ``handler``, the function that runs it."""
    parser = Parser(prog="flowforge", description="Fit normalizing flows and look at them.")
    parser.add_argument("--version", action="version", version=f"flowforge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def command(name: str, summary: str, handler) -> argparse.ArgumentParser:
        subparser = commands.add_parser(name, help=summary)
        subparser.set_defaults(handler=handler)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: the process's arguments); 0 on success, 2 on a user error, 130 on Ctrl-C."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.handler(args)
    except CLIError as error:
        print(f"flowforge: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flowforge: interrupted", file=sys.stderr)
        return 130
    return 0
