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
