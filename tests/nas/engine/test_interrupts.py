"""Stop signals (nas/engine/interrupts.py): SIGTERM and SIGHUP raise as Ctrl-C does, an ignored signal stays
ignored, a signal during a deferred block waits for its end, and a second one ends the process."""

import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from nas.engine import interrupts


def _signal_main_thread(sig: int) -> None:
    """Send ``sig`` to the main thread itself: a process-directed signal (os.kill) may land on another
    thread of the test process (earlier tests leave some), and then the main thread's sleep is not
    interrupted and the handler may run only after the block under test has ended."""
    signal.pthread_kill(threading.main_thread().ident, sig)


@pytest.fixture
def default_handlers():
    """Python's own handlers for the stop signals, as in a terminal: a test run started in the
    background (``nohup``, ``&``) inherits SIGHUP and SIGINT ignored, and those stay ignored (see
    test_an_ignored_signal_stays_ignored)."""
    saved = {s: signal.getsignal(s) for s in interrupts.STOP_SIGNALS}
    for s in interrupts.STOP_SIGNALS:
        signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_a_stop_signal_raises_interrupted_and_the_old_handlers_come_back(default_handlers):
    before = {s: signal.getsignal(s) for s in interrupts.STOP_SIGNALS}
    for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP"), (signal.SIGINT, "Ctrl-C")):
        with pytest.raises(KeyboardInterrupt) as e:
            with interrupts.handling():
                _signal_main_thread(sig)
                time.sleep(0.5)  # the handler runs here
        assert interrupts.signal_number(e.value) == sig and interrupts.describe(e.value) == name
    assert {s: signal.getsignal(s) for s in interrupts.STOP_SIGNALS} == before
    assert interrupts.describe(KeyboardInterrupt()) == "Ctrl-C"


def test_an_ignored_signal_stays_ignored():
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with interrupts.handling():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)


def test_a_deferred_block_finishes_before_the_signal_is_raised(default_handlers):
    done = []
    with pytest.raises(interrupts.Interrupted) as e:
        with interrupts.handling():
            with interrupts.deferred():
                _signal_main_thread(signal.SIGTERM)
                time.sleep(0.2)
                done.append("the writes")
    assert done == ["the writes"] and e.value.signum == signal.SIGTERM


def test_a_second_signal_while_stopping_ends_the_process():
    code = textwrap.dedent("""
        import os, signal, time
        from nas.engine import interrupts
        with interrupts.handling():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                print("cleaning up", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)  # impatient: the second one
                time.sleep(5)
                print("not reached", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGTERM and r.stdout == "cleaning up\n", (r.returncode, r.stdout, r.stderr)


def test_a_signal_swallowed_by_a_finalizer_is_raised_on_the_way_out(default_handlers, capsys):
    """A handler that runs inside ``__del__`` (or a weakref callback) cannot raise from there; the
    signal is kept and raised when the block ends, with no "Exception ignored" traceback."""

    class Finalized:
        def __del__(self):
            _signal_main_thread(signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here, inside the finalizer

    went_on = []
    with pytest.raises(interrupts.Interrupted) as e:
        with interrupts.handling():
            Finalized()  # collected at once
            went_on.append("the rest of the block")
    assert went_on == ["the rest of the block"] and e.value.signum == signal.SIGTERM
    assert "Exception ignored" not in capsys.readouterr().err


def test_once_the_command_has_finished_a_stop_signal_has_its_default_action(default_handlers):
    """``exiting`` (what the `nas` process calls as it returns): each stop signal ends the process as
    its default action does (tests/nas/engine/test_plugin_safety.py sends one during the shutdown),
    but one the process was started with ignored (nohup) stays ignored."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    interrupts.exiting()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
