"""What a comparison can see: power, equivalence and the verdicts of planned contrasts.

The power and TOST numbers are checked against independent computations
(simulated paired t-tests, the t table), and a constructed study shows each
verdict: differs, equivalent within the margin, and inconclusive with the
effect it could have detected.
"""
import csv
import glob
import math
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats as scipy_stats

from dropzoo import compare
from dropzoo import config as config_lib
from dropzoo import contrasts
from dropzoo import descriptive
from dropzoo import pooled_data
from dropzoo import rates_report
from dropzoo import records
from dropzoo import regime
from dropzoo import report
from dropzoo import sizes_report
from dropzoo import stats
from dropzoo import variants
from dropzoo.errors import ConfigError


def _simulated_power(effect, sd, n, alpha, trials=200_000, seed=0):
    """The rejection rate of the two-sided paired t-test, by simulation (no noncentral t involved)."""
    d = np.random.default_rng(seed).normal(effect, sd, (trials, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    return float(np.mean(np.abs(t) > scipy_stats.t.ppf(1 - alpha / 2, n - 1)))


@pytest.mark.parametrize("n,alpha", [(6, 0.05), (8, 0.05 / 6), (10, 0.05 / 4), (40, 0.0125)])
def test_the_minimum_detectable_effect_has_80_percent_power_by_simulation(n, alpha):
    mde = stats.minimum_detectable_effect(0.4, n, alpha)
    assert _simulated_power(mde, 0.4, n, alpha) == pytest.approx(0.8, abs=0.006)
    assert stats.paired_power(mde, 0.4, n, alpha) == pytest.approx(0.8, abs=1e-9)
    # A smaller effect is found less often: the MDE is the smallest with 80% power.
    assert _simulated_power(0.8 * mde, 0.4, n, alpha) < 0.75


def test_the_mde_scales_with_the_spread_and_is_infinite_where_the_seeds_cannot_reach_alpha():
    # 3 seeds, 5 comparisons (the earlier study): no p below 2/2^3 = 0.25, so nothing could pass 0.01.
    assert stats.minimum_detectable_effect(0.26, 3, 0.01) == math.inf
    assert stats.minimum_detectable_effect(0.26, 7, 0.05 / 4) == math.inf  # 2/128 > 0.0125
    # 8 seeds at 0.01: Holm's first step needs |t| > 3.50 (t table, df 7, two-sided 0.01).
    assert scipy_stats.t.ppf(1 - 0.01 / 2, 7) == pytest.approx(3.499, abs=1e-3)
    assert stats.minimum_detectable_effect(0.5, 8, 0.01) == pytest.approx(2 * stats.minimum_detectable_effect(
        0.25, 8, 0.01))
    assert math.isnan(stats.minimum_detectable_effect(0.0, 3, 0.01))  # no spread: no t-test to power
    assert math.isnan(stats.minimum_detectable_effect(0.3, 1, 0.01))
    # Far in the tail the power stays a number (scipy's nct.cdf would give NaN there).
    assert stats.paired_power(50.0, 1.0, 5, 0.05) == pytest.approx(1.0)


def test_tost_is_the_larger_one_sided_p_and_holds_its_size_at_the_margin():
    d = np.array([0.1, -0.05, 0.2, 0.0, 0.05])
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(5)
    def by_hand(margin):
        return max(1 - scipy_stats.t.cdf((mean + margin) / se, 4), scipy_stats.t.cdf((mean - margin) / se, 4))

    assert stats.tost_paired_p(d, 0.15) == pytest.approx(by_hand(0.15)) and by_hand(0.15) > 0.5**5
    # No p below the exact one-sided sign-flip test's 1/2^5, where the t-test's is 0.0003.
    assert by_hand(0.5) < 0.001 and stats.tost_paired_p(d, 0.5) == 0.5**5
    assert stats.tost_paired_p(d, 0.01) > 0.5
    # Size: with the true difference on the margin, equivalence is (wrongly) found at most alpha of the time.
    rng = np.random.default_rng(1)
    found = np.mean([stats.tost_paired_p(rng.normal(0.5, 0.3, 6), 0.5) < 0.05 for _ in range(4000)])
    assert found == pytest.approx(0.05, abs=0.012)


@pytest.mark.parametrize("p,p_tost,expected", [
    (0.001, 0.6, [stats.DIFFERS]), (0.6, 0.001, [stats.EQUIVALENT]),
    (0.001, 0.001, [stats.DIFFERS, stats.EQUIVALENT]), (0.2, 0.2, [stats.INCONCLUSIVE]),
    (float("nan"), float("nan"), [stats.INCONCLUSIVE])])
def test_verdicts(p, p_tost, expected):
    assert stats.verdict(p, p_tost, 0.05) == expected


def _rows(placement, accuracies, losses):
    config = config_lib.TrainConfig(model="m", placement=placement).to_dict()
    return [{"run": f"r/{placement}/{seed}", "seed": seed, "config": {**config, "seed": seed},
             "sites": "" if placement == "none" else placement, "precision": "float32", "test_accuracy": a,
             "test_loss": nll, "identical_to": None, "data_source": "d"}
            for seed, (a, nll) in enumerate(zip(accuracies, losses))]


def test_a_constructed_study_gives_each_verdict():
    rng = np.random.default_rng(7)
    seeds = 10
    base = 0.95 + rng.normal(0, 0.002, seeds)
    rows = _rows("after_activation", base, 0.1 + rng.normal(0, 0.001, seeds))
    # 1 point better on every seed, with little spread: differs.
    rows += _rows("before_dense", base + 0.01 + rng.normal(0, 0.001, seeds), 0.1 + rng.normal(0, 0.001, seeds))
    # Within 0.05 points: equivalent within ±0.5.
    rows += _rows("before_activation", base + rng.normal(0, 0.0005, seeds), 0.1 + rng.normal(0, 0.0005, seeds))
    # Wild seeds: neither, and the MDE says how large an effect these seeds could have seen.
    rows += _rows("none", base + rng.normal(0, 0.02, seeds), 0.1 + rng.normal(0, 0.05, seeds))
    variants.label_rows(rows)
    planned = [("before_dense", "after_activation"), ("before_activation", "after_activation"),
               ("none", "after_activation")]
    table = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, planned), report.DEFAULT_MARGINS)
    verdicts = {e["a"]: e["test_accuracy"]["verdict"] for e in table}
    assert verdicts == {"m/before_dense": [stats.DIFFERS], "m/before_activation": [stats.EQUIVALENT],
                        "m/none": [stats.INCONCLUSIVE]}
    wild = next(e["test_accuracy"] for e in table if e["a"] == "m/none")
    assert wild["mde"] > 0.005 and wild["mde"] == pytest.approx(stats.minimum_detectable_effect(
        wild["sd"], seeds, 0.05 / 3))
    # Holm within the family: the adjusted p is at least the raw one.
    assert all(e["test_accuracy"]["p_holm"] >= e["test_accuracy"]["p"] for e in table)
    text = "\n".join(report.contrasts_markdown(table))
    assert f"differs ({100 * table[0]['test_accuracy']['difference']:+.2f} points)" in text
    assert "equivalent within ±0.5 points" in text
    assert f"inconclusive (could detect ≥ {100 * wild['mde']:.2f} points)" in text


def test_planned_contrasts_name_existing_variants_in_one_line():
    rows = _rows("after_activation", [0.9, 0.91], [0.3, 0.3]) + _rows("none", [0.9, 0.9], [0.3, 0.31])
    variants.label_rows(rows)
    assert len(contrasts.planned_pairs(rows, [("none", "after_activation")])) == 1
    with pytest.raises(ConfigError, match="contrast side 'conv' matches no variant; the variants are: "
                                          "m/after_activation, m/none"):
        contrasts.planned_pairs(rows, [("conv", "none")])
    assert contrasts.parse_contrasts("a:b, c:d") == [("a", "b"), ("c", "d")]
    for bad in ("a", "a:b:c", "a:a", ":b", "a:b,"):  # (an empty item too, as train.py's lists refuse it)
        with pytest.raises(ConfigError, match="malformed contrast"):
            contrasts.parse_contrasts(bad)
    # One variant under two names; one contrast planned twice, or both ways: each copy counted in the Holm
    # family (NLL p_holm 0.049 -> 0.098, differs -> inconclusive, in a review's 10-seed copy of the MNIST study).
    with pytest.raises(ConfigError, match=r"^contrast none:m/none names one variant \(m/none\) on both sides"):
        contrasts.planned_pairs(rows, [("none", "m/none")])
    for twice in ([("none", "after_activation"), ("none", "after_activation")],
                  [("none", "after_activation"), ("m/after_activation", "none")]):
        with pytest.raises(ConfigError, match=rf"^contrasts none:after_activation and {twice[1][0]}:{twice[1][1]} "
                                              r"are one contrast \(m/none vs m/after_activation\); plan it once"):
            contrasts.planned_pairs(rows, twice)


def test_two_precisions_or_two_meanings_of_a_placement_are_two_variants():
    rows = _rows("before_dense", [0.9, 0.91], [0.3, 0.3])
    other = _rows("before_dense", [0.92, 0.93], [0.3, 0.3])
    for r in other:
        r["run"] += "-bf16"
        r["precision"] = "mixed_bfloat16"
    old = _rows("before_dense", [0.8, 0.81], [0.3, 0.3])
    for r in old:
        r["run"] += "-old"
        r["sites"] = "pool1.post:0.25,dense1.pre:0.5"
    rows = variants.label_rows(rows + other + old)
    table = compare.summarise(rows)
    assert len(table) == 3 and all(e["seeds"] == 2 for e in table)
    assert {e["variant"] for e in table} == {
        "m/before_dense-precisionfloat32 [sites before_dense]",
        "m/before_dense-precisionmixed_bfloat16",
        "m/before_dense-precisionfloat32 [sites pool1.post:0.25,dense1.pre:0.5]"}


