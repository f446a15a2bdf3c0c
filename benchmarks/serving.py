"""Inference speed: the exported serving_default vs TFLite and Keras, in one run.

    python benchmarks/serving.py                        # trainer's default precision (~40 s on 2 cores)
    python benchmarks/serving.py --precision=float32

Builds keras_mnist_cnn under the precision the trainer would use (`auto` by
default), exports it with `dropzoo.export.export_saved_model` and
`export_artifacts` (as the trainer does), reloads them, and times five ways
to get class probabilities:

* `serving_default(image=uint8)` of the reloaded SavedModel (scales in-graph);
* `model.tflite` and `model_int8.tflite` (the same signature, uint8 in), run
  with `dropzoo.tflite.RUNTIME` (LiteRT when installed) at its default threads;
* `model.predict(x, batch_size=len(x))` on pre-scaled float32 images;
* `model(x, training=False)` on the same images (eager call).

Calls take turns (one of each per round) so that load from other processes
hits all alike. Every call ends with NumPy results. Batch 1: p50 and p99
latency; batch 256: examples/s. Targets: batch-256 serving_default >= 3x
model.predict; batch-1 serving_default p50 below model(x)'s; batch-1
model.tflite p50 below serving_default's. The model is untrained (speed does
not depend on the weights); the int8 model is calibrated on random pixels.
"""
import os
import sys
import tempfile

if __package__ in (None, ""):  # run as a file: import this checkout, not an installed copy
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropzoo import environment  # noqa: E402  (light: no TensorFlow)

environment.set_defaults()  # before TensorFlow loads: as train.py and eval.py run
environment.import_tensorflow()  # without the start-up banner, as train.py and eval.py
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import models  # noqa: E402
from benchmarks import common  # noqa: E402
from dropzoo import artifacts as artifacts_lib  # noqa: E402
from dropzoo import config as config_lib  # noqa: E402
from dropzoo import export as export_lib  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import performance  # noqa: E402
from dropzoo import tflite  # noqa: E402
from dropzoo.preprocess import scale  # noqa: E402

THROUGHPUT_TARGET = 3.0
METHODS = ("serving_default", "model.tflite", "model_int8.tflite", "model.predict", "model(x)")


def build_model(precision, seed):
    """keras_mnist_cnn under the policy `precision` resolves to; returns (model, policy)."""
    policy, _ = performance.choose_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    try:
        return models.build("keras_mnist_cnn", "canonical", seed=seed), policy
    finally:
        keras.mixed_precision.set_global_policy("float32")


def callers(model, serving_fn, tflite_models):
    """{method: f(uint8 images) -> NumPy probabilities}; scaling for Keras done outside the timing."""
    key, probabilities = export_lib.INPUT_KEY, export_lib.PROBABILITIES_KEY
    float32, int8 = (tflite_models[name] for name in (artifacts_lib.TFLITE_FILE, artifacts_lib.TFLITE_INT8_FILE))
    return {
        "serving_default": lambda raw, x: serving_fn(**{key: tf.constant(raw)})[probabilities].numpy(),
        "model.tflite": lambda raw, x: float32(raw)[probabilities],
        "model_int8.tflite": lambda raw, x: int8(raw)[probabilities],
        "model.predict": lambda raw, x: model.predict(x, batch_size=len(x), verbose=0),
        "model(x)": lambda raw, x: model(x, training=False).numpy(),
    }


def time_rounds(calls, raw, rounds, warmup=3):
    """{method: [seconds per call]}, the methods taking turns each round."""
    return common.time_in_turns(calls, (raw, scale(raw).numpy()), rounds, warmup)


