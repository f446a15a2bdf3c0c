"""Scale-out: which tf.distribute strategy a run uses, and a multi-worker loop.

`strategy_for(config)` turns `--strategy` (and `--cpu_devices`) into a
strategy; it must be the first TensorFlow call of a process, because logical
devices and the multi-worker runtime can only be set up before TF starts.

* `default`/`one_device`/`mirrored`: one machine. The trainer builds and
  compiles the model under `strategy.scope()` and trains with `model.fit`.
  `--cpu_devices=N` splits the CPU into N logical devices, so mirrored
  training runs N replicas without a GPU (for tests and for trying it out).
* `multi_worker`: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG.
  Keras 3.15's `model.fit` fails under it ("Attempt to convert a value
  (PerReplica...)", keras-team/keras#20585), so `train_multi_worker` runs
  the whole job with its own loop: `strategy.run` over
  `experimental_distribute_dataset`, with the trainer's model builder, data
  pipelines, checkpoints, TensorBoard scalars, export and export check.
  It divides each step's summed loss by the step's global example count, so
  N replicas take the one-device step even on an unevenly split batch.

Under any strategy with more than one replica, `distinct_replica_masks`
folds each replica's id into its dropout seeds: Keras keeps a dropout
layer's seed state in one mirrored variable, so the replicas would
otherwise draw identical masks.

Multi-worker rules, all from TF's own pattern: every worker runs the same
collective operations in the same order; only the chief writes the workdir
(TensorBoard, metrics.json, SavedModel, checkpoints), the others write their
copies to a temporary directory they delete. On a rerun the chief reads its
checkpoint and sends the state to the others, so the workdir need only be on
the chief's disk. A worker that dies or freezes is noticed by TF's
coordination service (missed heartbeats, about 10 s), which aborts the
collectives of the survivors; they stop with one line naming the lost task.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import models
from dropzoo import callbacks as callbacks_lib
from dropzoo import data as data_lib
from dropzoo import export as export_lib
from dropzoo import performance
from dropzoo import summaries
from dropzoo.preprocess import scale

# Errors with which collectives end when a peer is gone (the coordination
# service reports Unavailable; the others appear on some paths).
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.AbortedError, tf.errors.CancelledError)

# A process can set up collectives only once, so a second run in the same
# process (tests, sweeps) must get the strategy the first one created.
_CREATED = {}


class DistributeError(ValueError):
    """A strategy that cannot be set up as asked; str(e) is one line with the fix."""


# ------------------------------------------------------------ choosing


def tf_config_cluster(tf_config):
    """The cluster dict of a TF_CONFIG string ({} when unset); DistributeError if malformed."""
    if not tf_config:
        return {}
    try:
        parsed = json.loads(tf_config)
    except json.JSONDecodeError as e:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({e}); see the README's "
                              "'Many GPUs / many machines' section for its form") from None
    cluster = parsed.get("cluster", {}) if isinstance(parsed, dict) else None
    if not isinstance(cluster, dict):
        raise DistributeError("TF_CONFIG must be a JSON object with a 'cluster' object, "
                              f"got {tf_config!r}")
    return cluster


def num_training_tasks(cluster):
    """Chief and worker tasks in a cluster dict (evaluators don't train)."""
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker"))


def resolve(name, *, num_gpus, num_tasks, cpu_devices=None):
    """The concrete strategy name for `name`: default, one_device, mirrored or multi_worker."""
    if name != "auto":
        return name
    if num_tasks > 1:
        return "multi_worker"
    if num_gpus > 1 or (cpu_devices or 1) > 1:
        return "mirrored"
    return "default"


def split_cpu(num_devices):
    """Splits the CPU into `num_devices` logical devices; must precede TF's start-up."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is not None and len(configured) == num_devices:
        return  # already split this way (an earlier run in this process)
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == num_devices:
            return
        raise DistributeError(
            f"--cpu_devices={num_devices} must be set before TensorFlow initializes its "
            f"devices, but this process already runs with {have} CPU device(s); pass it to "
            "a fresh process (train.py --cpu_devices=N), or call "
            "distribute.strategy_for(config) before any other TensorFlow call") from None


def make_strategy(name="auto", cpu_devices=None, tf_config=None):
    """The strategy for `name` (see config.STRATEGIES), created once per process."""
    tf_config = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    key = (name, cpu_devices, tf_config)
    if key not in _CREATED:
        if cpu_devices:
            split_cpu(cpu_devices)
        num_gpus = len(tf.config.list_physical_devices("GPU"))
        resolved = resolve(name, num_gpus=num_gpus, cpu_devices=cpu_devices,
                           num_tasks=num_training_tasks(tf_config_cluster(tf_config)))
        _CREATED[key] = _create(resolved, num_gpus, cpu_devices)
    return _CREATED[key]


def _create(name, num_gpus, cpu_devices):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if num_gpus else "/cpu:0")
    if name == "mirrored":
        if num_gpus:
            return tf.distribute.MirroredStrategy()
        # Without GPUs MirroredStrategy takes only CPU:0; name the logical ones.
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if (cpu_devices or 1) > 1:
        raise DistributeError(
            f"--cpu_devices={cpu_devices} works with --strategy=mirrored only; a multi_worker "
            "worker uses its GPUs, or one CPU device")
    # Peers that die are detected by the coordination service's heartbeats,
    # which TF 2.21 turns on for this strategy (see the module docstring).
    return tf.distribute.MultiWorkerMirroredStrategy()


def strategy_for(config):
    """make_strategy for a TrainConfig, checked against its global batch size."""
    strategy = make_strategy(config.strategy, config.cpu_devices)
    check_global_batch(config.batch_size, strategy.num_replicas_in_sync)
    return strategy


def check_global_batch(batch_size, num_replicas):
    """DistributeError unless the global batch splits evenly over the replicas."""
    # Keras' fit reduces the first batch across replicas element-wise (its
    # symbolic build), which fails unless the replicas' shares are equal.
    if batch_size % num_replicas:
        fixed = max(num_replicas, batch_size // num_replicas * num_replicas)
        raise DistributeError(
            f"--batch_size={batch_size} is the global batch and must be a multiple of the "
            f"{num_replicas} replicas; use e.g. --batch_size={fixed}")


def fit_steps_per_execution(strategy, steps):
    """The steps per call Keras 3.15's fit can run under `strategy`.

    With more than one replica a multi-step call fails ("You must feed a value
    for placeholder tensor", keras-team/keras#19246), so those take one step.
    """
    return 1 if strategy.num_replicas_in_sync > 1 else steps


def distinct_replica_masks(model):
    """Makes each replica draw its own dropout masks; returns `model`.

    A dropout layer draws its mask from the seed its SeedGenerator hands out,
    and under a strategy that generator's state is one mirrored variable, so
    without this every replica would draw the same masks for its share of
    the global batch (examples k and k + batch/N always kept and dropped
    together). Each generator's seed is folded with the replica's id in the
    sync group (a global id under multi_worker), inside the replica's step.
    With one replica in sync the seed is left as it is, so a single-device
    run draws exactly the masks it would draw without this.
    """
    for layer in models.layers.dropout_layers(model):
        generator = getattr(layer, "seed_generator", None)  # absent at rate 0
        if generator is not None and not getattr(generator, "folds_replica_id", False):
            generator.next = _replica_seeds(generator.next)
            generator.folds_replica_id = True
    return model


def _replica_seeds(next_seed):
    def next_for_this_replica(ordered=True):
        seed = next_seed(ordered)  # advances the shared state as before
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return seed
        return tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)

    return next_for_this_replica


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def describe(strategy):
    """metrics.json's "strategy" entry: name, replicas, workers, and this task."""
    if is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        cluster = resolver.cluster_spec().as_dict()
        return {"name": "multi_worker", "num_replicas": strategy.num_replicas_in_sync,
                "num_workers": max(1, num_training_tasks(cluster)),
                "task": {"type": resolver.task_type, "index": resolver.task_id},
                "is_chief": is_chief(strategy)}
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        name = "mirrored"
    elif isinstance(strategy, tf.distribute.OneDeviceStrategy):
        name = "one_device"
    else:
        name = "default"
    return {"name": name, "num_replicas": strategy.num_replicas_in_sync, "num_workers": 1}


def is_chief(strategy):
    """Whether this task writes the run: the chief, or worker 0 in a cluster without one."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type is None:
        return True
    jobs = resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in jobs)


def weights_digest(model):
    """sha256 of the model's weights (values only, in order): equal digests, equal weights."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return digest.hexdigest()


# ------------------------------------------------- talking to the chief


def _from_chief(strategy, values):
    """The chief's `values` (1-D, as float64, same length on every worker), everywhere.

    One all-reduce in which only the first replica (the chief's) contributes:
    a broadcast through the public API, exact for float32 and small integers.
    """
    if strategy not in _EXCHANGES:
        _EXCHANGES[strategy] = _exchange_function(strategy)
    result = _EXCHANGES[strategy](tf.constant(np.asarray(values, np.float64).ravel()))
    return strategy.experimental_local_results(result)[0].numpy()


# One traced broadcast per strategy; a fresh tf.function per call would retrace.
_EXCHANGES = {}


def _exchange_function(strategy):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float64)])
    def exchange(local):
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            first = tf.equal(ctx.replica_id_in_sync_group, 0)
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                  tf.where(first, local, tf.zeros_like(local)))
        return strategy.run(replica_fn)

    return exchange


