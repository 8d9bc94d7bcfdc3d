"""The ``flowforge`` command: fit a flow and look at it, list targets, sample a run, run MCMC,
compare flows of several depths, train a VAE with a flow posterior.

Errors a user can cause (unknown names, bad numbers, unwritable folders, missing runs)
end in one ``flowforge: error: ...`` line and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import __version__, metrics, plot
from .cli_data import DataUsageError, add_data_arguments, build_data_model, draw_samples, run_fit_data
from .cli_sampling import (
    ALL_TARGETS,
    SamplingUsageError,
    add_compare_arguments,
    add_mcmc_arguments,
    run_compare,
    run_mcmc,
)
from .cli_vae import VAEUsageError, add_vae_arguments, run_vae
from .distributions.base import GaussianMixture, ResampledGaussian, TemperedGaussian
from .distributions.targets import TARGETS
from .nets import MLP
from .presets import PRESETS
from .train import COMPILE_MODES, Every, TrainingDiverged, fit

IMAGE_PRESETS = ("glow",)
BASES = ("gaussian", "resampled", "tempered", "mixture")
"""``--base`` for target fits: the preset's trainable diagonal Gaussian, a resampled Gaussian (learned
acceptance, an MLP 2x64, T = 100), a Gaussian with a learned temperature, or a trainable mixture of 8
diagonal Gaussians."""
CHECKPOINT = "model.pt"
CONFIG = "config.json"


class UsageError(Exception):
    """A mistake in what the user asked for; reported in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def _number(convert: type, description: str, accept) -> object:
    """An argparse type: ``convert(text)``, finite, and ``accept(value)``, else a one-line error."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, "a positive integer", lambda v: v >= 1)
_non_negative_int = _number(int, "a non-negative integer", lambda v: v >= 0)
_positive_float = _number(float, "a positive number", lambda v: v > 0)
_non_negative_float = _number(float, "a non-negative number", lambda v: v >= 0)


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH with LOW < HIGH, got {text!r}")
    return low, high


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VALIDATION,TEST fractions summing to 1, got {text!r}")
    return values


def _target_parameters(name: str) -> dict[str, object]:
    signature = inspect.signature(ALL_TARGETS[name].__init__)
    return {k: p.default for k, p in signature.parameters.items() if k != "self"}


def _parse_target_params(name: str, pairs: list[str]) -> dict[str, float]:
    allowed = _target_parameters(name)
    params: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in allowed:
            known = ", ".join(allowed) or "none"
            raise UsageError(f"target {name!r} takes parameters {known}; got {pair!r} (use KEY=VALUE)")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"target parameter {key} must be a number, got {value!r}") from None
        params[key] = int(number) if isinstance(allowed[key], int) and number.is_integer() else number
    return params


def _add_fit_arguments(parser: argparse.ArgumentParser, default_out: str | None) -> None:
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
        type=_positive_int,
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
        choices=("reverse-kl", "forward-kl"),
        help="reverse KL to the density, or forward KL to exact target samples",
    )
    parser.add_argument("--iterations", type=_positive_int, default=20000)
    parser.add_argument(
        "--anneal",
        type=_non_negative_int,
        default=10000,
        help="annealing iterations, 0 for none: beta = min(1, beta0 + it/anneal)",
    )
    parser.add_argument("--beta0", type=_non_negative_float, default=0.01, help="initial annealing beta")
    parser.add_argument("--samples-per-step", type=_positive_int, default=40)
    parser.add_argument("--lr", type=_positive_float, default=1e-3)
    parser.add_argument("--weight-decay", type=_non_negative_float, default=1e-4)
    parser.add_argument(
        "--frame-every", type=_non_negative_int, default=200, help="iterations between animation frames, 0 for none"
    )
    parser.add_argument(
        "--frame-samples", type=_positive_int, default=2**20, help="flow samples per picture (default 2^20)"
    )
    parser.add_argument("--grid-size", type=_positive_int, default=200, help="bins per axis in pictures")
    parser.add_argument(
        "--range",
        type=_range,
        default=None,
        metavar="LOW,HIGH",
        help="plot range on both axes (default: the target's box)",
    )
    parser.add_argument("--eval-samples", type=_positive_int, default=100_000, help="samples for ESS and log Z")
    parser.add_argument("--kl-grid", type=_positive_int, default=400, help="grid points per axis for the exact KL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument(
        "--compile",
        default="auto",
        choices=COMPILE_MODES,
        help="compile the training step (auto: when the run would take over 30 s eagerly; on/off force it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--out", default=default_out, required=default_out is None, metavar="DIR", help="run folder to write"
    )
    if default_out is None:
        add_data_arguments(parser, _positive_int, _positive_float, _fractions)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flowforge", description="Fit normalizing flows and look at them.")
    parser.add_argument("--version", action="version", version=f"flowforge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_fit_arguments(
        commands.add_parser("fit", help="fit a flow to a target density or to data (--data) and write a run folder"),
        None,
    )
    _add_fit_arguments(
        commands.add_parser(
            "demo", help="the seed workflow: 16 Planar layers to TwoModes(2, 0.1), 20000 annealed steps"
        ),
        "flowforge-demo",
    )
    add_mcmc_arguments(
        commands.add_parser("mcmc", help="sample a target with Metropolis-Hastings or HMC chains and picture them"),
        _positive_int,
        _non_negative_int,
        _positive_float,
    )
    add_compare_arguments(
        commands.add_parser(
            "compare", help="target | MCMC samples | flows of several depths K, side by side (Rezende & Mohamed)"
        ),
        _positive_int,
        _positive_float,
    )
    add_vae_arguments(
        commands.add_parser(
            "vae", help="train a VAE with a flow posterior on the bundled digits; ELBO and log-likelihood"
        ),
        _positive_int,
        _non_negative_int,
        _positive_float,
        _fractions,
    )
    commands.add_parser("targets", help="list the targets that can be fitted")
    sample = commands.add_parser("sample", help="draw samples from a fitted run")
    sample.add_argument("run", metavar="RUN", help="run folder written by fit or demo")
    sample.add_argument("-n", "--num-samples", type=_positive_int, required=True)
    sample.add_argument("-o", "--output", required=True, metavar="FILE", help=".npy or .csv")
    sample.add_argument("--seed", type=int, default=None)
    sample.add_argument("--log-prob", action="store_true", help="append log q(x) as the last column")
    sample.add_argument("--context", metavar="VALUES", help="conditional runs: the context values, comma-separated")
    sample.add_argument("--label", type=_non_negative_int, help="class-conditional image runs: the class")
    return parser


def _prepare_out(folder: str) -> Path:
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".flowforge-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to run folder {folder!r}: {error.strerror or error}") from None
    return path


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available")
    return device


def _write_json(path: Path, data: dict) -> None:
    with plot.atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _base(name: str, dim: int):
    """The base distribution ``--base`` names; None leaves the preset's own diagonal Gaussian."""
    if name == "resampled":
        return ResampledGaussian(dim, MLP([dim, 64, 64, 1], init_zeros=True), truncation=100)
    if name == "tempered":
        return TemperedGaussian(dim)
    if name == "mixture":
        return GaussianMixture(8, dim)
    return None


