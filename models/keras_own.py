"""A user's Keras model's own dropout: where its dropout layers are, as sites, and of which kind.

`own_dropout` reads the model's dropout layers as the sites of its
`canonical` placement (models/keras_model.py describes the rest of the
model); `own_kinds` says which kinds they are, and `check_canonical_kind`
refuses a canonical drawn as another kind than the model's own.
"""
import keras

from models import keras_graph as graph
from models import layers as dropout_lib
from models import masks
from models import placements
from models import sites as sites_lib


def _own(calls):
    """The calls of the model's own dropout layers: a Dropout(0.0) (a placeholder) drops nothing and is none."""
    return [c for c in calls if graph.is_dropout(c.layer) and c.layer.rate]


def placeholder_note(spec):
    """A line for a Keras model with a Dropout of rate 0 (a placeholder, no dropout) at its head, else None: every
    head placement drops at its head rate there (0.5 where the model drops nowhere else at the head)."""
    model = getattr(spec, "model", None)
    if model is None:
        return None
    inputs = dropout_lib.layer_inputs(model)
    readers = {name: [reader for reader, read in inputs.items() if name in read] for name in inputs}

    def reaches_classifier(name, seen=()):  # through no other conv/dense layer
        layer = model.get_layer(name)
        if isinstance(layer, graph.LINEAR_TYPES) and name not in seen:
            return name == spec.output_name
        return any(reaches_classifier(reader, (*seen, name)) for reader in readers.get(name, ()))

    zero = [layer.name for layer in model.layers if graph.is_dropout(layer) and not getattr(layer, "rate", 1)
            and reaches_classifier(layer.name, (layer.name,))]
    if not zero:
        return None
    return (f"model {spec.name}: its head dropout {', '.join(map(repr, zero))} has rate 0 (no dropout); the head "
            f"placements (after_activation, before_dense, ...) drop at {placements.own_rates(spec)[0]:g} there; "
            "--rate=R sets another")


def own_kinds(name, calls):
    """The kinds of the model's own dropout layers; ValueError for one no kind has (AlphaDropout)."""
    kinds = set()
    for c in _own(calls):
        kind = next((name for name, k in dropout_lib.KINDS.items() if isinstance(c.layer, k.types)),
                    "inverted" if isinstance(c.layer, graph.OTHER_SPATIAL_TYPES) else None)
        if kind is None:
            raise ValueError(f"dropout layer {c.layer.name!r} of model {name!r} is {type(c.layer).__name__}, "
                             f"which no dropout kind here draws ({', '.join(dropout_lib.KINDS)}); replace it with "
                             "Dropout or GaussianDropout")
        kinds.add(kind)
    return tuple(sorted(kinds))


def check_canonical_kind(spec, placement, kind):
    """ValueError where `canonical` (the model's own dropout) would be drawn as another kind than its own."""
    if placement != "canonical" or not spec.own_kinds or spec.own_kinds == (kind,):
        return
    own = " and ".join(spec.own_kinds)
    fix = f"pass --kind={spec.own_kinds[0]} (kind={spec.own_kinds[0]!r})" if len(spec.own_kinds) == 1 else \
        "give its sites with --sites and one --kind"
    raise ValueError(f"the own dropout of model {spec.name!r} is of kind {own}, so its canonical placement drawn "
                     f"as {kind} would not be the model's own: {fix}, or choose other placements (--placement=all "
                     "holds canonical: list the others)")


def _site_after(spec, index):
    """The site on the output of call `index`, or None where no site is (inside a block)."""
    info = next((layer for layer in spec.layers if layer.index == index), None)
    if info is None:
        return None
    if info.role == "block":
        owner = next(layer for layer in spec.layers if layer.name == info.owner)
        if info.block_end:
            return f"{owner.name}.post"
        reader = next((layer for layer in spec.layers if layer.owner == owner.name and layer.index > index), None)
        return f"{owner.name}.mid" if reader is not None and reader.mid_before else None
    if any(layer.owner == info.name for layer in spec.layers):  # a block's first layer reads it
        first = next(layer for layer in spec.layers if layer.owner == info.name)
        return f"{info.name}.mid" if first.mid_before else None
    return f"{info.name}.post" if "post" in info.slots else None


def _reader_input(site, calls, consumers, valid):
    """A Flatten's (or Reshape's) `.post` as the `.pre` of the conv/dense layer that alone reads it, through
    reshapes: one tensor, one site, as the zoo names it (Flatten -> Dropout -> Dense is `dense.pre`, the site
    `before_dense` drops, with its masks), else `site`."""
    call = next((c for c in calls if f"{c.layer.name}.post" == site), None)
    if call is None or not isinstance(call.layer, graph.RESHAPING_TYPES):
        return site
    while len(readers := consumers.get(call.output, [])) == 1 and (
            graph.is_dropout(readers[0].layer) or isinstance(readers[0].layer, graph.RESHAPING_TYPES)):
        call = readers[0]
    if len(readers) == 1 and isinstance(readers[0].layer, graph.LINEAR_TYPES) \
            and f"{readers[0].layer.name}.pre" in valid:
        return f"{readers[0].layer.name}.pre"
    return site


