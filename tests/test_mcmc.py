"""MCMC kernels, stochastic flow layers and annealed importance sampling: invariance of the
target, unbiased normalisers, and the harder targets with known log Z."""

import math
import pickle

import pytest
import torch

import flowforge as nf
from flowforge import mcmc
from flowforge.metrics import grid_points, importance_log_weights

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
SCALE = torch.tensor([0.5, 2.0], dtype=torch.float64)


class Gaussian(torch.nn.Module):
    """``N(mean, diag(scale²))`` times ``exp(log_z)``: an unnormalised target with known answers."""

    def __init__(self, log_z=0.0, mean=MEAN, scale=SCALE):
        super().__init__()
        self.log_z, self.mean, self.scale = log_z, torch.as_tensor(mean), torch.as_tensor(scale)

    def log_prob(self, z):
        eps = (z - self.mean.to(z)) / self.scale.to(z)
        return self.log_z - 0.5 * (eps * eps).sum(1) - torch.log(self.scale.to(z)).sum() - math.log(2 * math.pi)

    def sample(self, n):
        return self.mean + self.scale * torch.randn(n, 2, dtype=torch.float64)


def narrow_gaussian(log_z):
    """A target narrower than the standard normal base in every direction, so that importance
    weights from that base have finite variance and their standard error means something."""
    return Gaussian(log_z, mean=torch.tensor([0.8, -0.5], dtype=torch.float64), scale=torch.tensor([0.3, 0.6]))


def assert_gaussian_moments(samples, sigmas=4.0):
    """Mean and variance of iid draws agree with MEAN and SCALE² within ``sigmas`` standard errors."""
    n = samples.shape[0]
    mean_error = (samples.mean(0) - MEAN) / (SCALE / math.sqrt(n))
    var_error = (samples.var(0) - SCALE**2) / (SCALE**2 * math.sqrt(2 / n))
    assert mean_error.abs().max() < sigmas, mean_error
    assert var_error.abs().max() < sigmas, var_error


@pytest.mark.parametrize("kernel", ["mh", "hmc"])
def test_kernels_leave_a_gaussian_target_invariant(kernel):
    # Chains that start exactly at the target stay iid from it after any number of moves.
    torch.manual_seed(0)
    target = Gaussian()
    x = target.sample(20_000)
    if kernel == "mh":
        log_p = target.log_prob(x)
        for _ in range(10):
            x, log_p, accepted = mcmc.metropolis_hastings_step(target.log_prob, x, log_p, SCALE)
    else:
        log_p, grad = mcmc.log_prob_and_grad(target.log_prob, x)
        for _ in range(5):
            x, log_p, grad, accepted = mcmc.hamiltonian_monte_carlo_step(
                target.log_prob, x, log_p, grad, 0.3 * SCALE, leapfrog_steps=5
            )
    assert 0.2 < float(accepted.double().mean()) < 1.0  # it moved
    torch.testing.assert_close(log_p, target.log_prob(x))
    assert_gaussian_moments(x)


@pytest.mark.parametrize("kernel", ["mh", "hmc"])
def test_chains_from_a_bad_start_find_the_target(kernel):
    torch.manual_seed(1)
    target = Gaussian()
    start = torch.full((64, 2), 6.0, dtype=torch.float64)
    chain = mcmc.sample_chain(target.log_prob, start, 200, kernel=kernel, burn_in=400, thin=2)
    assert chain.samples.shape == (200, 64, 2) and chain.flat().shape == (12_800, 2)
    goal = mcmc.TARGET_ACCEPTANCE[kernel]
    assert abs(chain.acceptance - goal) < 0.15
    # Autocorrelated draws: a looser check of the first two moments.
    samples = chain.flat()
    assert ((samples.mean(0) - MEAN).abs() < 0.15 * SCALE * 4).all()
    assert ((samples.std(0) / SCALE - 1).abs() < 0.15).all()


@pytest.mark.parametrize("kernel", ["mh", "hmc"])
def test_proposals_with_nan_density_are_rejected(kernel):
    # A flow's log-density can overflow far out; such proposals must be refused, not raise or leak.
    def log_prob(z):
        value = -0.5 * (z * z).sum(1)
        return torch.where(z[:, 0] > 1.0, torch.nan, value)

    torch.manual_seed(9)
    chain = mcmc.sample_chain(log_prob, torch.zeros(32, 2, dtype=torch.float64), 100, kernel=kernel, burn_in=50)
    assert torch.isfinite(chain.samples).all() and (chain.samples[..., 0] <= 1.0).all()


