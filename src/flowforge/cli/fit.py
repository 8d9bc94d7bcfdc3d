"""``flowforge fit`` and ``flowforge demo`` on a target density, and ``flowforge targets``.

A target run folder (kind ``"target"``) gets ``config.json``, ``model.pt`` (config and state dict),
``metrics.json`` (grid KL, ESS, log Z, speed), ``target.png``, ``initial.png``, ``learned.png``,
``comparison.png``, ``training.gif``, ``loss.png`` and the training state ``checkpoint.pt``, from which
``--resume RUN`` continues an interrupted run (:func:`flowforge.cli.runs.resume_arguments`). ``fit --data``
hands over to :mod:`flowforge.cli.data`; ``demo`` is ``fit`` with the seed's defaults and a default folder.
Under ``torchrun`` every process builds the same model and :func:`~flowforge.training.fit` splits each
step's samples across them; only process 0 opens the run folder, draws the pictures, writes the files and
prints, and ``metrics.json`` records the ``world_size``.

Honest numbers: when the grid KL or the log Z estimate is not valid by its own diagnostics
(:func:`flowforge.metrics.summary`: the flow's mass off the grid, a large grid error, too few
effective samples, non-finite values), the printed line says "not valid" and why instead of the
number, and ``metrics.json`` holds ``kl_valid``, ``log_z_valid`` and ``warnings``. The exit status
is still 0, since the run and its files are complete: scripts read the flags. A run whose training
diverged ends with exit status 2 after writing its files.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from .. import metrics, plot
from ..distributions.targets import TARGETS
from ..presets import PRESETS
from ..training import COMPILE_MODES, Every, FitResult, TrainingDiverged, TrainingInterrupted, distributed, fit
from ..version import __version__
from . import data, runs
from .errors import CLIError
from .models import BASES, build_target_model
from .validators import (
    batch_size,
    box,
    build_target,
    device,
    draw_count,
    estimate_draw_count,
    iteration_count,
    kl_grid_size,
    layer_count,
    non_negative_float,
    non_negative_int,
    picture_grid_size,
    picture_resolution,
    pictures,
    positive_float,
    seed_value,
    target_defaults,
    target_params,
    unit_interval,
    value_range,
)

IMAGE_PRESETS = ("glow",)
DEMO_OUT = "flowforge-demo"


def add_arguments(parser: argparse.ArgumentParser, demo: bool = False) -> None:
    """The options of ``fit`` (with the data options) or, with ``demo``, of ``demo`` (with a default ``--out``)."""
    parser.add_argument(
        "--target",
        default="two-modes",
        choices=sorted(TARGETS),
        metavar="NAME",
        help="target density (see `flowforge targets`)",
    )
    parser.add_argument(
        "--target-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="target parameter, e.g. loc=2 (repeatable)",
    )
    parser.add_argument(
        "--flow",
        default=None,
        choices=sorted([*PRESETS, *IMAGE_PRESETS]),
        metavar="NAME",
        help=f"flow family: {', '.join(sorted(PRESETS))} (glow: images only); default planar for a target, "
        "nsf for tabular data, glow for images",
    )
    parser.add_argument(
        "--layers",
        type=layer_count,
        default=None,
        help="number of flow layers (default 16 for a target, 6 for data; glow: steps per level, default 4)",
    )
    parser.add_argument(
        "--base",
        default="gaussian",
        choices=BASES,
        help="target fits: base distribution (resampled: learned accept/reject, Stimper et al. 2022)",
    )
    parser.add_argument(
        "--loss",
        default="reverse-kl",
        choices=("reverse-kl", "forward-kl", "fab"),
        help="reverse KL to the density, forward KL to exact target samples, or fab (AIS towards p^2/q and the "
        "alpha=2 divergence with a replay buffer, Midgley et al. 2023; not annealed)",
    )
    parser.add_argument("--iterations", type=iteration_count, default=20000)
    parser.add_argument(
        "--anneal",
        type=non_negative_int,
        default=10000,
        help="annealing iterations, 0 for none: beta = min(1, beta0 + it/anneal)",
    )
    parser.add_argument("--beta0", type=unit_interval, default=0.01, help="initial annealing beta, from 0 to 1")
    parser.add_argument("--samples-per-step", type=batch_size, default=40)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--weight-decay", type=non_negative_float, default=1e-4)
    parser.add_argument(
        "--frame-every", type=non_negative_int, default=200, help="iterations between animation frames, 0 for none"
    )
    parser.add_argument(
        "--frame-samples", type=draw_count, default=2**20, help="flow samples per picture (default 2^20)"
    )
    parser.add_argument("--grid-size", type=picture_grid_size, default=200, help="bins per axis in pictures")
    parser.add_argument(
        "--range",
        type=value_range,
        default=None,
        metavar="LOW,HIGH",
        help="plot range on both axes (default: the target's box)",
    )
    parser.add_argument(
        "--eval-samples", type=estimate_draw_count, default=100_000, help="samples for ESS and log Z (at least 2)"
    )
    parser.add_argument(
        "--kl-grid", type=kl_grid_size, default=400, help="grid points per axis for the exact KL (even, at least 4)"
    )
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument(
        "--compile",
        default="auto",
        choices=COMPILE_MODES,
        help="compile the training step (auto: when the run would take over 30 s eagerly; on/off force it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    runs.add_out_arguments(parser, DEMO_OUT if demo else None, resumable=True)
    if not demo:
        before = len(parser._actions)
        data.add_arguments(parser)
        data_only = {a.dest: (a.option_strings[0], a.default) for a in parser._actions[before:] if a.dest != "data"}
        target_only = {
            a.dest: (a.option_strings[0], a.default) for a in parser._actions if a.dest in TARGET_ONLY_OPTIONS
        }
        parser.set_defaults(options_that_apply={"target": target_only, "data": data_only})


TARGET_ONLY_OPTIONS = (
    "target", "target_param", "base", "loss", "iterations", "anneal", "beta0", "samples_per_step", "frame_every",
    "frame_samples", "grid_size", "range", "eval_samples", "kl_grid", "compile",
)  # fmt: skip
"""The options of ``fit`` that only a fit to a target density reads."""


def _refuse_options_that_do_not_apply(args: argparse.Namespace, kind: str, other: str) -> None:
    """Refuse options of ``fit`` set away from their defaults that only the ``other`` kind of fit reads
    (a data fit ignored ``--iterations``, a target fit ``--epochs``)."""
    given = [flag for dest, (flag, default) in args.options_that_apply[other].items() if getattr(args, dest) != default]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise CLIError(f"{', '.join(given)} {verb} only to {other} fits, and this is a {kind} fit")


def run(args: argparse.Namespace) -> None:
    """``fit`` or ``demo``: a target fit, or with ``--data`` a data fit."""
    if getattr(args, "data", None) is not None:
        if args.base != "gaussian":
            raise CLIError("--base applies to fits to a target density; data fits use the model's own base")
        _refuse_options_that_do_not_apply(args, "data", "target")
        data.run(args)
        return
    if hasattr(args, "options_that_apply"):  # fit (demo takes no data options)
        _refuse_options_that_do_not_apply(args, "target", "data")
    if args.loss == "fab" and args.compile == "on":
        raise CLIError("--loss fab runs AIS inside every step, which is not compiled; leave --compile at auto")
    args.flow = args.flow or "planar"
    args.layers = args.layers or 16
    if args.flow in IMAGE_PRESETS:
        raise CLIError(
            f"the {args.flow} preset models images (channels, height, width); 2-D targets need one of "
            f"{', '.join(sorted(PRESETS))}"
        )
    params = target_params(args.target, args.target_param)
    target = build_target(TARGETS, args.target, params)
    picture_resolution(box([args.range, args.range] if args.range else target.bounds.tolist()), args.grid_size,
                       "--range" if args.range else f"the box of target {args.target!r}")  # fmt: skip
    chosen = device(args.device)
    world = None
    if distributed.launched():
        chosen = distributed.local_device(chosen)  # "cuda": cuda:LOCAL_RANK, one device per process
        if args.compile == "on":
            raise CLIError("--compile on: a fit across processes runs its step eagerly; leave --compile at auto")
        if args.loss == "fab":
            raise CLIError(
                "--loss fab trains in one process (its AIS and buffer are not split); run it without torchrun"
            )
        world = distributed.join(chosen)
    pictures()
    if world is not None and not world.is_main:  # the same fit, writing nothing: process 0 reports
        runs.fit_beside(args, _target_fit(args, _config(args, params, chosen), chosen)[1])
        return
    with runs.open_run(args.out, "target", overwrite=args.overwrite, resume=runs.resuming(args)) as run_folder:
        config = run_folder.start(_config(args, params, chosen))
        _fit_target(args, run_folder, config, chosen, world_size=1 if world is None else world.size)


def _config(args: argparse.Namespace, params: dict, chosen: torch.device) -> dict:
    return {
        "target": args.target,
        "target_params": params,
        "flow": args.flow,
        "layers": args.layers,
        "base": args.base,
        "loss": args.loss,
        "iterations": args.iterations,
        "anneal": args.anneal,
        "beta0": args.beta0,
        "samples_per_step": args.samples_per_step,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "frame_every": args.frame_every,
        "frame_samples": args.frame_samples,
        "grid_size": args.grid_size,
        "range": list(args.range) if args.range else None,
        "eval_samples": args.eval_samples,
        "kl_grid": args.kl_grid,
        "seed": args.seed,
        "device": str(chosen),
        "compile": args.compile,
        "flowforge_version": __version__,
        "invocation": runs.invocation(args),
    }


def _target_fit(args: argparse.Namespace, config: dict, chosen: torch.device) -> tuple[Any, Callable[..., FitResult]]:
    """The run's model and its fit: :func:`~flowforge.training.fit` with the run's settings, taking the
    options that differ between the processes of a distributed run (``callbacks``, ``progress``,
    ``checkpoint``, ``resume``)."""
    torch.manual_seed(args.seed)
    model = build_target_model(config).to(chosen)
    fitted = partial(
        fit, model, args.iterations, loss=args.loss.replace("-", "_"), samples_per_step=args.samples_per_step,
        data=model.p.sample if args.loss == "forward-kl" else None,
        anneal_iters=None if args.loss == "fab" else args.anneal or None,
        beta0=args.beta0, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed, device=chosen,
        compile=args.compile,
    )  # fmt: skip
    return model, fitted


def _fit_target(
    args: argparse.Namespace, run_folder: runs.RunFolder, config: dict, chosen: torch.device, world_size: int = 1
) -> None:
    out = run_folder.path
    model, fitted = _target_fit(args, config, chosen)
    target = model.p
    bounds = box([args.range, args.range] if args.range else target.bounds.tolist())
    like = next(model.parameters())
    target_density = plot.density_on_grid(target.log_prob, bounds, args.grid_size, like)
    plot.save_image(out / "target.png", target_density, bounds, f"target: {args.target}")
    initial = plot.sample_histogram(model, args.frame_samples, bounds, args.grid_size)
    plot.save_image(out / "initial.png", initial, bounds, "initial flow (samples)")
    frames = plot.HistogramFrames(args.frame_samples, bounds, args.grid_size)
    frames.add(initial, "iteration 0")
    start = time.perf_counter()
    try:
        result = fitted(
            callbacks=[Every(args.frame_every, frames)] if args.frame_every else [],
            progress=not args.no_progress,
            checkpoint=run_folder.training_state,
            resume=run_folder.resume_from,
        )
        diverged = None
    except TrainingDiverged as error:
        if not isinstance(error.result, FitResult):  # training.fit raises it with its FitResult
            raise
        result, diverged = error.result, str(error)
    except TrainingInterrupted:
        runs.save_checkpoint(out, config, model)  # the weights so far, which `sample` can draw from
        raise
    fit_wall_time = time.perf_counter() - start
    runs.save_checkpoint(out, config, model)  # first: what an interruption during the pictures must not lose
    plot.save_gif(out / "training.gif", frames.rgb())
    plot.save_loss_curve(out / "loss.png", result.loss_history, f"{args.loss} loss")
    model.eval()
    final = plot.sample_histogram(model, args.frame_samples, bounds, args.grid_size)
    plot.save_image(out / "learned.png", final, bounds, "learned flow (samples)")
    learned_density = plot.density_on_grid(model.log_prob, bounds, args.grid_size, like)
    plot.save_comparison(
        out / "comparison.png",
        [("target density", target_density), ("learned density", learned_density), ("flow samples", final)],
        bounds,
    )
    history = result.loss_history
    with plot.picture_threads(("summary", args.eval_samples, args.kl_grid)):  # one thread: it runs once
        summary = metrics.summary(model, num_samples=args.eval_samples, grid_size=args.kl_grid)
    numbers: dict[str, Any] = {
        **summary,
        "iterations": result.iterations,
        "iterations_per_second": result.iterations_per_second,
        "train_time_s": result.step_time,
        "wall_time_s": fit_wall_time,
        "compiled": result.compiled,
        "compile_time_s": result.compile_time,
        "fused_step": result.fused,
        "final_loss": float(np.mean(history[-max(1, len(history) // 100) :])) if len(history) else None,
        "frames": len(frames),
        "device": result.device,
        "diverged": diverged,
        "world_size": world_size,
    }
    runs.write_json(out / runs.METRICS, numbers)
    print(f"{headline(numbers)}, {numbers['iterations_per_second']:.0f} it/s, {fit_wall_time:.1f} s -> {out}")
    if diverged:
        raise CLIError(f"training stopped: {diverged} (pictures and checkpoint of the last good state are in {out})")


def _reasons(numbers: dict, prefix: str) -> str:
    return "; ".join(w.removeprefix(prefix) for w in numbers["warnings"] if w.startswith(prefix))


def headline(numbers: dict) -> str:
    """The numbers of a target fit in one line: the grid KL, ESS and log Z, each either with its error or,
    when its own diagnostics say it is not valid (:func:`flowforge.metrics.summary`), as not valid and why."""
    parts = []
    if "kl" in numbers:
        if numbers["kl_valid"]:
            parts.append(f"KL(q||p) on grid = {numbers['kl']:.4f} ± {numbers['kl_grid_error']:.1e} nats")
        else:
            monte_carlo = numbers["kl_monte_carlo"]
            cross_check = f"; Monte-Carlo KL = {monte_carlo:.3g}" if not math.isnan(monte_carlo) else ""
            parts.append(f"KL(q||p) on grid not valid ({_reasons(numbers, 'KL on grid: ')}{cross_check})")
    parts.append(f"ESS = {numbers['ess']:.3f}" if math.isfinite(numbers["ess"]) else "ESS not valid")
    if numbers["log_z_valid"]:
        parts.append(f"log Z ≈ {numbers['log_z_estimate']:.4f} ± {numbers['log_z_standard_error']:.4f}")
    else:
        parts.append(f"log Z not valid ({_reasons(numbers, 'log Z: ')})")
    return ", ".join(parts)


def run_targets(args: argparse.Namespace) -> None:
    """``targets``: one line per target with its class, parameters, normalisation and summary."""
    for name, cls in TARGETS.items():
        params = ", ".join(f"{k}={v}" for k, v in target_defaults(name).items()) or "-"
        normalised = "normalised" if cls.normalized else "unnormalised"
        summary = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
        print(f"{name:14s} {cls.__name__:24s} params: {params:22s} {normalised:12s} {summary}")
