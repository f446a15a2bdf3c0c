"""One builder for every network: a layer list plus a placement gives a model.

A `NetworkSpec` describes a source network as plain data: its layers in
order, the dropout placement the source uses, and whether it outputs
probabilities or logits. The named placements (`after_activation`,
`conv`, ...) are derived from that data by `named_placements`, so every
network gets the same variants without copies of its code.

Layer naming, so names say where a layer sits:
  conv1          the linear op (Conv2D/Dense with no activation)
  conv1.prenorm  a dropout layer on the linear op's output, before its
                 BatchNormalization (a site only with norm="batch")
  conv1.bn       its BatchNormalization (norm="batch" only)
  conv1.act      its activation
  conv1.post     a dropout layer at site conv1.post (likewise .pre, .mid)
  logits         the output Dense; `probabilities` its softmax, if any

With norm="batch" every hidden conv/dense layer is linear op -> BN ->
activation; the output layer has no BN.
"""
import dataclasses
import numbers
import os

import keras

from models import activations
from models import layers as dropout_lib
from models import pooling
from models import sites as sites_lib

ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu", "exponential")
NORMS = ("none", "batch")
# Keras' BatchNormalization default. Its moving statistics start at mean 0,
# variance 1 and keep momentum^steps of that start: 1.3% after 435 steps, which
# for a layer whose inputs vary little is several times their real variance.
# Short runs want a lower momentum (0.9 keeps 1e-20 after 435 steps).
DEFAULT_BN_MOMENTUM = 0.99
CHANNELS = dropout_lib.CHANNELS  # every image layer's, whatever keras.json says
# Kernel seeds (offset = layer index) and mask streams (`mask_stream`) stay
# apart for networks of up to this many layers, Flatten and classifier included.
MAX_LAYERS = 50


def check_activation(activation):
    """Returns `activation`, or raises ValueError unless it is one of ACTIVATIONS."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; valid activations: {', '.join(ACTIVATIONS)}"
        )
    return activation


def check_norm(norm):
    """Returns `norm`, or raises ValueError unless it is one of NORMS."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid norms: {', '.join(NORMS)}")
    return norm


def check_bn_momentum(momentum, what="bn_momentum"):
    """Returns `momentum` as a float, or raises ValueError (naming it `what`) unless 0 < momentum < 1."""
    try:
        value = float(momentum)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise ValueError(f"{what} must be in (0, 1), got {momentum!r}; e.g. 0.9 for short runs, "
                         f"{DEFAULT_BN_MOMENTUM} (Keras' default)")
    return value


def _check_fits(layer, shape, images=None):
    """ValueError naming the layer where a conv kernel or pooling window is larger than its input."""
    window = layer.kernel_size if isinstance(layer, Conv) and layer.padding == "valid" else (
        layer.size if isinstance(layer, Pool) else None)
    if window is None or len(shape) != 4 or (shape[1] >= window and shape[2] >= window):
        return
    fix = ("use a smaller kernel, 'same' padding (e.g. conv32k5same), or fewer pooling layers before it"
           if isinstance(layer, Conv) else "use a smaller window, or fewer pooling layers before it")
    if len(images or ()) == 3 and images[0] <= 4 < min(images[1:]):  # input_shape (1, 28, 28): channels first
        fix = f"input_shape is (height, width, channels), channels last: e.g. ({images[1]}, {images[2]}, {images[0]})"
    raise ValueError(f"layer {layer.name!r} takes a {window}x{window} window but its input is "
                     f"{'x'.join(map(str, shape[1:]))}: {fix}")


# Where this process's cgroup (a container's, a Slurm job's) is named, and where its limits are read.
PROC_CGROUP, CGROUP_ROOT = "/proc/self/cgroup", "/sys/fs/cgroup"


