"""Networks as text: one line of layer tokens (or a JSON list of them) <-> a NetworkSpec.

    conv32k3,conv64k3,pool2,flatten,dense128
    conv32k3,conv64k3,pool2,dropout0.25,flatten,dense128,dropout0.5   # keras_mnist_cnn
    conv32k5same,pool2,conv64k5same,pool2,flatten,dense1024,dropout0.4,logits      # tf_layers_cnn

Tokens, separated by commas or new lines, in graph order (case and the spaces around a token ignored):

  conv<filters>k<size>[same|valid][s<stride>]
                  Conv2D + activation; padding valid and stride 1 unless given,
                  e.g. conv64k5same, conv32k3s2, conv32k3sames2
  pool<size>      MaxPooling2D(size), e.g. pool2
  avgpool<size>   AveragePooling2D(size), e.g. avgpool2 (named poolN too)
  flatten         feature maps -> vector: once, after the last conv/pool and
                  before the first dense layer (the input is an image)
  dense<units>    Dense + activation, e.g. dense128
  dropout<rate>   the network's own (canonical) dropout: right after a conv,
                  pool or dense layer at its `.post` site; at the start or
                  right after flatten on the next layer's input (`.pre`;
                  `logits.pre` before the classifier; not before a pool,
                  which has no input site). With no dense layer, one
                  before flatten is the one after it: `logits.pre`
  logits          the last token: the classifier emits logits (default:
                  softmax probabilities)
  convrate<rate>  anywhere before logits, once: the rate the conv/spatial/bn_before
                  placements add after each pooling layer (each conv where
                  there is none; default: the network's own conv-stack
                  dropout rate, else NetworkSpec's 0.1). Written or implied,
                  one rate is one network: its text writes it where neither
                  implied nor 0.1

The classifier (Dense(num_classes), named `logits`) follows the last layer.
Layers are named as the zoo names them (conv1, conv2, pool1, flatten,
dense1, logits), so every named placement and site string works unchanged.
Without a dropout token the canonical placement is DEFAULT_HEAD_RATE after the
last hidden dense layer (`denseN.post`), or on the classifier's input
(`logits.pre`) when there is none. The activation and BatchNormalization are
build options (`activation=`, `norm=`), not part of the text.

JSON (for long specs): a list whose items are tokens or objects
    {"type": "conv", "filters": 32, "kernel_size": 3, "padding": "same", "strides": 1}
    {"type": "pool", "size": 2, "average": false}   {"type": "flatten"}   {"type": "dense", "units": 128}
    {"type": "dropout", "rate": 0.5}   {"type": "logits"}   {"type": "convrate", "rate": 0.25}
or an object {"name": NAME, "layers": [...]} that also names the network.

A network is named after its canonical text (`format_network`, commas as
dashes; long texts cut, plus a hash; a zoo network's text is that network,
`registry.zoo_name_of`, and the trainer's config files it under the zoo's
name), so the same network always gets the
same name; a name given to `parse_network` or in the JSON wins.
"""
import dataclasses
import hashlib
import json
import re

from models import network
from models import placements
from models import sites as sites_lib

VALID = ("conv<filters>k<size>[same|valid][s<stride>], pool<size>, avgpool<size>, flatten, dense<units>, "
         "dropout<rate>, logits, convrate<rate>")
_PATTERNS = {
    "conv": re.compile(r"conv(\d+)k(\d+)(same|valid)?(?:s(\d+))?"),
    "pool": re.compile(r"(avg)?pool(\d+)"),
    "flatten": re.compile(r"flatten"),
    "dense": re.compile(r"dense(\d+)"),
    "dropout": re.compile(r"dropout(.+)"),
    "logits": re.compile(r"logits"),
    "convrate": re.compile(r"convrate(.+)"),
}
# JSON objects: their fields and the defaults of the optional ones.
_FIELDS = {
    "conv": {"filters": None, "kernel_size": None, "padding": "valid", "strides": 1},
    "pool": {"size": None, "average": False}, "flatten": {}, "dense": {"units": None},
    "dropout": {"rate": None}, "logits": {}, "convrate": {"rate": None},
}
# What each JSON field holds: (the JSON types it takes, as said in an error).
_KINDS_OF_VALUES = {"filters": (int, "a whole number"), "kernel_size": (int, "a whole number (square kernels)"),
                    "strides": (int, "a whole number"), "size": (int, "a whole number"),
                    "units": (int, "a whole number"), "padding": (str, "'valid' or 'same'"),
                    "average": (bool, "true or false"),
                    "rate": ((int, float), "a number in [0, 1)")}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME = 80  # longer derived names are cut and given a hash: they name directories


