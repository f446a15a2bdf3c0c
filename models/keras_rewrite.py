"""The rewrite: a Keras model you already have, with its dropout moved to the sites asked for.

`place_dropout(model, placement)` (models/keras_model.py describes the model:
its sites, own placement and the named placements derived from it) returns
a new keras.Model: the source's layers cloned with their weights, its own
dropout layers removed, fused activations split off (`LAYER.act`) so a
`.mid` site exists, and the zoo's dropout layers inserted at the placement's
sites, seeded as the zoo seeds masks (`network.site_stream` of the layer's
index in the source model). The source model is never changed.
"""
import collections
import hashlib
import os

import keras
import numpy as np

from models import activations
from models import layers as dropout_lib
from models import network
from models import placements as placements_lib
from models import pooling
from models import sites as sites_lib
from models.keras_file import load_keras_model
from models.keras_graph import functional
from models.keras_graph import is_dropout
from models.keras_model import KerasModelSpec
from models.keras_model import check_zoo_only
from models.keras_model import describe_model
from models.keras_own import check_canonical_kind

# Keras' own layers the rewrite swaps for the zoo's: the same layers, with faster training gradients or (LeakyReLU)
# in ops TensorFlow's graph rewrites compute as written (models/activations.py).
ZOO_CLASSES = {keras.layers.MaxPooling2D: pooling.MaxPooling2D, keras.layers.Activation: activations.Activation,
               keras.layers.LeakyReLU: activations.LeakyReLU, keras.layers.ReLU: activations.ReLU}


def place_dropout(model, placement="canonical", *, kind="inverted", rate=None, seed=None, weights="kept"):
    """A new keras.Model: `model` with its dropout removed and dropout at `placement`.

    `placement` is a named placement (models.placements.named_placements on the
    model's structure: canonical, none, after_activation, before_dense, conv,
    ...) or a site string ('dense.pre:0.5,conv1.post:0.1:spatial'). `rate`
    overrides every site's rate; `seed` seeds the masks as the zoo does.
    `weights`: "kept" copies every weight, so the variant trains without
    touching `model`; "fresh" initialises each trainable layer that names its
    initializers afresh, seeded by `seed` and the layer (as the zoo's networks
    are), and copies the rest (frozen layers, adapted statistics).
    """
    if isinstance(model, (str, os.PathLike)):  # a saved model's path: what `--keras_model` takes
        model = load_keras_model(model)
    elif not isinstance(model, (keras.Model, KerasModelSpec)):
        raise ValueError(f"place_dropout takes a keras.Model or the path of a .keras file, got "
                         f"{type(model).__name__}")
    spec = model if isinstance(model, KerasModelSpec) else describe_model(model)
    check_canonical_kind(spec, placement, kind)
    return build_placed(spec, resolve(spec, placement), kind=kind, rate=rate, seed=seed, weights=weights)


WEIGHTS = ("kept", "fresh")


def check_weights(weights, seed):
    """ValueError unless `weights` is one of WEIGHTS ("fresh" needs a seed to draw them by)."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid: {', '.join(WEIGHTS)}")
    if weights == "fresh" and seed is None:
        raise ValueError("weights='fresh' draws the initial weights from the seed: give seed=")


def _seed_initializers(config, seed, index):
    """Seeds, in place, every initializer a layer's config names, by `seed`, the layer's index and the
    initializer's name (so each run of a seed draws the same weights in every placement); whether it named any."""
    names = sorted(key for key, value in config.items() if key.endswith("_initializer") and value is not None)
    for name in names:
        initializer = keras.initializers.serialize(keras.initializers.get(config[name]))
        if "seed" in initializer.get("config", {}):
            digest = hashlib.sha256(f"{seed}:{index}:{name}".encode()).digest()
            initializer["config"]["seed"] = int.from_bytes(digest[:4], "big") >> 1
        config[name] = initializer
    return bool(names)


def resolve(spec, placement):
    """{site: Site} for a placement name or a site string on `spec`."""
    placements_lib.check_placement_text(placement, spec)
    if ":" in placement or "." in placement or placement.strip() == "":
        return spec.parse(placement)
    placements = placements_lib.named_placements(spec)
    if placement not in placements:
        raise ValueError(f"unknown placement {placement!r} for {spec.name}; valid placements: "
                         f"{', '.join(placements)}, or sites like '{placements_lib.example_site(spec)}:0.5'")
    return placements[placement]


