"""normflows' ``nf.flows.mixing`` path: permutations and invertible linear maps, with normflows'
directions, parameterisations and ``state_dict`` keys.

normflows' linear layers differ from flowforge's in direction and parameters, not only in names:
its ``InvertibleAffine``/``Invertible1x1Conv`` map ``z ↦ z W⁻¹`` (row vectors; per pixel for images)
in ``forward`` with ``W = P L U`` (or a plain ``W``), and its ``LULinearPermute`` solves the LU
system in ``forward`` (the density direction of flowforge's layer of that name). These are
therefore small classes of their own, written from normflows' formulas, whose parameters are
normflows' (``P, L, sign_S, log_S, U, eye`` or ``W``; ``permutation._permutation``,
``linear.lower_entries``, ...), so a normflows checkpoint loads unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ....flows.base import Flow
from ....flows.mixing import Permute as NativePermute
from .._state import normflows_state, renamed

__all__ = ["Flow", "InvertibleAffine", "Invertible1x1Conv", "LULinearPermute", "Permute"]


class Permute(NativePermute):
    r"""normflows' ``Permute(num_channels, mode="shuffle")`` (flowforge's layer): ``"shuffle"`` a fixed
    random permutation of dimension 1, ``"swap"`` the two halves exchanged. Its ``state_dict`` is
    normflows': ``perm`` and ``inv_perm`` for ``"shuffle"``, nothing for ``"swap"``. Both directions
    take normflows' optional ``context`` and ignore it."""

    def __init__(self, num_channels: int, mode: str = "shuffle"):
        super().__init__(num_channels, mode)
        if mode == "shuffle":
            normflows_state(self, *renamed({"permutation": "perm", "inverse_permutation": "inv_perm"}))
        else:  # fixed by the mode: normflows saves nothing
            self.register_buffer("permutation", self.permutation, persistent=False)
            self.register_buffer("inverse_permutation", self.inverse_permutation, persistent=False)

    # normflows' signatures take (and ignore) a context.
    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(z)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return super().inverse(x)


