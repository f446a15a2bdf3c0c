"""Every dropout placement for a Keras model you already have.

    model = models.load_keras_model("mine.keras")     # safe_mode: no code runs from the file
    spec = models.describe_model(model)               # its sites, own placement, outputs
    spec.sites()                                      # ('conv1.pre', 'conv1.mid', 'conv1.post', ...)
    variant = models.place_dropout(model, "before_dense", kind="inverted", seed=0)
    variant = models.place_dropout(model, "dense.pre:0.5,conv1.post:0.1:spatial", seed=0)

`place_dropout` takes a Sequential or functional Keras 3 model with one image
input [H, W, C] and one output, removes its dropout layers, and inserts
dropout at sites named after the model's own layers, in the zoo's site
language (models/sites.py):

  LAYER.pre   on the input of a conv/dense layer;
  LAYER.mid   between a conv/dense layer's linear op and its fused activation
              (`Dense(128, activation="relu")` is split into `LAYER` with no
              activation and `LAYER.act`, the same function);
  LAYER.post  on the layer's output (after a fused activation).

A conv/dense layer's block of BatchNormalization and activation layers
(Dense -> BN -> ReLU, each the only reader of the one before) is one layer
here, as in the zoo's networks: `.post` is after the block, `.mid` before
its activation.

The classifier (the last conv/dense layer, before a softmax if the model
has one) has only `.pre`. The model's own dropout becomes its `canonical`
placement: a dropout layer after layer P is `P.post` (`:spatial` for
SpatialDropout2D), one on the input is the next layer's `.pre` (through a
Flatten: the conv/dense layer's, as the zoo names it). The named
placements (`after_activation`, `before_dense`, `conv`, ...) are derived
from this structure by `network.named_placements`, as for the zoo.

Every weight is copied from the source model, which is never changed.
Masks are seeded as the zoo seeds them (`network.mask_stream` of the
layer's index in the source model), so `.mid` and `.post` of a layer with a
ReLU share a mask and the sweep's equivalence grouping stays right (placed
together, each draws its own).

Pixels reach every zoo model scaled to [0, 1] (dropzoo/preprocess.py). A
model whose first layer is `Rescaling(scale, offset)` expects raw pixels,
so the rewrite multiplies its scale by 255: the variant computes on [0, 1]
input exactly what the source computed on [0, 255], and the export scales
once. Layers follow the trainer's precision policy; the classifier and its
softmax compute in float32, as in the zoo.
"""
import collections
import dataclasses
import functools
import os

import keras

from models import keras_file
from models import keras_graph as graph
from models import keras_own
from models import layers as dropout_lib
from models import network
from models import sites as sites_lib

