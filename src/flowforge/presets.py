"""One-line model constructors, each returning a :class:`~flowforge.NormalizingFlow`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from torch import nn

from .core import ConditionalNormalizingFlow, MultiscaleFlow, NormalizingFlow
from .distributions.base import BaseDistribution, DiagGaussian
from .distributions.conditional import ClassCondDiagGaussian
from .flows import (
    ConditionalPlanar,
    ConditionalRadial,
    GlowBlock,
    InverseAutoregressive,
    MaskedAffineAutoregressive,
    MaskedAffineFlow,
    Merge,
    Permute,
    Planar,
    Radial,
    RationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
    RealNVPCoupling,
    Residual,
    Squeeze,
    alternating_mask,
)
from .nets import MLP, LipschitzMLP
from .transforms import Logit
from .vae import FlowVAE


def _check(dim: int, layers: int, minimum_dim: int = 1) -> None:
    if dim < minimum_dim or layers < 1:
        raise ValueError(f"need dim >= {minimum_dim} and layers >= 1, got dim={dim}, layers={layers}")


def PlanarFlow(
    dim: int, layers: int, p: nn.Module | None = None, q0: BaseDistribution | None = None, act: str = "tanh"
) -> NormalizingFlow:  # noqa: N802
    """``layers`` :class:`~flowforge.flows.Planar` layers on a trainable diagonal Gaussian."""
    _check(dim, layers)
    return NormalizingFlow(q0 or DiagGaussian(dim), [Planar((dim,), act=act) for _ in range(layers)], p)


def RadialFlow(
    dim: int, layers: int, p: nn.Module | None = None, q0: BaseDistribution | None = None
) -> NormalizingFlow:  # noqa: N802
    """``layers`` :class:`~flowforge.flows.Radial` layers on a trainable diagonal Gaussian."""
    _check(dim, layers)
    return NormalizingFlow(q0 or DiagGaussian(dim), [Radial((dim,)) for _ in range(layers)], p)


def RealNVP(  # noqa: N802
    dim: int,
    layers: int,
    hidden: int = 64,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    """``layers`` affine couplings with alternating masks, starting at the identity: without a context
    :class:`~flowforge.flows.MaskedAffineFlow` whose ``s`` and ``t`` are MLPs with two hidden layers of
    ``hidden`` units; with ``context_features`` a :class:`~flowforge.ConditionalNormalizingFlow` of
    :class:`~flowforge.flows.RealNVPCoupling` layers (residual conditioner taking the context)."""
    _check(dim, layers, minimum_dim=2)
    flows = []
    for index in range(layers):
        mask = alternating_mask(dim, even=index % 2 == 0)
        if context_features is not None:
            flows.append(RealNVPCoupling(dim, hidden, mask, context_features=context_features))
            continue
        flows.append(
            MaskedAffineFlow(
                mask, MLP([dim, hidden, hidden, dim], init_zeros=True), MLP([dim, hidden, hidden, dim], init_zeros=True)
            )
        )
    return _model(q0 or DiagGaussian(dim), flows, p, context_features)


def _model(q0: BaseDistribution, flows: list[nn.Module], p, context_features: int | None) -> NormalizingFlow:
    """A :class:`NormalizingFlow`, or a :class:`ConditionalNormalizingFlow` when there is a context."""
    if context_features is None:
        return NormalizingFlow(q0, flows, p)
    return ConditionalNormalizingFlow(q0, flows, p)


def _autoregressive_stack(make_layer: Callable[[], nn.Module], dim: int, layers: int) -> list[nn.Module]:
    """``layers`` autoregressive layers with the order reversed between consecutive ones."""
    flows: list[nn.Module] = []
    for index in range(layers):
        flows.append(make_layer())
        if index < layers - 1:
            flows.append(Permute(dim, "reverse"))
    return flows


def MAF(  # noqa: N802
    dim: int,
    layers: int,
    hidden: int = 64,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    """``layers`` :class:`~flowforge.flows.MaskedAffineAutoregressive` layers (two residual blocks of
    ``hidden`` units), the order reversed between layers. Density in one pass per layer. With
    ``context_features``, a :class:`~flowforge.ConditionalNormalizingFlow` whose MADEs take the context."""
    _check(dim, layers, minimum_dim=2)
    flows = _autoregressive_stack(lambda: MaskedAffineAutoregressive(dim, hidden, context_features), dim, layers)
    return _model(q0 or DiagGaussian(dim), flows, p, context_features)


def IAF(  # noqa: N802
    dim: int, layers: int, hidden: int = 64, p: nn.Module | None = None, q0: BaseDistribution | None = None
) -> NormalizingFlow:
    """``layers`` :class:`~flowforge.flows.InverseAutoregressive` layers, the order reversed between
    layers. Sampling in one pass per layer (for variational inference)."""
    _check(dim, layers, minimum_dim=2)
    flows = _autoregressive_stack(lambda: InverseAutoregressive(dim, hidden), dim, layers)
    return NormalizingFlow(q0 or DiagGaussian(dim), flows, p)


def NSF(  # noqa: N802
    dim: int,
    layers: int,
    hidden: int = 64,
    bins: int = 8,
    tail_bound: float = 5.0,
    autoregressive: bool = False,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    """Neural spline flow (Durkan et al. 2019): ``layers`` rational-quadratic spline layers with
    ``bins`` bins on ``[−tail_bound, tail_bound]`` and linear tails; coupling layers with
    alternating masks (residual conditioner, two blocks of ``hidden`` units), or with
    ``autoregressive=True`` MADE layers with the order reversed between layers. Starts at the
    identity. The wide default bound keeps the splines active where intermediate values of a
    multi-layer flow wander (on two-moons, bound 3 gave test NLL 1.768 and bound 5 gave 1.699
    after 4000 steps). With ``context_features``, a :class:`~flowforge.ConditionalNormalizingFlow`
    whose conditioners take the context."""
    _check(dim, layers, minimum_dim=2)
    options = {"num_bins": bins, "tail_bound": tail_bound, "context_features": context_features}
    if autoregressive:
        flows = _autoregressive_stack(lambda: RationalQuadraticAutoregressive(dim, hidden, **options), dim, layers)
    else:
        flows = [
            RationalQuadraticCoupling(dim, hidden, mask=alternating_mask(dim, index % 2 == 0), **options)
            for index in range(layers)
        ]
    return _model(q0 or DiagGaussian(dim), flows, p, context_features)


def Glow(  # noqa: N802
    shape: tuple[int, int, int],
    levels: int = 2,
    steps: int = 4,
    hidden: int = 64,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
) -> NormalizingFlow:
    """Glow (Kingma & Dhariwal 2018) for images of ``shape = (C, H, W)``: in the density direction,
    ``levels`` times a :class:`~flowforge.flows.Squeeze` followed by ``steps`` :class:`GlowBlock` s
    (ActNorm, LU 1x1 convolution, affine coupling with a conv net of ``hidden`` channels).
    Every dimension is carried to the base here; :class:`MultiscaleFlow` factors latents out
    per level. ``H`` and ``W`` must be divisible by ``2**levels``."""
    channels, height, width = (int(v) for v in shape)
    if levels < 1 or steps < 1 or height % 2**levels or width % 2**levels:
        raise ValueError(
            f"Glow needs levels, steps >= 1 and H, W divisible by 2**levels; got {shape}, {levels}, {steps}"
        )
    density_order: list[nn.Module] = []
    for _ in range(levels):
        channels *= 4
        density_order.append(Squeeze())
        density_order += [GlowBlock(channels, hidden) for _ in range(steps)]
    base_shape = (channels, height // 2**levels, width // 2**levels)
    return NormalizingFlow(q0 or DiagGaussian(base_shape), list(reversed(density_order)), p)


def MultiscaleGlow(  # noqa: N802
    shape: tuple[int, int, int],
    levels: int = 2,
    steps: int = 4,
    hidden: int = 64,
    num_classes: int | None = None,
    alpha: float = 0.05,
) -> MultiscaleFlow:
    """Multi-scale Glow (Kingma & Dhariwal 2018; the RealNVP architecture of Dinh et al. 2017) for
    images of ``shape = (C, H, W)`` with values in ``[0, 1]``. Density direction: the logit
    transform (:class:`flowforge.transforms.Logit` with ``alpha``), then per level a
    :class:`~flowforge.flows.Squeeze` and ``steps`` :class:`~flowforge.flows.GlowBlock` s (``hidden``
    channels), after which half of the channels are factored out to that level's Gaussian base; the
    last level keeps all. With ``num_classes`` the bases are class-conditional
    (:class:`~flowforge.distributions.ClassCondDiagGaussian`). ``H`` and ``W`` must be divisible by
    ``2**levels``."""
    channels, height, width = (int(v) for v in shape)
    if levels < 1 or steps < 1 or height % 2**levels or width % 2**levels:
        raise ValueError(
            f"MultiscaleGlow needs levels, steps >= 1 and H, W divisible by 2**levels; got {shape}, {levels}, {steps}"
        )

    def base(latent_shape: tuple[int, int, int]) -> BaseDistribution:
        return DiagGaussian(latent_shape) if num_classes is None else ClassCondDiagGaussian(latent_shape, num_classes)

    bases, flows, merges = [], [], []
    for level in range(levels):  # level 0 is the deepest
        depth = levels - level  # squeezes applied before this level's blocks (density direction)
        size = (height // 2**depth, width // 2**depth)
        block_channels = channels * 4**depth // 2 ** (depth - 1)
        latent_channels = block_channels if level == 0 else block_channels // 2
        bases.append(base((latent_channels, *size)))
        flows.append([GlowBlock(block_channels, hidden) for _ in range(steps)] + [Squeeze()])
        if level > 0:
            merges.append(Merge())
    return MultiscaleFlow(bases, flows, merges, transform=Logit(alpha), class_cond=num_classes is not None)


def ResidualFlow(  # noqa: N802
    dim: int,
    layers: int,
    hidden: int = 64,
    exact_log_det: bool | None = None,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
) -> NormalizingFlow:
    """Residual flow (Chen et al. 2019): ``layers`` :class:`~flowforge.flows.Residual` blocks on
    Lipschitz MLPs (two hidden layers of ``hidden`` units, Lip < 0.97), density direction
    ``x + g(x)``. The log-det is exact (full Jacobian) when ``exact_log_det`` or, by default, when
    ``dim <= 4``; otherwise the unbiased Russian-roulette estimator. Starts near the identity."""
    _check(dim, layers)
    exact = dim <= 4 if exact_log_det is None else exact_log_det
    flows = [Residual(LipschitzMLP([dim, hidden, hidden, dim]), brute_force=exact) for _ in range(layers)]
    return NormalizingFlow(q0 or DiagGaussian(dim), flows, p)


def NSFAutoregressive(dim: int, layers: int, **kwargs) -> NormalizingFlow:  # noqa: N802
    """:func:`NSF` with ``autoregressive=True``."""
    return NSF(dim, layers, autoregressive=True, **kwargs)


VAE_POSTERIORS = ("gaussian", "planar", "radial", "iaf", "realnvp")
"""Posterior families of :func:`VAE`: the plain diagonal Gaussian and four flows on it."""


def vae_posterior_flows(posterior: str, latent_dim: int, layers: int, context_features: int, hidden: int) -> list:
    """The flow layers of a :func:`VAE` posterior, each conditioned on the encoder's features:
    amortized :class:`~flowforge.flows.ConditionalPlanar` / :class:`~flowforge.flows.ConditionalRadial`
    (Rezende & Mohamed 2015), :class:`~flowforge.flows.InverseAutoregressive` with the order reversed
    between layers (Kingma et al. 2016) or :class:`~flowforge.flows.RealNVPCoupling` with alternating
    masks; ``hidden`` is the width of the IAF and RealNVP conditioners."""
    if posterior not in VAE_POSTERIORS:
        raise ValueError(f"posterior must be one of {VAE_POSTERIORS}, got {posterior!r}")
    if posterior == "gaussian":
        return []
    _check(latent_dim, layers, minimum_dim=1 if posterior in ("planar", "radial") else 2)
    if posterior == "planar":
        return [ConditionalPlanar((latent_dim,), context_features) for _ in range(layers)]
    if posterior == "radial":
        return [ConditionalRadial((latent_dim,), context_features) for _ in range(layers)]
    if posterior == "iaf":
        return _autoregressive_stack(
            lambda: InverseAutoregressive(latent_dim, hidden, context_features), latent_dim, layers
        )
    return [
        RealNVPCoupling(latent_dim, hidden, alternating_mask(latent_dim, even=index % 2 == 0), context_features)
        for index in range(layers)
    ]


def VAE(  # noqa: N802
    data_shape: int | Iterable[int],
    latent_dim: int = 8,
    posterior: str = "planar",
    layers: int = 8,
    hidden: int = 256,
    flow_hidden: int = 64,
    likelihood: str = "bernoulli",
) -> FlowVAE:
    """A :class:`~flowforge.vae.FlowVAE` with MLP encoder and decoder (two hidden layers of ``hidden``
    ReLU units each) and a posterior of ``layers`` flow layers of the family ``posterior`` (one of
    :data:`VAE_POSTERIORS`, see :func:`vae_posterior_flows`), conditioned on the encoder's last hidden
    layer."""
    shape = (data_shape,) if isinstance(data_shape, int) else tuple(data_shape)
    data_dim = math.prod(shape)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(data_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
    width = data_dim if likelihood == "bernoulli" else 2 * data_dim
    decoder = nn.Sequential(
        nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, width)
    )
    flows = vae_posterior_flows(posterior, latent_dim, layers, hidden, flow_hidden)
    return FlowVAE(encoder, decoder, flows, latent_dim, shape, hidden, likelihood)


PRESETS: dict[str, Callable[..., NormalizingFlow]] = {
    "planar": PlanarFlow,
    "radial": RadialFlow,
    "realnvp": RealNVP,
    "maf": MAF,
    "iaf": IAF,
    "nsf": NSF,
    "nsf-ar": NSFAutoregressive,
    "residual": ResidualFlow,
}
"""Presets by the names the command line uses; each is called as ``preset(dim, layers, p=target)``."""
