"""normflows scripts import from these module paths: they resolve in ``flowforge.compat.normflows``
without a warning, and from ``import flowforge as nf`` too (normflows' own names through the
deprecation bridge, with a DeprecationWarning naming the compat import)."""

import importlib
import re
import warnings

import pytest

import flowforge as nf

PATHS = [
    ("core", "NormalizingFlow"),
    ("core", "ConditionalNormalizingFlow"),
    ("core", "ClassCondFlow"),
    ("core", "MultiscaleFlow"),
    ("distributions", "DiagGaussian"),
    ("distributions", "TwoMoons"),
    ("distributions", "TwoModes"),
    ("distributions.base", "DiagGaussian"),
    ("distributions.base", "GaussianMixture"),
    ("distributions.base", "ClassCondDiagGaussian"),
    ("distributions.target", "TwoMoons"),
    ("distributions.target", "CircularGaussianMixture"),
    ("distributions.prior", "TwoModes"),
    ("distributions.prior", "Sinusoidal"),
    ("nets.mlp", "MLP"),
    ("nets.made", "MADE"),
    ("nets.lipschitz", "LipschitzMLP"),
    ("nets.resnet", "ResidualNet"),
    ("nets.cnn", "ConvNet2d"),
    ("utils.optim", "update_lipschitz"),
    ("utils", "update_lipschitz"),
    ("transforms", "Logit"),
    ("flows", "Planar"),
    ("flows", "Radial"),
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
    ("flows.affine.coupling", "MaskedAffineFlow"),
    ("flows.affine.autoregressive", "MaskedAffineAutoregressive"),
    ("flows.affine.glow", "GlowBlock"),
    ("flows.neural_spline.wrapper", "CoupledRationalQuadraticSpline"),
    ("flows.residual", "Residual"),
    ("nets", "ResidualNet"),
]

# Reachable only from the compat import: flowforge.flows.affine is flowforge's own module
# (AffineConstFlow, Standardization, Whitening), not normflows' package of the same name, and
# flowforge.distributions.base holds the unconditional bases (ClassCondDiagGaussian is in .conditional).
COMPAT_ONLY = {
    ("flows.affine.coupling", "MaskedAffineFlow"),
    ("flows.affine.autoregressive", "MaskedAffineAutoregressive"),
    ("flows.affine.glow", "GlowBlock"),
    ("distributions.base", "ClassCondDiagGaussian"),
}


@pytest.mark.parametrize("module, name", PATHS)
def test_normflows_path_resolves_in_compat(module, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hasattr(importlib.import_module(f"flowforge.compat.normflows.{module}"), name)


@pytest.mark.parametrize("module, name", [path for path in PATHS if path not in COMPAT_ONLY])
def test_normflows_path_resolves_from_flowforge(module, name):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        value = nf
        for part in [*module.split("."), name]:
            value = getattr(value, part)
    for warning in record:
        assert warning.category is DeprecationWarning
        assert re.search("from flowforge.compat import normflows as nf", str(warning.message))
