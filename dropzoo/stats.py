"""The statistics behind a placement comparison, on plain numbers.

Kept free of TensorFlow so they are checked exactly against known inputs.
A planned contrast is a paired comparison over seeds (the same seed gives
both variants the same initial weights and data order): `paired_contrast`
gives its mean difference with a confidence interval, the paired t-test,
the two one-sided tests of equivalence within a margin (TOST), and the
minimum detectable effect (`minimum_detectable_effect`), the smallest true
difference the seeds run would have found with 80% power. `verdict` says
what the three together support.
"""
import itertools
import math

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

# The power a minimum detectable effect is quoted at.
POWER = 0.8


def mean_ci(values, confidence=0.95):
    """(mean, sample std, half-width of the t confidence interval) over seeds.

    One value gives std and half-width NaN: one seed says nothing about noise. Values that are all one
    (no_spread) give half-width NaN too: a zero-width interval would claim the mean is known exactly.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    std = float(x.std(ddof=1))
    if no_spread(x):
        return mean, std, math.nan
    t = scipy_stats.t.ppf(0.5 + confidence / 2, df=x.size - 1)
    return mean, std, float(t * std / math.sqrt(x.size))


def no_spread(differences):
    """True where 2 or more per-seed differences are one value, up to float rounding: t is undefined.

    Accuracy on a test set moves in steps (1e-4 on 10,000 images), so a few
    seeds can all differ by the same step; their sample variance is 0, or
    1e-32 from rounding, and a t statistic of 0 / 0 or 1e-4 / 1e-17 would
    claim certainty from two seeds.
    """
    d = np.asarray(differences, np.float64)
    return d.size >= 2 and float(np.ptp(d)) <= max(1e-9 * float(np.abs(d).max()), 1e-12)


def paired_p_value(a, b):
    """Two-sided p-value of the paired t-test of a[i] vs b[i] (same seed i); NaN if undefined.

    Runs with the same seed share initial weights and data order, so their
    difference removes that part of the noise, which Welch's test cannot.
    Differences without spread (`no_spread`) get the exact sign-flip test's
    p instead: 2 / 2^n if they are one nonzero value, else 1. No p is below
    that 2 / 2^n (`sign_flip_floor`), n counting the differences that are
    not 0 (a tie is the same flipped, so it adds nothing to the exact test:
    five seeds of +1 image and a sixth of 0 stay at 2/32), so 'differs'
    needs 6 seeds at 0.05 whatever their spread.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a paired test needs one value per seed on both sides, got {a.size} and {b.size}")
    if a.size < 2:
        return math.nan
    d = a - b
    if no_spread(d):
        return 1.0 if abs(float(d.mean())) <= 1e-12 else sign_flip_floor(d.size)
    return max(float(scipy_stats.ttest_rel(a, b).pvalue), sign_flip_floor(untied(d)))


def untied(differences, scale=1.0):
    """How many of `differences` are not 0 (beyond float rounding of values about `scale`): what a sign flip
    moves."""
    return int(np.count_nonzero(np.abs(np.asarray(differences, np.float64)) > 1e-9 * max(scale, 1e-3)))


def sign_flip_floor(n, sides=2):
    """The smallest p an exact sign-flip test over `n` paired differences can give: 2 / 2^n (1 / 2^n one-sided).

    A t-test's p below it rests on the differences being normal, which n
    seeds cannot show: five differences of +1 image give p = 2/32 (no
    spread), and changing one to +2 would give a t-test's 0.004. Each p of
    a contrast is raised to it. A floor, not the exact test: with tied
    differences a t-test's p above it can still be below the exact one's.
    """
    return min(1.0, sides * 0.5**n)


def seeds_to_reach(alpha, sides=2):
    """The fewest seeds whose sign_flip_floor is below `alpha`: 6 two-sided and 5 one-sided at 0.05."""
    return next(n for n in itertools.count(1) if sign_flip_floor(n, sides) < alpha)


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


def paired_power(effect, sd, n, alpha):
    """Power of the two-sided paired t-test at level `alpha` with `n` pairs, for a true mean difference `effect`.

    The statistic is noncentral t (df n - 1, noncentrality effect * sqrt(n) / sd).
    Both tails are taken as survival functions (the lower one mirrored): scipy
    1.17's nct.cdf returns NaN far in the tail, e.g. nct.cdf(-2.78, 4, 10).
    """
    if n < 2 or not sd > 0:
        return math.nan
    df, critical = n - 1, scipy_stats.t.ppf(1 - alpha / 2, n - 1)
    noncentrality = effect * math.sqrt(n) / sd
    return float(scipy_stats.nct.sf(critical, df, noncentrality) + scipy_stats.nct.sf(critical, df, -noncentrality))


def minimum_detectable_effect(sd, n, alpha, power=POWER):
    """The smallest true mean difference a two-sided paired t-test at `alpha` finds with `power`.

    `sd` is the standard deviation of the per-seed differences, `n` the
    number of pairs. NaN where it is undefined: fewer than 2 pairs, or
    differences without spread (`sd` 0), where no t-test is run. Infinite
    where `n` seeds cannot reach `alpha` at all (`sign_flip_floor`).
    """
    if n < 2 or not np.isfinite(sd) or sd == 0:
        return math.nan
    if sign_flip_floor(n) >= alpha:
        return math.inf
    # Power grows with the effect; bracket the root, doubling the upper end.
    high = sd
    while paired_power(high, sd, n, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda e: paired_power(e, sd, n, alpha) - power, 0.0, high, xtol=1e-12 * sd))


