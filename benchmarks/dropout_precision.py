"""Dropout in every precision: what the zoo's float32-noise layers fix, and what they cost.

    python benchmarks/dropout_precision.py                     # 6 epochs x 2 rounds, mnist_sample
    python benchmarks/dropout_precision.py --epochs=3 --rounds=1 --train_examples=1024
    python benchmarks/dropout_precision.py --idx_dir=DIR       # the full MNIST IDX files in DIR
    python benchmarks/dropout_precision.py --rounds=0          # the precision table alone, in seconds

Where bfloat16 is emulated (an AVX2-only CPU: 55-110 ex/s) the defaults take
20-40 min on 2 cores; `--epochs=6 --rounds=3 --train_examples=1280` took ~18
minutes on a shared one.

Prints, in one run:

1. The table behind the README's "Dropout in every precision": 10^6 units
   of 1.0 through inverted dropout (seed 1) in training mode under float32,
   mixed_bfloat16 and mixed_float16, at rates 0.1 and 0.4, Keras' own
   `keras.layers.Dropout` beside the zoo's `Float32Dropout`: the fraction
   dropped (and how many binomial standard errors it is from the rate), the
   value a kept unit of 1.0 comes out as, and E[output] / E[input] on inputs
   uniform in [0.5, 1.5] (the promise: 1).
2. The cost: keras_mnist_cnn (canonical: inverted dropout 0.25 after the
   pooling layer, 0.5 after dense1) trained under mixed_bfloat16 with Keras'
   own dropout layers and with the zoo's, the same initial weights, data and
   dropout seeds, the two taking turns (`--rounds`, the order swapped every
   round). Examples/s per epoch, training steps only, the first epoch of each
   run excluded; the headline is `common.fast_phase_rate` over each way's
   timed epochs, the all-epochs figure beside it. The zoo's layers draw their
   portable masks here: the trainer's XLA-compiled masks
   (`performance.compile_dropout_masks`) are not what this compares.
3. The dropout layers alone: forward + backward of the model's two dropout
   layers on one batch of its own activation shapes, per training step.

Where the CPU has no bfloat16 instructions (avx512_bf16 / amx_bf16) bfloat16
is emulated and a training step is many times slower than in float32; the
report says so, as its examples/s do not represent a bfloat16 machine.
"""
import os
import sys
import time

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
from dropzoo import callbacks as callbacks_lib  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import performance  # noqa: E402
from models import layers as dropout_lib  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
TABLE_RATES = (0.1, 0.4)
TRAIN_POLICY = "mixed_bfloat16"
# Each zoo layer and the Keras layer it subclasses (and computes like, in float32).
KERAS_LAYER = {
    dropout_lib.Float32Dropout: keras.layers.Dropout,
    dropout_lib.Float32SpatialDropout2D: keras.layers.SpatialDropout2D,
    dropout_lib.Float32GaussianDropout: keras.layers.GaussianDropout,
}
WAYS = ("keras", "zoo")


def _under(policy, build):
    """`build()` with `policy` as the global policy; float32 is put back after."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        return build()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _float64(tensor):
    return keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32")).astype(np.float64)


def layer_row(policy, rate, way, *, units=10**6, seed=1):
    """One row of the table: Keras' Dropout or the zoo's, under `policy`."""
    make = {"keras": lambda: keras.layers.Dropout(rate, seed=seed),
            "zoo": lambda: dropout_lib.make_dropout("inverted", rate, seed=seed)}[way]
    layer = _under(policy, make)
    out = _float64(layer(np.ones(units, "float32"), training=True))
    dropped = float(np.mean(out == 0))
    kept = sorted(set(out[out != 0].tolist()))
    x = np.random.default_rng(seed).uniform(0.5, 1.5, units).astype("float32")
    x_used = _float64(keras.ops.cast(x, layer.compute_dtype))
    ratio = float(_float64(layer(x, training=True)).mean() / x_used.mean())
    se = np.sqrt(rate / (1 - rate) * np.sum(x_used**2)) / np.sum(x_used)
    return {"policy": policy, "rate": rate, "layer": way, "dropped": dropped,
            "dropped_z": (dropped - rate) / np.sqrt(rate * (1 - rate) / units),
            "kept_value": kept[0] if len(kept) == 1 else None, "exact_kept_value": 1 / (1 - rate),
            "mean_ratio": ratio, "mean_ratio_se": float(se)}


def precision_table(units=10**6, seed=1):
    return [layer_row(policy, rate, way, units=units, seed=seed)
            for policy in POLICIES for rate in TABLE_RATES for way in WAYS]


def with_keras_dropout(model):
    """A copy of `model`, same weights and seeds, whose zoo dropout layers are Keras' own."""
    def clone(layer):
        return KERAS_LAYER.get(type(layer), type(layer)).from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def build_pair(seed, num_classes, input_shape):
    """{way: uncompiled keras_mnist_cnn under TRAIN_POLICY}, identical but for dropout."""
    zoo = _under(TRAIN_POLICY, lambda: models.build(
        "keras_mnist_cnn", "canonical", num_classes=num_classes, input_shape=input_shape, seed=seed))
    return {"keras": _under(TRAIN_POLICY, lambda: with_keras_dropout(zoo)), "zoo": zoo}


