r"""normflows' ``nf.utils.splines``: monotone rational-quadratic splines with nflows' parameterisation
(Durkan et al. 2019, https://arxiv.org/abs/1906.04032, eqs. 4–8), with normflows' signatures,
conventions and numerics.

In bin ``k`` with ``θ = (x − x_k)/w_k`` and slope ``s_k = h_k/w_k``:
``y = y_k + h_k (s_k θ² + d_k θ(1−θ)) / (s_k + (d_k + d_{k+1} − 2 s_k) θ(1−θ))``; the inverse solves
the quadratic in ``θ`` in its cancellation-free form ``θ = 2c/(−b − √(b² − 4ac))``. Widths and
heights are softmaxes floored at ``min_bin_width``/``min_bin_height``; knot derivatives are
``min_derivative + softplus(·)``. flowforge's own spline (:func:`flowforge.flows.splines.rational_quadratic_spline`)
computes the same map with a different argument layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3

Bound = float | torch.Tensor


def _identity_derivative(min_derivative: float) -> float:
    """The unnormalised derivative ``softplus⁻¹(1 − min_derivative)``, a knot derivative of 1."""
    return math.log(math.exp(1 - min_derivative) - 1)


def searchsorted(bin_locations: torch.Tensor, inputs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The bin of each input: the number of ``bin_locations`` (last axis) at or below it, minus one.
    As in normflows, the last location is first raised by ``eps`` in place, so the right end falls
    in the last bin."""
    bin_locations[..., -1] += eps
    return torch.sum(inputs[..., None] >= bin_locations, dim=-1) - 1


