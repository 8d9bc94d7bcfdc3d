"""FAB (flowforge.fab): AIS towards p²/q estimates the α = 2 integral it should, the prioritised buffer
draws in proportion to the weights and keeps them up to date, the loss is the estimator of the paper,
and a fit with FAB resumes bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import flowforge as nf
from flowforge.fab import FAB, PrioritisedBuffer
from flowforge.mcmc import annealed_importance_sampling


class ScaledGaussian(nn.Module):
    """``p̃(x) = Z · N(x; μ, s²)`` in one dimension, normalised to ``Z``."""

    def __init__(self, mean: float, std: float, log_z: float) -> None:
        super().__init__()
        self.mean, self.std, self.log_z = mean, std, log_z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        normal = torch.distributions.Normal(
            torch.tensor(self.mean, dtype=x.dtype), torch.tensor(self.std, dtype=x.dtype)
        )
        return normal.log_prob(x[:, 0]) + self.log_z


def squared_over_standard_normal(mean: float, std: float, log_z: float) -> float:
    """``log ∫ p̃(x)²/N(x; 0, 1) dx`` for the p̃ of :class:`ScaledGaussian`, in closed form."""
    a = 1 / std**2 - 0.5
    b = 2 * mean / std**2
    return (
        2 * log_z + 0.5 * math.log(2 * math.pi) - math.log(2 * math.pi * std**2) + 0.5 * math.log(math.pi / a)
        + b * b / (4 * a) - mean**2 / std**2
    )  # fmt: skip


def standard_normal_flow(target: nn.Module | None = None) -> nf.NormalizingFlow:
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(1), [], p=target).double()


@pytest.mark.parametrize(("temperatures", "kernel"), [(1, "hmc"), (6, "hmc"), (6, "mh")])
def test_ais_towards_p_squared_over_q_estimates_the_alpha_2_integral(temperatures, kernel):
    torch.manual_seed(0)
    target = ScaledGaussian(0.5, 0.8, log_z=1.3)
    run = annealed_importance_sampling(
        standard_normal_flow(target), num_samples=40_000, num_temperatures=temperatures, kernel=kernel,
        step_size=0.5, adapt=False, alpha=2.0,
    )  # fmt: skip
    expected = squared_over_standard_normal(0.5, 0.8, 1.3)
    assert abs(run.log_z - expected) < 5 * run.log_z_se + 1e-3, (run.log_z, expected, run.log_z_se)
    assert run.step_size == 0.5  # not adapted


def test_alpha_1_is_the_ais_it_was():
    torch.manual_seed(0)
    flow = standard_normal_flow(ScaledGaussian(0.5, 0.8, log_z=1.3))
    first = annealed_importance_sampling(flow, num_samples=500, num_temperatures=4)
    torch.manual_seed(0)
    second = annealed_importance_sampling(flow, num_samples=500, num_temperatures=4, alpha=1.0)
    assert torch.equal(first.log_weights, second.log_weights) and torch.equal(first.samples, second.samples)
    with pytest.raises(ValueError, match="alpha must be positive"):
        annealed_importance_sampling(flow, num_samples=5, alpha=0.0)


def test_the_buffer_draws_in_proportion_to_the_weights_and_keeps_the_newest():
    buffer = PrioritisedBuffer(5)
    buffer.add(torch.arange(3.0)[:, None], torch.log(torch.tensor([1.0, 2.0, 3.0])), torch.zeros(3))
    buffer.add(
        torch.arange(3.0, 7.0)[:, None], torch.log(torch.tensor([4.0, 5.0, math.nan, 6.0])), torch.zeros(4)
    )  # the NaN weight is left out: 6 samples, capacity 5, the oldest (x = 0) overwritten
    assert buffer.size == 5 and buffer.x is not None
    assert sorted(buffer.x[:, 0].tolist()) == [1.0, 2.0, 3.0, 4.0, 6.0]
    torch.manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(20_000):
        counts[buffer.sample(1)] += 1
    assert buffer.log_w is not None
    expected = torch.softmax(buffer.log_w.float(), 0) * 20_000
    assert ((counts - expected).abs() < 5 * expected.sqrt() + 5).all(), (counts, expected)
    assert len(set(buffer.sample(5).tolist())) == 5  # without replacement
    index = torch.tensor([0, 1])
    before = buffer.log_w.clone()
    buffer.adjust(index, torch.tensor([0.5, math.inf]), torch.tensor([-1.0, -2.0]))
    assert buffer.log_w[0] == before[0] + 0.5 and buffer.log_w[1] == before[1]  # a non-finite adjustment is skipped
    restored = PrioritisedBuffer(5)
    restored.load_state_dict(buffer.state_dict())
    assert torch.equal(restored.log_w, buffer.log_w) and restored.position == buffer.position
    with pytest.raises(ValueError, match="fewer than the 6 asked for"):
        buffer.sample(6)


def _fixed_ais(x: torch.Tensor, log_w: torch.Tensor):
    """An ``ais`` method that returns the same samples and weights, with the flow's log q at them."""

    def ais(self, model):
        self.ais_runs += 1
        with torch.no_grad():
            return x, log_w, model.log_prob(x)

    return ais


