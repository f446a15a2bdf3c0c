"""Train one model x placement, export it, prove the export, write metrics.

`train_and_evaluate(config, workdir)` is the whole job; `train.py` only
turns flags into a TrainConfig and calls it. It writes into `workdir`:

  config.json     the configuration (a rerun must match it)
  tensorboard/    train/validation scalars, weight histograms, HParams
  checkpoints/    resumable state after every epoch (see callbacks.py)
  saved_model/    the export; serving_default runs with dropout off
  model.keras     the trained Keras model (keras.saving.load_model), to fine-tune
  model.tflite    serving_default for TFLite/LiteRT, float32; model_int8.tflite: int8
  metrics.json    config, data source, test metrics, timing, export check
  model.txt       the network as trained, layer by layer, with each dropout layer's rate

Every run has the same skeleton, whatever the strategy:

  prepare workdir -> seed and precision -> data, model -> restore -> loop -> test -> export -> verify -> metrics

Only the loop differs (`loops.FitLoop`, or `multi_worker.MultiWorkerLoop` under MultiWorkerMirroredStrategy);
each step of the skeleton is written once, here. Rerunning the same command resumes from the last checkpoint;
rerunning a finished run returns its metrics without retraining unless `overwrite`.
"""
import hashlib
import math
import os
import socket
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import models
from dropzoo import artifacts as artifacts_lib
from dropzoo import callbacks as callbacks_lib
from dropzoo import checkpoints
from dropzoo import config as config_lib
from dropzoo import data as data_lib
from dropzoo import divergence
from dropzoo import errors
from dropzoo import evaluate
from dropzoo import evaluations
from dropzoo import export as export_lib
from dropzoo import files
from dropzoo import interrupts
from dropzoo import keras_state
from dropzoo import locks
from dropzoo import loops
from dropzoo import multi_worker
from dropzoo import optimizers
from dropzoo import performance
from dropzoo import provenance
from dropzoo import run_data
from dropzoo import sources
from dropzoo import strategies
from dropzoo import subsets
from dropzoo import summaries
from dropzoo import verify
from dropzoo import workdir as workdir_lib
from dropzoo.errors import RunError
from dropzoo.preprocess import scale


def workdir_paths(workdir):
    """{name: path} of everything a run writes in `workdir`."""
    return workdir_lib.paths(workdir, artifacts_lib.ARTIFACT_FILES)


def resolve(config):
    """What `config` resolves to here, recorded with the run: precision, sites, mask generator, strategy, oneDNN."""
    sites = models.sites.with_rate(models.resolve_placement(config.model, config.placement_spec, norm=config.norm),
                                   config.rate)
    return {"precision": performance.choose_precision(config.precision)[0],
            "sites": models.format_placement(sites),
            # The dropout masks' generator (models/masks.py); None where no site draws a Bernoulli mask.
            "mask_generator": models.masks.MASK_GENERATOR if sites and config.kind != "gaussian" else None,
            # Replicas and workers (a copied workdir resumed under another TF_CONFIG: its --strategy is still auto).
            "strategy": strategies.resolved_here(config.strategy, config.cpu_devices),
            "onednn": performance.onednn_state(),  # TF_ENABLE_ONEDNN_OPTS=0: other kernels, other rounding
            # The file's content: its path alone would report a finished run for a model re-saved since.
            **({"keras_model_sha256": models.get_spec(config.model).digest} if config.keras_model else {})}


def prepare_workdir(config, workdir, overwrite=False, resolved=None):
    """Creates `workdir`, or checks that an existing run there is this config's (dropzoo/workdir.py).

    Returns the finished run's metrics if the run is already complete (and
    not `overwrite`), else None. The caller holds the workdir's lock.
    `resolved` is resolve(config), where the caller has it.
    """
    return workdir_lib.prepare(config, workdir, resolved or resolve(config), overwrite=overwrite,
                               extra=artifacts_lib.ARTIFACT_FILES)


def build_network(config, num_classes, image_shape):
    """The uncompiled Keras model for `config` on images of `image_shape` (its network registered).

    ValueError (one line) where the network cannot take such images (a window larger than its input, a Keras
    model built for other images)."""
    config_lib.register_network(config)
    return models.build(config.model, config.placement_spec, rate=config.rate, kind=config.kind,
                        activation=config.activation, norm=config.norm, bn_momentum=config.bn_momentum,
                        num_classes=num_classes, input_shape=image_shape, seed=config.seed,
                        weights=config.keras_weights if config.keras_model else None)