def test_chain_arguments_are_checked():
    target = Gaussian()
    start = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="kernel must be one of"):
        mcmc.sample_chain(target.log_prob, start, 10, kernel="gibbs")
    with pytest.raises(ValueError, match="step_size must broadcast"):
        mcmc.sample_chain(target.log_prob, start, 10, step_size=torch.ones(3))
    with pytest.raises(ValueError, match="step_size must be positive"):
        mcmc.sample_chain(target.log_prob, start, 10, step_size=-0.1)
    with pytest.raises(ValueError, match="log_prob must return shape"):
        mcmc.sample_chain(lambda z: z, start, 10)
    with pytest.raises(ValueError, match="NaN"):
        mcmc.sample_chain(lambda z: z.sum(1) * torch.nan, start, 10, kernel="mh")
    with pytest.raises(ValueError, match="finite log-density"):
        mcmc.sample_chain(lambda z: z.sum(1) - torch.inf, start, 10, kernel="mh")


def stochastic_model(layer_kind, target, steps=2, temperatures=4):
    """A Planar layer near the identity, then stochastic layers towards points on the path from the
    base to the target, the last one the target itself."""
    torch.manual_seed(3)
    base = nf.distributions.DiagGaussian(2, trainable=False).double()
    layers = [nf.flows.Planar((2,), u=0.1 * torch.randn(2), w=torch.randn(2)).double()]
    for index in range(temperatures):
        beta = (index + 1) / temperatures
        goal = nf.distributions.AnnealedTarget(base, target, beta)
        if layer_kind == "mh":
            layers.append(nf.flows.MetropolisHastings(goal, steps=steps, proposal_scale=0.6))
        else:
            layers.append(nf.flows.HamiltonianMonteCarlo(goal, steps=steps, leapfrog_steps=4, step_size=0.25))
    return nf.NormalizingFlow(base, layers, target).double()


@pytest.mark.parametrize("layer_kind", ["mh", "hmc"])
def test_stochastic_layer_weights_give_an_unbiased_normaliser(layer_kind):
    target = narrow_gaussian(log_z=1.7)
    model = stochastic_model(layer_kind, target)
    torch.manual_seed(4)
    log_weights = importance_log_weights(model, 20_000, chunk=5000)
    weights = torch.exp(log_weights - 1.7)
    estimate, standard_error = float(weights.mean()), float(weights.std() / math.sqrt(weights.shape[0]))
    assert abs(estimate - 1.0) < 3 * standard_error, (estimate, standard_error)
    # The MCMC moves must matter: the same flow without them is a far worse sampler.
    plain = nf.NormalizingFlow(model.q0, model.flows[:1], target)
    torch.manual_seed(4)
    ess_plain = float(nf.metrics.effective_sample_size(importance_log_weights(plain, 20_000)))
    assert float(nf.metrics.effective_sample_size(log_weights)) > 1.3 * ess_plain


@pytest.mark.parametrize("layer_kind", ["mh", "hmc"])
def test_stochastic_layers_keep_the_flow_contract(layer_kind):
    model = stochastic_model(layer_kind, Gaussian(), steps=1)
    layer = model.flows[1]
    z = torch.randn(50, 2, dtype=torch.float64)
    x, delta = layer(z)
    assert x.shape == z.shape and x.dtype == torch.float64 and delta.shape == (50,)
    goal = layer.target
    torch.testing.assert_close(delta, goal.log_prob(z) - goal.log_prob(x))
    back, inverse_delta = layer.inverse(x)
    torch.testing.assert_close(inverse_delta, goal.log_prob(x) - goal.log_prob(back))
    x, log_q = model.sample(30)
    assert torch.isfinite(log_q).all() and x.shape == (30, 2)
    copy = pickle.loads(pickle.dumps(model))
    copy.load_state_dict(model.state_dict())
    assert set(copy.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("layer_kind", ["mh", "hmc"])
def test_trainable_stochastic_layers_get_gradients(layer_kind):
    # A move towards p itself as the last layer drops out of the reverse KL (log p cancels); one
    # towards an intermediate target, followed by a deterministic layer, does not.
    torch.manual_seed(5)
    target = Gaussian()
    base = nf.distributions.DiagGaussian(2).double()
    halfway = nf.distributions.AnnealedTarget(base, target, 0.5)
    if layer_kind == "mh":
        layer = nf.flows.MetropolisHastings(halfway, steps=3, proposal_scale=0.5, trainable=True)
    else:
        layer = nf.flows.HamiltonianMonteCarlo(halfway, steps=1, leapfrog_steps=3, step_size=0.2, trainable=True)
    model = nf.NormalizingFlow(base, [nf.flows.Planar((2,)), layer, nf.flows.Planar((2,))], target).double()
    loss = model.reverse_kld(256)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_stochastic_layer_arguments_are_checked():
    with pytest.raises(ValueError, match="log_prob method"):
        nf.flows.MetropolisHastings(object())
    with pytest.raises(ValueError, match="proposal_scale must be positive"):
        nf.flows.MetropolisHastings(Gaussian(), proposal_scale=0.0)
    with pytest.raises(ValueError, match="leapfrog_steps must be a positive int"):
        nf.flows.HamiltonianMonteCarlo(Gaussian(), leapfrog_steps=0)
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\]"):
        nf.distributions.AnnealedTarget(Gaussian(), Gaussian(), 1.5)


