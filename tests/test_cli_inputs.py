"""Every bad input of the command ends in one ``flowforge: error:`` line and exit status 2, before
anything is trained or written; and the numbers a run reports say when they are not valid.

Each case runs ``flowforge.cli.main`` in process. The bad inputs are those that used to end in a
traceback, a hang, a machine running out of memory, or a silently wrong result (issue 16).
"""

import json
import math
import os
import zipfile
from io import BytesIO

import numpy as np
import pytest
import torch

from flowforge.cli import build_parser, main
from flowforge.cli.fit import headline
from flowforge.cli.models import build_target_model

TINY = ["--layers", "1", "--iterations", "2", "--anneal", "1", "--frame-every", "0", "--frame-samples", "64",
        "--eval-samples", "64", "--kl-grid", "8", "--grid-size", "8", "--no-progress", "--device", "cpu"]  # fmt: skip
DATA = ["--epochs", "1", "--layers", "1", "--hidden", "8", "--no-progress", "--device", "cpu"]
MCMC = ["--chains", "4", "--samples", "10", "--burn-in", "5", "--grid-size", "8", "--device", "cpu"]
VAE = ["--epochs", "1", "--layers", "1", "--latent", "2", "--hidden", "8", "--is-samples", "4", "--device", "cpu"]


def _write_inputs(folder):
    """The bad files, by name."""
    folder.mkdir()
    np.save(folder / "complex.npy", np.ones((20, 2)) + 1j)
    np.savez(folder / "objects.npz", a=np.array([1, "x", None], dtype=object))
    header = BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)})
    (folder / "huge.npy").write_bytes(header.getvalue() + bytes(64))
    with zipfile.ZipFile(folder / "huge.npz", "w") as archive:
        archive.writestr("a.npy", header.getvalue() + bytes(64))
    (folder / "latin1.csv").write_bytes("a,b\n1.0,2.0\n3.5,caf\xe9\n".encode("latin-1"))
    (folder / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (folder / "empty.csv").write_bytes(b"")
    (folder / "empty.npy").write_bytes(b"")
    (folder / "ragged.csv").write_text("1,2\n3,4,5\n6,7\n")
    (folder / "nan.csv").write_text("1,2\n3,nan\n6,7\n")
    (folder / "good.csv").write_text("x,y,z\n" + "".join(f"{i % 11},{i * i % 7},{i % 5}\n" for i in range(60)))
    (folder / "field.csv").write_text("a,b\n1," + "9" * 200_000 + "\n")
    (folder / "1e300.csv").write_text("".join(f"{1e300 * (i % 7 + 1)},{i}\n" for i in range(50)))
    np.save(folder / "vae-complex.npy", np.ones((20, 4)) + 1j)


CASES = {
    # `--target=--`: argparse hands the command an empty list instead of a name
    "--target=-- (fit)": (["fit", "--target=--"], r"--target expects a target name .*got \[\]"),
    "--target=-- (compare)": (["compare", "--target=--"], r"--target expects a target name"),
    # files
    "complex .npy": (["fit", "--data", "{in}/complex.npy", *DATA], "holds complex numbers"),
    "object .npz": (["fit", "--data", "{in}/objects.npz", *DATA], "holds Python objects"),
    "terabyte .npy header": (["fit", "--data", "{in}/huge.npy", *DATA], r"header claims .* \(14.6 TiB\)"),
    "terabyte .npz header": (["fit", "--data", "{in}/huge.npz", *DATA], r"array 'a': its header claims"),
    "latin-1 .csv": (["fit", "--data", "{in}/latin1.csv", *DATA], r"latin1.csv: not UTF-8 text \(byte 0xe9"),
    "binary .csv": (["fit", "--data", "{in}/binary.csv", *DATA], "binary.csv: holds binary data"),
    "empty .csv": (["fit", "--data", "{in}/empty.csv", *DATA], "empty.csv: no data rows"),
    "empty .npy": (["fit", "--data", "{in}/empty.npy", *DATA], "empty.npy: cannot read as a NumPy file"),
    "ragged .csv": (["fit", "--data", "{in}/ragged.csv", *DATA], "row 2 has 3 fields, expected 2"),
    "NaN cell": (["fit", "--data", "{in}/nan.csv", *DATA], "row 2, column 'x2': missing value"),
    "values of 1e300": (["fit", "--data", "{in}/1e300.csv", *DATA], r"too large for their covariance in float64"),
    "huge CSV field": (["fit", "--data", "{in}/field.csv", *DATA], "not a readable CSV file"),
    "a folder as data": (["fit", "--data", "{in}", *DATA], "in: is a folder; expected a .csv"),
    "--key on a .csv": (["fit", "--data", "{in}/good.csv", "--key", "a", *DATA], "--key names an array inside an .npz"),
    "unicode column": (["fit", "--data", "{in}/good.csv", "--columns", "²", *DATA], "--columns: no column '²'"),
    "too many rows to write": (["fit", "--data", "{in}/good.csv", "--num-samples", "1e9", *DATA], "GiB in memory"),
    "data option on a target fit": (["fit", *TINY, "--epochs", "5"], "--epochs applies only to data fits"),
    "target options on a data fit": (
        ["fit", "--data", "{in}/good.csv", *DATA, "--iterations", "5", "--kl-grid", "10"],
        "--iterations, --kl-grid apply only to target fits",
    ),  # fmt: skip
    "Glow levels for 8x8": (["fit", "--data", "digits", "--scales", "4", *DATA], "multiples of 16"),
    "vae complex data": (["vae", "--data", "{in}/vae-complex.npy", *VAE], "holds complex numbers"),
    # target parameters
    "n_modes=2.5": (["fit", "--target", "circular-gmm", "--target-param", "n_modes=2.5", *TINY], "must be an integer"),
    "n_modes=1e9": (["fit", "--target", "circular-gmm", "--target-param", "n_modes=1e9", *TINY], "from 1 to 10000"),
    "loc=nan": (["fit", "--target-param", "loc=nan", *TINY], "loc must be a finite number"),
    "loc=inf": (["fit", "--target-param", "loc=inf", *TINY], "loc must be a finite number"),
    "loc=1e300": (["fit", "--target-param", "loc=1e300", *TINY], "magnitude from 1e-06 to 1e\\+06"),
    "scale=0": (["fit", "--target-param", "scale=0", *TINY], "scale must be a finite positive number"),
    "gmm-40 seed=-1": (["fit", "--target", "gmm-40", "--target-param", "seed=-1", *TINY], "seed must be an integer"),
    "many-well dim=1e9": (["mcmc", "--target", "many-well", "--target-param", "dim=1e9", *MCMC], "from 1 to 10000"),
    # ranges, devices, seeds
    "--range overflow": (["fit", *TINY, "--range=-1e300,1e300"], r"within ±1e\+15"),
    "--range too narrow": (["fit", *TINY, "--range=1000000,1000000.01"], "too narrow for 8 pixels"),
    "--device meta": (["fit", *TINY, "--device", "meta"], "device 'meta' is not supported"),
    "--device mps": (["fit", *TINY, "--device", "mps"], "device 'mps' is not supported"),
    "--device cpu:1": (["fit", *TINY, "--device", "cpu:1"], "device 'cpu:1' is not supported"),
    "--device cuda:99": (["fit", *TINY, "--device", "cuda:99"], "cuda:99"),
    "--seed 2**64": (["fit", *TINY, "--seed", "18446744073709551616"], "no larger than 9223372036854775807"),
    "--seed -1": (["mcmc", *MCMC, "--seed", "-1"], "argument --seed: expected a non-negative integer"),
    "vae --seed 1e30": (["vae", *VAE, "--seed", "1e30"], "argument --seed"),
    # sizes
    "--layers 1e9": (["fit", *TINY, "--layers", "1000000000"], "no larger than 1000"),
    "--frame-samples": (["fit", *TINY, "--frame-samples", "1e12"], "no larger than 16777216"),
    "--eval-samples huge": (["fit", *TINY, "--eval-samples", "1e12"], "argument --eval-samples"),
    "--eval-samples 1": (["fit", *TINY, "--eval-samples", "1"], "an integer >= 2"),
    "--kl-grid 5": (["fit", *TINY, "--kl-grid", "5"], "expected an even integer >= 4"),
    "--kl-grid huge": (["fit", *TINY, "--kl-grid", "100000"], "no larger than 4096"),
    "--grid-size 1": (["fit", *TINY, "--grid-size", "1"], "argument --grid-size"),
    "--iterations 1e12": (["fit", *TINY, "--iterations", "1e12"], "the loss history"),
    "--samples-per-step": (["fit", *TINY, "--samples-per-step", "1e9"], "argument --samples-per-step"),
    "--beta0 5": (["fit", *TINY, "--beta0", "5"], "expected a number from 0 to 1"),
    "--hidden x --layers": (
        ["fit", "--data", "two-moons", *DATA, "--hidden", "60000", "--layers", "1000"],
        "parameters",
    ),
    "--num-data 1e12": (["fit", "--data", "two-moons", *DATA, "--num-data", "1e12"], "argument --num-data"),
    "--batch-size 1e7": (["fit", "--data", "two-moons", *DATA, "--batch-size", "1e7"], "argument --batch-size"),
    "mcmc --thin": (["mcmc", *MCMC, "--thin", "1e8"], "sequential density evaluations"),
    "mcmc --samples": (["mcmc", *MCMC, "--samples", "1e9"], "sequential density evaluations"),
    "mcmc --step-size 1e-300": (["mcmc", *MCMC, "--step-size", "1e-300"], "from 1e-30 to 1e30"),
    "mcmc --chains": (["mcmc", *MCMC, "--chains", "1e9"], "argument --chains"),
    "mcmc chains x samples": (["mcmc", *MCMC, "--chains", "1000000", "--samples", "1000", "--kernel", "mh"], "GiB"),
    "compare --depths": (["compare", "--depths", "1000000000"], "--depths must be positive integers"),
    "compare --kl-grid 5": (["compare", "--kl-grid", "5"], "expected an even integer"),
    "vae --hidden": (["vae", *VAE, "--hidden", "60000"], "the VAE would have about"),
    "vae --is-samples": (["vae", *VAE, "--is-samples", "1e9"], "argument --is-samples"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-inputs") / "in"
    _write_inputs(folder)
    return folder


def _snapshot(folder):
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*")}


def run_bad(argv, capsys):
    """Run ``argv``; return the single error line, after checking the exit status and that there is one."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowforge: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_and_exit_2_before_anything_is_written(case, inputs, tmp_path, capsys):
    argv, message = CASES[case]
    if "cuda" in case and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    before = _snapshot(inputs)
    line = run_bad([a.replace("{in}", str(inputs)) for a in argv] + ["--out", str(out)], capsys)
    assert __import__("re").search(message, line), line
    assert not out.exists()  # refused before the run folder was made
    assert _snapshot(inputs) == before


def test_integers_may_be_written_in_scientific_notation(tmp_path, capsys):
    args = build_parser().parse_args(["fit", "--iterations", "2e4", "--frame-samples", "6.4e1", "--out", "x"])
    assert (args.iterations, args.frame_samples) == (20000, 64)
    line = run_bad(["sample", str(tmp_path), "-n", "1e9", "-o", str(tmp_path / "s.npy")], capsys)
    assert "argument -n/--num-samples: expected a positive integer no larger than 268435456" in line


def _checkpoint(folder, config):
    folder.mkdir()
    torch.save({"config": config, "state_dict": {}}, folder / "model.pt")
    return folder


TARGET_CONFIG = {"kind": "target", "target": "two-modes", "target_params": {}, "flow": "planar", "layers": 2}
TABLE_CONFIG = {"kind": "table", "names": ["a", "b"], "context_names": [], "flow": "nsf", "layers": 2, "hidden": 8}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**TARGET_CONFIG, "layers": 10**9}, "layers=1000000000; expected an integer from 1 to 1000"),
        ({**TARGET_CONFIG, "layers": "2"}, "layers='2'"),
        ({**TARGET_CONFIG, "flow": "nope"}, "flow='nope'; expected one of"),
        ({**TARGET_CONFIG, "target": "nope"}, "target='nope'; expected one of"),
        ({**TARGET_CONFIG, "target_params": {"loc": math.nan}}, "loc must be a finite number"),
        ({**TARGET_CONFIG, "target": "circular-gmm", "target_params": {"n_modes": 10**9}}, "from 1 to 10000"),
        ({**TARGET_CONFIG, "target_params": {"nope": 1}}, "takes parameters loc, scale"),
        ({**TABLE_CONFIG, "hidden": 10**9}, "hidden=1000000000"),
        ({**TABLE_CONFIG, "hidden": 60000, "layers": 1000}, "parameters"),
        ({**TABLE_CONFIG, "names": "ab"}, "no valid names"),
        ({**TABLE_CONFIG, "kind": "images", "levels": 17, "shape": [1, 8, 8], "scales": 9}, "scales=9"),
        ({**TABLE_CONFIG, "kind": "images", "shape": [1, 8, 8], "scales": 2, "levels": None}, "levels=None"),
        (
            {**TABLE_CONFIG, "kind": "images", "levels": 17, "shape": [1, 10**6, 10**6], "scales": 2},
            "at most 2\\^20 pixels",
        ),
    ],
)
def test_a_crafted_checkpoint_config_is_refused_before_the_model_is_built(tmp_path, capsys, config, message):
    run = _checkpoint(tmp_path / "run", config)
    line = run_bad(["sample", str(run), "-n", "10", "-o", str(tmp_path / "s.npy")], capsys)
    assert __import__("re").search(message, line), line
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.parametrize("option", [["--label", "3"], ["--context", "1"]])
def test_sample_refuses_a_context_or_label_for_a_target_run(tmp_path, capsys, option):
    run = tmp_path / "run"
    run.mkdir()
    state = build_target_model(TARGET_CONFIG).state_dict()
    torch.save({"config": TARGET_CONFIG, "state_dict": state}, run / "model.pt")
    line = run_bad(["sample", str(run), "-n", "10", "-o", str(tmp_path / "s.npy"), *option], capsys)
    assert "--context and --label apply to conditional data runs" in line


def test_a_checkpoint_whose_samples_are_not_finite_writes_nothing(tmp_path, capsys):
    model = build_target_model(TARGET_CONFIG)
    state = model.state_dict()
    state["q0.log_scale"] = torch.full_like(state["q0.log_scale"], 1e30)  # finite, but exp() of it is not
    (tmp_path / "run").mkdir()
    torch.save({"config": TARGET_CONFIG, "state_dict": state}, tmp_path / "run" / "model.pt")
    line = run_bad(["sample", str(tmp_path / "run"), "-n", "10", "-o", str(tmp_path / "s.npy")], capsys)
    assert "gives non-finite samples or log-densities (10 of 10 rows" in line and not (tmp_path / "s.npy").exists()


def test_headline_says_which_numbers_are_not_valid_and_why():
    valid = {"kl": 0.1234, "kl_grid_error": 2e-4, "kl_valid": True, "ess": 0.8, "log_z_valid": True,
             "log_z_estimate": 0.81, "log_z_standard_error": 0.002, "warnings": []}  # fmt: skip
    assert headline(valid) == "KL(q||p) on grid = 0.1234 ± 2.0e-04 nats, ESS = 0.800, log Z ≈ 0.8100 ± 0.0020"
    invalid = {**valid, "kl": 0.0, "kl_valid": False, "kl_monte_carlo": 3.1e6, "ess": math.nan, "log_z_valid": False,
               "warnings": ["log Z: 3 of 64 log-weights are NaN or +inf", "KL on grid: 100% of the flow's samples lie "
                            "outside the target's box"]}  # fmt: skip
    assert headline(invalid) == (
        "KL(q||p) on grid not valid (100% of the flow's samples lie outside the target's box; Monte-Carlo KL = "
        "3.1e+06), ESS not valid, log Z not valid (3 of 64 log-weights are NaN or +inf)"
    )


def test_a_fit_that_leaves_the_box_reports_its_kl_as_not_valid(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fit", "--target-param", "loc=1e6", *TINY, "--iterations", "20", "--eval-samples", "500", "--out", str(out)]
    assert main(argv) == 0  # the run is complete; its numbers say what they are worth
    printed = capsys.readouterr().out
    assert (
        "KL(q||p) on grid not valid (" in printed
        and "Monte-Carlo KL = " in printed
        and "KL(q||p) on grid =" not in printed
    )
    numbers = json.loads((out / "metrics.json").read_text())
    assert numbers["kl_valid"] is False and numbers["log_z_valid"] is False
    assert any(warning.startswith("KL on grid: ") for warning in numbers["warnings"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_as_vae_data_is_refused_without_waiting_for_a_writer(tmp_path, capsys):
    pipe = tmp_path / "data.npy"
    os.mkfifo(pipe)  # opening it for reading would block until a writer came
    line = run_bad(["vae", "--data", str(pipe), "--out", str(tmp_path / "run")], capsys)
    assert "not a regular file" in line


@pytest.mark.parametrize(
    "statistics",
    [{"context_mean": torch.zeros(1, dtype=torch.float64)}, {}, {"context_mean": torch.zeros(1), "context_std": -1}],
)
def test_sample_refuses_a_conditional_run_without_its_context_statistics(tmp_path, capsys, statistics):
    from flowforge.cli.models import build_data_model

    config = {**TABLE_CONFIG, "context_names": ["c"]}
    run = tmp_path / "run"
    run.mkdir()
    state = build_data_model(config).state_dict()
    torch.save({"config": config, "state_dict": state, "context": statistics}, run / "model.pt")
    line = run_bad(["sample", str(run), "-n", "3", "-o", str(tmp_path / "s.npy"), "--context", "0.5"], capsys)
    assert "needs its context_" in line
    assert not (tmp_path / "s.npy").exists()