def _cgroup_limit_files():
    """The memory-limit files of this process's cgroup and every cgroup above it: v2's memory.max, v1's
    memory.limit_in_bytes (a limit set on a parent, a Slurm job's above its step, binds too)."""
    try:
        with open(PROC_CGROUP) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:  # "0::/path" (v2), "N:memory:/path" (v1)
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers and "memory" not in controllers.split(","):
            continue
        root, name = (CGROUP_ROOT, "memory.max") if not controllers else (os.path.join(CGROUP_ROOT, "memory"),
                                                                          "memory.limit_in_bytes")
        parts = [part for part in path.split("/") if part]
        found += [os.path.join(root, *parts[:depth], name) for depth in range(len(parts), -1, -1)]
    return found


def _memory_bytes():
    """The memory this process may use: the machine's physical memory, or its cgroup's limit where lower; None
    where the platform says neither (not Linux or macOS)."""
    try:
        found = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    except (AttributeError, ValueError, OSError):
        found = []
    for path in _cgroup_limit_files():
        try:
            with open(path) as f:
                found.append(int(f.read().strip()))  # ("max": no limit, not a number)
        except (OSError, ValueError):
            pass
    return min(found, default=None)


def _check_weights(layer, inputs, outputs, total):
    """`total` parameters plus `layer`'s (a conv/dense layer from `inputs` channels to `outputs`); ValueError where
    training them could not fit this machine's memory (building alone allocated them: a dry run was killed)."""
    total += (layer.kernel_size ** 2 if isinstance(layer, Conv) else 1) * inputs * outputs + outputs
    need, memory = 3 * 4 * total, _memory_bytes()  # float32: the initializer's draw, the weights, their gradients
    if memory and need > memory:
        raise ValueError(f"layer {layer.name!r} brings the network to {total:,} parameters: building and training "
                         f"it hold at least three float32 copies of them ({need / 2**30:,.1f} GiB: the initializer's "
                         f"draw, the weights, their gradients), more than the {memory / 2**30:.1f} GiB of memory "
                         "here; give it fewer units or filters (or pool before the first dense layer)")
    return total


