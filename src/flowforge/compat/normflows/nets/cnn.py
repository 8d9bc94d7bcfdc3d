"""normflows' ``nf.nets.cnn``: its ``ConvNet2d`` with normflows' layer sequence, state_dict layout
and numerics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..utils.nn import ActNorm


class ConvNet2d(nn.Module):
    """normflows' ``ConvNet2d(channels, kernel_size, leaky=0.0, init_zeros=True, actnorm=False,
    weight_std=None)``: convolutions ``channels[i] → channels[i+1]`` with kernel ``kernel_size[i]`` and
    "same" padding, ``LeakyReLU(leaky)`` between them; with ``actnorm``, the hidden convolutions have
    no bias and are followed by normflows' ActNorm (data-dependent initialisation at the first
    call); ``weight_std`` draws every convolution's weight from ``N(0, weight_std²)``; ``init_zeros``
    zeroes the last convolution."""

    def __init__(
        self,
        channels: Sequence[int],
        kernel_size: Sequence[int],
        leaky: float = 0.0,
        init_zeros: bool = True,
        actnorm: bool = False,
        weight_std: float | None = None,
    ):
        super().__init__()
        if len(channels) < len(kernel_size) + 1:
            raise ValueError(
                f"need a channel count per convolution plus one, got {list(channels)} for kernels {list(kernel_size)}"
            )
        net: list[nn.Module] = []
        for i in range(len(kernel_size) - 1):
            k = kernel_size[i]
            conv = nn.Conv2d(channels[i], channels[i + 1], k, padding=k // 2, bias=not actnorm)
            if weight_std is not None:
                nn.init.normal_(conv.weight, mean=0.0, std=weight_std)
            net.append(conv)
            if actnorm:
                net.append(ActNorm((channels[i + 1], 1, 1)))
            net.append(nn.LeakyReLU(leaky))
        k = kernel_size[-1]
        last = nn.Conv2d(channels[len(kernel_size) - 1], channels[len(kernel_size)], k, padding=k // 2)
        if init_zeros:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)  # type: ignore[arg-type]  # the last convolution has a bias
        net.append(last)
        self.net = nn.Sequential(*net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


__all__ = ["ConvNet2d"]
