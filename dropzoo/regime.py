"""The regime a comparison's runs trained in: data, steps, and whether the no-dropout control overfit.

A placement contrast means little where the network without dropout did not
overfit (there was nothing for dropout to do) or where a variant did not
learn at all; `regime(rows)` says which, beside the contrasts.
"""
import numpy as np

from dropzoo import records
from dropzoo import stats

# The none control overfits when its final validation loss is at least this
# factor above its best epoch's (mean over seeds): early stopping would have
# stopped before the end, so there was something for a regulariser to do.
OVERFIT_VALIDATION_RISE = 1.05
# Below this many validation images their loss moves by more than that 5% between epochs by chance (a mean of
# per-image losses whose spread is about their mean: ~1/sqrt(n) of itself, 25% at 16 images), and a final loss
# over the lowest of a noisy series is above 1 by chance alone: the rise cannot tell overfitting from noise.
MIN_VALIDATION_IMAGES = 100


def _is_none(row):
    return row["config"]["placement"] == "none" and not row["config"]["sites"]


def _control(runs):
    """One `none` control's regime: its validation rise (mean over seeds), overfit or not, its fit.

    Overfit is yes or no where the rise's 95% interval over seeds lies on one
    side of OVERFIT_VALIDATION_RISE, or where every seed does; else
    `none_overfit_borderline` (the mean decides `none_overfit`, and the text
    says it is borderline).
    """
    rises = [r["validation_rise"] for r in runs if r.get("validation_rise")]
    # A final validation loss that is not finite (diverged) has no rise to average: left out, and said.
    lost = sum(not np.isfinite(x) for x in rises)
    rises = [x for x in rises if np.isfinite(x)]
    fitted = [r for r in runs if r.get("train_accuracy") is not None and np.isfinite(r["train_accuracy"])
              and np.isfinite(r["test_accuracy"])]
    fits, tests = [r["train_accuracy"] for r in fitted], [r["test_accuracy"] for r in fitted]
    rise, _, half = stats.mean_ci(rises) if rises else (None, None, float("nan"))
    # Seeds left out of the rise because their histories start at a resume (said where others give a rise).
    partial = sum(bool(r.get("partial_history")) and not r.get("validation_rise") for r in runs) if rise else 0
    above = sum(x >= OVERFIT_VALIDATION_RISE for x in rises)
    images = [r["num_validation"] for r in runs if r.get("num_validation") and r.get("validation_rise")
              and np.isfinite(r["validation_rise"])]  # of the rises averaged
    few = min(images) if rise is not None and images and min(images) < MIN_VALIDATION_IMAGES else None
    overfit = None if rise is None or few else bool(rise >= OVERFIT_VALIDATION_RISE)
    interval = [rise - half, rise + half] if rise is not None and np.isfinite(half) else None
    return {"none_validation_rise": rise, "none_overfit": overfit, "none_validation_rise_ci": interval,
            "none_overfit_borderline": bool(not few and interval
                                            and interval[0] < OVERFIT_VALIDATION_RISE <= interval[1]
                                            and 0 < above < len(rises)),
            "none_rise_seeds": [above, len(rises)],
            **({"none_validation_images": few} if few else {}),
            **({"none_rise_not_finite": lost} if lost else {}),
            **({"none_rise_partial": partial} if partial else {}),
            # Why a rise is unknown: histories that start at a resume, or runs of fewer than two epochs.
            "none_partial_history": rise is None and any(r.get("partial_history") for r in runs),
            # Beside the rise: a noisy validation loss can rise on a network that still underfits, and
            # without a validation curve the train-test gap is what says how much there is to regularise.
            "none_train_accuracy": float(np.mean(fits)) if fits else None,
            "none_test_accuracy": float(np.mean(tests)) if tests else None}


def regime(rows):
    """What the runs trained on and how far: {"train_examples", "steps", "none_overfit", ...}.

    `none_overfit` (None without a `none` variant, or without two validation
    points a run): whether the no-dropout control overfit, by
    OVERFIT_VALIDATION_RISE: its final validation loss over its best epoch's,
    mean over seeds (`none_validation_rise`). With several `none` variants
    (one per activation, training size, ...) each is its own control:
    `controls` {label: that control's fields}, and the pooled fields stay None.
    `untrained` [(label, train accuracy, chance)]: variants whose mean
    training accuracy (dropout off) is below twice chance, whose contrasts
    compare networks that did not learn.
    """
    def distinct(values):
        values = sorted({v for v in values if v is not None})
        return values[0] if len(values) == 1 else values

    controls = {}
    for r in rows:
        if _is_none(r):
            controls.setdefault(r["variant"], []).append(r)
    result = {"train_examples": distinct(r.get("num_train") for r in rows),
              "steps": distinct(r.get("steps") for r in rows), "overfit_threshold": OVERFIT_VALIDATION_RISE,
              "has_none": bool(controls), **_control([])}
    if len(controls) == 1:
        result.update(_control(next(iter(controls.values()))))
    several = len(controls) > 1
    labels = sorted(controls, key=records.natural_key) if several else []
    result["controls"] = {label: _control(controls[label]) for label in labels}
    result["untrained"] = []
    for runs in records.group(rows).values():
        fits = [r["train_accuracy"] for r in runs if r.get("train_accuracy") is not None]
        fits = fits if all(np.isfinite(fits)) else []  # not a fit; non_finite_notes names such runs
        classes = runs[0].get("num_classes")
        if fits and classes and np.mean(fits) < 2 / classes:
            result["untrained"].append((runs[0]["variant"], float(np.mean(fits)), 1 / classes))
    return result


