"""normflows' flow layers and ``flowforge.compat.normflows.flows``: built by the same calls, the same
weights give the same outputs, and ``state_dict`` moves both ways (normflows -> flowforge -> normflows)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import flowforge.compat.normflows as cnf

normflows = pytest.importorskip("normflows")


def _perturb(module: nn.Module, scale: float = 0.1) -> None:
    """Move every floating-point parameter off its (often trivial) initial value."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))


def _outputs(layer: nn.Module, direction: str, inputs, *extra):
    out, log_det = getattr(layer, direction)(inputs, *extra)
    if isinstance(out, list | tuple):
        out = torch.cat([part.flatten(1) for part in out], 1)
    return out, torch.as_tensor(log_det).expand(out.shape[0])


def _same_outputs(theirs, ours, inputs, directions, extra=(), atol=1e-10, forward_atol=None):
    for direction in directions:
        got, want = _outputs(ours, direction, inputs, *extra), _outputs(theirs, direction, inputs, *extra)
        tolerance = forward_atol if (forward_atol is not None and direction == "forward") else atol
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b.to(a.dtype), atol=tolerance, rtol=tolerance)


def check_parity(build, inputs, directions=("forward", "inverse"), extra=(), atol=1e-10, forward_atol=None,
                 prepare=None, dtype=torch.float64):  # fmt: skip
    """``build(module)`` with normflows' ``flows`` package and with the compat one; weights copied
    normflows -> compat, outputs compared; then compat weights perturbed and copied back."""
    torch.manual_seed(0)
    theirs = build(normflows.flows).to(dtype)
    torch.manual_seed(0)
    ours = build(cnf.flows).to(dtype)
    _perturb(theirs)
    if prepare is not None:  # e.g. ActNorm's data-dependent initialisation
        prepare(theirs)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    _same_outputs(theirs, ours, inputs, directions, extra, atol, forward_atol)
    _perturb(ours)
    theirs.load_state_dict(ours.state_dict())
    _same_outputs(theirs, ours, inputs, directions, extra, atol, forward_atol)
    return theirs, ours


def vectors(dim=4, rows=6):
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def images(channels=4, rows=3, size=4):
    return torch.randn(rows, channels, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def mlp(d_in, d_out, hidden=16):
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out))


@pytest.mark.parametrize("shape, act", [((4,), "tanh"), ((4,), "leaky_relu"), ((2, 2), "tanh")])
def test_planar(shape, act):
    x = vectors(4).reshape(-1, *shape)
    # normflows' leaky_relu derivative is a float32 tensor (a bool mask times a float) even in float64
    atol = 1e-6 if act == "leaky_relu" else 1e-10
    check_parity(lambda m: m.Planar(shape, act), x, ("forward",), atol=atol)


@pytest.mark.parametrize("shape", [(4,), (2, 2)])
def test_radial(shape):
    x = vectors(4).reshape(-1, *shape)
    theirs, ours = check_parity(lambda m: m.Radial(shape), x, ("forward",))
    torch.testing.assert_close(ours.inverse(ours(x)[0])[0], x)  # flowforge adds the closed-form inverse


@pytest.mark.parametrize("shape, x", [((4,), vectors(4)), ((4, 1, 1), images(4))])
def test_affine_const_flow(shape, x):
    check_parity(lambda m: m.AffineConstFlow(shape), x)
    check_parity(lambda m: m.AffineConstFlow(shape, False, True), x)


@pytest.mark.parametrize("shape", [(4,), (4, 1, 1)])
def test_cc_affine_const(shape):
    x = vectors(4) if len(shape) == 1 else images(4)
    y = torch.nn.functional.one_hot(torch.arange(x.shape[0]) % 3, 3).to(torch.float64)
    check_parity(lambda m: m.CCAffineConst(shape, 3), x, extra=(y,))


def test_actnorm_initialised_from_one_image_and_saved_both_ways():
    x = images(3, rows=1)

    def first_batch(layer):
        layer(x)

    theirs, ours = check_parity(lambda m: m.ActNorm((3, 1, 1)), images(3), prepare=first_batch)
    assert float(ours.state_dict()["data_dep_init_done"]) == 1.0 and bool(ours.initialized)
    fresh = cnf.flows.ActNorm((3, 1, 1)).double()
    fresh(x)  # normflows accepts a first batch of one image; so does flowforge now
    reference = normflows.flows.ActNorm((3, 1, 1)).double()
    reference(x)
    torch.testing.assert_close(fresh.s, reference.s)
    torch.testing.assert_close(fresh.t, reference.t)


def test_batchnorm_forward():
    check_parity(lambda m: m.BatchNorm(), vectors(4), ("forward",))
    with pytest.raises(NotImplementedError, match="no inverse"):
        cnf.flows.BatchNorm().inverse(vectors(4))


