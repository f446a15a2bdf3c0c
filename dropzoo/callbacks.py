"""Keras callbacks the trainer needs that Keras does not ship in this form.

- `EpochCheckpoint`: resumable state after every epoch (`checkpoints.py`).
  Unlike keras.callbacks.BackupAndRestore it keeps the final state, saves
  the dropout layers' RNG state (so masks after a resume are the masks an
  uninterrupted run would draw), and lets the trainer read the epoch to
  resume from *before* fit, so the input pipeline can start at that step.
- `Throughput`: wall time of each epoch's training steps (validation
  excluded), for a steady-state examples/second figure.
- `StopAtStep`: ends training after an exact number of steps.
"""
import time

import keras
import numpy as np

import models
from dropzoo import checkpoints

class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer and dropout RNG state at the end of every epoch (checkpoints.py)."""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        if logs and not np.isfinite(logs.get("loss", 0.0)):
            return  # keep the last good state; TerminateOnNaN stops the run
        checkpoints.save(self.model, self.directory, epoch + 1)


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


def site_statistics(model, images):
    """Per dropout site: mean/variance entering and leaving it, training vs inference.

    `variance_ratio` is the output variance in training mode over that in
    inference mode: the train/inference "variance shift" a following layer
    sees (Li et al., 2019, on dropout before batch normalisation).

    For Bernoulli sites (inverted, classic) `drop_fraction` is the fraction
    of units dropped in training mode, counted where the input is non-zero
    (after a ReLU about half the inputs are zero already), beside the
    nominal `rate`: the layer's promise, measured in the run's precision.
    """
    sites = models.dropout_layers(model)
    if not sites:
        return {}
    probe = keras.Model(model.input, [t for layer in sites for t in (layer.input, layer.output)])
    seeds = checkpoints.seed_states(model)
    saved = {k: v.numpy() for k, v in seeds.items()}
    try:
        per_mode = {mode: probe(images, training=mode == "train") for mode in ("train", "inference")}
    finally:
        for k, v in seeds.items():  # the probe must not shift training's mask stream
            v.assign(saved[k])
    result = {}
    for i, layer in enumerate(sites):
        entry = {}
        for mode, tensors in per_mode.items():
            x_in, x_out = (np.asarray(keras.ops.convert_to_numpy(t), np.float64)
                           for t in tensors[2 * i:2 * i + 2])
            entry[mode] = {"in_mean": float(x_in.mean()), "in_var": float(x_in.var()),
                           "out_mean": float(x_out.mean()), "out_var": float(x_out.var())}
        inference_var = entry["inference"]["out_var"]
        entry["variance_ratio"] = entry["train"]["out_var"] / inference_var if inference_var else float("nan")
        if models.layers.is_bernoulli(layer):
            x_in, x_out = (keras.ops.convert_to_numpy(t) for t in per_mode["train"][2 * i:2 * i + 2])
            live = x_in != 0
            entry["rate"] = float(layer.rate)
            entry["drop_fraction"] = float((x_out[live] == 0).mean()) if live.any() else float("nan")
        result[layer.name] = entry
    return result


def norm_statistics(model, images, steps=None):
    """Per BatchNormalization layer: Li et al.'s (2019) variance shift, per channel.

    The moving variance the layer learned during training (with dropout on
    upstream) over the variance of its input at inference (dropout off) on
    `images`; summarised as mean and max over channels. Near 1 when the
    layer's statistics fit what it sees when serving; above 1 when dropout
    before it inflated the variance it learned.

    Keras starts the moving variance at 1 and moves it by (1 - momentum) per
    training step, so after `steps` steps momentum^steps of that 1 is still
    in it: 1.3% after 435 steps at momentum 0.99, which is 4x the variance of
    a small layer's input. With `steps` (the optimizer's iteration count) the
    moving variance is debiased as Adam debiases its moments:
    (v - momentum^steps) / (1 - momentum^steps), the average of the batch
    variances alone.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return {}
    probe = keras.Model(model.input, [layer.input for layer in norms])
    inputs = probe(images, training=False)
    if not isinstance(inputs, (list, tuple)):  # one output comes back bare
        inputs = [inputs]
    result = {}
    for layer, x in zip(norms, inputs):
        x = np.asarray(keras.ops.convert_to_numpy(x), np.float64)
        served = x.reshape(-1, x.shape[-1]).var(axis=0)  # per channel (channels last)
        learned = np.asarray(keras.ops.convert_to_numpy(layer.moving_variance), np.float64)
        if steps:
            remaining = float(layer.momentum) ** int(steps)  # of the initial moving variance, 1
            learned = (learned - remaining) / (1.0 - remaining)
        live = served > 0
        shift = learned[live] / served[live]
        result[layer.name] = {
            "variance_shift_mean": float(shift.mean()) if live.any() else float("nan"),
            "variance_shift_max": float(shift.max()) if live.any() else float("nan"),
            "channels": int(x.shape[-1]),
        }
    return result


class DropoutStats(keras.callbacks.Callback):
    """Logs site_statistics (and norm_statistics) on a fixed probe batch every epoch.

    `latest` maps each dropout site to its statistics, and each
    BatchNormalization layer (`conv1.bn`, ...) to its variance shift.
    """

    def __init__(self, images, logdir):
        super().__init__()
        self.images = images
        self.logdir = logdir
        self.latest = {}

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf  # the callback writes TensorBoard summaries

        sites = site_statistics(self.model, self.images)
        optimizer = getattr(self.model, "optimizer", None)
        steps = int(optimizer.iterations.numpy()) if optimizer is not None and optimizer.built else None
        norms = norm_statistics(self.model, self.images, steps=steps)
        self.latest = {**sites, **norms}
        if not self.latest:
            return
        with tf.summary.create_file_writer(self.logdir).as_default(step=epoch):
            for name, entry in norms.items():
                tf.summary.scalar(f"{name}/variance_shift_mean", entry["variance_shift_mean"])
                tf.summary.scalar(f"{name}/variance_shift_max", entry["variance_shift_max"])
            for site, entry in sites.items():
                for mode in ("train", "inference"):
                    for name, value in entry[mode].items():
                        tf.summary.scalar(f"{site}/{mode}_{name}", value)
                tf.summary.scalar(f"{site}/variance_ratio", entry["variance_ratio"])
                if "drop_fraction" in entry:
                    tf.summary.scalar(f"{site}/drop_fraction", entry["drop_fraction"])
                    tf.summary.scalar(f"{site}/rate", entry["rate"])
