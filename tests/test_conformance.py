"""The conformance harness of docs/design.md, run over every public layer in CATALOGUE.

A new layer is not done until it has an entry here.
"""

import io
import math
import pickle

import pytest
import torch

import flowforge as nf


class WithContext(nf.flows.Flow):
    """Runs a conditional layer with a fixed context, so the harness below applies unchanged."""

    def __init__(self, layer, context_features):
        super().__init__()
        self.layer = layer
        self.register_buffer("context", torch.randn(1, context_features))

    def forward(self, z):
        return self.layer(z, self.context.expand(z.shape[0], -1))

    def inverse(self, x):
        return self.layer.inverse(x, self.context.expand(x.shape[0], -1))


def coupling(features, additive=False):
    mask = nf.flows.alternating_mask(features)
    scale = None if additive else nf.nets.MLP([features, 16, features])
    return nf.flows.MaskedAffineCoupling(mask, nf.nets.MLP([features, 16, features]), scale)


def initialized_actnorm(shape):
    layer = nf.flows.ActNorm(shape)
    layer.inverse(2 * torch.randn(64, *(4 if size == 1 else size for size in shape)) + 1)
    return layer


def batchnorm_in_evaluation(features):
    layer = nf.flows.BatchNorm((features,))
    layer.running_mean.normal_()
    layer.running_var.uniform_(0.5, 2.0)
    return layer.eval()


