"""Base distributions (``q0``) and target densities (``p``)."""

from .base import BaseDistribution, DiagGaussian, GaussianMixture, Uniform
from .conditional import ClassCondDiagGaussian, ConditionalDiagGaussian
from .targets import (
    TARGETS,
    CircularGaussianMixture,
    EnergyU1,
    EnergyU2,
    EnergyU3,
    EnergyU4,
    RingMixture,
    Sinusoidal,
    Smiley,
    Target,
    TwoModes,
    TwoMoons,
)

__all__ = [
    "TARGETS",
    "BaseDistribution",
    "ClassCondDiagGaussian",
    "ConditionalDiagGaussian",
    "CircularGaussianMixture",
    "DiagGaussian",
    "EnergyU1",
    "EnergyU2",
    "EnergyU3",
    "EnergyU4",
    "GaussianMixture",
    "RingMixture",
    "Sinusoidal",
    "Smiley",
    "Target",
    "TwoModes",
    "TwoMoons",
    "Uniform",
]
