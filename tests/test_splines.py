"""Rational-quadratic splines: accuracy over the whole interval, tails, knots, extreme parameters."""

import math

import pytest
import torch

import flowforge as nf
from flowforge.flows.splines import identity_derivative_offset, rational_quadratic_spline

K, BOUND = 8, 3.0


def parameters(n, scale, dtype, periodic=False, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def draw(k):
        return scale * torch.randn(n, k, generator=generator, dtype=dtype)

    return draw(K), draw(K), draw(K if periodic else K - 1)


def interval(periodic, n, dtype):
    """The whole interval, tails included (periodic: one turn, ending just short of +BOUND)."""
    return (
        torch.linspace(-BOUND, BOUND - 1e-4, n, dtype=dtype)
        if periodic
        else torch.linspace(-1.3 * BOUND, 1.3 * BOUND, n, dtype=dtype)
    )


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_inverse_round_trip_over_the_whole_interval_float32(periodic, scale):
    # forward(inverse(y)) = y: the round trip through the inverse, well conditioned for any parameters.
    y = interval(periodic, 50_001, torch.float32)
    w, h, d = parameters(len(y), scale, torch.float32, periodic)
    x, log_inverse = rational_quadratic_spline(y, w, h, d, inverse=True, periodic=periodic)
    y_back, log_forward = rational_quadratic_spline(x, w, h, d, periodic=periodic)
    assert (y_back - y).abs().max() < 1e-4
    assert torch.isfinite(log_inverse).all()


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_round_trip_through_the_forward_map(periodic, dtype, tolerance):
    # inverse(forward(x)) = x amplifies y's rounding by 1/y'(x); at the scale of a trained
    # conditioner's outputs y' stays well away from 0.
    x = interval(periodic, 50_001, dtype)
    w, h, d = parameters(len(x), 0.5, dtype, periodic)
    y, log_forward = rational_quadratic_spline(x, w, h, d, periodic=periodic)
    x_back, log_inverse = rational_quadratic_spline(y, w, h, d, inverse=True, periodic=periodic)
    assert (x_back - x).abs().max() < tolerance
    assert (log_forward + log_inverse).abs().max() < 100 * tolerance


def test_float64_round_trip_with_wild_parameters():
    x = interval(False, 50_001, torch.float64)
    w, h, d = parameters(len(x), 2.0, torch.float64)
    y, _ = rational_quadratic_spline(x, w, h, d)
    x_back, _ = rational_quadratic_spline(y, w, h, d, inverse=True)
    assert (x_back - x).abs().max() < 1e-8


@pytest.mark.parametrize("periodic", [False, True])
def test_log_derivative_matches_autograd(periodic):
    x = torch.linspace(-BOUND + 1e-3, BOUND - 1e-3, 400, dtype=torch.float64, requires_grad=True)
    w, h, d = parameters(400, 1.0, torch.float64, periodic)
    y, log_derivative = rational_quadratic_spline(x, w, h, d, periodic=periodic)
    (gradient,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(log_derivative, gradient.log(), rtol=1e-9, atol=1e-9)


def test_outside_the_tail_bound_is_the_identity_with_finite_gradients():
    x = torch.tensor([-1e6, -3.5, -3.0, 3.0, 3.5, 1e6], dtype=torch.float64, requires_grad=True)
    w, h, d = (p.requires_grad_() for p in parameters(6, 1.0, torch.float64))
    y, log_derivative = rational_quadratic_spline(x, w, h, d)
    torch.testing.assert_close(y, x.detach())
    torch.testing.assert_close(log_derivative, torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    (y.sum() + log_derivative.sum()).backward()
    for tensor in (x, w, h, d):
        assert torch.isfinite(tensor.grad).all()
    outside = [0, 1, 4, 5]
    torch.testing.assert_close(x.grad[outside], torch.ones(4, dtype=torch.float64))


def expanded(params, n):
    return [p.expand(n, -1) for p in params]


def test_knots_map_to_knots_and_the_map_is_continuous_there():
    params = parameters(1, 1.0, torch.float64)
    w, h = params[0][0], params[1][0]
    x_knots = -BOUND + 2 * BOUND * torch.cumsum(1e-3 + (1 - 1e-3 * K) * torch.softmax(w, 0), 0)[:-1]
    y_knots = -BOUND + 2 * BOUND * torch.cumsum(1e-3 + (1 - 1e-3 * K) * torch.softmax(h, 0), 0)[:-1]
    y, _ = rational_quadratic_spline(x_knots, *expanded(params, K - 1))
    torch.testing.assert_close(y, y_knots, rtol=1e-12, atol=1e-12)
    x_back, _ = rational_quadratic_spline(y_knots, *expanded(params, K - 1), inverse=True)
    torch.testing.assert_close(x_back, x_knots, rtol=1e-12, atol=1e-12)
    left, _ = rational_quadratic_spline(x_knots - 1e-9, *expanded(params, K - 1))
    right, _ = rational_quadratic_spline(x_knots + 1e-9, *expanded(params, K - 1))
    assert (right - left).abs().max() < 1e-6


def test_zero_parameters_give_the_identity():
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    zeros = torch.zeros(101, K, dtype=torch.float64)
    y, log_derivative = rational_quadratic_spline(x, zeros, zeros, zeros[:, :-1] + identity_derivative_offset())
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(log_derivative, torch.zeros_like(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("scale", [20.0, 200.0])
def test_extreme_parameters_stay_finite_and_monotone(scale):
    n = 20_001
    x = torch.linspace(-BOUND, BOUND, n, dtype=torch.float32, requires_grad=True)
    params = [p.requires_grad_() for p in parameters(1, scale, torch.float32, seed=3)]
    y, log_derivative = rational_quadratic_spline(x, *expanded(params, n))
    assert torch.isfinite(y).all() and torch.isfinite(log_derivative).all()
    assert (y[1:] - y[:-1] >= -4 * torch.finfo(y.dtype).eps * BOUND).all()  # monotone up to rounding
    (y.sum() + log_derivative.sum()).backward()
    for tensor in (x, *params):
        assert torch.isfinite(tensor.grad).all()
    x_back, _ = rational_quadratic_spline(y.detach(), *expanded([p.detach() for p in params], n), inverse=True)
    assert torch.isfinite(x_back).all() and (x_back >= -BOUND).all() and (x_back <= BOUND).all()


def test_periodic_spline_is_a_smooth_map_of_the_circle():
    params = expanded([p[:1] for p in parameters(1, 1.0, torch.float64, periodic=True)], 2)
    ends = torch.tensor([-BOUND, BOUND - 1e-12], dtype=torch.float64)
    y, log_derivative = rational_quadratic_spline(ends, *params, periodic=True)
    torch.testing.assert_close(y, torch.tensor([-BOUND, BOUND], dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(log_derivative[0], log_derivative[1], atol=1e-9, rtol=0)
    wrapped, _ = rational_quadratic_spline(
        torch.tensor([0.5, 0.5 + 2 * BOUND], dtype=torch.float64), *params, periodic=True
    )
    torch.testing.assert_close(wrapped[0], wrapped[1])


def test_bad_parameter_shapes_and_minimums():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="K − 1"):
        rational_quadratic_spline(x, torch.zeros(3, K), torch.zeros(3, K), torch.zeros(3, K))
    with pytest.raises(ValueError, match="below 1"):
        rational_quadratic_spline(x, torch.zeros(3, K), torch.zeros(3, K), torch.zeros(3, K - 1), min_bin_width=0.2)


def test_minimum_bin_width_is_respected():
    n = 10_000
    x = torch.linspace(-BOUND, BOUND, n, dtype=torch.float64)
    widths = torch.tensor([[1000.0] + [0.0] * (K - 1)], dtype=torch.float64).expand(n, -1)
    zeros = torch.zeros(n, K, dtype=torch.float64)
    y, _ = rational_quadratic_spline(x, widths, zeros, zeros[:, :-1])
    # Bin 0 takes almost all of the interval; each of the other seven keeps the minimum 1e-3 of it,
    # so the last seven bins start at BOUND − 7 · 1e-3 · 2 · BOUND.
    start = BOUND - 7 * 1e-3 * 2 * BOUND
    inside_last = x > start
    assert math.isclose(float(inside_last.double().mean()), 7e-3, abs_tol=2e-4)
    assert torch.isfinite(y).all()


def test_coupling_with_a_custom_net_checks_its_output_width():
    layer = nf.flows.RationalQuadraticCoupling(4, 16, num_bins=5, net=nf.nets.MLP([2, 16, 2 * 3 * 5 - 1]))
    with pytest.raises(ValueError, match=r"conditioner must return \(3, 30\) spline parameters"):
        layer(torch.randn(3, 4))
    with pytest.raises(ValueError, match="custom net takes no context"):
        nf.flows.RationalQuadraticCoupling(4, 16, net=nf.nets.MLP([2, 16, 48]), context_features=2)


def test_bin_logit_scale_multiplies_only_the_width_and_height_logits():
    torch.manual_seed(0)
    net = nf.nets.MLP([2, 16, 2 * 3 * 5])
    for parameter in net.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    scaled = nf.flows.RationalQuadraticCoupling(4, 16, num_bins=5, net=net, bin_logit_scale=0.25)

    class Prescaled(torch.nn.Module):
        def forward(self, kept):
            params = net(kept).view(-1, 2, 15)
            return torch.cat([params[..., :10] * 0.25, params[..., 10:]], -1).reshape(-1, 30)

    reference = nf.flows.RationalQuadraticCoupling(4, 16, num_bins=5, net=Prescaled())
    z = 2 * torch.randn(64, 4)
    for got, want in zip(scaled(z), reference(z), strict=True):
        torch.testing.assert_close(got, want)
    assert not torch.allclose(scaled(z)[0], nf.flows.RationalQuadraticCoupling(4, 16, num_bins=5, net=net)(z)[0])
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="bin_logit_scale must be a positive finite number"):
            nf.flows.RationalQuadraticCoupling(4, 16, bin_logit_scale=bad)


def test_residual_net_context_gate_follows_its_formula():
    torch.manual_seed(1)
    net = nf.nets.ResidualNet(3, 2, 8, context_features=4, num_blocks=2, gate_context=True).double()
    x, c = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    h = net.initial(torch.cat([x, c], 1))
    for first, second, gate in zip(net.first, net.second, net.context, strict=True):
        h = h + second(torch.relu(first(torch.relu(h)))) * torch.sigmoid(gate(c))
    torch.testing.assert_close(net(x, c), net.final(torch.relu(h)))
    # The gate is the context's only path past the first layer: the blocks do not add V c.
    plain = nf.nets.ResidualNet(3, 2, 8, context_features=4, num_blocks=2).double()
    plain.load_state_dict(net.state_dict())
    assert not torch.allclose(plain(x, c), net(x, c))
    zero = nf.nets.ResidualNet(3, 2, 8, context_features=4, gate_context=True, init_zeros=True)
    assert torch.equal(zero(x.float(), c.float()), torch.zeros(5, 2))


def test_nsf_passes_the_coupling_options_on_and_refuses_them_for_autoregressive_layers():
    model = nf.NSF(3, 2, hidden=8, context_features=2, gate_context=True, bin_logit_scale=0.5)
    assert all(layer.bin_logit_scale == 0.5 and layer.net.gate_context for layer in model.flows)
    with pytest.raises(ValueError, match="options of the coupling layers, not autoregressive=True"):
        nf.NSF(3, 2, autoregressive=True, gate_context=True)
