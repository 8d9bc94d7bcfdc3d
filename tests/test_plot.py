"""Pictures: histogram counts, atomic writes, animated GIFs."""

import numpy as np
import pytest
import torch
from PIL import Image

import flowforge as nf
from flowforge import plot


def test_histogram_counts_points_in_their_cells():
    samples = torch.tensor([[-0.9, -0.9], [0.9, 0.9], [0.9, 0.8], [5.0, 0.0]])
    counts = plot.histogram2d(samples, ((-1.0, 1.0), (-1.0, 1.0)), 2)
    np.testing.assert_array_equal(counts, [[1, 0], [0, 2]])


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError):
        with plot.atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_gif_has_every_frame(tmp_path):
    frames = [plot.histogram_frame(np.random.poisson(3.0, (20, 20)), f"iteration {i}") for i in range(5)]
    plot.save_gif(tmp_path / "a.gif", frames)
    with Image.open(tmp_path / "a.gif") as image:
        assert image.n_frames == 5 and image.size == (40, 40)


def test_pictures_are_written(tmp_path):
    image = np.random.rand(10, 10)
    bounds = ((-1.0, 1.0), (-2.0, 2.0))
    plot.save_image(tmp_path / "a.png", image, bounds, "a")
    plot.save_loss_curve(tmp_path / "b.png", np.random.randn(500))
    plot.save_comparison(tmp_path / "c.png", [("x", image), ("y", image)], bounds)
    for name in ("a.png", "b.png", "c.png"):
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG"


def test_pair_plot(tmp_path):
    data, samples = np.random.randn(500, 3), np.random.randn(400, 3) + 1
    plot.save_pair_plot(tmp_path / "pairs.png", data, samples, names=["a", "b", "c"])
    with Image.open(tmp_path / "pairs.png") as picture:
        assert picture.format == "PNG"
    with pytest.raises(ValueError, match="equal columns"):
        plot.save_pair_plot(tmp_path / "x.png", data, samples[:, :2])


def test_sample_histogram_draws_in_chunks_without_autograd():
    model = nf.presets.PlanarFlow(2, 2)
    counts = plot.sample_histogram(model, 1000, ((-50.0, 50.0), (-50.0, 50.0)), 10, chunk=300)
    assert counts.shape == (10, 10) and counts.sum() == 1000


def test_epoch_curves_of_a_run_with_no_finished_epoch_draw_without_a_warning(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned "No artists with labels found to put in legend"
        plot.save_epoch_curves(tmp_path / "loss.png", {"training": np.array([]), "validation": np.array([])})
    assert (tmp_path / "loss.png").is_file()
