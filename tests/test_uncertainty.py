"""Calibration and OOD scores by hand, MC dropout that reuses the prefix, and their evaluation."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from dropzoo import evaluate
from dropzoo import export as export_lib
from dropzoo import ood as ood_lib
from dropzoo import uncertainty
from dropzoo import uncertainty_report
from dropzoo.evaluate import evaluate_on_dataset
from dropzoo.evaluate import evaluate_saved_model
from dropzoo.export import export_saved_model
from dropzoo.preprocess import scale
from models import masks
from models import mc_dropout as mc_lib

# ------------------------------------------------------------ by hand


def test_brier_score_by_hand():
    p = [[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.2, 0.3, 0.5]]
    # (0.1^2 + 0.1^2), (0.6^2 + 0.6^2 + 0), (0.2^2 + 0.3^2 + 0.5^2)
    expected = (0.02 + 0.72 + 0.38) / 3
    assert uncertainty.brier_score(p, [0, 1, 2]) == pytest.approx(expected, abs=1e-12)
    assert uncertainty.brier_score([[1.0, 0.0]], [0]) == 0.0
    assert uncertainty.brier_score([[0.0, 1.0]], [0]) == 2.0


def test_entropy_and_mutual_information_by_hand():
    assert uncertainty.predictive_entropy([[0.5, 0.5], [1.0, 0.0]]) == pytest.approx([math.log(2), 0.0])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert uncertainty.predictive_entropy([[0.75, 0.25]])[0] == pytest.approx(h)
    # Two samples of one example that disagree: [0.5, 0.5] and [1, 0].
    draws = np.array([[[0.5, 0.5]], [[1.0, 0.0]]])
    assert uncertainty.mutual_information(draws)[0] == pytest.approx(h - math.log(2) / 2)
    # Samples that agree carry no mutual information, however uncertain each is.
    agree = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])
    assert uncertainty.mutual_information(agree)[0] == pytest.approx(0.0, abs=1e-15)


def test_auroc_and_fpr95_by_hand():
    # OOD scores 0.25 and 0.4 against in-distribution 0.1, 0.2, 0.3: 5 of 6 pairs ranked right.
    result = uncertainty.ood_detection([0.1, 0.2, 0.3], [0.25, 0.4])
    assert result["auroc"] == pytest.approx(5 / 6)
    # Flagging 95% of OOD needs the threshold at 0.25, which also flags 0.3: 1 of 3.
    assert result["fpr95"] == pytest.approx(1 / 3)
    separated = uncertainty.ood_detection([0.1, 0.2], [0.3, 0.9])
    assert separated == {"auroc": 1.0, "fpr95": 0.0}
    # 20 OOD scores 1..20 against in-distribution 0.5 and 18.5: 95% TPR keeps 19 of
    # them (threshold 2), above which 18.5 lies: FPR 1/2.
    assert uncertainty.ood_detection([0.5, 18.5], np.arange(1, 21))["fpr95"] == 0.5
    # Tied scores: the threshold 5 flags 19 of 20 OOD and 1 of 10 in-distribution. The ROC point there is
    # collinear with its neighbours, and scikit-learn's default drops such points: FPR95 read 0.2.
    tied = uncertainty.ood_detection([5, 4] + [0] * 8, [10] * 18 + [5, 4])
    assert tied["fpr95"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="needs in-distribution and out-of-distribution"):
        uncertainty.ood_detection([], [0.3])


def test_chance_p_is_the_one_sided_mann_whitney_test_behind_auroc():
    from scipy import stats as scipy_stats

    rng = np.random.RandomState(0)
    same, other = rng.normal(0, 1, 400), rng.normal(0, 1, 300)  # one distribution: AUROC near 0.5
    p = uncertainty.chance_p(same, other)
    u = uncertainty.ood_detection(same, other)["auroc"] * len(same) * len(other)  # AUROC is U / (n_in n_out)
    assert p == pytest.approx(scipy_stats.norm.sf((u - 400 * 300 / 2) / np.sqrt(400 * 300 * 701 / 12)), abs=2e-3)
    assert p > 0.05
    assert uncertainty.chance_p(same, other + 0.5) < 1e-6  # scored higher: detected
    assert uncertainty.chance_p(same, other - 0.5) > 0.999  # scored lower than the test images: no detection
    assert uncertainty.chance_p([0.0, 0.0], [0.0]) == 1.0  # every score tied (scipy: NaN)
    assert np.isnan(uncertainty.chance_p([0.1, np.nan], [0.5]))
    result = {"ood_chance_p_entropy": 0.3, "ood_chance_p_mc_entropy": 0.2,
              "ood_chance_p_mc_mutual_information": float("nan"), "ood_auroc_entropy": 0.49,
              "ood_auroc_mc_entropy": 0.508}
    assert uncertainty.no_better_than_chance(result) == "mc_entropy"  # the highest AUROC, as eval.py's line
    assert uncertainty.no_better_than_chance({**result, "ood_chance_p_entropy": 0.01}) is None
    assert uncertainty.no_better_than_chance({"ood_auroc_entropy": 0.5}) is None  # saved before p was kept
    # Images of the test data's own kind: three correlated scores of one population, split at random. Taking the
    # smallest p uncorrected, the note was missing in 8% of splits; after Holm over the scores, at most 5%.
    missing = 0
    for _ in range(300):
        base = rng.normal(0, 1, 400)
        scores = {name: base + rng.normal(0, 0.5, 400) for name in ("entropy", "mc_entropy", "mc_mutual_information")}
        split = {f"ood_chance_p_{name}": uncertainty.chance_p(s[:200], s[200:]) for name, s in scores.items()}
        missing += uncertainty.no_better_than_chance(split) is None
    assert missing / 300 <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)
    from dropzoo import uncertainty_report

    result.update(ood_num_examples=1500, ood_auroc_mc_entropy=0.508)
    assert uncertainty_report.ood_chance_note(result) == (
        "no score tells the 1,500 out-of-distribution images from the test images better than chance (AUROC 0.508 by "
        "mc entropy, one-sided Mann-Whitney p = 0.2): images of the test data's own kind score so; if these are of "
        "another kind, this model does not detect them")
    # A smallest p below 0.05 but not after Holm over the scores: the note says why it is still chance.
    assert "p = 0.2; none below 0.05 after Holm's correction over the 2 scores)" in uncertainty_report.ood_chance_note(
        {**result, "ood_chance_p_entropy": 0.03})
    assert uncertainty_report.ood_chance_note({**result, "ood_chance_p_entropy": 0.01}) is None
    # Less uncertain on the OOD images than on the test images, beyond chance: no detection, but not the same kind.
    reversed_ = {**result, "ood_chance_p_entropy": 1.0, "ood_chance_p_mc_entropy": 0.999, "ood_auroc_entropy": 0.287,
                 "ood_auroc_mc_entropy": 0.379}
    assert uncertainty_report.ood_chance_note(reversed_) == (
        "every score finds the 1,500 out-of-distribution images less uncertain than the test images (at best AUROC "
        "0.379 by mc entropy, one-sided Mann-Whitney p = 1): this model does not detect them (images of the test "
        "data's own kind would score AUROC ~0.5)")


def test_reliability_bins_match_ece_and_pool_by_count():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    labels = [0, 1, 1, 0]
    table = uncertainty.reliability(p, labels, bins=5)
    # Confidences 0.9, 0.6, 0.8, 0.55 in (lo, hi] bins of width 0.2.
    assert table["count"] == [0, 0, 2, 1, 1]
    assert table["accuracy"] == [None, None, 0.5, 1.0, 1.0]
    assert table["confidence"] == pytest.approx([None, None, 0.575, 0.8, 0.9])
    ece = sum(n / 4 * abs(a - c) for n, a, c in zip(table["count"], table["accuracy"], table["confidence"])
              if n)
    assert uncertainty.expected_calibration_error(p, labels, bins=5) == pytest.approx(ece)
    assert uncertainty.calibration_error(table) == pytest.approx(ece)  # the one ECE: from the bins
    other = uncertainty.reliability(p, [0, 0, 1, 0], bins=5)
    pooled = uncertainty.pool_reliability([table, other])
    assert pooled["count"] == [0, 0, 4, 2, 2]
    assert pooled["accuracy"][2] == pytest.approx((0.5 * 2 + 1.0 * 2) / 4)


def test_scores_over_samples_use_the_running_mean():
    draws = np.array([[[0.5, 0.5]], [[1.0, 0.0]], [[0.9, 0.1]]])
    curve = uncertainty.over_samples(draws, [0])
    assert curve["samples"] == [1, 2, 3]
    means = [0.5, 0.75, (0.5 + 1.0 + 0.9) / 3]
    assert curve["nll"] == pytest.approx([-math.log(m) for m in means])
    assert curve["brier"] == pytest.approx([2 * (1 - m) ** 2 for m in means])
    assert curve["ece"] == pytest.approx([1 - m for m in means])
    # A softmax rounded one ulp past 1, which the scores and the export checks take as 1: scikit-learn's Brier raised
    # after every pass was drawn.
    past_one = np.array([[[1.0000001, 0.0], [0.2, 0.8]]] * 3, np.float32)
    assert uncertainty.over_samples(past_one, [0, 1])["brier"] == pytest.approx([0.04] * 3)
    # Mutual information one draw at a time (not all draws' float64 temporaries at once): the same values.
    rng = np.random.RandomState(0)
    draws = rng.dirichlet(np.ones(10), (20, 50)).astype(np.float32)
    d = draws.astype(np.float64)
    at_once = uncertainty.predictive_entropy(d.mean(axis=0)) - uncertainty.predictive_entropy(d).mean(axis=0)
    assert uncertainty.mutual_information(draws) == pytest.approx(np.maximum(at_once, 0.0), abs=1e-12)


def test_few_mc_passes_are_said_to_understate_mc_dropout():
    from dropzoo import uncertainty_report

    assert uncertainty_report.few_passes_note(0) is None and uncertainty_report.few_passes_note(10) is None
    assert uncertainty_report.few_passes_note(3).startswith(
        "the mc_* scores are of 3 MC dropout passes: the mean of so few is noisy and its NLL biased upward")
    rows = [{"variant": "m/a", "mc_samples": 5}, {"variant": "m/b", "mc_samples": 5}, {"variant": "m/c"}]
    assert uncertainty_report.mc_notes(rows) == [uncertainty_report.few_passes_note(5)]
    assert uncertainty_report.mc_notes([{"variant": "m/a", "mc_samples": 20}]) == []


# ------------------------------------------------------------ MC dropout paths


@pytest.mark.parametrize("placement,kind", [("canonical", "inverted"), ("conv", "gaussian"),
                                            ("spatial", "classic")])
def test_reusing_the_prefix_equals_the_naive_path_for_the_same_masks(placement, kind):
    model = models.build("keras_mnist_cnn", placement, kind=kind, seed=3)
    images = np.random.RandomState(0).rand(6, 28, 28, 1).astype("float32")
    reuse = models.MonteCarlo(model, fast_masks=False)
    naive = models.MonteCarlo(model, reuse_prefix=False)
    assert reuse.prefix is not None and naive.prefix is None
    # The prefix ends where the first dropout layer starts.
    first = models.dropout_layers(model)[0]
    assert tuple(reuse.prefix.output.shape) == tuple(first.input.shape)
    with models.request_seed(tf.constant(11)):
        fast = np.asarray(reuse.draws(images, 4))
        slow = np.asarray(naive.draws(images, 4))
    assert fast.shape == (4, 6, 10)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fast[0], fast[1])  # the samples drew different masks
    deterministic = model(images, training=False).numpy()
    assert not np.allclose(fast[0], deterministic)


def test_a_model_whose_input_bypasses_the_first_dropout_is_sampled_whole():
    image = keras.Input(shape=(8,), name="image")
    hidden = keras.layers.Dropout(0.5, seed=1)(keras.layers.Dense(8)(image))
    skip = keras.layers.Dense(8)(image)  # reaches the output without passing dropout
    model = keras.Model(image, keras.layers.Dense(3)(keras.layers.Add()([hidden, skip])))
    assert models.mc_dropout_split(model) is None
    mc = models.MonteCarlo(model)
    assert mc.prefix is None
    x = np.ones((2, 8), "float32")
    with models.request_seed(tf.constant(5)):
        first, second = np.asarray(mc.draws(x, 3)), np.asarray(mc.draws(x, 3))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("rate,bits", [(0.1, 16), (0.25, 2), (0.4, 16), (0.5, 1), (0.125, 4)])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_fast_masks_are_bernoulli_at_the_rate_with_the_exact_scale(rate, bits, policy):
    assert masks.mask_bits(rate) == bits
    layer = models.layers.Float32Dropout(rate, seed=1, dtype=policy)
    ones = tf.ones([500, 10, 10, 3], layer.compute_dtype)  # 3 units: a word's fields are sliced
    out = mc_lib.bernoulli_samples(layer, ones, 2).numpy().astype(np.float64)
    assert out.shape == (1000, 10, 10, 3)
    dropped = float(np.mean(out == 0))
    assert abs(dropped - rate) < 4 * math.sqrt(rate * (1 - rate) / out.size)
    kept = np.unique(out[out != 0])
    scale = np.float32(1 / (1 - rate))  # float32, then one rounding to the compute dtype
    assert kept.tolist() == [float(tf.cast(tf.constant(scale), layer.compute_dtype).numpy())]
    with models.request_seed(tf.constant(4)):
        first = mc_lib.bernoulli_samples(layer, ones, 2).numpy()
        again = mc_lib.bernoulli_samples(layer, ones, 2).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[:500], first[500:])  # the copies draw their own masks


def test_fast_masks_keep_classic_units_unscaled_and_leave_other_forms_alone():
    classic = models.layers.ClassicDropout(0.25, seed=1)
    out = mc_lib.bernoulli_samples(classic, tf.ones([100, 40]), 3).numpy()
    assert set(np.unique(out).tolist()) == {0.0, 1.0}
    spatial = models.build("keras_mnist_cnn", "spatial", seed=0)
    assert not models.MonteCarlo(spatial).fast_masks  # one mask per channel: the layer draws it
    assert models.MonteCarlo(models.build("keras_mnist_cnn", "canonical", seed=0)).fast_masks


def test_fast_mc_masks_are_the_layers_masks_for_the_tiled_batch():
    """Broadcasting one mask per sample draws what the layer draws over the tiled batch: the same passes."""
    own = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.5),
                            keras.layers.Dense(4)])  # Keras' own layer, as a user's model has it
    for model, images in ((models.build("keras_mnist_cnn", "canonical", seed=0),
                           np.random.RandomState(1).rand(3, 28, 28, 1).astype("float32")),
                          (models.build("keras_mnist_cnn", "canonical", seed=0, kind="classic"),
                           np.random.RandomState(2).rand(3, 28, 28, 1).astype("float32")),
                          (own, np.random.RandomState(3).rand(3, 8).astype("float32"))):
        assert models.MonteCarlo(model).fast_masks
        with models.request_seed(tf.constant(2)):
            fast = np.asarray(models.MonteCarlo(model).draws(images, 40))
            layer_masks = np.asarray(models.MonteCarlo(model, fast_masks=False).draws(images, 40))
        np.testing.assert_array_equal(fast, layer_masks)
        assert np.ptp(fast, axis=0).max() > 0  # (dropout on: the passes differ)


# ------------------------------------------------------------ evaluation


SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    keras.utils.set_random_seed(0)
    image = keras.Input(shape=SHAPE, name="image")
    x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(image))
    x = keras.layers.Dropout(0.5, seed=2)(x)
    model = keras.Model(image, keras.layers.Dense(3, activation="softmax")(x))
    return model, export_saved_model(model, tmp_path_factory.mktemp("unc") / "saved_model")


def _batches(images, labels, size=16):
    return [(images[i:i + size], labels[i:i + size]) for i in range(0, len(images), size)]


def test_evaluation_reports_calibration_curves_and_ood_detection(export):
    model, path = export
    rng = np.random.RandomState(0)
    images = rng.randint(0, 100, (40,) + SHAPE).astype(np.uint8)
    labels = model(scale(images), training=False).numpy().argmax(axis=1)  # confident, right
    ood = rng.randint(150, 256, (30,) + SHAPE).astype(np.uint8)
    result = evaluate_saved_model(path, _batches(images, labels), mc_samples=5, mc_seed=3,
                                  ood_batches=_batches(ood, np.zeros(30, np.int64)))
    probabilities = model(scale(images), training=False).numpy()
    assert result["brier"] == pytest.approx(uncertainty.brier_score(probabilities, labels), abs=1e-6)
    assert sum(result["reliability"]["count"]) == 40
    assert result["mc_curve"]["samples"] == [1, 2, 3, 4, 5]
    assert result["mc_curve"]["nll"][-1] == pytest.approx(result["mc_nll"])
    assert result["mc_curve"]["ece"][-1] == pytest.approx(result["mc_ece"])
    assert result["mc_seed"] == 3 and result["ood_num_examples"] == 30
    for score in ("entropy", "mc_entropy", "mc_mutual_information"):
        assert 0.0 <= result[f"ood_auroc_{score}"] <= 1.0
        assert 0.0 <= result[f"ood_fpr95_{score}"] <= 1.0
        assert 0.0 <= result[f"ood_chance_p_{score}"] <= 1.0
    in_entropy = uncertainty.predictive_entropy(probabilities)
    out_entropy = uncertainty.predictive_entropy(model(scale(ood), training=False).numpy())
    assert result["ood_auroc_entropy"] == pytest.approx(
        uncertainty.ood_detection(in_entropy, out_entropy)["auroc"], abs=1e-6)
    assert result["ood_chance_p_entropy"] == pytest.approx(uncertainty.chance_p(in_entropy, out_entropy), rel=1e-3)
    again = evaluate_saved_model(path, _batches(images, labels), mc_samples=5, mc_seed=3)
    assert again["mc_nll"] == result["mc_nll"]  # the same seed: the same masks
    other = evaluate_saved_model(path, _batches(images, labels), mc_samples=5, mc_seed=4)
    assert other["mc_nll"] != result["mc_nll"]
    assert "mc_no_spread" not in result


def test_mc_dropout_of_a_network_without_dropout_says_its_passes_agree(tmp_path):
    """Its mc_* scores repeated the plain ones, shown as an MC result (and flat MC curves) without a word."""
    from dropzoo import compare

    keras.utils.set_random_seed(0)
    image = keras.Input(shape=SHAPE, name="image")
    model = keras.Model(image, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(image)))
    path = export_saved_model(model, tmp_path / "saved_model")
    images = np.random.RandomState(0).randint(0, 100, (20,) + SHAPE).astype(np.uint8)
    result = evaluate_saved_model(path, _batches(images, np.arange(20) % 3), mc_samples=3)
    assert result["mc_no_spread"] is True and result["mc_nll"] == pytest.approx(result["loss"], abs=1e-6)
    # The API checks what eval.py's flags check: 2**40 drew seed 0's masks, recorded as 2**40; 2.5 became 2.
    for kwargs, message in (({"mc_seed": 2**40}, r"--mc_seed must be an integer in \[0, 2\*\*31\), got 1099511627776"),
                            ({"mc_samples": 2.5},
                             r"--mc_samples must be 0 \(off\) or an integer of 2 or more \(at most 16384, the passes "
                             r"an MC call draws at once\), got 2\.5"),
                            ({"mc_seed": 5}, r"--mc_seed=5 seeds MC dropout, which is off")):
        with pytest.raises(ValueError, match=f"^{message}"):
            evaluate_saved_model(path, _batches(images, np.arange(20) % 3), **kwargs)
    with pytest.raises(ValueError, match=r"^--batch_size must be a positive integer, got 0$"):
        compare.compare_runs(str(tmp_path), batch_size=0)
    rows = [{"variant": "m/none", "mc_no_spread": True}, {"variant": "m/canonical"}]
    note = ("m/none: its MC dropout passes all agree (no dropout to sample, or none that moves the probabilities), "
            "so the mc_* columns repeat the plain ones")
    assert uncertainty_report.mc_notes(rows) == [note]
    # uncertainty.md says it too: its MC columns for a variant without dropout are not a measurement of sampling.
    assert uncertainty_report.markdown([], [], None, notes=[note]).endswith(f"\n\nNote: {note}.\n")


def test_out_of_distribution_images_of_another_shape_are_named_as_such(export):
    # They were blamed on the test data, with a fix (--image_size) the OOD flags do not take.
    _, path = export
    images = np.zeros((4,) + SHAPE, np.uint8)
    ood = np.zeros((4, 9, 9, 1), np.uint8)
    with pytest.raises(ValueError, match=r"takes images of shape \(H, W, C\)=\(8, 8, 1\) but the out-of-distribution "
                                         r"data \(--ood_\*\) has \(9, 9, 1\); give out-of-distribution images of the "
                                         r"model's shape \(8, 8, 1\), or a folder of images \(--ood_image_dir=DIR "
                                         r"reads them at the model's size and channels\)$"):
        evaluate_saved_model(path, _batches(images, np.zeros(4, np.int64)),
                             ood_batches=_batches(ood, np.zeros(4, np.int64)))


def test_the_ood_text_names_only_the_scores_evaluated_and_no_mc_curve_without_mc():
    # Without --mc_samples the text described MC scores the table did not have, beside an empty mc_samples.png.
    from dropzoo import report
    from dropzoo import uncertainty_report

    entry = {"variant": "v", "seeds": 2, "ece": {"mean": 0.01, "ci95": 0.001},
             "ood_auroc_entropy": {"mean": 0.9, "ci95": 0.01}, "ood_fpr95_entropy": {"mean": 0.4, "ci95": 0.02}}
    text = uncertainty_report.markdown([entry], report.COLUMNS, report.cell, "fashion")
    assert "Scores: predictive entropy of the deterministic export (entropy). AUROC" in text
    assert "mc entropy" not in text and "mutual information" not in text
    rows = [{"variant": "v", "ood_auroc_entropy": 0.9}]
    assert uncertainty_report.has_uncertainty(rows) and not uncertainty_report.has_mc_curve(rows)
    assert uncertainty_report.has_mc_curve(rows + [{"mc_curve": {"samples": [1], "nll": [0.1], "ece": [0.0]}}])


def test_the_ood_pass_draws_other_masks_than_the_test_pass(export):
    # Seeds follow the calls: restarting them for the OOD data gave its i-th batch the test data's i-th masks.
    from dropzoo.export import load_signatures
    from dropzoo.serving import MC_DRAWS_XLA_KEY
    _, path = export
    signatures = dict(load_signatures(path))
    seeds, draws = [], signatures[MC_DRAWS_XLA_KEY]
    signatures[MC_DRAWS_XLA_KEY] = lambda seed, **kwargs: seeds.append(int(seed)) or draws(seed=seed, **kwargs)
    images = np.random.RandomState(0).randint(0, 256, (32,) + SHAPE).astype(np.uint8)
    evaluate_saved_model(path, _batches(images, np.zeros(32, np.int64)), mc_samples=4, mc_seed=5,
                         ood_batches=_batches(255 - images, np.zeros(32, np.int64)), signatures=signatures)
    assert len(seeds) == 4 and len(set(seeds)) == 4, seeds


def test_one_mc_pass_is_refused_its_spread_would_read_as_no_dropout():
    from dropzoo.evaluate import check_mc
    with pytest.raises(ValueError, match=r"--mc_samples=1 is a single dropout pass.*give 2 or more"):
        check_mc(1, 0)
    check_mc(2, 0)
    check_mc(16384, 0)
    # An int32 in the signatures: 2**32 + 3 ran 3 passes and reported 4294967299; more passes than an MC call
    # draws at once (each held in memory) are refused too.
    for too_many in (2**31, 2**32 + 3, 16385):
        with pytest.raises(ValueError, match=r"^--mc_samples must be 0 \(off\) or an integer of 2 or more \(at most "
                                             r"16384, the passes an MC call draws at once\), got "):
            check_mc(too_many, 0)


def test_memory_running_out_is_one_line_naming_what_sizes_it(capsys):
    from dropzoo import errors
    for error in (tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[4096,10]\n"
                                                                "trace..."), MemoryError()):
        with pytest.raises(SystemExit) as info, errors.one_line():
            raise error
        line = capsys.readouterr().err
        assert info.value.code == errors.EXIT_USAGE and line.count("\n") == 1 and line.startswith(
            "error: out of memory (") and "give a smaller --batch_size" in line and "--mc_samples" in line, line
    graph = ("Graph execution error:\n\nDetected at node x defined at (most recent call last):\n  File ...\nOOM when "
             "allocating tensor with shape[5,1,4] and type int32 on /job:localhost/replica:0/task:0/device:CPU:0 by "
             "allocator cpu\n\t [[{{node x}}]]")  # as TensorFlow words it: the allocation after its op trace
    assert "(OOM when allocating tensor with shape[5,1,4] and type int32);" in errors.out_of_memory(
        tf.errors.ResourceExhaustedError(None, None, graph))
    assert errors.out_of_memory(ValueError("x")) is None
    # TensorFlow calls a full disk ResourceExhausted too: not memory (train.py has its own line for it).
    assert errors.out_of_memory(tf.errors.ResourceExhaustedError(None, None, "/dev/full; No space left on device")) \
        is None


def test_an_mc_evaluation_records_the_batch_size_its_masks_were_drawn_at(export, tmp_path):
    # The masks are drawn per batch: --mc_seed repeats an evaluation at the same --batch_size only.
    _, path = export
    rng = np.random.RandomState(0)
    images, labels = rng.randint(0, 256, (30,) + SHAPE[:2]).astype(np.uint8), np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    data = {"npz": str(tmp_path / "d.npz")}
    result = evaluate_on_dataset(path, data=data, batch_size=8, mc_samples=3, mc_seed=1)
    assert result["mc_batch_size"] == 8
    assert evaluate_on_dataset(path, data=data, batch_size=8, mc_samples=3, mc_seed=1)["mc_nll"] == result["mc_nll"]
    assert "mc_batch_size" not in evaluate_on_dataset(path, data=data, batch_size=8)
    (tmp_path / "ood").mkdir()
    np.savez(tmp_path / "ood" / "same.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    with pytest.raises(ValueError, match=r"the out-of-distribution data is the test data of npz:.*d.npz; give "
                                         "images of something else"):
        evaluate_on_dataset(path, data=data, ood={"npz": str(tmp_path / "ood" / "same.npz")})
    np.savez(tmp_path / "ood" / "near.npz", x_train=images, y_train=labels, x_test=images[1:], y_test=labels[1:])
    with pytest.raises(ValueError, match=r"^the out-of-distribution data is the test data of npz:.*d.npz, or a copy "
                                         r"of some of it: all 29 of its images are test images"):
        evaluate_on_dataset(path, data=data, ood={"npz": str(tmp_path / "ood" / "near.npz")})


def test_ood_images_that_are_test_or_training_images_are_left_out_or_refused_when_all_are(caplog):
    from dropzoo import data_identity
    from dropzoo import sources

    rng = np.random.RandomState(0)
    test = rng.randint(0, 256, (50, 4, 4, 1)).astype(np.uint8)
    other = rng.randint(0, 256, (40, 4, 4, 1)).astype(np.uint8)
    train = rng.randint(0, 256, (30, 4, 4, 1)).astype(np.uint8)

    def ood(images):
        return sources.array_source("ood", None, (images, np.zeros(len(images), np.int64)))

    kept, in_test, in_train = data_identity.ood_apart(test, ood(other), "x")  # no image in common
    assert in_test == in_train == 0 and len(list(kept)) == 40
    with pytest.raises(ValueError, match=r"^the out-of-distribution data is the test data of x, or a copy of some of "
                                         r"it: all 49 of its images are test images \(byte for byte\)"):
        data_identity.ood_apart(test, ood(test[1:]), "x")  # the test data less one image
    # The run's own training images (its training folder given as OOD data scored AUROC 0.61): refused when all.
    with pytest.raises(ValueError, match=r"^the out-of-distribution data is the training data of x, or a copy of some "
                                         r"of it: all 30 of its images are training-split images \(byte for byte\)"):
        data_identity.ood_apart(test, ood(train), "x", train=data_identity.digests(train))
    # One test image and two training images among other images: left out of the OOD scores, said, and counted.
    mixed = np.concatenate([other[:20], test[7:8], train[3:5], other[20:]])
    kept, in_test, in_train = data_identity.ood_apart(test, ood(mixed), "x", key=("t", "o"),
                                                      train=data_identity.digests(train))
    images = np.stack([image for image, _ in kept.as_numpy_iterator()])
    assert (in_test, in_train) == (1, 2) and np.array_equal(images, other)
    assert "1 of the 43 out-of-distribution images is a test image of x (byte for byte): left out" in caplog.text
    assert ("2 of the 43 out-of-distribution images are training-split images of x (byte for byte): left out"
            in caplog.text)
    assert data_identity.ood_apart((), ood(mixed), "x", key=("t", "o"))[1:] == (1, 2)  # asked once per pair
    # Only test and training images between them: refused, not "no examples" after leaving them all out.
    with pytest.raises(ValueError, match=r"^the out-of-distribution data is made of test and training images: all 5 "
                                         r"of its images are test images of x \(2\) or training-split images of x "
                                         r"\(3\) \(byte for byte\); give images of something else, in neither "
                                         r"the test nor the training split of the model.s data"):
        data_identity.ood_apart(test, ood(np.concatenate([test[:2], train[:3]])), "x",
                                train=data_identity.digests(train))
    # Scored on other data than it trained on, its training images are named as the model's, not that data's.
    caplog.clear()
    data_identity.ood_apart(test, ood(mixed), "y", train=data_identity.digests(train), trained="the model")
    assert "1 of the 43 out-of-distribution images is a test image of y (byte for byte)" in caplog.text
    assert "2 of the 43 out-of-distribution images are training-split images of the model (byte" in caplog.text
    with pytest.raises(ValueError, match=r"^the out-of-distribution data is the training data of the model, or a "):
        data_identity.ood_apart(test, ood(train), "y", train=data_identity.digests(train), trained="the model")


def test_a_runs_training_images_are_looked_up_in_local_files_and_the_sample_only(tmp_path):
    from dropzoo import ood as ood_lib
    from dropzoo import sources
    from dropzoo import uncertainty_report

    sample = ood_lib.training_digests({"dataset": sources.SAMPLE_NAME})
    assert len(sample) > 1000
    # tfds data is not loaded to look (offline it would be the sample, another dataset); moved files are not here.
    assert ood_lib.training_digests({"dataset": "mnist"}) is None
    assert ood_lib.training_digests({"idx_dir": str(tmp_path / "gone")}) is None
    assert ood_lib.unchecked({"ood_data_source": "o"}, {"dataset": sources.SAMPLE_NAME})  # older than the check
    assert not ood_lib.unchecked({"ood_data_source": "o", "ood_train_checked": True}, {"dataset": "mnist"})
    assert not ood_lib.unchecked({"ood_data_source": "o"}, {"dataset": "mnist"})  # nothing to check it with
    rows = [{"variant": "m/none", "ood_data_source": "o", "ood_train_checked": False},
            {"variant": "m/conv", "ood_data_source": "o", "ood_train_checked": True}, {"variant": "m/x"}]
    rows.append({"variant": "m/old", "ood_data_source": "o"})  # saved before the check, no SavedModel to redo it
    assert uncertainty_report.ood_notes(rows) == [
        "the out-of-distribution data was not checked for the training images of 1 run (m/none): for each, its "
        "training data is not looked up here (data from tensorflow-datasets is not loaded to look, or its files "
        "moved), so any out-of-distribution images it trained on count as unseen",
        "the out-of-distribution data was not checked for the training images of 1 run (m/old): their OOD scores "
        "come from evaluations saved before the check, which could not be done again here (no SavedModel to score, "
        "or the training data not looked up here)"]
    # Runs that tell the OOD images from the test images no better than chance by any score are named.
    rows[1].update(ood_chance_p_entropy=0.4, ood_chance_p_mc_entropy=0.08)
    rows[0].update(ood_chance_p_entropy=0.4, ood_chance_p_mc_entropy=0.001)  # one score detects
    rows[3].update(ood_chance_p_entropy=0.03, ood_chance_p_mc_entropy=0.2)  # 0.03 of two: not below 0.05 after Holm
    assert len(uncertainty_report.ood_notes(rows)) == 2
    assert uncertainty_report.chance_notes(rows) == [
        "2 runs (m/conv, m/old) tell the out-of-distribution images from the test images no better than chance by "
        "any score (no one-sided Mann-Whitney p below 0.05 after Holm's correction over the scores): images of the "
        "test data's own kind score so (AUROC ~0.5), as does a model less uncertain on them than on its test images "
        "(AUROC below 0.5); their OOD columns show no detection"]
    rows[3].update(ood_chance_p_entropy=0.02)  # below 0.05 / 2: one score detects
    assert "1 run (m/conv)" in uncertainty_report.chance_notes(rows)[0]


def test_an_ood_interval_past_its_range_is_marked():
    from dropzoo import report
    from dropzoo import uncertainty_report

    entry = {"variant": "v", "seeds": 2, "ood_fpr95_entropy": {"mean": 0.926, "ci95": 0.4955},
             "ood_auroc_entropy": {"mean": 0.9, "ci95": 0.01}}
    text = uncertainty_report.markdown([entry], report.COLUMNS, report.cell, "fashion")
    assert "| 0.9000 ± 0.0100 | 0.9260 ± 0.4955† |" in text
    assert "† mean ± 95% CI half-width past the values the metric can take" in text


def test_an_npz_given_as_an_ood_dataset_name_is_told_its_ood_flag(tmp_path):
    # The loader's fix for the data under test (pass --npz=...) would have scored the OOD images as test data.
    np.savez(tmp_path / "x.npz", x=np.zeros(1))
    with pytest.raises(ValueError, match=r"^out-of-distribution data: --ood_dataset takes a dataset name, not a path: "
                                         r"for .*x.npz pass --ood_npz=.*x.npz$"):
        ood_lib.load({"dataset": str(tmp_path / "x.npz")})


def test_ood_from_python_is_a_dict_naming_one_source(export, tmp_path):
    """A path given as ood= crashed in a TypeError; two sources scored one of them, an unknown key was ignored."""
    from dropzoo import compare
    from dropzoo import sources
    from dropzoo.errors import DataError

    _, path = export
    with pytest.raises(DataError, match=r"^ood= takes a dict naming one source \(dataset, idx_dir, npz, "
                                        r"image_dir\), e\.g\. .*; got str 'noise\.npz'$"):
        evaluate_on_dataset(str(path), ood="noise.npz")
    with pytest.raises(DataError, match=r"^ood= takes a dict"):
        compare.compare_runs(str(tmp_path), ood=["noise.npz"])
    with pytest.raises(ValueError, match=r"^compare_runs takes data_override= or source=, not both"):  # (one ignored)
        compare.compare_runs(str(tmp_path), data_override={"npz": "a.npz"}, source=sources.load_source("mnist_sample"))
    with pytest.raises(DataError, match=r"^ood= has an unknown key 'np': name one source"):
        ood_lib.checked({"np": "noise.npz"})
    with pytest.raises(DataError, match=r"^ood= names 2 sources, npz and image_dir: one would be scored; keep one"):
        ood_lib.checked({"npz": "a.npz", "image_dir": "b"})
    for empty in ({"npz": ""}, {"tfds_data_dir": "d"}):
        with pytest.raises(DataError, match=r"^ood= names no source \(none of dataset, idx_dir, npz, image_dir with "
                                            r"a value\)"):
            ood_lib.checked(empty)
    with pytest.raises(DataError, match=r"^ood= npz must be a path \(a string\), got int 5"):
        ood_lib.checked({"npz": 5})
    with pytest.raises(DataError, match=r"^ood= has an unknown key 'image_size' \(an image folder is read at each "
                                        r"model's size and channels\)"):
        ood_lib.checked({"image_dir": "b", "image_size": "28,28"})
    with pytest.raises(DataError, match=r"^ood= gives tfds_data_dir beside npz: "):
        ood_lib.checked({"npz": "a.npz", "tfds_data_dir": "d"})
    # Empty values are dropped, not left for load to pick by key (it read {"npz": None} as a path).
    assert ood_lib.checked({"dataset": "kmnist", "npz": None}) == {"dataset": "kmnist"}
    assert ood_lib.checked({"npz": "", "image_dir": "b"}) == {"image_dir": "b"}
    assert ood_lib.checked({"dataset": "fashion_mnist", "tfds_data_dir": "d"}) == {"dataset": "fashion_mnist",
                                                                                   "tfds_data_dir": "d"}
    assert ood_lib.checked(ood_lib.arguments(idx_dir="x")) == {"idx_dir": "x"}  # eval.py's own dict
    assert ood_lib.checked(None) is None
    # A Source is taken as compare_runs takes it (ood.load read it as a dict: a TypeError), scored as its .npz is.
    rng = np.random.default_rng(1)
    test, noise = (rng.integers(0, 256, (n,) + SHAPE, dtype=np.uint8) for n in (24, 20))
    np.savez(tmp_path / "noise.npz", x_test=noise)
    data = {"npz": str(tmp_path / "test.npz")}
    np.savez(data["npz"], x_test=test, y_test=rng.integers(0, 3, 24))
    own = sources.array_source("noise", None, (noise, np.zeros(20, np.int64)))
    given = evaluate_on_dataset(str(path), data=data, ood=own)
    named = evaluate_on_dataset(str(path), data=data, ood={"npz": str(tmp_path / "noise.npz")})
    assert given["ood_auroc_entropy"] == named["ood_auroc_entropy"] and given["ood_num_examples"] == 20
    assert given["ood_sha256"] == named["ood_sha256"]  # the same images


def test_the_clients_mc_dropout_draws_each_chunk_its_own_masks_and_repeats_by_seed(export):
    """One seed sent with every chunk of a request gave image i and image i + batch_size the same masks."""
    from dropzoo import client

    _, path = export
    images = np.random.default_rng(0).integers(0, 256, (4,) + SHAPE, dtype=np.uint8)
    model = client.Client(str(path))
    twice = model.mc_dropout(np.concatenate([images, images]), samples=5, seed=3, batch_size=4)
    assert not np.array_equal(twice["probabilities"][:4], twice["probabilities"][4:])
    again = model.mc_dropout(np.concatenate([images, images]), samples=5, seed=3, batch_size=4)
    np.testing.assert_array_equal(again["probabilities"], twice["probabilities"])
    other = model.mc_dropout(images, samples=5, seed=4)
    assert not np.array_equal(other["probabilities"], twice["probabilities"][:4])


def test_the_clients_seeded_mc_dropout_draws_eval_pys_masks(export, monkeypatch):
    """The client chunked by batch_size only, eval.py each batch by MC_CHUNK // samples too: at T=20 (batches
    over 204 images) one seed gave other masks, and api.md said they were eval.py's."""
    from dropzoo import client
    from dropzoo import serving

    _, path = export
    monkeypatch.setattr(serving, "MC_CHUNK", 10)  # 2 images a call at 5 samples: each batch of 3 in two calls
    images = np.random.default_rng(1).integers(0, 256, (7,) + SHAPE, dtype=np.uint8)
    assert serving.mc_chunks(7, 3, 5) == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 7)]
    served = client.Client(str(path)).mc_dropout(images, samples=5, seed=11, batch_size=3)["probabilities"]
    signatures = export_lib.load_signatures(str(path))
    predictor = evaluate._Predictor(lambda x: None, signatures, mc_samples=5, mc_seed=11)
    draws = np.concatenate([predictor._draws(images[i:i + 3]) for i in range(0, 7, 3)], axis=1)
    np.testing.assert_allclose(served, draws.mean(axis=0), rtol=1e-6, atol=1e-7)


