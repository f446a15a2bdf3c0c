"""keras.layers.MaxPooling2D with a faster training gradient.

TensorFlow's CPU kernel for the max-pooling gradient (MaxPoolGrad) took
17 ms per step for keras_mnist_cnn's pool1 (batch 128, 24x24x64, float32,
2 AVX2 cores): about 10% of a training step (benchmarks/step_profile.py),
more than conv1's forward and backward passes together.

For windows that do not overlap (pool_size == strides, "valid" padding,
channels_last), that gradient is pure routing: each window's output
gradient goes to the first position, in row-major order, that holds the
window's maximum, and every other position gets zero. `MaxPooling2D` here
keeps Keras' forward op and replaces only that gradient, while training,
with the same routing written in Keras ops. The results are bitwise
MaxPoolGrad's, ties included (tests/test_pooling.py); only the time
differs. Everything else is Keras' layer: inference, the serving signature
and the TFLite models run Keras' own op, and other pool shapes take Keras'
path unchanged.

The routing is a handful of elementwise ops: run one by one they cost
nearly what MaxPoolGrad does, so it only pays compiled. It is used once
`set_routing_compiler(fn)` has named a compiler (fn wraps the routing):
the trainer passes TensorFlow's XLA (`jit_compile=True`), which fuses it into
~2.4 ms against MaxPoolGrad's ~17 (AVX2, 2 cores). Until then the layer is
Keras' MaxPooling2D in every respect, gradient included, so a zoo model
trained outside the trainer (the classic example's `fit`) is the original.
This package stays Keras-only; the compiler comes from the caller.

A ReLU whose output only the pool reads (conv -> ReLU -> pool, as the zoo's
networks have it) need not compute its gradient on the unpooled grid:
`fold_relu(activation, pool)` has the routing apply it instead, on the
pooled grid, a quarter of the size. Where a window routes its gradient, the
ReLU's output is the window's maximum, so ReLU's gradient there is
`relu_gradient(maximum, upstream)`; everywhere else the routing gives +0,
which ReLU's gradient leaves +0. The result is the two gradients' bits, one
pass over the unpooled grid fewer (tests/test_pooling.py).
"""
import functools

import keras
from keras import ops

from models import activations

_ROUTING_COMPILER = None  # fn -> compiled fn; None: Keras' own gradient


def set_routing_compiler(compiler):
    """Has every MaxPooling2D route its gradient through `compiler(fn)`; None: Keras' gradient."""
    global _ROUTING_COMPILER
    if compiler is not _ROUTING_COMPILER:  # the trainer names it for every model it builds
        _ROUTING_COMPILER = compiler
        _compiled_routing.cache_clear()


def route_gradient(inputs, outputs, gradient, pool_size, relu=False):
    """MaxPoolGrad for disjoint `pool_size` windows: `gradient` to each window's first maximum.

    `relu`: the inputs are a ReLU's outputs, and the result is that ReLU's
    gradient of the routed one (ReluGrad(routed, inputs)), computed on the pooled grid.
    """
    # MaxPoolGrad adds each window's gradient to zeros: a -0.0 arrives as +0.0.
    gradient = ops.where(ops.not_equal(gradient, ops.zeros_like(gradient)), gradient, ops.zeros_like(gradient))
    if relu:
        gradient = activations.relu_gradient(outputs, gradient)
    pool_h, pool_w = pool_size
    rows, columns, channels = outputs.shape[1], outputs.shape[2], inputs.shape[3]
    height, width = rows * pool_h, columns * pool_w
    windows = ops.reshape(inputs[:, :height, :width, :], (-1, rows, pool_h, columns, pool_w, channels))
    zero = ops.zeros_like(gradient)
    taken, routed = None, []
    for row in range(pool_h):
        for column in range(pool_w):  # row-major: the first maximum takes the gradient
            hit = ops.equal(windows[:, :, row, :, column, :], outputs)
            first = hit if taken is None else ops.logical_and(hit, ops.logical_not(taken))
            taken = first if taken is None else ops.logical_or(taken, first)
            routed.append(ops.where(first, gradient, zero))
    routed = ops.reshape(ops.stack(routed, axis=3), (-1, rows, columns, pool_h, pool_w, channels))
    routed = ops.reshape(ops.transpose(routed, (0, 1, 3, 2, 4, 5)), (-1, height, width, channels))
    # Rows and columns a "valid" pool leaves out get no gradient.
    return ops.pad(routed, ((0, 0), (0, inputs.shape[1] - height), (0, inputs.shape[2] - width), (0, 0)))


@functools.lru_cache(maxsize=None)
def _compiled_routing(pool_size, relu):
    return _ROUTING_COMPILER(functools.partial(route_gradient, pool_size=pool_size, relu=relu))


def fold_relu(activation, pool):
    """Has `pool`'s routing apply `activation`'s ReLU gradient and `activation` pass its gradient on.

    Only for a ReLU whose output nothing but `pool` reads (models/network.py
    and models/keras_rewrite.py link such pairs). The activation asks the pool, each call, whether it
    will route its gradient (`takes_relu_gradient`), and keeps its own
    gradient where not; the pool applies ReLU's gradient on every fast
    route, which gives the same bits even after ReLU's own (it is idempotent).
    """
    if not (isinstance(activation, activations.Activation) and activation.activation is keras.activations.relu):
        raise ValueError(f"fold_relu needs the zoo's ReLU Activation, got {activation!r}")
    if not isinstance(pool, MaxPooling2D):
        raise ValueError(f"fold_relu needs the zoo's MaxPooling2D, got {pool!r}")
    pool.folds_relu = True
    activation.gradient_taken_by = pool.takes_relu_gradient


@keras.saving.register_keras_serializable(package="dropout_zoo")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """keras.layers.MaxPooling2D; while training, MaxPoolGrad's routing as compiled Keras ops."""

    folds_relu = False  # set by fold_relu: the routing also applies the ReLU before it

    def takes_relu_gradient(self, inputs, training):
        """True where this call routes its gradient itself and applies the folded ReLU's gradient."""
        return self.folds_relu and self._fast_gradient(inputs, training)

    def _fast_gradient(self, inputs, training):
        return bool(training and _ROUTING_COMPILER is not None
                    and tuple(self.pool_size) == tuple(self.strides) and self.padding == "valid"
                    and self.data_format == "channels_last" and None not in inputs.shape[1:])

    def call(self, inputs, training=None):
        if not self._fast_gradient(inputs, training):
            return super().call(inputs)
        route = _compiled_routing(tuple(self.pool_size), self.folds_relu)
        pool = super().call

        @ops.custom_gradient
        def pooled(x):
            y = pool(x)

            def gradient(*args, upstream=None):
                return route(x, y, args[0] if upstream is None else upstream)

            return y, gradient

        return pooled(inputs)
