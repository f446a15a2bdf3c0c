"""models.activations.Activation: Keras' layer, with ReLU's gradient compiled by XLA while training."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from dropzoo import performance
from models import activations


@pytest.fixture(autouse=True)
def xla_gradient():
    """The trainer's setting (XLA-compiled ReLU gradient) for every test; Keras' gradient after."""
    performance.compile_activation_gradient()
    yield
    activations.set_gradient_compiler(None)


def gradients(layer, x, dy, training=True):
    """(output, input gradient) of `layer` on `x`, in a tf.function as the trainer runs it."""
    @tf.function
    def run(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
        return y, tape.gradient(y, x, output_gradients=dy)

    return run(x, dy)


def awkward(shape, seed, dtype):
    """Inputs and upstream gradients with exact zeros, signed zeros, ties and a NaN and an inf upstream."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=shape) * 4) / 4  # many exact zeros
    x.flat[:4] = [0.0, -0.0, 1e-30, -1e-30]
    dy = rng.normal(size=shape)
    dy.flat[4:8] = [np.nan, np.inf, -np.inf, -0.0]
    return tf.constant(x, dtype=dtype), tf.constant(dy, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_relu_gradient_is_bitwise_relugrad(dtype):
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[dtype]
    ours = activations.Activation("relu", dtype=policy)
    keras_own = keras.layers.Activation("relu", dtype=policy)
    for seed in range(3):
        x, dy = awkward((2, 6, 6, 5), seed, dtype)
        y, dx = gradients(ours, x, dy)
        y_keras, dx_keras = gradients(keras_own, x, dy)
        assert dx.dtype == dx_keras.dtype == tf.as_dtype(dtype)
        np.testing.assert_array_equal(y.numpy(), y_keras.numpy())
        expected = tf.raw_ops.ReluGrad(gradients=dy, features=y_keras)
        for theirs in (dx_keras, expected):
            assert_same_bits(dx.numpy(), theirs.numpy())


def assert_same_bits(ours, theirs):
    """Equal bit patterns (so -0.0 is not 0.0), except that any NaN equals any NaN: a NaN's sign is noise."""
    nan = np.isnan(ours.astype("float32"))
    np.testing.assert_array_equal(nan, np.isnan(theirs.astype("float32")))
    bits = np.uint32 if ours.dtype == np.float32 else np.uint16
    np.testing.assert_array_equal(ours.view(bits)[~nan], theirs.view(bits)[~nan])


def test_only_relu_while_training_with_a_compiler_takes_the_fast_gradient():
    assert activations.Activation("relu")._fast_gradient(True)
    assert not activations.Activation("relu")._fast_gradient(False)  # inference: Keras' op only
    for other in ("sigmoid", "tanh", "elu", "linear"):
        assert not activations.Activation(other)._fast_gradient(True)
    activations.set_gradient_compiler(None)  # outside the trainer: Keras' own gradient
    assert not activations.Activation("relu")._fast_gradient(True)
    performance.compile_activation_gradient()
    # The others still compute and differentiate as Keras' layer does.
    x, dy = awkward((3, 7), 4, "float32")
    for name in ("sigmoid", "tanh", "elu"):
        for a, b in zip(gradients(activations.Activation(name), x, dy),
                        gradients(keras.layers.Activation(name), x, dy)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_training_with_it_gives_keras_weights_bit_for_bit():
    """A few float32 Adadelta steps of keras_mnist_cnn: the same weights with either ReLU gradient."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 64)

    def trained(compiled):
        activations.set_gradient_compiler(None)
        if compiled:
            performance.compile_activation_gradient()
        keras.mixed_precision.set_global_policy("float32")
        model = models.build("keras_mnist_cnn", seed=0)
        model.compile(optimizer=keras.optimizers.Adadelta(1.0), loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        return model.get_weights()

    for a, b in zip(trained(True), trained(False)):
        np.testing.assert_array_equal(a, b)


def test_zoo_networks_and_rewritten_keras_models_use_it_and_save_it(tmp_path):
    model = models.build("keras_mnist_cnn", seed=0)
    assert type(model.get_layer("conv1.act")) is activations.Activation
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded.get_layer("conv1.act")) is activations.Activation
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    # A Keras model's own Activation layers become the zoo's in the rewrite.
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Activation("relu", name="act")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(keras.layers.Flatten(name="flat")(hidden))
    rewritten = models.place_dropout(keras.Model(inputs, outputs), "none")
    assert type(rewritten.get_layer("act")) is activations.Activation


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_zoos_leaky_relus_are_keras_values_and_gradient_bit_for_bit(dtype):
    x = tf.constant(np.concatenate([np.random.default_rng(0).normal(size=500), [0.0, -0.0, 1e-30, -1e-30]]),
                    dtype)
    pairs = [(activations.LeakyReLU(negative_slope=s), keras.layers.LeakyReLU(negative_slope=s))
             for s in (0.1, 0.2, 0.3, 1.5)]
    pairs += [(activations.ReLU(**kw), keras.layers.ReLU(**kw))
              for kw in ({"negative_slope": 0.1}, {}, {"negative_slope": 0.1, "max_value": 6.0}, {"threshold": 0.5})]
    for ours, theirs in pairs:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y_ours, y_theirs = ours(x), theirs(x)
        np.testing.assert_array_equal(tf.bitcast(tf.cast(y_ours, tf.float32), tf.int32),
                                      tf.bitcast(tf.cast(y_theirs, tf.float32), tf.int32))
        np.testing.assert_array_equal(tape.gradient(y_ours, x), tape.gradient(y_theirs, x))


@pytest.mark.parametrize("layer,zoo", [(keras.layers.LeakyReLU, activations.LeakyReLU),
                                       (keras.layers.ReLU, activations.ReLU)])
def test_a_residual_blocks_leaky_relu_keeps_its_slope_in_a_graph(layer, zoo):
    """TensorFlow 2.21's oneDNN remapper fuses Conv2D + BiasAdd + Add + LeakyRelu in a graph and computes the
    default slope 0.2: a LeakyReLU(0.1) (or a ReLU(negative_slope=0.1), the same op) after a residual Add trained
    and served another function (the export check failed in float32 without saying why, and passed within
    bfloat16's tolerance)."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(image)
    x = keras.layers.Add()([x, keras.layers.Conv2D(4, 3, padding="same", name="c2")(x)])
    x = layer(negative_slope=0.1, name="leaky")(x)
    source = keras.Model(image, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(x)))
    variant = models.place_dropout(source, "none")
    assert type(variant.get_layer("leaky")) is zoo
    images = tf.constant(np.random.default_rng(1).normal(size=(4, 8, 8, 1)), tf.float32)
    eager = source(images, training=False)
    np.testing.assert_allclose(tf.function(lambda v: variant(v, training=False))(images), eager, atol=1e-6)
