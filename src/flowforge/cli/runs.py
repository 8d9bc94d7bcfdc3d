"""Run folders: opening one safely, writing its files atomically, and reading a run back.

Every command that creates a run opens its folder with :func:`open_run` and records its config with
:meth:`RunFolder.write_config`, which writes ``config.json`` with the run's kind in the field ``"kind"``:

====================  =====================================================  ===============
kind                  written by                                             ``sample``-able
====================  =====================================================  ===============
``"target"``          ``fit`` to a target density, ``demo``                  yes
``"table"``           ``fit --data`` on a table (file, toy set, real table)  yes
``"images"``          ``fit --data digits``                                  yes
``"vae"``             ``vae``                                                no
``"mcmc"``            ``mcmc``                                               no (no model)
``"compare"``         ``compare``                                            no (no model)
====================  =====================================================  ===============

A run never destroys anything that is not its own:

- **A new or empty folder.** ``--out`` must be new or empty. With ``--overwrite`` it may hold a
  previous run: before the new run starts, the files any run writes (:data:`RUN_FILES`) are deleted
  from it, ``config.json`` last, and every other file is kept. ``--overwrite`` refuses a folder whose
  run files do not come with a flowforge ``config.json`` (a user's own ``config.json`` or ``model.pt``).
- **Inputs stay untouched.** An input (``--data FILE``) that is one of the run's files in ``--out``
  (by name, link or symlink) is refused, with or without ``--overwrite``.
- **One process per folder.** The folder is locked by :data:`LOCK`, created with ``O_EXCL`` and holding
  the process id, host name and start time, and removed when the run ends. A second run on the folder
  stops at once. A lock is stale, and taken over, when its process is no longer running on this host
  (a run killed by a signal leaves it behind), or when it holds no readable record and is older than
  :data:`STALE_LOCK_SECONDS`; a lock from another host is never taken over (delete it by hand when
  no run uses the folder).
- **No mixed folders.** ``config.json`` is written first with ``"status": "running"`` and rewritten
  when the run ends with ``"complete"``, ``"failed"`` (and the ``"error"``) or ``"interrupted"``; the
  checkpoint's copy of the config has no status.
- **Resuming continues the same run.** ``open_run(..., resume=True)`` reopens a folder whose run was
  interrupted, failed, or is marked running but no process holds its lock (killed), and that has a
  training state (:data:`TRAINING_STATE`, written by the training loop); it keeps every file, takes
  the lock and hands back the run's config. A complete run, a run of another kind, a folder without a
  training state and a folder in use are refused. The command's ``--resume RUN`` parses the command
  line the run recorded (:func:`resume_arguments`), and :meth:`RunFolder.start` checks that the
  config built from it (with the data's SHA-256) is the recorded one; a run refused there is left
  with the status it had.
- **Sampling reads only finished files.** :func:`load_run` refuses a folder that a live process has
  locked (its run is in progress: the model file may be missing, or that of an earlier session), and
  a model file that is empty, truncated, not a flowforge model, a folder, of another model than its
  config describes, or with non-finite weights; each in one line.

Runs written before the field ``"kind"`` existed are read by :func:`load_run`, which infers their kind
once, by the rule that version used (:func:`run_kind`). Every file goes through
:func:`~flowforge.utils.files.atomic_path` (the one the pictures and the training states use
too): it is written beside its destination under a hidden temporary name and moved into place with
:func:`os.replace` only when complete, so an interrupted run or a full disk never leaves a
half-written file; ``config.json`` and ``model.pt`` are also synced to the disk (``fsync``).
``metrics.json`` and ``config.json`` are strict JSON (:func:`write_json`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch

from ..streaming import LazyRows
from ..training import TrainingDiverged, TrainingInterrupted
from ..training.checkpoint import ResumeError, check_model
from ..utils.files import atomic_path
from .errors import CLIError
from .models import build_data_model, build_target_model

CONFIG = "config.json"
CHECKPOINT = "model.pt"
"""The model file: the run's config and the model's state dict, what ``sample`` reads."""
TRAINING_STATE = "checkpoint.pt"
"""The training state a run resumes from (``checkpoint=`` of the training loops)."""
METRICS = "metrics.json"
LOCK = ".flowforge.lock"
"""The lock file of a run folder in use."""
STALE_LOCK_SECONDS = 10.0
"""A lock file without a readable record is taken to be half-written by a live process until it is this old."""
RUN_FILES = frozenset(
    {CONFIG, CHECKPOINT, TRAINING_STATE, METRICS, "samples.csv", "samples.npy", "target.png", "initial.png",
     "learned.png", "comparison.png", "training.gif", "loss.png", "pairs.png", "samples.png", "samples-t0.7.png",
     "data.png", "reconstructions.png"}
)  # fmt: skip
"""Every file a run of any kind writes in its folder: what ``--overwrite`` deletes, and no input may be one."""
KINDS = ("target", "table", "images", "vae", "mcmc", "compare")
"""Every run kind, as recorded in ``config.json`` and in the checkpoint's config."""
SAMPLED_KINDS = ("target", "table", "images")
"""The kinds whose model ``flowforge sample`` draws from."""
RUNNING, COMPLETE, FAILED, INTERRUPTED = "running", "complete", "failed", "interrupted"
"""The values of ``"status"`` in ``config.json``."""
RESUMABLE = (INTERRUPTED, FAILED, RUNNING)
"""The statuses of a run that ``open_run(..., resume=True)`` continues (``"running"``: its process is gone)."""
_PARTIAL = re.compile(r"\.(?P<name>.+)\.\d+\.[0-9a-f]{8}\.partial")  # atomic_path's temporary names


