"""Coupling and autoregressive layers beyond the generic harness: conditioner checks, clamping,
autoregressive structure, context, and which direction is cheap."""

import pytest
import torch

import flowforge as nf
from flowforge.flows import autoregressive, coupling


def test_undersized_coupling_net_is_an_error_not_a_broadcast():
    # normflows broadcasts a (batch, 1) scale over every coordinate without a word;
    # flowforge refuses the net at its first call, naming both shapes.
    layer = nf.flows.MaskedAffineCoupling(nf.flows.alternating_mask(4), nf.nets.MLP([4, 8, 4]), nf.nets.MLP([4, 8, 1]))
    with pytest.raises(ValueError, match=r"conditioner s returned shape \(3, 1\), expected \(3, 4\)"):
        layer(torch.randn(3, 4))
    with pytest.raises(ValueError, match="conditioner s returned shape"):
        layer.inverse(torch.randn(3, 4))


def test_large_scales_cannot_overflow():
    class Huge(torch.nn.Module):
        def forward(self, x):
            return torch.full_like(x, 1e4)

    layer = nf.flows.MaskedAffineCoupling(nf.flows.alternating_mask(4), None, Huge(), clamp=10.0)
    x, log_det = layer(torch.randn(5, 4))
    assert torch.isfinite(x).all() and torch.isfinite(log_det).all()
    assert float(log_det.max()) <= 2 * 10.0 + 1e-5
    z, _ = layer.inverse(x)
    assert torch.isfinite(z).all()


def test_mask_must_be_binary():
    with pytest.raises(ValueError, match="only 0 and 1"):
        nf.flows.MaskedAffineCoupling(torch.tensor([0.5, 1.0]), None, None)


def test_coupling_leaves_masked_coordinates_unchanged():
    layer = nf.flows.MaskedAffineCoupling(nf.flows.alternating_mask(6), nf.nets.MLP([6, 8, 6]), nf.nets.MLP([6, 8, 6]))
    z = torch.randn(10, 6)
    x, _ = layer(z)
    torch.testing.assert_close(x[:, ::2], z[:, ::2])


@pytest.mark.parametrize("order", [None, torch.tensor([2, 0, 3, 1])])
def test_maf_density_pass_is_autoregressive(order):
    layer = nf.flows.MaskedAffineAutoregressive(4, 16, order=order).double()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    x = torch.randn(4, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: layer.inverse(v[None])[0][0], x)
    rank = torch.arange(4) if order is None else order  # position of each feature in the sequence
    for i in range(4):
        for j in range(4):
            if rank[j] > rank[i]:
                assert jacobian[i, j] == 0, (i, j)
    assert (jacobian.diagonal() != 0).all()


def test_maf_and_iaf_start_at_the_identity():
    z = torch.randn(7, 3)
    for layer in (nf.flows.MaskedAffineAutoregressive(3, 8), nf.flows.InverseAutoregressive(3, 8)):
        x, log_det = layer(z)
        torch.testing.assert_close(x, z)
        torch.testing.assert_close(log_det, torch.zeros(7))


def count_made_calls(layer, direction, x):
    """MADE passes, counted at its first layer (sampling runs only the hidden layers per step)."""
    calls = []
    made = next(m for m in layer.modules() if isinstance(m, nf.nets.MADE))
    handle = made.first.register_forward_hook(lambda *a: calls.append(1))
    direction(x)
    handle.remove()
    return len(calls)


def test_cheap_directions():
    maf, iaf = nf.flows.MaskedAffineAutoregressive(5, 8), nf.flows.InverseAutoregressive(5, 8)
    x = torch.randn(3, 5)
    assert count_made_calls(maf, maf.inverse, x) == 1 and count_made_calls(maf, maf.forward, x) == 5
    assert count_made_calls(iaf, iaf.forward, x) == 1 and count_made_calls(iaf, iaf.inverse, x) == 5


def test_context_changes_the_map_and_is_checked():
    layer = nf.flows.MaskedAffineAutoregressive(3, 16, context_features=2)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    z = torch.randn(4, 3)
    first, _ = layer(z, torch.zeros(4, 2))
    second, _ = layer(z, torch.ones(4, 2))
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError, match=r"context of shape \(4, 2\)"):
        layer(z, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"context of shape \(4, 2\), got None"):
        layer(z)
    with pytest.raises(ValueError, match="without context_features"):
        nf.flows.MaskedAffineAutoregressive(3, 16)(z, torch.zeros(4, 2))


