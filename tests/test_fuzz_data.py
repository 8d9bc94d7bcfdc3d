"""Property-based fuzzing of the data files ``flowforge fit --data FILE`` and ``flowforge vae --data FILE``
read (issue 16): CSV and TXT text in several encodings or binary junk, with or without a header, ragged,
with missing, non-finite or extreme cells; ``.npy`` arrays of every dtype and shape (0 rows, 1 row, 1
column, 3-D, complex, object, strings, dates) and crafted headers (terabyte shapes, unknown dtypes, cut
short); ``.npz`` archives with zero to three arrays, damaged or foreign zips; other suffixes, folders,
named pipes and dangling links in the place of a file.

The properties, the settings and how to run longer are those of ``tests/test_fuzz_cli.py``; the
strategies are in ``tests/fuzz_strategies.py``.
"""

import pytest
from fuzz_strategies import TINY_VAE, Case, check, data_file_cases, data_files, fuzz_settings, out_folders
from hypothesis import given
from hypothesis import strategies as st


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-data")


@fuzz_settings(22)
@given(case=data_file_cases())
def test_fit_reads_any_data_file(base, case):
    check(case, base)


@st.composite
def vae_file_cases(draw):
    name, content = draw(data_files([".npy"]))
    likelihood = draw(st.sampled_from(["gaussian", "bernoulli"]))
    out_argv, files, out = draw(out_folders())
    argv = ["vae", "--data", name, "--likelihood", likelihood, *TINY_VAE, *out_argv]
    return Case(argv, {name: content, **files}, out)


@fuzz_settings(20)
@given(case=vae_file_cases())
def test_vae_reads_any_data_file(base, case):
    check(case, base)
