"""Files a run writes and reads, each in one way: the one module that writes files.

`atomic_write` is the one way a file reaches its final name: written to a
temporary sibling, then renamed, so a reader (or a rerun after a crash) sees
the old file or the new one, never half of one. `write_directory` does the
same for a directory (a SavedModel): written beside it, then swapped in. A
write that fails leaves nothing temporary behind and raises `WriteError`, one
line naming the file, the cause and the fix. `synced` flushes a file to disk
before its rename, so a full disk fails the write, not a later read.
`read_json` reads what `write_json` wrote, and names the file and the fix
when it cannot.
"""
import errno
import hashlib
import json
import os
import re
import shutil

from dropzoo.errors import DropzooError

# What a failed write most likely needs, by errno.
_FIXES = {
    errno.ENOSPC: "the disk is full: free some space (or use a --workdir on another disk)",
    errno.EDQUOT: "the disk quota is used up: free some space (or use a --workdir elsewhere)",
    errno.EFBIG: "the file grew past the size limit of this process or file system "
                 "(ulimit -f): raise the limit (or use a --workdir elsewhere)",
    errno.EROFS: "the file system is read-only: use a --workdir you can write to",
    errno.EACCES: "permission denied: use a --workdir you can write to",
    errno.EPERM: "permission denied: use a --workdir you can write to",
    errno.EIO: "the disk reported an I/O error: check the disk (or use a --workdir elsewhere)",
}


class WriteError(DropzooError, OSError):
    """A file could not be written; the previous version of it is intact."""


class ReadError(DropzooError, ValueError):
    """A file the run needs exists but cannot be read as what it should be."""


# How other libraries (TensorFlow, h5py) spell those errors in their messages.
_STRERRORS = {os.strerror(code): code for code in _FIXES}


def remove(paths):
    """Removes each of `paths` (files and directories) that exists."""
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def write_failure(error, path, temporary=None):
    """A WriteError for `error` if it is a failed write (any OSError, or a library error
    whose text names a write errno), else None. A file named inside `temporary` (a directory being written, gone
    once the write fails) is named as `path`, what was being written."""
    code = getattr(error, "errno", None)
    if isinstance(error, OSError) and not isinstance(error, DropzooError) and code not in _FIXES:
        return write_error(path, error)  # another OSError: still one line naming the file
    if code not in _FIXES:
        text = str(error)
        code = next((c for message, c in _STRERRORS.items() if message in text), None)
    if code is None:
        return None
    # The first path in the text, not a device name (/job:localhost/replica:0/...).
    found = re.search(r"(?<![\w/])(/(?!job:)[^\s'\",;:\]\[]+)", str(error))
    named = found.group(1) if found and not isinstance(error, OSError) else path
    if temporary and (named + os.sep).startswith(temporary + os.sep):
        named = path
    return write_error(named, OSError(code, os.strerror(code)))


