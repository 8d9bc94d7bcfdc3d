"""The seed script our users run today, executed unchanged but for a shorter schedule."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib import pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seed_demo.py"
SHARED_SEED = ROOT.parent / "shared" / "seed-demo.py"
SHORT_SCHEDULE = {
    "max_iter = 20000": "max_iter = 400",
    "anneal_iter = 10000": "anneal_iter = 200",
    "grid_size = 200": "grid_size = 50",
    "2 ** 20": "2 ** 12",
}


def test_examples_copy_is_the_shared_seed():
    if not SHARED_SEED.exists():
        pytest.skip("../shared is not beside this checkout")
    assert SEED.read_text() == SHARED_SEED.read_text()


def test_seed_script_runs_against_flowforge(tmp_path, monkeypatch):
    source = SEED.read_text()
    for old, new in SHORT_SCHEDULE.items():
        assert old in source, f"the seed script no longer contains {old!r}"
        source = source.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(source, str(SEED), "exec"), namespace)
    finally:
        plt.close("all")
    # The seed uses flowforge's native names only: nothing of the normflows bridge or a retired name.
    flowforge_warnings = [str(w.message) for w in caught if re.search(r"flowforge|normflows", str(w.message))]
    assert flowforge_warnings == []
    for name in ("target.png", "initial.png", "frame-200.png", "frame-400.png", "learned.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    losses = namespace["loss_hist"]
    assert losses.shape == (400,) and np.isfinite(losses).all()
    assert losses[-50:].mean() < losses[:50].mean()