def parse_network(text, name=None):
    """The NetworkSpec the text (or JSON document) describes; ValueError, one line, if malformed.

    `name` (else the JSON's "name", else one derived from the canonical text)
    is the name the network is registered and built under.
    """
    items, given_name = _tokens_of(text)
    spec = _parse_tokens(items)
    try:
        canonical_text = ",".join(_format_tokens(spec))
    except sites_lib.StackedSites as e:  # two dropout tokens on one tensor: the :stack of site strings has no token
        raise ValueError(f"{e.problem}; keep one of the two dropout tokens (before and after 'flatten')") from None
    name = name if name is not None else given_name
    return dataclasses.replace(spec, name=_check_name(name) if name is not None else _name_of(canonical_text),
                               source=f"network spec {canonical_text}")


def format_network(spec):
    """The one-line text `parse_network` reads back as `spec` (name and source aside).

    Dropout tokens are written only where the canonical placement is not the
    default one. ValueError if the spec has no text form (layer names not the
    zoo's, or canonical sites the tokens cannot place, e.g. `.mid`).
    """
    text = ",".join(_format_tokens(spec))
    try:
        same = _parse_tokens(_tokens_of(text)[0]) == dataclasses.replace(spec, name="", source="")
    except ValueError:
        same = False
    if not same:
        raise ValueError(f"network {spec.name!r} has no text form: its layer names or canonical "
                         f"sites {spec.canonical!r} are not what the tokens {text!r} give")
    return text


def default_canonical(layers):
    """The canonical placement of a network written without dropout tokens."""
    dense = [layer.name for layer in layers if isinstance(layer, network.Dense)]
    site = f"{dense[-1]}.post" if dense else f"{layers[-1].name}.pre"
    return sites_lib.format_placement({site: sites_lib.Site(placements.DEFAULT_HEAD_RATE)})


def _tokens_of(text):
    """([(normalised token, how errors show it)], name or None) of the text or JSON document."""
    if not isinstance(text, str):
        raise ValueError(f"a network spec is text, got {type(text).__name__}")
    if text.startswith("@"):  # what --network reads from a file
        raise ValueError(f"network spec {text!r}: @FILE is the command line's; from Python pass the file's text, "
                         "open(PATH).read()")
    if text.strip().startswith('"'):  # the tokens as one JSON string: read them as the tokens
        try:
            quoted = json.loads(text)
        except json.JSONDecodeError:
            quoted = None
        if isinstance(quoted, str):
            text = quoted
    if not text.lstrip().startswith(("[", "{")):
        # Separated by a comma or new lines (a file may give one token per line, with or without commas).
        tokens = [_one_word(part) for part in re.split(r"\s*,\s*|\s*\n\s*", text.strip())]
        inner = tokens[next((i for i, t in enumerate(tokens) if t), 0):]
        while inner and not inner[-1]:  # a leading or trailing comma is layout; an empty token between two is not
            inner.pop()
        if "" in inner:
            at = inner.index("")
            raise ValueError(f"the network spec has an empty token between {inner[at - 1]!r} and "
                             f"{next(t for t in inner[at:] if t)!r}; write one token between single commas")
        return [(t, repr(t)) for t in inner], None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the network spec is not valid JSON ({e}); expected a list of layer tokens "
                         "or objects, or {\"name\": ..., \"layers\": [...]}") from None
    name = None
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"name", "layers"})
        if not unknown and "layers" in document and not isinstance(document["layers"], list):
            raise ValueError(f"the JSON network spec's \"layers\" must be a list of layer tokens or objects, got "
                             f"{json.dumps(document['layers'])}; e.g. \"layers\": [\"conv32k3\", \"flatten\"]")
        if unknown or not isinstance(document.get("layers"), list):
            raise ValueError(f"a JSON network spec object has a \"layers\" list and optionally a "
                             f"\"name\"; got the keys {', '.join(sorted(document))}")
        name, document = document.get("name"), document["layers"]
        if not isinstance(name, (str, type(None))):
            raise ValueError(f"the JSON network spec's name must be a string, got {name!r}")
    if not isinstance(document, list):
        raise ValueError("a JSON network spec is a list of layer tokens or objects, "
                         "or {\"name\": ..., \"layers\": [...]}")
    return [(_token_of_item(item, position), repr(item) if isinstance(item, str) else json.dumps(item))
            for position, item in enumerate(document, 1)], name


