"""Training across processes: seconds per epoch of ``fit_data``, or per 100 steps of ``fit`` by reverse KL,
in one process and in several under ``torchrun``, with the same data, model and global batch (so the
same trained model, to rounding, for the data fit; for reverse KL each process draws its own samples).

The workloads (``--loss``):

- ``forward-kl`` (default): ``fit_data``, a MAF (5 layers, MADE 2x256) on 100,000 rows of a 16-D Gaussian
  mixture, global batch ``--batch`` (default 1024), ``--epochs`` epochs after one warm-up epoch;
- ``reverse-kl``: ``fit`` by reverse KL, a RealNVP (8 layers, 256 hidden) to a 16-D mixture of 8
  Gaussians, ``--batch`` samples a step split across the processes, 100 steps after 5 warm-up steps,
  the step eager in every configuration (a fit across processes does not compile).

Each configuration runs in fresh processes; the configurations alternate over ``--repeats`` rounds and
the medians are printed:

- 1 process, 1 thread; 1 process, ``--processes`` threads (what one process gets from the same cores);
- ``--processes`` processes of 1 thread each (gloo on the CPU; NCCL with one GPU each with ``--device cuda``).

    python -m benchmarks.distributed                       # 2 processes on the CPU
    python -m benchmarks.distributed --loss reverse-kl --batch 4096
    python -m benchmarks.distributed --processes 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

STEPS = 100
"""Timed steps of the reverse-KL workload (its figure is seconds per 100 steps)."""


def work_reverse(args: argparse.Namespace) -> None:
    """One configuration of the reverse-KL workload: print seconds per 100 steps from process 0."""
    import flowforge as nf
    from flowforge.training import fit

    generator = torch.Generator().manual_seed(0)
    target = nf.distributions.base.GaussianMixture(8, 16, loc=3 * torch.randn(8, 16, generator=generator))
    torch.manual_seed(0)
    model = nf.RealNVP(16, 8, hidden=256, p=target)
    device = "cpu" if args.device == "cpu" else None
    common = {"samples_per_step": args.batch, "seed": 0, "progress": False, "compile": "off", "device": device}
    fit(model, 5, **common)  # warm-up
    start = time.perf_counter()
    fit(model, STEPS, **common)
    if torch.cuda.is_available() and args.device == "cuda":
        torch.cuda.synchronize()
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"seconds": (time.perf_counter() - start) * 100 / STEPS}))


def work(args: argparse.Namespace) -> None:
    """One configuration (a process of it, under torchrun): print seconds per epoch from process 0."""
    import flowforge as nf
    from flowforge.training import fit_data

    if args.loss == "reverse-kl":
        work_reverse(args)
        return
    generator = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(8, 16, generator=generator)
    data = centres[torch.randint(0, 8, (100_000,), generator=generator)] + torch.randn(100_000, 16, generator=generator)
    torch.manual_seed(0)
    model = nf.MAF(16, 5, hidden=256)
    common = {"batch_size": args.batch, "lr": 1e-3, "seed": 0, "progress": False, "schedule": None, "patience": None}
    device = "cpu" if args.device == "cpu" else None  # None: cuda:LOCAL_RANK under torchrun
    fit_data(model, data, epochs=1, device=device, **common)  # warm-up: allocations, the process group's first calls
    start = time.perf_counter()
    fit_data(model, data, epochs=args.epochs, device=device, **common)
    if torch.cuda.is_available() and args.device == "cuda":
        torch.cuda.synchronize()
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"seconds": (time.perf_counter() - start) / args.epochs}))


def run(args: argparse.Namespace, processes: int, threads: int) -> float:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    worker = ["-m", "benchmarks.distributed", "--work", "--epochs", str(args.epochs), "--batch", str(args.batch)]
    worker += ["--device", args.device, "--loss", args.loss]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        command = launcher + worker
    else:
        command = [sys.executable, *worker]
    output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout
    return float(json.loads(output.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--loss", choices=["forward-kl", "reverse-kl"], default="forward-kl")
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        work(args)
        return
    n = args.processes
    configurations = {
        "1 process, 1 thread": (1, 1),
        f"1 process, {n} threads": (1, n),
        f"{n} processes, 1 thread each": (n, 1),
    }
    if args.device == "cuda":
        configurations = {"1 process, 1 GPU": (1, 1), f"{n} processes, 1 GPU each": (n, 1)}
    times: dict[str, list[float]] = {name: [] for name in configurations}
    for _ in range(args.repeats):
        for name, (processes, threads) in configurations.items():
            times[name].append(run(args, processes, threads))
    if args.loss == "reverse-kl":
        workload, unit = f"reverse KL, RealNVP 8x256 to a 16-D mixture, {args.batch} samples a step", "s per 100 steps"
    else:
        workload, unit = f"MAF 5x256, 100,000 x 16 rows, global batch {args.batch}", "s per epoch"
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; {workload}")
    print(f"\n| configuration | {unit} (median) | speed-up over 1 process, 1 thread |\n| --- | --- | --- |")
    first = statistics.median(next(iter(times.values())))
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {first / median:.2f}x |")


if __name__ == "__main__":
    main()
