"""Answers the dropout-order questions with measured numbers.

    python -m models.equivalence [--models=keras_mnist_cnn,...] [--activations=relu,...]
                                 [--precisions=float32,mixed_bfloat16,mixed_float16]
    python -m models.equivalence --network=conv32k3,pool2,flatten,dense128,dropout0.5   (or @FILE)
    python -m models.equivalence --keras_model=my_cnn.keras

For each model (the zoo's, a network of your own written as text, or a Keras model of yours with its own
activations: models/probes.py finds where) and hidden activation (float32) it checks:

1. `before_activation` vs `after_activation` with the same weights and the
   same dropout mask: identical in training mode exactly when the activation
   is positively homogeneous and maps 0 to 0 (ReLU; a Keras model's LeakyReLU
   and PReLU too, up to rounding), and identical in inference
   mode for every activation (inverted dropout is then the identity).
2. The zoo's inverted dropout is mask-then-scale and scale-then-mask: its
   training output equals x * mask / keep and (x / keep) * mask for its own
   mask, up to float32 rounding (a layer scaling by anything but 1/keep,
   e.g. 1/keep rounded to bfloat16, fails it).
3. `inverted` vs `classic` (and `gaussian`): the mean of many training-mode
   passes matches the inference output of each kind (within 5 standard
   errors of the mean); classic inference output = keep probability x
   inverted inference output; and a classic network equals the inverted
   network whose next linear layer's kernel is scaled by the keep
   probability -- the original paper's test-time weight scaling, moved ("not
   checked", saying why, where a merge or a BatchNorm reads a site's units).
4. Identical by construction: for pairs of variants (placements, kinds, norm="batch"), equal
   `models.construction_key`s mean bitwise equal logits in training and inference mode when both are built with
   the same seed (the key's rules: mid == post for the Bernoulli kinds under ReLU; a site of rate 0 is no site,
   unless a .mid beside its .post), and unequal keys here mean logits that differ beyond float32 rounding in some
   mode (gaussian noise, other activations, `.pre` vs `.post`, two masks vs one, `.prenorm` vs `.mid` under BN);
   a Bernoulli mask moved across a Keras model's LeakyReLU or PReLU is one function up to rounding (its keys
   differ: it trains twice), and Gaussian noise moved across a ReLU, LeakyReLU or PReLU differs by its negative
   draws alone ("not checked" at a rate too low for any). Both modes, because a 0/1 mask commutes with any
   activation that maps 0 to 0: classic dropout with tanh is the same at mid and post while training, and differs
   only at inference (tanh(k x) != k tanh(x)).

Where theory expects a difference (1, 4) the images do not show, they are scaled up to x100 (a ReLU6 below 6);
a Bernoulli mask moved across an activation that acts as a homogeneous one on every input they give it (a
ReLU(max_value=1000)) is "not checked": no mask can separate the two there.

For each precision policy (the dropout layers alone, every kind, element-wise
and spatial, at rates 0.1 and 0.4, on inputs uniform in [0.5, 1.5]):

5. the mean of many training passes matches the inference output, pooled
   over all units (within 5 standard errors): claim 3 for the layers alone,
   where a precision error is a bias every unit shares, invisible unit by unit;
6. the fraction of draws dropped matches the nominal rate (within 5
   binomial standard errors), for the Bernoulli kinds.

Each finding records what theory expects, what was measured and the max absolute difference; `holds` says
whether they agree. Tests assert on them.
"""
import contextlib
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the backend loads

import keras
import numpy as np
from absl import app
from absl import flags

import models
from models import layers as dropout_lib
from models import network
from models import probes