def _build_model(config: dict):
    target = TARGETS[config["target"]](**config["target_params"])
    q0 = _base(config.get("base", "gaussian"), target.n_dims)  # runs written before --base have none
    return PRESETS[config["flow"]](target.n_dims, config["layers"], p=target, q0=q0)


def run_fit(args: argparse.Namespace) -> Path:
    if getattr(args, "data", None) is not None:
        if args.base != "gaussian":
            raise UsageError("--base applies to fits to a target density; data fits use the model's own base")
        device = _device(args.device)
        return run_fit_data(args, _prepare_out(args.out), device, _write_json)
    args.flow = args.flow or "planar"
    args.layers = args.layers or 16
    if args.flow in IMAGE_PRESETS:
        raise UsageError(
            f"the {args.flow} preset models images (channels, height, width); 2-D targets need one of "
            f"{', '.join(sorted(PRESETS))}"
        )
    target_params = _parse_target_params(args.target, args.target_param)
    try:
        TARGETS[args.target](**target_params)
    except (TypeError, ValueError) as error:
        raise UsageError(f"invalid parameters for target {args.target!r}: {error}") from None
    device = _device(args.device)
    out = _prepare_out(args.out)
    config = {
        "target": args.target,
        "target_params": target_params,
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
        "device": str(device),
        "compile": args.compile,
        "flowforge_version": __version__,
    }
    _write_json(out / CONFIG, config)
    torch.manual_seed(args.seed)
    model = _build_model(config).to(device)
    target = model.p
    bounds = (tuple(args.range), tuple(args.range)) if args.range else tuple(tuple(r) for r in target.bounds.tolist())
    like = next(model.parameters())
    target_density = plot.density_on_grid(target.log_prob, bounds, args.grid_size, like)
    plot.save_image(out / "target.png", target_density, bounds, f"target: {args.target}")
    initial = plot.sample_histogram(model, args.frame_samples, bounds, args.grid_size)
    plot.save_image(out / "initial.png", initial, bounds, "initial flow (samples)")
    frames = [plot.histogram_frame(initial, "iteration 0")]

    def record_frame(iteration: int, flow_model) -> None:
        frames.append(
            plot.histogram_frame(
                plot.sample_histogram(flow_model, args.frame_samples, bounds, args.grid_size), f"iteration {iteration}"
            )
        )

    start = time.perf_counter()
    try:
        result = fit(
            model,
            args.iterations,
            loss=args.loss.replace("-", "_"),
            samples_per_step=args.samples_per_step,
            data=target.sample if args.loss == "forward-kl" else None,
            anneal_iters=args.anneal or None,
            beta0=args.beta0,
            lr=args.lr,
            weight_decay=args.weight_decay,
            seed=args.seed,
            device=device,
            compile=args.compile,
            callbacks=[Every(args.frame_every, record_frame)] if args.frame_every else [],
            progress=not args.no_progress,
        )
        diverged = None
    except TrainingDiverged as error:
        result, diverged = error.result, str(error)
    fit_wall_time = time.perf_counter() - start
    plot.save_gif(out / "training.gif", frames)
    plot.save_loss_curve(out / "loss.png", result.loss_history, f"{args.loss} loss")
    with plot.atomic_path(out / CHECKPOINT) as temporary:
        torch.save({"config": config, "state_dict": model.state_dict()}, temporary)
    model.eval()
    final = plot.sample_histogram(model, args.frame_samples, bounds, args.grid_size)
    plot.save_image(out / "learned.png", final, bounds, "learned flow (samples)")
    learned_density = plot.density_on_grid(model.log_prob, bounds, args.grid_size, like)
    plot.save_comparison(
        out / "comparison.png",
        [("target density", target_density), ("learned density", learned_density), ("flow samples", final)],
        bounds,
    )
    numbers = metrics.summary(model, num_samples=args.eval_samples, grid_size=args.kl_grid)
    history = result.loss_history
    numbers.update(
        {
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
        }
    )
    _write_json(out / "metrics.json", numbers)
    print(
        f"KL(q||p) on grid = {numbers['kl']:.4f} ± {numbers['kl_grid_error']:.1e} nats, ESS = {numbers['ess']:.3f}, "
        f"log Z ≈ {numbers['log_z_estimate']:.4f} ± {numbers['log_z_standard_error']:.4f}, "
        f"{numbers['iterations_per_second']:.0f} it/s, {fit_wall_time:.1f} s -> {out}"
    )
    if diverged:
        raise UsageError(f"training stopped: {diverged} (pictures and checkpoint of the last good state are in {out})")
    return out


