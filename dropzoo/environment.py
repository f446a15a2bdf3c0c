"""Environment variables TensorFlow reads once, when it loads: the entry points set them first.

    from dropzoo import environment
    environment.set_defaults()      # before anything imports TensorFlow
    import tensorflow as tf

A value already in the environment wins, so a user can always override one
(`TF_CPU_ALLOCATOR_USE_BFC=false python train.py`). Set after TensorFlow has
loaded, they change nothing: that is why this module imports nothing heavy.
"""
import contextlib
import json
import os
import subprocess
import sys

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


# What native libraries print on the stderr descriptor whatever TF_CPP_MIN_LOG_LEVEL says, as (line prefixes,
# substrings): TensorFlow 2.21's start-up banner (it logs through Abseil before Abseil's logging is set up), a pair
# twice before every command's first line; LiteRT's line as a TFLite model first runs; the int8 calibration's
# settings as a TFLite model is quantised.
START_UP_BANNER = (["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"],
                   ["] oneDNN custom operations are on."])
LITERT_DELEGATE = (["INFO: Created TensorFlow Lite XNNPACK delegate for CPU."], [])
TFLITE_CALIBRATION = (["fully_quantize: "], [])

# The filter `native_lines_without` starts: stdin to its stderr (the real one), but the noise; to the end of its
# input, so that what a process wrote before it died (a native abort, a signal's last line) still arrives.
_FILTER = """
import json, os, sys
prefixes, parts = json.loads(sys.argv[1])
for line in sys.stdin.buffer:
    text = line.decode(errors="replace")
    if not (text.startswith(tuple(prefixes)) or any(part in text for part in parts)):
        os.write(2, line)
"""


def import_tensorflow(environ=None):
    """Imports TensorFlow with its start-up banner (START_UP_BANNER) kept off stderr, as TF_CPP_MIN_LOG_LEVEL (set
    to 2 by `set_defaults`) means to; every other line TensorFlow prints there as it loads is passed on. With
    TF_CPP_MIN_LOG_LEVEL=0 (INFO wanted) nothing is held back. Call after `set_defaults`."""
    with native_lines_without(START_UP_BANNER, environ):
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def native_lines_without(noise, environ=None):
    """Passes what is written to the stderr descriptor inside the block (by native code, as by Python) through a
    small filter process that drops the lines `noise` ((prefixes, substrings)) names and writes every other one
    as it comes; with TF_CPP_MIN_LOG_LEVEL=0 or unset, nothing is filtered. The filter is in a session of its own
    (a Ctrl-C at the terminal does not reach it) and reads to the end of its input, so the lines of a process
    that dies inside the block (a signal handler's, a native abort's) still arrive. Kept to blocks that start no
    process (one would hold the filter's input open, and the block's end would wait for it), and to seconds: a
    block's stderr lines can arrive after stdout lines written beside them, where both go to one file."""
    environ = os.environ if environ is None else environ
    if environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0") or not sys.executable:
        yield
        return
    sys.stderr.flush()
    stderr = os.dup(2)
    try:
        lines = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, json.dumps(noise)],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                 start_new_session=True)
    except OSError:  # no process to start: nothing filtered
        os.close(stderr)
        yield
        return
    os.dup2(lines.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)
        os.close(stderr)
        lines.stdin.close()
        lines.wait()


def print_any_file_name():
    """Lets stdout print file names that are not UTF-8 (a class folder named in Latin-1) as the bytes they are, as
    Python does in the C locale only: under another locale printing one stopped the run."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
