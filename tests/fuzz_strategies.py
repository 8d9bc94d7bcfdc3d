"""What the fuzz suite (``tests/test_fuzz_*.py``) generates, how it runs the command, and what it checks.

Each example is a :class:`Case`: a command line whose paths are relative to a fresh folder (the
example's working directory), the files to put there first (data files, run folders, checkpoints),
and the run folder (``--out``) or output file (``sample -o``) the command may write. :func:`run_case`
writes the files, runs ``flowforge.cli.main(argv)`` in this process (stdout and stderr captured,
warnings recorded as a fresh interpreter would print them) and returns every broken property
(:func:`problems`), so a test asserts that the list is empty and an exploration script can tally it:

- the exit status is 0 or 2, and no exception escapes ``main``;
- status 2: stderr (with any warning) is exactly one line, starting ``flowforge: error: ``;
- stderr never holds a traceback, nor advice to load a checkpoint with ``weights_only=False``;
- no file or folder outside ``--out`` / ``-o`` is created, changed or deleted (inputs included); in an
  ``--out`` that existed before, only the files a run writes may change; no lock or temporary
  ``.partial`` file is left behind, and ``config.json`` never stays ``"running"``;
- status 0 of a run: ``config.json`` says ``"status": "complete"`` and ``metrics.json`` is strict JSON
  (no NaN or Infinity); status 0 of ``sample``: ``-o`` holds ``-n`` finite rows.

Sizes that cost time when valid (iterations, epochs, layers, samples, grids) are always drawn tiny, so a
valid example runs in about a second; huge values (above 2^31), which every size and count must refuse
before anything is allocated or run, are drawn for every integer option.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from flowforge.cli import main
from flowforge.cli.models import BASES, TABLE_FLOWS
from flowforge.cli.runs import CONFIG, LOCK, METRICS, RUN_FILES
from flowforge.cli.validators import ALL_TARGETS, target_defaults
from flowforge.datasets import TOY_DATA
from flowforge.distributions.targets import TARGETS
from flowforge.mcmc import KERNELS
from flowforge.presets import PRESETS, VAE_POSTERIORS
from flowforge.vae import LIKELIHOODS

# ---------------------------------------------------------------------------------------------------------------
# Settings: reproducible in CI, longer on request.

EXAMPLES_VARIABLE = "FLOWFORGE_FUZZ_EXAMPLES"
RANDOM_VARIABLE = "FLOWFORGE_FUZZ_RANDOM"
PROFILE = "flowforge-fuzz"
settings.register_profile(
    PROFILE,
    derandomize=not os.environ.get(RANDOM_VARIABLE),
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)


def fuzz_settings(examples: int) -> settings:
    """The profile with ``examples`` examples, or with ``$FLOWFORGE_FUZZ_EXAMPLES`` when it is set."""
    return settings(settings.get_profile(PROFILE), max_examples=int(os.environ.get(EXAMPLES_VARIABLE, examples)))


# ---------------------------------------------------------------------------------------------------------------
# Cases and their files.

TMP = "<TMP>"
"""Placeholder in a case's arguments for the example's folder (an absolute path once materialised)."""


@dataclass
class Case:
    """One command to run: ``argv`` (paths relative to the example's folder or under :data:`TMP`), the
    ``files`` to create first (``{relative path: bytes, or a maker}``), the folder the command may write
    (``out``, relative; None for none) and the file it may write (``output``, relative)."""

    argv: list[str]
    files: dict[str, object] = field(default_factory=dict)
    out: str | None = None
    output: str | None = None
    writes_run: bool = True

    def materialise(self, root: Path) -> list[str]:
        for relative, content in self.files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if callable(content):
                content(path)
            else:
                path.write_bytes(content)  # type: ignore[arg-type]
        return [a.replace(TMP, str(root)) for a in self.argv]


def a_folder(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def a_fifo(path: Path) -> None:
    os.mkfifo(path)


def a_dangling_link(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere.csv")


def a_stale_lock(path: Path) -> None:
    """A lock left by a process of this host that has ended (pid 2**22 + 1 is above Linux's default maximum)."""
    path.write_text(json.dumps({"pid": 2**22 + 1, "host": socket.gethostname(), "started": time.time() - 60}))


def a_live_lock(path: Path) -> None:
    """A lock held by a running process of this host (pid 1)."""
    path.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": time.time()}))


# ---------------------------------------------------------------------------------------------------------------
# Running a case and checking it.


@dataclass
class Outcome:
    argv: list[str]
    status: int | None
    out: str
    err: str
    escaped: str | None = None
    """The last line of the traceback of an exception that escaped ``main``."""
    traceback: str = ""


def run_main(argv: list[str]) -> Outcome:
    """``main(argv)`` with stdout and stderr captured; warnings are printed into stderr as a new process
    prints them (``DeprecationWarning`` and its kin hidden), each one line."""
    out, err = io.StringIO(), io.StringIO()
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    escaped, tb, status = None, "", None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=quiet)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as error:  # argparse's --help and --version
                if error.code in (0, None):
                    status = 0
                else:
                    tb = traceback.format_exc()
                    escaped = f"SystemExit: {error.code}"
            except BaseException as error:  # noqa: B036 (KeyboardInterrupt, MemoryError, ... must be reported too)
                tb = traceback.format_exc()
                escaped = (
                    f"{type(error).__name__}: {error}".splitlines()[0][:300] if str(error) else type(error).__name__
                )
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
    text = err.getvalue() + "".join(
        f"{w.category.__name__}: {w.message}\n".replace("\n", " ").rstrip() + "\n" for w in caught
    )
    return Outcome(argv, status, out.getvalue(), text, escaped, tb)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path below ``root`` with what it is: a folder, a link and its target, a file and a digest of its bytes."""
    found: dict[str, tuple] = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                found[relative] = ("link", os.readlink(path))
            elif stat.S_ISDIR(mode):
                found[relative] = ("folder",)
            elif stat.S_ISREG(mode):
                with open(path, "rb") as handle:
                    found[relative] = ("file", hashlib.sha1(handle.read()).hexdigest())
            else:
                found[relative] = ("other", stat.S_IFMT(mode))
    return found


_PARTIAL = re.compile(r"\..+\.partial")


def _inside(relative: str, folder: str) -> bool:
    return folder == "." or relative == folder or relative.startswith(folder + os.sep)


def strict_json(path: Path) -> object:
    """The JSON in ``path``; NaN, Infinity and -Infinity are refused as JSON forbids."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def problems(case: Case, root: Path, before: dict, after: dict, outcome: Outcome) -> list[str]:
    """Every property ``outcome`` breaks, each as ``"kind: detail"`` (the kind groups findings)."""
    found: list[str] = []
    if outcome.escaped is not None:
        found.append(f"exception escaped main: {outcome.escaped}")
    elif outcome.status not in (0, 2):
        found.append(f"exit status {outcome.status}")
    lines = outcome.err.split("\n")[:-1] if outcome.err.endswith("\n") else outcome.err.split("\n")
    if outcome.status == 2:
        if len(lines) != 1:
            found.append(f"stderr has {len(lines)} lines: {outcome.err[-300:]!r}")
        if not lines or not lines[0].startswith("flowforge: error: "):
            found.append(f"stderr does not start with 'flowforge: error: ': {outcome.err[:200]!r}")
    if "Traceback" in outcome.err:
        found.append("traceback in stderr")
    if "weights_only=False" in outcome.err:
        found.append("stderr suggests weights_only=False")
    out = os.path.normpath(case.out) if case.out is not None else None
    out_existed = out is not None and (out == "." or out in before)
    output = os.path.normpath(case.output) if case.output is not None else None

    def allowed(relative: str) -> bool:
        if output is not None and relative == output:
            return True
        if out is not None and not out_existed and _inside(out, relative) and relative not in before:
            return True  # a missing parent of --out, created with it
        if out is None or not _inside(relative, out):
            return False
        if not out_existed:
            return True
        top = os.path.relpath(relative, out).split(os.sep)[0] if out != "." else relative.split(os.sep)[0]
        return top in RUN_FILES or top == LOCK or bool(_PARTIAL.fullmatch(top))

    for relative in sorted(set(before) | set(after)):
        if before.get(relative) != after.get(relative) and not allowed(relative):
            what = "created" if relative not in before else "deleted" if relative not in after else "changed"
            found.append(f"file {what} outside --out/-o: {relative}")
    for relative in after:
        name = os.path.basename(relative)
        if name == LOCK and after[relative] != before.get(relative):
            found.append(f"lock left behind: {relative}")
        if _PARTIAL.fullmatch(name):
            found.append(f"temporary file left behind: {relative}")
    folder = root / out if out is not None else None
    config_written = out is not None and after.get(os.path.normpath(os.path.join(out, CONFIG))) != before.get(
        os.path.normpath(os.path.join(out, CONFIG))
    )
    if folder is not None and config_written and (folder / CONFIG).is_file():
        try:
            config = strict_json(folder / CONFIG)
        except ValueError as error:
            found.append(f"config.json is not strict JSON: {error}")
            config = {}
        status = config.get("status") if isinstance(config, dict) else None
        if outcome.status == 0 and status != "complete":
            found.append(f"exit 0 but config.json status {status!r}")
        if outcome.status != 0 and status not in ("failed", "interrupted"):
            found.append(f"exit {outcome.status} but config.json status {status!r}")
    if outcome.status == 0 and case.writes_run and folder is not None and outcome.escaped is None:
        if not (folder / CONFIG).is_file():
            found.append("exit 0 without config.json")
        if not (folder / METRICS).is_file():
            found.append("exit 0 without metrics.json")
        else:
            try:
                strict_json(folder / METRICS)
            except ValueError as error:
                found.append(f"metrics.json is not strict JSON: {error}")
    if outcome.status == 0 and case.output is not None and outcome.escaped is None:
        found.extend(_check_samples(root / case.output, case.argv))
    return found


def _check_samples(path: Path, argv: list[str]) -> list[str]:
    if not path.is_file():
        return ["exit 0 without the -o file"]
    try:
        if path.suffix.lower() == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            values = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (ValueError, OSError) as error:
        return [f"-o file unreadable: {error}"]
    if not np.isfinite(values.astype(np.float64)).all():
        return ["sample wrote non-finite values"]
    return []


def run_case(case: Case, base: Path) -> tuple[Outcome, list[str]]:
    """Run ``case`` in a new folder under ``base`` (its working directory, removed afterwards)."""
    root = Path(tempfile.mkdtemp(dir=base))
    cwd = os.getcwd()
    try:
        argv = case.materialise(root)
        before = snapshot(root)
        os.chdir(root)
        try:
            outcome = run_main(argv)
        finally:
            os.chdir(cwd)
        after = snapshot(root)
        return outcome, problems(case, root, before, after, outcome)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(case: Case, outcome: Outcome, found: list[str]) -> str:
    """The message of a failed example: the problems, the command, its files, and what it printed."""
    files = {
        name: (content[:80] if isinstance(content, bytes) else getattr(content, "__name__", content))
        for name, content in case.files.items()
    }
    return (
        f"\n  problems: {found}\n  argv: {case.argv}\n  files: {files}\n  exit: {outcome.status}"
        f"\n  stderr: {outcome.err[-1500:]}\n  {outcome.traceback[-3000:]}"
    )


def check(case: Case, base: Path) -> None:
    """Run ``case`` and fail with :func:`report` on any broken property."""
    outcome, found = run_case(case, base)
    assert not found, report(case, outcome, found)


# ---------------------------------------------------------------------------------------------------------------
# Values of options.

# fmt: off
BAD_INTS = [
    "0", "-1", "-0", "", " ", "nan", "inf", "-inf", "1e0", "1.5", "2.0", "1e-9", "0x10", "abc", "1,2", "None",
    "-٣", "²", "½", "1e", "+-1", "--1", "9" * 30 + "x", "١٠٫٥", "\udcff", "ｘ",
]
"""Integers a positive-integer option may refuse; each is cheap if accepted (``0`` is valid for the
non-negative ones; ``1e0`` and ``2.0`` are whole numbers, which an option may read as 1 and 2)."""
SMALL_UNICODE_INTS = ["٣", "１", "۲", "1_0", " 2 ", "+1", "０"]
"""Texts that Python's ``int`` reads as small numbers (Arabic-Indic, fullwidth digits, underscores)."""
HUGE_INTS = [
    str(10**12), str(2**31), str(2**32 + 1), str(2**63), str(2**64), str(10**100), "１" + "０" * 12,
    "1_000_000_000_000",
]
"""Integers too large for any size or count, which every integer option must refuse (above 2^31)."""
CHEAP_HUGE_INTS = [str(10**9), "1e9", str(10**12), str(2**63), str(2**64)]
"""Large values of counts that cost nothing (annealing length, frame interval, patience, warm-up)."""
BAD_FLOATS = [
    "0", "-0", "-1", "", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e309", "abc", "1,5",
    "0x1p3", "1e", "--1", "٠٫٥", "ｘ",
]
EXTREME_FLOATS = ["5e-324", "1e-320", "1e-30", "1e30", "1e300", "1.7976931348623157e308", "٣", "1_0.5"]
SEEDS = [0, 1, -1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**30]
BAD_SEEDS = ["1.0", "", "nan", "x", "1e3", "0x1"]
DEVICES = [
    "cpu", "CPU", "cpu:0", "cpu:1", "cuda", "cuda:0", "cuda:99", "cuda:-1", "meta", "mps", "xla", "xpu", "hpu",
    "ipu", "vulkan", "privateuseone", "lazy", "", " ", "gpu", "cpu,cuda", "cuda:0:0", "cuda:x", "\udcff", "☃",
]
BAD_NAMES = ["", " ", "none", "NONE", "x" * 300, "\udcff", "☃", "-", "--", "0", "..", "two_modes"]
RANGES = [
    "-3,3", "0,1", "3,-3", "0,0", "1,1", "-1e300,1e300", "-1e308,1e308", "1e-300,2e-300", "nan,1", "-inf,inf",
    "1", "1,2,3", "", ",", "a,b", " -1 , 1 ", "-1e-9,1e-9", "1e6,1e6+1", "-2,2",
]
SPLITS = [
    "0.8,0.1,0.1", "0.5,0.25,0.25", "1,0,0", "0,0,1", "0.5,0.5,0", "0.98,0.01,0.01", "0.34,0.33,0.33",
    "nan,0.5,0.5", "-0.1,0.6,0.5", "1,1,1", "0.8,0.1", "", "a,b,c", "inf,0,0", "1e-9,0.5,0.499999999",
    "0.8,0.1,0.1,0", "0.8;0.1;0.1",
]
# fmt: on


def weighted(weights: dict) -> st.SearchStrategy:
    """One of the keys, each as often as its weight (the first key is the one examples shrink to).
    (Hypothesis draws small integers far more often than uniformly, so ``integers(0, 9) == 0`` is no 1 in 10.)"""
    return st.sampled_from([value for value, weight in weights.items() for _ in range(weight)])


def ints(low: int, high: int) -> st.SearchStrategy[str]:
    """An integer option: valid in ``low..high`` (also as Unicode digits), texts it may refuse, and huge values
    it must refuse (every size is bounded: a huge one would take all memory or run for ever)."""
    small = [text for text in SMALL_UNICODE_INTS if low <= int(text) <= high]
    valid = st.integers(low, high).map(str) | (st.sampled_from(small) if small else st.nothing())
    return st.one_of(valid, valid, valid, st.sampled_from(BAD_INTS), st.sampled_from(HUGE_INTS))


def cheap_ints(low: int, high: int) -> st.SearchStrategy[str]:
    """An integer option whose size costs nothing (annealing length, patience): any size is valid."""
    return st.one_of(st.integers(low, high).map(str), st.sampled_from(BAD_INTS), st.sampled_from(CHEAP_HUGE_INTS))


def floats(low: float, high: float) -> st.SearchStrategy[str]:
    """A number option: valid between ``low`` and ``high``, refused texts, and extreme magnitudes."""
    valid = st.floats(low, high, allow_nan=False).map(repr)
    return st.one_of(valid, valid, st.sampled_from(BAD_FLOATS), st.sampled_from(EXTREME_FLOATS))


def choices(valid: Iterable[str], extra_bad: Iterable[str] = ()) -> st.SearchStrategy[str]:
    good = sorted(valid)
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from([*BAD_NAMES, *extra_bad]))