IDENTICAL_TOL = 1e-6  # relative; float32 rounding of a reordered product
MC_PASSES = 4000
# Where theory expects two networks to differ but the images do not show it (a ReLU6 whose inputs never reach 6),
# they are compared again on images scaled by these.
INPUT_SCALES = (1.0, 10.0, 100.0)
RARE_DRAWS = 3  # fewer expected negative Gaussian draws (none drawn is then >= 5% likely): a LeakyReLU move unchecked
Z_TOL = 5.0  # standard errors of the mean
PRECISIONS = dropout_lib.POLICIES
PRECISION_RATES = (0.1, 0.4)
# 1x2 feature maps: a spatial mask covers 2 units, and 1,024 channels x MC_PASSES
# give 4M spatial draws, enough to see a 0.26% bias (classic's keep 0.6 rounded
# to bfloat16) at > 5 standard errors; tests/test_equivalence.py shows it.
PRECISION_SHAPE = (8, 1, 2, 128)
LAYERS = "dropout layers"  # the `model` of findings about the layers alone
OWN = "own activations"  # the `activation` of findings about a Keras model
NOT_CHECKED = "not checked"  # a claim the network has no place for (expected and measured)


@dataclasses.dataclass(frozen=True)
class Finding:
    model: str
    activation: str
    claim: str
    expected: str  # "identical" | "different" | "matches"
    measured: str
    max_abs_diff: float
    detail: str = ""
    precision: str = "float32"

    @property
    def holds(self):
        return self.expected == self.measured

    @property
    def group(self):
        """The report heading it goes under: model / activation, or the layers' policy."""
        if self.model == LAYERS:
            return f"{LAYERS} / {self.precision}"
        return f"{self.model} / {self.activation}"

    def line(self, width=58):
        flag = "" if self.holds else f"   <-- expected {self.expected}"
        detail = f"  ({self.detail})" if self.detail else ""
        if self.measured == NOT_CHECKED:
            return f"  {self.claim:<{width}} {self.measured}{detail}"
        return (f"  {self.claim:<{width}} {self.measured:<9} "
                f"max|diff| = {self.max_abs_diff:.3g}{detail}{flag}")


def _compare(a, b):
    """('identical' | 'different', max |a - b|), identical up to float32 rounding."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(np.max(np.abs(a - b)))
    scale = max(1.0, float(np.max(np.abs(b))))
    return ("identical" if diff <= IDENTICAL_TOL * scale else "different"), diff


def check_activation_order(name, activation, seed=0):
    """Claim 1: before vs after the activation, in training and inference mode."""
    spec = models.get_spec(name)
    before, after, where = probes.activation_pair(spec)
    homogeneous = probes.homogeneous(spec, where.split(".")[0], activation)
    x = probes.images(spec)
    findings = []
    for training in (True, False):
        expected = "identical" if (homogeneous or not training) else "different"
        for scale in INPUT_SCALES if expected == "different" else INPUT_SCALES[:1]:
            m_before = probes.build(name, before, activation=activation, seed=seed)
            m_after = probes.build(name, after, activation=activation, seed=seed)
            probes.copy_weights(m_after, m_before)
            measured, diff = _compare(probes.logits(spec, m_before, scale * x, training),
                                      probes.logits(spec, m_after, scale * x, training))
            if measured == expected:
                break
        why = expected == "different" != measured and probes.unseparable(
            name, where.split(".")[0], (before, after), [s * x for s in INPUT_SCALES], activation=activation, seed=seed)
        mode = "training" if training else "inference"
        findings.append(Finding(name, activation, f"1 before vs after activation, {mode} mode",
                                *((NOT_CHECKED,) * 2 if why else (expected, measured)), diff,
                                f"{where}, same mask{_scaled(scale, measured)}" + (f"; {why}" if why else "")))
    return findings


def _scaled(scale, measured):
    """What the detail says of images scaled up to separate two networks theory says differ."""
    if scale == 1:
        return ""
    return (f", images x{scale:g} (on the images themselves the two agreed: where they differ lies beyond them)"
            if measured == "different" else f", not separated on images scaled up to x{scale:g}")


def _head_site_input(name, activation, seed):
    """The canonical head dropout site, its rate and the activations entering it."""
    spec = models.get_spec(name)
    placement, site, rate = probes.head(spec)
    model = probes.build(name, placement, activation=activation, seed=seed)
    probe = keras.Model(model.input, model.get_layer(site).input)
    x = keras.ops.convert_to_numpy(probe(probes.images(spec), training=False))
    return site, rate, probes.site_units(x)


def check_scale_order(name, activation, seed=0):
    """Claim 2: the zoo's inverted dropout == x * mask / keep == (x / keep) * mask."""
    site, rate, x = _head_site_input(name, activation, seed)
    keep = np.float32(1 - rate)
    layer = dropout_lib.make_dropout("inverted", rate, seed=seed)
    dropped = keras.ops.convert_to_numpy(layer(x, training=True))
    mask = (dropped != 0).astype("float32")  # where x is 0, either formula gives 0 too
    detail = f"at {site}, rate {rate:g}, {mask[x != 0].mean():.0%} of nonzero units kept"
    findings = []
    for claim, formula in (("x * its mask / keep", x * mask / keep),
                           ("(x / keep) * its mask", (x / keep) * mask)):
        measured, diff = _compare(dropped, formula)
        findings.append(Finding(name, activation, f"2 inverted dropout vs {claim}",
                                "identical", measured, diff, detail))
    return findings


