"""The named placements, derived once from a network's structure: each changes one thing.

`named_placements(spec)` works on any spec with the structure below (a zoo
NetworkSpec, a network written as text, a user's KerasModelSpec), so every
network gets the same variants, derived the same way, keeping its own rates:

- the *head* dropout is the dropout after the network's last hidden dense
  layer (its `.post`, or `.mid`); its rate is the network's own, or
  DEFAULT_HEAD_RATE where it has none. A network without a hidden dense
  layer has one head position: the classifier's input (`logits.pre`), as
  has one whose classifier reads its last dense layers through a merge
  (two towers concatenated, a residual Add: dropout on one branch would
  leave the other undropped);
- the *conv-stack* dropout is its own dropout between the images and the
  first dense layer's input (e.g. the classic example's 0.25 after pooling,
  or a user model's dropout on the flattened features); its rate is the
  network's own (of several, the one nearest the head: a dropout on the
  input is not conv-stack dropout, nor one after a hidden dense layer), or
  `spec.conv_rate`. `bn_before` drops at it after each hidden layer but the
  last, at the network's own rate where it drops there.

| placement | sites | holds fixed |
| --- | --- | --- |
| `canonical` | the source's own | |
| `none` | no dropout | |
| `after_activation` | head after the last hidden dense layer's activation | no conv-stack dropout |
| `before_activation` | head between that layer's linear op and its activation | no conv-stack dropout |
| `before_dense` | head on that layer's input (the classifier's input without one) | no conv-stack dropout |
| `conv` | `after_activation` + element-wise dropout after each pooling part (each conv without pooling) | the head |
| `spatial` | `conv` with whole feature maps dropped (SpatialDropout2D) | the head, the sites, the rate |
| `bn_before` | after each hidden layer but the last (each feeds a BN with norm=batch); head after the last | the head |
| `bn_after_last` | the head after the last hidden layer (after the last BN) | |

So the planned contrasts each change one factor: after vs before the dense
layer (`after_activation` vs `before_dense`), before vs after the
activation, conv-stack dropout on vs off (`conv` vs `after_activation`),
element-wise vs spatial (`conv` vs `spatial`), dropout vs none
(`after_activation` vs `none`). No placement puts two masks on one tensor
(a `.post` and the next layer's `.pre` with only Flatten between).

The spec provides sites(), spatial_sites(), parse(text, norm,
allow_stacked), tensor_of(site), classifier_reads_alone(layer),
classifier_input_tensors(), tensors_before(roles), on_one_path(a, b), part_end(layer), canonical,
conv_rate, hidden, conv_names, pool_names, dense_names and output_name.
"""
from models import sites as sites_lib

# The head dropout's rate where a network does not give one: the head variants
# of a network whose own dropout is all in the conv stack, and the canonical
# placement of a network written without dropout (models.spec_text).
DEFAULT_HEAD_RATE = 0.5
# The placements meant for norm="batch": dropout before and after BN.
BN_PLACEMENTS = ("bn_before", "bn_after_last")


def head_of(spec):
    """(the head layer's name or None, its head sites in order of preference) of `spec`: the last hidden dense
    layer, where the classifier reads it alone (not through a merge of branches)."""
    if spec.dense_names and spec.classifier_reads_alone(spec.dense_names[-1]):
        layer = spec.dense_names[-1]
        return layer, [f"{layer}.post", f"{layer}.mid"]
    return None, [f"{spec.output_name}.pre"]


def _input_tensors(spec):
    """The tensors of the sites before any conv/dense layer: the images, however preprocessed."""
    return spec.tensors_before(("conv", "dense", "output"))


def _own_head(spec):
    """{site: rate} of the network's own dropout at the head (on a branch of it, where branches merge into it)."""
    canonical = spec.parse(spec.canonical, allow_stacked=True)
    layer, head_sites = head_of(spec)
    head_tensors = {spec.tensor_of(s) for s in head_sites if s in spec.sites()}
    if spec.dense_names:  # from the last dense layer(s) to the classifier, through other layers (an Identity, a
        head_tensors |= spec.classifier_input_tensors()  # GaussianNoise; merged branches: 0.3 on each, 0.3 on all)
    return {name: site.rate for name, site in canonical.items()
            if name in head_sites or spec.tensor_of(name) in head_tensors}


def head_rate_note(spec):
    """A line for a network whose own head dropout has several rates (towers at 0.3 and 0.5), else None: the
    named placements have one head dropout, at the last of them."""
    own = _own_head(spec)
    if len(set(own.values())) < 2:
        return None
    listed = ", ".join(f"{rate:g} on {site}" for site, rate in own.items())
    return (f"model {spec.name}: its own dropout at the head has several rates ({listed}); the named placements "
            f"put one head dropout at {list(own.values())[-1]:g}, the last of them; --rate=R sets another")


def own_rates(spec):
    """(head rate, conv-stack rate): the network's own, or the defaults where it has none."""
    canonical = spec.parse(spec.canonical, allow_stacked=True)
    own_head = _own_head(spec)  # (the head's sites, and its tensors': not the conv stack's)
    head = list(own_head.values())
    left_out = {spec.tensor_of(s) for s in own_head} | _input_tensors(spec)  # the images: not conv-stack dropout
    in_stack = _stack_tensors(spec)  # up to the first dense layer's input: not a hidden dense layer's dropout
    stack = [site.rate for name, site in canonical.items() if spec.tensor_of(name) in in_stack - left_out]
    # Of several dropouts on the head's tensor (a pool's .post and the flatten after it), the one nearest the head.
    return (head[-1] if head else DEFAULT_HEAD_RATE), (stack[-1] if stack else spec.conv_rate)


