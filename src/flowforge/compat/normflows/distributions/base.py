"""normflows' ``nf.distributions.base`` path."""

from ....distributions.base import BaseDistribution, DiagGaussian, GaussianMixture
from ....distributions.conditional import ClassCondDiagGaussian, ConditionalDiagGaussian

__all__ = ["BaseDistribution", "ClassCondDiagGaussian", "ConditionalDiagGaussian", "DiagGaussian", "GaussianMixture"]
