"""A model as a torch.distributions.Distribution: shapes, values, gradients, contexts, errors, Pyro."""

import math

import pytest
import torch

import flowforge as nf


def _model(dim=2, context_features=None):
    torch.manual_seed(0)
    layers = [nf.flows.MaskedAffineAutoregressive(dim, 8, context_features=context_features) for _ in range(2)]
    layers.insert(1, nf.flows.Permute(dim, mode="swap"))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(dim), layers).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def test_shapes_values_and_gradients_without_a_context():
    model = _model()
    dist = model.as_distribution()
    assert isinstance(dist, torch.distributions.Distribution)
    assert dist.batch_shape == () and dist.event_shape == (2,) and dist.has_rsample
    x, log_q = dist.rsample_and_log_prob((3, 4))
    assert x.shape == (3, 4, 2) and log_q.shape == (3, 4) and x.requires_grad
    torch.testing.assert_close(dist.log_prob(x), log_q, rtol=1e-10, atol=1e-10)  # the same density both ways
    torch.testing.assert_close(dist.log_prob(x[0, 0]), model.log_prob(x[0, 0:1])[0])
    assert dist.sample().shape == (2,) and not dist.sample((5,)).requires_grad
    dist.rsample((7,)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_one_dimensional_flow_integrates_to_one():
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(1), [nf.flows.Planar(1) for _ in range(3)]).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    grid = torch.linspace(-30.0, 30.0, 200001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        density = model.as_distribution().log_prob(grid).exp()
    assert abs(float(torch.trapezoid(density, grid[:, 0])) - 1.0) < 1e-6


def test_a_batch_of_contexts_is_the_batch_shape():
    model = _model(context_features=3)
    context = torch.randn(4, 3, dtype=torch.float64)
    dist = model.as_distribution(context)
    assert dist.batch_shape == (4,) and dist.event_shape == (2,)
    x, log_q = dist.sample_and_log_prob((5,))
    assert x.shape == (5, 4, 2) and log_q.shape == (5, 4)
    for row in range(4):  # sample i of batch member b was drawn at context b
        torch.testing.assert_close(model.log_prob(x[:, row], context[row]), log_q[:, row], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dist.log_prob(x), log_q, rtol=1e-10, atol=1e-10)
    one_point = x[0, 0].reshape(1, 1, 2)  # (1, 1, event) broadcasts against batch (4,): one point at every context
    expected = torch.stack([model.log_prob(x[0, 0:1], context[row])[0] for row in range(4)])
    torch.testing.assert_close(dist.log_prob(one_point), expected.unsqueeze(0), rtol=1e-10, atol=1e-10)
    single = model.as_distribution(context[1])  # one 1-D context for every sample: no batch
    assert single.batch_shape == () and single.sample((6,)).shape == (6, 2)


def test_class_labels_are_contexts():
    torch.manual_seed(0)
    base = nf.distributions.ClassCondDiagGaussian(2, 3)
    with torch.no_grad():
        base.loc.copy_(torch.tensor([[-5.0, 0.0], [0.0, 0.0], [5.0, 0.0]]))
    model = nf.NormalizingFlow(base, [nf.flows.Permute(2, mode="swap")])
    labels = torch.tensor([0, 2])
    dist = model.as_distribution(labels)
    x = dist.sample((1000,))
    assert dist.batch_shape == (2,) and x.shape == (1000, 2, 2)
    means = x.mean(0)
    assert abs(float(means[0, 1]) + 5.0) < 0.2 and abs(float(means[1, 1]) - 5.0) < 0.2  # swapped: y holds the class
    assert model.as_distribution(torch.tensor(1)).sample((3,)).shape == (3, 2)
    one_hot = model.as_distribution(torch.eye(3)[[0, 2]])  # one-hot rows are labels too
    assert one_hot.batch_shape == (2,)
    torch.testing.assert_close(one_hot.log_prob(x[:5]), dist.log_prob(x[:5]))
    with pytest.raises(ValueError, match="class-conditional: give the class labels"):
        model.as_distribution()  # a mixture over random classes, whose density the model does not compute


def test_empty_shapes_expand_and_integer_features():
    model = _model(context_features=3)
    dist = model.as_distribution(torch.randn(4, 3, dtype=torch.float64))
    x, log_q = dist.sample_and_log_prob((0,))
    assert x.shape == (0, 4, 2) and log_q.shape == (0, 4) and dist.log_prob(x).shape == (0, 4)
    wide = dist.expand((5, 4))  # leading batch dimensions, as a Pyro plate adds them
    x, log_q = wide.sample_and_log_prob((2,))
    assert wide.batch_shape == (5, 4) and x.shape == (2, 5, 4, 2)
    torch.testing.assert_close(dist.log_prob(x), log_q, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="must end with the context's batch"):
        dist.expand((4, 5))
    integers = model.as_distribution(torch.tensor([[1, 2, 3], [0, 0, 1]]))  # integer features, not labels
    assert integers.batch_shape == (2,) and integers.sample((3,)).shape == (3, 2, 2)


def test_bad_input_is_refused_with_a_message():
    model = _model(context_features=3)
    dist = model.as_distribution(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expects values of shape \(\.\.\., 2\), got \(4, 3\)"):
        dist.log_prob(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not broadcast with the batch_shape"):
        dist.log_prob(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="context must be"):
        model.as_distribution(torch.zeros(2, 2, 3))
    wrong = _model().as_distribution(event_shape=(3,))
    with pytest.raises(ValueError, match=r"pass event_shape=\(2,\)"):
        wrong.sample((2,))


def test_a_non_reparameterised_base_has_no_rsample():
    torch.manual_seed(0)
    base = nf.distributions.ResampledGaussian(2, nf.nets.MLP([2, 8, 1]), 10)
    dist = nf.NormalizingFlow(base, [nf.flows.Planar(2)]).as_distribution()
    assert not dist.has_rsample and dist.sample((4,)).shape == (4, 2)
    with pytest.raises(NotImplementedError, match="use sample"):
        dist.rsample((4,))


def test_a_flow_is_a_pyro_guide_that_finds_a_known_posterior():
    pyro = pytest.importorskip("pyro")
    from pyro.contrib.zuko import ZukoToPyro
    from pyro.infer import SVI, Trace_ELBO

    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    noise, data = 0.5, torch.tensor([[1.0, -1.0], [1.4, -0.6], [0.6, -1.2], [1.2, -0.9]])
    # z ~ N(0, I), x_i ~ N(z, noise² I): the posterior is N(m, s² I) with s² = 1 / (1 + n / noise²).
    variance = 1.0 / (1.0 + len(data) / noise**2)
    mean = variance * data.sum(0) / noise**2
    flow = nf.NormalizingFlow(
        nf.distributions.DiagGaussian(2), [nf.flows.MaskedAffineAutoregressive(2, 8), nf.flows.Planar(2)]
    )

    def model():
        z = pyro.sample("z", pyro.distributions.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(data)):
            pyro.sample("x", pyro.distributions.Normal(z, noise).to_event(1), obs=data)

    def guide():
        pyro.module("flow", flow)
        pyro.sample("z", ZukoToPyro(flow.as_distribution()))

    steps = 500  # the learning rate decays from 0.03 to 0.0015: the noisy ELBO gradients settle
    svi = SVI(
        model, guide, pyro.optim.ClippedAdam({"lr": 0.03, "lrd": 0.05 ** (1 / steps)}), Trace_ELBO(num_particles=4)
    )
    for _ in range(steps):
        svi.step()
    with torch.no_grad():
        z = flow.as_distribution().sample((20000,))
    torch.testing.assert_close(z.mean(0), mean, atol=0.05, rtol=0)  # seeds 0-3 were within 0.03 (a posterior sd: 0.24)
    torch.testing.assert_close(z.std(0), torch.full((2,), math.sqrt(variance)), atol=0.03, rtol=0)  # within 0.012


def test_a_conditional_flow_is_an_amortised_guide_inside_a_pyro_plate():
    pyro = pytest.importorskip("pyro")
    from pyro.contrib.zuko import ZukoToPyro
    from pyro.infer import SVI, Trace_ELBO

    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    data = torch.tensor([[1.0, -1.0], [2.0, 0.5], [-1.5, 0.0]])
    # Two layers with a swap between: a conditional MADE's first feature does not see the context.
    layers = [nf.flows.MaskedAffineAutoregressive(2, 16, context_features=2) for _ in range(2)]
    flow = nf.NormalizingFlow(
        nf.distributions.DiagGaussian(2), [layers[0], nf.flows.Permute(2, mode="swap"), layers[1]]
    )

    def model():
        with pyro.plate("points", len(data)):  # z_i ~ N(0, I), x_i ~ N(z_i, I): z_i | x_i ~ N(x_i / 2, I / 2)
            z = pyro.sample("z", pyro.distributions.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", pyro.distributions.Normal(z, 1.0).to_event(1), obs=data)

    def guide():
        pyro.module("flow", flow)
        with pyro.plate("points", len(data)):
            pyro.sample("z", ZukoToPyro(flow.as_distribution(data)))

    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.03, "lrd": 0.05 ** (1 / 300)}), Trace_ELBO(num_particles=4))
    for _ in range(300):
        svi.step()
    with torch.no_grad():
        z = flow.as_distribution(data).sample((20000,))
    torch.testing.assert_close(z.mean(0), data / 2, atol=0.1, rtol=0)  # seed 0: within 0.054
    torch.testing.assert_close(z.std(0), torch.full((3, 2), 0.5**0.5), atol=0.06, rtol=0)  # within 0.016