def build_placed(spec, placement, *, rate=None, kind="inverted", seed=None, num_classes=None,
                 input_shape=None, weights="kept", **zoo_only):
    """The variant of `spec.model` with dropout at `placement` ({site: Site}); see place_dropout.

    `num_classes` and `input_shape`, if given, must be the model's own (the
    trainer passes the data's). activation/norm/bn_momentum must be left at
    their defaults: they rebuild zoo networks, and this model keeps its layers.
    """
    dropout_lib.check_kind(kind)
    network.check_seed(seed)
    check_weights(weights, seed)
    for option, value in zoo_only.items():
        check_zoo_only(option, value)
    if num_classes is not None and int(num_classes) != spec.num_classes:
        raise ValueError(f"model {spec.name!r} has {spec.num_classes} outputs but the data has {num_classes} "
                         "classes; give a model whose classifier has one unit per class")
    if input_shape is not None and tuple(input_shape) != spec.input_shape:
        channels = {1: "grayscale", 3: "rgb"}.get(spec.input_shape[-1])
        size = ",".join(map(str, spec.input_shape[:-1]))
        hint = (f" (an image folder: --color_mode={channels})" if channels and tuple(input_shape[:-1]) ==
                spec.input_shape[:-1] else f" (an image folder: --image_size={size} --color_mode={channels})"
                if channels else "")
        raise ValueError(f"model {spec.name!r} takes {'x'.join(map(str, spec.input_shape))} images but the "
                         f"data has {'x'.join(map(str, input_shape))}; give a model built for this dataset{hint}")
    placement = sites_lib.with_rate(placement, rate)
    unknown = sorted(set(placement) - set(spec.sites()))
    if unknown:
        raise ValueError(f"unknown site(s) {', '.join(unknown)}; valid sites: {', '.join(spec.sites())}")
    by_name = {layer.name: layer for layer in spec.layers}
    originals, initialised = {}, set()

    def dropout(x, layer, slot):
        site = placement.get(f"{layer.name}.{slot}")
        if site is None:
            return x
        stream = None if seed is None else seed * 1000 + network.site_stream(placement, layer.name, layer.index, slot)
        return dropout_lib.make_dropout(kind, site.rate, spatial=site.spatial, seed=stream,
                                        name=f"{layer.name}.{slot}")(x)

    def clone(layer):
        if is_dropout(layer):
            return layer  # never called: `call` skips it
        config = layer.get_config()
        info = by_name[layer.name]
        # The trainer's policy decides the compute dtype; the classifier stays float32.
        config["dtype"] = "float32" if info.role in ("output", "head") else None
        if info.role in ("conv", "dense"):
            config["activation"] = "linear"  # split off: `LAYER.act`, with LAYER.mid before it
            if info.fused != "linear":  # a penalty on the layer's output belongs to the activation's output
                config["activity_regularizer"] = None
        if info.index == 0 and spec.rescaling:
            config["scale"] = (np.asarray(config["scale"], dtype=np.float64) * 255.0).tolist()
        fresh = weights == "fresh" and layer.trainable and _seed_initializers(config, seed, info.index)
        # Keras' own max pooling and activations become the zoo's: the same layers, faster gradients.
        cls = ZOO_CLASSES.get(type(layer), type(layer))
        try:
            new = cls.from_config(config)
            if new.name != layer.name:  # a config without the name (Keras' automatic one): rebuilt as another layer
                raise ValueError(f"it came back named {new.name!r}: its config lacks the name")
        except (TypeError, ValueError) as e:  # a class of the user's own whose config does not rebuild it
            reason = " ".join(str(e).split())[:200]
            raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) does not rebuild from its config "
                             f"({reason}); place_dropout rebuilds each layer from its config: give the class a "
                             "get_config() returning its constructor's arguments (and **kwargs for Layer's)") from None
        originals[id(new)] = layer
        if fresh:
            initialised.add(id(new))
        return new

    # A ReLU whose output only a max pooling reads has the pooling apply its gradient (pooling.fold_relu):
    # readers are counted in the source, and any layer of several inputs makes them unknown.
    readers = collections.Counter(layer.input_key for layer in spec.layers)

    def tensor_key(info):
        """The key of the tensor `info`'s call makes (a block's first layers: not its .post's)."""
        return -3 - info.index if any(other.owner == info.name for other in spec.layers) else info.output_key

    readers_known = -2 not in readers
    relus = {}  # a source tensor's key -> (the zoo ReLU that makes it here, its output)

    def call(layer, *args, **kwargs):
        if is_dropout(layer):
            return args[0]
        info = by_name[layer.name]
        owner = by_name.get(info.owner)  # a layer of a conv/dense layer's block: that layer's .mid / .post
        if "pre" in info.slots:
            args = (dropout(args[0], info, "pre"),) + args[1:]
        if owner is not None and info.mid_before:
            args = (dropout(args[0], owner, "mid"),) + args[1:]
        relu, relu_output = relus.get(info.input_key, (None, None))
        if readers_known and isinstance(layer, pooling.MaxPooling2D) and args[0] is relu_output \
                and readers[info.input_key] == 1:
            pooling.fold_relu(relu, layer)
        x = layer(*args, **kwargs)
        if id(layer) not in initialised:  # else its initializers drew its weights (weights="fresh")
            layer.set_weights(originals[id(layer)].get_weights())
        if isinstance(layer, activations.Activation) and layer.activation is keras.activations.relu:
            relus[tensor_key(info)] = (layer, x)
        if info.role in ("conv", "dense") and info.fused != "linear":
            x = dropout(x, info, "mid")
            act = activations.Activation(info.fused, name=f"{layer.name}.act",
                                         activity_regularizer=originals[id(layer)].activity_regularizer)
            x = act(x)
            if info.fused == "relu":
                relus[tensor_key(info)] = (act, x)
        if owner is not None:
            return dropout(x, owner, "post") if info.block_end else x
        if any(other.owner == info.name for other in spec.layers):
            return x  # its block's last layer holds its .post
        return dropout(x, info, "post")

    image = keras.Input(shape=spec.input_shape, name="image")
    return finalize_states(keras.models.clone_model(functional(spec.model), input_tensors=image,
                                                    clone_function=clone, call_function=call))


def finalize_states(model):
    """`model`, its layers' state recomputed from weights copied into them (an adapted Normalization's
    mean and variance), as Keras does when it loads them; nested models too."""
    for layer in model.layers:
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
        if hasattr(layer, "layers"):
            finalize_states(layer)
    return model
