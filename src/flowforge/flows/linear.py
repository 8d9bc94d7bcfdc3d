"""Invertible linear maps: dense (optionally LU-parameterised), 1x1 convolutions, LU with permutation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Flow


class InvertibleMatrix(nn.Module):
    r"""A learned invertible ``C × C`` matrix ``W`` with its log-determinant and inverse.

    Plain: ``W`` is a parameter, ``log|det W|`` by ``slogdet`` (O(C³)). LU (Kingma & Dhariwal
    2018): ``W = P L (U + diag(s))`` with a fixed permutation ``P``, unit lower-triangular ``L``,
    strictly upper ``U`` and ``s = sign ⊙ exp(log|s|)``, so ``log|det W| = Σ log|s|`` (O(C)) and
    the inverse takes two triangular solves. Starts at a random rotation, or at the identity.
    """

    # Buffers of the LU parameterisation (absent when use_lu is False).
    permutation: torch.Tensor
    sign: torch.Tensor
    lower_mask: torch.Tensor

    def __init__(self, num_channels: int, use_lu: bool = True, identity_init: bool = False):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be positive, got {num_channels}")
        self.num_channels, self.use_lu = num_channels, use_lu
        start = (
            torch.eye(num_channels) if identity_init else torch.linalg.qr(torch.randn(num_channels, num_channels))[0]
        )
        if not use_lu:
            self.weight = nn.Parameter(start)
            return
        permutation, lower, upper = torch.linalg.lu(start)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign", torch.sign(diagonal))
        self.register_buffer("lower_mask", torch.tril(torch.ones(num_channels, num_channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_scale = nn.Parameter(torch.log(diagonal.abs()))

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        identity = torch.eye(self.num_channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + identity
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_scale))
        return lower, upper

    def matrix(self) -> torch.Tensor:
        if not self.use_lu:
            return self.weight
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def inverse_matrix(self) -> torch.Tensor:
        if not self.use_lu:
            return torch.linalg.inv(self.weight)
        lower, upper = self._factors()
        identity = torch.eye(self.num_channels, dtype=lower.dtype, device=lower.device)
        lower_inverse = torch.linalg.solve_triangular(lower, identity, upper=False, unitriangular=True)
        upper_inverse = torch.linalg.solve_triangular(upper, identity, upper=True)
        return upper_inverse @ lower_inverse @ self.permutation.T

    def log_abs_det(self) -> torch.Tensor:
        return self.log_scale.sum() if self.use_lu else torch.linalg.slogdet(self.weight)[1]


def _check_channels(owner: object, x: torch.Tensor, channels: int, image: bool) -> None:
    expected_dims = 4 if image else 2
    if x.dim() != expected_dims or x.shape[1] != channels:
        expected = f"(batch, {channels}, height, width)" if image else f"(batch, {channels})"
        raise ValueError(f"{type(owner).__name__} expects input of shape {expected}, got {tuple(x.shape)}")


class InvertibleAffine(Flow):
    r"""``x = W z`` for vectors, with ``W`` an :class:`InvertibleMatrix` (LU by default).

    ``log|det| = log|det W|``; both directions cost one matrix product (the inverse matrix is
    formed from the factors). The one-dimensional version of Glow's 1x1 convolution.
    """

    def __init__(self, num_channels: int, use_lu: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.matrix = InvertibleMatrix(num_channels, use_lu)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_channels(self, z, self.num_channels, image=False)
        return z @ self.matrix.matrix().T, self.matrix.log_abs_det().expand(z.shape[0])

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_channels(self, x, self.num_channels, image=False)
        return x @ self.matrix.inverse_matrix().T, -self.matrix.log_abs_det().expand(x.shape[0])


class Invertible1x1Conv(Flow):
    r"""Invertible 1x1 convolution (Glow; Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039).

    ``x[:, :, h, w] = W z[:, :, h, w]`` for images ``(batch, C, H, W)``;
    ``log|det| = H W log|det W|``. Plain or LU-parameterised ``W``; both directions are one
    convolution.
    """

    def __init__(self, num_channels: int, use_lu: bool = False):
        super().__init__()
        self.num_channels = num_channels
        self.matrix = InvertibleMatrix(num_channels, use_lu)

    def _apply_matrix(self, v: torch.Tensor, matrix: torch.Tensor, log_det: torch.Tensor):
        _check_channels(self, v, self.num_channels, image=True)
        pixels = v.shape[2] * v.shape[3]
        return F.conv2d(v, matrix.view(self.num_channels, self.num_channels, 1, 1)), (pixels * log_det).expand(
            v.shape[0]
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._apply_matrix(z, self.matrix.matrix(), self.matrix.log_abs_det())

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._apply_matrix(x, self.matrix.inverse_matrix(), -self.matrix.log_abs_det())


class LULinearPermute(Flow):
    r"""A fixed random permutation followed by an LU-parameterised linear map with bias:
    ``x = W z[π] + b``, ``log|det| = Σ log|s|`` (as normflows' layer of this name, with the inverse
    by triangular solves rather than the ``torch.trtrs`` PyTorch removed). Starts at the
    permutation when ``identity_init``.
    """

    permutation: torch.Tensor
    inverse_permutation: torch.Tensor

    def __init__(self, num_channels: int, identity_init: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.register_buffer("permutation", torch.randperm(num_channels))
        self.register_buffer("inverse_permutation", torch.argsort(self.permutation))
        self.matrix = InvertibleMatrix(num_channels, use_lu=True, identity_init=identity_init)
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_channels(self, z, self.num_channels, image=False)
        x = torch.addmm(self.bias, z.index_select(1, self.permutation), self.matrix.matrix().T)
        return x, self.matrix.log_abs_det().expand(z.shape[0])

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_channels(self, x, self.num_channels, image=False)
        z = ((x - self.bias) @ self.matrix.inverse_matrix().T).index_select(1, self.inverse_permutation)
        return z, -self.matrix.log_abs_det().expand(x.shape[0])