class Run(NamedTuple):
    """A run read back by :func:`load_run`: its model (in eval mode), its config (with ``"kind"``), and
    the context statistics of a conditional table run (``context_mean``, ``context_std``; else empty)."""

    model: Any  # a NormalizingFlow or, for images, a MultiscaleFlow
    config: dict
    statistics: dict


def add_out_arguments(parser: argparse.ArgumentParser, default: str | None = None, resumable: bool = False) -> None:
    """The options ``--out`` (required unless there is a ``default``, or ``--resume`` is given) and
    ``--overwrite`` of a command writing a run, and with ``resumable`` the option ``--resume RUN``."""
    required = "" if default is not None else " (required" + (" unless --resume is given)" if resumable else ")")
    parser.add_argument("--out", default=default, metavar="DIR", help=f"run folder to write: new or empty{required}")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="--out may hold a previous run: delete the files a run writes before starting (other files are kept)",
    )
    if resumable:
        parser.add_argument(
            "--resume",
            default=None,
            metavar="RUN",
            help="continue the interrupted run in folder RUN from its checkpoint, with the options it was started "
            "with (only --no-progress and --device may be given beside it)",
        )
    parser.set_defaults(out_required=default is None)


RESUME_OPTIONS = ("--resume", "--no-progress", "--device")
"""The options a command resuming a run may be given; every other one is the run's own. A run may
move to another device: the training state is read onto the CPU and then moved to the model's."""


def saved_state(args: argparse.Namespace | None) -> Path | None:
    """The training state that the run of a resumable command (``args``) has saved in its folder, if any."""
    if args is None or not hasattr(args, "resume") or getattr(args, "out", None) is None:  # not resumable
        return None
    state = Path(args.out) / TRAINING_STATE
    return state if state.is_file() else None


def typed_options(args: argparse.Namespace) -> list[str]:
    """The options typed on the command line ``args.argv`` (by their first flag), whatever their values:
    the command's parser parses it again with no defaults, so that only what was given is set."""
    parser = args.command_parser
    actions = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    defaults = [action.default for action in actions]
    try:
        for action in actions:
            action.default = argparse.SUPPRESS
        typed = vars(parser.parse_args(args.argv[1:]))
    finally:
        for action, default in zip(actions, defaults, strict=True):
            action.default = default
    return [action.option_strings[0] for action in actions if action.dest in typed]