def _mc_mean_matches(kind, rate, x, seed):
    """Mean of MC_PASSES training passes vs the inference output, as max z-score."""
    layer = dropout_lib.make_dropout(kind, rate, seed=seed)
    tiled = np.broadcast_to(x, (MC_PASSES, *x.shape)).reshape(-1, *x.shape[1:])
    samples = keras.ops.convert_to_numpy(layer(tiled, training=True)).reshape(MC_PASSES, *x.shape)
    mean = samples.astype(np.float64).mean(axis=0)
    inference = keras.ops.convert_to_numpy(layer(x, training=False)).astype(np.float64)
    se = np.sqrt(x**2 * dropout_lib.KINDS[kind].variance(rate) / MC_PASSES)
    live = se > 0
    z = float(np.max(np.abs(mean - inference)[live] / se[live])) if live.any() else 0.0
    return z, float(np.max(np.abs(mean - inference))), inference


def check_kinds(name, activation, seed=0):
    """Claim 3: MC mean vs inference per kind; classic vs inverted scaling."""
    spec = models.get_spec(name)
    site, rate, x = _head_site_input(name, activation, seed)
    findings, inference = [], {}
    for kind in dropout_lib.KINDS:
        z, diff, inference[kind] = _mc_mean_matches(kind, rate, x, seed)
        measured = "matches" if z <= Z_TOL else "different"
        findings.append(Finding(name, activation, f"3 {kind}: mean of {MC_PASSES} training passes vs inference",
                                "matches", measured, diff, f"at {site}, max z = {z:.2f} <= {Z_TOL:g}"))
    measured, diff = _compare(inference["classic"], (1 - rate) * inference["inverted"])
    findings.append(Finding(name, activation, "3 classic inference vs keep x inverted inference",
                            "identical", measured, diff, f"at {site}, keep = {1 - rate:g}"))

    # The paper scales weights at test time; inverted dropout scales at training
    # time. Scaling the kernel after each site by the keep probability maps one
    # network onto the other, so the two kinds define the same functions.
    claim = "3 classic(W) vs inverted(keep x W_next), inference"
    try:
        readers = {site: probes.linear_readers(spec, site) for site in models.resolve_placement(name)}
    except ValueError as e:  # a Keras model's site read by a merge or a BatchNorm: no kernel carries the factor
        return findings + [Finding(name, activation, claim, NOT_CHECKED, NOT_CHECKED, 0.0, str(e))]
    inverted = probes.build(name, "canonical", kind="inverted", activation=activation, seed=seed)
    classic = probes.build(name, "canonical", kind="classic", activation=activation, seed=seed)
    probes.copy_weights(classic, inverted)
    for site_name, site in models.resolve_placement(name).items():
        for reader in readers[site_name]:
            weights = inverted.get_layer(reader).get_weights()  # its kernel first, then its bias
            inverted.get_layer(reader).set_weights([weights[0] * (1 - site.rate), *weights[1:]])
    xs = probes.images(spec)
    measured, diff = _compare(probes.logits(spec, classic, xs, False), probes.logits(spec, inverted, xs, False))
    findings.append(Finding(name, activation, claim, "identical", measured, diff, "whole network, canonical sites"))
    return findings