CONTEXT_LAYERS = {
    "MaskedAffineAutoregressive": lambda **kw: nf.flows.MaskedAffineAutoregressive(3, 8, **kw),
    "InverseAutoregressive": lambda **kw: nf.flows.InverseAutoregressive(3, 8, **kw),
    "RealNVPCoupling": lambda **kw: nf.flows.RealNVPCoupling(3, 8, **kw),
    "RationalQuadraticCoupling": lambda **kw: nf.flows.RationalQuadraticCoupling(3, 8, **kw),
    "RationalQuadraticAutoregressive": lambda **kw: nf.flows.RationalQuadraticAutoregressive(3, 8, **kw),
}


@pytest.mark.parametrize("name", sorted(CONTEXT_LAYERS))
def test_a_layer_takes_a_context_only_when_built_with_context_features(name):
    build = CONTEXT_LAYERS[name]
    unconditional = build()
    assert unconditional.takes_context is False
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(3), [unconditional])
    assert not model.takes_context
    with pytest.raises(ValueError, match="context"):
        model.log_prob(torch.randn(4, 3), torch.randn(4, 2))
    conditional = build(context_features=2)
    assert conditional.takes_context is True
    conditional_model = nf.NormalizingFlow(nf.distributions.DiagGaussian(3), [conditional])
    assert conditional_model.log_prob(torch.randn(4, 3), torch.randn(4, 2)).shape == (4,)


def test_made_rejects_a_bad_order():
    with pytest.raises(ValueError, match="permutation"):
        nf.nets.MADE(3, 8, order=torch.tensor([0, 0, 1]))


def test_mlp_options():
    net = nf.nets.MLP([3, 8, 2], leaky=0.1, output_fn="tanh", output_scale=2.0, init_zeros=True)
    torch.testing.assert_close(net(torch.randn(4, 3)), torch.zeros(4, 2))
    with torch.no_grad():
        net.net[-1].bias.fill_(100.0)
    assert float(net(torch.randn(4, 3)).max()) <= 2.0
    with pytest.raises(ValueError, match="output_fn"):
        nf.nets.MLP([3, 2], output_fn="softmax")


@pytest.mark.parametrize("preset", [nf.RealNVP, nf.MAF, nf.IAF, nf.NSF, nf.NSFAutoregressive])
def test_presets_fit_samples_by_forward_kl(preset):
    torch.manual_seed(0)
    data = nf.distributions.CircularGaussianMixture(4).sample(3000)
    model = preset(2, 4, hidden=32)
    with torch.no_grad():
        before = float(-model.log_prob(data).mean())
    nf.training.fit(  # eager: compiling (test_train.py tests it) took longer than these 400 steps
        model, 400, loss="forward_kl", data=data, samples_per_step=256, lr=3e-3, seed=0, progress=False, device="cpu",
        compile="off",
    )  # fmt: skip
    with torch.no_grad():
        after = float(-model.log_prob(data).mean())
    assert after < before - 0.5, (before, after)


def test_presets_need_two_dimensions():
    with pytest.raises(ValueError, match="dim >= 2"):
        nf.RealNVP(1, 2)


def test_maf_takes_nflows_order_and_keeps_order_and_clamp_by_keyword():
    import torch.nn.functional as F

    layer = nf.flows.MaskedAffineAutoregressive(3, 16, None, 2, True, True, F.relu, 0.0, clamp=3.0)
    assert layer.made.residual and layer.clamp == 3.0
    z = torch.randn(4, 3)
    x, _ = layer(z)
    torch.testing.assert_close(layer.inverse(x)[0], z)
    plain = nf.flows.MaskedAffineAutoregressive(3, 16, use_residual_blocks=False, activation=torch.nn.Tanh)
    assert not plain.made.residual and isinstance(plain.made.activation, torch.nn.Tanh)
    with pytest.raises(TypeError):  # normflows' ninth argument, use_batch_norm, is not flowforge's
        nf.flows.MaskedAffineAutoregressive(3, 16, None, 2, True, True, F.relu, 0.0, False)


