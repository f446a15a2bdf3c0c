"""Which tf.distribute strategy a run uses: choosing, creating, describing it.

`strategy_for(config)` turns `--strategy` (and `--cpu_devices`) into a
strategy; it must be the first TensorFlow call of a process, because logical
devices and the multi-worker runtime can only be set up before TF starts.

* `default`/`one_device`/`mirrored`: one machine. The trainer builds and
  compiles the model under `strategy.scope()` and trains with `model.fit`.
  `--cpu_devices=N` splits the CPU into N logical devices, so mirrored
  training runs N replicas without a GPU (for tests and for trying it out).
* `multi_worker`: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG,
  trained by the loop in `dropzoo/multi_worker.py` (Keras' fit fails there).

Under any strategy with more than one replica, `distinct_replica_masks`
folds each replica's id into its dropout seeds: Keras keeps a dropout
layer's seed state in one mirrored variable, so the replicas would
otherwise draw identical masks.

As in Model Garden's `distribute_utils.py`, this module only picks and
describes strategies; running a training loop is the loops' business.
"""
import json
import math
import os

import tensorflow as tf

import models
from dropzoo import interrupts
from dropzoo.errors import DropzooError

# A process can set up collectives only once, so a second run in the same
# process (tests, sweeps) must get the strategy the first one created.
_CREATED = {}


class DistributeError(DropzooError, ValueError):
    """A strategy that cannot be set up as asked."""


# ------------------------------------------------------------ choosing


def tf_config_cluster(tf_config):
    """The cluster dict of a TF_CONFIG string ({} when unset); DistributeError if malformed."""
    if not tf_config:
        return {}
    try:
        parsed = json.loads(tf_config)
    except json.JSONDecodeError as e:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({e}); see docs/scaling.md for its form") from None
    cluster = parsed.get("cluster", {}) if isinstance(parsed, dict) else None
    if not isinstance(cluster, dict):
        raise DistributeError("TF_CONFIG must be a JSON object with a 'cluster' object, "
                              f"got {tf_config!r}")
    _check_cluster(cluster, parsed.get("task"))
    return cluster


_FORM = ('; see docs/scaling.md for its form: {"cluster": {"worker": ["host1:port", "host2:port"]}, '
         '"task": {"type": "worker", "index": 0}}')


