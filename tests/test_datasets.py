"""Toy data sets: shapes, seeds, and the geometry they promise."""

import pytest
import torch

import flowforge as nf
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


@pytest.mark.parametrize("name", sorted(datasets.TOY_DATA))
def test_every_toy_set_is_seeded_finite_and_in_a_plotting_box(name):
    make = datasets.TOY_DATA[name]
    a, b = make(3000, seed=7), make(3000, seed=7)
    torch.testing.assert_close(a, b)
    assert a.shape == (3000, 2) and torch.isfinite(a).all()
    assert a.abs().max() < 6, name
    assert not torch.allclose(a, make(3000, seed=8))
    with pytest.raises(ValueError):
        make(0)


def test_toy_set_geometry():
    rings = datasets.rings(4000, noise=0.0, seed=0).norm(dim=1)
    assert set(torch.round(rings * 3 / 2).long().tolist()) == {1, 2, 3, 4}
    circles = datasets.circles(4000, noise=0.0, seed=0).norm(dim=1)
    torch.testing.assert_close(
        torch.sort(torch.unique(torch.round(circles, decimals=4))).values, torch.tensor([1.5, 3.0])
    )
    board = datasets.checkerboard(4000, seed=0)
    cells = (torch.floor(board[:, 0] / 2) + torch.floor(board[:, 1] / 2)) % 2
    assert cells.unique().numel() == 1  # only one colour of squares is populated


def test_bundled_digits_need_no_download():
    images, labels = nf.datasets.load_digits()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == nf.datasets.DIGITS_LEVELS - 1
    assert (images == images.round()).all() and set(labels.tolist()) == set(range(10))


@pytest.mark.parametrize(("name", "shape"), [("wine", (178, 13)), ("breast-cancer", (569, 30))])
def test_bundled_real_tables(name, shape):
    table, names = nf.datasets.load_real_table(name)
    assert table.shape == shape and len(names) == shape[1] and torch.isfinite(table).all()


def test_unknown_real_table_is_an_error():
    with pytest.raises(ValueError, match="unknown real data set 'iris'"):
        nf.datasets.load_real_table("iris")


def test_split_cuts_paired_tensors_with_one_permutation():
    data = torch.arange(50.0).unsqueeze(1)
    labels = torch.arange(50)
    parts = nf.datasets.split((data, labels), (0.6, 0.2, 0.2), seed=3)
    assert [len(part[0]) for part in parts] == [30, 10, 10]
    for rows, row_labels in parts:
        assert (rows[:, 0].long() == row_labels).all()
    assert torch.equal(parts[0][0], nf.datasets.split(data, (0.6, 0.2, 0.2), seed=3)[0])
    with pytest.raises(ValueError, match="same number of rows"):
        nf.datasets.split((data, labels[:10]))
