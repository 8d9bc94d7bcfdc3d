"""Tables larger than memory: LazyRows views of .npy files, streaming moments, fits that read a batch at a
time (the same fit as from a tensor), `flowforge convert` and `fit --data --stream`."""

import json

import numpy as np
import pytest
import torch

import flowforge as nf
from flowforge.cli import main
from flowforge.datasets import DataError
from flowforge.streaming import CHUNK_ROWS, LazyRows, RowFile, as_rows, csv_to_npy, mean_and_standard_error, moments

QUICK = ["--epochs", "2", "--no-progress", "--hidden", "16", "--layers", "2"]


def run(*arguments):
    return main([str(a) for a in arguments])


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3000, 3)) @ np.array([[1.0, 0.5, 0.2], [0.0, 0.7, 0.2], [0.0, 0.0, 0.5]])
    path = tmp_path / "table.npy"
    np.save(path, values)
    return path, values


class CountingRows(LazyRows):
    """A view that records the largest number of rows read at once."""

    largest = 0

    def _read(self, file_rows):
        count = len(range(*file_rows.indices(self.array.shape[0]))) if isinstance(file_rows, slice) else len(file_rows)
        CountingRows.largest = max(CountingRows.largest, count)
        return super()._read(file_rows)


def test_views_select_rows_and_columns_in_the_order_asked(table):
    path, values = table
    rows = LazyRows.open(path)
    assert rows.shape == (3000, 3) and len(rows) == 3000
    index = torch.tensor([2999, 0, 17, 17, 5])
    assert torch.equal(rows.take(index), torch.from_numpy(values[index.numpy()]))
    part = rows.subset(np.array([10, 3, 2000])).select([2, 0])
    assert part.shape == (3, 2)
    assert torch.equal(part.take([2, 0]), torch.from_numpy(values[[2000, 10]][:, [2, 0]]))
    assert torch.equal(part.to_tensor(), torch.from_numpy(values[[10, 3, 2000]][:, [2, 0]]))
    doubled = part.map(lambda x: 2 * x).map(lambda x: x + 1)
    assert torch.equal(doubled.to_tensor(), 2 * part.to_tensor() + 1)
    assert torch.equal(torch.cat(list(rows.chunks(1000))), torch.from_numpy(values))
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        part.take([3])
    with pytest.raises(ValueError, match="1-D array of integers"):
        rows.take(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="2-D NumPy array"):
        LazyRows(np.zeros(4))
    with pytest.raises(ValueError, match="before mapping"):
        doubled.select([0])


