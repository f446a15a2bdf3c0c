"""Shared pytest set-up and helpers: TensorFlow's environment as the entry points set it, the repo
root importable, tiny data.

Tests import the helpers with `from conftest import tiny_config, tiny_source`
(pytest puts this directory on sys.path; tests/distribute_worker.py, run as a
script, has it there too).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dropzoo import environment  # noqa: E402  (light: no TensorFlow)

environment.set_defaults()  # before TensorFlow loads: tests run as the entry points do
environment.import_tensorflow()  # without the start-up banner, as the entry points

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dropzoo import config as config_lib  # noqa: E402
from dropzoo import sources  # noqa: E402
from dropzoo import trainer  # noqa: E402

# Test files whose in-process runs write model.keras and the TFLite models;
# elsewhere a run skips them (about 2 s an export), as serving_artifacts=False does.
_SERVING_ARTIFACT_TESTS = ("test_tflite",)


@pytest.fixture(autouse=True)
def _serving_artifacts_only_where_tested(request, monkeypatch):
    if request.module.__name__ not in _SERVING_ARTIFACT_TESTS:
        monkeypatch.setattr(trainer, "export_serving_artifacts", lambda run: (None, None))


def tiny_source(num_train=96, num_test=40, seed=0):
    """Learnable random data: the class is which image quadrant is bright."""
    return sources.array_source("tiny", *tiny_arrays(num_train, num_test, seed))


def tiny_arrays(num_train=96, num_test=40, seed=0):
    """tiny_source's ((x_train, y_train), (x_test, y_test)), as given to array_source (which puts the training
    arrays in its fixed order)."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 4, n)
        images = rng.integers(0, 200, (n, 28, 28, 1)).astype(np.uint8)
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, r * 14:(r + 1) * 14, c * 14:(c + 1) * 14] += 40
        return images, labels.astype(np.int64)

    return make(num_train), make(num_test)


def tiny_config(**overrides):
    values = dict(model="dense_mlp", dataset="tiny", epochs=3, batch_size=16,
                  optimizer="adam", learning_rate=0.003, seed=1)
    values.update(overrides)
    return config_lib.TrainConfig(**values)


def crash_after_epoch(monkeypatch, epoch, error):
    """Makes training raise `error` once `epoch` epochs (and their checkpoints) are done.

    Returns a function that undoes it, so the same test can then resume.
    """
    from dropzoo import callbacks as callbacks_lib

    real = callbacks_lib.Throughput.on_epoch_end

    def crash(self, index, logs=None):
        real(self, index, logs)
        if index + 1 == epoch:
            raise error

    monkeypatch.setattr(callbacks_lib.Throughput, "on_epoch_end", crash)
    return lambda: monkeypatch.setattr(callbacks_lib.Throughput, "on_epoch_end", real)


@pytest.fixture(scope="module")
def eval_main():
    """eval.py's main, run in-process on a private FlagValues (a subprocess costs ~4 s of TF import).

    Returns run(*args) -> eval.py's exit status.
    """
    import importlib.util

    from absl import flags

    from dropzoo import flags as flags_lib

    spec = importlib.util.spec_from_file_location("eval_script", os.path.join(ROOT, "eval.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fv = flags.FlagValues()
    flags_lib.define_eval_flags(fv)

    def run(*args):
        fv.unparse_flags()
        fv(["eval.py", *args])
        script.flags_lib.FLAGS = fv
        try:
            return script.main(["eval.py"])
        except SystemExit as e:
            return e.code

    yield run
    script.flags_lib.FLAGS = flags.FLAGS


def layer_table_rows(text):
    """models.layers.layer_table's rows as {column: cell} dicts, cut where its header's columns start."""
    _, header, *rows = text.splitlines()
    columns = ("layer", "type", "output shape", "params", "dropout") + (("reads",) if "reads" in header else ())
    starts = [header.index(column) for column in columns]
    return [dict(zip(("layer", "type", "shape", "params", "dropout", "reads"),
                     (row[a:b].strip() for a, b in zip(starts, starts[1:] + [None])))) for row in rows]