seeds = st.one_of(st.integers(0, 2**32).map(str), st.sampled_from(SEEDS).map(str), st.sampled_from(BAD_SEEDS))
devices = st.one_of(st.just("cpu"), st.sampled_from(DEVICES))
ranges = st.sampled_from(RANGES)
splits = st.sampled_from(SPLITS)


@st.composite
def target_params(draw, target: str | None) -> str:
    """``--target-param KEY=VALUE``: the target's own keys and others, in good and broken forms."""
    own = list(target_defaults(target)) if target in ALL_TARGETS else []
    others = sorted({key for name in ALL_TARGETS for key in target_defaults(name)} - set(own))
    if own and draw(weighted({True: 3, False: 1})):
        key = draw(st.sampled_from(own))
    else:
        key = draw(st.sampled_from([*others, "", "LOC", " loc", "self", "__class__"]))
    value = draw(
        st.one_of(
            *[st.sampled_from(["0", "1", "2", "3", "8", "2.5", "-1", "-3", "0.5", "1e-6", "1e3", "1e6", "1e300"])] * 3,
            st.sampled_from(BAD_FLOATS),
            st.sampled_from(CHEAP_HUGE_INTS),
        )
    )
    form = draw(st.sampled_from(["{k}={v}"] * 6 + ["{k}", "={v}", "{k}=={v}", "{k}={v}={v}", "{k}= {v}"]))
    return form.format(k=key, v=value)