def test_opening_checks_the_file_and_every_value(tmp_path):
    np.save(tmp_path / "column.npy", np.arange(5.0))
    assert LazyRows.open(tmp_path / "column.npy").shape == (5, 1)
    bad = np.zeros((CHUNK_ROWS + 10, 2))
    bad[CHUNK_ROWS + 3, 1] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataError, match=rf"row {CHUNK_ROWS + 4}, column 'x2': the non-finite value inf"):
        LazyRows.open(tmp_path / "bad.npy")
    bad[:] = 0
    bad[1, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match=r"row 2, column 'x1': a missing value \(NaN\)"):
        LazyRows.open(tmp_path / "nan.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="2-D array"):
        LazyRows.open(tmp_path / "cube.npy")
    np.save(tmp_path / "words.npy", np.array([["a", "b"]]))
    with pytest.raises(DataError, match="real numbers"):
        LazyRows.open(tmp_path / "words.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 2)))
    with pytest.raises(DataError, match="no data rows"):
        LazyRows.open(tmp_path / "empty.npy")
    np.save(tmp_path / "short.npy", np.zeros((1000, 2)))
    (tmp_path / "short.npy").write_bytes((tmp_path / "short.npy").read_bytes()[:500])
    with pytest.raises(DataError, match="damaged"):
        LazyRows.open(tmp_path / "short.npy")
    with pytest.raises(DataError, match="only .npy files are read"):
        LazyRows.open(tmp_path / "table.csv")
    with pytest.raises(DataError, match="no such file"):
        LazyRows.open(tmp_path / "missing.npy")


def test_streaming_moments_match_the_covariance_in_memory_far_from_the_origin():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * CHUNK_ROWS + 123, 3, generator=generator, dtype=torch.float64)
    x = x @ torch.tensor([[1.0, 0.3, 0.0], [0.0, 2.0, 0.1], [0.0, 0.0, 0.5]], dtype=torch.float64) + 1e6
    mean, covariance = moments(LazyRows(x.numpy()))
    torch.testing.assert_close(mean, x.mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(covariance, torch.cov(x.T, correction=0), rtol=1e-10, atol=1e-10)
    assert torch.equal(moments(x)[0], mean)  # a tensor goes through the same chunks
    values = x[:, 1]
    streamed = mean_and_standard_error(values.split(1000))
    expected = (float(values.mean()), float(values.std() / len(values) ** 0.5))
    np.testing.assert_allclose(streamed, expected, rtol=1e-9)


def test_a_fit_reading_batches_from_a_memory_mapped_file_is_the_fit_from_a_tensor(table):
    path, values = table
    context = np.random.default_rng(1).standard_normal((3000, 1))
    np.save(path.with_name("context.npy"), context)

    def fit(train, validation, train_c, validation_c):
        torch.manual_seed(0)
        model = nf.MAF(3, 2, hidden=16, context_features=1)
        result = nf.training.fit_data(
            model, train, validation, train_context=train_c, validation_context=validation_c, epochs=3,
            batch_size=128, seed=3, progress=False,
        )  # fmt: skip
        return model, result

    tensors = torch.from_numpy(values), torch.from_numpy(context)
    in_memory, expected = fit(tensors[0][:2500], tensors[0][2500:], tensors[1][:2500], tensors[1][2500:])
    rows = LazyRows.open(path)
    mapped = np.load(path.with_name("context.npy"), mmap_mode="r")
    streamed, result = fit(
        rows.subset(np.arange(2500)), rows.subset(np.arange(2500, 3000)), mapped[:2500], mapped[2500:]
    )
    np.testing.assert_array_equal(result.validation_nll, expected.validation_nll)
    for name, tensor in in_memory.state_dict().items():
        assert torch.equal(tensor, streamed.state_dict()[name]), name


def test_a_fit_never_reads_more_than_a_chunk_of_rows_at_once(tmp_path):
    values = np.random.default_rng(0).standard_normal((CHUNK_ROWS + 5000, 2)).astype(np.float32)
    np.save(tmp_path / "long.npy", values)
    CountingRows.largest = 0
    rows = CountingRows.open(tmp_path / "long.npy")
    train, validation = rows.subset(np.arange(CHUNK_ROWS + 1000)), rows.subset(np.arange(CHUNK_ROWS + 1000, len(rows)))
    nf.training.fit_data(nf.RealNVP(2, 2, hidden=4), train, validation, epochs=1, batch_size=8192, progress=False)
    assert CountingRows.largest == CHUNK_ROWS  # the checking pass's chunks; batches (8192) and validation (4096) less


def test_nll_and_the_gaussian_baseline_read_on_demand_equal_those_in_memory(table):
    path, values = table
    rows, tensor = LazyRows.open(path), torch.from_numpy(values)
    model = nf.RealNVP(3, 2, hidden=8).double()
    torch.testing.assert_close(nf.metrics.nll_per_row(model, rows, 512), nf.metrics.nll_per_row(model, tensor))
    train, test = rows.subset(np.arange(2000)), rows.subset(np.arange(2000, 3000))
    streamed = nf.metrics.gaussian_nll(train, test)
    in_memory = nf.metrics.gaussian_nll(tensor[:2000], tensor[2000:])
    np.testing.assert_allclose(streamed, in_memory, rtol=1e-12)


def test_csv_converts_in_chunks_with_the_header_and_blank_lines(tmp_path):
    source = tmp_path / "t.csv"
    source.write_text('a,"b",c\n1,2,3\n\n4.5,"-5",6e2\n, ,\n7,8,9\n10,11,12\n', encoding="utf-8")
    shape, names = csv_to_npy(source, tmp_path / "t.npy", chunk_rows=2)
    assert shape == (4, 3) and names == ["a", "b", "c"]
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), [[1, 2, 3], [4.5, -5, 600], [7, 8, 9], [10, 11, 12]])
    (tmp_path / "plain.csv").write_text("1;2\n3;4\n")
    shape, names = csv_to_npy(tmp_path / "plain.csv", tmp_path / "plain.npy", delimiter=";", dtype=np.float32)
    assert names == ["x1", "x2"] and np.load(tmp_path / "plain.npy").dtype == np.float32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3,na\n", "line 3, column 'b': missing value"),
        ("a,b\n1,2\n\n3,x\n", "line 4, column 'b': 'x' is not a number"),
        ("a,b\n1,2\n3,inf\n", "line 3, column 'b': the non-finite value inf"),
        ("a,b\n1,2\n3\n", "line 3 has 1 fields, expected 2"),
        ("a,b\n", "no data rows"),
        ("a,b\n1,\x002\n", "line 2, column .b.: .* is not a number"),
    ],
)
def test_a_bad_csv_names_its_line_and_leaves_no_file(tmp_path, text, message):
    source = tmp_path / "bad.csv"
    source.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        csv_to_npy(source, tmp_path / "bad.npy", chunk_rows=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_float32_overflow_and_bytes_that_are_not_utf8_are_refused(tmp_path):
    (tmp_path / "big.csv").write_text("1,2\n1e300,3\n")
    with pytest.raises(DataError, match="line 2, column 'x1': 1e\\+300 overflows float32"):
        csv_to_npy(tmp_path / "big.csv", tmp_path / "big.npy", dtype=np.float32)
    (tmp_path / "latin.csv").write_bytes(b"a,b\n1,\xe92\n")
    with pytest.raises(DataError, match="not UTF-8"):
        csv_to_npy(tmp_path / "latin.csv", tmp_path / "latin.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv", "latin.csv"]


def test_convert_then_fit_streaming_a_conditional_table(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((1500, 3))
    rows[:, 1] += rows[:, 2]
    lines = ["u,v,label"] + [",".join(f"{v:.17g}" for v in row) for row in rows]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    assert run("convert", tmp_path / "t.csv", tmp_path / "t.npy") == 0
    assert "1500 rows x 3 columns" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), rows)
    assert run("convert", tmp_path / "t.csv", tmp_path / "t.npy") == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert run("convert", tmp_path / "t.csv", tmp_path / "t.npy", "--overwrite", "--dtype", "float32") == 0
    assert np.load(tmp_path / "t.npy").dtype == np.float32
    assert run("convert", tmp_path / "t.csv", tmp_path / "t.csv") == 2
    assert "written as .npy" in capsys.readouterr().err
    out = tmp_path / "run"
    assert run("fit", "--data", tmp_path / "t.npy", "--stream", "--context", "2", *QUICK, "--out", out) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["stream"] is True and config["context_names"] == ["x3"]
    samples = np.loadtxt(out / "samples.csv", delimiter=",", skiprows=1)
    assert samples.shape == (150, 3) and np.isfinite(samples).all()
    assert run("sample", out, "-n", "20", "-o", tmp_path / "s.csv", "--context", "0.5") == 0


