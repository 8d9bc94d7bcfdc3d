"""Optional packages (the ``cli`` and ``data`` extras): what happens when they are not installed.

A missing package is simulated by ``sys.modules[name] = None``, which makes ``import name`` raise
ImportError as if it were not installed; the module under test is imported afresh.
"""

import importlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from flowforge import datasets
from flowforge.progress import SilentBar, progress_bar


def block(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``import name`` fail for each of ``names`` and their already imported submodules."""
    for name in [module for module in list(sys.modules) if module.split(".")[0] in names] + list(names):
        monkeypatch.setitem(sys.modules, name, None)


def fresh_import(monkeypatch: pytest.MonkeyPatch, module: str):
    if module in sys.modules:
        monkeypatch.delitem(sys.modules, module)
    return importlib.import_module(module)


@pytest.mark.parametrize("missing", ["matplotlib", "PIL"])
def test_pictures_without_matplotlib_or_pillow_say_which_extra_to_install(monkeypatch, tmp_path, missing):
    block(monkeypatch, missing)
    plot = fresh_import(monkeypatch, "flowforge.plot")  # the module imports; its writers refuse
    counts = plot.histogram2d(torch.zeros(3, 2), ((-1, 1), (-1, 1)), 4)  # pure torch: still works
    assert counts.sum() == 3
    writers = [
        lambda: plot.require(),
        lambda: plot.save_image(tmp_path / "a.png", counts, ((-1, 1), (-1, 1)), "title"),
        lambda: plot.save_loss_curve(tmp_path / "b.png", np.ones(5)),
        lambda: plot.save_epoch_curves(tmp_path / "c.png", {"train": np.ones(3)}),
        lambda: plot.save_image_grid(tmp_path / "d.png", np.zeros((2, 1, 4, 4)), 2, "title"),
        lambda: plot.save_comparison(tmp_path / "e.png", [("a", counts)], ((-1, 1), (-1, 1))),
        lambda: plot.histogram_frame(counts, "label"),
        lambda: plot.save_gif(tmp_path / "f.gif", [np.zeros((4, 4, 3), dtype=np.uint8)]),
        lambda: plot.save_pair_plot(tmp_path / "g.png", np.zeros((5, 2)), np.zeros((5, 2))),
    ]
    for write in writers:
        with pytest.raises(ImportError, match=r"matplotlib and Pillow .*pip install \"flowforge\[cli\]\"") as caught:
            write()
        assert missing in str(caught.value) and caught.value.name == missing
        assert "\n" not in str(caught.value)  # one line, as the command prints it
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("load", [datasets.load_digits, lambda: datasets.load_real_table("wine")])
def test_bundled_data_without_scikit_learn_says_which_extra_to_install(monkeypatch, load):
    block(monkeypatch, "sklearn")
    with pytest.raises(ImportError, match=r"scikit-learn: pip install \"flowforge\[data\]\"") as caught:
        load()
    assert "\n" not in str(caught.value)


def test_toy_data_and_files_need_no_scikit_learn(monkeypatch, tmp_path):
    block(monkeypatch, "sklearn")
    assert datasets.two_moons(10, seed=0).shape == (10, 2)
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    table, names = datasets.load_table(path)
    assert table.shape == (2, 2) and names == ["a", "b"]


def test_progress_bar_without_tqdm_is_silent_and_keeps_the_loop_going(monkeypatch, capsys):
    block(monkeypatch, "tqdm")
    bar = progress_bar(total=3, unit="it", dynamic_ncols=True)
    assert isinstance(bar, SilentBar)
    for _ in range(3):
        bar.set_postfix(loss="0.1", refresh=False)
        bar.update(1)
    bar.close()
    assert bar.n == 3
    epochs = progress_bar(iterable=range(4), unit="epoch")
    assert list(epochs) == [0, 1, 2, 3] and epochs.n == 4
    with progress_bar(total=2) as bar:
        bar.update(2)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_uses_tqdm_when_installed_and_enabled():
    tqdm = pytest.importorskip("tqdm.auto").tqdm
    bar = progress_bar(total=2, disable=True)
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress_bar(iterable=range(2), enabled=False), SilentBar)


def test_silent_bar_without_an_iterable_refuses_iteration():
    with pytest.raises(TypeError, match="without an iterable"):
        iter(SilentBar(total=3)).__next__()


def test_the_library_imports_and_samples_without_the_optional_packages():
    script = textwrap.dedent(
        """
        import sys
        for name in ("matplotlib", "PIL", "tqdm", "sklearn"):
            sys.modules[name] = None
        import flowforge as nf
        from flowforge.progress import SilentBar, progress_bar
        model = nf.PlanarFlow(2, 2)
        x, log_q = model.sample(5)
        assert log_q.shape == (5,)
        assert isinstance(progress_bar(total=1), SilentBar)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