def _check_cluster(cluster, task):
    """DistributeError (one line naming TF_CONFIG) where TensorFlow would fail on it with a traceback, an
    unrelated message, or by listening twice on one address."""
    addresses = []
    for job, tasks in cluster.items():
        if job not in ("chief", "worker", "evaluator"):  # a "ps" job: every task waits for it, forever
            raise DistributeError(f"TF_CONFIG's cluster has a job {job!r}, which multi-worker training does not "
                                  f"use (its jobs: chief, worker, evaluator); leave it out{_FORM}")
        if not isinstance(tasks, list) or not tasks:
            raise DistributeError(f"TF_CONFIG's cluster job {job!r} must be a list of 'host:port' addresses, got "
                                  f"{tasks!r}{_FORM}")
        for address in tasks:
            host, _, port = str(address).rpartition(":")
            if not isinstance(address, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise DistributeError(f"TF_CONFIG's cluster job {job!r} lists {address!r}, not a 'host:port' "
                                      f"address with a port in 1..65535{_FORM}")
            addresses.append(address)
    twice = sorted({a for a in addresses if addresses.count(a) > 1})
    if twice:
        raise DistributeError(f"TF_CONFIG's cluster lists {', '.join(twice)} more than once; give each task an "
                              f"address of its own{_FORM}")
    if not cluster:
        return
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise DistributeError(f"TF_CONFIG names a cluster but not this process's task (got {task!r}); add "
                              f'"task": {{"type": "worker", "index": I}}, I this process\'s place in its job{_FORM}')
    job, index = task["type"], task["index"]
    if isinstance(index, str) and index.isdigit():  # TensorFlow reads "0" as 0
        index = int(index)
    if job not in cluster:
        raise DistributeError(f"TF_CONFIG's task type {job!r} is not a job of its cluster "
                              f"({', '.join(cluster)}){_FORM}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[job]):
        raise DistributeError(f"TF_CONFIG's task index {index!r} is not in 0..{len(cluster[job]) - 1} (job {job!r} "
                              f"has {len(cluster[job])} task(s)){_FORM}")


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


def check_cpu_devices(name, cpu_devices):
    """ValueError where --cpu_devices > 1 is given to a strategy that trains on one device (it split the CPU, and
    the run recorded it, for nothing)."""
    if (cpu_devices or 1) > 1 and name not in ("auto", "mirrored"):
        raise ValueError(f"--cpu_devices={cpu_devices} splits the CPU for --strategy=mirrored (or auto); "
                         f"--strategy={name} trains on one device: drop --cpu_devices, or pass --strategy=mirrored")


def resolved_here(name, cpu_devices=None, tf_config=None):
    """What `--strategy=name` resolves to in this process, with its replica count: "default",
    "mirrored x2", "multi_worker x2 tasks"; recorded with a run, so a resume elsewhere is refused."""
    resolved, num_gpus, tasks = _here(name, cpu_devices, tf_config)
    if resolved == "mirrored":
        return f"mirrored x{num_gpus or cpu_devices or 1}"
    if resolved == "multi_worker":
        return f"multi_worker x{tasks} tasks" + (f" x{num_gpus} GPUs" if num_gpus > 1 else "")
    return resolved


def replicas_here(name, cpu_devices=None, tf_config=None):
    """How many replicas `--strategy=name` trains on in this process: what the global batch is split over."""
    resolved, num_gpus, tasks = _here(name, cpu_devices, tf_config)
    return {"mirrored": num_gpus or cpu_devices or 1, "multi_worker": tasks * max(1, num_gpus)}.get(resolved, 1)


def _here(name, cpu_devices, tf_config):
    """(what `name` resolves to, GPUs, training tasks) in this process."""
    tf_config = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    num_gpus = len(tf.config.list_physical_devices("GPU"))
    tasks = num_training_tasks(tf_config_cluster(tf_config))
    return resolve(name, num_gpus=num_gpus, num_tasks=tasks, cpu_devices=cpu_devices), num_gpus, tasks


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


def check_cluster(name):
    """DistributeError where --strategy=multi_worker is asked for without TF_CONFIG naming a cluster (what
    `train.py --dry_run` checks too)."""
    if name == "multi_worker" and not tf_config_cluster(os.environ.get("TF_CONFIG", "")):
        raise DistributeError("--strategy=multi_worker needs TF_CONFIG naming the cluster and this task" + _FORM)


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
    check_cluster(name)
    cluster = tf_config_cluster(os.environ.get("TF_CONFIG", ""))
    # Peers that die are detected by the coordination service's heartbeats,
    # which TF 2.21 turns on for this strategy (see the module docstring).
    others = ", ".join(address for job in cluster.values() for address in job)
    waiting = (f"waiting for every task of TF_CONFIG's cluster ({others}) to start; each runs the same command "
               "with its own task (Ctrl-C stops this one)")
    try:
        with interrupts.while_blocked("waiting for the other workers of TF_CONFIG to start", waiting):
            return tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.UnknownError as e:
        if "Could not start gRPC server" not in str(e):
            raise
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        address = cluster[task["type"]][task["index"]]
        raise DistributeError(f"this task ({task['type']} {task['index']} of TF_CONFIG) could not listen on "
                              f"{address}: another process holds the port; end it, or give this task another port "
                              "in TF_CONFIG, on every worker") from None


def check_one_run_per_cluster(runs, task, tf_config=None):
    """DistributeError where a sweep or a task's share would train under a multi-worker TF_CONFIG: TensorFlow
    configures the cluster once, before the data of a sweep's first run starts it, so every run failed with
    a traceback."""
    tf_config = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    tasks = num_training_tasks(tf_config_cluster(tf_config))
    if (len(runs) == 1 and (task is None or task[1] == 1)) or tasks < 2 or not any(
            config.strategy in ("auto", "multi_worker") for config, _ in runs):
        return
    given = f"a share of a plan of {len(runs)} run(s) (task flags)" if task is not None else f"{len(runs)} runs"
    raise DistributeError(f"TF_CONFIG names a cluster of {tasks} tasks, which trains one run per command, and this "
                          f"command asks for {given}; give every worker one run's flags (one --placement, --seed "
                          "and --workdir, no --seeds or task flags), or unset TF_CONFIG to sweep on one machine")


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


def check_first_batches(sizes, batch_size, num_replicas, schedule=None):
    """DistributeError where the first batch of a fit or evaluate call would not split evenly over the replicas:
    Keras sums the replicas' shares of it element-wise (check_global_batch), which fails on unequal shares with a
    traceback (AddN). That batch is a split ({name: examples}) smaller than one global batch, or, with
    `schedule` (steps per Keras epoch, epochs), the data's last, partial training batch where a later epoch starts
    on it (--train_steps' epochs are not the data's): a run resumed there could never finish."""
    if num_replicas < 2:
        return
    uneven = {name: size for name, size in sizes.items() if 0 < size < batch_size and size % num_replicas}
    steps, last = math.ceil(sizes.get("training", 0) / batch_size), sizes.get("training", 0) % batch_size
    starts = [epoch for epoch in range(1, schedule[1]) if epoch * schedule[0] % steps == steps - 1] \
        if schedule and steps else []
    if not uneven and not (starts and last % num_replicas):
        return
    why = "Keras sums the replicas' shares of a first batch, which fails unless they are equal"
    if not uneven:
        raise DistributeError(f"with --train_steps, Keras epoch {starts[0] + 1} starts on the training data's last "
                              f"batch of {last} examples, which the {num_replicas} replicas cannot share evenly "
                              f"({why}: a run resumed there could never finish); give the training split a multiple of "
                              f"{num_replicas} examples (--train_size, --validation_fraction; it has "
                              f"{sizes['training']:,}), or train by --epochs")
    fixes = [size // num_replicas * num_replicas for size in uneven.values() if size >= num_replicas]
    fix = (f"--batch_size={min(fixes)} or less, a multiple of {num_replicas}" if len(fixes) == len(uneven) else
           "fewer replicas (--cpu_devices, or GPUs: CUDA_VISIBLE_DEVICES)")
    splits = " and ".join(f"the {name} split ({size:,} examples)" for name, size in uneven.items())
    raise DistributeError(f"{splits} {'is' if len(uneven) == 1 else 'are'} smaller than one global batch "
                          f"(--batch_size={batch_size}) and not a multiple of the {num_replicas} replicas ({why}); "
                          f"use {fix}, or give {'that split' if len(uneven) == 1 else 'those splits'} more examples")


def check_first_batches_here(config, schedule, training, validation, test):
    """check_first_batches for `config` in this process (Keras' fit: mirrored; the multi-worker loop is not it)."""
    if not resolved_here(config.strategy, config.cpu_devices).startswith("multi_worker"):
        check_first_batches({"training": training, "validation": validation, "test": test}, config.batch_size,
                            replicas_here(config.strategy, config.cpu_devices), schedule)


def fit_steps_per_execution(strategy, steps):
    """The steps per call Keras 3.15's fit can run under `strategy`.

    With more than one replica a multi-step call fails ("You must feed a value
    for placeholder tensor", keras-team/keras#19246), so those take one step.
    """
    return 1 if strategy.num_replicas_in_sync > 1 else steps


def distinct_replica_masks():
    """Makes each replica draw its own dropout masks (models.layers.set_seed_transform).

    A dropout layer draws its mask from the seed its SeedGenerator hands out,
    and under a strategy that generator's state is one mirrored variable, so
    without this every replica would draw the same masks for its share of
    the global batch (examples k and k + batch/N always kept and dropped
    together). Each draw's seed is folded with the replica's id in the sync
    group (a global id under multi_worker), inside the replica's step. With
    one replica in sync the seed is left as it is, so a single-device run
    draws exactly the masks it would draw without this.
    """
    models.layers.set_seed_transform(_replica_seed)


def _replica_seed(seed):
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return seed
    return tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)


def is_distributed(strategy):
    """Whether `strategy` is one a run chose (not TensorFlow's default, no-op strategy)."""
    return describe(strategy)["name"] != "default"


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
