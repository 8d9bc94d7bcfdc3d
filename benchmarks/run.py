"""The speed suite: flowforge beside normflows, zuko and nflows (whichever are installed:
``pip install -e ".[bench]"``) on identical workloads, in one process run, repeats alternating
between libraries. Prints markdown tables of medians, flowforge/peer ratios and final quality.

Sections (``--only`` picks some):
  seed      the seed workload (Planar x16, TwoModes, reverse KL annealed over 10000 of 20000
            steps, 40 samples a step): the seed script's own loop on normflows and on
            flowforge (alternating blocks), and ``flowforge.training.fit`` as ``flowforge demo``
            runs it (compile="auto"), with inductor's cache warm (in this process) and cold (a
            child process with an empty temporary directory); quality is KL(q‖p).
  coupling  forward KL, batch 512, two-moons: affine coupling x8 and RQ-spline coupling x8
            (MLP 2x64); training iterations/s and test NLL after the same number of steps.
  ar64      the same in 64 dimensions with MAF and autoregressive NSF (4 layers, MADE 2x128),
            plus density evaluation throughput at batch 10^5 and sampling throughput at batch
            10^4 (sampling takes 64 passes a layer: NSF at 10^5 would take minutes per library).
  memory    peak resident memory of drawing 2^20 points from a 2-D model for a plot, each
            library in its own child process.

    python -m benchmarks.run                  # everything (about 25 minutes on 2 CPU cores)
    python -m benchmarks.run --quick          # a smoke run of every section (about 2 minutes)
    python -m benchmarks.run --only coupling --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

import flowforge
from flowforge import datasets, metrics, plot, training

from . import peers

SECTIONS = ("seed", "coupling", "ar64", "memory")
LOC, SCALE, PLANAR_LAYERS, SEED_SAMPLES, ANNEAL = 2.0, 0.1, 16, 40, 10000
BATCH = 512


def libraries() -> list[str]:
    found = ["flowforge"] + [name for name in peers.PEERS if peers.available(name) is not None]
    missing = [name for name in peers.PEERS if name not in found]
    if missing:
        print(f"not installed (skipped): {', '.join(missing)}; pip install -e '.[bench]' adds them")
    return found


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}x" if theirs and math.isfinite(theirs) else "-"


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- seed workload


class SeedLoop:
    """The seed script's model and loop (numpy loss history, the user's Adam), resumable by blocks."""

    def __init__(self, library, seed: int):
        torch.manual_seed(seed)
        flows = [library.flows.Planar((2,)) for _ in range(PLANAR_LAYERS)]
        target = library.distributions.TwoModes(LOC, SCALE)
        self.model = library.NormalizingFlow(q0=library.distributions.DiagGaussian(2), flows=flows, p=target)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, weight_decay=1e-4)
        self.loss_hist = np.array([])
        self.iteration = 0
        self.rates: list[float] = []

    def run(self, steps: int) -> None:
        start = time.perf_counter()
        for it in range(self.iteration, self.iteration + steps):
            self.optimizer.zero_grad()
            loss = self.model.reverse_kld(SEED_SAMPLES, beta=np.min([1.0, 0.01 + it / ANNEAL]))
            loss.backward()
            self.optimizer.step()
            self.loss_hist = np.append(self.loss_hist, loss.to("cpu").data.numpy())
        self.rates.append(steps / (time.perf_counter() - start))
        self.iteration += steps


@torch.no_grad()
def seed_kl(model, log_z: float, num_samples: int = 2**18) -> float:
    """KL(q‖p) = E_q[log q − log p̃] + log Z by Monte Carlo (the same estimator for every library)."""
    x, log_q = model.sample(num_samples)
    return float((log_q - flowforge.distributions.TwoModes(LOC, SCALE).log_prob(x)).mean()) + log_z


def demo_fit(iterations: int, seed: int, compile: str) -> dict:
    """``flowforge demo``'s fit: 16 Planar layers, 40 samples a step, annealing, Adam(1e-3, 1e-4)."""
    torch.manual_seed(seed)
    model = flowforge.presets.PlanarFlow(2, PLANAR_LAYERS, p=flowforge.distributions.TwoModes(LOC, SCALE))
    start = time.perf_counter()
    result = training.fit(
        model, iterations, samples_per_step=SEED_SAMPLES, anneal_iters=ANNEAL, seed=seed, compile=compile,
        progress=False, device="cpu",
    )  # fmt: skip
    wall = time.perf_counter() - start
    log_z = metrics.grid_kl(model, grid_size=400)["log_z_grid"]
    return {
        "rate": result.iterations_per_second, "wall": wall, "compile": result.compile_time,
        "fused": result.fused, "kl": seed_kl(model, log_z), "log_z": log_z,
    }  # fmt: skip


