"""Ctrl-C and SIGTERM stop a run cleanly: at the next Python step, with one line.

Inside `stop_on_signals()` the first SIGINT or SIGTERM raises `Interrupted`
(a BaseException, like KeyboardInterrupt, so no `except Exception` swallows
it) wherever Python is; every writer is atomic, so nothing half-written is
left, and no checkpoint is written in the middle of an epoch: the rerun starts
again from the last finished one. A second signal ends the process at once.
`exit_by_signal` then ends the process by the signal itself, as shells
expect (status 130 for SIGINT, 143 for SIGTERM).

Outside it, as a script starts (TensorFlow loading) and as it ends (after
its last line, while the interpreter shuts down), `quiet_during_start_up`'s
handler ends the process with one line saying which of the two it was.

A SIGINT that is ignored when the process starts (a background job of a
non-interactive shell) stays ignored.

Python swallows an exception raised where it cannot propagate: a finalizer
(`__del__`, e.g. TensorFlow's function garbage collector) prints "Exception
ignored in ..." and carries on. A signal landing there would be lost, and the
run would train on. So the signal is also remembered: `raise_if_pending()`,
called at the end of every epoch, after its checkpoint, summaries and
progress line, raises it again, and the swallowed exception prints nothing.
"""
import contextlib
import os
import signal
import subprocess
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_RECEIVED = []  # the signal stop_on_signals() received, if any
_LEFT = []  # non-empty once a stop_on_signals() context has ended: the script's work is over


class Interrupted(BaseException):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.workdir = None  # the run it stopped, set by the trainer


@contextlib.contextmanager
def stop_on_signals():
    def handler(signum, frame):
        if _RECEIVED:  # a second Ctrl-C: no more cleaning up
            os.write(2, f"\n{signal.Signals(signum).name} again: exiting now\n".encode())
            os._exit(128 + signum)
        _RECEIVED.append(signum)
        raise Interrupted(signum)

    def quiet_if_interrupted(unraisable):
        if not isinstance(unraisable.exc_value, Interrupted):
            previous_hook(unraisable)
        # else: swallowed where it was raised; raise_if_pending() raises it again

    previous = {}
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue
        previous[signum] = current
        signal.signal(signum, handler)
    previous_hook, sys.unraisablehook = sys.unraisablehook, quiet_if_interrupted
    try:
        yield
    finally:
        for signum, current in previous.items():
            signal.signal(signum, current)
        sys.unraisablehook = previous_hook
        _RECEIVED.clear()
        _LEFT.append(True)


def raise_if_pending():
    """Raises Interrupted if a signal arrived inside stop_on_signals() (again, if it was swallowed)."""
    if _RECEIVED:
        raise Interrupted(_RECEIVED[0])


def quiet_during_start_up():
    """Outside `stop_on_signals`: SIGINT/SIGTERM end the process with one line, no traceback.

    For the seconds a script spends importing TensorFlow, before it has
    written anything, and those it spends shutting down after its work
    ended, when everything it wrote is whole.
    """
    def handler(signum, frame):
        name = signal.Signals(signum).name
        if _LEFT:
            line = f"interrupted ({name}) while exiting, after the work above ended; every file it wrote is whole"
        else:
            line = f"interrupted ({name}) while starting; nothing was written"
        os.write(2, f"{line}\n".encode())
        os._exit(128 + signum)

    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, handler)


# The watcher `while_blocked` starts: it outlives its parent by a moment, to say why it ended.
_WATCHER = """
import os, sys, time
parent, after, waiting, stopped = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
start, said = time.monotonic(), not waiting
while os.getppid() == parent:
    time.sleep(0.2)
    if not said and time.monotonic() - start > after:
        os.write(2, (waiting + "\\n").encode())
        said = True
os.write(2, (stopped + "\\n").encode())
"""


@contextlib.contextmanager
def while_blocked(what, waiting_line=None, after_s=20.0):
    """SIGINT and SIGTERM end the process at once while the main thread waits inside a C++ call that holds
    the GIL and never returns to Python (a multi-worker cluster waiting for workers that have not started):
    no Python handler, nor any Python thread, runs there. Their default action ends it instead, and a small
    watcher process (no TensorFlow) says so in one line, and prints `waiting_line` once the wait passes
    `after_s` seconds. Nothing is written while it waits.
    """
    # Handlers set from Python (None: set from C; SIG_IGN stays): only the main thread may change them.
    restore = {s: signal.getsignal(s) for s in SIGNALS if signal.getsignal(s) not in (None, signal.SIG_IGN)}
    # Its own session: a Ctrl-C at the terminal reaches this process, not the watcher.
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(os.getpid()), str(after_s), waiting_line or "",
                                f"stopped (a signal) while {what}; nothing was written"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        for signum in restore:
            signal.signal(signum, signal.SIG_DFL)
        yield
    finally:
        for signum, handler in restore.items():
            signal.signal(signum, handler)
        watcher.kill()
        watcher.wait()


def exit_by_signal(signum):
    """Ends this process by `signum` with its default action (status 128 + signum)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached where the signal's default is to terminate
