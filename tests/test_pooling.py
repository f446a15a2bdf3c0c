"""models.pooling.MaxPooling2D: Keras' layer, with MaxPoolGrad's routing compiled by XLA while training."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from dropzoo import performance
from models import pooling


@pytest.fixture(autouse=True)
def xla_routing():
    """The trainer's setting (XLA-compiled routing) for every test; Keras' gradient after."""
    performance.compile_pooling_gradient()
    yield
    pooling.set_routing_compiler(None)


def gradients(layer, x, dy, training):
    """(output, input gradient) of `layer` on `x`, in a tf.function as the trainer runs it."""
    @tf.function
    def run(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
        return y, tape.gradient(y, x, output_gradients=dy)

    return run(x, dy)


def tied_inputs(shape, seed, dtype="float32"):
    """ReLU-like inputs with many ties: zeros, and values rounded to halves."""
    rng = np.random.default_rng(seed)
    return tf.constant(np.round(np.maximum(rng.normal(size=shape), 0) * 2) / 2, dtype=dtype)


@pytest.mark.parametrize("pool_size,shape", [
    ((2, 2), (3, 8, 8, 4)),
    ((2, 2), (2, 7, 9, 3)),  # a "valid" pool drops the last row and column: they get no gradient
    ((3, 3), (2, 9, 9, 2)),
    ((2, 3), (2, 6, 9, 2)),
])
def test_gradient_is_bitwise_maxpoolgrad_ties_included(pool_size, shape):
    ours = pooling.MaxPooling2D(pool_size)
    keras_own = keras.layers.MaxPooling2D(pool_size)
    for seed in range(3):
        x = tied_inputs(shape, seed)
        dy = tf.random.stateless_normal(keras_own.compute_output_shape(shape), seed=[seed, 1])
        y, dx = gradients(ours, x, dy, training=True)
        y_keras, dx_keras = gradients(keras_own, x, dy, training=True)
        np.testing.assert_array_equal(y.numpy(), y_keras.numpy())
        np.testing.assert_array_equal(dx.numpy(), dx_keras.numpy())
        # Ties: exactly one position per window takes its gradient.
        assert np.count_nonzero(dx.numpy()) == np.count_nonzero(dy.numpy())


def test_bfloat16_gradient_matches_keras():
    x = tied_inputs((2, 8, 8, 4), 0, "bfloat16")
    dy = tf.cast(tf.random.stateless_normal((2, 4, 4, 4), seed=[0, 2]), "bfloat16")
    ours = gradients(pooling.MaxPooling2D(2, dtype="mixed_bfloat16"), x, dy, training=True)
    theirs = gradients(keras.layers.MaxPooling2D(2, dtype="mixed_bfloat16"), x, dy, training=True)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype == tf.bfloat16
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("pool_size,shape", [((2, 2), (2, 7, 9, 3)), ((3, 3), (2, 9, 9, 2))])
def test_routing_in_plain_keras_ops_is_maxpoolgrad_too(pool_size, shape):
    x = tied_inputs(shape, 7)
    y = keras.layers.MaxPooling2D(pool_size)(x)
    dy = tf.random.stateless_normal(y.shape, seed=[7, 7])
    expected = tf.raw_ops.MaxPoolGrad(orig_input=x, orig_output=y, grad=dy, ksize=[1, *pool_size, 1],
                                      strides=[1, *pool_size, 1], padding="VALID")
    np.testing.assert_array_equal(pooling.route_gradient(x, y, dy, pool_size).numpy(), expected.numpy())


def test_only_training_with_disjoint_windows_and_a_compiler_takes_the_fast_gradient():
    x = tf.zeros((1, 8, 8, 2))
    assert pooling.MaxPooling2D(2)._fast_gradient(x, True)
    pooling.set_routing_compiler(None)  # outside the trainer: Keras' own gradient
    assert not pooling.MaxPooling2D(2)._fast_gradient(x, True)
    performance.compile_pooling_gradient()
    assert not pooling.MaxPooling2D(2)._fast_gradient(x, False)  # inference: Keras' op only
    assert not pooling.MaxPooling2D(2, strides=1)._fast_gradient(x, True)
    assert not pooling.MaxPooling2D(2, padding="same")._fast_gradient(x, True)
    # The others still pool and differentiate as Keras' layer does.
    x = tied_inputs((2, 7, 7, 3), 5)
    for kwargs in ({"strides": 1}, {"padding": "same"}):
        dy_shape = keras.layers.MaxPooling2D(2, **kwargs).compute_output_shape(x.shape)
        dy = tf.random.stateless_normal(dy_shape, seed=[5, 5])
        for a, b in zip(gradients(pooling.MaxPooling2D(2, **kwargs), x, dy, True),
                        gradients(keras.layers.MaxPooling2D(2, **kwargs), x, dy, True)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_zoo_networks_pool_with_it_and_save_it(tmp_path):
    model = models.build("keras_mnist_cnn", seed=0)
    assert type(model.get_layer("pool1")) is pooling.MaxPooling2D
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded.get_layer("pool1")) is pooling.MaxPooling2D
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
