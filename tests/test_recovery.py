"""Nothing lost: kills, Ctrl-C and SIGTERM, full disks, corrupt files, two writers, NaN, repeatability."""
import dataclasses
import errno
import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import crash_after_epoch
from conftest import tiny_config
from conftest import tiny_source

import models
from dropzoo import callbacks as callbacks_lib
from dropzoo import checkpoints
from dropzoo import config as config_lib
from dropzoo import errors
from dropzoo import export
from dropzoo import files
from dropzoo import interrupts
from dropzoo import locks
from dropzoo import outcomes
from dropzoo import sweep
from dropzoo import trainer
from dropzoo import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small enough to be quick, long enough per epoch (~1.5 s on 2 cores) to be killed inside one;
# its checkpoint (~14 MB) is larger than its export's files (see the file-size-limit test).
TRAIN_ARGS = ["--model=keras_mnist_cnn", "--dataset=mnist_sample", "--epochs=4", "--batch_size=64",
              "--validation_fraction=0.5", "--optimizer=adam", "--learning_rate=0.001", "--seed=3"]


def _train(workdir):
    return subprocess.Popen([sys.executable, "train.py", *TRAIN_ARGS, f"--workdir={workdir}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.json")) as f:
        return json.load(f)


def _wait_for_epoch(workdir, epoch, process, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if checkpoints.saved_epoch(os.path.join(workdir, "checkpoints")) >= epoch:
            return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint for epoch {epoch} within {timeout}s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("straight"))
    process = _train(workdir)
    assert process.wait(timeout=300) == 0, process.stderr.read()
    return _metrics(workdir)


KILL_DURING_EXPORT = textwrap.dedent("""
    import os, signal, sys
    import keras
    from dropzoo import export
    model = keras.Sequential([keras.Input((4, 4, 1), name="image"), keras.layers.Flatten(),
                              keras.layers.Dense(3), keras.layers.Softmax()])
    real_write = export._write_archive
    def write_then_die(archive, directory):
        real_write(archive, directory)            # the temp export is fully on disk...
        os.remove(os.path.join(directory, "saved_model.pb"))  # ...but half-renamed, say
        os.kill(os.getpid(), signal.SIGKILL)      # and the process dies right there
    export._write_archive = write_then_die
    export.export_saved_model(model, sys.argv[1])
""")