def _json_from_chief(strategy, chief, obj):
    """The chief's JSON-able `obj` on every worker (others pass anything)."""
    payload = np.frombuffer(json.dumps(obj).encode(), np.uint8) if chief else np.zeros(0, np.uint8)
    length = int(_from_chief(strategy, [payload.size])[0])
    if not chief:
        payload = np.zeros(length, np.uint8)  # shapes must match on every worker
    received = _from_chief(strategy, payload.astype(np.float64))
    return json.loads(received.astype(np.uint8).tobytes().decode())


def _chief_does(strategy, chief, work):
    """Runs `work()` on the chief and hands its JSON result to every worker.

    A failure on the chief is passed on too, so the others stop with the
    chief's message instead of waiting for a collective it will never join.
    """
    outcome = {}
    error = None
    if chief:
        try:
            outcome = {"result": work()}
        except Exception as e:  # noqa: BLE001 - re-raised below, after telling the others
            error = e
            outcome = {"error": " ".join(str(e).split())}
    outcome = _json_from_chief(strategy, chief, outcome)
    if error is not None:
        raise error
    if "error" in outcome:
        from dropzoo.trainer import RunError
        raise RunError(f"the chief stopped: {outcome['error']}")
    return outcome["result"]


def _state_variables(model):
    """Everything a checkpoint restores: weights, dropout RNG state, optimizer."""
    return list(model.variables) + list(model.optimizer.variables)