def build_model(config, num_classes, image_shape, steps_per_execution=1):
    """The compiled model for `config` (the trainer compiles; builders don't)."""
    performance.compile_pooling_gradient()
    performance.compile_activation_gradient()
    performance.compile_dropout_masks()
    model = build_network(config, num_classes, image_shape)
    spec = models.get_spec(config.model)  # a --network: registered as model by build_network
    # Keras' optimizer, its update fused into one XLA computation (dropzoo/optimizers.py).
    optimizer = optimizers.make(config.optimizer, config.learning_rate)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=spec.outputs == "logits"),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
        # auto: XLA on a GPU; off on CPU (several times slower there) and under tf.distribute.
        jit_compile=performance.choose_jit_compile(config.jit_compile)[0],
    )
    return model


def loop_for(strategy):
    """The loop that trains under `strategy`: Keras' fit, unless multi-worker."""
    if strategies.is_multi_worker(strategy):  # Keras' fit fails there (keras#20585)
        return multi_worker.MultiWorkerLoop(strategy)
    return loops.FitLoop(strategy)


def train_and_evaluate(config, workdir, *, overwrite=False, source=None, verbose="auto", serving_artifacts=True):
    """Trains, evaluates, exports and verifies; returns the metrics dict.

    `source` (a sources.Source) replaces the configured data (refused where the config names other data, or a
    finished run recorded other data). `verbose`: Keras fit verbosity; "auto" shows a progress bar on a terminal,
    else one line an epoch. `serving_artifacts=False` skips model.keras and the TFLite models (about 2 s of a tiny
    run's export), for tests about other things. `overwrite` deletes a started run once its data has loaded. Under
    multi-worker every worker calls this; each gets the chief's metrics with its own `strategy` and `weights_sha256`.
    """
    interrupts.raise_if_pending()  # a Ctrl-C swallowed while the sweep's previous run finished
    started = time.perf_counter()
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    config_lib.validate(config)
    run_data.check_given(source, config)
    # First TensorFlow call: logical devices and the cluster are fixed at start-up.
    strategy = strategies.strategy_for(config)
    loop = loop_for(strategy)
    lock = locks.WorkdirLock(workdir)  # taken by the chief alone: the workers share its workdir
    keep = files.first_existing(workdir)
    fresh = loop.chief and not (os.path.isdir(workdir) and workdir_lib.started(workdir))
    if overwrite and not fresh and loop.chief and source is None:  # read first: data it cannot use deletes nothing
        subsets.subset(source := sources.load_source(**sources.config_arguments(config)), config.train_size)
    with loop.session(workdir) as write_dir:
        try:
            # The chief decides, so every worker skips or runs alike; its flags come along to be compared.
            resolved = resolve(config)
            claim = loop.chief_does(lambda: {**claim_workdir(config, workdir, overwrite, lock, resolved),
                                             "flags": config.to_dict(), "resolved": resolved})
            multi_worker.check_chief_flags(claim.pop("flags"), config, claim.pop("resolved"), resolved)
            if "locked" in claim:
                raise locks.WorkdirLocked(claim["locked"])
            if claim["finished"] is not None:
                if loop.chief:  # the data as it is now: the run's results are reported as that data's
                    run_data.check_finished_on(source, config, claim["finished"].get("data", {}), workdir)
                if verbose:
                    print(f"{workdir} holds a finished run; reporting it (--overwrite retrains, on data as it is now)")
                if loop.chief:
                    for note in artifacts_lib.finished_run_notes(workdir, claim["finished"], serving_artifacts):
                        print(f"note: {note}", file=sys.stderr)
                return claim["finished"]
            run, metrics = _train_export_verify(config, workdir, write_dir, source, strategy, loop,
                                                verbose, started, serving_artifacts)
        except interrupts.Interrupted as e:
            e.workdir = workdir
            _forget(fresh, lock, workdir, keep)
            raise
        except tf.errors.OpError as e:  # a TensorBoard or checkpoint write that failed in TF
            failure = files.write_failure(e, workdir)
            if failure is None:
                raise
            raise failure from None
        except errors.USER_ERRORS:
            _forget(fresh, lock, workdir, keep)
            raise
        finally:
            lock.release()
    if loop.chief:
        return metrics  # finish() described this process already
    # A worker returns the chief's metrics with its own identity and weights.
    return {**metrics, "strategy": strategies.describe(strategy),
            "weights_sha256": weights_digest(run.model)}


def _forget(fresh, lock, workdir, keep):
    """A run that failed before its first checkpoint leaves nothing behind: no config.json blocks its rerun."""
    if fresh and lock.held:
        workdir_lib.remove_unstarted(workdir, keep)


