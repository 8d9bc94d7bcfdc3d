"""Base distributions (``q0``) and target densities (``p``).

normflows' module paths ``nf.distributions.target`` and ``nf.distributions.prior`` live in
``flowforge.compat.normflows.distributions``; reached from here they still work, with a
DeprecationWarning. flowforge's own targets are in :mod:`.targets`.
"""

from ..utils.deprecation import normflows_bridge
from .base import BaseDistribution, DiagGaussian, GaussianMixture, ResampledGaussian, TemperedGaussian, Uniform
from .conditional import ClassCondDiagGaussian, ConditionalDiagGaussian
from .flow import FlowDistribution
from .targets import (
    TARGETS,
    AnnealedTarget,
    CircularGaussianMixture,
    EnergyU1,
    EnergyU2,
    EnergyU3,
    EnergyU4,
    GaussianMixture40,
    ManyWell,
    RingMixture,
    Sinusoidal,
    Smiley,
    Target,
    TwoModes,
    TwoMoons,
)

_normflows_names, __getattr__ = normflows_bridge(__name__)

__all__ = [
    "TARGETS",
    "AnnealedTarget",
    "GaussianMixture40",
    "ManyWell",
    "BaseDistribution",
    "ClassCondDiagGaussian",
    "ConditionalDiagGaussian",
    "CircularGaussianMixture",
    "DiagGaussian",
    "EnergyU1",
    "EnergyU2",
    "EnergyU3",
    "EnergyU4",
    "FlowDistribution",
    "GaussianMixture",
    "RingMixture",
    "Sinusoidal",
    "Smiley",
    "Target",
    "TwoModes",
    "TwoMoons",
    "ResampledGaussian",
    "TemperedGaussian",
    "Uniform",
]