def train(model, x, y, *, epochs, batch_size):
    """Trains like the classic example; returns the steady per-epoch examples/s."""
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=keras.optimizers.Adadelta(learning_rate=1.0))
    throughput = callbacks_lib.Throughput()  # times training steps only
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[throughput])
    return common.steady_rates([s for _, s in throughput.epochs], len(x))


def dropout_step_ms(model, batch_size, repeats=20):
    """Milliseconds of forward + backward through the model's dropout layers, per step."""
    layers = models.dropout_layers(model)
    inputs = [tf.cast(tf.random.uniform((batch_size, *layer.input.shape[1:])), layer.compute_dtype)
              for layer in layers]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            total = tf.add_n([tf.reduce_sum(tf.cast(layer(x, training=True), "float32"))
                              for layer, x in zip(layers, inputs)])
        return tape.gradient(total, inputs)

    step()  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        [g.numpy() for g in step()]
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def run(x, y, *, epochs=6, batch_size=128, rounds=2, units=10**6, seed=0, log=print):
    """The table, the two ways' training speed and the dropout layers' own time.

    `x`: uint8 images [N, H, W, C]; `y`: integer labels. Returns every figure
    the report prints.
    """
    log(f"precision table: {units:,} units per layer ...")
    table = precision_table(units)
    x = x.astype("float32") / 255
    num_classes = int(y.max()) + 1
    rates = {way: [] for way in WAYS}
    layer_ms = {way: [] for way in WAYS}
    for r in range(rounds):
        pair = build_pair(seed, num_classes, x.shape[1:])
        for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
            log(f"round {r + 1}/{rounds}: {way} dropout, {epochs} epochs on {len(x):,} examples ...")
            rates[way] += train(pair[way], x, y, epochs=epochs, batch_size=batch_size)
            layer_ms[way].append(dropout_step_ms(pair[way], batch_size))
    training = {way: {"examples_per_sec": common.fast_phase_rate(rates[way]),
                      "all_epochs_examples_per_sec": len(rates[way]) / sum(1 / r for r in rates[way]),
                      "num_epochs_timed": len(rates[way]),
                      "dropout_ms_per_step": float(np.median(layer_ms[way]))}
                for way in WAYS} if rounds else None  # --rounds=0: the table alone
    flags_found = sorted(set(performance.BF16_CPU_FLAGS) & performance.cpu_flags())
    return {"machine": common.machine(), "bf16_cpu_flags": flags_found,
            "bf16_native": bool(flags_found), "policy": TRAIN_POLICY, "epochs": epochs,
            "batch_size": batch_size, "rounds": rounds, "num_train": len(x), "units": units,
            "table": table, "training": training,
            **({"zoo_vs_keras": training["zoo"]["examples_per_sec"] / training["keras"]["examples_per_sec"],
                "zoo_vs_keras_all_epochs": (training["zoo"]["all_epochs_examples_per_sec"]
                                            / training["keras"]["all_epochs_examples_per_sec"])} if training else {})}


