"""The command's shape: one error type for every subcommand, run folders written by one writer with
their kind recorded, and run folders of the previous version (no "kind") still read by ``sample``.
Run folders never destroy anything: an existing folder needs --overwrite, which deletes only a run's
files; no input is written over; a lock keeps a second process out; config.json records the status."""

import errno
import importlib
import inspect
import io
import json
import os
import pkgutil
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import flowforge.cli
from flowforge import plot
from flowforge.cli import main, sampling
from flowforge.cli.errors import CLIError
from flowforge.cli.runs import (
    CHECKPOINT,
    CONFIG,
    KINDS,
    LOCK,
    RUN_FILES,
    STALE_LOCK_SECONDS,
    TRAINING_STATE,
    atomic_path,
    load_run,
    open_run,
    prepare_out,
    run_kind,
    write_json,
)
from flowforge.training import FitResult, TrainingInterrupted

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
    config = json.loads((folder / CONFIG).read_text())
    assert config["kind"] == kind and config["status"] == "complete"
    if (folder / CHECKPOINT).exists():
        saved = torch.load(folder / CHECKPOINT, weights_only=True)["config"]
        assert saved["kind"] == kind and "status" not in saved
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "no temporary file or lock is left behind"
    assert {p.name for p in folder.iterdir()} <= RUN_FILES, "every file a run writes is one --overwrite replaces"


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


def test_write_config_records_a_known_kind_and_the_status(tmp_path):
    with open_run(tmp_path / "run", "mcmc") as run:
        config = run.write_config({"chains": 4})
        assert config == {"chains": 4, "kind": "mcmc"}, "the checkpoint's copy has no status"
        assert json.loads((tmp_path / "run" / CONFIG).read_text()) == {**config, "status": "running"}
        assert (tmp_path / "run" / LOCK).is_file()
    assert json.loads((tmp_path / "run" / CONFIG).read_text()) == {**config, "status": "complete"}
    assert os.listdir(tmp_path / "run") == [CONFIG], "the lock is removed"
    with pytest.raises(ValueError, match="unknown run kind 'data'"), open_run(tmp_path / "other", "data"):
        pass
    assert not (tmp_path / "other").exists()


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


MCMC = RUNS["mcmc"]
"""The quickest run: what the run-folder tests below start."""


