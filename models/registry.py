"""The one model registry: register a NetworkSpec, list, and build by name."""

from models import network

_REGISTRY = {}
OPTIONS = ("rate", "kind", "activation", "norm", "num_classes", "input_shape", "seed")


def register(spec_fn):
    """Decorator: registers the NetworkSpec that `spec_fn()` returns under its name."""
    spec = spec_fn()
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec_fn


def list_models():
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def get_spec(name):
    """The NetworkSpec registered as `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return _REGISTRY[name]


def list_placements(name):
    """Names of the placements `name` has, canonical first.

    `bn_before` (dropout feeding every BN layer but the first) and
    `bn_after_last` (dropout only after the last BN) exist for every model with
    a hidden conv/dense layer, as site sets, whatever the norm; they are meant
    for norm="batch", where they put dropout before and after BatchNormalization.
    """
    return list(network.named_placements(get_spec(name)))


def resolve_placement(name, placement="canonical", norm="none"):
    """{site: Site} for a placement name, a site string (has ':' or '.'), or '' (none).

    `norm` decides which sites exist: `LAYER.prenorm` only with norm='batch'.
    """
    spec = get_spec(name)
    if ":" in placement or "." in placement or placement.strip() == "":
        return spec.parse(placement, norm)
    network.check_norm(norm)
    placements = network.named_placements(spec)
    if placement not in placements:
        raise ValueError(
            f"unknown placement {placement!r} for {name}; valid placements: "
            f"{', '.join(placements)}, or explicit sites like 'dense1.pre:0.5'"
        )
    return placements[placement]


def build(name, placement="canonical", **options):
    """An uncompiled keras.Model: network `name` with dropout at `placement`.

    Options: rate (overrides every site's rate), kind ('inverted', 'classic',
    'gaussian'), activation (hidden layers), norm ('none', or 'batch': a
    BatchNormalization between every hidden linear op and its activation),
    num_classes, input_shape, seed. Options given as None keep their defaults.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; valid options: {', '.join(OPTIONS)}")
    kwargs = {k: v for k, v in options.items() if v is not None}
    sites = resolve_placement(name, placement, kwargs.get("norm", "none"))
    return network.build_network(get_spec(name), sites, **kwargs)

