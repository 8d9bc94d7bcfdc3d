"""Training states: the file a loop writes so that a run can be resumed, and its checks when read back.

A training state holds everything a loop needs to continue a run to the state an uninterrupted run
reaches (model, optimizer, schedule, random number generators, position, history, best-so-far; each
loop adds its own entries). It is written by :func:`save_state` through :func:`atomic_path` with
``durable=True``: to a temporary file beside its destination, flushed to the disk with ``fsync``, moved
into place with :func:`os.replace`, and the folder synced too, so that after a crash or a power cut the
file is either the previous state or the new one, never a mix. It is read by :func:`load_state` with
``torch.load(weights_only=True)``: only tensors, numbers, strings and containers of them, so a
training state cannot carry code. Anything else that is stored (NumPy arrays, random-generator states)
is stored as tensors.

Files are written through :func:`~flowforge.utils.files.atomic_path`, as is every file the command
writes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from ..utils.files import atomic_path

T = TypeVar("T")

FORMAT = "flowforge training state"
"""The value of ``"format"`` in every training state."""
VERSION = 1
"""The layout of the training state; a file of a later version is refused."""
LOOPS = ("fit", "fit_data", "fit_vae")
"""The loops that write training states, as recorded in ``"loop"``."""
_EPOCH_ENTRIES = (
    "complete", "settings", "model", "optimizer", "scheduler", "generator", "rng", "epoch", "batch", "order",
    "total", "count", "step", "train", "validation", "best_epoch", "stopped_early", "wall_time", "best_value",
    "best_model",
)  # fmt: skip
ENTRIES = {
    "fit": (
        "complete", "iterations", "done", "settings", "model", "optimizer", "step", "decided", "loss_history",
        "good_model", "good_optimizer", "good_until", "timing", "rng", "callbacks",
    ),
    "fit_data": _EPOCH_ENTRIES,
    "fit_vae": _EPOCH_ENTRIES,
}  # fmt: skip
"""The entries each loop's training state holds (besides ``"format"``, ``"version"`` and ``"loop"``)."""

StatePath = str | os.PathLike


def save_state(path: StatePath, loop: str, state: Mapping[str, Any]) -> None:
    """Write the training state ``state`` of ``loop`` to ``path``, atomically and durably."""
    with atomic_path(path, durable=True) as temporary, open(temporary, "wb") as handle:
        # Through a Python file, so that a full disk is an OSError (torch's own writer raises RuntimeError).
        torch.save({"format": FORMAT, "version": VERSION, "loop": loop, **state}, handle)


class ResumeError(ValueError):
    """A training state that a run cannot resume from: missing or unreadable, damaged, not a training
    state, or written by another loop, model, callbacks or settings. The message says what was expected."""


def load_state(path: StatePath, loop: str, model: nn.Module) -> dict[str, Any]:
    """The training state in ``path``, checked to be one of ``loop`` for ``model`` (the same state dict
    keys, shapes and dtypes); a :class:`ResumeError` naming what was expected otherwise. Tensors are on
    the CPU."""
    resume = f"resume file {str(path)!r}"
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below): torch's own errors then say nothing of the file
    except OSError as error:
        raise ResumeError(f"cannot read the {resume}: {error.strerror or error}") from None
    try:
        with handle, warnings.catch_warnings():  # torch warns about what it finds in a damaged file; refused anyway
            warnings.simplefilter("ignore")
            state = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as error:  # a file torch cannot parse raises many types (OSError too); its message may mislead
        raise ResumeError(
            f"the {resume} is not a flowforge training state (torch cannot read it: {type(error).__name__}); "
            f"expected a file written by {loop}(checkpoint=...)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ResumeError(
            f"the {resume} is not a flowforge training state; expected a file written by {loop}(checkpoint=...)"
        )
    if not isinstance(state.get("version"), int) or state["version"] > VERSION:
        raise ResumeError(
            f"the {resume} has training-state version {state.get('version')!r}; this flowforge reads version "
            f"{VERSION} and earlier"
        )
    if state.get("loop") != loop:
        raise ResumeError(
            f"the {resume} was written by {state.get('loop')}, not by {loop}; resume it with {state.get('loop')}"
        )
    missing = [entry for entry in ENTRIES[loop] if entry not in state]
    if missing:
        raise ResumeError(f"the {resume} is damaged: it lacks {_names(missing)}; resume from another training state")
    try:
        check_model(state["model"], model)
    except ValueError as error:
        raise ResumeError(
            f"the {resume} is of another model: {error}; build the model as the run that wrote it did"
        ) from None
    return state


