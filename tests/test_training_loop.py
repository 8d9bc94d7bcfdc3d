"""The step loop with loss objects and contexts: a name and its object train alike, a user's loss object
runs, conditional models train by reverse KL at given contexts and by forward KL on per-row contexts."""

import numpy as np
import pytest
import torch

import flowforge as nf
from flowforge import losses, training
from flowforge.distributions.targets import Target


def _planar():
    torch.manual_seed(0)
    return nf.presets.PlanarFlow(2, 3, p=nf.distributions.TwoModes(2.0, 0.1))


def _histories(first, second, steps=40):
    model_a, model_b = _planar(), _planar()
    a = training.fit(model_a, steps, seed=5, progress=False, device="cpu", compile="off", **first)
    b = training.fit(model_b, steps, seed=5, progress=False, device="cpu", compile="off", **second)
    for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    return a.loss_history, b.loss_history


@pytest.mark.parametrize(
    "by_name, by_object",
    [
        ({"anneal_iters": 20, "beta0": 0.1}, {"loss": losses.ReverseKL(40, anneal_iters=20, beta0=0.1)}),
        ({"score_fn": False, "samples_per_step": 16}, {"loss": losses.ReverseKL(16, score_fn=False)}),
        ({"loss": "alpha_divergence", "samples_per_step": 32}, {"loss": losses.AlphaDivergence(32)}),
    ],
    ids=["reverse-kl-annealed", "sticking-the-landing", "alpha-divergence"],
)
def test_a_loss_name_and_its_object_train_alike(by_name, by_object):
    named, objected = _histories(by_name, by_object)
    np.testing.assert_array_equal(named, objected)


def test_forward_kl_object_on_data_matches_the_name():
    data = nf.datasets.two_moons(500, seed=0)
    named, objected = _histories(
        {"loss": "forward_kl", "data": data, "samples_per_step": 32},
        {"loss": losses.ForwardKL(), "data": data, "samples_per_step": 32},
    )
    np.testing.assert_array_equal(named, objected)


def test_a_users_loss_object_with_the_same_call_form_runs():
    class Tempered:
        needs_data = False

        def __init__(self):
            self.betas = []

        def beta(self, iteration):
            return 0.5

        def __call__(self, model, beta, context=None):
            self.betas.append(float(beta))
            return losses.reverse_kl(model, 8, beta, context=context)

    loss = Tempered()
    result = training.fit(_planar(), 6, loss=loss, progress=False, device="cpu", compile="off")
    assert loss.betas == [0.5] * 6 and np.isfinite(result.loss_history).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss": losses.ELBO()}, "fit_vae"),
        ({"loss": object()}, "loss object"),
        ({"loss": losses.ReverseKL(), "anneal_iters": 10}, "carries its own"),
        ({"loss": losses.ReverseKL(), "score_fn": False}, "carries its own"),
        ({"loss": "forward_kl", "data": torch.randn(10, 2), "context": torch.randn(9, 3)}, "one context row per"),
        ({"loss": "forward_kl", "data": lambda n: torch.randn(n, 2), "context": torch.randn(9, 3)}, "sampler"),
        ({"context": torch.tensor([0.0, torch.nan])}, "context contains NaN"),
        ({"loss": "forward_kl", "data": torch.randn(2, 2), "context": torch.tensor([[0.0], [torch.inf]])}, "NaN"),
    ],
)
def test_loss_and_context_mistakes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        training.fit(_planar(), 5, progress=False, device="cpu", **kwargs)


def test_a_named_sampling_loss_needs_a_target():
    with pytest.raises(ValueError, match="target density"):
        training.fit(nf.presets.PlanarFlow(2, 1), 5, loss="alpha_divergence", progress=False, device="cpu")


class ShiftedGaussian(Target):
    """``p̃(x | c) = N(x; (c, c), 0.3² I)`` for a scalar context ``c``."""

    takes_context = True

    def __init__(self):
        super().__init__(((-4.0, 4.0), (-4.0, 4.0)), 0.0)

    def log_prob(self, x, context=None):
        return -0.5 * ((x - context) / 0.3).square().sum(1)


def _conditional_model(target=None):
    torch.manual_seed(0)
    return nf.presets.RealNVP(2, 4, hidden=16, context_features=1, p=target)


def test_reverse_kl_at_given_contexts_learns_a_conditional_target():
    model = _conditional_model(ShiftedGaussian())
    contexts = torch.linspace(-2.0, 2.0, 64).unsqueeze(1)
    training.fit(model, 600, context=contexts, samples_per_step=64, lr=5e-3, seed=0, progress=False, device="cpu")
    with torch.no_grad():
        for shift in (-1.5, 1.0):
            x, _ = model.sample(2000, torch.full((2000, 1), shift))
            torch.testing.assert_close(x.mean(0), torch.full((2,), shift), atol=0.15, rtol=0)


def _two_classes(rows=2000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    context = torch.randint(0, 2, (rows, 1), generator=generator).float() * 2 - 1  # -1 or +1
    return torch.randn(rows, 2, generator=generator) * 0.5 + 2 * context, context


@pytest.mark.parametrize("sampler", [False, True], ids=["tensor", "sampler"])
def test_forward_kl_with_per_row_contexts_learns_each_rows_density(sampler):
    data, context = _two_classes()
    model = _conditional_model()
    if sampler:
        generator = torch.Generator().manual_seed(1)

        def draw(n):
            index = torch.randint(0, data.shape[0], (n,), generator=generator)
            return data[index], context[index]

        arguments = {"data": draw}
    else:
        arguments = {"data": data, "context": context}
    training.fit(
        model, 400, loss="forward_kl", samples_per_step=128, lr=5e-3, seed=0, progress=False, device="cpu",
        **arguments,
    )  # fmt: skip
    with torch.no_grad():
        own = -model.log_prob(data, context).mean()
        swapped = -model.log_prob(data, -context).mean()
    assert own < 2 * 0.5 * np.log(2 * np.pi * np.e * 0.25) + 0.15 and swapped > own + 5


def test_fused_forward_kl_with_contexts_makes_the_eager_updates():
    data, context = _two_classes(500)
    models, results = [], []
    for compile in ("off", "on"):
        model = _conditional_model()
        result = training.fit(
            model, 30, loss="forward_kl", data=data, context=context, samples_per_step=64, lr=1e-2,
            seed=0, compile=compile, progress=False, device="cpu",
        )  # fmt: skip
        results.append(result)
        models.append(model)
    assert results[1].fused and not results[0].compiled
    np.testing.assert_allclose(results[1].loss_history, results[0].loss_history, rtol=1e-4, atol=1e-4)
    for a, b in zip(*(m.parameters() for m in models), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_losses_that_toggle_requires_grad_are_not_fused(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    result = training.fit(
        _planar(), 5, loss=losses.AlphaDivergence(16, dreg=True), compile="on", progress=False, device="cpu"
    )
    assert result.compiled and not result.fused
