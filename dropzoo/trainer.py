"""Train one model x placement, export it, prove the export, write metrics.

`train_and_evaluate(config, workdir)` is the whole job; `train.py` only
turns flags into a TrainConfig and calls it. It writes into `workdir`:

  config.json     the configuration (a rerun must match it)
  tensorboard/    train/validation scalars, weight histograms, HParams
  checkpoints/    resumable state after every epoch (see callbacks.py)
  saved_model/    the export; serving_default runs with dropout off
  metrics.json    config, data source, test metrics, timing, export check

Rerunning the same command resumes from the last checkpoint; rerunning a
finished run returns its metrics without retraining unless `overwrite`.
"""
import json
import math
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import models
from dropzoo import callbacks as callbacks_lib
from dropzoo import config as config_lib
from dropzoo import data as data_lib
from dropzoo import distribute as distribute_lib
from dropzoo import export as export_lib
from dropzoo import performance
from dropzoo import summaries
from dropzoo.preprocess import scale


class RunError(RuntimeError):
    """A run that cannot proceed as asked; str(e) is one line with the fix."""


def _paths(workdir):
    return {name: os.path.join(workdir, name) for name in
            ("config.json", "tensorboard", "checkpoints", "saved_model", "metrics.json")}


def _write_json(path, obj):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)  # readers see the old file or the new one, never half


def prepare_workdir(config, workdir, overwrite=False):
    """Creates `workdir`, or checks that an existing one belongs to this config.

    Returns the finished run's metrics if the run is already complete (and
    not `overwrite`), else None.
    """
    paths = _paths(workdir)
    if overwrite and os.path.isdir(workdir):
        for name in paths.values():
            if os.path.isdir(name):
                shutil.rmtree(name)
            elif os.path.exists(name):
                os.remove(name)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        raise RunError(f"cannot write to workdir {workdir!r} ({e.strerror}); "
                       "pass a --workdir you can write to") from None
    if os.path.exists(paths["config.json"]):
        with open(paths["config.json"]) as f:
            saved = json.load(f)
        changed = config_lib.differences(saved, config)
        if changed:
            listed = ", ".join(f"--{k} ({saved.get(k)!r} -> {getattr(config, k)!r})" for k in changed)
            raise RunError(f"workdir {workdir!r} holds a run with other settings: {listed}; "
                           "use another --workdir, or --overwrite to replace that run")
    else:
        _write_json(paths["config.json"], config.to_dict())
    if os.path.exists(paths["metrics.json"]):
        with open(paths["metrics.json"]) as f:
            return json.load(f)
    return None


def build_model(config, num_classes, image_shape, steps_per_execution=None):
    """The compiled model for `config` (the trainer compiles; builders don't).

    `steps_per_execution`: as chosen by performance.choose_steps_per_execution
    for the run's epoch length (default: config's value, 1 for auto).
    """
    spec = models.get_spec(config.model)
    model = models.build(config.model, config.placement_spec, rate=config.rate, kind=config.kind,
                         activation=config.activation, num_classes=num_classes,
                         input_shape=image_shape, seed=config.seed)
    optimizer = keras.optimizers.get({"class_name": config.optimizer,
                                      "config": {"learning_rate": config.learning_rate}})
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=spec.outputs == "logits"),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution or config.steps_per_execution or 1,
        # auto: XLA on a GPU; off on CPU (~6x slower there) and under tf.distribute.
        jit_compile=performance.choose_jit_compile(config.jit_compile)[0],
    )
    return model


def _steady_examples_per_sec(epochs, batch_size, num_train, steps_per_epoch):
    """Examples/s over every epoch but the first (which pays for tracing)."""
    timed = epochs[1:] or epochs
    examples = sum(num_train if steps == steps_per_epoch else steps * batch_size for steps, _ in timed)
    seconds = sum(s for _, s in timed)
    return examples / seconds if seconds > 0 else None


def train_and_evaluate(config, workdir, *, overwrite=False, source=None, verbose="auto"):
    """Trains, evaluates, exports and verifies; returns the metrics dict.

    `source` (a data.Source) replaces the configured dataset, so tests can
    inject tiny data. `verbose`: Keras fit verbosity; "auto" shows a progress
    bar on a terminal and one line per epoch in a log file.
    """
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    config_lib.validate(config)
    # First TensorFlow call: logical devices and the cluster are fixed at start-up.
    strategy = distribute_lib.strategy_for(config)
    if distribute_lib.is_multi_worker(strategy):  # Keras' fit fails there (keras#20585)
        return distribute_lib.train_multi_worker(config, workdir, strategy, overwrite=overwrite,
                                                 source=source, verbose=verbose)
    finished = prepare_workdir(config, workdir, overwrite)
    if finished is not None:
        print(f"{workdir} holds a finished run; reporting it (--overwrite retrains)")
        return finished
    paths = _paths(workdir)
    keras.utils.set_random_seed(config.seed)
    # config.json keeps "auto"; the policy it resolved to goes to metrics.json.
    keras.mixed_precision.set_global_policy(performance.choose_precision(config.precision)[0])
    try:
        return _run(config, paths, source, verbose, strategy)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def set_up(config, source, strategy, steps_per_call_for=lambda steps: steps):
    """What fit and the multi-worker loop both start from.

    Returns (source, model built under `strategy`, steps per Keras epoch,
    epochs, steps per call); `steps_per_call_for` adjusts the automatic
    choice to what the training loop supports.
    """
    if source is None:
        source = data_lib.load_source(config.dataset, idx_dir=config.idx_dir,
                                      tfds_data_dir=config.tfds_data_dir)
    steps_per_epoch, epochs = _schedule(config, _data_steps_per_epoch(source, config))
    steps_per_call, _ = performance.choose_steps_per_execution(
        config.steps_per_execution, steps_per_epoch, config.train_steps)
    steps_per_call = steps_per_call_for(steps_per_call)
    with strategy.scope():  # variables become mirrored; training then runs every replica
        model = build_model(config, source.num_classes, source.image_shape, steps_per_call)
    if strategy.num_replicas_in_sync > 1:
        distribute_lib.distinct_replica_masks(model)
    return source, model, steps_per_epoch, epochs, steps_per_call


