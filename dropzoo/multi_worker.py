"""The training loop for MultiWorkerMirroredStrategy, and its chief-to-workers exchange.

Keras 3.15's `model.fit` fails under MultiWorkerMirroredStrategy ("Attempt
to convert a value (PerReplica...)", keras-team/keras#20585), so multi-worker
runs train with `MultiWorkerLoop`: `strategy.run` over
`experimental_distribute_dataset`. It implements `loops.FitLoop`'s interface,
so the trainer's run (data, model, checkpoints, export, metrics) is the same;
this module is the whole workaround and can be deleted once Keras is fixed.
It divides each step's summed loss by the step's global example count, so N
replicas take the one-device step even on an unevenly split batch.

Multi-worker rules, all from TF's own pattern: every worker runs the same
collective operations in the same order; only the chief writes the workdir
(TensorBoard, metrics.json, SavedModel, checkpoints), the others write their
copies to a temporary directory they delete. On a rerun the chief reads its
checkpoint and sends the state to the others, so the workdir need only be on
the chief's disk. A worker that dies or freezes is noticed by TF's
coordination service (missed heartbeats, about 10 s), which aborts the
collectives of the survivors; they stop with one line naming the lost task.
"""
import contextlib
import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from dropzoo import callbacks as callbacks_lib
from dropzoo import checkpoints
from dropzoo import config as config_lib
from dropzoo import loops
from dropzoo import sources
from dropzoo import strategies
from dropzoo.errors import RunError

# Errors with which collectives end when a peer is gone (the coordination
# service reports Unavailable; the others appear on some paths).
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.AbortedError, tf.errors.CancelledError)


