"""Bounded supports and normalisation layers beyond the generic harness."""

import io

import pytest
import torch

import flowforge as nf
from flowforge.metrics import grid_points


@pytest.mark.parametrize(
    "layer, outside",
    [(nf.flows.Sigmoid(), 1.5), (nf.flows.Tanh(), -1.2), (nf.flows.Sigmoid(0.05), 2.0)],
)
def test_outside_the_support_has_zero_density_not_nan(layer, outside):
    x = torch.tensor([[0.5, 0.25], [outside, 0.25]], dtype=torch.float64)
    z, log_det = layer.inverse(x)
    assert torch.isfinite(log_det[0]) and log_det[1] == -torch.inf
    assert not torch.isnan(z).any()


def test_a_flow_onto_the_unit_square_is_normalised_there():
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), [nf.flows.Planar((2,)), nf.flows.Sigmoid()]).double()
    points, area = grid_points(((0.0, 1.0), (0.0, 1.0)), 1000, torch.zeros((), dtype=torch.float64))
    with torch.no_grad():
        total = float(torch.exp(model.log_prob(points)).sum() * area)
        outside = model.log_prob(torch.tensor([[1.2, 0.5], [-0.1, 0.5]], dtype=torch.float64))
    assert abs(total - 1) < 2e-3
    assert (outside == -torch.inf).all()
    x, log_q = model.sample(1000)
    assert ((x > 0) & (x < 1)).all() and torch.isfinite(log_q).all()


def test_tanh_log_det_is_stable_for_large_inputs():
    _, log_det = nf.flows.Tanh()(torch.tensor([[50.0, -50.0]], dtype=torch.float64))
    assert torch.isfinite(log_det).all()
    assert float(log_det) == pytest.approx(2 * 2 * (torch.log(torch.tensor(2.0)).item() - 50), rel=1e-9)


def test_periodic_wrap_maps_any_turn_to_the_canonical_interval():
    x = torch.tensor([[7.0, 7.0], [-3.5, 0.0]])
    z, _ = nf.flows.PeriodicWrap([0], bound=3.0).inverse(x)
    torch.testing.assert_close(z, torch.tensor([[1.0, 7.0], [2.5, 0.0]]))
    shifted, _ = nf.flows.PeriodicShift([0, 1], bound=1.0, shift=0.5)(torch.tensor([[0.75, -1.0]]))
    torch.testing.assert_close(shifted, torch.tensor([[-0.75, -0.5]]))


def test_actnorm_standardises_its_first_batch_and_then_stays_put():
    layer = nf.flows.ActNorm((3,))
    data = torch.randn(500, 3) * torch.tensor([3.0, 0.5, 1.0]) + torch.tensor([1.0, -2.0, 0.0])
    z, _ = layer.inverse(data)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3), atol=1e-4, rtol=0)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.inverse(torch.randn(100, 3) * 10)
    for key, value in layer.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_actnorm_initialisation_survives_save_and_load():
    layer = nf.flows.ActNorm((3,))
    layer.inverse(torch.randn(200, 3) * 4 + 2)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = nf.flows.ActNorm((3,))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.inverse(torch.randn(50, 3))  # must not initialise again from this batch
    torch.testing.assert_close(fresh.s, layer.s)
    torch.testing.assert_close(fresh.t, layer.t)


def test_actnorm_in_the_sampling_direction_standardises_the_output():
    layer = nf.flows.ActNorm((2,))
    x, _ = layer(torch.randn(400, 2) * 5 - 3)
    torch.testing.assert_close(x.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        nf.flows.ActNorm((2,)).inverse(torch.randn(1, 2))


def test_batchnorm_training_and_evaluation():
    layer = nf.flows.BatchNorm((2,), momentum=0.5)
    data = torch.randn(1000, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([3.0, -1.0])
    z, log_det = layer.inverse(data)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    expected = -0.5 * torch.log(data.var(0, unbiased=False) + 1e-5).sum()
    torch.testing.assert_close(log_det, expected.expand(1000))
    torch.testing.assert_close(layer.running_mean[0], 0.5 * data.mean(0), atol=1e-5, rtol=0)
    layer.eval()
    x = torch.randn(7, 2)
    torch.testing.assert_close(layer.forward(layer.inverse(x)[0])[0], x)
    with pytest.raises(ValueError, match="at least 2 samples"):
        layer.train().inverse(torch.randn(1, 2))


def test_batchnorm_without_a_shape_takes_the_first_batch_and_loads_state():
    layer = nf.flows.BatchNorm()
    data = torch.randn(50, 3) * 2 + 1
    layer.inverse(data)
    assert layer.shape == (3,)
    fresh = nf.flows.BatchNorm(1e-5)
    fresh.load_state_dict(layer.state_dict())
    fresh.eval()
    layer.eval()
    torch.testing.assert_close(fresh.inverse(data)[0], layer.inverse(data)[0])


def test_sigmoid_with_alpha_is_the_logit_preprocessing_backwards():
    alpha = 0.05
    layer = nf.flows.Sigmoid(alpha)
    x = torch.tensor([[0.0, 0.3, 1.0]], dtype=torch.float64)
    z, log_det = layer.inverse(x)
    y = alpha + (1 - 2 * alpha) * x
    torch.testing.assert_close(z, torch.log(y / (1 - y)))
    expected = (torch.log(torch.tensor(1 - 2 * alpha, dtype=torch.float64)) - torch.log(y * (1 - y))).sum(1)
    torch.testing.assert_close(log_det, expected)
    x_back, forward_log_det = layer(z)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(forward_log_det, -log_det)
    with pytest.raises(ValueError, match="alpha"):
        nf.flows.Sigmoid(0.5)


def test_the_retired_flows_logit_name_warns_and_keeps_its_direction():
    with pytest.warns(DeprecationWarning, match=r"flowforge.flows.Logit is retired: .*Reverse\(Sigmoid\(alpha\)\)"):
        layer = nf.flows.Logit(0.05)
    x = torch.tensor([[0.2, 0.7]], dtype=torch.float64)
    z, log_det = layer(x)  # forward: (0, 1) -> the real line, as flows.Logit's was
    expected = nf.flows.Sigmoid(0.05).inverse(x)
    torch.testing.assert_close(z, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(log_det, expected[1], rtol=0, atol=0)
