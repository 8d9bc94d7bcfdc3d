"""Property-based fuzzing of ``flowforge sample`` (issue 16): its arguments (``-n``, ``-o`` names and
places, ``--seed``, ``--log-prob``, ``--context``, ``--label``, the run folder) on real runs of every
sampled kind, and checkpoints: empty, random bytes, a real ``model.pt`` cut short, a folder named
``model.pt``, a pickled payload, a real checkpoint whose config is changed (unknown flow, kind or
target; layers huge, negative, fractional or text; missing keys; wrong types) or whose weights are
NaN, infinite, misshapen or missing.

On top of the properties of ``tests/test_fuzz_cli.py``: ``sample`` exits 0 only with ``-n`` finite rows
in ``-o``, never changes its run folder, and never runs a pickled payload (it would create a file).
The strategies are in ``tests/fuzz_strategies.py``.
"""

import json

import pytest
import torch
from fuzz_strategies import (
    Case,
    apply_mutation,
    check,
    checkpoint_mutations,
    fuzz_settings,
    sample_arguments,
)
from hypothesis import given
from hypothesis import strategies as st

from flowforge.cli import main
from flowforge.cli.models import build_data_model
from flowforge.cli.runs import CHECKPOINT, CONFIG, save_checkpoint, write_json
from flowforge.datasets import DIGITS_LEVELS

TINY_FIT = "--layers 1 --iterations 2 --frame-every 0 --frame-samples 32 --grid-size 6 --eval-samples 20 --kl-grid 6"
QUICK_DATA = "--epochs 1 --layers 1 --hidden 4 --no-progress"
KINDS = ["target", "table", "context", "images", "labels"]


def _images_run(folder, class_cond: bool) -> None:
    """An images run as ``fit --data digits`` writes it, built without its seconds of training."""
    config = {
        "data": "digits",
        "names": None,
        "context_names": [],
        "class_cond": class_cond,
        "flow": "glow",
        "layers": 1,
        "hidden": 4,
        "scales": 1,
        "shape": [1, 8, 8],
        "levels": DIGITS_LEVELS,
        "split": [0.8, 0.1, 0.1],
        "rows": {"train": 1437, "validation": 180, "test": 180},
        "epochs": 1,
        "batch_size": 64,
        "patience": 20,
        "lr": 0.001,
        "weight_decay": 0.0001,
        "clip_grad": 10.0,
        "seed": 0,
        "device": "cpu",
        "flowforge_version": "0.1.0",
        "kind": "images",
    }
    folder.mkdir()
    save_checkpoint(folder, config, build_data_model(config))
    write_json(folder / CONFIG, {**config, "status": "complete"})


def build_runs(root):
    """A real run of each sampled kind in ``root``: ``{kind: (folder, config keys, context columns)}``."""
    table = root / "table.csv"
    rows = torch.randn(80, 3, generator=torch.Generator().manual_seed(0)).double()
    table.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in rows.tolist()) + "\n")
    commands = {
        "target": f"fit {TINY_FIT} --compile off --no-progress",
        "table": f"fit --data two-moons --num-data 80 {QUICK_DATA}",
        "context": f"fit --data {table} --context c {QUICK_DATA}",
    }
    for kind, command in commands.items():
        assert main([*command.split(), "--out", str(root / kind)]) == 0, kind
    _images_run(root / "images", class_cond=False)
    _images_run(root / "labels", class_cond=True)
    found = {}
    for kind in KINDS:
        config = torch.load(root / kind / CHECKPOINT, weights_only=True)["config"]
        found[kind] = (root / kind, sorted(config), len(config.get("context_names") or []))
    return found


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-sample")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build_runs(tmp_path_factory.mktemp("fuzz-sample-runs"))


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@st.composite
def argument_cases(draw, runs):
    folder, _, context = runs[draw(st.sampled_from(KINDS))]
    return draw(sample_arguments(_files(folder), context))


@st.composite
def checkpoint_cases(draw, runs):
    kind = draw(st.sampled_from(KINDS))
    folder, keys, context = runs[kind]
    files = {**_files(folder), CHECKPOINT: apply_mutation(folder / CHECKPOINT, draw(checkpoint_mutations(keys)))}
    argv = ["sample", "run", "-n", "3", "-o", "s.npy", *(["--context", "0.5"] if context else [])]
    if kind not in ("images", "labels") and draw(st.booleans()):  # image runs refuse --log-prob
        argv.append("--log-prob")
    return Case(argv, {f"run/{name}": content for name, content in files.items()}, output="s.npy", writes_run=False)


@fuzz_settings(30)
@given(data=st.data())
def test_sample_arguments(base, runs, data):
    check(data.draw(argument_cases(runs)), base)


@fuzz_settings(35)
@given(data=st.data())
def test_sample_reads_any_checkpoint(base, runs, data):
    check(data.draw(checkpoint_cases(runs)), base)


def test_the_real_runs_are_sampled(base, runs):
    """Each real run, unchanged, is sampled: the checkpoint mutations start from working runs."""
    for kind in KINDS:
        folder, _, context = runs[kind]
        argv = ["sample", "run", "-n", "3", "-o", "s.npy", *(["--context", "0.5"] if context else [])]
        check(
            Case(
                argv,
                {f"run/{name}": content for name, content in _files(folder).items()},
                output="s.npy",
                writes_run=False,
            ),
            base,
        )
    assert json.loads((runs["images"][0] / CONFIG).read_text())["kind"] == "images"
