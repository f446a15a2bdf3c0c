"""Dropout sites and placements, as data.

A *site* is a named position in a network, written `LAYER.SLOT`:

- `LAYER.pre`     -- on the layer's input, before its linear op (conv/dense);
- `LAYER.prenorm` -- on the linear op's output, before its BatchNormalization
                     (only in networks built with norm="batch");
- `LAYER.mid`     -- between the (normalised) pre-activation and the
                     activation: after the BN when there is one;
- `LAYER.post`    -- after the activation (or after a pooling layer).

A *placement* maps sites to `Site(rate, spatial)`. Users write one as a
string, comma-separated `SITE:RATE` items, with an optional `:spatial` to
drop whole feature maps (conv-stack sites only):

    conv2.post:0.1,dense1.pre:0.5
    conv1.post:0.25:spatial,pool1.post:0.25:spatial,dense1.post:0.5

The empty string is the placement with no dropout.
"""
import dataclasses

SYNTAX = "SITE:RATE[:spatial],... e.g. 'conv2.post:0.1,dense1.pre:0.5'"


@dataclasses.dataclass(frozen=True)
class Site:
    """What dropout does at one site: its rate, and whether it drops whole channels."""

    rate: float
    spatial: bool = False


def check_rate(rate, what="rate"):
    """Returns `rate` as a float, or raises ValueError unless 0 <= rate < 1."""
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1), got {rate!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1) (1 would drop every unit), got {rate!r}")
    return value


def parse(text, valid_sites, spatial_sites=()):
    """Parses a placement string into {site: Site}, checking every site name.

    `valid_sites` are the sites this network has; `spatial_sites` the subset
    that carries 4-D feature maps, where `:spatial` is allowed.
    """
    placement = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        fields = item.split(":")
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] != "spatial"):
            raise ValueError(f"malformed site {item!r}; expected {SYNTAX}")
        name = fields[0].strip()
        if name not in valid_sites:
            raise ValueError(
                f"unknown site {name!r}; valid sites: {', '.join(valid_sites)}"
            )
        if name in placement:
            raise ValueError(f"site {name!r} is given twice in {text!r}")
        spatial = len(fields) == 3
        if spatial and name not in spatial_sites:
            raise ValueError(
                f"site {name!r} is not on a feature map, so it cannot be spatial; "
                f"spatial sites: {', '.join(spatial_sites) or 'none'}"
            )
        placement[name] = Site(check_rate(fields[1], f"rate of site {name!r}"), spatial)
    return placement


def with_rate(placement, rate):
    """`placement` with every site's rate set to `rate`; unchanged if `rate` is None."""
    if rate is None:
        return placement
    rate = check_rate(rate)
    return {name: dataclasses.replace(site, rate=rate) for name, site in placement.items()}


def format_placement(placement):
    """The placement as the string `parse` reads back."""
    return ",".join(
        f"{name}:{site.rate:g}" + (":spatial" if site.spatial else "")
        for name, site in placement.items()
    )
