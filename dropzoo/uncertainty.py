"""What a model's probabilities say beyond accuracy: calibration and out-of-distribution scores.

Plain NumPy in, plain numbers out, so each is checked against hand-computed
values. scikit-learn supplies the Brier score, the ROC curve and AUROC, and
the reliability curve; entropies are in nats.

- `brier_score`: mean over examples of sum_k (p_k - [y = k])^2 (0 best, 2 worst).
- `predictive_entropy`: H(p) = -sum_k p_k log p_k.
- `mutual_information`: H(mean_s p_s) - mean_s H(p_s) over MC samples s, the
  part of the predictive entropy due to disagreement between dropout masks
  (Gal, 2016, "Uncertainty in deep learning", section 3.3.1).
- `ood_detection`: AUROC and FPR at 95% TPR of a score that should be higher
  on out-of-distribution examples (the positives) than on in-distribution ones.
- `chance_p`: how likely a score separates the two that well by chance alone
  (one-sided Mann-Whitney U, scipy), were they images of one kind.
- `reliability`: accuracy and mean confidence per equal-width confidence bin;
  `expected_calibration_error` is computed from it (Guo et al., 2017).
- `over_samples`: NLL, ECE and Brier of the mean of the first t samples, t = 1..T.
"""
import warnings

import numpy as np
from scipy import stats as scipy_stats
from sklearn import calibration
from sklearn import metrics

from dropzoo import stats
from dropzoo.errors import DataError

# Equal-width confidence bins for ECE and reliability diagrams (Guo et al., 2017).
BINS = 15
# Out-of-distribution detection reports the false-positive rate at this true-positive rate.
TPR_TARGET = 0.95


def brier_score(probabilities, labels):
    """Multi-class Brier score: mean squared distance from the one-hot label."""
    p = np.asarray(probabilities, np.float64)
    if not np.all(np.isfinite(p)):  # a model that diverged on some images: no score (scikit-learn raises)
        return float("nan")
    with warnings.catch_warnings():
        # float32 softmax rows sum to 1 within ~1e-7, outside scikit-learn's float64 check.
        warnings.filterwarnings("ignore", message="The y_prob values do not sum to one")
        return float(metrics.brier_score_loss(np.asarray(labels), p, labels=np.arange(p.shape[1]),
                                              scale_by_half=False))


def predictive_entropy(probabilities):
    """H(p) per example, in nats (0 log 0 = 0); NaN where a row is not all finite (not 0: no answer is no
    certainty, and OOD detection must not rank it)."""
    p = np.asarray(probabilities, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return np.where(np.all(np.isfinite(p), axis=-1), -terms.sum(axis=-1), np.nan)


def mutual_information(draws):
    """I(y; w) per example from MC draws [samples, batch, classes], in nats (clipped at 0). One draw at a time: the
    float64 temporaries of all of them at once were ~6x the draws (thousands of samples ran out of memory)."""
    total, entropies = np.zeros(np.shape(draws)[1:], np.float64), np.zeros(np.shape(draws)[1:2], np.float64)
    for draw in draws:
        total += draw
        entropies += predictive_entropy(draw)
    return np.maximum(predictive_entropy(total / len(draws)) - entropies / len(draws), 0.0)


def chance_p(in_scores, out_scores):
    """The one-sided Mann-Whitney U p-value of `out_scores` ranking above `in_scores` (the test behind AUROC,
    which is U / (n_in * n_out)): uniform on [0, 1] where the OOD images are of the test images' own kind, near 1
    where they score lower; 1 where every score ties; NaN where a score is not finite (a model that diverged)."""
    in_scores, out_scores = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    if not (np.all(np.isfinite(in_scores)) and np.all(np.isfinite(out_scores))):
        return float("nan")
    if np.ptp(np.concatenate([in_scores, out_scores])) == 0:  # every score tied: nothing ranks (scipy gives NaN)
        return 1.0
    return float(scipy_stats.mannwhitneyu(out_scores, in_scores, alternative="greater").pvalue)


# A one-sided p-value at or above which a score tells the OOD images from the test images no better than chance.
CHANCE_P = 0.05


def chance_ps(result):
    """{score name: its finite ood_chance_p_<name>} of an evaluation (or comparison row)."""
    return {key[len("ood_chance_p_"):]: value for key, value in result.items()
            if key.startswith("ood_chance_p_") and value is not None and np.isfinite(value)}


def no_better_than_chance(result):
    """The score (its name, as in ood_chance_p_<name>) of the highest AUROC of an evaluation (or comparison row),
    where none tells its OOD images from its test images better than chance: no finite p below CHANCE_P after Holm's
    correction over the k scores (the smallest at least CHANCE_P / k; uncorrected, one of three correlated scores
    fell below 0.05 in 8% of random splits of one test set). Else None, also for evaluations saved before the
    p-values were kept."""
    p = chance_ps(result)
    if not p or min(p.values()) < CHANCE_P / len(p):
        return None
    return max(p, key=lambda name: result.get(f"ood_auroc_{name}", -np.inf))  # (eval.py's line names it too)


def check_ood_is_other(test_sha256, ood_sha256, what):
    """DataError where the out-of-distribution data is the test data itself (`what`: whose, a run or data), by
    their fingerprints: an AUROC of 0.5 by construction."""
    if ood_sha256 and ood_sha256 == test_sha256:
        raise DataError(f"the out-of-distribution data is the test data of {what}; give images of something else "
                        "(e.g. Fashion-MNIST for an MNIST model)")


def ood_detection(in_scores, out_scores):
    """{"auroc", "fpr95"}: how well `score` separates OOD (positive) from in-distribution.

    FPR95 is the fraction of in-distribution examples scored at least as high
    as the threshold that flags 95% of the OOD examples (lower is better).
    """
    y = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    s = np.concatenate([np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)])
    if len(in_scores) == 0 or len(out_scores) == 0:
        raise ValueError("OOD detection needs in-distribution and out-of-distribution examples")
    if not np.all(np.isfinite(s)):  # scores of non-finite probabilities: none to rank by
        return {"auroc": float("nan"), "fpr95": float("nan")}
    # Every threshold kept: the default drops collinear points, and with tied scores the one at 95% TPR with them.
    fpr, tpr, _ = metrics.roc_curve(y, s, drop_intermediate=False)
    return {"auroc": float(metrics.roc_auc_score(y, s)),
            "fpr95": float(fpr[np.searchsorted(tpr, TPR_TARGET, side="left")])}