def test_a_folder_of_any_images_is_ood_data_read_at_the_models_size(export, tmp_path):
    """eval.py took OOD data only as a tfds name or IDX files: a model of another shape than 28x28 had none."""
    from PIL import Image

    _, path = export
    rng = np.random.RandomState(0)
    images, labels = rng.randint(0, 256, (30,) + SHAPE[:2]).astype(np.uint8), np.arange(30) % 3
    np.savez(tmp_path / "d.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    (tmp_path / "photos" / "more").mkdir(parents=True)
    for i in range(12):  # colour photos of another size, some in a subfolder
        Image.fromarray(rng.randint(0, 256, (30, 20, 3)).astype(np.uint8)).save(
            tmp_path / "photos" / ("more" if i % 3 else "") / f"{i}.jpg")
    result = evaluate_on_dataset(path, data={"npz": str(tmp_path / "d.npz")}, batch_size=8, mc_samples=3,
                                 ood={"image_dir": str(tmp_path / "photos")})
    assert result["ood_num_examples"] == 12 and result["ood_data_source"] == f"images:{tmp_path / 'photos'}"
    assert 0 <= result["ood_auroc_mc_mutual_information"] <= 1


def test_a_softmax_rounded_past_one_is_scored_as_the_checks_allow():
    """The export checks allow probabilities 1e-6 past 1 (float rounding); scikit-learn's calibration curve refused
    them, ending the evaluation with "y_prob has values outside [0, 1]"."""
    p = np.zeros((4, 10), np.float32)
    p[:, 0] = np.float32(1.0000001)
    got = uncertainty.scores(p, np.array([0, 0, 0, 1]))
    assert got["accuracy"] == 0.75 and got["ece"] == pytest.approx(0.25, abs=1e-6)


def test_scores_of_a_model_that_diverged_on_some_images_are_nan_not_an_error():
    """scikit-learn raised "Input contains NaN." and ended the whole comparison; a NaN row counted as class 0."""
    p = np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8]])
    got = uncertainty.scores(p, np.array([0, 0, 1]))
    assert got["accuracy"] == pytest.approx(2 / 3) and all(np.isnan(got[k]) for k in ("nll", "ece", "brier"))
    assert sum(uncertainty.reliability(p, np.array([0, 0, 1]))["count"]) == 0
    detection = uncertainty.ood_detection(np.array([0.1, np.nan]), np.array([0.5, 0.7]))
    assert np.isnan(detection["auroc"]) and np.isnan(detection["fpr95"])
    # A NaN row's entropy is NaN, not 0 (the most certain score there is): it gave a finite AUROC of 0.57.
    entropy = uncertainty.predictive_entropy(p)
    assert np.isnan(entropy[1]) and np.isfinite(entropy[[0, 2]]).all()
    assert np.isnan(uncertainty.ood_detection(entropy, np.array([0.5, 0.7]))["auroc"])
    assert np.isnan(uncertainty.mutual_information(np.stack([p, p]))[1])
    from dropzoo import evaluate  # the headline names a finite AUROC, not a NaN one that comes first

    line = evaluate.summary_line({"accuracy": 0.9, "loss": 0.3, "ece": 0.01, "data_source": "x", "num_examples": 10,
                                  "ood_num_examples": 5, "ood_auroc_entropy": float("nan"),
                                  "ood_auroc_mc_entropy": 0.82})
    assert line.endswith("; out-of-distribution (5 images): AUROC 0.820 by mc entropy")
    assert uncertainty.ood_detection(np.array([0.1, 0.2]), np.array([0.5, 0.7]))["auroc"] == 1.0


def test_a_copied_exports_ood_data_is_held_to_the_scored_datas_training_split_where_it_has_one(tmp_path):
    # The scored data's own training split is in-distribution whoever trained on it; files of a test split alone (an
    # npz of x_test, t10k IDX files) have none to hold it to, and were said "not checked" as if moved or tfds data.
    images = np.arange(12 * 28 * 28).reshape(12, 28, 28).astype(np.uint8)
    full, test_only = str(tmp_path / "full.npz"), str(tmp_path / "test_only.npz")
    np.savez(full, x_train=images[:8], y_train=np.arange(8) % 2, x_test=images[8:], y_test=np.arange(4) % 2)
    np.savez(test_only, x_test=images[8:], y_test=np.arange(4) % 2)
    assert ood_lib.scored_training({"npz": full}) == {"npz": full}
    assert ood_lib.scored_training({"npz": test_only}) is None
    assert ood_lib.scored_training({"dataset": "mnist"}) == {"dataset": "mnist"}  # looked up: no; said: yes
    assert ood_lib.scored_training({"dataset": "mnist_sample"}) == {"dataset": "mnist_sample"}
