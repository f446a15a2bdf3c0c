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

The empty string is the placement with no dropout. Two sites on one tensor
(a layer's `.post` and the next layer's `.pre`, with nothing or only
Flatten between) would put two masks on it: one dropout of rate
1 - (1 - p)(1 - q), not two placements. That is refused unless asked for
with `:stack` on an item (`pool1.post:0.25,dense1.pre:0.5:stack`).
"""
import dataclasses

SYNTAX = "SITE:RATE[:spatial][:stack],... e.g. 'conv2.post:0.1,dense1.pre:0.5'"
FLAGS = ("spatial", "stack")


@dataclasses.dataclass(frozen=True)
class Site:
    """What dropout does at one site: its rate, and whether it drops whole channels."""

    rate: float
    spatial: bool = False


def check_rate(rate, what="rate"):
    """Returns `rate` as a float, or raises ValueError unless 0 <= rate < 1."""
    try:
        if isinstance(rate, str) and "_" in rate:  # Python's float() reads 0.2_5 as 0.25
            raise ValueError
        value = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1), got {rate!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1) (1 would drop every unit), got {rate!r}")
    return value + 0.0  # -0 is 0: one rate, one name


def parse(text, valid_sites, spatial_sites=(), tensor_of=None, allow_stacked=False):
    """Parses a placement string into {site: Site}, checking every site name.

    `valid_sites` are the sites this network has; `spatial_sites` the subset
    that carries 4-D feature maps, where `:spatial` is allowed; `tensor_of`
    maps a site to the tensor it drops units of, and two sites on one tensor
    are refused unless an item says `:stack` (or `allow_stacked`: a source's
    own dropout is what it is).
    """
    placement, stacked_ok = {}, set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        fields = item.split(":")
        flags = fields[2:]
        if len(fields) < 2 or any(f not in FLAGS for f in flags) or len(set(flags)) != len(flags):
            raise ValueError(f"malformed site {item!r}; expected {SYNTAX}")
        name = fields[0].strip()
        if name not in valid_sites:
            raise ValueError(
                f"unknown site {name!r}; valid sites: {', '.join(valid_sites)}"
            )
        if name in placement:
            raise ValueError(f"site {name!r} is given twice in {text!r}")
        spatial = "spatial" in flags
        if spatial and name not in spatial_sites:
            raise ValueError(
                f"site {name!r} is not on a feature map, so it cannot be spatial; "
                f"spatial sites: {', '.join(spatial_sites) or 'none'}"
            )
        placement[name] = Site(check_rate(fields[1], f"rate of site {name!r}"), spatial)
        if "stack" in flags:
            stacked_ok.add(name)
    if tensor_of is not None and not allow_stacked:
        _check_not_stacked(placement, tensor_of, stacked_ok)
    return placement


def normalize(text):
    """`text` spelled one way (no blanks or empty items, rates as format_rate writes them, flags sorted), so one
    placement names one run; as given where an item is malformed or none is left, for `parse` to report."""
    items = []
    for item in (part.strip() for part in text.split(",")):
        fields = [field.strip() for field in item.split(":")]
        if not item:
            continue
        try:
            rate = format_rate(check_rate(fields[1]))
        except (IndexError, ValueError):
            return text
        items.append(":".join([fields[0], rate] + sorted(fields[2:])))
    return ",".join(items) or text


class StackedSites(ValueError):
    """Two sites on one tensor (at most a Flatten between): `problem` says so, `str()` adds the site-string fix."""

    def __init__(self, first, second, rates):
        combined = 1 - (1 - rates[0]) * (1 - rates[1])
        self.problem = (f"sites {first!r} and {second!r} are the same tensor (at most a Flatten between), so they "
                        f"put two masks on it: one dropout of rate {combined:.3g}, not two placements")
        super().__init__(f"{self.problem}; give one of them, or add :stack to ask for both "
                         f"('{second}:{rates[1]:g}:stack')")


def _check_not_stacked(placement, tensor_of, stacked_ok):
    seen = {}
    for name, site in placement.items():
        tensor = tensor_of(name)
        if tensor in seen and not ({name, seen[tensor]} & stacked_ok):
            raise StackedSites(seen[tensor], name, (placement[seen[tensor]].rate, site.rate))
        seen.setdefault(tensor, name)


def with_rate(placement, rate):
    """`placement` with every site's rate set to `rate`; unchanged if `rate` is None."""
    if rate is None:
        return placement
    rate = check_rate(rate)
    return {name: dataclasses.replace(site, rate=rate) for name, site in placement.items()}


def format_rate(rate):
    """`rate` as text that reads back as the same float: short where 6 digits hold it (0.25), else whole
    (Dropout(1/3)'s 0.3333333333333333, not 0.333333)."""
    short = f"{rate:g}"
    return short if float(short) == rate else repr(float(rate))


def format_placement(placement):
    """The placement as the string `parse` reads back."""
    return ",".join(
        f"{name}:{format_rate(site.rate)}" + (":spatial" if site.spatial else "")
        for name, site in placement.items()
    )