def test_a_streamed_run_fits_as_well_as_one_in_memory_and_records_the_same_data(tmp_path, table):
    path, values = table
    assert run("fit", "--data", path, *QUICK, "--out", tmp_path / "memory") == 0
    assert run("fit", "--data", path, "--stream", *QUICK, "--out", tmp_path / "stream") == 0
    memory, stream = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("memory", "stream"))
    configs = [json.loads((tmp_path / r / "config.json").read_text()) for r in ("memory", "stream")]
    assert configs[0]["data_sha256"] == configs[1]["data_sha256"]
    assert memory["rows"] == stream["rows"]
    # the same rows in each split (in file order, so the batches differ): the same Gaussian baseline
    assert stream["gaussian_test_nll"] == pytest.approx(memory["gaussian_test_nll"], rel=1e-12)
    assert stream["test_nll"] == pytest.approx(memory["test_nll"], abs=0.05)
    assert stream["test_nll"] < stream["gaussian_test_nll"] + 0.05


def test_stream_takes_only_npy_files(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,4\n")
    assert run("fit", "--data", tmp_path / "t.csv", "--stream", *QUICK, "--out", tmp_path / "run") == 2
    assert "flowforge convert" in capsys.readouterr().err
    assert run("fit", "--data", "two-moons", "--stream", *QUICK, "--out", tmp_path / "run") == 2
    assert not (tmp_path / "run").exists()


def _mapped_kib(path) -> int | None:
    """The resident size of the process's mappings of ``path`` (Linux's /proc/self/smaps) in KiB; None
    where there is no smaps."""
    try:
        lines = open("/proc/self/smaps", encoding="utf-8").read().splitlines()
    except OSError:
        return None
    total, inside = 0, False
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's first line: address range, ..., path
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_a_row_file_reads_runs_of_rows_without_mapping_the_file(tmp_path):
    path = (tmp_path / "wide.npy").resolve()
    values = np.random.default_rng(0).standard_normal((5000, 7)).astype(np.float32)
    np.save(path, values)
    file = RowFile(path)
    assert file.shape == (5000, 7) and file.dtype == np.float32
    np.testing.assert_array_equal(file[10:2000], values[10:2000])
    np.testing.assert_array_equal(file[4990:9999], values[4990:])
    rows = np.array([0, 1, 2, 2, 7, 8, 4999])  # runs, a repeated row, the last row
    np.testing.assert_array_equal(file[rows], values[rows])
    assert file[np.array([], dtype=np.int64)].shape == (0, 7)
    generator = torch.Generator().manual_seed(0)
    opened = LazyRows.open(path)
    for _ in range(50):
        index = torch.randint(len(opened), (256,), generator=generator)
        assert torch.equal(opened.take(index), torch.from_numpy(values[index.numpy()]).double())
    assert _mapped_kib(path) in (0, None)  # nothing of the file is resident in the process
    mapped = LazyRows(np.load(path, mmap_mode="r"))  # a memory map works too, and maps what it reads
    assert torch.equal(mapped.take(torch.tensor([3, 1])), torch.from_numpy(values[[3, 1]]).double())
    np.save(tmp_path / "fortran.npy", np.asfortranarray(values))
    with pytest.raises(DataError, match="Fortran order"):
        RowFile(tmp_path / "fortran.npy")
    with pytest.raises(ValueError, match="without a step"):
        file[::2]


def test_the_documented_script_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "streaming.md").read_text(encoding="utf-8")
    (source,) = re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M)
    assert "epochs=10, batch_size=1024)" in source
    source = source.replace("epochs=10, batch_size=1024)", "epochs=1, batch_size=128, progress=False)")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "table.npy", rng.standard_normal((600, 3)) + 100)
    monkeypatch.chdir(tmp_path)
    exec(compile(source, "docs/streaming.md", "exec"), {"__name__": "__docs__"})