def _one_word(text):
    """A token, lower-cased, without the spaces around it; one with spaces inside is refused (`pool2 2` was read as
    pool22, a 22-wide pool)."""
    word = text.strip().lower()
    if "#" in word:
        raise ValueError(f"layer token {text.strip()!r} holds a '#': a network's text has no comments; remove the "
                         "comment (a JSON file may name the network: {\"name\": ..., \"layers\": [...]})")
    if len(word.split()) > 1:
        raise ValueError(f"layer token {text.strip()!r} has a space inside; write each token as one word (pool2, "
                         "dense128) and separate tokens with commas or new lines")
    return word


def _token_of_item(item, position):
    """A JSON list item as a token: strings as they are, objects written as their token."""
    if isinstance(item, str):
        return _one_word(item)
    kind = item.get("type") if isinstance(item, dict) else None
    if kind not in _FIELDS:
        raise ValueError(f"unknown layer {json.dumps(item)} at position {position}; objects have a "
                         f"\"type\" of {', '.join(_FIELDS)}, or give a token: {VALID}")
    fields = _FIELDS[kind]
    unknown = sorted(set(item) - set(fields) - {"type"})
    missing = sorted(k for k, v in fields.items() if v is None and k not in item)
    if unknown or missing:
        raise ValueError(f"layer {json.dumps(item)} at position {position} "
                         + (f"has unknown field(s) {', '.join(unknown)}" if unknown else
                            f"lacks {', '.join(missing)}")
                         + f"; a {kind} object has: {', '.join(fields) or 'only type'}")
    for key, value in item.items():
        wanted = _KINDS_OF_VALUES.get(key)
        if wanted and not (isinstance(value, wanted[0]) and (wanted[0] is bool or not isinstance(value, bool))
                           and (key != "padding" or value.lower() in ("valid", "same"))):
            raise ValueError(f"layer {json.dumps(item)} at position {position}: its {key} must be {wanted[1]}, got "
                             f"{json.dumps(value)}")
        if wanted and wanted[0] is int and value < 1:  # as a token (dense-1) it would read as no layer at all
            raise ValueError(f"layer {json.dumps(item)} at position {position}: its {key} must be a positive "
                             f"integer, got {value}")
    v = {**fields, **item}
    if kind == "conv":
        return f"conv{v['filters']}k{v['kernel_size']}{v['padding']}s{v['strides']}".lower()
    if kind == "pool":
        return f"{'avg' if v['average'] else ''}pool{v['size']}"
    return kind + "".join(str(v[k]) for k in fields).lower()


# Sizes, kernels, strides and windows are int32 in TensorFlow's ops: a larger one fails deep inside them.
MAX_SIZE = 2**31 - 1


def _positive(text, what, shown, position):
    value = int(text)
    if not 1 <= value <= MAX_SIZE:
        raise ValueError(f"{shown} at position {position}: {what} must be a positive integer"
                         f"{' below 2^31' if value > 0 else ''}, got {value}")
    return value


