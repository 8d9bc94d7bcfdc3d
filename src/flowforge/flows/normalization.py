"""Normalisation layers as flows: ActNorm and BatchNorm."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..utils.batch_statistics import batch_moments, batch_rows, synchronizing
from .affine import AffineConstFlow
from .base import Flow, as_event_shape, check_shared_event_shape


class ActNorm(AffineConstFlow):
    r"""Affine layer ``x = z ⊙ exp(s) + t`` whose parameters are set from the first batch it sees
    (Kingma & Dhariwal 2018, Glow, https://arxiv.org/abs/1807.03039).

    On its first call in the density direction (``inverse``) it sets ``t`` and ``s`` to the batch
    mean and log standard deviation, so that its output has zero mean and unit variance per
    parameter; on a first call in the sampling direction (``forward``) it standardises that
    direction's output instead. Statistics are taken over the batch and over every axis where
    ``shape`` is 1 (e.g. ``(C, 1, 1)`` for per-channel image statistics), so a first batch of one
    image is enough when the parameters are shared over its pixels. Whether it has been
    initialised is a buffer, so a saved and reloaded model is not initialised again.
    """

    initialized: torch.Tensor

    def __init__(self, shape: int | Iterable[int], scale: bool = True, shift: bool = True):
        super().__init__(shape, scale, shift)
        self.register_buffer("initialized", torch.tensor(False))
        self._initialized = False
        self.batch_dims = [0] + [i + 1 for i, size in enumerate(self.shape) if size == 1]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._initialized = bool(self.initialized)

    @property
    def couples_batch(self) -> bool:
        """Until initialised, the first batch sets the parameters, so every row depends on the others."""
        return not self._initialized

    @torch.no_grad()
    def _initialize(self, values: torch.Tensor, density_direction: bool) -> None:
        per_statistic = math.prod(values.shape[1:]) // self.s.numel() * batch_rows(values)
        if per_statistic < 2:
            raise ValueError(
                "ActNorm initialises from the first batch, which needs at least 2 samples per parameter "
                f"(rows × positions the parameter is shared over), got a batch of shape {tuple(values.shape)}"
            )
        mean, var = batch_moments(values, self.batch_dims, unbiased=True)
        std = var.sqrt() if synchronizing() else values.std(dim=self.batch_dims, keepdim=True)
        log_std = torch.log(std + 1e-6)
        if density_direction:
            self.s.copy_(log_std)
            self.t.copy_(mean)
        else:
            self.s.copy_(-log_std)
            self.t.copy_(-mean * torch.exp(-log_std))
        self.initialized.fill_(True)
        self._initialized = True

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._initialized:
            self.check_input(z)
            self._initialize(z, density_direction=False)
        return super().forward(z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._initialized:
            self.check_input(x)
            self._initialize(x, density_direction=True)
        return super().inverse(x)


class BatchNorm(Flow):
    r"""Batch normalisation as a flow (Dinh et al. 2017, RealNVP, https://arxiv.org/abs/1605.08803).

    Density direction (``inverse``): ``z = (x − μ) / sqrt(σ² + ε)``,
    ``log|det| = −½ Σ log(σ² + ε)``; sampling direction (``forward``): ``x = μ + z sqrt(σ² + ε)``.
    In training mode ``inverse`` uses the batch's statistics (treated as constants of the map, as
    in RealNVP) and updates running averages with ``momentum``; in evaluation mode, and always in
    ``forward``, the running statistics are used, so the two directions are exact inverses in
    evaluation mode. Statistics are per feature (over the batch and the axes where ``shape`` is 1).
    Without ``shape`` (normflows' ``BatchNorm(eps)``) the shape is the first batch's; a
    ``state_dict`` loaded before any batch sets it too.
    """

    # Buffers, registered once the shape is known.
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, shape: int | Iterable[int] | None = None, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if isinstance(shape, float):  # normflows' positional BatchNorm(eps)
            shape, eps = None, shape
        if not eps > 0 or not 0 < momentum <= 1:
            raise ValueError(f"need eps > 0 and 0 < momentum <= 1, got {eps}, {momentum}")
        self.eps, self.momentum = float(eps), float(momentum)
        self.shape: tuple[int, ...] | None = None
        if shape is not None:
            self._build(as_event_shape(shape))

    def _build(self, shape: tuple[int, ...], like: torch.Tensor | None = None) -> None:
        self.shape = shape
        dtype, device = (None, None) if like is None else (like.dtype, like.device)
        self.register_buffer("running_mean", torch.zeros(1, *shape, dtype=dtype, device=device))
        self.register_buffer("running_var", torch.ones(1, *shape, dtype=dtype, device=device))
        self.batch_dims = [0] + [i + 1 for i, size in enumerate(shape) if size == 1]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "running_mean"
        if self.shape is None and key in state_dict:
            self._build(tuple(state_dict[key].shape[1:]), state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def couples_batch(self) -> bool:
        """In training mode the density direction normalises with the batch's own statistics."""
        return self.training

    def check_input(self, x: torch.Tensor) -> None:
        shape = self.shape
        if shape is None:
            if x.dim() < 2:
                raise ValueError(f"BatchNorm expects input of shape (batch, ...), got {tuple(x.shape)}")
            shape = tuple(x.shape[1:])
            self._build(shape, x)
        check_shared_event_shape(self, x, shape)

    def _log_det(self, var: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        shared = math.prod(x.shape[1:]) // var.numel()
        return (-0.5 * shared * torch.log(var + self.eps).sum()).expand(x.shape[0])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(z)
        x = self.running_mean + z * torch.sqrt(self.running_var + self.eps)
        return x, -self._log_det(self.running_var, z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        if self.training:
            if batch_rows(x) < 2:
                raise ValueError("BatchNorm in training mode needs batches of at least 2 samples")
            mean, var = batch_moments(x, self.batch_dims, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) / torch.sqrt(var + self.eps), self._log_det(var, x)
