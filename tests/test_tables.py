"""Numeric tables from files, splits, and standardisation stored with the model."""

import math

import numpy as np
import pytest
import torch

import flowforge as nf
from flowforge.datasets import DataError, load_table, split


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_with_header_and_column_selection(tmp_path):
    path = write(tmp_path, "a.csv", "height,weight,age\n1.5,60,30\n1.8,80,40\n\n1.7,70,35\n")
    data, names = load_table(path)
    assert names == ["height", "weight", "age"] and data.shape == (3, 3) and data.dtype == torch.float64
    data, names = load_table(path, columns=["age", 0])
    assert names == ["age", "height"]
    torch.testing.assert_close(data[:, 0], torch.tensor([30.0, 40.0, 35.0], dtype=torch.float64))


def test_csv_without_header(tmp_path):
    data, names = load_table(write(tmp_path, "b.csv", "1,2\n3,4\n"))
    assert names == ["x1", "x2"] and data.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b\n1,2\n3,\n", "row 3, column 'b': missing value"),
        ("a,b\n1,2\nNA,4\n", "row 3, column 'a': missing value"),
        ("a,b\n1,2\n3,abc\n", "row 3, column 'b': 'abc' is not a number"),
        ("a,b\n1,2\n3,4,5\n", "row 3 has 3 fields, expected 2"),
        ("a,b\n1,inf\n", "row 2, column 'b': the non-finite value inf"),
        ("a,b\n", "no data rows"),
    ],
)
def test_bad_csv_files_name_the_row_and_column(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        load_table(write(tmp_path, "bad.csv", text))


def test_numpy_files(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6.0).reshape(3, 2))
    np.save(tmp_path / "b.npy", np.arange(4.0))
    np.savez(tmp_path / "c.npz", x=np.ones((2, 3)), y=np.zeros((2, 1)))
    assert load_table(tmp_path / "a.npy")[0].shape == (3, 2)
    assert load_table(tmp_path / "b.npy")[0].shape == (4, 1)
    assert load_table(tmp_path / "c.npz", key="x")[0].shape == (2, 3)
    with pytest.raises(DataError, match=r"holds arrays \['x', 'y'\]; name one with key"):
        load_table(tmp_path / "c.npz")
    np.save(tmp_path / "d.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(DataError, match="row 1, column 'x2': a missing value"):
        load_table(tmp_path / "d.npy")


def test_other_file_problems(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_table(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="unsupported file type '.json'"):
        load_table(write(tmp_path, "a.json", "{}"))
    with pytest.raises(DataError, match=r"no column 'z'; columns are \['a', 'b'\]"):
        load_table(write(tmp_path, "a.csv", "a,b\n1,2\n"), columns=["z"])


def test_split_is_seeded_and_complete():
    data = torch.arange(100.0).unsqueeze(1)
    train, validation, test = split(data, (0.7, 0.2, 0.1), seed=3)
    assert (len(train), len(validation), len(test)) == (70, 20, 10)
    assert sorted(torch.cat([train, validation, test]).flatten().tolist()) == list(range(100))
    torch.testing.assert_close(split(data, (0.7, 0.2, 0.1), seed=3)[0], train)
    with pytest.raises(ValueError, match="summing to 1"):
        split(data, (0.5, 0.2, 0.1))


def test_standardization_gives_densities_and_samples_in_data_units():
    data = torch.randn(5000, 2, dtype=torch.float64) * torch.tensor([10.0, 0.1], dtype=torch.float64) + 50
    layer = nf.flows.Standardization.from_data(data)
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), [layer]).double()
    mean, std = data.mean(0), data.std(0, unbiased=False)
    x = data[:5]
    expected = (-0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)
    torch.testing.assert_close(model.log_prob(x), expected)
    samples, _ = model.sample(20000)
    torch.testing.assert_close(samples.mean(0), mean, rtol=0.01, atol=0.2)
    with pytest.raises(ValueError, match=r"feature\(s\) \[1\] are constant"):
        nf.flows.Standardization.from_data(torch.tensor([[1.0, 2.0], [3.0, 2.0]]))


def test_numpy_files_that_cannot_be_tables(tmp_path):
    np.save(tmp_path / "complex.npy", np.ones((4, 2)) + 1j)
    np.savez(tmp_path / "objects.npz", a=np.array([1, "x", None], dtype=object))
    with open(tmp_path / "huge.npy", "wb") as handle:  # a header claiming 16 TB over 64 bytes of data
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)})
        handle.write(bytes(64))
    (tmp_path / "empty.npy").write_bytes(b"")
    cases = {
        "complex.npy": "holds complex numbers",
        "objects.npz": "holds Python objects",
        "huge.npy": r"its header claims an array of shape \(1000000000000, 2\).*holds 64 bytes of data",
        "empty.npy": "cannot read as a NumPy file",
    }
    for name, message in cases.items():
        with pytest.raises(DataError, match=message):
            load_table(tmp_path / name)
    np.save(tmp_path / "big.npy", np.zeros((100, 2)))
    with pytest.raises(DataError, match="over the limit of 1 KiB"):
        load_table(tmp_path / "big.npy", max_bytes=1024)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1.0,2.0\n3.5,caf\xe9\n".encode("latin-1"), r"not UTF-8 text \(byte 0xe9 at offset 19\)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "holds binary data"),
        (b"", "no data rows"),
    ],
)
def test_text_files_that_cannot_be_read(tmp_path, content, message):
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_table(path)


def test_utf8_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffhöhe,b\n1,2\n3,4\n".encode())
    assert load_table(path)[1] == ["höhe", "b"]


def test_whitening_keeps_float64_statistics_for_float32_layers():
    # data 1e9 from the origin with a spread of 1: float32 cannot hold them apart, float64 can
    data = 1e9 + torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whitening = nf.flows.Whitening.from_data(data)
    assert whitening.mean.dtype == torch.float64
    z, log_det = whitening.inverse(data)
    assert z.dtype == torch.float64 and abs(float(z.std()) - 1) < 0.01 and log_det.dtype == torch.float64
    x, _ = whitening.forward(z.float())  # a float32 input comes back float32, computed in float64
    assert x.dtype == torch.float32
    back, _ = whitening.forward(z)
    torch.testing.assert_close(back, data)
