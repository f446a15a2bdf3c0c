"""One writer per workdir: an exclusive lock held for the whole run.

`WorkdirLock(workdir).acquire()` takes an exclusive `flock` on
`workdir/.lock`; the operating system releases it when the process ends, so
a killed run never leaves a stale lock. `flock` cannot say who holds a lock,
so the holder writes its host, process id and start time into the file, and
a refused run names them. The trainer takes the lock before `--overwrite`
deletes anything; a sweep skips a run that another process holds, so the
same sweep started several times (on one machine, or on machines sharing a
file system) splits the work between them.
"""
import datetime
import fcntl
import os
import socket

from dropzoo.errors import RunError

LOCK_FILE = ".lock"


class WorkdirLocked(RunError):
    """The workdir is being written by another process."""


def held_elsewhere(workdir):
    """Whether another process holds `workdir`'s lock (WorkdirLock), found without writing anything."""
    try:
        with open(os.path.join(workdir, LOCK_FILE)) as f:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # (freed as the file closes)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


class WorkdirLock:
    """An exclusive lock on a workdir; `release` (or the process's end) frees it."""

    def __init__(self, workdir):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._file = None

    def acquire(self):
        """Takes the lock, or raises WorkdirLocked naming the holder."""
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process that has not written its name yet"
            f.close()
            raise WorkdirLocked(
                f"workdir {os.path.dirname(self.path)!r} is in use by another run ({holder}); "
                "wait for it to finish (then rerun to get its result), or use another --workdir"
            ) from None
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        f.write(f"host {socket.gethostname()}, pid {os.getpid()}, since {started}\n")
        f.flush()
        self._file = f
        return self

    def release(self):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @property
    def held(self):
        return self._file is not None
