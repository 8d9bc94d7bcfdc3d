r"""normflows' ``nf.flows.neural_spline.coupling``: nflows' coupling layers (Durkan et al. 2019,
https://arxiv.org/abs/1906.04032) with normflows' structure, conventions and numerics.

Direction: as in nflows, ``forward`` applies the spline to the transformed coordinates and
``inverse`` undoes it; both cost one conditioner pass. Mask: entries ``> 0`` mark the coordinates
that are *transformed*, the others (the identity features) condition the spline. Inputs are
``(batch, D)`` or images ``(batch, C, H, W)`` split along the channels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .....flows.base import Flow
from ...utils import splines
from ...utils.nn import sum_except_batch

Tails = str | Sequence[str] | None


def _mask_split(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(identity features, transformed features) of a normflows mask (> 0: transformed)."""
    features = torch.arange(len(mask))
    return features.masked_select(mask <= 0), features.masked_select(mask > 0)


def _spline(
    layer: Any, inputs: torch.Tensor, widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor,
    inverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``layer``'s spline: on ``[0, 1]`` without tails, else on ``±layer.tail_bound`` with its tails."""
    bins = (layer.min_bin_width, layer.min_bin_height, layer.min_derivative)
    if layer.tails is None:
        return splines.rational_quadratic_spline(
            inputs, widths, heights, derivatives, inverse, 0.0, 1.0, 0.0, 1.0, *bins
        )  # fmt: skip
    return splines.unconstrained_rational_quadratic_spline(
        inputs, widths, heights, derivatives, inverse, layer.tails, layer.tail_bound, *bins
    )


def _derivative_count(num_bins: int, tails: Tails) -> int:
    """Unnormalised derivatives per coordinate: ``K − 1`` (linear tails), ``K`` (circular), else ``K + 1``."""
    if isinstance(tails, str) and tails == "linear":
        return num_bins - 1
    if isinstance(tails, str) and tails == "circular":
        return num_bins
    return num_bins + 1


class Coupling(Flow):
    """normflows' ``Coupling(mask, transform_net_create_fn, unconditional_transform=None)``: the
    coordinates with ``mask > 0`` are transformed elementwise with parameters
    ``transform_net(identity coordinates, context)``; ``unconditional_transform(features=...)``, if
    given, builds a flow applied to the identity coordinates on their own. Subclasses define
    ``_transform_dim_multiplier`` and the coupling transform in both directions."""

    takes_context = True
    identity_features: torch.Tensor
    transform_features: torch.Tensor

    def __init__(
        self,
        mask: Any,
        transform_net_create_fn: Callable[[int, int], nn.Module],
        unconditional_transform: Callable[..., nn.Module] | None = None,
    ):
        mask = torch.as_tensor(mask)
        if mask.dim() != 1:
            raise ValueError(f"mask must be a vector (one entry per feature), got shape {tuple(mask.shape)}")
        if mask.numel() <= 0:
            raise ValueError("mask must have at least one entry")
        super().__init__()
        self.features = len(mask)
        identity, transform = _mask_split(mask)
        self.register_buffer("identity_features", identity)
        self.register_buffer("transform_features", transform)
        self.transform_net = transform_net_create_fn(
            self.num_identity_features, self.num_transform_features * self._transform_dim_multiplier()
        )
        self.unconditional_transform = (
            None if unconditional_transform is None else unconditional_transform(features=self.num_identity_features)
        )

    @property
    def num_identity_features(self) -> int:
        return len(self.identity_features)

    @property
    def num_transform_features(self) -> int:
        return len(self.transform_features)

    def _check(self, inputs: torch.Tensor) -> None:
        if inputs.dim() not in (2, 4):
            raise ValueError(f"Inputs must be a 2D or a 4D tensor, got shape {tuple(inputs.shape)}.")
        if inputs.shape[1] != self.features:
            raise ValueError(f"Expected features = {self.features}, got {inputs.shape[1]}.")

    def _join(self, like: torch.Tensor, identity: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        outputs = torch.empty_like(like)
        outputs[:, self.identity_features, ...] = identity
        outputs[:, self.transform_features, ...] = transformed
        return outputs

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(inputs)
        identity = inputs[:, self.identity_features, ...]
        params = self.transform_net(identity, context)
        transformed, logabsdet = self._coupling_transform_forward(inputs[:, self.transform_features, ...], params)
        if self.unconditional_transform is not None:
            identity, identity_logabsdet = self.unconditional_transform(identity, context)
            logabsdet = logabsdet + identity_logabsdet
        return self._join(inputs, identity, transformed), logabsdet

    def inverse(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(inputs)
        identity = inputs[:, self.identity_features, ...]
        logabsdet: torch.Tensor | float = 0.0
        if self.unconditional_transform is not None:
            identity, logabsdet = self.unconditional_transform.inverse(identity, context)  # type: ignore[operator]
        params = self.transform_net(identity, context)
        transformed, split_logabsdet = self._coupling_transform_inverse(inputs[:, self.transform_features, ...], params)
        return self._join(inputs, identity, transformed), logabsdet + split_logabsdet

    def _transform_dim_multiplier(self) -> int:
        """Number of conditioner outputs per transformed coordinate."""
        raise NotImplementedError

    def _coupling_transform_forward(
        self, inputs: torch.Tensor, transform_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _coupling_transform_inverse(
        self, inputs: torch.Tensor, transform_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class PiecewiseCoupling(Coupling):
    """A coupling whose elementwise transform is a piecewise CDF (``_piecewise_cdf``): the
    conditioner's outputs are split per transformed coordinate (and per pixel for images)."""

    def _coupling_transform_forward(
        self, inputs: torch.Tensor, transform_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._coupling_transform(inputs, transform_params, inverse=False)

    def _coupling_transform_inverse(
        self, inputs: torch.Tensor, transform_params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._coupling_transform(inputs, transform_params, inverse=True)

    def _coupling_transform(
        self, inputs: torch.Tensor, transform_params: torch.Tensor, inverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if inputs.dim() == 4:  # (B, C·P, H, W) -> (B, C, H, W, P)
            b, c, h, w = inputs.shape
            transform_params = transform_params.reshape(b, c, -1, h, w).permute(0, 1, 3, 4, 2)
        else:  # (B, D·P) -> (B, D, P)
            transform_params = transform_params.reshape(inputs.shape[0], inputs.shape[1], -1)
        outputs, logabsdet = self._piecewise_cdf(inputs, transform_params, inverse)
        return outputs, sum_except_batch(logabsdet)

    def _piecewise_cdf(
        self, inputs: torch.Tensor, transform_params: torch.Tensor, inverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class PiecewiseRationalQuadraticCDF(Flow):
    """normflows' ``PiecewiseRationalQuadraticCDF(shape, num_bins=10, tails=None, tail_bound=1.0,
    identity_init=True, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)``: one
    learned spline per entry of ``shape`` (parameters ``unnormalized_widths``, ``_heights``,
    ``_derivatives``), the same for every sample; ``identity_init`` starts it at the identity,
    otherwise the parameters are uniform in ``[0, 1)``."""

    takes_context = True

    def __init__(
        self,
        shape: Sequence[int],
        num_bins: int = 10,
        tails: Tails = None,
        tail_bound: float | torch.Tensor = 1.0,
        identity_init: bool = True,
        min_bin_width: float = splines.DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = splines.DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = splines.DEFAULT_MIN_DERIVATIVE,
    ):
        super().__init__()
        self.min_bin_width, self.min_bin_height, self.min_derivative = min_bin_width, min_bin_height, min_derivative
        if torch.is_tensor(tail_bound):
            self.register_buffer("tail_bound", tail_bound)
        else:
            self.tail_bound = tail_bound
        self.tails = tails
        derivatives = _derivative_count(num_bins, tails)
        if identity_init:
            self.unnormalized_widths = nn.Parameter(torch.zeros(*shape, num_bins))
            self.unnormalized_heights = nn.Parameter(torch.zeros(*shape, num_bins))
            identity = math.log(math.exp(1 - min_derivative) - 1)
            self.unnormalized_derivatives = nn.Parameter(identity * torch.ones(*shape, derivatives))
        else:
            self.unnormalized_widths = nn.Parameter(torch.rand(*shape, num_bins))
            self.unnormalized_heights = nn.Parameter(torch.rand(*shape, num_bins))
            self.unnormalized_derivatives = nn.Parameter(torch.rand(*shape, derivatives))

    @staticmethod
    def _share_across_batch(params: torch.Tensor, batch_size: int) -> torch.Tensor:
        return params[None, ...].expand(batch_size, *params.shape)

    def _spline(self, inputs: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        batch = inputs.shape[0]
        outputs, logabsdet = _spline(
            self, inputs, self._share_across_batch(self.unnormalized_widths, batch),
            self._share_across_batch(self.unnormalized_heights, batch),
            self._share_across_batch(self.unnormalized_derivatives, batch), inverse,
        )  # fmt: skip
        return outputs, sum_except_batch(logabsdet)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._spline(inputs, inverse=False)

    def inverse(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._spline(inputs, inverse=True)


class PiecewiseRationalQuadraticCoupling(PiecewiseCoupling):
    """normflows' ``PiecewiseRationalQuadraticCoupling(mask, transform_net_create_fn, num_bins=10,
    tails=None, tail_bound=1.0, apply_unconditional_transform=False, img_shape=None,
    min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)``: rational-quadratic spline
    coupling. ``tails`` may list one kind per feature (``"linear"``/``"circular"``) and
    ``tail_bound`` may be a tensor with one bound per feature. With
    ``apply_unconditional_transform`` the identity coordinates get their own learned spline
    (:class:`PiecewiseRationalQuadraticCDF`). The widths' and heights' logits are divided by
    ``√hidden_features`` (``√hidden_channels``) of the conditioner, as in nflows."""

    def __init__(
        self,
        mask: Any,
        transform_net_create_fn: Callable[[int, int], nn.Module],
        num_bins: int = 10,
        tails: Tails = None,
        tail_bound: float | torch.Tensor = 1.0,
        apply_unconditional_transform: bool = False,
        img_shape: Sequence[int] | None = None,
        min_bin_width: float = splines.DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = splines.DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = splines.DEFAULT_MIN_DERIVATIVE,
    ):
        self.num_bins = num_bins
        self.min_bin_width, self.min_bin_height, self.min_derivative = min_bin_width, min_bin_height, min_derivative
        identity, transform = _mask_split(torch.as_tensor(mask))
        identity_tails: Tails
        if isinstance(tails, list | tuple):
            self.tails: Tails = [tails[i] for i in transform]
            identity_tails = [tails[i] for i in identity]
        else:
            self.tails = identity_tails = tails
        if torch.is_tensor(tail_bound):
            identity_bound: float | torch.Tensor = tail_bound[identity]
        else:
            self.tail_bound = identity_bound = tail_bound
        unconditional = None
        if apply_unconditional_transform:

            def unconditional(features: int) -> PiecewiseRationalQuadraticCDF:
                return PiecewiseRationalQuadraticCDF(
                    [features, *(img_shape or [])], num_bins, identity_tails, identity_bound,
                    min_bin_width=min_bin_width, min_bin_height=min_bin_height, min_derivative=min_derivative,
                )  # fmt: skip

        super().__init__(mask, transform_net_create_fn, unconditional_transform=unconditional)
        if torch.is_tensor(tail_bound):
            self.register_buffer("tail_bound", tail_bound[transform])

    def _transform_dim_multiplier(self) -> int:
        return 2 * self.num_bins + _derivative_count(self.num_bins, self.tails)

    def _piecewise_cdf(
        self, inputs: torch.Tensor, transform_params: torch.Tensor, inverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bins = self.num_bins
        widths, heights = transform_params[..., :bins], transform_params[..., bins : 2 * bins]
        derivatives = transform_params[..., 2 * bins :]
        hidden = getattr(self.transform_net, "hidden_features", getattr(self.transform_net, "hidden_channels", None))
        if hidden is not None:
            widths, heights = widths / math.sqrt(hidden), heights / math.sqrt(hidden)
        else:
            warnings.warn("Inputs to the softmax are not scaled down: initialization might be bad.", stacklevel=2)
        return _spline(self, inputs, widths, heights, derivatives, inverse)


__all__ = [
    "Coupling",
    "PiecewiseCoupling",
    "PiecewiseRationalQuadraticCDF",
    "PiecewiseRationalQuadraticCoupling",
]
