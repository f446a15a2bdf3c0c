"""CIFAR-10 end to end: 32x32x3 images from tfds train, export, and evaluate.

The data is `tfds.testing.mock_data` in CIFAR-10's shape (random uint8
32x32x3 images, 10 classes), so nothing touches the network: the probe is
replaced by "reachable", which sends load_source down the tfds download path
that mock_data turns into a no-op (as in test_data.py).
"""
import contextlib
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import tiny_config

from dropzoo import data as data_lib
from dropzoo import evaluate
from dropzoo import sources
from dropzoo import tfds_source
from dropzoo import trainer

NUM_EXAMPLES = 40  # per split: 36 train + 4 validation, 40 test
EXAMPLE_BYTES = 4 * 32 * 32 * 3  # float32 pixels of one CIFAR-10 image
# Caches at most 10 examples per split: the train part (36) and test (40)
# are streamed, the validation part (4) is cached.
TINY_BUDGET = 10 * EXAMPLE_BYTES


@contextlib.contextmanager
def mock_cifar10(num_examples=NUM_EXAMPLES):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfds_source, "_network_reachable", lambda timeout: True)
        with tfds.testing.mock_data(num_examples=num_examples):
            yield


def cifar_config(tfds_data_dir):
    # 6 steps of 8: one data-epoch (5 steps, the last partial) and one step more.
    return tiny_config(model="keras_io_convnet", dataset="cifar10",
                       tfds_data_dir=str(tfds_data_dir), epochs=1, train_steps=6, batch_size=8)


def train_and_eval(workdir, tfds_data_dir):
    """Trains through the real data path (no injected source), then eval.py's path."""
    with mock_cifar10():
        metrics = trainer.train_and_evaluate(cifar_config(tfds_data_dir), str(workdir), verbose=0)
        result = evaluate.evaluate_on_dataset(os.path.join(workdir, "saved_model"),
                                              data={"dataset": "cifar10", "tfds_data_dir": str(tfds_data_dir)},
                                              batch_size=16)
    return metrics, result


def assert_trained_exported_evaluated(workdir, metrics, result):
    assert metrics["data"]["source"] == "tfds:cifar10"
    assert metrics["data"]["image_shape"] == [32, 32, 3]
    assert metrics["data"]["num_classes"] == 10
    assert (metrics["data"]["num_train"], metrics["data"]["num_validation"]) == (36, 4)
    assert metrics["steps_per_epoch"] == 6 and metrics["epochs_completed"] == 1
    assert np.isfinite(metrics["test_loss"]) and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["export_check"]["passed"]

    served = tf.saved_model.load(os.path.join(workdir, "saved_model"))
    args, kwargs = served.signatures["serving_default"].structured_input_signature
    assert args == () and list(kwargs) == ["image"]
    assert kwargs["image"].dtype == tf.uint8
    assert kwargs["image"].shape.as_list() == [None, 32, 32, 3]

    assert result["data_source"] == "tfds:cifar10" and result["num_examples"] == NUM_EXAMPLES
    assert 0.0 <= result["accuracy"] <= 1.0 and np.isfinite(result["loss"])
    # The export scores the same test split as the trainer did.
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_cifar10_trains_exports_and_evaluates(tmp_path):
    workdir = tmp_path / "run"
    metrics, result = train_and_eval(workdir, tmp_path / "tfds")
    assert_trained_exported_evaluated(workdir, metrics, result)


def test_cifar10_streamed_trains_exports_and_evaluates(tmp_path, monkeypatch, caplog):
    # The trainer takes the default budget; lowering it forces streaming there.
    monkeypatch.setattr(data_lib, "CACHE_BUDGET_BYTES", TINY_BUDGET)
    made = []
    real = data_lib.make_pipelines

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(data_lib, "make_pipelines", spy)
    workdir = tmp_path / "run"
    with caplog.at_level("INFO", logger="absl"):
        metrics, result = train_and_eval(workdir, tmp_path / "tfds")
    assert [pipes.streamed for pipes in made] == [("train", "test")]
    assert any("tfds:cifar10: streaming the train, test splits" in r.getMessage()
               for r in caplog.records)
    assert_trained_exported_evaluated(workdir, metrics, result)


def test_cifar10_streamed_pipelines_resume_exactly(tmp_path):
    with mock_cifar10():
        source = sources.load_source("cifar10", tfds_data_dir=str(tmp_path))
        assert (source.image_shape, source.num_classes) == ((32, 32, 3), 10)

        def stream(start_step=0):
            pipes = data_lib.make_pipelines(source, batch_size=8, seed=3, start_step=start_step,
                                            cache_budget_bytes=TINY_BUDGET)
            assert pipes.streamed == ("train", "test") and pipes.steps_per_epoch == 5
            return [(x.numpy(), y.numpy()) for x, y in pipes.train.take(12 - start_step)]

        fresh = stream()
        resumed = {start: stream(start) for start in (2, 5, 7)}
    assert fresh[0][0].shape == (8, 32, 32, 3) and fresh[0][0].dtype == np.float32
    assert [len(y) for _, y in fresh[:5]] == [8, 8, 8, 8, 4]
    for start, batches in resumed.items():
        assert all(np.array_equal(xa, xb) and np.array_equal(ya, yb)
                   for (xa, ya), (xb, yb) in zip(batches, fresh[start:])), start
