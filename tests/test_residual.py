"""Residual flows: the log-det estimator, exact implicit gradients, Lipschitz bounds."""

import pytest
import torch

import flowforge as nf


def residual_pair(dim=3, **kwargs):
    torch.manual_seed(0)
    net = nf.nets.LipschitzMLP([dim, 32, 32, dim], init_zeros=False)
    exact = nf.flows.Residual(net, brute_force=True).double()
    estimated = nf.flows.Residual(net, **kwargs).double()
    return exact, estimated


@pytest.mark.parametrize(
    "kwargs, repeats",
    [({}, 3000), ({"n_samples": 2, "n_exact_terms": 1}, 3000), ({"n_dist": "poisson", "lamb": 2.0}, 12000)],
)
def test_russian_roulette_estimator_is_unbiased(kwargs, repeats):
    # Poisson's reweighting grows like k!/λ^k, so its draws are heavy-tailed: more of them are needed.
    exact, estimated = residual_pair(**kwargs)
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        truth = exact.inverse(x)[1]
        draws = torch.stack([estimated.inverse(x)[1] for _ in range(repeats)])
    error = draws.mean(0) - truth
    standard_error = draws.std(0) / draws.shape[0] ** 0.5
    assert (error.abs() < 3 * standard_error + 1e-12).all(), (error, standard_error)


def test_truncated_series_is_close_but_deterministic():
    exact, truncated = residual_pair(n_power_series=12)
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.manual_seed(1)
    first = truncated.inverse(x)[1]
    torch.manual_seed(1)
    torch.testing.assert_close(truncated.inverse(x)[1], first)