def check_seed(seed):
    """ValueError unless `seed` is None or an integer (it seeds kernels and masks)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an integer (or None), got {seed!r}")


# How far a `.post` placed beside its layer's `.mid` moves its stream away from `.mid`'s (site_stream): past any
# other offset of the network, and with seed * 1000 + offset below 2**31 for seeds up to a million.
POST_BESIDE_MID = 2**29


def mask_stream(layer_index, slot):
    """The seed offset of the dropout mask at `slot` of layer `layer_index`.

    `mid` and `post` share a stream, so moving dropout across an activation
    keeps the mask; `pre` has its own, and so has `prenorm` (200 + index keeps
    the pre/mid/post offsets of networks without BN as they always were; the
    streams stay apart for networks of up to MAX_LAYERS layers).
    """
    if slot == "prenorm":
        return 200 + layer_index
    return 100 + 2 * layer_index + (0 if slot == "pre" else 1)


def site_stream(placement, layer_name, layer_index, slot):
    """`mask_stream` of a placed site; a `.post` placed beside its layer's `.mid` draws its own (two masks:
    sharing one, a unit dropped at `.mid` would be the unit dropped at `.post`, its kept units scaled twice).
    """
    apart = slot == "post" and f"{layer_name}.mid" in placement
    return mask_stream(layer_index, slot) + (POST_BESIDE_MID if apart else 0)


def interchangeable_slots(kind, activation):
    """{slot: slot} pairs whose dropout gives the same network, mask for mask.

    For the Bernoulli kinds and ReLU, dropout at `mid` equals dropout at `post`
    of the same layer: the mask is >= 0 and ReLU is positively homogeneous and
    maps 0 to 0 (classic's inference scale 1 - rate > 0 commutes too), and BN
    sits before `mid`, so it is not in between. Gaussian noise can be
    negative, and other activations do not commute: there nothing moves.
    """
    if not dropout_lib.KINDS[kind].bernoulli or activation != "relu":
        return {}
    # The same mask needs the same stream; the builder draws mid and post from one.
    return {"mid": "post"} if mask_stream(0, "mid") == mask_stream(0, "post") else {}


@dataclasses.dataclass(frozen=True)
class Conv:
    name: str
    filters: int
    kernel_size: int
    padding: str = "valid"
    strides: int = 1
    slots = ("pre", "mid", "post")


@dataclasses.dataclass(frozen=True)
class Pool:
    name: str
    size: int = 2
    average: bool = False  # AveragePooling2D; MaxPooling2D by default
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
    def hidden(self):
        """Names of the hidden conv/dense layers (those BN normalises), in order."""
        return tuple(layer.name for layer in self.layers if isinstance(layer, (Conv, Dense)))

    @property
    def norm_after_hidden(self):
        """Whether a normalization comes after the last hidden layer's block: never in these networks."""
        return False

    def classifier_reads_alone(self, name):
        """Whether the classifier reads hidden layer `name` through no merge of branches: a chain always does."""
        del name
        return True

    def classifier_input_tensors(self):
        """The tensors on the classifier's input: in a chain, its input alone."""
        return {self.tensor_of(f"{self.output_name}.pre")}

    def tensors_before(self, roles):
        """The tensors of the sites before the first layer of `roles` ("conv", "dense", "output"), its input
        included: in a chain, the sites in order up to that layer's `.pre`."""
        names = {"conv": self.conv_names, "dense": self.dense_names, "output": (self.output_name,)}
        stop = {name for role in roles for name in names[role]}
        found = set()
        for site in self.sites():
            found.add(self.tensor_of(site))
            if site.rsplit(".", 1)[0] in stop:
                break
        return found

    def on_one_path(self, first, second):
        """Whether one of the two layers lies before the other: always, in a chain."""
        del first, second
        return True

    @property
    def own_batch_norm(self):
        """Whether BN is part of the network itself (never here: the zoo adds it with norm='batch')."""
        return False

    @property
    def conv_names(self):
        return tuple(layer.name for layer in self.layers if isinstance(layer, Conv))

    @property
    def dense_names(self):
        """The hidden Dense layers (the classifier is `output_name`)."""
        return tuple(layer.name for layer in self.layers if isinstance(layer, Dense))

    @property
    def pool_names(self):
        return tuple(layer.name for layer in self.layers if isinstance(layer, Pool))

    def part_end(self, name):
        """Where layer `name`'s part of the network ends: itself (a text network's layers carry their own
        normalization and activation)."""
        return name

    @property
    def output_name(self):
        return self.layers[-1].name

    def layer_activation(self, name, activation):
        """The activation between `name`'s .mid and .post sites: the network's one `activation`."""
        del name
        return activation

    def sites(self, norm="none"):
        """Every site of the network built with `norm`, in graph order."""
        return tuple(f"{layer.name}.{slot}" for layer in self.layers
                     for slot in _slots(layer, norm))

    def spatial_sites(self, norm="none"):
        """Sites on 4-D feature maps (everything up to the Flatten), with `norm`."""
        sites = []
        for layer in self.layers:
            if isinstance(layer, Flatten):
                break
            sites += [f"{layer.name}.{slot}" for slot in _slots(layer, norm)]
        return tuple(sites)

    def parse(self, text, norm="none", allow_stacked=False):
        """{site: Site} for a placement string; `.prenorm` sites exist only with norm='batch'."""
        with_batch_norm = set(self.sites("batch")) - set(self.sites(norm))
        named = next((n for n in (item.split(":")[0].strip() for item in text.split(",")) if n in with_batch_norm),
                     None)
        if named:  # (else "unknown site", listing the sites without it)
            raise ValueError(f"site {named!r} is before a BatchNormalization, which this network has only with "
                             "--norm=batch (norm='batch'); add it, or name a .pre, .mid or .post site")
        return sites_lib.parse(text, self.sites(norm), self.spatial_sites(norm), self.tensor_of, allow_stacked)

    def tensor_of(self, site):
        """The tensor a site drops units of: a `.pre` is the previous layer's `.post` (Flatten reshapes only)."""
        name, slot = site.rsplit(".", 1)
        if slot != "pre":
            return f"{name}.out" if slot == "post" else site
        index = [layer.name for layer in self.layers].index(name) - 1
        while index >= 0 and isinstance(self.layers[index], Flatten):
            index -= 1
        return f"{self.layers[index].name}.out" if index >= 0 else "input"


def _slots(layer, norm):
    """The layer's slots; a hidden conv/dense gains `prenorm` (before its BN) with norm='batch'."""
    if check_norm(norm) == "batch" and isinstance(layer, (Conv, Dense)):
        return ("pre", "prenorm", "mid", "post")
    return layer.slots


def build_network(spec, placement, *, rate=None, kind="inverted", activation="relu",
                  norm="none", num_classes=10, input_shape=(28, 28, 1), seed=None,
                  bn_momentum=DEFAULT_BN_MOMENTUM):
    """The uncompiled keras.Model for `spec` with dropout at `placement`'s sites.

    `rate` overrides every site's rate. With a `seed`, kernels and dropout
    masks are seeded per layer, so every placement built with the same seed
    starts from the same weights, and a mask depends only on its layer and
    side (`mask_stream`): moving dropout across an activation (mid <-> post)
    keeps the mask. norm="batch" puts a BatchNormalization between each
    hidden linear op and its activation, with momentum `bn_momentum`.
    """
    dropout_lib.check_kind(kind)
    check_activation(activation)
    batch_norm = check_norm(norm) == "batch"
    bn_momentum = check_bn_momentum(bn_momentum)
    placement = sites_lib.with_rate(placement, rate)
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")

    def seeded(offset):
        return None if seed is None else seed * 1000 + offset

    def dropout(x, layer_index, slot):
        site = placement.get(f"{spec.layers[layer_index].name}.{slot}")
        if site is None:
            return x
        layer = dropout_lib.make_dropout(
            kind, site.rate, spatial=site.spatial,
            seed=seeded(site_stream(placement, spec.layers[layer_index].name, layer_index, slot)),
            name=f"{spec.layers[layer_index].name}.{slot}",
        )
        return layer(x)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    relu, parameters = None, 0  # the last ReLU layer; the weights so far
    for index, layer in enumerate(spec.layers):
        _check_fits(layer, x.shape, tuple(input_shape))
        if isinstance(layer, (Conv, Dense, Output)):
            outputs = num_classes if isinstance(layer, Output) else getattr(layer, "filters", None) or layer.units
            parameters = _check_weights(layer, x.shape[-1], int(outputs), parameters)
        init = keras.initializers.GlorotUniform(seed=seeded(index))
        x = dropout(x, index, "pre")
        # Under BN the linear op has no bias: BN subtracts the batch mean, and its
        # beta is the bias.
        if isinstance(layer, Conv):
            x = keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides,
                                    padding=layer.padding, use_bias=not batch_norm, kernel_initializer=init,
                                    data_format=CHANNELS, name=layer.name)(x)
        elif isinstance(layer, Dense):
            x = keras.layers.Dense(layer.units, use_bias=not batch_norm, kernel_initializer=init,
                                   name=layer.name)(x)
        elif isinstance(layer, Pool) and layer.average:
            x = keras.layers.AveragePooling2D(layer.size, data_format=CHANNELS, name=layer.name)(x)
        elif isinstance(layer, Pool):
            pool = pooling.MaxPooling2D(layer.size, data_format=CHANNELS, name=layer.name)
            if relu is not None and relu.output is x:  # nothing between them: the pool takes ReLU's gradient
                pooling.fold_relu(relu, pool)
            x = pool(x)
        elif isinstance(layer, Flatten):
            x = keras.layers.Flatten(data_format=CHANNELS, name=layer.name)(x)
        elif isinstance(layer, Output):
            # float32 outputs keep the loss and softmax stable under mixed precision.
            x = keras.layers.Dense(num_classes, kernel_initializer=init, dtype="float32",
                                   name=layer.name)(x)
            if layer.softmax:
                x = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
        if isinstance(layer, (Conv, Dense)):
            if batch_norm:  # the global dtype policy: Keras keeps BN's statistics in float32
                x = dropout(x, index, "prenorm")
                x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{layer.name}.bn")(x)
            x = dropout(x, index, "mid")
            act = activations.Activation(activation, name=f"{layer.name}.act")
            x = act(x)
            relu = act if activation == "relu" else None
        x = dropout(x, index, "post")
    return keras.Model(inputs, x, name=spec.name)
