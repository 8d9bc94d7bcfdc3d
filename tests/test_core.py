"""NormalizingFlow: sampling, densities, losses and persistence."""

import math
import types

import pytest
import torch

import flowforge as nf
from flowforge.flows import base as flow_base
from flowforge.metrics import grid_points


def planar_model(dtype=torch.float64, layers=6, p=None):
    flows = [nf.flows.Planar((2,)) for _ in range(layers)] + [nf.flows.Radial((2,))]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(2), flows, p).to(dtype)


def test_sample_log_q_equals_log_prob():
    model = planar_model()
    x, log_q = model.sample(500)
    torch.testing.assert_close(log_q, model.log_prob(x), rtol=1e-9, atol=1e-9)


def test_forward_and_inverse_agree_with_each_other():
    model = planar_model()
    z = torch.randn(200, 2, dtype=torch.float64)
    x, log_det = model.forward_and_log_det(z)
    z_back, inverse_log_det = model.inverse_and_log_det(x)
    torch.testing.assert_close(z_back, z, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(model.forward(z), x)
    torch.testing.assert_close(model.inverse(x), z_back)


def test_density_integrates_to_one_on_a_grid():
    model = planar_model()
    points, area = grid_points(((-10.0, 10.0), (-10.0, 10.0)), 800, torch.zeros((), dtype=torch.float64))
    with torch.no_grad():
        total = torch.exp(model.log_prob(points)).sum() * area
    assert abs(float(total) - 1.0) < 2e-3


def test_forward_kld_is_mean_negative_log_likelihood():
    model = planar_model()
    x = torch.randn(64, 2, dtype=torch.float64)
    torch.testing.assert_close(model.forward_kld(x), -model.log_prob(x).mean())


def test_reverse_kld_value_and_annealing():
    target = nf.distributions.TwoModes(2.0, 0.1).double()
    model = planar_model(p=target)
    torch.manual_seed(3)
    loss = model.reverse_kld(256, beta=0.5)
    torch.manual_seed(3)
    x, log_q = model.sample(256)
    torch.testing.assert_close(loss, log_q.mean() - 0.5 * target.log_prob(x).mean())


def standard_normal_target():
    return nf.distributions.DiagGaussian(2, trainable=False).double()


def test_sticking_the_landing_gradient_vanishes_at_the_optimum():
    # q = p exactly: the path derivative of log q − log p is zero sample by sample,
    # while the score-function estimator is noisy (Roeder et al. 2017).
    model = nf.NormalizingFlow(
        nf.distributions.DiagGaussian(2), [nf.flows.AffineConstFlow((2,))], standard_normal_target()
    ).double()
    loss = model.reverse_kld(64, score_fn=False)
    loss.backward()
    for parameter in model.parameters():
        torch.testing.assert_close(parameter.grad, torch.zeros_like(parameter), rtol=0, atol=1e-12)
    model.zero_grad()
    model.reverse_kld(64, score_fn=True).backward()
    assert max(float(p.grad.abs().max()) for p in model.parameters()) > 1e-3


def test_sticking_the_landing_value_equals_plain_value():
    model = planar_model(p=nf.distributions.TwoModes(2.0, 0.1).double())
    torch.manual_seed(5)
    plain = model.reverse_kld(128)
    torch.manual_seed(5)
    stl = model.reverse_kld(128, score_fn=False)
    torch.testing.assert_close(stl, plain, rtol=1e-9, atol=1e-9)
    assert all(p.requires_grad for p in model.parameters())


def gaussian_pair(scale_p):
    """q = N(0, I) (via an identity flow), p = N(0, scale_p² I) unnormalised by a constant."""

    class ScaledGaussian(torch.nn.Module):
        def log_prob(self, z):
            return -0.5 * (z / scale_p).square().sum(1) + 3.0

    return nf.NormalizingFlow(
        nf.distributions.DiagGaussian(2), [nf.flows.AffineConstFlow((2,))], ScaledGaussian()
    ).double()


def alpha_divergence_exact(alpha, s_p, dims=2):
    if alpha == 1:
        return dims * 0.5 * (s_p**2 - 1 - math.log(s_p**2))  # KL(p‖q)
    if alpha == 0:
        return dims * 0.5 * (1 / s_p**2 - 1 + math.log(s_p**2))  # KL(q‖p)
    log_integral = -alpha * math.log(s_p) - 0.5 * math.log(alpha / s_p**2 + (1 - alpha))
    return dims * log_integral / (alpha * (alpha - 1))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_alpha_divergence_matches_closed_form(alpha):
    s_p = 0.7**0.5
    model = gaussian_pair(s_p)
    with torch.no_grad():
        estimate = model.reverse_alpha_div(200_000, alpha=alpha)
    assert abs(float(estimate) - alpha_divergence_exact(alpha, s_p)) < 0.01


def test_alpha_divergence_default_is_not_zero():
    model = gaussian_pair(0.7**0.5)
    assert float(model.reverse_alpha_div(1000).detach()) > 0.01


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_dreg_gradient_is_unbiased_for_the_same_objective(alpha):
    model = gaussian_pair(0.8)
    with torch.no_grad():
        model.flows[0].s.fill_(0.2)
        model.flows[0].t.fill_(0.3)

    def gradients(dreg, repeats=300):
        draws = []
        for _ in range(repeats):
            model.zero_grad()
            model.reverse_alpha_div(32, alpha=alpha, dreg=dreg).backward()
            draws.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        return torch.stack(draws)

    plain, dreg = gradients(False), gradients(True)
    difference = plain.mean(0) - dreg.mean(0)
    standard_error = (plain.var(0) / plain.shape[0] + dreg.var(0) / dreg.shape[0]).sqrt()
    assert (difference.abs() < 4 * standard_error + 1e-9).all(), (difference, standard_error)
    assert dreg.var(0).sum() <= plain.var(0).sum()


def test_dreg_returns_the_divergence_value():
    model = gaussian_pair(0.8)
    torch.manual_seed(9)
    plain = model.reverse_alpha_div(100, alpha=0.5)
    torch.manual_seed(9)
    dreg = model.reverse_alpha_div(100, alpha=0.5, dreg=True)
    torch.testing.assert_close(dreg, plain)


def test_losses_without_target_raise():
    model = planar_model()
    with pytest.raises(ValueError, match="needs a target"):
        model.reverse_kld(4)
    with pytest.raises(ValueError, match="needs a target"):
        model.reverse_alpha_div(4)


def test_save_and_load_round_trip(tmp_path):
    model = planar_model(p=nf.distributions.TwoModes(2.0, 0.1).double())
    path = tmp_path / "model.pt"
    model.save(path)
    other = planar_model(p=nf.distributions.TwoModes(2.0, 0.1).double())
    other.load(path)
    x = torch.randn(10, 2, dtype=torch.float64)
    torch.testing.assert_close(other.log_prob(x), model.log_prob(x), rtol=0, atol=0)


def test_double_and_float_models_work():
    for dtype in (torch.float32, torch.float64):
        model = planar_model(dtype, p=nf.distributions.TwoModes(2.0, 0.1).to(dtype))
        loss = model.reverse_kld(16)
        assert loss.dtype == dtype and torch.isfinite(loss)


def test_planar_constraint_and_extreme_inverse():
    layer = nf.flows.Planar((2,), u=torch.tensor([5.0, -3.0]), w=torch.tensor([-4.0, 2.0]), b=0.5).double()
    _, w_u_hat = layer.constrained_u()
    assert float(w_u_hat) > -1
    x = torch.tensor([[1e3, -1e3], [0.0, 0.0], [1e-8, 3.0], [-50.0, 20.0]], dtype=torch.float64)
    z, _ = layer.inverse(x)
    torch.testing.assert_close(layer(z)[0], x, rtol=1e-6, atol=1e-6)


def test_planar_inverse_float32_accuracy():
    layer = nf.flows.Planar((2,))
    x = 4 * torch.randn(10_000, 2)
    z, _ = layer.inverse(x)
    assert (layer(z)[0] - x).abs().max() < 1e-4


@pytest.mark.parametrize("shape, act", [((2,), "tanh"), ((5,), "tanh"), ((2, 3), "tanh"), ((3,), "leaky_relu")])
def test_planar_computes_the_same_with_and_without_autograd(shape, act):
    torch.manual_seed(0)
    layer = nf.flows.Planar(shape, act=act).double()
    z = torch.randn(300, *shape, dtype=torch.float64)
    for direction in (layer.forward, layer.inverse):
        with_grad = direction(z)
        with torch.no_grad():
            without = direction(z)
        for a, b in zip(with_grad, without, strict=True):
            torch.testing.assert_close(a.detach(), b, rtol=1e-13, atol=1e-13)


def test_planar_rejects_unknown_activation_and_wrong_parameter_size():
    with pytest.raises(ValueError, match="act must be one of"):
        nf.flows.Planar((2,), act="relu")
    with pytest.raises(ValueError, match="u must have 2 elements"):
        nf.flows.Planar((2,), u=torch.zeros(3))


def test_large_batches_without_gradients_run_in_chunks_with_the_same_result(monkeypatch):
    monkeypatch.setattr(nf.flows.base, "CHUNK_ROWS", 16)
    torch.manual_seed(0)
    flows = [nf.flows.MaskedAffineAutoregressive(3, 8), nf.flows.ActNorm(3), nf.flows.Planar((3,))]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(3), flows).double()
    for parameter in model.parameters():
        parameter.data.add_(0.2 * torch.randn_like(parameter))
    x = torch.randn(100, 3, dtype=torch.float64)
    with torch.no_grad():
        # ActNorm's first batch initialises it from all 100 rows, not from the first chunk.
        z, _ = model.inverse_and_log_det(x)
        seen_by_actnorm = flows[2].inverse(x)[0]
        torch.testing.assert_close(flows[1].t.view(3), seen_by_actnorm.mean(0))
        log_q = model.log_prob(x)
        samples, sample_log_q = model.forward_and_log_det(z)
    torch.testing.assert_close(model.log_prob(x).detach(), log_q)  # graph path: one piece
    torch.testing.assert_close(samples, x)
    calls = []
    handle = flows[0].register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    with torch.no_grad():
        model.forward_and_log_det(z)
    handle.remove()
    assert calls == [16] * 6 + [4]


