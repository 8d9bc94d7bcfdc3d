"""Short runs of the benchmark scripts, so a change that breaks them fails here."""

import sys

import pytest

from benchmarks import density, quality, sampling, vae
from benchmarks import run as suite


def run(module, argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
    module.main()
    return capsys.readouterr().out


def test_quality_table_short_run(monkeypatch, capsys):
    out = run(quality, ["--iterations", "5", "--presets", "realnvp", "nsf"], monkeypatch, capsys)
    rows = [line for line in out.splitlines() if line.startswith("| realnvp") or line.startswith("| nsf")]
    assert len(rows) == 2 and all(len(row.split("|")) == 11 for row in rows)


def test_vae_table_short_run(monkeypatch, capsys):
    out = run(vae, ["--quick", "--posteriors", "gaussian", "planar", "--layers", "2"], monkeypatch, capsys)
    rows = [line for line in out.splitlines() if line.startswith(("| gaussian", "| planar"))]
    assert len(rows) == 2 and all(len(row.split("|")) == 11 for row in rows)
    assert "independent pixels: test log-likelihood" in out


def test_sampling_table_short_run(monkeypatch, capsys):
    out = run(sampling, ["--quick"], monkeypatch, capsys)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "exact log Z" not in line]
    assert len(rows) == 1 + 3 * 4  # the header, then four models for each of three targets


def test_posterior_table_short_run(monkeypatch, capsys, tmp_path):
    pytest.importorskip("sbi")
    from benchmarks import posterior

    picture = tmp_path / "moons.png"
    out = run(posterior, ["--quick", "--plot", str(picture)], monkeypatch, capsys)
    rows = [line for line in out.splitlines() if line.startswith(("| Gaussian-linear", "| two moons"))]
    assert len(rows) == 2 * 4 and all(len(row.split("|")) == 7 for row in rows)
    assert picture.stat().st_size > 0 and not (tmp_path / "sbi-logs").exists()


