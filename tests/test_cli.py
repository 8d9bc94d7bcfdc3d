"""The flowforge command: a short fit end to end, sampling a run, and one-line errors."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from flowforge.cli import main
from flowforge.cli.runs import load_run
from flowforge.distributions.targets import TARGETS
from flowforge.presets import PRESETS

SHORT = ["--iterations", "300", "--anneal", "150", "--frame-every", "100", "--frame-samples", "4096",
         "--eval-samples", "2000", "--kl-grid", "100", "--grid-size", "50", "--no-progress"]  # fmt: skip
RUN_FILES = {
    "config.json",
    "target.png",
    "initial.png",
    "training.gif",
    "loss.png",
    "learned.png",
    "comparison.png",
    "metrics.json",
    "model.pt",
}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "two-modes"
    assert main(["fit", "--target", "two-modes", "--flow", "planar", "--layers", "4", *SHORT, "--out", str(out)]) == 0
    return out


def test_fit_writes_a_complete_run_folder(short_run):
    assert RUN_FILES <= {p.name for p in short_run.iterdir()}
    assert not [p for p in short_run.iterdir() if p.name.startswith(".")]
    metrics = json.loads((short_run / "metrics.json").read_text())
    for key in (
        "kl",
        "kl_grid_error",
        "ess",
        "log_z_estimate",
        "iterations_per_second",
        "wall_time_s",
        "compile_time_s",
    ):
        assert np.isfinite(metrics[key]), key
    assert metrics["iterations"] == 300 and metrics["frames"] == 4 and metrics["diverged"] is None
    config = json.loads((short_run / "config.json").read_text())
    assert config["kind"] == "target"
    assert config["layers"] == 4 and config["target_params"] == {} and config["samples_per_step"] == 40
    with Image.open(short_run / "training.gif") as gif:
        assert gif.n_frames == 4


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_sample_a_run(short_run, tmp_path, suffix, capsys):
    output = tmp_path / f"samples{suffix}"
    assert main(["sample", str(short_run), "-n", "1000", "-o", str(output), "--seed", "1", "--log-prob"]) == 0
    data = np.load(output) if suffix == ".npy" else np.loadtxt(output, delimiter=",", skiprows=1)
    assert data.shape == (1000, 3) and np.isfinite(data).all()
    assert "wrote 1000 samples" in capsys.readouterr().out


TINY = ["--layers", "2", "--iterations", "20", "--frame-every", "10", "--frame-samples", "512",
        "--eval-samples", "500", "--kl-grid", "20", "--grid-size", "20", "--no-progress"]  # fmt: skip


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_can_be_fitted(tmp_path, target):
    assert main(["fit", "--target", target, "--flow", "planar", *TINY, "--out", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("flow", sorted(PRESETS))
def test_every_flow_can_be_fitted(tmp_path, flow):
    assert main(["fit", "--target", "two-modes", "--flow", flow, *TINY, "--out", str(tmp_path / "run")]) == 0
    assert np.isfinite(json.loads((tmp_path / "run" / "metrics.json").read_text())["kl"])


@pytest.mark.parametrize("base", ["resampled", "tempered", "mixture"])
def test_every_base_can_be_fitted_and_its_run_sampled(tmp_path, base, capsys):
    out = tmp_path / "run"
    argv = ["fit", "--target", "two-modes", "--flow", "realnvp", "--base", base, *TINY, "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["base"] == base
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["kl"])
    samples = tmp_path / "samples.npy"
    assert main(["sample", str(out), "-n", "300", "-o", str(samples), "--log-prob"]) == 0
    model = load_run(out).model
    assert type(model.q0).__name__ == {"resampled": "ResampledGaussian", "tempered": "TemperedGaussian",
                                       "mixture": "GaussianMixture"}[base]  # fmt: skip
    assert np.isfinite(np.load(samples)).all()


def test_forward_kl_and_target_parameters(tmp_path):
    out = tmp_path / "fkl"
    assert (
        main(
            [
                "fit",
                "--target",
                "circular-gmm",
                "--target-param",
                "n_modes=4",
                "--loss",
                "forward-kl",
                *SHORT,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["target_params"] == {"n_modes": 4}


def test_targets_lists_every_target(capsys):
    assert main(["targets"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(TARGETS)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--target", "nope", "--out", "{tmp}/a"], "invalid choice: 'nope'"),
        (["fit", "--flow", "glowish", "--out", "{tmp}/a"], "invalid choice: 'glowish'"),
        (["fit", "--iterations", "-5", "--out", "{tmp}/a"], "expected a positive integer, got '-5'"),
        (["fit", "--iterations", "ten", "--out", "{tmp}/a"], "expected a positive integer, got 'ten'"),
        (["fit", "--lr", "nan", "--out", "{tmp}/a"], "expected a positive number, got 'nan'"),
        (["fit", "--range", "3,-3", "--out", "{tmp}/a"], "LOW < HIGH"),
        (["fit", "--target-param", "loc=2"], "fit needs --out DIR"),
        (["fit", "--target-param", "depth=2", "--out", "{tmp}/a"], "target 'two-modes' takes parameters loc, scale"),
        (["fit", "--target-param", "scale=-1", "--out", "{tmp}/a"], "TwoModes scale must be a finite positive number"),
        (["fit", "--out", "{tmp}/file.txt/run"], "cannot write to run folder"),
        (["fit", "--device", "cuda:7", "--out", "{tmp}/a"], "CUDA is not available"),
        (["sample", "{tmp}/missing", "-n", "5", "-o", "{tmp}/x.npy"], "is not a run folder"),
        (["sample", "{tmp}", "-n", "0", "-o", "{tmp}/x.npy"], "expected a positive integer"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["fit", "--flow", "glow", "--out", "{tmp}/a"], "the glow preset models images"),
        (["fit", "--data", "two-moons", "--base", "resampled", "--out", "{tmp}/a"], "--base applies to fits"),
        (["fit", "--base", "student", "--out", "{tmp}/a"], "invalid choice: 'student'"),
    ],
)
def test_bad_input_gives_one_error_line(tmp_path, capsys, argv, message):
    (tmp_path / "file.txt").write_text("")
    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowforge: error: ") and message in err[0], err
    assert not (tmp_path / "a").exists(), "a refused run must not leave a folder behind"


def test_sample_rejects_bad_output(short_run, tmp_path, capsys):
    assert main(["sample", str(short_run), "-n", "5", "-o", str(tmp_path / "x.txt")]) == 2
    assert "must end in .npy or .csv" in capsys.readouterr().err
    assert main(["sample", str(short_run), "-n", "5", "-o", str(tmp_path / "no" / "x.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_exits_cleanly_without_traceback(tmp_path):
    executable = shutil.which("flowforge") or sys.executable
    prefix = [executable] if executable.endswith("flowforge") else [executable, "-m", "flowforge"]
    result = subprocess.run([*prefix, "fit", "--layers", "0", "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "flowforge: error: argument --layers: expected a positive integer, got '0'"


def test_demo_short_schedule_improves_on_the_initial_flow(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--iterations", "1500", "--anneal", "750", "--frame-every", "500", "--frame-samples", "8192",
            "--eval-samples", "5000", "--kl-grid", "200", "--grid-size", "50", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "config.json").read_text())["kind"] == "target"
    assert metrics["kl"] < 1.5 and metrics["ess"] > 0.05


@pytest.mark.slow
def test_demo_meets_the_quality_bar(tmp_path):
    """The seed's full schedule: KL(q‖p) on the grid at most 0.25 nats, ESS at least 0.3."""
    out = tmp_path / "demo"
    assert main(["demo", "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kl"] <= 0.25 and metrics["ess"] >= 0.3, metrics


@pytest.mark.parametrize("target, kernel, extra", [("two-modes", "mh", []), ("many-well", "hmc", ["dim=4"])])
def test_mcmc_writes_samples_picture_and_numbers(tmp_path, target, kernel, extra):
    out = tmp_path / "chains"
    argv = ["mcmc", "--target", target, "--kernel", kernel, "--chains", "8", "--samples", "40", "--burn-in", "30",
            "--leapfrog-steps", "3", "--grid-size", "30", "--out", str(out)]  # fmt: skip
    for pair in extra:
        argv += ["--target-param", pair]
    assert main(argv) == 0
    samples = np.load(out / "samples.npy")
    assert samples.shape == (320, 4 if extra else 2) and np.isfinite(samples).all()
    numbers = json.loads((out / "metrics.json").read_text())
    assert 0 < numbers["acceptance"] <= 1 and len(numbers["mean_exact"]) == samples.shape[1]
    assert (out / "comparison.png").stat().st_size > 0
    config = json.loads((out / "config.json").read_text())
    assert config["kernel"] == kernel and config["kind"] == "mcmc"


def test_mcmc_rejects_bad_target_parameters(tmp_path, capsys):
    argv = ["mcmc", "--target", "many-well", "--target-param", "dim=5", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "even dim" in capsys.readouterr().err


def test_compare_puts_target_mcmc_and_flow_depths_side_by_side(tmp_path):
    out = tmp_path / "compare"
    argv = ["compare", "--target", "two-modes", "--depths", "1,3", "--iterations", "20", "--chains", "8",
            "--mcmc-samples", "10", "--frame-samples", "1000", "--grid-size", "20", "--kl-grid", "20",
            "--compile", "off", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    numbers = json.loads((out / "metrics.json").read_text())
    assert set(numbers["flows"]) == {"1", "3"} and all(np.isfinite(v["kl"]) for v in numbers["flows"].values())
    assert 0 < numbers["mcmc"]["acceptance"] <= 1 and (out / "comparison.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["kind"] == "compare"


def test_compare_rejects_bad_depths(tmp_path, capsys):
    assert main(["compare", "--depths", "2,x", "--out", str(tmp_path / "c")]) == 2
    assert "--depths must be positive integers" in capsys.readouterr().err


def test_compare_reports_a_depth_whose_training_diverged(tmp_path, capsys):
    argv = ["compare", "--depths", "1", "--iterations", "20", "--samples-per-step", "8", "--kernel", "mh",
            "--chains", "4", "--mcmc-samples", "10", "--frame-samples", "64", "--grid-size", "8", "--kl-grid", "8",
            "--no-progress", "--compile", "off", "--lr", "1e9", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert (
        captured.err.startswith("flowforge: error: training stopped (K = 1: loss became nan")
        and "Traceback" not in captured.err
    )
    numbers = json.loads((tmp_path / "run" / "metrics.json").read_text())["flows"]["1"]
    assert numbers["diverged"] and numbers["kl_valid"] is False and numbers["warnings"]
