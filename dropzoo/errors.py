"""How the scripts report a user's mistake: one line on stderr, exit code 2.

Library code raises ValueError subclasses (ConfigError, DataError, ...) or
RunError/ExportError whose message already names the problem and the fix;
the scripts wrap their work in `one_line()` so none of them ends in a
traceback. Programming errors (anything else) still show theirs.
"""
import contextlib
import sys

EXIT_USAGE = 2


def fail(message):
    """Prints `error: message` to stderr and returns the exit code for it."""
    print(f"error: {str(message).strip().splitlines()[0] if str(message).strip() else message}",
          file=sys.stderr)
    return EXIT_USAGE


@contextlib.contextmanager
def one_line():
    """Turns a user-facing error raised inside the block into `fail` + exit."""
    from dropzoo.export import ExportError  # imported late: TensorFlow is heavy
    from dropzoo.trainer import RunError

    try:
        yield
    except (ValueError, RunError, ExportError, OSError) as e:
        raise SystemExit(fail(e)) from None