def name_characters(text):
    """`text` with every character a file name should not hold (a slash, a space, a colon, ...) as '_'."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def pattern_characters(path):
    """The characters of `path` (as given: TensorFlow reads it so) that break TensorFlow's SavedModel loader, which
    looks for the variables by pattern, quoted, e.g. "'['"; "" where none. (`*` and `?` match themselves.)"""
    return ", ".join(repr(c) for c in "[\\" if c in os.fspath(path))


def slug(text, limit=80):
    """`text` in file-name characters, at most `limit`; a longer one is cut, with a digest of the whole, so two
    long texts that end alike do not name one file."""
    name = name_characters(text).strip("_")
    return name if len(name) <= limit else f"{name[9 - limit:]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def write_error(path, error):
    """A one-line WriteError for `error` (an OSError or an h5py/TF error) writing `path`."""
    code = getattr(error, "errno", None)
    cause = getattr(error, "strerror", None) or " ".join(str(error).split())[:200]
    fix = _FIXES.get(code, "check the disk and the path")
    return WriteError(f"cannot write {path} ({cause}); {fix}, then rerun the same command; "
                      "nothing half-written was left, and earlier checkpoints and exports are intact")


def first_existing(path):
    """The nearest of `path` and its ancestors that exists (what a failed run must not remove)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def unwritable(directory, make=True):
    """Why this process cannot write in `directory`, or None. `make`: made first, with its parents, if need be;
    else nothing is made, and the nearest of it and its ancestors that exists is tried."""
    try:
        if make:
            os.makedirs(directory, exist_ok=True)
        target = first_existing(directory)
        if not os.path.isdir(target):
            return f"{target} is a file"
        probe = os.path.join(target, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        return e.strerror or str(e)
    return None


def is_within(path, directory):
    """Whether `path` is `directory` or below it, links resolved."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def temporary_name(path, pid=None):
    """`dir/name.tmp-PID.ext`: the suffix kept (Keras wants `.weights.h5`)."""
    directory, name = os.path.split(path)
    stem, dot, suffix = name.partition(".")
    return os.path.join(directory, f"{stem}.tmp-{os.getpid() if pid is None else pid}{dot}{suffix}")


def atomic_write(path, write):
    """Calls `write(tmp)` for a temporary sibling of `path`, then renames it to `path`."""
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:  # even Ctrl-C: never leave a half-written file
        try:
            os.remove(tmp)
        except OSError:
            pass
        failure = None if isinstance(error, DropzooError) else write_failure(error, path)
        if failure is not None:
            raise failure from None
        raise
    return path


def synced(f):
    """Flushes the open file `f` to disk: a full disk fails here, not after the rename."""
    f.flush()
    os.fsync(f.fileno())


def write_bytes(path, content):
    """Writes `content` (bytes) to `path`, atomically and synced."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(content)
            synced(f)

    return atomic_write(path, write)


def write_json(path, obj):
    """Writes `obj` as indented, key-sorted JSON to `path`, atomically and synced."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            synced(f)

    return atomic_write(path, write)


def write_text(path, text):
    """Writes `text` to `path`, atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_write(path, write)


def write_directory(path, write, missing=None):
    """Calls `write(tmp)` for a temporary sibling directory of `path`, then swaps it in for `path`.

    `missing(tmp)` (optional) lists what the written directory lacks; anything
    listed fails the write. Whatever stops the write (even Ctrl-C), the
    temporary directory is removed, and `path` keeps its previous contents;
    a failed write raises WriteError where it is a write failure (full disk,
    ...), else the original error. Returns the absolute path.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    _remove_stale(parent, name, "tmp")
    tmp = _sibling(path, "tmp", os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        lacking = missing(tmp) if missing else []
        if lacking:
            raise IncompleteWrite(f"{tmp} was written incompletely: missing {', '.join(lacking)}")
        _swap_into_place(tmp, path)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(error, path, tmp) if isinstance(error, Exception) else None
        if failure is not None:
            raise failure from None
        raise
    _remove_stale(parent, name, "old")
    return path


class IncompleteWrite(DropzooError, RuntimeError):
    """A directory written without some of its parts."""


def _swap_into_place(tmp, path):
    """Old directory aside, new one in, old one deleted; rolls back on failure."""
    old = _sibling(path, "old", os.getpid())
    shutil.rmtree(old, ignore_errors=True)
    had_old = os.path.lexists(path)
    if had_old:
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if had_old:
            os.rename(old, path)
        raise
    if had_old:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)


def _sibling(path, kind, pid):
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.{kind}-{pid}")


def _remove_stale(parent, name, kind):
    """Delete `.name.kind-<pid>` directories left by writers that are no longer running."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.{kind}-(\d+)$")
    for entry in os.listdir(parent):
        match = pattern.match(entry)
        if match and not process_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def process_alive(pid):
    """Whether another live process has id `pid` (a dead writer's temporary files may go)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass  # exists, owned by another user
    return True


def read_json(path, fix, fields=None):
    """The JSON object in `path`; ReadError naming the file and `fix` if it is not one, or lacks one of `fields`
    ({name: type, a tuple of types, or {name: ...} for an object's own fields}) or holds it as another type."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReadError(f"{path} is corrupt ({e}); {fix}") from None
    if not isinstance(value, dict):
        raise ReadError(f"{path} is corrupt (not a JSON object); {fix}")
    wrong = _wrong_field(value, fields or {})
    if wrong:
        raise ReadError(f"{path} is corrupt ({wrong}); {fix}")
    return value


def _wrong_field(value, fields, within=""):
    """What is wrong with `value`'s `fields` (read_json's), or None."""
    for name, kind in fields.items():
        if name not in value:
            return f"no {within}{name}"
        found = value[name]
        if isinstance(kind, dict):
            wrong = (f"{within}{name} is not an object" if not isinstance(found, dict)
                     else _wrong_field(found, kind, f"{within}{name}."))
            if wrong:
                return wrong
        elif not isinstance(found, kind) or (isinstance(found, bool) and kind is not bool):  # (True is an int)
            return f"{within}{name} is {json.dumps(found)[:40]}, not {_names(kind)}"
    return None


def _names(kind):
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))
