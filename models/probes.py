"""Which networks the equivalence claims probe, and where: the zoo's networks, text networks and Keras models alike.

models/equivalence.py states the claims; this module answers what they ask
of one network: the shape of its images, its logits, the head site claims 2
and 3 probe, the layer whose activation claims 1 and 4 move dropout across
(and whether theory says that move keeps the network), and the linear layers
that read a site's units (claim 3's test-time weight scaling, moved). A
network of your own is registered here to be checked (`register_network`
for text, `register_keras` for a `.keras` file).
"""
import math
import pathlib

import keras
import numpy as np

import models
from models import keras_graph as graph
from models import keras_model
from models import keras_rewrite
from models import network

ZOO_INPUT_SHAPE = (28, 28, 1)
# Layers that move, pick or average units: a keep factor on their input is one on their output.
_PASS_TYPES = graph.RESHAPING_TYPES + graph.POOL_TYPES + graph.GLOBAL_POOL_TYPES + (
    keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D, keras.layers.Cropping1D,
    keras.layers.Cropping2D, keras.layers.Cropping3D, keras.layers.Permute, keras.layers.Identity)
_LINEAR_ROLES = ("conv", "dense", "output")


def is_keras(spec):
    return isinstance(spec, keras_model.KerasModelSpec)


def input_shape(spec):
    return spec.input_shape if is_keras(spec) else ZOO_INPUT_SHAPE


def build(name, placement, *, kind="inverted", activation="relu", norm="none", seed=0):
    """`models.build`; a Keras model keeps its own activations, and is built in any kind at `canonical` (the
    claims compare kinds at its own sites; the trainer refuses to draw them as another kind than its own)."""
    spec = models.get_spec(name)
    if is_keras(spec):  # its own noise layers (GaussianNoise, unseeded) draw alike in every build, as in the trainer
        keras.utils.set_random_seed(seed)
        return keras_rewrite.build_placed(spec, models.resolve_placement(name, placement), kind=kind, seed=seed)
    return models.build(name, placement, kind=kind, activation=activation, norm=norm, seed=seed)


def images(spec, batch=8, seed=0):
    """`batch` random images of the network's input shape, uniform in [0, 1): what the claims feed it."""
    return np.random.default_rng(seed).uniform(0, 1, (batch, *input_shape(spec))).astype("float32")


def copy_weights(source, target):
    """`source`'s weights into `target`'s layers of the same names."""
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def logits(spec, model, x, training):
    """The model's pre-softmax output, where differences are not squashed: its classifier's, without a
    softmax fused into it."""
    layer = model.get_layer(spec.output_name)
    if graph.fused_activation(layer) == "linear":
        return keras.ops.convert_to_numpy(keras.Model(model.input, layer.output)(x, training=training))
    features = keras.Model(model.input, layer.input)(x, training=training)
    linear = type(layer).from_config({**layer.get_config(), "activation": "linear", "name": "probe_logits"})
    linear.build(features.shape)
    linear.set_weights(layer.get_weights())
    return keras.ops.convert_to_numpy(linear(features))


def head(spec):
    """(placement, site, rate) of the head (non-spatial) dropout claims 2 and 3 probe: canonical's, or where the
    network's own dropout is all in the conv stack (conv8k3,pool2,dropout0.25,flatten,dense16), a head placement's."""
    for placement in ("canonical", "after_activation", "before_dense"):
        if placement in models.list_placements(spec.name):
            found = [(k, s.rate) for k, s in models.resolve_placement(spec.name, placement).items()
                     if k not in spec.spatial_sites()]
            if found:
                return (placement, *found[0])
    raise ValueError(f"network {spec.name} has no dropout site on a vector: claims 2 and 3 probe one")


