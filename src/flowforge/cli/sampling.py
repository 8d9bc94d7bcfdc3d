"""``flowforge mcmc`` and ``flowforge compare``: Markov chains on a target, and flows of several depths beside them.

An ``mcmc`` run folder (kind ``"mcmc"``) gets ``samples.npy`` (all kept states, chains after one
another), ``comparison.png`` (the target's density beside a histogram of the chains, the first pair of
coordinates for targets beyond 2-D), ``config.json`` and ``metrics.json`` (acceptance, step sizes,
wall time, and, for targets that can be sampled exactly, the chains' mean and standard deviation per
coordinate beside the exact ones). A ``compare`` run folder (kind ``"compare"``) gets
``comparison.png`` (target | MCMC | one flow per depth, Rezende & Mohamed's figure), ``config.json``
and ``metrics.json`` (the grid KL of each depth, with ``kl_valid`` and ``warnings`` when the grid's own
diagnostics say it is not valid, as for ``fit``, and ``diverged`` for a depth whose training stopped;
the figure and numbers are written first, then such a run exits with status 2).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .. import metrics, plot
from ..distributions.targets import TARGETS, ManyWell
from ..mcmc import KERNELS, sample_chain
from ..presets import PRESETS
from ..training import TrainingDiverged, fit
from ..version import __version__
from . import runs
from .errors import CLIError
from .validators import (
    ALL_TARGETS,
    batch_size,
    box,
    build_target,
    chain_count,
    depths,
    device,
    draw_count,
    iteration_count,
    kl_grid_size,
    leapfrog_count,
    non_negative_int,
    number,
    picture_grid_size,
    pictures,
    positive_float,
    positive_int,
    sample_memory,
    seed_value,
)
from .validators import target_params as parse_target_params

step_size = number(float, "a number from 1e-30 to 1e30 (the chains run in float32)", lambda v: 1e-30 <= v <= 1e30)


def add_mcmc_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mcmc``."""
    parser.add_argument("--target", choices=sorted(ALL_TARGETS), default="two-modes")
    parser.add_argument("--target-param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--kernel", choices=KERNELS, default="hmc", help="Metropolis-Hastings or Hamiltonian MC")
    parser.add_argument("--chains", type=chain_count, default=64, help="independent chains")
    parser.add_argument("--samples", type=positive_int, default=1000, help="states kept per chain")
    parser.add_argument("--burn-in", type=non_negative_int, default=500, help="steps first, tuning the step size")
    parser.add_argument("--thin", type=positive_int, default=1, help="keep every N-th state")
    parser.add_argument("--step-size", type=step_size, default=0.1, help="initial step size")
    parser.add_argument("--leapfrog-steps", type=leapfrog_count, default=10, help="HMC: leapfrog steps per move")
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--grid-size", type=picture_grid_size, default=200, help="pixels per side of the pictures")
    runs.add_out_arguments(parser)


COMPARE_BURN_IN, COMPARE_LEAPFROG_STEPS = 500, 10
"""The chains of ``compare``: steps of burn-in, and leapfrog steps per HMC move."""
MAX_CHAIN_STEPS = 10**7
"""The most steps a chain takes (burn-in plus kept states times ``--thin``, times the leapfrog steps for HMC):
the steps run one after another."""


def chain_budget(chains: int, samples: int, burn_in: int, thin: int, dims: int, evaluations_per_step: int) -> None:
    """Refuse chains whose steps (one after another) exceed :data:`MAX_CHAIN_STEPS`, or whose kept states
    would take more memory than :data:`~flowforge.cli.validators.MAX_SAMPLE_BYTES`, before they start."""
    steps = (burn_in + samples * thin) * evaluations_per_step
    if steps > MAX_CHAIN_STEPS:
        raise CLIError(
            f"the chains would take {steps:.3g} sequential density evaluations ((burn-in + samples × thin) × "
            f"{evaluations_per_step} per step); the limit is {MAX_CHAIN_STEPS:.0g}: lower --samples, --thin, "
            "--burn-in or the leapfrog steps"
        )
    sample_memory(chains * samples, dims, "the chains × the states kept per chain")


def _initial_states(target, chains: int) -> torch.Tensor:
    """Chains start uniformly in the target's box (its first pair) and, beyond 2-D, standard normal."""
    bounds = target.bounds
    low, high = bounds[:, 0], bounds[:, 1]
    start = torch.randn(chains, target.n_dims, dtype=bounds.dtype, device=bounds.device)
    start[:, :2] = low + (high - low) * torch.rand(chains, 2, dtype=bounds.dtype, device=bounds.device)
    return start