def claim_workdir(config, workdir, overwrite, lock, resolved=None):
    """{"locked": why} if another process holds `workdir`, else {"finished": metrics or None}."""
    workdir_lib.ensure_writable(workdir)
    try:
        lock.acquire()  # before --overwrite deletes anything
    except locks.WorkdirLocked as e:
        return {"locked": str(e)}
    return {"finished": prepare_workdir(config, workdir, overwrite, resolved)}


def _train_export_verify(config, workdir, write_dir, source, strategy, loop, verbose, started,
                         serving_artifacts=True):
    with keras_state.kept():  # the caller's policy and Python's and NumPy's generators come back after
        keras.utils.set_random_seed(config.seed)
        # config.json keeps "auto"; the policy it resolved to goes to metrics.json.
        keras.mixed_precision.set_global_policy(performance.choose_precision(config.precision)[0])
        run = set_up(config, workdir_paths(workdir), workdir_paths(write_dir), source, strategy, loop, verbose)
        result = loop.train(run)
        if any(not np.isfinite(v) for v in result.history.get("loss", [])) or callbacks_lib.diverged(run.model):
            epoch = (checkpoints.saved_epoch(run.paths["checkpoints"]) or 0) + 1  # (NaN weights, a finite loss: ReLU)
            loop.chief_does(lambda: divergence.write(workdir, epoch, {**describe_run(run.config, data_record(
                run.source, run.pipes)), **performance.describe(run.config, run.model, strategies.is_distributed(
                    loop.strategy))}))
            raise RunError(divergence.diverged_now(workdir, epoch))
        # Every worker exports (saving may be collective); the chief's copy is verified.
        export_lib.export_saved_model(run.model, run.write_paths["saved_model"], outputs=run.outputs,
                                      **sources.export_record(run.source))
        return run, loop.chief_does(lambda: finish(run, result, loop, started, serving_artifacts))


def set_up(config, paths, write_paths, source, strategy, loop, verbose=0):
    """The `loops.Run` for `config`: data, model under `strategy`, checkpoint restored."""
    if source is None:
        source = sources.load_source(**sources.config_arguments(config))
    source = subsets.subset(source, config.train_size)  # None: the whole split
    steps_per_epoch, epochs = schedule(config, data_steps_per_epoch(source, config))
    steps_per_call, _ = performance.choose_steps_per_execution(
        config.steps_per_execution, steps_per_epoch, config.train_steps)
    steps_per_call = loop.steps_per_call(steps_per_call)
    with strategy.scope():  # variables become mirrored; training then runs every replica
        model = build_model(config, source.num_classes, source.image_shape, steps_per_call)
        # Built now, not by fit: a checkpoint restores its variables (multi-worker: a collective every worker joins).
        model.optimizer.build(model.trainable_variables)
    summaries.write_model(write_paths["model.txt"], write_paths["tensorboard"], model)
    if strategy.num_replicas_in_sync > 1:
        strategies.distinct_replica_masks()
    initial_epoch = loop.restore(model, paths["checkpoints"])
    earlier = checkpoints.saved_record(paths["checkpoints"], initial_epoch) if initial_epoch else None
    # A fixed batch of training images: each dropout site's activation statistics on it every epoch (variance shift).
    probe_images = next(iter(data_lib.raw_batches(source.train, 256)))[0]
    dropout_stats = callbacks_lib.DropoutStats(scale(probe_images), os.path.join(paths["tensorboard"], "dropout_stats"),
                                               latest=(earlier or {}).get("dropout_stats"))
    checkpoint = callbacks_lib.EpochCheckpoint(  # refuses other data or settings before the resume is announced
        write_paths["checkpoints"], earlier, source, run=(config, resolved := resolve(config)), stats=dropout_stats)
    if initial_epoch and verbose:
        print(f"Resuming from the checkpoint after epoch {initial_epoch} in {paths['checkpoints']}")
    pipes = data_lib.make_pipelines(source, batch_size=config.batch_size, seed=config.seed,
                                    validation_fraction=config.validation_fraction,
                                    start_step=initial_epoch * steps_per_epoch)
    if verbose:
        print(f"run: {summaries.settings_line(config, resolved['sites'])}")
        print(performance.summary_line(performance.describe(config, model, strategies.is_distributed(strategy)),
                                       strategies.describe(strategy)))
        print(data_lib.summary_line(source, pipes))
    return loops.Run(
        config=config, paths=paths, write_paths=write_paths, source=source, pipes=pipes,
        model=model, outputs=models.get_spec(config.model).outputs,
        steps_per_epoch=steps_per_epoch, epochs=epochs, steps_per_call=steps_per_call,
        initial_epoch=initial_epoch,
        checkpoint=checkpoint,
        dropout_stats=dropout_stats,
        verbose=verbose,
    )


