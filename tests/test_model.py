"""The one model API: every model takes ``context=None`` in every method, with the same signatures."""

import inspect
import math

import pytest
import torch
from torch import nn

import flowforge as nf
from flowforge.distributions import ClassCondDiagGaussian, DiagGaussian, ResampledGaussian, TwoModes
from flowforge.flows import Composite, ConditionalPlanar, Planar, Reverse


def resampled_base() -> ResampledGaussian:
    torch.manual_seed(1)
    acceptance = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    return ResampledGaussian(2, acceptance, truncation=10).double()


def base_gradients(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    parameters = list(model.q0.parameters())
    return torch.autograd.grad(loss, parameters)


@pytest.mark.parametrize("score_fn", [True, False])
def test_conditional_reverse_kl_on_a_resampled_base_has_the_score_term(score_fn):
    """A conditional flow on a ResampledGaussian trains with the same gradient as the unconditional
    flow on the same base when its conditional layer is the identity (the acceptance's score term)."""
    base = resampled_base()
    planar = Planar((2,)).double()
    conditional = ConditionalPlanar((2,), context_features=1).double()  # the identity at initialisation
    target = TwoModes(2.0, 0.5).double()
    plain = nf.NormalizingFlow(base, [planar], target)
    with_context = nf.NormalizingFlow(base, [planar, conditional], target)
    context = torch.ones(1, dtype=torch.float64)

    torch.manual_seed(0)
    expected = base_gradients(plain, plain.reverse_kld(256, score_fn=score_fn))
    torch.manual_seed(0)
    got = base_gradients(with_context, with_context.reverse_kld(256, score_fn=score_fn, context=context))
    acceptance_gradient = sum(float(g.abs().sum()) for g in expected)
    assert acceptance_gradient > 0
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def conditional_model() -> nf.NormalizingFlow:
    return nf.NormalizingFlow(DiagGaussian(2), [Planar((2,)), ConditionalPlanar((2,), context_features=3)]).double()


def class_model() -> nf.NormalizingFlow:
    return nf.NormalizingFlow(ClassCondDiagGaussian(2, 4), [ConditionalPlanar((2,), context_features=4)]).double()


def test_sample_returns_the_log_prob_of_its_samples_with_and_without_context():
    plain = nf.NormalizingFlow(DiagGaussian(2), [Planar((2,)), Planar((2,))]).double()
    x, log_q = plain.sample(7)
    torch.testing.assert_close(log_q, plain.log_prob(x))

    model = conditional_model()
    context = torch.randn(7, 3, dtype=torch.float64)
    x, log_q = model.sample(7, context)
    torch.testing.assert_close(log_q, model.log_prob(x, context))
    x, log_q = model.sample_and_log_prob(7, context=context[0])  # one context for every row
    torch.testing.assert_close(log_q, model.log_prob(x, context[:1].expand(7, -1)))


def test_class_labels_are_a_context():
    model = class_model()
    labels = torch.tensor([0, 1, 2, 3, 3])
    x, log_q = model.sample(5, labels)
    torch.testing.assert_close(log_q, model.log_prob(x, labels))
    torch.testing.assert_close(model.log_prob(x, 3), model.log_prob(x, torch.full((5,), 3)))
    x, _ = model.sample(6)  # random classes when sampling without labels
    assert x.shape == (6, 2)
    with pytest.raises(ValueError, match="labels|context of shape"):
        model.log_prob(x)


def test_forward_and_inverse_take_the_context():
    model = conditional_model()
    context = torch.randn(4, 3, dtype=torch.float64)
    z = torch.randn(4, 2, dtype=torch.float64)
    x, log_det = model.forward_and_log_det(z, context)
    back, inverse_log_det = model.inverse_and_log_det(x, context)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(inverse_log_det, -log_det)
    torch.testing.assert_close(model.forward(z, context), x)
    torch.testing.assert_close(model.inverse(x, context), z)


def test_a_context_for_a_model_that_takes_none_is_refused():
    model = nf.NormalizingFlow(DiagGaussian(2), [Planar((2,))])
    with pytest.raises(ValueError, match="takes one"):
        model.log_prob(torch.zeros(3, 2), torch.zeros(3, 1))


def test_bad_contexts_are_refused_with_the_expected_shape():
    model = conditional_model()
    with pytest.raises(ValueError, match="rows"):
        model.log_prob(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN or inf"):
        model.log_prob(torch.zeros(3, 2, dtype=torch.float64), torch.full((3, 3), float("nan"), dtype=torch.float64))


def test_conditional_losses_take_the_context():
    class ShiftedTarget(nf.distributions.Target):
        takes_context = True

        def __init__(self):
            super().__init__(((-5.0, 5.0), (-5.0, 5.0)), 0.0)

        def log_prob(self, z, context=None):
            return -0.5 * ((z - context[:, :2]) ** 2).sum(1)

    model = conditional_model()
    model.p = ShiftedTarget().double()
    context = torch.randn(64, 3, dtype=torch.float64)
    for loss in (
        model.reverse_kld(64, context=context),
        model.reverse_kld(64, score_fn=False, context=context),
        model.reverse_alpha_div(64, alpha=0.5, context=context),
        model.reverse_alpha_div(64, alpha=0.5, dreg=True, context=context),
        model.forward_kld(torch.randn(64, 2, dtype=torch.float64), context),
    ):
        assert loss.shape == () and torch.isfinite(loss)
        loss.backward()


def test_layers_declare_a_context_through_the_base_class():
    assert not Planar((2,)).takes_context
    assert ConditionalPlanar((2,), context_features=1).takes_context
    assert not Composite([Planar((2,)), Planar((2,))]).takes_context
    assert Composite([Planar((2,)), ConditionalPlanar((2,), context_features=1)]).takes_context
    assert Reverse(ConditionalPlanar((2,), context_features=1)).takes_context
    assert not nf.NormalizingFlow(DiagGaussian(2), [Planar((2,))]).takes_context
    assert conditional_model().takes_context and class_model().takes_context


def test_models_refuse_layers_and_bases_of_the_wrong_kind():
    with pytest.raises(TypeError, match="layer 1 must be a flowforge.flows.Flow"):
        nf.NormalizingFlow(DiagGaussian(2), [Planar((2,)), nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="BaseDistribution"):
        nf.NormalizingFlow(nn.Linear(2, 2), [Planar((2,))])


def test_one_set_of_signatures_across_models():
    models = (nf.NormalizingFlow, nf.MultiscaleFlow)
    for method in (
        "sample",
        "sample_and_log_prob",
        "log_prob",
        "forward_kld",
        "reverse_kld",
        "reverse_alpha_div",
        "forward",
        "inverse",
        "forward_and_log_det",
        "inverse_and_log_det",
        "as_distribution",
    ):
        # The same parameter names, kinds and defaults (a multi-scale flow's latent is a list of tensors).
        signatures = {
            tuple((p.name, p.kind, p.default) for p in inspect.signature(getattr(model, method)).parameters.values())
            for model in models
        }
        assert len(signatures) == 1, (method, signatures)
        assert "context" in [name for name, _, _ in next(iter(signatures))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("preset", ["planar", "radial", "realnvp", "maf", "iaf", "nsf"])
def test_log_prob_far_from_the_data_is_minus_infinity_not_nan(preset, dtype):
    torch.manual_seed(0)
    model = nf.presets.PRESETS[preset](2, 2).to(dtype).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    huge = [1e30, torch.finfo(dtype).max / 2, 1e300 if dtype == torch.float64 else 1e38, math.inf]
    x = torch.tensor([[v, 0.5] for v in huge] + [[-v, v] for v in huge], dtype=dtype)
    log_q = model.log_prob(x)
    assert not torch.isnan(log_q).any() and (log_q < 0).all(), log_q
    assert torch.isnan(model.log_prob(torch.tensor([[math.nan, 0.0]], dtype=dtype))).all()
    with torch.no_grad():  # NaN weights stay visible as NaN for ordinary inputs
        next(model.parameters()).fill_(math.nan)
    assert torch.isnan(model.log_prob(torch.tensor([[0.5, 0.5]], dtype=dtype))).all()
