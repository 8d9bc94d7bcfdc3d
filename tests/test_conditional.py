"""Conditional flows: q(x | c) for a context vector or a class label."""

import math

import pytest
import torch

import flowforge as nf


def conditional_model(dim=2, context_features=3, conditional_base=True):
    torch.manual_seed(0)
    layers = [
        nf.flows.RealNVPCoupling(dim, 16, nf.flows.alternating_mask(dim, True), context_features=context_features),
        nf.flows.Permute(dim, "swap"),
        nf.flows.MaskedAffineAutoregressive(dim, 16, context_features),
        nf.flows.RationalQuadraticCoupling(dim, 16, num_bins=4, context_features=context_features),
    ]
    if conditional_base:
        q0 = nf.distributions.ConditionalDiagGaussian(dim, nf.nets.MLP([context_features, 8, 2 * dim]))
    else:
        q0 = nf.distributions.DiagGaussian(dim)
    model = nf.ConditionalNormalizingFlow(q0, layers).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def test_sample_log_q_equals_log_prob_and_depends_on_context():
    model = conditional_model()
    context = torch.randn(50, 3, dtype=torch.float64)
    x, log_q = model.sample(50, context)
    torch.testing.assert_close(log_q, model.log_prob(x, context), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(model.log_prob(x, context), model.log_prob(x, context + 0.5))
    z, log_det = model.inverse_and_log_det(x, context)
    x_back, forward_log_det = model.forward_and_log_det(z, context)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(forward_log_det, -log_det)


@pytest.mark.parametrize("conditional_base", [True, False])
def test_conditional_density_integrates_to_one_at_each_context(conditional_base):
    model = conditional_model(conditional_base=conditional_base)
    size, half = 300, 8.0
    axis = torch.linspace(-half, half, size + 1, dtype=torch.float64)
    centres = (axis[1:] + axis[:-1]) / 2
    grid = torch.cartesian_prod(centres, centres)
    cell = (2 * half / size) ** 2
    for context in torch.randn(3, 3, dtype=torch.float64):
        with torch.no_grad():
            mass = model.log_prob(grid, context).exp().sum() * cell
        assert abs(float(mass) - 1) < 2e-3


def test_a_one_dimensional_context_is_shared_and_mismatched_rows_are_errors():
    model = conditional_model()
    context = torch.randn(3, dtype=torch.float64)
    x, log_q = model.sample(7, context)
    torch.testing.assert_close(log_q, model.log_prob(x, context.expand(7, -1)), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="4 rows for 7 samples"):
        model.log_prob(x, torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"context must be \(features,\) or \(batch, features\)"):
        model.log_prob(x, torch.randn(7, 3, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(x, torch.full((7, 3), math.nan, dtype=torch.float64))
    with pytest.raises(ValueError, match="context of shape"):
        model.log_prob(x, torch.randn(7, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="context"):
        model.log_prob(x)


def test_a_conditional_model_needs_something_conditional():
    with pytest.raises(ValueError, match="at least one layer that takes a context"):
        nf.ConditionalNormalizingFlow(nf.distributions.DiagGaussian(2), [nf.flows.Planar((2,))])


def test_conditional_diag_gaussian_matches_torch_distributions():
    encoder = torch.nn.Linear(2, 6).double()
    base = nf.distributions.ConditionalDiagGaussian(3, encoder)
    context = torch.randn(10, 2, dtype=torch.float64)
    z, log_q = base(10, context)
    loc, log_scale = encoder(context).chunk(2, 1)
    expected = torch.distributions.Normal(loc, log_scale.exp()).log_prob(z).sum(1)
    torch.testing.assert_close(log_q, expected)
    torch.testing.assert_close(base.log_prob(z, context), expected)
    with pytest.raises(ValueError, match=r"must return shape \(10, 4\) .*got \(10, 6\)"):
        nf.distributions.ConditionalDiagGaussian(2, encoder).log_prob(torch.randn(10, 2), context)
    with pytest.raises(ValueError, match="one context row per sample"):
        base(4, context)


def test_class_conditional_base_matches_torch_distributions_per_class():
    base = nf.distributions.ClassCondDiagGaussian((2, 2), 3).double()
    with torch.no_grad():
        base.loc.normal_()
        base.log_scale.normal_(0, 0.3)
    y = torch.tensor([0, 2, 1, 2])
    z, log_q = base(4, y)
    expected = torch.distributions.Normal(base.loc[y], base.log_scale[y].exp()).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(log_q, expected)
    torch.testing.assert_close(base.log_prob(z, torch.nn.functional.one_hot(y, 3).double()), expected)
    for bad, message in (
        (torch.tensor([0.0, 1.0, 1.0, 2.0]), "integer indices"),
        (torch.tensor([0, 3, 1, 1]), r"in \[0, 3\)"),
        (torch.tensor([[0, 1], [1, 0]]), "integer indices"),
    ):
        with pytest.raises(ValueError, match=message):
            base.log_prob(z, bad)


def test_class_cond_flow_passes_labels_to_the_base_and_one_hot_to_the_layers():
    torch.manual_seed(1)
    q0 = nf.distributions.ClassCondDiagGaussian(2, 4)
    model = nf.ClassCondFlow(q0, [nf.flows.MaskedAffineAutoregressive(2, 8, 4), nf.flows.Permute(2)]).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    x, log_q = model.sample(20, 3)
    torch.testing.assert_close(log_q, model.log_prob(x, torch.full((20,), 3)), rtol=1e-9, atol=1e-9)
    per_class = [model.log_prob(x, torch.full((20,), k)) for k in range(4)]
    assert all(not torch.allclose(per_class[0], other) for other in per_class[1:])
    x, log_q = model.sample(20)  # random classes
    assert x.shape == (20, 2) and torch.isfinite(log_q).all()
    with pytest.raises(ValueError, match="one label per sample"):
        model.log_prob(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="class-conditional base"):
        nf.ClassCondFlow(nf.distributions.DiagGaussian(2), [nf.flows.Permute(2)])


def test_conditional_reverse_kl_fits_a_context_dependent_target():
    class ShiftedGaussian(torch.nn.Module):
        takes_context = True

        def log_prob(self, x, context):
            return -0.5 * (x - context).square().sum(1)

    torch.manual_seed(0)
    encoder = nf.nets.MLP([2, 16, 4], init_zeros=True)
    model = nf.ConditionalNormalizingFlow(
        nf.distributions.ConditionalDiagGaussian(2, encoder),
        [nf.flows.MaskedAffineAutoregressive(2, 16, 2)],
        ShiftedGaussian(),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(400):
        context = 2 * torch.rand(64, 2) - 1
        optimizer.zero_grad()
        model.reverse_kld(64, context).backward()
        optimizer.step()
    with torch.no_grad():
        x, _ = model.sample(4000, torch.tensor([0.5, -0.5]))
    torch.testing.assert_close(x.mean(0), torch.tensor([0.5, -0.5]), atol=0.1, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(2), atol=0.1, rtol=0)


def gaussian_pairs(rows, generator):
    """``x ~ N(μ, σ² I₂)`` with the context ``c = (μ₁, μ₂, σ)``, ``μ ~ U[−2, 2]²``, ``σ ~ U[0.3, 1.5]``."""
    mu = 4 * torch.rand(rows, 2, generator=generator) - 2
    sigma = 0.3 + 1.2 * torch.rand(rows, 1, generator=generator)
    return mu + sigma * torch.randn(rows, 2, generator=generator), torch.cat([mu, sigma], 1)


def test_a_flow_conditioned_on_gaussian_parameters_reproduces_mean_and_variance_at_new_contexts():
    """The layers (not the base, a fixed standard normal) must learn to shift and scale by the context."""
    generator = torch.Generator().manual_seed(0)
    x, context = gaussian_pairs(20_000, generator)
    x_validation, context_validation = gaussian_pairs(2000, generator)
    torch.manual_seed(0)
    layers = [
        nf.flows.RealNVPCoupling(2, 32, nf.flows.alternating_mask(2, index % 2 == 0), context_features=3)
        for index in range(4)
    ]
    model = nf.ConditionalNormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), layers)
    nf.training.fit_data(
        model, x, x_validation, train_context=context, validation_context=context_validation,
        epochs=30, batch_size=256, lr=3e-3, patience=30, seed=0, progress=False,
    )  # fmt: skip
    unseen = gaussian_pairs(6, torch.Generator().manual_seed(123))[1]
    torch.manual_seed(1)
    with torch.no_grad():
        for mu1, mu2, sigma in unseen.tolist():
            samples, _ = model.sample(20_000, torch.tensor([mu1, mu2, sigma]))
            mean_error = (samples.mean(0) - torch.tensor([mu1, mu2])).abs().max() / sigma
            std_error = (samples.std(0) / sigma - 1).abs().max()
            assert mean_error < 0.15 and std_error < 0.1, (mu1, mu2, sigma, float(mean_error), float(std_error))


def test_fit_data_checks_the_context_rows():
    model = conditional_model()
    x, context = torch.randn(20, 2), torch.randn(19, 3)
    with pytest.raises(ValueError, match="train_context has 19 rows but train_data has 20"):
        nf.training.fit_data(model, x, train_context=context, epochs=1, progress=False)
    with pytest.raises(ValueError, match="for both the training and the validation data"):
        nf.training.fit_data(model, x, x, train_context=torch.randn(20, 3), epochs=1, progress=False)