def whole_history(earlier, history, initial_epoch):
    """(history of every epoch, 0), or (this session's history, initial_epoch) where the earlier is unknown.

    `earlier` is the record saved with the checkpoint the run resumed from
    (None: not resumed, or a checkpoint written before records were kept).
    """
    if not initial_epoch:
        return history, 0
    before = (earlier or {}).get("history", {})
    keys = history or before  # a run resumed after its last epoch trains none
    if not keys or any(len(before.get(key, [])) != initial_epoch for key in keys):
        return history, initial_epoch
    return {key: before[key] + history.get(key, []) for key in keys}, 0


def finish(run, result, loop, started, serving_artifacts=True):
    """The chief's part after training: test metrics, the other artifacts, export check, metrics.json."""
    earlier = run.checkpoint.earlier
    history, history_from = whole_history(earlier, result.history, run.initial_epoch)
    test = loop.evaluate(run, run.pipes.test)
    # The final model on the held-out validation split (what model selection, e.g. of the rate, may look at).
    validation = loop.evaluate(run, run.pipes.validation) if run.pipes.validation is not None else {}
    # The final model on the data it trained on, dropout off: the train-test gap.
    train = loop.evaluate(run, run.pipes.train_eval)
    artifacts, converted = (export_serving_artifacts(run) if serving_artifacts else (None, None))
    probe = next(iter(data_lib.raw_batches(run.source.test, 256)))[0].numpy()
    signatures = export_lib.load_signatures(run.paths["saved_model"])
    export_check = verify.verify_or_set_aside(run.paths["saved_model"], run.model, probe, outputs=run.outputs,
                                              artifacts=artifacts, signatures=signatures)
    # The run's record of its own test scores through the export (what a comparison reads).
    own = evaluate.evaluate_saved_model(run.paths["saved_model"], data_lib.raw_batches(run.source.test, 256),
                                        signatures=signatures)
    weights = weights_digest(run.model)
    evaluations.save_evaluation(os.path.dirname(run.paths["metrics.json"]), evaluations.make_request(
        sources.fingerprint(run.source)), run.source.name, own, weights)
    written = {k: v for k, v in run.paths.items()
               if k != "metrics.json" and (k not in artifacts_lib.ARTIFACT_FILES or artifacts)}
    metrics = {
        **describe_run(run.config, data_record(run.source, run.pipes)),
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "validation_loss": validation.get("loss"),
        "validation_accuracy": validation.get("accuracy"),
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        # Accuracy the final model loses and NLL it gains from training to test data (dropout off).
        "gap_accuracy": train["accuracy"] - test["accuracy"],
        "gap_loss": test["loss"] - train["loss"],
        "steps_trained": int(run.model.optimizer.iterations.numpy()),
        "epochs_completed": run.initial_epoch + len(result.epoch_seconds),
        "resumed_from_epoch": run.initial_epoch,
        # Every session's epochs (a resumed run's from its checkpoint's record), where the record has them.
        "train_time_sec": result.train_seconds + (sum(earlier["seconds"]) if history_from == 0 and earlier else 0),
        "wall_time_sec": time.perf_counter() - started,  # call to verified export, this process (its part)
        "train_examples_per_sec": steady_examples_per_sec(
            result.epoch_seconds, run.config.batch_size, run.pipes.num_train, run.pipes.steps_per_epoch),
        "epoch_train_seconds": [seconds for _, seconds in result.epoch_seconds],
        "steps_per_epoch": run.steps_per_epoch,
        # precision, jit_compile: asked, got, why
        **performance.describe(run.config, run.model, strategies.is_distributed(loop.strategy)),
        "strategy": strategies.describe(loop.strategy),
        "weights_sha256": weights,
        "history": history,
        "history_from_epoch": history_from,  # 0: every epoch; N: a resume without the earlier epochs' record
        "export_check": export_check,
        **({"tflite": artifacts_lib.tflite_metrics(artifacts, converted, data_lib.raw_batches(run.source.test, 256))}
           if artifacts else {}),
        "dropout_stats": result.dropout_stats,
        "paths": written,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "dropout_zoo": provenance.AT_START},
        "trained_by": {"host": socket.gethostname(), "pid": os.getpid()},
        "machine": performance.describe_machine(),
        "sessions": run.checkpoint.record["sessions"],  # each session's epochs, code, versions, machine
    }
    interrupts.raise_if_pending()  # a Ctrl-C swallowed in a finalizer (TFLite's conversion): not finished then
    summaries.write_run_hparams(run.paths["tensorboard"], run.config, run.source.name, metrics)
    files.write_json(run.paths["metrics.json"], metrics)
    return metrics