def _variables_from_chief(strategy, variables):
    values = [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in variables]
    flat = _from_chief(strategy, np.concatenate([v.ravel() for v in values]))
    offset = 0
    for variable, value in zip(variables, values):
        variable.assign(flat[offset:offset + value.size].reshape(value.shape).astype(variable.dtype))
        offset += value.size


# ------------------------------------------------------------- the loop


def train_multi_worker(config, workdir, strategy, *, overwrite=False, source=None, verbose=2):
    """The trainer's job under MultiWorkerMirroredStrategy; every worker calls it.

    Returns the chief's metrics on every worker, with this worker's own
    `strategy.task` and `weights_sha256` (equal on all workers when they agree).
    """
    from dropzoo import trainer  # trainer imports this module

    chief = is_chief(strategy)
    write_dir = workdir if chief else tempfile.mkdtemp(prefix=f"dropzoo-{_task_name(strategy)}-")
    try:
        return _job(config, workdir, write_dir, strategy, chief, overwrite, source, verbose)
    except _PEER_ERRORS as e:
        raise trainer.RunError(_lost_peer_message(e, workdir)) from None
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def _task_name(strategy):
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type or 'worker'}{resolver.task_id or 0}"


def _lost_peer_message(error, workdir):
    text = " ".join(str(getattr(error, "message", error)).split())
    reason = text.split("Collective ops is aborted by:", 1)[-1]
    reason = reason.split("The error could be from a previous operation", 1)[0].strip()
    return (f"multi-worker training stopped: another task failed or became unreachable "
            f"({reason[:400]}); the chief's {os.path.join(workdir, 'checkpoints')} keeps the "
            "last finished epoch: restart every worker with the same command to resume from it")


