"""Density estimation from data: held-out NLL of the RealNVP, MAF and NSF presets on every toy set
and on two real tables, bits/dim of multi-scale Glow on the digits, each with its wall time;
prints a markdown table (the table in docs/benchmarks.md).

Every fit is the one ``flowforge fit --data`` runs: the training split whitened (its mean and
covariance become the model's last layer, :class:`~flowforge.flows.Whitening`, so every flow
starts as the full-covariance Gaussian and NLLs are in the data's units), ``fit_data`` with
validation-based early stopping and a cosine schedule, the best weights restored, the test NLL
reported with its standard error. The real tables come with scikit-learn (``wine``: 178 × 13,
``breast-cancer``: 569 × 30); each flow there is compared with a full-covariance Gaussian fitted
to the same training split. On two-moons, zuko's NSF (same number of transforms, bins and
hidden width, same training loop) is run too when zuko is installed.

    python -m benchmarks.density              # the full table (about 10 minutes on 2 CPU cores)
    python -m benchmarks.density --quick      # a smoke run: tiny data, 2 epochs
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from flowforge import datasets, metrics, presets, training
from flowforge.flows import Whitening

FLOWS = {"RealNVP": presets.RealNVP, "MAF": presets.MAF, "NSF": presets.NSF}
LAYERS, HIDDEN, BINS = 6, 64, 8


class ZukoModel(torch.nn.Module):
    """zuko's lazy flow with flowforge's fitting interface (``log_prob``, ``forward_kld``)."""

    def __init__(self, flow: torch.nn.Module, standardization: Whitening):
        super().__init__()
        self.flow, self.standardization = flow, standardization

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None:
            raise ValueError("the zuko baseline is unconditional: it takes no context")
        z, log_det = self.standardization.inverse(x)
        return self.flow().log_prob(z) + log_det

    def forward_kld(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return -self.log_prob(x, context).mean()


def test_nll(model, test: torch.Tensor) -> tuple[float, float]:
    """Mean test NLL and its standard error."""
    model.eval()
    values = metrics.nll_per_row(model, test)
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def fit_table(build, parts, options) -> dict:
    train_data, validation, test = parts
    torch.manual_seed(0)
    model = build(train_data.shape[1])
    start = time.perf_counter()
    result = training.fit_data(model, train_data.float(), validation.float(), seed=0, progress=False, **options)
    wall = time.perf_counter() - start
    nll, error = test_nll(model, test)
    return {"nll": nll, "error": error, "wall": wall, "epochs": len(result.train_nll)}


def flowforge_table_model(name: str, train_data: torch.Tensor):
    def build(dim: int):
        model = FLOWS[name](dim, LAYERS, hidden=HIDDEN)
        model.flows.append(Whitening.from_data(train_data.float()))
        return model

    return build


def zuko_table_model(train_data: torch.Tensor):
    import zuko

    def build(dim: int):
        flow = zuko.flows.NSF(dim, transforms=LAYERS, bins=BINS, hidden_features=(HIDDEN, HIDDEN))
        return ZukoModel(flow, Whitening.from_data(train_data.float()))

    return build


def tables(quick: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    rows = 1000 if quick else 10_000
    sets = {name: datasets.split(make(rows, seed=0).double(), seed=0) for name, make in datasets.TOY_DATA.items()}
    for name in datasets.REAL_TABLES:
        sets[name] = datasets.split(datasets.load_real_table(name)[0], seed=0)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data and 2 epochs (a smoke test)")
    args = parser.parse_args()
    options = {"epochs": 2 if args.quick else 150, "patience": 15, "batch_size": 256, "lr": 1e-3}
    print(f"# density estimation: {LAYERS} layers, hidden {HIDDEN}, up to {options['epochs']} epochs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")  # fmt: skip
    print("| data | rows (train/val/test) | dim | " + " | ".join(FLOWS) + " | full-cov Gaussian | best margin |")
    print("|---|---|---|" + "---|" * len(FLOWS) + "---|---|")
    zuko_line = None
    for name, parts in tables(args.quick).items():
        cells, best = [], math.inf
        for flow in FLOWS:
            outcome = fit_table(flowforge_table_model(flow, parts[0]), parts, options)
            best = min(best, outcome["nll"])
            cells.append(f"{outcome['nll']:.3f} ± {outcome['error']:.3f} ({outcome['wall']:.0f} s)")
        gaussian, gaussian_error = metrics.gaussian_nll(parts[0], parts[2])
        sizes = "/".join(str(len(p)) for p in parts)
        print(
            f"| {name} | {sizes} | {parts[0].shape[1]} | " + " | ".join(cells)
            + f" | {gaussian:.3f} ± {gaussian_error:.3f} | {gaussian - best:.3f} |", flush=True,
        )  # fmt: skip
        if name == "two-moons":
            try:
                zuko_outcome = fit_table(zuko_table_model(parts[0]), parts, options)
                zuko_line = (zuko_outcome, cells[list(FLOWS).index("NSF")])
            except ImportError:
                zuko_line = None
    images, labels = datasets.load_digits()
    if args.quick:
        images, labels = images[:200], labels[:200]
    for class_cond in (False, True):
        (train_x, train_y), (validation_x, validation_y), (test_x, test_y) = datasets.split((images, labels), seed=0)
        torch.manual_seed(0)
        model = presets.Glow((1, 8, 8), 2, steps=4, hidden=64, num_classes=10 if class_cond else None)
        start = time.perf_counter()
        result = training.fit_data(
            model, train_x, validation_x, train_context=train_y if class_cond else None,
            validation_context=validation_y if class_cond else None, levels=datasets.DIGITS_LEVELS,
            epochs=options["epochs"], patience=20, batch_size=64, seed=0, progress=False,
        )  # fmt: skip
        wall = time.perf_counter() - start
        nll = metrics.mean_nll(model, test_x, context=test_y if class_cond else None, levels=datasets.DIGITS_LEVELS)
        kind = "class-conditional" if class_cond else "unconditional"
        print(
            f"\ndigits, multi-scale Glow ({kind}, 2 levels × 4 steps, 64 channels): test {nll:.2f} nats = "
            f"{metrics.bits_per_dim(nll, 64):.3f} bits/dim ({len(result.train_nll)} epochs, {wall:.0f} s; "
            f"uniform model: {math.log2(datasets.DIGITS_LEVELS):.3f} bits/dim)"
        )
    if zuko_line is not None:
        outcome, ours = zuko_line
        print(
            f"\ntwo-moons, NSF at the same size ({LAYERS} transforms, {BINS} bins, hidden {HIDDEN}×2): "
            f"flowforge {ours}; zuko {outcome['nll']:.3f} ± {outcome['error']:.3f} ({outcome['wall']:.0f} s)"
        )
    else:
        print("\nzuko not installed: pip install zuko (or flowforge[bench]) for the two-moons comparison")


if __name__ == "__main__":
    main()