def test_runs_that_trained_train_steps_are_not_labelled_by_their_unused_epochs():
    """Pooled with runs trained by epochs, runs of --train_steps=3 were labelled `-epochs12-train_steps3`."""
    by_epochs = _rows("canonical", [0.9, 0.91], [0.3, 0.3])
    for r in by_epochs:
        r["config"]["epochs"] = 1
    by_steps = _rows("canonical", [0.8, 0.81], [0.4, 0.4])
    for r in by_steps:
        r["run"] += "-steps"
        r["config"]["train_steps"] = 3
    labels = {r["variant"] for r in variants.label_rows(by_epochs + by_steps)}
    assert labels == {"m/canonical-epochs1", "m/canonical-train_steps3"}
    # A sweep of --epochs beside --train_steps keeps the names of its directories (canonical-epochs1, ...).
    for r in by_epochs:
        r["config"]["train_steps"] = 3
    labels = {r["variant"] for r in variants.label_rows(by_epochs + by_steps)}
    assert labels == {"m/canonical-epochs1", "m/canonical-epochs12"}
    for r in by_epochs:  # other --train_steps tell them apart: --epochs is not named
        r["config"]["train_steps"] = 100
    labels = {r["variant"] for r in variants.label_rows(by_epochs + by_steps)}
    assert labels == {"m/canonical-train_steps100", "m/canonical-train_steps3"}
    # A sweep of --epochs beside --train_steps read at two paths of one data (two machines): named as its directories.
    for rows, epochs, path in ((by_epochs, 1, "/a"), (by_steps, 12, "/b")):
        for r in rows:
            r["config"].update(epochs=epochs, train_steps=3, idx_dir=path)
            r.update(train_sha256="T", data_sha256="D")
    labels = {r["variant"] for r in variants.label_rows(by_epochs + by_steps)}
    assert labels == {"m/canonical-epochs1", "m/canonical-epochs12"}


def _sized_rows(placement, size, accuracies):
    config = config_lib.TrainConfig(model="m", placement=placement, train_size=size).to_dict()
    return [{"run": f"r/{placement}/{size}/{seed}", "seed": seed, "config": {**config, "seed": seed},
             "sites": placement, "precision": "float32", "test_accuracy": a, "test_loss": 1 - a,
             "identical_to": None, "data_source": "d"} for seed, a in enumerate(accuracies)]


def test_contrasts_over_training_sizes_form_one_curve_per_contrast(tmp_path):
    # The data-size study's shape: dropout - none at each size; the gain peaks at 1000.
    rng = np.random.default_rng(3)
    gains = {250: -0.002, 1000: 0.02, 4000: 0.004}
    rows = []
    for size, gain in gains.items():
        base = 0.9 + rng.normal(0, 0.003, 8)
        rows += _sized_rows("none", size, base) + _sized_rows("conv", size, base + gain + rng.normal(0, 0.001, 8))
    variants.label_rows(rows)
    planned = [(f"conv-train_size{s}", f"none-train_size{s}") for s in gains]
    tested = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, planned), report.DEFAULT_MARGINS)
    table = compare.summarise(rows)
    assert [e["variant"] for e in table][:3] == ["m/conv-train_size250", "m/conv-train_size1000",
                                                 "m/conv-train_size4000"]  # sizes as numbers
    curve = sizes_report.curve(rows, table, tested)
    assert curve["sizes"] == [250, 1000, 4000]
    assert set(curve["variants"]) == {"m/conv", "m/none"}
    [(family, points)] = curve["contrasts"].items()
    assert family == "m/conv - m/none" and [size for size, _ in points] == [250, 1000, 4000]
    assert [e["test_accuracy"]["difference"] for _, e in points] == pytest.approx(
        [gains[s] for s in (250, 1000, 4000)], abs=0.001)
    text = sizes_report.markdown(curve, report.COLUMNS[0], report.CONTRASTS, report.cell, report.verdict_text,
                                 report.seeds_text)
    assert "| 1000 | 8 |" in text and "differs (+2.02 points)" in text and "| 250 | 8 |" in text
    sizes_report.plot(str(tmp_path / "sizes.png"), curve, report.COLUMNS[0], report.CONTRASTS, "title")
    with open(tmp_path / "sizes.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # One size only: no curve.
    one = [r for r in rows if r["config"]["train_size"] == 1000]
    assert sizes_report.curve(one, compare.summarise(one), []) is None
    # Rates chosen per size (conv at 0.25 at 250, 0.5 elsewhere): still one curve, each point naming its rate, and
    # the data-size configs' contrasts (conv-train_size250:none-train_size250) name the variants without it.
    for r in rows:
        r["config"]["rate"] = 0.25 if (r["config"]["placement"], r["config"]["train_size"]) == ("conv", 250) else 0.5
    variants.label_rows(rows)
    tested = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, planned), report.DEFAULT_MARGINS)
    curve = sizes_report.curve(rows, compare.summarise(rows), tested)
    [(family, points)] = curve["contrasts"].items()
    assert family == "m/conv - m/none" and len(points) == 3
    text = sizes_report.markdown(curve, report.COLUMNS[0], report.CONTRASTS, report.cell, report.verdict_text,
                                 report.seeds_text)
    assert re.search(r"\| 250 \| 8 \| [0-9.]+ ± [0-9.]+ \(rate 0.25\) \| [0-9.]+ ± [0-9.]+ \|", text)  # none: no rate
    # A and B over their own seeds: said where the contrast paired fewer.
    fewer = [r for r in rows if not (r["config"]["placement"] == "none" and r["seed"] >= 6)]
    variants.label_rows(fewer)
    tested = contrasts.contrast_table(fewer, contrasts.planned_pairs(fewer, planned), report.DEFAULT_MARGINS)
    text = sizes_report.markdown(sizes_report.curve(fewer, compare.summarise(fewer), tested), report.COLUMNS[0],
                                 report.CONTRASTS, report.cell, report.verdict_text, report.seeds_text)
    assert re.search(r"\| 250 \| 6 \| [0-9.]+ ± [0-9.]+ \(rate 0.25\) \(8 seeds\) \| [0-9.]+ ± [0-9.]+ \|",
                     text), text
    # A score not finite at a seed (its training diverged): the cell's count says it once ("(1 of 2 seeds) (2 seeds)").
    for r in fewer:
        if (r["config"]["placement"], r["config"]["train_size"], r["seed"]) == ("conv", 250, 7):
            r["test_accuracy"] = float("nan")
    tested = contrasts.contrast_table(fewer, contrasts.planned_pairs(fewer, planned), report.DEFAULT_MARGINS)
    text = sizes_report.markdown(sizes_report.curve(fewer, compare.summarise(fewer), tested), report.COLUMNS[0],
                                 report.CONTRASTS, report.cell, report.verdict_text, report.seeds_text)
    assert re.search(r"\| 250 \| 6 \| [0-9.]+ ± [0-9.]+ \(7 of 8 seeds\) \(rate 0.25\) \| [0-9.]+ ± [0-9.]+ \|",
                     text), text
    for r in fewer:  # every seed of it (diverged): said, not a blank cell
        if (r["config"]["placement"], r["config"]["train_size"]) == ("conv", 250):
            r["test_accuracy"] = float("nan")
    tested = contrasts.contrast_table(fewer, contrasts.planned_pairs(fewer, planned), report.DEFAULT_MARGINS)
    text = sizes_report.markdown(sizes_report.curve(fewer, compare.summarise(fewer), tested), report.COLUMNS[0],
                                 report.CONTRASTS, report.cell, report.verdict_text, report.seeds_text)
    assert re.search(r"\| 250 \| 0 \| no finite score \(rate 0.25\) \(8 seeds\) \| [0-9.]+ ± [0-9.]+", text), text


def _regime_rows(placement, activation, train_accuracies, val_losses, test_gap=0.0):
    config = config_lib.TrainConfig(model="m", placement=placement, activation=activation).to_dict()
    rise = val_losses[-1] / min(val_losses) if len(val_losses) > 1 else None
    return [{"run": f"r/{placement}/{activation}/{seed}", "seed": seed, "config": {**config, "seed": seed},
             "sites": placement, "precision": "float32", "test_accuracy": a - test_gap, "test_loss": 0.3,
             "train_accuracy": a, "num_classes": 10, "num_train": 3600, "steps": 348, "validation_rise": rise,
             "identical_to": None, "data_source": "d"} for seed, a in enumerate(train_accuracies)]


def test_a_control_without_a_rise_says_why():
    """Histories that start at a resume are not runs of one epoch: the reason given is theirs."""
    short = _regime_rows("none", "relu", [0.98, 0.99], [0.10])
    variants.label_rows(short)
    assert "fewer than two validation points" in "\n".join(regime.lines(regime.regime(short)))
    resumed = [{**r, "partial_history": True} for r in short]
    text = "\n".join(regime.lines(regime.regime(resumed)))
    assert "cannot tell (its histories start where a run resumed" in text and "fewer than two" not in text


def test_a_validation_set_too_small_to_show_a_rise_cannot_tell_overfitting():
    """16 validation images of a short run on a user's folder read "overfit: yes (1.778x)": a loss over 16 images
    zig-zags by more than 5% between epochs, and the final over the lowest of a noisy series is above 1 by chance;
    the same network trained longer reached 100%."""
    rows = _regime_rows("none", "relu", [0.95] * 3, [0.10, 0.18])
    for r in rows:
        r["num_validation"] = 16
    variants.label_rows(rows)
    found = regime.regime(rows)
    assert found["none_overfit"] is None and not found["none_overfit_borderline"]
    text = "\n".join(regime.lines(found))
    assert "overfit: cannot tell (its validation loss is of 16 images, too few to tell a rise from noise" in text
    assert "(its final validation loss is 1.800x its best epoch's" in text
    for r in rows:
        r["num_validation"] = 400
    assert regime.regime(rows)["none_overfit"] is True
    # A run whose rise is not averaged (none recorded: a resumed history) does not decide it by its images.
    rows[0].update(num_validation=16, validation_rise=None)
    assert regime.regime(rows)["none_overfit"] is True


def test_a_control_seed_whose_validation_loss_diverged_is_left_out_and_said():
    """A NaN rise made the mean NaN, and NaN >= 1.05 is False: "**no** (dropout had little to do) (... nanx ...)"."""
    rows = _regime_rows("none", "relu", [0.99] * 10, [0.10, 0.13])
    rows[-1]["validation_rise"] = float("nan")
    variants.label_rows(rows)
    found = regime.regime(rows)
    assert found["none_overfit"] is True and found["none_validation_rise"] == pytest.approx(1.3)
    text = "\n".join(regime.lines(found))
    assert "nan" not in text.lower() and "over 9 seeds, 9 of them at or above 1.05x; 1 seed(s) left out, whose final " \
        "validation loss is not finite (diverged)" in text
    for r in rows:  # every seed diverged: said so, not "fewer than two validation points"
        r["validation_rise"] = float("nan")
    assert "cannot tell (the final validation loss of all 10 seed(s) is not finite: they diverged)" in "\n".join(
        regime.lines(regime.regime(rows)))
    # A NaN before the best epoch is not the best epoch (min() over it gave NaN, and no rise at all).
    assert records._rise([float("nan"), 0.1, 0.13]) == pytest.approx(1.3)
    assert math.isnan(records._rise([0.1, float("nan")])) and records._rise([0.1]) is None


