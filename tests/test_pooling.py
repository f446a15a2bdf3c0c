"""models.pooling.MaxPooling2D: Keras' layer, with MaxPoolGrad's routing compiled by XLA while training."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from dropzoo import performance
from models import activations
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
        dy = tf.random.stateless_normal(keras_own.compute_output_shape(shape), seed=[seed, 1]).numpy()
        dy.flat[::7] = -0.0  # MaxPoolGrad routes it as +0.0
        y, dx = gradients(ours, x, dy, training=True)
        y_keras, dx_keras = gradients(keras_own, x, dy, training=True)
        np.testing.assert_array_equal(y.numpy(), y_keras.numpy())
        assert_same_bits(dx.numpy(), dx_keras.numpy())
        # Ties: exactly one position per window takes its gradient.
        assert np.count_nonzero(dx.numpy()) == np.count_nonzero(dy)


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


def relu_pool_chain(policy, fold):
    """The zoo's ReLU -> 2x2 max pooling, the pool taking the ReLU's gradient where `fold`."""
    relu, pool = activations.Activation("relu", dtype=policy), pooling.MaxPooling2D(2, dtype=policy)
    if fold:
        pooling.fold_relu(relu, pool)
    return relu, pool, keras.Sequential([relu, pool])


def pre_activations(shape, seed, dtype):
    """Ties, exact and signed zeros, and whole windows at or below zero; upstream with -0.0, infs and NaN."""
    rng = np.random.default_rng(seed)
    z = np.round(rng.normal(size=shape) * 2) / 2
    z[:, :2, :2, :] = -np.abs(z[:, :2, :2, :])  # a window with no positive unit
    z.flat[:4] = [0.0, -0.0, 1e-30, -1e-30]
    dy = rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
    dy.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, -1.0, 0.0]
    return tf.constant(z, dtype=dtype), tf.constant(dy, dtype=dtype)


def assert_same_bits(ours, theirs):
    """Equal bit patterns (so -0.0 is not 0.0); any NaN equals any NaN."""
    nan = np.isnan(ours.astype("float32"))
    np.testing.assert_array_equal(nan, np.isnan(theirs.astype("float32")))
    bits = np.uint32 if ours.dtype == np.float32 else np.uint16
    np.testing.assert_array_equal(ours.view(bits)[~nan], theirs.view(bits)[~nan])


@pytest.mark.parametrize("policy,dtype", [("float32", "float32"), ("mixed_bfloat16", "bfloat16")])
def test_folded_relu_gradient_is_relugrad_of_maxpoolgrad_bit_for_bit(policy, dtype):
    performance.compile_activation_gradient()
    try:
        relu, pool, folded = relu_pool_chain(policy, fold=True)
        _, _, separate = relu_pool_chain(policy, fold=False)
        for seed in range(3):
            z, dy = pre_activations((2, 8, 10, 3), seed, dtype)
            assert relu.gradient_taken_by(z, True)  # the ReLU passes its gradient on ...
            y, dz = gradients(folded, z, dy, training=True)
            # ... and the pool's routing applies it: TensorFlow's two kernels, one after the other.
            a = tf.nn.relu(z)
            p = tf.nn.max_pool2d(a, 2, 2, "VALID")
            routed = tf.raw_ops.MaxPoolGrad(orig_input=a, orig_output=p, grad=dy, ksize=[1, 2, 2, 1],
                                            strides=[1, 2, 2, 1], padding="VALID")
            expected = tf.raw_ops.ReluGrad(gradients=routed, features=a)
            assert dz.dtype == expected.dtype == tf.as_dtype(dtype)
            assert_same_bits(y.numpy(), p.numpy())
            assert_same_bits(dz.numpy(), expected.numpy())
            assert_same_bits(gradients(separate, z, dy, training=True)[1].numpy(), expected.numpy())
    finally:
        activations.set_gradient_compiler(None)


def test_a_folded_relu_keeps_its_gradient_where_the_pool_does_not_route():
    performance.compile_activation_gradient()
    try:
        relu, pool, folded = relu_pool_chain("float32", fold=True)
        z, dy = pre_activations((2, 8, 8, 3), 4, "float32")
        expected = gradients(relu_pool_chain("float32", fold=False)[2], z, dy, training=True)[1]
        pooling.set_routing_compiler(None)  # the pool takes Keras' MaxPoolGrad: the ReLU must do its part
        assert not relu.gradient_taken_by(z, True)
        assert_same_bits(gradients(folded, z, dy, training=True)[1].numpy(), expected.numpy())
    finally:
        activations.set_gradient_compiler(None)
    with pytest.raises(ValueError, match="ReLU"):
        pooling.fold_relu(activations.Activation("tanh"), pooling.MaxPooling2D(2))


def test_zoo_networks_fold_a_relu_into_the_pool_only_when_nothing_is_between_them():
    def folded(model):
        return {layer.name for layer in model.layers if getattr(layer, "folds_relu", False)}

    canonical = models.build("keras_mnist_cnn", seed=0)
    assert folded(canonical) == {"pool1"}
    assert canonical.get_layer("conv2.act").gradient_taken_by is not None
    assert canonical.get_layer("conv1.act").gradient_taken_by is None  # conv2 reads it
    # Dropout between the ReLU and the pool: the ReLU computes its own gradient.
    between = models.build("keras_mnist_cnn", "conv2.post:0.25,dense1.post:0.5", seed=0)
    assert folded(between) == set() and between.get_layer("conv2.act").gradient_taken_by is None
    assert folded(models.build("keras_mnist_cnn", activation="tanh", seed=0)) == set()
    assert folded(models.build("tf_layers_cnn", seed=0)) == {"pool1", "pool2"}


def test_rewritten_keras_models_fold_a_relu_only_when_the_pool_is_its_sole_reader():
    def folded(model):
        return {layer.name for layer in model.layers if getattr(layer, "folds_relu", False)}

    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(4, 3, name="conv2")(x)
    x = keras.layers.Activation("relu", name="relu2")(x)  # a ReLU layer of its own
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Dropout(0.5, name="drop")(keras.layers.Flatten(name="flat")(x))
    chain = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))
    rewritten = models.place_dropout(chain, "none")
    assert folded(rewritten) == {"pool1", "pool2"}
    assert rewritten.get_layer("conv1.act").gradient_taken_by is not None
    assert rewritten.get_layer("relu2").gradient_taken_by is not None
    assert folded(models.place_dropout(chain, "conv1.post:0.25")) == {"pool2"}  # dropout between them

    # The ReLU's output also read elsewhere: neither pool may take its gradient.
    inputs = keras.Input((12, 12, 1))
    a = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    pooled = keras.layers.Flatten(name="flat1")(keras.layers.MaxPooling2D(2, name="pool1")(a))
    spread = keras.layers.Flatten(name="flat2")(a)
    joined = keras.layers.Concatenate(name="join")([pooled, spread])
    branched = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(joined))
    assert folded(models.place_dropout(branched, "none")) == set()


def test_a_rewritten_model_trains_with_the_fold_to_the_same_gradients():
    performance.compile_activation_gradient()
    try:
        inputs = keras.Input((10, 10, 1))
        x = keras.layers.MaxPooling2D(2, name="pool")(keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs))
        source = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten(name="flat")(x)))
        folded, separate = (models.place_dropout(source, "none", seed=0) for _ in range(2))
        separate.get_layer("conv.act").gradient_taken_by = None
        separate.get_layer("pool").folds_relu = False
        images = tf.constant(np.round(np.random.default_rng(3).normal(size=(4, 10, 10, 1)) * 2) / 2, "float32")

        def grads(model):
            @tf.function
            def run():
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(model(images, training=True) ** 2)
                return tape.gradient(loss, model.trainable_variables)
            return run()

        assert folded.get_layer("pool").folds_relu
        for a, b in zip(grads(folded), grads(separate)):
            assert_same_bits(a.numpy(), b.numpy())
    finally:
        activations.set_gradient_compiler(None)
