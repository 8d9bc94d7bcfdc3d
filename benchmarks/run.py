"""The speed suite: flowforge beside normflows, zuko and nflows (whichever are installed:
``pip install -e ".[bench]"``) on identical workloads, in one process run, repeats alternating
between libraries. Prints markdown tables of medians, flowforge/peer ratios and final quality.

Sections (``--only`` picks some):
  seed      the seed workload (Planar x16, TwoModes, reverse KL annealed over 10000 of 20000
            steps, 40 samples a step): the seed script's own loop on normflows and on
            flowforge (alternating blocks), and ``flowforge.training.fit`` as ``flowforge demo``
            runs it (compile="auto"), with inductor's cache warm (in this process) and cold (a
            child process with an empty temporary directory); quality is KL(q‖p).
  readme    normflows' README example (Real NVP x32 on TwoMoons) trained by its notebook's loop, as
            its users write it: normflows, flowforge (``import flowforge as nf``), and the same
            network in plain PyTorch with no flow library (the floor for eager layers).
  coupling  forward KL, batch 512, two-moons: affine coupling x8 and RQ-spline coupling x8
            (MLP 2x64); training iterations/s and test NLL after the same number of steps.
  ar64      the same in 64 dimensions with MAF and autoregressive NSF (4 layers, MADE 2x128),
            plus density evaluation throughput at batch 10^5 and sampling throughput at batch
            10^4 (sampling takes 64 passes a layer: NSF at 10^5 would take minutes per library).
  memory    peak resident memory of drawing 2^20 points from a 2-D model for a plot, each
            library in its own child process (on CUDA: peak CUDA memory allocated).
  demo      wall time of the whole command ``python -m flowforge demo`` (a fresh process and run
            folder each time) against the seed workflow as a normflows user writes it (a script:
            the same loop, a 2^20-point ``hist2d`` PNG every 200 steps and the three pictures).

Conditions (``--conditions``, default both): every section measures its figures on a quiet machine
and with one busy process (``python -c 'while True: pass'``) per core beyond the first running
beside the measurement, as users' machines often are. The conditions alternate (in blocks or
repeats), the libraries alternate inside each condition, and every flowforge/peer ratio compares
figures of the same condition. ``--device cuda`` runs every section on the GPU, synchronising
before each clock reading (``benchmarks/gpu.sh``: the GPU set in under 5 minutes).

    python -m benchmarks.run                  # everything, both conditions (over an hour on 2 CPU cores:
                                              # seed alone took 12 minutes, demo 10 with --demo-repeats 1)
    python -m benchmarks.run --quick          # a smoke run of every section
    python -m benchmarks.run --only demo --conditions busy
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
import signal
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

SECTIONS = ("seed", "readme", "coupling", "ar64", "memory", "demo")
LOC, SCALE, PLANAR_LAYERS, SEED_SAMPLES, ANNEAL = 2.0, 0.1, 16, 40, 10000
BATCH = 512


def libraries(chosen: list[str] | None = None) -> list[str]:
    """flowforge and the installed peers (of ``chosen`` when given)."""
    wanted = [name for name in peers.PEERS if chosen is None or name in chosen]
    found = ["flowforge"] + [name for name in wanted if peers.available(name) is not None]
    missing = [name for name in wanted if name not in found]
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


# ----------------------------------------------------------------------------- conditions and clocks

CONDITIONS = ("quiet", "busy")


def busy_processes(condition: str) -> int:
    """Busy loops beside the measurement: none when quiet, one per core beyond the first when busy."""
    return 0 if condition == "quiet" else max((os.cpu_count() or 1) - 1, 1)


def condition_label(condition: str) -> str:
    count = busy_processes(condition)
    return "quiet" if count == 0 else f"busy ({count} busy process{'es' if count > 1 else ''})"


@contextlib.contextmanager
def condition(name: str):
    """Run the block in condition ``name``: with :func:`busy_processes` ``python -c 'while True: pass'``
    loops started beside it (and given half a second to take their cores), killed after."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy_processes(name))]
    try:
        if loops:
            time.sleep(0.5)
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def alternate(items: list, index: int) -> list:
    """``items`` in order on even ``index``, reversed on odd: alternation between blocks or repeats."""
    return list(items) if index % 2 == 0 else list(reversed(items))


def rotate(items: list, index: int) -> list:
    return items[index % len(items) :] + items[: index % len(items)]


