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


def test_histogram_cells_are_closed_below_and_open_above_and_skip_non_finite_points():
    inf, nan = float("inf"), float("nan")
    samples = torch.tensor([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [nan, 0.0], [0.0, -inf], [inf, nan]])
    np.testing.assert_array_equal(plot.histogram2d(samples, ((-1.0, 1.0), (-1.0, 1.0)), 2), [[1, 0], [0, 1]])
    points = torch.rand(1000, 2)  # float32, and 4100² cells: flat indices past float32's exact integers
    many = plot.histogram2d(points, ((0.0, 1.0), (0.0, 1.0)), 4100)
    cells = np.floor(points.double().numpy() * 4100).astype(int)
    expected = np.zeros((4100, 4100), dtype=np.int64)
    np.add.at(expected, (cells[:, 0], cells[:, 1]), 1)
    np.testing.assert_array_equal(many, expected)


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


@pytest.mark.parametrize("act", ["tanh", "leaky_relu"])
def test_planar_column_map_is_the_forward_map(act):
    torch.manual_seed(0)
    layer = nf.flows.Planar(3, act=act).double()
    with torch.no_grad():
        layer.parameters_uwb.normal_()
    z = torch.randn(257, 3, dtype=torch.float64)
    columns = z.t().contiguous()
    layer.column_map()(columns)
    torch.testing.assert_close(columns.t(), layer(z)[0], rtol=0, atol=1e-13)


def test_the_column_fast_path_draws_the_same_points_from_the_same_random_numbers(monkeypatch):
    torch.manual_seed(0)
    model = nf.presets.PlanarFlow(2, 16, p=nf.distributions.TwoModes(2.0, 0.1))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    bounds, count = model.p.bounds.tolist(), 3 * 2**15 + 5  # several chunks and blocks, and a short one
    assert plot._column_maps(model) is not None
    torch.manual_seed(1)
    fast = plot.sample_histogram(model, count, bounds, 50, chunk=2**16)
    fast_next = torch.rand(3)
    monkeypatch.setattr(plot, "_column_maps", lambda model: None)  # the generic path: model.sample
    torch.manual_seed(1)
    generic = plot.sample_histogram(model, count, bounds, 50, chunk=2**16)
    assert torch.equal(torch.rand(3), fast_next)  # the same random stream, used up to the same point
    assert fast.sum() == generic.sum() == count and np.abs(fast - generic).sum() <= 4  # a point on a cell edge
    monkeypatch.undo()
    with_radial = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), [nf.flows.Planar(2), nf.flows.Radial(2)])
    assert plot._column_maps(with_radial) is None  # a layer without column_map: the generic path


def test_thread_choice_tries_each_count_then_keeps_the_faster_and_reprobes():
    choice = plot.ThreadChoice([1, 2])
    assert choice.choose() == 1
    choice.record(1, 0.5)
    assert choice.choose() == 2
    choice.record(2, 0.1)
    picks = []
    for _ in range(2 * plot.REPROBE_EVERY):
        picks.append(choice.choose())
        choice.record(picks[-1], 0.5 if picks[-1] == 1 else 0.1)
    assert picks.count(1) == 2 and picks.count(2) == 2 * plot.REPROBE_EVERY - 2
    for _ in range(3):  # the machine got busy: two threads now take longer
        choice.record(2, 2.0)
    assert choice.choose() == 1
    assert plot.ThreadChoice([1, 1]).times.keys() == {1}


def test_picture_threads_restores_torchs_setting(monkeypatch):
    before = torch.get_num_threads()
    with plot.picture_threads(("test", 1)):
        assert torch.get_num_threads() == 1  # an untried kind of work starts with one thread
    assert torch.get_num_threads() == before
    monkeypatch.setattr(plot, "PICTURE_THREADS", 1)
    with plot.picture_threads(("test", 2)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_fast_path_samples_a_tempered_normflows_base_at_its_temperature(monkeypatch):
    from flowforge.compat.normflows.distributions.base import DiagGaussian as NormflowsDiagGaussian

    torch.manual_seed(0)
    base = NormflowsDiagGaussian(2)
    base.temperature = 3.0  # normflows' annealed sampling: σ becomes 3σ
    model = nf.NormalizingFlow(base, [nf.flows.Planar(2) for _ in range(3)])
    bounds = ((-4.0, 4.0), (-4.0, 4.0))
    assert plot._column_maps(model) is not None
    torch.manual_seed(1)
    fast = plot.sample_histogram(model, 20000, bounds, 40)
    monkeypatch.setattr(plot, "_column_maps", lambda model: None)
    torch.manual_seed(1)
    generic = plot.sample_histogram(model, 20000, bounds, 40)
    assert fast.sum() == generic.sum() < 19000 and np.abs(fast - generic).sum() <= 4  # many points fall outside


def test_half_precision_points_are_binned_like_their_float32_values():
    points = (torch.rand(5000, 2) * 2 - 1).half()
    bounds = ((-1.0, 1.0), (-1.0, 1.0))
    np.testing.assert_array_equal(plot.histogram2d(points, bounds, 100), plot.histogram2d(points.float(), bounds, 100))


def test_histogram_bounds_must_be_finite_intervals():
    for bounds in (((0.0, 0.0), (-1.0, 1.0)), ((-1.0, 1.0), (1.0, -1.0)), ((-1.0, float("inf")), (-1.0, 1.0))):
        with pytest.raises(ValueError, match="finite intervals"):
            plot.histogram2d(torch.zeros(3, 2), bounds, 4)
