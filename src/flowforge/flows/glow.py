"""The Glow step: ActNorm, invertible 1x1 convolution and affine coupling with a conv net."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from ..nets.conv import ConvNet2d
from .base import Flow, pull_back, push_forward
from .coupling import AffineCouplingBlock
from .linear import Invertible1x1Conv
from .normalization import ActNorm


class GlowBlock(Flow):
    r"""One step of Glow (Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039) on images
    ``(batch, channels, H, W)``.

    In the density direction: ActNorm (per channel, data-initialised) → invertible 1x1
    convolution → affine coupling whose parameters come from a 3-1-3 :class:`ConvNet2d` of
    ``hidden_channels`` on the kept half; in the sampling direction the reverse. Arguments and
    order as normflows' ``GlowBlock``. Both directions cheap.
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        scale: bool = True,
        scale_map: str = "sigmoid",
        split_mode: str = "channel",
        leaky: float = 0.0,
        init_zeros: bool = True,
        use_lu: bool = True,
        net_actnorm: bool = False,
    ):
        super().__init__()
        parameters_per_feature = 2 if scale else 1
        if split_mode == "channel":
            kept, moved = (channels + 1) // 2, channels // 2
        elif split_mode == "channel_inv":
            kept, moved = channels // 2, (channels + 1) // 2
        else:
            kept = moved = channels
        if kept < 1 or moved < 1:
            raise ValueError(f"GlowBlock with split_mode={split_mode!r} needs at least 2 channels, got {channels}")
        net = ConvNet2d(
            (kept, hidden_channels, hidden_channels, parameters_per_feature * moved),
            (3, 1, 3),
            leaky,
            init_zeros,
            net_actnorm,
        )
        flows: list[Flow] = [AffineCouplingBlock(net, scale, scale_map, split_mode)]
        if channels > 1:
            flows.append(Invertible1x1Conv(channels, use_lu))
        flows.append(ActNorm((channels, 1, 1)))
        self.flows = nn.ModuleList(flows)
        self.channels = channels

    def _check(self, v: torch.Tensor) -> None:
        if v.dim() != 4 or v.shape[1] != self.channels:
            raise ValueError(
                f"GlowBlock expects input of shape (batch, {self.channels}, height, width), got {tuple(v.shape)}"
            )

    def _layers(self) -> Sequence[Flow]:
        return cast("Sequence[Flow]", self.flows)  # the Flows built above

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        return push_forward(self._layers(), z)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        return pull_back(self._layers(), x)