def _installed(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def test_speed_suite_smoke_run(monkeypatch, capsys):
    argv = ["--quick", "--no-cold", "--compile", "off", "--same-process", "--only", "seed", "coupling", "ar64"]
    out = run(suite, [*argv, "--conditions", "quiet"], monkeypatch, capsys)
    peers = [name for name in ("normflows", "zuko", "nflows") if _installed(name)]
    assert "conditions: quiet" in out and "| busy" not in out
    assert "| quiet | flowforge: the seed script's loop" in out
    assert "`training.fit` as `flowforge demo`, warm" in out
    assert ("| quiet | normflows: the seed script's loop" in out) == ("normflows" in peers)
    for title in ("affine coupling x8", "RQ-spline coupling x8", "MAF x4", "autoregressive NSF x4"):
        assert f"{title} on cpu" in out
    rows = [
        line for line in out.splitlines() if line.startswith(tuple(f"| quiet | {p} |" for p in ["flowforge", *peers]))
    ]
    assert len(rows) == 4 * (1 + len(peers))
    assert out.count("flowforge / fastest peer, training: quiet ") == 4


def test_training_tables_show_both_conditions_side_by_side(monkeypatch, capsys):
    """Both conditions, one row per condition and library, each ratio against the same condition's peers."""
    import torch

    from benchmarks import peers

    args = suite.argparse.Namespace(quick=True, repeats=2, conditions=["quiet", "busy"], seed=0, compile="off",
                                    device="cpu", sample_repeats=1)  # fmt: skip
    libs = ["flowforge", "normflows"] if _installed("normflows") else ["flowforge"]
    builders = {"tiny affine coupling": lambda lib: peers.affine_coupling(lib, layers=1, hidden=4)}
    data = torch.randn(64, 2)
    suite.training_section(args, libs, "tiny", builders, 2, data, data, 1, throughput_batch=(64, 16))
    out = capsys.readouterr().out
    busy = suite.condition_label("busy")
    rows = [line for line in out.splitlines() if line.startswith(("| quiet |", f"| {busy} |"))]
    assert [row.split(" | ")[:2] for row in rows] == [["| quiet", lib] for lib in libs] + [
        [f"| {busy}", lib] for lib in libs
    ]
    assert all(len(row.split("|")) == len(rows[0].split("|")) == 13 for row in rows)
    line = next(line for line in out.splitlines() if line.startswith("flowforge / fastest peer"))
    assert ("quiet" in line and "; busy" in line) == ("normflows" in libs)


def test_demo_section_quick_run_beside_a_busy_process(monkeypatch, capsys):
    out = run(suite, ["--quick", "--only", "demo", "--conditions", "busy"], monkeypatch, capsys)
    busy = suite.condition_label("busy")
    rows = [line for line in out.splitlines() if line.startswith(f"| {busy} |")]
    commands = ["flowforge demo"] + (["normflows: the seed workflow as a script"] if _installed("normflows") else [])
    assert [row.split(" | ")[1] for row in rows] == commands
    assert all(len(row.split("|")) == 6 for row in rows)
    assert "200 steps, 2 frames of 16,384 points" in out
    assert ("flowforge demo / normflows seed workflow, wall time" in out) == _installed("normflows")


def test_busy_condition_starts_and_stops_its_loops(monkeypatch):
    assert suite.busy_processes("quiet") == 0 and suite.busy_processes("busy") >= 1
    started, real_popen = [], suite.subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(suite.subprocess, "Popen", popen)
    with suite.condition("busy"):
        assert all(loop.poll() is None for loop in started)
    assert len(started) == suite.busy_processes("busy") and all(loop.poll() is not None for loop in started)


def test_the_normflows_seed_workflow_script_has_its_sizes_filled_in():
    from benchmarks import peers

    text = peers.normflows_seed_workflow(iterations=400, anneal=200, frame_every=100, samples=4096, seed=3)
    assert "@" not in text and "max_iter = 400" in text and "picture_samples = 4096" in text
    compile(text, "seed_normflows.py", "exec")


def test_device_cuda_is_refused_without_a_gpu(monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit):
        run(suite, ["--only", "demo", "--device", "cuda"], monkeypatch, capsys)
    assert "--device cuda" in capsys.readouterr().err


def test_gpu_script_is_valid_bash():
    import pathlib
    import subprocess

    script = pathlib.Path(suite.__file__).with_name("gpu.sh")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "--device cuda" in script.read_text()


def test_sections_run_in_fresh_processes_with_the_other_options():
    argv = ["--quick", "--only", "seed", "ar64", "--repeats", "2", "--only=memory", "--no-cold"]
    assert suite._argv_without_only(argv) == ["--quick", "--repeats", "2", "--no-cold"]
    argv = ["--only", "demo", "--conditions", "quiet", "busy", "--device", "cpu"]
    assert suite._argv_without_only(argv) == ["--conditions", "quiet", "busy", "--device", "cpu"]


def test_memory_probe_measures_sampling_in_this_process():
    probe = suite.memory_probe("flowforge", "planar", "plot helper", 4096)
    assert probe["peak_mb"] >= 0 and probe["seconds"] > 0


@pytest.mark.slow
def test_speed_suite_quick_run_with_cold_compile_and_memory(monkeypatch, capsys):
    argv = ["--quick", "--same-process", "--only", "seed", "memory", "--conditions", "quiet"]
    out = run(suite, argv, monkeypatch, capsys)
    assert "cold compile cache" in out and "Peak memory" in out and "| quiet: added peak RSS, seconds |" in out


def test_density_table_short_run(monkeypatch, capsys):
    out = run(density, ["--quick"], monkeypatch, capsys)
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| data")]
    assert len(rows) == 10 and all(len(row.split("|")) == 10 for row in rows)
    assert out.count("digits, multi-scale Glow") == 2
    try:
        import zuko  # noqa: F401
    except ImportError:
        assert "zuko not installed" in out
    else:
        assert "two-moons, NSF at the same size" in out and "zuko" in out.splitlines()[-1]


def test_streaming_table_short_run(monkeypatch, capsys, tmp_path):
    from benchmarks import streaming

    arguments = ["--rows", "20000", "--train-rows", "2000", "--modes", "stream", "--folder", str(tmp_path)]
    out = run(streaming, arguments, monkeypatch, capsys)  # one command: the memory mode is the same code path
    assert "RowFile (--stream)" in out
    lines = [line for line in out.splitlines() if line.startswith("| 20,000 |")]
    assert [line.split(" | ")[2] for line in lines] == ["stream"]
    assert list(tmp_path.iterdir()) == []  # the files it wrote are gone


def test_distributed_scripts_run_and_parse(monkeypatch, capsys):
    import pathlib
    import subprocess

    from benchmarks import distributed

    script = pathlib.Path(distributed.__file__).with_name("distributed_cuda.sh")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    monkeypatch.setattr(sys, "argv", ["distributed", "--work", "--loss", "reverse-kl", "--batch", "64"])
    monkeypatch.setattr(distributed, "STEPS", 2)
    distributed.main()
    assert "seconds" in capsys.readouterr().out
