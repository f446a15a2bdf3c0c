"""FLOP counting of the linear ops (models/flops.py) against hand computations."""
import keras

import models
from models import flops


def test_keras_mnist_cnn_by_hand():
    conv1 = 2 * (26 * 26 * 32) * (3 * 3 * 1)  # 26x26x32 outputs, each a 3x3x1 window
    conv2 = 2 * (24 * 24 * 64) * (3 * 3 * 32)
    dense1 = 2 * (12 * 12 * 64) * 128  # after 2x2 pooling: 9,216 inputs
    logits = 2 * 128 * 10
    counted = flops.count(models.build("keras_mnist_cnn", seed=0))
    assert counted.by_layer == {
        "conv1": (conv1, 2 * conv1),  # the first layer: no input gradient
        "conv2": (conv2, 3 * conv2), "dense1": (dense1, 3 * dense1), "logits": (logits, 3 * logits)}
    assert counted.forward == conv1 + conv2 + dense1 + logits == 23_984_896
    assert counted.training == 71_565_312 and counted.dominant == "conv2"


def test_dense_mlp_by_hand_and_other_layers_count_nothing():
    counted = flops.count(models.build("dense_mlp", "canonical", norm="batch", seed=0))
    dense1, logits = 2 * 784 * 128, 2 * 128 * 10
    assert counted.by_layer == {"dense1": (dense1, 2 * dense1), "logits": (logits, 3 * logits)}
    assert counted.training == 409_088  # BN, ReLU, dropout and the softmax add nothing


def test_strided_same_padded_conv_and_dense_on_feature_maps():
    image = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(image)  # no weights: conv1 still needs no input gradient
    x = keras.layers.Conv2D(16, 5, strides=2, padding="same", name="conv1")(x)  # 16x16x16
    x = keras.layers.Dense(8, name="per_pixel")(x)  # on [batch, 16, 16, 16]
    model = keras.Model(image, keras.layers.Dense(4, name="out")(keras.layers.Flatten()(x)))
    counted = flops.count(model)
    conv1 = 2 * (16 * 16 * 16) * (5 * 5 * 3)
    per_pixel = 2 * (16 * 16) * 16 * 8
    out = 2 * (16 * 16 * 8) * 4
    assert counted.by_layer == {"conv1": (conv1, 2 * conv1), "per_pixel": (per_pixel, 3 * per_pixel),
                                "out": (out, 3 * out)}