def test_each_none_control_is_its_own_regime_and_a_variant_at_chance_is_named():
    # One `none` per activation: pooling their validation rises would describe no network.
    rows = (_regime_rows("none", "relu", [0.98, 0.99], [0.10, 0.20])
            + _regime_rows("none", "sigmoid", [0.60, 0.70], [0.9, 0.8])
            + _regime_rows("after_activation", "sigmoid", [0.10, 0.11], [2.3, 2.3]))
    variants.label_rows(rows)
    found = regime.regime(rows)
    assert found["none_overfit"] is None and set(found["controls"]) == {"m/none", "m/none-sigmoid"}
    assert found["controls"]["m/none"]["none_overfit"] is True
    assert found["controls"]["m/none-sigmoid"]["none_overfit"] is False
    assert found["untrained"] == [("m/after_activation-sigmoid", pytest.approx(0.105), 0.1)]
    text = "\n".join(regime.lines(found))
    assert "- m/none: yes (its final validation loss is 2.000x" in text
    assert "- m/none-sigmoid: **no** (dropout had little to do)" in text
    assert "**Did not learn: m/after_activation-sigmoid** fits 10.5% of its training data" in text
    # One control, one validation point a run (a single long epoch): it cannot tell, and says so.
    # The control's test accuracy stands beside its fit: the gap is what there is to regularise.
    one = (_regime_rows("none", "relu", [0.98, 0.99], [0.1], test_gap=0.03)
           + _regime_rows("conv", "relu", [0.98, 0.99], [0.1]))
    variants.label_rows(one)
    [line] = regime.lines(regime.regime(one))
    assert line.endswith("overfit: cannot tell (fewer than two validation points a run); it fits 98.5% of its "
                         "training data (dropout off), 3.0 points above its test accuracy (95.5%).")
    # Testing better than it fits its training data: below, not "-0.3 points above".
    under = (_regime_rows("none", "relu", [0.98, 0.99], [0.1], test_gap=-0.003)
             + _regime_rows("conv", "relu", [0.98, 0.99], [0.1]))
    variants.label_rows(under)
    [line] = regime.lines(regime.regime(under))
    assert line.endswith("it fits 98.5% of its training data (dropout off), 0.3 points below its test accuracy "
                         "(98.8%).")


def test_a_planned_contrast_across_datasets_is_refused_in_one_line():
    """Pairing seeds of runs trained and tested on other data would declare a data effect a placement one."""
    rows = _rows("after_activation", [0.9, 0.91], [0.3, 0.3])
    other = _rows("none", [0.8, 0.8], [0.5, 0.51])
    for r in other:
        r["config"]["dataset"], r["data_source"] = "fashion_mnist", "fashion_mnist"
    variants.label_rows(rows + other)
    contrast = [("none-datasetfashion_mnist", "after_activation-datasetmnist")]
    with pytest.raises(ConfigError, match=r"^contrast none-datasetfashion_mnist:after_activation-datasetmnist "
                                          r"pairs runs trained or tested on different data \(fashion_mnist vs d\)"):
        contrasts.planned_pairs(rows + other, contrast)


def test_runs_scored_on_other_test_data_are_neither_pooled_nor_paired():
    """Where the data asked for could not be loaded, each run's one saved evaluation of other data was read: runs
    scored on two test sets were pooled in a variant, and paired with a baseline scored on another (+5.41 points
    called a difference where the paired truth was +0.41)."""
    rows = _rows("after_activation", [0.9, 0.91], [0.3, 0.3]) + _rows("canonical", [0.8, 0.81], [0.5, 0.5])
    for r in rows:
        r["data_sha256"] = "a" * 64 if r["config"]["placement"] == "after_activation" else "b" * 64
    variants.label_rows(rows)
    groups = records.group(rows)
    pooled_data.check_one_test_data(groups)  # each variant on one test set: fine
    with pytest.raises(ConfigError, match=r"^contrast m/after_activation:m/canonical pairs runs trained or tested on "
                                          r"different data \(d \(sha256 aaaaaaaaaaaa\.\.\.\) vs d \(sha256 "
                                          r"bbbbbbbbbbbb\.\.\.\)\)"):
        compare.baseline_pairs(rows)
    with pytest.raises(ConfigError, match=r"^contrast after_activation:canonical pairs runs trained or tested"):
        contrasts.planned_pairs(rows, [("after_activation", "canonical")])
    rows[0]["data_sha256"] = "c" * 64
    with pytest.raises(ConfigError, match=r"^m/after_activation's runs were scored on 2 different test data \(sha256 "
                                          r"aaaaaaaaaaaa\.\.\.: 1 run\(s\), e\.g\. r/after_activation/1; sha256 "
                                          r"cccccccccccc\.\.\.: 1 run\(s\), e\.g\. r/after_activation/0\), so their "
                                          r"scores cannot be pooled; score them on one: give its data flags"):
        pooled_data.check_one_test_data(records.group(rows))


def test_one_run_found_twice_is_refused_naming_both_directories():
    """A collected copy beside its sweep (--runs_dir=sweep,copy) would double every seed."""
    rows = _rows("after_activation", [0.9, 0.91], [0.3, 0.3])
    copy = [{**r, "run": "copy/" + r["run"]} for r in rows]
    variants.label_rows(rows + copy)
    pooled_data.check_each_run_once(rows)  # each seed once: fine
    with pytest.raises(ConfigError, match=r"^r/after_activation/0 and copy/r/after_activation/0 are the same "
                                          r"variant \(m/after_activation\) and seed \(0\): one run counted twice"):
        pooled_data.check_each_run_once(rows + copy)
    # The same seed trained apart (two machines): other weights, and another message and fix.
    apart = [{**r, "run": "m2/" + r["run"], "weights_sha256": f"other{r['seed']}"} for r in rows]
    variants.label_rows(rows + apart)
    with pytest.raises(ConfigError, match=r"and seed \(0\), trained apart \(other weights: two machines\?\); "
                                          r"a comparison pairs runs by seed and takes each seed once"):
        pooled_data.check_each_run_once(rows + apart)


def test_a_keras_model_file_is_one_variant_by_its_content_not_its_path():
    """Two files at one path (16 and 256 hidden units, typed into one workdir by two tasks) were pooled as one
    variant (26.55 ± 19.45); one file at two paths (two machines) split in two."""
    def runs(path, digest, machine):
        return [{**r, "run": f"{machine}/{r['run']}", "config": {**r["config"], "keras_model": path},
                 "keras_model_sha256": digest} for r in _rows("canonical", [0.128, 0.403], [2.0, 1.5])]

    one_path = variants.label_rows(runs("/m/my.keras", "a" * 64, "m1") + [
        {**r, "seed": r["seed"] + 2} for r in runs("/m/my.keras", "b" * 64, "m2")])
    assert len(records.group(one_path)) == 2
    assert {r["variant"] for r in one_path} == {"m/canonical [keras_model_sha256 aaaaaaaaaaaa]",
                                                "m/canonical [keras_model_sha256 bbbbbbbbbbbb]"}
    two_paths = variants.label_rows(runs("/home/a/my.keras", "a" * 64, "m1") + [
        {**r, "seed": r["seed"] + 2} for r in runs("/home/b/my.keras", "a" * 64, "m2")])
    assert len(records.group(two_paths)) == 1 and {r["variant"] for r in two_paths} == {"m/canonical"}


def test_a_rate_grid_over_two_models_at_one_path_names_each():
    rows = []
    for digest in "ab":
        for rate in (0.25, 0.5):
            rows += [{**r, "run": f"{digest}{rate}/{r['run']}", "keras_model_sha256": digest * 64,
                      "validation_loss": 0.3 + rate * (1 if digest == "a" else -1),
                      "config": {**r["config"], "keras_model": "/m/my.keras", "rate": rate},
                      "sites": f"d.post:{rate}"} for r in _rows("canonical", [0.9, 0.91], [0.3, 0.3])]
    grid = compare.tune_rates(variants.label_rows(rows))["grid"]
    chosen = {row["variant"]: row["rate"] for row in grid if row["selected"]}
    assert chosen == {"m/canonical [keras_model_sha256 aaaaaaaaaaaa]": 0.25,
                      "m/canonical [keras_model_sha256 bbbbbbbbbbbb]": 0.5}
    # One config whose --precision=auto resolved to two precisions on two machines: named by each.
    for r in rows:
        r.update(keras_model_sha256=None, precision="float32" if r["keras_model_sha256"] == "a" * 64 else "bf16")
    grid = compare.tune_rates(variants.label_rows(rows))["grid"]
    assert {row["variant"] for row in grid if row["selected"]} == {"m/canonical-precisionfloat32",
                                                                    "m/canonical-precisionbf16"}


def test_one_data_read_at_two_paths_is_one_variant():
    """Two machines' byte-identical .npz at other paths split into two variants of one label (each half the
    seeds); other data at two paths stays two variants, each labelled by its path."""
    def runs(path, content, first_seed):
        return [{**r, "seed": r["seed"] + first_seed, "run": f"{path}/{r['run']}", "train_sha256": content,
                 "config": {**r["config"], "npz": path, "seed": r["seed"] + first_seed}}
                for r in _rows("canonical", [0.9, 0.91], [0.3, 0.3])]

    same = variants.label_rows(runs("/a/d.npz", "c" * 64, 0) + runs("/b/d.npz", "c" * 64, 2))
    assert len(records.group(same)) == 1 and {r["variant"] for r in same} == {"m/canonical"}
    # One machine trained the baseline, the other the variant: one data, so they pair.
    apart = variants.label_rows(runs("/a/d.npz", "c" * 64, 0) + [
        {**r, "config": {**r["config"], "placement": "none"}, "sites": "none"} for r in runs("/b/d.npz", "c" * 64, 0)])
    assert len(compare.baseline_pairs(apart)) == 1
    other = variants.label_rows(runs("/a/d.npz", "c" * 64, 0) + runs("/b/d.npz", "e" * 64, 2))
    assert len(records.group(other)) == 2
    # MNIST prepared for tfds in another directory on each machine: one content, one variant (it split in two).
    tfds = [{**r, "config": {**r["config"], "npz": None, "tfds_data_dir": r["config"]["npz"]}}
            for r in runs("/a/tfds", "c" * 64, 0) + runs("/mnt/tfds", "c" * 64, 2)]
    assert len(records.group(variants.label_rows(tfds))) == 1
    assert {r["variant"] for r in other} == {"m/canonical-npzd.npz [npz /a/d.npz]",
                                             "m/canonical-npzd.npz [npz /b/d.npz]"}


