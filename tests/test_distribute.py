"""Scale-out on tf.distribute: N replicas, two workers, a worker that dies.

Strategies must be set up before TensorFlow starts, so every training here
runs in its own process (tests/distribute_worker.py, tiny generated data) and
the tests compare what those processes saved. The weight comparisons use
placement `none`: with dropout on, each replica draws its own masks for its
share of the batch, not one device's masks for the whole batch, so the runs
differ; other tests check that the replicas' masks differ from each other.
Multi-worker runs talk over 127.0.0.1 only.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags

from dropzoo import checkpoints
from dropzoo import config as config_lib
from dropzoo import flags as flags_lib
from dropzoo import multi_worker
from dropzoo import strategies
from dropzoo.errors import RunError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(ROOT, "tests", "distribute_worker.py")

# Deterministic training to compare across strategies: no dropout, float32.
# tiny_source's 86 training examples make batches of 16 x 5 + 6, all even.
EXACT = {"placement": "none", "precision": "float32", "epochs": 6}
# float32 sums in another order (per replica, then all-reduced), through
# Adam, whose 1/sqrt(v) magnifies differences in near-zero gradients; the
# largest difference seen was 2e-6.
WEIGHT_ATOL = 1e-5
PROCESS_TIMEOUT = 150


def _env(tf_config=None, tmpdir=None):
    # CPU only: logical CPU devices are the point, and two workers sharing
    # one GPU would each try to take all of its memory.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)  # where non-chief workers keep their copies
    return env


def _start(runs, *, tf_config=None, epoch_pause=None, tmpdir=None, masks=None):
    """Starts the helper on [(workdir, out, overrides)]; returns the Popen."""
    args = [sys.executable, HELPER]
    if epoch_pause:
        args.append(f"--epoch_pause={epoch_pause}")
    if masks:
        args.append(f"--masks={masks}")
    for workdir, out, overrides in runs:
        args += [str(workdir), str(out), json.dumps(overrides)]
    return subprocess.Popen(args, cwd=ROOT, env=_env(tf_config, tmpdir), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process, timeout=PROCESS_TIMEOUT):
    """(returncode, stdout, stderr); kills the process if it outlives `timeout`."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"process {process.args[2:]} still ran after {timeout}s:\n{err[-3000:]}")
    return process.returncode, out, err


def _succeeded(process):
    returncode, out, err = _finish(process)
    assert returncode == 0, err[-4000:]
    return out


def _load(path):
    with open(path) as f:
        return json.load(f)


def _checkpoint_arrays(workdir):
    """{key: array} of the model and optimizer variables in the last checkpoint."""
    directory = os.path.join(workdir, "checkpoints")
    with np.load(checkpoints.path_for(directory, checkpoints.saved_epoch(directory))) as f:
        return {key: f[key] for key in f.files if key.startswith(("model/", "optimizer/"))}


def _assert_same_weights(workdir_a, workdir_b):
    a, b = _checkpoint_arrays(workdir_a), _checkpoint_arrays(workdir_b)
    assert sorted(a) == sorted(b) and len(a) > 4
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=WEIGHT_ATOL, err_msg=name)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _tf_configs(ports):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(len(ports))]


def _kill_all(processes):
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


# ------------------------------------------------------------- in-process


def test_auto_picks_multi_worker_then_mirrored_then_default():
    def pick(**facts):
        return strategies.resolve("auto", **{"num_gpus": 0, "num_tasks": 1, **facts})

    assert pick(num_tasks=2) == "multi_worker"
    assert pick(num_tasks=2, num_gpus=4) == "multi_worker"
    assert pick(num_gpus=2) == "mirrored"
    assert pick(cpu_devices=2) == "mirrored"
    assert pick(num_gpus=1) == "default"
    assert pick(cpu_devices=1) == "default"
    assert strategies.resolve("one_device", num_gpus=2, num_tasks=2) == "one_device"
    cluster = strategies.tf_config_cluster(json.dumps(_tf_configs([1, 2])[0]))
    assert strategies.num_training_tasks(cluster) == 2
    assert strategies.num_training_tasks(strategies.tf_config_cluster("")) == 0