def test_parameter_gradients_through_the_fixed_point_match_finite_differences():
    exact, _ = residual_pair(dim=2)
    z = torch.randn(5, 2, dtype=torch.float64)
    parameter = exact.net.net[0].weight

    def loss():
        x, log_det = exact(z)
        return x.square().sum() + log_det.sum()

    (gradient,) = torch.autograd.grad(loss(), parameter)
    step, index = 1e-6, (3, 1)
    with torch.no_grad():
        parameter[index] += step
        upper = loss()
        parameter[index] -= 2 * step
        lower = loss()
        parameter[index] += step
    assert float(gradient[index]) == pytest.approx(float((upper - lower) / (2 * step)), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("exact", [True, False])
def test_lipschitz_constant_stays_below_one_after_updates(exact):
    torch.manual_seed(0)
    net = nf.nets.LipschitzMLP([4, 64, 64, 4], init_zeros=False)
    for layer in net.net:
        if isinstance(layer, nf.nets.SpectralNormLinear):
            layer.exact = exact
    with torch.no_grad():
        for layer in net.net:
            if isinstance(layer, nf.nets.SpectralNormLinear):
                layer.weight.mul_(10)
    nf.nets.update_lipschitz(net, 100)
    for layer in net.net:
        if isinstance(layer, nf.nets.SpectralNormLinear):
            assert float(torch.linalg.matrix_norm(layer.normalized_weight(), ord=2)) < 0.97 + 1e-4


def test_fixed_point_direction_converges_for_large_inputs():
    exact, _ = residual_pair(dim=2)
    z = 50 * torch.randn(10, 2, dtype=torch.float64)
    x, _ = exact(z)
    torch.testing.assert_close(exact.inverse(x)[0], z)


def test_residual_flow_preset_fits_by_reverse_kl():
    torch.manual_seed(0)
    model = nf.ResidualFlow(2, 4, hidden=32, p=nf.distributions.CircularGaussianMixture(2))
    before = nf.metrics.grid_kl(model, grid_size=60)["kl"]
    nf.training.fit(model, 300, samples_per_step=64, lr=5e-3, seed=0, progress=False, device="cpu")
    after = nf.metrics.grid_kl(model, grid_size=60)["kl"]
    assert after < before
    x, log_q = model.sample(50)
    torch.testing.assert_close(log_q, model.log_prob(x), rtol=1e-4, atol=1e-4)


def test_net_of_the_wrong_shape_is_an_error():
    layer = nf.flows.Residual(nf.nets.LipschitzMLP([2, 8, 3]), brute_force=True)
    with pytest.raises(ValueError, match=r"net returned shape \(4, 3\) for input of shape \(4, 2\)"):
        layer.inverse(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"Residual expects input of shape \(batch, 2\), got \(4, 5\)"):
        layer.inverse(torch.randn(4, 5))


def test_retired_keywords_warn_and_exact_trace_is_brute_force():
    net = nf.nets.LipschitzMLP([2, 8, 2])
    with pytest.warns(DeprecationWarning, match=r"reduce_memory=\.\.\.\) is deprecated: it has no effect"):
        layer = nf.flows.Residual(net, reduce_memory=False)
    assert not layer.brute_force
    with pytest.warns(DeprecationWarning, match=r"exact_trace=\.\.\.\) is deprecated: it is brute_force"):
        assert nf.flows.Residual(net, exact_trace=True).brute_force
    with pytest.raises(TypeError):  # keyword-only after reverse: normflows' positional forms are the compat class's
        nf.flows.Residual(net, True, True)


def _jacobian_log_det(layer, x):
    """``log|det ∂h/∂x|`` of the density direction ``h(x) = x + g(x)``, from autograd's full Jacobian."""
    rows = [torch.autograd.functional.jacobian(lambda v: v + layer.net(v), x[i : i + 1]) for i in range(x.shape[0])]
    return torch.stack([torch.linalg.slogdet(j.reshape(x.shape[1], x.shape[1]))[1] for j in rows])


@pytest.mark.parametrize("kwargs", [{}, {"n_dist": "poisson"}, {"n_power_series": 3}])
def test_evaluation_log_det_is_exact_and_deterministic_in_low_dimensions(kwargs):
    torch.manual_seed(0)
    net = nf.nets.LipschitzMLP([2, 32, 32, 2], init_zeros=False)
    layer = nf.flows.Residual(net, **kwargs).double().eval()
    x = torch.randn(16, 2, dtype=torch.float64)
    first, second = layer.inverse(x)[1], layer.inverse(x)[1]
    assert torch.equal(first, second)
    torch.testing.assert_close(first, _jacobian_log_det(layer, x), atol=1e-12, rtol=0)
    # sampling direction: minus the log-det at the solution
    z, log_det = layer.forward(x)
    torch.testing.assert_close(log_det, -_jacobian_log_det(layer, z), atol=1e-9, rtol=0)


def test_model_log_prob_in_evaluation_mode_is_repeatable():
    torch.manual_seed(0)
    flows = [nf.flows.Residual(nf.nets.LipschitzMLP([2, 16, 2], init_zeros=False)) for _ in range(3)]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), flows).eval()
    x = torch.randn(64, 2)
    values = [model.log_prob(x) for _ in range(5)]
    assert all(torch.equal(values[0], v) for v in values[1:])


def test_evaluation_estimate_above_the_exact_threshold_is_fixed_and_close():
    torch.manual_seed(0)
    net = nf.nets.LipschitzMLP([6, 32, 6], init_zeros=False)
    layer = nf.flows.Residual(net, eval_exact_max_dim=4).double().eval()
    exact = nf.flows.Residual(net, brute_force=True).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    state = torch.get_rng_state()
    first = layer.inverse(x)[1]
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert torch.equal(layer.inverse(x)[1], first)
    # one fixed probe: a Hutchinson estimate, close to the truth but not equal to it
    assert (first - exact.inverse(x)[1]).abs().max() < 1.0
    # the same probe for every row: a point's value does not depend on the batch it is in
    for row in range(8):
        torch.testing.assert_close(layer.inverse(x[row : row + 1])[1], first[row : row + 1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.inverse(x[3:7])[1], first[3:7], rtol=1e-12, atol=1e-12)
    layer.train()
    assert not torch.equal(layer.inverse(x)[1], layer.inverse(x)[1])  # training keeps the random estimator