@pytest.mark.slow
def test_sigkill_during_export_leaves_the_previous_export(tmp_path):
    path = str(tmp_path / "saved_model")
    good = keras.Sequential([keras.Input((4, 4, 1), name="image"), keras.layers.Flatten(),
                             keras.layers.Dense(3), keras.layers.Softmax()])
    export.export_saved_model(good, path)
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1)).astype(np.uint8)
    before = export.load_serving_fn(path)(image=tf.constant(images))["probabilities"].numpy()

    result = subprocess.run([sys.executable, "-c", KILL_DURING_EXPORT, path], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    # The previous export is still there and complete; the dead exporter's temp dir is not it.
    after = export.load_serving_fn(path)(image=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_array_equal(before, after)
    leftovers = [e for e in os.listdir(tmp_path) if e != "saved_model"]
    assert all(e.startswith(".saved_model.tmp-") for e in leftovers)
    # The next export cleans up what the killed one left behind.
    export.export_saved_model(good, path)
    assert os.listdir(tmp_path) == ["saved_model"]


@pytest.mark.slow
def test_eval_refuses_an_incomplete_saved_model(tmp_path):
    broken = tmp_path / "saved_model"
    (broken / "variables").mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"")
    result = subprocess.run([sys.executable, "eval.py", f"--saved_model={broken}", "--dataset=mnist_sample"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "not a complete SavedModel" in last and "Traceback" not in result.stderr


def test_nan_loss_stops_with_a_clear_error_and_keeps_no_bad_checkpoint(tmp_path):
    config = tiny_config(optimizer="sgd", learning_rate=1e12, epochs=2)
    # NaN in the first epoch: no checkpoint, and the run is recorded as diverged (tests/test_divergence.py).
    with pytest.raises(trainer.RunError, match=r"^training diverged \(its loss or weights became NaN/inf in epoch "
                                               r"1\); recorded in .*diverged.json, which a comparison counts as its "
                                               r"variant's diverged seed; to train other settings \(a lower "
                                               r"--learning_rate\), give another --workdir \(or --overwrite this "
                                               r"run\)$"):
        trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0)
    assert checkpoints.saved_epoch(str(tmp_path / "checkpoints")) == 0 and (tmp_path / "diverged.json").exists()
    assert not (tmp_path / "saved_model").exists() and not (tmp_path / "metrics.json").exists()


def test_weights_gone_nan_in_a_later_epoch_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    """NaN weights beside a finite loss were checkpointed over the good epochs; the advice to rerun at a lower rate
    was refused as other settings."""
    first = []

    def diverged_after_epoch_1(model, logs=None):  # (as ReLU hides NaN kernels from the loss)
        steps = int(model.optimizer.iterations.numpy())
        first.append(steps)
        return steps > first[0]

    monkeypatch.setattr(callbacks_lib, "diverged", diverged_after_epoch_1)
    with pytest.raises(trainer.RunError, match=r"^training diverged \(its loss or weights became NaN/inf in epoch "
                                               r"2\); recorded in "):
        trainer.train_and_evaluate(tiny_config(epochs=3), str(tmp_path), source=tiny_source(), verbose=0)
    assert checkpoints.saved_epoch(str(tmp_path / "checkpoints")) == 1
    # A lower rate in the same workdir: --overwrite (the checkpoint resumes its own rate only).
    monkeypatch.undo()
    metrics = trainer.train_and_evaluate(tiny_config(epochs=3, learning_rate=0.001), str(tmp_path), overwrite=True,
                                         source=tiny_source(), verbose=0, serving_artifacts=False)
    assert metrics["epochs_completed"] == 3 and not (tmp_path / "diverged.json").exists()


def test_checkpoint_skips_an_epoch_that_ended_in_nan(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    saver = callbacks_lib.EpochCheckpoint(str(tmp_path))
    saver.set_model(model)
    saver.on_epoch_end(0, {"loss": 0.5})
    saver.on_epoch_end(1, {"loss": float("nan")})
    assert checkpoints.saved_epoch(str(tmp_path)) == 1
    # NaN weights beside a finite loss (ReLU zeroes NaN: --learning_rate=1e30 trained NaN kernels at a loss of 1e29
    # and checkpointed them over the good ones): not saved, and the run stops.
    model.stop_training = False
    assert not callbacks_lib.diverged(model)
    model.set_weights([np.full_like(w, np.nan) if i == 0 else w for i, w in enumerate(model.get_weights())])
    assert callbacks_lib.diverged(model) and callbacks_lib.diverged(model, {"loss": 0.5})
    saver.on_epoch_end(2, {"loss": 0.5})
    assert checkpoints.saved_epoch(str(tmp_path)) == 1 and model.stop_training


@pytest.mark.slow
def test_same_flags_and_seed_repeat_exactly(tmp_path):
    first = trainer.train_and_evaluate(tiny_config(model="keras_io_convnet"), str(tmp_path / "a"),
                                       source=tiny_source(), verbose=0)
    second = trainer.train_and_evaluate(tiny_config(model="keras_io_convnet"), str(tmp_path / "b"),
                                        source=tiny_source(), verbose=0)
    for key in ("test_loss", "test_accuracy", "history", "dropout_stats"):
        assert first[key] == second[key], key


# ------------------------------------------------- Ctrl-C and SIGTERM


def _train_with(workdir, *extra, limit_bytes=None, args=TRAIN_ARGS):
    """train.py as a person runs it: SIGINT is not ignored, as in a terminal."""
    def child():
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell job would ignore it
        if limit_bytes:  # writes past this size fail with EFBIG (Python ignores SIGXFSZ)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen([sys.executable, "train.py", *args, f"--workdir={workdir}", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), preexec_fn=child)


def _leftovers(workdir):
    """Temporary files and directories a writer left behind."""
    return sorted(os.path.relpath(os.path.join(root, name), workdir)
                  for root, dirs, names in os.walk(workdir) for name in dirs + names if ".tmp-" in name)


def _interrupt_inside_epoch_3(workdir, signum):
    """Starts (or resumes) train.py, sends `signum` inside epoch 3; returns the epoch kept.

    A resumed run (from epoch 1) is interrupted in the same epoch, after it saved epoch 2.
    """
    process = _train_with(workdir)
    _wait_for_epoch(workdir, 2, process)
    time.sleep(0.6)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode in (-signum, 128 + signum), stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    kept = checkpoints.saved_epoch(os.path.join(workdir, "checkpoints"))
    assert last.startswith(f"interrupted ({signal.Signals(signum).name}): ")
    assert f"keeps epoch {kept}" in last and "rerun the same command: python train.py" in last
    assert kept in (2, 3) and _leftovers(workdir) == []  # whole epochs only, nothing half-written
    return kept


@pytest.mark.slow
def test_sigkill_then_ctrl_c_then_a_full_disk_then_a_rerun_ends_like_an_uninterrupted_run(
        uninterrupted, tmp_path):
    workdir = str(tmp_path / "run")
    # 1. SIGKILL early in epoch 2 (~1.5 s long): no handler runs; epoch 1 is on disk, whole.
    process = _train(workdir)
    _wait_for_epoch(workdir, 1, process)
    time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))
    assert checkpoints.saved_epoch(os.path.join(workdir, "checkpoints")) == 1
    assert _leftovers(workdir) == []
    # 2. The rerun resumes; Ctrl-C inside epoch 3 stops it in one line.
    kept = _interrupt_inside_epoch_3(workdir, signal.SIGINT)
    # 3. The next rerun resumes, but its next checkpoint (~14 MB; the export's files
    # are smaller) exceeds the file-size limit: one line, no leftovers, nothing lost.
    limited = _train_with(workdir, limit_bytes=8 * 2**20)
    _, stderr = limited.communicate(timeout=300)
    assert limited.returncode == 2, stderr
    assert "Traceback" not in stderr and "Segmentation" not in stderr
    last = stderr.strip().splitlines()[-1]
    failed = os.path.join(workdir, "checkpoints", f"epoch-{kept + 1:04d}.npz")
    assert last.startswith(f"error: cannot write {failed} (File too large)")
    assert "then rerun the same command" in last
    assert _leftovers(workdir) == []
    assert checkpoints.saved_epoch(os.path.join(workdir, "checkpoints")) == kept
    # 4. The last rerun ends exactly where an uninterrupted run ends, bit for bit.
    rerun = _train_with(workdir)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    metrics = _metrics(workdir)
    assert metrics["resumed_from_epoch"] == kept
    assert metrics["test_loss"] == uninterrupted["test_loss"]
    assert metrics["test_accuracy"] == uninterrupted["test_accuracy"]
    # The whole history, over three processes: epochs before each resume come from the checkpoints' records.
    assert metrics["history"] == uninterrupted["history"] and metrics["history_from_epoch"] == 0


class _SignalsWhenCollected:
    """Sends this process SIGINT from its finalizer, where Python swallows any exception raised."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


SWALLOWED_CTRL_C = textwrap.dedent("""
    import signal
    from dropzoo import interrupts
    class SignalsWhenCollected:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)
    with interrupts.stop_on_signals():
        SignalsWhenCollected()  # collected at once: the handler's Interrupted is swallowed
        try:
            interrupts.raise_if_pending()
        except interrupts.Interrupted as e:
            print("raised again:", e)
    interrupts.raise_if_pending()  # the context is left: nothing pending
    print("nothing pending")
