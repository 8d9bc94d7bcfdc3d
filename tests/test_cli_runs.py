"""The command's shape: one error type for every subcommand, run folders written by one writer with
their kind recorded, and run folders of the previous version (no "kind") still read by ``sample``."""

import importlib
import inspect
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import flowforge.cli
from flowforge import plot
from flowforge.cli import main
from flowforge.cli.errors import CLIError
from flowforge.cli.runs import (
    CHECKPOINT,
    CONFIG,
    KINDS,
    atomic_path,
    load_run,
    prepare_out,
    run_kind,
    write_config,
    write_json,
)

CLI_MODULES = [
    importlib.import_module(f"flowforge.cli.{info.name}")
    for info in pkgutil.iter_modules(flowforge.cli.__path__)
    if not info.name.startswith("__")  # __main__ runs the command when imported
]


def test_the_command_has_one_error_type():
    defined = {
        f"{module.__name__}.{name}"
        for module in [flowforge.cli, *CLI_MODULES]
        for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
    }
    assert defined == {"flowforge.cli.errors.CLIError"}
    assert {"errors", "validators", "runs", "fit", "data", "sampling", "vae", "sample"} <= {
        module.__name__.rsplit(".", 1)[1] for module in CLI_MODULES
    }


BAD_INPUT = {
    "no command": ([], "the following arguments are required: command"),
    "unknown option": (["targets", "--all"], "unrecognized arguments: --all"),
    "fit: a number": (["fit", "--lr", "0", "--out", "{tmp}/run"], "argument --lr: expected a positive number, got '0'"),
    "fit: a target parameter": (["fit", "--target-param", "loc", "--out", "{tmp}/run"], "(use KEY=VALUE)"),
    "fit: an image preset": (["fit", "--flow", "glow", "--out", "{tmp}/run"], "the glow preset models images"),
    "demo: a device": (["demo", "--device", "tpu:0", "--out", "{tmp}/run"], "unknown device 'tpu:0'"),
    "fit --data: a source": (["fit", "--data", "moons", "--out", "{tmp}/run"], "neither a file nor a known data set"),
    "fit --data: a split": (["fit", "--data", "two-moons", "--split", "1,1,1", "--out", "{tmp}/run"], "fractions"),
    "mcmc: a target parameter": (
        ["mcmc", "--target", "many-well", "--target-param", "dim=3", "--out", "{tmp}/run"],
        "invalid parameters for target 'many-well'",
    ),
    "mcmc: a number": (["mcmc", "--thin", "0", "--out", "{tmp}/run"], "argument --thin: expected a positive integer"),
    "compare: depths": (["compare", "--depths", "4,-1", "--out", "{tmp}/run"], "--depths must be positive integers"),
    "compare: a target parameter": (
        ["compare", "--target", "two-modes", "--target-param", "scale=x", "--out", "{tmp}/run"],
        "target parameter scale must be a number, got 'x'",
    ),
    "vae: data": (["vae", "--data", "{tmp}/digits.png", "--out", "{tmp}/run"], "--data must be 'digits' or a .npy"),
    "vae: a split": (["vae", "--split", "0.5,0.6,-0.1", "--out", "{tmp}/run"], "TRAIN,VALIDATION,TEST fractions"),
    "sample: a run": (["sample", "{tmp}/run", "-n", "3", "-o", "{tmp}/s.npy"], "is not a run folder"),
    "sample: an output": (["sample", "{tmp}/run", "-n", "3", "-o", "{tmp}/s.txt"], "must end in .npy or .csv"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_every_subcommand_reports_bad_input_in_one_line(tmp_path, capsys, case):
    argv, message = BAD_INPUT[case]
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowforge: error: ") and message in lines[0], captured.err
    assert captured.out == ""
    assert not (tmp_path / "run").exists(), "input is checked before the run folder is made"


PICTURES = {
    "fit": ["fit", "--iterations", "5"],
    "fit --data": ["fit", "--data", "two-moons"],
    "demo": ["demo"],
    "mcmc": ["mcmc"],
    "compare": ["compare"],
    "vae": ["vae"],
}


@pytest.mark.parametrize("command", list(PICTURES))
def test_commands_that_draw_pictures_without_matplotlib_say_what_to_install(tmp_path, capsys, monkeypatch, command):
    def missing() -> None:
        raise ImportError(plot.MISSING_PICTURE_PACKAGES.format(name="matplotlib"), name="matplotlib")

    monkeypatch.setattr(plot, "require", missing)
    assert main([*PICTURES[command], "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowforge: error: ") and 'pip install "flowforge[cli]"' in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv", [["fit", "--data", "digits"], ["fit", "--data", "wine"], ["vae"]], ids=["digits", "wine", "vae"]
)
def test_bundled_data_without_scikit_learn_say_what_to_install(tmp_path, capsys, monkeypatch, argv):
    for name in [module for module in sys.modules if module.split(".")[0] == "sklearn"] + ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)  # import sklearn now fails as if it were not installed
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowforge: error: ") and 'pip install "flowforge[data]"' in lines[0]
    assert not (tmp_path / "run").exists()


def test_python_dash_m_runs_the_command(tmp_path):
    for module in ("flowforge", "flowforge.cli"):
        done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout.startswith("flowforge "), done
    done = subprocess.run(
        [sys.executable, "-m", "flowforge", "mcmc", "--chains", "0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "flowforge: error: argument --chains: expected a positive integer, got '0'\n"


TINY_FIT = "--layers 2 --iterations 10 --frame-every 0 --frame-samples 256 --eval-samples 200 --kl-grid 20".split()
QUICK_DATA = "--epochs 1 --layers 1 --hidden 8 --no-progress".split()
RUNS = {
    "target": ["fit", "--flow", "planar", *TINY_FIT, *"--grid-size 16 --compile off --no-progress".split()],
    "table": ["fit", "--data", "two-moons", "--num-data", "300", *QUICK_DATA],
    "images": ["fit", "--data", "digits", *QUICK_DATA],
    "vae": "vae --layers 1 --latent 2 --hidden 16 --epochs 1 --is-samples 4 --no-progress".split(),
    "mcmc": "mcmc --chains 4 --samples 5 --burn-in 2 --leapfrog-steps 2 --grid-size 8".split(),
    "compare": "compare --target two-modes --depths 1 --iterations 5 --chains 4 --mcmc-samples 3 --frame-samples 64 "
    "--grid-size 8 --kl-grid 8 --compile off --no-progress".split(),
}


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    for kind, argv in RUNS.items():
        assert main([*argv, "--out", str(root / kind)]) == 0, kind
    return root


def test_every_kind_has_a_command():
    assert set(RUNS) == set(KINDS)


@pytest.mark.parametrize("kind", list(RUNS))
def test_every_run_records_its_kind(run_folders, kind):
    folder = run_folders / kind
    assert json.loads((folder / CONFIG).read_text())["kind"] == kind
    if (folder / CHECKPOINT).exists():
        assert torch.load(folder / CHECKPOINT, weights_only=True)["config"]["kind"] == kind
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "no temporary file is left behind"


@pytest.mark.parametrize("kind", ["target", "table", "images"])
def test_sample_reads_the_kind_of_a_fitted_run(run_folders, tmp_path, kind):
    run = load_run(run_folders / kind)
    assert run.config["kind"] == kind and not run.model.training
    output = tmp_path / "samples.npy"
    assert main(["sample", str(run_folders / kind), "-n", "5", "-o", str(output)]) == 0
    assert np.load(output).shape == ((5, 1, 8, 8) if kind == "images" else (5, 2))


@pytest.mark.parametrize("kind, message", [("vae", "is a vae run"), ("mcmc", "is not a run folder")])
def test_sample_refuses_runs_without_a_flow_to_sample(run_folders, tmp_path, capsys, kind, message):
    assert main(["sample", str(run_folders / kind), "-n", "5", "-o", str(tmp_path / "s.npy")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "s.npy").exists()


def test_sample_needs_no_pictures(run_folders, tmp_path, monkeypatch):
    def missing() -> None:
        raise ImportError("no matplotlib")

    monkeypatch.setattr(plot, "require", missing)
    assert main(["sample", str(run_folders / "target"), "-n", "5", "-o", str(tmp_path / "s.csv")]) == 0


def _strip_kind(folder):
    """Make ``folder`` look as the previous version wrote it: no "kind" in config.json or model.pt."""
    config = json.loads((folder / CONFIG).read_text())
    del config["kind"]
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    checkpoint = torch.load(folder / CHECKPOINT, weights_only=True)
    del checkpoint["config"]["kind"]
    torch.save(checkpoint, folder / CHECKPOINT)


def test_an_old_target_run_without_a_kind_is_still_sampled(run_folders, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(run_folders / "target", old)
    _strip_kind(old)
    assert load_run(old).config["kind"] == "target"
    for folder, name in ((run_folders / "target", "new.csv"), (old, "old.csv")):
        assert main(["sample", str(folder), "-n", "50", "-o", str(tmp_path / name), "--seed", "7", "--log-prob"]) == 0
    new_rows, old_rows = ((tmp_path / name).read_text() for name in ("new.csv", "old.csv"))
    assert old_rows == new_rows and old_rows.startswith("x1,x2,log_q\n")


def test_an_old_vae_run_without_a_kind_is_recognised(run_folders, tmp_path, capsys):
    old = tmp_path / "old-vae"
    shutil.copytree(run_folders / "vae", old)
    _strip_kind(old)
    assert main(["sample", str(old), "-n", "5", "-o", str(tmp_path / "s.npy")]) == 2
    assert "is a vae run" in capsys.readouterr().err


def test_run_kind_of_configs_of_the_previous_version():
    assert run_kind({"target": "two-modes", "flow": "planar"}) == "target"
    assert run_kind({"posterior": "planar", "latent": 8}) == "vae"
    assert run_kind({"kind": "table", "names": ["a", "b"]}) == "table"  # data runs always had a kind
    assert run_kind({"kind": "images"}) == "images"


def test_write_config_records_a_known_kind(tmp_path):
    config = write_config(tmp_path, "mcmc", {"chains": 4})
    assert config == {"chains": 4, "kind": "mcmc"} == json.loads((tmp_path / CONFIG).read_text())
    with pytest.raises(ValueError, match="unknown run kind 'data'"):
        write_config(tmp_path, "data", {})
    assert json.loads((tmp_path / CONFIG).read_text())["kind"] == "mcmc"


def test_writes_are_atomic(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"b": 1, "a": [1.5]})
    assert path.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".metrics.json.")
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}, "a failed write leaves the old file"
    assert os.listdir(tmp_path) == ["metrics.json"], "and no temporary file"


def test_prepare_out_refuses_a_folder_it_cannot_write(tmp_path):
    (tmp_path / "file").write_text("")
    assert prepare_out(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
    assert os.listdir(tmp_path / "a" / "b") == []
    with pytest.raises(CLIError, match=re.escape(f"cannot write to run folder {str(tmp_path / 'file' / 'run')!r}")):
        prepare_out(tmp_path / "file" / "run")
