"""A Keras model's graph as the rewrite reads it: its calls in order, and each conv/dense layer's block.

`trace(model)` lists the layer calls of a Sequential or functional model
(from a clone that reuses its layers: the model is not changed); `blocks`
finds, for each hidden conv/dense layer, the BatchNormalization and
activation layers that finish it (Dense -> BN -> ReLU). The tables below
say which Keras layers are which.
"""
import dataclasses

import keras
import numpy as np

from models import activations
from models import layers as dropout_lib
from models import pooling

# Dropout layers the rewrite removes (their rates become the canonical placement):
# every kind's (models/layers.py KINDS), and Keras' forms the zoo does not train.
OTHER_SPATIAL_TYPES = (keras.layers.SpatialDropout1D, keras.layers.SpatialDropout3D)


def is_dropout(layer):
    return isinstance(layer, dropout_lib.dropout_types() + OTHER_SPATIAL_TYPES + (keras.layers.AlphaDropout,))


def is_spatial(layer):
    """A dropout layer that drops whole channels: a spatial type, or Dropout(noise_shape=(None, 1, 1, C))."""
    return isinstance(layer, dropout_lib.spatial_types() + OTHER_SPATIAL_TYPES) or _noise_form(layer) == "spatial"


def has_other_noise_shape(layer):
    """A dropout layer whose noise_shape is neither element-wise nor per channel (the zoo draws neither)."""
    return _noise_form(layer) == "other"


def _noise_form(layer):
    """'elementwise', 'spatial' (one draw per sample and channel) or 'other', by noise_shape and input shape.

    A None in noise_shape is the input's own size, as Keras reads it; a
    mask shared over the batch (a first entry 1) is neither of the zoo's.
    """
    shape = getattr(layer, "noise_shape", None)
    if shape is None or isinstance(layer, dropout_lib.spatial_types() + OTHER_SPATIAL_TYPES):
        return "elementwise"
    try:
        given = tuple(layer.input.shape)
    except (AttributeError, ValueError):  # never called: nothing to compare with
        given = (None,) * len(shape)
    full = tuple(g if s is None else s for s, g in zip(shape, given))
    if len(full) != len(given) or shape[0] is not None:
        return "other"
    if full[1:] == given[1:]:
        return "elementwise"
    if len(full) >= 3 and all(dim == 1 for dim in full[1:-1]) and full[-1] == given[-1]:
        return "spatial"
    return "other"


CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.SeparableConv1D,
              keras.layers.SeparableConv2D, keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
              keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
LINEAR_TYPES = CONV_TYPES + (keras.layers.Dense,)
POOL_TYPES = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
              keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
              keras.layers.AdaptiveMaxPooling1D, keras.layers.AdaptiveMaxPooling2D, keras.layers.AdaptiveMaxPooling3D,
              keras.layers.AdaptiveAveragePooling1D, keras.layers.AdaptiveAveragePooling2D,
              keras.layers.AdaptiveAveragePooling3D)
GLOBAL_POOL_TYPES = (keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
                     keras.layers.GlobalMaxPooling3D, keras.layers.GlobalAveragePooling1D,
                     keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling3D)
# Layers that only move units around (a mask on their output is a mask on their input).
RESHAPING_TYPES = (keras.layers.Flatten, keras.layers.Reshape)
# Layers that finish a conv/dense layer's block when they alone read its output (Dense -> BN -> ReLU):
# the block's `.post` is after them, and its `.mid` before its activation, as in the zoo's networks.
ACTIVATION_TYPES = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
                    keras.layers.PReLU, keras.layers.Softmax)
NORM_TYPES = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization,
              keras.layers.RMSNormalization, keras.layers.UnitNormalization)
# mask_stream(index, slot) stays below the next seed's streams (seed * 1000) up to this index.
MAX_LAYER_INDEX = 449
@dataclasses.dataclass
class Call:
    layer: object
    inputs: list  # ids of the input tensors
    output: int  # id of the output tensor
    rank_in: int
    rank_out: int


