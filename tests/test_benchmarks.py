"""Short runs of the benchmark scripts, so a change that breaks them fails here."""

import sys

from benchmarks import density, quality, seed_workload


def run(module, argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
    module.main()
    return capsys.readouterr().out


def test_quality_table_short_run(monkeypatch, capsys):
    out = run(quality, ["--iterations", "5", "--presets", "realnvp", "nsf"], monkeypatch, capsys)
    rows = [line for line in out.splitlines() if line.startswith("| realnvp") or line.startswith("| nsf")]
    assert len(rows) == 2 and all(len(row.split("|")) == 11 for row in rows)


def test_seed_workload_short_run(monkeypatch, capsys):
    out = run(seed_workload, ["--iterations", "20", "--block", "10", "--compile", "off"], monkeypatch, capsys)
    for contender in ("flowforge-seed-loop", "flowforge-fit"):
        assert contender in out
    try:
        import normflows  # noqa: F401
    except ImportError:
        assert "normflows is not installed" in out
    else:
        assert "normflows-seed-loop" in out


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
