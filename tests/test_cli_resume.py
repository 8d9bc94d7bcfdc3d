"""``--resume RUN``: a run of ``fit``, ``fit --data`` or ``vae`` stopped by SIGINT, SIGTERM or SIGHUP
keeps its weights (``model.pt``) and its training state (``checkpoint.pt``), and the same command with
``--resume`` ends it with the files an uninterrupted run writes: the same weights, numbers and
animation. The signal is sent by the process to itself from inside training (a frame of the animation,
the end of an epoch), so that where it lands is known; the command's handlers hold it to the next step.
A resumed run keeps its settings and its data: anything else is refused in one line."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from flowforge import plot
from flowforge.cli import main
from flowforge.cli.runs import CHECKPOINT, CONFIG, TRAINING_STATE, load_run
from flowforge.training.epochs import _EpochRun

TIMES = {"iterations_per_second", "train_time_s", "wall_time_s", "compile_time_s", "wall_time", "epoch_time_s"}
"""Entries of metrics.json that measure time, and differ between two runs of the same job."""

TARGET = ["fit", "--iterations", "300", "--anneal", "100", "--frame-every", "50", "--frame-samples", "4000",
          "--grid-size", "40", "--kl-grid", "40", "--eval-samples", "1000", "--layers", "4", "--compile", "off",
          "--no-progress"]  # fmt: skip
TABLE = ["fit", "--data", "two-moons", "--num-data", "600", "--flow", "realnvp", "--layers", "2", "--hidden", "16",
         "--epochs", "6", "--batch-size", "64", "--no-progress"]  # fmt: skip
VAE = ["vae", "--epochs", "4", "--hidden", "16", "--latent", "2", "--layers", "2", "--is-samples", "5",
       "--warmup", "2", "--batch-size", "200", "--no-progress"]  # fmt: skip
SIGNALS = [name for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]


def _config(folder):
    return json.loads((folder / CONFIG).read_text())


def _metrics(folder):
    numbers = json.loads((folder / "metrics.json").read_text())
    return {key: value for key, value in numbers.items() if key not in TIMES}


def _weights(folder):
    return torch.load(folder / CHECKPOINT, weights_only=True)["state_dict"]


def _same_weights(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def _signal_at_frame(monkeypatch, number, iteration):
    """Make the animation's frame at ``iteration`` send signal ``number`` to this process."""
    record = plot.HistogramFrames.__call__

    def frame(self, at, model):
        record(self, at, model)
        if at == iteration:
            os.kill(os.getpid(), number)

    monkeypatch.setattr(plot.HistogramFrames, "__call__", frame)