def trace(model, name=None):
    """[Call] in graph order, from a clone that reuses the layers (the model is not changed).

    `name`: what messages call the model (its file's name), else its Keras name.
    """
    calls = []
    name = name or model.name

    def call(layer, *args, **kwargs):
        if not isinstance(layer, keras.layers.Layer):  # `inputs / 255.0` or keras.ops.relu(x) between layers
            raise ValueError(f"model {name!r} computes {layer.name!r} ({type(layer).__name__}) with a "
                             "keras.ops call or an operator on tensors between its layers; place_dropout rebuilds "
                             "layers from their configs: use a layer instead (Rescaling(1/255) for inputs / 255, "
                             "Activation('relu') for ops.relu)")
        # Always on (MC sampling built in). training=False is what Keras records for every layer called on symbolic
        # inputs, and fit(training=True) overrides it (Keras 3.15): a dropout called so drops in training, as here.
        if is_dropout(layer) and kwargs.get("training") is True:
            raise ValueError(f"dropout layer {layer.name!r} of model {name!r} is called with training=True, so it "
                             "drops always; the trainer drops in training only (eval.py --mc_samples samples dropout "
                             "at test time): call it without training=")
        output = layer(*args, **kwargs)
        tensors = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        if isinstance(layer, keras.Model):
            raise ValueError(f"model {name!r} nests model {layer.name!r}; place_dropout rewrites one "
                             "flat graph: build the outer model from the inner model's layers")
        if not isinstance(output, keras.KerasTensor):
            raise ValueError(f"layer {layer.name!r} of model {name!r} has several outputs; "
                             "place_dropout rewrites layers with one output each")
        _check_layer(layer, name)
        if any(c.layer is layer for c in calls):
            raise ValueError(f"layer {layer.name!r} is called more than once in model {name!r} "
                             "(a shared layer); its sites would not name one place: use separate layers")
        calls.append(Call(layer, [id(t) for t in tensors], id(output),
                           len(tensors[0].shape) if len(tensors) == 1 else 0, len(output.shape)))
        return output

    keras.models.clone_model(functional(model), clone_function=lambda layer: layer, call_function=call)
    if len(calls) > MAX_LAYER_INDEX + 1:
        raise ValueError(f"model {name!r} has {len(calls)} layers; place_dropout seeds masks for "
                         f"up to {MAX_LAYER_INDEX + 1}")
    return calls


# Settings named as a dropout's: its rate, TF1's keep_prob, stochastic depth's drop_prob and survival_probability.
DROPOUT_SETTING_WORDS = ("drop", "keep_prob", "survival")


def _own_dropout_settings(config, path="", users_class=False):
    """[(setting, value)] of a layer config's own dropout (LSTM's recurrent_dropout, MultiHeadAttention's
    dropout), nested configs (a Bidirectional's layer) included; in a class of the user's own also a setting in
    (0, 1) named as a dropout's (a rate of 1 or more is a dilation's, a scale's)."""
    found = []
    for key, value in (config.items() if isinstance(config, dict) else ()):
        if isinstance(value, dict):
            found += _own_dropout_settings(value, f"{path}{key}.", users_class)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and (
                "dropout" in key or users_class and value < 1 and (
                    key == "rate" or any(word in key for word in DROPOUT_SETTING_WORDS))):
            found.append((f"{path}{key}", value))
    return found


def _keras_own(layer):
    """Whether Keras itself defines the layer's class (its behaviour is known here by the class alone)."""
    return type(layer).__module__.startswith("keras.")


def _augments(layer):
    """Whether `layer` is (or subclasses) one of Keras' own image augmentation layers (RandomFlip, RandAugment,
    Solarization, ...: those of its preprocessing package), whose random draws are augmentation's."""
    return any(c.__module__.startswith("keras.") and ".preprocessing." in c.__module__ for c in type(layer).__mro__)