@pytest.mark.parametrize("scale_map", ["exp", "sigmoid", "sigmoid_inv"])
@pytest.mark.parametrize("scale", [True, False])
def test_affine_coupling_and_block(scale_map, scale):
    width = 4 if scale else 2
    x = vectors(4) * 3
    check_parity(lambda m: m.AffineCouplingBlock(mlp(2, width), scale, scale_map), x)
    parts = list(x.chunk(2, 1))
    check_parity(lambda m: m.AffineCoupling(mlp(2, width), scale, scale_map), parts)


def test_affine_coupling_exp_is_not_clamped():
    """Large log-scales: normflows' exp map has no soft clamp, and neither has the compat class."""
    torch.manual_seed(0)
    net = mlp(2, 4)
    with torch.no_grad():
        net[2].bias.fill_(12.0)
    theirs, ours = normflows.flows.AffineCoupling(net), cnf.flows.AffineCoupling(copy.deepcopy(net))
    parts = list(vectors(4).float().chunk(2, 1))
    torch.testing.assert_close(ours(parts)[1], theirs(parts)[1])


@pytest.mark.parametrize("with_scale", [True, False])
def test_masked_affine_flow(with_scale):
    b = torch.tensor([1.0, 0.0, 1.0, 0.0])

    def build(m):
        return m.MaskedAffineFlow(b, mlp(4, 4), mlp(4, 4) if with_scale else None)

    check_parity(build, vectors(4) * 3)


@pytest.mark.parametrize(
    "channels, scale, scale_map, split_mode, use_lu, net_actnorm",
    [
        (3, True, "sigmoid", "channel", True, False),
        (4, True, "exp", "channel_inv", False, False),
        (4, False, "sigmoid", "checkerboard", True, True),
        (5, True, "sigmoid_inv", "checkerboard_inv", False, True),
    ],
)
def test_glow_block(channels, scale, scale_map, split_mode, use_lu, net_actnorm):
    x = images(channels, rows=2)

    def build(m):
        return m.GlowBlock(channels, 8, scale, scale_map, split_mode, 0.0, False, use_lu, net_actnorm)

    check_parity(build, x, prepare=lambda layer: layer(x), atol=1e-8)


@pytest.mark.parametrize("use_lu", [True, False])
def test_invertible_1x1_conv(use_lu):
    check_parity(lambda m: m.Invertible1x1Conv(4, use_lu), images(4))
    check_parity(lambda m: m.Invertible1x1Conv(4, use_lu), images(4).float(), atol=1e-5, dtype=torch.float32)


@pytest.mark.parametrize("use_lu", [True, False])
def test_invertible_affine(use_lu):
    check_parity(lambda m: m.InvertibleAffine(4, use_lu), vectors(4))


@pytest.mark.parametrize("identity_init", [True, False])
def test_lu_linear_permute(identity_init):
    check_parity(lambda m: m.LULinearPermute(4, identity_init), vectors(4))


@pytest.mark.parametrize("num_channels, mode", [(4, "shuffle"), (5, "shuffle"), (4, "swap"), (5, "swap")])
def test_permute(num_channels, mode):
    check_parity(lambda m: m.Permute(num_channels, mode), vectors(num_channels))


def test_periodic_layers():
    x = vectors(4)
    check_parity(lambda m: m.PeriodicShift([0, 2], torch.tensor(2.0), torch.tensor(0.7)), x)
    check_parity(lambda m: m.PeriodicShift(1, 2.0, 0.5), x)
    check_parity(lambda m: m.PeriodicWrap(3, 0.5), x)


def test_reverse_and_composite():
    x = vectors(4).float()
    check_parity(lambda m: m.Reverse(m.AffineConstFlow((4,))), x.double())
    check_parity(
        lambda m: m.Composite([m.AffineConstFlow((4,)), m.Planar((4,))]), x, ("forward",), atol=1e-6,
        dtype=torch.float32,
    )  # fmt: skip


def contractive_net(dim):
    net = mlp(dim, dim, 16)
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.mul_(0.3 / torch.linalg.matrix_norm(layer.weight, ord=2))
    return net


def test_residual_in_evaluation_mode():
    """2-D, evaluation mode: both compute the exact log-det. normflows stops its fixed-point iteration
    at a looser tolerance than flowforge, hence the wider bound on the sampling direction."""
    x = vectors(2)

    def build(m):
        return m.Residual(contractive_net(2)).eval()

    theirs, ours = check_parity(build, x, forward_atol=1e-3)
    assert set(ours.state_dict()) >= {"iresblock.nnet.0.weight", "iresblock.geom_p", "iresblock.lamb"}
    assert torch.equal(ours.inverse(x)[1], ours.inverse(x)[1])