class MultiWorkerLoop:
    """Trains a `loops.Run` on every worker of a MultiWorkerMirroredStrategy."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.chief = strategies.is_chief(strategy)
        self._exchange = _exchange_function(strategy)
        self._evaluating = None  # (model, its traced evaluation step)

    @contextlib.contextmanager
    def session(self, workdir):
        """The chief writes `workdir`; every other worker a temporary directory it deletes."""
        resolver = self.strategy.cluster_resolver
        name = f"{resolver.task_type or 'worker'}{resolver.task_id or 0}"
        write_dir = workdir if self.chief else tempfile.mkdtemp(prefix=f"dropzoo-{name}-")
        try:
            yield write_dir
        except PEER_ERRORS as e:
            raise RunError(lost_peer_message(e, workdir)) from None
        finally:
            if not self.chief:
                shutil.rmtree(write_dir, ignore_errors=True)

    def chief_does(self, work):
        """Runs `work()` on the chief and hands its JSON result to every worker.

        A failure on the chief is passed on too, so the others stop with the
        chief's message instead of waiting for a collective it will never join.
        """
        outcome, error = {}, None
        if self.chief:
            try:
                outcome = {"result": work()}
            except Exception as e:  # noqa: BLE001 - re-raised below, after telling the others
                error = e
                outcome = {"error": " ".join(str(e).split())}
        outcome = self._json_from_chief(outcome)
        if error is not None:
            raise error
        if "error" in outcome:
            raise RunError(f"the chief stopped: {outcome['error']}")
        return outcome["result"]

    def steps_per_call(self, steps):
        return steps

    def restore(self, model, directory):
        """The chief loads its checkpoint and sends it to every worker; returns its epoch."""
        epoch = self.chief_does(lambda: checkpoints.restore(model, directory))
        if epoch:
            self._variables_from_chief(list(model.variables) + list(model.optimizer.variables))
        return epoch

    def train(self, run):
        run_steps = _train_function(run.model, self.strategy)
        writers = ({name: tf.summary.create_file_writer(os.path.join(run.paths["tensorboard"], name))
                    for name in ("train", "validation")} if self.chief else {})
        iterator = iter(self.strategy.experimental_distribute_dataset(_sharded(run.pipes.train)))
        total_steps = run.config.train_steps or run.epochs * run.steps_per_epoch
        history, timings = {}, []
        start = time.perf_counter()
        for epoch in range(run.initial_epoch, run.epochs):
            steps = min(run.steps_per_epoch, total_steps - epoch * run.steps_per_epoch)
            tic = time.perf_counter()
            run.checkpoint.on_epoch_begin(epoch)
            logs = _train_epoch(run_steps, iterator, steps, run.steps_per_call)
            timings.append((steps, time.perf_counter() - tic))
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if callbacks_lib.diverged(run.model, logs):  # the same all-reduced loss, mirrored weights, on every worker
                break  # the trainer reports it; the NaN epoch is not checkpointed
            if self.chief and run.pipes.validation is not None:  # reads only: the others wait at the next step
                for key, value in self.evaluate(run, run.pipes.validation).items():
                    logs[f"val_{key}"] = value
                    history.setdefault(f"val_{key}", []).append(value)
            if self.chief:  # local writes only; before the checkpoint, which keeps the statistics (as in fit)
                run.dropout_stats.set_model(run.model)
                run.dropout_stats.on_epoch_end(epoch)
                _write_scalars(writers, epoch, logs)
            run.checkpoint.set_model(run.model)
            run.checkpoint.on_epoch_end(epoch, logs)  # every worker: saving may be collective; with the history
            if run.verbose:
                print(f"Epoch {epoch + 1}/{run.epochs} - {timings[-1][1]:.1f}s - " +
                      " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        return loops.LoopResult(history=history, epoch_seconds=timings,
                                train_seconds=time.perf_counter() - start,
                                dropout_stats=run.dropout_stats.latest)

    def evaluate(self, run, dataset):
        """{"loss", "accuracy"} on this worker alone (no collectives)."""
        if self._evaluating is None or self._evaluating[0] is not run.model:  # trace once per model
            self._evaluating = (run.model, _eval_function(run.model))
        batch_totals = self._evaluating[1]
        totals = np.zeros(3)
        for images, labels in dataset:
            totals += batch_totals(images, labels).numpy()
        return {"loss": float(totals[0] / totals[2]), "accuracy": float(totals[1] / totals[2])}

    # --------------------------------------------- talking to the chief

    def _from_chief(self, values):
        """The chief's `values` (1-D, as float64, same length on every worker), everywhere.

        One all-reduce in which only the first replica (the chief's) contributes:
        a broadcast through the public API, exact for float32 and small integers.
        """
        result = self._exchange(tf.constant(np.asarray(values, np.float64).ravel()))
        return self.strategy.experimental_local_results(result)[0].numpy()

    def _json_from_chief(self, obj):
        """The chief's JSON-able `obj` on every worker (others pass anything)."""
        payload = (np.frombuffer(json.dumps(obj).encode(), np.uint8) if self.chief
                   else np.zeros(0, np.uint8))
        length = int(self._from_chief([payload.size])[0])
        if not self.chief:
            payload = np.zeros(length, np.uint8)  # shapes must match on every worker
        received = self._from_chief(payload.astype(np.float64))
        return json.loads(received.astype(np.uint8).tobytes().decode())

    def _variables_from_chief(self, variables):
        values = [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in variables]
        flat = self._from_chief(np.concatenate([v.ravel() for v in values]))
        offset = 0
        for variable, value in zip(variables, values):
            variable.assign(flat[offset:offset + value.size].reshape(value.shape).astype(variable.dtype))
            offset += value.size


def check_chief_flags(chief, config, chief_resolved=None, resolved=None):
    """RunError where this worker's flags, or what they resolve to here (`resolved`: the precision `auto`
    picks, a --keras_model's content), differ from the chief's: a worker with another --seed trained along
    without a word, and one with another --batch_size or --placement hung or failed in TensorFlow's
    collectives. Paths are not compared (each machine may stage its data, or keep its model, elsewhere)."""
    paths = sources.PATH_ARGUMENTS + ("keras_model",)
    differing = [(f"--{k}", chief.get(k), getattr(config, k)) for k in config_lib.differences(chief, config)
                 if k not in paths]
    differing += [(f"the resolved {k}", (chief_resolved or {}).get(k), value) for k, value in (resolved or {}).items()
                  if k in ("precision", "keras_model_sha256") and (chief_resolved or {}).get(k) != value]
    if differing:
        listed = ", ".join(f"{name} ({theirs!r} on the chief, {mine!r} here)" for name, theirs, mine in differing)
        names = {name for name, _, _ in differing}
        fix = "start every worker with the same command (only TF_CONFIG differs)"
        fix += ", with --precision pinned" if "the resolved precision" in names else ""
        fix += ", and the same --keras_model file" if "the resolved keras_model_sha256" in names else ""
        raise RunError(f"this worker's flags differ from the chief's: {listed}; {fix}")


def lost_peer_message(error, workdir):
    """One line for a collective aborted because another task is gone."""
    text = " ".join(str(getattr(error, "message", error)).split())
    reason = text.split("Collective ops is aborted by:", 1)[-1]
    reason = reason.split("The error could be from a previous operation", 1)[0].strip()
    return (f"multi-worker training stopped: another task failed or became unreachable "
            f"({reason[:400]}); the chief's {os.path.join(workdir, 'checkpoints')} keeps the "
            "last finished epoch, if one finished: restart every worker with the same command to resume from it "
            "(or from the start)")


def _exchange_function(strategy):
    """One traced broadcast per strategy (a fresh tf.function per call would retrace)."""
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)])
    def exchange(local):
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            first = tf.equal(ctx.replica_id_in_sync_group, 0)
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                  tf.where(first, local, tf.zeros_like(local)))
        return strategy.run(replica_fn)

    return exchange