def make_pipelines(config, source, initial_epoch, steps_per_epoch):
    """The run's pipelines, starting at the first step after `initial_epoch` epochs."""
    return data_lib.make_pipelines(source, batch_size=config.batch_size, seed=config.seed,
                                   validation_fraction=config.validation_fraction,
                                   start_step=initial_epoch * steps_per_epoch)


def _run(config, paths, source, verbose, strategy):
    source, model, steps_per_epoch, epochs, _ = set_up(
        config, source, strategy,
        lambda steps: distribute_lib.fit_steps_per_execution(strategy, steps))
    speed = performance.describe(config, model)
    if verbose:
        print(performance.summary_line(speed))
    initial_epoch = callbacks_lib.restore(model, paths["checkpoints"])
    pipes = make_pipelines(config, source, initial_epoch, steps_per_epoch)
    # A fixed batch of training images on which each dropout site's activation
    # statistics are logged every epoch (the train/inference variance shift).
    probe_images = next(iter(data_lib.raw_batches(source.train, 256)))[0]
    dropout_stats = callbacks_lib.DropoutStats(scale(probe_images),
                                               os.path.join(paths["tensorboard"], "dropout_stats"))
    fit_callbacks = [
        dropout_stats,
        callbacks_lib.EpochCheckpoint(paths["checkpoints"]),
        keras.callbacks.TensorBoard(paths["tensorboard"], histogram_freq=1,
                                    profile_batch=performance.parse_profile_batches(config.profile_batches)),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.train_steps:
        fit_callbacks.append(callbacks_lib.StopAtStep(config.train_steps, steps_per_epoch))
    throughput = callbacks_lib.Throughput()
    if initial_epoch and verbose:
        print(f"Resuming from the checkpoint after epoch {initial_epoch} in {paths['checkpoints']}")

    start = time.perf_counter()
    history = model.fit(pipes.train, epochs=epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps_per_epoch, validation_data=pipes.validation,
                        callbacks=fit_callbacks + [throughput], verbose=verbose,
                        shuffle=False)  # the pipeline shuffles, seeded per epoch
    train_time = time.perf_counter() - start
    if any(not np.isfinite(v) for v in history.history.get("loss", [])):
        raise RunError("training loss became NaN/inf; the last good checkpoint is kept in "
                       f"{paths['checkpoints']}; lower --learning_rate and rerun")

    test_loss, test_accuracy = model.evaluate(pipes.test, verbose=0)
    probe = next(iter(data_lib.raw_batches(source.test, 256)))[0].numpy()
    outputs = models.get_spec(config.model).outputs
    export_lib.export_saved_model(model, paths["saved_model"], outputs=outputs)
    export_check = export_lib.verify_export(paths["saved_model"], model, probe, outputs=outputs)

    metrics = {
        **describe_run(config, source, pipes),
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "epochs_completed": initial_epoch + len(throughput.epochs),
        "resumed_from_epoch": initial_epoch,
        "train_time_sec": train_time,
        "train_examples_per_sec": _steady_examples_per_sec(
            throughput.epochs, config.batch_size, pipes.num_train, pipes.steps_per_epoch),
        "epoch_train_seconds": [seconds for _, seconds in throughput.epochs],
        "steps_per_epoch": steps_per_epoch,
        **speed,  # precision and jit_compile: requested, resolved, why
        "strategy": distribute_lib.describe(strategy),
        "weights_sha256": distribute_lib.weights_digest(model),
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
        "export_check": export_check,
        "dropout_stats": dropout_stats.latest,
        "paths": {k: v for k, v in paths.items() if k != "metrics.json"},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    summaries.write_hparams(paths["tensorboard"], config, source.name, metrics)
    _write_json(paths["metrics.json"], metrics)
    return metrics


def describe_run(config, source, pipes):
    """The metrics.json entries naming what was trained on what (fit and multi-worker alike)."""
    return {
        "config": config.to_dict(),
        "data": {"source": source.name, "fallback_reason": source.fallback_reason,
                 "num_train": pipes.num_train, "num_validation": pipes.num_validation,
                 "num_test": pipes.num_test, "num_classes": source.num_classes,
                 "image_shape": list(source.image_shape)},
        "placement_sites": models.format_placement(
            models.resolve_placement(config.model, config.placement_spec)),
    }


def _data_steps_per_epoch(source, config):
    """Steps in one pass over the training part, as make_pipelines counts them."""
    num_val = data_lib.validation_size(source.num_train, config.validation_fraction)
    return math.ceil((source.num_train - num_val) / config.batch_size)


# With --train_steps, a Keras "epoch" (one checkpoint, one TensorBoard point)
# is at least this many steps, so small datasets don't checkpoint every second.
MIN_STEPS_PER_LOGGED_EPOCH = 1000


def _schedule(config, data_steps_per_epoch):
    """(steps per Keras epoch, number of Keras epochs) for the run.

    The training stream is one infinite, step-indexed sequence of batches, so a
    Keras epoch need not be a data epoch; it only fixes where checkpoints fall.
    """
    if not config.train_steps:
        return data_steps_per_epoch, config.epochs
    steps = min(config.train_steps, max(data_steps_per_epoch, MIN_STEPS_PER_LOGGED_EPOCH))
    return steps, math.ceil(config.train_steps / steps)