CATALOGUE = {
    "Planar-tanh": (lambda: nf.flows.Planar((2,)), (2,)),
    "Planar-tanh-5d": (lambda: nf.flows.Planar((5,)), (5,)),
    "Planar-tanh-image": (lambda: nf.flows.Planar((2, 3)), (2, 3)),
    "Planar-leaky_relu": (lambda: nf.flows.Planar((3,), act="leaky_relu"), (3,)),
    "ConditionalPlanar-context": (lambda: WithContext(nf.flows.ConditionalPlanar((3,), 2), 2), (3,)),
    "ConditionalPlanar-leaky_relu-image-context": (
        lambda: WithContext(nf.flows.ConditionalPlanar((2, 2), 3, act="leaky_relu"), 3),
        (2, 2),
    ),
    "Radial": (lambda: nf.flows.Radial((2,)), (2,)),
    "ConditionalRadial-context": (lambda: WithContext(nf.flows.ConditionalRadial((4,), 2), 2), (4,)),
    "Radial-6d": (lambda: nf.flows.Radial((6,)), (6,)),
    "AffineConstFlow": (lambda: nf.flows.AffineConstFlow((4,)), (4,)),
    "AffineConstFlow-shared": (lambda: nf.flows.AffineConstFlow((3, 1)), (3, 2)),
    "Permute-shuffle": (lambda: nf.flows.Permute(5, "shuffle"), (5,)),
    "Permute-swap": (lambda: nf.flows.Permute(5, "swap"), (5,)),
    "Permute-reverse": (lambda: nf.flows.Permute(4, "reverse"), (4,)),
    "Composite": (
        lambda: nf.flows.Composite([nf.flows.Planar((3,)), nf.flows.Radial((3,)), nf.flows.Permute(3)]),
        (3,),
    ),
    "Reverse-Radial": (lambda: nf.flows.Reverse(nf.flows.Radial((3,))), (3,)),
    "MaskedAffineCoupling": (lambda: coupling(4), (4,)),
    "MaskedAffineCoupling-additive": (lambda: coupling(5, additive=True), (5,)),
    "MaskedAffineAutoregressive": (lambda: nf.flows.MaskedAffineAutoregressive(4, 16), (4,)),
    "MaskedAffineAutoregressive-order": (
        lambda: nf.flows.MaskedAffineAutoregressive(4, 16, order=torch.tensor([2, 0, 3, 1])),
        (4,),
    ),
    "MaskedAffineAutoregressive-context": (lambda: WithContext(nf.flows.MaskedAffineAutoregressive(3, 16, 2), 2), (3,)),
    "InverseAutoregressive": (lambda: nf.flows.InverseAutoregressive(4, 16, order=torch.tensor([3, 1, 0, 2])), (4,)),
    "InverseAutoregressive-context": (lambda: WithContext(nf.flows.InverseAutoregressive(3, 16, 4), 4), (3,)),
    "RationalQuadraticCoupling": (lambda: nf.flows.RationalQuadraticCoupling(4, 16, num_bins=5), (4,)),
    "RationalQuadraticCoupling-mlp-net": (
        lambda: nf.flows.RationalQuadraticCoupling(4, 16, num_bins=5, net=nf.nets.MLP([2, 16, 16, 2 * 3 * 5])),
        (4,),
    ),
    "RationalQuadraticCoupling-circular": (
        lambda: nf.flows.RationalQuadraticCoupling(5, 16, num_bins=4, tail_bound=math.pi, circular=[0, 1, 3]),
        (5,),
        "angles",
    ),
    "RationalQuadraticCoupling-context": (
        lambda: WithContext(nf.flows.RationalQuadraticCoupling(3, 16, num_bins=4, context_features=2), 2),
        (3,),
    ),
    "RationalQuadraticCoupling-gated-context": (
        lambda: WithContext(
            nf.flows.RationalQuadraticCoupling(
                3, 16, num_bins=4, context_features=2, gate_context=True, bin_logit_scale=0.25
            ),
            2,
        ),
        (3,),
    ),
    "RealNVPCoupling": (lambda: nf.flows.RealNVPCoupling(5, 16, nf.flows.alternating_mask(5, False)), (5,)),
    "RealNVPCoupling-context": (lambda: WithContext(nf.flows.RealNVPCoupling(3, 16, context_features=2), 2), (3,)),
    "Composite-context": (
        lambda: WithContext(
            nf.flows.Composite([nf.flows.RealNVPCoupling(3, 8, context_features=2), nf.flows.Permute(3)]), 2
        ),
        (3,),
    ),
    "Reverse-context": (
        lambda: WithContext(nf.flows.Reverse(nf.flows.MaskedAffineAutoregressive(3, 8, 2)), 2),
        (3,),
    ),
    "RationalQuadraticAutoregressive": (lambda: nf.flows.RationalQuadraticAutoregressive(3, 16, num_bins=5), (3,)),
    "RationalQuadraticAutoregressive-plain-made": (
        lambda: nf.flows.RationalQuadraticAutoregressive(3, 16, num_bins=5, use_residual_blocks=False),
        (3,),
    ),
    "RationalQuadraticAutoregressive-circular-context": (
        lambda: WithContext(
            nf.flows.RationalQuadraticAutoregressive(
                3, 16, num_bins=4, circular=[1], context_features=2, order=torch.tensor([1, 2, 0])
            ),
            2,
        ),
        (3,),
        "angles",
    ),
    "Sigmoid": (nf.flows.Sigmoid, (3,)),
    "Tanh": (nf.flows.Tanh, (3,)),
    "Sigmoid-alpha": (lambda: nf.flows.Sigmoid(alpha=0.05), (3,)),
    "Reverse-Sigmoid-alpha": (lambda: nf.flows.Reverse(nf.flows.Sigmoid(alpha=0.05)), (3,), "unit"),
    "PeriodicWrap": (lambda: nf.flows.PeriodicWrap([0, 2], bound=3.0), (4,), "angles"),
    "PeriodicShift": (lambda: nf.flows.PeriodicShift([1], bound=3.0, shift=0.7), (3,), "angles"),
    "ActNorm": (lambda: initialized_actnorm((4,)), (4,)),
    "ActNorm-per-channel": (lambda: initialized_actnorm((3, 1)), (3, 4)),
    "BatchNorm": (lambda: batchnorm_in_evaluation(4), (4,)),
    "Standardization": (lambda: nf.flows.Standardization.from_data(torch.randn(100, 3) * 4 + 2), (3,)),
    "Whitening": (
        lambda: nf.flows.Whitening.from_data(torch.randn(200, 3) @ torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, -1, 3]])),
        (3,),
    ),
    "InvertibleAffine-LU": (lambda: nf.flows.InvertibleAffine(4), (4,)),
    "InvertibleAffine-plain": (lambda: nf.flows.InvertibleAffine(3, use_lu=False), (3,)),
    "Invertible1x1Conv": (lambda: nf.flows.Invertible1x1Conv(3), (3, 2, 2)),
    "Invertible1x1Conv-LU": (lambda: nf.flows.Invertible1x1Conv(2, use_lu=True), (2, 3, 2)),
    "LULinearPermute": (lambda: nf.flows.LULinearPermute(4), (4,)),
    "Squeeze": (nf.flows.Squeeze, (4, 2, 2)),
    "AffineCouplingBlock-channel": (
        lambda: nf.flows.AffineCouplingBlock(nf.nets.ConvNet2d((2, 8, 4), (3, 3), init_zeros=False)),
        (4, 3, 3),
    ),
    "AffineCouplingBlock-checkerboard-sigmoid": (
        lambda: nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 8, 4]), scale_map="sigmoid", split_mode="checkerboard"),
        (4,),
    ),
    "AffineCouplingBlock-additive": (
        lambda: nf.flows.AffineCouplingBlock(nf.nets.MLP([3, 8, 2]), scale=False, split_mode="channel"),
        (5,),
    ),
    "Residual-exact": (
        lambda: nf.flows.Residual(nf.nets.LipschitzMLP([2, 16, 16, 2], init_zeros=False), brute_force=True),
        (2,),
    ),
    "Residual-exact-forward": (
        lambda: nf.flows.Residual(nf.nets.LipschitzMLP([3, 16, 3], init_zeros=False), reverse=False, brute_force=True),
        (3,),
    ),
    "GlowBlock": (lambda: nf.flows.GlowBlock(4, 8, init_zeros=False), (4, 2, 2)),
    "GlowBlock-checkerboard": (
        lambda: nf.flows.GlowBlock(2, 8, split_mode="checkerboard", scale_map="exp", init_zeros=False),
        (2, 2, 2),
    ),
}