# Options of models.build that change zoo networks only: a Keras model keeps its own.
_ZOO_ONLY = {"activation": "relu", "norm": "none", "bn_momentum": network.DEFAULT_BN_MOMENTUM}


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer of the source model as the rewrite sees it."""

    name: str
    index: int  # position in the source model's graph order: its mask streams
    role: str  # "conv", "dense", "output" (the classifier), "head" (after it), "other", "block" (see owner)
    activation: str  # what lies between a conv/dense layer's .mid and .post ("linear" if nothing)
    slots: tuple
    input_rank: int  # rank of the tensor at `.pre` (0: several inputs)
    output_rank: int
    # The tensors at `.pre` and `.post`, as the index of the call that made them (-1: the model's input),
    # looking through layers that only reshape or drop (Flatten, Reshape, dropout): see tensor_of.
    input_key: int = -2
    output_key: int = -2
    # A layer of a conv/dense layer's block (its BN or activation layers): that layer's name; whether this
    # layer's input is the owner's `.mid` (its activation layer) and its output the owner's `.post` (the last).
    owner: str = ""
    mid_before: bool = False
    block_end: bool = False
    # A conv/dense layer's fused activation ("linear" if none): the rewrite splits it off (`LAYER.act`).
    fused: str = "linear"
    # Whether other layers read its input too (through reshapes and dropout): its `.pre` drops it for this layer
    # only (the rewrite inserts the dropout before it), so it is not the producer's `.post`.
    shared_input: bool = False
    # The keys of all its input tensors (a merge reads several; input_key is -2 there).
    input_keys: tuple = ()


@dataclasses.dataclass(frozen=True)
class KerasModelSpec:
    """A Keras model described as the registry's specs are: sites, placements, outputs."""

    name: str
    source: str
    layers: tuple  # of Layer, in graph order
    canonical: str  # the model's own dropout, in the site syntax
    outputs: str  # "probabilities" or "logits"
    input_shape: tuple
    num_classes: int
    rescaling: bool  # a first Rescaling layer, folded to take [0, 1] pixels
    digest: str = ""  # sha256 of the file it was loaded from, if any
    conv_rate: float = 0.1  # rate the `conv`/`spatial` placements add after each conv
    own_kinds: tuple = ()  # the dropout kinds (layers.KINDS) of its own dropout layers, sorted
    model: keras.Model = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def hidden(self):
        """Names of the hidden conv/dense layers, in order."""
        return tuple(layer.name for layer in self.layers if layer.role in ("conv", "dense"))

    @property
    def own_batch_norm(self):
        """Whether a hidden layer after the first has BatchNormalization in its block.

        There the bn_* placements mean what they mean for the zoo's norm='batch':
        `bn_before`'s dropout on the layer before feeds that BN.
        """
        later = set(self.hidden[1:])
        return any(layer.owner in later and isinstance(self.model.get_layer(layer.name),
                                                       keras.layers.BatchNormalization)
                   for layer in self.layers if layer.role == "block")

    @property
    def norm_after_hidden(self):
        """Whether a normalization layer comes after the last hidden layer's block (a BN after a residual Add).

        There `bn_after_last` (dropout after the last hidden layer) would feed it.
        """
        last = next((layer for layer in self.layers if self.hidden and layer.name == self.hidden[-1]), None)
        return last is not None and any(
            layer.index > last.index and layer.owner != last.name
            and isinstance(self.model.get_layer(layer.name), graph.NORM_TYPES) for layer in self.layers)

    def classifier_input_tensors(self):
        """The tensors from each branch's last hidden dense layer to the classifier (through merges and other
        layers): a dropout on any of them is on the classifier's input, or on a branch of it. A tensor no dense
        layer lies before (a skip from the conv stack, a global pooling, the images however preprocessed) is not:
        dropout there is the conv stack's, or the input's."""
        found, todo = set(), [next(layer.input_key for layer in self.layers if layer.role == "output")]
        while todo:
            key = todo.pop()
            if key in found or key < 0 or "dense" not in self._roles_before(key):
                continue
            found.add(key)
            producer = self._producer(key)
            if producer.role != "dense":
                todo += list(producer.input_keys)
        return found

    def tensors_before(self, roles):
        """The tensors of the sites that no layer of `roles` ("conv", "dense", "output") lies before, on any path
        from the images: the images however preprocessed (all three), the conv stack (dense and output)."""
        roles = set(roles)
        found = set()
        for site in self.sites():
            name, slot = site.rsplit(".", 1)
            layer = next(layer for layer in self.layers if layer.name == name)
            keys = layer.input_keys if slot in ("pre", "mid") else (layer.output_key,)
            above = set().union(*(self._roles_before(key) for key in keys))
            if not (above | ({layer.role} if slot == "mid" else set())) & roles:
                found.add(self.tensor_of(site))
        return found

    def _producer(self, key):
        """The layer whose output is tensor `key` (a conv/dense layer for its block's end)."""
        return next((layer for layer in self.layers if layer.role in ("conv", "dense", "pool", "output")
                     and layer.output_key == key), None) or next(layer for layer in self.layers if layer.index == key)

    def _roles_before(self, key):
        """The roles of the layers that make tensor `key`, on every path from the images (it included)."""
        if key < 0:
            return frozenset()
        cache = self.__dict__.setdefault("_roles_cache", {})
        if key not in cache:
            producer = self._producer(key)
            cache[key] = frozenset({producer.role}).union(*(self._roles_before(k) for k in producer.input_keys))
        return cache[key]

    def on_one_path(self, first, second):
        """Whether one of layers `first` and `second` lies before the other on a path from the images (a conv
        and a pooling layer of one branch), not beside it (towers of which only one pools)."""
        return first in self._names_before(second) or second in self._names_before(first)

    def _names_before(self, name):
        """The names of the layers on every path from the images to layer `name`'s input."""
        cache = self.__dict__.setdefault("_names_cache", {})
        if name not in cache:
            layer = next(layer for layer in self.layers if layer.name == name)
            producers = [self._producer(key) for key in layer.input_keys if key >= 0]
            cache[name] = frozenset(p.name for p in producers).union(*(self._names_before(p.name)
                                                                         for p in producers))
        return cache[name]

    def classifier_reads_alone(self, name):
        """Whether the classifier reads hidden layer `name` through single-input layers only: not through a merge
        of branches (parallel towers concatenated, a residual Add), where dropout after `name` would drop one
        branch and leave the others."""
        key = next(layer.input_key for layer in self.layers if layer.role == "output")
        while key >= 0:
            layer = self._producer(key)
            if layer.role in ("conv", "dense"):
                return layer.name == name
            key = layer.input_key  # -2 where it reads several tensors
        return False

    def part_end(self, name):
        """Where layer `name`'s part of the network ends (Conv -> MaxPool -> BN -> ReLU: the pool's, at the ReLU)."""
        return graph.part_end(self.layers, self.model, name)

    @property
    def conv_names(self):
        return tuple(layer.name for layer in self.layers if layer.role == "conv")

    @property
    def dense_names(self):
        return tuple(layer.name for layer in self.layers if layer.role == "dense")

    @property
    def pool_names(self):
        return tuple(layer.name for layer in self.layers if layer.role == "pool")

    def tensor_of(self, site):
        """The tensor a site drops units of (a `.mid` is its own; `.pre` and `.post` by their producer)."""
        name, slot = site.rsplit(".", 1)
        layer = next(layer for layer in self.layers if layer.name == name)
        if slot == "pre" and layer.shared_input:  # this layer's copy of a tensor others read undropped
            return site
        return {"pre": layer.input_key, "post": layer.output_key}.get(slot, site)

    @property
    def output_name(self):
        return next(layer.name for layer in self.layers if layer.role == "output")

    def layer_activation(self, name, activation):
        """The activation between `name`'s .mid and .post sites: its own, whatever `activation` says."""
        del activation
        return next((layer.activation for layer in self.layers if layer.name == name), "linear")

    def sites(self, norm="none"):
        check_zoo_only("norm", norm)
        return tuple(f"{layer.name}.{slot}" for layer in self.layers for slot in layer.slots)

    def spatial_sites(self, norm="none"):
        """Sites whose tensor is a 4-D feature map [batch, H, W, C]."""
        check_zoo_only("norm", norm)
        return tuple(f"{layer.name}.{slot}" for layer in self.layers for slot in layer.slots
                     if (layer.input_rank if slot == "pre" else layer.output_rank) == 4)

    def parse(self, text, norm="none", allow_stacked=False):
        return sites_lib.parse(text, self.sites(norm), self.spatial_sites(norm), self.tensor_of, allow_stacked)


