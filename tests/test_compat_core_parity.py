"""normflows' models and flowforge.compat.normflows' side by side: the same calls build both, a
normflows ``state_dict`` loads into the compat model (same log-densities and maps, in float64) and the
compat ``state_dict`` loads back into normflows.

The layers are ones whose compat versions have normflows' parameter layout (Planar, AffineConstFlow,
MaskedAffineFlow with MLPs, GlowBlock, Squeeze, Merge, MaskedAffineAutoregressive with a context).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

normflows = pytest.importorskip("normflows")

from compat_parity_helpers import both, perturb, shapes  # noqa: E402

import flowforge.compat.normflows as cnf  # noqa: E402


def _perturb(module: nn.Module, seed: int) -> None:
    perturb(module, seed, 0.1)


def _both(build, seed: int = 0):
    return both(build, normflows, cnf, seed, 0.1)


_shapes = shapes


def _close(mine, reference):
    if isinstance(mine, (list, tuple)):
        assert len(mine) == len(reference)
        for a, b in zip(mine, reference, strict=True):
            _close(a, b)
    elif mine.dtype != reference.dtype:  # normflows' forward_kld sums in float32 whatever the model's dtype
        torch.testing.assert_close(mine, reference.to(mine.dtype), atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(mine, reference, atol=1e-6, rtol=1e-6)


def _round_trip(theirs: nn.Module, ours: nn.Module, evaluate) -> None:
    assert _shapes(ours.state_dict()) == _shapes(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    _close(evaluate(ours), evaluate(theirs))
    _perturb(ours, 99)
    theirs.load_state_dict(ours.state_dict())
    _close(evaluate(ours), evaluate(theirs))


def _points(*shape: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _layers(m, dim: int = 2):
    """Invertible layers at parity (normflows' Planar has no inverse, so no log_prob)."""
    mask = torch.tensor([1.0 if i % 2 else 0.0 for i in range(dim)])
    return [
        m.flows.MaskedAffineFlow(mask, m.nets.MLP([dim, 4, dim]), m.nets.MLP([dim, 4, dim], init_zeros=True)),
        m.flows.AffineConstFlow((dim,)),
        m.flows.MaskedAffineFlow(1 - mask, m.nets.MLP([dim, 4, dim]), m.nets.MLP([dim, 4, dim])),
    ]


def test_normalizing_flow_both_ways():
    def build(m):
        return m.NormalizingFlow(m.distributions.DiagGaussian(2), _layers(m), m.distributions.target.TwoMoons())

    theirs, ours = _both(build)
    x, z = _points(6, 2), _points(6, 2, seed=4)

    def evaluate(model):
        return [
            model.log_prob(x),
            model.forward_kld(x),
            *model.forward_and_log_det(z),
            *model.inverse_and_log_det(x),
            model.forward(z),
            model.inverse(x),
        ]

    _round_trip(theirs, ours, evaluate)


def test_normalizing_flow_samples_are_normflows():
    def build(m):
        return m.NormalizingFlow(m.distributions.DiagGaussian(2), [m.flows.Planar((2,)), *_layers(m)])

    theirs, ours = _both(build)
    ours.load_state_dict(theirs.state_dict())
    torch.manual_seed(5)
    x_theirs, log_q_theirs = theirs.sample(4)
    torch.manual_seed(5)
    x_ours, log_q_ours = ours.sample(4)
    _close([x_ours, log_q_ours], [x_theirs, log_q_theirs])


def test_normalizing_flow_losses_are_normflows():
    """The reverse KL, with and without the score term. (reverse_alpha_div is flowforge's self-normalised
    estimator, not normflows' ``sign(α − 1) logsumexp(α log w)``, which is 0 at the default α = 1.)"""

    def build(m):
        return m.NormalizingFlow(m.distributions.DiagGaussian(2), _layers(m), m.distributions.target.TwoMoons())

    theirs, ours = _both(build)
    ours.load_state_dict(theirs.state_dict())
    for loss, arguments in [
        ("reverse_kld", (8,)),
        ("reverse_kld", (8, 0.5, False)),
    ]:
        torch.manual_seed(9)
        expected = getattr(theirs, loss)(*arguments)
        torch.manual_seed(9)
        _close(getattr(ours, loss)(*arguments), expected)


def test_class_cond_flow_both_ways():
    def build(m):
        return m.ClassCondFlow(m.distributions.ClassCondDiagGaussian(2, 3), _layers(m))

    theirs, ours = _both(build)
    x, y = _points(6, 2), torch.tensor([0, 2, 1, 1, 0, 2])
    _round_trip(theirs, ours, lambda model: [model.log_prob(x, y), model.forward_kld(x, y)])
    samples, log_q = ours.sample(100, y)  # the labels set the count, as in normflows
    assert samples.shape == (6, 2)
    _close(log_q, theirs.log_prob(samples, y))


def test_conditional_normalizing_flow_both_ways():
    def build(m):
        base = m.distributions.base.ConditionalDiagGaussian(2, nn.Linear(4, 4))
        return m.ConditionalNormalizingFlow(base, [], m.distributions.target.ConditionalDiagGaussian())

    theirs, ours = _both(build)
    x, context = _points(5, 2), _points(5, 4, seed=6)
    context[:, 2:] = context[:, 2:].abs() + 0.5  # [mean, std] of the target
    _round_trip(theirs, ours, lambda model: [model.log_prob(x, context), model.forward_kld(x, context)])
    for score_fn in (True, False):
        torch.manual_seed(8)
        expected = theirs.reverse_kld(5, context, score_fn=score_fn)
        torch.manual_seed(8)
        _close(ours.reverse_kld(5, context, score_fn=score_fn), expected)


def _multiscale(m, base_kind: str, levels: int = 2, classes: int = 3, shape=(2, 8, 8)):
    bases, merges, flows = [], [], []
    for i in range(levels):
        channels = shape[0] * 2 ** (levels + 1 - i)
        flows.append([m.flows.GlowBlock(channels, 8, split_mode="channel", scale=True), m.flows.Squeeze()])
        if i > 0:
            merges.append(m.flows.Merge())
            latent = (shape[0] * 2 ** (levels - i), shape[1] // 2 ** (levels - i), shape[2] // 2 ** (levels - i))
        else:
            latent = (shape[0] * 2 ** (levels + 1), shape[1] // 2**levels, shape[2] // 2**levels)
        if base_kind == "ClassCondDiagGaussian":
            bases.append(m.distributions.ClassCondDiagGaussian(latent, classes))
        else:
            bases.append(m.distributions.GlowBase(latent, classes))
    return m.MultiscaleFlow(bases, flows, merges)


@pytest.mark.parametrize("base_kind", ["ClassCondDiagGaussian", "GlowBase"])
def test_multiscale_flow_both_ways(base_kind):
    theirs, ours = _both(lambda m: _multiscale(m, base_kind))
    x, y = _points(3, 2, 8, 8), torch.tensor([0, 2, 1])

    def evaluate(model):
        return [model.log_prob(x, y), model(x, y), model.forward_kld(x, y), *model.inverse_and_log_det(x)]

    _round_trip(theirs, ours, evaluate)
    samples, log_q = ours.sample(10, y)
    assert samples.shape == (3, 2, 8, 8)
    _close(log_q, theirs.log_prob(samples, y))


def test_multiscale_flow_temperature_is_normflows():
    theirs, ours = _both(lambda m: _multiscale(m, "GlowBase"))
    y = torch.tensor([1, 0])
    theirs.log_prob(_points(2, 2, 8, 8), y)  # ActNorm's data-dependent initialisation, before copying
    ours.load_state_dict(theirs.state_dict())
    samples, log_q = ours.sample(2, y, temperature=0.5)
    theirs.set_temperature(0.5)
    _close(log_q, theirs.log_prob(samples, y))
    theirs.reset_temperature()
    assert all(base.temperature is None for base in ours.q0)
    _close(ours.log_prob(samples, y), theirs.log_prob(samples, y))


def test_normalizing_flow_vae_both_ways():
    def build(m):
        encoder = m.distributions.encoder.NNDiagGaussian(nn.Linear(4, 6))
        decoder = m.distributions.decoder.NNDiagGaussianDecoder(nn.Linear(3, 8))
        prior = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
        return m.NormalizingFlowVAE(prior, encoder, _layers(m, 3), decoder)

    torch.manual_seed(0)
    theirs = build(normflows)
    torch.manual_seed(1)
    ours = build(cnf)
    assert _shapes(ours.state_dict()) == _shapes(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 4)
    torch.manual_seed(2)
    expected = theirs(x, num_samples=2)
    torch.manual_seed(2)
    got = ours(x, num_samples=2)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert got[0].shape == (5, 2, 3) and got[1].shape == got[2].shape == (5, 2)
    theirs.load_state_dict(ours.state_dict())


def test_multiscale_flow_with_unconditional_bases_ignores_labels_as_normflows():
    def build(m):
        flows = [[m.flows.GlowBlock(16, 8, split_mode="channel", scale=True), m.flows.Squeeze()],
                 [m.flows.GlowBlock(8, 8, split_mode="channel", scale=True), m.flows.Squeeze()]]  # fmt: skip
        bases = [m.distributions.DiagGaussian((16, 1, 1)), m.distributions.DiagGaussian((4, 2, 2))]
        return m.MultiscaleFlow(bases, flows, [m.flows.Merge()])  # normflows' default class_cond=True

    theirs, ours = _both(build)
    x, y = _points(3, 2, 4, 4), torch.tensor([0, 1, 0])
    _round_trip(theirs, ours, lambda model: [model.log_prob(x, y), model(x), model.forward_kld(x, None)])
    samples, log_q = ours.sample(4, temperature=0.8)
    assert samples.shape == (4, 2, 4, 4) and log_q.shape == (4,)


def test_class_cond_flow_with_a_glow_base_tempers_it_the_normflows_way():
    def build(m):
        return m.ClassCondFlow(m.distributions.GlowBase(2, 3), _layers(m))

    theirs, ours = _both(build)
    ours.load_state_dict(theirs.state_dict())
    y = torch.tensor([0, 2, 1])
    samples, log_q = ours.sample(3, y, temperature=0.6)
    theirs.q0.temperature = 0.6
    _close(log_q, theirs.log_prob(samples, y))
    assert ours.q0.temperature is None


def test_conditional_normalizing_flow_with_conditional_layers_both_ways():
    def build(m):
        layers = [
            m.flows.MaskedAffineAutoregressive(2, 8, context_features=4, num_blocks=1),
            m.flows.MaskedAffineAutoregressive(2, 8, context_features=4, num_blocks=2),
        ]
        return m.ConditionalNormalizingFlow(
            m.distributions.DiagGaussian(2), layers, m.distributions.target.ConditionalDiagGaussian()
        )

    theirs, ours = _both(build)
    x, context = _points(5, 2), _points(5, 4, seed=6)
    context[:, 2:] = context[:, 2:].abs() + 0.5

    def evaluate(model):
        return [
            model.log_prob(x, context),
            model.forward_kld(x, context),
            *model.forward_and_log_det(x, context),
            *model.inverse_and_log_det(x, context),
        ]

    _round_trip(theirs, ours, evaluate)
    torch.manual_seed(8)
    expected = theirs.sample(5, context)
    torch.manual_seed(8)
    _close(list(ours.sample(5, context)), list(expected))
