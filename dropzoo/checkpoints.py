"""Resumable state after every epoch, kept safe from crashes, full disks and bit rot.

A checkpoint is one file, `checkpoints/epoch-NNNN.npz`, holding everything a
resumed run needs to continue bit for bit: the model's weights, the
optimizer's variables and every dropout layer's RNG state (so the masks after
a resume are the masks an uninterrupted run would draw). It is built in
memory and written through `files.atomic_write`: a crash or a full disk
leaves the previous checkpoints as they were and no temporary file. The last
`KEEP` checkpoints are kept. A zip archive checks each member's CRC-32 on
read, so a truncated or bit-rotten file is detected before anything is
loaded into the model; `restore` then says so in one line and falls back to
the previous checkpoint.
"""
import io
import json
import os
import re
import sys
import zipfile

import numpy as np

from dropzoo import files
from dropzoo.errors import RunError

KEEP = 2
RECORD_KEY = "record"
_NAME = re.compile(r"^epoch-(\d+)\.npz$")
_TEMPORARY = re.compile(r"^epoch-\d+\.tmp-(\d+)\.npz$")


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read back into this model."""


def path_for(directory, epoch):
    return os.path.join(directory, f"epoch-{epoch:04d}.npz")


def saved_epochs(directory):
    """The epochs with a checkpoint file in `directory`, newest first."""
    if not os.path.isdir(directory):
        return []
    found = (_NAME.match(name) for name in os.listdir(directory))
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def saved_epoch(directory):
    """The newest checkpointed epoch in `directory` (0 if none)."""
    epochs = saved_epochs(directory)
    return epochs[0] if epochs else 0


def seed_states(model):
    """{key: variable} for every dropout RNG state, keyed by layer name.

    Keyed by layer (not variable path): Keras numbers seed generators per
    process, so paths differ between the run that saved and the one resuming.
    """
    return {f"{layer.name}/{i}": v
            for layer in model.layers
            for i, v in enumerate(v for v in layer.variables if "seed_generator_state" in v.path)}


def _state(model):
    """{key: variable} of everything a checkpoint holds, in a fixed order."""
    state = {f"model/{i}": v for i, v in enumerate(model.weights)}
    if model.optimizer is not None:
        state.update({f"optimizer/{i}": v for i, v in enumerate(model.optimizer.variables)})
    state.update({f"rng/{key}": v for key, v in seed_states(model).items()})
    return state


def save(model, directory, epoch, record=None):
    """Writes the checkpoint after `epoch` epochs, then drops all but the last KEEP.

    `record` (JSON-able: the run's history so far) is kept in the same file, so
    a resumed run reports every epoch, not only those after the resume.
    """
    os.makedirs(directory, exist_ok=True)
    buffer = io.BytesIO()
    extra = {} if record is None else {RECORD_KEY: np.array(json.dumps(record))}
    np.savez(buffer, epoch=np.int64(epoch), **extra,
             **{key: np.asarray(v.numpy()) for key, v in _state(model).items()})

    path = files.write_bytes(path_for(directory, epoch), buffer.getvalue())
    for old in saved_epochs(directory)[KEEP:]:
        os.remove(path_for(directory, old))
    return path


def load(model, path):
    """{key: array} of the checkpoint at `path`, checked against `model`; CorruptCheckpoint if not."""
    expected = _state(model)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}  # reading checks each CRC
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CorruptCheckpoint(" ".join(str(e).split()) or type(e).__name__) from None
    missing = sorted(set(expected) - set(arrays))
    if missing or "epoch" not in arrays:
        raise CorruptCheckpoint(f"it lacks {', '.join(missing[:3]) or 'its epoch'}"
                                f"{' ...' if len(missing) > 3 else ''} (another model's checkpoint?)")
    for key, variable in expected.items():
        if tuple(arrays[key].shape) != tuple(variable.shape):
            raise CorruptCheckpoint(f"{key} has shape {arrays[key].shape}, the model's is "
                                    f"{tuple(variable.shape)} (another model's checkpoint?)")
    return arrays


def saved_record(directory, epoch):
    """The record saved with the checkpoint after `epoch` (see save), or None (none, or an older checkpoint)."""
    try:
        with np.load(path_for(directory, epoch), allow_pickle=False) as archive:
            return json.loads(str(archive[RECORD_KEY])) if RECORD_KEY in archive.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return None  # restore has read this file; a record it cannot give is treated as absent


def newest_record(directory):
    """The record of the newest checkpoint in `directory`, or None."""
    epoch = saved_epoch(directory)
    return saved_record(directory, epoch) if epoch else None


def restore(model, directory, warn=None):
    """Loads the newest readable checkpoint into `model`; returns its epoch (0 if none).

    An unreadable checkpoint is reported by `warn` (one line, default stderr)
    and the previous one is tried; RunError if checkpoints exist but none is
    readable. Temporary files of writers that died are removed.
    """
    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    _remove_dead_temporaries(directory)
    epochs = saved_epochs(directory)
    if not epochs:
        return 0
    expected = _state(model)
    for epoch in epochs:
        path = path_for(directory, epoch)
        try:
            arrays = load(model, path)
        except CorruptCheckpoint as e:
            older = [path_for(directory, e2) for e2 in epochs if e2 < epoch]
            warn(f"warning: checkpoint {path} is unreadable ({e}); "
                 + (f"resuming from the previous one, {older[0]}" if older else "no older checkpoint"))
            continue
        for key, variable in expected.items():
            variable.assign(arrays[key])
        return int(arrays["epoch"])
    raise RunError(f"no readable checkpoint in {directory} (tried {', '.join(map(str, epochs))}); "
                   "rerun with --overwrite to train this run again from the start")


def _remove_dead_temporaries(directory):
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        match = _TEMPORARY.match(name)
        if match and not files.process_alive(int(match.group(1))):
            os.remove(os.path.join(directory, name))