def _parse_tokens(items):
    """The NetworkSpec (name and source empty) of [(normalised token, how errors show it)]."""
    layers, sites, counts = [], {}, {}
    pending = None  # a dropout rate waiting for the next layer's `pre` slot
    conv_rate, logits_at, flat = None, None, False

    def add_site(site, rate, shown, position):
        if site in sites:
            raise ValueError(f"{shown} at position {position} puts a second dropout at {site}; "
                             "give one dropout token per site")
        sites[site] = rate

    def numbered(prefix):
        counts[prefix] = counts.get(prefix, 0) + 1
        return f"{prefix}{counts[prefix]}"

    for position, (token, shown) in enumerate(items, 1):
        kind, match = next(((k, m) for k, p in _PATTERNS.items() if (m := p.fullmatch(token))),
                           (None, None))
        if kind is None:
            raise ValueError(f"unknown layer {shown} at position {position}; valid: {VALID}")
        if logits_at is not None:
            raise ValueError(f"'logits' at position {logits_at} must be the last token "
                             f"(it makes the classifier emit logits); {shown} follows it")
        if kind in ("dropout", "convrate"):
            rate = sites_lib.check_rate(match[1], f"the rate of {shown} at position {position}")
            if kind == "convrate":
                if conv_rate is not None:
                    raise ValueError(f"{shown} at position {position} is a second convrate; give one")
                conv_rate = rate
            elif layers and "post" in layers[-1].slots:
                add_site(f"{layers[-1].name}.post", rate, shown, position)
            elif pending is not None:
                raise ValueError(f"{shown} at position {position} is a second dropout on the same "
                                 "input; give one dropout token per site")
            else:
                pending = rate
            continue
        if kind == "logits":
            logits_at = position
            continue
        if kind in ("conv", "pool") and flat:
            raise ValueError(f"{shown} at position {position} comes after 'flatten'; conv and pool "
                             "layers take feature maps, so put them before 'flatten'")
        if kind == "conv":
            filters, size, padding, stride = match.groups()
            layer = network.Conv(numbered("conv"), _positive(filters, "filters", shown, position),
                                 _positive(size, "the kernel size", shown, position), padding or "valid",
                                 _positive(stride or "1", "the stride", shown, position))
        elif kind == "pool":
            layer = network.Pool(numbered("pool"), _positive(match[2], "the pool size", shown, position),
                                 average=bool(match[1]))
        elif kind == "dense":
            if not flat:
                raise ValueError(f"{shown} at position {position} needs 'flatten' before it: dense "
                                 "layers take vectors and the input is an image")
            layer = network.Dense(numbered("dense"), _positive(match[1], "units", shown, position))
        else:
            if flat:
                raise ValueError(f"'flatten' at position {position} is the second one; flatten once")
            layer, flat = network.Flatten(), True
        if pending is not None and kind == "pool":  # it would be carried past the pool, onto its output
            raise ValueError(f"the dropout before {shown} at position {position} has no site: a pool layer has no "
                             "input site (dropping units before pooling is not dropping them after); put the "
                             "dropout token after the pool, or before the first conv")
        if pending is not None and "pre" in layer.slots:
            add_site(f"{layer.name}.pre", pending, shown, position)
            pending = None
        layers.append(layer)
    if not layers:
        raise ValueError("the network spec has no layers; e.g. 'conv32k3,pool2,flatten,dense128'; "
                         f"valid: {VALID}")
    if not flat:
        raise ValueError("the network has no 'flatten': the classifier takes vectors, so add 'flatten' "
                         "after the last conv/pool layer")
    if len(layers) + 1 > network.MAX_LAYERS:
        raise ValueError(f"the network has {len(layers) + 1} layers (classifier included); "
                         f"at most {network.MAX_LAYERS} are supported")
    head = network.Output(softmax=logits_at is None)
    if pending is not None:
        sites[f"{head.name}.pre"] = pending
    layers = tuple(layers) + (head,)
    spec = network.NetworkSpec(name="", source="", layers=layers, canonical="",
                               **({} if conv_rate is None else {"conv_rate": conv_rate}))
    head_input = f"{head.name}.pre"
    if not spec.dense_names and head_input not in sites:  # before or after flatten, one tensor: one site, one name
        for site in [s for s in sites if spec.tensor_of(s) == spec.tensor_of(head_input)]:
            sites[head_input] = sites.pop(site)
    canonical = (sites_lib.format_placement({s: sites_lib.Site(sites[s]) for s in spec.sites() if s in sites})
                 if sites else default_canonical(layers))
    spec = dataclasses.replace(spec, canonical=canonical)
    if sites and placements.own_rates(spec)[0] == 0:  # every head placement's rate: all of them no dropout
        raise ValueError("the dropout token before the classifier has rate 0, the rate every placement's head "
                         "dropout takes (after_activation, before_dense, ...: all no dropout); leave it out (the "
                         f"head rate is then {placements.DEFAULT_HEAD_RATE:g}), or give the rate the network drops at")
    if placements.own_rates(spec)[1] == 0 and (spec.pool_names or spec.conv_names):
        raise ValueError("the conv-stack dropout rate is 0 (convrate0, or dropout0 after a conv or pool), the rate the "
                         "conv, spatial and bn_before placements add there: they would drop nothing in the conv "
                         "stack; leave it out (the rate is then 0.1), or give the rate the network drops at")
    own = placements.own_rates(dataclasses.replace(spec, conv_rate=None))[1]
    if own is not None and conv_rate is not None and own != conv_rate:  # one would be dropped without a word
        raise ValueError(f"'convrate{sites_lib.format_rate(conv_rate)}' and the network's own conv-stack dropout "
                         f"({sites_lib.format_rate(own)}) are two "
                         "conv-stack rates; keep one (the conv and spatial placements use it)")
    # The rate the placements use, written or implied by the network's own conv-stack dropout: one network, one spec.
    return spec if own is None else dataclasses.replace(spec, conv_rate=own)


