"""The README's quick start runs: every ```python runnable block is executed, with its sizes made small.

Each size substitution must match the README's text exactly, so a change to the quick start that the
substitutions no longer cover fails here instead of turning into a long run.
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# The README's sizes (the seed's 20000 steps, a 10000-row data set) and the small ones run here.
SMALL = [
    ("iterations, anneal = 20000, 10000", "iterations, anneal = 100, 50"),
    ("print(nf.metrics.summary(model))", "print(nf.metrics.summary(model, num_samples=1000, grid_size=40))"),
    ('nf.datasets.TOY_DATA["two-moons"](10000, seed=0)', 'nf.datasets.TOY_DATA["two-moons"](500, seed=0)'),
    ("epochs=50)", "epochs=2, progress=False)"),
]


def runnable_blocks() -> list[str]:
    return re.findall(r"^```python runnable\n(.*?)^```$", README.read_text(encoding="utf-8"), re.S | re.M)


def test_readme_has_runnable_blocks():
    assert len(runnable_blocks()) >= 1


@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    source = runnable_blocks()[index]
    for text, small in SMALL:
        source = source.replace(text, small)
    long_sizes = [text for text, _ in SMALL if text in source]
    assert not long_sizes, f"sizes not made small: {long_sizes}"
    monkeypatch.chdir(tmp_path)
    exec(compile(source, f"README.md block {index}", "exec"), {"__name__": "__readme__"})


def test_every_size_substitution_is_used():
    blocks = "\n".join(runnable_blocks())
    unused = [text for text, _ in SMALL if text not in blocks]
    assert not unused, f"the README no longer contains {unused}: update SMALL"