def run_targets() -> None:
    for name, cls in TARGETS.items():
        params = ", ".join(f"{k}={v}" for k, v in _target_parameters(name).items()) or "-"
        normalised = "normalised" if cls.normalized else "unnormalised"
        summary = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
        print(f"{name:14s} {cls.__name__:24s} params: {params:22s} {normalised:12s} {summary}")


def _load_run(path: str):
    run = Path(path)
    checkpoint_path = run / CHECKPOINT
    if not checkpoint_path.is_file():
        raise UsageError(f"{path!r} is not a run folder: {checkpoint_path} not found")
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        config = checkpoint["config"]
        model = build_data_model(config) if "kind" in config else _build_model(config)
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError, OSError) as error:
        raise UsageError(f"cannot load {checkpoint_path}: {error}") from None
    return model.eval(), config, checkpoint.get("context", {})


def _data_run_context(args: argparse.Namespace, config: dict, statistics: dict) -> torch.Tensor | None:
    """The context of a data run's samples: standardised context rows, class labels, or None."""
    if config["kind"] == "images":
        if args.context is not None:
            raise UsageError("image runs take --label, not --context")
        if not config["class_cond"]:
            if args.label is not None:
                raise UsageError("this run is not class-conditional; --label does not apply")
            return None
        if args.label is not None and args.label >= 10:
            raise UsageError(f"--label must be a class in 0..9, got {args.label}")
        if args.label is None:
            return torch.randint(10, (args.num_samples,))
        return torch.full((args.num_samples,), args.label, dtype=torch.long)
    if args.label is not None:
        raise UsageError("--label applies to class-conditional image runs")
    names = config["context_names"]
    if not names:
        if args.context is not None:
            raise UsageError("this run is not conditional; --context does not apply")
        return None
    if args.context is None:
        raise UsageError(f"this run is conditional on {', '.join(names)}: give --context with {len(names)} values")
    try:
        values = [float(v) for v in args.context.split(",")]
    except ValueError:
        values = []
    if len(values) != len(names) or not all(math.isfinite(v) for v in values):
        raise UsageError(f"--context needs {len(names)} numbers ({', '.join(names)}), got {args.context!r}")
    context = (torch.tensor(values, dtype=torch.float64) - statistics["context_mean"]) / statistics["context_std"]
    return context.expand(args.num_samples, -1)


