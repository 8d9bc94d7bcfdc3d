"""Multi-scale image flows, dequantisation and bits/dim on the bundled digits."""

import math

import pytest
import torch

import flowforge as nf
from flowforge import training


def perturbed(model, scale=0.05):
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return model


def initialised(model, images, labels=None):
    """Run ActNorm's data-dependent initialisation once, then move away from the identity."""
    with torch.no_grad():
        model.log_prob(images, labels)
    return perturbed(model)


@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("num_classes", [None, 5])
def test_sample_log_q_equals_log_prob(levels, num_classes):
    model = nf.presets.Glow((1, 8, 8), levels, steps=2, hidden=8, num_classes=num_classes).double()
    labels = None if num_classes is None else torch.randint(5, (16,))
    model = initialised(model, torch.rand(16, 1, 8, 8, dtype=torch.float64), labels)
    x, log_q = model.sample(16, labels)
    assert x.shape == (16, 1, 8, 8)
    torch.testing.assert_close(log_q, model.log_prob(x, labels), rtol=1e-8, atol=1e-8)
    latents = model.inverse(x)
    assert [tuple(z.shape[1:]) for z in latents] == [base.shape for base in model.q0]
    torch.testing.assert_close(model.forward(latents), x)


def test_log_det_matches_the_autograd_jacobian():
    model = initialised(nf.presets.Glow((2, 4, 4), 2, steps=1, hidden=8).double(), torch.rand(8, 2, 4, 4).double())
    x = 0.1 + 0.8 * torch.rand(3, 2, 4, 4, dtype=torch.float64)
    _, log_det = model.inverse_and_log_det(x)
    for i in range(3):
        jacobian = torch.autograd.functional.jacobian(
            lambda v: torch.cat([z.flatten(1) for z in model.inverse(v.view(1, 2, 4, 4))], 1)[0], x[i].flatten()
        )
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jacobian)[1], rtol=1e-8, atol=1e-8)


def test_labels_are_required_exactly_when_class_conditional():
    conditional = nf.presets.Glow((1, 4, 4), 1, steps=1, hidden=8, num_classes=3)
    plain = nf.presets.Glow((1, 4, 4), 1, steps=1, hidden=8)
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="needs the labels"):
        conditional.log_prob(x)
    with pytest.raises(ValueError, match="got a context, but neither its base nor any layer takes one"):
        plain.log_prob(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one base and one list of flows per level"):
        nf.MultiscaleFlow([nf.distributions.DiagGaussian((4, 2, 2))], [[], []], [], class_cond=False)


def test_temperature_scales_the_base_and_restores_it():
    model = nf.presets.Glow((1, 4, 4), 1, steps=1, hidden=8)
    before = [base.log_scale.clone() for base in model.q0]
    torch.manual_seed(0)
    with torch.no_grad():
        cold = torch.cat([z.flatten(1) for z in model.inverse(model.sample(4000, temperature=0.5)[0])], 1)
        torch.manual_seed(0)
        warm = torch.cat([z.flatten(1) for z in model.inverse(model.sample(4000)[0])], 1)
    assert abs(float(cold.std() / warm.std()) - 0.5) < 0.02
    for base, value in zip(model.q0, before, strict=True):
        torch.testing.assert_close(base.log_scale, value, rtol=0, atol=0)


def test_uniform_dequantisation_and_the_discrete_nll_of_a_uniform_model():
    levels = torch.randint(0, 17, (500, 1, 2, 2)).double()
    dequantised = nf.datasets.dequantize(levels, 17, torch.Generator().manual_seed(0))
    assert ((dequantised * 17).floor() == levels).all() and dequantised.min() >= 0 and dequantised.max() < 1
    with pytest.raises(ValueError, match="integer levels"):
        nf.datasets.dequantize(levels + 0.5, 17)

    class UniformOnUnitCube(torch.nn.Module):  # log q = 0 on [0, 1)^D: exactly the uniform discrete model
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

        def log_prob(self, x):
            return x.new_zeros(x.shape[0])

    model = UniformOnUnitCube()
    nll = nf.metrics.mean_nll(model, levels, levels=17)
    assert nll == pytest.approx(4 * math.log(17))
    assert nf.metrics.bits_per_dim(nll, 4) == pytest.approx(math.log2(17))


def test_glow_learns_digits_beyond_the_uniform_model():
    """Short version of the digits run: a few epochs already beat the uniform 4.09 bits/dim clearly."""
    images, labels = nf.datasets.load_digits()
    (train, train_labels), (validation, validation_labels), (test, test_labels) = nf.datasets.split(
        (images, labels), seed=0
    )
    torch.manual_seed(0)
    model = nf.presets.Glow((1, 8, 8), 2, steps=2, hidden=32, num_classes=10)
    training.fit_data(
        model, train, validation, train_context=train_labels, validation_context=validation_labels,
        levels=17, epochs=6, batch_size=64, seed=0, progress=False,
    )  # fmt: skip
    bits = nf.metrics.bits_per_dim(nf.metrics.mean_nll(model, test, context=test_labels, levels=17), 64)
    assert bits < 3.2


@pytest.mark.slow
def test_glow_on_digits_reaches_a_good_bits_per_dim():
    images, labels = nf.datasets.load_digits()
    train, validation, test = nf.datasets.split(images, seed=0)
    torch.manual_seed(0)
    model = nf.presets.Glow((1, 8, 8), 2, steps=4, hidden=64)
    training.fit_data(model, train, validation, levels=17, epochs=40, batch_size=64, seed=0, progress=False)
    bits = nf.metrics.bits_per_dim(nf.metrics.mean_nll(model, test, levels=17), 64)
    assert bits < 2.3
