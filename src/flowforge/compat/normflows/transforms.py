"""normflows' ``nf.transforms``: ``Logit`` (the last layer of image models on ``[0, 1]``) and ``Shift``."""

from __future__ import annotations

import torch

from ...flows.base import Flow
from ...flows.bounded import Sigmoid


class Logit(Sigmoid):
    r"""normflows' ``transforms.Logit(alpha=0.05)``: flowforge's :class:`~flowforge.flows.Sigmoid` with
    the squeeze ``α``: ``forward`` maps the real line onto ``(−α, 1 − α)/(1 − 2α)`` ⊃ ``[0, 1]``,
    ``x = (σ(z) − α)/(1 − 2α)``, and ``inverse`` is RealNVP's logit preprocessing
    ``z = logit(α + (1 − 2α) x)``. Only the default ``α`` differs from the native class."""

    def __init__(self, alpha: float = 0.05):
        super().__init__(alpha)


class Shift(Flow):
    """normflows' ``transforms.Shift(shift=-0.5)``: ``inverse`` (data → latent) adds ``shift``, mapping
    data on ``[0, 1]`` onto ``[−0.5, 0.5]`` by default; ``forward`` subtracts it; log-det 0. Unlike
    normflows, the input tensor is not modified in place."""

    def __init__(self, shift: float = -0.5):
        super().__init__()
        self.shift = shift

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z - self.shift, z.new_zeros(z.shape[0])

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + self.shift, x.new_zeros(x.shape[0])


__all__ = ["Logit", "Shift"]
