r"""normflows' ``nf.flows.neural_spline.autoregressive``: nflows' autoregressive rational-quadratic
spline layer (Durkan et al. 2019, https://arxiv.org/abs/1906.04032) with normflows' structure,
direction (cheap ``forward``, ``D``-pass ``inverse``) and numerics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...nets import made as made_module
from ...utils import splines
from ...utils.nn import PeriodicFeaturesElementwise, sum_except_batch
from ..affine.autoregressive import Autoregressive
from .coupling import Tails, _derivative_count, _spline


class MaskedPiecewiseRationalQuadraticAutoregressive(Autoregressive):
    """normflows' ``MaskedPiecewiseRationalQuadraticAutoregressive(features, hidden_features,
    context_features=None, num_bins=10, tails=None, tail_bound=1.0, num_blocks=2,
    use_residual_blocks=True, random_mask=False, permute_mask=False, activation=F.relu,
    dropout_probability=0.0, use_batch_norm=False, init_identity=True, min_bin_width=1e-3,
    min_bin_height=1e-3, min_derivative=1e-3)``: each coordinate through a rational-quadratic
    spline whose parameters come from a MADE (``self.autoregressive_net``). With per-feature
    ``tails`` the circular features enter the MADE as periodic features
    (:class:`~flowforge.compat.normflows.utils.nn.PeriodicFeaturesElementwise`). ``init_identity``
    zeroes the MADE's last weights and sets its biases to the identity derivative."""

    def __init__(
        self,
        features: int,
        hidden_features: int,
        context_features: int | None = None,
        num_bins: int = 10,
        tails: Tails = None,
        tail_bound: float | torch.Tensor = 1.0,
        num_blocks: int = 2,
        use_residual_blocks: bool = True,
        random_mask: bool = False,
        permute_mask: bool = False,
        activation: made_module.Activation = F.relu,
        dropout_probability: float = 0.0,
        use_batch_norm: bool = False,
        init_identity: bool = True,
        min_bin_width: float = splines.DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = splines.DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = splines.DEFAULT_MIN_DERIVATIVE,
    ):
        self.num_bins = num_bins
        self.min_bin_width, self.min_bin_height, self.min_derivative = min_bin_width, min_bin_height, min_derivative
        self.tails = tails
        preprocessing = None
        if isinstance(tails, list | tuple):
            circular = [i for i in range(features) if tails[i] == "circular"]
            scale = math.pi / tail_bound[circular] if isinstance(tail_bound, torch.Tensor) else math.pi / tail_bound
            preprocessing = PeriodicFeaturesElementwise(features, circular, scale)
        net = made_module.MADE(
            features, hidden_features, context_features, num_blocks, self._output_dim_multiplier(),
            use_residual_blocks, random_mask, permute_mask, activation, dropout_probability, use_batch_norm,
            preprocessing,
        )  # fmt: skip
        if init_identity:
            torch.nn.init.constant_(net.final_layer.weight, 0.0)
            torch.nn.init.constant_(net.final_layer.bias, math.log(math.exp(1 - min_derivative) - 1))
        super().__init__(net)
        self.takes_context = context_features is not None
        if torch.is_tensor(tail_bound):
            self.register_buffer("tail_bound", tail_bound)
        else:
            self.tail_bound = tail_bound

    def _output_dim_multiplier(self) -> int:
        return 2 * self.num_bins + _derivative_count(self.num_bins, self.tails)

    def _elementwise(
        self, inputs: torch.Tensor, autoregressive_params: torch.Tensor, inverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        params = autoregressive_params.view(inputs.shape[0], inputs.shape[1], self._output_dim_multiplier())
        bins = self.num_bins
        widths, heights = params[..., :bins], params[..., bins : 2 * bins]
        hidden = getattr(self.autoregressive_net, "hidden_features", None)  # normflows' MADE has none
        if hidden is not None:
            widths, heights = widths / math.sqrt(hidden), heights / math.sqrt(hidden)
        outputs, logabsdet = _spline(self, inputs, widths, heights, params[..., 2 * bins :], inverse)
        return outputs, sum_except_batch(logabsdet)

    def _elementwise_forward(
        self, inputs: torch.Tensor, autoregressive_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._elementwise(inputs, autoregressive_params)

    def _elementwise_inverse(
        self, inputs: torch.Tensor, autoregressive_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._elementwise(inputs, autoregressive_params, inverse=True)


__all__ = ["MaskedPiecewiseRationalQuadraticAutoregressive"]
