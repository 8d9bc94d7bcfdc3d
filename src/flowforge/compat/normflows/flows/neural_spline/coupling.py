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

    def _parts(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (conditioning, transformed) coordinates of ``inputs`` (taken along axis 1)."""
        if inputs.dim() == 2 or inputs.dim() == 4:
            if inputs.shape[1] == self.features:
                return inputs[:, self.identity_features, ...], inputs[:, self.transform_features, ...]
        raise ValueError(
            f"{type(self).__name__}: expected inputs of shape (batch, {self.features}) or "
            f"(batch, {self.features}, height, width), got {tuple(inputs.shape)}"
        )

    def _merge(self, conditioning: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
        """Put both parts back in feature order: concatenate, then undo the split's permutation."""
        split_order = torch.cat((self.identity_features, self.transform_features))
        return torch.cat((conditioning, transformed), dim=1)[:, torch.argsort(split_order), ...]

    def _couple(
        self, inputs: torch.Tensor, context: torch.Tensor | None, inverse: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both directions. The conditioner always reads the conditioning part as it is on the
        data side, so the optional unconditional flow on that part runs after it going forward and
        before it going back."""
        conditioning, transformed = self._parts(inputs)
        extra = self.unconditional_transform
        log_dets: list[torch.Tensor] = []
        if inverse and extra is not None:
            conditioning, log_det = extra.inverse(conditioning, context)  # type: ignore[operator]
            log_dets.append(log_det)
        elementwise = self._coupling_transform_inverse if inverse else self._coupling_transform_forward
        transformed, log_det = elementwise(transformed, self.transform_net(conditioning, context))
        log_dets.append(log_det)
        if not inverse and extra is not None:
            conditioning, log_det = extra(conditioning, context)
            log_dets.append(log_det)
        total = log_dets[0] if len(log_dets) == 1 else log_dets[0] + log_dets[1]
        return self._merge(conditioning, transformed), total

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(inputs, context, inverse=False)

    def inverse(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self._couple(inputs, context, inverse=True)

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
        # The conditioner emits its parameters coordinate-major along axis 1 (all of coordinate 0's,
        # then coordinate 1's, ...): split that axis into (coordinate, parameter) and move the
        # parameter axis to the end, which gives (B, D, P) for vectors and (B, C, H, W, P) for images.
        per_coordinate = transform_params.unflatten(1, (inputs.shape[1], -1)).movedim(2, -1)
        outputs, log_det = self._piecewise_cdf(inputs, per_coordinate, inverse)
        return outputs, sum_except_batch(log_det)

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
            warnings.warn(
                f"{type(self).__name__}: the conditioner has no hidden_features or hidden_channels, so the "
                "width and height logits are used unscaled (expected to divide them by the square root of "
                "that width); the initial spline may be far from uniform",
                stacklevel=2,
            )
        return _spline(self, inputs, widths, heights, derivatives, inverse)


__all__ = [
    "Coupling",
    "PiecewiseCoupling",
    "PiecewiseRationalQuadraticCDF",
    "PiecewiseRationalQuadraticCoupling",
]
