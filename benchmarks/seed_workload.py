"""Time the seed workload (16 Planar layers, TwoModes(2, 0.1), 40 samples a step, reverse KL
annealed over 10000 of 20000 steps) in flowforge and, when installed, in normflows.

Three contenders, in one process:
  flowforge-seed-loop  the seed script's own loop (eager, the user's Adam) on flowforge;
  normflows-seed-loop  the same loop on normflows (`pip install normflows`);
  flowforge-fit        `flowforge.train.fit`, which owns the loop (compiled, fused Adam).
The two seed loops run in alternating blocks of `--block` steps so that machine noise hits
both alike; iterations/s is the median over blocks. Quality is the KL(q‖p) reached, by the
same Monte-Carlo estimator for both libraries (log q from sampling, log Z from a grid).

    python -m benchmarks.seed_workload                 # the full 20000-step schedule
    python -m benchmarks.seed_workload --iterations 4000 --block 500
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

import flowforge
from flowforge import metrics, train

LOC, SCALE, LAYERS, SAMPLES, ANNEAL = 2.0, 0.1, 16, 40, 10000


class SeedLoop:
    """The seed script's model and training loop for one library, resumable block by block."""

    def __init__(self, library, seed: int):
        torch.manual_seed(seed)
        flows = [library.flows.Planar((2,)) for _ in range(LAYERS)]
        self.model = library.NormalizingFlow(
            q0=library.distributions.DiagGaussian(2), flows=flows, p=library.distributions.TwoModes(LOC, SCALE)
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, weight_decay=1e-4)
        self.loss_hist = np.array([])
        self.iteration = 0
        self.rates: list[float] = []

    def run(self, steps: int) -> None:
        start = time.perf_counter()
        for it in range(self.iteration, self.iteration + steps):
            self.optimizer.zero_grad()
            loss = self.model.reverse_kld(SAMPLES, beta=np.min([1.0, 0.01 + it / ANNEAL]))
            loss.backward()
            self.optimizer.step()
            self.loss_hist = np.append(self.loss_hist, loss.to("cpu").data.numpy())
        self.rates.append(steps / (time.perf_counter() - start))
        self.iteration += steps


@torch.no_grad()
def monte_carlo_kl(model, log_z: float, num_samples: int = 2**18) -> tuple[float, float]:
    """KL(q‖p) = E_q[log q − log p̃] + log Z, with its standard error."""
    x, log_q = model.sample(num_samples)
    difference = log_q - flowforge.distributions.TwoModes(LOC, SCALE).log_prob(x)
    return float(difference.mean()) + log_z, float(difference.std()) / math.sqrt(num_samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--block", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", default="on", choices=train.COMPILE_MODES, help="for flowforge-fit")
    args = parser.parse_args()
    if args.iterations % args.block:
        parser.error("--iterations must be a multiple of --block")
    try:
        import normflows
    except ImportError:
        normflows = None
        print("normflows is not installed: timing flowforge only (pip install normflows)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, flowforge {flowforge.__version__}")

    loops = {"flowforge-seed-loop": SeedLoop(flowforge, args.seed)}
    if normflows is not None:
        loops["normflows-seed-loop"] = SeedLoop(normflows, args.seed)
    for _ in range(args.iterations // args.block):
        for loop in loops.values():
            loop.run(args.block)

    torch.manual_seed(args.seed)
    fit_model = flowforge.presets.PlanarFlow(2, LAYERS, p=flowforge.distributions.TwoModes(LOC, SCALE))
    start = time.perf_counter()
    result = train.fit(
        fit_model, args.iterations, samples_per_step=SAMPLES, anneal_iters=ANNEAL, seed=args.seed,
        compile=args.compile, progress=False, device="cpu",
    )  # fmt: skip
    fit_wall = time.perf_counter() - start

    log_z = metrics.grid_kl(fit_model, grid_size=400)["log_z_grid"]
    rows = {}
    for name, loop in loops.items():
        rate = statistics.median(loop.rates)
        rows[name] = (rate, args.iterations / rate, 0.0, *monte_carlo_kl(loop.model, log_z))
    fit_kl = monte_carlo_kl(fit_model, log_z)
    rows["flowforge-fit"] = (result.iterations_per_second, fit_wall, result.compile_time, *fit_kl)

    reference = rows.get("normflows-seed-loop", (None,))[0]
    print(f"\nseed workload: {args.iterations} steps, blocks of {args.block}, medians over blocks")
    print(f"{'contender':22s} {'it/s':>8s} {'wall s':>8s} {'compile s':>10s} {'KL(q|p)':>16s} {'vs normflows':>13s}")
    for name, (rate, wall, compile_time, kl, kl_error) in rows.items():
        ratio = f"{rate / reference:12.2f}x" if reference else f"{'-':>13s}"
        print(f"{name:22s} {rate:8.1f} {wall:8.1f} {compile_time:10.1f} {kl:9.4f} ± {kl_error:.4f} {ratio}")


if __name__ == "__main__":
    main()