def _construction_pairs(spec):
    """Claim 4's pairs (a, b, kind, norm): moves across ReLU, and moves no rule allows."""
    before, after, where = probes.activation_pair(spec)
    layer, rate = where.split(".")[0], f"{probes.layer_rate(spec, where.split('.')[0]):g}"  # (a tower's own)
    pre = "before_dense" if before == "before_activation" else f"{layer}.pre:{rate}"
    pairs = [
        ("canonical", after, "inverted", "none"),
        ("canonical", before, "inverted", "none"),
        (before, after, "inverted", "none"),
        (before, after, "classic", "none"),
        (before, after, "gaussian", "none"),
        (pre, after, "inverted", "none"),
        (f"{layer}.mid:{rate},{layer}.post:{rate}", f"{layer}.post:{rate}", "inverted", "none"),
        # A site of rate 0 is no site, of any kind; but a .mid beside its .post gives .post a stream of its own.
        (f"{layer}.pre:0,{layer}.post:{rate}", f"{layer}.post:{rate}", "inverted", "none"),
        (f"{layer}.pre:0,{layer}.post:{rate}", f"{layer}.post:{rate}", "gaussian", "none"),
        (f"{layer}.mid:0,{layer}.post:{rate}", f"{layer}.post:{rate}", "inverted", "none"),
        (before, after, "inverted", "batch"),
        (f"{layer}.prenorm:{rate}", f"{layer}.mid:{rate}", "inverted", "batch"),
    ]
    return [pair for pair in pairs if pair[3] == "none"] if probes.is_keras(spec) else pairs  # it keeps its norm


def check_construction(name, activation, seed=0):
    """Claim 4: equal construction keys <=> bitwise equal logits in both modes, same seed.

    Nothing is copied between the two models: equal weights and masks must come from the construction itself.
    Unequal keys: differing beyond rounding in some mode (on scaled images where need be; module docstring, claim 4).
    """
    spec = models.get_spec(name)
    x = probes.images(spec)
    layer = probes.activation_pair(spec)[2].split(".")[0]
    cache = {}

    def logits(placement, kind, norm, scale):
        """(inference, training) logits; inference first, before BN's moving statistics move."""
        if (placement, kind, norm, scale) not in cache:
            model = probes.build(name, placement, kind=kind, activation=activation, norm=norm, seed=seed)
            cache[placement, kind, norm, scale] = [probes.logits(spec, model, scale * x, training).astype(np.float64)
                                                   for training in (False, True)]
        return cache[placement, kind, norm, scale]

    findings = []
    for a, b, kind, norm in _construction_pairs(spec):
        options = dict(kind=kind, activation="relu" if probes.is_keras(spec) else activation, norm=norm)
        same = models.construction_key(name, a, **options) == models.construction_key(name, b, **options)
        across = not same and probes.moved_across_homogeneous(spec, layer, a, b, activation, norm)  # up to rounding
        rounding = across and probes.is_keras(spec) and dropout_lib.KINDS[kind].bernoulli  # (ReLU's: equal keys)
        gaussian = across and kind == "gaussian"  # only a negative draw separates them: scaled images cannot
        for scale in INPUT_SCALES if not (same or rounding or gaussian) else INPUT_SCALES[:1]:
            inference, training = (_compare(u, v) for u, v in zip(logits(a, kind, norm, scale),
                                                                 logits(b, kind, norm, scale)))
            diff = max(inference[1], training[1])
            # Equal keys: bitwise equal. Otherwise beyond float32 rounding (a ULP shows no difference theory names).
            measured = ("identical" if diff == 0.0 else "different") if same else \
                "identical" if inference[0] == training[0] == "identical" else "different"
            if measured == "different" or same or rounding:
                break
        setting = "".join(f", {v}" for v in (kind, f"norm={norm}") if v not in ("inverted", "norm=none"))
        keys = (f"keys {'equal' if same else 'differ'}{'' if same else probes.penalty_note(spec, layer, a, b)}"
                f"{'; one function up to rounding' if rounding else ''}")
        expected, why = probes.negative_draws(spec, layer, len(x), a, norm) if gaussian else (0, "")
        if measured == "identical" and not (same or rounding) and kind != "gaussian" and probes.moved_across(
                spec, layer, a, b, norm):  # theory's difference out of the images' reach, or a real disagreement
            why = probes.unseparable(name, layer, (a, b), [s * x for s in INPUT_SCALES], seed=seed,
                                     activation=options["activation"]) or ""
        if measured == "identical" and why and expected < RARE_DRAWS:  # none drawn, as likely as not: no test
            findings.append(Finding(name, activation, f"4 {a} vs {b}{setting}", NOT_CHECKED, NOT_CHECKED, diff,
                                    f"{keys}; {why}"))
            continue
        findings.append(Finding(
            name, activation, f"4 {a} vs {b}{setting}", "identical" if same or rounding else "different",
            measured, diff, f"{keys}; max|diff| training {training[1]:.3g}, inference {inference[1]:.3g}"
            f"{_scaled(scale, measured)}"))
    return findings


