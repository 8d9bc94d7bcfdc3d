"""Base distributions (``q0``) and target densities (``p``)."""

from .base import BaseDistribution, DiagGaussian, GaussianMixture, ResampledGaussian, TemperedGaussian, Uniform
from .conditional import ClassCondDiagGaussian, ConditionalDiagGaussian
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
