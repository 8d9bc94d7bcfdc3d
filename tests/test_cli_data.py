"""`flowforge fit --data`: run folders for tables, toy sets and images, sampling them, and bad data files."""

import json

import numpy as np
import pytest

from flowforge.cli import main

QUICK = ["--epochs", "3", "--no-progress", "--hidden", "16", "--layers", "2"]


def run(*arguments):
    return main([str(a) for a in arguments])


def test_toy_set_run_folder_has_numbers_samples_and_pictures(tmp_path):
    out = tmp_path / "moons"
    assert run("fit", "--data", "two-moons", "--num-data", "3000", *QUICK, "--out", out) == 0
    assert {"config.json", "metrics.json", "model.pt", "loss.png", "samples.csv", "pairs.png", "comparison.png"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "config.json").read_text())["kind"] == "table"
    numbers = json.loads((out / "metrics.json").read_text())
    assert numbers["rows"] == {"train": 2400, "validation": 300, "test": 300}
    assert numbers["test_nll"] < numbers["gaussian_test_nll"]
    samples = np.loadtxt(out / "samples.csv", delimiter=",", skiprows=1)
    assert samples.shape == (300, 2) and np.isfinite(samples).all()
    assert run("sample", out, "-n", "50", "-o", tmp_path / "more.csv", "--log-prob") == 0
    assert np.loadtxt(tmp_path / "more.csv", delimiter=",", skiprows=1).shape == (50, 3)


def test_samples_are_in_the_data_units(tmp_path):
    rng = np.random.default_rng(0)
    table = np.column_stack([1000 + 50 * rng.standard_normal(2000), -3 + 0.01 * rng.standard_normal(2000)])
    path = tmp_path / "table.npy"
    np.save(path, table)
    assert run("fit", "--data", path, *QUICK, "--out", tmp_path / "run") == 0
    samples = np.loadtxt(tmp_path / "run" / "samples.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(samples.mean(0), table.mean(0), rtol=0.01)
    np.testing.assert_allclose(samples.std(0), table.std(0), rtol=0.25)


def test_a_nearly_constant_column_still_gets_its_pictures(tmp_path):
    # Found by the fuzz suite: a column whose 0.5 and 99.5 percentiles are equal gave the comparison
    # picture bounds of zero width (the binning then divided by zero).
    rng = np.random.default_rng(0)
    table = np.column_stack([rng.standard_normal(400), np.zeros(400)])
    table[:3, 1] = [1.0, -1.0, 0.5]
    np.save(tmp_path / "flat.npy", table)
    assert run("fit", "--data", tmp_path / "flat.npy", *QUICK, "--out", tmp_path / "run") == 0
    assert (tmp_path / "run" / "comparison.png").is_file()


def test_data_far_from_the_origin_fit_as_well_as_data_at_it(tmp_path, capsys):
    # float32 holds 1e9 + N(0, 1) as a few multiples of 64: the whitening must happen in float64 (three
    # columns: no density picture, which is slow)
    rng = np.random.default_rng(0)
    table = rng.standard_normal((400, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 0.7, 0.2], [0.0, 0.0, 0.5]])
    numbers = {}
    for offset in (0.0, 1e9):
        np.save(tmp_path / "table.npy", table + offset)
        out = tmp_path / f"run{offset:g}"
        assert run("fit", "--data", tmp_path / "table.npy", *QUICK, "--epochs", "2", "--out", out) == 0
        numbers[offset] = json.loads((out / "metrics.json").read_text())
        assert run("sample", out, "-n", "200", "-o", tmp_path / f"s{offset:g}.npy", "--log-prob", "--seed", "0") == 0
    assert "singular" not in capsys.readouterr().err
    near, far = numbers[0.0], numbers[1e9]
    assert far["test_nll"] == pytest.approx(near["test_nll"], abs=1e-3)
    assert far["gaussian_test_nll"] == pytest.approx(near["gaussian_test_nll"], abs=1e-6)
    samples_near, samples_far = np.load(tmp_path / "s0.npy"), np.load(tmp_path / "s1e+09.npy")
    np.testing.assert_allclose(samples_far[:, :3] - 1e9, samples_near[:, :3], atol=1e-5)
    np.testing.assert_allclose(samples_far[:, 3], samples_near[:, 3], atol=1e-3)  # log q in the data's units


