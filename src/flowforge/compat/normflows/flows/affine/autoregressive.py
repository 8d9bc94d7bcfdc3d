r"""normflows' ``nf.flows.affine.autoregressive``: nflows' autoregressive layers with normflows'
structure, direction and numerics (MAF, Papamakarios et al. 2017, https://arxiv.org/abs/1705.07057).

Direction (normflows'): ``forward`` is the cheap one (one MADE pass on its input); ``inverse``
takes ``D`` passes. This is the opposite of flowforge's native
:class:`~flowforge.flows.MaskedAffineAutoregressive`, whose cheap direction is ``inverse``; in
normflows a MAF therefore samples cheaply and evaluates densities in ``D`` passes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .....flows.base import Flow
from ...nets import made as made_module
from ...utils.nn import sum_except_batch

Activation = made_module.Activation


class Autoregressive(Flow):
    """normflows' ``Autoregressive(autoregressive_net)``: an elementwise transform of each coordinate
    whose parameters ``autoregressive_net(inputs, context)`` depend only on earlier coordinates.
    ``forward`` uses one net pass; ``inverse`` recovers the coordinates one by one (``D`` passes)."""

    takes_context = True

    def __init__(self, autoregressive_net: nn.Module):
        super().__init__()
        self.autoregressive_net = autoregressive_net

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._elementwise_forward(inputs, self.autoregressive_net(inputs, context))

    def inverse(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = torch.zeros_like(inputs)
        logabsdet = inputs.new_zeros(inputs.shape[0])
        for _ in range(math.prod(inputs.shape[1:])):
            outputs, logabsdet = self._elementwise_inverse(inputs, self.autoregressive_net(outputs, context))
        return outputs, logabsdet

    def _output_dim_multiplier(self) -> int:
        raise NotImplementedError

    def _elementwise_forward(
        self, inputs: torch.Tensor, autoregressive_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _elementwise_inverse(
        self, inputs: torch.Tensor, autoregressive_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class MaskedAffineAutoregressive(Autoregressive):
    r"""normflows' ``MaskedAffineAutoregressive(features, hidden_features, context_features=None,
    num_blocks=2, use_residual_blocks=True, random_mask=False, activation=F.relu,
    dropout_probability=0.0, use_batch_norm=False)``: ``y = s ⊙ x + t`` with
    ``s = σ(ŝ + 2) + 10⁻³`` and ``(ŝ, t)`` from a :class:`~flowforge.compat.normflows.nets.MADE`
    (``self.autoregressive_net``; outputs ``[ŝ_d, t_d]`` per feature); ``log|det| = Σ log s``.
    Cheap ``forward``, ``D``-pass ``inverse`` (see the module docstring)."""

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_blocks: int = 2,
        use_residual_blocks: bool = True,
        random_mask: bool = False,
        activation: Activation = F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
    ):
        self.features = features
        made = made_module.MADE(
            features=features, hidden_features=hidden_features, context_features=context_features,
            num_blocks=num_blocks, output_multiplier=self._output_dim_multiplier(),
            use_residual_blocks=use_residual_blocks, random_mask=random_mask, activation=activation,
            dropout_probability=dropout_probability, use_batch_norm=use_batch_norm,
        )  # fmt: skip
        super().__init__(made)
        self.takes_context = context_features is not None

    def _output_dim_multiplier(self) -> int:
        return 2

    def _scale_and_shift(self, autoregressive_params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = autoregressive_params.view(-1, self.features, self._output_dim_multiplier())
        return torch.sigmoid(params[..., 0] + 2.0) + 1e-3, params[..., 1]

    def _elementwise_forward(
        self, inputs: torch.Tensor, autoregressive_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self._scale_and_shift(autoregressive_params)
        return scale * inputs + shift, sum_except_batch(torch.log(scale), num_batch_dims=1)

    def _elementwise_inverse(
        self, inputs: torch.Tensor, autoregressive_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self._scale_and_shift(autoregressive_params)
        return (inputs - shift) / scale, -sum_except_batch(torch.log(scale), num_batch_dims=1)


__all__ = ["Autoregressive", "MaskedAffineAutoregressive"]
