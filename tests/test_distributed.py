"""Training across processes (flowforge.training.distributed): two processes under torchrun train the
model one process trains at the same global batch, with ActNorm and BatchNorm synchronised, also from
memory-mapped files; reverse KL split across two processes computes what one process computes with their
two random streams, and resumes bit for bit; a failing process ends the run; the command writes one run
folder from process 0 and records the world size, for data and for targets."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from flowforge.training import distributed, fit, fit_vae
from flowforge.utils.batch_statistics import batch_moments

WORKER = Path(__file__).parent / "distributed" / "fit_worker.py"
TIMEOUT = 300


def _environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key not in ("WORLD_SIZE", "RANK")}
    return {**environment, "OMP_NUM_THREADS": "1"}


def _torchrun(*arguments: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run(
        [*command, *map(str, arguments)], cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=TIMEOUT
    )


def _worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fit_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_processes_train_the_model_one_process_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ActNorm and BatchNorm, a context with dequantised levels, a process with an empty part of a short
    last batch and parts of 2 and 1 rows for ActNorm's initialisation: equal to 1e-6 in float64. A run
    stopped mid-epoch by a signal to one process and resumed from process 0's checkpoint ends where the
    uninterrupted run ends, bit for bit, and so does one whose processes read their rows from one .npy file.
    Reverse KL equals a one-process simulation of the two random streams and resumes bit for bit, with
    process 0's callbacks restored; a callback that evaluates a BatchNorm model in process 0 alone runs."""
    kinds = ["plain", "conditional", "ragged", "resume", "mapped", "reverse", "reverse-resume", "callback"]
    folder = tmp_path / "two"
    folder.mkdir()
    worker = _worker()
    worker.write_shared(str(folder / worker.SHARED))
    worker.write_shared(str(tmp_path / worker.SHARED))  # for the single-process runs below
    result = _torchrun(WORKER, "two.pt", *kinds, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(folder)) == ["resume.pt", "reverse.pt", "shared.npy", "two.pt"]  # process 0's files
    parallel = torch.load(folder / "two.pt")
    for name, value in parallel["plain"]["state"].items():
        assert torch.equal(parallel["resume"]["state"][name], value), name
        assert torch.equal(parallel["mapped"]["state"][name], value), name
    for key in ("state", "train"):
        reverse, resumed = parallel["reverse"][key], parallel["reverse-resume"][key]
        assert (
            all(torch.equal(resumed[k], v) for k, v in reverse.items())
            if key == "state"
            else torch.equal(resumed, reverse)
        )
    callback = parallel.pop("callback")  # it ran to its end: process 0's callback started no reduction
    assert len(callback["train"]) == 6 and torch.isfinite(callback["train"]).all()
    monkeypatch.chdir(tmp_path)  # the single-process resume writes its checkpoint here
    for kind in kinds[:-1]:
        # reverse KL: each process draws its own samples, which simulate_reverse draws in one process alike
        single = worker.simulate_reverse(2) if kind.startswith("reverse") else worker.run(kind)
        assert single["state"].keys() == parallel[kind]["state"].keys()
        for name, value in single["state"].items():
            if value.is_floating_point():
                other = parallel[kind]["state"][name]
                torch.testing.assert_close(other, value, rtol=0, atol=1e-6, msg=f"{kind} {name}")
        for key in ("train", "validation"):
            torch.testing.assert_close(parallel[kind][key], single[key], rtol=0, atol=1e-6, msg=f"{kind} {key}")


