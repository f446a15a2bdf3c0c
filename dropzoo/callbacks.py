"""Keras callbacks the trainer needs that Keras does not ship in this form.

- `EpochCheckpoint`: resumable state after every epoch (`checkpoints.py`).
- `DropoutStats`: each dropout site's and BN layer's statistics
  (`dropzoo/site_stats.py`) on a fixed probe batch, logged every epoch.
  Unlike keras.callbacks.BackupAndRestore it keeps the final state, saves
  the dropout layers' RNG state (so masks after a resume are the masks an
  uninterrupted run would draw), and lets the trainer read the epoch to
  resume from *before* fit, so the input pipeline can start at that step.
- `Throughput`: wall time of each epoch's training steps (validation
  excluded), for a steady-state examples/second figure.
- `StopAtStep`: ends training after an exact number of steps.
"""
import socket
import time

import keras
import numpy as np
import tensorflow as tf

from dropzoo import checkpoints
from dropzoo import data_identity
from dropzoo import interrupts
from dropzoo import performance
from dropzoo import provenance
from dropzoo import site_stats
from dropzoo import workdir as workdir_lib
from dropzoo.errors import RunError


def session_record():
    """This process's part of a run: the epochs it trains (first and last; none yet: []), the code, versions and
    machine that train it."""
    return {"epochs": [], "code": provenance.AT_START, "tensorflow": tf.__version__,
            "keras": keras.__version__, "host": socket.gethostname(), "machine": performance.describe_machine()}