@pytest.mark.parametrize("overrides,message", [
    ({"strategy": "horovod"}, "unknown strategy 'horovod'; valid strategies: auto, one_device, "
                              "mirrored, multi_worker"),
    ({"cpu_devices": 0}, "--cpu_devices must be a positive integer"),
    ({"cpu_devices": 2, "strategy": "one_device"},  # split the CPU and recorded it for one replica, unsaid
     "--cpu_devices=2 splits the CPU for --strategy=mirrored (or auto); --strategy=one_device trains on one device: "
     "drop --cpu_devices, or pass --strategy=mirrored"),
])
def test_bad_strategy_values_are_one_line_errors(overrides, message):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.validate(config_lib.TrainConfig(**overrides))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_bad_tf_config_and_uneven_batches_are_one_line_errors():
    with pytest.raises(strategies.DistributeError, match=r"^TF_CONFIG is not valid JSON"):
        strategies.tf_config_cluster("{'cluster': ")
    with pytest.raises(strategies.DistributeError,
                       match=r"^--batch_size=17 is the global batch and must be a multiple of the 2 "
                             r"replicas; use e\.g\. --batch_size=16$"):
        strategies.check_global_batch(17, 2)
    strategies.check_global_batch(16, 2)
    # A split smaller than one global batch is its first batch: 51 validation examples over 2 replicas (26 and 25)
    # failed in TensorFlow's AddN with a traceback, after --dry_run had passed.
    with pytest.raises(strategies.DistributeError,
                       match=r"^the validation split \(51 examples\) is smaller than one global batch "
                             r"\(--batch_size=64\) and not a multiple of the 2 replicas .*; use --batch_size=50 or "
                             r"less, a multiple of 2, or give that split more examples$"):
        strategies.check_first_batches({"training": 461, "validation": 51, "test": 1000}, 64, 2)
    # Every such split at once, and a batch that suits them all (200 was suggested, then refused for the 199).
    with pytest.raises(strategies.DistributeError,
                       match=r"^the training split \(201 examples\) and the test split \(199 examples\) are smaller "
                             r".*; use --batch_size=198 or less, a multiple of 2, or give those splits more examples$"):
        strategies.check_first_batches({"training": 201, "validation": 0, "test": 199}, 256, 2)
    with pytest.raises(strategies.DistributeError, match=r"use fewer replicas \(--cpu_devices, or GPUs"):
        strategies.check_first_batches({"test": 3}, 64, 4)
    strategies.check_first_batches({"training": 461, "validation": 52, "test": 1000}, 64, 2)  # even: it splits
    strategies.check_first_batches({"training": 461, "validation": 51, "test": 1000}, 64, 1)
    strategies.check_first_batches({"training": 521, "validation": 0, "test": 1000}, 64, 2)  # a later batch of 9
    # --train_steps' Keras epochs of 1000 steps over 7 data steps (99 examples, batch 16): epoch 2 starts on the last
    # batch of 3, where a resumed run failed with the same traceback, every time.
    sizes = {"training": 99, "validation": 0, "test": 40}
    with pytest.raises(strategies.DistributeError,
                       match=r"^with --train_steps, Keras epoch 2 starts on the training data's last batch of 3 "
                             r"examples, which the 2 replicas cannot share evenly .*a run resumed there could never "
                             r"finish\); give the training split a multiple of 2 examples"):
        strategies.check_first_batches(sizes, 16, 2, schedule=(1000, 3))
    strategies.check_first_batches(sizes, 16, 2, schedule=(7, 3))  # epochs of the data's own length
    strategies.check_first_batches({**sizes, "training": 98}, 16, 2, schedule=(1000, 3))  # a last batch of 2