def test_residual_reads_the_estimator_settings():
    theirs = normflows.flows.Residual(contractive_net(2), geom_p=0.3, lamb=1.5)
    ours = cnf.flows.Residual(contractive_net(2))
    ours.load_state_dict(theirs.state_dict())
    assert ours.geom_p == pytest.approx(0.3) and ours.lamb == pytest.approx(1.5)


def test_hamiltonian_monte_carlo_same_draws_same_moves():
    target = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))

    def build(m):
        return m.HamiltonianMonteCarlo(target, 3, -2.0 * torch.ones(3), torch.zeros(3))

    torch.manual_seed(0)
    theirs, ours = build(normflows.flows), build(cnf.flows)
    _perturb(theirs)
    ours.load_state_dict(theirs.state_dict())
    x = vectors(3).float()
    for direction in ("forward", "inverse"):
        torch.manual_seed(5)
        want = getattr(theirs, direction)(x)
        torch.manual_seed(5)
        got = getattr(ours, direction)(x)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
    _perturb(ours)  # and the compat layer's own values go back to normflows
    theirs.load_state_dict(ours.state_dict())
    torch.manual_seed(6)
    want = theirs(x)
    torch.manual_seed(6)
    for a, b in zip(ours(x), want, strict=True):
        torch.testing.assert_close(a, b)


def test_metropolis_hastings_same_draws_same_moves():
    target = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
    theirs = normflows.flows.MetropolisHastings(target, normflows.distributions.DiagGaussianProposal((3,), 0.5), 4)
    ours = cnf.flows.MetropolisHastings(target, cnf.distributions.mh_proposal.DiagGaussianProposal((3,), 0.5), 4)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = vectors(3).float()
    torch.manual_seed(3)
    want = theirs(x)
    torch.manual_seed(3)
    got = ours(x)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_residual_brute_force_in_training_mode():
    check_parity(lambda m: m.Residual(contractive_net(2), brute_force=True), vectors(2), ("inverse",))


def test_iresblock_state_and_values():
    x = vectors(2)
    torch.manual_seed(0)
    theirs = normflows.flows.residual.iResBlock(contractive_net(2)).double().eval()
    ours = cnf.flows.residual.iResBlock(contractive_net(2)).double().eval()
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), theirs(x))
    y, log_p = ours(x, 0)
    want_y, want_log_p = theirs(x, 0)
    torch.testing.assert_close(y, want_y)
    torch.testing.assert_close(log_p, want_log_p)
    torch.testing.assert_close(ours.inverse(y), theirs.inverse(y), atol=1e-3, rtol=0)


@pytest.mark.parametrize("mode", ["channel", "channel_inv", "checkerboard", "checkerboard_inv"])
def test_split_and_merge(mode):
    x = images(4)
    theirs, ours = normflows.flows.Split(mode), cnf.flows.Split(mode)
    parts, want = ours(x)[0], theirs(x)[0]
    for a, b in zip(parts, want, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(cnf.flows.Merge(mode)(parts)[0], normflows.flows.Merge(mode)(want)[0])


def test_squeeze():
    x = images(8)
    theirs, ours = normflows.flows.Squeeze(), cnf.flows.Squeeze()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    torch.testing.assert_close(ours.inverse(x)[0], theirs.inverse(x)[0])


@pytest.mark.parametrize("estimator", ["basic_logdet_estimator", "neumann_logdet_estimator"])
def test_memory_efficient_estimator_matches_normflows(estimator):
    """Same net, probe and coefficients: normflows' and the compat wrapper give the same values and
    the same gradients (for the input and the net's parameters)."""
    x = vectors(3)
    probe = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    results = []
    for module in (normflows.flows.residual, cnf.flows.residual):
        torch.manual_seed(0)
        net = contractive_net(3).double()
        point = x.clone().requires_grad_(True)
        g, log_det = module.mem_eff_wrapper(getattr(module, estimator), net, point, 5, probe, lambda k: 1.0, True)
        (g.sum() + log_det.mean()).backward()
        results.append([g, log_det, point.grad, *(p.grad for p in net.parameters())])
    for ours, theirs in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize(
    "build",
    [
        lambda m: m.Planar((3,)),
        lambda m: m.Radial((3,)),
        lambda m: m.Permute(5),
        lambda m: m.InvertibleAffine(4, True),
        lambda m: m.Invertible1x1Conv(4, False),
        lambda m: m.LULinearPermute(4, False),
        lambda m: m.GlowBlock(4, 8, init_zeros=False),
        lambda m: m.GlowBlock(3, 8, net_actnorm=True),
    ],
)
def test_the_same_seed_gives_normflows_initial_values(build):
    torch.manual_seed(7)
    theirs = build(normflows.flows).state_dict()
    torch.manual_seed(7)
    ours = build(cnf.flows).state_dict()
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, msg=key)
