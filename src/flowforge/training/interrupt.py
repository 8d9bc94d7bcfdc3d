"""Stopping a training loop cleanly on SIGINT, SIGTERM and SIGHUP.

While a loop runs in the main thread, :class:`DeferredSignals` holds these signals back instead of
letting them stop the process in the middle of a step: the loop looks at :attr:`DeferredSignals.pending`
at every step or batch boundary, writes its checkpoint, leaves the model in a usable state and raises
:class:`~flowforge.training.TrainingInterrupted`. A second Ctrl-C (SIGINT) while one is held back
raises :class:`SignalInterrupt` (a :class:`KeyboardInterrupt`) at once, for a user who will not
wait for the boundary. A signal
that is ignored when the loop starts (``nohup`` ignores SIGHUP, a background job SIGINT) stays ignored,
and a signal held back but not acted on (the loop ended with an error first) is delivered again, to
the handler it was meant for, when the loop ends. Outside the main thread nothing is changed (Python
runs signal handlers in the main thread only).

:class:`InterruptingSignals` is the behaviour of a whole command outside the loops: each of these
signals raises :class:`KeyboardInterrupt` at once and is recorded, so that the command can say which
one stopped it.

Both re-raise a :class:`KeyboardInterrupt` that Python dropped. A signal handler runs in whatever
Python code the main thread is executing, and when that is a finaliser or a weak-reference callback
run by the garbage collector (matplotlib makes many), an exception cannot propagate: Python prints
"Exception ignored in ..." and goes on, and the interruption is lost (a Ctrl-C during the pictures
of ``flowforge fit`` was swallowed about once in six tries, and the command went on to exit 0).
While a block is active, ``sys.unraisablehook`` sees such a dropped interruption and sends the signal
again from a helper thread, a moment later, so that it arrives when the main thread is back in
ordinary code (should it land in a finaliser again, it is sent again).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

INTERRUPT_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""The signals that stop a loop at its next boundary: those of ("SIGINT", "SIGTERM", "SIGHUP") this
platform has."""


RESEND_DELAY_SECONDS = 0.02
"""How long after Python dropped an interruption it is sent again: time for the main thread to leave
the finaliser (and the hook) it was dropped in."""


def signal_name(number: int) -> str:
    """``"SIGTERM"`` for 15, and so on (``"signal N"`` for a number this platform does not name)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class SignalInterrupt(KeyboardInterrupt):
    """The :class:`KeyboardInterrupt` the handlers of this module raise, with the signal's number."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_name(signal_number))
        self.signal_number = signal_number

    def __reduce__(self) -> tuple:
        return type(self), (self.signal_number,)


def _send_again(number: int) -> None:
    """Send signal ``number`` to the main thread (to the process where threads cannot be signalled)."""
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident or 0, number)
    else:
        signal.raise_signal(number)


class _Handlers:
    """Install ``handler`` for :data:`INTERRUPT_SIGNALS` (those not ignored) and a ``sys.unraisablehook``
    that sends a signal again when the :class:`KeyboardInterrupt` it raised was dropped; undo both."""

    def __init__(self, handler: Callable[[int, FrameType | None], None]) -> None:
        self._handler = handler
        self._previous: dict[int, Any] = {}
        self._previous_hook: Callable[[Any], object] | None = None
        self.raised: int | None = None
        """the signal whose handler last raised KeyboardInterrupt"""

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number in INTERRUPT_SIGNALS:
            previous = signal.getsignal(number)
            if previous is signal.SIG_IGN or previous is None:  # ignored, or a handler not set from Python
                continue
            self._previous[number] = previous
            signal.signal(number, self._handler)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def _unraisable(self, unraisable: Any) -> None:
        kind = unraisable.exc_type
        if self.raised is not None and kind is not None and issubclass(kind, KeyboardInterrupt):
            # After a pause: sent at once, it could arrive while this hook still runs, and be dropped again.
            resend = threading.Timer(RESEND_DELAY_SECONDS, _send_again, args=(self.raised,))
            resend.daemon = True
            resend.start()
            return
        (self._previous_hook or sys.__unraisablehook__)(unraisable)

    def restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()
        if self._previous_hook is not None and sys.unraisablehook == self._unraisable:
            sys.unraisablehook = self._previous_hook
        self._previous_hook = None


class InterruptingSignals:
    """A ``with`` block during which SIGINT, SIGTERM and SIGHUP raise :class:`SignalInterrupt` (a
    :class:`KeyboardInterrupt`) at once (those not ignored), each recorded in :attr:`received`; the
    previous handlers are restored when it ends."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._handlers = _Handlers(self._raise)

    def _raise(self, number: int, frame: FrameType | None) -> None:
        self.received.append(number)
        self._handlers.raised = number
        raise SignalInterrupt(number)

    def __enter__(self) -> InterruptingSignals:
        self._handlers.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._handlers.restore()


class DeferredSignals:
    """A ``with`` block during which SIGINT, SIGTERM and SIGHUP are recorded in :attr:`pending` (the
    first one's number) instead of acting; the previous handlers are restored when the block ends."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self._acted_on = False
        self._handlers = _Handlers(self._hold)

    def __enter__(self) -> DeferredSignals:
        self._handlers.install()
        return self

    def _hold(self, number: int, frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = number
        elif number == signal.SIGINT:
            self._handlers.raised = number
            raise SignalInterrupt(number)

    def act(self) -> int:
        """The pending signal's number, now taken care of by the caller (it will not be delivered again)."""
        if self.pending is None:
            raise RuntimeError("no signal is pending")
        self._acted_on = True
        return self.pending

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._handlers.restore()
        stopping = kind is not None and issubclass(kind, KeyboardInterrupt)
        if self.pending is not None and not self._acted_on and not stopping:
            signal.raise_signal(self.pending)