@pytest.mark.parametrize("tf_config,message", [
    # TensorFlow gave a traceback for these three, and lines naming neither TF_CONFIG nor a fix for the rest.
    ({"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}},
     r"cluster job 'worker' must be a list of 'host:port' addresses, got '127.0.0.1:1'"),
    ({"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}},
     r"cluster job 'worker' lists '127.0.0.1', not a 'host:port' address"),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": -1}},
     r"task index -1 is not in 0..1 \(job 'worker' has 2 task\(s\)\)"),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}},
     r"task index 2 is not in 0..1"),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": "zero"}},
     r"task index 'zero' is not in 0..1"),
    ({"cluster": {"worker": ["a:1", "b:2"]}}, r"names a cluster but not this process's task \(got None\); add"),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "chief", "index": 0}},
     r"task type 'chief' is not a job of its cluster \(worker\)"),
    ({"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}},
     r"cluster lists a:1 more than once; give each task an address of its own"),
    # Every task waited for the parameter server, forever, and SIGTERM could not stop it.
    ({"cluster": {"worker": ["a:1", "b:2"], "ps": ["c:3"]}, "task": {"type": "worker", "index": 0}},
     r"cluster has a job 'ps', which multi-worker training does not use \(its jobs: chief, worker, evaluator\)"),
])
def test_malformed_tf_config_is_one_line_naming_it(tf_config, message):
    with pytest.raises(strategies.DistributeError, match=r"^TF_CONFIG.*" + message + r".*see docs/scaling.md") as e:
        strategies.tf_config_cluster(json.dumps(tf_config))
    assert "\n" not in str(e.value)


def test_multi_worker_without_tf_config_names_it(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(strategies.DistributeError, match=r"^--strategy=multi_worker needs TF_CONFIG naming the "
                                                         r"cluster and this task; see docs/scaling.md"):
        strategies._create("multi_worker", 0, None)


def test_cpu_devices_after_tensorflow_started_is_a_clear_error():
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow has started: its devices are fixed
    strategies.split_cpu(len(tf.config.list_logical_devices("CPU")))  # asks for what is there: fine
    with pytest.raises(strategies.DistributeError,
                       match=r"^--cpu_devices=3 must be set before TensorFlow initializes its "
                             r"devices.*fresh process"):
        strategies.split_cpu(3)


def test_flags_reach_the_config_and_do_not_block_a_resume():
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", "--strategy=mirrored", "--cpu_devices=2"])
    [(config, _)] = flags_lib.train_plan(fv)
    assert (config.strategy, config.cpu_devices) == ("mirrored", 2)
    # The batch is global, so a run may resume on other hardware; and
    # config.json files written before these fields existed still match.
    saved = config_lib.TrainConfig().to_dict()
    del saved["strategy"], saved["cpu_devices"]
    assert config_lib.differences(saved, config) == []


def test_lost_peer_message_is_one_line_naming_the_task():
    error = RuntimeError(
        "Graph execution error:\n\nCollective ops is aborted by: Error reported from "
        "/job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
        "/job:worker/replica:0/task:1\nThe error could be from a previous operation. Restart")
    message = multi_worker.lost_peer_message(error, "/runs/x")
    assert "\n" not in message and "/job:worker/replica:0/task:1" in message
    assert message.startswith("multi-worker training stopped: another task failed")
    assert "/runs/x/checkpoints keeps the last finished epoch, if one finished: restart every worker" in message


# ---------------------------------------------------------- one machine


@pytest.fixture(scope="module")
def replica_runs(tmp_path_factory):
    """One device vs 2 mirrored replicas on 2 logical CPUs, plus a dropout run."""
    root = tmp_path_factory.mktemp("replicas")
    mirrored = {"strategy": "mirrored", "cpu_devices": 2}
    processes = [
        _start([(root / "one", root / "one.json", EXACT)]),
        # The dropout run reuses the process's strategy (a second run in one process).
        _start([(root / "two", root / "two.json", {**EXACT, **mirrored}),
                (root / "dropout", root / "dropout.json",
                 {**mirrored, "placement": "canonical", "epochs": 2}),
                (root / "bn", root / "bn.json", {**mirrored, "placement": "canonical", "norm": "batch", "epochs": 2})],
               masks=root / "masks.json"),
    ]
    try:
        for process in processes:
            _succeeded(process)
    finally:
        _kill_all(processes)
    return root


@pytest.mark.slow
def test_two_replicas_train_to_the_weights_of_one(replica_runs):
    one, two = _load(replica_runs / "one.json"), _load(replica_runs / "two.json")
    assert one["strategy"] == {"name": "default", "num_replicas": 1, "num_workers": 1}
    assert two["strategy"] == {"name": "mirrored", "num_replicas": 2, "num_workers": 1}
    _assert_same_weights(replica_runs / "one", replica_runs / "two")
    np.testing.assert_allclose(two["history"]["loss"], one["history"]["loss"], rtol=1e-5)
    assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1e-6)
    assert two["export_check"]["passed"]