def test_chunks_choose_their_thread_count_by_timing_and_restore_torchs(monkeypatch):
    # The first timing gives 1 s on one thread and 2 s on two; the second 5 s and 1 s.
    seen, clock = [], iter([0.0, 1.0, 1.0, 3.0, 0.0, 5.0, 5.0, 6.0])
    monkeypatch.setattr(flow_base, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr(flow_base, "_CHUNK_THREADS", {})
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    parts = [(torch.full((2,), float(i)), None) for i in range(6)]

    def apply(values, context):
        seen.append(torch.get_num_threads())
        return values + 1, context

    try:
        for expected in (1, 2):
            seen.clear()
            pieces = flow_base._apply_each(apply, parts, ("key",))
            assert [float(piece[0][0]) for piece in pieces] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # in order
            assert seen == [2, 1, 2] + [expected] * 3 and torch.get_num_threads() == 2
            for _ in range(flow_base.RETIME_EVERY - 1):  # the choice is reused, untimed, then timed again
                seen.clear()
                flow_base._apply_each(apply, parts, ("key",))
                assert seen == [expected] * 6 and torch.get_num_threads() == 2
        torch.set_num_threads(1)  # one thread already: nothing to choose, nothing timed
        assert len(flow_base._apply_each(apply, parts)) == 6
    finally:
        torch.set_num_threads(previous)


def test_batch_coupled_layers_see_the_whole_batch(monkeypatch):
    monkeypatch.setattr(nf.flows.base, "CHUNK_ROWS", 16)
    norm = nf.flows.BatchNorm(2)
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), [norm])
    x = 3 + 2 * torch.randn(100, 2)
    with torch.no_grad():
        z, _ = model.inverse_and_log_det(x)  # training mode: the statistics of all 100 rows
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    assert nf.flows.base.couples_batch([norm]) and not nf.flows.base.couples_batch([norm.eval()])


def test_consecutive_planar_layers_are_pushed_together_to_the_same_values_and_gradients(monkeypatch):
    torch.manual_seed(0)
    layers = [nf.flows.Planar(2) for _ in range(3)] + [nf.flows.Radial(2)] + [nf.flows.Planar(2) for _ in range(2)]
    layers.append(nf.flows.Planar(2, act="leaky_relu"))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), layers).double()
    with torch.no_grad():
        for parameter in model.flows.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    assert [len(run) for run in flow_base._stacks(model.flows)] == [3, 1, 2, 1]
    z = torch.randn(33, 2, dtype=torch.float64)

    def pushed():
        model.zero_grad()
        x, log_det = flow_base.push_forward(model.flows, z)
        (x.square().sum() + log_det.sum()).backward()
        return x.detach(), log_det.detach(), [p.grad.clone() for p in model.flows.parameters()]

    stacked = pushed()
    monkeypatch.setattr(flow_base, "_stacks", lambda flows: [[flow] for flow in flows])
    one_by_one = pushed()
    for got, expected in zip(stacked[:2] + tuple(stacked[2]), one_by_one[:2] + tuple(one_by_one[2]), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