@st.composite
def depths(draw) -> str:
    good = draw(st.lists(st.sampled_from(["1", "2", "٢", " 1"]), min_size=1, max_size=2))
    bad = draw(st.sampled_from(["0", "-1", "", ",", "1,", ",1", "1,,2", "a", "1.0", "1;2", "nan", "1e3", str(10**12)]))
    return ",".join(good) if draw(st.booleans()) else bad


def render(name: str, value: str | None, equals: bool) -> list[str]:
    """One option as the user might type it: ``--name value`` or ``--name=value`` (a flag without value)."""
    if value is None:
        return [name]
    return [f"{name}={value}"] if equals and name.startswith("--") else [name, value]


@st.composite
def options(draw, catalogue: dict[str, st.SearchStrategy[str | None]], max_size: int = 3) -> list[str]:
    """Up to ``max_size`` options of ``catalogue`` (name -> value strategy; None values are flags), rendered."""
    names = draw(st.lists(st.sampled_from(sorted(catalogue)), unique=True, max_size=max_size))
    argv: list[str] = []
    for name in names:
        argv += render(name, draw(catalogue[name]), draw(st.booleans()))
    return argv


FLAG = st.none()


def _sizes(table: dict[str, tuple[int, int]]) -> dict[str, st.SearchStrategy[str | None]]:
    return {name: ints(low, high) for name, (low, high) in table.items()}


