"""Elementwise affine layers with parameters independent of the input."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .base import EventFlow, Flow, check_event_shape, check_shared_event_shape


class AffineConstFlow(EventFlow):
    r"""Elementwise affine map ``x = z ⊙ exp(s) + t`` with learned ``s`` and ``t``.

    ``log|det ∂x/∂z| = Σᵢ sᵢ`` (the same for every sample). Both directions are cheap
    and exact: ``z = (x − t) ⊙ exp(−s)``. Starts at the identity (``s = t = 0``).
    Used e.g. as the learned scale and shift of RealNVP (Dinh et al. 2017,
    https://arxiv.org/abs/1605.08803) and as the backbone of ActNorm.

    Args:
        shape: event shape; a size of 1 in any dimension shares the parameter along it.
        scale: learn ``s`` (otherwise ``s = 0``).
        shift: learn ``t`` (otherwise ``t = 0``).
    """

    # Parameters when learned, buffers otherwise.
    s: torch.Tensor
    t: torch.Tensor

    def __init__(self, shape: int | Iterable[int], scale: bool = True, shift: bool = True):
        super().__init__(shape)
        parameter_shape = (1, *self.shape)
        if scale:
            self.s = nn.Parameter(torch.zeros(parameter_shape))
        else:
            self.register_buffer("s", torch.zeros(parameter_shape))
        if shift:
            self.t = nn.Parameter(torch.zeros(parameter_shape))
        else:
            self.register_buffer("t", torch.zeros(parameter_shape))

    def check_input(self, x: torch.Tensor) -> None:
        check_shared_event_shape(self, x, self.shape)

    def _log_det(self, x: torch.Tensor) -> torch.Tensor:
        shared = math.prod(x.shape[1:]) // self.s.numel()  # x may have no rows (a process's part of a batch)
        return (shared * self.s.sum()).expand(x.shape[0])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(z)
        return torch.addcmul(self.t, z, torch.exp(self.s)), self._log_det(z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        return (x - self.t) * torch.exp(-self.s), -self._log_det(x)


class Standardization(AffineConstFlow):
    r"""Fixed map between standardised and original units: ``x = μ + σ ⊙ z``, ``z = (x − μ)/σ``.

    ``log|det ∂x/∂z| = Σ log σ``: an :class:`AffineConstFlow` with ``s = log σ`` and ``t = μ``
    fixed (buffers, so they are saved with the model). Placed last in a flow (sampling
    direction), it makes samples and ``log_prob`` use the data's own units while the layers
    before it see standardised data. Both directions cheap. :meth:`from_data` takes the
    statistics of a training set.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        mean, std = torch.as_tensor(mean), torch.as_tensor(std)
        if mean.shape != std.shape:
            raise ValueError(f"mean and std must have the same shape, got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("Standardization needs finite means and positive, finite standard deviations")
        super().__init__(tuple(mean.shape), scale=False, shift=False)
        dtype = mean.dtype if mean.is_floating_point() else torch.get_default_dtype()
        self.s = torch.log(std.to(dtype)).unsqueeze(0)
        self.t = mean.to(dtype).unsqueeze(0)

    @classmethod
    def from_data(cls, data: torch.Tensor) -> Standardization:
        """Statistics of ``data`` ``(rows, features…)``; a constant feature is an error."""
        if data.dim() < 2 or data.shape[0] < 2:
            raise ValueError(f"need at least 2 rows of data, got shape {tuple(data.shape)}")
        std = data.std(0, unbiased=False)
        constant = torch.nonzero(std == 0).flatten().tolist()
        if constant:
            raise ValueError(f"feature(s) {constant} are constant in the data; a density cannot be fitted to them")
        return cls(data.mean(0), std)

    def check_input(self, x: torch.Tensor) -> None:
        # Statistics are per feature: unlike AffineConstFlow, no axis is shared.
        check_event_shape(self, x, self.shape)


def _cholesky(covariance: torch.Tensor) -> torch.Tensor:
    """The lower Cholesky factor of a covariance; a singular one is an error."""
    cholesky, info = torch.linalg.cholesky_ex(covariance)
    if info:
        raise ValueError("the data's covariance is singular (constant or collinear columns)")
    return cholesky


class Whitening(Flow):
    r"""Fixed full-covariance map between whitened and original units: ``x = μ + L z``,
    ``z = L⁻¹(x − μ)`` with ``L`` lower triangular (the Cholesky factor of a covariance).

    ``log|det ∂x/∂z| = Σ log Lᵢᵢ``. Placed last in a flow (sampling direction), with the mean and
    covariance of the training data (:meth:`from_data`), the model starts as the full-covariance
    Gaussian fitted to the data and the layers before it learn what that Gaussian misses. ``μ`` and
    ``L`` are buffers (saved with the model, not trained). Both directions cheap (a triangular
    solve for the inverse).

    The map is computed in the wider of the input's dtype and the buffers', and returned in the
    input's: statistics kept in float64 (:meth:`from_data` of float64 data) keep their precision
    for float64 inputs in a model that otherwise runs in float32, which is what data far from the
    origin (an offset of 1e6 with a spread of 1) need.
    """

    mean: torch.Tensor
    cholesky: torch.Tensor

    def __init__(self, mean: torch.Tensor, cholesky: torch.Tensor):
        super().__init__()
        mean, cholesky = torch.as_tensor(mean), torch.as_tensor(cholesky)
        dim = mean.shape[0] if mean.dim() == 1 else -1
        if mean.dim() != 1 or cholesky.shape != (dim, dim):
            raise ValueError(f"Whitening needs a mean (D,) and a (D, D) factor, got {mean.shape} and {cholesky.shape}")
        diagonal = torch.diagonal(cholesky)
        if not (torch.isfinite(cholesky).all() and torch.isfinite(mean).all() and (diagonal > 0).all()):
            raise ValueError("Whitening needs a finite mean and a lower-triangular factor with a positive diagonal")
        self.shape = (dim,)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("cholesky", torch.tril(cholesky))

    @classmethod
    def from_data(cls, data: torch.Tensor) -> Whitening:
        """Mean and covariance (maximum likelihood) of ``data`` ``(rows, D)``; a singular covariance is an error."""
        if data.dim() != 2 or data.shape[0] < 2:
            raise ValueError(f"need (rows >= 2, features) data, got shape {tuple(data.shape)}")
        covariance = torch.atleast_2d(torch.cov(data.T.double(), correction=0))
        return cls(data.mean(0), _cholesky(covariance).to(data.dtype))

    @classmethod
    def from_moments(cls, mean: torch.Tensor, covariance: torch.Tensor) -> Whitening:
        """The map of a mean ``(D,)`` and a covariance ``(D, D)`` (e.g. of
        :func:`~flowforge.streaming.moments`, one streaming pass over data larger than memory); a
        singular covariance is an error."""
        return cls(mean, _cholesky(covariance.double()).to(covariance.dtype))

    def _statistics(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and factor in the wider of ``like``'s dtype and the buffers'."""
        dtype = torch.promote_types(like.dtype, self.mean.dtype)
        return self.mean.to(dtype), self.cholesky.to(dtype)

    def _log_det(self, like: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.diagonal(self.cholesky)).sum().to(like.dtype).expand(like.shape[0])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_event_shape(self, z, self.shape)
        mean, cholesky = self._statistics(z)
        return (mean + z.to(mean.dtype) @ cholesky.T).to(z.dtype), self._log_det(z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_event_shape(self, x, self.shape)
        mean, cholesky = self._statistics(x)
        z = torch.linalg.solve_triangular(cholesky, (x.to(mean.dtype) - mean).T, upper=False).T
        return z.to(x.dtype), -self._log_det(x)
