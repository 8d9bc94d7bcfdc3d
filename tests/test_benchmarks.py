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


def _installed(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def test_speed_suite_smoke_run(monkeypatch, capsys):
    argv = ["--quick", "--no-cold", "--compile", "off", "--same-process", "--only", "seed", "coupling", "ar64"]
    out = run(suite, argv, monkeypatch, capsys)
    peers = [name for name in ("normflows", "zuko", "nflows") if _installed(name)]
    assert "flowforge: the seed script's loop" in out and "`training.fit` as `flowforge demo`, warm" in out
    assert ("normflows: the seed script's loop" in out) == ("normflows" in peers)
    for title in ("affine coupling x8", "RQ-spline coupling x8", "MAF x4", "autoregressive NSF x4"):
        assert title in out
    rows = [line for line in out.splitlines() if line.startswith(("| flowforge |", *(f"| {p} |" for p in peers)))]
    assert len(rows) == 4 * (1 + len(peers))
    assert out.count("flowforge / fastest peer, training") == 4


def test_sections_run_in_fresh_processes_with_the_other_options():
    argv = ["--quick", "--only", "seed", "ar64", "--repeats", "2", "--only=memory", "--no-cold"]
    assert suite._argv_without_only(argv) == ["--quick", "--repeats", "2", "--no-cold"]


def test_memory_probe_measures_sampling_in_this_process():
    probe = suite.memory_probe("flowforge", "planar", "plot helper", 4096)
    assert probe["peak_mb"] >= 0 and probe["seconds"] > 0


@pytest.mark.slow
def test_speed_suite_quick_run_with_cold_compile_and_memory(monkeypatch, capsys):
    out = run(suite, ["--quick", "--same-process", "--only", "seed", "memory"], monkeypatch, capsys)
    assert "cold compile cache" in out and "Peak memory" in out


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
