"""VAEs on the bundled digits with each posterior family: test ELBO and importance-sampled log-likelihood.

The 1797 digits (intensities ``k/16``) are split 80/10/10 (seed 0); validation and test images are
binarised once (seed 1), training images afresh in every batch. Each posterior family (a diagonal
Gaussian and ``K`` amortized Planar, Radial, IAF or RealNVP layers on it) gets the same VAE (latent
size 8, MLP encoder and decoder 2x256) and the same loop (:func:`flowforge.training.fit_vae`: Adam 1e-3,
batch 100, KL warm-up over 100 epochs, early stopping after 100 epochs without validation gain),
once per seed. The table gives, per family, the test ELBO (100 posterior samples a point), the
importance-sampled ``log p(x)`` (1000 samples a point) and their gap, as mean ± standard error over
the seeds, and the paired difference to the Gaussian posterior of the same seed.

    python -m benchmarks.vae                  # about 20 min on 2 cores
    python -m benchmarks.vae --quick          # a smoke run
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import flowforge as nf
from flowforge.metrics import mean_elbo, mean_log_likelihood
from flowforge.presets import VAE_POSTERIORS
from flowforge.training import fit_vae


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, _ = nf.datasets.load_digits()
    train, validation, test = nf.datasets.split((images / 16.0).float(), (0.8, 0.1, 0.1), seed=0)
    generator = torch.Generator().manual_seed(1)
    return train, nf.datasets.binarize(validation, generator), nf.datasets.binarize(test, generator)


def independent_pixels(train: torch.Tensor, test: torch.Tensor) -> float:
    """Test log-likelihood of independent Bernoulli pixels at the training means: no latent at all."""
    probability = train.mean(0).clamp(1e-3, 1 - 1e-3)
    return float(torch.distributions.Bernoulli(probs=probability).log_prob(test).flatten(1).sum(1).mean())


def _mean_se(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.3f}"
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
    return f"{mean:.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posteriors", nargs="+", choices=VAE_POSTERIORS, default=list(VAE_POSTERIORS))
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--is-samples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    warmup, patience, elbo_samples = 100, 100, 100
    if args.quick:
        args.epochs, args.is_samples, args.seeds, warmup, patience, elbo_samples = 2, 20, args.seeds[:1], 1, 1, 5
    train, validation, test = digits()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, flowforge {nf.__version__}")
    reference = independent_pixels(train, test)
    print(f"\ndigits {len(train)}/{len(validation)}/{len(test)}, latent 8, MLP 2x256, {args.layers} flow layers, "
          f"seeds {args.seeds}; independent pixels: test log-likelihood {reference:.3f}\n")  # fmt: skip
    print(
        "| posterior | flow parameters | epochs | fit s | test ELBO | test log p(x) (IS) | gap | "
        "ELBO − Gaussian's | log p(x) − Gaussian's |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    baseline: dict[int, tuple[float, float]] = {}
    for posterior in args.posteriors:
        rows = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = nf.VAE((1, 8, 8), latent_dim=8, posterior=posterior, layers=args.layers, hidden=256)
            start = time.perf_counter()
            result = fit_vae(model, train, validation, epochs=args.epochs, warmup_epochs=warmup, patience=patience,
                             binarize_train=True, seed=seed, progress=False, device="cpu")  # fmt: skip
            seconds = time.perf_counter() - start
            elbo = mean_elbo(model, test, elbo_samples)
            log_likelihood, _ = mean_log_likelihood(model, test, args.is_samples)
            if posterior == "gaussian":
                baseline[seed] = (elbo, log_likelihood)
            rows.append((len(result.train_loss), seconds, elbo, log_likelihood))
        flow_parameters = sum(p.numel() for p in model.flows.parameters())
        paired = [(row[2] - baseline[s][0], row[3] - baseline[s][1]) for s, row in zip(args.seeds, rows, strict=True)
                  if s in baseline and posterior != "gaussian"]  # fmt: skip
        differences = f"{_mean_se([d[0] for d in paired])} | {_mean_se([d[1] for d in paired])}" if paired else "0 | 0"
        print(f"| {posterior} | {flow_parameters} | {_mean_se([r[0] for r in rows])} | {_mean_se([r[1] for r in rows])}"
              f" | {_mean_se([r[2] for r in rows])} | {_mean_se([r[3] for r in rows])} | "
              f"{_mean_se([r[3] - r[2] for r in rows])} | {differences} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
