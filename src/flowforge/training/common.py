"""What the training loops share: their results, the divergence error, periodic callbacks, and
moving a model to its device with the list of what a step must update.

The step loop (:mod:`flowforge.training.loop`) returns a :class:`FitResult`; the epoch loop
(:mod:`flowforge.training.epochs`) a :class:`DataFitResult` or a :class:`VAEFitResult`. Every loop
raises :class:`TrainingDiverged` on a non-finite loss, after restoring the model to a good state, and
:class:`TrainingInterrupted` when SIGINT, SIGTERM or SIGHUP stopped it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import torch
from torch import nn

from ..nets.lipschitz import SpectralNormLinear
from .interrupt import signal_name


@dataclass
class FitResult:
    """What a fit by steps did: loss per step, timing (seconds), whether it was compiled and whether
    the step was the fused one (loss, gradient and Adam update in one compiled call)."""

    loss_history: np.ndarray
    iterations: int
    wall_time: float
    step_time: float
    compiled: bool
    compile_time: float = 0.0
    device: str = "cpu"
    fused: bool = False

    @property
    def iterations_per_second(self) -> float:
        """Training steps per second, excluding compilation and callbacks."""
        return self.iterations / self.step_time if self.step_time > 0 else float("nan")


@dataclass
class DataFitResult:
    """What a fit to data did, epoch by epoch (NLL in nats per sample)."""

    train_nll: np.ndarray
    validation_nll: np.ndarray
    best_epoch: int
    stopped_early: bool
    wall_time: float

    @property
    def best_validation_nll(self) -> float:
        return float(self.validation_nll[self.best_epoch]) if len(self.validation_nll) else float("nan")


@dataclass
class VAEFitResult:
    """What :func:`~flowforge.training.fit_vae` did, epoch by epoch (nats per data point)."""

    train_loss: np.ndarray
    """the mean training loss: the negative ELBO with the KL term weighted by the warm-up β"""
    validation_elbo: np.ndarray
    best_epoch: int
    stopped_early: bool
    wall_time: float

    @property
    def best_validation_elbo(self) -> float:
        return float(self.validation_elbo[self.best_epoch]) if len(self.validation_elbo) else float("nan")


class TrainingDiverged(RuntimeError):
    """Raised when the loss became NaN or infinite; the model holds the last good state (a fit by
    steps) or the best weights so far (a fit by epochs), and ``result`` what was done until then."""

    def __init__(self, message: str, result: FitResult | DataFitResult | VAEFitResult):
        super().__init__(message)
        self.result = result


class TrainingInterrupted(KeyboardInterrupt):
    """Raised when SIGINT, SIGTERM or SIGHUP stopped a loop (at the step or batch boundary after the
    signal): ``signal_number`` says which, ``result`` holds what was done until then, and ``checkpoint``
    is the training state written at that boundary (None when the loop was given no ``checkpoint``);
    pass it as ``resume=`` to continue. The model holds the current weights (a fit by steps; the last
    good ones if the loss had become non-finite since the last check) or the best weights so far (a
    fit by epochs with validation data). A :class:`KeyboardInterrupt`, so code that handles Ctrl-C
    handles it too."""

    def __init__(
        self, signal_number: int, result: FitResult | DataFitResult | VAEFitResult, checkpoint: Path | None
    ) -> None:
        saved = f"; the training state is saved in {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"training interrupted by {signal_name(signal_number)}{saved}")
        self.signal_number, self.result, self.checkpoint = signal_number, result, checkpoint

    def __reduce__(self) -> tuple:
        return type(self), (self.signal_number, self.result, self.checkpoint)


@dataclass
class Every:
    """Call ``function(iteration, model)`` after every ``interval``-th step (1-based).

    A ``function`` with ``state_dict()`` and ``load_state_dict(state)`` (an object with ``__call__``)
    has its state saved in the loop's checkpoint and restored on resume, so that what it collects
    (frames of an animation) continues where it was; the state must be what ``torch.load`` reads with
    ``weights_only=True`` (tensors, numbers, strings, lists, dicts)."""

    interval: int
    function: Callable[[int, nn.Module], None]

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"callback interval must be >= 1, got {self.interval}")


def default_device() -> torch.device:
    """CUDA when available, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare(
    model: nn.Module, device: str | torch.device | None
) -> tuple[torch.device, list[nn.Parameter], list[SpectralNormLinear]]:
    """Move ``model`` to ``device`` (default: :func:`default_device`); return the device, the trainable
    parameters (at least one) and the Lipschitz layers whose spectral-norm estimates must be
    advanced after every step (residual flows)."""
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameters to fit")
    return device, parameters, [m for m in model.modules() if isinstance(m, SpectralNormLinear)]


def check_learning_rate(lr: float) -> None:
    """ValueError unless ``lr`` is positive."""
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")


def check_patience(patience: int | None) -> None:
    """ValueError unless ``patience`` is None or at least 1."""
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be positive or None, got {patience}")


@overload
def on_device(values: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor: ...


@overload
def on_device(values: None, device: torch.device, dtype: torch.dtype) -> None: ...


def on_device(values: torch.Tensor | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """``values`` on ``device``; floating values in the model's ``dtype``, integer ones (labels) kept."""
    if values is None:
        return None
    return values.to(device=device, dtype=dtype if values.is_floating_point() else values.dtype)
