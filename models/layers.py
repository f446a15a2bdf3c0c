"""Dropout layers for every kind the zoo compares, built from Keras 3 ops only.

`make_dropout` is the one place that turns (kind, rate, spatial) into a layer,
and `check_kind` the one place that says which kinds exist.
Where Keras ships the layer (Dropout, SpatialDropout2D, GaussianDropout) the
zoo uses it, so the models are what users copy; the two forms Keras lacks are
defined here:

- `ClassicDropout`: the original paper's form (Srivastava et al., 2014). Kept
  units pass unscaled while training; at inference every unit is multiplied
  by the keep probability 1 - rate. Keras' `Dropout` is the "inverted" form:
  it scales kept units by 1 / (1 - rate) while training and is the identity
  at inference. Both have the same expected output in each mode.
- `SpatialGaussianDropout`: Gaussian multiplicative noise shared across the
  spatial positions of a feature map (one noise value per channel), the
  Gaussian counterpart of SpatialDropout2D.
"""
import math

import keras
from keras import ops

from models.sites import check_rate

KINDS = ("inverted", "classic", "gaussian")


def check_kind(kind):
    """Returns `kind`, or raises ValueError unless it is one of KINDS."""
    if kind not in KINDS:
        raise ValueError(f"unknown dropout kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return kind


def _channel_noise_shape(inputs):
    """One noise value per (example, channel) of an NHWC feature map."""
    shape = ops.shape(inputs)
    return (shape[0], 1, 1, shape[-1])


@keras.saving.register_keras_serializable(package="dropout_zoo")
class ClassicDropout(keras.layers.Layer):
    """Dropout without training-time rescaling; scales by 1 - rate at inference."""

    def __init__(self, rate, spatial=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate)
        self.spatial = bool(spatial)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training:
            return inputs * ops.cast(1.0 - self.rate, inputs.dtype)
        if self.rate == 0:
            return inputs
        shape = _channel_noise_shape(inputs) if self.spatial else ops.shape(inputs)
        uniform = keras.random.uniform(shape, seed=self.seed_generator)
        keep = ops.cast(ops.greater_equal(uniform, self.rate), inputs.dtype)
        return inputs * keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, spatial=self.spatial, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="dropout_zoo")
class SpatialGaussianDropout(keras.layers.Layer):
    """Multiplicative N(1, rate / (1 - rate)) noise, one draw per channel."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        noise = keras.random.normal(
            _channel_noise_shape(inputs),
            mean=1.0,
            stddev=math.sqrt(self.rate / (1.0 - self.rate)),
            dtype=self.compute_dtype,
            seed=self.seed_generator,
        )
        return inputs * noise

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


def make_dropout(kind, rate, *, spatial=False, seed=None, name=None):
    """The dropout layer of `kind` ('inverted', 'classic', 'gaussian')."""
    check_kind(kind)
    if kind == "inverted":
        if spatial:
            return keras.layers.SpatialDropout2D(rate, seed=seed, name=name)
        return keras.layers.Dropout(rate, seed=seed, name=name)
    if kind == "classic":
        return ClassicDropout(rate, spatial=spatial, seed=seed, name=name)
    if kind == "gaussian":
        if spatial:
            return SpatialGaussianDropout(rate, seed=seed, name=name)
        return keras.layers.GaussianDropout(rate, seed=seed, name=name)


def dropout_layers(model):
    """The model's dropout layers (any kind), in graph order."""
    types = (
        keras.layers.Dropout,
        keras.layers.SpatialDropout2D,
        keras.layers.GaussianDropout,
        ClassicDropout,
        SpatialGaussianDropout,
    )
    return [layer for layer in model.layers if isinstance(layer, types)]


class AlwaysOn(keras.layers.Layer):
    """Runs a dropout layer in training mode whatever `training` says.

    Only the dropout layer is switched on: calling the whole model with
    training=True would also put layers such as BatchNormalization into
    training mode (batch statistics, moving-average updates).
    """

    def __init__(self, layer, **kwargs):
        super().__init__(name=f"{layer.name}.mc", dtype=layer.dtype_policy, **kwargs)
        self.layer = layer

    def call(self, inputs, training=None):
        return self.layer(inputs, training=True)

    def compute_output_shape(self, input_shape):
        return input_shape


def mc_dropout_model(model):
    """A model sharing `model`'s layers and weights whose dropout is always on.

    Averaging its outputs over several calls is Monte Carlo dropout
    (Gal & Ghahramani, 2016).
    """
    dropout = set(id(layer) for layer in dropout_layers(model))

    def clone(layer):
        return AlwaysOn(layer) if id(layer) in dropout else layer

    return keras.models.clone_model(model, clone_function=clone)