def activation_pair(spec):
    """(before, after) placements, and the site moved between them: `before_activation` and `after_activation`,
    or where the network has none (no hidden dense layer with an activation), the last conv's .mid and .post."""
    if "before_activation" in models.list_placements(spec.name):
        layer = next(iter(models.resolve_placement(spec.name, "before_activation"))).rsplit(".", 1)[0]
        return "before_activation", "after_activation", f"{layer}.mid/.post"
    sites = spec.sites()
    with_activation = [name for name in (*spec.conv_names, *spec.dense_names) if f"{name}.mid" in sites]
    if not with_activation:
        raise ValueError(f"network {spec.name} has no hidden conv or dense layer with an activation, so no "
                         "activation to move dropout across; give a network with one")
    layer = with_activation[-1]
    rate = layer_rate(spec, layer)
    return f"{layer}.mid:{rate}", f"{layer}.post:{rate}", f"{layer}.mid/.post"


def layer_rate(spec, layer):
    """The rate claims 1 and 4 drop at across `layer`'s activation: the layer's own in its placement (each tower
    of a two-tower network has its own), else the head's (`head`)."""
    for placement in ("after_activation", "canonical"):
        if placement in models.list_placements(spec.name):
            for key, site in models.resolve_placement(spec.name, placement).items():
                if key.rsplit(".", 1)[0] == layer:
                    return site.rate
    return head(spec)[2]


def homogeneous(spec, layer, activation):
    """Whether what lies between `layer`'s .mid and .post is positively homogeneous and maps 0 to 0 (f(c x) =
    c f(x) for c > 0): then a mask scaled by 1/keep passes through it, and dropout at either site is one network
    (up to rounding). The zoo's `activation`, or a Keras model's own layers (ReLU, LeakyReLU, PReLU)."""
    if not is_keras(spec):
        return activation == "relu"
    own = next(entry for entry in spec.layers if entry.name == layer)
    block = [entry for entry in spec.layers if entry.owner == layer]
    after_mid = block[next((i for i, entry in enumerate(block) if entry.mid_before), len(block)):]
    if own.fused != "linear":
        after_mid = block
    return own.fused in ("relu", "leaky_relu", "linear") and all(
        _homogeneous_layer(spec.model.get_layer(entry.name)) for entry in after_mid)


def penalty_note(spec, layer, a, b):
    """Why placements `a` and `b`, moving a dropout across a Keras model's `layer` block that holds an
    activity_regularizer, are keyed apart ('' where they do not): its penalty reads the activations, so the move
    changes the loss, not the logits."""
    if not is_keras(spec):  # (the zoo's layers have no regularizers)
        return ""
    own = next(entry for entry in spec.layers if entry.name == layer)  # keras_model's record of what keys it
    penalised = "activity_regularizer" in own.activation.split(",")
    return " (the activity_regularizer's penalty reads the activations: dropped at .mid, not at .post)" if (
        penalised and moved_across(spec, layer, a, b)) else ""


def _homogeneous_layer(layer):
    if isinstance(layer, keras.layers.Activation):
        return graph.activation_name(layer) in ("relu", "leaky_relu", "linear")
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and not layer.threshold
    return isinstance(layer, (keras.layers.LeakyReLU, keras.layers.PReLU))


def linear_readers(spec, site):
    """The conv/dense layers that read `site`'s units through layers a keep factor passes through (pooling,
    reshapes, padding, a ReLU): scaling their kernels by the keep probability is the paper's test-time weight
    scaling. ValueError where anything else reads them (a merge, a BatchNorm, another activation)."""
    if not is_keras(spec):
        return (_next_linear(spec, site),)
    name, slot = site.rsplit(".", 1)
    layer = next(entry for entry in spec.layers if entry.name == name)
    if slot == "pre" and layer.role in _LINEAR_ROLES:
        return (name,)
    if slot == "mid" and not homogeneous(spec, name, None):
        raise ValueError(f"{site}: {layer.activation} lies after it, which a keep factor does not pass through")
    return tuple(sorted(_readers_of(spec, layer.output_key, site)))