def run(*, precision="auto", batch_size=256, latency_rounds=200, throughput_rounds=20, seed=0, log=print):
    model, policy = build_model(precision, seed)
    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape[1:])
    with tempfile.TemporaryDirectory() as workdir:
        path = export_lib.export_saved_model(model, os.path.join(workdir, "saved_model"))
        serving_fn = tf.saved_model.load(path).signatures[export_lib.SIGNATURE_KEY]
        calibration = rng.integers(0, 256, (artifacts_lib.REPRESENTATIVE_EXAMPLES,) + shape, dtype=np.uint8)
        artifacts = artifacts_lib.export_artifacts(model, workdir, calibration)
        tflite_models = {name: tflite.Model.load(artifacts[name])
                         for name in (artifacts_lib.TFLITE_FILE, artifacts_lib.TFLITE_INT8_FILE)}
        calls = callers(model, serving_fn, tflite_models)
        log(f"1/2 batch 1: {latency_rounds} rounds ...")
        single = time_rounds(calls, rng.integers(0, 256, (1,) + shape, dtype=np.uint8), latency_rounds)
        log(f"2/2 batch {batch_size}: {throughput_rounds} rounds ...")
        big = time_rounds(calls, rng.integers(0, 256, (batch_size,) + shape, dtype=np.uint8),
                          throughput_rounds)
    methods = {name: {"p50_ms": 1000 * common.percentile(single[name], 50),
                      "p99_ms": 1000 * common.percentile(single[name], 99),
                      "examples_per_sec": batch_size * len(big[name]) / sum(big[name])}
               for name in METHODS}
    serving = methods["serving_default"]
    result = {"machine": common.machine(), "precision": policy, "batch_size": batch_size,
              "tflite_runtime": tflite.RUNTIME, "methods": methods,
              "throughput_ratio_vs_predict": serving["examples_per_sec"] / methods["model.predict"]["examples_per_sec"],
              "p50_ratio_model_call_over_serving": methods["model(x)"]["p50_ms"] / serving["p50_ms"]}
    result["pass_throughput"] = result["throughput_ratio_vs_predict"] >= THROUGHPUT_TARGET
    result["pass_latency"] = serving["p50_ms"] < methods["model(x)"]["p50_ms"]
    result["pass_tflite_latency"] = methods["model.tflite"]["p50_ms"] < serving["p50_ms"]
    return result


def report(result):
    methods = result["methods"]
    serving = methods["serving_default"]
    rows = [[name, f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}", f"{m['examples_per_sec']:,.0f}",
             f"{serving['examples_per_sec'] / m['examples_per_sec']:.2f}x"]
            for name, m in methods.items()]
    return "\n".join([
        f"serving: keras_mnist_cnn, SavedModel serving_default and Keras in {result['precision']} vs TFLite "
        f"({result['tflite_runtime']}: model.tflite float32, model_int8.tflite int8, whatever the precision)",
        f"machine: {result['machine']}",
        "",
        common.table(["method", "batch-1 p50 ms", "batch-1 p99 ms",
                      f"batch-{result['batch_size']} ex/s",
                      f"serving_default's batch-{result['batch_size']} ex/s over this"], rows),
        "",
        f"batch {result['batch_size']}: serving_default / model.predict = "
        f"{result['throughput_ratio_vs_predict']:.2f}x  (target >= {THROUGHPUT_TARGET:g}x)  "
        f"{common.verdict(result['pass_throughput'])}",
        f"batch 1: p50 serving_default {serving['p50_ms']:.2f} ms vs model(x) "
        f"{methods['model(x)']['p50_ms']:.2f} ms ({result['p50_ratio_model_call_over_serving']:.1f}x lower; "
        f"target: lower)  {common.verdict(result['pass_latency'])}",
        f"batch 1: p50 model.tflite {methods['model.tflite']['p50_ms']:.2f} ms vs serving_default "
        f"{serving['p50_ms']:.2f} ms (target: lower)  {common.verdict(result['pass_tflite_latency'])}",
    ])


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_enum("precision", "auto", config_lib.PRECISIONS, "The precision policy (auto: the trainer's default).")
    flags.DEFINE_integer("batch_size", 256, "Batch for the throughput figure.", lower_bound=1)
    flags.DEFINE_integer("latency_rounds", 200, "Batch-1 calls per method.", lower_bound=1)
    flags.DEFINE_integer("throughput_rounds", 20, "Large-batch calls per method.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the model's weights.", lower_bound=0)


def main(argv):
    del argv
    result = run(precision=FLAGS.precision, batch_size=FLAGS.batch_size,
                 latency_rounds=FLAGS.latency_rounds, throughput_rounds=FLAGS.throughput_rounds,
                 seed=FLAGS.seed)
    print(report(result))
    return 0


if __name__ == "__main__":
    define_flags()  # here, not at import: tests import several benchmarks at once
    app.run(main, flags_parser=flags_lib.parse_or_exit)
