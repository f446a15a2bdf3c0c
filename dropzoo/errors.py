"""How the scripts report a user's mistake: one line on stderr, exit code 2.

Every error a user can fix derives from `DropzooError`, whose message is one
line naming the problem and the fix (multi-line library texts are joined).
`models/` stays free of this package and raises plain `ValueError`, so
`one_line()` also turns `ValueError` and `OSError` into one line, and the
failure of an op that a oneDNN ISA cap in the environment leaves without a
kernel: the scripts wrap their work in it and none of them ends in a
traceback. Programming errors (anything else) still show theirs.
"""
import contextlib
import logging as python_logging
import sys

EXIT_USAGE = 2


class DropzooError(Exception):
    """A user-facing error; str(e) is one line naming the problem and the fix."""

    def __init__(self, message, *args):
        # Embedded TF/h5py texts span lines; the scripts print str(e) as one line.
        super().__init__(" ".join(str(message).split()), *args)


class ConfigError(DropzooError, ValueError):
    """A bad configuration value."""


class DataError(DropzooError, ValueError):
    """Data that cannot be found or read as asked."""


class UnknownDataError(DataError):
    """Data named by something that names no data anywhere (a misspelt dataset): not data that is elsewhere, so no
    evaluation of other data stands in for it."""


class RunError(DropzooError, RuntimeError):
    """A run that cannot proceed as asked (workdir, NaN loss, a lost peer)."""


class ExportError(DropzooError, RuntimeError):
    """An export that could not be written, loaded or verified; `details` holds the evidence."""

    def __init__(self, message, details=None):
        super().__init__(message)
        self.details = details


# What `one_line` reports as a user's mistake: ours, plus the plain errors that
# models/ (ValueError) and the file system (OSError) raise.
USER_ERRORS = (DropzooError, ValueError, OSError)


def fail(message):
    """Prints `error: message` to stderr and returns the exit code for it."""
    text = " ".join(str(message).split())
    print(f"error: {text}", file=sys.stderr)
    return EXIT_USAGE


class _Plain(python_logging.Formatter):
    def format(self, record):
        return f"{record.levelname.lower()}: {record.getMessage()}"


def plain_logs():
    """Warnings and errors only, each as `warning: ...` like the scripts' own lines (absl's prefix, time, thread
    and file:line, is for debugging them); call after absl's start (in `main`)."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO chatter hides the results
    logging.use_absl_handler()  # (absl.app installs it; a plain `python -m` module, as the client, does not)
    logging.get_absl_handler().setFormatter(_Plain())
    tensorflow = python_logging.getLogger("tensorflow")
    for handler in list(tensorflow.handlers):  # TensorFlow's own, added where the root had none: each line twice
        tensorflow.removeHandler(handler)


@contextlib.contextmanager
def one_line():
    """Turns a user-facing error raised inside the block into `fail` + exit."""
    try:
        yield
    except USER_ERRORS as e:
        raise SystemExit(fail(e)) from None
    except Exception as e:
        message = onednn_cap_failure(e) or out_of_memory(e)
        if message is None:
            raise
        raise SystemExit(fail(message)) from None


def out_of_memory(error):
    """One line for memory running out (TensorFlow's ResourceExhaustedError, NumPy's MemoryError), or None: what ran
    out and the settings that size it, not TensorFlow's pages of op trace."""
    text = str(error)
    if isinstance(error, MemoryError):  # NumPy's: "Unable to allocate 3.1 GiB for an array with shape ..."
        what = " ".join(text.split()) or type(error).__name__
    elif type(error).__name__ == "ResourceExhaustedError" and "OOM" in text:  # (a full disk is one too)
        what = text[text.index("OOM"):].splitlines()[0].split(" on /job:")[0].split(" by allocator")[0]
    else:
        return None
    return (f"out of memory ({what}); give a smaller --batch_size, or evaluating with MC dropout a smaller "
            "--mc_samples (--mc_samples x the test images x the classes are held as float32), or run it on a "
            "machine with more memory")


def onednn_cap_failure(error, env=None):
    """One line for an op oneDNN cannot run under the environment's ISA cap (ONEDNN_MAX_CPU_ISA), or None.

    Under a cap below AVX512_CORE_BF16 on a CPU with bfloat16, TensorFlow still
    hands bfloat16 convolutions to oneDNN, which fails with a multi-line
    "could not create a primitive descriptor" (e.g. evaluating a SavedModel
    trained in bfloat16).
    """
    if "could not create a primitive descriptor" not in str(error):
        return None
    return onednn_cap_message(env)


def onednn_cap_message(env=None):
    """The one line for a bfloat16 model under the environment's oneDNN ISA cap, or None without a cap."""
    from dropzoo import performance  # light: no TensorFlow

    cap = performance.onednn_isa_cap(env)
    if cap is None:
        return None
    variable, value = cap
    return (f"oneDNN has no kernel for an operation of this model under {variable}={value} (a model that "
            f"computes in bfloat16 needs AVX512_CORE_BF16 or above); {performance.bf16_cap_fix(env)}")
