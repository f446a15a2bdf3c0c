"""Each speed change of the training step measured alone, in one process, alternating.

    python benchmarks/step_parts.py                       # keras_mnist_cnn, trainer precision (auto)
    python benchmarks/step_parts.py --precision=float32 --rounds=5

Builds the trainer's model (canonical keras_mnist_cnn: 0.25 after pooling,
0.5 after dense1), the trainer's pooling gradient, and trains it on batches
of the MNIST sample in the ways of `WAYS`, each the one before with one more
change:

* masks: Keras' own draw (one float per unit, `keras.random.dropout`, as the
  zoo drew before models/masks.py) or the zoo's generator (k-bit fields,
  applied in one XLA-fused pass);
* optimizer: Keras' Adadelta, or the same update fused into one XLA
  computation (dropzoo/optimizers.py);
* ReLU gradient: TensorFlow's ReluGrad kernel, or the same product as one
  XLA pass (models/activations.py), or, for the ReLU before max pooling,
  applied by the pooling gradient on the pooled grid (`models.pooling.fold_relu`).

The last way is the trainer's step today; the ratios say what each change
bought, measured alone against the way before it, in the same run.

A step's time on a shared VM moves by more than a kernel's saving, so the
fold is also timed alone (`--kernels`, `pool_backward`): pool1's backward
pass on its own inputs (batch 128, 24x24x64, the trainer's precision), the
routing then ReLU's gradient (two XLA kernels) against the routing with
ReLU's gradient folded in (one, on the pooled grid), alternating, with the
same bits checked.

Each round trains every way for `--steps` steps (after a warm-up call that
traces), in turn, the order rotated each round; the result is each way's
milliseconds per step in its fast phase (the median of its fastest
quarter of rounds: a shared VM runs at full or about half speed by turns), and the ratios to the
first way (all Keras) and to the way before.
"""
import functools
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
from dropzoo import config as config_lib  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import optimizers  # noqa: E402
from dropzoo import performance  # noqa: E402
from models import activations  # noqa: E402
from models import layers as dropout_lib  # noqa: E402
from models import pooling  # noqa: E402

WAYS = (("keras masks", "keras optimizer", "keras relu gradient"),
        ("zoo masks", "keras optimizer", "keras relu gradient"),
        ("zoo masks", "fused optimizer", "keras relu gradient"),
        ("zoo masks", "fused optimizer", "compiled relu gradient"),
        ("zoo masks", "fused optimizer", "relu gradient folded into pooling's"))


class KerasMaskDropout(dropout_lib.Float32Dropout):
    """The zoo's dropout as it drew before models/masks.py: Keras' float-per-unit draw, in float32."""

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            x = keras.ops.cast(inputs, "float32")
            out = keras.random.dropout(x, self.rate, noise_shape=self.noise_shape,
                                       seed=dropout_lib.seed_source(self))
            return keras.ops.cast(out, inputs.dtype)
        return inputs


def build(masks, optimizer, relu, precision):
    keras.mixed_precision.set_global_policy(performance.choose_precision(precision)[0])
    performance.compile_pooling_gradient()
    performance.compile_dropout_masks()
    if relu == "keras relu gradient":
        activations.set_gradient_compiler(None)
    else:
        performance.compile_activation_gradient()
    model = models.build("keras_mnist_cnn", seed=0)
    if relu != "relu gradient folded into pooling's":  # each ReLU computes its own gradient
        model.get_layer("conv2.act").gradient_taken_by = None
        model.get_layer("pool1").folds_relu = False
    if masks == "keras masks":
        model = keras.models.clone_model(model, clone_function=lambda layer: KerasMaskDropout.from_config(
            layer.get_config()) if isinstance(layer, dropout_lib.Float32Dropout) else layer.__class__.from_config(
            layer.get_config()))
    opt = optimizers.make("adadelta", 1.0, fused=optimizer == "fused optimizer")
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", steps_per_execution=1)
    keras.mixed_precision.set_global_policy("float32")
    return model