def fingerprint(*arrays: torch.Tensor | np.ndarray | LazyRows | None) -> str:
    """The SHA-256 of arrays' dtypes, shapes and values (None skipped): what a run records of its data,
    so that resuming it on data that changed is refused. Rows read on demand
    (:class:`~flowforge.streaming.LazyRows`) are hashed as their float64 values, in one streaming pass:
    the same digest as the table read into memory."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            continue
        if isinstance(array, LazyRows):
            digest.update(f"{np.dtype(np.float64).str}{array.shape};".encode())
            for values in array.chunks():
                digest.update(np.ascontiguousarray(values.numpy()).tobytes())
            continue
        flat = np.ascontiguousarray(array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array)
        digest.update(f"{flat.dtype.str}{flat.shape};".encode())
        digest.update(flat.tobytes())
    return digest.hexdigest()


def fit_beside(args: argparse.Namespace, fit: Callable[..., Any]) -> None:
    """A process other than 0 of a distributed run: the run's ``fit`` (as process 0 runs it) without a
    progress bar, naming the run's training state as process 0 does (only process 0 writes it) and
    reading it to resume; a divergence or an interruption is process 0's to report."""
    state = Path(args.out) / TRAINING_STATE
    with suppress(TrainingDiverged, TrainingInterrupted):
        fit(progress=False, checkpoint=state, resume=state if resuming(args) else None)


def resuming(args: argparse.Namespace) -> bool:
    """Whether the command continues a run (``--resume RUN``)."""
    return getattr(args, "resume", None) is not None


def input_path(args: argparse.Namespace) -> str:
    """The path of ``--data``: where a resumed run reads it (relative to the folder the run was started
    in, when found there; :func:`resume_arguments`), else as given."""
    return getattr(args, "data_path", None) or args.data


def invocation(args: argparse.Namespace) -> dict:
    """What a run records of the command line that started it, so that ``--resume`` can repeat it: the
    arguments (``argv``, from the command's name on) and the working directory they were given in."""
    return {"argv": list(getattr(args, "argv", None) or []), "cwd": os.getcwd()}