def _one_error_line(capsys, *messages: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowforge: error: "), captured.err
    for message in messages:
        assert message in lines[0], lines[0]
    return lines[0]


def _files(folder):
    """Every file in ``folder`` (not below it), with its bytes."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _config(folder):
    return json.loads((folder / CONFIG).read_text())


def test_an_existing_run_folder_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*MCMC, "--out", str(out)]) == 0
    before = _files(out)
    capsys.readouterr()
    assert main([*MCMC, "--seed", "1", "--out", str(out)]) == 2
    _one_error_line(capsys, f"run folder {str(out)!r} is not empty", "use --overwrite", "or choose another --out")
    assert _files(out) == before
    assert main([*MCMC, "--seed", "1", "--overwrite", "--out", str(out)]) == 0
    assert _config(out)["seed"] == 1 and _config(out)["status"] == "complete"
    assert not np.array_equal(np.load(out / "samples.npy"), np.load(io.BytesIO(before["samples.npy"])))


def test_overwrite_deletes_the_previous_runs_files_and_keeps_every_other_file(tmp_path):
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    (out / CONFIG).write_text(json.dumps({"kind": "table", "status": "complete"}))  # a table run was here
    for name in ("samples.csv", "pairs.png", CHECKPOINT, ".samples.csv.123.0123abcd.partial"):
        (out / name).write_text("old")
    (out / "notes.txt").write_text("mine")
    (out / "data" / "x.csv").write_text("1,2\n")
    assert main([*MCMC, "--overwrite", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {CONFIG, "samples.npy", "comparison.png", "metrics.json", "notes.txt",
                                               "data"}  # fmt: skip
    assert (out / "notes.txt").read_text() == "mine" and (out / "data" / "x.csv").read_text() == "1,2\n"
    assert _config(out)["kind"] == "mcmc"


def test_overwrite_refuses_a_folder_where_a_run_writes_a_file(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "samples.npy").mkdir(parents=True)
    (out / CONFIG).write_text(json.dumps({"kind": "mcmc", "status": "complete"}))
    assert main([*MCMC, "--overwrite", "--out", str(out)]) == 2
    _one_error_line(capsys, f"{str(out / 'samples.npy')!r} is a folder where a run writes a file", "move it")
    assert (out / "samples.npy").is_dir() and _config(out) == {"kind": "mcmc", "status": "complete"}


def test_out_dot_never_replaces_a_users_own_config_or_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / CONFIG).write_text('{"learning_rate": 0.1}\n')
    (tmp_path / CHECKPOINT).write_bytes(b"my model")
    before = _files(tmp_path)
    assert main([*MCMC, "--out", "."]) == 2
    _one_error_line(capsys, "run folder '.' is not empty (it holds config.json, model.pt)", "use --overwrite")
    assert main([*MCMC, "--overwrite", "--out", "."]) == 2
    _one_error_line(capsys, "config.json in '.' is not the config of a flowforge run", "or choose another --out")
    assert _files(tmp_path) == before
    (tmp_path / CONFIG).unlink()
    assert main([*MCMC, "--overwrite", "--out", "."]) == 2
    _one_error_line(capsys, "run folder '.' holds model.pt without a flowforge config.json", "move them")
    assert _files(tmp_path) == {CHECKPOINT: b"my model"}


def _table(path):
    np.savetxt(path, np.random.default_rng(0).normal(size=(200, 2)), delimiter=",", header="a,b", comments="")
    return path.read_bytes()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_an_input_that_is_a_run_file_in_out_is_refused(tmp_path, capsys, overwrite):
    project = tmp_path / "proj"
    project.mkdir()
    (project / CONFIG).write_text(json.dumps({"kind": "table"}))  # so that --overwrite would delete run files
    table = _table(project / "samples.csv")
    np.save(project / "samples.npy", np.random.default_rng(0).normal(size=(20, 5)))
    elsewhere = tmp_path / "table.csv"
    _table(elsewhere)
    (project / "pairs.png").symlink_to(elsewhere)  # an input reached through a link in --out
    before = _files(project)
    cases = [
        (["fit", "--data", str(project / "samples.csv"), *QUICK_DATA], f"--data {str(project / 'samples.csv')!r}"
         " is the file samples.csv of the run folder"),
        (["vae", "--data", str(project / "samples.npy"), "--likelihood", "gaussian", "--epochs", "1"],
         "is the file samples.npy of the run folder"),
        (["fit", "--data", str(elsewhere), *QUICK_DATA], "is the file pairs.png of the run folder"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main([*argv, *overwrite, "--out", str(project)]) == 2
        _one_error_line(capsys, message, "move the input out of it or choose another --out")
    assert _files(project) == before and (project / "samples.csv").read_bytes() == table


def test_an_input_in_out_under_a_name_of_its_own_is_kept(tmp_path, capsys):
    project = tmp_path / "proj"
    project.mkdir()
    table = _table(project / "data.csv")
    assert main(["fit", "--data", str(project / "data.csv"), *QUICK_DATA, "--out", str(project)]) == 2
    _one_error_line(capsys, "is not empty (it holds data.csv)", "use --overwrite")
    assert main(["fit", "--data", str(project / "data.csv"), *QUICK_DATA, "--overwrite", "--out", str(project)]) == 0
    assert (project / "data.csv").read_bytes() == table and (project / "samples.csv").is_file()


def _write_lock(folder, **record):
    folder.mkdir(exist_ok=True)
    (folder / LOCK).write_text(json.dumps({"host": socket.gethostname(), "started": time.time(), **record}))


def test_a_live_lock_stops_a_second_run_at_once_and_a_dead_one_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        _write_lock(out, pid=holder.pid)
        for extra in ([], ["--overwrite"]):
            assert main([*MCMC, *extra, "--out", str(out)]) == 2
            _one_error_line(
                capsys,
                f"run folder {str(out)!r} is in use by process {holder.pid}; wait for that run to end or choose "
                f"another --out (if no run is using it, delete {str(out / LOCK)!r})",
            )
        assert os.listdir(out) == [LOCK]
    finally:
        holder.kill()
        holder.wait()
    assert main([*MCMC, "--out", str(out)]) == 0, "the lock of a process that has ended is taken over"
    assert LOCK not in os.listdir(out) and _config(out)["status"] == "complete"


HOLD_THE_FOLDER = """
import sys, time
from flowforge.cli import runs
with runs.open_run(sys.argv[1], "mcmc") as run:
    run.write_config({"chains": 1})
    print("locked", flush=True)
    time.sleep(300)
"""


def test_a_second_process_on_the_same_folder_fails_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_FOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert main([*MCMC, "--overwrite", "--out", str(out)]) == 2
        _one_error_line(capsys, f"is in use by process {holder.pid}")
        done = subprocess.run(
            [sys.executable, "-m", "flowforge", *MCMC, "--out", str(out)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2 and done.stdout == "", done
        assert done.stderr.startswith("flowforge: error: ") and done.stderr.count("\n") == 1, done.stderr
        assert f"is in use by process {holder.pid}" in done.stderr
        assert _config(out) == {"chains": 1, "kind": "mcmc", "status": "running"}
    finally:
        holder.terminate()  # SIGTERM ends it without clean-up: its lock stays behind
        holder.wait()
    assert (out / LOCK).exists() and _config(out)["status"] == "running"
    assert main([*MCMC, "--overwrite", "--out", str(out)]) == 0
    assert _config(out)["status"] == "complete" and LOCK not in os.listdir(out)


def test_a_lock_recorded_by_our_own_process_id_is_stale(tmp_path):
    out = tmp_path / "run"
    _write_lock(out, pid=os.getpid())  # an earlier process with our id (a restarted container)
    assert main([*MCMC, "--out", str(out)]) == 0 and LOCK not in os.listdir(out)


def test_a_lock_of_another_host_is_never_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    _write_lock(out, pid=1, host="elsewhere")
    assert main([*MCMC, "--out", str(out)]) == 2
    _one_error_line(capsys, "is in use by process 1 on host 'elsewhere'", f"delete {str(out / LOCK)!r}")
    assert os.listdir(out) == [LOCK]


def test_a_lock_without_a_record_is_taken_over_only_once_old(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("")  # as a process leaves it between creating and writing it
    assert main([*MCMC, "--out", str(out)]) == 2
    _one_error_line(capsys, "is in use by another process (its lock file is being written)")
    old = time.time() - STALE_LOCK_SECONDS - 1
    os.utime(out / LOCK, (old, old))
    assert main([*MCMC, "--out", str(out)]) == 0 and LOCK not in os.listdir(out)


def test_a_rerun_that_fails_leaves_no_mixed_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main([*MCMC, "--out", str(out)]) == 0
    first = np.load(out / "samples.npy")

    def disk_full(*args, **kwargs):
        raise CLIError("the disk is full")

    monkeypatch.setattr(sampling.plot, "save_comparison", disk_full)
    capsys.readouterr()
    assert main([*MCMC, "--seed", "1", "--overwrite", "--out", str(out)]) == 2
    _one_error_line(capsys, "the disk is full")
    config = _config(out)
    assert config["seed"] == 1 and config["status"] == "failed" and config["error"] == "the disk is full"
    assert sorted(os.listdir(out)) == [CONFIG, "samples.npy"], "nothing of the first run is left"
    assert not np.array_equal(np.load(out / "samples.npy"), first)


def test_an_interrupted_run_is_marked_interrupted(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sampling, "sample_chain", interrupt)
    out = tmp_path / "run"
    assert main([*MCMC, "--out", str(out)]) == 130
    assert capsys.readouterr().err == "flowforge: interrupted\n"
    assert _config(out)["status"] == "interrupted" and os.listdir(out) == [CONFIG]


def test_a_run_that_raises_is_marked_failed(tmp_path):
    with pytest.raises(RuntimeError), open_run(tmp_path, "mcmc") as run:
        run.write_config({"chains": 1})
        raise RuntimeError("boom")
    assert _config(tmp_path) == {"chains": 1, "kind": "mcmc", "status": "failed", "error": "RuntimeError: boom"}
    assert os.listdir(tmp_path) == [CONFIG]


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert main([*MCMC, "--overwrite", "--out", str(tmp_path / "file")]) == 2
    _one_error_line(capsys, f"--out {str(tmp_path / 'file')!r} is a file, not a folder")
    assert (tmp_path / "file").read_text() == "mine"


def test_sample_never_writes_over_its_run_or_an_existing_file(run_folders, tmp_path, capsys):
    table = run_folders / "table"
    before = _files(table)
    (tmp_path / "model.npy").symlink_to(table / CHECKPOINT)
    os.link(table / CONFIG, tmp_path / "config.csv")
    cases = [
        (table / "samples.csv", "is the file samples.csv of the run"),
        (tmp_path / "model.npy", "is the file model.pt of the run"),
        (tmp_path / "config.csv", "is the file config.json of the run"),
    ]
    for output, message in cases:
        for extra in ([], ["--overwrite"]):
            assert main(["sample", str(table), "-n", "5", "-o", str(output), *extra]) == 2
            _one_error_line(capsys, f"-o {str(output)!r} {message}", "choose a file outside it")
    assert _files(table) == before
    mine = tmp_path / "mine.csv"
    mine.write_text("keep me\n")
    assert main(["sample", str(table), "-n", "5", "-o", str(mine)]) == 2
    _one_error_line(capsys, f"-o {str(mine)!r} exists; use --overwrite to replace it, or choose another -o")
    assert mine.read_text() == "keep me\n"
    assert main(["sample", str(table), "-n", "5", "-o", str(mine), "--overwrite"]) == 0
    assert np.loadtxt(mine, delimiter=",", skiprows=1).shape == (5, 2)


def test_json_is_strict(tmp_path):
    path = tmp_path / "metrics.json"
    values = {"kl": float("nan"), "bounds": [float("inf"), -np.inf, 1.5], "ess": np.float32(0.5), "n": np.int64(3)}
    write_json(path, {**values, "array": np.array([1.0, np.nan])})

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "kl": None, "bounds": [None, None, 1.5], "ess": 0.5, "n": 3, "array": [1.0, None]
    }  # fmt: skip


def _stopped_run(folder, status="interrupted", kind="target", state=True):
    """A run folder as a run of ``kind`` stopped with ``status`` leaves it."""
    folder.mkdir()
    write_json(folder / CONFIG, {"kind": kind, "seed": 1, "flowforge_version": "x", "status": status})
    (folder / "loss.png").write_bytes(b"picture")
    if state:
        (folder / TRAINING_STATE).write_bytes(b"state")
    return _files(folder)


def test_resume_reopens_a_stopped_run_and_keeps_its_files(tmp_path):
    assert TRAINING_STATE in RUN_FILES, "--overwrite deletes the training state too"
    for status in ("interrupted", "failed", "running"):  # running: its process is gone (no live lock)
        folder = tmp_path / status
        before = _stopped_run(folder, status)
        _write_lock(folder, pid=os.getpid())  # stale: an earlier process with our id
        with open_run(folder, "target", resume=True) as run:
            assert run.resumed and run.config == {"kind": "target", "seed": 1, "flowforge_version": "x"}
            assert run.training_state == folder / TRAINING_STATE and _config(folder)["status"] == "running"
            assert json.loads((folder / LOCK).read_text())["pid"] == os.getpid()
        assert _config(folder)["status"] == "complete" and LOCK not in os.listdir(folder)
        assert {name: data for name, data in _files(folder).items() if name != CONFIG} == {
            name: data for name, data in before.items() if name != CONFIG
        }


def test_resume_refuses_a_run_it_cannot_continue(tmp_path, capsys):
    _stopped_run(tmp_path / "complete", "complete")
    _stopped_run(tmp_path / "stateless", state=False)
    _stopped_run(tmp_path / "table", kind="table")
    _stopped_run(tmp_path / "busy")
    _write_lock(tmp_path / "busy", pid=os.getppid())  # a live process
    (tmp_path / "empty").mkdir()
    cases = {
        "complete": "is complete; nothing to resume (--overwrite starts it again)",
        "stateless": f"has no {TRAINING_STATE} to resume from",
        "table": "holds a table run, not a target run",
        "busy": f"is in use by process {os.getppid()}",
        "empty": "is not a run folder: ",
        "missing": "no such run folder",
    }
    for name, message in cases.items():
        folder = tmp_path / name
        before = _files(folder) if folder.exists() else None
        with pytest.raises(CLIError, match=re.escape(message)), open_run(folder, "target", resume=True):
            pytest.fail("refused before the block")
        assert (_files(folder) if folder.exists() else None) == before, name
    with (
        pytest.raises(CLIError, match="give one"),
        open_run(tmp_path / "complete", "target", resume=True, overwrite=True),
    ):
        pass


def _damaged(run_folders, tmp_path, name, damage):
    folder = tmp_path / name
    shutil.copytree(run_folders / "target", folder)
    damage(folder / CHECKPOINT)
    return folder


def _with_state(change):
    def damage(path):
        saved = torch.load(path, weights_only=True)
        change(saved)
        torch.save(saved, path)

    return damage


class _Pickled:
    """Something only unpickling could read back."""


BAD_MODEL_FILES = {
    "empty": (lambda path: path.write_bytes(b""), "the file is empty"),
    "garbage": (lambda path: path.write_bytes(b"\x80\x04garbage" * 10), "not a flowforge model file, or a damaged"),
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[:700]), "not a flowforge model file, or a damaged"),
    "folder": (lambda path: (path.unlink(), path.mkdir()), "it is a folder, not a model file"),
    "not a dict": (lambda path: torch.save([1, 2], path), "no run config and weights in it"),
    "pickled": (lambda path: torch.save({"config": _Pickled()}, path), "not a flowforge model file, or a damaged"),
    "nan": (
        _with_state(lambda saved: saved["state_dict"]["flows.0.parameters_uwb"].fill_(float("nan"))),
        "its weights hold NaN or infinite values (flows.0.parameters_uwb)",
    ),
    "other model": (
        _with_state(lambda saved: saved["state_dict"].pop("flows.1.parameters_uwb")),
        "its weights do not fit the model its config describes: it lacks 'flows.1.parameters_uwb'",
    ),
    "other shape": (
        _with_state(lambda saved: saved["state_dict"].update({"q0.loc": torch.zeros(3)})),
        "'q0.loc' is (3,) torch.float32 in it but (1, 2) torch.float32 in the model",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MODEL_FILES))
def test_sample_refuses_a_bad_model_file_in_one_line(run_folders, tmp_path, capsys, case):
    damage, message = BAD_MODEL_FILES[case]
    folder = _damaged(run_folders, tmp_path, "run", damage)
    assert main(["sample", str(folder), "-n", "3", "-o", str(tmp_path / "s.npy")]) == 2
    line = _one_error_line(capsys, f"{folder / CHECKPOINT}", message)
    assert "weights_only" not in line and not (tmp_path / "s.npy").exists()


def test_sample_refuses_a_run_in_progress(run_folders, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(run_folders / "target", folder)
    _write_lock(folder, pid=os.getppid())
    assert main(["sample", str(folder), "-n", "3", "-o", str(tmp_path / "s.npy")]) == 2
    _one_error_line(capsys, f"the run in {str(folder)!r} is in progress (process {os.getppid()})")
    _write_lock(folder, pid=os.getpid())  # a lock left by a process that has ended
    assert main(["sample", str(folder), "-n", "3", "-o", str(tmp_path / "s.npy")]) == 0


@pytest.mark.parametrize("name", [n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)])
def test_a_signal_stops_a_command_with_one_line_and_its_status(tmp_path, capsys, monkeypatch, name):
    number = getattr(signal, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), number)
        for _ in range(1000):
            select.select([], [], [], 0.001)
        raise AssertionError(f"{name} did not stop the command")

    monkeypatch.setattr(sampling, "sample_chain", signalled)
    out = tmp_path / "run"
    assert main([*MCMC, "--out", str(out)]) == 128 + number
    assert capsys.readouterr().err == f"flowforge: interrupted by {name}\n"
    assert _config(out)["status"] == "interrupted" and LOCK not in os.listdir(out)


def test_an_interrupted_fit_says_where_its_checkpoint_is(tmp_path, capsys, monkeypatch):
    out = tmp_path / "my run"

    def interrupted(*args, **kwargs):
        result = FitResult(np.zeros(3), 3, 0.0, 0.0, False)
        raise TrainingInterrupted(signal.SIGTERM, result, out / TRAINING_STATE)

    monkeypatch.setattr(sampling, "sample_chain", interrupted)
    assert main([*MCMC, "--out", str(out)]) == 143
    shown = shlex.quote(str(out))
    assert capsys.readouterr().err == (
        f"flowforge: interrupted by SIGTERM, checkpoint saved in {shown}; continue with "
        f"`flowforge fit --resume {shown}`\n"
    )


class _SignalInFinaliser:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # the KeyboardInterrupt raised here cannot leave a finaliser


def test_ctrl_c_dropped_in_a_finaliser_still_stops_the_command(tmp_path, capsys, monkeypatch):
    def dropped(*args, **kwargs):
        _SignalInFinaliser()  # as a garbage-collected matplotlib object's weak-reference callback
        for _ in range(2000):
            select.select([], [], [], 0.005)
        raise AssertionError("the interruption was lost")

    monkeypatch.setattr(sampling, "sample_chain", dropped)
    out = tmp_path / "run"
    assert main([*MCMC, "--out", str(out)]) == 130
    assert capsys.readouterr().err == "flowforge: interrupted by SIGINT\n"
    assert _config(out)["status"] == "interrupted"


def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(tmp_path, capsys, monkeypatch):
    def disk_full(path, *args, **kwargs):
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            handle.write(b"half a picture")
            raise OSError(errno.ENOSPC, "No space left on device")  # what a write on a full disk raises

    monkeypatch.setattr(sampling.plot, "save_comparison", disk_full)
    out = tmp_path / "run"
    assert main([*MCMC, "--out", str(out)]) == 2
    _one_error_line(capsys, f"cannot write {out / 'comparison.png'}: No space left on device")
    assert _config(out)["status"] == "failed" and not [p for p in os.listdir(out) if p.startswith(".")]