def run(x, y, rounds, steps, precision, log=print):
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(128, drop_remainder=True).repeat()
    trainers = {}
    for way in WAYS:
        model = build(*way, precision)
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)  # trace and warm up
        trainers[way] = model
    times = {way: [] for way in WAYS}
    for r in range(rounds):
        order = WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]
        for way in order:
            start = time.perf_counter()
            trainers[way].fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
            times[way].append(1000 * (time.perf_counter() - start) / steps)
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{' + '.join(w)} {times[w][-1]:.1f} ms" for w in WAYS))
    # A shared VM runs whole rounds at about half speed at times: each way's figure is its fast phase.
    median = {way: 1000 / common.fast_phase_rate([1000 / ms for ms in t]) for way, t in times.items()}
    return {"policy": performance.choose_precision(precision)[0], "ms_per_step": median,
            "ratio_to_old": {way: median[way] / median[WAYS[0]] for way in WAYS},
            "ratio_to_previous": {way: median[way] / median[WAYS[max(i - 1, 0)]] for i, way in enumerate(WAYS)},
            "rounds": rounds, "steps": steps}


def pool_backward(precision, rounds=40, shape=(128, 24, 24, 64)):
    """ms of pool1's backward pass: routing then ReLU's gradient, against the two folded (medians)."""
    policy = performance.choose_precision(precision)[0]
    dtype = keras.mixed_precision.Policy(policy).compute_dtype
    compiled = performance.xla_compiler()
    route = compiled(functools.partial(pooling.route_gradient, pool_size=(2, 2)))
    folded = compiled(functools.partial(pooling.route_gradient, pool_size=(2, 2), relu=True))
    relu = compiled(activations.relu_gradient)
    rng = np.random.default_rng(0)
    y = tf.nn.relu(tf.constant(np.round(rng.normal(size=shape) * 4) / 4, dtype))  # ties and zeros
    p = tf.nn.max_pool2d(y, 2, 2, "VALID")
    g = tf.constant(rng.normal(size=p.shape), dtype)
    ways = {"routing, then ReLU's gradient": lambda: relu(y, route(y, p, g)),
            "ReLU's gradient folded into the routing": lambda: folded(y, p, g)}
    first, second = (fn().numpy().view("uint16" if dtype != "float32" else "uint32") for fn in ways.values())
    if not np.array_equal(first, second):
        raise AssertionError("the folded gradient is not the two kernels' bits")
    times = {name: [] for name in ways}
    for r in range(rounds):
        for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            start = time.perf_counter()
            ways[name]().numpy()
            times[name].append(1000 * (time.perf_counter() - start))
    return {"policy": policy, "rounds": rounds, "ms": {name: float(np.median(t)) for name, t in times.items()}}


def report_pool_backward(result):
    names = list(result["ms"])
    rows = [(name, f"{ms:.2f}", f"{ms / result['ms'][names[0]]:.2f}x") for name, ms in result["ms"].items()]
    return (f"pool1's backward pass alone ({result['policy']}, batch 128, 24x24x64), median of "
            f"{result['rounds']} calls each, alternating; the same bits\n"
            + common.table(["way", "ms", "of the first"], rows))


def report(result):
    rows = [(" + ".join(way), f"{result['ms_per_step'][way]:.1f}", f"{result['ratio_to_old'][way]:.2f}x",
             f"{result['ratio_to_previous'][way]:.2f}x") for way in WAYS]
    return (f"step_parts: keras_mnist_cnn canonical ({result['policy']}), batch 128, fast phase "
            f"(median of the fastest quarter) of {result['rounds']} rounds of {result['steps']} steps\n\n"
            + common.table(["way", "ms per step", "of the first way", "of the way before"], rows))


def main(argv):
    del argv
    f = flags.FLAGS
    source = common.source_from_flags()
    print(f"machine: {common.machine()}")  # (each ratio below names its CPU)
    print(report_pool_backward(pool_backward(f.precision)))
    if f.kernels:
        return
    x, y = common.arrays(source.train)
    result = run(x, y, f.rounds, f.steps, f.precision)
    print(report(result))
    note = common.few_epochs_note(f.rounds, unit="round")
    if note:
        print(note)


if __name__ == "__main__":
    common.define_data_flags()
    flags.DEFINE_integer("rounds", 8, "Rounds; each trains every way once, in turn.", lower_bound=1)
    flags.DEFINE_integer("steps", 28, "Training steps per way and round.", lower_bound=1)
    flags.DEFINE_enum("precision", "auto", config_lib.PRECISIONS,
                      "Precision policy (auto: what the trainer picks here).")
    flags.DEFINE_bool("kernels", False, "Time only pool1's backward pass, folded or not, not the training steps.")
    app.run(main, flags_parser=flags_lib.parse_or_exit)