@pytest.mark.slow
def test_two_replicas_with_dropout_train_and_export(replica_runs):
    metrics = _load(replica_runs / "dropout.json")
    assert metrics["strategy"]["num_replicas"] == 2 and metrics["epochs_completed"] == 2
    assert metrics["placement_sites"] and np.isfinite(metrics["test_loss"])
    assert metrics["export_check"]["passed"] and metrics["export_check"]["random_ops"] == []


@pytest.mark.slow
def test_two_replicas_with_batch_norm_report_the_scores_of_the_model_they_export(replica_runs):
    # Each replica's BN statistics drift apart over an epoch; the export holds the first replica's, while the test
    # and validation scores were taken with each replica's own: the run reported a score its export does not give.
    metrics = _load(replica_runs / "bn.json")
    [record] = [_load(path)["result"] for path in (replica_runs / "bn" / "evaluations").iterdir()]
    assert metrics["strategy"]["num_replicas"] == 2 and metrics["export_check"]["passed"]
    assert metrics["test_loss"] == pytest.approx(record["loss"], rel=1e-5, abs=1e-6)
    assert metrics["test_accuracy"] == pytest.approx(record["accuracy"], abs=1e-6)


def _kept(outputs):
    """Which units a dropout output kept (as a boolean array)."""
    return np.asarray(outputs) != 0


@pytest.mark.slow
def test_each_replica_draws_its_own_dropout_masks(replica_runs):
    masks = _load(replica_runs / "masks.json")
    assert masks["replica_ids"] == [[0, 1], [0, 1]]
    for step in masks["outputs"]:
        first, second = (_kept(replica) for replica in step)
        assert first.shape == second.shape == (8, 128)
        # Not the same masks on both replicas; and each keeps about half.
        assert (first != second).mean() > 0.3
        assert 0.4 < first.mean() < 0.6 and 0.4 < second.mean() < 0.6
    # And new masks at every step.
    assert (_kept(masks["outputs"][0][0]) != _kept(masks["outputs"][1][0])).mean() > 0.3


def test_one_replica_draws_the_masks_it_would_without_a_strategy():
    import keras
    import tensorflow as tf

    from models import layers as layers_lib

    inputs = tf.ones([16, 32])
    try:
        for kind in ("inverted", "classic", "gaussian"):
            plain, folded = (layers_lib.make_dropout(kind, 0.5, seed=7) for _ in range(2))
            keras.Sequential([keras.Input((32,)), folded])
            layers_lib.set_seed_transform(None)
            expected = [plain(inputs, training=True) for _ in range(2)]
            strategies.distinct_replica_masks()
            strategies.distinct_replica_masks()  # twice: still one fold (a replica id of 0 here)
            for want in expected:  # the state still advances: new masks each call
                np.testing.assert_array_equal(folded(inputs, training=True), want)
    finally:
        layers_lib.set_seed_transform(None)


# ---------------------------------------------------------- two workers


