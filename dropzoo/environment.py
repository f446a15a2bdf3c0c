"""Environment variables TensorFlow reads once, when it loads: the entry points set them first.

    from dropzoo import environment
    environment.set_defaults()      # before anything imports TensorFlow
    import tensorflow as tf

A value already in the environment wins, so a user can always override one
(`TF_CPU_ALLOCATOR_USE_BFC=false python train.py`). Set after TensorFlow has
loaded, they change nothing: that is why this module imports nothing heavy.
"""
import os
import sys
import tempfile

DEFAULTS = {
    # TensorFlow's C++ INFO and WARNING lines bury the results; errors still print.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # TensorFlow's best-fit-with-coalescing allocator for host memory, which keeps freed
    # blocks for reuse, instead of the default, which hands large blocks back to the
    # system: a tensor of a few MB or more (a batch of conv activations, MC dropout's
    # 20 x 256 x 9,216 masked features) was then mapped afresh, page by page, on every
    # step or call. docs/performance.md measures what it saves.
    "TF_CPU_ALLOCATOR_USE_BFC": "true",
}


def set_defaults(environ=None):
    """Sets each of DEFAULTS not already set in `environ` (default os.environ); returns what it set."""
    environ = os.environ if environ is None else environ
    chosen = {name: value for name, value in DEFAULTS.items() if name not in environ}
    environ.update(chosen)
    return chosen


# What TensorFlow's native libraries print on stderr as they load, whatever TF_CPP_MIN_LOG_LEVEL says (TF 2.21 logs
# through Abseil before Abseil's logging is set up): a banner pair, twice, before every command's first line.
START_UP_BANNER = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                   "] oneDNN custom operations are on.")


def import_tensorflow(environ=None):
    """Imports TensorFlow with its start-up banner (START_UP_BANNER) kept off stderr, as TF_CPP_MIN_LOG_LEVEL (set
    to 2 by `set_defaults`) means to; every other line TensorFlow prints there as it loads is passed on. With
    TF_CPP_MIN_LOG_LEVEL=0 (INFO wanted) nothing is held back. Call after `set_defaults`."""
    environ = os.environ if environ is None else environ
    if environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        stderr = os.dup(2)
        os.dup2(held.fileno(), 2)  # the native libraries write to the descriptor, not to sys.stderr
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(stderr, 2)
            os.close(stderr)
            held.seek(0)
            for line in held:
                text = line.decode(errors="replace")
                if not (text.startswith(START_UP_BANNER[0]) or START_UP_BANNER[1] in text):
                    os.write(2, line)


def print_any_file_name():
    """Lets stdout print file names that are not UTF-8 (a class folder named in Latin-1) as the bytes they are, as
    Python does in the C locale only: under another locale printing one stopped the run."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