def check_model(saved: Any, model: nn.Module) -> None:
    """ValueError (what differs, one line) unless the state dict ``saved`` has the keys, shapes and
    dtypes of ``model``'s."""
    if not isinstance(saved, Mapping):
        raise ValueError(f"its state dict is a {type(saved).__name__}, not a mapping of names to tensors")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing or unexpected:
        parts = [f"lacks {_names(missing)}" if missing else "", f"has {_names(unexpected)}" if unexpected else ""]
        raise ValueError(f"it {' and '.join(p for p in parts if p)} (compared with the model)")
    for key, value in own.items():
        other = saved[key]
        if not isinstance(value, torch.Tensor):
            continue
        if not isinstance(other, torch.Tensor) or other.shape != value.shape or other.dtype != value.dtype:
            described = (
                f"{tuple(other.shape)} {other.dtype}" if isinstance(other, torch.Tensor) else type(other).__name__
            )
            raise ValueError(f"{key!r} is {described} in it but {tuple(value.shape)} {value.dtype} in the model")


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def restore(action: Callable[[], T], path: StatePath | None) -> T:
    """``action()``, a loop restoring a training state that :func:`load_state` accepted; a state damaged
    inside its entries (an optimizer state of other sizes, a generator state of another length) is a
    :class:`ResumeError` instead of the error torch raises."""
    try:
        return action()
    except ResumeError:
        raise
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ResumeError(
            f"the resume file {str(path)!r} is damaged: {first}; resume from another training state"
        ) from None


def check_settings(state: Mapping[str, Any], settings: Mapping[str, Any], path: StatePath) -> None:
    """:class:`ResumeError` unless the run that wrote ``state`` had these ``settings`` (what changes its course)."""
    saved = state.get("settings", {})
    for key, value in settings.items():
        if key in saved and saved[key] != value:
            raise ResumeError(
                f"the resume file {str(path)!r} was written by a run with {key}={saved[key]!r}, but this call has "
                f"{key}={value!r}; resume with the settings the run was started with"
            )


def rng_states(device: torch.device) -> dict[str, Any]:
    """The states of torch's global generators: the CPU's, and every CUDA device's when on CUDA."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_states` returned (CUDA states only where there are as many devices)."""
    torch.set_rng_state(states["cpu"])
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def generator_state(generator: torch.Generator | None) -> torch.Tensor | None:
    return None if generator is None else generator.get_state()


def restored_generator(state: torch.Tensor | None) -> torch.Generator | None:
    """A CPU generator in the saved ``state`` (None when the run had none)."""
    return None if state is None else torch.Generator().set_state(state)


def callback_states(functions: Sequence[Any]) -> list[Any]:
    """``state_dict()`` of each callback function that has one (None for the others)."""
    return [function.state_dict() if hasattr(function, "state_dict") else None for function in functions]


def load_callback_states(functions: Sequence[Any], states: Sequence[Any], path: StatePath) -> None:
    """``load_state_dict`` the saved states into the callback functions that have it."""
    if len(states) != len(functions):
        raise ResumeError(
            f"the resume file {str(path)!r} was written with {len(states)} callbacks, but this call has "
            f"{len(functions)}; pass the callbacks the run was started with"
        )
    for function, state in zip(functions, states, strict=True):
        if state is not None and hasattr(function, "load_state_dict"):
            try:
                function.load_state_dict(state)
            except (KeyError, TypeError, ValueError) as error:
                raise ResumeError(
                    f"the resume file {str(path)!r} holds a state that the callback {function!r} cannot take: {error}"
                ) from None