def tost_paired_p(differences, margin):
    """p-value of equivalence within (-margin, +margin): the larger of the two one-sided paired t-tests.

    H0: the mean difference is <= -margin or >= +margin. A p below alpha
    says the difference lies inside the margin (Schuirmann, 1987). NaN
    with fewer than 2 pairs. Differences without spread (`no_spread`) get
    the exact one-sided sign-flip tests' p: 1 / 2^n if they lie inside the
    margin, else 1. No p is below that 1 / 2^n (`sign_flip_floor`), n counting
    each side's differences that do not sit on the margin (`untied`).
    """
    d = np.asarray(differences, np.float64)
    if d.size < 2:
        return math.nan
    if no_spread(d):
        # (strictly inside, past the rounding of a mean: 50 images in 10,000 at every seed is on a 0.005 margin)
        return sign_flip_floor(d.size, sides=1) if abs(float(d.mean())) < margin * (1 - 1e-9) else 1.0
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(d.size)
    lower = scipy_stats.t.sf((mean + margin) / se, d.size - 1)  # H0: mean <= -margin
    upper = scipy_stats.t.cdf((mean - margin) / se, d.size - 1)  # H0: mean >= +margin
    floors = [sign_flip_floor(untied(d + side * margin, margin), sides=1) for side in (1, -1)]
    return float(max(lower, upper, *floors))


def paired_contrast(a, b, margin, alpha_for_mde, confidence=0.95):
    """A vs B paired over seeds: {"n", "difference", "ci_low", "ci_high", "sd", "p", "p_tost", "mde", ...}.

    `difference` is the mean of a[i] - b[i]; the interval is the t interval at
    `confidence`; `p` the two-sided paired t-test; `p_tost` equivalence within
    +-`margin`; `mde` the minimum detectable effect at `alpha_for_mde` (the
    family's alpha / m) with POWER, infinite where the `untied` seeds (those
    whose difference is not 0) cannot reach it, as `p` cannot; and
    `equivalence_reachable` whether each side's seeds off the margin can.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a paired contrast needs one value per seed on both sides, got {a.size} and {b.size}")
    d = a - b
    mean, sd, half = mean_ci(d, confidence) if d.size else (math.nan, math.nan, math.nan)
    flat = no_spread(d)
    if flat:  # (mean_ci gives no interval then)
        sd = 0.0
    mde, moved = minimum_detectable_effect(sd, d.size, alpha_for_mde), untied(d)
    if np.isfinite(mde) and sign_flip_floor(moved) >= alpha_for_mde:  # ties: fewer seeds than n can move p
        mde = math.inf
    # Each side's floor counts the differences off that side's margin, as tost_paired_p's does.
    off_margin = [untied(d + side * margin, margin) for side in (1, -1)]
    return {"n": int(d.size), "difference": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd,
            # Descriptive (descriptive.md): the median difference, and the seeds where A is above, equal, below.
            "median": float(np.median(d)) if d.size else math.nan,
            "signs": (int((d > 0).sum()), int((d == 0).sum()), int((d < 0).sum())),
            "no_spread": flat, "untied": moved, "p": paired_p_value(a, b), "p_tost": tost_paired_p(d, margin),
            "mde": mde, "alpha": alpha_for_mde,
            "equivalence_reachable": bool(d.size >= 2 and all(sign_flip_floor(n, sides=1) < alpha_for_mde
                                                              for n in off_margin))}


def error_bar(result):
    """(below, above): a paired_contrast's distance from its difference to each end of its CI; 0 without one."""
    below, above = result["difference"] - result["ci_low"], result["ci_high"] - result["difference"]
    return (below if np.isfinite(below) else 0.0), (above if np.isfinite(above) else 0.0)


DIFFERS, EQUIVALENT, INCONCLUSIVE = "differs", "equivalent", "inconclusive"


def verdict(p_holm, p_tost_holm, alpha):
    """What a contrast's Holm-adjusted tests support: DIFFERS, EQUIVALENT, both, or INCONCLUSIVE.

    Returns the list of what holds: [DIFFERS] (the difference test survives
    Holm), [EQUIVALENT] (the equivalence test does), [DIFFERS, EQUIVALENT]
    (a real difference smaller than the margin), or [INCONCLUSIVE].
    """
    found = [name for name, p in ((DIFFERS, p_holm), (EQUIVALENT, p_tost_holm)) if p is not None
             and np.isfinite(p) and p < alpha]
    return found or [INCONCLUSIVE]


def negative_log_likelihood(probabilities, labels, epsilon=1e-7):
    """Mean -log p(label), with probabilities clipped to [eps, 1 - eps] as Keras' crossentropy.

    A confident wrong answer then costs -log(1e-7) ~ 16.1 instead of infinity.
    """
    p = np.asarray(probabilities, np.float64)
    picked = p[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(picked, epsilon, 1.0 - epsilon)).mean())