def _format_tokens(spec):
    """The tokens of `spec`: dropout tokens only where its canonical placement is not the default."""
    canonical = spec.parse(spec.canonical)
    explicit = canonical != spec.parse(default_canonical(spec.layers))
    default_conv_rate = network.NetworkSpec.__dataclass_fields__["conv_rate"].default
    # Not where the network's own conv-stack dropout implies it: the text then reads as most users write it.
    implied = placements.own_rates(dataclasses.replace(spec, conv_rate=None))[1] is not None
    tokens = [] if implied or spec.conv_rate == default_conv_rate else [
        f"convrate{sites_lib.format_rate(spec.conv_rate)}"]

    def dropout(site):
        return [f"dropout{sites_lib.format_rate(canonical[site].rate)}"] if explicit and site in canonical else []

    for layer in spec.layers:
        tokens += dropout(f"{layer.name}.pre")
        if isinstance(layer, network.Conv):
            tokens.append(f"conv{layer.filters}k{layer.kernel_size}"
                          + ("" if layer.padding == "valid" else layer.padding)
                          + ("" if layer.strides == 1 else f"s{layer.strides}"))
        elif isinstance(layer, network.Pool):
            tokens.append(f"{'avg' if layer.average else ''}pool{layer.size}")
        elif isinstance(layer, network.Flatten):
            tokens.append("flatten")
        elif isinstance(layer, network.Dense):
            tokens.append(f"dense{layer.units}")
        elif not layer.softmax:
            tokens.append("logits")
        tokens += dropout(f"{layer.name}.post")
    return tokens


def _check_name(name):
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ValueError(f"network name {name!r} must be 1-{MAX_NAME} letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit (it names run directories)")
    return name


def _name_of(canonical_text):
    """The name derived from the canonical text: commas as dashes, cut and hashed when long."""
    slug = canonical_text.replace(",", "-")
    if len(slug) <= MAX_NAME:
        return slug
    digest = hashlib.sha256(canonical_text.encode()).hexdigest()[:12]
    return f"{slug[:MAX_NAME - 13].rstrip('-.')}-{digest}"
