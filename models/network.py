"""One builder for every network: a layer list plus a placement gives a model.

A `NetworkSpec` describes a source network as plain data: its layers in
order, the dropout placement the source uses, and whether it outputs
probabilities or logits. The named placements (`after_activation`,
`conv`, ...) are derived from that data by `named_placements`, so every
network gets the same variants without copies of its code.

Layer naming, so names say where a layer sits:
  conv1          the linear op (Conv2D/Dense with no activation)
  conv1.act      its activation
  conv1.post     a dropout layer at site conv1.post (likewise .pre, .mid)
  logits         the output Dense; `probabilities` its softmax, if any
"""
import dataclasses

import keras

from models import layers as dropout_lib
from models import sites as sites_lib

ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu", "exponential")


def check_activation(activation):
    """Returns `activation`, or raises ValueError unless it is one of ACTIVATIONS."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; valid activations: {', '.join(ACTIVATIONS)}"
        )
    return activation


@dataclasses.dataclass(frozen=True)
class Conv:
    name: str
    filters: int
    kernel_size: int
    padding: str = "valid"
    slots = ("pre", "mid", "post")


@dataclasses.dataclass(frozen=True)
class Pool:
    name: str
    size: int = 2
    slots = ("post",)


@dataclasses.dataclass(frozen=True)
class Flatten:
    name: str = "flatten"
    slots = ()


@dataclasses.dataclass(frozen=True)
class Dense:
    name: str
    units: int
    slots = ("pre", "mid", "post")


@dataclasses.dataclass(frozen=True)
class Output:
    """The classifier: Dense(num_classes), with a softmax unless the source emits logits."""

    name: str = "logits"
    softmax: bool = True
    slots = ("pre",)


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    name: str
    source: str
    layers: tuple
    canonical: str  # the source's placement, in the site syntax
    conv_rate: float = 0.1  # rate the `conv`/`spatial` placements add after each conv

    @property
    def outputs(self):
        """'probabilities' if the network ends in a softmax, else 'logits'."""
        return "probabilities" if self.layers[-1].softmax else "logits"

    @property
    def sites(self):
        """Every site of the network, in graph order."""
        return tuple(f"{layer.name}.{slot}" for layer in self.layers for slot in layer.slots)

    @property
    def spatial_sites(self):
        """Sites on 4-D feature maps: everything up to the Flatten."""
        sites = []
        for layer in self.layers:
            if isinstance(layer, Flatten):
                break
            sites += [f"{layer.name}.{slot}" for slot in layer.slots]
        return tuple(sites)

    def parse(self, text):
        return sites_lib.parse(text, self.sites, self.spatial_sites)


def named_placements(spec):
    """{placement name: {site: Site}} for the variants that make sense for `spec`.

    The source's dropout splits in two: the *head* dropout (the one at a dense
    layer) and the *conv-stack* dropout (e.g. the classic example's 0.25 after
    pooling). The dense variants move the head dropout and keep the
    conv-stack dropout as the source has it.
    """
    canonical = spec.parse(spec.canonical)
    conv_stack = {k: v for k, v in canonical.items() if k in spec.spatial_sites}
    head_rate = next(v.rate for k, v in canonical.items() if k not in spec.spatial_sites)
    head = sites_lib.Site(head_rate)
    hidden_dense = [layer.name for layer in spec.layers if isinstance(layer, Dense)]
    convs = [layer.name for layer in spec.layers if isinstance(layer, Conv)]

    placements = {"canonical": canonical, "none": {}}
    if hidden_dense:
        placements["after_activation"] = {**conv_stack, **{f"{d}.post": head for d in hidden_dense}}
        placements["before_activation"] = {**conv_stack, **{f"{d}.mid": head for d in hidden_dense}}
        placements["before_dense"] = {**conv_stack, **{f"{d}.pre": head for d in hidden_dense}}
        placements["both"] = {
            **conv_stack,
            **{f"{d}.{slot}": head for d in hidden_dense for slot in ("pre", "post")},
        }
    else:  # only the classifier is dense: its input is the one dense site
        placements["before_dense"] = {**conv_stack, f"{spec.layers[-1].name}.pre": head}
    if convs:
        conv_sites = {f"{c}.post": sites_lib.Site(spec.conv_rate) for c in convs}
        placements["conv"] = _in_graph_order(spec, {**canonical, **conv_sites})
        placements["spatial"] = {
            name: dataclasses.replace(site, spatial=name in spec.spatial_sites)
            for name, site in placements["conv"].items()
        }
    return {name: _in_graph_order(spec, p) for name, p in placements.items()}


def _in_graph_order(spec, placement):
    return {name: placement[name] for name in spec.sites if name in placement}


def build_network(spec, placement, *, rate=None, kind="inverted", activation="relu",
                  num_classes=10, input_shape=(28, 28, 1), seed=None):
    """The uncompiled keras.Model for `spec` with dropout at `placement`'s sites.

    `rate` overrides every site's rate. With a `seed`, kernels and dropout
    masks are seeded per layer, so every placement built with the same seed
    starts from the same weights, and a mask depends only on its layer and
    side: moving dropout across an activation (mid <-> post) keeps the mask.
    """
    dropout_lib.check_kind(kind)
    check_activation(activation)
    if rate is not None:
        rate = sites_lib.check_rate(rate)
        placement = {k: dataclasses.replace(v, rate=rate) for k, v in placement.items()}
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")

    def seeded(offset):
        return None if seed is None else seed * 1000 + offset

    def dropout(x, layer_index, slot):
        site = placement.get(f"{spec.layers[layer_index].name}.{slot}")
        if site is None:
            return x
        side = 0 if slot == "pre" else 1  # mid and post share a mask stream
        layer = dropout_lib.make_dropout(
            kind, site.rate, spatial=site.spatial, seed=seeded(100 + 2 * layer_index + side),
            name=f"{spec.layers[layer_index].name}.{slot}",
        )
        return layer(x)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for index, layer in enumerate(spec.layers):
        init = keras.initializers.GlorotUniform(seed=seeded(index))
        x = dropout(x, index, "pre")
        if isinstance(layer, Conv):
            x = keras.layers.Conv2D(layer.filters, layer.kernel_size, padding=layer.padding,
                                    kernel_initializer=init, name=layer.name)(x)
        elif isinstance(layer, Dense):
            x = keras.layers.Dense(layer.units, kernel_initializer=init, name=layer.name)(x)
        elif isinstance(layer, Pool):
            x = keras.layers.MaxPooling2D(layer.size, name=layer.name)(x)
        elif isinstance(layer, Flatten):
            x = keras.layers.Flatten(name=layer.name)(x)
        elif isinstance(layer, Output):
            # float32 outputs keep the loss and softmax stable under mixed precision.
            x = keras.layers.Dense(num_classes, kernel_initializer=init, dtype="float32",
                                   name=layer.name)(x)
            if layer.softmax:
                x = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
        if isinstance(layer, (Conv, Dense)):
            x = dropout(x, index, "mid")
            x = keras.layers.Activation(activation, name=f"{layer.name}.act")(x)
        x = dropout(x, index, "post")
    return keras.Model(inputs, x, name=spec.name)
