"""Dropout layers for every kind the zoo compares, built from Keras 3 ops only.

`make_dropout` is the one place that turns (kind, rate, spatial) into a layer,
and `check_kind` the one place that says which kinds exist.

Every layer here draws its random numbers, makes its keep/drop decision and
applies its scale in float32, whatever the dtype policy, and rounds each
output element once, to the compute dtype (after float32's own rounding of
the product, 2^-24 relative). Keras 3.15's own layers draw and compare in
the compute dtype: under `mixed_bfloat16` its Dropout at rate 0.4 drops
40.59% of 10^6 units (12 standard errors off) and scales kept units by
1.66406 (1 / 0.6 rounded to bfloat16), so the expected training output is
0.9885 of the inference output. Hence three thin subclasses of Keras' own
layers, which keep Keras' arithmetic and only move it to float32:

- `Float32Dropout` (keras.layers.Dropout) and `Float32SpatialDropout2D`
  (keras.layers.SpatialDropout2D): inverted dropout, the kept units scaled
  by 1 / (1 - rate) while training, the identity at inference;
- `Float32GaussianDropout` (keras.layers.GaussianDropout): multiplicative
  N(1, rate / (1 - rate)) noise while training.

Under the float32 policy the casts are no-ops, so their masks and outputs are
bitwise those of the Keras layers for the same seed (tests/test_precision.py).
The two forms Keras lacks are defined here, in float32 as well:

- `ClassicDropout`: the original paper's form (Srivastava et al., 2014). Kept
  units pass unscaled while training; at inference every unit is multiplied
  by the keep probability 1 - rate. Inverted dropout has the same expected
  output in each mode.
- `SpatialGaussianDropout`: Gaussian multiplicative noise shared across the
  spatial positions of a feature map (one noise value per channel), the
  Gaussian counterpart of SpatialDropout2D.
"""
import math

import keras
from keras import ops

from models.sites import check_rate

KINDS = ("inverted", "classic", "gaussian")
BERNOULLI_KINDS = ("inverted", "classic")  # a mask of 0s and non-negative keeps
NOISE_DTYPE = "float32"


def check_kind(kind):
    """Returns `kind`, or raises ValueError unless it is one of KINDS."""
    if kind not in KINDS:
        raise ValueError(f"unknown dropout kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return kind


def _in_float32(inputs, apply):
    """`apply` on `inputs` cast to float32, cast back: one rounding per output element."""
    return ops.cast(apply(ops.cast(inputs, NOISE_DTYPE)), inputs.dtype)


def _channel_noise_shape(inputs, data_format="channels_last"):
    """One noise value per (example, channel) of a 4-D feature map."""
    shape = ops.shape(inputs)
    if data_format == "channels_first":
        return (shape[0], shape[1], 1, 1)
    return (shape[0], 1, 1, shape[-1])


@keras.saving.register_keras_serializable(package="dropout_zoo")
class Float32Dropout(keras.layers.Dropout):
    """keras.layers.Dropout drawing, comparing and scaling in float32 under any policy."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(check_rate(rate), noise_shape=noise_shape, seed=seed, **kwargs)

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return _in_float32(inputs, lambda x: keras.random.dropout(
                x, self.rate, noise_shape=self.noise_shape, seed=self.seed_generator))
        return inputs


@keras.saving.register_keras_serializable(package="dropout_zoo")
class Float32SpatialDropout2D(keras.layers.SpatialDropout2D):
    """keras.layers.SpatialDropout2D drawing, comparing and scaling in float32."""

    def __init__(self, rate, data_format=None, seed=None, name=None, dtype=None):
        super().__init__(check_rate(rate), data_format=data_format, seed=seed, name=name,
                         dtype=dtype)

    def get_config(self):
        # Keras 3.15's SpatialDropout2D saves `self.dtype`, the variable dtype
        # (float32), so a mixed_bfloat16 layer came back from .keras as float32.
        return {**super().get_config(), "dtype": keras.dtype_policies.serialize(self.dtype_policy)}

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            noise_shape = _channel_noise_shape(inputs, self.data_format)
            return _in_float32(inputs, lambda x: keras.random.dropout(
                x, self.rate, noise_shape=noise_shape, seed=self.seed_generator))
        return inputs


def _gaussian_stddev(rate):
    """The noise's standard deviation; its square is inverted dropout's variance at `rate`."""
    return math.sqrt(rate / (1.0 - rate))


@keras.saving.register_keras_serializable(package="dropout_zoo")
class Float32GaussianDropout(keras.layers.GaussianDropout):
    """keras.layers.GaussianDropout drawing its noise and multiplying in float32."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(check_rate(rate), seed=seed, **kwargs)

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return _in_float32(inputs, lambda x: x * keras.random.normal(
                ops.shape(x), mean=1.0, stddev=_gaussian_stddev(self.rate),
                dtype=NOISE_DTYPE, seed=self.seed_generator))
        return inputs


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
            keep = ops.cast(1.0 - self.rate, NOISE_DTYPE)
            return _in_float32(inputs, lambda x: x * keep)
        if self.rate == 0:
            return inputs
        shape = _channel_noise_shape(inputs) if self.spatial else ops.shape(inputs)
        uniform = keras.random.uniform(shape, dtype=NOISE_DTYPE, seed=self.seed_generator)
        keep = ops.cast(ops.greater_equal(uniform, self.rate), NOISE_DTYPE)
        return _in_float32(inputs, lambda x: x * keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, spatial=self.spatial, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="dropout_zoo")
class SpatialGaussianDropout(keras.layers.Layer):
    """Multiplicative N(1, rate / (1 - rate)) noise, one float32 draw per channel."""

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
            stddev=_gaussian_stddev(self.rate),
            dtype=NOISE_DTYPE,
            seed=self.seed_generator,
        )
        return _in_float32(inputs, lambda x: x * noise)

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
            return Float32SpatialDropout2D(rate, seed=seed, name=name)
        return Float32Dropout(rate, seed=seed, name=name)
    if kind == "classic":
        return ClassicDropout(rate, spatial=spatial, seed=seed, name=name)
    if spatial:
        return SpatialGaussianDropout(rate, seed=seed, name=name)
    return Float32GaussianDropout(rate, seed=seed, name=name)


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
        # `call`, not `__call__`: Keras 3.15's `__call__` stores an explicit
        # training=True in the call context the whole outer call shares, so every
        # later layer called without `training` (BatchNormalization) would train
        # too. This layer's own `__call__` already cast `inputs` to the dtype policy.
        return self.layer.call(inputs, training=True)

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