def _knots(unnormalized: torch.Tensor, low: Bound, high: Bound, minimum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin sizes and the ``K + 1`` knots on ``[low, high]`` (ends pinned), from unnormalised sizes."""
    num_bins = unnormalized.shape[-1]
    fractions = minimum + (1 - minimum * num_bins) * F.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(fractions, dim=-1), pad=(1, 0), mode="constant", value=0.0)
    if torch.is_tensor(low):
        knots = (high[..., None] - low[..., None]) * knots + low[..., None]  # type: ignore[index]
    else:
        knots = (high - low) * knots + low
    knots[..., 0] = low
    knots[..., -1] = high
    return knots[..., 1:] - knots[..., :-1], knots


def rational_quadratic_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    inverse: bool = False,
    left: Bound = 0.0,
    right: Bound = 1.0,
    bottom: Bound = 0.0,
    top: Bound = 1.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline from ``[left, right]`` onto ``[bottom, top]`` (tensors: one interval per input),
    elementwise; ``unnormalized_derivatives`` has ``K + 1`` entries (all knots, ends included).
    Inputs must lie in the interval. Returns ``(outputs, log|dy/dx|)`` of the direction computed."""
    num_bins = unnormalized_widths.shape[-1]
    if min_bin_width * num_bins > 1.0:
        raise ValueError(f"min_bin_width * num_bins must be at most 1, got {min_bin_width} * {num_bins}")
    if min_bin_height * num_bins > 1.0:
        raise ValueError(f"min_bin_height * num_bins must be at most 1, got {min_bin_height} * {num_bins}")
    widths, x_knots = _knots(unnormalized_widths, left, right, min_bin_width)
    derivatives = min_derivative + F.softplus(unnormalized_derivatives)
    heights, y_knots = _knots(unnormalized_heights, bottom, top, min_bin_height)

    index = searchsorted(y_knots if inverse else x_knots, inputs)[..., None]

    def pick(values: torch.Tensor) -> torch.Tensor:
        return values.gather(-1, index)[..., 0]

    x_k, w_k, y_k = pick(x_knots), pick(widths), pick(y_knots)
    slopes = heights / widths
    s_k, d_k, d_k1, h_k = pick(slopes), pick(derivatives), pick(derivatives[..., 1:]), pick(heights)
    curvature = d_k + d_k1 - 2 * s_k

    if inverse:
        offset = inputs - y_k
        a = offset * curvature + h_k * (s_k - d_k)
        b = h_k * d_k - offset * curvature
        c = -s_k * offset
        discriminant = b.pow(2) - 4 * a * c
        if not bool((discriminant >= 0).all()):
            raise ValueError("rational_quadratic_spline: negative discriminant (inputs outside the spline's range?)")
        theta = (2 * c) / (-b - torch.sqrt(discriminant))
        outputs = theta * w_k + x_k
    else:
        theta = (inputs - x_k) / w_k
    mix = theta * (1 - theta)
    denominator = s_k + curvature * mix
    if not inverse:
        outputs = y_k + h_k * (s_k * theta.pow(2) + d_k * mix) / denominator
    numerator = s_k.pow(2) * (d_k1 * theta.pow(2) + 2 * s_k * mix + d_k * (1 - theta).pow(2))
    log_derivative = torch.log(numerator) - 2 * torch.log(denominator)
    return outputs, -log_derivative if inverse else log_derivative


def unconstrained_rational_quadratic_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    inverse: bool = False,
    tails: str | Sequence[str] = "linear",
    tail_bound: Bound = 1.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rational_quadratic_spline` on ``[−tail_bound, tail_bound]`` (a number, or a tensor
    broadcast to the inputs), the identity outside it. ``tails``:

    * ``"linear"``: ``K − 1`` interior derivatives given; the end derivatives are 1 (matching the
      identity tails);
    * ``"circular"``: ``K`` derivatives given; the last knot's derivative is the first's
      (a circle diffeomorphism when inputs stay in the interval);
    * a list with one of those per feature (the second-to-last axis): ``K + 1`` derivatives given,
      whose ends are overwritten per feature as above.

    Difference kept from normflows: with per-feature ``tails`` normflows leaves the outputs of
    inputs outside ``±tail_bound`` at 0 (log-det 0), which is not invertible; here they pass
    through unchanged, as with a single kind of tails. Inside the interval the numbers are
    normflows'. A negative discriminant in the inverse (inputs outside the spline's range) raises
    ValueError where normflows asserts.
    """
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    outside = ~inside
    outputs = torch.zeros_like(inputs)
    logabsdet = torch.zeros_like(inputs)
    identity = _identity_derivative(min_derivative)
    if isinstance(tails, str) and tails == "linear":
        derivatives = F.pad(unnormalized_derivatives, pad=(1, 1))
        derivatives[..., 0] = identity
        derivatives[..., -1] = identity
    elif isinstance(tails, str) and tails == "circular":
        derivatives = F.pad(unnormalized_derivatives, pad=(0, 1))
        derivatives[..., -1] = derivatives[..., 0]
    elif isinstance(tails, list | tuple):
        derivatives = unnormalized_derivatives.clone()
        linear = [tail == "linear" for tail in tails]
        circular = [tail == "circular" for tail in tails]
        derivatives[..., linear, 0] = identity
        derivatives[..., linear, -1] = identity
        derivatives[..., circular, -1] = derivatives[..., circular, 0]
    else:
        raise RuntimeError(f"{tails} tails are not implemented.")
    outputs[outside] = inputs[outside]

    left: Bound
    right: Bound
    if isinstance(tail_bound, torch.Tensor):
        right = torch.broadcast_to(tail_bound, inputs.shape)[inside]
        left = -right
    else:
        left, right = -tail_bound, tail_bound
    spline_outputs, spline_logabsdet = rational_quadratic_spline(
        inputs[inside], unnormalized_widths[inside, :], unnormalized_heights[inside, :], derivatives[inside, :],
        inverse, left, right, left, right, min_bin_width, min_bin_height, min_derivative,
    )  # fmt: skip
    outputs[inside] = spline_outputs.to(outputs.dtype)
    logabsdet[inside] = spline_logabsdet.to(logabsdet.dtype)
    return outputs, logabsdet


__all__ = [
    "DEFAULT_MIN_BIN_HEIGHT",
    "DEFAULT_MIN_BIN_WIDTH",
    "DEFAULT_MIN_DERIVATIVE",
    "rational_quadratic_spline",
    "searchsorted",
    "unconstrained_rational_quadratic_spline",
]
