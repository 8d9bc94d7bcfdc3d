"""Presets: one calling convention (keyword-only after ``(dim, layers)``), a context on every vector
preset, and the multi-scale Glow under ``nf.Glow``."""

import inspect

import pytest
import torch

import flowforge as nf
from flowforge import presets

VECTOR_PRESETS = [
    presets.PlanarFlow,
    presets.RadialFlow,
    presets.RealNVP,
    presets.MAF,
    presets.IAF,
    presets.NSF,
    presets.NSFAutoregressive,
    presets.ResidualFlow,
]


def perturbed(model: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Move every parameter away from the preset's identity start, so the context changes the map."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise / max(1.0, parameter.shape[-1] ** 0.5 if parameter.dim() else 1.0))
    return model


def test_the_cli_presets_are_the_vector_presets():
    assert sorted(presets.PRESETS.values(), key=id) == sorted(VECTOR_PRESETS, key=id)


@pytest.mark.parametrize("preset", VECTOR_PRESETS, ids=lambda f: f.__name__)
def test_everything_after_dim_and_layers_is_keyword_only_with_the_shared_names(preset):
    parameters = list(inspect.signature(preset).parameters.values())
    assert [p.name for p in parameters[:2]] == ["dim", "layers"]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters[:2])
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[2:])
    assert {"p", "q0", "context_features"} <= {p.name for p in parameters}
    assert preset.__doc__ and "http" in preset.__doc__  # the paper it implements
    with pytest.raises(TypeError):
        preset(2, 2, 16)


@pytest.mark.parametrize("preset", [presets.Glow, presets.GlowSingleScale, presets.VAE], ids=lambda f: f.__name__)
def test_image_and_vae_presets_are_keyword_only_after_their_shape(preset):
    parameters = list(inspect.signature(preset).parameters.values())
    positional = [p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == (["data_shape"] if preset is presets.VAE else ["shape", "levels"])
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[len(positional) :])


@pytest.mark.parametrize("preset", VECTOR_PRESETS, ids=lambda f: f.__name__)
def test_every_vector_preset_takes_a_context(preset):
    torch.manual_seed(0)
    options = {"hidden": 8} if "hidden" in inspect.signature(preset).parameters else {}
    model = perturbed(preset(3, 2, context_features=2, **options).double())
    assert isinstance(model, nf.NormalizingFlow) and model.takes_context
    context = torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        x, log_q = model.sample(5, context)
        assert x.shape == (5, 3) and log_q.shape == (5,)
        tolerance = 1e-4 if preset is presets.ResidualFlow else 1e-8  # fixed-point inverse
        torch.testing.assert_close(log_q, model.log_prob(x, context), rtol=tolerance, atol=tolerance)
        other = model.log_prob(x, context.flip(0))
        assert not torch.allclose(other, log_q)


@pytest.mark.parametrize("preset", VECTOR_PRESETS, ids=lambda f: f.__name__)
def test_a_preset_without_context_features_refuses_a_context(preset):
    options = {"hidden": 8} if "hidden" in inspect.signature(preset).parameters else {}
    unconditional = preset(3, 2, **options)
    assert not unconditional.takes_context
    with pytest.raises(ValueError, match="context"):
        unconditional.log_prob(torch.randn(4, 3), torch.randn(4, 2))


def test_conditional_planar_and_radial_use_the_amortized_layers():
    assert all(isinstance(f, nf.flows.ConditionalPlanar) for f in nf.PlanarFlow(2, 3, context_features=4).flows)
    assert all(isinstance(f, nf.flows.ConditionalRadial) for f in nf.RadialFlow(2, 3, context_features=4).flows)
    assert all(isinstance(f, nf.flows.Planar) for f in nf.PlanarFlow(2, 3, act="leaky_relu").flows)
    layers = nf.IAF(3, 2, context_features=4).flows
    assert sum(isinstance(f, nf.flows.InverseAutoregressive) for f in layers) == 2


def test_conditional_residual_flow_conditions_its_base():
    model = nf.ResidualFlow(2, 2, hidden=8, context_features=3)
    assert model.q0.takes_context and not any(flow.takes_context for flow in model.flows)
    with pytest.raises(ValueError, match="take no context"):
        nf.ResidualFlow(2, 2, q0=nf.distributions.DiagGaussian(2), context_features=3)


@pytest.mark.parametrize("preset", VECTOR_PRESETS, ids=lambda f: f.__name__)
def test_presets_refuse_bad_sizes(preset):
    with pytest.raises(ValueError, match="layers >= 1"):
        preset(2, 0)
    with pytest.raises(ValueError, match="context_features"):
        preset(2, 1, context_features=0)


def test_presets_start_at_their_base():
    torch.manual_seed(0)
    x = torch.randn(64, 3, dtype=torch.float64)
    for preset in [presets.RealNVP, presets.MAF, presets.IAF, presets.NSF, presets.NSFAutoregressive]:
        model = preset(3, 2, hidden=8).double()
        torch.testing.assert_close(model.log_prob(x), model.q0.log_prob(x))
        conditional = preset(3, 2, hidden=8, context_features=2).double()
        torch.testing.assert_close(conditional.log_prob(x, torch.randn(64, 2)), conditional.q0.log_prob(x))


def test_glow_is_the_multiscale_glow_on_the_unit_interval():
    torch.manual_seed(0)
    model = nf.Glow((1, 8, 8), 2, steps=1, hidden=8).double()
    assert isinstance(model, nf.MultiscaleFlow) and nf.Glow is presets.Glow
    assert [base.shape for base in model.q0] == [(8, 2, 2), (2, 4, 4)]
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    assert torch.isfinite(model.log_prob(x)).all()
    samples, log_q = model.sample(4)
    assert samples.shape == (4, 1, 8, 8)
    assert ((samples > -0.06) & (samples < 1.06)).all()  # alpha = 0.05: (−α, 1 − α)/(1 − 2α)
    with pytest.raises(ValueError, match="divisible"):
        nf.Glow((1, 6, 6), 2)


def test_class_conditional_glow_takes_labels_as_its_context():
    torch.manual_seed(0)
    model = nf.Glow((1, 4, 4), 1, steps=1, hidden=8, num_classes=3).double()
    assert model.takes_context
    labels = torch.tensor([0, 2])
    x, log_q = model.sample(2, labels)
    torch.testing.assert_close(log_q, model.log_prob(x, labels), rtol=1e-8, atol=1e-8)


def test_single_scale_glow_carries_every_dimension_to_one_base():
    model = presets.GlowSingleScale((1, 8, 8), 2, steps=1, hidden=8)
    assert isinstance(model, nf.NormalizingFlow) and model.q0.shape == (16, 2, 2)
    x, log_q = model.sample(3)
    assert x.shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        presets.GlowSingleScale((1, 6, 6), 2)


def test_glow_with_a_context_vector_conditions_its_bases():
    torch.manual_seed(0)
    model = perturbed(nf.Glow((1, 4, 4), 2, steps=1, hidden=8, context_features=3).double())
    assert model.takes_context
    assert all(isinstance(base, nf.distributions.ConditionalDiagGaussian) for base in model.q0)
    context = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        x, log_q = model.sample(4, context)
        torch.testing.assert_close(log_q, model.log_prob(x, context), rtol=1e-8, atol=1e-8)
        assert not torch.allclose(model.log_prob(x, context.flip(0)), log_q)
    with pytest.raises(ValueError, match="not both"):
        nf.Glow((1, 4, 4), 1, num_classes=3, context_features=3)