def check_precision_name(precision):
    """Returns `precision`, or raises ValueError unless it is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def precision_policy(precision):
    """Layers built inside compute in `precision`; the previous global policy comes back after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(check_precision_name(precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _float64(tensor):
    """A tensor of any float dtype (bfloat16 too) as a float64 NumPy array."""
    return keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32")).astype(np.float64)


def _per_draw(values, spatial):
    """`values` summed over what one noise draw covers: a feature map (spatial) or a unit."""
    return values.sum(axis=(-3, -2)) if spatial else values


def _layer_findings(precision, kind, rate, spatial, seed):
    """Claims 5 and 6 for one dropout layer built under `precision`."""
    with precision_policy(precision):
        layer = dropout_lib.make_dropout(kind, rate, spatial=spatial, seed=seed)
    x = np.random.default_rng(seed).uniform(0.5, 1.5, PRECISION_SHAPE).astype("float32")
    x_used = _float64(keras.ops.cast(x, layer.compute_dtype))  # what the layer receives
    tiled = np.broadcast_to(x, (MC_PASSES, *x.shape)).reshape(-1, *x.shape[1:])
    samples = _float64(layer(tiled, training=True)).reshape(MC_PASSES, *x.shape)
    inference = _float64(layer(x, training=False))

    form = f"{kind}{' spatial' if spatial else ''}, rate {rate:g}"
    draws = _per_draw(x_used, spatial)
    se = np.sqrt(dropout_lib.KINDS[kind].variance(rate) * np.sum(draws**2) / MC_PASSES)
    z = (samples.sum(axis=tuple(range(1, samples.ndim))).mean() - inference.sum()) / se
    diff = float(np.max(np.abs(samples.mean(axis=0) - inference)))
    findings = [Finding(LAYERS, "", f"5 {form}: mean of {MC_PASSES} training passes vs inference",
                        "matches", "matches" if abs(z) <= Z_TOL else "different", diff,
                        f"pooled over {x.size} units, z = {z:.2f}", precision)]
    if kind != "gaussian":  # the Bernoulli kinds: a draw is kept or dropped
        dropped = _per_draw(np.abs(samples), spatial) == 0  # inputs are >= 0.5: 0 means dropped
        fraction, n = float(dropped.mean()), dropped.size
        z = (fraction - rate) / np.sqrt(rate * (1 - rate) / n)
        findings.append(Finding(LAYERS, "", f"6 {form}: fraction dropped vs the rate",
                                "matches", "matches" if abs(z) <= Z_TOL else "different",
                                abs(fraction - rate), f"{fraction:.5f} of {n:,} draws, z = {z:.2f}",
                                precision))
    return findings


def check_precision(precision, seed=0):
    """Claims 5 and 6 for every kind and form of the zoo's dropout under `precision`."""
    findings = []
    for kind in dropout_lib.KINDS:
        for spatial in (False, True):
            for rate in PRECISION_RATES:
                findings += _layer_findings(precision, kind, rate, spatial, seed)
    return findings


def run(model_names=None, activations=None, precisions=None, seed=0):
    """Every finding for the given models x activations, and precisions (default: all)."""
    for precision in precisions or ():
        check_precision_name(precision)
    keras.utils.set_random_seed(seed)
    findings = []
    for name in model_names or models.list_models():
        own = probes.is_keras(models.get_spec(name))  # a Keras model keeps its own activations
        for activation in (OWN,) if own else activations or network.ACTIVATIONS:
            findings += check_activation_order(name, activation, seed)
            findings += check_scale_order(name, activation, seed)
            findings += check_kinds(name, activation, seed)
            findings += check_construction(name, activation, seed)
    for precision in precisions or PRECISIONS:
        findings += check_precision(precision, seed)
    return findings


def report(findings):
    """The findings as text, grouped by model and activation."""
    lines, group = [], None
    width = max([58] + [len(f.claim) for f in findings])
    for f in findings:
        if f.group != group:
            group = f.group
            lines.append(group)
        lines.append(f.line(width))
    failed = [f for f in findings if not f.holds]
    skipped = sum(f.measured == NOT_CHECKED for f in findings)
    checked = len(findings) - skipped
    lines.append(f"{checked - len(failed)} of {checked} findings agree with theory"
                 + (f"; {skipped} not checked (its line says why)." if skipped else "."))
    return "\n".join(lines)


def main(argv):
    del argv
    try:
        fv, notes = flags.FLAGS, []
        for name in ("models", "activations", "precisions"):  # an empty list ran every one
            if fv[name].present and not fv[name].value:
                raise ValueError(f"--{name} is empty; name one or more, or leave it out for all")
        names = fv.models
        if fv.network is not None:  # a network of your own: checked alone, or beside --models
            names = [probes.register_network(probes.network_text(fv.network)), *(names or ())]
        if fv.keras_model is not None:
            if fv.activations and names is None:
                raise ValueError("--activations is for the zoo's networks and text networks; a --keras_model is "
                                 "checked with its own: leave --activations out")
            names = [probes.register_keras(fv.keras_model), *(names or ())]
            notes = probes.keras_notes(names[0])
        findings = run(names and list(dict.fromkeys(names)), fv.activations and list(dict.fromkeys(fv.activations)),
                       fv.precisions and list(dict.fromkeys(fv.precisions)))  # each once: counted once
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join([report(findings), *(f"note: {note}" for note in notes)]))
    return 0 if all(f.holds for f in findings) else 1


if __name__ == "__main__":
    # Defined here, not at import, so importing this module adds no flags.
    flags.DEFINE_list("models", None, "Models to check (default: all).")
    flags.DEFINE_string("network", None, "A network of your own as layer tokens, as train.py's --network takes it "
                        "(or @FILE), checked instead of the zoo's (beside --models where given).")
    flags.DEFINE_string("keras_model", None, "A model of your own saved with model.save('NAME.keras'), checked "
                        "with its own activations (beside --models and --network where given).")
    flags.DEFINE_list("activations", None, "Hidden activations of the zoo's and text networks (default: all).")
    flags.DEFINE_list("precisions", None, f"Policies for the layer checks (default: {','.join(PRECISIONS)}).")
    app.run(main)