def test_conditional_table_run_and_sampling_at_a_context(tmp_path):
    rng = np.random.default_rng(0)
    mu = rng.uniform(-2, 2, 3000)
    x = np.column_stack([mu + 0.3 * rng.standard_normal(3000), 0.3 * rng.standard_normal(3000), mu])
    path = tmp_path / "data.csv"
    np.savetxt(path, x, delimiter=",", header="a,b,mu", comments="")
    out = tmp_path / "run"
    assert (
        run("fit", "--data", path, "--context", "mu", "--flow", "realnvp", *QUICK, "--epochs", "30", "--out", out) == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["names"] == ["a", "b"] and config["context_names"] == ["mu"]
    header = (out / "samples.csv").read_text().splitlines()[0]
    assert header == "a,b,mu"
    assert run("sample", out, "-n", "4000", "-o", tmp_path / "s.npy", "--context", "1.5", "--seed", "0") == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (4000, 2) and abs(samples[:, 0].mean() - 1.5) < 0.5


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "conditional on mu: give --context with 1 values"),
        (["--context", "1,2"], r"--context needs 1 numbers \(mu\)"),
        (["--label", "1"], "--label applies to class-conditional image runs"),
    ],
)
def test_sampling_a_conditional_run_checks_the_context(tmp_path, capsys, arguments, message):
    rng = np.random.default_rng(1)
    path = tmp_path / "data.csv"
    np.savetxt(path, rng.standard_normal((600, 3)), delimiter=",", header="a,b,mu", comments="")
    assert run("fit", "--data", path, "--context", "mu", *QUICK, "--out", tmp_path / "run") == 0
    capsys.readouterr()
    assert run("sample", tmp_path / "run", "-n", "5", "-o", tmp_path / "s.csv", *arguments) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("flowforge: error:")
    assert __import__("re").search(message, error), error


def test_class_conditional_digits_run_and_sampling_a_class(tmp_path):
    out = tmp_path / "digits"
    assert run("fit", "--data", "digits", "--class-cond", "--epochs", "2", "--layers", "1", "--hidden", "16",
               "--no-progress", "--out", out) == 0  # fmt: skip
    assert {"samples.png", "samples-t0.7.png", "data.png", "samples.npy", "metrics.json"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "config.json").read_text())["kind"] == "images"
    numbers = json.loads((out / "metrics.json").read_text())
    assert 0 < numbers["bits_per_dim"] < np.log2(17) and numbers["dim"] == 64
    assert run("sample", out, "-n", "6", "-o", tmp_path / "threes.npy", "--label", "3") == 0
    images = np.load(tmp_path / "threes.npy")
    assert images.shape == (6, 1, 8, 8) and images.min() >= 0 and images.max() <= 16
    assert (images == np.round(images)).all()


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_FILES = {
    "missing value": ("a.csv", "x,y\n1,2\n3,\n", "row 3, column 'y': missing value"),
    "non-numeric": ("b.csv", "x,y\n1,2\n3,abc\n", "row 3, column 'y': 'abc' is not a number"),
    "ragged": ("c.csv", "1,2\n3,4,5\n", "row 2 has 3 fields, expected 2"),
    "nan": ("d.csv", "x,y\n1,nan\n", "row 2, column 'y': missing value"),
    "infinite": ("e.txt", "1,2\n3,inf\n", "row 2, column 'x2': the non-finite value inf"),
    "empty": ("f.csv", "x,y\n", "no data rows"),
    "suffix": ("g.json", "[]", "unsupported file type '.json'"),
    "constant": ("h.csv", "x,y\n" + "".join(f"{i},1\n" for i in range(20)), r"column\(s\) \['y'\] are constant"),
    "one column": ("i.csv", "x\n1\n2\n3\n", "need at least 2 data columns"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_data_files_give_one_error_line(tmp_path, capsys, case):
    name, text, message = BAD_FILES[case]
    path = write(tmp_path, name, text)
    assert run("fit", "--data", path, *QUICK, "--out", tmp_path / "run") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("flowforge: error:"), error
    assert __import__("re").search(message, error), error


def test_bad_numpy_files_and_requests_give_one_error_line(tmp_path, capsys):
    np.savez(tmp_path / "two.npz", a=np.zeros((5, 2)), b=np.ones((5, 2)))
    np.save(tmp_path / "cube.npy", np.zeros((4, 2, 2)))
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    good = write(tmp_path, "good.csv", "x,y,z\n" + "".join(f"{i},{i * i % 7},{i % 3}\n" for i in range(30)))
    cases = [
        (["--data", tmp_path / "two.npz"], "holds arrays"),
        (["--data", tmp_path / "two.npz", "--key", "c"], "no array 'c'"),
        (["--data", tmp_path / "cube.npy"], r"expected a 2-D array \(rows, columns\)"),
        (["--data", tmp_path / "text.npy"], "expected a numeric array"),
        (["--data", tmp_path / "broken.npy"], "cannot read as a NumPy file"),
        (["--data", tmp_path / "nothing.csv"], "no such file"),
        (["--data", "moons"], "neither a file nor a known data set"),
        (["--data", good, "--columns", "x,w"], "--columns: no column 'w'; columns are x, y, z"),
        (["--data", good, "--columns", "x,y", "--context", "y"], r"\['y'\] are both data and context"),
        (["--data", good, "--flow", "planar"], "--flow planar does not fit tabular data"),
        (["--data", good, "--class-cond"], "--class-cond needs labelled images"),
        (["--data", "digits", "--context", "0"], "for digits use --class-cond"),
        (["--data", good, "--split", "0.5,0.5"], "expected TRAIN,VALIDATION,TEST fractions"),
        (["--data", good, "--split", "1,0,0"], "leave no validation or test rows"),
    ]
    for arguments, message in cases:
        assert run("fit", *arguments, *QUICK, "--out", tmp_path / "run") == 2, arguments
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and error.startswith("flowforge: error:"), error
        assert __import__("re").search(message, error), (arguments, error)
