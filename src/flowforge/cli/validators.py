"""Checks of what the user typed, defined once for every subcommand.

The argparse ``type=`` converters (:data:`positive_int`, :data:`non_negative_int`,
:data:`positive_float`, :data:`non_negative_float`, :func:`value_range`, :func:`fractions`) raise
:class:`argparse.ArgumentTypeError`, which the parser reports as ``argument --NAME: ...``. The checks
that run after parsing (:func:`target_params`, :func:`build_target`, :func:`device`, :func:`depths`,
:func:`pictures`)
raise :class:`~flowforge.cli.errors.CLIError` with the message the user sees.
"""

from __future__ import annotations

import argparse
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


positive_int = number(int, "a positive integer", lambda v: v >= 1)
non_negative_int = number(int, "a non-negative integer", lambda v: v >= 0)
positive_float = number(float, "a positive number", lambda v: v > 0)
non_negative_float = number(float, "a non-negative number", lambda v: v >= 0)


def value_range(text: str) -> tuple[float, float]:
    """``LOW,HIGH``: two finite numbers with LOW < HIGH."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH with LOW < HIGH, got {text!r}")
    return low, high


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
    """``--target-param KEY=VALUE`` pairs as numbers; integers where the default is an integer."""
    allowed = target_defaults(name)
    params: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in allowed:
            known = ", ".join(allowed) or "none"
            raise CLIError(f"target {name!r} takes parameters {known}; got {pair!r} (use KEY=VALUE)")
        try:
            given = float(value)
        except ValueError:
            raise CLIError(f"target parameter {key} must be a number, got {value!r}") from None
        params[key] = int(given) if isinstance(allowed[key], int) and given.is_integer() else given
    return params


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
    """``--device``: the named device, or CUDA when available and the CPU otherwise."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise CLIError(f"unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"device {name!r} requested but CUDA is not available")
    return chosen


def depths(text: str) -> list[int]:
    """``compare --depths``: positive integers separated by commas."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or any(value < 1 for value in values):
        raise CLIError(f"--depths must be positive integers separated by commas, got {text!r}")
    return values