# ---------------------------------------------------------------------------------------------------------------
# Run folders (--out) as the user may point at them.

PREVIOUS_RUN = {
    CONFIG: json.dumps({"kind": "mcmc", "status": "complete", "flowforge_version": "0.1.0"}).encode(),
    "samples.npy": b"old",
}


@st.composite
def out_folders(draw, default: str | None = None) -> tuple[list[str], dict[str, object], str | None]:
    """``--out`` and what is there before: ``(argv, files, out)``; mostly a new folder."""
    odd = "empty user previous nested dot blank file under-file unwritable odd-name stale-lock live-lock user-config"
    kind = draw(st.sampled_from(["new"] * 20 + odd.split() + (["default"] if default else [])))
    overwrite = ["--overwrite"] if draw(weighted({False: 3, True: 1})) else []
    files: dict[str, object] = {}
    out = "run"
    if kind == "empty":
        files["run"] = a_folder
    elif kind == "user":
        files["run/notes.txt"] = b"mine\n"
    elif kind == "previous":
        files.update({f"run/{name}": content for name, content in PREVIOUS_RUN.items()})
        files["run/notes.txt"] = b"mine\n"
    elif kind == "user-config":
        files["run/config.json"] = b'{"learning_rate": 0.1}\n'
        files["run/model.pt"] = b"my model"
    elif kind == "nested":
        out = "a/b/run"
    elif kind == "dot":
        out = "."
    elif kind == "blank":
        out = ""
    elif kind == "file":
        files["run"] = b"a file of mine\n"
    elif kind == "under-file":
        files["blocker"] = b"a file of mine\n"
        out = "blocker/run"
    elif kind == "unwritable":
        return ["--out", "/proc/flowforge-fuzz/run", *overwrite], files, None
    elif kind == "odd-name":
        out = draw(st.sampled_from(["rün ☃", "run\udcff", "-run", "run.csv", " run", "run\nx"]))
    elif kind == "stale-lock":
        files[f"run/{LOCK}"] = a_stale_lock
    elif kind == "live-lock":
        files[f"run/{LOCK}"] = a_live_lock
    elif kind == "default":
        assert default is not None
        return overwrite, files, default
    return (
        [f"--out={out}" if out.startswith("-") else "--out", *([] if out.startswith("-") else [out]), *overwrite],
        files,
        out,
    )


def with_out(draw, argv: list[str], files: dict[str, object] | None = None, default: str | None = None) -> Case:
    out_argv, out_files, out = draw(out_folders(default))
    return Case([*argv, *out_argv], {**(files or {}), **out_files}, out)


# ---------------------------------------------------------------------------------------------------------------
# fit and demo on a target density.

TINY_FIT = (
    "--layers 1 --iterations 2 --frame-every 0 --frame-samples 32 --grid-size 6 --eval-samples 20 --kl-grid 6 "
    "--compile off --no-progress"
).split()


@st.composite
def fit_cases(draw) -> Case:
    """``fit`` or ``demo`` to a target density: tiny sizes, then up to four fuzzed options."""
    command = draw(st.sampled_from(["fit", "fit", "demo"]))
    target = draw(st.sampled_from(sorted(TARGETS)))
    catalogue: dict[str, st.SearchStrategy[str | None]] = {
        "--target": choices(TARGETS, ["many-well", "TWO-MODES", "u5"]),
        "--target-param": target_params(target),
        "--flow": choices([*PRESETS, "glow"], ["nsf_ar", "made"]),
        "--base": choices(BASES),
        "--loss": choices(["reverse-kl", "forward-kl"], ["kl"]),
        "--anneal": cheap_ints(0, 5),
        "--beta0": floats(0, 2),
        "--lr": floats(1e-5, 1.0),
        "--weight-decay": floats(0, 1.0),
        "--frame-every": cheap_ints(0, 3),
        "--range": ranges,
        "--seed": seeds,
        "--device": devices,
        "--compile": choices(["auto", "off"], ["ON", "yes", "max-autotune"]),
        "--no-progress": FLAG,
        **_sizes(
            {
                "--layers": (1, 2),
                "--iterations": (1, 3),
                "--samples-per-step": (1, 16),
                "--frame-samples": (1, 48),
                "--grid-size": (1, 8),
                "--eval-samples": (1, 40),
                "--kl-grid": (1, 8),
            }
        ),
    }
    fuzzed = draw(options(catalogue))
    params = draw(st.lists(target_params(target), max_size=1))
    argv = [command, "--target", target, *TINY_FIT, *[a for p in params for a in ("--target-param", p)], *fuzzed]
    return with_out(draw, argv, default="flowforge-demo" if command == "demo" else None)


# ---------------------------------------------------------------------------------------------------------------
# fit --data with a named source, and data files.

TINY_DATA = ["--epochs", "1", "--layers", "1", "--hidden", "4", "--no-progress"]