def _own_randomness(layer):
    """What a layer of a class of the user's own holds to draw at random with: dropout layers of a rate above 0 (at
    any depth), a SeedGenerator of its own or of a layer of the user's within it (Keras' augmentation layers,
    subclassed or not, are augmentation)."""
    found, seen, todo = [], set(), [(layer, value) for value in vars(layer).values()]
    while todo:
        owner, value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, keras.layers.Layer) and is_dropout(value):
            if value.rate:  # a Dropout(0.0) drops nothing (MultiHeadAttention holds one at its default dropout=0)
                found.append(f"{type(value).__name__} {value.name!r}")
        elif isinstance(value, keras.layers.Layer):
            todo += [(value, v) for v in vars(value).values()]
        elif isinstance(value, keras.random.SeedGenerator) and not (_keras_own(owner) or _augments(owner)):
            found.append(f"a SeedGenerator of {owner.name!r}")
        elif isinstance(value, (list, tuple)):
            todo += [(owner, v) for v in value]
        elif isinstance(value, dict):
            todo += [(owner, v) for v in value.values()]
    return sorted(set(found))


def _check_layer(layer, name):
    """ValueError for a layer no placement could be faithful to: dropout of its own that no site moves or
    removes, channels-first feature maps (the sites' spatial masks are per last axis), or an activation given as
    a layer object (the rewrite splits a fused activation off by its name)."""
    what = f"layer {layer.name!r} of model {name!r}"
    if isinstance(layer, keras.layers.Wrapper) and is_dropout(layer.layer):
        raise ValueError(f"{what} wraps dropout layer {layer.layer.name!r} ({type(layer).__name__}), which no "
                         "placement moves or removes, so `none` would still drop: use a Dropout layer itself")
    if isinstance(layer, keras.layers.Lambda):  # its Python function: Keras rebuilds it only if unsafe
        raise ValueError(f"{what} is a Lambda; place_dropout rebuilds each layer from its config, which Keras does "
                         "for a Lambda's Python function only with unsafe deserialization: use Keras' own layers "
                         "(Rescaling, Activation, ...) or a Layer subclass of your own with get_config")
    try:
        config = layer.get_config()
    except NotImplementedError:
        raise ValueError(f"{what} ({type(layer).__name__}) has no get_config(); place_dropout rebuilds each layer "
                         "from its config: give the class a get_config() returning its constructor's arguments") \
            from None
    users = not _keras_own(layer)
    if is_dropout(layer) and users and type(layer) not in dropout_lib.dropout_types():
        raise ValueError(f"{what} is of {type(layer).__name__}, a dropout class of its own; place_dropout redraws "
                         "every dropout layer as the zoo's, which drops in training only, so what its own code does "
                         "(dropping at inference too?) would be lost: use Keras' Dropout, SpatialDropout2D or "
                         "GaussianDropout itself")
    settings = [] if is_dropout(layer) else _own_dropout_settings(config, users_class=users)
    given = list(dict.fromkeys(f"{key.split('.')[-1]}={value:g}" for key, value in settings))
    if users and not is_dropout(layer) and (found := [f"{g}, named as a dropout's setting" for g in given]
                                            + _own_randomness(layer)):
        raise ValueError(f"{what} ({type(layer).__name__}) looks like it drops units itself ({'; '.join(found)}), "
                         "which no placement moves or removes, so `none` would still drop: take the dropout out of it "
                         "and put a Dropout layer where you want one (augmentation: Keras' own layers, e.g. "
                         "RandomFlip; a setting that is no dropout's: give it another name)")
    if given:
        raise ValueError(f"{what} drops units itself ({', '.join(given)}), which no placement moves or removes, so "
                         "`none` would still drop: set it to 0 (put a Dropout layer where you want one)")
    if getattr(layer, "data_format", None) == "channels_first" and not isinstance(layer, keras.layers.Flatten):
        raise ValueError(f"{what} is channels_first; the zoo's sites and spatial masks take [batch, H, W, C] "
                         "feature maps: build the model channels_last (the default)")
    if isinstance(layer, LINEAR_TYPES) and not isinstance(keras.activations.serialize(layer.activation), str):
        given = getattr(layer.activation, "__name__", None) or type(layer.activation).__name__
        raise ValueError(f"{what} has the activation {given!r}, which is no built-in activation's name; the rewrite "
                         "splits a fused activation off by name: give the layer no activation and put the "
                         "activation after it as a layer of its own (with its settings), or name a built-in one")


