"""The picture path under load: milliseconds per animation frame of the seed model (Planar x16 on
TwoModes, 2^20 samples binned into 200 x 200 cells), as ``flowforge demo`` draws 101 of them.

Each configuration runs in a child process of its own (the OpenMP settings are read when torch
loads), alternating between configurations in every repeat, on a quiet machine and with one busy
process (``python -c 'while True: pass'``) per core beyond the first, as users' machines often are.
Configurations: the generic path (``model.sample``, then the histogram) and the column fast path of
:func:`flowforge.plot.sample_histogram`, each with torch's default thread count and with one thread;
the fast path with the thread count chosen by timing (:func:`flowforge.plot.picture_threads`, what
flowforge does), and with the default count and ``OMP_WAIT_POLICY=PASSIVE`` set before torch loads.

    python -m benchmarks.frames                 # 5 repeats of 20 frames per configuration (about 6 minutes)
    python -m benchmarks.frames --repeats 2 --frames 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from .run import CONDITIONS, condition, condition_label

CONFIGURATIONS = {
    "generic, default threads": {"path": "generic", "threads": "default", "env": {}},
    "generic, 1 thread": {"path": "generic", "threads": "1", "env": {}},
    "columns, default threads": {"path": "columns", "threads": "default", "env": {}},
    "columns, 1 thread": {"path": "columns", "threads": "1", "env": {}},
    "columns, chosen by timing (flowforge's policy)": {"path": "columns", "threads": "chosen", "env": {}},
    "columns, default threads, OMP_WAIT_POLICY=PASSIVE": {
        "path": "columns",
        "threads": "default",
        "env": {"OMP_WAIT_POLICY": "PASSIVE"},
    },
}
POINTS, BINS = 2**20, 200


def child(path: str, threads: str, frames: int) -> None:
    """Time ``frames`` frames in this process and print their times (seconds) as JSON."""
    import torch

    import flowforge as nf
    from flowforge import plot

    plot.PICTURE_THREADS = {"default": torch.get_num_threads(), "1": 1, "chosen": None}[threads]
    torch.manual_seed(0)
    model = nf.presets.PlanarFlow(2, 16, p=nf.distributions.TwoModes(2.0, 0.1))
    bounds = model.p.bounds.tolist()
    if path == "generic":
        plot._column_maps = lambda model: None  # the generic path: model.sample, then the histogram
    plot.sample_histogram(model, POINTS, bounds, BINS)  # warm-up (and, for "chosen", the first timings)
    plot.sample_histogram(model, POINTS, bounds, BINS)
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        plot.sample_histogram(model, POINTS, bounds, BINS)
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times}))


def measure(name: str, frames: int) -> list[float]:
    setting = CONFIGURATIONS[name]
    command = [sys.executable, "-m", "benchmarks.frames", "--child", setting["path"], str(setting["threads"])]
    environment = {**os.environ, **setting["env"]}
    output = subprocess.run(
        [*command, "--frames", str(frames)], env=environment, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.splitlines()[-1])["times"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20, help="frames timed per configuration and repeat")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.frames)
        return
    cores = os.cpu_count() or 1
    results: dict[str, dict[str, list[float]]] = {name: {} for name in CONDITIONS}
    for repeat in range(args.repeats):
        for name in CONDITIONS:
            with condition(name):
                order = list(CONFIGURATIONS) if repeat % 2 == 0 else list(reversed(CONFIGURATIONS))
                for configuration in order:
                    results[name].setdefault(configuration, []).extend(measure(configuration, args.frames))
    print(f"Milliseconds per frame ({POINTS} points, {BINS}x{BINS} cells), median [min, max] of "
          f"{args.repeats} x {args.frames} frames; {cores} cores\n")  # fmt: skip
    print("| configuration | " + " | ".join(condition_label(name) for name in CONDITIONS) + " |")
    print("|" + "---|" * (len(CONDITIONS) + 1))
    for name in CONFIGURATIONS:
        cells = []
        for state in CONDITIONS:
            times = [1000 * t for t in results[state][name]]
            cells.append(f"{statistics.median(times):.0f} [{min(times):.0f}, {max(times):.0f}]")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