def data_catalogue(columns: list[str]) -> dict[str, st.SearchStrategy[str | None]]:
    specs = st.one_of(
        st.lists(st.sampled_from([*columns, "0", "1", "2", "-1", "99", "-99", "é", " x1", ""]), max_size=3).map(
            ",".join
        ),
        st.sampled_from([",", "0,0", "x1,x1", "0, 1", "1,0"]),
    )
    return {
        "--columns": specs,
        "--context": specs,
        "--key": st.sampled_from(["arr_0", "x", "data", "", "missing", "ü"]),
        "--class-cond": FLAG,
        "--split": splits,
        "--epochs": ints(1, 2),
        "--batch-size": st.one_of(ints(1, 64), st.sampled_from(CHEAP_HUGE_INTS)),
        "--patience": cheap_ints(1, 3),
        "--scales": ints(1, 2),
        "--clip-grad": floats(0.1, 10),
        "--flow": choices([*TABLE_FLOWS, "glow"], ["planar", "radial", "iaf"]),
        "--lr": floats(1e-5, 1.0),
        "--weight-decay": floats(0, 1.0),
        "--seed": seeds,
        "--device": devices,
        "--base": choices(BASES),
        **_sizes({"--layers": (1, 2), "--num-samples": (1, 40), "--hidden": (1, 8), "--num-data": (1, 120)}),
    }


@st.composite
def named_data_cases(draw) -> Case:
    """``fit --data NAME``: toy sets and unknown names (the bundled tables and digits cost seconds a run)."""
    source = draw(
        st.one_of(
            st.sampled_from(sorted(TOY_DATA)),
            st.sampled_from(sorted(TOY_DATA)),
            st.sampled_from([*BAD_NAMES, "moons", "two-moons.csv", "digits.npy", "nowhere/x.csv"]),
        )
    )
    fuzzed = draw(options(data_catalogue(["x1", "x2"]), max_size=3))
    return with_out(draw, ["fit", "--data", source, "--num-data", "60", *TINY_DATA, *fuzzed])


def _table(draw) -> np.ndarray:
    """A float table of few rows and columns, with the troubles real data have: offsets, constant or
    collinear columns, non-finite or extreme cells."""
    rows = draw(weighted({40: 10, 0: 1, 1: 1, 2: 1, 3: 1, 5: 1}))
    columns = draw(weighted({2: 8, 3: 3, 0: 1, 1: 1, 4: 1}))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.normal(size=(rows, columns)) * draw(weighted({1.0: 8, 1e-12: 1, 1e12: 1, 0.0: 1}))
    values = values + draw(weighted({0.0: 8, 1e6: 1, 1e7: 1, 1e12: 1, -1e300: 1}))
    if rows and columns:
        trouble = draw(
            st.sampled_from(
                ["none"] * 16 + ["nan", "inf", "-inf", "max", "tiny", "constant", "collinear", "same-rows", "integers"]
            )
        )
        cell = (draw(st.integers(0, rows - 1)), draw(st.integers(0, columns - 1)))
        if trouble in ("nan", "inf", "-inf", "max", "tiny"):
            values[cell] = {
                "nan": np.nan,
                "inf": np.inf,
                "-inf": -np.inf,
                "max": 1.7976931348623157e308,
                "tiny": 5e-324,
            }[trouble]
        elif trouble == "constant":
            values[:, cell[1]] = 3.0
        elif trouble == "collinear" and columns > 1:
            values[:, 1] = 2 * values[:, 0]
        elif trouble == "same-rows":
            values[:] = values[0]
        elif trouble == "integers":
            values = np.round(values)
    return values


def _format_cell(value: float, style: str) -> str:
    if style == "g":
        return f"{value:g}"
    if style == "int" and math.isfinite(value):
        return str(int(value))
    return repr(float(value))


@st.composite
def csv_bytes(draw) -> bytes:
    """A delimited text table: a header or none, odd cells, ragged rows, several encodings or binary junk."""
    if draw(weighted({False: 12, True: 1})):
        return draw(
            st.one_of(
                st.binary(max_size=200),
                st.sampled_from([b"", b"\n", b"\x00\x00", b"\xff\xfe", b"a,b\n", b"\xef\xbb\xbf"]),
            )
        )
    values = _table(draw)
    columns = values.shape[1]
    header = draw(
        weighted({"names": 6, "none": 3, "duplicate": 1, "empty": 1, "unicode": 1, "numeric": 1, "quoted": 1})
    )
    names = {
        "names": [f"c{i}" for i in range(columns)],
        "duplicate": ["a"] * columns,
        "empty": [""] * columns,
        "unicode": [f"é{i}ü☃" for i in range(columns)],
        "numeric": [str(i) for i in range(columns)],
        "quoted": [f'"c,{i}"' for i in range(columns)],
    }.get(header)
    delimiter = draw(weighted({",": 12, ";": 1, "\t": 1, " ": 1}))
    style = draw(st.sampled_from(["repr", "g", "int"]))
    lines = [delimiter.join(names)] if names is not None and columns else []
    lines += [delimiter.join(_format_cell(v, style) for v in row) for row in values]
    if lines and len(lines) > 1:
        index = draw(st.integers(0, len(lines) - 1))
        damage = draw(
            st.sampled_from(
                ["none"] * 16 + ["ragged", "extra", "text", "blank", "comment", "NA", "trailing", "decimal-comma"]
            )
        )
        if damage == "ragged":
            lines[index] = delimiter.join(lines[index].split(delimiter)[:-1])
        elif damage == "extra":
            lines[index] += delimiter + "1"
        elif damage == "text":
            lines[index] = delimiter.join(["abc"] * max(columns, 1))
        elif damage == "blank":
            lines.insert(index, "")
        elif damage == "comment":
            lines.insert(0, "# a comment")
        elif damage == "NA":
            lines[index] = delimiter.join(["NA"] * max(columns, 1))
        elif damage == "trailing":
            lines = [line + delimiter for line in lines]
        elif damage == "decimal-comma":
            lines[index] = lines[index].replace(".", ",")
    newline = draw(weighted({"\n": 6, "\r\n": 1, "\r": 1}))
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    encoding = draw(weighted({"utf-8": 14, "utf-8-sig": 1, "latin-1": 1, "utf-16": 1, "cp1252": 1, "utf-32": 1}))
    data = text.encode(encoding, errors="replace")
    cut = draw(weighted({"none": 16, "half": 1, "one-byte": 1, "junk": 1}))
    if cut == "half":
        data = data[: len(data) // 2 + 1]
    elif cut == "one-byte":
        data = data[:-1]
    elif cut == "junk":
        data = data + bytes([0xFF, 0x00, 0xC3])
    return data


# fmt: off
DTYPES = ["<f8"] * 12 + [
    "<f4", "<f4", "<i8", "<i8", "<f2", ">f8", "|i1", "<u8", "|b1", "<c8", "<c16", "<U3", "|S3", "<M8[s]", "<m8[s]",
    "<g", "object", "structured",
]
# fmt: on


def _array(draw) -> np.ndarray:
    values = _table(draw)
    shape = draw(st.sampled_from(["2d"] * 12 + ["1d", "0d", "3d", "fortran", "empty-rows", "empty-columns"]))
    if shape == "1d":
        values = values.reshape(-1)
    elif shape == "0d":
        values = np.array(1.5)
    elif shape == "3d":
        values = np.stack([values, values], axis=-1)
    elif shape == "fortran":
        values = np.asfortranarray(values)
    elif shape == "empty-rows":
        values = np.zeros((0, 3))
    elif shape == "empty-columns":
        values = np.zeros((5, 0))
    dtype = draw(st.sampled_from(DTYPES))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if dtype == "object":
            return values.astype(object)
        if dtype == "structured":
            return np.zeros(len(values) if values.ndim else 1, dtype=[("a", "<f8"), ("b", "<f8")])
        if dtype in ("<c8", "<c16"):
            return values.astype(dtype) + 1j * values.astype(dtype)
        if dtype in ("<M8[s]", "<m8[s]", "<U3", "|S3"):
            return np.nan_to_num(values).astype(np.int64).astype(dtype)
        return values.astype(dtype)


def _npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=True)
    return buffer.getvalue()


