"""Flow layers: ``nf.flows.Planar``, ``nf.flows.Radial``, ... (one file per family).

normflows' own names (``CoupledRationalQuadraticSpline``, ``MaskedAffineFlow``, ...) live in
``flowforge.compat.normflows.flows``; reached from here they still work, with a DeprecationWarning
(see :mod:`flowforge.utils.deprecation`).
"""

from ..utils.deprecation import normflows_bridge
from .affine import AffineConstFlow, Standardization, Whitening
from .autoregressive import AutoregressiveFlow, InverseAutoregressive, MaskedAffineAutoregressive
from .base import Composite, EventFlow, Flow, Reverse
from .bounded import PeriodicShift, PeriodicWrap, Sigmoid, Tanh, retired_logit
from .coupling import (
    AffineCoupling,
    AffineCouplingBlock,
    MaskedAffineCoupling,
    RealNVPCoupling,
    affine_transform,
    alternating_mask,
)
from .glow import GlowBlock
from .linear import Invertible1x1Conv, InvertibleAffine, InvertibleMatrix, LULinearPermute
from .mixing import Permute
from .normalization import ActNorm, BatchNorm
from .planar import ConditionalPlanar, Planar
from .radial import ConditionalRadial, Radial
from .reshape import Merge, Split, Squeeze
from .residual import Residual
from .splines import RationalQuadraticAutoregressive, RationalQuadraticCoupling
from .stochastic import HamiltonianMonteCarlo, MetropolisHastings

_normflows_names, __getattr__ = normflows_bridge(
    __name__, retired={"Logit": (retired_logit, "its forward mapped (0, 1) onto ℝ; use Reverse(Sigmoid(alpha))")}
)

__all__ = [
    "ActNorm",
    "AffineConstFlow",
    "AffineCoupling",
    "AffineCouplingBlock",
    "AutoregressiveFlow",
    "BatchNorm",
    "Composite",
    "ConditionalPlanar",
    "ConditionalRadial",
    "EventFlow",
    "Flow",
    "GlowBlock",
    "HamiltonianMonteCarlo",
    "InverseAutoregressive",
    "Invertible1x1Conv",
    "InvertibleAffine",
    "InvertibleMatrix",
    "LULinearPermute",
    "MaskedAffineAutoregressive",
    "MaskedAffineCoupling",
    "Merge",
    "MetropolisHastings",
    "PeriodicShift",
    "PeriodicWrap",
    "Permute",
    "Planar",
    "Radial",
    "RationalQuadraticAutoregressive",
    "RationalQuadraticCoupling",
    "RealNVPCoupling",
    "Residual",
    "Reverse",
    "Sigmoid",
    "Split",
    "Squeeze",
    "Standardization",
    "Tanh",
    "Whitening",
    "affine_transform",
    "alternating_mask",
]
