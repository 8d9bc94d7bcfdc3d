"""Quality of every preset on three 2-D tasks, with wall time; prints a markdown table.

Forward KL (maximum likelihood) on two-moons and 8-Gaussians samples, reported as test NLL in
nats (10000 training and 5000 test samples, batch 512); reverse KL to TwoModes(2, 0.1)
(annealed, 256 samples a step), reported as the exact grid KL(q‖p). NSF's hidden width is
chosen so that its parameter count matches RealNVP's.

    python -m benchmarks.quality                     # 3000 steps per fit
    python -m benchmarks.quality --iterations 500    # a quick look
"""

from __future__ import annotations

import argparse
import time

import torch

import flowforge as nf
from flowforge import datasets, metrics, presets, training

LAYERS = {"planar": 16, "radial": 16, "realnvp": 8, "maf": 8, "iaf": 8, "nsf": 8, "nsf-ar": 8, "residual": 4}


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, hidden: dict[str, int], p=None):
    preset = presets.PRESETS[name]
    if name in hidden:
        return preset(2, LAYERS[name], hidden=hidden[name], p=p)
    return preset(2, LAYERS[name], p=p)


def matched_nsf_width(target: int, autoregressive: bool) -> int:
    """The NSF hidden width whose parameter count is closest to ``target``."""
    preset = presets.NSFAutoregressive if autoregressive else presets.NSF
    return min(range(8, 129), key=lambda h: abs(parameter_count(preset(2, 8, hidden=h)) - target))


def forward_kl_task(name, hidden, data, iterations, seed):
    torch.manual_seed(seed)
    model = build(name, hidden)
    train_data, test_data = data[:10000], data[10000:]
    start = time.perf_counter()
    training.fit(model, iterations, loss="forward_kl", data=train_data, samples_per_step=512, lr=1e-3,
                 seed=seed, progress=False, device="cpu", compile="off")  # fmt: skip
    wall = time.perf_counter() - start
    return metrics.mean_nll(model, test_data), wall, parameter_count(model)


def reverse_kl_task(name, hidden, iterations, seed):
    torch.manual_seed(seed)
    model = build(name, hidden, p=nf.distributions.TwoModes(2.0, 0.1))
    start = time.perf_counter()
    training.fit(model, iterations, samples_per_step=256, anneal_iters=iterations // 2, lr=1e-3,
                 seed=seed, progress=False, device="cpu", compile="off")  # fmt: skip
    wall = time.perf_counter() - start
    return metrics.grid_kl(model, grid_size=300)["kl"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", nargs="*", default=list(LAYERS))
    args = parser.parse_args()
    hidden = {"realnvp": 64, "maf": 64, "iaf": 64, "residual": 64}
    budget = parameter_count(presets.RealNVP(2, LAYERS["realnvp"], hidden=64))
    hidden["nsf"] = matched_nsf_width(budget, autoregressive=False)
    hidden["nsf-ar"] = matched_nsf_width(budget, autoregressive=True)
    tasks = {
        "two-moons": datasets.two_moons(15000, seed=args.seed),
        "8-gaussians": datasets.eight_gaussians(15000, seed=args.seed),
    }
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {args.iterations} steps per fit, seed {args.seed}")
    print(
        "\n| preset | layers | parameters | two-moons test NLL | s | 8-gaussians test NLL | s | TwoModes grid KL | s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.presets:
        cells = []
        for data in tasks.values():
            nll, wall, count = forward_kl_task(name, hidden, data, args.iterations, args.seed)
            cells += [f"{nll:.3f}", f"{wall:.0f}"]
        kl, wall = reverse_kl_task(name, hidden, args.iterations, args.seed)
        width = f" (hidden {hidden[name]})" if name in hidden else ""
        print(
            f"| {name}{width} | {LAYERS[name]} | {count} | " + " | ".join(cells) + f" | {kl:.3f} | {wall:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