""")


def test_a_ctrl_c_swallowed_in_a_finalizer_is_not_lost():
    # Seen for real: SIGINT landed in TensorFlow's ConcreteFunctionGarbageCollector.__del__,
    # Python printed "Exception ignored in ..." with a traceback, and the run trained on.
    # (A subprocess: pytest's own unraisable-exception hook would hide what Python prints.)
    done = subprocess.run([sys.executable, "-c", SWALLOWED_CTRL_C], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["raised again: SIGINT", "nothing pending"]
    assert done.stderr == ""  # no "Exception ignored in", no traceback


def test_a_swallowed_ctrl_c_stops_training_after_that_epochs_checkpoint(tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    real_save = checkpoints.save

    def save_then_swallow_a_signal(model, directory, epoch, record=None):
        real_save(model, directory, epoch, record)
        if epoch == 1:
            _SignalsWhenCollected()

    monkeypatch.setattr(checkpoints, "save", save_then_swallow_a_signal)
    workdir = str(tmp_path / "run")
    with interrupts.stop_on_signals():
        with pytest.raises(interrupts.Interrupted) as stopped:
            trainer.train_and_evaluate(tiny_config(epochs=3), workdir, source=tiny_source(), verbose=2)
    assert stopped.value.workdir == workdir
    assert checkpoints.saved_epoch(os.path.join(workdir, "checkpoints")) == 1
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))
    # The kept epoch is whole outside its checkpoint too: its summaries (a resume does not redo it) and its line.
    events = glob.glob(os.path.join(workdir, "tensorboard", "train", "events.out.tfevents.*"))
    steps = [event.step for path in events for event in tf.compat.v1.train.summary_iterator(path)
             for value in event.summary.value if value.tag == "epoch_loss"]
    assert steps == [0]
    assert capsys.readouterr().out.count(" - loss: ") == 1


def test_a_ctrl_c_swallowed_during_the_export_stops_the_run_before_it_is_finished(tmp_path, monkeypatch):
    """A signal landing in a finalizer during the TFLite conversion (its gc.collect()) was lost: the run finished,
    exit status 0, no line."""
    real_export = trainer.export_serving_artifacts

    def export_then_swallow_a_signal(run):
        answer = real_export(run)
        _SignalsWhenCollected()
        return answer

    monkeypatch.setattr(trainer, "export_serving_artifacts", export_then_swallow_a_signal)
    workdir = str(tmp_path / "run")
    with interrupts.stop_on_signals():
        with pytest.raises(interrupts.Interrupted) as stopped:
            trainer.train_and_evaluate(tiny_config(epochs=1), workdir, source=tiny_source(), verbose=0)
    assert stopped.value.workdir == workdir and not os.path.exists(os.path.join(workdir, "metrics.json"))
    monkeypatch.setattr(trainer, "export_serving_artifacts", real_export)
    metrics = trainer.train_and_evaluate(tiny_config(epochs=1), workdir, source=tiny_source(), verbose=0)
    assert metrics["resumed_from_epoch"] == 1 and metrics["export_check"]["passed"], sorted(metrics)


def test_the_interrupted_line_says_what_a_rerun_redoes(tmp_path, monkeypatch):
    import train  # the script's module: its line, without a process

    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    files.write_json(os.path.join(workdir, "config.json"), {"epochs": 3, "train_steps": None})
    interrupted = interrupts.Interrupted(signal.SIGINT)
    interrupted.workdir = workdir
    lines = {}
    for epoch in (0, 2, 3):
        monkeypatch.setattr(checkpoints, "saved_epoch", lambda directory, epoch=epoch: epoch)
        lines[epoch] = train._interrupted_line(interrupted)
    assert "no epoch had finished, so the run starts over" in lines[0]
    assert "keeps epoch 2; the epoch in progress is redone on resume" in lines[2]
    # Stopped after the last epoch (during the test evaluation or the export): no epoch is redone.
    assert "keeps epoch 3, the last; the test evaluation and export are redone on resume" in lines[3]
    assert all("to resume, rerun the same command: python train.py" in line for line in lines.values())
    # The chief of a cluster: the other workers stop too, and each needs its command again.
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}')
    assert "to resume, rerun the same command on every worker of TF_CONFIG's 2-task cluster: python train.py" in (
        train._interrupted_line(interrupted))
    monkeypatch.delenv("TF_CONFIG")
    # Started with --overwrite: rerun as typed, it would train from epoch 1 again (every finished run of a sweep too).
    for typed, resume in ((["--overwrite", "--epochs=3"], "python train.py --epochs=3"),
                          (["--epochs=3", "--overwrite=true"], "python train.py --epochs=3"),
                          (["--flagfile=run.cfg"], "python train.py --flagfile=run.cfg --nooverwrite"),
                          (["--flagfile=run.cfg", "--overwrite"], "python train.py --flagfile=run.cfg --nooverwrite")):
        monkeypatch.setattr(sys, "argv", ["train.py", *typed])
        line = train._interrupted_line(interrupted, overwrite=True)
        assert line.endswith(f"to resume, rerun it without --overwrite: {resume}")
    # A sweep: the runs it had not reached still hold their earlier results, which a rerun without it would keep.
    later = []
    for k in range(7):  # every one named (the first five and "..." were a command rm could not run)
        later.append(str(tmp_path / "m" / "none" / f"seed{k}"))
        os.makedirs(later[-1])
        files.write_json(os.path.join(later[-1], "metrics.json"), {"test_accuracy": 0.9})
    interrupted.sweep = [(workdir, False) for workdir in later] + [(workdir, True)]
    assert train._interrupted_line(interrupted, overwrite=True).endswith(
        f"to resume, delete the 7 run(s) it had not reached, which still hold their earlier results (rm -r "
        f"{' '.join(later)}), then rerun it without --overwrite: python train.py --flagfile=run.cfg --nooverwrite")
    # Between two runs: the finished ones are kept (not "nothing was written").
    interrupted.workdir = None
    assert train._interrupted_line(interrupted).startswith(
        "interrupted (SIGINT) between runs of the sweep, whose finished runs are kept; to resume, rerun the same "
        "command: python train.py")
    interrupted.sweep = [(workdir, False) for workdir in later]
    assert "before training started; nothing was written" in train._interrupted_line(interrupted)
    # A Slurm array task (or a Kubernetes pod): typed as is, outside the array, its command trains the whole plan.
    monkeypatch.setattr(sys, "argv", ["train.py", "--seeds=4"])
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "22")
    for name, value in (("TASK_ID", "3"), ("TASK_MIN", "2"), ("TASK_MAX", "4"), ("TASK_COUNT", "3")):
        monkeypatch.setenv(f"SLURM_ARRAY_{name}", value)
    interrupted.workdir = workdir
    assert train._interrupted_line(interrupted).endswith(
        "to resume, requeue this task (scontrol requeue 22_3), or rerun the same command with this task's share: "
        "python train.py --seeds=4 --task_index=1 --num_tasks=3")
    monkeypatch.setattr(sys, "argv", ["train.py", "--seeds=4", "--overwrite"])
    line = train._interrupted_line(interrupted, overwrite=True)  # a requeue would start it over
    assert "scontrol" not in line and line.endswith("then rerun it without --overwrite with this task's share: "
                                                    "python train.py --seeds=4 --task_index=1 --num_tasks=3")
    for name in ("JOB_ID", "TASK_ID", "TASK_MIN", "TASK_MAX", "TASK_COUNT"):
        monkeypatch.delenv(f"SLURM_ARRAY_{name}")
    monkeypatch.setattr(sys, "argv", ["train.py", "--num_tasks=5"])
    monkeypatch.setattr(train.shards, "task_of", lambda *_: (4, 5, "JOB_COMPLETION_INDEX (Kubernetes Indexed Job) "
                                                                   "and --num_tasks"))
    assert train._interrupted_line(interrupted).endswith(
        "to resume, let the Job run this index again (backoffLimitPerIndex), or rerun the same command with this "
        "task's share: python train.py --task_index=4 --num_tasks=5")
    assert train._written_since(workdir, 0) and not train._written_since(later[0], time.time() + 60)


@pytest.mark.slow
def test_sigterm_stops_cleanly_in_one_line(tmp_path):
    _interrupt_inside_epoch_3(str(tmp_path / "run"), signal.SIGTERM)


@pytest.mark.slow
def test_a_full_disk_during_the_export_keeps_the_checkpoints_and_the_rerun_exports(tmp_path, monkeypatch):
    straight = trainer.train_and_evaluate(tiny_config(), str(tmp_path / "straight"),
                                          source=tiny_source(), verbose=0)
    real_write = export._write_archive

    def write_then_fill_the_disk(archive, directory):
        real_write(archive, directory)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(directory, "variables"))

    monkeypatch.setattr(export, "_write_archive", write_then_fill_the_disk)
    workdir = str(tmp_path / "run")
    with pytest.raises(files.WriteError) as error:
        trainer.train_and_evaluate(tiny_config(), workdir, source=tiny_source(), verbose=0)
    message = str(error.value)
    assert message.startswith(f"cannot write {os.path.join(workdir, 'saved_model')} (No space left on device)")
    assert "the disk is full" in message and "\n" not in message
    assert _leftovers(workdir) == [] and not os.path.exists(os.path.join(workdir, "saved_model"))
    assert checkpoints.saved_epoch(os.path.join(workdir, "checkpoints")) == 3
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))

    monkeypatch.setattr(export, "_write_archive", real_write)
    metrics = trainer.train_and_evaluate(tiny_config(), workdir, source=tiny_source(), verbose=0)
    assert metrics["resumed_from_epoch"] == 3 and metrics["export_check"]["passed"]
    assert metrics["weights_sha256"] == straight["weights_sha256"]
    assert [s["epochs"] for s in metrics["sessions"]] == [[1, 3], []]  # the second trained none: it exported
    # The last epoch's dropout statistics, from the checkpoint (they were {}: studies' BN tables read them).
    assert straight["dropout_stats"] and metrics["dropout_stats"] == straight["dropout_stats"]


def test_a_failed_json_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "metrics.json")
    files.write_json(path, {"old": 1})
    real_dump = json.dump

    def dump_half_then_fail(obj, f, **kwargs):
        f.write('{"new":')
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(json, "dump", dump_half_then_fail)
    with pytest.raises(files.WriteError, match=r"^cannot write .*metrics.json \(Disk quota exceeded\); "
                                               r"the disk quota is used up"):
        files.write_json(path, {"new": 2})
    monkeypatch.setattr(json, "dump", real_dump)
    assert files.read_json(path, "") == {"old": 1} and os.listdir(tmp_path) == ["metrics.json"]


# ---------------------------------------------------- corrupt files


def _stopped_after_two_epochs(workdir, monkeypatch):
    """A 3-epoch tiny run that dies after its second checkpoint."""
    undo = crash_after_epoch(monkeypatch, 2, RuntimeError("simulated crash"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train_and_evaluate(tiny_config(), workdir, source=tiny_source(), verbose=0)
    undo()
    return os.path.join(workdir, "checkpoints")


def test_a_checkpoint_resumes_only_the_settings_it_was_trained_with(tmp_path, monkeypatch):
    """config.json deleted and the run retyped with other flags, or another run's checkpoint copied in: both
    resumed without a word, and were recorded as runs of the new settings."""
    directory = _stopped_after_two_epochs(str(tmp_path / "run"), monkeypatch)
    os.remove(str(tmp_path / "run" / "config.json"))
    retyped = tiny_config(seed=2, learning_rate=0.01)
    said = sweep._refusal(retyped, str(tmp_path / "run"), trainer.resolve(retyped))  # what --dry_run prints
    assert said.startswith("the checkpoint after epoch 2 in "), said
    with pytest.raises(errors.RunError, match=r"^the checkpoint after epoch 2 in .* is of a run with other settings: "
                                              r"--learning_rate \(0.003 -> 0.01\), --seed \(1 -> 2\); use another"):
        trainer.train_and_evaluate(tiny_config(seed=2, learning_rate=0.01), str(tmp_path / "run"),
                                   source=tiny_source(), verbose=0)
    with pytest.raises(errors.RunError, match=r"^the checkpoint after epoch 2 in .* is of a run with other settings: "
                                              r"--rate \(unset -> 0.25\)"):
        _resume_with(tiny_config(rate=0.25), directory, tmp_path)
    metrics = trainer.train_and_evaluate(tiny_config(), str(tmp_path / "run"), source=tiny_source(), verbose=0)
    assert metrics["resumed_from_epoch"] == 2
    # Each session says which epochs it trained, with what code and on what machine.
    assert [s["epochs"] for s in metrics["sessions"]] == [[1, 2], [3, 3]]
    assert {s["code"] for s in metrics["sessions"]} == {metrics["versions"]["dropout_zoo"]}
    assert metrics["sessions"][-1]["machine"] == metrics["machine"]


def _resume_with(config, checkpoints_dir, tmp_path):
    """Trains `config` in a new workdir holding a copy of `checkpoints_dir` (another run's checkpoints)."""
    workdir = str(tmp_path / "copied")
    shutil.copytree(checkpoints_dir, os.path.join(workdir, "checkpoints"))
    trainer.train_and_evaluate(config, workdir, source=tiny_source(), verbose=0)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(1000)


def _flip_a_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte], ids=["truncated", "bit_rot"])
def test_a_corrupt_checkpoint_is_reported_and_the_previous_one_resumes(tmp_path, monkeypatch, capfd, damage):
    straight = trainer.train_and_evaluate(tiny_config(), str(tmp_path / "straight"),
                                          source=tiny_source(), verbose=0)
    directory = _stopped_after_two_epochs(str(tmp_path / "run"), monkeypatch)
    assert checkpoints.saved_epochs(directory) == [2, 1]
    damage(checkpoints.path_for(directory, 2))
    capfd.readouterr()
    metrics = trainer.train_and_evaluate(tiny_config(), str(tmp_path / "run"), source=tiny_source(), verbose=0)
    warning = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning: checkpoint")]
    assert warning == [warning[0]] and checkpoints.path_for(directory, 2) in warning[0]
    assert warning[0].endswith(f"resuming from the previous one, {checkpoints.path_for(directory, 1)}")
    assert metrics["resumed_from_epoch"] == 1
    assert metrics["weights_sha256"] == straight["weights_sha256"]  # exact, from the older checkpoint
    assert checkpoints.saved_epochs(directory) == [3, 2]  # only the last two are kept