def test_idx_files_read_with_and_without_the_dataset_named_are_one_variant_named_by_it():
    """Fashion-MNIST's IDX files read without --dataset record its default (mnist): beside runs that named
    fashion_mnist, one data split into two variants, one labelled `[dataset mnist]`."""
    def runs(dataset, first_seed):
        return [{**r, "seed": r["seed"] + first_seed, "run": f"{dataset}/{r['run']}", "train_sha256": "f" * 64,
                 "config": {**r["config"], "idx_dir": "/data/fashion", "dataset": dataset, "seed": r["seed"] +
                            first_seed}} for r in _rows("canonical", [0.9, 0.91], [0.3, 0.3])]

    rows = variants.label_rows(runs("mnist", 0) + runs("fashion_mnist", 2))
    assert len(records.group(rows)) == 1 and {r["variant"] for r in rows} == {"m/canonical"}
    # The variant read without --dataset pairs with its baseline read with it (one data).
    apart = variants.label_rows(runs("fashion_mnist", 0) + [
        {**r, "config": {**r["config"], "placement": "none"}, "sites": "none"} for r in runs("mnist", 0)])
    assert len(compare.baseline_pairs(apart)) == 1


def test_runs_that_record_their_train_content_pair_with_runs_from_before_it():
    # Which first run of a group recorded train_sha256 decided what "its data" was: "different data (mnist vs
    # mnist)" refused a study of older and newer runs.
    old = _rows("canonical", [0.9, 0.91], [0.3, 0.3])
    new = [{**r, "train_sha256": "c" * 64, "data_sha256": "t" * 64} for r in _rows("none", [0.88, 0.9], [0.4, 0.35])]
    rows = variants.label_rows([{**r, "data_sha256": "t" * 64} for r in old] + new)
    pairs = compare.baseline_pairs(rows)
    assert len(pairs) == 1
    contrasts.check_same_data(records.group(rows), pairs)


def test_a_contrast_of_runs_that_recorded_other_train_contents_at_one_path_is_refused():
    def runs(placement, content):
        return [{**r, "train_sha256": content, "data_sha256": "t" * 64, "config": {**r["config"], "npz": "/a/d.npz"}}
                for r in _rows(placement, [0.9, 0.91], [0.3, 0.3])]

    rows = variants.label_rows(runs("canonical", "c" * 64) + runs("none", "e" * 64))
    with pytest.raises(ConfigError, match=r"pairs runs trained or tested on different data \(d, trained on sha256 "
                                          r"eeeeeeeeeeee\.\.\. vs d, trained on sha256 cccccccccccc\.\.\.\)"):
        compare.baseline_pairs(rows)


def test_a_contrast_of_runs_that_kept_other_examples_at_one_train_size_is_refused():
    def runs(placement, subset, size=600):
        return [{**r, "train_sha256": "c" * 64, "train_subset_sha256": subset, "data_sha256": "t" * 64,
                 "config": {**r["config"], "npz": "/a/d.npz", "train_size": size}}
                for r in _rows(placement, [0.9, 0.91], [0.3, 0.3])]

    rows = variants.label_rows(runs("canonical", "6" * 64) + runs("none", "7" * 64))
    with pytest.raises(ConfigError, match=r"different data \(d, trained on sha256 cccccccccccc\.\.\. \(subset "
                                          r"777777777777\.\.\.\) vs d, trained on sha256 cccccccccccc\.\.\. "
                                          r"\(subset 666666666666\.\.\.\)\)"):
        compare.baseline_pairs(rows)
    assert len(compare.baseline_pairs(variants.label_rows(runs("canonical", "6" * 64) + runs("none", "6" * 64)))) == 1


def test_one_training_data_scored_on_two_test_sets_stays_two_variants():
    def runs(test_dir, scored):
        return [{**r, "train_sha256": "c" * 64, "data_sha256": scored, "run": f"{test_dir}/{r['run']}",
                 "config": {**r["config"], "image_dir": "/a/train", "test_image_dir": test_dir}}
                for r in _rows("canonical", [0.9, 0.91], [0.3, 0.3])]

    rows = variants.label_rows(runs("/a/test1", "1" * 64) + runs("/a/test2", "2" * 64))
    assert len(records.group(rows)) == 2
    pooled_data.check_each_run_once(rows)  # not one run counted twice


def test_one_variant_in_two_precisions_is_two_variants_and_said_so():
    """auto resolved to bf16 on one machine and float32 on another: never pooled, and never silently."""
    rows = _rows("after_activation", [0.9, 0.91], [0.3, 0.3])
    bf16 = [{**r, "run": "m2/" + r["run"], "seed": r["seed"] + 2, "precision": "mixed_bfloat16"} for r in rows]
    assert variants.split_notes(variants.label_rows(rows)) == []
    variants.label_rows(rows + bf16)
    # Labels name the precision each run resolved to, never `auto`.
    assert {r["variant"] for r in rows + bf16} == {"m/after_activation-precisionfloat32",
                                                   "m/after_activation-precisionmixed_bfloat16"}
    assert variants.split_notes(rows + bf16) == [
        "m/after_activation-precisionfloat32 and m/after_activation-precisionmixed_bfloat16 are one config whose "
        "--precision=auto resolved to 2 precisions on the machines (or environments) that trained it (float32: 2 "
        "runs; mixed_bfloat16: 2 runs), so they are compared as separate variants, never pooled; to pool seeds from "
        "several machines, train them all with one --precision (e.g. --precision=float32)"]
    assert compare.why_no_contrasts(rows + bf16, "canonical").startswith(
        "nothing to contrast: the runs here are one config, apart only in the precision --precision=auto resolved")
    # Pinned apart (a study of precision): the variants' names say it, no note needed.
    pinned = [{**r, "config": {**r["config"], "precision": r["precision"]}} for r in rows + bf16]
    variants.label_rows(pinned)
    assert variants.split_notes(pinned) == [] and len({r["variant"] for r in pinned}) == 2
    # auto resolving to one precision beside a pinned other one on the same seeds (--precision=auto,float32): a
    # choice, no note.
    chosen = [{**r, "precision": "mixed_bfloat16", "seed": r["seed"] - 2} for r in bf16] + [
        {**r, "config": {**r["config"], "precision": "float32"}} for r in rows]
    variants.label_rows(chosen)
    assert variants.split_notes(chosen) == [] and not compare.why_no_contrasts(chosen, "canonical").startswith(
        "nothing to contrast: the runs here are one config, apart only")
    with pytest.raises(ConfigError, match=r"^contrast side 'after_activation' matches no variant: its runs trained "
                                          r"in several precisions, each a variant of its own \(m/after_activation-"
                                          r"precisionfloat32, m/after_activation-precisionmixed_bfloat16\); name one"):
        contrasts.planned_pairs(variants.label_rows([dict(r) for r in pinned] + _rows("none", [0.9, 0.91], [0.3, 0.3])),
                                [("after_activation", "none")])
    # The same on seeds that differ: a study pinned to float32 whose seeds 2-3 were trained elsewhere without the pin.
    added = [{**r, "precision": "mixed_bfloat16"} for r in bf16] + [
        {**r, "config": {**r["config"], "precision": "float32"}} for r in rows]
    variants.label_rows(added)
    assert variants.split_notes(added) == [
        "m/after_activation-precisionfloat32 and m/after_activation-precisionmixed_bfloat16 are one config trained "
        "in 2 precisions on seeds that differ, 2 runs pinned by --precision and the others under --precision=auto "
        "(float32: 2 runs; mixed_bfloat16: 2 runs), so they are compared as separate variants, never pooled; to "
        "pool seeds from several machines, train them all with one --precision (e.g. --precision=float32)"]
    # Pinned float32 and float16 on seeds 0-1 (a choice), auto on 2-3 beside them; auto sharing one seed of 1-2.
    f16 = [{**r, "run": "f16/" + r["run"], "precision": "mixed_float16",
            "config": {**r["config"], "precision": "mixed_float16"}} for r in rows]
    assert "4 runs pinned by --precision" in variants.split_notes(variants.label_rows(added + f16))[0]
    shared = [{**r, "seed": r["seed"] - 1} for r in added[:2]] + added[2:]
    assert "on seeds that differ, 2 runs pinned" in variants.split_notes(variants.label_rows(shared))[0]
    # Older records name no precision: said as such, not "None".
    unknown = [{**r, "precision": None} for r in bf16] + added[2:]
    assert "(an unrecorded precision: 2 runs; float32: 2 runs)" in variants.split_notes(variants.label_rows(unknown))[0]
    # A label split for another reason (recorded sites) is not said to be split by precision.
    sited = [{**r, "sites": f"s{r['seed']}"} for r in rows]
    with pytest.raises(ConfigError, match=r"^contrast side 'after_activation' matches no variant; the variants"):
        contrasts.planned_pairs(variants.label_rows(sited + _rows("none", [0.9, 0.91], [0.3, 0.3])),
                                [("after_activation", "none")])
    # Pinned apart, canonical both: the note names them as baselines, and the fix that contrasts them.
    assert compare.why_no_contrasts(pinned, "after_activation").startswith(
        "no contrasts by default: every variant here is a `after_activation` baseline")
    # auto on a bf16 CPU and a pinned bf16: one variant, labelled as such.
    mixed = [{**r, "config": {**r["config"], "precision": "mixed_bfloat16"}} for r in bf16[:1]] + bf16[1:]
    variants.label_rows(mixed)
    assert {r["variant"] for r in mixed} == {"m/after_activation"} and variants.split_notes(mixed) == []


