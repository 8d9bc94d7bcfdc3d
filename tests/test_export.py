"""flowforge.export and ``flowforge export``: every exportable preset's log_prob and sampler as a torch.export
program equal to the eager model (the sampler to ``model.sample`` from the same random numbers), at a batch
size other than the one traced, without control-flow operators; ONNX files run by onnxruntime equal to the
eager model; clear refusals of what cannot be exported; no file left behind by a failure; the command end to end.

The full ONNX matrix is marked slow (each conversion takes seconds); a few cases of every kind run always."""

import json

import numpy as np
import pytest
import torch

from flowforge import export, presets
from flowforge.cli import main
from flowforge.cli.models import data_log_prob
from flowforge.cli.runs import load_run
from flowforge.distributions import ClassCondDiagGaussian
from flowforge.distributions.base import DiagGaussian, GaussianMixture, ResampledGaussian, TemperedGaussian, Uniform
from flowforge.flows import ActNorm
from flowforge.model import NormalizingFlow
from flowforge.nets import MLP

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def _initialised(model, shape):
    with torch.no_grad():  # ActNorm sets itself from a first batch
        model.log_prob(torch.rand(8, *shape), *((torch.randn(8, 2),) if model.takes_context else ()))
    return model


BUILDERS = {
    "planar": lambda c: presets.PlanarFlow(3, 2, context_features=c),
    "planar-leaky": lambda c: presets.PlanarFlow(3, 2, act="leaky_relu", context_features=c),
    "radial": lambda c: presets.RadialFlow(3, 2, context_features=c),
    "realnvp": lambda c: presets.RealNVP(3, 2, hidden=8, context_features=c),
    "maf": lambda c: presets.MAF(3, 2, hidden=8, context_features=c),
    "iaf": lambda c: presets.IAF(3, 2, hidden=8, context_features=c),
    "nsf": lambda c: presets.NSF(3, 2, hidden=8, context_features=c),
    "nsf-ar": lambda c: presets.NSFAutoregressive(3, 2, hidden=8, context_features=c),
    "maf-tempered": lambda c: presets.MAF(3, 1, hidden=8, q0=TemperedGaussian(3)),
    "glow-single": lambda c: _initialised(presets.GlowSingleScale((1, 4, 4), 1, steps=1, hidden=4), (1, 4, 4)),
    "glow": lambda c: _initialised(presets.Glow((1, 4, 4), 2, steps=1, hidden=4, context_features=c), (1, 4, 4)),
}
CONDITIONAL = ("planar", "radial", "realnvp", "maf", "iaf", "nsf", "nsf-ar", "glow")
CASES = [(name, None) for name in BUILDERS] + [(name, 2) for name in CONDITIONAL]
# Every preset once in the quick run, by turns conditional or not and its log_prob or its sampler (so
# four of each); the other three combinations of every preset, and the rest, are marked slow.
QUICK = {
    (name, 2 if index % 4 in (1, 2) else None, export.METHODS[index % 2]) for index, name in enumerate(CONDITIONAL)
}


def cases(quick):
    return [
        pytest.param(name, c, method, marks=[] if (name, c, method) in quick else [pytest.mark.slow])
        for name, c in CASES
        for method in export.METHODS
    ]


def build(name, context_features=None, dtype=torch.float32):
    generator = torch.Generator().manual_seed(7)
    model = BUILDERS[name](context_features)
    with torch.no_grad():  # away from the identity every preset starts at
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.to(dtype).eval()


def labelled_glow():
    model = presets.Glow((1, 4, 4), 2, steps=1, hidden=4, num_classes=3)
    with torch.no_grad():
        model.log_prob(torch.rand(8, 1, 4, 4), torch.arange(8) % 3)
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def bases_of(model):
    return [model.q0] if isinstance(model, NormalizingFlow) else list(model.q0)


def context_for(model, rows):
    if not model.takes_context:
        return ()
    if isinstance(bases_of(model)[0], ClassCondDiagGaussian):
        return (torch.arange(rows) % 3,)
    return (torch.randn(rows, 2, dtype=next(model.parameters()).dtype),)


def eager_outputs(model, method, inputs, seed):
    """The eager model's answer to the exported program's inputs: log_prob, or sample from the same seed."""
    with torch.no_grad():
        if method == "log_prob":
            return (model.log_prob(*inputs),)
        context = inputs[-1] if model.takes_context else None
        torch.manual_seed(seed)
        return model.sample(inputs[0].shape[0], context)


def program_inputs(model, method, rows, seed):
    """Inputs at ``rows`` rows: the noise ``model.sample`` draws after ``torch.manual_seed(seed)``, or points."""
    like = next(model.parameters())
    context = context_for(model, rows)
    if method == "log_prob":
        with torch.no_grad():
            x = model.sample(rows, *context)[0]
        return (x, *context)
    torch.manual_seed(seed)
    noise = [torch.randn(rows, *base.shape, dtype=like.dtype) for base in bases_of(model)]
    return (*noise, *context)


def assert_close(actual, expected, dtype):
    tolerance = TOLERANCE[dtype]
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(torch.as_tensor(a).to(e.dtype), e, rtol=tolerance, atol=tolerance)


def control_flow(program):
    """The higher-order operators (cond, while_loop, map, scan, ...) in an exported program's graph."""
    return [
        str(node.target)
        for node in program.graph.nodes
        if node.op == "call_function" and getattr(node.target, "namespace", None) == "higher_order"
    ]


def check_program(model, method, dtype=torch.float32):
    program = export.export_program(model, method, batch_size=5)
    assert control_flow(program) == []
    for rows in (1, 13):  # traced at 5: the batch is dynamic
        inputs = program_inputs(model, method, rows, seed=rows)
        outputs = program.module()(*inputs)
        outputs = (outputs,) if method == "log_prob" else outputs
        assert_close(outputs, eager_outputs(model, method, inputs, seed=rows), dtype)
    return program


@pytest.mark.parametrize("name, context_features, method", cases(QUICK))
def test_the_exported_program_equals_the_eager_model(name, context_features, method):
    check_program(build(name, context_features), method)


@pytest.mark.parametrize("method", export.METHODS)
def test_a_class_conditional_glow_takes_labels(method):
    check_program(labelled_glow(), method)


@pytest.mark.parametrize(
    "name, method",
    [
        ("nsf", "log_prob"),
        ("planar", "sample"),
        *(pytest.param(n, m, marks=pytest.mark.slow) for n, m in [("nsf", "sample"), ("planar", "log_prob")]),
        *(pytest.param("maf", m, marks=pytest.mark.slow) for m in export.METHODS),
    ],
)
def test_float64_programs_equal_the_eager_model_to_float64_rounding(name, method):
    check_program(build(name, 2 if name == "maf" else None, torch.float64), method, torch.float64)


def run_onnx(path, model, method, rows, seed):
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path))
    inputs = program_inputs(model, method, rows, seed)
    names, outputs = export.io_names(model, method)
    assert [i.name for i in session.get_inputs()] == names and [o.name for o in session.get_outputs()] == outputs
    results = session.run(None, {name: value.numpy() for name, value in zip(names, inputs, strict=True)})
    return results, eager_outputs(model, method, inputs, seed)


# ONNX conversion costs seconds per program, so the ONNX matrix is every preset's two methods without a
# context and three conditional programs (the conditional torch.export programs it translates are all checked
# above); the command's test converts a conditional spline flow's log_prob too.
ONNX_CONDITIONAL = [("nsf", 2, "sample"), ("maf", 2, "log_prob"), ("glow", 2, "log_prob")]
ONNX_QUICK = {("nsf", 2, "sample"), ("glow", None, "log_prob")}


@pytest.mark.parametrize(
    "name, context_features, method",
    [
        pytest.param(name, c, method, marks=[] if (name, c, method) in ONNX_QUICK else [pytest.mark.slow])
        for name, c, method in [(n, None, m) for n in BUILDERS for m in export.METHODS] + ONNX_CONDITIONAL
    ],
)
def test_the_onnx_file_run_by_onnxruntime_equals_the_eager_model(tmp_path, name, context_features, method):
    pytest.importorskip("onnxruntime")
    model = build(name, context_features)
    path = export.export_model(model, tmp_path / "model.onnx", method=method, format="onnx", batch_size=5)
    for rows in (1, 11):
        results, expected = run_onnx(path, model, method, rows, seed=rows)
        assert_close(results, expected, torch.float32)


def test_a_fixed_count_sampler_refuses_another_count():
    program = export.export_program(build("maf"), "sample", batch_size=6, dynamic_batch=False)
    program.module()(torch.randn(6, 3))
    with pytest.raises(Exception, match="6"):
        program.module()(torch.randn(7, 3))


def tempered_normflows_base():
    from flowforge.compat import normflows as nf

    base = nf.distributions.DiagGaussian(2)
    base.temperature = 0.5
    return NormalizingFlow(base, [nf.flows.Planar((2,))])


REFUSED = {
    "residual": (lambda: presets.ResidualFlow(2, 1, hidden=8), "log_prob", "Residual"),
    "resampled": (
        lambda: presets.MAF(2, 1, hidden=8, q0=ResampledGaussian(2, MLP([2, 8, 1]))),
        "log_prob",
        "accept/reject",
    ),
    "mixture sample": (lambda: presets.MAF(2, 1, hidden=8, q0=GaussianMixture(3, 2)), "sample", "standard normal"),
    "uniform sample": (lambda: presets.MAF(2, 1, hidden=8, q0=Uniform(2)), "sample", "standard normal"),
    "actnorm": (lambda: NormalizingFlow(DiagGaussian(2), [ActNorm(2)]), "log_prob", "initialised"),
    "tempered normflows base": (tempered_normflows_base, "sample", "temperature"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_cannot_be_exported_is_refused_naming_the_part(tmp_path, case):
    make, method, message = REFUSED[case]
    with pytest.raises(NotImplementedError, match=message):
        export.export_model(make(), tmp_path / "m.pt2", method=method)
    assert list(tmp_path.iterdir()) == []


def test_a_mixture_base_still_exports_its_density():
    check_program(presets.MAF(2, 1, hidden=8, q0=GaussianMixture(3, 2)).eval(), "log_prob")


def test_bad_arguments_are_refused(tmp_path):
    model = build("maf")
    with pytest.raises(ValueError, match="method"):
        export.export_model(model, tmp_path / "m.pt2", method="density")
    with pytest.raises(ValueError, match="format"):
        export.export_model(model, tmp_path / "m.pt2", format="tflite")
    with pytest.raises(ValueError, match="context_scaling"):
        export.export_model(model, tmp_path / "m.pt2", context_scaling=(torch.zeros(2), torch.ones(2)))
    with pytest.raises(TypeError, match="NormalizingFlow"):
        export.export_model(presets.VAE(4, latent_dim=2, layers=1, hidden=8), tmp_path / "m.pt2")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    target = tmp_path / "m.pt2"
    target.write_bytes(b"old")

    def disk_full(program, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.export, "save", disk_full)
    with pytest.raises(OSError):
        export.export_model(build("maf"), target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.pt2"]


# The command: one tiny run of each kind that has a flow, and the refusals.


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-runs")
    tiny = (
        "--layers 2 --iterations 5 --frame-every 0 --frame-samples 64 --eval-samples 64 --kl-grid 8 --grid-size 8 "
        "--compile off --no-progress"
    ).split()
    for flow in ("maf", "residual"):
        assert main(["fit", "--flow", flow, *tiny, "--out", str(root / flow)]) == 0
    rng = np.random.default_rng(0)
    table = rng.normal(size=(120, 3))
    table[:, 2] = rng.uniform(10, 20, 120)
    table[:, 0] += table[:, 2]
    np.savetxt(root / "data.csv", table, delimiter=",", header="a,b,c", comments="")
    assert main(["fit", "--data", str(root / "data.csv"), "--context", "c", "--flow", "nsf", "--epochs", "1",
                 "--layers", "1", "--hidden", "8", "--no-progress", "--out", str(root / "table")]) == 0  # fmt: skip
    for kind in ("mcmc", "vae"):
        (root / kind).mkdir()
        (root / kind / "config.json").write_text(json.dumps({"kind": kind, "status": "complete"}))
    return root


def one_error(capsys, message):
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowforge: error: ") and message in lines[0], captured.err
    return lines[0]


def test_the_command_exports_a_target_run(runs, tmp_path, capsys):
    output = tmp_path / "maf.pt2"
    assert main(["export", str(runs / "maf"), "--format", "torch-export", "-o", str(output)]) == 0
    assert "inputs x; outputs log_prob" in capsys.readouterr().out
    model = load_run(runs / "maf").model
    x = torch.randn(6, 2)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(output).module()(x), model.log_prob(x), rtol=1e-5, atol=1e-5)
    sampler = tmp_path / "maf-sample.pt2"
    argv = ["export", str(runs / "maf"), "--format", "torch-export", "-o", str(sampler), "--what", "sample"]
    assert main([*argv, "--num-samples", "4"]) == 0
    torch.manual_seed(3)
    noise = torch.randn(4, 2)
    torch.manual_seed(3)
    with torch.no_grad():
        expected = model.sample(4)
    assert_close(torch.export.load(sampler).module()(noise), expected, torch.float32)


def test_the_command_exports_a_conditional_table_run_taking_raw_context_values(runs, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    output = tmp_path / "table.onnx"
    assert main(["export", str(runs / "table"), "--format", "onnx", "-o", str(output)]) == 0
    run = load_run(runs / "table")
    data = torch.tensor(np.loadtxt(runs / "data.csv", delimiter=",", skiprows=1)[:20])
    x, context = data[:, :2], data[:, 2:]
    standardised = (context - run.statistics["context_mean"]) / run.statistics["context_std"]
    with torch.no_grad():
        expected = data_log_prob(run.model, x, standardised)
    session = onnxruntime.InferenceSession(str(output))
    (log_q,) = session.run(None, {"x": x.float().numpy(), "context": context.float().numpy()})
    np.testing.assert_allclose(log_q, expected.numpy(), rtol=1e-5, atol=1e-5)


REFUSALS = {
    "an existing file": (["-o", "{tmp}/exists.pt2"], "exists; use --overwrite"),
    "a suffix": (["-o", "{tmp}/m.onnx"], "must end in .pt2"),
    "a missing folder": (["-o", "{tmp}/no/m.pt2"], "does not exist"),
    "a count for log_prob": (["-o", "{tmp}/m.pt2", "--num-samples", "3"], "--num-samples applies"),
    "a run's own file": (["-o", "{run}/config.json"], "must end in .pt2"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_the_command_refuses_bad_outputs_in_one_line(runs, tmp_path, capsys, case):
    (tmp_path / "exists.pt2").write_bytes(b"keep")
    extra, message = REFUSALS[case]
    argv = ["export", str(runs / "maf"), "--format", "torch-export"]
    assert main([*argv, *(a.format(tmp=tmp_path, run=runs / "maf") for a in extra)]) == 2
    one_error(capsys, message)
    assert (tmp_path / "exists.pt2").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.pt2"]


@pytest.mark.parametrize(
    "kind, message", [("mcmc", "is a mcmc run"), ("vae", "is a vae run"), ("residual", "Residual")]
)
def test_the_command_refuses_runs_without_an_exportable_flow(runs, tmp_path, capsys, kind, message):
    output = tmp_path / "m.pt2"
    assert main(["export", str(runs / kind), "--format", "torch-export", "-o", str(output)]) == 2
    one_error(capsys, message)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_an_existing_file(runs, tmp_path):
    output = tmp_path / "m.pt2"
    output.write_bytes(b"old")
    assert main(["export", str(runs / "maf"), "--format", "torch-export", "-o", str(output), "--force"]) == 0
    assert torch.export.load(output) is not None


def test_onnx_without_its_packages_names_the_extra(runs, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ImportError, match=r"flowforge\[onnx\]"):
        export.export_model(build("maf"), tmp_path / "m.onnx", format="onnx")
    assert main(["export", str(runs / "maf"), "--format", "onnx", "-o", str(tmp_path / "m.onnx")]) == 2
    one_error(capsys, "needs onnxscript")
    assert list(tmp_path.iterdir()) == []
