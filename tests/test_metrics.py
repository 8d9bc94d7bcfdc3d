"""ESS, log Z and the grid KL against cases with known answers."""

import math

import pytest
import torch

import flowforge as nf
from flowforge import metrics


def test_effective_sample_size_extremes():
    assert float(metrics.effective_sample_size(torch.zeros(100))) == pytest.approx(1.0)
    log_w = torch.full((100,), -50.0)
    log_w[3] = 0.0
    assert float(metrics.effective_sample_size(log_w)) == pytest.approx(0.01, rel=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        metrics.effective_sample_size(torch.tensor([0.0, torch.nan]))


def test_log_normalizer_of_constant_weights():
    estimate, error = metrics.log_normalizer(torch.full((50,), 2.5))
    assert float(estimate) == pytest.approx(2.5) and float(error) == pytest.approx(0.0, abs=1e-6)


class ShiftedGaussian(nf.distributions.Target):
    """N(μ, I) in 2-D, unnormalised by exp(3)."""

    def __init__(self, shift):
        super().__init__(((-9.0, 9.0), (-9.0, 9.0)), 3.0)
        self.shift = shift

    def log_prob(self, z):
        return 3.0 - 0.5 * (z - z.new_tensor(self.shift)).square().sum(1) - math.log(2 * math.pi)


@pytest.mark.parametrize("shift", [(0.0, 0.0), (1.0, -0.5)])
def test_grid_kl_and_summary_against_closed_form(shift):
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), [], ShiftedGaussian(shift)).double()
    exact = 0.5 * (shift[0] ** 2 + shift[1] ** 2)
    result = metrics.grid_kl(model, grid_size=400)
    assert result["kl"] == pytest.approx(exact, abs=1e-6)
    assert result["log_z_grid"] == pytest.approx(3.0, abs=1e-6)
    assert result["kl_grid_error"] < 1e-4 and abs(result["q_mass_outside"]) < 1e-6
    summary = metrics.summary(model, num_samples=50_000, grid_size=200)
    assert summary["kl_monte_carlo"] == pytest.approx(exact, abs=5 * summary["kl_monte_carlo_standard_error"] + 1e-9)
    assert summary["log_z_estimate"] == pytest.approx(3.0, abs=5 * summary["log_z_standard_error"] + 1e-9)
    if shift == (0.0, 0.0):
        assert summary["ess"] == pytest.approx(1.0)


def test_grid_kl_needs_an_even_grid():
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), [], ShiftedGaussian((0.0, 0.0)))
    with pytest.raises(ValueError, match="even"):
        metrics.grid_kl(model, grid_size=101)


def test_grid_kl_problems_say_why_a_grid_kl_is_not_valid():
    good = {"kl": 0.2, "kl_grid_error": 1e-4, "q_mass_outside": 1e-5}
    assert metrics.grid_kl_problems(good) == []
    outside = metrics.grid_kl_problems({**good, "kl": 0.0, "q_mass_outside": 1.0}, samples_outside=1.0)
    assert outside == ["100% of the flow's samples lie outside the target's box"]
    unresolved = metrics.grid_kl_problems({**good, "kl": 0.0, "q_mass_outside": 1.0}, samples_outside=0.0)
    assert unresolved == ["the grid holds 0 of the flow's mass, not 1: the grid does not resolve the flow"]
    coarse = metrics.grid_kl_problems({**good, "q_mass_outside": -0.2})
    assert coarse == ["the grid holds 1.2 of the flow's mass, not 1: the grid does not resolve the flow"]
    assert "the grid error 0.1 is large" in metrics.grid_kl_problems({**good, "kl_grid_error": 0.1})[0]
    assert "not finite" in metrics.grid_kl_problems({**good, "kl": math.nan})[0]


def test_importance_problems():
    assert metrics.importance_problems(torch.zeros(100)) == []
    one = torch.full((100,), -50.0)
    one[0] = 0.0
    assert metrics.importance_problems(one) == ["the importance weights rest on 1.0 effective samples of 100"]
    invalid = metrics.importance_problems(torch.tensor([0.0, math.nan, math.inf]))
    assert "2 of 3 log-weights are NaN or +inf" in invalid[0]
    assert "zero at all 2" in metrics.importance_problems(torch.full((2,), -math.inf))[0]


def test_summary_flags_a_flow_far_outside_the_box():
    # the flow sits at (1e4, 1e4), the target's box is [-9, 9]^2: the grid sees none of it and gives KL = 0
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), [], ShiftedGaussian((0.0, 0.0)))
    model.q0.loc.fill_(1e4)
    summary = metrics.summary(model.double(), num_samples=2000, grid_size=20)
    assert summary["kl"] == 0 and summary["kl_valid"] is False and summary["q_samples_outside"] == 1.0
    assert "KL on grid: 100% of the flow's samples lie outside the target's box" in summary["warnings"]
    assert summary["log_z_valid"] is False and summary["kl_monte_carlo"] > 1e7
