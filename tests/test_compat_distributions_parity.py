"""normflows' distributions and flowforge.compat.normflows' side by side (names and signatures at
their paths: tests/test_normflows_names.py): for every class with parameters or buffers a
normflows ``state_dict`` loads into the compat object built by the same call (same log-densities, in
float64), and the compat ``state_dict`` loads back into normflows."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

normflows = pytest.importorskip("normflows")

from compat_parity_helpers import both, perturb, shapes  # noqa: E402

import flowforge.compat.normflows as cnf  # noqa: E402

# ----------------------------------------------------------------------------------------------
# state_dict both ways


def _perturb(module: nn.Module, seed: int) -> None:
    perturb(module, seed, 0.3)


def _both(build, seed: int = 0):
    return both(build, normflows, cnf, seed, 0.3)


_shapes = shapes


def _round_trip(theirs: nn.Module, ours: nn.Module, evaluate) -> None:
    """normflows -> compat: same keys and shapes, same outputs; then compat (perturbed) -> normflows."""
    assert _shapes(ours.state_dict()) == _shapes(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    for mine, reference in zip(evaluate(ours), evaluate(theirs), strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-6, rtol=1e-6)
    _perturb(ours, 99)
    theirs.load_state_dict(ours.state_dict())
    for mine, reference in zip(evaluate(ours), evaluate(theirs), strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-6, rtol=1e-6)


def _points(*shape: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _labels(count: int, classes: int) -> torch.Tensor:
    return torch.randint(classes, (count,), generator=torch.Generator().manual_seed(4))


BASES = {
    "DiagGaussian-vector": (lambda m: m.distributions.DiagGaussian(3), (3,), None),
    "DiagGaussian-image": (lambda m: m.distributions.DiagGaussian([2, 3]), (2, 3), None),
    "DiagGaussian-fixed": (lambda m: m.distributions.DiagGaussian(2, trainable=False), (2,), None),
    "ClassCondDiagGaussian": (lambda m: m.distributions.ClassCondDiagGaussian([2, 3], 4), (2, 3), 4),
    "ClassCondDiagGaussian-square": (lambda m: m.distributions.ClassCondDiagGaussian(3, 3), (3,), 3),
    "GlowBase": (lambda m: m.distributions.GlowBase(3), (3,), None),
    "GlowBase-class-conditional": (lambda m: m.distributions.GlowBase((3, 2, 2), 5), (3, 2, 2), 5),
    "AffineGaussian": (lambda m: m.distributions.AffineGaussian([2, 3], (2, 1)), (2, 3), None),
    "AffineGaussian-class-conditional": (
        lambda m: m.distributions.AffineGaussian((3, 2, 2), (3, 1, 2), 5),
        (3, 2, 2),
        5,
    ),
    "GaussianMixture": (lambda m: m.distributions.GaussianMixture(3, 2), (2,), None),
    "GaussianMixture-fixed": (
        lambda m: m.distributions.GaussianMixture(
            2, 3, [[0.0, 1.0, 2.0], [1.0, -1.0, 0.5]], [[1.0, 0.5, 2.0], [0.3, 1.0, 1.0]], [0.3, 0.7], False
        ),
        (3,),
        None,
    ),
    "UniformGaussian": (lambda m: m.distributions.UniformGaussian(3, [2, 0], math.pi * torch.ones(3)), (3,), None),
}


@pytest.mark.parametrize("case", list(BASES))
def test_base_state_dict_both_ways(case):
    build, shape, classes = BASES[case]
    theirs, ours = _both(build)
    x = _points(6, *shape)
    if case.startswith("UniformGaussian"):
        x[:, [2, 0]] = x[:, [2, 0]].clamp(-1.5, 1.5)
    y = None if classes is None else _labels(6, classes)

    def evaluate(model):
        return [model.log_prob(x) if y is None else model.log_prob(x, y)]

    _round_trip(theirs, ours, evaluate)


@pytest.mark.parametrize("case", ["DiagGaussian-image", "ClassCondDiagGaussian", "GlowBase-class-conditional"])
def test_base_temperature_is_normflows(case):
    build, shape, classes = BASES[case]
    theirs, ours = _both(build)
    ours.load_state_dict(theirs.state_dict())
    theirs.temperature = ours.temperature = 0.7
    x = _points(5, *shape)
    args = () if classes is None else (_labels(5, classes),)
    torch.testing.assert_close(ours.log_prob(x, *args), theirs.log_prob(x, *args))
    z, log_q = ours(5, *args)
    torch.testing.assert_close(log_q, theirs.log_prob(z, *args))


def test_diag_gaussian_draws_normflows_samples():
    theirs, ours = _both(BASES["DiagGaussian-image"][0])
    ours.load_state_dict(theirs.state_dict())
    torch.manual_seed(7)
    z_theirs, log_q_theirs = theirs(4)
    torch.manual_seed(7)
    z_ours, log_q_ours = ours(4)
    torch.testing.assert_close(z_ours, z_theirs)
    torch.testing.assert_close(log_q_ours, log_q_theirs)


def test_class_labels_set_the_sample_count():
    ours = cnf.distributions.ClassCondDiagGaussian(2, 3)
    z, log_q = ours(10, torch.tensor([0, 2, 1]))
    assert z.shape == (3, 2) and log_q.shape == (3,)


def test_gaussian_mixture_takes_one_number_for_all_modes():
    mixture = cnf.distributions.GaussianMixture(2, 3, 1.5)
    assert torch.equal(mixture.loc, torch.full((2, 3), 1.5))
    reference = normflows.distributions.GaussianMixture(2, 3, 1.5)
    x = _points(4, 3)
    torch.testing.assert_close(mixture.double().log_prob(x), reference.log_prob(x))


def test_conditional_diag_gaussian_base_state_dict_both_ways():
    def build(m):
        return m.distributions.base.ConditionalDiagGaussian(2, nn.Linear(3, 4))

    theirs, ours = _both(build)
    x, context = _points(5, 2), _points(5, 3, seed=8)
    _round_trip(theirs, ours, lambda model: [model.log_prob(x, context)])


def test_gaussian_pca_state_dict_and_density():
    """Same parameters both ways; flowforge's log-density is the Gaussian's (normflows' has a sign and a
    determinant slip, kept out on purpose), so it is checked against torch.distributions."""
    theirs, ours = _both(lambda m: m.distributions.GaussianPCA(4, 2))
    assert _shapes(ours.state_dict()) == _shapes(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = _points(6, 4)
    covariance = ours.W.T @ ours.W + torch.exp(2 * ours.log_sigma) * torch.eye(4, dtype=torch.float64)
    gaussian = torch.distributions.MultivariateNormal(ours.loc[0], covariance)
    torch.testing.assert_close(ours.log_prob(x), gaussian.log_prob(x))
    z, log_q = ours(3)
    torch.testing.assert_close(log_q, gaussian.log_prob(z))


def test_uniform_has_no_state_like_normflows():
    assert cnf.distributions.base.Uniform((2, 3)).state_dict().keys() == set()
    theirs = normflows.distributions.base.Uniform(2, -2.0, 3.0)
    ours = cnf.distributions.base.Uniform(2, -2.0, 3.0)
    x = torch.tensor([[0.0, 1.0], [4.0, 0.0]])
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x))


# ----------------------------------------------------------------------------------------------
# targets and priors


TARGETS = {
    "TwoMoons": lambda m: m.distributions.target.TwoMoons(),
    "RingMixture": lambda m: m.distributions.target.RingMixture(3),
    "CircularGaussianMixture": lambda m: m.distributions.target.CircularGaussianMixture(6),
    "TwoIndependent": lambda m: m.distributions.target.TwoIndependent(
        m.distributions.target.TwoMoons(), m.distributions.base.DiagGaussian(2)
    ),
}


@pytest.mark.parametrize("case", list(TARGETS))
def test_target_state_dict_both_ways(case):
    theirs, ours = _both(TARGETS[case])
    x = _points(7, 4 if case == "TwoIndependent" else 2)
    rtol = 1e-6 if case != "CircularGaussianMixture" else 1e-5  # normflows keeps its scale in float32
    assert _shapes(ours.state_dict()) == _shapes(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=rtol, atol=1e-5)
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=rtol, atol=1e-5)
    assert ours.sample(5).shape == theirs.sample(5).shape


def test_conditional_target_is_normflows():
    theirs = normflows.distributions.target.ConditionalDiagGaussian()
    ours = cnf.distributions.target.ConditionalDiagGaussian()
    x, context = _points(5, 3), _points(5, 6, seed=9).abs() + 0.5
    torch.testing.assert_close(ours.log_prob(x, context), theirs.log_prob(x, context))
    assert ours.sample(5, context).shape == (5, 3)
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_normflows_style_target_subclass_samples_by_rejection():
    class Box(cnf.distributions.Target):
        def __init__(self):
            super().__init__(torch.tensor(2.0), torch.tensor(-1.0))
            self.n_dims, self.max_log_prob = 2, 0.0

        def log_prob(self, z):
            return -(z**2).sum(1)

    target = Box()
    assert set(target.state_dict()) == {"prop_scale", "prop_shift"}
    samples = target.sample(50)
    assert samples.shape == (50, 2) and bool(((samples >= -1) & (samples <= 1)).all())


PRIORS = [
    ("TwoModes", {"loc": 1, "scale": 0.2}),
    ("Sinusoidal", {"scale": 1.0, "period": 1.0}),
    ("Sinusoidal_split", {"scale": 0.5, "period": 2.0}),
    ("Sinusoidal_gap", {"scale": 0.5, "period": 2.0}),
    ("Smiley", {"scale": 1.0}),
]


@pytest.mark.parametrize("name, arguments", PRIORS)
def test_prior_densities_are_normflows(name, arguments):
    x = 2 * _points(20, 2)
    theirs = getattr(normflows.distributions.prior, name)(**arguments).log_prob(x)
    ours = getattr(cnf.distributions.prior, name)(**arguments).log_prob(x)
    torch.testing.assert_close(ours, theirs)


def test_image_prior_state_dict_both_ways():
    image = np.random.default_rng(0).random((6, 5)).astype(np.float32)
    theirs, ours = normflows.distributions.prior.ImagePrior(image), cnf.distributions.prior.ImagePrior(image)
    assert _shapes(ours.state_dict()) == _shapes(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = (3 * _points(30, 2)).float()
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x))
    assert ours.sample(4).shape == (4, 2)


# ----------------------------------------------------------------------------------------------
# encoders, decoders, proposals, interpolation, HAIS


def test_const_diag_gaussian_encoder_both_ways():
    def build(m):
        return m.distributions.encoder.ConstDiagGaussian(np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.5, 2.0]))

    theirs, ours = _both(build)
    z, x = _points(4, 2, 3), _points(4, 3, seed=5)
    _round_trip(theirs, ours, lambda model: [model.log_prob(z, x)])


def test_nn_diag_gaussian_encoder_both_ways():
    theirs, ours = _both(lambda m: m.distributions.encoder.NNDiagGaussian(nn.Linear(5, 6)))
    x, z = _points(4, 5), _points(4, 2, 3, seed=6)
    _round_trip(theirs, ours, lambda model: [model.log_prob(z, x)])
    torch.manual_seed(1)
    sample, log_q = ours(x, 2)
    torch.testing.assert_close(log_q, theirs.log_prob(sample, x))


@pytest.mark.parametrize("name", ["Dirac", "Uniform"])
def test_parameter_free_encoders_are_normflows(name):
    theirs, ours = getattr(normflows.distributions.encoder, name)(), getattr(cnf.distributions.encoder, name)()
    x = torch.rand(4, 3)
    z, log_q = ours(x, 2)
    assert z.shape == (4, 2, 3)
    torch.testing.assert_close(log_q, theirs.log_prob(z, x))


@pytest.mark.parametrize("name, width", [("NNDiagGaussianDecoder", 8), ("NNBernoulliDecoder", 4)])
def test_decoders_both_ways(name, width):
    theirs, ours = _both(lambda m: getattr(m.distributions.decoder, name)(nn.Linear(3, width)))
    x, z = torch.rand(2, 4, dtype=torch.float64).round(), _points(6, 3)  # three latents per data point

    def evaluate(model):
        out = model(z)
        return [model.log_prob(x, z), *(out if isinstance(out, tuple) else (out,))]

    _round_trip(theirs, ours, evaluate)


def test_diag_gaussian_proposal_both_ways():
    theirs, ours = _both(lambda m: m.distributions.mh_proposal.DiagGaussianProposal((2,), [0.5, 2.0]))
    z, z_ = _points(5, 2), _points(5, 2, seed=11)
    _round_trip(theirs, ours, lambda model: [model.log_prob(z_, z)])
    new, log_ratio = ours(z)
    assert new.shape == z.shape and torch.equal(log_ratio, torch.zeros(5, dtype=torch.float64))


def test_linear_interpolation_is_normflows():
    first, second = cnf.distributions.target.TwoMoons(), cnf.distributions.base.DiagGaussian(2).double()
    x = _points(5, 2)
    ours = cnf.distributions.LinearInterpolation(first, second, 0.3).log_prob(x)
    theirs = normflows.distributions.LinearInterpolation(first, second, 0.3).log_prob(x)
    torch.testing.assert_close(ours, theirs)


def test_hais_estimates_the_normaliser():
    """Prior N(0, I), target 5 · N(0, I): the log weights average to log 5."""
    torch.manual_seed(0)
    prior = cnf.distributions.DiagGaussian(2, trainable=False)

    class Scaled:
        def log_prob(self, z):
            return math.log(5.0) + prior.log_prob(z)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hais = cnf.HAIS(torch.linspace(1, 0, 4), prior, Scaled(), 3, torch.full((2,), 0.3), torch.zeros(2))
        samples, log_weights = hais.sample(200)
    assert samples.shape == (200, 2)
    torch.testing.assert_close(log_weights, torch.full((200,), math.log(5.0)), atol=1e-4, rtol=0)
