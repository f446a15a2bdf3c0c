"""MC dropout evaluation (T samples) against deterministic evaluation, in one run.

    python benchmarks/mc_dropout.py                 # T=20, batch 256 (~1 min on 2 cores)
    python benchmarks/mc_dropout.py --samples=50 --precision=float32
    python benchmarks/mc_dropout.py --parts         # the first mask alone: portable (GatherNd, GatherV2), fused, words

Builds canonical keras_mnist_cnn under the trainer's precision, exports it
with `dropzoo.export.export_saved_model`, reloads it, and times, per batch
of raw uint8 images:

* `serving_default`: one deterministic pass (the unit every ratio is in);
* `mc_dropout_draws` (T samples): the servable draws: the part before the
  first dropout site once, the rest T times, masks in plain ops;
* `mc_dropout_draws_xla` (T samples): the same draws, bit for bit, with the
  masks fused by XLA (one pass instead of the portable gather and AND):
  what `eval.py --mc_samples=T` calls. TF Serving runs it only when started
  with --xla_cpu_compilation_enabled.
* `mc_dropout` (T samples): `mc_dropout_draws` plus the mean, std, entropy and mutual
  information a server returns;
* naive MC (T samples): every sample a whole pass over the tiled batch, as
  the export did before it reused the prefix (a tf.function of
  `models.MonteCarlo(model, reuse_prefix=False)`, traced here).

Calls take turns, one of each per round, so other load hits all alike.
Target: the draws `eval.py` calls (`mc_dropout_draws_xla`) at T=20 cost at
most 5x a deterministic pass; the servable `mc_dropout_draws`' ratio is
printed beside it.
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
from dropzoo import config as config_lib  # noqa: E402
from dropzoo import export as export_lib  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import performance  # noqa: E402
from dropzoo import serving  # noqa: E402
from dropzoo.preprocess import scale  # noqa: E402

TARGET = 5.0
TARGET_SAMPLES, TARGET_BATCH = 20, 256  # the setting the target is set at (the docs' --mc_samples, eval.py's batch)
METHODS = ("serving_default", "mc_dropout_draws_xla", "mc_dropout_draws", "mc_dropout", "naive MC")


def callers(signatures, naive, samples):
    """{method: f(uint8 images) -> NumPy result}."""
    image, count = export_lib.INPUT_KEY, tf.constant(samples, tf.int32)
    seed = tf.constant(0, tf.int32)
    probabilities = export_lib.PROBABILITIES_KEY
    return {
        "serving_default": lambda raw: signatures[export_lib.SIGNATURE_KEY](**{image: raw})[
            probabilities].numpy(),
        "mc_dropout_draws_xla": lambda raw: signatures[export_lib.MC_DRAWS_XLA_KEY](
            **{image: raw, export_lib.SAMPLES_KEY: count, export_lib.SEED_KEY: seed})[probabilities].numpy(),
        "mc_dropout_draws": lambda raw: signatures[export_lib.MC_DRAWS_KEY](
            **{image: raw, export_lib.SAMPLES_KEY: count, export_lib.SEED_KEY: seed})[probabilities].numpy(),
        "mc_dropout": lambda raw: signatures[export_lib.MC_DROPOUT_KEY](
            **{image: raw, export_lib.SAMPLES_KEY: count})[probabilities].numpy(),
        "naive MC": lambda raw: naive(raw, count).numpy(),
    }


def time_rounds(calls, argument, rounds, warmup=2):
    """{method: [seconds per call of fn(argument)]}, the methods taking turns each round."""
    return common.time_in_turns(calls, (tf.constant(argument),), rounds, warmup)


def _model_and_images(precision, batch_size, seed):
    """(policy, canonical keras_mnist_cnn built under `precision`, a batch of random uint8 images)."""
    policy, _ = performance.choose_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = models.build("keras_mnist_cnn", "canonical", seed=seed)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    raw = np.random.default_rng(seed).integers(0, 256, (batch_size,) + tuple(model.inputs[0].shape[1:]),
                                               dtype=np.uint8)
    return policy, model, raw


def run(*, precision="auto", samples=20, batch_size=256, rounds=10, seed=0, log=print):
    performance.compile_dropout_masks()  # as the trainer has it: the export must still trace portable masks
    policy, model, raw = _model_and_images(precision, batch_size, seed)
    whole = models.MonteCarlo(model, reuse_prefix=False)
    naive = tf.function(lambda raw, count: whole.draws(scale(raw), count))
    with tempfile.TemporaryDirectory() as workdir:
        path = export_lib.export_saved_model(model, os.path.join(workdir, "saved_model"))
        loaded = tf.saved_model.load(path)
        log(f"batch {batch_size}, T={samples}: {rounds} rounds ...")
        seconds = time_rounds(callers(loaded.signatures, naive, samples), raw, rounds)
    # The median call: robust to the shared machine's slow phases, which hit all methods alike.
    median = {name: common.percentile(values, 50) for name, values in seconds.items()}
    unit = median["serving_default"]
    result = {"machine": common.machine(), "precision": policy, "batch_size": batch_size,
              "samples": samples, "rounds": rounds,
              "methods": {name: {"ms": 1000 * median[name], "ratio": median[name] / unit} for name in METHODS}}
    result["mc_over_deterministic"] = result["methods"]["mc_dropout_draws_xla"]["ratio"]
    result["portable_over_deterministic"] = result["methods"]["mc_dropout_draws"]["ratio"]
    # Judged only at the target's own setting: T and the batch move the ratio (None: not judged).
    at_target = (samples, batch_size) == (TARGET_SAMPLES, TARGET_BATCH)
    result["passed"] = result["mc_over_deterministic"] <= TARGET if at_target else None
    return result


PARTS = ("the site's samples, one elementwise pass", "portable masks (table gather and AND)",
         "portable masks, rows gathered by GatherV2 (before GatherNd)", "fused masks (XLA)",
         "the random words alone")


def run_parts(*, precision="auto", samples=20, batch_size=256, rounds=20, seed=0):
    """ms of the first dropout site's masks over `samples` copies of a batch, each way alone, alternating.

    The site is canonical keras_mnist_cnn's first (after pool1: 12x12x64 units
    a sample). Both mask ways give the same bits (tests/test_masks.py), and
    so does the portable way with its table rows looked up by GatherV2, as
    before `performance.gather_table_rows`. A plain elementwise pass over
    the output is the floor any unfused way pays per pass, and the random
    words are drawn inside both mask ways.
    """
    performance.compile_dropout_masks()  # as the trainer has it
    policy, model, raw = _model_and_images(precision, batch_size, seed)
    mc = models.MonteCarlo(model)
    features = mc.prefix(scale(tf.constant(raw)), training=False)
    site_samples = tf.tile(features, [samples, 1, 1, 1])

    def masked(scope, gather=performance.gather_table_rows):
        def draw(x):
            with models.request_seed(tf.constant(seed, tf.int32)):
                return models.mc_dropout.bernoulli_samples(mc.first, x, samples)
        models.masks.set_row_gather(gather)
        try:
            with scope:  # the mask way and the lookup are fixed when the function is traced
                return tf.function(draw).get_concrete_function(tf.TensorSpec(features.shape, features.dtype))
        finally:
            models.masks.set_row_gather(performance.gather_table_rows)

    words_shape = (samples, *features.shape)
    calls = {  # each f(features)
        PARTS[0]: tf.function(lambda features: tf.negative(site_samples)),
        PARTS[1]: masked(models.masks.portable()),
        PARTS[2]: masked(models.masks.portable(), gather=tf.gather),
        PARTS[3]: masked(models.masks.fused(performance.xla_compiler())),
        PARTS[4]: tf.function(lambda features: models.masks.draw_words(words_shape, mc.first.rate, seed)),
    }
    fused = calls[PARTS[3]](features).numpy()
    for name in PARTS[1:3]:
        if not np.array_equal(calls[name](features).numpy(), fused):
            raise AssertionError(f"{name} and the fused masks differ")
    seconds = time_rounds(calls, features, rounds)
    return {"machine": common.machine(), "precision": policy, "batch_size": batch_size, "samples": samples,
            "rounds": rounds, "units": int(np.prod(words_shape)),
            "ms": {name: 1000 * common.percentile(seconds[name], 50) for name in PARTS}}


def report_parts(result):
    rows = [[name, f"{ms:.1f}"] for name, ms in result["ms"].items()]
    return "\n".join([
        f"MC dropout's first mask alone: keras_mnist_cnn canonical ({result['precision']}), batch "
        f"{result['batch_size']}, T={result['samples']} ({result['units']:,} units), median of "
        f"{result['rounds']} calls each, taking turns",
        f"machine: {result['machine']}",
        "",
        common.table(["part", "ms"], rows),
    ])


def report(result):
    rows = [[name, f"{m['ms']:.1f}", f"{m['ratio']:.2f}x"] for name, m in result["methods"].items()]
    return "\n".join([
        f"MC dropout: keras_mnist_cnn canonical ({result['precision']}), batch {result['batch_size']}, "
        f"T={result['samples']}, median of {result['rounds']} calls each",
        f"machine: {result['machine']}",
        "",
        common.table(["method", "ms per batch", "x deterministic"], rows),
        "",
        f"mc_dropout_draws_xla (T={result['samples']}, what eval.py calls) / serving_default = "
        f"{result['mc_over_deterministic']:.2f}x  (target <= {TARGET:g}x at T={TARGET_SAMPLES}, batch "
        f"{TARGET_BATCH})  " + ("not judged at this T and batch" if result["passed"] is None else
                                common.verdict(result["passed"])),
        f"mc_dropout_draws (servable, plain ops) / serving_default = {result['portable_over_deterministic']:.2f}x",
    ])


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_enum("precision", "auto", config_lib.PRECISIONS, "The precision policy (auto: the trainer's default).")
    flags.DEFINE_integer("samples", 20, "MC dropout samples T.", lower_bound=2)
    flags.DEFINE_integer("batch_size", 256, "Examples per call.", lower_bound=1)
    flags.DEFINE_integer("rounds", 10, "Timed calls per method.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the model's weights.", lower_bound=0)
    flags.DEFINE_bool("parts", False, "Instead, time the first dropout site's masks alone: portable, fused, "
                      "the random words, and a plain pass over the same output.")
    flags.register_multi_flags_validator(  # the signatures refuse more in one call: said here, not as a traceback
        ["samples", "batch_size", "parts"],
        lambda given: given["parts"] or given["samples"] * given["batch_size"] <= serving.MAX_PASSES,
        message=f"--samples x --batch_size must be at most {serving.MAX_PASSES}, the passes an MC signature draws "
                "in one call; give a smaller --batch_size or --samples")


def main(argv):
    del argv
    if FLAGS.parts:
        print(report_parts(run_parts(precision=FLAGS.precision, samples=FLAGS.samples,
                                     batch_size=FLAGS.batch_size, rounds=FLAGS.rounds, seed=FLAGS.seed)))
        return 0
    result = run(precision=FLAGS.precision, samples=FLAGS.samples, batch_size=FLAGS.batch_size,
                 rounds=FLAGS.rounds, seed=FLAGS.seed)
    print(report(result))
    return 0


if __name__ == "__main__":
    define_flags()  # here, not at import: tests import several benchmarks at once
    app.run(main, flags_parser=flags_lib.parse_or_exit)