def test_a_comparison_of_several_directories_needs_its_own_output(tmp_path):
    with pytest.raises(ConfigError, match=r"^--runs_dir names 2 directories: give --output=DIR \(output_dir=\) for "
                                          r"their comparison \(by default a comparison goes into its one runs"):
        compare.compare_runs([str(tmp_path / "a"), str(tmp_path / "b")])


def test_an_interval_past_the_metrics_range_is_marked_and_explained():
    """Two seeds far apart: the t-interval of the accuracy runs past 100%; it is shown unclipped, and said so."""
    entry = {"variant": "m/canonical", "seeds": 2, "sites": "",
             "test_accuracy": {"mean": 0.95, "std": 0.04, "ci95": 0.36},
             "test_loss": {"mean": 0.1, "std": 0.01, "ci95": 0.09}}
    text = "\n".join(report.variants_markdown([entry]))
    assert "[59.00, 131.00]†" in text and "[0.0100, 0.1900] |" in text
    assert "† The 95% t-interval runs past the values the metric can take" in text
    within = {**entry, "test_accuracy": {"mean": 0.95, "std": 0.001, "ci95": 0.01}}
    assert "†" not in "\n".join(report.variants_markdown([within]))
    below = {**within, "test_loss": {"mean": 0.1, "std": 0.1, "ci95": 0.9}}
    assert "[-0.8000, 1.0000]†" in "\n".join(report.variants_markdown([below]))


def test_contrasts_csv_says_each_metrics_unit(tmp_path):
    rows = _rows("after_activation", [0.95, 0.96, 0.97], [0.1, 0.11, 0.12])
    rows += _rows("none", [0.94, 0.96, 0.96], [0.12, 0.11, 0.13])
    variants.label_rows(rows)
    table = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("none", "after_activation")]),
                                   report.DEFAULT_MARGINS)
    path = str(tmp_path / "contrasts.csv")
    report.write_contrasts_csv(path, table)
    with open(path) as f:
        written = {r["metric"]: r for r in csv.DictReader(f)}
    assert written["test_accuracy"]["unit"] == "fraction" and written["test_loss"]["unit"] == "nats"
    assert float(written["test_accuracy"]["difference"]) == pytest.approx(-0.02 / 3)


def test_a_comparison_without_contrasts_says_why_and_the_fix():
    one = _rows("after_activation", [0.95, 0.96], [0.1, 0.11])
    variants.label_rows(one)
    assert compare.baseline_pairs(one, "canonical") == []
    assert compare.why_no_contrasts(one, "canonical") == (
        "nothing to contrast: every run here is one variant (m/after_activation); give --runs_dir a sweep over "
        "placements, or several directories")
    two = one + _rows("none", [0.94, 0.95], [0.12, 0.13])
    variants.label_rows(two)
    assert compare.baseline_pairs(two, "canonical") == []  # neither is the baseline
    assert compare.why_no_contrasts(two, "canonical").startswith(
        "no contrasts: no variant has a `canonical` baseline of its own kind")
    assert compare.why_no_contrasts(two, "canonical").endswith("pass --baseline=PLACEMENT or --contrasts=A:B")


def test_one_difference_at_every_seed_claims_no_certainty():
    # The same +0.01 points at both seeds (up to float rounding) was "differs (+0.01), within ±0.5 points",
    # with a zero-width interval and an MDE of 0, from two seeds.
    rows = _rows("a", [0.9601, 0.9551], [0.1, 0.2]) + _rows("b", [0.9600, 0.9550], [0.11, 0.25])
    variants.label_rows(rows)
    [entry] = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("a", "b")]), report.DEFAULT_MARGINS)
    flat = entry["test_accuracy"]
    assert flat["no_spread"] and flat["p"] == 0.5 and flat["p_tost"] == 0.25
    assert flat["verdict"] == [stats.INCONCLUSIVE]
    assert math.isnan(flat["ci_low"]) and math.isnan(flat["mde"])
    assert ("| m/a - m/b | 2 | +0.01 | no spread | — | inconclusive (one difference at every seed: see the notes) |"
            in "\n".join(report.contrasts_markdown([entry])))
    [note] = contrasts.contrast_notes([entry])
    assert note.startswith("m/a - m/b: the 2 seeds' differences in accuracy are all +0.01 points, so there is no "
                           "t interval; its tests are exact sign-flip tests")
    assert "(difference p = 2/2^2, equivalence 1/2^2, against α = 0.05" in note
    # No difference at all, at every seed: p = 1, not the sign-flip floor the note used to state.
    rows = _rows("a", [0.96] * 8, [0.1] * 8) + _rows("b", [0.96] * 8, [0.1] * 8)
    variants.label_rows(rows)
    [entry] = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("a", "b")]), report.DEFAULT_MARGINS)
    assert entry["test_accuracy"]["p"] == 1.0
    assert "(difference p = 1 (no difference), equivalence 1/2^8, against" in contrasts.contrast_notes([entry])[0]
    # Six seeds of one difference: the sign-flip test reaches 2/64 < 0.05.
    rows = _rows("a", [0.9601] * 6, [0.1] * 6) + _rows("b", [0.96] * 6, [0.11] * 6)
    variants.label_rows(rows)
    [entry] = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("a", "b")]), report.DEFAULT_MARGINS)
    assert entry["test_accuracy"]["p"] == 2 / 64 and entry["test_accuracy"]["verdict"] == [stats.DIFFERS,
                                                                                            stats.EQUIVALENT]
    assert contrasts.contrast_notes([entry])[0].endswith("against α = 0.05: 'differs' needs 6 seeds, "
                                                         "'equivalent' 5)")
    # Two contrasts: Holm's first step is at α/m = 0.025, where 'differs' needs 7 seeds, its last at 0.05 (the note
    # said 6 at 0.05 whatever m was; then 7 at α/m, where Holm's later steps take 6).
    rows += _rows("c", [0.9602] * 6, [0.12] * 6)
    variants.label_rows(rows)
    table = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("a", "b"), ("c", "b")]),
                                     report.DEFAULT_MARGINS)
    assert table[0]["test_accuracy"]["verdict"] == [stats.EQUIVALENT]  # differs: 2/64 > 0.025, equivalent: 1/64
    assert contrasts.contrast_notes(table)[0].endswith(
        "against Holm's thresholds, α/m = 0.025 at its first step up to α = 0.05 at its last: 'differs' needs 7 seeds "
        "at the first step, 6 at the last; 'equivalent' 6 and 5)")


def test_seeds_without_a_partner_or_a_finite_score_are_named():
    # A NaN made the contrast "+nan ... inconclusive" without a word, and unequal seed sets were
    # intersected silently.
    rng = np.random.default_rng(5)
    base = 0.95 + rng.normal(0, 0.002, 8)
    losses = 0.1 + rng.normal(0, 0.01, 8)
    rows = _rows("a", base + rng.normal(0.001, 0.001, 8), losses + rng.normal(0, 0.005, 8))
    rows += [r for r in _rows("b", base, np.where(np.arange(8) == 2, np.nan, losses)) if r["seed"] < 6]
    rows += _rows("c", base + rng.normal(0, 0.002, 8), losses + rng.normal(0.01, 0.005, 8))
    variants.label_rows(rows)
    pairs = contrasts.planned_pairs(rows, [("a", "b"), ("c", "a")])
    table = contrasts.contrast_table(rows, pairs, report.DEFAULT_MARGINS)
    # The diverged seed is left out of accuracy too (NaN probabilities score an accuracy by argmax)...
    assert table[0]["test_accuracy"]["n"] == 5 and table[0]["test_loss"]["n"] == 5
    assert np.isfinite(table[0]["test_loss"]["difference"])
    assert contrasts.contrast_notes(table) == [
        "m/a - m/b is paired over the seeds both variants have a finite score for; left out: seeds 6–7 of m/a "
        "(no run of the other variant); seed 2 of m/b (test_loss nan, diverged: left out of every metric)"]
    # ... and no verdict rests on the seeds that did not diverge.
    assert table[0]["diverged"] == {"m/b": [2]} and table[1]["diverged"] == {}
    for metric, contrasted in zip(report.DEFAULT_MARGINS, report.CONTRASTS):
        assert table[0][metric]["verdict"] == [stats.INCONCLUSIVE]
        assert report.verdict_text(table[0][metric], contrasted) == (
            "inconclusive (m/b diverged on seed 2: no verdict on the seeds that did not)")
    # One Holm family, one m: the MDE's alpha / m counts the contrasts Holm counts.
    assert table[1]["test_loss"]["mde"] == pytest.approx(stats.minimum_detectable_effect(
        table[1]["test_loss"]["sd"], 8, 0.05 / 2))
    # The variants' means leave the non-finite score out too.
    b = next(e for e in compare.summarise(rows) if e["variant"] == "m/b")
    assert np.isfinite(b["test_loss"]["mean"])
    # Every seed of a variant diverged: the verdict says so (it said "needs 2 or more seeds": more would not help).
    rows = _rows("a", base[:3], losses[:3]) + _rows("b", base[:3], [np.nan] * 3)
    variants.label_rows(rows)
    [entry] = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("a", "b")]), report.DEFAULT_MARGINS)
    assert entry["test_accuracy"]["n"] == 0
    assert "| m/a - m/b | 0 |  |  |  | inconclusive (m/b diverged on seeds 0–2) |" in report.contrasts_markdown(
        [entry])[2]


def test_a_seed_without_a_difference_does_not_lower_the_sign_flip_floor():
    """A tie is the same flipped: five seeds of +1 image and a sixth of 0 were floored at 2/2^6 and *differed*,
    where the exact sign-flip test over them gives 2/2^5 (the five alone: inconclusive)."""
    base = np.full(6, 0.98)
    five = stats.paired_p_value(base[:5] + 1e-4 * np.array([1, 1, 1, 1, 2]), base[:5])
    six = stats.paired_p_value(base + 1e-4 * np.array([1, 1, 1, 1, 2, 0]), base)
    assert five == six == 2 / 2**5
    assert stats.paired_p_value(base + 1e-4 * np.array([1, 1, 1, 1, 2, 1]), base) == 2 / 2**6
    # Equivalence: a seed on the margin (50 of 10,000 images at ±0.5 points) is a tie of that side's test.
    on_margin = np.array([0.9862 - 0.9812, 0.001, 0.002, 0.003, 0.0015, 0.0025])
    assert stats.tost_paired_p(on_margin, 0.005) == 1 / 2**5
    assert stats.tost_paired_p(np.array([0.004, 0.001, 0.002, 0.003, 0.0015, 0.0025]), 0.005) == 1 / 2**6