def export_serving_artifacts(run):
    """Writes model.keras and the TFLite models beside the SavedModel; ({name: path}, {"seconds", ...})."""
    started = time.perf_counter()
    # The int8 model's calibration set: the first training images, raw uint8 as served.
    calibration = next(iter(data_lib.raw_batches(run.source.train,
                                                  artifacts_lib.REPRESENTATIVE_EXAMPLES)))[0]
    directory = os.path.dirname(run.paths["saved_model"])
    artifacts = artifacts_lib.export_artifacts(run.model, directory, calibration.numpy(), outputs=run.outputs,
                                               **sources.export_record(run.source))
    return artifacts, {"seconds": time.perf_counter() - started,
                       "calibration_examples": int(calibration.shape[0])}


def data_record(source, pipes):
    """metrics.json's "data" entry: what was trained and tested on, and how to load it again."""
    return {"source": source.name, "origin": source.origin, "details": source.details, **source.subset_record,
            # The test split by content (sources.fingerprint): what its evaluation records are keyed by.
            "test_sha256": sources.fingerprint(source), "train_sha256": source.train_sha256 or None,
            "fallback_reason": source.fallback_reason,
            "num_train": pipes.num_train, "num_validation": pipes.num_validation,
            "num_test": pipes.num_test, "num_classes": source.num_classes,
            "image_shape": list(source.image_shape),
            "streamed": list(pipes.streamed)}  # splits too large to cache (dropzoo/data.py)


def describe_run(config, data):
    """The metrics.json entries naming what was trained (`config`, its sites) on what (`data`)."""
    resolved = resolve(config)
    return {
        "config": config.to_dict(),
        "data": data,
        "mask_generator": resolved["mask_generator"],
        **({"keras_model_sha256": resolved["keras_model_sha256"]} if config.keras_model else {}),  # not its path
        "placement_sites": resolved["sites"],  # the sites as built: after --rate replaced every site's rate
    }


def record_identical(config, workdir, target_workdir, target_metrics):
    """Records in `workdir` that `config` is identical by construction to a finished run.

    Writes `metrics.json`: the finished run's metrics with this run's config and sites, and `identical_to`,
    its workdir relative to this one, which `eval.py --runs_dir` shows. A sweep does this instead of training.
    """
    os.makedirs(workdir, exist_ok=True)
    metrics = {
        **target_metrics,
        **describe_run(config, target_metrics["data"]),
        "identical_to": os.path.relpath(target_workdir, workdir),
        "identical_because": "models.construction_key: the same network with the same masks",
    }
    files.write_json(workdir_paths(workdir)["metrics.json"], metrics)
    return metrics


def weights_digest(model):
    """sha256 of the model's weights (values only, in order): equal digests, equal weights."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return digest.hexdigest()


def steady_examples_per_sec(epochs, batch_size, num_train, steps_per_epoch):
    """Examples/s over every epoch of this session but its first (which pays for tracing); None with one alone."""
    timed = epochs[1:]
    examples = sum(num_train if steps == steps_per_epoch else steps * batch_size for steps, _ in timed)
    seconds = sum(s for _, s in timed)
    return examples / seconds if seconds > 0 else None


def data_steps_per_epoch(source, config):
    """Steps in one pass over the training part, as make_pipelines counts them."""
    num_val = data_lib.validation_size(source.num_train, config.validation_fraction)
    return math.ceil((source.num_train - num_val) / config.batch_size)


# With --train_steps, a Keras "epoch" (one checkpoint, one TensorBoard point)
# is at least this many steps, so small datasets don't checkpoint every second.
MIN_STEPS_PER_LOGGED_EPOCH = 1000


def schedule(config, data_steps_per_epoch):
    """(steps per Keras epoch, number of Keras epochs) for the run.

    The training stream is one infinite, step-indexed sequence of batches, so a
    Keras epoch need not be a data epoch; it only fixes where checkpoints fall.
    """
    if not config.train_steps:
        return data_steps_per_epoch, config.epochs
    steps = min(config.train_steps, max(data_steps_per_epoch, MIN_STEPS_PER_LOGGED_EPOCH))
    return steps, math.ceil(config.train_steps / steps)
