"""What became of each run of a sweep, and the sweep's summary of them.

A run's outcome is its metrics (a dict: trained, finished earlier, or recorded as identical by construction to
another run), `Skipped` (another process holds it), `Diverged` (its training diverged when it was trained before:
its record is kept, as a finished run's is), or a one-line reason it failed.
"""
import os
import socket


class Skipped(str):
    """A run another process was training: its lock holder, as a one-line reason."""


class Diverged(str):
    """A run whose training diverged when it was trained before (its diverged.json): a recorded outcome, kept."""


def failed(results):
    """The results whose run failed (skipped runs are another process's; a diverged run's outcome is recorded)."""
    return [r for r in results if not isinstance(r[2], (dict, Skipped, Diverged))]


def identical_line(target_workdir, outcome):
    """What a sweep prints of a run identical by construction to the run in `target_workdir`."""
    if not isinstance(outcome, dict):
        kind = "skipped" if isinstance(outcome, Skipped) else "diverged" if isinstance(outcome, Diverged) else "failed"
        return f"{kind}: {outcome}"
    return f"identical by construction to {target_workdir}" + (
        ": recorded, not trained" if "identical_to" in outcome else "; its own finished run here is kept")


def summary(results):
    """One line per run: workdir, test accuracy and who trained it (or why not)."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    lines = []
    for _, workdir, outcome in results:
        if isinstance(outcome, Skipped):
            lines.append(f"{workdir}  SKIPPED (in use by another process)")
        elif isinstance(outcome, Diverged):
            lines.append(f"{workdir}  DIVERGED {outcome}")
        elif isinstance(outcome, dict) and "identical_to" in outcome:
            lines.append(f"{workdir}  identical by construction to "
                         f"{os.path.normpath(os.path.join(workdir, outcome['identical_to']))} (not trained)")
        elif isinstance(outcome, dict):
            by = outcome.get("trained_by")
            who = ("trained here" if by == me else
                   f"finished earlier, by process {by['pid']} on host {by['host']}" if by else "finished earlier")
            lines.append(f"{workdir}  test_accuracy={outcome['test_accuracy']:.4f}  ({who})")
        else:
            lines.append(f"{workdir}  FAILED {outcome.splitlines()[0]}")
    if skipped := sum(isinstance(outcome, Skipped) for _, _, outcome in results):
        lines.append(f"{skipped} run(s) were being trained by another process; rerun this command once it is done "
                     "to see every result")
    return "\n".join(lines)
