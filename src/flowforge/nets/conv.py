"""Convolutional conditioner for image couplings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ConvNet2d(nn.Module):
    """``channels[0] -> … -> channels[-1]`` convolutions with 'same' padding and (leaky) ReLU between.

    As normflows' ``ConvNet2d(channels, kernel_size, leaky, init_zeros, actnorm)``; ``kernel_size``
    has one entry per convolution; ``init_zeros`` zeroes the last one (identity couplings);
    ``actnorm`` adds a learned per-channel scale and shift after each hidden convolution.
    """

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
        if len(kernel_size) != len(channels) - 1:
            raise ValueError(f"need one kernel size per convolution: {len(channels) - 1}, got {len(kernel_size)}")
        layers: list[nn.Module] = []
        convs: list[nn.Conv2d] = []
        for index, (c_in, c_out, k) in enumerate(zip(channels[:-1], channels[1:], kernel_size, strict=True)):
            conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=not actnorm or index == len(kernel_size) - 1)
            if weight_std is not None:
                nn.init.normal_(conv.weight, std=weight_std)
            layers.append(conv)
            convs.append(conv)
            if index < len(kernel_size) - 1:
                if actnorm:
                    layers.append(_ChannelAffine(c_out))
                layers.append(nn.LeakyReLU(leaky) if leaky else nn.ReLU())
        if init_zeros:
            last = convs[-1]
            assert last.bias is not None  # the last convolution always has a bias (no ActNorm after it)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers)
        self.in_channels, self.out_channels = channels[0], channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ChannelAffine(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift
