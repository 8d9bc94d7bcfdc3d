"""Checkpoints, resume and signals in the training loops: a run interrupted (by SIGINT, SIGTERM or SIGHUP,
mid-epoch too) or killed after a periodic checkpoint and then resumed ends in the state of an
uninterrupted run, bit for bit on the CPU; a training state of another loop, model or setting is refused
in one line; the loops restore the signal handlers they change, leave ignored signals ignored, and an
interruption dropped by Python inside a finaliser is raised again."""

import contextlib
import errno
import os
import select
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import flowforge as nf
from flowforge import training
from flowforge.training import checkpoint as states
from flowforge.training.interrupt import DeferredSignals, InterruptingSignals, SignalInterrupt

FIT = {"seed": 3, "progress": False, "device": "cpu", "compile": "off", "check_every": 7}


def _planar(layers=3):
    torch.manual_seed(0)
    return nf.presets.PlanarFlow(2, layers, p=nf.distributions.TwoModes(2.0, 0.1))


class Frames:
    """A callback with a state, as the command's frame recorder: it draws from the flow (so it uses the
    random generator between steps) and keeps what it drew."""

    def __init__(self):
        self.drawn = []

    def __call__(self, iteration, model):
        with torch.no_grad():
            self.drawn.append(model.sample(3)[0])

    def state_dict(self):
        return {"drawn": torch.stack(self.drawn) if self.drawn else torch.empty(0, 3, 2)}

    def load_state_dict(self, state):
        self.drawn = list(state["drawn"])


@contextlib.contextmanager
def signal_after_steps(steps, number=signal.SIGTERM):
    """Send ``number`` to this process after the ``steps``-th optimizer step (of any optimizer)."""
    count = [0]

    def hook(optimizer, args, kwargs):
        count[0] += 1
        if count[0] == steps:
            os.kill(os.getpid(), number)

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _same_weights(first, second):
    return all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize(
    "loss",
    [{"anneal_iters": 20}, {"loss": "forward_kl", "data": nf.datasets.two_moons(200, seed=0)}],
    ids=["reverse-kl", "forward-kl"],
)
@pytest.mark.parametrize("stop", [13, 30])
def test_an_interrupted_fit_resumes_to_the_uninterrupted_state(tmp_path, loss, stop):
    kw = {**FIT, **loss}
    model, frames = _planar(), Frames()
    expected = training.fit(model, 40, callbacks=[training.Every(5, frames)], **kw)
    path = tmp_path / "state.pt"
    stopped, stopped_frames = _planar(), Frames()
    with signal_after_steps(stop), pytest.raises(training.TrainingInterrupted) as interrupted:
        training.fit(
            stopped, 40, callbacks=[training.Every(5, stopped_frames)], checkpoint=path, checkpoint_every=10, **kw
        )
    error = interrupted.value
    assert isinstance(error, KeyboardInterrupt) and error.signal_number == signal.SIGTERM and error.checkpoint == path
    assert error.result.iterations == stop and len(error.result.loss_history) == stop
    np.testing.assert_array_equal(error.result.loss_history, expected.loss_history[:stop])
    saved = torch.load(path, weights_only=True)
    assert saved["done"] == stop and not saved["complete"]
    assert all(torch.equal(saved["model"][k], v) for k, v in stopped.state_dict().items()), "the current weights"

    resumed_model, resumed_frames = _planar(), Frames()
    resumed = training.fit(resumed_model, 40, callbacks=[training.Every(5, resumed_frames)], resume=path, **kw)
    np.testing.assert_array_equal(resumed.loss_history, expected.loss_history)
    assert resumed.iterations == 40 and _same_weights(resumed_model, model)
    assert all(torch.equal(a, b) for a, b in zip(resumed_frames.drawn, frames.drawn, strict=True))

    again = _planar()  # the state of a complete run is restored, without a step
    done = training.fit(again, 40, callbacks=[training.Every(5, Frames())], resume=path, **kw)
    np.testing.assert_array_equal(done.loss_history, expected.loss_history)
    assert _same_weights(again, model)


def test_a_fit_killed_after_a_periodic_checkpoint_resumes_from_it(tmp_path):
    model = _planar()
    expected = training.fit(model, 30, **FIT)

    def crash(iteration, model):
        if iteration == 25:
            raise RuntimeError("killed")  # as if the process had died: no interruption handling

    with pytest.raises(RuntimeError, match="killed"):
        training.fit(_planar(), 30, callbacks=[training.Every(1, crash)], checkpoint=tmp_path / "s.pt",
                     checkpoint_every=10, **FIT)  # fmt: skip
    assert torch.load(tmp_path / "s.pt", weights_only=True)["done"] == 20
    resumed_model = _planar()
    resumed = training.fit(resumed_model, 30, callbacks=[training.Every(1, lambda *a: None)],
                           resume=tmp_path / "s.pt", **FIT)  # fmt: skip
    np.testing.assert_array_equal(resumed.loss_history, expected.loss_history)
    assert _same_weights(resumed_model, model)
    longer = training.fit(_planar(), 40, resume=tmp_path / "s.pt", callbacks=[training.Every(1, print)], **FIT)
    assert longer.iterations == 40, "a resumed fit may go on further than its run"


def _realnvp():
    torch.manual_seed(0)
    return nf.RealNVP(2, 2, hidden=16)


def _levels(n, seed):
    return torch.randint(0, 4, (n, 2), generator=torch.Generator().manual_seed(seed)).double()


DATA_FITS = {
    "cosine": ({"schedule": "cosine", "patience": None, "epochs": 5}, nf.datasets.two_moons(300, seed=0)),
    "early-stopping": ({"schedule": "plateau", "patience": 1, "epochs": 40, "lr": 3e-2}, nf.datasets.two_moons(40)),
    "levels": ({"schedule": None, "patience": 3, "epochs": 4, "levels": 4}, _levels(300, 0)),
}


@pytest.mark.parametrize("stop", [3, 5, 9])  # mid-epoch, after an epoch (5 batches), mid-epoch later
@pytest.mark.parametrize("case", list(DATA_FITS))
def test_an_interrupted_data_fit_resumes_to_the_uninterrupted_state(tmp_path, case, stop):
    settings, train = DATA_FITS[case]
    validation = _levels(100, 1) if "levels" in settings else nf.datasets.two_moons(100, seed=1)
    kw = {
        "batch_size": 64 if case != "early-stopping" else 8,
        "seed": 3,
        "progress": False,
        "device": "cpu",
        **settings,
    }
    model = _realnvp().double() if "levels" in settings else _realnvp()
    expected = training.fit_data(model, train, validation, **kw)
    assert expected.stopped_early == (case == "early-stopping")
    stopped = _realnvp().double() if "levels" in settings else _realnvp()
    with signal_after_steps(stop, signal.SIGINT), pytest.raises(training.TrainingInterrupted) as interrupted:
        training.fit_data(stopped, train, validation, checkpoint=tmp_path / "s.pt", **kw)
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    assert interrupted.value.signal_number == signal.SIGINT and not saved["complete"]
    assert all(torch.equal(saved["best_model"][k], v) for k, v in stopped.state_dict().items()), "the best weights"
    resumed_model = _realnvp().double() if "levels" in settings else _realnvp()
    resumed = training.fit_data(resumed_model, train, validation, resume=tmp_path / "s.pt", **kw)
    for field in ("train_nll", "validation_nll"):
        np.testing.assert_array_equal(getattr(resumed, field), getattr(expected, field))
    assert (resumed.best_epoch, resumed.stopped_early) == (expected.best_epoch, expected.stopped_early)
    assert _same_weights(resumed_model, model)


def test_an_interrupted_vae_fit_resumes_to_the_uninterrupted_state(tmp_path):
    generator = torch.Generator().manual_seed(0)
    train, validation = torch.rand(120, 3, generator=generator), torch.rand(40, 3, generator=generator).round()

    def vae():
        torch.manual_seed(0)
        return nf.VAE(3, latent_dim=2, posterior="planar", layers=2, hidden=8, flow_hidden=4)

    kw = {"epochs": 4, "batch_size": 32, "warmup_epochs": 2, "binarize_train": True, "validation_samples": 2,
          "patience": 1, "seed": 5, "progress": False, "device": "cpu"}  # fmt: skip
    model = vae()
    expected = training.fit_vae(model, train, validation, **kw)
    with signal_after_steps(6), pytest.raises(training.TrainingInterrupted):
        training.fit_vae(vae(), train, validation, checkpoint=tmp_path / "s.pt", **kw)
    resumed_model = vae()
    resumed = training.fit_vae(resumed_model, train, validation, resume=tmp_path / "s.pt", **kw)
    np.testing.assert_array_equal(resumed.train_loss, expected.train_loss)
    np.testing.assert_array_equal(resumed.validation_elbo, expected.validation_elbo)
    assert _same_weights(resumed_model, model)


SIGNALS = [name for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
CHILD = """
import os, select, signal, sys, torch
import flowforge as nf
from flowforge import training
for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # whatever the parent ignores
    signal.signal(number, signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL)
read, write = os.pipe()
os.set_blocking(write, False)
signal.set_wakeup_fd(write)  # the wait below ends when a signal arrives

def wait(iteration, model):
    if iteration == 12:
        print("ready", flush=True)
        select.select([read], [], [], 60)
        os.read(read, 64)

for path in sys.argv[1:]:  # one fit per signal the parent sends
    torch.manual_seed(0)
    model = nf.presets.PlanarFlow(2, 3, p=nf.distributions.TwoModes(2.0, 0.1))
    try:
        training.fit(model, 40, seed=3, progress=False, device="cpu", compile="off", check_every=7,
                     callbacks=[training.Every(1, wait)], checkpoint=path, checkpoint_every=10)
        print("not interrupted", flush=True)
    except training.TrainingInterrupted as error:
        print("interrupted", error.signal_number, error.result.iterations, flush=True)
"""


@pytest.fixture(scope="module")
def killed_fits(tmp_path_factory):
    """A process that runs one small fit per signal, each stopped by that signal at iteration 12: what
    it printed for each, and its training state."""
    folder = tmp_path_factory.mktemp("killed")
    paths = [folder / f"{name}.pt" for name in SIGNALS]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *map(str, paths)], stdout=subprocess.PIPE, text=True)
    printed = {}
    for name in SIGNALS:
        assert child.stdout.readline() == "ready\n"
        child.send_signal(getattr(signal, name))
        printed[name] = child.stdout.readline()
    child.communicate()
    assert child.returncode == 0
    return {name: (printed[name], path) for name, path in zip(SIGNALS, paths, strict=True)}


@pytest.fixture(scope="module")
def uninterrupted_fit():
    model = _planar()
    return model, training.fit(model, 40, callbacks=[training.Every(1, lambda *a: None)], **FIT)


@pytest.mark.parametrize("name", SIGNALS)
def test_a_fit_killed_by_a_signal_saves_its_state_and_resumes(killed_fits, uninterrupted_fit, name):
    printed, path = killed_fits[name]
    assert printed == f"interrupted {getattr(signal, name)} 12\n"
    model, expected = uninterrupted_fit
    resumed_model = _planar()
    resumed = training.fit(resumed_model, 40, callbacks=[training.Every(1, lambda *a: None)], resume=path, **FIT)
    np.testing.assert_array_equal(resumed.loss_history, expected.loss_history)
    assert _same_weights(resumed_model, model)


@pytest.fixture(scope="module")
def fit_state(tmp_path_factory):
    path = tmp_path_factory.mktemp("state") / "fit.pt"
    training.fit(_planar(), 30, checkpoint=path, checkpoint_every=10, **FIT)
    return path


def test_a_training_state_holds_what_its_loop_writes(fit_state, tmp_path):
    saved = torch.load(fit_state, weights_only=True)
    assert set(saved) == {"format", "version", "loop", *states.ENTRIES["fit"]} and saved["loop"] == "fit"
    training.fit_data(_realnvp(), nf.datasets.two_moons(50), epochs=1, progress=False, checkpoint=tmp_path / "d.pt")
    saved = torch.load(tmp_path / "d.pt", weights_only=True)
    assert set(saved) == {"format", "version", "loop", *states.ENTRIES["fit_data"]} and saved["complete"]
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"], "no temporary file is left"


def _rewritten(source, path, **changes):
    state = torch.load(source, weights_only=True)
    state.update(changes)
    torch.save({k: v for k, v in state.items() if v is not None}, path)
    return path


def test_a_training_state_that_does_not_fit_is_refused(fit_state, tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02 not a torch file")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    cases = [
        ({"resume": tmp_path / "missing.pt"}, "cannot read the resume file"),
        ({"resume": tmp_path / "garbage.pt"}, "is not a flowforge training state (torch cannot read it"),
        ({"resume": tmp_path / "other.pt"}, "is not a flowforge training state; expected a file written by fit("),
        ({"resume": _rewritten(fit_state, tmp_path / "v.pt", version=99)}, "has training-state version 99"),
        ({"resume": _rewritten(fit_state, tmp_path / "l.pt", loop="fit_vae")}, "was written by fit_vae, not by fit"),
        ({"resume": _rewritten(fit_state, tmp_path / "d.pt", rng=None)}, "is damaged: it lacks 'rng'"),
        ({"resume": fit_state, "model": _planar(4)}, "is of another model: it lacks 'flows.3.parameters_uwb'"),
        (
            {"resume": fit_state, "model": _planar().double()},
            "'q0.loc' is (1, 2) torch.float32 in it but (1, 2) torch.float64 in the model",
        ),
        ({"resume": fit_state, "iterations": 20}, "has done 30 iterations, more than the 20 asked for"),
        ({"resume": fit_state, "lr": 1e-2}, "with lr=0.001, but this call has lr=0.01"),
        ({"resume": fit_state, "compile": "auto"}, "with compile='off', but this call has compile='auto'"),
        ({"resume": fit_state, "callbacks": [training.Every(1, print)]}, "with 0 callbacks, but this call has 1"),
    ]
    for changes, message in cases:
        arguments = {**FIT, "iterations": 30, "model": _planar(), **changes}
        with pytest.raises(ValueError) as refused:
            training.fit(arguments.pop("model"), arguments.pop("iterations"), **arguments)
        assert message in str(refused.value) and "\n" not in str(refused.value), (message, str(refused.value))
    with pytest.raises(ValueError, match="was written by fit, not by fit_data; resume it with fit"):
        training.fit_data(_realnvp(), nf.datasets.two_moons(50), resume=fit_state, progress=False)


def test_atomic_path_leaves_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "state.pt"
    target.write_text("old")
    with pytest.raises(OSError) as full, states.atomic_path(target) as temporary:
        temporary.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write through a Python file raises it
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(target), "named by the destination"

    def no_space(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left on device"):
        states.save_state(target, "fit", {"model": {}})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_the_loops_restore_the_signal_handlers_and_leave_ignored_signals_ignored(fit_state):
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(ValueError):
        training.fit(_planar(), 30, resume=fit_state, lr=1.0, **FIT)
    training.fit(_planar(), 3, **FIT)
    assert {number: signal.getsignal(number) for number in before} == before
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as nohup leaves SIGHUP
    try:
        with signal_after_steps(2):
            assert training.fit(_planar(), 5, **FIT).iterations == 5
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_ctrl_c_stops_at_once_and_a_held_signal_is_delivered_when_not_acted_on():
    with pytest.raises(SignalInterrupt) as stopped, DeferredSignals() as held:
        signal.raise_signal(signal.SIGINT)
        assert held.pending == signal.SIGINT
        signal.raise_signal(signal.SIGINT)
    assert stopped.value.signal_number == signal.SIGINT
    with InterruptingSignals() as raising, pytest.raises(SignalInterrupt) as delivered:
        with DeferredSignals() as held:
            signal.raise_signal(signal.SIGTERM)
            assert held.pending == signal.SIGTERM
        pytest.fail("the held SIGTERM goes to the handler it was meant for when the block ends")
    assert delivered.value.signal_number == signal.SIGTERM and raising.received == [signal.SIGTERM]


class _SignalInFinaliser:
    """An object whose finaliser receives a signal: the handler's KeyboardInterrupt cannot leave it."""

    def __del__(self):
        signal.raise_signal(signal.SIGTERM)


def test_an_interruption_dropped_inside_a_finaliser_is_raised_again():
    steps = 0
    with InterruptingSignals() as raising, pytest.raises(SignalInterrupt):
        _SignalInFinaliser()  # dropped at once: Python reports the exception as unraisable
        for steps in range(1, 2001):  # noqa: B007  # the signal, sent again, arrives within a few steps
            select.select([], [], [], 0.005)
    assert raising.received[:1] == [signal.SIGTERM] and steps < 2000


def test_a_signal_is_told_by_name_in_the_interruption():
    error = training.TrainingInterrupted(signal.SIGTERM, training.FitResult(np.zeros(0), 0, 0.0, 0.0, False), None)
    assert str(error) == "training interrupted by SIGTERM" and isinstance(error, KeyboardInterrupt)


@pytest.mark.parametrize("every", [1, None], ids=["every-epoch", "by-time"])
def test_a_data_fit_killed_after_an_epochs_checkpoint_resumes_from_it(tmp_path, monkeypatch, every):
    monkeypatch.setattr(training.epochs, "CHECKPOINT_SECONDS", 0.0)  # by time: after every epoch here
    train, validation = nf.datasets.two_moons(200, seed=0), nf.datasets.two_moons(50, seed=1)
    kw = {"epochs": 4, "batch_size": 64, "seed": 3, "progress": False, "device": "cpu", "checkpoint_every": every}
    model = _realnvp()
    expected = training.fit_data(model, train, validation, **kw)
    count = [0]

    def crash(optimizer, args, kwargs):
        count[0] += 1
        if count[0] == 10:  # the second batch of the third epoch (4 batches an epoch)
            raise RuntimeError("killed")

    handle = register_optimizer_step_post_hook(crash)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            training.fit_data(_realnvp(), train, validation, checkpoint=tmp_path / "s.pt", **kw)
    finally:
        handle.remove()
    assert torch.load(tmp_path / "s.pt", weights_only=True)["epoch"] == 2
    resumed_model = _realnvp()
    resumed = training.fit_data(resumed_model, train, validation, resume=tmp_path / "s.pt", **kw)
    np.testing.assert_array_equal(resumed.validation_nll, expected.validation_nll)
    assert _same_weights(resumed_model, model)