def now(device: str = "cpu") -> float:
    """The clock, read after the device's queued work has finished (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def spread(values: list[float], digits: int = 1) -> str:
    """The median of ``values``, with their range when there are several."""
    middle = f"{statistics.median(values):.{digits}f}"
    return middle if len(values) < 2 else f"{middle} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


# ----------------------------------------------------------------------------- seed workload


class SeedLoop:
    """The seed script's model and loop (numpy loss history, the user's Adam), resumable by blocks."""

    def __init__(self, library, seed: int, device: str = "cpu"):
        torch.manual_seed(seed)
        flows = [library.flows.Planar((2,)) for _ in range(PLANAR_LAYERS)]
        target = library.distributions.TwoModes(LOC, SCALE)
        self.model = library.NormalizingFlow(q0=library.distributions.DiagGaussian(2), flows=flows, p=target)
        self.model.to(device)
        self.device = device
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, weight_decay=1e-4)
        self.loss_hist = np.array([])
        self.iteration = 0
        self.rates: list[float] = []

    def run(self, steps: int) -> None:
        start = now(self.device)
        for it in range(self.iteration, self.iteration + steps):
            self.optimizer.zero_grad()
            loss = self.model.reverse_kld(SEED_SAMPLES, beta=np.min([1.0, 0.01 + it / ANNEAL]))
            loss.backward()
            self.optimizer.step()
            self.loss_hist = np.append(self.loss_hist, loss.to("cpu").data.numpy())
        self.rates.append(steps / (now(self.device) - start))
        self.iteration += steps


@torch.no_grad()
def seed_kl(model, log_z: float, num_samples: int = 2**18) -> float:
    """KL(q‖p) = E_q[log q − log p̃] + log Z by Monte Carlo (the same estimator for every library)."""
    x, log_q = model.sample(num_samples)
    return float((log_q - flowforge.distributions.TwoModes(LOC, SCALE).log_prob(x)).mean()) + log_z


def demo_fit(iterations: int, seed: int, compile: str, device: str = "cpu") -> dict:
    """``flowforge demo``'s fit: 16 Planar layers, 40 samples a step, annealing, Adam(1e-3, 1e-4)."""
    torch.manual_seed(seed)
    model = flowforge.presets.PlanarFlow(2, PLANAR_LAYERS, p=flowforge.distributions.TwoModes(LOC, SCALE))
    start = now(device)
    result = training.fit(
        model, iterations, samples_per_step=SEED_SAMPLES, anneal_iters=ANNEAL, seed=seed, compile=compile,
        progress=False, device=device,
    )  # fmt: skip
    wall = now(device) - start
    log_z = metrics.grid_kl(model, grid_size=400)["log_z_grid"]
    return {
        "rate": result.iterations_per_second, "wall": wall, "compile": result.compile_time,
        "fused": result.fused, "kl": seed_kl(model, log_z), "log_z": log_z,
    }  # fmt: skip


