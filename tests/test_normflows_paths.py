"""normflows scripts import from these module paths; they must resolve in flowforge."""

import importlib

import pytest

PATHS = [
    ("distributions.base", "DiagGaussian"),
    ("distributions.base", "GaussianMixture"),
    ("distributions.target", "TwoMoons"),
    ("distributions.target", "CircularGaussianMixture"),
    ("distributions.prior", "TwoModes"),
    ("distributions.prior", "Sinusoidal"),
    ("nets.mlp", "MLP"),
    ("nets.made", "MADE"),
    ("nets.lipschitz", "LipschitzMLP"),
    ("utils.optim", "update_lipschitz"),
    ("flows", "AffineCouplingBlock"),
    ("flows", "MaskedAffineFlow"),
    ("flows", "AffineCoupling"),
    ("flows", "MaskedAffineAutoregressive"),
    ("flows", "CoupledRationalQuadraticSpline"),
    ("flows", "AutoregressiveRationalQuadraticSpline"),
    ("flows", "CircularCoupledRationalQuadraticSpline"),
    ("flows", "CircularAutoregressiveRationalQuadraticSpline"),
    ("flows", "LULinearPermute"),
    ("flows", "InvertibleAffine"),
    ("flows", "Invertible1x1Conv"),
    ("flows", "ActNorm"),
    ("flows", "BatchNorm"),
    ("flows", "GlowBlock"),
    ("flows", "Residual"),
    ("flows", "Squeeze"),
    ("flows", "Split"),
    ("flows", "Merge"),
    ("flows", "PeriodicWrap"),
    ("flows", "PeriodicShift"),
    ("nets", "ResidualNet"),
]


@pytest.mark.parametrize("module, name", PATHS)
def test_normflows_name_resolves(module, name):
    assert hasattr(importlib.import_module(f"flowforge.{module}"), name)
