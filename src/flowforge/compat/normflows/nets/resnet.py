"""normflows' ``nf.nets.resnet``: nflows' residual conditioners with normflows' structure, parameter
names and numerics (``initial_layer``, ``blocks[i].linear_layers``/``conv_layers``,
``blocks[i].context_layer``, ``final_layer``).

A block maps ``h ↦ h + t`` with ``t = W₂ drop(act(BN(W₁ act(BN(h)))))``; with a context ``c``, ``t`` is
gated: ``t ← GLU([t, V c]) = t ⊙ σ(V c)``. The context also enters the first layer, concatenated to
the input. flowforge's native :class:`~flowforge.nets.ResidualNet` adds the context instead of gating
by it and has no batch norm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Activation = Callable[[torch.Tensor], torch.Tensor]


class _Block(nn.Module):
    """What the dense and convolutional residual blocks share (layers built by the subclass)."""

    batch_norm_layers: nn.ModuleList
    linear_layers: nn.ModuleList
    conv_layers: nn.ModuleList
    context_layer: nn.Module
    activation: Activation
    dropout: nn.Dropout
    use_batch_norm: bool

    @property
    def layers(self) -> nn.ModuleList:
        """The block's two linear or convolutional layers."""
        return self.linear_layers if isinstance(self, ResidualBlock) else self.conv_layers

    def _stage(self, index: int, h: torch.Tensor) -> torch.Tensor:
        """Stage ``index`` of the pre-activation branch: [batch norm] → activation → [dropout,
        second stage only] → the stage's layer."""
        if self.use_batch_norm:
            h = self.batch_norm_layers[index](h)
        h = self.activation(h)
        if index == 1:
            h = self.dropout(h)
        return self.layers[index](h)

    def _residual(self, inputs: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        branch = self._stage(1, self._stage(0, inputs))
        if context is None:
            return inputs + branch
        # GLU over the channel axis: the branch times σ(V c).
        gated = F.glu(torch.cat((branch, self.context_layer(context)), dim=1), dim=1)
        return inputs + gated

    def _setup(self, activation: Activation, dropout_probability: float, use_batch_norm: bool, zero_init: bool) -> None:
        self.activation = activation
        self.use_batch_norm = use_batch_norm
        self.dropout = nn.Dropout(p=dropout_probability)
        if zero_init:  # the block starts near the identity
            last = self.layers[-1]
            assert isinstance(last, nn.Linear | nn.Conv2d) and last.bias is not None
            nn.init.uniform_(last.weight, -1e-3, 1e-3)
            nn.init.uniform_(last.bias, -1e-3, 1e-3)


class ResidualBlock(_Block):
    """normflows' ``ResidualBlock(features, context_features, activation=F.relu, dropout_probability=0.0,
    use_batch_norm=False, zero_initialization=True)`` on ``(batch, features)``."""

    def __init__(
        self,
        features: int,
        context_features: int | None,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
        zero_initialization: bool = True,
    ):
        super().__init__()
        if use_batch_norm:
            self.batch_norm_layers = nn.ModuleList(nn.BatchNorm1d(features, eps=1e-3) for _ in range(2))
        if context_features is not None:
            self.context_layer = nn.Linear(context_features, features)
        self.linear_layers = nn.ModuleList(nn.Linear(features, features) for _ in range(2))
        self._setup(activation, dropout_probability, use_batch_norm, zero_initialization)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self._residual(inputs, context)


class ConvResidualBlock(_Block):
    """normflows' ``ConvResidualBlock(channels, context_channels=None, activation=F.relu,
    dropout_probability=0.0, use_batch_norm=False, zero_initialization=True)``: 3×3 convolutions
    ("same" padding), a 1×1 convolution of the context for the gate."""

    def __init__(
        self,
        channels: int,
        context_channels: int | None = None,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
        zero_initialization: bool = True,
    ):
        super().__init__()
        if context_channels is not None:
            self.context_layer = nn.Conv2d(context_channels, channels, kernel_size=1, padding=0)
        if use_batch_norm:
            self.batch_norm_layers = nn.ModuleList(nn.BatchNorm2d(channels, eps=1e-3) for _ in range(2))
        self.conv_layers = nn.ModuleList(nn.Conv2d(channels, channels, kernel_size=3, padding=1) for _ in range(2))
        self._setup(activation, dropout_probability, use_batch_norm, zero_initialization)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self._residual(inputs, context)


class ResidualNet(nn.Module):
    """normflows' ``ResidualNet(in_features, out_features, hidden_features, context_features=None,
    num_blocks=2, activation=F.relu, dropout_probability=0.0, use_batch_norm=False, preprocessing=None)``:
    ``preprocessing → initial_layer([x, c]) → blocks → final_layer`` on ``(batch, in_features)``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
        preprocessing: nn.Module | None = None,
    ):
        super().__init__()
        self.hidden_features, self.context_features = hidden_features, context_features
        self.preprocessing = preprocessing
        self.initial_layer = nn.Linear(in_features + (context_features or 0), hidden_features)
        self.blocks = nn.ModuleList(
            ResidualBlock(hidden_features, context_features, activation, dropout_probability, use_batch_norm)
            for _ in range(num_blocks)
        )
        self.final_layer = nn.Linear(hidden_features, out_features)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        temps = inputs if self.preprocessing is None else self.preprocessing(inputs)
        temps = self.initial_layer(temps if context is None else torch.cat((temps, context), dim=1))
        for block in self.blocks:
            temps = block(temps, context=context)
        return self.final_layer(temps)


class ConvResidualNet(nn.Module):
    """normflows' ``ConvResidualNet(in_channels, out_channels, hidden_channels, context_channels=None,
    num_blocks=2, activation=F.relu, dropout_probability=0.0, use_batch_norm=False)``: 1×1
    ``initial_layer`` on ``[x, c]`` (channels), :class:`ConvResidualBlock` s, 1×1 ``final_layer``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        context_channels: int | None = None,
        num_blocks: int = 2,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
    ):
        super().__init__()
        self.context_channels, self.hidden_channels = context_channels, hidden_channels
        self.initial_layer = nn.Conv2d(in_channels + (context_channels or 0), hidden_channels, kernel_size=1)
        self.blocks = nn.ModuleList(
            ConvResidualBlock(hidden_channels, context_channels, activation, dropout_probability, use_batch_norm)
            for _ in range(num_blocks)
        )
        self.final_layer = nn.Conv2d(hidden_channels, out_channels, kernel_size=1)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        temps = self.initial_layer(inputs if context is None else torch.cat((inputs, context), dim=1))
        for block in self.blocks:
            temps = block(temps, context)
        return self.final_layer(temps)


__all__ = ["ConvResidualBlock", "ConvResidualNet", "ResidualBlock", "ResidualNet"]