def functional(model):
    """`model` as a functional model over the same layers (a Sequential is called layer by layer)."""
    if not isinstance(model, keras.Sequential):
        return model
    inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    x = inputs
    for layer in model.layers:
        x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def fused_activation(layer):
    if not isinstance(layer, LINEAR_TYPES):
        return "linear"
    return keras.activations.serialize(layer.activation)  # a name: trace refuses any other (_check_layer)


def part_end(layers, model, name):
    """The last of the normalization and activation layers (not a softmax) that follow layer `name` alone, one
    reading the next (Conv -> MaxPool -> BN -> ReLU: the pool's part ends at the ReLU), else `name`. `layers`: a
    KerasModelSpec's, of Keras model `model`."""
    end = next(layer for layer in layers if layer.name == name)
    while len(readers := [layer for layer in layers if end.output_key in layer.input_keys]) == 1 and \
            readers[0].input_keys == (end.output_key,) and readers[0].role == "other":
        keras_layer = model.get_layer(readers[0].name)
        if not isinstance(keras_layer, NORM_TYPES + ACTIVATION_TYPES) or function_name(keras_layer).lower() == \
                "softmax":
            break
        end = readers[0]
    return end.name


def function_name(layer):
    """What a block's BN or activation layer computes, by name: 'relu' for any plain ReLU."""
    if isinstance(layer, keras.layers.Activation):
        return activation_name(layer) or type(layer).__name__
    plain = isinstance(layer, keras.layers.ReLU) and layer.max_value is None and not layer.negative_slope \
        and not layer.threshold
    return "relu" if plain else type(layer).__name__


def activation_name(layer):
    """The name of an Activation layer's function ('' for other layers and unnamed functions)."""
    if not isinstance(layer, keras.layers.Activation):
        return ""
    activation = keras.activations.serialize(layer.activation)
    return activation if isinstance(activation, str) else ""


def blocks(calls, output_index):
    """{index of a hidden conv/dense call: [indices of its block's BN and activation layers, in order]}.

    A block goes on while the tensor so far has one reader (through dropout
    layers, which the rewrite removes) and that reader is a normalization or
    an activation layer (a hidden softmax too: the classifier's comes after it), with at most one activation.
    """
    readers = {}
    for i, c in enumerate(calls):
        for tensor in c.inputs:
            readers.setdefault(tensor, []).append(i)

    def next_reader(i):
        found = readers.get(calls[i].output, [])
        while len(found) == 1 and is_dropout(calls[found[0]].layer):
            found = readers.get(calls[found[0]].output, [])
        return found[0] if len(found) == 1 and len(calls[found[0]].inputs) == 1 else None

    blocks = {}
    for index, call in enumerate(calls[:output_index]):
        if not isinstance(call.layer, LINEAR_TYPES):
            continue
        block, current, activated = [], index, fused_activation(call.layer) != "linear"
        identity = None  # an Activation("linear") layer taken as the block's activation
        while (after := next_reader(current)) is not None and after < output_index:
            layer = calls[after].layer
            is_activation = isinstance(layer, ACTIVATION_TYPES)
            if not (isinstance(layer, NORM_TYPES) or (is_activation and not activated)):
                if is_activation and function_name(layer) != "linear" and identity:
                    raise ValueError(f"layer {layer.name!r} follows {identity!r}, a linear (identity) activation "
                                     f"after {call.layer.name!r}, so \"after the activation\" would fall between "
                                     f"the two: remove {identity!r} and save the model again")
                if is_activation and function_name(layer) != "linear":  # Dense(activation="relu") -> tanh
                    raise ValueError(f"layer {layer.name!r} is a second activation after {call.layer.name!r}'s, so "
                                     "\"after the activation\" would fall between the two (dropout before the "
                                     f"{layer.name!r}): give {call.layer.name!r} one activation (drop one, or "
                                     "compute both in one keras.layers.Activation(fn), fn a function registered "
                                     "with keras.saving.register_keras_serializable)")
                if not activated:
                    _check_own_class(layer, call.layer)
                    _check_nothing_before_activation(calls, call.layer, after, next_reader, output_index)
                break
            if is_activation and not activated and function_name(layer) == "linear":
                identity = layer.name
            activated = activated or is_activation
            block.append(after)
            current = after
        blocks[index] = block
    return blocks


