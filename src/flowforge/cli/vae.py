"""``flowforge vae``: a VAE with a flow posterior on the bundled digits or a ``.npy`` array.

A run folder (kind ``"vae"``) gets ``config.json``, ``model.pt`` (config and state dict),
``metrics.json`` (test ELBO, importance-sampled test log-likelihood and their gap, per data point in
nats, with standard errors), ``loss.png`` (training loss and validation ELBO by epoch),
``samples.png`` (decoder means at prior draws) and ``reconstructions.png`` (test images above their
reconstructions), and the training state ``checkpoint.pt``, from which ``vae --resume RUN``
continues an interrupted run.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import cast

import numpy as np
import torch

from .. import plot
from ..datasets import DataError, binarize, load_array, load_digits, split
from ..metrics import elbo_per_row, log_likelihood_per_row
from ..presets import VAE, VAE_POSTERIORS
from ..training import TrainingDiverged, TrainingInterrupted, VAEFitResult, fit_vae
from ..vae import LIKELIHOODS
from ..version import __version__
from . import runs
from .data import MAX_ARRAY_BYTES, bundled
from .errors import CLIError
from .validators import (
    batch_size,
    device,
    fractions,
    integer,
    layer_count,
    net_width,
    non_negative_int,
    parameter_budget,
    pictures,
    positive_float,
    positive_int,
    seed_value,
)

MAX_IMPORTANCE_SAMPLES = 10**5
"""The most importance samples per test row: their log-weights are held for 256 rows at a time."""
importance_samples = integer(1, MAX_IMPORTANCE_SAMPLES, "each test row keeps that many log-weights in memory")


def _parameter_estimate(args: argparse.Namespace, data_size: int) -> int:
    """About how many parameters the VAE has (a lower bound): the encoder and decoder, and the
    posterior's conditioner nets (IAF and RealNVP), which take the encoder's features as context."""
    networks = 2 * args.hidden * (2 * data_size + args.hidden + 2 * args.latent)
    nets = args.posterior in ("iaf", "realnvp")
    flow = args.layers * args.flow_hidden * (2 * args.flow_hidden + args.hidden + args.latent) if nets else 0
    return networks + flow + args.layers * args.latent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``vae``."""
    parser.add_argument(
        "--data", default="digits", metavar="digits|FILE.npy",
        help="the bundled 8x8 digits (intensities in [0, 1]) or an array (rows, ...) saved with numpy",
    )  # fmt: skip
    parser.add_argument("--posterior", choices=VAE_POSTERIORS, default="planar")
    parser.add_argument("--layers", type=layer_count, default=8, help="flow layers of the posterior")
    parser.add_argument("--latent", type=net_width, default=8, help="size of z")
    parser.add_argument("--hidden", type=net_width, default=256, help="width of the encoder and decoder")
    parser.add_argument("--flow-hidden", type=net_width, default=64, help="width of the IAF / RealNVP nets")
    parser.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli")
    parser.add_argument(
        "--binarize", choices=("dynamic", "none"), default="dynamic",
        help="Bernoulli: binarise training intensities afresh each batch (evaluation data once)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=positive_int, default=1000)
    parser.add_argument("--batch-size", type=batch_size, default=100)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--warmup", type=non_negative_int, default=100, help="epochs of KL warm-up (0 to 1)")
    parser.add_argument("--patience", type=positive_int, default=100, help="epochs without validation gain")
    parser.add_argument("--is-samples", type=importance_samples, default=1000, help="importance samples for log p(x)")
    parser.add_argument("--split", type=fractions, default=(0.8, 0.1, 0.1), metavar="TRAIN,VALIDATION,TEST")
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true")
    runs.add_out_arguments(parser, resumable=True)


def _load(args: argparse.Namespace) -> torch.Tensor:
    if args.data == "digits":
        images, _ = bundled(load_digits)
        return (images / 16.0).float()
    path = Path(runs.input_path(args))
    if path.suffix != ".npy":
        raise CLIError(f"--data must be 'digits' or a .npy file, got {args.data!r}")
    try:
        values = load_array(path, max_bytes=MAX_ARRAY_BYTES)
    except DataError as error:
        raise CLIError(str(error)) from None
    if values.ndim < 2 or values.shape[0] < 3 or values.size == 0 or not np.issubdtype(values.dtype, np.number):
        raise CLIError(
            f"{args.data!r} must hold a numeric array (rows, ...) of at least 3 rows, none empty, got {values.shape}"
        )
    if not np.isfinite(values).all():
        raise CLIError(f"{args.data!r} holds non-finite values")
    if np.abs(values).max() > np.finfo(np.float32).max:
        raise CLIError(f"{args.data!r} holds values beyond float32's range (±3.4e38), which the VAE trains in")
    data = torch.from_numpy(values.astype(np.float32))
    if args.likelihood == "bernoulli" and not ((data >= 0) & (data <= 1)).all():
        raise CLIError(f"a Bernoulli VAE needs values in [0, 1] in {args.data!r}; use --likelihood gaussian")
    return data


def _inputs(args: argparse.Namespace) -> dict[str, str]:
    """The input file of the run, which its run folder must not write over."""
    return {} if args.data == "digits" else {"--data": runs.input_path(args)}


def _as_image_batch(values: torch.Tensor) -> np.ndarray | None:
    """``(N, 1 or 3, H, W)`` pictures for image data, None for other shapes."""
    if values.dim() == 4 and values.shape[1] in (1, 3):
        return values.clamp(0, 1).cpu().numpy()
    if values.dim() == 3:
        return values.unsqueeze(1).clamp(0, 1).cpu().numpy()
    return None


def run(args: argparse.Namespace) -> dict:
    """``vae``: split the data, fit with KL warm-up and early stopping, evaluate, and write the run folder."""
    chosen = device(args.device)
    pictures()
    data = _load(args)
    torch.manual_seed(args.seed)
    try:
        train, validation, test = split(data, tuple(args.split), seed=args.seed)
    except ValueError as error:
        raise CLIError(str(error)) from None
    if len(validation) == 0 or len(test) == 0:
        raise CLIError(f"{len(data)} rows leave no validation or test rows with --split {args.split}")
    parameter_budget(_parameter_estimate(args, data[0].numel()), "the VAE")
    dynamic = args.likelihood == "bernoulli" and args.binarize == "dynamic"
    if dynamic:  # evaluation data are binarised once, with a seed of their own
        generator = torch.Generator().manual_seed(args.seed + 1)
        validation, test = binarize(validation, generator), binarize(test, generator)
    config = {key: getattr(args, key) for key in ("data", "posterior", "layers", "latent", "hidden", "flow_hidden",
                                                  "likelihood", "binarize", "epochs", "batch_size", "lr", "warmup",
                                                  "patience", "is_samples", "seed")}  # fmt: skip
    config.update(shape=list(data.shape[1:]), split=list(args.split), device=str(chosen), flowforge_version=__version__)
    config["rows"] = {"train": len(train), "validation": len(validation), "test": len(test)}
    config.update(invocation=runs.invocation(args), data_sha256=runs.fingerprint(data))
    with runs.open_run(
        args.out, "vae", overwrite=args.overwrite, inputs=_inputs(args), resume=runs.resuming(args)
    ) as run_folder:
        config = run_folder.start(config)
        return _train(args, config, (train, validation, test), chosen, run_folder)


def _train(
    args: argparse.Namespace, config: dict, parts: tuple, chosen: torch.device, run_folder: runs.RunFolder
) -> dict:
    """Fit, evaluate, and write the run's files to its folder."""
    train, validation, test = parts
    out = run_folder.path
    dynamic = args.likelihood == "bernoulli" and args.binarize == "dynamic"
    model = VAE(
        tuple(config["shape"]), latent_dim=args.latent, posterior=args.posterior, layers=args.layers,
        hidden=args.hidden, flow_hidden=args.flow_hidden, likelihood=args.likelihood,
    ).to(chosen)  # fmt: skip
    diverged = None
    try:
        result = fit_vae(
            model, train, validation, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            warmup_epochs=args.warmup, binarize_train=dynamic, patience=args.patience, seed=args.seed,
            device=chosen, progress=not args.no_progress, checkpoint=run_folder.training_state,
            resume=run_folder.resume_from,
        )  # fmt: skip
    except TrainingDiverged as error:
        result, diverged = cast(VAEFitResult, error.result), str(error)
    except TrainingInterrupted:
        runs.save_checkpoint(out, config, model.eval())  # the best weights so far
        raise
    model.eval()
    runs.save_checkpoint(out, config, model)
    plot.save_epoch_curves(
        out / "loss.png",
        {"training loss (−ELBO, KL warm-up)": result.train_loss, "validation −ELBO": -result.validation_elbo},
        "nats per data point",
    )
    numbers = _vae_metrics(model, args, result, test)
    numbers["diverged"] = diverged
    grid = _as_image_batch(model.sample(64).cpu())
    if grid is not None:
        plot.save_image_grid(out / "samples.png", grid, 8, f"decoder means at prior draws ({args.posterior})")
        shown = test[:16].to(device=chosen, dtype=next(model.parameters()).dtype)
        rebuilt = model.reconstruct(shown)
        rows = _as_image_batch(torch.cat([shown[:8], rebuilt[:8], shown[8:], rebuilt[8:]]).cpu())
        if rows is not None:  # the same shape as the samples'
            plot.save_image_grid(out / "reconstructions.png", rows, 8, "test images (rows 1, 3) and reconstructions")
    runs.write_json(out / runs.METRICS, numbers)
    print(
        f"{args.posterior} posterior: test ELBO {numbers['test_elbo']:.3f}, log p(x) ≈ "
        f"{numbers['test_log_likelihood']:.3f} ± {numbers['test_log_likelihood_standard_error']:.3f} nats "
        f"({args.is_samples} importance samples), {numbers['epochs']} epochs, {numbers['train_time_s']:.1f} s -> {out}"
    )
    if diverged:
        raise CLIError(f"training stopped: {diverged} (the checkpoint of the best state is in {out})")
    return numbers


def _vae_metrics(model, args: argparse.Namespace, result, test: torch.Tensor) -> dict:
    elbo_rows = elbo_per_row(model, test, 100, batch_size=256)
    log_likelihood_rows = log_likelihood_per_row(model, test, args.is_samples, batch_size=256)
    gap = log_likelihood_rows - elbo_rows
    root = math.sqrt(len(test))
    return {
        "test_elbo": float(elbo_rows.mean()),
        "test_elbo_standard_error": float(elbo_rows.std() / root),
        "test_log_likelihood": float(log_likelihood_rows.mean()),
        "test_log_likelihood_standard_error": float(log_likelihood_rows.std() / root),
        "importance_samples": args.is_samples,
        "gap_log_likelihood_minus_elbo": float(gap.mean()),
        "gap_standard_error": float(gap.std() / root),
        "validation_elbo": result.best_validation_elbo,
        "epochs": len(result.train_loss),
        "best_epoch": result.best_epoch + 1,
        "stopped_early": result.stopped_early,
        "train_time_s": result.wall_time,
        "parameters": sum(p.numel() for p in model.parameters()),
        "flow_parameters": sum(p.numel() for p in model.flows.parameters()),
    }