def _inverse_in_float64(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix⁻¹``, computed in float64 and returned in ``matrix``'s dtype (as normflows)."""
    if matrix.dtype == torch.float64:
        return torch.inverse(matrix)
    return torch.inverse(matrix.double()).to(matrix.dtype)


class _NormflowsMatrix(Flow):
    """A learned invertible ``C × C`` matrix ``W`` in normflows' parameterisation: plain (``W``) or
    ``W = P L U`` with ``P`` fixed, ``L`` unit lower triangular (``L``), ``U`` strictly upper (``U``)
    plus the diagonal ``sign_S ⊙ exp(log_S)``, starting at a random rotation (QR of a Gaussian)."""

    # Buffers of the LU parameterisation.
    P: torch.Tensor
    sign_S: torch.Tensor
    eye: torch.Tensor

    def __init__(self, num_channels: int, use_lu: bool):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be a positive int, got {num_channels}")
        self.num_channels, self.use_lu = num_channels, use_lu
        rotation, _ = torch.linalg.qr(torch.randn(num_channels, num_channels))
        if use_lu:
            permutation, lower, upper = torch.linalg.lu(rotation)
            diagonal = upper.diagonal()
            self.register_buffer("P", permutation)
            self.L = nn.Parameter(lower)
            self.register_buffer("sign_S", torch.sign(diagonal))
            self.log_S = nn.Parameter(torch.log(diagonal.abs()))
            self.U = nn.Parameter(torch.triu(upper, diagonal=1))
            self.register_buffer("eye", torch.eye(num_channels))
        else:
            self.W = nn.Parameter(rotation)

    def _weight(self, inverse: bool) -> torch.Tensor:
        """``W`` or ``W⁻¹`` (inverses in float64, as normflows)."""
        if not self.use_lu:
            return _inverse_in_float64(self.W) if inverse else self.W
        lower = torch.tril(self.L, diagonal=-1) + self.eye
        upper = torch.triu(self.U, diagonal=1) + torch.diag(self.sign_S * torch.exp(self.log_S))
        if inverse:
            return _inverse_in_float64(upper) @ _inverse_in_float64(lower) @ self.P.t()
        return self.P @ lower @ upper

    def _log_abs_det(self) -> torch.Tensor:
        return torch.sum(self.log_S) if self.use_lu else torch.linalg.slogdet(self.W)[1]

    def _check(self, v: torch.Tensor, image: bool) -> None:
        dims = 4 if image else 2
        if v.dim() != dims or v.shape[1] != self.num_channels:
            expected = f"(batch, {self.num_channels}, height, width)" if image else f"(batch, {self.num_channels})"
            raise ValueError(f"{type(self).__name__} expects input of shape {expected}, got {tuple(v.shape)}")


class InvertibleAffine(_NormflowsMatrix):
    r"""normflows' ``InvertibleAffine(num_channels, use_lu=True)``: ``forward`` maps rows ``z ↦ z W⁻¹``
    with ``log|det| = −log|det W|``, ``inverse`` maps ``x ↦ x W`` with ``+log|det W|``; ``W = P L U``
    (``log|det W| = Σ log_S``, O(C)) or a plain ``W`` (``slogdet``). The one-dimensional Glow 1x1
    convolution. Both directions cheap. The log-determinant has shape ``(batch,)`` (normflows': a
    scalar)."""

    def __init__(self, num_channels: int, use_lu: bool = True):
        super().__init__(num_channels, use_lu)

    def _map(self, v: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(v, image=False)
        sign = 1.0 if inverse else -1.0
        return v @ self._weight(inverse=not inverse), (sign * self._log_abs_det()).expand(v.shape[0])

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._map(z, inverse=False)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._map(x, inverse=True)


class Invertible1x1Conv(_NormflowsMatrix):
    r"""normflows' ``Invertible1x1Conv(num_channels, use_lu=False)`` (Glow, Kingma & Dhariwal 2018,
    https://arxiv.org/abs/1807.03039) on images ``(batch, C, H, W)``: ``forward`` is the 1x1
    convolution with ``W⁻¹`` (``x[:, :, h, w] = W⁻¹ z[:, :, h, w]``), ``log|det| = −H·W·log|det W|``;
    ``inverse`` the convolution with ``W``. Both directions cheap."""

    def __init__(self, num_channels: int, use_lu: bool = False):
        super().__init__(num_channels, use_lu)

    def _map(self, v: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(v, image=True)
        weight = self._weight(inverse=not inverse).reshape(self.num_channels, self.num_channels, 1, 1)
        sign = 1.0 if inverse else -1.0
        log_det = sign * self._log_abs_det() * (v.shape[2] * v.shape[3])
        return F.conv2d(v, weight), log_det.expand(v.shape[0])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._map(z, inverse=False)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._map(x, inverse=True)


class _Permutation(Flow):
    """A fixed permutation of dimension ``dim``, saved as the buffer ``_permutation`` (nflows')."""

    _permutation: torch.Tensor

    def __init__(self, permutation: torch.Tensor, dim: int = 1):
        super().__init__()
        if permutation.dim() != 1:
            raise ValueError(f"the permutation must be a 1-D tensor, got shape {tuple(permutation.shape)}")
        self._dim = dim
        self.register_buffer("_permutation", permutation)

    def _permute(self, v: torch.Tensor, permutation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dim >= v.dim() or v.shape[self._dim] != len(permutation):
            raise ValueError(
                f"expected an input with {len(permutation)} entries along dimension {self._dim}, got {tuple(v.shape)}"
            )
        return v.index_select(self._dim, permutation), v.new_zeros(v.shape[0])

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._permute(z, self._permutation)

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._permute(x, torch.argsort(self._permutation))


class _RandomPermutation(_Permutation):
    """A random permutation of ``features`` entries, drawn at construction."""

    def __init__(self, features: int, dim: int = 1):
        super().__init__(torch.randperm(features), dim)


class _LULinear(Flow):
    r"""nflows' LU-parameterised linear map ``y = L U v + b`` (Durkan et al. 2019): ``L`` unit lower
    triangular from ``lower_entries``, ``U`` upper triangular from ``upper_entries`` with diagonal
    ``softplus(unconstrained_upper_diag) + eps``; ``log|det| = Σ log diag(U)``. ``forward`` is two
    matrix products, ``inverse`` two triangular solves."""

    def __init__(self, features: int, identity_init: bool = True, eps: float = 1e-3):
        super().__init__()
        self.features, self.eps = features, eps
        triangle = (features - 1) * features // 2
        self.bias = nn.Parameter(torch.zeros(features))
        self.lower_entries = nn.Parameter(torch.zeros(triangle))
        self.upper_entries = nn.Parameter(torch.zeros(triangle))
        self.unconstrained_upper_diag = nn.Parameter(torch.zeros(features))
        with torch.no_grad():
            if identity_init:  # softplus(c) + eps = 1
                self.unconstrained_upper_diag.fill_(float(np.log(np.exp(1 - eps) - 1)))
            else:
                bound = 1.0 / np.sqrt(features)
                for entries in (self.lower_entries, self.upper_entries, self.unconstrained_upper_diag):
                    entries.uniform_(-bound, bound)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.features
        rows, cols = torch.tril_indices(n, n, offset=-1, device=self.bias.device)
        upper_rows, upper_cols = torch.triu_indices(n, n, offset=1, device=self.bias.device)
        diagonal = F.softplus(self.unconstrained_upper_diag) + self.eps
        lower = self.lower_entries.new_zeros(n, n).index_put((rows, cols), self.lower_entries)
        lower = lower + torch.eye(n, dtype=lower.dtype, device=lower.device)
        upper = self.upper_entries.new_zeros(n, n).index_put((upper_rows, upper_cols), self.upper_entries)
        return lower, upper + torch.diag(diagonal), torch.sum(torch.log(diagonal))

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper, log_det = self._factors()
        return F.linear(F.linear(z, upper), lower, self.bias), log_det * z.new_ones(z.shape[0])

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper, log_det = self._factors()
        v = torch.linalg.solve_triangular(lower, (x - self.bias).t(), upper=False, unitriangular=True)
        v = torch.linalg.solve_triangular(upper, v, upper=True)
        return v.t(), -log_det * x.new_ones(x.shape[0])


class LULinearPermute(Flow):
    r"""normflows' ``LULinearPermute(num_channels, identity_init=True)`` (Durkan et al. 2019,
    https://arxiv.org/abs/1906.04032): a fixed random permutation ``π`` and an LU linear map
    ``y = L U v + b`` (:class:`_LULinear`). ``inverse`` (density direction) permutes then applies
    the linear map, ``log|det| = Σ log diag(U)``; ``forward`` undoes both by triangular solves.
    Submodules ``permutation`` and ``linear`` with normflows' parameter names."""

    def __init__(self, num_channels: int, identity_init: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.permutation = _RandomPermutation(num_channels)
        self.linear = _LULinear(num_channels, identity_init=identity_init)

    def _check(self, v: torch.Tensor) -> None:
        if v.dim() != 2 or v.shape[1] != self.num_channels:
            raise ValueError(
                f"LULinearPermute expects input of shape (batch, {self.num_channels}), got {tuple(v.shape)}"
            )

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        v, log_det = self.linear.inverse(z)
        return self.permutation.inverse(v)[0], log_det

    def inverse(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        v, _ = self.permutation(x)
        return self.linear(v)
