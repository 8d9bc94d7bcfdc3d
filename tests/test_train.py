"""The fitting loop: schedule, reproducibility, forward KL, divergence handling, compile."""

import math

import numpy as np
import pytest
import torch
from torch._inductor import cpu_vec_isa

import flowforge as nf
from flowforge import training
from flowforge.presets import PlanarFlow
from flowforge.training import accelerate


def test_annealing_schedule():
    assert training.annealing_beta(0, 100) == pytest.approx(0.01)
    assert training.annealing_beta(50, 100) == pytest.approx(0.51)
    assert training.annealing_beta(1000, 100) == 1.0
    assert training.annealing_beta(5, None) == 1.0
    assert training.annealing_beta(0, 10, beta0=0.5) == 0.5


def test_fit_is_reproducible_with_a_seed():
    histories = []
    for _ in range(2):
        torch.manual_seed(99)
        model = PlanarFlow(2, 4, p=nf.distributions.TwoModes(2.0, 0.1))
        result = training.fit(model, 60, anneal_iters=30, seed=7, progress=False, device="cpu")
        histories.append(result.loss_history)
    np.testing.assert_array_equal(histories[0], histories[1])
    assert result.iterations == 60 and result.loss_history.shape == (60,)
    assert result.iterations_per_second > 0 and not result.compiled


def test_reverse_kl_fit_reduces_kl():
    torch.manual_seed(0)
    model = PlanarFlow(2, 8, p=nf.distributions.CircularGaussianMixture(2))
    before = nf.metrics.grid_kl(model, grid_size=100)["kl"]
    training.fit(model, 1500, samples_per_step=64, anneal_iters=500, lr=5e-3, seed=0, progress=False, device="cpu")
    after = nf.metrics.grid_kl(model, grid_size=100)["kl"]
    assert after < 0.5 * before and after < 0.5


def test_forward_kl_fit_learns_a_gaussian():
    torch.manual_seed(0)
    covariance = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    data = torch.distributions.MultivariateNormal(torch.tensor([1.0, -2.0]), covariance).sample((4000,))
    model = PlanarFlow(2, 4)
    training.fit(
        model, 1500, loss="forward_kl", data=data, samples_per_step=256, lr=1e-2, seed=0, progress=False, device="cpu"
    )
    entropy = 0.5 * math.log(torch.linalg.det(2 * math.pi * math.e * covariance).item())
    with torch.no_grad():
        nll = float(-model.log_prob(data).mean())
    assert nll < entropy + 0.05


def test_forward_kl_from_a_sampler():
    target = nf.distributions.CircularGaussianMixture(4)
    model = PlanarFlow(2, 2)
    result = training.fit(
        model, 20, loss="forward_kl", data=target.sample, samples_per_step=32, progress=False, device="cpu"
    )
    assert np.isfinite(result.loss_history).all()


class ExplodingTarget(torch.nn.Module):
    """A target whose log-density turns NaN after a number of calls."""

    def __init__(self, good_calls):
        super().__init__()
        self.calls, self.good_calls = 0, good_calls

    def log_prob(self, z):
        self.calls += 1
        value = -0.5 * z.square().sum(1)
        return value if self.calls <= self.good_calls else value * torch.nan


def test_nan_loss_stops_with_a_message_and_restores_the_last_good_state():
    torch.manual_seed(0)
    model = PlanarFlow(2, 2, p=ExplodingTarget(good_calls=25))
    snapshots = {}

    def remember(iteration, flow_model):
        snapshots[iteration] = {k: v.clone() for k, v in flow_model.state_dict().items()}

    with pytest.raises(
        training.TrainingDiverged, match="loss became nan at iteration 26; .* state after iteration 20"
    ) as caught:
        training.fit(
            model,
            100,
            check_every=10,
            callbacks=[training.Every(10, remember)],
            progress=False,
            device="cpu",
            compile="off",
        )
    assert caught.value.result.iterations == 25
    assert np.isfinite(caught.value.result.loss_history).all()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[20][key])


def test_a_model_without_parameters_cannot_be_fitted():
    model = nf.NormalizingFlow(
        nf.distributions.DiagGaussian(2, trainable=False), [nf.flows.Permute(2)], nf.distributions.TwoModes()
    )
    with pytest.raises(ValueError, match="no trainable parameters"):
        training.fit(model, 5, progress=False, device="cpu")


