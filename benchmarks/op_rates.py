"""What the hardware does alone: the rates a training step is measured against.

    references = op_rates.References(model, batch_size=128, precision="float32")
    references.sample()              # call it several times across a benchmark run
    references.layer_rates()         # {"conv2": GFLOP/s, ...}: each layer's linear op alone
    references.matmul_rate()         # GFLOP/s of a 2048x2048 matmul
    references.linear_seconds()      # a batch's forward + backward of every linear op, alone

A layer's linear op is its convolution or matmul as the model runs it: the
same Keras layer class and config (kernel size, strides, padding, dilation,
groups), the model's precision policy, the model's input shape and batch,
but no bias and no activation. Alone means forward and backward in one
tf.function on random data, nothing else: the forward op, then the weight
gradient and the input gradient where the model needs it (models.flops'
rule: not for a layer only weightless layers separate from the input).
Two details keep the figure honest. The function returns every output, the
forward one too: an unused forward convolution is pruned by TensorFlow's
graph optimizer, and the rate would then count FLOPs that never ran (3/2 of
the true rate). And the backward ops wait for the forward one, as in a
training step, where the output gradient depends on the output: with random
output gradients TensorFlow would otherwise run all three at once.

Every reference is timed call by call, and `sample()` adds a few more calls
each time; rates are the median of the fastest quarter of all calls
(common.fast_phase_rate), the rule the benchmarks use for epochs, so that a
reference and the training it is compared with are both rated at the
machine's full speed.
"""
import time

import keras
import tensorflow as tf

import models.flops
from benchmarks import common

MATMUL_SIZE = 2048


def _compute_dtype(precision):
    return keras.DTypePolicy(precision).compute_dtype


def linear_op_step(layer, batch_size, precision, input_gradient):
    """(a tf.function running `layer`'s linear op forward and backward, its arguments).

    `layer` is a built Conv or Dense layer of a model; the op copies its
    config without bias or activation, under the `precision` policy.
    """
    config = {**layer.get_config(), "activation": None, "use_bias": False,
              "name": f"{layer.name}_alone", "dtype": keras.DTypePolicy(precision)}
    for key in ("kernel_regularizer", "activity_regularizer", "kernel_constraint"):
        config.pop(key, None)
    op = type(layer).from_config(config)
    input_shape = (batch_size, *layer.input.shape[1:])
    op.build(input_shape)
    dtype = _compute_dtype(precision)
    x = tf.random.uniform(input_shape, dtype=dtype)
    dy = tf.random.normal((batch_size, *layer.output.shape[1:]), dtype=dtype)

    @tf.function(jit_compile=False)
    def step(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = op(x)
        with tf.control_dependencies([y]):  # backward after forward, as in a training step
            dy = tf.identity(dy)
        sources = [op.kernel] + ([x] if input_gradient else [])
        # y is returned with the gradients: every op must run.
        return y, tape.gradient(y, sources, output_gradients=dy)

    return step, (x, dy)


def matmul_step(size, precision):
    """(a tf.function multiplying two size x size matrices, its arguments)."""
    dtype = _compute_dtype(precision)
    a = tf.random.normal((size, size), dtype=dtype)
    b = tf.random.normal((size, size), dtype=dtype)
    return tf.function(lambda a, b: tf.matmul(a, b), jit_compile=False), (a, b)


def time_calls(fn, args, calls):
    """Seconds of each of `calls` calls of `fn(*args)` (after one untimed call that traces it)."""
    fn(*args)
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(*args)  # eager CPU and GPU tensors: the call returns when its outputs are computed
        seconds.append(time.perf_counter() - start)
    return seconds


class References:
    """The linear ops of `model`, and a large matmul, timed alone under `precision`."""

    def __init__(self, model, *, batch_size, precision, calls=6, matmul_size=MATMUL_SIZE):
        self.flops = models.flops.count(model)
        self.batch_size = batch_size
        self.precision = precision
        self.calls = calls
        self.steps = {}  # name -> (fn, args, FLOPs per call)
        for layer in model.layers:
            if layer.name in self.flops.by_layer:
                forward, training = self.flops.by_layer[layer.name]
                fn, args = linear_op_step(layer, batch_size, precision,
                                          input_gradient=training == 3 * forward)
                self.steps[layer.name] = (fn, args, training * batch_size)
        fn, args = matmul_step(matmul_size, precision)
        self.matmul_name = f"matmul {matmul_size}x{matmul_size}"
        self.steps[self.matmul_name] = (fn, args, 2 * matmul_size ** 3)
        self.seconds = {name: [] for name in self.steps}

    def sample(self):
        """Times every reference `calls` more times."""
        for name, (fn, args, _) in self.steps.items():
            self.seconds[name] += time_calls(fn, args, self.calls)

    def _fast_seconds(self, name):
        if not self.seconds[name]:
            raise RuntimeError("References.sample() was never called")
        return 1 / common.fast_phase_rate([1 / s for s in self.seconds[name]])

    def rate(self, name):
        """GFLOP/s of reference `name` (a layer name, or matmul_name) at the machine's full speed."""
        return self.steps[name][2] / self._fast_seconds(name) / 1e9

    def layer_rates(self):
        return {name: self.rate(name) for name in self.flops.by_layer}

    def matmul_rate(self):
        return self.rate(self.matmul_name)

    def layer_seconds(self):
        """Seconds per batch of each layer's linear op alone, forward and backward."""
        return {name: self._fast_seconds(name) for name in self.flops.by_layer}

    def linear_seconds(self):
        """Seconds per batch of all the linear ops, each alone: a training step's floor here."""
        return sum(self.layer_seconds().values())