def _readers_of(spec, key, site):
    found = set()
    readers = [entry for entry in spec.layers if key in entry.input_keys and entry.output_key != key]
    if not readers:
        raise ValueError(f"{site}: no conv or dense layer reads its units")
    for entry in readers:
        source = spec.model.get_layer(entry.name)
        if entry.role in _LINEAR_ROLES:
            found.add(entry.name)
        elif len(entry.input_keys) == 1 and (isinstance(source, _PASS_TYPES) or _homogeneous_layer(source)):
            found |= _readers_of(spec, entry.output_key, site)
        else:
            raise ValueError(f"{site}: its units reach {entry.name} ({type(source).__name__}), which a keep factor "
                             "does not pass through")
    return found


def _next_linear(spec, site):
    """The first conv/dense layer at or after `site` (only max-pool/flatten between)."""
    layer_name, slot = site.split(".")
    names = [layer.name for layer in spec.layers]
    start = names.index(layer_name) + (0 if slot == "pre" else 1)
    for layer in spec.layers[start:]:
        if isinstance(layer, (network.Conv, network.Dense, network.Output)):
            return layer.name
    raise ValueError(f"no linear layer after site {site}")


def unseparable(name, layer, placements, images, *, activation="relu", seed=0):
    """Why the Bernoulli dropout that `placements` (two) move across `layer`'s activation cannot separate them on
    `images` (each a batch), or None. So where what lies between its .mid and .post acts, on the values entering
    it, as a positively homogeneous map keeping 0: f(c z) = c f(z), up to float32 rounding, at c = keep and
    1 / keep (the factors in inference and in training) and f(0) = 0. Theory's difference then lies beyond the
    images (a ReLU(max_value=1000) fed below 1000); otherwise two equal networks are a real disagreement."""
    rate = next((sites[f"{layer}.mid"].rate for sites in map(lambda p: models.resolve_placement(name, p), placements)
                 if f"{layer}.mid" in sites), None)
    if rate is None:  # (nothing moved across it)
        return None
    model = build(name, f"{layer}.mid:{rate},{layer}.post:{rate}", activation=activation, seed=seed)
    mid, post = model.get_layer(f"{layer}.mid"), model.get_layer(f"{layer}.post")
    block, entering, keep = keras.Model(mid.output, post.input), keras.Model(model.input, mid.input), 1 - rate
    for x in images:
        z = keras.ops.convert_to_numpy(entering(x, training=False))
        fz = keras.ops.convert_to_numpy(block(z)).astype(np.float64)
        bound = 1e-6 * max(1.0, float(np.max(np.abs(fz))) / keep)
        if np.any(keras.ops.convert_to_numpy(block(0 * z))) or any(
                np.max(np.abs(keras.ops.convert_to_numpy(block(c * z)) - c * fz)) > bound for c in (keep, 1 / keep)):
            return None
    return (f"on every input the images give it, {layer}'s activation acts as a homogeneous one (f(c z) = c f(z) at "
            "c = keep, 1/keep; f(0) = 0): no mask separates the two there, theory's difference lies beyond")