def _job(config, workdir, write_dir, strategy, chief, overwrite, source, verbose):
    from dropzoo import trainer

    prepared = _chief_does(strategy, chief, lambda: trainer.prepare_workdir(config, workdir, overwrite))
    if prepared is not None:
        if verbose:
            print(f"{workdir} holds a finished run; reporting it (--overwrite retrains)")
        return prepared
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(performance.choose_precision(config.precision)[0])
    try:
        return _train(config, trainer._paths(workdir), trainer._paths(write_dir), strategy, chief,
                      source, verbose)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _train(config, paths, own_paths, strategy, chief, source, verbose):
    job = _set_up(config, paths, own_paths, strategy, chief, source, verbose)
    history, timings, train_time, dropout_stats = _fit(job, verbose)
    # Saving under MWMS may be collective: every worker exports, the others
    # into their temporary directory; only the chief's copy is verified.
    export_lib.export_saved_model(job.model, own_paths["saved_model"], outputs=job.outputs)
    metrics = _chief_does(strategy, chief,
                          lambda: _finish(job, history, timings, train_time, dropout_stats))
    # Each worker reports its own identity and weights, so runs can be compared.
    return {**metrics, "strategy": describe(strategy), "weights_sha256": weights_digest(job.model)}


@dataclasses.dataclass(frozen=True)
class _Job:
    """One worker's training, set up the same way on every worker."""

    config: object
    paths: dict  # the chief's workdir
    own_paths: dict  # where this worker writes: the workdir, or its temporary directory
    strategy: object
    chief: bool
    source: data_lib.Source
    pipes: data_lib.Pipelines
    model: keras.Model
    outputs: str
    steps_per_epoch: int
    epochs: int
    steps_per_call: int
    initial_epoch: int


def _set_up(config, paths, own_paths, strategy, chief, source, verbose):
    """Data, model (built under the strategy), the chief's checkpoint, pipelines."""
    from dropzoo import trainer

    source, model, steps_per_epoch, epochs, steps_per_call = trainer.set_up(config, source, strategy)
    with strategy.scope():
        # Creating a variable is a collective (its value comes from the
        # chief), so every worker builds the optimizer, checkpoint or not.
        model.optimizer.build(model.trainable_variables)
    if verbose:
        print(performance.summary_line(performance.describe(config, model)))
    initial_epoch = _restore(strategy, chief, model, paths["checkpoints"])
    if initial_epoch and verbose:
        print(f"Resuming from the checkpoint after epoch {initial_epoch} in {paths['checkpoints']}")
    pipes = trainer.make_pipelines(config, source, initial_epoch, steps_per_epoch)
    return _Job(config, paths, own_paths, strategy, chief, source, pipes, model,
                models.get_spec(config.model).outputs, steps_per_epoch, epochs, steps_per_call,
                initial_epoch)


