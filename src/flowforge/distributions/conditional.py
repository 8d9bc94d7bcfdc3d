"""Conditional base distributions: ``q0(z | c)`` for a context vector or a class label.

They take the context as a second argument, ``forward(num_samples, context)`` and
``log_prob(z, context)``, with one context row per sample, and set ``takes_context = True``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..flows.base import as_event_shape
from ..utils.checks import positive_int
from .base import BaseDistribution


def _gaussian(loc: torch.Tensor, log_scale: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z = loc + exp(log_scale) eps`` and ``log N(z; loc, exp(2 log_scale))`` for standard normal ``eps``."""
    dim = eps[0].numel()
    log_q = -0.5 * dim * math.log(2 * math.pi) - log_scale.flatten(1).sum(1) - 0.5 * eps.square().flatten(1).sum(1)
    return loc + torch.exp(log_scale) * eps, log_q


def _check_rows(owner: object, z: torch.Tensor, context: torch.Tensor) -> None:
    if context.shape[0] != z.shape[0]:
        raise ValueError(
            f"{type(owner).__name__} needs one context row per sample: got {z.shape[0]} samples "
            f"and a context of shape {tuple(context.shape)}"
        )


class ConditionalDiagGaussian(BaseDistribution):
    r"""Diagonal Gaussian whose parameters are a function of a context:
    ``q0(z | c) = N(z; μ(c), diag σ(c)²)`` with ``[μ(c), log σ(c)] = context_encoder(c)``
    (split in halves along dimension 1; normflows' argument order).

    Args:
        shape: event shape.
        context_encoder: a module mapping ``(batch, context_features)`` to ``(batch, 2·prod(shape))``;
            a zero-initialised last layer starts it at the standard normal.
    """

    takes_context = True

    def __init__(self, shape: int | Iterable[int], context_encoder: nn.Module):
        super().__init__()
        self.shape = as_event_shape(shape)
        self.dim = math.prod(self.shape)
        self.context_encoder = context_encoder

    def _parameters_of(self, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if context is None or context.dim() != 2:
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"ConditionalDiagGaussian needs a context of shape (batch, features), got {got}")
        encoded = self.context_encoder(context)
        if encoded.shape != (context.shape[0], 2 * self.dim):
            raise ValueError(
                f"ConditionalDiagGaussian's context_encoder must return shape ({context.shape[0]}, {2 * self.dim}) "
                f"(mean and log-scale of {self.shape}), got {tuple(encoded.shape)}"
            )
        loc, log_scale = encoded.unflatten(1, (2, *self.shape)).unbind(1)
        return loc, log_scale

    def forward(self, num_samples: int = 1, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = self._parameters_of(context)
        if loc.shape[0] != positive_int("num_samples", num_samples):
            raise ValueError(f"need one context row per sample: {num_samples} samples, {loc.shape[0]} rows")
        return _gaussian(loc, log_scale, torch.randn_like(loc))

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(z)
        loc, log_scale = self._parameters_of(context)
        _check_rows(self, z, loc)
        return _gaussian(loc, log_scale, (z - loc) * torch.exp(-log_scale))[1]


def class_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Validate class labels: integer indices in ``[0, num_classes)`` of shape ``(batch,)``, or a
    one-hot matrix ``(batch, num_classes)``; returns the indices."""
    if labels.dim() == 2 and labels.shape[1] == num_classes and labels.is_floating_point():
        if not ((labels == 0) | (labels == 1)).all() or not (labels.sum(1) == 1).all():
            raise ValueError("a (batch, num_classes) label matrix must be one-hot")
        return labels.argmax(1)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"class labels must be integer indices of shape (batch,) or one-hot of shape (batch, {num_classes}), "
            f"got dtype {labels.dtype} and shape {tuple(labels.shape)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"class labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return labels


class ClassCondDiagGaussian(BaseDistribution):
    r"""A diagonal Gaussian per class: ``q0(z | y) = N(z; μ_y, diag σ_y²)``, all ``μ_y = 0`` and
    ``σ_y = 1`` at the start (the class-conditional prior of Glow, Kingma & Dhariwal 2018).

    Labels are integer indices of shape ``(batch,)`` or one-hot rows; ``forward(num_samples)``
    without labels draws the classes uniformly. normflows' argument order ``(shape, num_classes)``.
    """

    takes_context = True

    def __init__(self, shape: int | Iterable[int], num_classes: int):
        super().__init__()
        self.shape = as_event_shape(shape)
        self.dim = math.prod(self.shape)
        self.num_classes = positive_int("num_classes", num_classes)
        self.loc = nn.Parameter(torch.zeros(num_classes, *self.shape))
        self.log_scale = nn.Parameter(torch.zeros(num_classes, *self.shape))

    def forward(self, num_samples: int = 1, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        positive_int("num_samples", num_samples)
        if y is None:
            y = torch.randint(self.num_classes, (num_samples,), device=self.loc.device)
        y = class_labels(y, self.num_classes)
        if y.shape[0] != num_samples:
            raise ValueError(f"need one label per sample: {num_samples} samples, {y.shape[0]} labels")
        loc, log_scale = self.loc[y], self.log_scale[y]
        return _gaussian(loc, log_scale, torch.randn_like(loc))

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(z)
        if y is None:
            raise ValueError("ClassCondDiagGaussian.log_prob needs the class labels y")
        y = class_labels(y, self.num_classes)
        _check_rows(self, z, y)
        loc, log_scale = self.loc[y], self.log_scale[y]
        return _gaussian(loc, log_scale, (z - loc) * torch.exp(-log_scale))[1]

    def prepare_context(
        self, context: torch.Tensor, rows: int, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels (indices ``(rows,)``, one-hot rows, or an int for every row) as indices for this base
        and as one-hot rows of ``like``'s dtype for the layers."""
        if isinstance(context, int) and not isinstance(context, bool):
            context = torch.full((rows,), context, dtype=torch.long, device=like.device)
        if not isinstance(context, torch.Tensor):
            raise ValueError(f"class labels must be a tensor or an int, got {type(context).__name__}")
        labels = class_labels(context.to(like.device), self.num_classes)
        if labels.shape[0] != rows:
            raise ValueError(
                f"{type(self).__name__}: {labels.shape[0]} labels for {rows} samples; give one label per sample"
            )
        return labels, self.one_hot(labels, like)

    def default_context(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        """Uniformly random classes, one per sample."""
        return torch.randint(self.num_classes, (rows,), device=like.device)

    def one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The labels as one-hot rows of ``like``'s dtype (the context conditional layers receive)."""
        return F.one_hot(class_labels(y, self.num_classes), self.num_classes).to(like.dtype)