@pytest.mark.parametrize("margins,message", [
    ({"test_accuracy": 0.5}, "margins: the test_accuracy margin is a fraction (0.005 is half a point) below 0.1, "
                             "got 0.5 (50 points)"),
    ({"test_acc": 0.005}, "margins: unknown metric 'test_acc'; the contrasted metrics are test_accuracy, test_loss"),
    ({"test_loss": 0}, "margins: the test_loss margin must be a positive number, got 0"),
    ({"test_loss": float("inf")}, "margins: the test_loss margin must be a positive number, got inf"),
    ({"test_loss": "0.02"}, "margins: the test_loss margin must be a positive number, got 0.02"),
    ([("test_loss", 0.02)], "margins: give a dict {metric: margin}, e.g. {'test_accuracy': 0.005}, got list"),
    ({"test_accuracy": 0.00005}, "margins: the test_accuracy margin is a fraction (0.005 is half a point) of at "
                                 "least 0.0001 (one image in 10,000), got 5e-05"),
    ({"test_loss": 1.5}, "margins: the test_loss margin is in nats (0.015 by default), below 1: equivalence within "
                         "1.5 nats says nothing, got 1.5"),
])
def test_margins_in_the_wrong_units_are_refused(margins, message):
    with pytest.raises(ConfigError) as info:
        contrasts.check_margins(margins)
    assert str(info.value) == message


def test_planned_contrasts_are_pairs_of_names_or_eval_spelling():
    assert contrasts.check_contrasts([("a", "b"), "c:d", ["e", "f"]]) == [("a", "b"), ("c", "d"), ("e", "f")]
    assert contrasts.check_contrasts("a : b, c:d") == [("a", "b"), ("c", "d")]  # eval.py's --contrasts, one string
    assert contrasts.check_contrasts(None) == []
    for bad in (["a"], [("a", "b", "c")], [("a", 1)], ["a:"], [None], ["a:b:c"], "", "a:b,"):
        with pytest.raises(ConfigError, match=r"^(contrasts: give \(A, B\) pairs of variant names, e\.g\. |"
                                              r"malformed contrast '.*'; write A:B)"):
            contrasts.check_contrasts(bad)


def test_a_metric_left_out_of_the_margins_keeps_its_default():
    """One margin given (the API's margins={"test_accuracy": 0.01}): the other keeps its default; a comparison
    given only one ended in a KeyError after every run was scored."""
    assert contrasts.check_margins({"test_accuracy": 0.01}) == {"test_accuracy": 0.01,
                                                                "test_loss": report.DEFAULT_MARGINS["test_loss"]}
    assert contrasts.check_margins({}) == report.DEFAULT_MARGINS


@pytest.mark.parametrize("margin", ["50", "0.005"])
def test_eval_refuses_a_margin_in_the_wrong_units(tmp_path, eval_main, capsys, margin):
    assert eval_main(f"--runs_dir={tmp_path}", f"--margin={margin}") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --margin is in accuracy points, from 0.01 (one image in 10,000) to below 10, got {margin}: e.g. "
        "--margin=0.5 for half a point")
    assert eval_main(f"--runs_dir={tmp_path}", "--nll_margin=1.5") == 2  # 1.5 for 0.015: every verdict "equivalent"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --nll_margin is in nats, below 1 (equivalence within more says nothing), got 1.5: e.g. "
        "--nll_margin=0.015")


@pytest.mark.parametrize("args,message", [
    (["--collect={tmp}/copy"], "--collect applies only with --runs_dir (a comparison of runs); drop it to score one "
                               "export"),
    (["--contrasts=a:b", "--margin=1"], "--contrasts applies only with --runs_dir (a comparison of runs); drop it to "
                                        "score one export"),
    (["--accuracy_below=95"], "--accuracy_below applies only with --runs_dir (a comparison of runs); drop it to "
                              "score one export"),
])
def test_comparison_flags_scoring_one_export_are_refused_not_ignored(tmp_path, eval_main, capsys, args, message):
    """eval.py --saved_model=... --collect=DIR exited 0 having copied nothing; --contrasts and the margins were
    ignored as silently."""
    assert eval_main(f"--saved_model={tmp_path}", *[a.format(tmp=tmp_path) for a in args]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"
    assert not (tmp_path / "copy").exists()
    assert eval_main(f"--runs_dir={tmp_path}", f"--collect={tmp_path}/copy", "--mc_samples=20") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --collect copies the runs' records and compares nothing, so --mc_samples would be ignored; collect "
        f"first, then compare with python eval.py --runs_dir={tmp_path}/copy")
    assert eval_main(f"--runs_dir={tmp_path}", f"--collect={tmp_path}/copy", "--ood_idx_dir=/nonexistent") == 2
    assert "so --ood_idx_dir would be ignored" in capsys.readouterr().err


def test_a_control_near_the_overfit_threshold_is_called_borderline():
    # A mean rise of 1.048x over seeds from 1.02x to 1.08x read "**no** (dropout had little to do)".
    rows = _regime_rows("none", "relu", [0.99] * 5, [0.10, 0.11])
    for r, rise in zip(rows, [1.02, 1.07, 1.03, 1.08, 1.04]):
        r["validation_rise"] = rise
    variants.label_rows(rows)
    found = regime.regime(rows)
    assert found["none_overfit"] is False and found["none_overfit_borderline"] is True
    assert found["none_rise_seeds"] == [2, 5]
    text = "\n".join(regime.lines(found))
    assert "overfit: borderline, no by its mean (its final validation loss is 1.048x its best epoch's, 95% CI " \
           "[1.016, 1.080] over 5 seeds, 2 of them at or above 1.05x; overfitting means ≥ 1.05x)" in text
    for r in rows:  # clearly below: a plain no
        r["validation_rise"] = 1.0 + r["seed"] * 0.001
    assert not regime.regime(rows)["none_overfit_borderline"]
    assert "overfit: **no** (dropout had little to do)" in "\n".join(regime.lines(regime.regime(rows)))
    for r, rise in zip(rows, [1.0, 1.0, 1.0, 1.0, 1.6]):  # one seed far up: the interval runs below 1, shown so
        r["validation_rise"] = rise
    assert "95% CI [0.787, 1.453] (unclipped: the ratio is at least 1) over 5 seeds" in \
        "\n".join(regime.lines(regime.regime(rows)))


def test_no_spread_reaches_the_size_curves_and_non_finite_scores_are_named():
    rows = _sized_rows("none", 250, [0.90, 0.91, 0.92]) + _sized_rows("conv", 250, [0.91, 0.92, 0.93])
    rows += _sized_rows("none", 1000, [0.95, 0.96, 0.94]) + _sized_rows("conv", 1000, [0.951, 0.962, 0.95])
    variants.label_rows(rows)
    tested = contrasts.contrast_table(rows, contrasts.planned_pairs(
        rows, [(f"conv-train_size{s}", f"none-train_size{s}") for s in (250, 1000)]), report.DEFAULT_MARGINS)
    curve = sizes_report.curve(rows, compare.summarise(rows), tested)
    text = sizes_report.markdown(curve, report.COLUMNS[0], report.CONTRASTS, report.cell, report.verdict_text,
                                 report.seeds_text)
    assert "+1.00 (no spread)" in text and "nan" not in text
    # One seed paired at a size: no interval, as the comparison's table says (it printed "[+nan, +nan] | inconclusive")
    one = [r for r in rows if not (r["variant"] == "m/none-train_size250" and r["seed"])]
    tested = contrasts.contrast_table(one, contrasts.planned_pairs(
        one, [(f"conv-train_size{s}", f"none-train_size{s}") for s in (250, 1000)]), report.DEFAULT_MARGINS)
    text = sizes_report.markdown(sizes_report.curve(one, compare.summarise(one), tested), report.COLUMNS[0],
                                 report.CONTRASTS, report.cell, report.verdict_text, report.seeds_text)
    assert "| +1.00 | needs 2 or more seeds | -0.0100 | needs 2 or more seeds |" in text and "nan" not in text
    rows[0]["test_loss"] = float("nan")
    assert compare.non_finite_notes(rows) == [
        "seed 0 of m/none-train_size250 scores test_loss nan: left out of the variant's test_loss mean and of its "
        "contrasts (its other columns' means keep the run's finite scores, a diverged run's accuracy too)"]


def test_the_variants_table_gives_no_interval_without_spread_and_counts_the_seeds_of_each_mean():
    rows = _rows("canonical", [0.96, 0.96, 0.96, 0.96], [0.1, 0.2, float("nan"), 0.3])
    variants.label_rows(rows)
    entry, = compare.summarise(rows)
    text = "\n".join(report.variants_markdown([entry]))
    # Four seeds of 96.00%: a zero-width interval would claim the mean known exactly.
    assert "96.00 ± 0.00 |  |" in text and "[96.00, 96.00]" not in text
    # One seed's NLL diverged: the mean is over the other three, and the cell says so.
    assert entry["test_loss"]["n"] == 3 and "0.2000 ± 0.1000 (3 of 4 seeds)" in text


def test_identical_variants_stay_identical_with_more_seeds_of_one_of_them():
    # before_activation is canonical by construction on seeds 0-1; seeds 2-3 of canonical pooled from elsewhere.
    rows = _rows("canonical", [0.95, 0.96, 0.94, 0.97], [0.1, 0.11, 0.12, 0.1])
    twins = _rows("before_activation", [0.95, 0.96], [0.1, 0.11])
    for twin, trained in zip(twins, rows):
        twin["identical_to"] = trained["run"]
    rows += twins
    variants.label_rows(rows)
    entry, = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("before_activation", "canonical")]),
                                      report.DEFAULT_MARGINS)
    assert entry["identical"] and entry["test_accuracy"] is None
    twins[1]["identical_to"] = None  # seed 1 trained on its own: not one network on every paired seed
    entry, = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("before_activation", "canonical")]),
                                      report.DEFAULT_MARGINS)
    assert not entry["identical"]


