"""Flow layers: ``nf.flows.Planar``, ``nf.flows.Radial``, ... (one file per family)."""

from .affine import AffineConstFlow, Standardization, Whitening
from .autoregressive import AutoregressiveFlow, InverseAutoregressive, MaskedAffineAutoregressive
from .base import Composite, EventFlow, Flow, Reverse
from .bounded import Logit, PeriodicShift, PeriodicWrap, Sigmoid, Tanh
from .coupling import AffineCoupling, AffineCouplingBlock, MaskedAffineFlow, RealNVPCoupling, alternating_mask
from .glow import GlowBlock
from .linear import Invertible1x1Conv, InvertibleAffine, InvertibleMatrix, LULinearPermute
from .mixing import Permute
from .normalization import ActNorm, BatchNorm
from .planar import ConditionalPlanar, Planar
from .radial import ConditionalRadial, Radial
from .reshape import Merge, Split, Squeeze
from .residual import Residual
from .splines import (
    AutoregressiveRationalQuadraticSpline,
    CircularAutoregressiveRationalQuadraticSpline,
    CircularCoupledRationalQuadraticSpline,
    CoupledRationalQuadraticSpline,
    RationalQuadraticAutoregressive,
    RationalQuadraticCoupling,
)
from .stochastic import HamiltonianMonteCarlo, MetropolisHastings

__all__ = [
    "HamiltonianMonteCarlo",
    "MetropolisHastings",
    "Standardization",
    "Whitening",
    "Residual",
    "AffineCoupling",
    "AffineCouplingBlock",
    "GlowBlock",
    "Merge",
    "Split",
    "Squeeze",
    "Invertible1x1Conv",
    "InvertibleAffine",
    "InvertibleMatrix",
    "LULinearPermute",
    "ActNorm",
    "BatchNorm",
    "Logit",
    "PeriodicShift",
    "PeriodicWrap",
    "Sigmoid",
    "Tanh",
    "AffineConstFlow",
    "AutoregressiveFlow",
    "AutoregressiveRationalQuadraticSpline",
    "CircularAutoregressiveRationalQuadraticSpline",
    "CircularCoupledRationalQuadraticSpline",
    "Composite",
    "CoupledRationalQuadraticSpline",
    "EventFlow",
    "Flow",
    "InverseAutoregressive",
    "MaskedAffineAutoregressive",
    "MaskedAffineFlow",
    "Permute",
    "Planar",
    "ConditionalPlanar",
    "Radial",
    "ConditionalRadial",
    "RationalQuadraticAutoregressive",
    "RationalQuadraticCoupling",
    "RealNVPCoupling",
    "Reverse",
    "alternating_mask",
]
