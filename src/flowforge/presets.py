r"""One-line models: each preset builds a :class:`~flowforge.model.NormalizingFlow` (Glow a
:class:`~flowforge.model.MultiscaleFlow`, VAE a :class:`~flowforge.vae.FlowVAE`) from a few numbers.

Every flow preset is called as ``Preset(dim, layers, *, ...)``: everything after the dimension and
the depth is keyword-only, and the shared keywords mean the same everywhere:

- ``hidden``: width of the layers' conditioner nets;
- ``p``: an optional target density (for the reverse-KL and α-divergence losses);
- ``q0``: the base distribution (default: a trainable diagonal Gaussian, standard at the start);
- ``context_features``: the width of a context ``c``; with it the model is ``q(x | c)`` and every
  method takes ``context=``.

Every preset starts at (or, for the residual flow, near) its base distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from torch import nn

from .distributions.base import BaseDistribution, DiagGaussian
from .distributions.conditional import ClassCondDiagGaussian, ConditionalDiagGaussian
from .flows import (
    ConditionalPlanar,
    ConditionalRadial,
    Flow,
    GlowBlock,
    InverseAutoregressive,
    MaskedAffineAutoregressive,
    MaskedAffineCoupling,
    Merge,
    Permute,
    Planar,
    Radial,
    RationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
    RealNVPCoupling,
    Residual,
    Sigmoid,
    Squeeze,
    alternating_mask,
)
from .model import MultiscaleFlow, NormalizingFlow
from .nets import MLP, LipschitzMLP
from .vae import FlowVAE

__all__ = [
    "IAF",
    "MAF",
    "NSF",
    "PRESETS",
    "VAE",
    "VAE_POSTERIORS",
    "Glow",
    "GlowSingleScale",
    "NSFAutoregressive",
    "PlanarFlow",
    "RadialFlow",
    "RealNVP",
    "ResidualFlow",
    "vae_posterior_flows",
]


def _check(dim: int, layers: int, context_features: int | None = None, minimum_dim: int = 1) -> None:
    if dim < minimum_dim or layers < 1:
        raise ValueError(f"need dim >= {minimum_dim} and layers >= 1, got dim={dim}, layers={layers}")
    if context_features is not None and context_features < 1:
        raise ValueError(f"context_features must be a positive int or None, got {context_features}")


def _base(q0: BaseDistribution | None, dim: int) -> BaseDistribution:
    return DiagGaussian(dim) if q0 is None else q0


def _autoregressive_stack(make_layer: Callable[[], Flow], dim: int, layers: int) -> list[Flow]:
    """``layers`` autoregressive layers with the order reversed between consecutive ones."""
    flows: list[Flow] = []
    for index in range(layers):
        flows.append(make_layer())
        if index < layers - 1:
            flows.append(Permute(dim, "reverse"))
    return flows


def PlanarFlow(  # noqa: N802
    dim: int,
    layers: int,
    *,
    act: str = "tanh",
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    r"""Planar flow (Rezende & Mohamed 2015, https://arxiv.org/abs/1505.05770): ``layers``
    :class:`~flowforge.flows.Planar` layers ``x = z + û h(wᵀz + b)`` with ``h = act`` (``"tanh"``
    or ``"leaky_relu"``), ``log|det| = log|1 + ûᵀw h'(wᵀz + b)|``. Sampling is cheap; the density
    solves one scalar equation per layer. With ``context_features``, amortized
    :class:`~flowforge.flows.ConditionalPlanar` layers whose ``u, w, b`` are linear in the context."""
    _check(dim, layers, context_features)
    if context_features is None:
        flows: list[Flow] = [Planar((dim,), act=act) for _ in range(layers)]
    else:
        flows = [ConditionalPlanar((dim,), context_features, act=act) for _ in range(layers)]
    return NormalizingFlow(_base(q0, dim), flows, p)


def RadialFlow(  # noqa: N802
    dim: int,
    layers: int,
    *,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    r"""Radial flow (Rezende & Mohamed 2015, https://arxiv.org/abs/1505.05770): ``layers``
    :class:`~flowforge.flows.Radial` layers ``x = z + β (z − z₀)/(α + |z − z₀|)``, contracting or
    expanding around ``z₀``. Sampling is cheap; the density solves one scalar equation per layer.
    With ``context_features``, amortized :class:`~flowforge.flows.ConditionalRadial` layers whose
    ``z₀, α, β`` are linear in the context."""
    _check(dim, layers, context_features)
    if context_features is None:
        flows: list[Flow] = [Radial((dim,)) for _ in range(layers)]
    else:
        flows = [ConditionalRadial((dim,), context_features) for _ in range(layers)]
    return NormalizingFlow(_base(q0, dim), flows, p)


def RealNVP(  # noqa: N802
    dim: int,
    layers: int,
    *,
    hidden: int = 64,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    r"""RealNVP (Dinh et al. 2017, https://arxiv.org/abs/1605.08803): ``layers`` affine couplings
    with alternating masks, ``x_B = z_B ⊙ exp(s(z_A)) + t(z_A)``, ``x_A = z_A``,
    ``log|det| = Σ s(z_A)``; both directions cheap. Without a context,
    :class:`~flowforge.flows.MaskedAffineCoupling` with ``s`` and ``t`` MLPs of two hidden layers
    of ``hidden`` units; with ``context_features``, :class:`~flowforge.flows.RealNVPCoupling`
    (a residual conditioner of ``hidden`` units that also reads the context)."""
    _check(dim, layers, context_features, minimum_dim=2)
    flows: list[Flow] = []
    for index in range(layers):
        mask = alternating_mask(dim, even=index % 2 == 0)
        if context_features is not None:
            flows.append(RealNVPCoupling(dim, hidden, mask, context_features=context_features))
        else:
            t = MLP([dim, hidden, hidden, dim], init_zeros=True)
            s = MLP([dim, hidden, hidden, dim], init_zeros=True)
            flows.append(MaskedAffineCoupling(mask, t=t, s=s))
    return NormalizingFlow(_base(q0, dim), flows, p)


def MAF(  # noqa: N802
    dim: int,
    layers: int,
    *,
    hidden: int = 64,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    r"""Masked autoregressive flow (Papamakarios et al. 2017, https://arxiv.org/abs/1705.07057):
    ``layers`` :class:`~flowforge.flows.MaskedAffineAutoregressive` layers
    ``xᵢ = zᵢ exp(sᵢ(x_{<i})) + mᵢ(x_{<i})`` on MADEs of two residual blocks of ``hidden`` units,
    the order reversed between layers. The density takes one pass per layer, sampling ``dim``.
    With ``context_features`` the MADEs also read the context."""
    _check(dim, layers, context_features, minimum_dim=2)
    flows = _autoregressive_stack(lambda: MaskedAffineAutoregressive(dim, hidden, context_features), dim, layers)
    return NormalizingFlow(_base(q0, dim), flows, p)


def IAF(  # noqa: N802
    dim: int,
    layers: int,
    *,
    hidden: int = 64,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    r"""Inverse autoregressive flow (Kingma et al. 2016, https://arxiv.org/abs/1606.04934): ``layers``
    :class:`~flowforge.flows.InverseAutoregressive` layers ``xᵢ = (zᵢ − mᵢ(z_{<i})) exp(−sᵢ(z_{<i}))``
    (MADEs as in :func:`MAF`), the order reversed between layers. Sampling with its density takes
    one pass per layer (for variational inference and reverse-KL fits); the density of other
    points takes ``dim``. With ``context_features`` the MADEs also read the context."""
    _check(dim, layers, context_features, minimum_dim=2)
    flows = _autoregressive_stack(lambda: InverseAutoregressive(dim, hidden, context_features), dim, layers)
    return NormalizingFlow(_base(q0, dim), flows, p)


def NSF(  # noqa: N802
    dim: int,
    layers: int,
    *,
    hidden: int = 64,
    bins: int = 8,
    tail_bound: float = 5.0,
    autoregressive: bool = False,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
    gate_context: bool = False,
    bin_logit_scale: float = 1.0,
) -> NormalizingFlow:
    r"""Neural spline flow (Durkan et al. 2019, https://arxiv.org/abs/1906.04032): ``layers``
    monotone rational-quadratic splines with ``bins`` bins on ``[−tail_bound, tail_bound]`` and the
    identity outside. Coupling layers with alternating masks
    (:class:`~flowforge.flows.RationalQuadraticCoupling`, residual conditioner of ``hidden``
    units; both directions cheap), or with ``autoregressive=True``
    :class:`~flowforge.flows.RationalQuadraticAutoregressive` layers on MADEs with the order
    reversed between layers (density cheap). The wide default bound keeps the splines active
    where the intermediate values of a deep flow wander (on two-moons, bound 3 gave test NLL 1.768
    and bound 5 gave 1.699 after 4000 steps). With ``context_features`` the conditioners also read
    the context. ``gate_context`` and ``bin_logit_scale`` are options of the coupling layers (see
    :class:`~flowforge.flows.RationalQuadraticCoupling`; ``flowforge.sbi``'s NSF sets them as sbi's does)."""
    _check(dim, layers, context_features, minimum_dim=2)
    flows: list[Flow]
    if autoregressive and (gate_context or bin_logit_scale != 1.0):
        raise ValueError("gate_context and bin_logit_scale are options of the coupling layers, not autoregressive=True")
    if autoregressive:
        flows = _autoregressive_stack(
            lambda: RationalQuadraticAutoregressive(
                dim, hidden, num_bins=bins, tail_bound=tail_bound, context_features=context_features
            ),
            dim,
            layers,
        )
    else:
        flows = [
            RationalQuadraticCoupling(
                dim,
                hidden,
                mask=alternating_mask(dim, index % 2 == 0),
                num_bins=bins,
                tail_bound=tail_bound,
                context_features=context_features,
                gate_context=gate_context,
                bin_logit_scale=bin_logit_scale,
            )
            for index in range(layers)
        ]
    return NormalizingFlow(_base(q0, dim), flows, p)


def NSFAutoregressive(  # noqa: N802
    dim: int,
    layers: int,
    *,
    hidden: int = 64,
    bins: int = 8,
    tail_bound: float = 5.0,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    r"""Autoregressive neural spline flow (Durkan et al. 2019, https://arxiv.org/abs/1906.04032):
    :func:`NSF` with ``autoregressive=True``, ``xᵢ = RQSᵢ(zᵢ; θᵢ(x_{<i}))`` (the command line's ``nsf-ar``)."""
    return NSF(
        dim,
        layers,
        hidden=hidden,
        bins=bins,
        tail_bound=tail_bound,
        autoregressive=True,
        p=p,
        q0=q0,
        context_features=context_features,
    )


def ResidualFlow(  # noqa: N802
    dim: int,
    layers: int,
    *,
    hidden: int = 64,
    exact_log_det: bool | None = None,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
    context_features: int | None = None,
) -> NormalizingFlow:
    r"""Residual flow (Chen et al. 2019, https://arxiv.org/abs/1906.02735): ``layers``
    :class:`~flowforge.flows.Residual` blocks ``x + g(x)`` in the density direction, ``g`` a
    Lipschitz MLP (two hidden layers of ``hidden`` units, ``Lip(g) < 0.97``), so
    ``log|det| = Σ_k (−1)^{k+1} tr(J_gᵏ)/k``: exact (full Jacobian) when ``exact_log_det`` or, by
    default, when ``dim <= 4``; otherwise the unbiased Russian-roulette estimator. Sampling inverts
    each block by fixed-point iteration. Starts near the identity.

    The residual blocks take no context: with ``context_features`` the base is conditional instead,
    ``N(μ(c), diag σ(c)²)`` with ``μ, log σ`` from an MLP of two hidden layers of ``hidden`` units
    (zero at the start: the standard normal). A ``q0`` given with ``context_features`` must take the
    context itself."""
    _check(dim, layers, context_features)
    exact = dim <= 4 if exact_log_det is None else exact_log_det
    flows = [Residual(LipschitzMLP([dim, hidden, hidden, dim]), brute_force=exact) for _ in range(layers)]
    if context_features is not None:
        if q0 is None:
            encoder = MLP([context_features, hidden, hidden, 2 * dim], init_zeros=True)
            q0 = ConditionalDiagGaussian(dim, encoder)
        elif not q0.takes_context:
            raise ValueError(
                "ResidualFlow's layers take no context: with context_features, give a conditional q0 "
                "(e.g. ConditionalDiagGaussian) or leave q0 to the preset"
            )
    return NormalizingFlow(_base(q0, dim), flows, p)


def _glow_shape(name: str, shape: Iterable[int], levels: int, steps: int) -> tuple[int, int, int]:
    channels, height, width = (int(v) for v in shape)
    if levels < 1 or steps < 1 or height % 2**levels or width % 2**levels:
        raise ValueError(
            f"{name} needs levels, steps >= 1 and H, W divisible by 2**levels; "
            f"got shape={tuple(shape)}, levels={levels}, steps={steps}"
        )
    return channels, height, width


def Glow(  # noqa: N802
    shape: tuple[int, int, int],
    levels: int = 2,
    *,
    steps: int = 4,
    hidden: int = 64,
    num_classes: int | None = None,
    context_features: int | None = None,
    alpha: float = 0.05,
    p: nn.Module | None = None,
) -> MultiscaleFlow:
    r"""Glow (Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039) for images of
    ``shape = (C, H, W)`` with values in ``[0, 1]``, with the multi-scale architecture of RealNVP
    (Dinh et al. 2017). Density direction: the logit ``z = logit(α + (1 − 2α) x)`` (the inverse of
    :class:`~flowforge.flows.Sigmoid` with ``alpha``), then per level a
    :class:`~flowforge.flows.Squeeze` and ``steps`` :class:`~flowforge.flows.GlowBlock` s (ActNorm,
    invertible 1x1 convolution, affine coupling with a conv net of ``hidden`` channels), after
    which half of the channels are factored out to that level's Gaussian base; the last level keeps
    all. Both directions cheap. ``H`` and ``W`` must be divisible by ``2**levels``.

    The context conditions the bases (the Glow steps take none): with ``num_classes`` it is a class
    label and the bases are :class:`~flowforge.distributions.ClassCondDiagGaussian`; with
    ``context_features`` it is a vector and each base is a
    :class:`~flowforge.distributions.ConditionalDiagGaussian` whose mean and log-scale come from an
    MLP (one hidden layer of ``hidden`` units, zero at the start)."""
    channels, height, width = _glow_shape("Glow", shape, levels, steps)
    if num_classes is not None and context_features is not None:
        raise ValueError("Glow takes class labels (num_classes) or a context vector (context_features), not both")
    _check(1, levels, context_features)

    def base(latent_shape: tuple[int, int, int]) -> BaseDistribution:
        if num_classes is not None:
            return ClassCondDiagGaussian(latent_shape, num_classes)
        if context_features is not None:
            encoder = MLP([context_features, hidden, 2 * math.prod(latent_shape)], init_zeros=True)
            return ConditionalDiagGaussian(latent_shape, encoder)
        return DiagGaussian(latent_shape)

    bases: list[BaseDistribution] = []
    flows: list[list[Flow]] = []
    merges: list[Flow] = []
    for level in range(levels):  # level 0 is the deepest
        depth = levels - level  # squeezes applied before this level's blocks (density direction)
        size = (height // 2**depth, width // 2**depth)
        block_channels = channels * 4**depth // 2 ** (depth - 1)
        latent_channels = block_channels if level == 0 else block_channels // 2
        bases.append(base((latent_channels, *size)))
        flows.append([*(GlowBlock(block_channels, hidden) for _ in range(steps)), Squeeze()])
        if level > 0:
            merges.append(Merge())
    conditional = num_classes is not None or context_features is not None  # the bases take the context
    return MultiscaleFlow(bases, flows, merges, transform=Sigmoid(alpha), class_cond=conditional, p=p)


def GlowSingleScale(  # noqa: N802
    shape: tuple[int, int, int],
    levels: int = 2,
    *,
    steps: int = 4,
    hidden: int = 64,
    p: nn.Module | None = None,
    q0: BaseDistribution | None = None,
) -> NormalizingFlow:
    r"""The Glow layers of :func:`Glow` without the multi-scale factoring and the logit, for images of
    any range: in the density direction ``levels`` times a :class:`~flowforge.flows.Squeeze`
    followed by ``steps`` :class:`~flowforge.flows.GlowBlock` s, every dimension carried to one
    base of shape ``(C·4^levels, H/2^levels, W/2^levels)``."""
    channels, height, width = _glow_shape("GlowSingleScale", shape, levels, steps)
    density_order: list[Flow] = []
    for _ in range(levels):
        channels *= 4
        density_order.append(Squeeze())
        density_order += [GlowBlock(channels, hidden) for _ in range(steps)]
    base_shape = (channels, height // 2**levels, width // 2**levels)
    return NormalizingFlow(DiagGaussian(base_shape) if q0 is None else q0, list(reversed(density_order)), p)


VAE_POSTERIORS = ("gaussian", "planar", "radial", "iaf", "realnvp")
"""Posterior families of :func:`VAE`: the plain diagonal Gaussian and four flows on it."""


def vae_posterior_flows(
    posterior: str, latent_dim: int, layers: int, *, context_features: int, hidden: int
) -> list[Flow]:
    """The flow layers of a :func:`VAE` posterior, each conditioned on the encoder's features:
    amortized :class:`~flowforge.flows.ConditionalPlanar` / :class:`~flowforge.flows.ConditionalRadial`
    (Rezende & Mohamed 2015), :class:`~flowforge.flows.InverseAutoregressive` with the order reversed
    between layers (Kingma et al. 2016) or :class:`~flowforge.flows.RealNVPCoupling` with alternating
    masks; ``hidden`` is the width of the IAF and RealNVP conditioners."""
    if posterior not in VAE_POSTERIORS:
        raise ValueError(f"posterior must be one of {VAE_POSTERIORS}, got {posterior!r}")
    if posterior == "gaussian":
        return []
    _check(latent_dim, layers, context_features, minimum_dim=1 if posterior in ("planar", "radial") else 2)
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
    *,
    latent_dim: int = 8,
    posterior: str = "planar",
    layers: int = 8,
    hidden: int = 256,
    flow_hidden: int = 64,
    likelihood: str = "bernoulli",
) -> FlowVAE:
    r"""A variational autoencoder with a flow posterior (Rezende & Mohamed 2015; Kingma et al. 2016):
    ``q(z | x)`` is a diagonal Gaussian pushed through ``layers`` flow layers of the family
    ``posterior`` (one of :data:`VAE_POSTERIORS`, see :func:`vae_posterior_flows`; ``flow_hidden``
    units in the IAF and RealNVP conditioners), conditioned on the encoder's last hidden layer.
    Encoder and decoder are MLPs with two hidden layers of ``hidden`` ReLU units; the decoder is
    Bernoulli or Gaussian (``likelihood``). Trained by the ELBO ``E_q[log p(x | z) + log p(z) − log q(z | x)]``."""
    shape = (data_shape,) if isinstance(data_shape, int) else tuple(data_shape)
    data_dim = math.prod(shape)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(data_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
    width = data_dim if likelihood == "bernoulli" else 2 * data_dim
    decoder = nn.Sequential(
        nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, width)
    )
    flows = vae_posterior_flows(posterior, latent_dim, layers, context_features=hidden, hidden=flow_hidden)
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
"""The vector presets by the names the command line uses; each is called as
``preset(dim, layers, p=target, q0=base, context_features=...)``."""