def _sharded(dataset):
    # Each worker keeps its share of every global batch. DATA, set explicitly:
    # the in-memory datasets have no files to shard by (AUTO would warn, then
    # fall back to DATA anyway).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _per_example(model, labels, outputs):
    """(loss, correct) per example, in float32 whatever the precision policy; the loss is the one the trainer
    compiled the model with (trainer.build_model), per example, as Keras' fit computes it."""
    outputs = tf.cast(outputs, tf.float32)
    loss = model.loss.call(labels, outputs)
    correct = tf.cast(tf.equal(tf.argmax(outputs, axis=-1), tf.cast(labels, tf.int64)), tf.float32)
    return loss, correct


def _train_function(model, strategy):
    """tf.function(iterator, num_steps) -> [loss sum, correct, examples] over all workers."""
    def replica_step(batch):
        images, labels = batch
        ctx = tf.distribute.get_replica_context()
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        # Divide by the step's global example count (not per replica), so
        # N replicas compute one device's gradient even when the last batch
        # of a data epoch splits unevenly; the optimizer sums the replicas'.
        global_count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            loss, correct = _per_example(model, labels, outputs)
            total = tf.reduce_sum(loss) / global_count
            if model.losses:  # layer regularizers: one per model, not per replica
                total += tf.add_n(model.losses) / ctx.num_replicas_in_sync
            scaled = model.optimizer.scale_loss(total)
        grads = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return tf.stack([tf.reduce_sum(loss), tf.reduce_sum(correct), count])

    @tf.function
    def run_steps(iterator, num_steps):
        totals = tf.zeros([3])
        for _ in tf.range(num_steps):
            per_replica = strategy.run(replica_step, args=(next(iterator),))
            totals += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return totals

    return run_steps


def _train_epoch(run_steps, iterator, steps, steps_per_call):
    """Mean training loss and accuracy of one epoch of `steps` steps."""
    totals = np.zeros(3)
    done = 0
    while done < steps:
        calls = min(steps_per_call, steps - done)
        totals += run_steps(iterator, tf.constant(calls)).numpy()
        done += calls
    return {"loss": float(totals[0] / totals[2]), "accuracy": float(totals[1] / totals[2])}


def _eval_function(model):
    @tf.function(reduce_retracing=True)
    def batch_totals(images, labels):
        loss, correct = _per_example(model, labels, model(images, training=False))
        return tf.stack([tf.reduce_sum(loss), tf.reduce_sum(correct),
                         tf.cast(tf.shape(labels)[0], tf.float32)])

    return batch_totals


def _write_scalars(writers, epoch, logs):
    """The Keras TensorBoard callback's epoch scalars: train/ and validation/ epoch_*."""
    for key, value in logs.items():
        run = "validation" if key.startswith("val_") else "train"
        with writers[run].as_default(step=epoch):
            tf.summary.scalar(f"epoch_{key.removeprefix('val_')}", value)
    for writer in writers.values():
        writer.flush()