def cold_demo_fit(iterations: int, seed: int, compile: str) -> dict:
    """:func:`demo_fit` in a child process whose temporary directory (inductor's kernel cache and
    precompiled headers live there) is empty: the first run on a fresh machine."""
    with tempfile.TemporaryDirectory() as empty:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TORCHINDUCTOR")}
        env["TMPDIR"] = empty
        command = [sys.executable, "-m", "benchmarks.run", "--probe", "demo-fit", "--iterations", str(iterations),
                   "--block", str(iterations)]  # fmt: skip
        command += ["--seed", str(seed), "--compile", compile]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def seed_section(args, libs: list[str]) -> None:
    iterations, block = (400, 200) if args.quick else (args.iterations, args.block)
    normflows = peers.available("normflows") if "normflows" in libs else None
    loops = {"flowforge": SeedLoop(flowforge, args.seed)}
    if normflows is not None:
        loops["normflows"] = SeedLoop(normflows, args.seed)
    for _ in range(iterations // block):
        for loop in loops.values():
            loop.run(block)
    warm = demo_fit(iterations, args.seed, "auto")
    cold = cold_demo_fit(iterations, args.seed, "auto") if not args.no_cold else None
    log_z = warm["log_z"]
    reference = statistics.median(loops["normflows"].rates) if "normflows" in loops else float("nan")
    reference_wall = iterations / reference
    rows = []
    for name, loop in loops.items():
        rate = statistics.median(loop.rates)
        wall = iterations / rate
        kl = seed_kl(loop.model, log_z)
        rows.append([f"{name}: the seed script's loop", f"{rate:.0f}", f"{wall:.1f}", "0.0", f"{kl:.3f}",
                     ratio(rate, reference), ratio(reference_wall, wall)])  # fmt: skip
    for label, fit in (("warm", warm), ("cold", cold)):
        if fit is None:
            continue
        rows.append([f"flowforge: `training.fit` as `flowforge demo`, {label} compile cache", f"{fit['rate']:.0f}",
                     f"{fit['wall']:.1f}", f"{fit['compile']:.1f}", f"{fit['kl']:.3f}", ratio(fit["rate"], reference),
                     ratio(reference_wall, fit["wall"])])  # fmt: skip
    table(
        f"Seed workload: Planar x16, reverse KL, 40 samples/step, {iterations} steps (blocks of {block})",
        ["contender", "it/s", "wall s", "compile s", "KL(q‖p)", "it/s vs normflows", "normflows wall / wall"],
        rows,
    )


# ----------------------------------------------------------------------------- training and throughput


def data_64(num_samples: int, seed: int) -> torch.Tensor:
    """A fixed non-Gaussian 64-D table: a random linear mix of Gaussian and bent coordinates."""
    generator = torch.Generator().manual_seed(1234)
    mixing = torch.randn(64, 64, generator=generator) / 8.0
    z = torch.randn(num_samples, 64, generator=torch.Generator().manual_seed(seed))
    return (z + 0.5 * torch.sin(2.0 * z.roll(1, 1))) @ mixing + 0.3 * z


def train_one(library: str, build, train_data, test_data, steps: int, warmup: int, seed: int, compile: str) -> dict:
    torch.manual_seed(seed)
    contender = build(library)
    if library == "flowforge":
        result = training.fit(
            contender.model, warmup + steps, loss="forward_kl", data=train_data, samples_per_step=BATCH,
            seed=seed, compile=compile, progress=False, device="cpu",
        )  # fmt: skip
        rate, compile_time = result.iterations_per_second, result.compile_time
    else:
        step = contender.trainer()
        generator = torch.Generator().manual_seed(seed)

        def batch() -> torch.Tensor:
            return train_data[torch.randint(0, train_data.shape[0], (BATCH,), generator=generator)]

        for _ in range(warmup):
            step(batch())
        start = time.perf_counter()
        for _ in range(steps):
            step(batch())
        rate, compile_time = steps / (time.perf_counter() - start), 0.0
    with torch.no_grad():
        nll = float(-contender.log_prob(test_data).mean())
    return {"rate": rate, "compile": compile_time, "nll": nll, "contender": contender}


def throughput(contender, what: str, batch: int, dim: int) -> float:
    """Samples per second of ``log_prob`` or ``sample`` at ``batch`` under ``torch.no_grad()``."""
    x = torch.randn(batch, dim)
    with torch.no_grad():
        start = time.perf_counter()
        contender.log_prob(x) if what == "density" else contender.sample(batch)
        return batch / (time.perf_counter() - start)


def training_section(args, libs, title, builders, dim, train_data, test_data, steps, throughput_batch=None) -> None:
    warmup = 5 if args.quick else 20
    for model_name, build in builders.items():
        runs: dict[str, list[dict]] = {lib: [] for lib in libs}
        speeds: dict[str, dict[str, list[float]]] = {lib: {"density": [], "sample": []} for lib in libs}
        for repeat in range(args.repeats):
            order = libs[repeat % len(libs) :] + libs[: repeat % len(libs)]
            for lib in order:
                run = train_one(lib, build, train_data, test_data, steps, warmup, args.seed + repeat, args.compile)
                runs[lib].append(run)
                if throughput_batch:
                    density_batch, sample_batch = throughput_batch
                    speeds[lib]["density"].append(throughput(run["contender"], "density", density_batch, dim))
                    if repeat < args.sample_repeats:
                        speeds[lib]["sample"].append(throughput(run["contender"], "sample", sample_batch, dim))
        rates = {lib: statistics.median(r["rate"] for r in runs[lib]) for lib in libs}
        fastest_peer = max((rates[lib] for lib in libs if lib != "flowforge"), default=float("nan"))
        rows = []
        for lib in libs:
            parameters = sum(p.numel() for p in runs[lib][0]["contender"].model.parameters() if p.requires_grad)
            nll = statistics.mean(r["nll"] for r in runs[lib])
            versus = ratio(rates["flowforge"], rates[lib]) if lib != "flowforge" else "-"
            row = [lib, f"{parameters}", f"{rates[lib]:.1f}", versus, f"{runs[lib][0]['compile']:.1f}", f"{nll:.3f}"]
            if throughput_batch:
                for what in ("density", "sample"):
                    value = statistics.median(speeds[lib][what])
                    mine = statistics.median(speeds["flowforge"][what])
                    row += [f"{value:,.0f}", ratio(mine, value) if lib != "flowforge" else "-"]
            rows.append(row)
        header = [
            "library",
            "parameters",
            "train it/s",
            "flowforge / it",
            "compile s",
            f"test NLL after {warmup + steps} steps",
        ]
        if throughput_batch:
            header += [f"log_prob /s (batch {throughput_batch[0]:,})", "flowforge / it",
                       f"sample /s (batch {throughput_batch[1]:,})", "flowforge / it"]  # fmt: skip
        table(
            f"{title}: {model_name} (batch {BATCH}, {steps} timed steps x {args.repeats} repeats, medians)",
            header,
            rows,
        )
        print(f"\nflowforge / fastest peer, training: {ratio(rates['flowforge'], fastest_peer)}")


def coupling_section(args, libs) -> None:
    steps = 10 if args.quick else args.steps_2d
    train_data = datasets.two_moons(20000, seed=0)
    test_data = datasets.two_moons(5000, seed=1)
    builders = {"affine coupling x8": peers.affine_coupling, "RQ-spline coupling x8": peers.spline_coupling}
    training_section(args, libs, "2-D two-moons, forward KL", builders, 2, train_data, test_data, steps)


def ar64_section(args, libs) -> None:
    steps = 5 if args.quick else args.steps_64d
    train_data, test_data = data_64(50000, seed=0), data_64(10000, seed=1)
    builders = {
        "MAF x4": lambda lib: peers.autoregressive(lib, "affine"),
        "autoregressive NSF x4": lambda lib: peers.autoregressive(lib, "spline"),
    }
    batch = (1000, 100) if args.quick else (args.density_batch, args.sample_batch)
    training_section(args, libs, "64-D, forward KL", builders, 64, train_data, test_data, steps, batch)


# ----------------------------------------------------------------------------- memory


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise OSError(f"{field} not in /proc/self/status")


def reset_peak_rss_mb() -> float:
    """Reset the process's peak resident set (Linux: ``/proc/self/clear_refs``) and return the current
    one; elsewhere the lifetime peak so far."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    try:
        return _status_mb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_probe(library: str, model_kind: str, how: str, count: int) -> dict:
    """In a fresh process: build the model, then report the peak memory that drawing ``count``
    points adds (resident set, MB) and the wall time."""
    torch.manual_seed(0)
    if model_kind == "planar":
        lib = flowforge if library == "flowforge" else peers.available(library)
        flows = [lib.flows.Planar((2,)) for _ in range(PLANAR_LAYERS)]
        model = lib.NormalizingFlow(lib.distributions.DiagGaussian(2), flows, lib.distributions.TwoModes(LOC, SCALE))
        sample = lambda n: model.sample(n)[0]  # noqa: E731
    else:
        contender = peers.affine_coupling(library)
        model, sample = contender.model, contender.sample
    sample(1000)
    before = reset_peak_rss_mb()
    start = time.perf_counter()
    bounds = ((-3.0, 3.0), (-3.0, 3.0))
    if how == "plot helper":
        plot.sample_histogram(model, count, bounds, 200)
    else:
        with torch.no_grad() if how == "no_grad" else contextlib.nullcontext():
            plot.histogram2d(sample(count).detach(), bounds, 200)
    return {"peak_mb": peak_rss_mb() - before, "seconds": time.perf_counter() - start}


def memory_section(args, libs) -> None:
    count = 2**14 if args.quick else 2**20
    rows = []
    cases = [("planar", lib) for lib in libs if lib in ("flowforge", "normflows")]
    cases += [("affine", lib) for lib in libs]
    for model_kind, lib in cases:
        hows = ["as the seed writes it", "no_grad"] + (["plot helper"] if lib == "flowforge" else [])
        for how in hows:
            command = [sys.executable, "-m", "benchmarks.run", "--probe", "memory", "--library", lib,
                       "--model", model_kind, "--how", how, "--count", str(count)]  # fmt: skip
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            probe = json.loads(output.strip().splitlines()[-1])
            label = "Planar x16 (seed)" if model_kind == "planar" else "affine coupling x8"
            rows.append([label, lib, how, f"{probe['peak_mb']:.0f}", f"{probe['seconds']:.2f}"])
    table(f"Peak memory of drawing {count:,} points of a 2-D model for a plot (child process each)",
          ["model", "library", "call", "added peak RSS MB", "seconds"], rows)  # fmt: skip


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="a smoke run of every section")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20000, help="seed workload steps")
    parser.add_argument("--block", type=int, default=1000, help="seed loops alternate in blocks of this many steps")
    parser.add_argument("--steps-2d", type=int, default=500)
    parser.add_argument("--steps-64d", type=int, default=200)
    parser.add_argument("--density-batch", type=int, default=100_000)
    parser.add_argument("--sample-batch", type=int, default=10_000, help="64-D sampling (D passes a layer)")
    parser.add_argument("--sample-repeats", type=int, default=1, help="repeats that also time sampling")
    parser.add_argument(
        "--compile", default="on", choices=training.COMPILE_MODES, help="flowforge's training fits (the seed fit: auto)"
    )
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache demo fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--same-process", action="store_true", help="run the sections in this process, not one fresh process each"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe", choices=("demo-fit", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--how", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block < 1 or args.iterations % args.block:
        parser.error("--iterations must be a positive multiple of --block")
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.probe == "demo-fit":
        print(json.dumps(demo_fit(args.iterations, args.seed, args.compile)))
        return
    if args.probe == "memory":
        print(json.dumps(memory_probe(args.library, args.model, args.how, args.count)))
        return
    if args.quick:
        args.repeats, args.sample_repeats = 1, 1
    with contextlib.redirect_stdout(io.StringIO()) if args.child else contextlib.nullcontext():
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, flowforge {flowforge.__version__}")
        libs = libraries()
        for name in libs[1:]:
            module = peers.available(name)
            print(f"{name} {getattr(module, '__version__', '(version unknown)')}")
    sections = {"seed": seed_section, "coupling": coupling_section, "ar64": ar64_section, "memory": memory_section}
    chosen = [name for name in SECTIONS if name in args.only]
    if len(chosen) == 1 or args.same_process:
        for name in chosen:
            sections[name](args, libs)
        return
    # One fresh process a section: a section's speed must not depend on what ran before it in the
    # process (heap state, compiled graphs, caches); in one process the 2-D figures moved by 1.5x.
    sys.stdout.flush()
    for name in chosen:
        command = [sys.executable, "-m", "benchmarks.run", *_argv_without_only(sys.argv[1:]), "--child", "--only", name]
        subprocess.run(command, check=True)


def _argv_without_only(argv: list[str]) -> list[str]:
    """The command line with its ``--only`` option and that option's values removed."""
    kept, skipping = [], False
    for token in argv:
        if token.startswith("--only"):
            skipping = "=" not in token
            continue
        if skipping and not token.startswith("-"):
            continue
        skipping = False
        kept.append(token)
    return kept


if __name__ == "__main__":
    main()
