"""Ctrl-C and SIGTERM stop a run cleanly: at the next Python step, with one line.

Inside `stop_on_signals()` the first SIGINT or SIGTERM raises `Interrupted`
(a BaseException, like KeyboardInterrupt, so no `except Exception` swallows
it) wherever Python is; every writer is atomic, so nothing half-written is
left, and no checkpoint is written in the middle of an epoch: the rerun starts
again from the last finished one. A second signal ends the process at once.
`exit_by_signal` then ends the process by the signal itself, as shells
expect (status 130 for SIGINT, 143 for SIGTERM).

A SIGINT that is ignored when the process starts (a background job of a
non-interactive shell) stays ignored.
"""
import contextlib
import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.workdir = None  # the run it stopped, set by the trainer


@contextlib.contextmanager
def stop_on_signals():
    received = []

    def handler(signum, frame):
        if received:  # a second Ctrl-C: no more cleaning up
            os.write(2, f"\n{signal.Signals(signum).name} again: exiting now\n".encode())
            os._exit(128 + signum)
        received.append(signum)
        raise Interrupted(signum)

    previous = {}
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue
        previous[signum] = current
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, current in previous.items():
            signal.signal(signum, current)


def quiet_during_start_up():
    """Until `stop_on_signals`: SIGINT/SIGTERM end the process with one line, no traceback.

    For the seconds a script spends importing TensorFlow, before it has
    written anything.
    """
    def handler(signum, frame):
        os.write(2, f"interrupted ({signal.Signals(signum).name}) while starting; "
                    "nothing was written\n".encode())
        os._exit(128 + signum)

    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, handler)


def exit_by_signal(signum):
    """Ends this process by `signum` with its default action (status 128 + signum)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached where the signal's default is to terminate
