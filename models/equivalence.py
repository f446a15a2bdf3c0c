"""Answers the dropout-order questions with measured numbers.

    python -m models.equivalence [--models=keras_mnist_cnn,...] [--activations=relu,...]

For each model and hidden activation it checks:

1. `before_activation` vs `after_activation` with the same weights and the
   same dropout mask: identical in training mode exactly when the activation
   is ReLU (positively homogeneous, maps 0 to 0), and identical in inference
   mode for every activation (inverted dropout is then the identity).
2. Inverted dropout's order of operations: scaling by 1/(1-rate) then
   masking equals masking then scaling, and Keras' Dropout output equals
   the mask-then-scale formula for its own mask.
3. `inverted` vs `classic` (and `gaussian`): the mean of many training-mode
   passes matches the inference output of each kind (within 5 standard
   errors of the mean); classic inference output = keep probability x
   inverted inference output; and a classic network equals the inverted
   network whose next linear layer's kernel is scaled by the keep
   probability -- the original paper's test-time weight scaling, moved.

Each finding records what theory expects, what was measured and the max
absolute difference; `holds` says whether they agree. Tests assert on them.
"""
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the backend loads

import numpy as np
from absl import app, flags

import keras
import models
from models import layers as dropout_lib
from models import network

IDENTICAL_TOL = 1e-6  # relative; float32 rounding of a reordered product
MC_PASSES = 4000
Z_TOL = 5.0  # standard errors of the mean
INPUT_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class Finding:
    model: str
    activation: str
    claim: str
    expected: str  # "identical" | "different" | "matches"
    measured: str
    max_abs_diff: float
    detail: str = ""

    @property
    def holds(self):
        return self.expected == self.measured

    def line(self):
        flag = "" if self.holds else f"   <-- expected {self.expected}"
        detail = f"  ({self.detail})" if self.detail else ""
        return f"  {self.claim:<58} {self.measured:<9} max|diff| = {self.max_abs_diff:.3g}{detail}{flag}"


def _compare(a, b):
    """('identical' | 'different', max |a - b|), identical up to float32 rounding."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(np.max(np.abs(a - b)))
    scale = max(1.0, float(np.max(np.abs(b))))
    return ("identical" if diff <= IDENTICAL_TOL * scale else "different"), diff


def _inputs(input_shape, batch=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch, *input_shape)).astype("float32")


def _logits(model, x, training):
    """The model's pre-softmax output, where differences are not squashed."""
    head = keras.Model(model.input, model.get_layer("logits").output)
    return keras.ops.convert_to_numpy(head(x, training=training))


def _copy_weights(source, target):
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def _activation_pair(spec):
    """(before, after) placements, and the site moved between them."""
    named = models.list_placements(spec.name)
    canonical = models.resolve_placement(spec.name)
    head_rate = [s for k, s in canonical.items() if k not in spec.spatial_sites][0].rate
    if "before_activation" in named:
        layer = [l.name for l in spec.layers if isinstance(l, network.Dense)][-1]
        return "before_activation", "after_activation", f"{layer}.mid/.post"
    # No hidden dense layer: move dropout across the last conv's activation.
    layer = [l.name for l in spec.layers if isinstance(l, network.Conv)][-1]
    return f"{layer}.mid:{head_rate}", f"{layer}.post:{head_rate}", f"{layer}.mid/.post"


def check_activation_order(name, activation, seed=0):
    """Claim 1: before vs after the activation, in training and inference mode."""
    spec = models.get_spec(name)
    before, after, where = _activation_pair(spec)
    x = _inputs(INPUT_SHAPE)
    findings = []
    for training in (True, False):
        m_before = models.build(name, before, activation=activation, seed=seed)
        m_after = models.build(name, after, activation=activation, seed=seed)
        _copy_weights(m_after, m_before)
        measured, diff = _compare(_logits(m_before, x, training), _logits(m_after, x, training))
        expected = "identical" if (activation == "relu" or not training) else "different"
        mode = "training" if training else "inference"
        findings.append(Finding(name, activation, f"1 before vs after activation, {mode} mode",
                                expected, measured, diff, f"{where}, same mask"))
    return findings


def _head_site_input(name, activation, seed):
    """The canonical head dropout site, its rate and the activations entering it."""
    spec = models.get_spec(name)
    model = models.build(name, activation=activation, seed=seed)
    site, rate = [(k, s.rate) for k, s in models.resolve_placement(name).items()
                  if k not in spec.spatial_sites][0]
    probe = keras.Model(model.input, model.get_layer(site).input)
    x = keras.ops.convert_to_numpy(probe(_inputs(INPUT_SHAPE), training=False))
    return site, rate, x


