"""Property-based fuzzing of the ``flowforge`` command line (issue 16): every command's options with valid
and invalid values, and a few real processes.

Every example must end with exit status 0 or 2; on 2 with exactly one ``flowforge: error: ...`` line on
stderr; never with a traceback; without creating, changing or deleting any file outside its ``--out``
(inputs included); and, when it succeeds, with ``"status": "complete"`` in ``config.json`` and strict
JSON in ``metrics.json``. What is generated and checked is in ``tests/fuzz_strategies.py``; data files
and checkpoints are fuzzed in ``tests/test_fuzz_data.py`` and ``tests/test_fuzz_sample.py``.

The examples are reproducible: Hypothesis draws them from a fixed seed (``derandomize=True``, no example
database), and each property runs the number of examples written beside it, which together keep the
fuzz suite under a minute on two cores. To search longer, or afresh::

    FLOWFORGE_FUZZ_EXAMPLES=500 pytest tests/test_fuzz_*.py           # 500 examples per property
    FLOWFORGE_FUZZ_RANDOM=1 FLOWFORGE_FUZZ_EXAMPLES=200 pytest tests/test_fuzz_*.py   # new examples each run

A failure prints the smallest command found, its files, its exit status and output, and (with
``FLOWFORGE_FUZZ_RANDOM``) the ``@reproduce_failure`` line that replays it.
"""

import os
import subprocess
import sys

import pytest
from fuzz_strategies import (
    Case,
    Outcome,
    check,
    compare_cases,
    fit_cases,
    fuzz_settings,
    junk_cases,
    mcmc_cases,
    named_data_cases,
    problems,
    run_case,
    snapshot,
    vae_cases,
)
from hypothesis import given
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The folder under which each example gets a fresh working directory."""
    return tmp_path_factory.mktemp("fuzz-cli")


@fuzz_settings(14)
@given(case=fit_cases())
def test_fit_and_demo_options(base, case):
    check(case, base)


@fuzz_settings(10)
@given(case=named_data_cases())
def test_fit_data_options(base, case):
    check(case, base)


@fuzz_settings(25)
@given(case=mcmc_cases())
def test_mcmc_options(base, case):
    check(case, base)


@fuzz_settings(8)
@given(case=compare_cases())
def test_compare_options(base, case):
    check(case, base)


@fuzz_settings(15)
@given(case=vae_cases())
def test_vae_options(base, case):
    check(case, base)


@fuzz_settings(20)
@given(case=junk_cases())
def test_unknown_commands_and_options(base, case):
    check(case, base)


@fuzz_settings(2)
@given(case=st.one_of(mcmc_cases(), junk_cases()))
def test_a_real_process(tmp_path_factory, case):
    """``python -m flowforge`` as a shell runs it: the exit status of the process, and everything on its
    stderr (warnings and messages printed below Python included)."""
    root = tmp_path_factory.mktemp("process")
    argv = case.materialise(root)
    before = snapshot(root)
    environment = {**os.environ, "PYTHONWARNINGS": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "flowforge", *argv], cwd=root, capture_output=True, text=True, env=environment
    )
    outcome = Outcome(argv, done.returncode, done.stdout, done.stderr)
    found = problems(case, root, before, snapshot(root), outcome)
    assert not found, f"{found}\n  argv: {case.argv}\n  exit: {done.returncode}\n  stderr: {done.stderr[-3000:]}"


def test_the_checks_catch_what_they_are_for(base):
    """The checker itself: a refused run passes; a traceback, two lines, a file written outside --out, a bad
    exit status and a status left "running" are caught."""
    outcome, found = run_case(Case(["mcmc", "--chains", "0", "--out", "run"], out="run"), base)
    assert outcome.status == 2 and found == []
    root = base / "checker"
    (root / "run").mkdir(parents=True)
    before = snapshot(root)
    (root / "stray.txt").write_text("x")
    (root / "run" / "config.json").write_text('{"status": "running"}')
    bad = Outcome([], 2, "", "Traceback (most recent call last):\nboom\n")
    found = {problem.split(":")[0] for problem in problems(Case([], out="run"), root, before, snapshot(root), bad)}
    assert found == {
        "stderr has 2 lines",
        "stderr does not start with 'flowforge",
        "traceback in stderr",
        "file created outside --out/-o",
        "exit 2 but config.json status 'running'",
    }
    found = problems(Case([], out="run"), root, before, before, Outcome([], 3, "", ""))
    assert found == ["exit status 3"]