def check_trained_on(earlier, source, directory):
    """`source`'s training content (data_identity.content_id), or RunError where the checkpoint's `earlier` record
    says its epochs trained on other data."""
    data = data_identity.content_id(source) if source is not None else None
    trained_on = (earlier or {}).get("data_sha256")
    if data and trained_on and data != trained_on:
        raise RunError(f"the training data differs from what this run's {len(earlier.get('seconds', []))} "
                       f"epochs in {directory} trained on (files added, removed or edited, which move an image "
                       "folder's split; another file at its path; MNIST from tfds where the run began on the "
                       "embedded sample, or back), so resuming would train on other data; restore that data, or "
                       "use another --workdir, or --overwrite to train it again from the start")
    return data


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer and dropout RNG state at the end of every epoch (checkpoints.py).

    With them it saves the run's history so far (`record`: {"history": {key:
    [one value per epoch]}, "seconds": [each epoch's wall time]}), starting
    from `earlier`, the record of the checkpoint a run resumed from, and
    what its epochs trained on (`data_identity.content_id` of `source`: its
    train split and subset): a resume on other training data (files added to
    an image folder, so its split moved; another npz; the embedded MNIST
    sample in place of tfds') is refused, where both are known.
    `run` ((TrainConfig, what it resolves to here)) is saved too, and a
    resume from a checkpoint of other settings (config.json deleted and the
    run retyped, another run's checkpoint copied in) is refused. With `stats` (the DropoutStats callback, called
    before this one) the record keeps the epoch's dropout statistics: a run resumed after its last epoch reports them.
    """

    def __init__(self, directory, earlier=None, source=None, run=None, stats=None):
        super().__init__()
        self.directory = directory
        self.earlier = earlier
        self.stats = stats
        if run is not None:  # checkpoints written before the run was saved with them: unchecked
            workdir_lib.check_checkpoint(earlier, *run, directory)
        data = check_trained_on(earlier, source, directory)
        self.record = {"history": {k: list(v) for k, v in (earlier or {}).get("history", {}).items()},
                       "seconds": list((earlier or {}).get("seconds", [])), "data_sha256": data,
                       **({"run": {**run[0].to_dict(), workdir_lib.RESOLVED: run[1]}} if run else {}),
                       # Who trained which epochs: a resume may run other code, versions or machines.
                       "sessions": list((earlier or {}).get("sessions", [])) + [session_record()]}
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if diverged(self.model, logs):
            self.model.stop_training = True  # (TerminateOnNaN sees the loss only)
            return  # keep the last good state
        session = self.record["sessions"][-1]
        session["epochs"] = [session["epochs"][0] if session["epochs"] else epoch + 1, epoch + 1]
        for key, value in (logs or {}).items():
            self.record["history"].setdefault(key, []).append(float(value))
        self.record["seconds"].append(time.perf_counter() - self._start)
        if self.stats is not None:
            self.record["dropout_stats"] = self.stats.latest
        checkpoints.save(self.model, self.directory, epoch + 1, self.record)


def diverged(model, logs=None):
    """Whether training diverged: a non-finite loss in `logs`, or non-finite weights, which a finite loss can hide
    (ReLU turns NaN into 0: --learning_rate=1e30 trained NaN kernels at a loss of 1e29 and checkpointed them)."""
    if logs and not np.isfinite(logs.get("loss", 0.0)):
        return True
    return not all(np.all(np.isfinite(weights)) for weights in model.get_weights())


class StopIfInterrupted(keras.callbacks.Callback):
    """Stops the run at the end of an epoch where a signal arrived and Python swallowed its exception (one raised
    in a finalizer); last in the list, so the epoch's checkpoint, summaries and progress line are all written."""

    def on_epoch_end(self, epoch, logs=None):
        interrupts.raise_if_pending()


class Throughput(keras.callbacks.Callback):
    """Records (steps, seconds) of each epoch's training part."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._last = self._start
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._last = time.perf_counter()
        self._steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((self._steps, self._last - self._start))


class StopAtStep(keras.callbacks.Callback):
    """Stops training once `total_steps` steps have run, mid-epoch if need be."""

    def __init__(self, total_steps, steps_per_epoch):
        super().__init__()
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch * self.steps_per_epoch + batch + 1 >= self.total_steps:
            self.model.stop_training = True


class FirstReplicaStatistics(keras.callbacks.Callback):
    """Every replica's copy of a layer's statistics set to the first replica's, under a MirroredStrategy.

    BatchNormalization's moving mean and variance are one copy per replica (aggregation none), each moved by its
    own share of every batch, so they drift apart over an epoch; checkpoints and the export hold the first
    replica's. Aligned as each epoch starts (a resumed run starts from the checkpoint's: so does an uninterrupted
    one), before validation and when training ends, the scores a run reports are those of the model it saves.
    (Multi-worker runs evaluate on the chief's own copy already.)
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._align()

    def on_test_begin(self, logs=None):
        self._align()

    def on_train_end(self, logs=None):
        self._align()

    def _align(self):
        seeds = {id(v) for v in checkpoints.seed_states(self.model).values()}  # each replica's masks are its own
        for variable in self.model.non_trainable_variables:
            copies = site_stats.replica_copies(variable)
            if id(variable) not in seeds and len(copies) > 1:
                first = copies[0].numpy()
                for copy in copies[1:]:
                    copy.assign(first)


def _scalar(name, value):
    """A TensorBoard scalar; a float64 statistic past float32's range (activations blowing up) as +-inf, which
    tf.summary converts (it refused the value, ending the run with an unrelated error)."""
    tf.summary.scalar(name, np.copysign(np.inf, value) if abs(value) > float(np.finfo(np.float32).max) else value)


class DropoutStats(keras.callbacks.Callback):
    """Logs site_statistics (and norm_statistics) on a fixed probe batch every epoch.

    `latest` maps each dropout site to its statistics, and each
    BatchNormalization layer (`conv1.bn`, ...) to its variance shift.
    """

    def __init__(self, images, logdir, latest=None):
        super().__init__()
        self.images = images
        self.logdir = logdir
        self.latest = dict(latest or {})  # a resumed run's: its checkpoint's (none to train: the last epoch's)
        self.writer = None  # one events file a run (a writer made each epoch wrote one file each)

    def on_epoch_end(self, epoch, logs=None):
        if diverged(self.model, logs):
            return  # a diverged epoch: the trainer stops the run, naming it (its statistics may not even convert)
        sites = site_stats.site_statistics(self.model, self.images)
        optimizer = getattr(self.model, "optimizer", None)
        steps = int(optimizer.iterations.numpy()) if optimizer is not None and optimizer.built else None
        norms = site_stats.norm_statistics(self.model, self.images, steps=steps)
        self.latest = {**sites, **norms}
        if not self.latest:
            return
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(self.logdir)
        with self.writer.as_default(step=epoch):
            for name, entry in norms.items():
                _scalar(f"{name}/variance_shift_mean", entry["variance_shift_mean"])
                _scalar(f"{name}/variance_shift_max", entry["variance_shift_max"])
            for site, entry in sites.items():
                for mode in ("train", "inference"):
                    for name, value in entry[mode].items():
                        _scalar(f"{site}/{mode}_{name}", value)
                _scalar(f"{site}/variance_ratio", entry["variance_ratio"])
                if "drop_fraction" in entry:
                    _scalar(f"{site}/drop_fraction", entry["drop_fraction"])
                    _scalar(f"{site}/rate", entry["rate"])
        self.writer.flush()  # each epoch's statistics on disk as it ends (an interrupted run keeps them)

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
