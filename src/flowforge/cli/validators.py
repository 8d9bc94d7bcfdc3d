"""Checks of what the user typed, defined once for every subcommand.

The argparse ``type=`` converters (:func:`integer` and the ones made with it, :data:`positive_float`,
:data:`non_negative_float`, :func:`kl_grid`, :func:`value_range`, :func:`fractions`) raise
:class:`argparse.ArgumentTypeError`, which the parser reports as ``argument --NAME: ...``. The checks
that run after parsing (:func:`target_params`, :func:`build_target`, :func:`device`, :func:`depths`,
:func:`pictures`, :func:`picture_resolution`, :func:`parameter_budget`, :func:`sample_memory`)
raise :class:`~flowforge.cli.errors.CLIError` with the message the user sees.

Every size has an upper limit (the ``MAX_*`` constants), checked before anything is allocated, and
its message says what the limit is and why: a mistyped ``--layers 1000000000`` ends in one line, not
in a process that grows until the machine kills it.
"""

from __future__ import annotations

import argparse
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .. import plot
from ..distributions.targets import HIGH_DIMENSIONAL_TARGETS, TARGETS
from ..metrics import Bounds
from .errors import CLIError

ALL_TARGETS = {**TARGETS, **HIGH_DIMENSIONAL_TARGETS}
"""Every target by its command-line name: the 2-D ones (fit, compare) and those beyond 2-D (mcmc)."""


def number(convert: Callable[[str], Any], description: str, accept: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)``, finite, and ``accept(value)``, else ``expected DESCRIPTION, got TEXT``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
            valid = math.isfinite(value) and accept(value)
        except (ValueError, OverflowError):  # OverflowError: an integer too large for a float
            valid = False
        if not valid:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


def whole_number(text: str) -> int:
    """An integer written with digits (``20000``, ``20_000``) or as a number with an integral value
    (``2e4``, ``20000.0``); ValueError otherwise."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
    if not value.is_integer():
        raise ValueError(f"{text!r} is not an integer")
    return int(value)


def integer(low: int, high: int, why: str = "", description: str | None = None) -> Callable[[str], int]:
    """An argparse type: an integer (:func:`whole_number`) from ``low`` to ``high``. The message names
    what was expected (``description``; by default from ``low``) and, above ``high``, the limit and
    ``why`` it is there."""
    expected = description or {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
    reason = f" ({why})" if why else ""

    def parse(text: str) -> int:
        try:
            value: int | None = whole_number(text)
        except (ValueError, OverflowError):  # OverflowError: float("1e400") is inf, and int(inf) fails
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        if value > high:
            raise argparse.ArgumentTypeError(f"expected {expected} no larger than {high}{reason}, got {text!r}")
        return value

    return parse


MAX_COUNT = 10**9
"""The upper limit of counts that only cost time (epochs, patience, annealing and frame intervals)."""
MAX_LAYERS = 1000
"""The deepest flow a command builds: every layer is a module in memory, and deeper stacks take
minutes to build before the first step."""
MAX_ITERATIONS = 10**8
"""The most training steps: the loss history (one float per step) is allocated up front."""
MAX_DRAWS = 2**24
"""The most samples drawn at once for a picture or an estimate (``--frame-samples``, ``--eval-samples``)."""
MAX_BATCH = 2**20
"""The largest batch of a training step (``--samples-per-step``, ``--batch-size``)."""
MAX_PICTURE_GRID = 2048
"""The most pixels per side of a picture: each one is a density evaluation."""
MAX_KL_GRID = 4096
"""The most grid points per axis of the exact KL: it evaluates both densities at ``n²`` points."""
MAX_SEED = 2**63 - 1
"""The largest seed: torch takes 64-bit seeds, and a run derives a second seed by adding one."""
MAX_PARAMETERS = 2**28
"""The most parameters a command builds: 1 GiB of float32 weights, 4 GiB with their gradients and Adam's
two moments."""
MAX_SAMPLE_BYTES = 2**31
"""The most memory the samples a command writes may take (float64 values)."""
MAX_TARGET_SIZE = 1e6
"""Target parameters are refused beyond this magnitude (and below its inverse, except 0): a box or a
density beyond it overflows float32 grids and log-densities."""
MAX_TARGET_COUNT = 10**4
"""The most modes, rings or dimensions of a target: its density evaluates every one at every point."""

positive_int = integer(1, MAX_COUNT)
non_negative_int = integer(0, MAX_COUNT)
positive_float = number(float, "a positive number", lambda v: v > 0)
non_negative_float = number(float, "a non-negative number", lambda v: v >= 0)
unit_interval = number(float, "a number from 0 to 1", lambda v: 0 <= v <= 1)
layer_count = integer(1, MAX_LAYERS, "each layer is a module in memory, and deeper flows take minutes to build")
iteration_count = integer(1, MAX_ITERATIONS, "the loss history, one number per step, is allocated up front")
draw_count = integer(1, MAX_DRAWS, "2^24: they are drawn at once")
estimate_draw_count = integer(2, MAX_DRAWS, "2^24: they are drawn at once", "an integer >= 2 (an ESS needs two)")
batch_size = integer(1, MAX_BATCH, "2^20 rows in one step")
picture_grid_size = integer(2, MAX_PICTURE_GRID, "every pixel is a density evaluation")
seed_value = integer(0, MAX_SEED, "torch takes 64-bit seeds, and a run derives a second seed by adding one")
chain_count = integer(1, MAX_BATCH, "2^20 chains, moved together in one batch")
leapfrog_count = integer(1, 1000, "every leapfrog step is a gradient evaluation")
net_width = integer(1, 2**16, "2^16 units; the model's size is limited too")


def kl_grid_size(text: str) -> int:
    """``--kl-grid``: an even integer from 4 to :data:`MAX_KL_GRID` (the error estimate compares the
    grid with one of half the size)."""
    value = integer(4, MAX_KL_GRID, "both densities are evaluated at n² points", "an even integer >= 4")(text)
    if value % 2:
        raise argparse.ArgumentTypeError(
            f"expected an even integer >= 4 (the grid error is estimated on a grid of half the size), got {text!r}"
        )
    return value


MAX_RANGE = 1e15
"""The largest magnitude of ``--range``: pictures are drawn on float32 grids."""


def value_range(text: str) -> tuple[float, float]:
    """``LOW,HIGH``: two finite numbers with LOW < HIGH, both within ±:data:`MAX_RANGE`."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH with LOW < HIGH, got {text!r}")
    if max(abs(low), abs(high)) > MAX_RANGE:
        raise argparse.ArgumentTypeError(
            f"expected LOW,HIGH within ±{MAX_RANGE:g} (pictures are drawn on float32 grids), got {text!r}"
        )
    return low, high