def reliability(probabilities, labels, bins=BINS):
    """Accuracy and mean top-class confidence per equal-width confidence bin, (lo, hi].

    {"edges": bins + 1 edges, "count": per bin, "accuracy" and "confidence":
    per bin, None where the bin is empty}; the bins of expected_calibration_error. Probabilities that are not
    all finite (a model diverged on some images) give an empty table, whose error is NaN.
    """
    p = np.asarray(probabilities, np.float64)
    if not np.all(np.isfinite(p)):
        return {"edges": np.linspace(0.0, 1.0, bins + 1).tolist(), "count": [0] * bins, "accuracy": [None] * bins,
                "confidence": [None] * bins}
    confidence = np.clip(p.max(axis=1), 0.0, 1.0)  # (a softmax may round past 1 by an ulp: the checks allow it)
    correct = (p.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    accuracy, mean_confidence = calibration.calibration_curve(
        correct, confidence, n_bins=bins, strategy="uniform", pos_label=1.0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=bins)  # its binning
    filled = np.flatnonzero(counts)
    per_bin = {"accuracy": [None] * bins, "confidence": [None] * bins}
    for k, b in enumerate(filled):
        per_bin["accuracy"][b] = float(accuracy[k])
        per_bin["confidence"][b] = float(mean_confidence[k])
    return {"edges": edges.tolist(), "count": counts.tolist(), **per_bin}


def calibration_error(table):
    """ECE of a reliability table: sum over bins of |accuracy - confidence| x the bin's share."""
    total = sum(table["count"])
    return float(sum(n * abs(a - c) for n, a, c in zip(table["count"], table["accuracy"], table["confidence"])
                     if n) / total) if total else float("nan")


def expected_calibration_error(probabilities, labels, bins=BINS):
    """ECE over equal-width confidence bins, (lo, hi], the first including 0 (Guo et al., 2017)."""
    return calibration_error(reliability(probabilities, labels, bins))


def pool_reliability(tables):
    """One reliability table from several over the same bins (e.g. one per seed)."""
    counts = np.sum([t["count"] for t in tables], axis=0)
    pooled = {"edges": tables[0]["edges"], "count": counts.tolist()}
    for key in ("accuracy", "confidence"):
        weighted = np.sum([[0.0 if v is None else v * n for v, n in zip(t[key], t["count"])]
                           for t in tables], axis=0)
        pooled[key] = [float(w / n) if n else None for w, n in zip(weighted, counts)]
    return pooled


def over_samples(draws, labels):
    """{"samples": [1..T], "nll": [...], "ece": [...], "brier": [...]} of the running MC mean (scored as `scores`
    scores one; kept one mean at a time, not T of them)."""
    curve, total = {"samples": [], "nll": [], "ece": [], "brier": []}, np.zeros(np.shape(draws)[1:], np.float64)
    for t, draw in enumerate(draws, start=1):
        total += draw
        found = scores(total / t, labels)
        curve["samples"].append(t)
        for key in ("nll", "ece", "brier"):
            curve[key].append(found[key])
    return curve


def scores(probabilities, labels):
    """accuracy, nll, ece and brier of one set of predictions (probabilities rounded past 1, as a softmax may by an
    ulp and the export checks allow, are read as 1)."""
    p = np.clip(np.asarray(probabilities), 0.0, 1.0)  # (NaN stays NaN)
    answered = np.all(np.isfinite(p), axis=1)  # a row with NaN is no answer, not class 0 (its argmax)
    return {"accuracy": float(np.mean((p.argmax(axis=1) == np.asarray(labels)) & answered)),
            "nll": stats.negative_log_likelihood(p, labels),
            "ece": expected_calibration_error(p, labels),
            "brier": brier_score(p, labels)}