SHAPE_AGNOSTIC = {"Sigmoid", "Sigmoid-alpha", "Reverse-Sigmoid-alpha", "Tanh", "PeriodicWrap", "PeriodicShift"}
SHAPE_AGNOSTIC |= {"Squeeze"}
"""Layers without parameters of an event shape: they work on any (suitable) shape."""
RESHAPING = {"Squeeze"}
"""Layers whose output has another shape (same number of elements) than their input."""


def build(name, dtype=torch.float64):
    factory, shape = CATALOGUE[name][:2]
    layer = factory().to(dtype)
    with torch.no_grad():  # move away from the initialisation so no parameter is trivially zero
        for parameter in layer.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return layer, shape


def inputs(name, batch, shape, dtype=torch.float64, scale=1.0):
    """Inputs for a catalogue entry: Gaussian, uniform on (0, 1) for layers defined there, or
    uniform on (−2.9, 2.9) for layers with angles
    (circular coordinates are taken modulo the period, so a point at the seam may come back as
    the same angle on the other end)."""
    if CATALOGUE[name][2:] == ("angles",):
        return 5.8 * torch.rand(batch, *shape, dtype=dtype) - 2.9
    if CATALOGUE[name][2:] == ("unit",):
        return 0.02 + 0.96 * torch.rand(batch, *shape, dtype=dtype)
    return scale * torch.randn(batch, *shape, dtype=dtype)


def jacobian_log_det(function, z):
    """log|det| of the Jacobian of a per-sample map, by autograd, one sample at a time."""
    values = []
    for sample in z:
        jacobian = torch.autograd.functional.jacobian(
            lambda v: function(v.reshape(1, *z.shape[1:]))[0].reshape(-1), sample.reshape(-1)
        )
        values.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(values)


names = pytest.mark.parametrize("name", sorted(CATALOGUE))


@names
def test_round_trip(name):
    layer, shape = build(name)
    z = inputs(name, 64, shape, scale=1.5)
    x, _ = layer(z)
    z_back, _ = layer.inverse(x)
    torch.testing.assert_close(z_back, z, rtol=1e-6, atol=1e-6)
    x_again, _ = layer(layer.inverse(x)[0])
    torch.testing.assert_close(x_again, x, rtol=1e-6, atol=1e-6)