def test_numpy_arrays_go_wherever_tensors_go_and_bad_indices_are_refused(table, tmp_path):
    path, values = table
    mapped = np.load(path, mmap_mode="r")
    model = nf.RealNVP(3, 2, hidden=8).double()
    torch.testing.assert_close(
        nf.metrics.nll_per_row(model, mapped), nf.metrics.nll_per_row(model, torch.from_numpy(values))
    )
    assert nf.metrics.mean_nll(model, mapped) == pytest.approx(nf.metrics.mean_nll(model, torch.from_numpy(values)))
    np.testing.assert_allclose(
        nf.metrics.gaussian_nll(mapped[:2000], mapped[2000:]),
        nf.metrics.gaussian_nll(torch.from_numpy(values[:2000]), torch.from_numpy(values[2000:])),
        rtol=1e-12,
    )
    labels = as_rows(np.arange(4), "labels")  # 1-D (labels): a tensor in memory, integers kept
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64
    with pytest.raises(TypeError, match="train_data must hold real numbers"):
        as_rows(np.array([["a"]]), "train_data")
    with pytest.raises(TypeError, match="context must be a tensor, a NumPy array or LazyRows, got list"):
        as_rows([[1.0]], "context")
    file = RowFile(path)
    for bad in ([-1], [3000], [5, 2]):
        with pytest.raises(IndexError, match=r"increasing row numbers in \[0, 3000\)"):
            file[np.array(bad)]
    view = LazyRows.open(path).select([2, 0])
    with pytest.raises(ValueError, match=r"columns \[-1\] out of range for a view of 2 columns"):
        view.select([-1])
    np.save(tmp_path / "durations.npy", np.array([[1, 2]], dtype="timedelta64[s]"))
    with pytest.raises(DataError, match="real numbers"):
        LazyRows.open(tmp_path / "durations.npy")


def test_a_first_row_with_a_missing_value_is_data_not_a_header(tmp_path, capsys):
    (tmp_path / "gap.csv").write_text("1,,3\n4,5,6\n")
    with pytest.raises(DataError, match="line 1, column 'x2': missing value"):
        csv_to_npy(tmp_path / "gap.csv", tmp_path / "gap.npy")
    with pytest.raises(DataError, match="row 1, column 'x2': missing value"):
        nf.datasets.load_table(tmp_path / "gap.csv")
    (tmp_path / "tabs.csv").write_text("a\tb\n1\t2\n")
    assert run("convert", tmp_path / "tabs.csv", tmp_path / "tabs.npy", "--delimiter", "\\t") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "tabs.npy"), [[1.0, 2.0]])
    assert run("convert", tmp_path / "tabs.npy", tmp_path / "again.npy") == 2
    assert "is a NumPy file already" in capsys.readouterr().err
