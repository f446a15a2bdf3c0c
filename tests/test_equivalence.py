"""Every claim `python -m models.equivalence` prints is checked here.

The module-scoped run covers every model x activation; the negative tests
show each check detects a violation, so a pass is not vacuous.
"""
import os
import subprocess
import sys

import pytest

import models
from models import equivalence
from models import layers as dropout_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def findings():
    return equivalence.run()


def _by_claim(findings, prefix):
    return [f for f in findings if f.claim.startswith(prefix)]


def test_covers_every_model_and_activation(findings):
    groups = {(f.model, f.activation) for f in findings}
    assert groups == {(m, a) for m in models.list_models() for a in models.ACTIVATIONS}


def test_claim1_activation_order(findings):
    rows = _by_claim(findings, "1 ")
    assert len(rows) == 2 * len(models.list_models()) * len(models.ACTIVATIONS)
    for f in rows:
        assert f.holds, f.line()
        if "training" in f.claim and f.activation == "relu":
            assert f.max_abs_diff == 0.0, "ReLU commutes with a non-negative mask exactly"
        if "training" in f.claim and f.activation != "relu":
            assert f.max_abs_diff > 1e-3, f"a real difference, not rounding: {f.line()}"
        if "inference" in f.claim:
            assert f.max_abs_diff == 0.0


def test_claim2_scale_order(findings):
    rows = _by_claim(findings, "2 ")
    assert rows and all(f.holds for f in rows), [f.line() for f in rows if not f.holds]
    assert all(f.max_abs_diff == 0.0 for f in rows if "scale-then-mask" in f.claim)


def test_claim3_kinds(findings):
    rows = _by_claim(findings, "3 ")
    assert len(rows) == 5 * len(models.list_models()) * len(models.ACTIVATIONS)
    assert all(f.holds for f in rows), [f.line() for f in rows if not f.holds]


def test_report_says_identical_or_different_with_the_max_difference(findings):
    text = equivalence.report(findings)
    assert f"{len(findings)} of {len(findings)} findings agree with theory." in text
    for line in text.splitlines():
        if line.startswith("  1 ") or line.startswith("  2 "):
            assert ("identical" in line or "different" in line) and "max|diff| = " in line


def test_compare_detects_a_difference():
    assert equivalence._compare([1.0, 2.0], [1.0, 2.0]) == ("identical", 0.0)
    verdict, diff = equivalence._compare([1.0, 2.0], [1.0, 2.01])
    assert verdict == "different" and diff == pytest.approx(0.01)


def test_claim1_fails_when_masks_differ(monkeypatch):
    """With different masks on the two sides, even ReLU must come out different."""
    real_build = models.build

    def build(name, placement="canonical", **options):
        if placement == "before_activation":
            options["seed"] = options["seed"] + 1
        return real_build(name, placement, **options)

    monkeypatch.setattr(models, "build", build)
    training, _ = equivalence.check_activation_order("dense_mlp", "relu")
    assert training.measured == "different" and not training.holds


def test_claim3_fails_for_a_wrong_inference_scale(monkeypatch):
    """A classic dropout that forgot to scale at inference is caught by the MC check."""
    real_call = dropout_lib.ClassicDropout.call

    def unscaled(self, inputs, training=False):
        return real_call(self, inputs, training=True) if training else inputs

    monkeypatch.setattr(dropout_lib.ClassicDropout, "call", unscaled)
    rows = {f.claim: f for f in equivalence.check_kinds("dense_mlp", "relu")}
    classic = rows[f"3 classic: mean of {equivalence.MC_PASSES} training passes vs inference"]
    assert classic.measured == "different" and not classic.holds
    assert not rows["3 classic inference vs keep x inverted inference"].holds


def _run_module(*args):
    return subprocess.run([sys.executable, "-m", "models.equivalence", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_command_line_prints_findings_and_exits_zero():
    result = _run_module("--models=dense_mlp", "--activations=relu,sigmoid")
    assert result.returncode == 0, result.stderr
    assert "dense_mlp / relu" in result.stdout and "dense_mlp / sigmoid" in result.stdout
    assert "18 of 18 findings agree with theory." in result.stdout


def test_command_line_rejects_an_unknown_model_in_one_line():
    result = _run_module("--models=lenet")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown model 'lenet'; valid models:")
    assert "Traceback" not in result.stderr
