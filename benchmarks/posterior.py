"""Neural posterior estimation with sbi: flowforge's estimators (``flowforge.sbi.posterior_nn``) against
sbi's own, trained by the same sbi loop on the same simulations.

Two tasks of the sbi benchmark (Lueckmann et al. 2021) whose posteriors are known exactly:

- **Gaussian-linear** (10-D): ``θ ~ N(0, 0.1 I)``, ``x ~ N(θ, 0.1 I)``; the posterior is ``N(x/2, 0.05 I)``.
- **Two moons** (2-D): ``θ ~ U(−1, 1)²``, ``a ~ U(−π/2, π/2)``, ``r ~ N(0.1, 0.01²)``,
  ``x = (r cos a + 0.25, r sin a) + (−|θ₁ + θ₂|/√2, (θ₂ − θ₁)/√2)``. Reference samples are exact: the map
  from ``θ`` to the shift is an isometry on each side of ``θ₁ + θ₂ = 0``, so a draw of the noise and a
  side chosen by a fair coin give a posterior draw, kept when it lies on that side and inside the prior.

For each task, seed and estimator: ``--budget`` simulations, one sbi ``NPE`` training with sbi's defaults
(batch 200, learning rate 5e-4, 10% validation, stop after 20 epochs without improvement), then for each of
``--observations`` observations (drawn from the prior and simulator with a fixed seed) the C2ST accuracy of
``--samples`` posterior samples against as many reference samples (sbi's ``c2st``, its MLP classifier, 5
folds; 0.5 is perfect, 1.0 is apart). Prints the mean C2ST ± standard error over seeds and observations and
the training time per estimator. The estimators alternate within each seed, so a busy machine slows all of
them alike.

    python -m benchmarks.posterior                       # the table in docs/sbi.md (31 min with OMP_NUM_THREADS=1)
    python -m benchmarks.posterior --quick               # a smoke run
    python -m benchmarks.posterior --tasks two-moons --seeds 1 --plot docs/sbi-two-moons.png  # the picture (seed 0)
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable

import torch

try:
    from sbi.inference import NPE
    from sbi.utils import BoxUniform
    from sbi.utils.metrics import c2st
except ImportError as error:  # pragma: no cover
    raise SystemExit("this benchmark needs sbi: pip install -e '.[sbi]'") from error

from flowforge.sbi import posterior_nn

Simulator = Callable[[torch.Tensor], torch.Tensor]


class GaussianLinear:
    name, dim = "Gaussian-linear (10-D)", 10

    def __init__(self) -> None:
        self.prior = torch.distributions.MultivariateNormal(torch.zeros(self.dim), 0.1 * torch.eye(self.dim))

    def simulate(self, theta: torch.Tensor) -> torch.Tensor:
        return theta + math.sqrt(0.1) * torch.randn_like(theta)

    def reference(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x / 2 + math.sqrt(0.05) * torch.randn(n, self.dim)


class TwoMoons:
    name, dim = "two moons (2-D)", 2

    def __init__(self) -> None:
        self.prior = BoxUniform(-torch.ones(2), torch.ones(2))

    @staticmethod
    def _noise(n: int) -> torch.Tensor:
        a = (torch.rand(n) - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(n)
        return torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], 1)

    def simulate(self, theta: torch.Tensor) -> torch.Tensor:
        shift = torch.stack([-(theta[:, 0] + theta[:, 1]).abs(), theta[:, 1] - theta[:, 0]], 1) / math.sqrt(2)
        return self._noise(theta.shape[0]) + shift

    def reference(self, x: torch.Tensor, n: int) -> torch.Tensor:
        kept: list[torch.Tensor] = []
        count = 0
        while count < n:
            w = x.reshape(1, 2) - self._noise(4 * n)  # the shift −(|s|, d)/√2 with s = θ₁ + θ₂, d = θ₂ − θ₁
            side = torch.where(torch.rand(4 * n) < 0.5, 1.0, -1.0)
            s, d = -side * math.sqrt(2) * w[:, 0], math.sqrt(2) * w[:, 1]
            theta = torch.stack([(s - d) / 2, (s + d) / 2], 1)
            ok = (w[:, 0] <= 0) & (theta.abs() <= 1).all(1)
            kept.append(theta[ok])
            count += int(ok.sum())
        return torch.cat(kept)[:n]


ESTIMATORS: dict[str, Callable[[], object]] = {
    "flowforge nsf": lambda: posterior_nn("nsf"),
    "flowforge maf": lambda: posterior_nn("maf"),
    "sbi nsf": lambda: "nsf",
    "sbi maf (NPE's default)": lambda: "maf",
}


def train(task, estimator: str, theta: torch.Tensor, x: torch.Tensor, seed: int, max_epochs: int | None):
    torch.manual_seed(seed)
    inference = NPE(task.prior, density_estimator=ESTIMATORS[estimator](), show_progress_bars=False)
    start = time.perf_counter()
    kwargs = {} if max_epochs is None else {"max_num_epochs": max_epochs}
    network = inference.append_simulations(theta, x).train(**kwargs)
    seconds = time.perf_counter() - start
    return inference.build_posterior(network), seconds, int(inference.summary["epochs_trained"][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=10_000, help="simulations per training (default 10000)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--observations", type=int, default=3, help="observations per task (default 3)")
    parser.add_argument("--samples", type=int, default=2000, help="posterior and reference samples for C2ST")
    parser.add_argument("--tasks", nargs="+", default=["gaussian-linear", "two-moons"])
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny budget, 2 epochs, 1 seed")
    parser.add_argument("--plot", help="write a picture of two-moons posteriors (seed 0) to this PNG file")
    args = parser.parse_args()
    max_epochs = None
    if args.quick:
        args.budget, args.seeds, args.observations, args.samples, max_epochs = 400, 1, 1, 200, 2
    warnings.filterwarnings("ignore")  # sbi warns about its own defaults on every call
    plot_path = os.path.abspath(args.plot) if args.plot else None
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as logs:
        os.chdir(logs)  # sbi's trainers write TensorBoard logs to ./sbi-logs
        try:
            pictures, observed_first = run(args, max_epochs)
        finally:
            os.chdir(previous)
    if plot_path and pictures:
        plot(pictures, observed_first, plot_path)


def run(args: argparse.Namespace, max_epochs: int | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Print the table; return two-moons samples at its first observation (seed 0) and that observation."""
    tasks = {"gaussian-linear": GaussianLinear(), "two-moons": TwoMoons()}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; budget {args.budget} simulations, "
        f"{args.seeds} seeds x {args.observations} observations, C2ST on {args.samples} + {args.samples} samples"
    )
    print("\n| task | estimator | C2ST (0.5 is best) | training s | epochs |\n| --- | --- | --- | --- | --- |")
    pictures: dict[str, torch.Tensor] = {}
    observed_first = torch.zeros(2)
    for key in args.tasks:
        task = tasks[key]
        torch.manual_seed(1000)
        observed_theta = task.prior.sample((args.observations,))
        observed = task.simulate(observed_theta)
        references = [task.reference(x, args.samples) for x in observed]
        scores: dict[str, list[float]] = {name: [] for name in args.estimators}
        seconds: dict[str, list[float]] = {name: [] for name in args.estimators}
        epochs: dict[str, list[int]] = {name: [] for name in args.estimators}
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            theta = task.prior.sample((args.budget,))
            x = task.simulate(theta)
            for name in args.estimators:
                posterior, took, trained = train(task, name, theta, x, seed, max_epochs)
                seconds[name].append(took)
                epochs[name].append(trained)
                for index, (x_o, reference) in enumerate(zip(observed, references, strict=True)):
                    samples = posterior.sample((args.samples,), x=x_o, show_progress_bars=False)
                    scores[name].append(float(c2st(samples, reference, classifier="mlp", seed=seed)))
                    if key == "two-moons" and seed == 0 and index == 0:
                        pictures[name] = samples
        for name in args.estimators:
            values = torch.tensor(scores[name])
            error = values.std() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
            took, trained = sum(seconds[name]) / len(seconds[name]), sum(epochs[name]) / len(epochs[name])
            print(f"| {task.name} | {name} | {values.mean():.3f} ± {error:.3f} | {took:.1f} | {trained:.0f} |")
        if key == "two-moons":
            pictures["reference"] = references[0]
            observed_first = observed[0]
    return pictures, observed_first


def plot(pictures: dict[str, torch.Tensor], x_o: torch.Tensor, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["reference", *[name for name in pictures if name != "reference"]]
    # Zoomed on the reference (its box widened threefold), so the ring's width is visible.
    low, high = pictures["reference"].amin(0), pictures["reference"].amax(0)
    centre, half = (low + high) / 2, 1.5 * float((high - low).max())
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6), sharex=True, sharey=True)
    for axis, name in zip(axes, names, strict=True):
        points = pictures[name].numpy()
        axis.scatter(points[:, 0], points[:, 1], s=1, alpha=0.4, color="black" if name == "reference" else None)
        axis.set_title(name, fontsize=10)
        axis.set_xlim(float(centre[0]) - half, float(centre[0]) + half)
        axis.set_ylim(float(centre[1]) - half, float(centre[1]) + half)
        axis.set_aspect("equal")
        axis.set_xlabel("θ₁")
    axes[0].set_ylabel("θ₂")
    figure.suptitle(f"two moons: posterior samples at x = ({x_o[0]:.3f}, {x_o[1]:.3f})", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