def _stack_tensors(spec):
    """The tensors of the sites before any dense layer (the classifier, without one): the conv stack's."""
    return spec.tensors_before(("dense", "output"))


def stack_sites(spec, head_site):
    """The conv-stack sites: after each pooling layer's part after the first conv (`.post` of the pool, or of the
    BN and activation layers that follow it: Conv -> MaxPool -> BN -> ReLU drops after the ReLU, not into the BN;
    each conv where there is no pool), except the head's tensor. (A pool before the first conv pools the images:
    dropout there is on the input; a pool the classifier reads is the head's: `conv,conv,pool2,flatten` drops after
    each conv.) In a model with branches, a conv on no path with those pools (a tower that does not pool beside one
    that does) drops after itself."""
    left_out = _input_tensors(spec) | {spec.tensor_of(head_site)}

    def posts(names):
        return [f"{name}.post" for name in names if spec.tensor_of(f"{name}.post") not in left_out]

    ends = {pool: posts([spec.part_end(pool)]) for pool in spec.pool_names}  # [its part's end's .post] or []
    pools = [pool for pool in spec.pool_names if ends[pool]]
    if not pools:
        return posts(spec.conv_names)
    unpooled = [conv for conv in spec.conv_names if not any(spec.on_one_path(conv, pool) for pool in pools)]
    return [site for site in spec.sites() if site in sum((ends[p] for p in pools), []) + posts(unpooled)]  # in order


def named_placements(spec):
    """{placement name: {site: Site}} for the variants that make sense for `spec` (see the module doc)."""
    canonical = spec.parse(spec.canonical, allow_stacked=True)
    head_rate, stack_rate = own_rates(spec)
    head = sites_lib.Site(head_rate)
    layer, _ = head_of(spec)
    valid = spec.sites()
    placements = {"canonical": canonical, "none": {}}
    # The head (only the classifier is dense: its input), under the model's own name for its own dropout there
    # (a Dropout after a global pooling the classifier reads is that pool's `.post`): every placement with the head
    # draws those masks, so `conv` differs from `before_dense` by the conv-stack sites alone, as in the zoo.
    head_site = f"{layer}.post" if layer is not None else f"{spec.output_name}.pre"
    on_head = [own for own in canonical if spec.tensor_of(own) == spec.tensor_of(head_site)]
    if len(on_head) == 1 and canonical[on_head[0]] == head:  # (two stacked there: its own masks are not one site's)
        head_site = on_head[0]
    after = {head_site: head}
    if layer is not None:
        placements["after_activation"] = after
        if f"{layer}.mid" in valid:  # a Keras model's linear dense layer has no .mid
            placements["before_activation"] = {f"{layer}.mid": head}
        placements["before_dense"] = {f"{layer}.pre": head}
    else:
        placements["before_dense"] = after
    stack = stack_sites(spec, head_site)
    if spec.conv_names and stack:
        placements["conv"] = {**{s: sites_lib.Site(stack_rate) for s in stack}, **after}
        if set(stack) & set(spec.spatial_sites()):  # 1-D feature maps have no channels to drop whole
            placements["spatial"] = {**{s: sites_lib.Site(stack_rate, spatial=s in spec.spatial_sites())
                                        for s in stack}, **after}
    # One BN fed by dropout in bn_before, none after. (At a rate of 0 where it feeds BN, a network's own dropout0
    # between its dense layers, it is bn_after_last by construction: registry.construction_key.)
    # (A last hidden layer the classifier reads through a merge, a residual branch, is not "the last": none here.)
    if len(spec.hidden) > 1 and not spec.norm_after_hidden and spec.classifier_reads_alone(spec.hidden[-1]):
        *feeding_bn, last = spec.hidden
        last_site = {f"{last}.post": head}
        # At each feeding site, the network's own rate where it drops there (a hidden dense layer's dropout).
        placements["bn_before"] = {**{f"{h}.post": sites_lib.Site(canonical.get(f"{h}.post", sites_lib.Site(
            stack_rate)).rate) for h in feeding_bn}, **last_site}
        placements["bn_after_last"] = last_site
    # One tensor, two names (a model's own dropout on a pool's output that the dense layer reads, `before_dense`
    # its `.pre`): the canonical's names, so the sweep trains it once, with one set of masks.
    own = _by_tensor(spec, canonical)
    placements = {name: canonical if own is not None and _by_tensor(spec, p) == own else p
                  for name, p in placements.items()}
    return {name: in_graph_order(spec, p) for name, p in placements.items()}


def _by_tensor(spec, placement):
    """{tensor: Site}; None where two sites share a tensor (two masks on it: not one placement's renaming)."""
    found = {spec.tensor_of(site): value for site, value in placement.items()}
    return found if len(found) == len(placement) else None


def in_graph_order(spec, placement):
    return {name: placement[name] for name in spec.sites() if name in placement}


def example_site(spec):
    """A site this network has, to suggest in messages (the head's input, else its first site)."""
    layer, _ = head_of(spec)
    preferred = f"{layer}.pre" if layer else f"{spec.output_name}.pre"
    return preferred if preferred in spec.sites() else spec.sites()[0]


def check_placement_text(placement, spec):
    """ValueError unless `placement` is a string: a placement's name or a site string."""
    if not isinstance(placement, str):
        raise ValueError(f"placement must be a placement's name (e.g. 'canonical') or a site string (e.g. "
                         f"'{example_site(spec)}:0.5'), got {type(placement).__name__} {placement!r}")
