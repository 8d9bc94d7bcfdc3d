"""normflows' ``nf.flows``: its layer names and module paths on flowforge's layers.

Re-exported unchanged where flowforge's layer is normflows' (same name, arguments and mask
convention); subclasses in :mod:`.affine`, :mod:`.neural_spline` and :mod:`.residual` where the name,
the positional order or the mask convention is normflows' own.
"""

from ....flows import (
    ActNorm,
    AffineConstFlow,
    AffineCoupling,
    AffineCouplingBlock,
    BatchNorm,
    Composite,
    Flow,
    GlowBlock,
    HamiltonianMonteCarlo,
    Invertible1x1Conv,
    InvertibleAffine,
    LULinearPermute,
    Merge,
    MetropolisHastings,
    PeriodicShift,
    PeriodicWrap,
    Permute,
    Planar,
    Radial,
    Reverse,
    Split,
    Squeeze,
)
from . import affine, neural_spline, residual
from .affine.autoregressive import MaskedAffineAutoregressive
from .affine.coupling import MaskedAffineFlow
from .neural_spline import (
    AutoregressiveRationalQuadraticSpline,
    CircularAutoregressiveRationalQuadraticSpline,
    CircularCoupledRationalQuadraticSpline,
    CoupledRationalQuadraticSpline,
)
from .residual import Residual

__all__ = [
    "ActNorm",
    "AffineConstFlow",
    "AffineCoupling",
    "AffineCouplingBlock",
    "AutoregressiveRationalQuadraticSpline",
    "BatchNorm",
    "CircularAutoregressiveRationalQuadraticSpline",
    "CircularCoupledRationalQuadraticSpline",
    "Composite",
    "CoupledRationalQuadraticSpline",
    "Flow",
    "GlowBlock",
    "HamiltonianMonteCarlo",
    "Invertible1x1Conv",
    "InvertibleAffine",
    "LULinearPermute",
    "MaskedAffineAutoregressive",
    "MaskedAffineFlow",
    "Merge",
    "MetropolisHastings",
    "PeriodicShift",
    "PeriodicWrap",
    "Permute",
    "Planar",
    "Radial",
    "Residual",
    "Reverse",
    "Split",
    "Squeeze",
    "affine",
    "neural_spline",
    "residual",
]