def test_a_signal_that_reaches_one_process_stops_every_process_at_the_same_point(tmp_path: Path) -> None:
    """Process 1 gets SIGTERM during the first validation; the end-of-epoch reduction stops both there."""
    result = _torchrun(WORKER, "out.pt", "signal", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stopped = torch.load(tmp_path / "out.pt")["signal"]
    assert stopped == {"signal": signal.SIGTERM, "epochs": 1}


def test_a_failing_process_ends_the_run_with_its_error(tmp_path: Path) -> None:
    result = _torchrun(WORKER, "out.pt", "fail", cwd=tmp_path)
    assert result.returncode != 0
    assert "ValueError: train_data must be a finite (rows, features...) tensor with at least one row" in result.stderr
    assert not (tmp_path / "out.pt").exists()


def test_the_command_trains_across_processes_and_process_0_writes_the_run(tmp_path: Path) -> None:
    arguments = ["-m", "flowforge", "fit", "--data", "two-moons", "--epochs", "1", "--device", "cpu", "--no-progress"]
    arguments += ["--out", "run"]
    result = _torchrun(*arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == ["run"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs"] == 1 and config["status"] == "complete"
    assert result.stdout.count("test NLL") == 1  # printed once, by process 0


def test_the_command_fits_a_target_across_processes(tmp_path: Path) -> None:
    arguments = ["-m", "flowforge", "fit", "--iterations", "60", "--frame-every", "30", "--frame-samples", "4096"]
    arguments += ["--eval-samples", "2000", "--kl-grid", "40", "--device", "cpu", "--no-progress", "--out", "run"]
    result = _torchrun(*arguments, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == ["run"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["iterations"] == 60 and metrics["frames"] == 3
    assert result.stdout.count("ESS") == 1  # printed once, by process 0


def test_a_global_batch_is_cut_into_contiguous_parts_that_differ_by_at_most_one_row() -> None:
    for size in (1, 2, 3, 8):
        for rows in (0, 1, 5, 22, 32):
            parts = [distributed.World(rank, size, rank).part(rows) for rank in range(size)]
            assert [index for part in parts for index in range(rows)[part]] == list(range(rows))
            lengths = [part.stop - part.start for part in parts]
            assert max(lengths) - min(lengths) <= 1


def test_batch_moments_in_one_process_are_the_batch_mean_and_variance() -> None:
    values = torch.randn(7, 3, 4, 1, dtype=torch.float64)
    for unbiased in (False, True):
        mean, var = batch_moments(values, [0, 3], unbiased)
        torch.testing.assert_close(mean, values.mean(dim=[0, 3], keepdim=True))
        torch.testing.assert_close(var, values.var(dim=[0, 3], keepdim=True, unbiased=unbiased))


def test_a_world_size_without_torchrun_s_rendezvous_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched()
    with pytest.raises(RuntimeError, match="RANK, MASTER_ADDR, MASTER_PORT not set: launch with torchrun"):
        distributed.join(torch.device("cpu"))


def test_the_simulation_of_split_steps_in_one_process_is_the_fit_of_one_process() -> None:
    """simulate_reverse, the reference of the two-process reverse KL, computes fit's steps: with one
    process it equals fit to rounding."""
    worker = _worker()
    fitted, simulated = worker.run("reverse"), worker.simulate_reverse(1)
    torch.testing.assert_close(fitted["train"], simulated["train"], rtol=0, atol=1e-12)
    for name, value in fitted["state"].items():
        torch.testing.assert_close(simulated["state"][name], value, rtol=0, atol=1e-12, msg=name)


def test_the_distributed_path_with_one_process_is_the_fit_of_one_process(tmp_path: Path) -> None:
    """A process group of one (created by the caller) runs the distributed path: DDP, the reductions,
    the synchronised statistics and the gathered random streams; it computes what one process computes
    without it: bit for bit by reverse KL, to rounding for the data fit (whose loss is there a sum over
    the part divided by the batch size, and whose batch statistics are sums, instead of means)."""
    kinds = ["plain", "reverse", "reverse-resume"]
    rendezvous = f"file://{tmp_path / 'rendezvous'}"
    result = subprocess.run(
        [sys.executable, str(WORKER), "out.pt", *kinds, "--group-of-one", rendezvous], cwd=tmp_path,
        env=_environment(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = torch.load(tmp_path / "out.pt")
    for kind in kinds:
        alone, grouped = runs["alone"][kind], runs["group"][kind]
        tolerance = 0.0 if kind.startswith("reverse") else 1e-9
        torch.testing.assert_close(grouped["train"], alone["train"], rtol=0, atol=tolerance, msg=kind)
        for name, value in alone["state"].items():
            torch.testing.assert_close(grouped["state"][name], value, rtol=0, atol=tolerance, msg=f"{kind} {name}")


def test_fits_that_cannot_train_across_processes_refuse_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    import flowforge as nf

    monkeypatch.setenv("WORLD_SIZE", "2")
    model = nf.RealNVP(2, 2, p=nf.distributions.TwoModes(2.0, 0.1))
    with pytest.raises(ValueError, match="reverse_kl and forward_kl only; alpha_divergence trains in one process"):
        fit(model, 1, loss="alpha_divergence", progress=False)
    with pytest.raises(RuntimeError, match="only fit_data and fit train across processes"):
        fit_vae(nf.VAE(4, latent_dim=2), torch.rand(8, 4), epochs=1, progress=False)