def test_annealed_target_interpolates_log_densities():
    base, target = nf.distributions.DiagGaussian(2, trainable=False).double(), Gaussian(0.3)
    z = torch.randn(7, 2, dtype=torch.float64)
    mixed = nf.distributions.AnnealedTarget(base, target, 0.25).log_prob(z)
    torch.testing.assert_close(mixed, 0.75 * base.log_prob(z) + 0.25 * target.log_prob(z))


@pytest.mark.parametrize("kernel", ["mh", "hmc"])
def test_annealed_importance_sampling_estimates_log_z(kernel):
    torch.manual_seed(6)
    target = narrow_gaussian(log_z=-0.8)
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), [nf.flows.Planar((2,))], target)
    model = model.double()
    result = mcmc.annealed_importance_sampling(
        model, num_samples=4000, num_temperatures=16, kernel=kernel, step_size=0.3, leapfrog_steps=3, adapt=False
    )
    assert result.samples.shape == (4000, 2) and result.log_weights.shape == (4000,)
    assert abs(result.log_z + 0.8) < 3 * result.log_z_se + 1e-3, (result.log_z, result.log_z_se)
    plain = importance_log_weights(model, 4000)
    assert result.ess > float(nf.metrics.effective_sample_size(plain))
    adapted = mcmc.annealed_importance_sampling(model, num_samples=2000, num_temperatures=16, kernel=kernel)
    assert abs(adapted.log_z + 0.8) < 0.1 and 0.2 < adapted.acceptance < 1.0


def test_gmm40_is_normalised_and_sampled_exactly():
    target = nf.distributions.GaussianMixture40().double()
    assert target.means.shape == (40, 2) and target.means.abs().max() <= 40
    points, area = grid_points(target.bounds.tolist(), 1200, torch.zeros((), dtype=torch.float64))
    assert abs(float(torch.exp(target.log_prob(points)).sum() * area) - 1) < 1e-3
    torch.manual_seed(7)
    samples = target.sample(50_000)
    nearest = torch.cdist(samples, target.means).argmin(1)
    counts = torch.bincount(nearest, minlength=40).double()
    assert (counts > 0.5 * 50_000 / 40).all()  # every mode is visited about equally


@pytest.mark.parametrize("dim", [2, 6])
def test_many_well_log_z_and_samples(dim):
    target = nf.distributions.ManyWell(dim).double()
    one_pair = nf.distributions.ManyWell(2).double()
    points, area = grid_points(((-4.0, 4.0), (-9.0, 9.0)), 1500, torch.zeros((), dtype=torch.float64))
    log_z_pair = math.log(float(torch.exp(one_pair.log_prob(points)).sum() * area))
    assert abs(one_pair.log_z - log_z_pair) < 1e-5
    assert abs(target.log_z - dim / 2 * log_z_pair) < 1e-4
    torch.manual_seed(8)
    samples = target.sample(40_000)
    assert samples.shape == (40_000, dim) and samples.dtype == torch.float64
    weights = torch.softmax(one_pair.log_prob(points), 0)
    for pair in range(dim // 2):
        for feature in (lambda z: z[:, 0], lambda z: z[:, 0] ** 2, lambda z: z[:, 1] ** 2):
            exact = float((weights * feature(points)).sum())
            values = feature(samples[:, 2 * pair : 2 * pair + 2])
            assert abs(float(values.mean()) - exact) < 4 * float(values.std()) / math.sqrt(len(values))
    with pytest.raises(ValueError, match="even dim"):
        nf.distributions.ManyWell(5)
    with pytest.raises(ValueError, match=rf"shape \(batch, {dim}\)"):
        target.log_prob(torch.zeros(3, dim + 1))