def test_without_the_buffer_the_loss_is_the_self_normalised_estimate(monkeypatch):
    torch.manual_seed(0)
    flow = standard_normal_flow(ScaledGaussian(0.5, 0.8, 0.0))
    x, log_w = torch.randn(8, 1, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    monkeypatch.setattr(FAB, "ais", _fixed_ais(x, log_w))
    loss = FAB(8, replay=False)(flow)
    expected = -(torch.softmax(log_w, 0) * flow.log_prob(x)).sum()
    torch.testing.assert_close(loss, expected)
    (gradient,) = torch.autograd.grad(loss, flow.q0.loc)
    (expected_gradient,) = torch.autograd.grad(expected, flow.q0.loc)
    torch.testing.assert_close(gradient, expected_gradient)


def test_buffer_steps_weight_by_the_clipped_ratio_and_move_the_weights(monkeypatch):
    torch.manual_seed(0)
    flow = standard_normal_flow(ScaledGaussian(0.5, 0.8, 0.0))
    x, log_w = torch.linspace(-2, 2, 4, dtype=torch.float64)[:, None], torch.zeros(4, dtype=torch.float64)
    monkeypatch.setattr(FAB, "ais", _fixed_ais(x, log_w))
    fab = FAB(4, replay=True, buffer_batches=3, min_buffer_batches=2, updates_per_ais=2, w_adjust_clip=1.5)
    first = fab(flow)  # fills the buffer with 2 runs of 4 samples (capacity 12): q_old = q, weights 1
    assert fab.ais_runs == 2 and fab.buffer.size == 8 and first.requires_grad
    assert fab.buffer.log_w is not None and fab.buffer.log_q is not None and fab.buffer.x is not None
    assert torch.equal(fab.buffer.log_w[:8], torch.zeros(8, dtype=torch.float64))
    with torch.no_grad():
        flow.q0.loc.fill_(0.7)  # the flow moves: q_old/q differs from 1
    torch.manual_seed(1)
    index = fab.buffer.sample(4)
    torch.manual_seed(1)
    second = fab(flow)  # the same draw as `index`; no new run in step 2
    assert fab.ais_runs == 2
    log_q = flow.log_prob(fab.buffer.x[index]).detach()
    old = standard_normal_flow().log_prob(fab.buffer.x[index]).detach()
    expected = -(torch.exp(old - log_q).clamp(max=1.5) * flow.log_prob(fab.buffer.x[index])).mean()
    torch.testing.assert_close(second, expected)
    torch.testing.assert_close(fab.buffer.log_w[index], old - log_q)
    torch.testing.assert_close(fab.buffer.log_q[index], log_q)
    fab(flow)  # step 3: a new run joins (every 2 steps)
    assert fab.ais_runs == 3 and fab.buffer.size == 12


def test_a_fab_fit_resumes_bit_for_bit(tmp_path):
    def model() -> nf.NormalizingFlow:
        torch.manual_seed(0)
        return nf.RealNVP(2, 2, hidden=8, p=nf.distributions.TwoModes(2.0, 0.1)).double()

    def fab() -> FAB:
        return FAB(16, buffer_batches=6, min_buffer_batches=2, updates_per_ais=2)

    settings = {"seed": 3, "progress": False, "device": "cpu", "compile": "off"}
    whole = model()
    expected = nf.training.fit(whole, 10, loss=fab(), **settings)
    path = tmp_path / "state.pt"
    first = model()
    nf.training.fit(first, 5, loss=fab(), checkpoint=path, checkpoint_every=5, **settings)
    resumed = model()
    result = nf.training.fit(resumed, 10, loss=fab(), resume=path, **settings)
    assert (result.loss_history == expected.loss_history).all()
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_fab_refuses_what_it_cannot_do():
    flow = nf.RealNVP(2, 2, hidden=8, p=nf.distributions.TwoModes(2.0, 0.1))
    with pytest.raises(ValueError, match="runs eagerly"):
        nf.training.fit(flow, 1, loss="fab", compile="on", progress=False)
    with pytest.raises(ValueError, match="FAB is not annealed"):
        nf.training.fit(flow, 1, loss="fab", anneal_iters=10, progress=False)
    with pytest.raises(ValueError, match="needs a target|target"):
        nf.training.fit(nf.RealNVP(2, 2, hidden=8), 1, loss="fab", progress=False)
    with pytest.raises(ValueError, match="unconditional"):
        FAB(4)(flow, context=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="min_buffer_batches"):
        FAB(4, buffer_batches=2, min_buffer_batches=3)


def test_the_command_fits_by_fab(tmp_path, capsys):
    from flowforge.cli import main

    arguments = [
        "fit",
        "--loss",
        "fab",
        "--flow",
        "realnvp",
        "--layers",
        "2",
        "--iterations",
        "6",
        "--samples-per-step",
    ]
    arguments += ["16", "--frame-every", "3", "--frame-samples", "1000", "--eval-samples", "200", "--kl-grid", "20"]
    assert main([*arguments, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert "ESS" in capsys.readouterr().out
    assert main([*arguments, "--compile", "on", "--out", str(tmp_path / "other")]) == 2
    assert "--loss fab runs AIS inside every step" in capsys.readouterr().err
