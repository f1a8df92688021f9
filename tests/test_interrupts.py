"""``ablations.training.interrupts``: real signals to this process become ``RunInterrupted`` with the signal's name and exit code."""
from __future__ import annotations

import os
import signal

import pytest

from ablations.training import interrupts
from ablations.training.interrupts import RunInterrupted

# Every signal a user or a cluster stops a run with; the process tests (test_train_interrupts) send SIGTERM and
# SIGKILL end to end and check SIGINT's and SIGUSR1's rows, so each of these is checked here.
PROMISED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def test_the_guarded_signals_are_the_promised_ones():
    assert sorted(interrupts.SIGNALS) == sorted(PROMISED)


@pytest.mark.parametrize("sig", PROMISED, ids=lambda s: signal.Signals(s).name)
def test_guard_turns_each_signal_into_run_interrupted(sig):
    before = signal.getsignal(sig)
    with pytest.raises(RunInterrupted) as info, interrupts.guard():
        os.kill(os.getpid(), sig)
    assert info.value.signum == sig and info.value.exit_code == 128 + sig
    assert str(info.value) == f"interrupted by {signal.Signals(sig).name}"
    assert isinstance(info.value, KeyboardInterrupt)  # Lightning and Optuna treat it as Ctrl-C
    assert signal.getsignal(sig) == before  # the handler is restored


def test_deferred_holds_a_signal_until_the_block_ends():
    done = []
    with pytest.raises(RunInterrupted) as info, interrupts.guard(), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        done.append("file written")
    assert done == ["file written"] and info.value.signum == signal.SIGTERM


def test_a_swallowed_interrupt_is_raised_again_at_the_next_check():
    with pytest.raises(RunInterrupted) as info, interrupts.guard():
        try:  # as Python does inside a __del__ or weakref callback: prints "Exception ignored" and goes on
            os.kill(os.getpid(), signal.SIGUSR1)
        except RunInterrupted:
            pass
        interrupts.raise_if_signalled()
    assert info.value.signum == signal.SIGUSR1
    with interrupts.guard():
        interrupts.raise_if_signalled()  # a new run starts clean


def test_lightning_exits_map_to_the_signal_that_caused_them():
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    with interrupts.guard():  # no signal caught yet: the exception's own kind decides
        assert interrupts.as_interrupt(SIGTERMException()).signum == signal.SIGTERM
        assert interrupts.as_interrupt(SystemExit(1)).signum == signal.SIGINT  # Lightning's exit after Ctrl-C
    with pytest.raises(RunInterrupted), interrupts.guard():
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
        except RunInterrupted:
            assert interrupts.as_interrupt(SystemExit(1)).signum == signal.SIGUSR1  # the signal behind the exit
            raise
    assert interrupts.as_interrupt(KeyboardInterrupt()).signum == signal.SIGINT
    assert interrupts.as_interrupt(ValueError("no")) is None