@pytest.mark.slow
def test_no_readable_checkpoint_is_one_line_naming_overwrite(tmp_path, monkeypatch):
    directory = _stopped_after_two_epochs(str(tmp_path / "run"), monkeypatch)
    for epoch in (1, 2):
        _truncate(checkpoints.path_for(directory, epoch))
    with pytest.raises(trainer.RunError, match=r"^no readable checkpoint in .*checkpoints .*--overwrite"):
        trainer.train_and_evaluate(tiny_config(), str(tmp_path / "run"), source=tiny_source(), verbose=0)
    metrics = trainer.train_and_evaluate(tiny_config(), str(tmp_path / "run"), source=tiny_source(),
                                         verbose=0, overwrite=True)
    assert metrics["resumed_from_epoch"] == 0 and metrics["epochs_completed"] == 3


def test_overwrite_deletes_nothing_before_the_data_loads_and_the_network_takes_it(tmp_path):
    """A mistyped --npz with --overwrite deleted the finished run, then failed on the data (and a sweep did the same
    with a network too large for the images)."""
    workdir = str(tmp_path / "run")
    os.makedirs(os.path.join(workdir, "saved_model"))
    files.write_json(os.path.join(workdir, "metrics.json"), {"test_accuracy": 0.9})  # a run to lose
    kept = sorted(os.listdir(workdir))
    done = subprocess.run([sys.executable, "train.py", "--model=dense_mlp", f"--npz={tmp_path / 'typo.npz'}",
                           "--overwrite", f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == errors.EXIT_USAGE and "typo.npz" in done.stderr and "Traceback" not in done.stderr
    assert sorted(os.listdir(workdir)) == kept
    # The Python API alike (it deleted the run, then failed on the data).
    for typo in ({"npz": str(tmp_path / "typo.npz")}, {"dataset": "mnsit"}):
        with pytest.raises(errors.DataError):
            trainer.train_and_evaluate(config_lib.TrainConfig(model="dense_mlp", **typo), workdir, overwrite=True,
                                       verbose=0)
        assert sorted(os.listdir(workdir)) == kept
    wide = [(config_lib.TrainConfig(network="conv8k29,flatten,dense8", dataset="tiny", seed=seed, epochs=1),
             str(tmp_path / "sweep" / str(seed))) for seed in (0, 1)]
    os.makedirs(wide[0][1])
    files.write_json(os.path.join(wide[0][1], "metrics.json"), {"test_accuracy": 0.9})
    with pytest.raises(ValueError, match=r"29x29 window but its input is 28x28"):
        sweep.run_sweep(wide, overwrite=True, source=tiny_source(), verbose=0)
    assert os.listdir(wide[0][1]) == ["metrics.json"]


def test_a_grid_widened_along_a_new_field_names_the_runs_it_would_train_again(tmp_path):
    """--learning_rate=1.0 widened to 1.0,0.5 names canonical/ anew (canonical-learning_rate1/): its finished runs
    trained again without a word."""
    from dropzoo import workdir as workdirs

    root = str(tmp_path / "sweep")
    base = tiny_config(epochs=1)
    for seed in (0, 1):
        old = os.path.join(root, "dense_mlp", "canonical", f"seed{seed}")
        os.makedirs(old)
        files.write_json(os.path.join(old, "config.json"), dataclasses.replace(base, seed=seed).to_dict())
        if seed == 0:  # seed 1 never started: nothing to keep
            files.write_json(os.path.join(old, "metrics.json"), {"test_accuracy": 0.9})
    runs = [(dataclasses.replace(base, seed=seed, learning_rate=rate),
             os.path.join(root, "dense_mlp", f"canonical-learning_rate{rate:g}", f"seed{seed}"))
            for rate in (0.003, 0.5) for seed in (0, 1)]
    assert workdirs.twins(runs, root) == {runs[0][1]: os.path.join(root, "dense_mlp", "canonical", "seed0")}
    assert workdirs.twins(runs[:1], root) == {}  # one run: its own directory, nothing renamed
    os.makedirs(os.path.join(root, "dense_mlp", "x", "seed0"))
    with open(os.path.join(root, "dense_mlp", "x", "seed0", "config.json"), "w") as f:
        f.write("{")  # corrupt: said when that run is trained, not here
    assert len(workdirs.twins(runs, root)) == 1


@pytest.mark.parametrize("name", ["config.json", "metrics.json"])
def test_a_corrupt_json_file_is_one_line_with_its_path_and_the_fix(tmp_path, name):
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(tiny_config(epochs=1), workdir, source=tiny_source(), verbose=0)
    with open(os.path.join(workdir, name), "w") as f:
        f.write('{"epochs": 1,\x01')
    with pytest.raises(files.ReadError) as error:
        trainer.train_and_evaluate(tiny_config(epochs=1), workdir, source=tiny_source(), verbose=0)
    message = str(error.value)
    assert message.startswith(f"{os.path.join(workdir, name)} is corrupt (") and "\n" not in message
    assert "delete it and rerun" in message
    if name == "config.json":  # JSON, with a value of another type: corrupt too (it read as "other settings",
        with open(os.path.join(workdir, name), "w") as f:  # and the --overwrite named would drop its checkpoints)
            json.dump({**tiny_config(epochs=1).to_dict(), "epochs": "four"}, f)
        with pytest.raises(files.ReadError, match=r"config\.json is corrupt \(--epochs must be an integer, got "
                                                  r"'four'\); delete it and rerun to resume"):
            trainer.train_and_evaluate(tiny_config(epochs=1), workdir, source=tiny_source(), verbose=0)
    else:  # valid JSON without what reports the finished run again: a KeyError traceback in train.py and the sweep
        for damaged in ({}, {"test_accuracy": "0.9"}):
            with open(os.path.join(workdir, name), "w") as f:
                json.dump(damaged, f)
            with pytest.raises(files.ReadError, match=r"metrics\.json is corrupt \((no test_accuracy|test_accuracy "
                                                      r"is \"0\.9\", not a number)\); delete it and rerun"):
                trainer.train_and_evaluate(tiny_config(epochs=1), workdir, source=tiny_source(), verbose=0)


# ------------------------------------------------- one writer per workdir


def test_a_locked_workdir_is_refused_naming_the_holder(tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    holder = locks.WorkdirLock(workdir).acquire()
    with pytest.raises(locks.WorkdirLocked, match=rf"in use by another run \(host .*, pid {os.getpid()}, since"):
        trainer.train_and_evaluate(tiny_config(epochs=1), workdir, source=tiny_source(), verbose=0,
                                   overwrite=True)  # the lock comes before --overwrite deletes anything
    assert os.listdir(workdir) == [".lock"]
    holder.release()
    metrics = trainer.train_and_evaluate(tiny_config(epochs=1), workdir, source=tiny_source(), verbose=0)
    assert metrics["export_check"]["passed"]
    locks.WorkdirLock(workdir).acquire().release()  # the run released it


DENSE_ARGS = ["--model=dense_mlp", "--dataset=mnist_sample", "--epochs=3", "--optimizer=adam",
              "--learning_rate=0.001"]


@pytest.mark.slow
def test_a_task_whose_run_another_process_holds_is_not_done(tmp_path):
    # Under a scheduler, exit 0 would mark the index complete with its share unfinished.
    root = str(tmp_path / "study")
    run = os.path.join(root, "dense_mlp", "canonical", "seed0")
    os.makedirs(run)
    holder = locks.WorkdirLock(run).acquire()
    try:
        for extra, code in ((["--task_index=0", "--num_tasks=1"], 75), ([], 0)):  # alone: the shared-directory way
            process = _train_with(root, "--placement=canonical,none", "--noserving_artifacts", *extra,
                                  args=["--model=dense_mlp", "--dataset=mnist_sample", "--train_steps=2"])
            out, err = process.communicate(timeout=300)
            assert process.returncode == code, out + err
            assert "SKIPPED (in use by another process)" in out
            assert ("error: task 0 of 1 left runs another process was training (SKIPPED above); its share is not "
                    "done: run the task again once that process ends" in err) == bool(extra)
    finally:
        holder.release()


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once(tmp_path):
    workdir = str(tmp_path / "run")
    process = _train_with(workdir, "--epochs=100", args=DENSE_ARGS)
    _wait_for_epoch(workdir, 1, process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode in (-signal.SIGINT, 130), stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_the_same_command_started_twice_one_is_refused_and_the_other_finishes(tmp_path):
    workdir = str(tmp_path / "run")
    # Long enough that the first is still training when the second, started together, gets
    # there on a loaded machine (3 epochs take under a second on AMX).
    args = [a if not a.startswith("--epochs") else "--epochs=30" for a in DENSE_ARGS]
    processes = [_train_with(workdir, args=args) for _ in range(2)]  # both start up together
    outcomes = [(p, *p.communicate(timeout=300)) for p in processes]
    refused = [(p, err) for p, _, err in outcomes if p.returncode == 2]
    finished = [p for p, _, _ in outcomes if p.returncode == 0]
    assert len(refused) == 1 and len(finished) == 1, [err for _, _, err in outcomes]
    [(_, stderr)] = refused
    assert stderr.strip().splitlines()[-1].startswith(
        f"error: workdir {workdir!r} is in use by another run (host ")
    assert f"pid {finished[0].pid}," in stderr
    metrics = _metrics(workdir)
    assert metrics["export_check"]["passed"] and metrics["trained_by"]["pid"] == finished[0].pid
    assert metrics["epochs_completed"] == 30 and metrics["resumed_from_epoch"] == 0


@pytest.mark.slow
def test_one_sweep_started_twice_trains_every_run_exactly_once(tmp_path):
    args = ["--model=dense_mlp", "--dataset=mnist_sample", "--placement=canonical,none,before_dense",
            "--seeds=2", "--epochs=2", "--optimizer=adam", "--learning_rate=0.001"]
    root = str(tmp_path / "study")
    processes = [_train_with(root, args=args) for _ in range(2)]
    outputs = [p.communicate(timeout=400) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    trained = [line.split()[0] for stdout, _ in outputs for line in stdout.splitlines()
               if line.endswith("(trained here)")]
    runs = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(root, "*", "*", "*", "metrics.json")))
    assert len(runs) == 6 and sorted(trained) == runs  # each trained once, by one of the two
    assert all(_metrics(run)["export_check"]["passed"] for run in runs)
    # A process that saw every run done names the comparison's command (one that skipped runs says to rerun).
    for stdout, _ in outputs:
        last = stdout.splitlines()[-1]
        assert last == f"compare:      python eval.py --runs_dir={root}" if "SKIPPED" not in stdout else \
            "run(s) were being trained by another process" in last
        assert ("SKIPPED" in stdout) != (f"TensorBoard:  tensorboard --logdir {root}" in stdout.splitlines())


def _listening_sockets():
    """(local address, port) of the TCP sockets this process listens on (Linux /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (e.g. the listing's own fd)
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(table):
            with open(table) as f:
                for row in (line.split() for line in f.readlines()[1:]):
                    if row[3] == "0A" and row[9] in inodes:  # state 0A: LISTEN
                        found.append(row[1])
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
def test_a_single_machine_run_listens_on_no_port(tmp_path):
    import socket

    with socket.socket() as server:  # the check sees a listener when there is one
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert len(_listening_sockets()) == 1
    trainer.train_and_evaluate(tiny_config(epochs=1), str(tmp_path), source=tiny_source(), verbose=0)
    assert _listening_sockets() == []


@pytest.mark.slow
def test_ctrl_c_in_eval_stops_it_in_one_line(tmp_path):
    path = export.export_saved_model(models.build("keras_mnist_cnn", seed=0), str(tmp_path / "saved_model"))
    # Many MC samples: the evaluation is still running when the signal comes.
    process = subprocess.Popen([sys.executable, "eval.py", f"--saved_model={path}", "--dataset=mnist_sample",
                                "--mc_samples=3000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(20)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode in (-signal.SIGINT, 128 + signal.SIGINT), stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted (SIGINT)"), stderr


ENDED_THEN_CTRL_C = textwrap.dedent("""
    import os, signal
    from dropzoo import interrupts
    interrupts.quiet_during_start_up()  # as train.py and eval.py start
    with interrupts.stop_on_signals():
        print("work done", flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    print("not reached")
""")


def test_a_ctrl_c_after_the_work_ended_says_so():
    # It said "while starting; nothing was written" after a run had written everything.
    done = subprocess.run([sys.executable, "-c", ENDED_THEN_CTRL_C], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 128 + signal.SIGINT, done.stderr
    assert done.stdout == "work done\n"
    assert done.stderr == ("interrupted (SIGINT) while exiting, after the work above ended; "
                           "every file it wrote is whole\n")


def test_a_run_inside_another_runs_directory_is_refused_before_it_is_lost(tmp_path):
    """A run into a sweep's --workdir (or a sweep into a run's) trained without a word, and eval.py --runs_dir and
    --collect then took the outer directory as one run and left the others out."""
    from dropzoo import records
    from dropzoo import workdir as workdirs

    def fake_run(directory, finished=True):
        os.makedirs(directory / "saved_model" / "variables")
        files.write_json(str(directory / "config.json"), {"model": "m", workdirs.RESOLVED: {}})
        if finished:
            files.write_json(str(directory / "metrics.json"), {"config": {"seed": 0}})

    sweep_dir = tmp_path / "sweep"
    fake_run(sweep_dir / "m" / "none" / "seed0", finished=False)  # started: its config.json says so
    with pytest.raises(trainer.RunError, match=rf"^--workdir {sweep_dir} holds other runs below it, e\.g\. "
                                               rf"{sweep_dir}/m/none/seed0 \(which never reached a checkpoint: delete "
                                               r"it if it is not wanted\): a comparison .* give another --workdir"):
        workdirs.check_one_run_here(str(sweep_dir))
    single = tmp_path / "single"
    fake_run(single)
    workdirs.check_one_run_here(str(single))  # its own saved_model/ holds no run
    with pytest.raises(trainer.RunError, match=rf"^{single}/m/none/seed0 lies inside the run {single}: .* give a "
                                               rf"--workdir outside {single}$"):
        workdirs.check_one_run_here(str(single / "m" / "none" / "seed0"))
    workdirs.check_one_run_here(str(tmp_path / "elsewhere"))  # nothing there yet: fine
    os.makedirs(tmp_path / "project")
    files.write_json(str(tmp_path / "project" / "metrics.json"), {"acc": 0.9})  # another tool's file, not a run
    workdirs.check_one_run_here(str(tmp_path / "project" / "runs" / "x"))
    # Such a layout made before: refused by the comparison, not compared without the runs below.
    fake_run(single / "m" / "none" / "seed1")
    with pytest.raises(ValueError, match=rf"^the run {single} holds another run below it \({single}/m/none/seed1\)"):
        records.find_runs([str(single)])
    # A run recorded as identical by construction is a metrics.json alone: a run all the same.
    recorded = tmp_path / "sweep2" / "m" / "before_activation" / "seed0"
    os.makedirs(recorded)
    files.write_json(str(recorded / "metrics.json"), {"config": {"seed": 0}, "identical_to": "../../x/seed0"})
    with pytest.raises(trainer.RunError, match=r"lies inside the run .*sweep2/m/before_activation/seed0: "):
        workdirs.check_one_run_here(str(recorded / "x"))
    with pytest.raises(trainer.RunError, match=r"holds other runs below it, e\.g\. .*before_activation/seed0: "):
        workdirs.check_one_run_here(str(tmp_path / "sweep2" / "m"))
    # A corrupt config.json beside a run's metrics.json: still a run (the config.json answer ended the look).
    (recorded / "config.json").write_text("{not json")
    assert workdirs.is_run(str(recorded))
    # Another tool's metrics.json below --runs_dir is not a run (it failed on KeyError 'data').
    os.makedirs(tmp_path / "sweep3" / "tb_export")
    files.write_json(str(tmp_path / "sweep3" / "tb_export" / "metrics.json"), {"acc": 0.9})
    fake_run(tmp_path / "sweep3" / "m" / "seed0")
    assert records.find_runs([str(tmp_path / "sweep3")]) == [str(tmp_path / "sweep3" / "m" / "seed0")]
    # A run recorded as identical by construction has no exports of its own: the fix names the run that has them.
    twin = tmp_path / "twin"
    os.makedirs(twin)
    files.write_json(str(twin / "metrics.json"), {"identical_to": "../single"})
    assert workdirs.reexport_fix(str(twin), "it") == (
        f"this run was never trained: it is identical by construction to {single}, whose exports are its own; pass "
        f"--workdir={single}")


def test_a_library_write_error_names_the_file_not_the_device():
    """TensorFlow's text names its device first: 'cannot write /job' named no file."""
    failed = tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
        "/w/run/saved_model/variables/variables.data-00000-of-00001; No space left on device")
    error = files.write_failure(failed, "/w/run/saved_model")
    assert str(error).startswith("cannot write /w/run/saved_model/variables/variables.data-00000-of-00001 (No space")
    alone = files.write_failure(RuntimeError("/job:localhost/replica:0/task:0: Permission denied"), "/w/run/x")
    assert str(alone).startswith("cannot write /w/run/x (Permission denied)")
    # A file inside the directory being written (removed once the write fails): named as what was being written.
    inside = tf.errors.ResourceExhaustedError(None, None, "/w/run/.saved_model.tmp-12/saved_model.pb.tmp0f; No space "
                                                          "left on device")
    error = files.write_failure(inside, "/w/run/saved_model", "/w/run/.saved_model.tmp-12")
    assert str(error).startswith("cannot write /w/run/saved_model (No space left on device)")


def test_long_file_name_slugs_keep_what_tells_them_apart():
    """eval.py's eval-<data>.json: two long paths that ended alike wrote one file (the last 80 characters)."""
    a, b = (files.slug(f"image_dir:/data/{team}/{'x' * 90}/test") for team in ("teamA", "teamB"))
    assert a != b and len(a) == len(b) == 80 and a.endswith("_test-" + a[-8:])
    assert files.slug("idx:/usr/share/datasets/fashion-mnist") == "idx__usr_share_datasets_fashion-mnist"


@pytest.mark.slow
def test_a_finished_run_trains_on_to_more_epochs_as_its_message_says(tmp_path):
    """Raising --epochs on a finished run offered only --overwrite (all of it again); its checkpoints are the
    first epochs of the longer run, bit for bit."""
    straight = trainer.train_and_evaluate(tiny_config(epochs=3), str(tmp_path / "straight"), source=tiny_source(),
                                          verbose=0, serving_artifacts=False)
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(tiny_config(epochs=2), workdir, source=tiny_source(), verbose=0)
    with open(os.path.join(workdir, "eval.json"), "w") as f:  # what eval.py --workdir writes of the 2-epoch weights
        f.write("{}")
    with pytest.raises(errors.RunError, match=r"--epochs \(2 -> 3\); to train it on to 3 epochs from its "
                                              r"checkpoints, delete its config.json and metrics.json and rerun"):
        trainer.train_and_evaluate(tiny_config(epochs=3), workdir, source=tiny_source(), verbose=0)
    os.remove(os.path.join(workdir, "config.json"))  # half of it: the 2-epoch results were reported as 3 epochs'
    with pytest.raises(errors.RunError, match=r"--epochs \(2 -> 3\)"):
        trainer.train_and_evaluate(tiny_config(epochs=3), workdir, source=tiny_source(), verbose=0)
    for name in ("config.json", "metrics.json"):
        if os.path.exists(os.path.join(workdir, name)):
            os.remove(os.path.join(workdir, name))
    longer = trainer.train_and_evaluate(tiny_config(epochs=3), workdir, source=tiny_source(), verbose=0,
                                        serving_artifacts=False)
    assert longer["resumed_from_epoch"] == 2 and longer["weights_sha256"] == straight["weights_sha256"]
    assert longer["history"] == straight["history"]
    # The 2-epoch weights' serving files and eval.py result went (eval.py --tflite scored them as the run's, silently).
    assert not [name for name in ("model.keras", "model.tflite", "model_int8.tflite", "eval.json")
                if os.path.exists(os.path.join(workdir, name))]


def test_a_sweep_records_an_identical_run_only_where_a_trained_run_could_be_written(tmp_path):
    """The record of a run identical by construction to another went in without the lock or the settings check:
    it replaced a finished run of other settings (whose own command then reported the other run's score), and
    wrote into a workdir another process was training."""
    canonical, follower = str(tmp_path / "canonical"), str(tmp_path / "before_activation")
    other = trainer.train_and_evaluate(tiny_config(placement="before_activation", epochs=2), follower,
                                       source=tiny_source(), verbose=0)
    runs = [(tiny_config(placement="canonical"), canonical), (tiny_config(placement="before_activation"), follower)]
    assert sweep.plan(runs) == [0, 0]  # one network under ReLU: the second is not trained
    with pytest.raises(errors.RunError, match=r"^1 of the 2 runs of this sweep hold runs with other settings"):
        sweep.run_sweep(runs, source=tiny_source(), verbose=0)  # (before any trains)
    assert not os.path.exists(canonical)
    # Its own check under its lock (a run of other settings written there since the sweep checked them all).
    ((_, _, trained),) = sweep.run_sweep(runs[:1], source=tiny_source(), verbose=0)
    refused = sweep._identical(runs[1][0], follower, (runs[0][0], canonical, trained))
    assert refused.startswith("RunError: workdir") and "--epochs (2 -> 3)" in refused, refused
    with open(os.path.join(follower, "metrics.json")) as f:
        assert json.load(f) == other  # kept, not replaced
    # Another process holds the workdir: skipped, nothing written there.
    held = str(tmp_path / "held")
    os.makedirs(held)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from dropzoo import locks
        lock = locks.WorkdirLock({held!r}).acquire()
        print("held", flush=True)
        time.sleep(60)""")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        outcome = sweep._identical(runs[1][0], held, (runs[0][0], canonical, trained))
    finally:
        holder.kill()
        holder.wait()
    assert isinstance(outcome, outcomes.Skipped) and not os.path.exists(os.path.join(held, "metrics.json")), outcome
    # Free: the record, pointing at the run that stands for it; a second sweep reports it as it is.
    record = sweep._identical(runs[1][0], held, (runs[0][0], canonical, trained))
    assert record["identical_to"] == os.path.join("..", "canonical") and record["test_accuracy"] == trained[
        "test_accuracy"]
    assert sweep._identical(runs[1][0], held, (runs[0][0], canonical, trained)) == record
    # Moved away from the run it names (the sweep's own `mv` advice, its grid widened): recorded again where that
    # run now is; it was kept pointing at a path no longer there, which a comparison refused.
    moved = str(tmp_path / "renamed" / "held")
    os.makedirs(os.path.dirname(moved))
    os.rename(held, moved)
    assert workdir_lib.recorded_elsewhere(moved, canonical)
    again = sweep._identical(runs[1][0], moved, (runs[0][0], canonical, trained))
    assert os.path.normpath(os.path.join(moved, again["identical_to"])) == canonical
    assert not workdir_lib.recorded_elsewhere(moved, canonical)


def test_statistics_past_float32_are_written_as_infinite(tmp_path):
    """Activations blowing up (finite in float64, past float32) ended a run with "Can't convert Python sequence with
    a value out of range for a double-precision float", not the trainer's divergence message."""
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default(step=0):
        for tag, value in (("big", 1e300), ("small", -1e300), ("nan", float("nan")), ("plain", 2.5)):
            callbacks_lib._scalar(tag, value)
    writer.close()
    written = {v.tag: float(tf.make_ndarray(v.tensor)) for path in glob.glob(str(tmp_path / "events.*"))
               for event in tf.compat.v1.train.summary_iterator(path) for v in event.summary.value}
    assert written["big"] == np.inf and written["small"] == -np.inf and written["plain"] == 2.5
    assert np.isnan(written["nan"])

