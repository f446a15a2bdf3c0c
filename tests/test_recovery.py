"""Nothing lost: SIGKILL between and within epochs, a kill during export, NaN, repeatability."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from dropzoo import callbacks as callbacks_lib
from dropzoo import export
from dropzoo import trainer
from conftest import tiny_config, tiny_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small enough to be quick, long enough per epoch (1.5-3 s on 2 cores) to be killed inside one.
TRAIN_ARGS = ["--model=keras_mnist_cnn", "--dataset=mnist_sample", "--epochs=4", "--batch_size=64",
              "--optimizer=adam", "--learning_rate=0.001", "--seed=3"]


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
        if callbacks_lib.saved_epoch(os.path.join(workdir, "checkpoints")) >= epoch:
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


@pytest.mark.parametrize("delay", [0.0, 0.6], ids=["between_epochs", "mid_epoch"])
@pytest.mark.slow
def test_sigkill_then_rerun_finishes_like_an_uninterrupted_run(uninterrupted, tmp_path, delay):
    workdir = str(tmp_path / "run")
    process = _train(workdir)
    _wait_for_epoch(workdir, 2, process)
    time.sleep(delay)  # 0: right after epoch 2's checkpoint; 0.6 s: inside epoch 3
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))
    resumed_from = callbacks_lib.saved_epoch(os.path.join(workdir, "checkpoints"))
    assert resumed_from in (2, 3)

    rerun = _train(workdir)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read()
    metrics = _metrics(workdir)
    assert metrics["resumed_from_epoch"] == resumed_from
    # Same final weights => same test metrics and same validation curve, bit for bit.
    assert metrics["test_loss"] == uninterrupted["test_loss"]
    assert metrics["test_accuracy"] == uninterrupted["test_accuracy"]
    assert metrics["history"]["val_loss"] == uninterrupted["history"]["val_loss"][resumed_from:]


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
    with pytest.raises(trainer.RunError, match="NaN"):
        trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0)
    assert callbacks_lib.saved_epoch(str(tmp_path / "checkpoints")) == 0
    assert not (tmp_path / "saved_model").exists() and not (tmp_path / "metrics.json").exists()


def test_checkpoint_skips_an_epoch_that_ended_in_nan(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    saver = callbacks_lib.EpochCheckpoint(str(tmp_path))
    saver.set_model(model)
    saver.on_epoch_end(0, {"loss": 0.5})
    saver.on_epoch_end(1, {"loss": float("nan")})
    assert callbacks_lib.saved_epoch(str(tmp_path)) == 1


def test_same_flags_and_seed_repeat_exactly(tmp_path):
    first = trainer.train_and_evaluate(tiny_config(model="keras_io_convnet"), str(tmp_path / "a"),
                                       source=tiny_source(), verbose=0)
    second = trainer.train_and_evaluate(tiny_config(model="keras_io_convnet"), str(tmp_path / "b"),
                                        source=tiny_source(), verbose=0)
    for key in ("test_loss", "test_accuracy", "history", "dropout_stats"):
        assert first[key] == second[key], key
