"""Volume-preserving layers that reorder coordinates."""

from __future__ import annotations

import torch

from .base import Flow

PERMUTATION_MODES = ("shuffle", "swap", "reverse")


class Permute(Flow):
    r"""Fixed permutation of the entries along dimension 1 (features or channels).

    ``x = z[:, π]``, ``log|det| = 0``; both directions cost one gather. Modes:
    ``"shuffle"`` (a random permutation drawn from torch's generator at
    construction), ``"swap"`` (exchange the first and second half, as between RealNVP
    couplings, Dinh et al. 2017) and ``"reverse"``. The permutation is a buffer, so it
    is saved with ``state_dict``.
    """

    permutation: torch.Tensor
    inverse_permutation: torch.Tensor

    def __init__(self, num_channels: int, mode: str = "shuffle"):
        super().__init__()
        if mode not in PERMUTATION_MODES:
            raise ValueError(f"Permute mode must be one of {PERMUTATION_MODES}, got {mode!r}")
        if num_channels < 2:
            raise ValueError(f"Permute needs at least 2 channels, got {num_channels}")
        self.num_channels = num_channels
        self.mode = mode
        if mode == "shuffle":
            permutation = torch.randperm(num_channels)
        elif mode == "swap":
            half = num_channels // 2
            permutation = torch.cat([torch.arange(half, num_channels), torch.arange(half)])
        else:
            permutation = torch.arange(num_channels - 1, -1, -1)
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"Permute expects input of shape (batch, {self.num_channels}, ...), got {tuple(x.shape)}")

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        return z.index_select(1, self.permutation), z.new_zeros(z.shape[0])

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        return x.index_select(1, self.inverse_permutation), x.new_zeros(x.shape[0])

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, mode={self.mode!r}"
