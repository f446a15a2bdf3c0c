"""The one model registry: register a NetworkSpec, list, build by name, and key variants.

The zoo's networks register at import (`@register`); a network written as
text (models.spec_text) or a Keras model file (models.keras_model) registers
with `register_spec` under its name, and from then on builds, resolves
placements and keys variants by that name like any zoo network.
"""
import dataclasses
import typing

from models import keras_model
from models import keras_own
from models import keras_rewrite
from models import layers as dropout_lib
from models import network
from models import placements as placements_lib
from models import sites as sites_lib
from models import spec_text

_REGISTRY = {}  # name -> NetworkSpec: the zoo's and those registered with register_spec
_ZOO = set()  # the names registered by @register
OPTIONS = ("rate", "kind", "activation", "norm", "bn_momentum", "num_classes", "input_shape", "seed", "weights")


def register(spec_fn):
    """Decorator: registers the NetworkSpec that `spec_fn()` returns under its name."""
    spec = spec_fn()
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    _ZOO.add(spec.name)
    return spec_fn


def register_spec(spec):
    """Registers `spec` (e.g. from spec_text.parse_network) under spec.name; returns the name.

    Registering an equal spec again (the same layers and sites, however it
    was written, e.g. a zoo network as text) does nothing, and a .keras file saved
    again replaces its earlier version; another spec under a name already
    taken (a zoo network's included) raises ValueError.
    """
    registered = _REGISTRY.setdefault(spec.name, spec)
    if registered != spec and getattr(registered, "digest", "") and registered.source == spec.source:
        _REGISTRY[spec.name] = registered = spec  # the same .keras file, saved again: its new version
    if _same_network(registered, spec):
        return spec.name  # the same network written another way (a zoo network as text): the one registered
    if registered != spec:
        raise ValueError(f"model {spec.name!r} is already registered as another network "
                         f"({registered.source}); give this network another name"
                         + ("" if spec.name in _ZOO else " (or, one edited in a notebook, restart its kernel: "
                            "names are registered per process)"))
    return spec.name


def build_from_spec(text, placement="canonical", **options):
    """`build` for a network written as text or JSON (see models.spec_text), registered first.

    The same placements (names, site strings) and options as `build`.
    """
    return build(register_spec(spec_text.parse_network(text)), placement, **options)


def register_keras_model(path, name=None):
    """Registers the `.keras` file at `path` (safe_mode) as a model; returns its name (the file's stem)."""
    return register_spec(keras_model.describe_file(path, name))


def list_models():
    """Sorted names of the zoo's networks (those registered from text are not listed)."""
    return sorted(_ZOO)


def _same_network(a, b):
    """Whether two specs are one network: the same layers and sites, whatever their name and source."""
    return type(a) is type(b) and dataclasses.replace(a, name="", source="") == dataclasses.replace(b, name="",
                                                                                                      source="")


def zoo_name_of(spec):
    """The name of the zoo network `spec` is (the same layers and sites, however written), or None."""
    return next((name for name in list_models() if _same_network(_REGISTRY[name], spec)), None)