def resume_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The parsed arguments of a command given ``--resume RUN``: those the run was started with (its
    config's ``invocation``, parsed again, so that they are checked again), with ``out`` and ``resume``
    set to RUN. Options other than :data:`RESUME_OPTIONS` are refused: a resumed run keeps its settings."""
    typed = typed_options(args)
    given = [flag for flag in typed if flag not in RESUME_OPTIONS]
    if given:
        raise CLIError(
            f"--resume continues a run with the options it was started with; drop {', '.join(given)} (to change "
            "them, start a new run)"
        )
    config = read_run_config(args.resume)
    recorded = config.get("invocation")
    argv = recorded.get("argv") if isinstance(recorded, dict) else None
    if not (isinstance(argv, list) and argv and all(isinstance(item, str) for item in argv)):
        raise CLIError(
            f"the run in {args.resume!r} does not record the command that started it (it was written by a "
            "flowforge without --resume, or by the library); it cannot be resumed by the command"
        )
    shown = "flowforge " + shlex.join(argv)
    if {"-h", "--help", "--version"} & set(argv):
        raise CLIError(f"the run in {args.resume!r} records the command line `{shown}`, which starts no run")
    try:
        resumed = parser.parse_args(argv)
    except CLIError as error:
        raise CLIError(
            f"the run in {args.resume!r} cannot be resumed: the command line it records (`{shown}`) does not parse "
            f"in this flowforge: {error}"
        ) from None
    if resumed.handler is not args.handler:
        raise CLIError(
            f"the run in {args.resume!r} was started by `flowforge {resumed.command}`; continue it with "
            f"`flowforge {resumed.command} --resume {args.resume}`"
        )
    data, cwd = getattr(resumed, "data", None), cast(dict, recorded).get("cwd")
    if isinstance(data, str) and isinstance(cwd, str) and not Path(data).is_absolute() and Path(cwd, data).exists():
        resumed.data_path = str(Path(cwd, data))  # a relative input is read where the run was started
    resumed.out, resumed.overwrite, resumed.resume, resumed.argv = args.resume, False, args.resume, argv
    resumed.no_progress = resumed.no_progress or args.no_progress
    if "--device" in typed:
        resumed.device = args.device
    return resumed


def prepare_out(folder: str | os.PathLike) -> Path:
    """The run folder ``folder``, created if needed."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise CLIError(f"--out {str(folder)!r} is a file, not a folder; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CLIError(
            f"cannot write to run folder {str(folder)!r}: {error.strerror or error}; choose another --out"
        ) from None
    return path


def _same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file, through links and symlinks (paths that do not exist name nothing)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def check_inputs(folder: str | os.PathLike, inputs: Mapping[str, str | os.PathLike]) -> None:
    """Refuse an input (``{option: path}``) that is one of the files a run in ``folder`` writes or deletes."""
    path = Path(folder)
    if not path.is_dir():
        return
    for option, given in inputs.items():
        for name in sorted(RUN_FILES):
            if _same_file(Path(given), path / name):
                raise CLIError(
                    f"{option} {str(given)!r} is the file {name} of the run folder {str(folder)!r}, which a run "
                    "writes; move the input out of it or choose another --out"
                )


def check_output(output: str | os.PathLike, run: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an output of ``sample`` that is a file of the run it reads, or that exists (unless ``overwrite``)."""
    path, folder = Path(output), Path(run)
    own = [p.name for p in folder.iterdir() if _same_file(path, p)] if folder.is_dir() else []
    if _same_file(path.parent, folder) and path.name in RUN_FILES:
        own.append(path.name)
    if own:
        raise CLIError(f"-o {str(output)!r} is the file {own[0]} of the run {str(run)!r}; choose a file outside it")
    if path.is_dir():
        raise CLIError(f"-o {str(output)!r} is a folder; give a file name ending in .npy or .csv")
    if path.exists() and not overwrite:
        raise CLIError(f"-o {str(output)!r} exists; use --overwrite to replace it, or choose another -o")


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.json`` written by flowforge (any version)."""
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and (config.get("kind") in KINDS or "flowforge_version" in config)


def _clear(folder: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``folder``, or with ``overwrite`` delete the files of the run in it (config.json last)."""
    present = sorted(p.name for p in folder.iterdir() if p.name != LOCK)
    if not present:
        return
    if not overwrite:
        shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
        raise CLIError(
            f"run folder {str(folder)!r} is not empty (it holds {shown}); use --overwrite to replace the run in it "
            "(other files are kept), or choose another --out"
        )
    partial = [name for name in present if (match := _PARTIAL.fullmatch(name)) and match["name"] in RUN_FILES]
    ours = [name for name in present if name in RUN_FILES and name != CONFIG]
    for name in ours:
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            raise CLIError(
                f"{str(folder / name)!r} is a folder where a run writes a file; move it or choose another --out"
            )
    if CONFIG in present and not _is_run_config(folder / CONFIG):
        raise CLIError(
            f"{CONFIG} in {str(folder)!r} is not the config of a flowforge run, and --overwrite replaces only a "
            "run's files; move it or choose another --out"
        )
    if ours and CONFIG not in present:
        raise CLIError(
            f"run folder {str(folder)!r} holds {', '.join(ours)} without a flowforge config.json, and --overwrite "
            "replaces only a run's files; move them or choose another --out"
        )
    for name in [*partial, *ours, *([CONFIG] if CONFIG in present else [])]:
        (folder / name).unlink()


def _lock_holder(lock: Path) -> tuple[str, dict | None]:
    """The text of ``lock`` and its record (None when unreadable); FileNotFoundError when it is gone."""
    text = lock.read_bytes().decode("utf-8", "replace")
    try:
        record = json.loads(text)
    except ValueError:
        return text, None
    return text, record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _process_running(pid: int) -> bool:
    if pid == os.getpid():  # not ours yet: an earlier process had our id (a container restarts with the same ids)
        return False
    if os.name == "nt":  # os.kill would end the process there; a lock on Windows is never taken over
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def _is_stale(lock: Path, record: dict | None) -> bool:
    if record is None:
        return time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS
    return record.get("host") == socket.gethostname() and not _process_running(record["pid"])


def _remove_stale(lock: Path, seen: str) -> None:
    """Remove the stale ``lock`` whose text was ``seen``, unless another process has taken it over meanwhile."""
    aside = lock.with_name(f"{LOCK}.{os.getpid()}.{uuid.uuid4().hex[:8]}.stale")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another process removed it first
    try:
        if aside.read_bytes().decode("utf-8", "replace") != seen:  # a fresh lock: give it back
            os.link(aside, lock)
    except OSError:
        pass
    aside.unlink()


def _in_use(folder: Path, lock: Path, record: dict | None) -> CLIError:
    if record is None:
        who = "another process (its lock file is being written)"
    else:
        host = record.get("host")
        who = f"process {record['pid']}" + ("" if host == socket.gethostname() else f" on host {host!r}")
    return CLIError(
        f"run folder {str(folder)!r} is in use by {who}; wait for that run to end or choose another --out "
        f"(if no run is using it, delete {str(lock)!r})"
    )


def _acquire_lock(folder: Path) -> tuple[Path, str]:
    """Create ``folder/.flowforge.lock`` with ``O_EXCL`` (taking over a stale one); returns the lock and its text."""
    lock = folder / LOCK
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    for _ in range(3):
        try:
            descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                seen, record = _lock_holder(lock)
                if not _is_stale(lock, record):
                    raise _in_use(folder, lock, record) from None
            except FileNotFoundError:
                continue  # the holder has just released it
            except OSError as error:
                raise CLIError(
                    f"cannot read the lock file {str(lock)!r}: {error.strerror or error}; check its permissions "
                    "or choose another --out"
                ) from None
            _remove_stale(lock, seen)
            continue
        except OSError as error:
            raise CLIError(
                f"cannot write to run folder {str(folder)!r}: {error.strerror or error}; choose another --out"
            ) from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        return lock, text
    raise _in_use(folder, lock, None)


def _release_lock(lock: Path, text: str) -> None:
    try:
        if lock.read_text() == text:  # still ours
            lock.unlink()
    except OSError:
        pass


class RunFolder:
    """A run folder opened by :func:`open_run`: its ``path``, ``kind``, and the ``config`` it records
    (without its status; on resume, the config the run was started with)."""

    def __init__(self, path: Path, kind: str, resumed: bool = False) -> None:
        self.path, self.kind, self.resumed = path, kind, resumed
        self.config: dict | None = None
        self.started = False
        """Whether :meth:`start` (or :meth:`write_config`) has accepted the run's config."""

    @property
    def training_state(self) -> Path:
        """The run's training state: ``checkpoint=`` of the training loop."""
        return self.path / TRAINING_STATE

    @property
    def resume_from(self) -> Path | None:
        """``resume=`` of the training loop: the training state when the run is resumed, else None."""
        return self.training_state if self.resumed else None

    def start(self, config: dict) -> dict:
        """The config of the run: a new run's ``config`` as :meth:`write_config` records it; for a resumed
        run, the one it was started with, after checking that ``config`` (built again from its command line
        and inputs) gives the same settings (the ``invocation``, ``device`` and version may differ)."""
        if not self.resumed:
            return self.write_config(config)
        assert self.config is not None
        free = ("invocation", "device", "flowforge_version", "kind")
        changed = sorted(
            key for key in {*config, *self.config} - set(free) if _strict(config.get(key)) != self.config.get(key)
        )
        if changed:
            raise CLIError(
                f"the run in {str(self.path)!r} cannot be resumed: its {', '.join(changed)} changed since it started"
                + (" (its data file was modified)" if "data_sha256" in changed else "")
            )
        self.started = True
        return self.config

    def write_config(self, config: dict) -> dict:
        """Write ``config.json``: ``config`` with ``"kind"`` and ``"status": "running"``; returns it with
        the kind and without the status (the copy the checkpoint keeps)."""
        self.config = {**config, "kind": self.kind}
        self.finish(RUNNING)
        self.started = True
        return self.config

    def finish(self, status: str, error: str | None = None) -> None:
        """Rewrite ``config.json`` with ``"status": status`` (and any ``"error"``); not before :meth:`write_config`."""
        if self.config is not None:
            write_json(self.path / CONFIG, {**self.config, "status": status, **({"error": error} if error else {})})


@contextmanager
def open_run(
    folder: str | os.PathLike,
    kind: str,
    *,
    overwrite: bool = False,
    inputs: Mapping[str, str | os.PathLike] | None = None,
    resume: bool = False,
) -> Iterator[RunFolder]:
    """Open the run folder ``folder`` for a run of ``kind``: check the ``inputs`` (``{option: path}``),
    create and lock the folder, refuse it unless empty (or with ``overwrite``, delete its run's files),
    and when the block ends record its status in ``config.json`` and remove the lock.

    With ``resume`` the folder must hold a run of ``kind`` that can be resumed (:data:`RESUMABLE`, with
    its :data:`TRAINING_STATE`): its files are kept, its status is set to ``"running"`` again, and the
    :class:`RunFolder`'s ``config`` is the run's (``resumed`` is True)."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}; expected one of {', '.join(KINDS)}")
    if resume and overwrite:
        raise CLIError("--resume continues the run in a folder and --overwrite starts a new one there; give one")
    check_inputs(folder, inputs or {})
    path = _existing_run(folder) if resume else prepare_out(folder)
    lock, text = _acquire_lock(path)
    try:
        run = RunFolder(path, kind, resumed=resume)
        if resume:
            recorded = read_run_config(path)
            run.config = _resumable(path, kind, recorded)
            run.finish(RUNNING)
        else:
            _clear(path, overwrite)
        try:
            yield run
        except (CLIError, ResumeError) as error:
            with suppress(OSError):
                if resume and (not run.started or isinstance(error, ResumeError)):
                    # not resumed after all (its settings, data or training state would not do): as it was
                    run.finish(recorded["status"], recorded.get("error"))
                else:
                    run.finish(FAILED, str(error))
            raise
        except KeyboardInterrupt:
            with suppress(OSError):
                run.finish(INTERRUPTED)
            raise
        except BaseException as error:
            with suppress(OSError):  # the error that ended the run is the one to report
                run.finish(FAILED, str(error) if isinstance(error, CLIError) else f"{type(error).__name__}: {error}")
            raise
        run.finish(COMPLETE)
    finally:
        _release_lock(lock, text)


def _existing_run(folder: str | os.PathLike) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise CLIError(f"--resume {str(folder)!r}: no such run folder")
    return path


def _resumable(path: Path, kind: str, config: dict) -> dict:
    """The ``config`` (read from ``path``, which this process has locked) without its status, if its run
    can be resumed as a run of ``kind``; else a :class:`CLIError` saying why not."""
    shown = str(path)
    if config["kind"] != kind:
        raise CLIError(
            f"{shown!r} holds a {config['kind']} run, not a {kind} run; resume it with the command that wrote it"
        )
    status = config.get("status")
    if status == COMPLETE:
        raise CLIError(f"the run in {shown!r} is complete; nothing to resume (--overwrite starts it again)")
    if status not in RESUMABLE:
        raise CLIError(f"the run in {shown!r} has status {status!r}; only a run {', '.join(RESUMABLE)} can be resumed")
    if not (path / TRAINING_STATE).is_file():
        raise CLIError(
            f"the run in {shown!r} has no {TRAINING_STATE} to resume from (it stopped before its first "
            "checkpoint); start it again with --overwrite"
        )
    return {key: value for key, value in config.items() if key not in ("status", "error")}


def read_run_config(folder: str | os.PathLike) -> dict:
    """The ``config.json`` of the run in ``folder``, with its ``"kind"`` (inferred for older runs) and
    ``"status"``; a :class:`CLIError` when it is missing, unreadable or not a flowforge run's."""
    path = Path(folder) / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CLIError(f"{str(folder)!r} is not a run folder: {path} not found") from None
    except OSError as error:
        raise CLIError(f"cannot read {path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, ValueError):
        raise CLIError(f"cannot read {path}: it is not JSON") from None
    if not isinstance(config, dict) or not (config.get("kind") in KINDS or "flowforge_version" in config):
        raise CLIError(f"{path} is not the config of a flowforge run")
    return {**config, "kind": run_kind(config)}


def write_json(path: str | os.PathLike, data: dict) -> None:
    """``data`` as indented JSON with sorted keys, written atomically and synced to the disk.

    Strict JSON, which every parser reads: NaN and ±inf, which JSON has no numbers for, are written as
    ``null`` (a value that could not be computed), and NumPy numbers and arrays as JSON numbers and lists.
    """
    text = json.dumps(_strict(data), indent=2, sort_keys=True, allow_nan=False)
    with atomic_path(path, durable=True) as temporary:
        temporary.write_text(text + "\n", encoding="utf-8")


def _strict(value: Any) -> Any:
    """``value`` with non-finite floats as None and NumPy values as Python ones, in dicts, lists and tuples."""
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_strict(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_checkpoint(out: Path, config: dict, model: torch.nn.Module, **extra: Any) -> None:
    """Write ``out/model.pt``: the run's config, the model's state dict and ``extra`` entries (atomically,
    synced to the disk; through a Python file, so that a full disk is an :class:`OSError`)."""
    with atomic_path(out / CHECKPOINT, durable=True) as temporary, open(temporary, "wb") as handle:
        torch.save({"config": config, "state_dict": model.state_dict(), **extra}, handle)


def save_npy(path: str | os.PathLike, values: np.ndarray) -> None:
    """``values`` as a NumPy ``.npy`` file, written atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, values)


def save_csv(path: str | os.PathLike, values: np.ndarray, header: Sequence[str]) -> None:
    """``values`` as comma-separated rows below one header line of column names, written atomically."""
    with atomic_path(path) as temporary:
        np.savetxt(temporary, values, delimiter=",", header=",".join(header), comments="")


def run_kind(config: dict) -> str:
    """The run's kind: its ``"kind"`` field, or for runs written before that field existed, ``"vae"``
    when the config names a posterior and ``"target"`` otherwise (data runs always had a kind)."""
    if "kind" in config:
        return config["kind"]
    return "vae" if "posterior" in config else "target"


def load_run(path: str | os.PathLike) -> Run:
    """The run in folder ``path``, ready to sample; a missing, unreadable or unsampleable run is a :class:`CLIError`.

    A run in progress (its folder locked by a live process) is refused: its model file may be missing,
    or that of an earlier session of a resumed run. The model file is read with ``weights_only=True``;
    one that is empty, truncated, not a flowforge model file, a folder, of another model than its
    config describes, or that holds NaN or infinite weights is refused in one line.
    """
    folder = Path(path)
    model_path = folder / CHECKPOINT
    if model_path.is_dir():
        raise CLIError(f"cannot load {model_path}: it is a folder, not a model file")
    if not model_path.is_file():
        raise CLIError(f"{str(path)!r} is not a run folder: {model_path} not found")
    _refuse_in_progress(folder)
    checkpoint = _read_model_file(model_path)
    config = {**checkpoint["config"], "kind": run_kind(checkpoint["config"])}
    kind = config["kind"]
    if kind not in SAMPLED_KINDS:
        raise CLIError(f"{str(path)!r} is a {kind} run; sample draws from runs of fit and demo")
    try:
        model = build_target_model(config) if kind == "target" else build_data_model(config)
    except (RuntimeError, KeyError, TypeError, ValueError, OverflowError) as error:
        raise CLIError(f"cannot load {model_path}: {_first_line(error)}") from None
    state = checkpoint["state_dict"]
    try:
        check_model(state, model)
    except ValueError as error:
        raise CLIError(
            f"cannot load {model_path}: its weights do not fit the model its config describes: {error}"
        ) from None
    broken = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise CLIError(
            f"cannot load {model_path}: its weights hold NaN or infinite values ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}); refit the run"
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CLIError(f"cannot load {model_path}: {_first_line(error)}") from None
    statistics = checkpoint.get("context", {})
    statistics = statistics if isinstance(statistics, dict) else {}
    _check_context_statistics(model_path, config, statistics)
    return Run(model.eval(), config, statistics)


def _check_context_statistics(model_path: Path, config: dict, statistics: dict) -> None:
    """A conditional table run's model file must hold finite ``context_mean`` and positive ``context_std``
    with one value per context column, and every data run's config its column ``names`` (images: None)."""
    if config["kind"] == "target":
        return
    if "names" not in config:
        raise CLIError(f"cannot load {model_path}: its config has no 'names' entry; refit the run")
    columns = len(config.get("context_names") or [])
    if config["kind"] != "table" or not columns:
        return
    for key in ("context_mean", "context_std"):
        value = statistics.get(key)
        if (
            not isinstance(value, torch.Tensor)
            or value.shape != (columns,)
            or not torch.isfinite(value).all()
            or (key == "context_std" and not (value > 0).all())
        ):
            raise CLIError(
                f"cannot load {model_path}: a run conditional on {columns} column(s) needs its {key} "
                f"(finite, one value per context column{', positive' if key == 'context_std' else ''}); refit the run"
            )


def _refuse_in_progress(folder: Path) -> None:
    """A :class:`CLIError` when a live process holds the lock of ``folder`` (a run is writing it)."""
    lock = folder / LOCK
    try:
        _, record = _lock_holder(lock)
        stale = _is_stale(lock, record)
    except OSError:  # no lock (or one just released)
        return
    if not stale:
        who = "a process whose lock is being written" if record is None else f"process {record['pid']}"
        raise CLIError(
            f"the run in {str(folder)!r} is in progress ({who}); sample it when that run has ended (if no run is "
            f"using the folder, delete {str(lock)!r})"
        )


def _read_model_file(model_path: Path) -> dict:
    """The model file's ``{"config", "state_dict", ...}``, read with ``weights_only=True``; a
    :class:`CLIError` (one line, never torch's advice to unpickle) when it is not one."""
    try:
        if model_path.stat().st_size == 0:
            raise CLIError(f"cannot load {model_path}: the file is empty (its run did not finish writing it)")
        with warnings.catch_warnings():  # torch warns about what it finds in a damaged file; it is refused anyway
            warnings.simplefilter("ignore")
            checkpoint = torch.load(model_path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise CLIError(f"cannot read {model_path}: {error.strerror or error}") from None
    except CLIError:
        raise
    except Exception as error:  # torch raises many types on a damaged file; its message may advise unpickling
        raise CLIError(
            f"cannot load {model_path}: not a flowforge model file, or a damaged one (torch cannot read it: "
            f"{type(error).__name__})"
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if (
        not isinstance(checkpoint, dict)
        or not isinstance(checkpoint.get("config"), dict)
        or not isinstance(state, dict)
        or not all(isinstance(value, torch.Tensor) for value in state.values())
    ):
        raise CLIError(f"cannot load {model_path}: not a flowforge model file (no run config and weights in it)")
    return checkpoint


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