def _check_own_class(layer, owner):
    """ValueError if `layer`, of a class of the user's own, follows `owner`, which has no activation: it may be
    the activation (a Swish layer), and no site before or after it could say."""
    known = _keras_own(layer) or isinstance(layer, (activations.Activation, pooling.MaxPooling2D))
    if not known:  # the zoo's own classes are those two: a user's package named `models` is still the user's
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}, a class Keras does not define) follows "
                         f"{owner.name!r}, which has no activation, so place_dropout cannot tell whether it is the "
                         "activation (its sites before and after the activation would not be where they say): "
                         f"write an activation as keras.layers.Activation(fn), or give {owner.name!r} its activation")


def _check_nothing_before_activation(calls, owner, stop, next_reader, output_index):
    """ValueError if the block of `owner` (no activation yet) stops at a layer its activation follows.

    Dense -> GaussianNoise -> ReLU: the block would end before the ReLU, so
    `owner.post` and "after the activation" would be before it.
    """
    current = stop
    ends = LINEAR_TYPES + POOL_TYPES + GLOBAL_POOL_TYPES  # Conv -> MaxPool -> ReLU: pooling starts the next part
    if isinstance(calls[stop].layer, ends):
        return
    while (current := next_reader(current)) is not None and current < output_index:
        layer = calls[current].layer
        if isinstance(layer, ends):
            return
        # A softmax is not element-wise: a Flatten or Reshape before it changes it, so it is no activation to move.
        if isinstance(layer, ACTIVATION_TYPES) and function_name(layer).lower() != "softmax":
            raise ValueError(f"layer {calls[stop].layer.name!r} ({type(calls[stop].layer).__name__}) sits between "
                             f"{owner.name!r} and its activation {layer.name!r}; place_dropout's sites before and "
                             f"after an activation would not be where they say: move {calls[stop].layer.name!r} "
                             f"after {layer.name!r}, or give the activation to {owner.name!r}")


def mid_layer(calls, owner, block):
    """The index of the activation layer in `owner`'s block (its input is the owner's .mid), else None."""
    if fused_activation(calls[owner].layer) != "linear":
        return None  # the fused activation is the one; the rewrite splits it off
    return next((i for i in block if isinstance(calls[i].layer, ACTIVATION_TYPES)), None)


# What a first Rescaling may make of raw pixels: values no larger than the pixels' own (1/255: [0, 1]; caffe's mean
# subtraction, scale 1: [-124, 152]); past them it amplifies what it was made to get in [0, 1] (Rescaling(2,
# offset=-1) gives 509 on raw pixels), and folded as one of raw pixels would scale them twice.
MAX_SCALED_PIXEL = 255.0 * (1 + 1e-6)
MAX_DIVIDED_PIXEL, MIN_PIXEL_MEAN = 10.0, 10.0  # raw pixels divided down to about [0, 1]; a pixel mean subtracted
# Statistics of raw pixels: a mean above 1, or a spread no image in [0, 1] has (a hand-set variance of 4 may be meant).
MAX_UNIT_STD = 5.0


def _for_raw_pixels(scale, offset):
    """Whether a first Rescaling(scale, offset) (1-D arrays: per channel, or one value) reads as one made for raw
    pixels: taking them nowhere past their own range, and dividing them (1/255, 1/127.5 with offset -1),
    subtracting pixel means (caffe's, scale 1), or only scaling (no offset; Rescaling(1.0) too). Otherwise it
    centres or amplifies what it was made to get in [0, 1] (Rescaling(1, offset=-0.5), Rescaling(2, offset=-1):
    509 on raw pixels)."""
    largest = float(np.max(np.abs(np.concatenate([offset, 255 * scale + offset]))))
    divides, subtracts_means = float(np.max(np.abs(scale))) * 255 <= MAX_DIVIDED_PIXEL, float(np.min(np.abs(
        offset))) >= MIN_PIXEL_MEAN
    return largest <= MAX_SCALED_PIXEL and (divides or subtracts_means or not np.any(offset))


