"""keras.layers.Activation with a faster ReLU training gradient; LeakyReLU in ops graphs keep (end of file).

ReLU's gradient is TensorFlow's ReluGrad kernel, `upstream * (y > 0)`. Under
mixed_bfloat16 on a CPU that kernel is Eigen's element-wise bfloat16 code:
3.8 ms of a 19.5 ms keras_mnist_cnn step on a 2-core Intel Xeon with AMX
(benchmarks/step_profile.py), more than any op but the convolutions.

`Activation` here keeps Keras' forward op and, while training, computes the
same function, `upstream` where y > 0 else `upstream * 0`, as Keras ops compiled by the
caller's compiler (the trainer passes TensorFlow's XLA), which fuses it into
one vectorized pass. The result is bitwise ReluGrad's (tests/test_activations.py):
the same values in the same dtype, signed zeros and NaNs included. Other activations,
inference, the serving signature and the TFLite models run Keras' own ops,
and until `set_gradient_compiler(fn)` has named a compiler the layer is
Keras' Activation in every respect, so a zoo model trained outside the
trainer keeps Keras' gradient. This package stays Keras-only.
"""
import functools

import keras
from keras import ops

_GRADIENT_COMPILER = None  # fn -> compiled fn; None: Keras' own gradient


def set_gradient_compiler(compiler):
    """Has every zoo ReLU compute its training gradient through `compiler(fn)`; None: Keras' gradient."""
    global _GRADIENT_COMPILER
    if compiler is not _GRADIENT_COMPILER:
        _GRADIENT_COMPILER = compiler
        _compiled_gradient.cache_clear()


def relu_gradient(outputs, upstream):
    """ReluGrad: `upstream` where the ReLU's output is positive, else `upstream * 0`.

    `upstream * 0`, not 0: ReluGrad multiplies by zero, which keeps the sign
    of a negative gradient (-0.0) and turns NaN and inf into NaN. XLA rewrites
    a product with a 0/1 mask into a select with +0.0, so the select is
    written out with ReluGrad's own zeros.
    """
    return ops.where(ops.greater(outputs, ops.zeros_like(outputs)), upstream, upstream * ops.zeros_like(upstream))


@functools.lru_cache(maxsize=None)
def _compiled_gradient():
    return _GRADIENT_COMPILER(relu_gradient)


def _passed_on(outputs, upstream):
    """The gradient of a ReLU whose max pooling applies ReluGrad itself (models.pooling.fold_relu)."""
    return upstream


@keras.saving.register_keras_serializable(package="dropout_zoo")
class Activation(keras.layers.Activation):
    """keras.layers.Activation; for ReLU while training, ReluGrad as compiled Keras ops."""

    # Set by models.pooling.fold_relu: (inputs, training) -> True where the max pooling
    # reading this ReLU's output applies its gradient (on the pooled grid) instead.
    gradient_taken_by = None

    def _fast_gradient(self, training):
        return bool(training and _GRADIENT_COMPILER is not None and self.activation is keras.activations.relu)

    def call(self, inputs, training=None):
        if not self._fast_gradient(training):
            return super().call(inputs)
        if self.gradient_taken_by is not None and self.gradient_taken_by(inputs, training):
            gradient_of = _passed_on
        else:
            gradient_of = _compiled_gradient()

        @ops.custom_gradient
        def rectified(x):
            y = ops.relu(x)

            def gradient(*args, upstream=None):
                return gradient_of(y, args[0] if upstream is None else upstream)

            return y, gradient

        return rectified(inputs)


@keras.saving.register_keras_serializable(package="dropout_zoo")
class LeakyReLU(keras.layers.LeakyReLU):
    """keras.layers.LeakyReLU written as `x if x > 0 else negative_slope * x`: the values and gradient of its
    kernel, in ops no graph rewrite fuses into the layers before it. TensorFlow 2.21's oneDNN remapper fuses
    Conv2D + BiasAdd + Add + LeakyRelu in a graph and drops the slope (computing the default 0.2), so a residual
    block's LeakyReLU(0.1) trained and served another function than it computes eagerly."""

    def call(self, inputs):
        return _leaky(inputs, self.negative_slope)


@keras.saving.register_keras_serializable(package="dropout_zoo")
class ReLU(keras.layers.ReLU):
    """keras.layers.ReLU; with a negative slope alone (no max_value, no threshold), which Keras computes with the
    LeakyRelu op, in the ops of the zoo's LeakyReLU (the same fusion drops its slope)."""

    def call(self, inputs):
        if self.negative_slope and self.max_value is None and not self.threshold:
            return _leaky(inputs, self.negative_slope)
        return super().call(inputs)


def _leaky(inputs, slope):
    """LeakyRelu's values and gradient: `inputs` where positive, else `inputs * slope`."""
    return ops.where(ops.greater(inputs, ops.zeros_like(inputs)), inputs, inputs * slope)
