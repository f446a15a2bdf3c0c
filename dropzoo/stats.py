"""The statistics behind a placement comparison, on plain numbers.

Kept free of TensorFlow so they are checked exactly against known inputs.
"""
import math
import warnings

import numpy as np
from scipy import stats as scipy_stats


def mean_ci(values, confidence=0.95):
    """(mean, sample std, half-width of the t confidence interval) over seeds.

    One value gives std and half-width NaN: one seed says nothing about noise.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    std = float(x.std(ddof=1))
    t = scipy_stats.t.ppf(0.5 + confidence / 2, df=x.size - 1)
    return mean, std, float(t * std / math.sqrt(x.size))


def welch_p_value(a, b):
    """Two-sided p-value of Welch's t-test (unequal variances); NaN if undefined."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or b.size < 2:
        return math.nan
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    with warnings.catch_warnings():  # near-identical seeds trip scipy's precision warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


def paired_p_value(a, b):
    """Two-sided p-value of the paired t-test of a[i] vs b[i] (same seed i); NaN if undefined.

    Runs with the same seed share initial weights and data order, so their
    difference removes that part of the noise, which Welch's test cannot.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a paired test needs one value per seed on both sides, got {a.size} and {b.size}")
    if a.size < 2:
        return math.nan
    d = a - b
    if d.var(ddof=1) == 0:
        return 1.0 if d.mean() == 0 else 0.0
    return float(scipy_stats.ttest_rel(a, b).pvalue)


def holm(p_values):
    """Holm's step-down adjusted p-values, in the given order (NaN stays NaN, and is not counted).

    Rejecting where the adjusted p < alpha keeps the family-wise error rate
    of all the comparisons at alpha (Holm, 1979).
    """
    p = np.asarray(p_values, np.float64)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def expected_calibration_error(probabilities, labels, bins=15):
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| x bin share.

    Confidence is the top class probability; bins are (lo, hi], the first
    including 0, as in Guo et al. (2017).
    """
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(labels)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def negative_log_likelihood(probabilities, labels, epsilon=1e-7):
    """Mean -log p(label), with probabilities clipped to [eps, 1 - eps] as Keras' crossentropy.

    A confident wrong answer then costs -log(1e-7) ~ 16.1 instead of infinity.
    """
    p = np.asarray(probabilities, np.float64)
    picked = p[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(picked, epsilon, 1.0 - epsilon)).mean())