def report(result):
    """The printed text."""
    rows = []
    for row in result["table"]:
        kept = "-" if row["kept_value"] is None else f"{row['kept_value']:.5f}"
        rows.append([row["policy"], f"{row['rate']:g}",
                     "keras.layers.Dropout" if row["layer"] == "keras" else "zoo Float32Dropout",
                     f"{row['dropped']:.5f} ({row['dropped_z']:+.1f})",
                     f"{kept} ({row['exact_kept_value']:.5f})",
                     f"{row['mean_ratio']:.5f} (+-{row['mean_ratio_se']:.5f})"])
    training = result["training"] or {}
    speed = [[f"{way} dropout", f"{training[way]['examples_per_sec']:,.0f}",
              f"{training[way]['all_epochs_examples_per_sec']:,.0f}",
              str(training[way]["num_epochs_timed"]), f"{training[way]['dropout_ms_per_step']:.2f}"]
             for way in WAYS if way in training]
    cpu = ", ".join(result["bf16_cpu_flags"]) or "neither avx512_bf16 nor amx_bf16"
    lines = [
        "dropout_precision: inverted dropout in training mode, seed 1",
        f"machine: {result['machine']}; bfloat16 instructions: {cpu}",
        "",
        f"{result['units']:,} units of 1.0 (kept value; exact in brackets), "
        "and E[out]/E[in] on inputs uniform in [0.5, 1.5] (1 is exact; +- 1 standard error):",
        common.table(["policy", "rate", "layer", "dropped (z)", "kept value", "E[out]/E[in]"], rows),
    ]
    if not training:
        return "\n".join(lines + ["", "(--rounds=0: no training timed)"])
    lines += [
        "",
        f"keras_mnist_cnn training under {result['policy']}, batch {result['batch_size']}, "
        f"{result['epochs']} epochs x {result['rounds']} rounds per way on "
        f"{result['num_train']:,} examples, taking turns:",
        common.table(["dropout layers", "ex/s", "all-epochs ex/s", "epochs timed",
                      "dropout fwd+bwd ms/step"], speed),
        f"zoo / keras: {result['zoo_vs_keras']:.3f}x at full speed, "
        f"{result['zoo_vs_keras_all_epochs']:.3f}x over all epochs",
        "ex/s: training steps only, first epoch of each run excluded; the median of each way's "
        "fastest quarter of epochs.",
    ]
    note = common.few_epochs_note(min(training[way]["num_epochs_timed"] for way in WAYS))
    lines += [note] if note else []
    if not result["bf16_native"]:
        lines.append("NOTE: this CPU has no bfloat16 instructions, so bfloat16 is emulated here and "
                     "these examples/s do not represent a bfloat16 machine; the dropout layers' "
                     "own ms/step is the cost to compare.")
    return "\n".join(lines)


def main(argv):
    del argv
    if not flags.FLAGS.rounds:  # the table alone: no data to load
        print(report(run(np.zeros((1, 28, 28, 1), np.uint8), np.zeros(1, np.int64), rounds=0)))
        return 0
    source = common.source_from_flags()
    x, y = common.arrays(source.train)
    if flags.FLAGS.train_examples:
        x, y = x[:flags.FLAGS.train_examples], y[:flags.FLAGS.train_examples]
    result = run(x, y, epochs=flags.FLAGS.epochs, batch_size=flags.FLAGS.batch_size,
                 rounds=flags.FLAGS.rounds)
    print(report(result))
    return 0


if __name__ == "__main__":
    # Defined here, not at import, so importing this module (tests do) adds no flags.
    flags.DEFINE_integer("epochs", 6, "Epochs per training run (the first is not timed).", lower_bound=2)
    flags.DEFINE_integer("rounds", 2, "Training runs per way, the ways taking turns (0: the precision table alone).",
                         lower_bound=0)
    flags.DEFINE_integer("batch_size", 128, "Batch size, as the classic example.", lower_bound=1)
    flags.DEFINE_integer("train_examples", 0, "Train on the first N examples (0: all).", lower_bound=0)
    common.define_data_flags()
    app.run(main, flags_parser=flags_lib.parse_or_exit)