@st.composite
def crafted_npy(draw) -> bytes:
    """A ``.npy`` whose header lies: huge or negative shapes, unknown dtypes, bad versions, or cut short."""
    descr = draw(st.sampled_from(["'<f8'", "'<f8'", "'<f99'", "'x'", "'|O'", "[('a', '<f8')]", "1"]))
    shape = draw(
        st.sampled_from(
            [
                "(10**12, 2)",
                "(1000000000000, 2)",
                "(2**62, 4)",
                "(-1, 2)",
                "(3, 2)",
                "('a',)",
                "(3, 2, 0)",
                "(4611686018427387904,)",
                "()",
                "(3,)",
            ]
        )
    )
    fortran = draw(st.sampled_from(["False", "True", "'x'"]))
    header = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    header = header.encode("latin-1") + b" " * (-(len(header) + 11) % 64) + b"\n"
    version = draw(st.sampled_from([(1, 0), (1, 0), (2, 0), (3, 0), (9, 9)]))
    length = struct.pack("<H", len(header)) if version[0] == 1 else struct.pack("<I", len(header))
    payload = np.arange(6, dtype="<f8").tobytes()
    data = b"\x93NUMPY" + bytes(version) + length + header + payload
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@st.composite
def npz_bytes(draw) -> bytes:
    """A ``.npz``: zero to three arrays of any kind, or a damaged or foreign zip."""
    kind = draw(weighted({"arrays": 8, "empty": 1, "truncated": 1, "foreign": 1, "junk": 1}))
    buffer = io.BytesIO()
    if kind == "junk":
        return draw(st.binary(max_size=100))
    if kind == "foreign":
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("x.npy", b"not an array")
            archive.writestr("notes.txt", b"hello")
        return buffer.getvalue()
    arrays = (
        {}
        if kind == "empty"
        else {
            name: _array(draw)
            for name in draw(
                st.lists(st.sampled_from(["arr_0", "x", "data", "ü"]), min_size=1, max_size=3, unique=True)
            )
        }
    )
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, values in arrays.items():
            archive.writestr(f"{name}.npy", _npy(values))
    data = buffer.getvalue()
    return data[: len(data) // 2] if kind == "truncated" else data


DATA_SUFFIXES = [".csv", ".txt", ".npy", ".npz", ".CSV", ".NPY", ".tsv", ".json", "", ".csv.gz"]


@st.composite
def data_files(draw, suffixes: list[str] | None = None) -> tuple[str, object]:
    """A data file as ``(name, bytes or maker)``: CSV/TXT text, NPY arrays (also crafted), NPZ archives,
    files with other suffixes, and things that are not files; ``suffixes`` (mostly) instead of the usual ones."""
    suffix = draw(st.sampled_from((suffixes or DATA_SUFFIXES[:4]) * 6 + DATA_SUFFIXES[4:]))
    lower = suffix.lower()
    if draw(weighted({False: 30, True: 1})):
        maker = draw(st.sampled_from([a_folder, a_fifo, a_dangling_link]))
        return f"data{suffix}", maker
    if lower in (".npy",):
        content = draw(crafted_npy()) if draw(weighted({False: 5, True: 1})) else _npy(_array(draw))
    elif lower == ".npz":
        content = draw(npz_bytes())
    else:
        content = draw(csv_bytes())
    return draw(weighted({"data": 6, "samples": 1, "my data ☃": 1})) + suffix, content


@st.composite
def data_file_cases(draw) -> Case:
    """``fit --data FILE`` on a generated file, with tiny sizes and up to two fuzzed data options."""
    name, content = draw(data_files())
    fuzzed = draw(options(data_catalogue(["x1", "x2", "c0", "c1", "a", "é0ü☃"]), max_size=2))
    return with_out(draw, ["fit", "--data", name, *TINY_DATA, "--batch-size", "64", *fuzzed], {name: content})


# ---------------------------------------------------------------------------------------------------------------
# mcmc, compare, vae, targets.


@st.composite
def mcmc_cases(draw) -> Case:
    target = draw(st.sampled_from(sorted(ALL_TARGETS)))
    catalogue: dict[str, st.SearchStrategy[str | None]] = {
        "--target": choices(ALL_TARGETS, ["u5"]),
        "--target-param": target_params(target),
        "--kernel": choices(KERNELS, ["HMC", "nuts"]),
        "--burn-in": ints(0, 3),
        "--step-size": floats(1e-3, 2),
        "--leapfrog-steps": ints(1, 3),
        "--seed": seeds,
        "--device": devices,
        **_sizes({"--chains": (1, 4), "--samples": (1, 5), "--thin": (1, 3), "--grid-size": (1, 8)}),
    }
    params = draw(st.lists(target_params(target), max_size=1))
    base = "--chains 2 --samples 3 --burn-in 1 --leapfrog-steps 1 --grid-size 4".split()
    argv = ["mcmc", "--target", target, *base, *[a for p in params for a in ("--target-param", p)]]
    argv += draw(options(catalogue))
    return with_out(draw, argv)


@st.composite
def compare_cases(draw) -> Case:
    target = draw(st.sampled_from(sorted(TARGETS)))
    catalogue: dict[str, st.SearchStrategy[str | None]] = {
        "--target": choices(TARGETS, ["many-well"]),
        "--target-param": target_params(target),
        "--flow": choices(["planar", "radial", "realnvp", "maf", "iaf", "nsf", "nsf-ar"], ["residual", "glow"]),
        "--depths": depths(),
        "--iterations": ints(1, 2),
        "--samples-per-step": ints(1, 8),
        "--lr": floats(1e-5, 1.0),
        "--kernel": choices(KERNELS),
        "--seed": seeds,
        "--device": devices,
        "--compile": choices(["auto", "off"], ["ON"]),
        **_sizes(
            {
                "--chains": (1, 3),
                "--mcmc-samples": (1, 3),
                "--frame-samples": (1, 32),
                "--grid-size": (1, 6),
                "--kl-grid": (1, 6),
            }
        ),
    }
    base = (
        "--kernel mh --depths 1 --iterations 1 --chains 2 --mcmc-samples 1 --frame-samples 16 --grid-size 4 "
        "--kl-grid 4 --compile off --no-progress"
    ).split()
    argv = ["compare", "--target", target, *base, *draw(options(catalogue, max_size=3))]
    return with_out(draw, argv)


TINY_VAE = "--layers 1 --latent 2 --hidden 4 --flow-hidden 2 --epochs 1 --is-samples 2 --no-progress".split()


def _vae_data() -> bytes:
    return _npy(np.random.default_rng(0).uniform(size=(30, 6)).astype(np.float32))


@st.composite
def vae_cases(draw) -> Case:
    """``vae`` on a small generated ``.npy`` (or another file, or rarely the bundled digits)."""
    files: dict[str, object] = {"v.npy": _vae_data()}
    source = draw(st.sampled_from(["v.npy"] * 6 + ["data", "digits", "x.png", "", "nowhere.npy", "v.NPY"]))
    if source == "data":
        name, content = draw(data_files())
        source, files[name] = name, content
    catalogue: dict[str, st.SearchStrategy[str | None]] = {
        "--posterior": choices(VAE_POSTERIORS, ["nsf", "maf"]),
        "--likelihood": choices(LIKELIHOODS, ["poisson"]),
        "--binarize": choices(["dynamic", "none"], ["static"]),
        "--epochs": ints(1, 2),
        "--batch-size": st.one_of(ints(1, 32), st.sampled_from(CHEAP_HUGE_INTS)),
        "--lr": floats(1e-5, 1.0),
        "--warmup": cheap_ints(0, 2),
        "--patience": cheap_ints(1, 2),
        "--split": splits,
        "--seed": seeds,
        "--device": devices,
        **_sizes(
            {
                "--layers": (1, 2),
                "--latent": (1, 3),
                "--hidden": (1, 8),
                "--flow-hidden": (1, 4),
                "--is-samples": (1, 4),
            }
        ),
    }
    likelihood = draw(st.sampled_from(["gaussian", "bernoulli"]))
    argv = ["vae", "--data", source, "--likelihood", likelihood, *TINY_VAE, *draw(options(catalogue, max_size=3))]
    return with_out(draw, argv, files)


# fmt: off
TOKENS = [
    "fit", "demo", "mcmc", "compare", "vae", "targets", "sample", "-", "--", "=", "-x", "--out", "--data", "--flow",
    "--layers", "--version", "-h", "--help", "☃", "\udcff", "--target=", "--no-such-option", "1", "-1", "--layers=0",
]
# fmt: on


@st.composite
def junk_cases(draw) -> Case:
    """Unknown commands and options, ``targets`` with extra words, stray tokens; always refused or cheap: the
    last token is an unknown option, so argparse refuses any command before it runs."""
    text = st.text(st.characters(exclude_characters="\x00"), max_size=8)  # a real argv holds no NUL
    words = draw(st.lists(st.one_of(st.sampled_from(TOKENS), text), max_size=5))
    if draw(st.booleans()):
        return Case(
            ["targets", *draw(st.sampled_from([[], [], ["--help"], ["extra"], ["--all"], ["-h"]]))], writes_run=False
        )
    return Case([*words, "--no-such-option-" + draw(st.sampled_from(["x", "☃", "1"]))], writes_run=False)


# ---------------------------------------------------------------------------------------------------------------
# sample: its arguments, and checkpoints.

# fmt: off
SAMPLE_OUTPUTS = [
    "s.npy", "s.npy", "s.csv", "s.CSV", "s.NPY", "s.txt", "s", "", "nowhere/s.npy", "existing.npy", "existing.csv",
    "folder.npy", "run/samples.csv", "run/model.npy", ".npy", "s\udcff.npy", "link.npy",
]
# fmt: on


@st.composite
def sample_arguments(draw, run_files: dict[str, object], context_names: int = 0) -> Case:
    """``sample RUN -n N -o FILE``: the run (``run_files`` under ``run/``) or a wrong folder, an output as
    the user may name it, and fuzzed ``-n``, ``--seed``, ``--log-prob``, ``--context``, ``--label``."""
    files: dict[str, object] = {f"run/{name}": content for name, content in run_files.items()}
    run = draw(st.sampled_from(["run"] * 6 + ["nowhere", "", ".", "existing.npy", "run/model.pt"]))
    output = draw(st.sampled_from(SAMPLE_OUTPUTS))
    if output.startswith("existing"):
        files[output] = b"keep me\n"
    elif output == "folder.npy":
        files[output] = a_folder
    elif output == "link.npy":
        files["mine.npy"] = b"keep me\n"
        files[output] = lambda path: path.symlink_to(path.parent / "mine.npy")
    count = draw(ints(1, 20) if draw(weighted({False: 2, True: 1})) else st.integers(1, 9).map(str))
    context = st.one_of(
        st.lists(
            st.sampled_from(["0", "0.5", "-1", "1e3", "nan", "inf", "", "a", "1e308"]),
            min_size=1,
            max_size=max(1, context_names + 1),
        ).map(",".join),
    )
    catalogue: dict[str, st.SearchStrategy[str | None]] = {
        "--seed": seeds,
        "--log-prob": FLAG,
        "--overwrite": FLAG,
        "--context": context,
        "--label": ints(0, 12),
    }
    argv = ["sample", run, "-n", count, "-o", output, *draw(options(catalogue, max_size=3))]
    return Case(argv, files, out=None, output=output if output else None, writes_run=False)


# Checkpoint mutations: each takes the loaded checkpoint (a dict) and returns what to save, or bytes.

VALUES = [None, True, -1, 0, 2.5, 10**9, 2**63, "x", "", [], {}, float("nan"), float("inf"), ["a"], -(10**9)]


def _set(path: tuple, value):
    def mutate(checkpoint: dict):
        target = checkpoint
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return checkpoint

    mutate.__name__ = f"set {'.'.join(map(str, path))}={value!r}"
    return mutate


def _delete(path: tuple):
    def mutate(checkpoint: dict):
        target = checkpoint
        for key in path[:-1]:
            target = target[key]
        target.pop(path[-1], None)
        return checkpoint

    mutate.__name__ = f"delete {'.'.join(map(str, path))}"
    return mutate


def _weights(mode: str, index: int):
    def mutate(checkpoint: dict):
        state = checkpoint["state_dict"]
        names = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel()]
        name = names[index % len(names)]
        tensor = state[name]
        if mode in ("nan", "inf", "-inf", "huge"):
            state[name] = torch.full_like(
                tensor, {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 3e38}[mode]
            )
        elif mode == "shape":
            state[name] = torch.zeros(tensor.numel() + 1)
        elif mode == "dtype":
            state[name] = tensor.to(torch.int64)
        elif mode == "missing":
            del state[name]
        elif mode == "extra":
            state["unexpected.weight"] = torch.zeros(2)
        elif mode == "not-a-tensor":
            state[name] = [1.0]
        return checkpoint

    mutate.__name__ = f"weights {mode} #{index}"
    return mutate