def check_scale_order(name, activation, seed=0):
    """Claim 2: scale-then-mask == mask-then-scale; Keras Dropout == x * mask / keep."""
    site, rate, x = _head_site_input(name, activation, seed)
    keep = np.float32(1 - rate)
    mask = (np.random.default_rng(seed).uniform(size=x.shape) >= rate).astype("float32")
    scale_first = (x / keep) * mask
    mask_first = (x * mask) / keep
    measured, diff = _compare(scale_first, mask_first)
    findings = [Finding(name, activation, "2 scale-then-mask vs mask-then-scale",
                        "identical", measured, diff, f"at {site}, rate {rate:g}")]
    dropped = keras.ops.convert_to_numpy(
        keras.layers.Dropout(rate, seed=seed)(x, training=True))
    own_mask = (dropped != 0).astype("float32")
    measured, diff = _compare(dropped, x * own_mask / keep)
    findings.append(Finding(name, activation, "2 keras Dropout vs x * its mask / keep",
                            "identical", measured, diff, f"at {site}"))
    return findings


def _mc_mean_matches(kind, rate, x, seed):
    """Mean of MC_PASSES training passes vs the inference output, as max z-score."""
    layer = dropout_lib.make_dropout(kind, rate, seed=seed)
    tiled = np.broadcast_to(x, (MC_PASSES, *x.shape)).reshape(-1, *x.shape[1:])
    samples = keras.ops.convert_to_numpy(layer(tiled, training=True)).reshape(MC_PASSES, *x.shape)
    mean = samples.astype(np.float64).mean(axis=0)
    inference = keras.ops.convert_to_numpy(layer(x, training=False)).astype(np.float64)
    # Per-unit variance of one pass: Bernoulli keep k scaled by 1/k (inverted),
    # unscaled (classic), or N(1, rate/(1-rate)) noise (gaussian).
    keep = 1 - rate
    var = {"inverted": x**2 * rate / keep, "classic": x**2 * rate * keep,
           "gaussian": x**2 * rate / keep}[kind]
    se = np.sqrt(var / MC_PASSES)
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
    inverted = models.build(name, kind="inverted", activation=activation, seed=seed)
    classic = models.build(name, kind="classic", activation=activation, seed=seed)
    _copy_weights(classic, inverted)
    for site_name, site in models.resolve_placement(name).items():
        nxt = inverted.get_layer(_next_linear(spec, site_name))
        kernel, bias = nxt.get_weights()
        nxt.set_weights([kernel * (1 - site.rate), bias])
    xs = _inputs(INPUT_SHAPE)
    measured, diff = _compare(_logits(classic, xs, False), _logits(inverted, xs, False))
    findings.append(Finding(name, activation, "3 classic(W) vs inverted(keep x W_next), inference",
                            "identical", measured, diff, "whole network, canonical sites"))
    return findings


def _next_linear(spec, site):
    """The first conv/dense layer at or after `site` (only max-pool/flatten between)."""
    layer_name, slot = site.split(".")
    names = [l.name for l in spec.layers]
    start = names.index(layer_name) + (0 if slot == "pre" else 1)
    for layer in spec.layers[start:]:
        if isinstance(layer, (network.Conv, network.Dense, network.Output)):
            return layer.name
    raise ValueError(f"no linear layer after site {site}")


def run(model_names=None, activations=None, seed=0):
    """Every finding for the given models x activations (default: all)."""
    keras.utils.set_random_seed(seed)
    findings = []
    for name in model_names or models.list_models():
        for activation in activations or network.ACTIVATIONS:
            findings += check_activation_order(name, activation, seed)
            findings += check_scale_order(name, activation, seed)
            findings += check_kinds(name, activation, seed)
    return findings


def report(findings):
    """The findings as text, grouped by model and activation."""
    lines, group = [], None
    for f in findings:
        if (f.model, f.activation) != group:
            group = (f.model, f.activation)
            lines.append(f"{f.model} / {f.activation}")
        lines.append(f.line())
    failed = [f for f in findings if not f.holds]
    lines.append(f"{len(findings) - len(failed)} of {len(findings)} findings agree with theory.")
    return "\n".join(lines)


def main(argv):
    del argv
    try:
        findings = run(flags.FLAGS.models, flags.FLAGS.activations)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(findings))
    return 0 if all(f.holds for f in findings) else 1


if __name__ == "__main__":
    # Defined here, not at import, so importing this module adds no flags.
    flags.DEFINE_list("models", None, "Models to check (default: all).")
    flags.DEFINE_list("activations", None, "Hidden activations (default: all).")
    app.run(main)