@torch.no_grad()
def _samples_and_header(args: argparse.Namespace, model, config: dict, statistics: dict):
    if "kind" not in config:
        chunks = []
        for start in range(0, args.num_samples, 2**18):
            x, log_q = model.sample(min(2**18, args.num_samples - start))
            chunks.append(torch.cat([x, log_q[:, None]], 1) if args.log_prob else x)
        return torch.cat(chunks).numpy(), [f"x{i + 1}" for i in range(model.p.n_dims)]
    context = _data_run_context(args, config, statistics)
    if config["kind"] == "images" and (args.log_prob or Path(args.output).suffix.lower() != ".npy"):
        raise UsageError("image samples are written as .npy grey levels, without --log-prob")
    samples = draw_samples(model, config, args.num_samples, context)
    if args.log_prob:
        like = next(model.parameters())
        log_q = (
            model.log_prob(samples.to(like)) if context is None else model.log_prob(samples.to(like), context.to(like))
        )
        samples = torch.cat([samples, log_q.double().cpu()[:, None]], 1)
    return samples.numpy(), config["names"]


def run_sample(args: argparse.Namespace) -> None:
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise UsageError(f"output must end in .npy or .csv, got {args.output!r}")
    model, config, statistics = _load_run(args.run)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    samples, names = _samples_and_header(args, model, config, statistics)
    output = Path(args.output)
    if not output.parent.is_dir():
        raise UsageError(f"cannot write {args.output!r}: folder {str(output.parent)!r} does not exist")
    try:
        with plot.atomic_path(output) as temporary:
            if suffix == ".npy":
                with open(temporary, "wb") as handle:
                    np.save(handle, samples)
            else:
                header = ",".join(list(names) + (["log_q"] if args.log_prob else []))
                np.savetxt(temporary, samples, delimiter=",", header=header, comments="")
    except OSError as error:
        raise UsageError(f"cannot write {args.output!r}: {error.strerror or error}") from None
    print(f"wrote {args.num_samples} samples to {args.output}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in ("fit", "demo"):
            run_fit(args)
        elif args.command == "targets":
            run_targets()
        elif args.command in ("mcmc", "compare"):
            params = _parse_target_params(args.target, args.target_param)
            run = run_mcmc if args.command == "mcmc" else run_compare
            run(args, _prepare_out(args.out), _device(args.device), params, _write_json)
        elif args.command == "vae":
            run_vae(args, _prepare_out(args.out), _device(args.device), _write_json)
        else:
            run_sample(args)
    except (UsageError, DataUsageError, SamplingUsageError, VAEUsageError) as error:
        print(f"flowforge: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flowforge: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