def _signal_at_epoch(monkeypatch, number, epoch):
    """Make the end of epoch ``epoch`` (1-based) of a data or VAE fit send signal ``number`` to this process."""
    end_epoch, ended = _EpochRun.end_epoch, []

    def end(self, patience):
        ended.append(True)
        if len(ended) == epoch:
            os.kill(os.getpid(), number)
        return end_epoch(self, patience)

    monkeypatch.setattr(_EpochRun, "end_epoch", end)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each job run once to its end: {name: folder}."""
    folders = {}
    for name, argv in (("target", TARGET), ("table", TABLE), ("vae", VAE)):
        folders[name] = tmp_path_factory.mktemp(name) / "run"
        assert main([*argv, "--out", str(folders[name])]) == 0
    return folders


@pytest.mark.parametrize("name", SIGNALS)
def test_a_target_fit_stopped_by_a_signal_resumes_to_the_run_it_would_have_been(
    name, uninterrupted, tmp_path, capsys, monkeypatch
):
    number = getattr(signal, name)
    with monkeypatch.context() as patch:
        _signal_at_frame(patch, number, 150)
        folder = tmp_path / "run"
        assert main([*TARGET, "--out", str(folder)]) == 128 + number
    assert capsys.readouterr().err.endswith(f"`flowforge fit --resume {folder}`\n")
    assert _config(folder)["status"] == "interrupted"
    assert (folder / TRAINING_STATE).is_file()
    assert not (folder / "training.gif").exists()
    load_run(folder)  # model.pt holds the weights at step 150
    assert main(["fit", "--resume", str(folder)]) == 0
    expected = uninterrupted["target"]
    assert _metrics(folder) == _metrics(expected)
    assert _same_weights(_weights(folder), _weights(expected))
    for picture in ("training.gif", "learned.png", "comparison.png", "loss.png", "initial.png"):
        assert (folder / picture).read_bytes() == (expected / picture).read_bytes(), picture


def test_a_data_fit_stopped_by_sigint_resumes_to_the_run_it_would_have_been(uninterrupted, tmp_path, capsys,
                                                                            monkeypatch):  # fmt: skip
    folder = tmp_path / "run"
    with monkeypatch.context() as patch:
        _signal_at_epoch(patch, signal.SIGINT, 3)
        assert main([*TABLE, "--out", str(folder)]) == 130
    assert "`flowforge fit --resume" in capsys.readouterr().err
    expected = uninterrupted["table"]
    partial = load_run(folder)  # the best weights so far, with the whitening layer
    assert any("whitening" in key.lower() or "cholesky" in key for key in partial.model.state_dict())
    assert main(["fit", "--resume", str(folder)]) == 0
    assert _metrics(folder) == _metrics(expected)
    assert _same_weights(_weights(folder), _weights(expected))
    assert (folder / "samples.csv").read_bytes() == (expected / "samples.csv").read_bytes()


def test_a_vae_stopped_by_sighup_resumes_to_the_run_it_would_have_been(uninterrupted, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    with monkeypatch.context() as patch:
        _signal_at_epoch(patch, signal.SIGHUP, 2)
        assert main([*VAE, "--out", str(folder)]) == 129
    assert "`flowforge vae --resume" in capsys.readouterr().err
    assert main(["vae", "--resume", str(folder)]) == 0
    expected = uninterrupted["vae"]
    assert _metrics(folder) == _metrics(expected)
    assert _same_weights(_weights(folder), _weights(expected))


def test_an_interrupted_demo_resumes_from_its_default_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = TARGET[1:]  # demo takes the same options as a target fit
    with monkeypatch.context() as patch:
        _signal_at_frame(patch, signal.SIGTERM, 100)
        assert main(["demo", *small]) == 143
    assert "checkpoint saved in flowforge-demo" in capsys.readouterr().err
    assert main(["demo", "--resume", "flowforge-demo"]) == 0
    assert _config(tmp_path / "flowforge-demo")["status"] == "complete"


@pytest.fixture
def stopped_table(tmp_path, monkeypatch):
    """A data fit of a CSV file in ``tmp_path/project``, started there and stopped by SIGTERM after one epoch."""
    project = tmp_path / "project"
    project.mkdir()
    rows = np.random.default_rng(0).normal(size=(300, 2))
    np.savetxt(project / "table.csv", rows, delimiter=",", header="a,b", comments="")
    monkeypatch.chdir(project)
    with monkeypatch.context() as patch:
        _signal_at_epoch(patch, signal.SIGTERM, 1)
        argv = ["fit", "--data", "table.csv", "--flow", "realnvp", "--layers", "2", "--hidden", "8", "--epochs", "3",
                "--no-progress", "--out", "run"]  # fmt: skip
        assert main(argv) == 143
    return project


def test_a_resumed_run_reads_a_relative_input_where_it_was_started(stopped_table, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--resume", "project/run"]) == 0
    assert _config(stopped_table / "run")["status"] == "complete"


def test_a_run_whose_data_changed_is_not_resumed(stopped_table, capsys):
    rows = np.random.default_rng(1).normal(size=(300, 2))
    np.savetxt(stopped_table / "table.csv", rows, delimiter=",", header="a,b", comments="")
    capsys.readouterr()
    assert main(["fit", "--resume", "run"]) == 2
    assert capsys.readouterr().err == (
        "flowforge: error: the run in 'run' cannot be resumed: its data_sha256 changed since it started (its data "
        "file was modified)\n"
    )
    assert _config(stopped_table / "run")["status"] == "interrupted"


def test_resume_refuses_what_it_cannot_continue(stopped_table, uninterrupted, capsys):
    vae_run, target_run = str(uninterrupted["vae"]), str(uninterrupted["target"])
    cases = {
        ("fit", "--resume", "run", "--epochs", "9"): "--resume continues a run with the options it was started "
        "with; drop --epochs (to change them, start a new run)",
        ("fit", "--resume", "run", "--out", "elsewhere"): "drop --out",
        ("fit", "--resume", "run", "--overwrite"): "drop --overwrite",
        ("vae", "--resume", "run"): "the run in 'run' was started by `flowforge fit`; continue it with "
        "`flowforge fit --resume run`",
        ("fit", "--resume", vae_run): f"the run in {vae_run!r} was started by `flowforge vae`",
        ("fit", "--resume", target_run): f"the run in {target_run!r} is complete; nothing to resume",
        ("fit", "--resume", "nowhere"): "'nowhere' is not a run folder",
        ("fit", "--target", "smiley"): "fit needs --out DIR, the run folder to write (or --resume RUN)",
    }
    for argv, message in cases.items():
        assert main(list(argv)) == 2, argv
        assert re.search(re.escape(message), capsys.readouterr().err), argv
    config = _config(stopped_table / "run")
    del config["invocation"]  # as the library's own runs, or a run written before --resume
    (stopped_table / "run" / CONFIG).write_text(json.dumps(config))
    assert main(["fit", "--resume", "run"]) == 2
    assert "does not record the command that started it" in capsys.readouterr().err


def test_histogram_frames_render_as_before_and_survive_a_checkpoint():
    counts = np.random.default_rng(0).poisson(2.0, (30, 30))
    counts[3, 4] = 0
    import matplotlib

    normalised = counts.T[::-1] / counts.max()
    direct = (matplotlib.colormaps["viridis"](normalised)[..., :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(plot.indexed_frame(plot.colour_indices(counts), "", scale=1)[20:], direct[20:])
    frames = plot.HistogramFrames(100, np.array([[-1.0, 1.0], [-1.0, 1.0]]), 30)
    frames.add(counts, "iteration 0")
    frames.add(counts * 2, "iteration 5")
    restored = plot.HistogramFrames(100, frames.bounds, 30)
    restored.load_state_dict(frames.state_dict())
    assert restored.labels == frames.labels and len(restored) == 2
    assert all(np.array_equal(a, b) for a, b in zip(restored.rgb(), frames.rgb(), strict=True))
    with pytest.raises(ValueError, match=r"expected \(frames, 20, 20\)"):
        plot.HistogramFrames(100, frames.bounds, 20).load_state_dict(frames.state_dict())


def test_a_fit_killed_from_outside_resumes_to_the_run_it_would_have_been(tmp_path, capsys):
    """SIGTERM sent by another process (as `timeout` or a batch scheduler sends it) at a time not chosen
    by the run, while it trains."""
    argv = [*TARGET, "--iterations", "2000", "--frame-every", "500", "--layers", "2"]
    killed, expected = tmp_path / "killed", tmp_path / "expected"
    child = subprocess.Popen(
        [sys.executable, "-m", "flowforge", *argv, "--out", str(killed)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (killed / TRAINING_STATE).exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the first checkpoint is written at step 1000 of 2000
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    assert stderr.endswith(f"`flowforge fit --resume {killed}`\n")
    assert main(["fit", "--resume", str(killed)]) == 0
    assert main([*argv, "--out", str(expected)]) == 0
    assert _metrics(killed) == _metrics(expected)
    assert _same_weights(_weights(killed), _weights(expected))
    assert (killed / "training.gif").read_bytes() == (expected / "training.gif").read_bytes()


def test_a_damaged_or_foreign_training_state_is_refused_and_the_run_left_as_it_was(stopped_table, uninterrupted,
                                                                                   capsys):  # fmt: skip
    state = stopped_table / "run" / TRAINING_STATE
    original = state.read_bytes()
    target_state = (uninterrupted["target"] / TRAINING_STATE).read_bytes()
    cases = {
        b"not a training state": "is not a flowforge training state (torch cannot read it",
        original[: len(original) // 2]: "is not a flowforge training state (torch cannot read it",
        target_state: "was written by fit, not by fit_data; resume it with fit",
    }
    capsys.readouterr()
    for content, message in cases.items():
        state.write_bytes(content)
        assert main(["fit", "--resume", "run"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("flowforge: error: cannot resume the run: the resume file ") and message in err, err
        assert err.count("\n") == 1 and _config(stopped_table / "run")["status"] == "interrupted"
    state.write_bytes(original)
    assert main(["fit", "--resume", "run", "--device", "cpu", "--no-progress"]) == 0


def test_only_what_cannot_change_a_run_may_be_typed_beside_resume(stopped_table, capsys):
    capsys.readouterr()
    for typed in (["--compile", "auto"], ["--seed", "0"], ["--flow=realnvp"], ["--epoch", "3"]):  # defaults too
        assert main(["fit", "--resume", "run", *typed]) == 2
        flag = typed[0].split("=")[0].replace("--epoch", "--epochs")
        assert f"drop {flag} (to change them, start a new run)" in capsys.readouterr().err
    config = _config(stopped_table / "run")
    config["invocation"]["argv"] = [*config["invocation"]["argv"], "--bogus"]
    (stopped_table / "run" / CONFIG).write_text(json.dumps(config))
    assert main(["fit", "--resume", "run"]) == 2
    assert re.search(r"the command line it records \(`flowforge fit --data table\.csv .* --bogus`\) does not parse "
                     r"in this flowforge: unrecognized arguments: --bogus\n", capsys.readouterr().err)  # fmt: skip
    config["invocation"]["argv"] = ["fit", "--help"]
    (stopped_table / "run" / CONFIG).write_text(json.dumps(config))
    assert main(["fit", "--resume", "run"]) == 2
    assert "records the command line `flowforge fit --help`, which starts no run" in capsys.readouterr().err


def test_a_signal_during_the_pictures_keeps_the_model_and_says_how_to_resume(uninterrupted, tmp_path, capsys,
                                                                             monkeypatch):  # fmt: skip
    folder = tmp_path / "run"
    save_gif = plot.save_gif

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the command raises at once outside the training loop
        return save_gif(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(plot, "save_gif", interrupted)
        assert main([*TARGET, "--out", str(folder)]) == 143
    assert capsys.readouterr().err.endswith(f"`flowforge fit --resume {folder}`\n")
    assert _same_weights(_weights(folder), _weights(uninterrupted["target"]))
    assert main(["fit", "--resume", str(folder)]) == 0
    assert _metrics(folder) == _metrics(uninterrupted["target"])