def site_units(x, limit=16384):
    """`x` [batch, ...] as rows of units, at most `limit` units in all (a dropout layer on a vector is
    element-wise: fewer units test the same layer, and keep the claims' many passes in memory)."""
    rows = np.asarray(x).reshape(len(x), -1)
    return rows[:max(1, limit // rows.shape[1]), :limit]


def moved_across_homogeneous(spec, layer, a, b, activation="relu", norm="none"):
    """Whether placements `a` and `b` move a dropout across `layer`'s positively homogeneous activation: a Keras
    model's LeakyReLU or PReLU (a plain ReLU's moves the construction keys make equal, Bernoulli's), or the zoo's
    `activation` ReLU (whose Gaussian moves the keys keep apart)."""
    return homogeneous(spec, layer, None if is_keras(spec) else activation) and moved_across(spec, layer, a, b, norm)


def negative_draws(spec, layer, batch, placement, norm="none"):
    """(how many, why) of a Gaussian dropout moved across `layer`'s homogeneous activation by `placement` on `batch`
    images: only a draw below 0 separates the two (N(1, rate / (1 - rate)) at its rate), rare at a low rate."""
    sites = models.resolve_placement(spec.name, placement, norm=norm)
    rate = next((sites[site].rate for site in (f"{layer}.mid", f"{layer}.post") if site in sites), head(spec)[2])
    share = 0.5 * math.erfc(math.sqrt((1 - rate) / rate) / math.sqrt(2))
    model = spec.model if is_keras(spec) else build(spec.name, "none", norm=norm)  # (the layer's units)
    draws = batch * int(np.prod(model.get_layer(layer).output.shape[1:]))
    return share * draws, (f"only a negative Gaussian draw separates them, {share:.2g} of draws at rate {rate:g}: "
                           f"{share * draws:.2g} expected among these {draws:,}")


def moved_across(spec, layer, a, b, norm="none"):
    """Whether placements `a` and `b` differ only by a dropout at `layer`'s .mid in one and at its .post (with the
    same rate) in the other: moved across its activation."""
    def moved(placement):
        sites = models.resolve_placement(spec.name, placement, norm=norm)
        return sites if f"{layer}.post" in sites else {
            f"{layer}.post" if site == f"{layer}.mid" else site: value for site, value in sites.items()}

    resolved = [models.resolve_placement(spec.name, p, norm=norm) for p in (a, b)]
    return resolved[0] != resolved[1] and moved(a) == moved(b)


def register_network(text):
    """The name of the network `text` describes (layer tokens or JSON, as train.py's --network), registered to be
    checked; ValueError (one line) where it is malformed or has no hidden layer to move dropout across."""
    if text.strip() in models.list_models():
        raise ValueError(f"{text.strip()} is one of the zoo's networks: check it with --models={text.strip()}")
    spec = models.get_spec(models.register_spec(models.parse_network(text)))
    if not any(isinstance(entry, (network.Conv, network.Dense)) for entry in spec.layers):
        raise ValueError(f"network {spec.name} has no hidden conv or dense layer, so no activation to move dropout "
                         "across; give a network with one (e.g. flatten,dense128,dropout0.5)")
    return spec.name


def register_keras(path):
    """The name of the Keras model in the `.keras` file at `path`, registered to be checked with its own
    activations; ValueError (one line) where it cannot be (models.register_keras_model) or has no activation."""
    if pathlib.Path(path).stem in models.list_models():  # the model's name is its file's
        raise ValueError(f"--keras_model: its name {pathlib.Path(path).stem!r} (the file's) is a zoo network's; "
                         "copy the file under another name")
    name = models.register_keras_model(path)
    activation_pair(models.get_spec(name))
    return name


def keras_notes(name):
    """What the claims of the Keras model `name` do not reach: one layer's activation is moved across (claims 1
    and 4), and a model saved in a mixed precision is checked in float32."""
    spec = models.get_spec(name)
    site = activation_pair(spec)[2].split(".")[0]
    notes = [f"{name}: claims 1 and 4 move dropout across the activation of {site} alone (its last hidden layer "
             "with one); the activations of its other layers are not checked"]
    policy = next((layer.dtype_policy.name for layer in spec.model.layers if layer.dtype_policy.name != "float32"),
                  None)  # (a mixed model's own policy reads float32: its layers hold the policy)
    if policy:
        notes.append(f"{name} was saved under {policy}; its claims are checked in float32, and dropout itself in "
                     "each of --precisions (the 'dropout layers' lines)")
    return notes


def network_text(value):
    """--network's spec: the value, or the contents of FILE for `@FILE`."""
    try:
        return pathlib.Path(value[1:] or "?").read_text(encoding="utf-8-sig") if value.startswith("@") else value
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--network: cannot read {value[1:]!r} ({getattr(e, 'strerror', None) or e}); @FILE names "
                         "a text file holding the network spec") from None