def test_callbacks_run_at_their_interval():
    seen = []
    model = PlanarFlow(2, 1, p=nf.distributions.TwoModes())
    training.fit(model, 25, callbacks=[training.Every(10, lambda it, m: seen.append(it))], progress=False, device="cpu")
    assert seen == [10, 20]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"iterations": 0}, "iterations must be a positive int"),
        ({"iterations": 5, "loss": "elbo"}, "loss must be one of"),
        ({"iterations": 5, "samples_per_step": 0}, "samples_per_step"),
        ({"iterations": 5, "compile": "sometimes"}, "compile must be one of"),
        ({"iterations": 5, "lr": -1.0}, "lr must be positive"),
        ({"iterations": 5, "loss": "forward_kl"}, "forward_kl needs data"),
        ({"iterations": 5, "loss": "forward_kl", "data": torch.tensor([[0.0, torch.nan]])}, "NaN"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    model = PlanarFlow(2, 1, p=nf.distributions.TwoModes())
    with pytest.raises(ValueError, match=message):
        training.fit(model, progress=False, device="cpu", **kwargs)


def test_compiled_fit_matches_eager_quality():
    torch.manual_seed(0)
    model = PlanarFlow(2, 2, p=nf.distributions.CircularGaussianMixture(2))
    result = training.fit(model, 300, compile="on", samples_per_step=64, lr=5e-3, seed=0, progress=False, device="cpu")
    assert result.compiled and result.compile_time > 0
    assert np.isfinite(result.loss_history).all()
    assert result.loss_history[-50:].mean() < result.loss_history[:50].mean()


def test_failed_compilation_falls_back_to_eager(monkeypatch):
    def broken_compile(function, **kwargs):
        def run():
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = PlanarFlow(2, 1, p=nf.distributions.TwoModes())
    with pytest.warns(UserWarning, match="torch.compile failed"):
        result = training.fit(model, 5, compile="on", progress=False, device="cpu")
    assert not result.compiled and np.isfinite(result.loss_history).all()


def test_auto_compile_only_when_the_rest_of_the_run_is_long(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: calls.append(1) or function)
    model = PlanarFlow(2, 1, p=nf.distributions.TwoModes())
    result = training.fit(model, 40, compile="auto", progress=False, device="cpu")
    assert calls == [] and not result.compiled
    monkeypatch.setattr(accelerate, "AUTO_COMPILE_PAYOFF_SECONDS", 0.0)
    result = training.fit(model, accelerate.AUTO_PROBE_STEPS, compile="auto", progress=False, device="cpu")
    assert calls == [] and not result.compiled  # nothing left to compile for
    result = training.fit(model, 40, compile="auto", progress=False, device="cpu")
    assert calls == [1] and result.compiled and result.fused


def _batches(data, size, seed):
    """The same sequence of mini-batches for every fit that calls it with the same seed."""
    generator = torch.Generator().manual_seed(seed)
    return lambda n: data[torch.randint(0, data.shape[0], (n,), generator=generator)]


def _moons_fit(compile, steps=150, **kwargs):
    torch.manual_seed(0)
    model = PlanarFlow(2, 3)
    data = nf.datasets.two_moons(2000, seed=0)
    result = training.fit(
        model, steps, loss="forward_kl", data=_batches(data, 64, 1), samples_per_step=64, lr=1e-2,
        weight_decay=1e-3, compile=compile, progress=False, device="cpu", **kwargs,
    )  # fmt: skip
    return model, result


def test_fused_step_makes_the_same_updates_as_eager_adam():
    eager_model, eager = _moons_fit("off")
    fused_model, fused = _moons_fit("on")
    assert fused.compiled and fused.fused and fused.compile_time > 0 and not eager.compiled
    np.testing.assert_allclose(fused.loss_history, eager.loss_history, rtol=1e-4, atol=1e-4)
    for a, b in zip(fused_model.parameters(), eager_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_auto_switch_to_the_fused_step_carries_adams_state_over(monkeypatch):
    eager_model, eager = _moons_fit("off")
    monkeypatch.setattr(accelerate, "AUTO_COMPILE_PAYOFF_SECONDS", 0.0)
    switched_model, switched = _moons_fit("auto")
    assert switched.fused
    np.testing.assert_allclose(switched.loss_history, eager.loss_history, rtol=1e-4, atol=1e-4)
    for a, b in zip(switched_model.parameters(), eager_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_fused_fits_of_several_models_update_only_their_own():
    first, _ = _moons_fit("on", steps=30)
    kept = [p.detach().clone() for p in first.parameters()]
    second, result = _moons_fit("on", steps=30)
    assert result.fused
    for a, b in zip(first.parameters(), kept, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fused_step_restores_the_last_good_state_on_nan():
    torch.manual_seed(0)
    model = PlanarFlow(2, 3)
    calls = []

    def data(n):
        calls.append(n)
        batch = torch.randn(n, 2)
        return batch * torch.nan if len(calls) > 25 else batch

    snapshots = {}

    def remember(iteration, flow_model):
        snapshots[iteration] = {k: v.clone() for k, v in flow_model.state_dict().items()}

    with pytest.raises(training.TrainingDiverged, match="at iteration 26; .* state after iteration 20"):
        training.fit(
            model, 100, loss="forward_kl", data=data, samples_per_step=64, check_every=10, compile="on",
            callbacks=[training.Every(10, remember)], progress=False, device="cpu",
        )  # fmt: skip
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[20][key])


def test_steps_that_cannot_be_fused_compile_the_loss_only(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)
    model = PlanarFlow(2, 1, p=nf.distributions.TwoModes())
    result = training.fit(model, 5, compile="on", score_fn=False, progress=False, device="cpu")
    assert result.compiled and not result.fused
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    result = training.fit(model, 5, compile="on", optimizer=optimizer, progress=False, device="cpu")
    assert result.compiled and not result.fused


def test_tiny_cpu_steps_compile_without_the_precompiled_header():
    cpu = torch.device("cpu")
    planar = nf.presets.PlanarFlow(2, 16, p=nf.distributions.TwoModes())
    assert accelerate.inductor_options(planar, 40, cpu) == {"cpp_cache_precompile_headers": False}
    assert accelerate.inductor_options(planar, 4096, cpu) is None  # a large batch vectorises
    assert accelerate.inductor_options(nf.presets.RealNVP(2, 8, hidden=64), 40, cpu) is None  # 35k parameters
    assert accelerate.inductor_options(planar, 40, torch.device("cuda")) is None


def test_compiled_cpu_steps_probe_the_vector_isa_once_in_the_background():
    _moons_fit("on", steps=3)
    probe = accelerate._isa_probe
    assert probe is not None and probe.name == "flowforge-cpu-isa-probe"
    probe.join(timeout=120)
    assert not probe.is_alive()
    assert accelerate.probe_cpu_vector_isa(torch.device("cpu")) is probe  # started once a process
    assert cpu_vec_isa.valid_vec_isa_list.cache_info().currsize == 1  # the answer inductor reads is cached