def test_runs_of_several_code_versions_are_said_to_be_pooled():
    rows = _rows("canonical", [0.95, 0.96, 0.94], [0.1, 0.11, 0.12])
    assert compare.code_notes(rows) == []  # older records name no version
    for r, code in zip(rows, ["a" * 40, "a" * 40, "b" * 40 + "+changes"]):
        r["code"] = code
    assert compare.code_notes(rows) == [
        "the runs were trained by 2 versions of this code (aaaaaaaaaaaa: 2 runs, bbbbbbbbbbbb+changes: 1 run); "
        "their variants pool only where those versions build the same networks and masks (the mask generator is "
        "checked; the rest is not)"]
    copies = [{**r, "run": r["run"] + "-copy", "identical_to": r["run"]} for r in rows]  # recorded, not trained
    assert "(aaaaaaaaaaaa: 2 runs, bbbbbbbbbbbb+changes: 1 run)" in compare.code_notes(rows + copies)[0]
    # Other TensorFlow or Keras versions (the study's seeds pair by their initial weights and masks): said too.
    metrics = {"config": {"seed": 0}, "versions": {"tensorflow": "2.21.0", "keras": "3.15.1", "dropout_zoo": "a" * 40}}
    assert records.row("r", metrics, {"accuracy": 0.9, "loss": 0.3}, "d", "r")["frameworks"] == (
        "tensorflow 2.21.0, keras 3.15.1")
    for r, frameworks in zip(rows, ["tensorflow 2.21.0, keras 3.15.1"] * 2 + ["tensorflow 2.16.1, keras 3.3.3"]):
        r["code"], r["frameworks"] = "a" * 40, frameworks
    assert compare.code_notes(rows) == [
        "the runs were trained under 2 versions of the frameworks (tensorflow 2.16.1, keras 3.3.3: 1 run; "
        "tensorflow 2.21.0, keras 3.15.1: 2 runs); a seed pairs runs of one start only where they draw the same "
        "initial weights and masks: train a study's seeds under one version (a pinned environment), or check the "
        "pairs apart"]


def test_a_run_resumed_without_its_earlier_sessions_times_has_no_training_time_in_the_table():
    """Older resumed records timed their last session only: a variant's mean train time mixed them with whole runs
    (0.036 s beside 150 s). Left out, and the cell says over how many seeds."""
    result = {"accuracy": 0.9, "loss": 0.3}
    older = {"config": {"seed": 0}, "train_time_sec": 0.036, "resumed_from_epoch": 19}
    assert records.row("r", older, result, "d", "r")["train_time_sec"] is None
    summed = {**older, "train_time_sec": 150.0, "history_from_epoch": 0}  # today's: every session's epochs summed
    assert records.row("r", summed, result, "d", "r")["train_time_sec"] == 150.0
    rows = _rows("canonical", [0.95, 0.96, 0.94], [0.1, 0.11, 0.12])
    for r, seconds in zip(rows, [100.0, 120.0, None]):
        r["train_time_sec"] = seconds
    variants.label_rows(rows)
    entry = compare.summarise(rows)[0]
    column = next(c for c in report.COLUMNS if c.metric == "train_time_sec")
    assert report.cell(entry, column) == "110.0 ± 14.1 (2 of 3 seeds)"


def test_seeds_trained_on_several_numbers_of_replicas_are_said_to_be_pooled():
    metrics = {"config": {"seed": 0}, "strategy": {"name": "mirrored", "num_replicas": 2, "num_workers": 1}}
    result = {"accuracy": 0.9, "loss": 0.3}
    assert records.row("r", metrics, result, "d", "r")["replicas"] == 2
    one = records.row("r", {**metrics, "strategy": {"name": "default", "num_replicas": 1}}, result, "d", "r")
    assert "replicas" not in one  # runs.json of one-replica runs is as before
    rows = _rows("canonical", [0.95, 0.96, 0.94], [0.1, 0.11, 0.12]) + _rows("none", [0.9, 0.91], [0.2, 0.21])
    variants.label_rows(rows)
    assert compare.replica_notes(rows) == []
    rows[0]["replicas"] = rows[1]["replicas"] = 2
    assert compare.replica_notes(rows) == [
        "m/canonical pools seeds trained on 2 numbers of replicas (1 replica: 1 run; 2 replicas: 2 runs): "
        "each replica draws its own masks, alike in distribution, so plain dropout networks pool; with BatchNorm "
        "each replica normalises by its own share of the batch, so compare those apart"]
    rows[3]["replicas"] = 2
    assert compare.replica_notes(rows)[1] == (
        "m/none pools seeds trained on 2 numbers of replicas (1 replica: 1 run; 2 replicas: 1 run): it has no "
        "dropout, and its replicas step as one batch up to rounding, so a plain network pools; with BatchNorm each "
        "replica normalises by its own share of the batch, so compare those apart")


def test_a_test_set_coarser_than_the_margin_and_an_mde_past_the_metrics_range_are_said():
    rows = _rows("canonical", [0.95, 0.96], [0.1, 0.11])
    for r in rows:
        r["num_examples"] = 10_000
    assert compare.resolution_notes(rows, report.DEFAULT_MARGINS) == []
    rows[1]["num_examples"] = 36
    assert compare.resolution_notes(rows, report.DEFAULT_MARGINS) == [
        "the smallest test data here has 36 images, so one image moves accuracy by 2.78 points, more than the "
        "±0.5-point margin: the intervals count the seeds' spread only, not how few images decide each score; test "
        "on more images for an answer at this margin"]
    accuracy, nll = report.CONTRASTS
    wide = {"verdict": [stats.INCONCLUSIVE], "mde": 2.7198, "n": 2, "margin": 0.005}
    assert report.verdict_text(wide, accuracy) == ("inconclusive (could detect only ≥ 271.98 points, past any "
                                                   "possible difference)")
    assert report.verdict_text({**wide, "mde": 2.7198}, nll) == "inconclusive (could detect ≥ 2.7198 nats)"
    assert report.verdict_text({**wide, "mde": float("inf")}, accuracy) == "inconclusive (2 seeds cannot reach α/m)"


def test_a_contrasts_seeds_are_shown_per_metric_where_they_differ():
    # A diverged seed scores a finite accuracy (argmax of NaN) but a NaN NLL: one contrast pairs fewer seeds.
    assert report.seeds_text({"test_accuracy": {"n": 30}, "test_loss": {"n": 29}}) == "accuracy 30, NLL 29"
    assert report.seeds_text({"test_accuracy": {"n": 30}, "test_loss": {"n": 30}}) == "30"
    assert report.seeds_text({"test_accuracy": None, "test_loss": None}) == ""  # identical by construction


def test_a_variant_that_diverged_on_some_seeds_is_not_called_equivalent_on_the_others():
    """Its NLL was paired over the survivors and read 'equivalent within ±0.015 nats' for a variant whose
    probabilities were NaN on a fifth of its seeds (their accuracy, argmax of NaN, stayed in the other metric)."""
    rng = np.random.default_rng(1)
    accuracy, loss = 0.965 + rng.normal(0, 0.004, 20), 0.11 + rng.normal(0, 0.01, 20)
    diverged = np.arange(20) < 4
    rows = _rows("a", np.where(diverged, 0.098, accuracy + rng.normal(0, 0.0005, 20)),
                 np.where(diverged, np.nan, loss + rng.normal(0, 0.002, 20)))
    rows += _rows("b", accuracy, loss)
    variants.label_rows(rows)
    [entry] = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("a", "b")]), report.DEFAULT_MARGINS)
    assert entry["test_accuracy"]["n"] == entry["test_loss"]["n"] == 16
    assert entry["test_loss"]["p_tost_holm"] < 0.05  # the survivors alone are equivalent...
    text = "\n".join(report.contrasts_markdown([entry]))
    assert "equivalent" not in text and text.count("inconclusive (m/a diverged on seeds 0–3: ") == 2
    # Contrasting accuracy alone (the API's margins), the NaN NLL still says the seeds diverged.
    [alone] = contrasts.contrast_table(rows, contrasts.planned_pairs(rows, [("a", "b")]), {"test_accuracy": 0.005})
    assert alone["diverged"] == {"m/a": [0, 1, 2, 3]} and alone["test_accuracy"]["n"] == 16


def test_equivalence_at_exactly_the_margin_is_not_inside_it_by_rounding():
    # 50 more images right in 10,000 at every seed is a difference of exactly 0.005: not within ±0.005.
    inside = [stats.tost_paired_p(np.full(8, (a + 50) / 1e4 - a / 1e4), 0.005) < 1 for a in range(9000, 9950)]
    assert not any(inside)
    assert stats.tost_paired_p(np.full(8, 49 / 1e4), 0.005) == 1 / 256


def test_few_seeds_say_which_test_they_cannot_reach():
    """'5 seeds cannot reach α/m' stood beside the same 5 seeds' equivalence verdict: a difference needs
    2/2^n < α/m, equivalence 1/2^n < α/m."""
    result = stats.paired_contrast([0.95, 0.96, 0.94, 0.97, 0.95], [0.95, 0.95, 0.95, 0.95, 0.95], 0.005, 0.05)
    assert result["mde"] == np.inf and result["equivalence_reachable"]
    assert report.verdict_text({**result, "verdict": [stats.INCONCLUSIVE], "margin": 0.005}, report.CONTRASTS[0]) \
        == "inconclusive (5 seeds, 2 tied, cannot reach α/m for a difference; equivalence not shown)"
    few = stats.paired_contrast([0.95, 0.96, 0.94, 0.97], [0.95] * 4, 0.005, 0.05 / 4)
    assert report.verdict_text({**few, "verdict": [stats.INCONCLUSIVE], "margin": 0.005}, report.CONTRASTS[0]) \
        == "inconclusive (4 seeds, 1 tied, cannot reach α/m)"
    # Six seeds, one tied: five move the p (2/2^5 > 0.05), so no MDE: "could detect ≥ 1.47 points" stood beside an
    # undetected +2.06. Equivalence counts each side's seeds off the margin likewise.
    base = np.full(6, 0.9)
    tied = stats.paired_contrast(base + np.array([0.0239, 0.0246, 0.0278, 0.0235, 0.0238, 0]), base, 0.005, 0.05)
    assert (tied["p"], tied["mde"], tied["untied"]) == (2 / 2**5, np.inf, 5)
    assert report.verdict_text({**tied, "verdict": [stats.INCONCLUSIVE], "margin": 0.005}, report.CONTRASTS[0]) \
        == "inconclusive (6 seeds, 1 tied, cannot reach α/m for a difference; equivalence not shown)"
    untied = stats.paired_contrast(base + np.array([0.0239, 0.0246, 0.0278, 0.0235, 0.0238, 0.01]), base, 0.005, 0.05)
    assert np.isfinite(untied["mde"]) and untied["untied"] == 6
    four_on_margin = stats.paired_contrast(base + np.array([0.005] * 4 + [0.001, 0.002]), base, 0.005, 0.05)
    assert not four_on_margin["equivalence_reachable"]  # two seeds off the upper margin: 1/2^2