@names
def test_forward_log_det_matches_autograd_jacobian(name):
    layer, shape = build(name)
    z = inputs(name, 8, shape)
    _, log_det = layer(z)
    torch.testing.assert_close(log_det, jacobian_log_det(layer, z), rtol=1e-6, atol=1e-8)


@names
def test_inverse_log_det_matches_autograd_and_negates_forward(name):
    layer, shape = build(name)
    z = inputs(name, 8, shape)
    x, forward_log_det = layer(z)
    _, inverse_log_det = layer.inverse(x)
    torch.testing.assert_close(inverse_log_det, -forward_log_det, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(inverse_log_det, jacobian_log_det(layer.inverse, x), rtol=1e-6, atol=1e-8)


@names
def test_batch_independence(name):
    layer, shape = build(name)
    z = inputs(name, 16, shape)
    x, log_det = layer(z)
    for i in (0, 7, 15):
        x_i, log_det_i = layer(z[i : i + 1])
        torch.testing.assert_close(x_i[0], x[i], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(log_det_i[0], log_det[i], rtol=1e-12, atol=1e-12)


@names
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(name, dtype):
    layer, shape = build(name, dtype)
    z = inputs(name, 5, shape, dtype)
    x = layer(z)[0].detach()  # the inverse's inputs come from the data side (bounded supports)
    for direction, values in ((layer.forward, z), (layer.inverse, x)):
        out, log_det = direction(values)
        if name in RESHAPING:
            assert out.shape[0] == values.shape[0] and out[0].numel() == values[0].numel() and out.dtype == dtype
        else:
            assert out.shape == z.shape and out.dtype == dtype
        assert log_det.shape == (5,) and log_det.dtype == dtype
        assert torch.isfinite(out).all() and torch.isfinite(log_det).all()


@names
def test_wrong_event_shape_is_an_error(name):
    layer, shape = build(name)
    wrong = torch.randn(4, shape[0] + 1, *shape[1:], dtype=torch.float64)
    if name in SHAPE_AGNOSTIC:
        other = inputs(name, 4, (2 * shape[0], *shape[1:]))
        torch.testing.assert_close(layer.inverse(layer(other)[0])[0], other)
        return
    for direction in (layer.forward, layer.inverse):
        with pytest.raises(ValueError, match="expects input of shape"):
            direction(wrong)


@names
def test_state_dict_and_pickle_round_trip(name):
    layer, shape = build(name)
    z = inputs(name, 6, shape)
    expected = layer(z)
    fresh, _ = build(name)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for got, want in zip(fresh(z), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want in zip(pickle.loads(pickle.dumps(layer))(z), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@names
def test_gradients_flow_to_input_and_every_parameter(name):
    layer, shape = build(name)
    z = inputs(name, 8, shape).requires_grad_()
    x, log_det = layer(z)
    (x.square().sum() + log_det.sum()).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    for parameter_name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name


CONDITIONAL = sorted(name for name in CATALOGUE if isinstance(CATALOGUE[name][0](), WithContext))


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_layers_depend_on_the_context_and_require_it(name):
    wrapped, shape = build(name)
    layer, context = wrapped.layer, wrapped.context
    assert layer.takes_context
    z = inputs(name, 6, shape)
    other = context + 1.0
    for direction in (layer.forward, layer.inverse):
        out, log_det = direction(z, context.expand(6, -1))
        out_other, log_det_other = direction(z, other.expand(6, -1))
        assert not torch.allclose(out, out_other) and not torch.allclose(log_det, log_det_other)
        with pytest.raises(ValueError, match="context"):
            direction(z)
        with pytest.raises(ValueError, match="context"):
            direction(z, context.expand(6, -1)[:, :1])
    z = z.detach()
    context = context.clone().requires_grad_()
    x, log_det = layer(z, context.expand(6, -1))
    (x.sum() + log_det.sum()).backward()
    assert context.grad is not None and context.grad.abs().sum() > 0