def _wait_for_epoch(workdir, epoch, processes, timeout=120):
    """Waits until the chief has checkpointed `epoch` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if checkpoints.saved_epoch(os.path.join(workdir, "checkpoints")) >= epoch:
            return
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a worker ended early:\n{process.communicate()[1][-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"no checkpoint of epoch {epoch} after {timeout}s")


@pytest.fixture(scope="module")
def lost_worker(tmp_path_factory):
    """Two workers; worker 1 is killed after epoch 2; then both are rerun.

    The rerun processes go on with a dropout run and a rerun of the finished
    run (same strategy: a process sets up collectives once).
    """
    root = tmp_path_factory.mktemp("workers")
    workdir = root / "run"  # the same path on both: like a shared file system
    config = {**EXACT, "strategy": "auto"}  # auto: TF_CONFIG names 2 tasks
    tf_configs = _tf_configs(_free_ports(2))
    result = {"workdir": workdir}
    processes = [_start([(workdir, root / f"killed{i}.json", config)], tf_config=tf_configs[i],
                        epoch_pause=1.0, tmpdir=root) for i in range(2)]
    try:
        _wait_for_epoch(workdir, 2, processes)
        processes[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        result["returncode"], _, result["stderr"] = _finish(processes[0], timeout=120)
        result["seconds_to_stop"] = time.monotonic() - killed_at
        processes[1].communicate()

        tf_configs = _tf_configs(_free_ports(2))
        dropout = {**config, "placement": "canonical", "epochs": 2}
        processes = [_start([(workdir, root / f"worker{i}.json", config),
                             (root / "dropout", root / f"dropout{i}.json", dropout),
                             (workdir, root / f"again{i}.json", config)],
                            tf_config=tf_configs[i], tmpdir=root, masks=root / f"masks{i}.json")
                     for i in range(2)]
        for process in processes:
            _succeeded(process)
    finally:
        _kill_all(processes)
    for name in ("worker", "dropout", "again", "masks"):
        result[name] = [_load(root / f"{name}{i}.json") for i in range(2)]
    # Worker 1's temporary directories: one left by the kill, none by the rerun.
    result["leftovers"] = [name for name in os.listdir(root) if name.startswith("dropzoo-worker1-")]
    return result


@pytest.mark.slow
def test_a_lost_worker_stops_the_other_with_one_clear_line(lost_worker):
    assert lost_worker["returncode"] == 2, lost_worker["stderr"][-3000:]
    last = lost_worker["stderr"].strip().splitlines()[-1]
    assert last.startswith("error: multi-worker training stopped: another task failed or became "
                           "unreachable"), last
    assert "/job:worker/replica:0/task:1" in last and "restart every worker" in last
    # The coordination service misses heartbeats for ~10 s; no hang.
    assert lost_worker["seconds_to_stop"] < 60


@pytest.mark.slow
def test_rerun_resumes_and_both_workers_end_with_the_same_weights(lost_worker):
    chief, other = lost_worker["worker"]
    assert chief["strategy"]["is_chief"] and not other["strategy"]["is_chief"]
    for metrics in (chief, other):
        assert metrics["strategy"]["name"] == "multi_worker"
        assert metrics["strategy"]["num_replicas"] == 2
        assert metrics["resumed_from_epoch"] >= 2 and metrics["epochs_completed"] == 6
        assert len(metrics["epoch_train_seconds"]) == 6 - metrics["resumed_from_epoch"]
    assert chief["weights_sha256"] == other["weights_sha256"]
    # Only the chief wrote the workdir; its export passed the export check.
    workdir = lost_worker["workdir"]
    assert _load(workdir / "metrics.json")["export_check"]["passed"]
    assert chief["paths"]["saved_model"] == str(workdir / "saved_model")
    assert {"train", "validation"} <= set(os.listdir(workdir / "tensorboard"))
    assert len(lost_worker["leftovers"]) == 1  # the killed process's; the rerun deleted its own


@pytest.mark.slow
def test_two_workers_train_to_the_weights_of_one_device(lost_worker, replica_runs):
    # Interrupted, resumed, on two processes with their own loop: still the
    # single-device model, within float tolerance.
    _assert_same_weights(replica_runs / "one", lost_worker["workdir"])
    one = _load(replica_runs / "one.json")
    chief = lost_worker["worker"][0]
    # The whole history, the epochs before the resume from the checkpoint's record (validated before it).
    assert chief["resumed_from_epoch"] > 0 and chief["history_from_epoch"] == 0
    np.testing.assert_allclose(chief["history"]["loss"], one["history"]["loss"], rtol=1e-5)
    assert chief["history"]["val_loss"] == pytest.approx(one["history"]["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_both_loops_write_the_same_metrics(lost_worker, replica_runs):
    # One function builds metrics.json for the fit loop and the multi-worker
    # loop, so an entry added there (e.g. wall_time_sec) is in both.
    fit = _load(replica_runs / "one.json")
    chief = _load(lost_worker["workdir"] / "metrics.json")
    assert set(chief) == set(fit) and "wall_time_sec" in fit
    assert set(chief["history"]) == set(fit["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert chief["train_time_sec"] < chief["wall_time_sec"] and fit["train_time_sec"] < fit["wall_time_sec"]


@pytest.mark.slow
def test_two_workers_with_dropout_agree_and_a_finished_run_is_reported(lost_worker):
    chief, other = lost_worker["dropout"]
    assert chief["weights_sha256"] == other["weights_sha256"]
    assert chief["epochs_completed"] == 2 and chief["export_check"]["passed"]
    # Rerunning a finished run: every worker gets the chief's metrics.json.
    finished = _load(lost_worker["workdir"] / "metrics.json")
    assert lost_worker["again"] == [finished, finished]


@pytest.mark.slow
def test_each_worker_draws_its_own_dropout_masks(lost_worker):
    first, second = lost_worker["masks"]
    assert first["replica_ids"] == [[0], [0]] and second["replica_ids"] == [[1], [1]]
    for step in range(2):
        [mask0], [mask1] = (_kept(m["outputs"][step]) for m in (first, second))
        assert mask0.shape == (8, 128) and (mask0 != mask1).mean() > 0.3


@pytest.mark.slow
def test_a_sweep_splits_the_cpu_before_its_data_starts_tensorflow(tmp_path):
    # A sweep (or an array task) loads its data once, before the first run builds its strategy.
    done = subprocess.run(
        [sys.executable, "train.py", "--model=dense_mlp", "--dataset=mnist_sample", "--train_steps=2",
         "--strategy=mirrored", "--cpu_devices=2", "--placement=canonical,none", "--noserving_artifacts",
         "--precision=float32", f"--workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for placement in ("canonical", "none"):
        metrics = _load(tmp_path / "dense_mlp" / placement / "seed0" / "metrics.json")
        assert metrics["strategy"] == {"name": "mirrored", "num_replicas": 2, "num_workers": 1}


def test_a_sweep_or_task_share_under_a_multi_worker_cluster_is_refused_up_front():
    # Every run of it failed with a traceback: the cluster is configured once, before a sweep's data starts TF.
    cluster = json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}})
    one = [(config_lib.TrainConfig(), "runs/a")]
    two = one + [(config_lib.TrainConfig(seed=1), "runs/b")]
    strategies.check_one_run_per_cluster(one, None, cluster)
    strategies.check_one_run_per_cluster(two, None, "")  # no cluster: a sweep on one machine
    strategies.check_one_run_per_cluster([(config_lib.TrainConfig(strategy="one_device"), "r")] * 2, None, cluster)
    with pytest.raises(strategies.DistributeError, match=r"^TF_CONFIG names a cluster of 2 tasks, which trains one "
                                                         r"run per command, and this command asks for 2 runs; give"):
        strategies.check_one_run_per_cluster(two, None, cluster)
    # One run as a one-task split (an Indexed Job's command: --task_index=0 --num_tasks=1) is the whole plan.
    strategies.check_one_run_per_cluster(one, (0, 1, "--task_index and --num_tasks"), cluster)
    with pytest.raises(strategies.DistributeError, match=r"asks for a share of a plan of 1 run\(s\) \(task flags\)"):
        strategies.check_one_run_per_cluster(one, (0, 2, "--task_index and --num_tasks"), cluster)


@pytest.mark.slow
def test_a_one_run_share_under_a_cluster_trains_as_that_one_run(tmp_path):
    """An Indexed Job's command (--task_index=0 --num_tasks=1) under a two-worker TF_CONFIG went through the
    sweep, whose data started TensorFlow before the cluster was configured: a traceback on every worker."""
    command = [sys.executable, "train.py", "--model=dense_mlp", "--dataset=mnist_sample", "--train_steps=2",
               f"--workdir={tmp_path / 'run'}", "--task_index=0", "--num_tasks=1", "--noserving_artifacts"]
    workers = [subprocess.Popen(command, cwd=ROOT, env=_env(tf_config), text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for tf_config in _tf_configs(_free_ports(2))]
    try:
        done = [_finish(worker) for worker in workers]
    finally:
        _kill_all(workers)
    assert [rc for rc, _, _ in done] == [0, 0], done[0][2][-2000:]
    assert "Traceback" not in done[0][2] + done[1][2] and "export check: passed" in done[0][1]
    assert _load(tmp_path / "run" / "metrics.json")["strategy"]["num_workers"] == 2


def test_a_worker_started_with_other_flags_than_the_chief_stops_naming_them():
    # A worker with another --seed trained along without a word; another --batch_size hung in the collectives.
    from dropzoo import multi_worker

    chief = config_lib.TrainConfig(idx_dir="/data/mnist").to_dict()
    multi_worker.check_chief_flags(chief, config_lib.TrainConfig(idx_dir="/scratch/mnist"))  # staged elsewhere
    with pytest.raises(RunError, match=r"^this worker's flags differ from the chief's: --batch_size \(128 on the "
                                       r"chief, 64 here\), --seed \(0 on the chief, 7 here\); start every worker "
                                       r"with the same command \(only TF_CONFIG differs\)$"):
        multi_worker.check_chief_flags(chief, config_lib.TrainConfig(seed=7, batch_size=64))
    # Other checkouts: the same model file at another path passes; another model, or another auto precision, not.
    mine = config_lib.TrainConfig(keras_model="/home/bob/zoo/my_cnn.keras", model="my_cnn")
    theirs = {**mine.to_dict(), "keras_model": "/home/alice/zoo/my_cnn.keras"}
    multi_worker.check_chief_flags(theirs, mine, {"keras_model_sha256": "a"}, {"keras_model_sha256": "a"})
    with pytest.raises(RunError, match=r"differ from the chief's: the resolved keras_model_sha256 \('a' on the "
                                       r"chief, 'b' here\), the resolved precision \('float32' on the chief, "
                                       r"'mixed_bfloat16' here\); start every worker"):
        multi_worker.check_chief_flags(theirs, mine, {"keras_model_sha256": "a", "precision": "float32"},
                                       {"keras_model_sha256": "b", "precision": "mixed_bfloat16"})


def test_a_worker_waiting_for_its_cluster_says_so_and_stops_on_a_signal(tmp_path):
    # TensorFlow waits for the other workers holding the GIL: no Python handler ran, and SIGINT/SIGTERM were lost.
    script = tmp_path / "wait.py"
    script.write_text("import signal, time\nfrom dropzoo import interrupts\ninterrupts.quiet_during_start_up()\n"
                      "before = signal.getsignal(signal.SIGTERM)\n"
                      "with interrupts.while_blocked('testing', None):\n"
                      "    pass\n"
                      "assert signal.getsignal(signal.SIGTERM) is before  # restored\n"
                      "with interrupts.while_blocked('testing', 'still waiting', after_s=0.5):\n"
                      "    time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": ROOT})
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM
    assert stderr.splitlines() == ["still waiting", "stopped (a signal) while testing; nothing was written"], stderr


def test_a_string_index_tensorflow_reads_is_taken():
    cluster = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": "1"}}
    assert strategies.num_training_tasks(strategies.tf_config_cluster(json.dumps(cluster))) == 2


PROBE_UNDER_MIRRORED = """
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, models
from dropzoo import site_stats
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = models.build("dense_mlp", "dense1.post:0.5", norm="batch", seed=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (64, 28, 28, 1)).astype("float32")
x[32:] *= 3  # the second replica's half: other batch statistics, so the copies drift apart
model.fit(x, np.arange(64) % 10, batch_size=64, epochs=1, verbose=0, shuffle=False)
def copies():
    return [c.numpy().copy() for v in model.non_trainable_variables if "moving" in v.path for c in v.value.values]
before = copies()
assert any(not np.array_equal(a, b) for a, b in zip(before[::2], before[1::2])), "the copies did not drift"
site_stats.site_statistics(model, x[:16])
assert all(np.array_equal(a, b) for a, b in zip(before, copies())), "a replica's BN statistics changed"
print("kept")
"""


@pytest.mark.slow
def test_the_dropout_probe_leaves_each_replicas_batch_norm_statistics_as_they_were():
    # Mirrored BN statistics are one copy per replica (aggregation none), and they drift apart; the probe restored
    # the first replica's into every copy, so a run's test score moved with the probe, in dropout variants only.
    result = subprocess.run([sys.executable, "-c", PROBE_UNDER_MIRRORED], cwd=ROOT, env=_env(), capture_output=True,
                            text=True, timeout=PROCESS_TIMEOUT)
    assert result.returncode == 0 and result.stdout.strip().endswith("kept"), result.stderr[-3000:]