def cold_demo_fit(iterations: int, seed: int, compile: str, device: str = "cpu") -> dict:
    """:func:`demo_fit` in a child process whose temporary directory (inductor's kernel cache and
    precompiled headers live there) is empty: the first run on a fresh machine."""
    with tempfile.TemporaryDirectory() as empty:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TORCHINDUCTOR")}
        env["TMPDIR"] = empty
        command = [sys.executable, "-m", "benchmarks.run", "--probe", "demo-fit", "--iterations", str(iterations),
                   "--block", str(iterations)]  # fmt: skip
        command += ["--seed", str(seed), "--compile", compile, "--device", device]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run_in_blocks(loops: dict[str, dict], iterations: int, block: int) -> None:
    """Run every ``loops[condition][contender]`` (an object with ``run(steps)``) for ``iterations`` steps in
    blocks of ``block``: blocks alternate between the conditions, and inside each condition between the
    contenders, in reversed order every other block."""
    for index in range(iterations // block):
        for name in alternate(list(loops), index):
            with condition(name):
                for loop in alternate(list(loops[name].values()), index):
                    loop.run(block)


def seed_section(args, libs: list[str]) -> None:
    iterations, block = (400, 200) if args.quick else (args.iterations, args.block)
    normflows = peers.available("normflows") if "normflows" in libs else None
    loops: dict[str, dict[str, SeedLoop]] = {}
    for name in args.conditions:
        loops[name] = {"flowforge": SeedLoop(flowforge, args.seed, args.device)}
        if normflows is not None:
            loops[name]["normflows"] = SeedLoop(normflows, args.seed, args.device)
    run_in_blocks(loops, iterations, block)
    if not args.quick and args.compile == "on":
        demo_fit(block, args.seed, "on", args.device)  # fills inductor's cache: every "warm" fit below finds it
    fits: dict[str, dict[str, dict | None]] = {name: {} for name in args.conditions}
    for name in args.conditions:
        with condition(name):
            fits[name]["warm"] = demo_fit(iterations, args.seed, "auto", args.device)
            cold = None if args.no_cold else cold_demo_fit(iterations, args.seed, "auto", args.device)
            fits[name]["cold"] = cold
    log_z = fits[args.conditions[0]]["warm"]["log_z"]
    rows, summary = [], []
    for name in args.conditions:
        rates = loops[name]["normflows"].rates if "normflows" in loops[name] else []
        reference = statistics.median(rates) if rates else float("nan")
        reference_wall = iterations / reference
        for library, loop in loops[name].items():
            rate = statistics.median(loop.rates)
            wall = iterations / rate
            kl = seed_kl(loop.model, log_z)
            rows.append([condition_label(name), f"{library}: the seed script's loop", f"{rate:.0f}", f"{wall:.1f}",
                         "0.0", f"{kl:.3f}", ratio(rate, reference), ratio(reference_wall, wall)])  # fmt: skip
        if "normflows" in loops[name]:
            per_block = [mine / theirs for mine, theirs in zip(loops[name]["flowforge"].rates, rates, strict=True)]
            summary.append(f"{name}: {ratio(statistics.median(loops[name]['flowforge'].rates), reference)} "
                           f"(blocks: {min(per_block):.2f}x to {max(per_block):.2f}x)")  # fmt: skip
        for label, fit in (("warm", fits[name]["warm"]), ("cold", fits[name]["cold"])):
            if fit is None:
                continue
            rows.append([condition_label(name), f"flowforge: `training.fit` as `flowforge demo`, {label} compile cache",
                         f"{fit['rate']:.0f}", f"{fit['wall']:.1f}", f"{fit['compile']:.1f}", f"{fit['kl']:.3f}",
                         ratio(fit["rate"], reference), ratio(reference_wall, fit["wall"])])  # fmt: skip
    table(
        f"Seed workload on {args.device}: Planar x16, reverse KL, 40 samples/step, {iterations} steps "
        f"(blocks of {block}, conditions alternating)",
        ["condition", "contender", "it/s", "wall s", "compile s", "KL(q‖p)", "it/s vs normflows",
         "normflows wall / wall"],
        rows,
    )  # fmt: skip
    if summary:
        print(f"\nflowforge / normflows, the seed script's loop (it/s): {'; '.join(summary)}")


# ----------------------------------------------------------------------------- normflows' README example

README_LAYERS, README_BATCH = 32, 2**9


class ReadmeLoop:
    """normflows' README example (Real NVP: 32 affine coupling blocks on ``MLP([1, 64, 64, 2],
    init_zeros=True)``, each followed by a swap, on a diagonal Gaussian) trained on TwoMoons by the
    loop of its notebook ``real_nvp_colab.ipynb`` (Adam 5e-4, weight decay 1e-5, 512 target samples
    a step, the NaN/inf guard, a numpy loss history), without its plots; resumable by blocks.
    ``library`` is ``normflows`` or ``flowforge`` (the same script with ``import flowforge as nf``)."""

    def __init__(self, library, seed: int, device: str = "cpu"):
        torch.manual_seed(seed)
        nf = library
        flows = []
        for _ in range(README_LAYERS):
            flows.append(nf.flows.AffineCouplingBlock(nf.nets.MLP([1, 64, 64, 2], init_zeros=True)))
            flows.append(nf.flows.Permute(2, mode="swap"))
        self.model = nf.NormalizingFlow(nf.distributions.base.DiagGaussian(2), flows).to(device)
        self.target = nf.distributions.TwoMoons()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=5e-4, weight_decay=1e-5)
        self.device, self.loss_hist, self.rates = device, np.array([]), []

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_kld(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob(x)

    def run(self, steps: int) -> None:
        start = now(self.device)
        for _ in range(steps):
            self.optimizer.zero_grad()
            x = self.target.sample(README_BATCH).to(self.device)
            loss = self.loss(x)
            if ~(torch.isnan(loss) | torch.isinf(loss)):
                loss.backward()
                self.optimizer.step()
            self.loss_hist = np.append(self.loss_hist, loss.to("cpu").data.numpy())
        self.rates.append(steps / (now(self.device) - start))


class PlainReadmeLoop(ReadmeLoop):
    """The same network, loss, optimizer and loop in plain PyTorch, with no flow library: ``nn.Sequential``
    conditioners, the couplings and swaps written out, targets drawn by flowforge's TwoMoons. What
    any library's eager layers can at best approach: the matrix products, activations, autograd
    and the user's Adam (single-tensor on CPU) all stay."""

    def __init__(self, seed: int, device: str = "cpu"):
        torch.manual_seed(seed)
        nets = []
        for _ in range(README_LAYERS):
            net = torch.nn.Sequential(
                torch.nn.Linear(1, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                torch.nn.Linear(64, 2),
            )  # fmt: skip
            torch.nn.init.zeros_(net[-1].weight)
            torch.nn.init.zeros_(net[-1].bias)
            nets.append(net)
        self.model = torch.nn.ModuleList(nets).to(device)
        self.target = flowforge.distributions.TwoMoons()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=5e-4, weight_decay=1e-5)
        self.device, self.loss_hist, self.rates = device, np.array([]), []

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        log_det = x.new_zeros(x.shape[0])
        for net in reversed(self.model):
            kept, moved = x[:, 1:], x[:, :1]  # undo the swap: the coupling's output was [kept, moved]
            params = net(kept)
            shift, log_scale = params[:, :1], params[:, 1:]
            x = torch.cat([kept, (moved - shift) * torch.exp(-log_scale)], 1)
            log_det = log_det - log_scale.sum(1)
        return log_det - 0.5 * (x * x).sum(1) - math.log(2 * math.pi)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(x).mean()


def readme_section(args, libs: list[str]) -> None:
    iterations, block = (40, 20) if args.quick else (args.readme_iterations, args.readme_block)
    normflows = peers.available("normflows") if "normflows" in libs else None
    loops: dict[str, dict[str, ReadmeLoop]] = {}
    for name in args.conditions:
        loops[name] = {"flowforge": ReadmeLoop(flowforge, args.seed, args.device)}
        if normflows is not None:
            loops[name]["normflows"] = ReadmeLoop(normflows, args.seed, args.device)
        loops[name]["plain PyTorch"] = PlainReadmeLoop(args.seed, args.device)
    run_in_blocks(loops, iterations, block)
    torch.manual_seed(args.seed + 1)
    test = flowforge.distributions.TwoMoons().sample(10000).to(args.device)  # the density both libraries define
    rows, summary = [], []
    for name in args.conditions:
        rates = loops[name]["normflows"].rates if "normflows" in loops[name] else []
        reference = statistics.median(rates) if rates else float("nan")
        for contender, loop in loops[name].items():
            with torch.no_grad():
                nll = float(-loop.log_prob(test).mean())
            rate = statistics.median(loop.rates)
            rows.append([condition_label(name), contender, f"{rate:.1f}", ratio(rate, reference), f"{nll:.3f}"])
        if rates:
            per_block = [mine / theirs for mine, theirs in zip(loops[name]["flowforge"].rates, rates, strict=True)]
            floor = statistics.median(loops[name]["plain PyTorch"].rates)
            summary.append(
                f"{name}: flowforge {ratio(statistics.median(loops[name]['flowforge'].rates), reference)} "
                f"(blocks {min(per_block):.2f}x to {max(per_block):.2f}x), plain PyTorch {ratio(floor, reference)}"
            )
    table(
        f"normflows' README example on {args.device}: Real NVP x{README_LAYERS}, forward KL on TwoMoons, batch "
        f"{README_BATCH}, the notebook's loop, {iterations} steps (blocks of {block}, alternating)",
        ["condition", "contender", "it/s", "it/s vs normflows", "NLL of 10^4 target samples"],
        rows,
    )
    if summary:
        print(f"\nit/s against normflows': {'; '.join(summary)}")


# ----------------------------------------------------------------------------- training and throughput


def data_64(num_samples: int, seed: int) -> torch.Tensor:
    """A fixed non-Gaussian 64-D table: a random linear mix of Gaussian and bent coordinates."""
    generator = torch.Generator().manual_seed(1234)
    mixing = torch.randn(64, 64, generator=generator) / 8.0
    z = torch.randn(num_samples, 64, generator=torch.Generator().manual_seed(seed))
    return (z + 0.5 * torch.sin(2.0 * z.roll(1, 1))) @ mixing + 0.3 * z


def train_one(library: str, build, train_data, test_data, steps: int, warmup: int, seed: int, compile: str,
              device: str = "cpu") -> dict:  # fmt: skip
    torch.manual_seed(seed)
    contender = build(library)
    if library == "flowforge":
        result = training.fit(
            contender.model, warmup + steps, loss="forward_kl", data=train_data, samples_per_step=BATCH,
            seed=seed, compile=compile, progress=False, device=device,
        )  # fmt: skip
        rate, compile_time = result.iterations_per_second, result.compile_time
    else:
        contender.model.to(device)
        step = contender.trainer()
        generator = torch.Generator().manual_seed(seed)

        def batch() -> torch.Tensor:
            return train_data[torch.randint(0, train_data.shape[0], (BATCH,), generator=generator)]

        for _ in range(warmup):
            step(batch())
        start = now(device)
        for _ in range(steps):
            step(batch())
        rate, compile_time = steps / (now(device) - start), 0.0
    with torch.no_grad():
        nll = float(-contender.log_prob(test_data).mean())
    return {"rate": rate, "compile": compile_time, "nll": nll, "contender": contender}


def throughput(contender, what: str, batch: int, dim: int, device: str = "cpu") -> float:
    """Samples per second of ``log_prob`` or ``sample`` at ``batch`` under ``torch.no_grad()``."""
    x = torch.randn(batch, dim, device=device)
    with torch.no_grad():
        start = now(device)
        contender.log_prob(x) if what == "density" else contender.sample(batch)
        return batch / (now(device) - start)


def training_section(args, libs, title, builders, dim, train_data, test_data, steps, throughput_batch=None) -> None:
    warmup = 2 if args.quick else 20
    train_data, test_data = train_data.to(args.device), test_data.to(args.device)
    conditions = list(args.conditions)
    for model_name, build in builders.items():
        runs = {name: {lib: [] for lib in libs} for name in conditions}
        speeds = {name: {lib: {"density": [], "sample": []} for lib in libs} for name in conditions}
        for repeat in range(args.repeats):
            for name in alternate(conditions, repeat):
                with condition(name):
                    for lib in rotate(libs, repeat):
                        run = train_one(lib, build, train_data, test_data, steps, warmup, args.seed + repeat,
                                        args.compile, args.device)  # fmt: skip
                        runs[name][lib].append(run)
                        if throughput_batch:
                            density_batch, sample_batch = throughput_batch
                            speed = speeds[name][lib]
                            speed["density"].append(throughput(run["contender"], "density", density_batch, dim,
                                                               args.device))  # fmt: skip
                            if repeat < args.sample_repeats:
                                speed["sample"].append(throughput(run["contender"], "sample", sample_batch, dim,
                                                                  args.device))  # fmt: skip
        rows, summary = [], []
        for name in conditions:
            rates = {lib: statistics.median(r["rate"] for r in runs[name][lib]) for lib in libs}
            peer_libs = [lib for lib in libs if lib != "flowforge"]
            fastest_peer = max((rates[lib] for lib in peer_libs), default=float("nan"))
            for lib in libs:
                first = runs[name][lib][0]["contender"]
                parameters = sum(p.numel() for p in first.model.parameters() if p.requires_grad)
                nll = statistics.mean(r["nll"] for r in runs[name][lib])
                versus = ratio(rates["flowforge"], rates[lib]) if lib != "flowforge" else "-"
                compile_s = runs[name][lib][0]["compile"]
                row = [condition_label(name), lib, f"{parameters}", f"{rates[lib]:.1f}", versus, f"{compile_s:.1f}",
                       f"{nll:.3f}"]  # fmt: skip
                if throughput_batch:
                    for what in ("density", "sample"):
                        value = statistics.median(speeds[name][lib][what])
                        mine = statistics.median(speeds[name]["flowforge"][what])
                        row += [f"{value:,.0f}", ratio(mine, value) if lib != "flowforge" else "-"]
                rows.append(row)
            # One ratio a repeat: flowforge against the fastest peer of that same repeat and condition.
            per_repeat = [
                runs[name]["flowforge"][r]["rate"] / max(runs[name][lib][r]["rate"] for lib in peer_libs)
                for r in range(args.repeats)
            ] if peer_libs else []  # fmt: skip
            repeats = f" (repeats: {', '.join(f'{x:.2f}x' for x in per_repeat)})" if per_repeat else ""
            summary.append(f"{name} {ratio(rates['flowforge'], fastest_peer)}{repeats}")
        header = [
            "condition",
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
            f"{title}: {model_name} on {args.device} (batch {BATCH}, {steps} timed steps x {args.repeats} repeats, "
            "medians)",
            header,
            rows,
        )
        print(f"\nflowforge / fastest peer, training: {'; '.join(summary)}")


def coupling_section(args, libs) -> None:
    steps = 10 if args.quick else args.steps_2d
    train_data = datasets.two_moons(20000, seed=0)
    test_data = datasets.two_moons(5000, seed=1)
    builders = {"affine coupling x8": peers.affine_coupling, "RQ-spline coupling x8": peers.spline_coupling}
    builders = {
        name: build for name, build in builders.items() if ("spline" if "spline" in name else "affine") in args.kinds
    }
    training_section(args, libs, "2-D two-moons, forward KL", builders, 2, train_data, test_data, steps)


def ar64_section(args, libs) -> None:
    steps = 3 if args.quick else args.steps_64d
    train_data, test_data = data_64(50000, seed=0), data_64(1000 if args.quick else 10000, seed=1)
    builders = {
        "MAF x4": lambda lib: peers.autoregressive(lib, "affine"),
        "autoregressive NSF x4": lambda lib: peers.autoregressive(lib, "spline"),
    }
    builders = {
        name: build for name, build in builders.items() if ("spline" if "NSF" in name else "affine") in args.kinds
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


def memory_probe(library: str, model_kind: str, how: str, count: int, device: str = "cpu") -> dict:
    """In a fresh process: build the model, then report the peak memory that drawing ``count``
    points adds (resident set, MB; on CUDA the peak CUDA memory allocated) and the wall time."""
    torch.manual_seed(0)
    if model_kind == "planar":
        lib = flowforge if library == "flowforge" else peers.available(library)
        flows = [lib.flows.Planar((2,)) for _ in range(PLANAR_LAYERS)]
        model = lib.NormalizingFlow(lib.distributions.DiagGaussian(2), flows, lib.distributions.TwoModes(LOC, SCALE))
        sample = lambda n: model.sample(n)[0]  # noqa: E731
    else:
        contender = peers.affine_coupling(library)
        model, sample = contender.model, contender.sample
    model.to(device)
    sample(1000)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        before = reset_peak_rss_mb()
    start = now(device)
    bounds = ((-3.0, 3.0), (-3.0, 3.0))
    if how == "plot helper":
        plot.sample_histogram(model, count, bounds, 200)
    else:
        with torch.no_grad() if how == "no_grad" else contextlib.nullcontext():
            plot.histogram2d(sample(count).detach(), bounds, 200)
    seconds = now(device) - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mb()
    return {"peak_mb": peak - before, "seconds": seconds}


def memory_section(args, libs) -> None:
    count = 2**14 if args.quick else 2**20
    cases = [("planar", lib) for lib in libs if lib in ("flowforge", "normflows")]
    cases += [("affine", lib) for lib in libs]
    cases = [
        (kind, lib, how)
        for kind, lib in cases
        for how in ["as the seed writes it", "no_grad"] + (["plot helper"] if lib == "flowforge" else [])
    ]
    if args.quick:  # a smoke run: one call a model and library (each a fresh process), every call once at least
        hows = ["as the seed writes it", "no_grad", "plot helper"]
        pairs = list(dict.fromkeys((kind, lib) for kind, lib, _ in cases))
        wanted = {
            (kind, lib, hows[index % (3 if lib == "flowforge" else 2)]) for index, (kind, lib) in enumerate(pairs)
        }
        cases = [case for case in cases if case in wanted]
    results: dict[tuple, dict] = {}
    for index, name in enumerate(args.conditions):
        with condition(name):
            for model_kind, lib, how in alternate(cases, index):
                command = [sys.executable, "-m", "benchmarks.run", "--probe", "memory", "--library", lib]
                command += ["--model", model_kind, "--how", how, "--count", str(count), "--device", args.device]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                results[name, model_kind, lib, how] = json.loads(output.strip().splitlines()[-1])
    rows = []
    for model_kind, lib, how in cases:
        label = "Planar x16 (seed)" if model_kind == "planar" else "affine coupling x8"
        row = [label, lib, how]
        for name in args.conditions:
            probe = results[name, model_kind, lib, how]
            row.append(f"{probe['peak_mb']:.0f} MB, {probe['seconds']:.2f} s")
        rows.append(row)
    what = "added peak CUDA memory" if torch.device(args.device).type == "cuda" else "added peak RSS"
    table(f"Peak memory of drawing {count:,} points of a 2-D model for a plot on {args.device} (child process each)",
          ["model", "library", "call", *(f"{condition_label(name)}: {what}, seconds" for name in args.conditions)],
          rows)  # fmt: skip


# ----------------------------------------------------------------------------- the whole demo command


def demo_sizes(args) -> dict:
    """The demo's sizes: the full seed workflow, or a few steps and small frames with ``--quick``."""
    if args.quick:
        return {"iterations": 200, "anneal": 100, "frame_every": 100, "samples": 2**14}
    iterations = args.demo_iterations
    return {"iterations": iterations, "anneal": iterations // 2, "frame_every": 200, "samples": 2**20}


def flowforge_demo_wall(sizes: dict, seed: int, device: str, quick: bool, compile: str = "auto") -> float:
    """Wall seconds of ``python -m flowforge demo --out <fresh folder> --no-progress`` at ``sizes``."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "flowforge", "demo", "--out", os.path.join(folder, "run"), "--no-progress"]
        if seed != 0:
            command += ["--seed", str(seed)]
        if device != "cpu" or torch.cuda.is_available():  # the command's default device is CUDA when there is one
            command += ["--device", device]
        if compile != "auto":
            command += ["--compile", compile]
        if quick or sizes["iterations"] != 20000:
            command += ["--iterations", str(sizes["iterations"]), "--anneal", str(sizes["anneal"])]
            command += ["--frame-every", str(sizes["frame_every"]), "--frame-samples", str(sizes["samples"])]
        if quick:
            command += ["--eval-samples", "1000", "--kl-grid", "40"]
        start = time.perf_counter()
        run_command(command)
        return time.perf_counter() - start


def normflows_script_wall(sizes: dict, seed: int, device: str) -> float:
    """Wall seconds of the seed workflow written for normflows (:data:`peers.NORMFLOWS_SEED_WORKFLOW`),
    run as ``python script.py`` in a fresh folder."""
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "seed_normflows.py")
        with open(script, "w") as file:
            file.write(peers.normflows_seed_workflow(seed=seed, device=device, **sizes))
        start = time.perf_counter()
        run_command([sys.executable, script], cwd=folder)
        return time.perf_counter() - start


def run_command(command: list[str], **options) -> None:
    """Run ``command`` with its output captured; when it fails, raise with the end of its error output."""
    done = subprocess.run(command, capture_output=True, text=True, **options)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-3000:]}")


def demo_section(args, libs) -> None:
    sizes = demo_sizes(args)
    contenders = {"flowforge demo": lambda: flowforge_demo_wall(sizes, args.seed, args.device, args.quick)}
    if "normflows" in libs:
        contenders["normflows: the seed workflow as a script"] = lambda: normflows_script_wall(
            sizes, args.seed, args.device
        )
    if not args.quick and args.compile == "on":
        # One untimed short compiled run fills inductor's cache: every timed run is a second run on this machine.
        flowforge_demo_wall({**sizes, "iterations": 200, "anneal": 100}, args.seed, args.device, False, "on")
    repeats = 1 if args.quick else args.demo_repeats
    walls = {name: {contender: [] for contender in contenders} for name in args.conditions}
    for repeat in range(repeats):
        for name in alternate(list(args.conditions), repeat):
            with condition(name):
                for contender in alternate(list(contenders), repeat):
                    walls[name][contender].append(contenders[contender]())
    rows, summary = [], []
    for name in args.conditions:
        reference = walls[name].get("normflows: the seed workflow as a script")
        for contender, values in walls[name].items():
            versus = ratio(statistics.median(values), statistics.median(reference)) if reference else "-"
            rows.append([condition_label(name), contender, spread(values), versus])
        if reference:
            mine = walls[name]["flowforge demo"]
            runs = ", ".join(f"{a / b:.2f}" for a, b in zip(mine, reference, strict=True))
            summary.append(f"{name} {statistics.median(mine) / statistics.median(reference):.2f} (runs: {runs})")
    frames = sizes["iterations"] // sizes["frame_every"]
    table(
        f"The whole demo on {args.device}: {sizes['iterations']} steps, {frames} frames of {sizes['samples']:,} points "
        f"and three pictures; a fresh process and folder each run ({repeats} run(s) per condition, alternating)",
        ["condition", "command", "wall s (median [min, max])", "wall / normflows' wall"],
        rows,
    )
    if summary:
        print(f"\nflowforge demo / normflows seed workflow, wall time (target <= 0.33): {'; '.join(summary)}")


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="a smoke run of every section")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20000, help="seed workload steps")
    parser.add_argument("--block", type=int, default=1000, help="seed loops alternate in blocks of this many steps")
    parser.add_argument(
        "--kinds", nargs="+", choices=("affine", "spline"), default=["affine", "spline"],
        help="coupling and ar64: the model kinds to train (affine: affine coupling and MAF; spline: RQ-spline)",
    )  # fmt: skip
    parser.add_argument(
        "--peers", nargs="+", choices=peers.PEERS, help="the peer libraries to measure (default: every installed one)"
    )
    parser.add_argument("--readme-iterations", type=int, default=1000, help="readme section: training steps")
    parser.add_argument("--readme-block", type=int, default=200, help="readme section: steps per alternating block")
    parser.add_argument("--steps-2d", type=int, default=500)
    parser.add_argument("--steps-64d", type=int, default=200)
    parser.add_argument("--density-batch", type=int, default=100_000)
    parser.add_argument("--sample-batch", type=int, default=10_000, help="64-D sampling (D passes a layer)")
    parser.add_argument("--sample-repeats", type=int, default=1, help="repeats that also time sampling")
    parser.add_argument(
        "--compile", default="on", choices=training.COMPILE_MODES, help="flowforge's training fits (the seed fit: auto)"
    )
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache demo fit")
    parser.add_argument(
        "--conditions",
        nargs="+",
        choices=CONDITIONS,
        default=list(CONDITIONS),
        help="quiet machine, and/or one busy process per core beyond the first beside the measurement",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N): where every section runs")
    parser.add_argument("--demo-iterations", type=int, default=20000, help="demo section: training steps")
    parser.add_argument("--demo-repeats", type=int, default=2, help="demo section: runs per condition and command")
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
    # A SIGTERM (benchmarks/gpu.sh's timeout) unwinds like an exception, so the busy loops are killed.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    args.conditions = list(dict.fromkeys(args.conditions))
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.demo_iterations < 200 or args.demo_iterations % 200:
        parser.error("--demo-iterations must be a positive multiple of 200 (a frame every 200 steps)")
    if args.readme_block < 1 or args.readme_iterations % args.readme_block:
        parser.error("--readme-iterations must be a positive multiple of --readme-block")
    if args.block < 1 or args.iterations % args.block:
        parser.error("--iterations must be a positive multiple of --block")
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.probe == "demo-fit":
        print(json.dumps(demo_fit(args.iterations, args.seed, args.compile, args.device)))
        return
    if args.probe == "memory":
        print(json.dumps(memory_probe(args.library, args.model, args.how, args.count, args.device)))
        return
    if args.quick:
        args.repeats, args.sample_repeats = 1, 1
    with contextlib.redirect_stdout(io.StringIO()) if args.child else contextlib.nullcontext():
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
            f"flowforge {flowforge.__version__}, device {args.device}"
            + (f" ({torch.cuda.get_device_name(args.device)})" if torch.device(args.device).type == "cuda" else "")
        )
        print("conditions: " + ", ".join(condition_label(name) for name in args.conditions))
        libs = libraries(args.peers)
        for name in libs[1:]:
            module = peers.available(name)
            print(f"{name} {getattr(module, '__version__', '(version unknown)')}")
    sections = {
        "seed": seed_section,
        "readme": readme_section,
        "coupling": coupling_section,
        "ar64": ar64_section,
        "memory": memory_section,
        "demo": demo_section,
    }
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
