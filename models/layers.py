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
layers, which keep Keras' arithmetic and move it to float32:

- `Float32Dropout` (keras.layers.Dropout) and `Float32SpatialDropout2D`
  (keras.layers.SpatialDropout2D): inverted dropout, the kept units scaled
  by 1 / (1 - rate) while training, the identity at inference;
- `Float32GaussianDropout` (keras.layers.GaussianDropout): multiplicative
  N(1, rate / (1 - rate)) noise while training.

The Bernoulli layers (inverted and classic) draw their masks with the zoo's
generator (models/masks.py: k random bits per unit, integer compares), not
Keras' one float per unit: faster, exact for rates that are multiples of
2^-k, within 2^-17 of any other; their masks are therefore not Keras' own
draws for the same seed. Gaussian noise is Keras' normal draw, in float32.
The two forms Keras lacks are defined here, in float32 as well:

- `ClassicDropout`: the original paper's form (Srivastava et al., 2014). Kept
  units pass unscaled while training; at inference every unit is multiplied
  by the keep probability 1 - rate. Inverted dropout has the same expected
  output in each mode.
- `SpatialGaussianDropout`: Gaussian multiplicative noise shared across the
  spatial positions of a feature map (one noise value per channel), the
  Gaussian counterpart of SpatialDropout2D.