def _first_pair_log_prob(target):
    """The log-density of the first two coordinates (exact for many-well: its pairs are independent)."""
    if target.n_dims == 2:
        return target.log_prob
    if isinstance(target, ManyWell):
        return ManyWell(2).to(target.bounds).log_prob
    return None


def run_mcmc(args: argparse.Namespace) -> dict:
    """``mcmc``: chains on the target, their samples, picture and numbers."""
    params = parse_target_params(args.target, args.target_param)
    chosen = device(args.device)
    pictures()
    torch.manual_seed(args.seed)
    target = build_target(ALL_TARGETS, args.target, params, chosen)
    chain_budget(args.chains, args.samples, args.burn_in, args.thin, target.n_dims,
                 args.leapfrog_steps if args.kernel == "hmc" else 1)  # fmt: skip
    config = {key: getattr(args, key) for key in ("target", "kernel", "chains", "samples", "burn_in", "thin",
                                                  "step_size", "leapfrog_steps", "seed")}  # fmt: skip
    config.update(target_params=params, version=__version__)
    with runs.open_run(args.out, "mcmc", overwrite=args.overwrite) as run_folder:
        run_folder.write_config(config)
        return _chains(args, target, run_folder.path)


def _chains(args: argparse.Namespace, target, out: Path) -> dict:
    """The chains of ``mcmc``, their samples, picture and numbers, written to ``out``."""
    start = time.perf_counter()
    chain = sample_chain(
        target.log_prob, _initial_states(target, args.chains), args.samples, kernel=args.kernel,
        step_size=args.step_size, leapfrog_steps=args.leapfrog_steps, burn_in=args.burn_in, thin=args.thin,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    samples = chain.flat().detach()
    if not torch.isfinite(samples).all():
        raise CLIError("the chains reached non-finite states; try a smaller --step-size")
    runs.save_npy(out / "samples.npy", samples.cpu().numpy())
    summary = {
        "acceptance": chain.acceptance,
        "step_size_median": float(chain.step_size.median()),
        "seconds": seconds,
        "states": int(samples.shape[0]),
        "gradient_evaluations": args.chains
        * (args.burn_in + args.samples * args.thin)
        * (args.leapfrog_steps if args.kernel == "hmc" else 0),
    }
    exact = target.sample(min(samples.shape[0], 100_000)) if hasattr(target, "sample") else None
    if exact is not None:
        summary["mean_chains"] = samples.mean(0).tolist()
        summary["mean_exact"] = exact.mean(0).tolist()
        summary["std_chains"] = samples.std(0).tolist()
        summary["std_exact"] = exact.std(0).tolist()
    pair_log_prob = _first_pair_log_prob(target)
    bounds = box(target.bounds.tolist())
    if pair_log_prob is not None:
        density = plot.density_on_grid(pair_log_prob, bounds, args.grid_size, target.bounds)
        counts = plot.histogram2d(samples[:, :2], bounds, args.grid_size)
        name = "target density" + ("" if target.n_dims == 2 else " (first pair)")
        panels = [(name, density), (f"{args.kernel.upper()} samples, {args.chains} chains", counts)]
        plot.save_comparison(out / "comparison.png", panels, bounds)
    runs.write_json(out / runs.METRICS, summary)
    print(
        f"{args.kernel}: {samples.shape[0]} states of {args.target} in {seconds:.1f} s, acceptance "
        f"{chain.acceptance:.2f}; wrote {out}"
    )
    return summary


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``compare``."""
    parser.add_argument("--target", choices=sorted(TARGETS), default="u1")
    parser.add_argument("--target-param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--flow", choices=("planar", "radial", "realnvp", "maf", "iaf", "nsf", "nsf-ar"),
                        default="planar")  # fmt: skip
    parser.add_argument("--depths", default="2,8,32", help="flow depths K, comma-separated")
    parser.add_argument("--iterations", type=iteration_count, default=10000, help="annealed reverse-KL steps per flow")
    parser.add_argument("--samples-per-step", type=batch_size, default=256)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--kernel", choices=KERNELS, default="hmc")
    parser.add_argument("--chains", type=chain_count, default=256)
    parser.add_argument("--mcmc-samples", type=positive_int, default=400, help="states kept per chain")
    parser.add_argument("--frame-samples", type=draw_count, default=2**18, help="flow samples per histogram")
    parser.add_argument("--grid-size", type=picture_grid_size, default=200)
    parser.add_argument("--kl-grid", type=kl_grid_size, default=300, help="grid for the exact KL(q‖p) (even, >= 4)")
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--no-progress", action="store_true")
    runs.add_out_arguments(parser)


def run_compare(args: argparse.Namespace) -> dict:
    """``compare``: Rezende & Mohamed's figure: the target, MCMC samples, and flows of several depths fitted to it."""
    params = parse_target_params(args.target, args.target_param)
    chosen = device(args.device)
    pictures()
    flow_depths = depths(args.depths)
    target = build_target(TARGETS, args.target, params, chosen)
    chain_budget(args.chains, args.mcmc_samples, COMPARE_BURN_IN, 1, target.n_dims,
                 COMPARE_LEAPFROG_STEPS if args.kernel == "hmc" else 1)  # fmt: skip
    config = {key: getattr(args, key) for key in ("target", "flow", "iterations", "samples_per_step", "lr", "kernel",
                                                  "chains", "mcmc_samples", "seed")}  # fmt: skip
    config.update(depths=flow_depths, target_params=params, version=__version__)
    with runs.open_run(args.out, "compare", overwrite=args.overwrite) as run_folder:
        run_folder.write_config(config)
        return _compare(args, target, flow_depths, chosen, run_folder.path)


def _compare(args: argparse.Namespace, target, flow_depths: list[int], chosen: torch.device, out: Path) -> dict:
    """The figure and numbers of ``compare`` (target, MCMC, one flow per depth), written to ``out``."""
    bounds = box(target.bounds.tolist())
    panels = [("target density", plot.density_on_grid(target.log_prob, bounds, args.grid_size, target.bounds))]
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    chain = sample_chain(target.log_prob, _initial_states(target, args.chains), args.mcmc_samples, kernel=args.kernel,
                         burn_in=COMPARE_BURN_IN, leapfrog_steps=COMPARE_LEAPFROG_STEPS)  # fmt: skip
    summary: dict = {"mcmc": {"kernel": args.kernel, "acceptance": chain.acceptance, "states": chain.flat().shape[0],
                              "seconds": time.perf_counter() - start}}  # fmt: skip
    panels.append((f"{args.kernel.upper()}: {chain.flat().shape[0]} states", plot.histogram2d(
        chain.flat().detach(), bounds, args.grid_size)))  # fmt: skip
    summary["flows"] = {}
    diverged: dict[int, str] = {}
    for depth in flow_depths:
        torch.manual_seed(args.seed)
        model = PRESETS[args.flow](2, depth, p=target).to(chosen)
        start = time.perf_counter()
        try:
            fit(
                model, args.iterations, samples_per_step=args.samples_per_step, anneal_iters=args.iterations // 2,
                lr=args.lr, seed=args.seed, device=chosen, compile=args.compile, progress=not args.no_progress,
            )  # fmt: skip
        except TrainingDiverged as error:  # the model holds its last good state; the other depths still run
            diverged[depth] = str(error)
        model.eval()
        grid = metrics.grid_kl(model, grid_size=args.kl_grid)
        problems = metrics.grid_kl_problems(grid)
        summary["flows"][str(depth)] = {"kl": grid["kl"], "kl_grid_error": grid["kl_grid_error"],
                                        "q_mass_outside": grid["q_mass_outside"], "kl_valid": not problems,
                                        "warnings": problems, "diverged": diverged.get(depth),
                                        "seconds": time.perf_counter() - start}  # fmt: skip
        counts = plot.sample_histogram(model, args.frame_samples, bounds, args.grid_size)
        panels.append((f"{args.flow} K = {depth}: " + (f"KL {grid['kl']:.3f}" if not problems else "KL not valid"),
                       counts))  # fmt: skip
        if problems:
            print(f"K = {depth}: KL(q||p) on grid not valid ({'; '.join(problems)})")
        else:
            print(f"K = {depth}: KL(q||p) = {grid['kl']:.4f} ± {grid['kl_grid_error']:.1e}")
    plot.save_comparison(out / "comparison.png", panels, bounds)
    runs.write_json(out / runs.METRICS, summary)
    print(f"wrote {out / 'comparison.png'}")
    if diverged:
        stopped = "; ".join(f"K = {depth}: {reason}" for depth, reason in diverged.items())
        raise CLIError(f"training stopped ({stopped}); the figure shows the last good states, in {out}")
    return summary