def _control_text(control, threshold):
    rise, fits = control.get("none_validation_rise"), control.get("none_train_accuracy")
    tested = control.get("none_test_accuracy")
    few = control.get("none_validation_images")
    unknown = (f"cannot tell (its validation loss is of {few} images, too few to tell a rise from noise: with "
               f"fewer than {MIN_VALIDATION_IMAGES} a loss moves by more than {OVERFIT_VALIDATION_RISE - 1:.0%} "
               "between epochs by chance; give more data or a larger --validation_fraction)" if few
               else "cannot tell (its histories start where a run resumed: the earlier epochs' validation losses "
               "were not recorded)" if control.get("none_partial_history")
               else f"cannot tell (the final validation loss of all {control['none_rise_not_finite']} seed(s) is not "
               "finite: they diverged)" if control.get("none_rise_not_finite")
               else "cannot tell (fewer than two validation points a run)")
    overfit = {True: "yes", False: "**no** (dropout had little to do)", None: unknown}[control.get("none_overfit")]
    interval, (above, seeds) = control.get("none_validation_rise_ci"), control.get("none_rise_seeds") or (0, 0)
    if control.get("none_overfit_borderline"):
        overfit = f"borderline, {'yes' if control['none_overfit'] else 'no'} by its mean"
    unclipped = " (unclipped: the ratio is at least 1)" if interval and interval[0] < 1 else ""
    spread = (f", 95% CI [{interval[0]:.3f}, {interval[1]:.3f}]{unclipped} over {seeds} seeds, {above} of them at "
              f"or above {threshold:g}x"
              if interval else f", no spread over {seeds} seeds, {above} of them at or above {threshold:g}x"
              if seeds > 1 else "")
    if control.get("none_rise_not_finite"):
        spread += (f"; {control['none_rise_not_finite']} seed(s) left out, whose final validation loss is not "
                   "finite (diverged)")
    if control.get("none_rise_partial"):
        spread += (f"; {control['none_rise_partial']} seed(s) left out, whose histories start where a run resumed "
                   "(the earlier epochs' validation losses were not recorded)")
    return (overfit + (f" (its final validation loss is {rise:.3f}x its best epoch's{spread}; overfitting means "
                       f"≥ {threshold:g}x)" if rise else "")
            + (f"; it fits {fits:.1%} of its training data (dropout off)" if fits is not None else "")
            + (f", {abs(100 * (fits - tested)):.1f} points {'above' if fits >= tested else 'below'} its test "
               f"accuracy ({tested:.1%})" if fits is not None and tested is not None else ""))


def lines(found):
    """`regime(rows)`'s answer in words: the data and steps, each `none` control, and any variant that did not learn."""
    head = (f"Regime: {found['train_examples']} training example{_plural(found['train_examples'])}, "
            f"{found['steps']} step{_plural(found['steps'])}")
    threshold = found["overfit_threshold"]
    controls = found.get("controls") or {}
    if controls:
        lines = [head + "; each `none` control, overfit or not:", ""]
        lines += [f"- {label}: {_control_text(control, threshold)}." for label, control in controls.items()]
    elif found.get("has_none", found.get("none_overfit") is not None):
        lines = [f"{head}; the `none` control overfit: {_control_text(found, threshold)}."]
    else:
        lines = [f"{head}; whether the network overfits without dropout: not measured (no `none` variant here; "
                 "add --placement=none to the sweep)."]
    for label, fits, chance in found.get("untrained") or []:
        lines += ["", f"**Did not learn: {label}** fits {fits:.1%} of its training data (dropout off; chance "
                      f"{chance:.0%}): its contrasts compare networks that did not train, not placements."]
    return lines


def _plural(count):
    """'s' unless `count` is 1 (a list of several values takes the plural)."""
    return "" if count == 1 else "s"
