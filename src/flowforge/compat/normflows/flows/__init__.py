"""normflows' ``nf.flows``: its layer names and module paths on flowforge's layers.

Every name and submodule of normflows 1.7's ``flows`` package, at the same path: re-exported
unchanged where flowforge's layer is normflows' (same name, arguments, numerics and ``state_dict``),
a thin subclass where only the signature, a convention or the ``state_dict`` layout differs
(``Planar``, ``ActNorm``, ``MaskedAffineFlow``, ...), and a small class of its own where normflows'
layer is a different map (``InvertibleAffine``, ``LULinearPermute``, ``BatchNorm``, the stochastic
layers). See each module's docstring.
"""

from . import (
    affine,
    base,
    mixing,
    neural_spline,
    normalization,
    periodic,
    planar,
    radial,
    reshape,
    residual,
    stochastic,
)
from .affine.autoregressive import MaskedAffineAutoregressive
from .affine.coupling import AffineConstFlow, AffineCoupling, AffineCouplingBlock, CCAffineConst, MaskedAffineFlow
from .affine.glow import GlowBlock
from .base import Composite, Flow, Reverse
from .mixing import Invertible1x1Conv, InvertibleAffine, LULinearPermute, Permute
from .neural_spline import (
    AutoregressiveRationalQuadraticSpline,
    CircularAutoregressiveRationalQuadraticSpline,
    CircularCoupledRationalQuadraticSpline,
    CoupledRationalQuadraticSpline,
)
from .normalization import ActNorm, BatchNorm
from .periodic import PeriodicShift, PeriodicWrap
from .planar import Planar
from .radial import Radial
from .reshape import Merge, Split, Squeeze
from .residual import Residual
from .stochastic import HamiltonianMonteCarlo, MetropolisHastings

__all__ = [
    "ActNorm",
    "AffineConstFlow",
    "AffineCoupling",
    "AffineCouplingBlock",
    "AutoregressiveRationalQuadraticSpline",
    "BatchNorm",
    "CCAffineConst",
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
    "base",
    "mixing",
    "neural_spline",
    "normalization",
    "periodic",
    "planar",
    "radial",
    "reshape",
    "residual",
    "stochastic",
]
