"""Interrupts: Ctrl-C, SIGTERM, SIGHUP, SIGUSR1/2 become one exception, ``RunInterrupted``.

Clusters stop jobs with signals: SLURM sends SIGTERM on preemption, ``scancel`` and at the time limit
(SIGUSR1 first with ``--signal=USR1@N``; SIGUSR2 for jobs submitted by submitit, whose
``slurm_signal_delay_s`` asks for ``--signal=USR2@N``), people press Ctrl-C, and an ssh session that
closes on a login node sends SIGHUP to the runs started from it. Lightning turns Ctrl-C into
``sys.exit(1)`` and SIGTERM into ``SIGTERMException``, both ``SystemExit``, which say neither which
signal came nor that the run is unfinished. Inside ``guard()`` each of these signals raises
``RunInterrupted`` (a ``KeyboardInterrupt``, so Lightning and Optuna treat it as Ctrl-C: teardown,
DDP children killed, the trial not swallowed) and remembers the signal, so the caller can record
``status: interrupted`` and exit with ``128 + signal``. A signal that arrives inside ``deferred()``
(a checkpoint being written) is held until the block ends, so a checkpoint is never half-written
by an interrupt. Written by hand: neither Lightning nor Optuna records which signal stopped a run.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

# SIGUSR2: submitit's warning before the time limit. Its own handler would exit the worker mid-trial
# (a FAIL in Optuna, not a requeued, resumable trial), so inside a run it is an interrupt like the others.
# SIGHUP: the terminal went away (ssh closed); the run cannot go on reporting there, so it stops resumable.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


class RunInterrupted(KeyboardInterrupt):
    """A run or worker was stopped by a signal; ``signum`` says which, ``exit_code`` is the shell's 128 + signal."""

    def __init__(self, signum: int = signal.SIGINT, message: str | None = None) -> None:
        self.signum = int(signum)
        super().__init__(message or f"interrupted by {signal_name(self.signum)}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


_received: list[int] = []  # signals seen since the outermost guard started, oldest first
_held: list[int] = []  # signals that arrived inside deferred(), raised when it ends
_depth = {"guard": 0, "deferred": 0}


def last_signal() -> int | None:
    """The last signal a guard caught (``None``: none yet); a ``SystemExit`` from Lightning is mapped with it."""
    return _received[-1] if _received else None


def _handler(signum: int, _frame) -> None:
    _received.append(signum)
    if _depth["deferred"]:
        _held.append(signum)
        return
    raise RunInterrupted(signum)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 into ``RunInterrupted`` inside the block (main thread only; nestable)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    if _depth["guard"] == 0:
        _received.clear()
    _depth["guard"] += 1
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        _depth["guard"] -= 1
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def raise_if_signalled() -> None:
    """Raise ``RunInterrupted`` if a guard caught a signal: a check at safe points for one raised where Python
    swallows exceptions (a ``__del__`` or weakref callback prints "Exception ignored" and goes on)."""
    if _received and _depth["guard"] and not _depth["deferred"]:
        raise RunInterrupted(_received[-1])


@contextlib.contextmanager
def deferred(raise_at_end: bool = True) -> Iterator[None]:
    """Hold interrupts until the block ends (a file being written), then raise the first one; with
    ``raise_at_end=False`` the next ``raise_if_signalled()`` raises it instead (a safe point of the caller's)."""
    _depth["deferred"] += 1
    try:
        yield
    finally:
        _depth["deferred"] -= 1
        if not raise_at_end:
            _held.clear()  # still in _received: raise_if_signalled() raises it
        elif _depth["deferred"] == 0 and _held:
            signum = _held[0]
            _held.clear()
            raise RunInterrupted(signum)


def as_interrupt(exc: BaseException) -> RunInterrupted | None:
    """The ``RunInterrupted`` an exception stands for: itself, Ctrl-C, or Lightning's ``SystemExit``/SIGTERM exit."""
    if isinstance(exc, RunInterrupted):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return RunInterrupted(signal.SIGINT)
    if isinstance(exc, SystemExit):
        # Lightning exits with 1 after Ctrl-C or our RunInterrupted, and raises SIGTERMException on SIGTERM.
        name = type(exc).__name__
        signum = last_signal() or (signal.SIGTERM if name == "SIGTERMException" else signal.SIGINT)
        return RunInterrupted(signum)
    return None