def describe_file(path, name=None):
    """The KerasModelSpec of the `.keras` file at `path` (loaded once per file version)."""
    stat = os.stat(path) if os.path.isfile(path) else None
    return _describe_file(os.path.abspath(path), name, stat and (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _describe_file(path, name, version):
    del version  # part of the cache key only: a rewritten file is read again
    model = keras_file.load_keras_model(path)
    return describe_model(model, name=name or keras_file.default_name(path), source=path,
                          digest=keras_file.content_digest(model))


def describe_model(model, name=None, source=None, digest=""):
    """The KerasModelSpec of `model`: its sites, canonical placement and outputs.

    Raises ValueError (one line saying why) for a model the rewrite cannot
    take: subclassed, several inputs or outputs, shared layers, nested
    models, a non-image input, or an output that is neither a softmax nor
    logits. A `.keras` file's path is read as `describe_file` reads it.
    """
    if isinstance(model, (str, os.PathLike)):  # as place_dropout and --keras_model take it
        return describe_file(model, name)
    if not isinstance(model, keras.Model):
        raise ValueError(f"describe_model takes a keras.Model or the path of a .keras file, got {type(model).__name__}")
    what = f"model {name or model.name!r}"
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(f"{what} is a Sequential without an input shape; start it with "
                             "keras.Input(shape=(H, W, C)) so its graph exists")
    elif getattr(model, "outputs", None) is None:  # a functional model is a graph from inputs to outputs
        raise ValueError(f"{what} is a subclassed model ({type(model).__name__}): its layers are called in "
                         "Python, not recorded as a graph, so they cannot be rewired; write it as a "
                         "Sequential or functional model")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"{what} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "place_dropout rewrites classifiers with one image input and one output")
    if not isinstance(model, keras.Sequential) and isinstance(model.input, dict):
        raise ValueError(f"{what} takes its input as a dict ({', '.join(model.input)}); place_dropout feeds one "
                         "image tensor: build the model on the input itself, keras.Model(image, outputs)")
    input_shape = tuple(model.inputs[0].shape[1:])
    if len(input_shape) != 3 or None in input_shape:
        fix = (f": give grayscale images their channel axis, keras.Input(shape={input_shape + (1,)}) (a Flatten "
               "after it reads the same)" if len(input_shape) == 2 and None not in input_shape else "")
        raise ValueError(f"{what} takes inputs of shape {input_shape}; place_dropout rewrites image "
                         f"classifiers with one fixed-size [H, W, C] input{fix}")
    output_shape = tuple(model.outputs[0].shape[1:])
    if len(output_shape) != 1:
        raise ValueError(f"{what} outputs {output_shape} per image; the zoo trains classifiers with one score "
                         "per class, [batch, classes]: end it with Flatten or GlobalAveragePooling2D before its "
                         "Dense classifier")
    calls = graph.trace(model, name)
    names = {c.layer.name for c in calls}
    odd = sorted(n for n in names if any(ch in n for ch in ":,") or n != n.strip() or not n)
    if odd:  # site strings are LAYER.SLOT:RATE,...: such a name could not be written in one
        raise ValueError(f"{what} has a layer named {odd[0]!r}; its sites are written LAYER.SLOT:RATE,... so a "
                         "layer name cannot hold ':' or ',' (or start or end with a space): rename that layer")
    taken = sorted(n for n in names if n == "image" or any(
        n == f"{other}.{suffix}" for other in names for suffix in ("pre", "mid", "post", "prenorm", "act")))
    if taken:
        made = any((c.layer.name.endswith(".act") and model.inputs[0].name == "image")  # `none`: no dropout left
                   or (isinstance(c.layer, dropout_lib.dropout_types())
                       and c.layer.name.endswith((".pre", ".mid", ".post"))) for c in calls)
        fix = ("it looks like a variant the zoo built (place_dropout's, or a run's model.keras): give the model it "
               "started from, from which every placement starts (a run's config.json names its --model, --network "
               "or --keras_model)" if made else "rename that layer")
        raise ValueError(f"{what} has a layer named {taken[0]!r}, a name the rewrite gives its own layers (the "
                         f"input 'image'; LAYER.pre, .mid, .post and .act); {fix}")
    return _spec_of(model, calls, input_shape, name or model.name, source or f"keras.Model {model.name!r}",
                    digest)


def _output_of(model, calls, name):
    """(index of the classifier's call, 'probabilities' | 'logits')."""
    what = f"model {name!r}"
    last = len(calls) - 1
    layer = calls[last].layer
    softmax_layer = isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and graph.activation_name(layer) == "softmax")
    if softmax_layer:
        producer = [i for i, c in enumerate(calls) if c.output in calls[last].inputs]
        if len(producer) == 1 and graph.is_dropout(calls[producer[0]].layer):
            raise ValueError(f"{what} drops the classifier's logits ({calls[producer[0]].layer.name!r}, before its "
                             "softmax), a site the zoo does not place; move that dropout before the classifier "
                             "(onto its input) or remove it")
        if len(producer) != 1 or not isinstance(calls[producer[0]].layer, graph.LINEAR_TYPES) \
                or graph.fused_activation(calls[producer[0]].layer) != "linear":
            raise ValueError(f"{what} ends in a softmax that does not follow a linear Dense/conv layer; "
                             "place_dropout needs a classifier layer (no activation) right before the softmax: "
                             "after a global pooling, end with Dense(num_classes) and the softmax")
        return producer[0], "probabilities"
    if not isinstance(layer, graph.LINEAR_TYPES):
        raise ValueError(f"{what} ends in {type(layer).__name__} {layer.name!r}; place_dropout needs a "
                         "Dense (or conv) classifier as the last layer, optionally followed by a softmax (after a "
                         "global pooling: Dense(num_classes))")
    activation = graph.fused_activation(layer)
    if activation not in ("softmax", "linear"):
        raise ValueError(f"{what} ends in a {activation} activation; the zoo trains softmax classifiers: "
                         "end the model with a softmax or with logits (no activation)")
    return last, "probabilities" if activation == "softmax" else "logits"


def _spec_of(model, calls, input_shape, name, source, digest):
    output_index, outputs = _output_of(model, calls, name)
    num_classes = int(model.outputs[0].shape[-1])
    # A first Rescaling that alone sees the raw pixels can be folded (see the module doc).
    rescaling = isinstance(calls[0].layer, keras.layers.Rescaling) and sum(
        calls[0].inputs[0] in c.inputs for c in calls) == 1
    graph.check_input_scale(calls, rescaling, f"model {name!r}")
    producer = {c.output: i for i, c in enumerate(calls)}

    def tensor(tensor_id):
        """The index of the call that made this tensor, through layers that only reshape or drop (-1: input)."""
        index = producer.get(tensor_id, -1)
        while (index >= 0 and len(calls[index].inputs) == 1
               and (isinstance(calls[index].layer, graph.RESHAPING_TYPES) or graph.is_dropout(calls[index].layer))):
            index = producer.get(calls[index].inputs[0], -1)
        return index

    readers = collections.Counter(tensor_id for c in calls for tensor_id in c.inputs)

    def shared(tensor_id):
        """Whether another layer reads this tensor, or one it is a reshaped or dropped copy of."""
        while readers[tensor_id] < 2:
            index = producer.get(tensor_id, -1)
            if index < 0 or len(calls[index].inputs) != 1 or not (
                    isinstance(calls[index].layer, graph.RESHAPING_TYPES) or graph.is_dropout(calls[index].layer)):
                return False
            tensor_id = calls[index].inputs[0]
        return True

    blocks = graph.blocks(calls, output_index)
    members = {i: (owner, position) for owner, block in blocks.items() for position, i in enumerate(block)}
    layers = []
    for index, call in enumerate(calls):
        layer = call.layer
        if graph.is_dropout(layer):
            continue
        activation = graph.fused_activation(layer)
        block = blocks.get(index, [])
        if index in members:
            owner, position = members[index]
            owner_block = blocks[owner]
            layers.append(Layer(layer.name, index, "block", "linear", (), call.rank_in, call.rank_out,
                                tensor(call.inputs[0]), tensor(call.output), owner=calls[owner].layer.name,
                                mid_before=index == graph.mid_layer(calls, owner, owner_block),
                                block_end=position == len(owner_block) - 1))
            continue
        if index == output_index:
            role, slots = "output", ("pre",)
        elif index > output_index:
            role, slots = "head", ()
        elif isinstance(layer, graph.CONV_TYPES):
            role = "conv"
        elif isinstance(layer, keras.layers.Dense):  # on a feature map, one per position: a 1x1 conv
            role = "dense" if call.rank_in <= 2 else "conv"
        elif isinstance(layer, graph.POOL_TYPES):
            role = "pool"
        else:
            role = "other"
        fused = activation
        if role in ("conv", "dense"):
            mid = graph.mid_layer(calls, index, block)
            after_mid = block if fused != "linear" else block[block.index(mid):] if mid is not None else []
            between = ([fused] if fused != "linear" else []) + [graph.function_name(calls[i].layer) for i in after_mid]
            activation = ",".join(between) or "linear"  # "relu": .mid and .post are one network for ReLU
            penalised = ([layer] if fused != "linear" else []) + [calls[i].layer for i in after_mid]
            if any(getattr(other, "activity_regularizer", None) is not None for other in penalised):
                activation += ",activity_regularizer"  # it reads the activations: dropped at .mid, not at .post
            slots = ("pre", "mid", "post") if activation != "linear" else ("pre", "post")
            if call.rank_in == 0:
                slots = slots[1:]
        elif role in ("other", "pool"):
            slots = () if (index == 0 and rescaling) else ("post",)
        input_key = tensor(call.inputs[0]) if len(call.inputs) == 1 else -2
        output = calls[block[-1]].output if block else call.output
        layers.append(Layer(layer.name, index, role, activation, slots, call.rank_in, call.rank_out,
                            input_key, tensor(output), fused=fused,
                            shared_input=len(call.inputs) == 1 and shared(call.inputs[0]),
                            input_keys=tuple(tensor(t) for t in call.inputs)))
    spec = KerasModelSpec(name=name, source=source, layers=tuple(layers), canonical="", outputs=outputs,
                          input_shape=input_shape, num_classes=num_classes, rescaling=rescaling,
                          digest=digest, model=model)
    return dataclasses.replace(spec, canonical=sites_lib.format_placement(keras_own.own_dropout(calls, spec)),
                               own_kinds=keras_own.own_kinds(name, calls))


def check_zoo_only(option, value):
    """Raises ValueError unless `value` is the default of `option`, a zoo-only build option."""
    if value is not None and value != _ZOO_ONLY[option]:
        raise ValueError(f"{option}={value!r} changes the zoo's networks; a Keras model keeps its own "
                         f"layers (leave {option} at {_ZOO_ONLY[option]!r})")