Every layer here draws from `seed_source(layer)`: its own SeedGenerator, or,
inside `request_seed(seed)`, the stateless pair (seed, the layer's stream),
which the seeded MC dropout signatures use.
"""
import contextlib
import contextvars
import dataclasses
import math
import typing
import zlib

import keras
from keras import ops

from models import compat
from models import masks
from models.sites import check_rate
from models.sites import format_rate

NOISE_DTYPE = "float32"
# Every image layer's, whatever keras.config.image_data_format() (keras.json) says: images come as [batch, H, W, C].
CHANNELS = "channels_last"
# The Keras dtype policies a model may train under (the zoo's layers are tested under each).
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


# A request's seed, while `request_seed` is in effect (set while tracing a seeded call).
_REQUEST_SEED = contextvars.ContextVar("dropout_request_seed", default=None)


@contextlib.contextmanager
def request_seed(seed):
    """Within it, every dropout layer of this module draws from `seed` instead of its state.

    `seed` is an int scalar (a tensor inside a traced function). Each layer
    draws from the stateless seed pair (seed, its own stream), its stream
    being the seed it was built with (or a hash of its name), so the layers
    of one call draw independent masks, and the same `seed` gives the same
    masks every time. Nothing shared is read or written: concurrent calls
    with other seeds, and unseeded calls, are undisturbed.
    """
    token = _REQUEST_SEED.set(seed)
    try:
        yield
    finally:
        _REQUEST_SEED.reset(token)


# Set by `set_seed_transform`: seed pair -> seed pair, applied to every draw of the zoo's layers.
_SEED_TRANSFORM = None


def set_seed_transform(transform):
    """Has every dropout layer of this module draw from `transform(its next seed pair)` (None: off).

    The trainer folds a replica's id into the seed this way under a
    distribution strategy (dropzoo/strategies.py), so each replica draws its
    own masks; a transform that returns its argument changes nothing.
    """
    global _SEED_TRANSFORM
    _SEED_TRANSFORM = transform


def seed_source(layer):
    """The SeedGenerator `layer` draws from: its own, or the request's seed under `request_seed`."""
    request = _REQUEST_SEED.get()
    if request is None:
        if _SEED_TRANSFORM is None:
            return layer.seed_generator
        return compat.FixedSeed(_SEED_TRANSFORM(layer.seed_generator.next()))
    stream = layer.seed if isinstance(layer.seed, int) else zlib.crc32(layer.name.encode())
    dtype = "int32" if keras.backend.backend() == "tensorflow" else "uint32"
    return compat.FixedSeed(ops.stack([ops.cast(request, dtype), ops.cast(stream % 2**31, dtype)]))


def _drawable(rate):
    """`rate` checked for the Bernoulli layers, whose masks the generator draws (masks.check_drawable)."""
    rate = check_rate(rate)
    masks.check_drawable(rate)
    return rate


def _in_float32(inputs, apply):
    """`apply` on `inputs` cast to float32, cast back: one rounding per output element."""
    return ops.cast(apply(ops.cast(inputs, NOISE_DTYPE)), inputs.dtype)


def _channel_noise_shape(inputs, data_format=CHANNELS):
    """One noise value per (example, channel) of a 4-D feature map."""
    shape = ops.shape(inputs)
    if data_format == "channels_first":
        return (shape[0], shape[1], 1, 1)
    return (shape[0], 1, 1, shape[-1])


@keras.saving.register_keras_serializable(package="dropout_zoo")
class Float32Dropout(keras.layers.Dropout):
    """keras.layers.Dropout drawing, comparing and scaling in float32 under any policy."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(_drawable(rate), noise_shape=noise_shape, seed=seed, **kwargs)

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return masks.masked(inputs, self.rate, 1.0 / (1.0 - self.rate), seed_source(self), self.noise_shape)
        return inputs


@keras.saving.register_keras_serializable(package="dropout_zoo")
class Float32SpatialDropout2D(keras.layers.SpatialDropout2D):
    """keras.layers.SpatialDropout2D drawing, comparing and scaling in float32."""

    def __init__(self, rate, data_format=CHANNELS, seed=None, name=None, dtype=None):
        super().__init__(_drawable(rate), data_format=data_format, seed=seed, name=name, dtype=dtype)

    def get_config(self):
        # Keras 3.15's SpatialDropout2D saves `self.dtype`, the variable dtype
        # (float32), so a mixed_bfloat16 layer came back from .keras as float32.
        return {**super().get_config(), "dtype": keras.dtype_policies.serialize(self.dtype_policy)}

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return masks.masked(inputs, self.rate, 1.0 / (1.0 - self.rate), seed_source(self),
                                _channel_noise_shape(inputs, self.data_format))
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
                dtype=NOISE_DTYPE, seed=seed_source(self)))
        return inputs


@keras.saving.register_keras_serializable(package="dropout_zoo")
class ClassicDropout(keras.layers.Layer):
    """Dropout without training-time rescaling; scales by 1 - rate at inference."""

    def __init__(self, rate, spatial=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _drawable(rate)
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
        return masks.masked(inputs, self.rate, 1.0, seed_source(self),
                            _channel_noise_shape(inputs) if self.spatial else None)

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
            seed=seed_source(self),
        )
        return _in_float32(inputs, lambda x: x * noise)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="dropout_zoo")
class SpatialClassicDropout(ClassicDropout):
    """ClassicDropout dropping whole feature maps: one draw per (example, channel)."""

    def __init__(self, rate, seed=None, **kwargs):
        kwargs.pop("spatial", None)  # get_config() writes it; it is always True here
        super().__init__(rate, spatial=True, seed=seed, **kwargs)


def _classic_variance(rate):  # functions, not lambdas: AutoGraph cannot tell two lambdas on one line apart
    return rate * (1.0 - rate)


def _unit_scale(rate):
    del rate
    return 1.0


def _keep_scale(rate):
    """Inverted dropout's factor for kept units: 1 / (1 - rate)."""
    return 1.0 / (1.0 - rate)


@dataclasses.dataclass(frozen=True)
class Kind:
    """One dropout kind: its layers and the noise they multiply by while training.

    `layer(rate, seed=, name=)` draws one multiplier per unit; `spatial_layer`
    one per feature map of a [batch, H, W, C] input. `stock_layer` and
    `stock_spatial_layer` are Keras' own layers of the kind (a user's model may
    hold them; `float32_call` runs them as the zoo's). `variance(rate)` is the
    variance of one draw of the multiplier; `bernoulli` kinds multiply by 0 or
    `train_scale(rate)` (a unit can be dropped), the others by noise that is
    never exactly 0.
    """

    layer: type
    spatial_layer: type
    bernoulli: bool
    variance: typing.Callable[[float], float]
    train_scale: typing.Callable[[float], float] | None = None
    stock_layer: type | None = None
    stock_spatial_layer: type | None = None

    @property
    def types(self):
        """Every layer class of this kind, the stock Keras ones included."""
        return tuple(t for t in (self.layer, self.spatial_layer, self.stock_layer, self.stock_spatial_layer)
                     if t is not None)


# The one table of dropout kinds; every other module reads it. A new kind is one
# entry here (and its layer classes above): see docs/contributing.md.
KINDS = {
    # Keras' arithmetic: kept units scaled by 1 / (1 - rate) while training, identity at inference.
    "inverted": Kind(layer=Float32Dropout, spatial_layer=Float32SpatialDropout2D, bernoulli=True,
                     variance=lambda rate: rate / (1.0 - rate), train_scale=_keep_scale,
                     stock_layer=keras.layers.Dropout, stock_spatial_layer=keras.layers.SpatialDropout2D),
    # The paper's form: kept units unscaled while training, every unit x (1 - rate) at inference.
    "classic": Kind(layer=ClassicDropout, spatial_layer=SpatialClassicDropout, bernoulli=True,
                    variance=_classic_variance, train_scale=_unit_scale),
    # Multiplicative N(1, rate / (1 - rate)) noise: inverted dropout's variance, never exactly 0.
    "gaussian": Kind(layer=Float32GaussianDropout, spatial_layer=SpatialGaussianDropout, bernoulli=False,
                     variance=lambda rate: rate / (1.0 - rate), stock_layer=keras.layers.GaussianDropout),
}


def dropout_types():
    """Every layer class of every kind in KINDS."""
    return tuple(t for kind in KINDS.values() for t in kind.types)


def spatial_types():
    """The layer classes of every kind that draw one multiplier per feature map."""
    return tuple(t for kind in KINDS.values() for t in (kind.spatial_layer, kind.stock_spatial_layer)
                 if t is not None)


def check_kind(kind):
    """Returns `kind`, or raises ValueError unless it is one of KINDS."""
    if kind not in KINDS:
        raise ValueError(f"unknown dropout kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return kind


def check_drawn_rates(placement, kind, rate=None):
    """ValueError (one line) naming the site (or `--rate`, the override `rate`) where a Bernoulli kind would draw
    its rate as 0 or 1."""
    if check_kind(kind) == "gaussian" or not placement:  # Gaussian noise draws no masks
        return
    if rate is not None:  # every site's (a checked rate)
        masks.check_drawable(rate, "--rate")
        return
    for site, value in placement.items():
        masks.check_drawable(value.rate, f"the rate of site {site}")


def make_dropout(kind, rate, *, spatial=False, seed=None, name=None):
    """The dropout layer of `kind` (a KINDS name), element-wise or `spatial`."""
    entry = KINDS[check_kind(kind)]
    return (entry.spatial_layer if spatial else entry.layer)(rate, seed=seed, name=name)


def kind_of(layer):
    """(kind name, spatial) of a dropout layer (the zoo's or Keras' own); None if it is none."""
    for name, entry in KINDS.items():
        if isinstance(layer, entry.types):
            return name, isinstance(layer, spatial_types()) or bool(getattr(layer, "spatial", False))
    return None


def is_bernoulli(layer):
    """Whether `layer` drops units (multiplies by 0 or a keep scale) rather than adding noise."""
    found = kind_of(layer)
    return found is not None and KINDS[found[0]].bernoulli


def float32_call(layer):
    """`layer.call`, or for a stock Keras dropout layer the call of the zoo's layer of its kind.

    The zoo's layers keep Keras' attributes and arithmetic, so calling theirs on
    a stock layer draws the same masks under float32 (and correct ones under
    mixed precision), and honours `request_seed`, which Keras' own calls do not.
    """
    for entry in KINDS.values():
        for stock, ours in ((entry.stock_layer, entry.layer), (entry.stock_spatial_layer, entry.spatial_layer)):
            if stock is not None and type(layer) is stock:
                return ours.call.__get__(layer)
    return layer.call


def dropout_layers(model):
    """The model's dropout layers (any kind, the zoo's or Keras' own), in graph order."""
    return [layer for layer in model.layers if isinstance(layer, dropout_types())]


def layer_table(model):
    """`model` layer by layer, as fixed-width text: name, type, output shape, parameters, and each dropout
    layer's rate and what one draw covers (a unit, or a whole feature map). What a run's `model.txt` and
    TensorBoard's Text tab show: where the placement put dropout, in the network as trained.
    """
    reads = layer_inputs(model)
    previous = [None] + [layer.name for layer in model.layers]
    branched = any(reads.get(layer.name, [before]) != [before] for layer, before in zip(model.layers[1:], previous[1:]))
    rows = [("layer", "type", "output shape", "params", "dropout") + (("reads",) if branched else ())]
    for layer, before in zip(model.layers, previous):
        found = kind_of(layer)
        read = reads.get(layer.name, [])
        rows.append((layer.name, type(layer).__name__, _output_shape(layer), f"{layer.count_params():,}",
                     "" if found is None else f"{found[0]}, rate {format_rate(layer.rate)}, "
                                              f"one draw per {'feature map' if found[1] else 'unit'}")
                    + ((", ".join(read) if read not in ([before], []) else "",) if branched else ()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    return "\n".join([f"{model.name}: {len(model.layers)} layers, {trainable:,} trainable parameters, "
                      f"{model.dtype_policy.name}"] +
                     ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows])


def layer_inputs(model):
    """{layer name: the names of the layers it reads} of a functional model (from its config), else {}: in a
    model with branches, which branch a dropout is on (a row's predecessor in the table need not be its input)."""
    try:
        config = model.get_config()
    except (NotImplementedError, TypeError, ValueError):  # (a subclassed model)
        return {}

    def history(value):
        if isinstance(value, dict):
            found = [value["keras_history"][0]] if "keras_history" in value else []
            return found + [name for v in value.values() for name in history(v)]
        return [name for v in value for name in history(v)] if isinstance(value, (list, tuple)) else []

    return {entry["name"]: history(entry.get("inbound_nodes", [])) for entry in config.get("layers", [])
            if isinstance(entry, dict) and "name" in entry}


def _output_shape(layer):
    try:
        return str(tuple(layer.output.shape))
    except (AttributeError, ValueError):  # a layer called more than once, or never
        return "?"
