"""Monte Carlo dropout (Gal & Ghahramani, 2016): average several dropout-on passes.

    mc = models.mc_dropout_model(model)           # dropout always on, BN in inference
    mc = models.MonteCarlo(model)                 # prefix run once, the rest per sample
    draws = mc.draws(images, samples=20)          # [20, batch, classes]
    with models.request_seed(7):                  # the same masks on every call
        draws = mc.draws(images, samples=20)

Everything before the first dropout layer is the same in every sample, so
`MonteCarlo.draws` runs that prefix once per batch and repeats only the rest
on the prefix output expanded to `samples` copies, sample-major: row
s * batch + i is sample s of example i, exactly the rows a naive pass over
the tiled images would have. Given the same masks (`request_seed`,
`fast_masks=False`) the two paths give the same samples, up to float
rounding. A model whose other branches bypass the first dropout layer has
no such split; it is sampled whole.
"""
import keras
from keras import ops

from models import masks
from models.layers import KINDS
from models.layers import dropout_layers
from models.layers import float32_call
from models.layers import kind_of
from models.layers import seed_source


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
        # A stock Keras dropout layer runs the zoo's float32 form of its call.
        return float32_call(self.layer)(inputs, training=True)

    def compute_output_shape(self, input_shape):
        return input_shape


def mc_dropout_model(model):
    """A model sharing `model`'s layers and weights whose dropout is always on."""
    dropout = set(id(layer) for layer in dropout_layers(model))

    def clone(layer):
        return AlwaysOn(layer) if id(layer) in dropout else layer

    return keras.models.clone_model(model, clone_function=clone)


def mc_dropout_split(model):
    """(prefix, first, rest) sharing `model`'s weights, or None where there is no such split.

    `prefix` maps the model's input to the input of `first`, the first dropout
    layer, with dropout off; `rest` maps the output of `first` to the model's
    output with every later dropout layer always on. None if the model has
    no dropout layer, or if a path from the input to the output bypasses
    `first`.
    """
    layers = dropout_layers(model)
    if not layers or len(model.inputs) != 1:
        return None
    first = layers[0]
    mc = mc_dropout_model(model)
    switched = next(layer for layer in mc.layers if isinstance(layer, AlwaysOn) and layer.layer is first)
    try:
        prefix = keras.Model(model.inputs[0], first.input, name=f"{model.name}_prefix")
        rest = keras.Model(switched.output, mc.outputs, name=f"{model.name}_mc_rest")
    except ValueError:  # another branch needs the model's input: not a split point
        return None
    return prefix, first, rest


class MonteCarlo:
    """Draws MC-dropout samples of a model, reusing its deterministic prefix where it has one.

    `MonteCarlo(model).draws(images, samples)` is the [samples, batch, ...]
    outputs of `samples` dropout-on passes. The prefix runs once; the first
    dropout layer expands its output to the samples; the rest runs on them.

    `fast_masks`: the first layer, if it is element-wise inverted or classic
    dropout, draws one mask per sample for the prefix output and applies it
    by broadcasting instead of tiling the output first (`bernoulli_samples`:
    the zoo's generator, models/masks.py, one pass fewer over the samples).
    Its masks are the ones the layer draws for the tiled batch (one generator
    over the same sample-major elements, so the two paths agree bit for bit:
    tested); `fast_masks=False` tiles first and calls the layer.
    `reuse_prefix=False` makes every sample a whole pass of
    `mc_dropout_model(model)` over the tiled images (the naive path).
    """

    def __init__(self, model, reuse_prefix=True, fast_masks=True):
        split = mc_dropout_split(model) if reuse_prefix else None
        if split is None:
            self.prefix, self.first, self.rest = None, None, mc_dropout_model(model)
        else:
            self.prefix, self.first, self.rest = split
        self.fast_masks = fast_masks and self.first is not None and _fast_form(self.first) is not None

    @property
    def models(self):
        """The Keras models it calls (to track when exporting)."""
        return [m for m in (self.prefix, self.rest) if m is not None]

    def draws(self, images, samples):
        if self.prefix is None:
            expanded = _tile(images, samples)
        else:
            features = self.prefix(images, training=False)
            if self.fast_masks:
                expanded = bernoulli_samples(self.first, features, samples)
            else:
                expanded = float32_call(self.first)(_tile(features, samples), training=True)
        outputs = self.rest(expanded, training=False)
        return ops.reshape(outputs, [samples, -1, *outputs.shape[1:]])


def _tile(x, samples):
    """`samples` copies of the batch `x`, sample-major."""
    return ops.tile(x, [samples] + [1] * (len(x.shape) - 1))


def _fast_form(layer):
    """The scale of kept units if `layer` is element-wise Bernoulli dropout, else None."""
    found = kind_of(layer)
    if found is None or found[1] or not KINDS[found[0]].bernoulli:
        return None
    entry = KINDS[found[0]]
    # Exactly the kind's layer: a subclass may draw its masks its own way.
    if type(layer) not in (entry.layer, entry.stock_layer) or getattr(layer, "noise_shape", None) is not None:
        return None
    return entry.train_scale(layer.rate)


def bernoulli_samples(layer, features, samples):
    """`layer`'s dropout over `samples` copies of `features`: [samples * batch, ...], sample-major.

    The zoo's mask generator (models/masks.py) draws one mask per sample for
    [samples, *features.shape] from the layer's seed source (so
    `request_seed` applies) and applies it by broadcasting: the features are
    never tiled before masking. Kept units are scaled as the layer scales
    them, in float32, rounded once to the compute dtype.
    """
    return masks.masked_samples(features, layer.rate, _fast_form(layer), seed_source(layer), samples)