def _fit(job, verbose):
    """The epochs: (history, [(steps, seconds)], train seconds, DropoutStats)."""
    from dropzoo import trainer

    run_steps = _train_function(job.model, job.strategy, job.outputs == "logits")
    evaluate = _eval_function(job.model, job.outputs == "logits")
    checkpoint = callbacks_lib.EpochCheckpoint(job.own_paths["checkpoints"])
    checkpoint.set_model(job.model)
    dropout_stats = callbacks_lib.DropoutStats(
        scale(next(iter(data_lib.raw_batches(job.source.train, 256)))[0]),
        os.path.join(job.paths["tensorboard"], "dropout_stats"))
    dropout_stats.set_model(job.model)
    writers = ({run: tf.summary.create_file_writer(os.path.join(job.paths["tensorboard"], run))
                for run in ("train", "validation")} if job.chief else {})
    iterator = iter(job.strategy.experimental_distribute_dataset(_sharded(job.pipes.train)))
    total_steps = job.config.train_steps or job.epochs * job.steps_per_epoch
    history, timings = {}, []
    start = time.perf_counter()
    for epoch in range(job.initial_epoch, job.epochs):
        steps = min(job.steps_per_epoch, total_steps - epoch * job.steps_per_epoch)
        tic = time.perf_counter()
        logs = _train_epoch(run_steps, iterator, steps, job.steps_per_call)
        timings.append((steps, time.perf_counter() - tic))
        if not np.isfinite(logs["loss"]):  # the same all-reduced value on every worker
            raise trainer.RunError(
                "training loss became NaN/inf; the last good checkpoint is kept in "
                f"{job.paths['checkpoints']}; lower --learning_rate and rerun")
        checkpoint.on_epoch_end(epoch, logs)  # every worker: saving may be collective
        if job.chief:  # reads and local writes only: the others go on to the next step
            if job.pipes.validation is not None:
                logs.update({f"val_{k}": v for k, v in evaluate(job.pipes.validation).items()})
            dropout_stats.on_epoch_end(epoch)
            _write_scalars(writers, epoch, logs)
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if verbose:
            print(f"Epoch {epoch + 1}/{job.epochs} - {timings[-1][1]:.1f}s - " +
                  " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
    return history, timings, time.perf_counter() - start, dropout_stats


def _finish(job, history, timings, train_time, dropout_stats):
    """The chief's part: test metrics, export check, metrics.json (as the trainer's)."""
    from dropzoo import trainer

    config, source, pipes, model = job.config, job.source, job.pipes, job.model
    test = _eval_function(model, job.outputs == "logits")(pipes.test)
    probe = next(iter(data_lib.raw_batches(source.test, 256)))[0].numpy()
    export_check = export_lib.verify_export(job.paths["saved_model"], model, probe, outputs=job.outputs)
    metrics = {
        **trainer.describe_run(config, source, pipes),
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "epochs_completed": job.initial_epoch + len(timings),
        "resumed_from_epoch": job.initial_epoch,
        "train_time_sec": train_time,
        "train_examples_per_sec": trainer._steady_examples_per_sec(
            timings, config.batch_size, pipes.num_train, pipes.steps_per_epoch),
        "epoch_train_seconds": [seconds for _, seconds in timings],
        "steps_per_epoch": job.steps_per_epoch,
        **performance.describe(config, model),
        "strategy": describe(job.strategy),
        "weights_sha256": weights_digest(model),
        "history": history,
        "export_check": export_check,
        "dropout_stats": dropout_stats.latest,
        "paths": {k: v for k, v in job.paths.items() if k != "metrics.json"},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    summaries.write_hparams(job.paths["tensorboard"], config, source.name, metrics)
    trainer._write_json(job.paths["metrics.json"], metrics)
    return metrics


def _restore(strategy, chief, model, directory):
    """The chief loads its checkpoint and sends it to every worker; returns its epoch."""
    epoch = _chief_does(strategy, chief, lambda: callbacks_lib.restore(model, directory))
    if epoch:
        _variables_from_chief(strategy, _state_variables(model))
    return epoch


def _sharded(dataset):
    # Each worker keeps its share of every global batch. DATA, set explicitly:
    # the in-memory datasets have no files to shard by (AUTO would warn, then
    # fall back to DATA anyway).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _per_example(labels, outputs, from_logits):
    """(loss, correct) per example, in float32 whatever the precision policy."""
    outputs = tf.cast(outputs, tf.float32)
    loss = keras.losses.sparse_categorical_crossentropy(labels, outputs, from_logits=from_logits)
    correct = tf.cast(tf.equal(tf.argmax(outputs, axis=-1), tf.cast(labels, tf.int64)), tf.float32)
    return loss, correct


def _train_function(model, strategy, from_logits):
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
            loss, correct = _per_example(labels, outputs, from_logits)
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


def _eval_function(model, from_logits):
    """evaluate(dataset) -> {"loss", "accuracy"}, on this worker alone (no collectives)."""
    @tf.function(reduce_retracing=True)
    def batch_totals(images, labels):
        loss, correct = _per_example(labels, model(images, training=False), from_logits)
        return tf.stack([tf.reduce_sum(loss), tf.reduce_sum(correct),
                         tf.cast(tf.shape(labels)[0], tf.float32)])

    def evaluate(dataset):
        totals = np.zeros(3)
        for images, labels in dataset:
            totals += batch_totals(images, labels).numpy()
        return {"loss": float(totals[0] / totals[2]), "accuracy": float(totals[1] / totals[2])}

    return evaluate


def _write_scalars(writers, epoch, logs):
    """The Keras TensorBoard callback's epoch scalars: train/ and validation/ epoch_*."""
    for key, value in logs.items():
        run = "validation" if key.startswith("val_") else "train"
        with writers[run].as_default(step=epoch):
            tf.summary.scalar(f"epoch_{key.removeprefix('val_')}", value)
    for writer in writers.values():
        writer.flush()