def get_spec(name):
    """The NetworkSpec registered as `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return _REGISTRY[name]


def list_placements(name, norm=None):
    """Names of the placements `name` has, canonical first.

    `bn_before` (dropout feeding every BN layer but the first) and
    `bn_after_last` (dropout only after the last BN) exist for every model with
    a hidden conv/dense layer, as site sets, whatever the norm; they are meant
    for norm="batch", where they put dropout before and after BatchNormalization.
    With `norm` given, only the placements meant for it: the BN ones only with
    norm="batch", or for a Keras model with BatchNormalization layers of its
    own (what a sweep's `--placement=all` trains).
    """
    spec = get_spec(name)
    names = list(placements_lib.named_placements(spec))
    if norm is not None and network.check_norm(norm) != "batch" and not spec.own_batch_norm:
        names = [n for n in names if n not in placements_lib.BN_PLACEMENTS]
    return names


def head_notes(name):
    """Lines for model `name` where its named placements' head is not plainly its own: its own head dropout has
    several rates, of which they take one; or a Dropout(0.0) there, where they drop at their head rate."""
    spec = get_spec(name)
    return [note for note in (placements_lib.head_rate_note(spec), keras_own.placeholder_note(spec)) if note]


def resolve_placement(name, placement="canonical", norm="none"):
    """{site: Site} for a placement name, a site string (has ':' or '.'), or '' (none).

    `norm` decides which sites exist: `LAYER.prenorm` only with norm='batch'.
    """
    spec = get_spec(name)
    placements_lib.check_placement_text(placement, spec)
    if ":" in placement or "." in placement or placement.strip() == "":
        return spec.parse(placement, norm)
    network.check_norm(norm)
    placements = placements_lib.named_placements(spec)
    if placement not in placements:
        raise ValueError(
            f"unknown placement {placement!r} for {name}; valid placements: "
            f"{', '.join(placements)}, or explicit sites like '{placements_lib.example_site(spec)}:0.5'"
        )
    return placements[placement]


def build(name, placement="canonical", **options):
    """An uncompiled keras.Model: network `name` with dropout at `placement`.

    Options: rate (overrides every site's rate), kind ('inverted', 'classic',
    'gaussian'), activation (hidden layers), norm ('none', or 'batch': a
    BatchNormalization between every hidden linear op and its activation),
    bn_momentum (of those BN layers; Keras' 0.99 by default),
    num_classes, input_shape, seed, and for a Keras model weights ('kept' or
    'fresh', see place_dropout). Options given as None keep their defaults.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(OPTIONS)}")
    kwargs = {k: v for k, v in options.items() if v is not None}
    network.check_seed(kwargs.get("seed"))
    spec = get_spec(name)
    if isinstance(spec, keras_model.KerasModelSpec):
        keras_own.check_canonical_kind(spec, placement, kwargs.get("kind", "inverted"))
        return keras_rewrite.build_placed(spec, resolve_placement(name, placement), **kwargs)
    if "weights" in kwargs:  # a zoo network is always initialised by its seed
        raise ValueError(f"weights={kwargs['weights']!r} is for a Keras model of your own; {name!r} is initialised "
                         "afresh by its seed: leave weights out")
    sites = resolve_placement(name, placement, kwargs.get("norm", "none"))
    return network.build_network(spec, sites, **kwargs)


class ConstructionKey(typing.NamedTuple):
    """What decides a variant's network and masks; equal keys, same network."""

    model: str
    kind: str  # None without masks
    activation: str
    norm: str
    sites: tuple  # ((site, rate, spatial), ...) in graph order, after the moves


def construction_key(name, placement="canonical", *, kind="inverted", activation="relu",
                     rate=None, norm="none"):
    """A hashable key: variants with equal keys are identical by construction.

    Built with the same seed (and the same num_classes and input_shape, which
    the key leaves out), two variants with equal keys are the same network
    with the same weights (kernels are seeded per layer index) and the same
    masks, so a sweep needs to train only one of them. The one rule
    (`network.interchangeable_slots`, checked by claim 4 of
    `python -m models.equivalence`): for the Bernoulli kinds and ReLU, a
    `.mid` site is the `.post` site of the same layer with the same rate and
    spatial flag -- unless that `.post` is in the placement too (two masks).
    And a site of rate 0 is no site, of any kind: its layer passes its input
    through and draws nothing, and the other sites draw their own masks (a
    placement whose every site has rate 0, `rate=0`, is `none`) -- except a
    `.mid` beside its layer's `.post`, whose presence gives `.post` a stream
    of its own.
    Everything else that changes the network is in the key as given: the
    resolved sites with their rates (after a `rate` override), kind,
    activation, norm and model. Unequal keys do not prove two networks differ.
    """
    dropout_lib.check_kind(kind)
    network.check_activation(activation)
    network.check_norm(norm)
    spec = get_spec(name)
    sites = sites_lib.with_rate(resolve_placement(name, placement, norm), rate)
    sites = {site: value for site, value in sites.items()
             if value.rate > 0 or (site.endswith(".mid") and f"{site[:-len('.mid')]}.post" in sites)}
    valid = spec.sites(norm)
    moved = {}
    for site, value in sites.items():
        layer, slot = site.rsplit(".", 1)
        # A Keras model's layers each have their own activation; a zoo network has one.
        moves = network.interchangeable_slots(kind, spec.layer_activation(layer, activation))
        target = f"{layer}.{moves[slot]}" if slot in moves else site
        moved[target if target in valid and target not in sites else site] = value
    ordered = tuple((s, moved[s].rate, moved[s].spatial) for s in valid if s in moved)
    if all(rate == 0 for _, rate, _ in ordered):  # no site drops anything: no masks, of any kind
        return ConstructionKey(name, None, activation, norm, ())
    return ConstructionKey(name, kind, activation, norm, ordered)
