"""Toy data sets: shapes, seeds, and the geometry they promise."""

import pytest
import torch

from flowforge import datasets


def test_two_moons_is_reproducible_and_shaped():
    a, b = datasets.two_moons(1000, seed=3), datasets.two_moons(1000, seed=3)
    torch.testing.assert_close(a, b)
    assert a.shape == (1000, 2) and a.abs().max() < 4
    clean = datasets.two_moons(2000, noise=0.0, seed=1)
    upper = clean[:, 1] > clean[:, 1].median()
    assert 0.3 < upper.float().mean() < 0.7


def test_eight_gaussians_modes_sit_on_the_circle():
    x = datasets.eight_gaussians(8000, radius=2.0, scale=0.01, seed=0)
    torch.testing.assert_close(x.norm(dim=1), torch.full((8000,), 2.0), atol=0.05, rtol=0)
    angles = torch.round(torch.atan2(x[:, 1], x[:, 0]) / (torch.pi / 4)) % 8
    counts = torch.bincount(angles.long(), minlength=8)
    assert counts.min() > 800


def test_bad_arguments():
    with pytest.raises(ValueError):
        datasets.two_moons(0)
    with pytest.raises(ValueError):
        datasets.eight_gaussians(10, scale=0)
