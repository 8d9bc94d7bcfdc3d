"""Training on a data set to convergence: epochs, validation, early stopping, schedules."""

import math

import numpy as np
import pytest
import torch

import flowforge as nf
from flowforge import metrics, training


def gaussian_data(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    covariance = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    return torch.randn(n, 2, generator=generator) @ torch.linalg.cholesky(covariance).T + torch.tensor([1.0, -2.0])


def test_converges_and_restores_the_best_weights():
    torch.manual_seed(0)
    data = gaussian_data(3000)
    model = nf.RealNVP(2, 4, hidden=32)
    result = training.fit_data(
        model, data[:2000], data[2000:], epochs=30, batch_size=128, lr=3e-3, seed=0, progress=False, device="cpu"
    )
    entropy = 0.5 * math.log(torch.linalg.det(2 * math.pi * math.e * torch.tensor([[1.0, 0.8], [0.8, 1.0]])).item())
    assert result.best_validation_nll < entropy + 0.08
    assert metrics.mean_nll(model, data[2000:]) == pytest.approx(result.best_validation_nll, abs=1e-5)
    assert len(result.train_nll) == len(result.validation_nll) and result.train_nll[-1] < result.train_nll[0]


def test_early_stopping_on_an_overfitting_model():
    torch.manual_seed(0)
    data = gaussian_data(1040, seed=1)
    model = nf.RealNVP(2, 6, hidden=128)  # far too large for 40 training samples
    result = training.fit_data(
        model,
        data[:40],
        data[40:],
        epochs=300,
        batch_size=40,
        lr=3e-3,
        schedule=None,
        patience=5,
        seed=0,
        progress=False,
        device="cpu",
    )
    assert result.stopped_early and len(result.validation_nll) == result.best_epoch + 6
    assert result.validation_nll[-1] > result.best_validation_nll
    assert metrics.mean_nll(model, data[40:]) == pytest.approx(result.best_validation_nll, abs=1e-5)


@pytest.mark.parametrize("schedule", ["cosine", "plateau", None])
def test_schedules_and_clipping_run(schedule):
    data = gaussian_data(600)
    result = training.fit_data(
        nf.MAF(2, 2, hidden=16),
        data[:500],
        data[500:],
        epochs=3,
        batch_size=100,
        schedule=schedule,
        clip_grad_norm=0.1,
        progress=False,
        device="cpu",
    )
    assert np.isfinite(result.train_nll).all() and len(result.validation_nll) == 3


def test_without_validation_data_keeps_the_last_weights():
    result = training.fit_data(nf.MAF(2, 2, hidden=16), gaussian_data(300), epochs=4, progress=False, device="cpu")
    assert result.validation_nll.size == 0 and result.best_epoch == 3 and not result.stopped_early


def test_divergence_restores_and_raises():
    class Exploding(nf.flows.Flow):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.zeros(()))
            self.calls = 0

        def forward(self, z):
            return z, z.new_zeros(z.shape[0])

        def inverse(self, x):
            self.calls += 1
            bad = torch.nan if self.calls > 3 else 0.0
            return x * torch.exp(self.scale), (2 * self.scale + bad).expand(x.shape[0])

    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), [Exploding()])
    with pytest.raises(training.TrainingDiverged, match="training NLL became nan in epoch"):
        training.fit_data(model, gaussian_data(100), epochs=10, batch_size=50, progress=False, device="cpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs must be a positive int"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"patience": 0}, "patience must be positive"),
        ({"train_data": torch.tensor([[0.0, torch.nan]])}, "train_data must be a finite"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {"train_data": gaussian_data(10), "progress": False, "device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=message):
        training.fit_data(nf.MAF(2, 1, hidden=8), **arguments)