def picture_resolution(bounds: Bounds, grid_size: int, option: str) -> None:
    """Refuse a picture box whose ``grid_size`` pixels per side would not be distinct float32 numbers
    (a narrow ``--range`` far from 0)."""
    for low, high in bounds:
        step = float(np.spacing(np.float32(max(abs(low), abs(high)))))
        if (high - low) / grid_size < 4 * step:
            raise CLIError(
                f"{option} {low:g},{high:g} is too narrow for {grid_size} pixels so far from 0: neighbouring "
                "pixels would be the same float32 number; widen it or lower --grid-size"
            )


def box(rows: Sequence[Sequence[float]]) -> Bounds:
    """The plotting box of the first two ``(low, high)`` rows: a target's bounds or ``--range`` twice."""
    (x0, x1), (y0, y1) = rows[0], rows[1]
    return (float(x0), float(x1)), (float(y0), float(y1))


def fractions(text: str) -> tuple[float, float, float]:
    """``TRAIN,VALIDATION,TEST``: three non-negative fractions summing to 1."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VALIDATION,TEST fractions summing to 1, got {text!r}")
    return values[0], values[1], values[2]


def target_defaults(name: str) -> dict[str, Any]:
    """The parameters target ``name`` takes, with their defaults (what ``--target-param`` may set)."""
    signature = inspect.signature(ALL_TARGETS[name].__init__)
    return {k: p.default for k, p in signature.parameters.items() if k != "self"}


def target_params(name: str, pairs: list[str]) -> dict[str, float]:
    """``--target-param KEY=VALUE`` pairs as numbers, each checked by :func:`target_param`."""
    if not isinstance(name, str) or name not in ALL_TARGETS:  # `--target=--`: argparse hands over a list
        raise CLIError(f"--target expects a target name (see `flowforge targets`), got {name!r}")
    allowed = target_defaults(name)
    params: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in allowed:
            known = ", ".join(allowed) or "none"
            raise CLIError(f"target {name!r} takes parameters {known}; got {pair!r} (use KEY=VALUE)")
        params[key] = target_param(name, key, value)
    return params


def target_param(name: str, key: str, value: object) -> float:
    """One parameter of target ``name``, typed on the command line (text) or read from a run's config (a
    number): an integer where the default is one (at most :data:`MAX_TARGET_COUNT`, a seed at most
    :data:`MAX_SEED`), else a finite number of magnitude from 1/:data:`MAX_TARGET_SIZE` to
    :data:`MAX_TARGET_SIZE`, or 0. The target checks the rest (signs, parity)."""
    allowed = target_defaults(name)
    if key not in allowed:
        raise CLIError(f"target {name!r} takes parameters {', '.join(allowed) or 'none'}; got {key!r}")
    text = repr(value)
    if isinstance(allowed[key], int):
        low, high = (0, MAX_SEED) if key == "seed" else (1, MAX_TARGET_COUNT)
        try:
            given = whole_number(value) if isinstance(value, str) else value
        except (ValueError, OverflowError):
            given = None
        if isinstance(given, bool) or not isinstance(given, int) or not low <= given <= high:
            why = "a 64-bit seed" if key == "seed" else "the density evaluates each one at every point"
            raise CLIError(f"target parameter {key} must be an integer from {low} to {high} ({why}), got {text}")
        return given
    try:
        number = math.nan if isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CLIError(f"target parameter {key} must be a number, got {text}") from None
    if not math.isfinite(number) or abs(number) > MAX_TARGET_SIZE or 0 < abs(number) < 1 / MAX_TARGET_SIZE:
        raise CLIError(
            f"target parameter {key} must be a finite number of magnitude from {1 / MAX_TARGET_SIZE:g} to "
            f"{MAX_TARGET_SIZE:g}, or 0 (beyond, the target's box or density overflows float32), got {text}"
        )
    return number


def build_target(targets: Mapping[str, Callable[..., Any]], name: str, params: dict, on: torch.device | None = None):
    """The target ``name`` built with ``params`` (moved to ``on``); parameters it refuses end in a :class:`CLIError`."""
    try:
        target = targets[name](**params)
    except (TypeError, ValueError) as error:
        raise CLIError(f"invalid parameters for target {name!r}: {error}") from None
    return target if on is None else target.to(on)


def pictures() -> None:
    """Refuse a command that draws pictures, before it starts, when matplotlib or Pillow is missing
    (the message names the extra to install)."""
    try:
        plot.require()
    except ImportError as error:
        raise CLIError(str(error)) from None


def device(name: str | None) -> torch.device:
    """``--device``: the named device (the CPU, or a CUDA device that exists), or CUDA when available
    and the CPU otherwise. Other kinds of device (``meta``, ``mps``, ...) are refused: the runs use
    float64 for their statistics and write real numbers."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if chosen.type == "cpu" and chosen.index in (None, 0):
        return chosen
    if chosen.type != "cuda":
        raise CLIError(f"device {name!r} is not supported; flowforge runs on cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise CLIError(f"device {name!r} requested but CUDA is not available")
    count = torch.cuda.device_count()
    if chosen.index is not None and chosen.index >= count:
        raise CLIError(
            f"device {name!r} does not exist: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        )
    return chosen


MAX_DEPTHS = 12
"""The most flows ``compare`` fits and draws side by side."""


def depths(text: str) -> list[int]:
    """``compare --depths``: up to :data:`MAX_DEPTHS` integers from 1 to :data:`MAX_LAYERS`, separated by commas."""
    try:
        values = [whole_number(part) for part in text.split(",")]
    except (ValueError, OverflowError):
        values = []
    if not values or len(values) > MAX_DEPTHS or any(not 1 <= value <= MAX_LAYERS for value in values):
        raise CLIError(
            f"--depths must be positive integers separated by commas (at most {MAX_DEPTHS} of them, each at most "
            f"{MAX_LAYERS}), got {text!r}"
        )
    return values


def parameter_budget(estimate: int, what: str) -> None:
    """Refuse a model of about ``estimate`` parameters above :data:`MAX_PARAMETERS`, before it is built."""
    if estimate > MAX_PARAMETERS:
        raise CLIError(
            f"{what} would have about {estimate:.2g} parameters ({estimate * 16 / 2**30:.3g} GiB with gradients and "
            f"Adam's moments); the limit is {MAX_PARAMETERS:.2g} (4 GiB): use fewer layers or narrower nets"
        )


def sample_memory(rows: int, columns: int, what: str) -> None:
    """Refuse ``rows`` samples of ``columns`` values (``what`` asks for them) when they would take more
    than :data:`MAX_SAMPLE_BYTES` in memory, before drawing any."""
    size = rows * columns * 8
    if size > MAX_SAMPLE_BYTES:
        raise CLIError(
            f"{what}: {rows} samples of {columns} values would take {size / 2**30:.3g} GiB in memory; the limit is "
            f"{MAX_SAMPLE_BYTES / 2**30:g} GiB: draw fewer, or several files with different --seed values"
        )