def test_a_comparisons_several_test_data_are_told_apart():
    """'Test data: images:A, images:A, tested on B' read as one source."""
    assert report._test_data([{"data_source": "mnist"}] * 2) == "mnist"
    assert report._test_data([{"data_source": "images:A, tested on B"}, {"data_source": "images:A"}]) == (
        "2 sets, [images:A] and [images:A, tested on B]")


def test_a_comparison_says_the_precision_its_runs_trained_in_and_tensorboard_shows_it_not_auto(tmp_path):
    """Runs of `--precision=auto` on two CPUs were listed in HParams as precision 'auto' (or without the column),
    and comparison.md never said what precision its runs trained in."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    rows = _rows("canonical", [0.9, 0.91], [0.3, 0.3])
    assert descriptive.trained_in(rows) == "float32"
    bf16 = [{**r, "run": "m2/" + r["run"], "seed": r["seed"] + 2, "precision": "mixed_bfloat16"} for r in rows]
    assert descriptive.trained_in(rows + bf16 + [{}]) == (
        "an unrecorded precision (1) and float32 (2) and mixed_bfloat16 (2)")
    report.write_hparams(str(tmp_path), variants.label_rows(rows + bf16))
    [root] = glob.glob(os.path.join(tmp_path, "events.out.tfevents.*"))
    experiment = next(plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content).experiment
                      for event in tf.compat.v1.train.summary_iterator(root) for v in event.summary.value
                      if v.tag == "_hparams_/experiment")
    domains = {info.name: {value.string_value for value in info.domain_discrete.values}
               for info in experiment.hparam_infos}
    assert all(r["config"]["precision"] == "auto" for r in rows + bf16)
    assert domains["precision"] == {"float32", "mixed_bfloat16"}


def test_a_variant_without_a_baseline_of_its_own_is_named_with_the_nearest_baseline():
    """Runs of two directories, one variant's baseline on other data only: it was left out of the contrasts
    without a word while the others were tested."""
    rows = _rows("canonical", [0.95, 0.96], [0.1, 0.11]) + _rows("none", [0.94, 0.95], [0.12, 0.13])
    other = _rows("after_activation", [0.93, 0.94], [0.14, 0.15])
    for r in other:
        r["config"]["dataset"], r["data_source"] = "fashion_mnist", "fashion_mnist"
    variants.label_rows(rows + other)
    notes = []
    pairs = compare.baseline_pairs(rows + other, "canonical", notes)
    assert len(pairs) == 1
    assert notes == ["m/after_activation-datasetfashion_mnist - canonical is not tested: no `canonical` run differs "
                     "from it only in placement (the nearest, m/canonical-datasetmnist, has dataset 'mnist' where it "
                     "has 'fashion_mnist'); train `canonical` runs like it, or plan the contrast with --contrasts=A:B"]
    notes = []
    assert compare.baseline_pairs(other, "canonical", notes) == [] and notes == []  # none at all: why_no_contrasts


def test_a_control_with_seeds_resumed_from_older_records_says_how_many_its_rise_leaves_out():
    """'over 28 seeds' for a 30-seed control, the two whose histories start at a resume left out without a word."""
    rows = _regime_rows("none", "relu", [0.99] * 5, [0.10, 0.11])
    for r, rise in zip(rows, [1.2, 1.3, 1.25, None, 1.22]):
        r["validation_rise"] = rise
        r["partial_history"] = rise is None
    variants.label_rows(rows)
    found = regime.regime(rows)
    assert found["none_rise_seeds"] == [4, 4] and found["none_rise_partial"] == 1
    assert ("over 4 seeds, 4 of them at or above 1.05x; 1 seed(s) left out, whose histories start where a run "
            "resumed (the earlier epochs' validation losses were not recorded)") in "\n".join(regime.lines(found))


def test_a_rate_grid_says_the_control_without_dropout_chose_no_rate():
    """The control of a rate sweep, one network at every rate, was labelled none-rate0.2 and shown as 'chosen'."""
    rows = []
    for rate in (0.2, 0.5):
        for placement, sites in (("canonical", f"d.post:{rate}"), ("none", "")):
            rows += [{**r, "run": f"{rate}/{r['run']}", "validation_loss": 0.3 + rate, "sites": sites,
                      "config": {**r["config"], "rate": rate}} for r in _rows(placement, [0.9, 0.91], [0.3, 0.3])]
    tuned = compare.tune_rates(variants.label_rows(rows))
    table = rates_report.markdown(tuned["grid"])
    assert "| m/none | 0.2 = |" in table and "| m/none | 0.5 = |" in table and "| m/canonical | 0.2 * |" in table
    notes = tuned["notes"]
    assert notes == ["m/none-rate0.2 has no dropout sites: its rates are one network (trained once), so the rate its "
                     "label carries was not chosen by anything; it stands for every rate"]


def test_a_rate_grids_control_keeps_its_seeds_at_every_rate():
    """The control was taken at the grid's lowest rate: seeds trained later at the chosen rate alone (the docs'
    confirmatory --rate=R --seed=N) were left out of its mean and contrasts, as 'no run of the other variant'."""
    rows = []
    for rate, seeds in ((0.2, 3), (0.5, 5)):
        for placement, sites in (("canonical", f"d.post:{rate}"), ("none", "")):
            loss = 0.3 + (0.5 - rate) if placement == "canonical" else 0.3  # 0.5 chosen for canonical
            made = _rows(placement, [0.9 + 0.001 * k for k in range(seeds)], [0.3] * seeds)
            rows += [{**r, "run": f"{rate}/{r['run']}", "validation_loss": loss, "sites": sites,
                      "config": {**r["config"], "rate": rate}} for r in made]
    compared = compare.at_selected_rates(variants.label_rows(rows), compare.tune_rates(rows))
    none = sorted((r["seed"], r["config"]["rate"], r["variant"]) for r in compared if not r["sites"])
    assert none == [(0, 0.2, "m/none-rate0.2"), (1, 0.2, "m/none-rate0.2"), (2, 0.2, "m/none-rate0.2"),
                    (3, 0.5, "m/none-rate0.2"), (4, 0.5, "m/none-rate0.2")]  # each seed once, one variant
    assert sorted(r["seed"] for r in compared if r["sites"]) == [0, 1, 2, 3, 4]
    (entry,) = contrasts.contrast_table(compared, [(next(r["key"] for r in compared if not r["sites"]),
                                                    next(r["key"] for r in compared if r["sites"]))],
                                        {"test_accuracy": 0.005})
    assert entry["test_accuracy"]["n"] == 5 and entry["left_out"] == []


def test_a_contrast_side_at_a_rate_validation_did_not_choose_says_so():
    """'matches no variant' was said of a variant whose directory was there, at a rate of the grid not chosen."""
    rows = []
    for rate in (0.2, 0.5):
        for placement in ("canonical", "before_dense"):
            rows += [{**r, "run": f"{rate}/{r['run']}", "validation_loss": 0.3 + rate,
                      "config": {**r["config"], "rate": rate}} for r in _rows(placement, [0.9, 0.91], [0.3, 0.3])]
    rows = variants.label_rows(rows)
    compared = compare.at_selected_rates(rows, compare.tune_rates(rows))
    unchosen = [r for r in rows if r not in compared]
    assert {r["variant"] for r in unchosen} == {"m/canonical-rate0.5", "m/before_dense-rate0.5"}
    assert len(contrasts.planned_pairs(compared, [("before_dense", "canonical")], unchosen)) == 1
    with pytest.raises(ConfigError, match=r"^contrast side 'before_dense-rate0.5' is a rate of the grid that "
                                          r"validation did not choose \(see rates.md\): contrasts take each placement "
                                          r"at its chosen rate; to contrast at fixed rates, give --runs_dir only those "
                                          r"variants' directories$"):
        contrasts.planned_pairs(compared, [("before_dense-rate0.5", "canonical-rate0.5")], unchosen)
    with pytest.raises(ConfigError, match=r"^contrast side 'conv' matches no variant"):
        contrasts.planned_pairs(compared, [("conv", "canonical")], unchosen)
    # The control without dropout is one network at every rate: named as the comparison labels it.
    none = [{**r, "run": f"{rate}/{r['run']}", "validation_loss": 0.3, "config": {**r["config"], "rate": rate}}
            for rate in (0.2, 0.5) for r in _rows("none", [0.9, 0.91], [0.3, 0.3])]
    rows = variants.label_rows(rows + none)
    compared = compare.at_selected_rates(rows, compare.tune_rates(rows))
    unchosen = [r for r in rows if r not in compared]
    with pytest.raises(ConfigError, match=r"^contrast side 'none-rate0.5' is the control without dropout, one network "
                                          r"at every rate of the grid; name it as the comparison labels it: "
                                          r"m/none-rate0.2$"):
        contrasts.planned_pairs(compared, [("none-rate0.5", "canonical")], unchosen)
    assert len(contrasts.planned_pairs(compared, [("none", "canonical")], unchosen)) == 1


def test_the_runs_of_each_directory_are_counted_a_run_given_as_its_own_directory_too(tmp_path):
    """'5 runs, from m1/study (4), m3/study (0)': a run named as --runs_dir itself counted in none."""
    (tmp_path / "m1" / "a").mkdir(parents=True)
    (tmp_path / "m3").mkdir()
    runs = [str(tmp_path / "m1" / "a"), str(tmp_path / "m3")]
    assert compare._runs_per_directory([str(tmp_path / "m1"), str(tmp_path / "m3")], runs) == [
        (str(tmp_path / "m1"), 1), (str(tmp_path / "m3"), 1)]