def own_dropout(calls, spec):
    """{site: Site}: where the model's own dropout layers are, as sites."""
    producer = {c.output: c for c in calls}
    consumers = {}
    for c in calls:
        for tensor in c.inputs:
            consumers.setdefault(tensor, []).append(c)
    valid, spatial = spec.sites(), spec.spatial_sites()
    own = {}
    for c in _own(calls):
        source = producer.get(c.inputs[0])
        if source is not None and spec.rescaling and calls.index(source) == 0:
            source = None  # after the folded Rescaling (no site of its own): on the images, as the trainer feeds them
        if source is not None and not graph.is_dropout(source.layer):
            site, shares = _site_after(spec, calls.index(source)), consumers[c.inputs[0]]
            if site is None:
                owner = next(layer.owner or layer.name for layer in spec.layers if layer.name == source.layer.name)
                rest = [layer.name for layer in spec.layers if layer.owner == owner]
                fused = getattr(getattr(source.layer, "activation", None), "__name__", "linear")
                after = f"{source.layer.name!r}" + (f" and its {fused}" if fused != "linear" else "")
                raise ValueError(f"dropout layer {c.layer.name!r} of model {spec.name!r} is inside the block "
                                 f"{' -> '.join([owner + (f' ({fused})' if fused != 'linear' else '')] + rest)}, "
                                 f"after {after}, where no site is: place_dropout names {owner}.pre, {owner}.mid "
                                 f"(before its activation) and {owner}.post (after {rest[-1]!r}, the block's end); "
                                 "move the dropout to one of those")
        else:  # on the model's input (or on another dropout's output): the next layer's input
            after = consumers.get(c.output, [])
            if source is not None and any(graph.is_dropout(o.layer) for o in after):  # three stacked: no name left
                stack = [source.layer.name, c.layer.name] + [o.layer.name for o in after if graph.is_dropout(o.layer)]
                raise ValueError(f"dropout layers {', '.join(map(repr, stack))} of model {spec.name!r} are stacked "
                                 "on one tensor; place_dropout names two there at most (a layer's .post and the "
                                 "next layer's .pre): merge two of them into one (rates a and b: 1 - (1-a)(1-b))")
            if len(after) > 1 and source is None:  # one mask for several readers of the images: no site is that
                raise ValueError(f"dropout layer {c.layer.name!r} of model {spec.name!r} drops the model's input "
                                 f"for {len(after)} layers ({', '.join(repr(o.layer.name) for o in after)}); a site "
                                 "on the input is one layer's .pre: put the dropout before one layer, or remove it")
            site, shares = (f"{after[0].layer.name}.pre" if len(after) == 1 else ""), after
            if (site not in valid and len(after) == 1 and isinstance(after[0].layer, keras.layers.Flatten)
                    and not graph.is_spatial(c.layer) and not graph.has_other_noise_shape(c.layer)):
                # Unit by unit, dropping before a Flatten drops the same units as after it: its output's site.
                site = _site_after(spec, calls.index(after[0])) or site
        site = _reader_input(site, calls, consumers, valid)
        readers = consumers.get(c.output, [])
        if site in valid and len(shares) > 1 and len(readers) == 1 and isinstance(
                readers[0].layer, graph.LINEAR_TYPES) and f"{readers[0].layer.name}.pre" in valid:
            site, shares = f"{readers[0].layer.name}.pre", [c]  # one layer's copy of a tensor others read undropped
        if site in valid and len(shares) > 1:
            others = [o.layer.name for o in shares if o is not c]
            raise ValueError(f"dropout layer {c.layer.name!r} of model {spec.name!r} drops units of a tensor that "
                             f"{', '.join(repr(o) for o in others)} also read(s) without it; a .post drops a tensor "
                             f"for all its readers, a conv/dense layer's .pre for that layer alone: put the dropout "
                             f"right before one conv/dense layer (nothing between: after a Flatten, not before it), "
                             f"after the branch point's readers, or at {site} for all of them")
        if site not in valid or len(shares) != 1:
            raise ValueError(f"dropout layer {c.layer.name!r} of model {spec.name!r} is not at a site "
                             f"place_dropout can name (it must be a layer's whole output, or a conv/dense "
                             f"layer's input); valid sites: {', '.join(valid)}")
        if graph.has_other_noise_shape(c.layer):
            raise ValueError(f"dropout layer {c.layer.name!r} of model {spec.name!r} has noise_shape "
                             f"{tuple(c.layer.noise_shape)}; the zoo drops units one by one or whole channels "
                             "(noise_shape (None, 1, 1, C), or SpatialDropout2D): use one of those")
        is_spatial = graph.is_spatial(c.layer)
        if is_spatial and site not in spatial:
            raise ValueError(f"spatial dropout layer {c.layer.name!r} of model {spec.name!r} is not on a "
                             "4-D feature map; the zoo's spatial dropout drops channels of [batch, H, W, C] only: "
                             "replace it with Dropout (units one by one), or remove it")
        rate = float(c.layer.rate)
        if not isinstance(c.layer, dropout_lib.KINDS["gaussian"].types) and masks.drawn_rate(rate) in (0.0, 1.0):
            raise ValueError(f"dropout layer {c.layer.name!r} of model {spec.name!r} has rate {rate:g}, which the "
                             "zoo's mask generator draws at the nearest multiple of 2^-16, "
                             f"{masks.drawn_rate(rate):g}: it would drop {'nothing' if rate < 0.5 else 'every unit'}; "
                             "remove the layer, or give it a rate between 2^-17 and 1 - 2^-17")
        own[site] = sites_lib.Site(rate, is_spatial)
    return {site: own[site] for site in valid if site in own}