def check_input_scale(calls, rescaling, what):
    """ValueError for preprocessing that would see [0, 1] pixels where it was made for raw ones.

    Before the first conv/dense layer: a Rescaling that is not the first
    layer (after augmentation, say) would scale pixels the trainer has scaled
    already, and a Normalization whose statistics are of raw pixels (a mean
    above 1) would normalize [0, 1] pixels with them.
    """
    if rescaling:  # what follows the folded Rescaling sees what it saw in the source, if it was made for raw pixels
        layer = calls[0].layer
        scale, offset = (np.ravel(np.asarray(v, np.float64)) for v in (layer.scale, layer.offset))
        if not _for_raw_pixels(scale, offset):
            shown = [", ".join(f"{v:g}" for v in values) for values in (scale, offset)]
            raw, unit = ([float(np.min(np.minimum(offset, top * scale + offset))),
                          float(np.max(np.maximum(offset, top * scale + offset)))] for top in (255, 1))
            raise ValueError(f"{what} begins with {layer.name!r} (Rescaling, scale {shown[0]}, offset {shown[1]}), "
                             f"which takes raw pixels [0, 255] to [{raw[0]:g}, {raw[1]:g}] and pixels in [0, 1] to "
                             f"[{unit[0]:g}, {unit[1]:g}]: it looks made for the latter; the trainer feeds [0, 1] "
                             "pixels and folds a first Rescaling as one of raw pixels: divide its scale by 255 (e.g. "
                             "Rescaling(2/255, offset=-1) for [-1, 1]), or remove it")
        return
    for index, c in enumerate(calls):
        layer = c.layer
        if isinstance(layer, LINEAR_TYPES):
            return
        if isinstance(layer, keras.layers.Rescaling) and index == 0:
            raise ValueError(f"{what} rescales its input in its first layer {layer.name!r}, but other layers read "
                             "the input too; the trainer feeds pixels scaled to [0, 1] and can fold a first "
                             f"Rescaling only where it alone reads the images: have every other layer read "
                             f"{layer.name!r}'s output")
        if isinstance(layer, keras.layers.Rescaling) and all(is_dropout(b.layer) for b in calls[:index]):
            raise ValueError(f"{what} rescales pixels in layer {layer.name!r} after its input dropout; the trainer "
                             "feeds pixels scaled to [0, 1] and folds only a first Rescaling into that: make "
                             f"{layer.name!r} the model's first layer, with the dropout after it")
        if isinstance(layer, keras.layers.Rescaling):
            raise ValueError(f"{what} rescales pixels in layer {layer.name!r}, which is not its first layer; the "
                             "trainer feeds pixels scaled to [0, 1] and folds only a first Rescaling into that: "
                             f"make {layer.name!r} the model's first layer (before any augmentation), or remove it")
        if isinstance(layer, keras.layers.Normalization) and layer.built:
            mean, variance = ((layer.mean, layer.variance) if layer.input_mean is not None else
                              (layer.adapt_mean, layer.adapt_variance))
            mean, std = (float(np.max(np.abs(keras.ops.convert_to_numpy(v)))) for v in (mean, keras.ops.sqrt(variance)))
            if mean > 1.0 or std > MAX_UNIT_STD:  # (pixels in [0, 1] have a standard deviation of at most 0.5)
                what_of = f"a mean of {mean:g}" if mean > 1.0 else f"a standard deviation of {std:g}"
                raise ValueError(f"{what} normalizes its input in layer {layer.name!r} with statistics of raw pixels "
                                 f"({what_of}); the trainer feeds pixels scaled to [0, 1]: adapt it on "
                                 "the images divided by 255, or put a Rescaling(1/255) first and adapt it after that")