@pytest.mark.parametrize("build", [nf.flows.MaskedAffineAutoregressive, nf.nets.MADE])
def test_use_batch_norm_is_retired_with_a_warning_and_true_is_refused(build):
    retired = r"use_batch_norm=\.\.\.\) is deprecated.*flowforge.compat import normflows"
    with pytest.warns(DeprecationWarning, match=retired):
        build(3, 16, use_batch_norm=False)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="use_batch_norm is not supported"):
        build(3, 16, use_batch_norm=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batch_norm'"):
        build(3, 16, batch_norm=True)


@pytest.mark.parametrize("residual", [True, False])
def test_made_is_autoregressive_with_and_without_residual_blocks(residual):
    order = torch.tensor([2, 0, 3, 1])
    made = nf.nets.MADE(4, 16, num_blocks=3, output_multiplier=2, use_residual_blocks=residual, order=order)
    torch.nn.init.normal_(made.output.weight)
    jacobian = torch.autograd.functional.jacobian(lambda v: made(v).sum(-1), torch.randn(1, 4))[0, :, 0, :]
    for i in range(4):
        for j in range(4):
            if order[j] >= order[i]:
                assert jacobian[i, j] == 0, (i, j)
    assert (jacobian != 0).sum() > 0


@pytest.mark.parametrize("parameter_major", [False, True])
@pytest.mark.parametrize("residual", [True, False])
def test_made_feature_outputs_are_the_rows_of_the_full_pass(parameter_major, residual):
    torch.manual_seed(0)
    made = nf.nets.MADE(
        5, 12, context_features=2, output_multiplier=3, use_residual_blocks=residual,
        order=torch.tensor([4, 1, 0, 3, 2]), parameter_major=parameter_major,
    )  # fmt: skip
    torch.nn.init.normal_(made.output.weight)
    x, c = torch.randn(6, 5), torch.randn(6, 2)
    full = made(x, c)
    assert full.shape == (6, 5, 3)
    hidden = made.hidden_state(x, c)
    for feature in range(5):
        torch.testing.assert_close(made.feature_outputs(hidden, feature), full[:, feature : feature + 1])
    assert made.sequence == (2, 1, 4, 3, 0)


def test_made_layouts_compute_the_same_function():
    torch.manual_seed(1)
    rows = nf.nets.MADE(4, 10, output_multiplier=2, order=torch.tensor([1, 3, 0, 2]))
    columns = nf.nets.MADE(4, 10, output_multiplier=2, order=torch.tensor([1, 3, 0, 2]), parameter_major=True)
    torch.nn.init.normal_(rows.output.weight)
    state = rows.state_dict()
    # The parameter-major output layer holds the same rows, regrouped parameter by parameter.
    regroup = torch.arange(8).view(4, 2).t().reshape(-1)
    for key in ("output.weight", "output.bias", "output.mask"):
        state[key] = state[key][regroup]
    columns.load_state_dict(state)
    x = torch.randn(5, 4)
    torch.testing.assert_close(columns(x), rows(x))


def test_made_loaded_order_drives_sampling():
    torch.manual_seed(2)
    saved = nf.flows.MaskedAffineAutoregressive(4, 16, random_mask=True)
    for parameter in saved.parameters():
        parameter.data.add_(0.3 * torch.randn_like(parameter))
    loaded = nf.flows.MaskedAffineAutoregressive(4, 16, random_mask=True)
    loaded.load_state_dict(saved.state_dict())
    assert loaded.made.sequence == saved.made.sequence
    z = torch.randn(8, 4)
    torch.testing.assert_close(loaded(z), saved(z))
    x, _ = loaded(z)
    torch.testing.assert_close(loaded.inverse(x)[0], z, rtol=1e-5, atol=1e-5)


def test_affine_transform_map_log_derivative_and_clamp():
    values, shift, log_scale = torch.randn(3, 4), torch.randn(3, 4), 30 * torch.randn(3, 4)
    x, log_derivative = coupling.affine_transform(values, shift, log_scale, clamp=5.0)
    clamped = 5.0 * torch.tanh(log_scale / 5.0)
    torch.testing.assert_close(x, values * torch.exp(clamped) + shift)
    torch.testing.assert_close(log_derivative, clamped)
    back, inverse_log_derivative = coupling.affine_transform(x, shift, log_scale, inverse=True, clamp=5.0)
    torch.testing.assert_close(back, values, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(inverse_log_derivative, -clamped)
    additive, none = coupling.affine_transform(values, shift, None)
    assert none is None and torch.equal(additive, values + shift)
    torch.testing.assert_close(coupling.row_log_det(None, values), torch.zeros(3))


def test_every_affine_layer_uses_the_one_affine_map(monkeypatch):
    calls, affine_transform = [], coupling.affine_transform

    def spy(*args, **kwargs):
        calls.append(1)
        return affine_transform(*args, **kwargs)

    monkeypatch.setattr(coupling, "affine_transform", spy)
    monkeypatch.setattr(autoregressive, "affine_transform", spy)
    mask, mlp = nf.flows.alternating_mask(4), nf.nets.MLP([4, 8, 4])
    layers = [
        (nf.flows.MaskedAffineCoupling(mask, mlp, nf.nets.MLP([4, 8, 4])), 4),
        (nf.flows.RealNVPCoupling(4, 8), 4),
        (nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 8, 4])), 4),
        (nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 8, 4]), scale_map="sigmoid"), 4),
        (nf.flows.MaskedAffineAutoregressive(4, 8), 4),
        (nf.flows.InverseAutoregressive(4, 8), 4),
        (nf.flows.MaskedAffineCoupling(mask, None, mlp), 4),
    ]
    for layer, features in layers:
        calls.clear()
        z = torch.randn(3, features)
        x, _ = layer(z)
        layer.inverse(x)
        assert len(calls) >= 2, type(layer).__name__