class Payload:
    """A pickled object that, when unpickled, creates the file ``pwned`` in the working directory."""

    def __reduce__(self):
        return (open, ("pwned", "w"))


@st.composite
def checkpoint_mutations(draw, config_keys: list[str]) -> Callable:
    """A change to a real checkpoint: its bytes (empty, junk, cut), a folder in its place, a pickled
    payload, its config (unknown flow, huge/negative/float layers, wrong types, missing keys), its
    weights (NaN, inf, wrong shapes, missing), or its other entries."""
    kind = draw(
        st.sampled_from(
            ["bytes", "cut", "folder", "payload", "set", "set", "set", "delete", "weights", "weights", "top"]
        )
    )
    if kind == "bytes":
        data = draw(st.one_of(st.just(b""), st.binary(max_size=64), st.just(b"PK\x03\x04" + b"\x00" * 26)))
        return lambda checkpoint, data=data: data
    if kind == "cut":
        fraction = draw(st.floats(0.0, 0.99))
        return lambda checkpoint, fraction=fraction: ("cut", fraction)
    if kind == "folder":
        return lambda checkpoint: "folder"
    if kind == "payload":
        return lambda checkpoint: Payload()
    if kind == "top":
        return draw(
            st.sampled_from(
                [
                    _delete(("config",)),
                    _delete(("state_dict",)),
                    _set(("config",), [1, 2]),
                    _set(("state_dict",), torch.zeros(2)),
                    _set(("config",), None),
                    _set(("context",), {"context_mean": torch.zeros(1)}),
                ]
            )
        )
    if kind == "weights":
        return _weights(
            draw(st.sampled_from(["nan", "inf", "-inf", "huge", "shape", "dtype", "missing", "extra", "not-a-tensor"])),
            draw(st.integers(0, 50)),
        )
    key = draw(st.sampled_from(config_keys))
    if kind == "delete":
        return _delete(("config", key))
    special = {
        "flow": ["nope", "glow", "planar", "nsf", "residual"],
        "kind": ["vae", "mcmc", "images", "table", "target", "nope"],
        "target": ["nope", "many-well", "gmm-40", "u1"],
        "layers": [10**9, 2**63, -1, 0, 2.5, "3", True],
        "hidden": [10**9, -1, 0, 2.5],
        "names": [[], ["a"], ["a", "b", "c"], "ab"],
        "context_names": [["c"], ["c", "d"], "c"],
        "target_params": [{"loc": float("nan")}, {"nope": 1}, {"n_modes": 2.5}, {"n_modes": 10**9}, [], {"scale": -1}],
        "shape": [[1, 8, 8], [1, 10**6, 10**6], [], [1, 0, 8], [3, 8, 8], "x"],
        "levels": [0, 1, -1, 10**9, None],
        "scales": [0, 10**9, -1],
        "base": ["nope", "resampled", "mixture"],
    }.get(key, [])
    return _set(("config", key), draw(st.sampled_from([*special, *VALUES])))


def apply_mutation(real: Path, mutate: Callable) -> Callable[[Path], None]:
    """A maker writing the mutated copy of the checkpoint ``real`` at the path it is given."""

    def make(path: Path) -> None:
        checkpoint = torch.load(real, map_location="cpu", weights_only=True)
        changed = mutate(checkpoint)
        if changed == "folder":
            path.mkdir()
        elif isinstance(changed, tuple) and changed[0] == "cut":
            data = real.read_bytes()
            path.write_bytes(data[: int(len(data) * changed[1])])
        elif isinstance(changed, bytes):
            path.write_bytes(changed)
        else:
            torch.save(changed, path)

    make.__name__ = getattr(mutate, "__name__", "mutation")
    return make
