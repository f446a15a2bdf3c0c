"""Compare finished runs: evaluate (or read) each run's test scores, summarise over seeds, test contrasts.

`compare_runs(runs_dirs)` finds every finished run below the given
directories, scores each on its test data (`records.evaluations`: from the
run's saved evaluation when it has one, else through its SavedModel's
serving signature), groups runs into variants by what they recorded (their
config without the seed, their resolved dropout sites and their resolved
precision: two precisions or two meanings of a placement are never pooled),
and computes:

- per variant: mean, std and 95% CI over seeds of every column in `report.COLUMNS` (`summarise`);
- per contrast (variant A vs variant B, paired by seed): the mean difference
  of test accuracy and of test NLL with its 95% CI, the paired t-test, the
  equivalence test within a margin (TOST), the minimum detectable effect at
  80% power for the seeds run at alpha / m, and a verdict; each metric is one
  Holm family over the contrasts (`contrast_table`). The contrasts are the
  study's planned ones (`contrasts=[(A, B), ...]`), or without them every
  variant against the baseline placement of its kind, activation, norm ...;
- with several rates per placement, each placement's rate chosen on validation loss (`tune_rates`); the test
  split is never used to choose;
- the regime: training-set size and steps, train-test gaps, and whether the `none` control overfit (regime.py).

`report.write` renders it all (Markdown, CSV, plots, TensorBoard HParams).
"""
import collections
import os
import re

import numpy as np

from dropzoo import contrasts as contrasts_lib
from dropzoo import descriptive
from dropzoo import divergence
from dropzoo import evaluate
from dropzoo import files
from dropzoo import ood as ood_lib
from dropzoo import pooled_data
from dropzoo import provenance
from dropzoo import rates_report
from dropzoo import records
from dropzoo import regime as regime_lib
from dropzoo import report
from dropzoo import shards
from dropzoo import sizes_report
from dropzoo import sources
from dropzoo import stats
from dropzoo import uncertainty_report
from dropzoo import variants
from dropzoo import workdir as workdirs
from dropzoo.errors import ConfigError


def summarise(rows, baseline="canonical"):
    """Per-variant statistics over seeds: baselines first, then by name.

    A variant whose runs are all identical by construction to another's gets
    `identical_to` (that variant's label).
    """
    groups = records.group(rows)
    label_of_run = {r["run"]: r["variant"] for r in rows}
    order = sorted(groups, key=lambda k: (groups[k][0]["config"]["placement"] != baseline,
                                          records.natural_key(groups[k][0]["variant"])))
    table = []
    for key in order:
        runs = groups[key]
        entry = {"variant": runs[0]["variant"], "seeds": len(runs), "sites": runs[0].get("sites"),
                 "precision": runs[0].get("precision"), "key": key}
        for column in report.COLUMNS:
            values = [r[column.metric] for r in runs if r.get(column.metric) is not None
                      and np.isfinite(r[column.metric])]  # a contrast's note names a non-finite score
            if values:
                mean, std, half = stats.mean_ci(values)
                entry[column.metric] = {"mean": mean, "std": std, "ci95": half, "n": len(values)}
        targets = {label_of_run.get(r["identical_to"], r["identical_to"]) for r in runs}
        entry["identical_to"] = targets.pop() if len(targets) == 1 and None not in targets else None
        table.append(entry)
    return table


SPLIT = "is split into"  # a baseline's runs apart (generators, sites): baseline_pairs' note, which says why


def code_notes(rows):
    """A note where the runs were trained by several versions of this code (git commits, where recorded), and one where
    by several versions of TensorFlow and Keras (runs recorded as identical by construction were not trained)."""
    rows = descriptive.trained_runs(rows) or rows
    codes = collections.Counter(r["code"] for r in rows if provenance.is_commit(r.get("code")))
    frameworks = collections.Counter(r["frameworks"] for r in rows if r.get("frameworks"))
    notes = [] if len(codes) < 2 else [
        f"the runs were trained by {len(codes)} versions of this code ("
        + ", ".join(f"{code[:12]}{'+changes' if code.endswith('+changes') else ''}: {n} run{'s' * (n > 1)}"
                    for code, n in sorted(codes.items())) + "); their variants pool only where those versions "
        "build the same networks and masks (the mask generator is checked; the rest is not)"]
    if len(frameworks) > 1:  # seeds pair by equal initial weights and masks, which these versions draw
        notes.append(f"the runs were trained under {len(frameworks)} versions of the frameworks ("
                     + "; ".join(f"{v}: {n} run{'s' * (n > 1)}" for v, n in sorted(frameworks.items()))
                     + "); a seed pairs runs of one start only where they draw the same initial weights and masks: "
                       "train a study's seeds under one version (a pinned environment), or check the pairs apart")
    return notes


def replica_notes(rows):
    """A note for each variant whose seeds trained on different numbers of replicas (mirrored, multi-worker)."""
    counts, masked = {}, set()
    for r in rows:
        counts.setdefault(r["variant"], collections.Counter())[r.get("replicas", 1)] += 1
        if r.get("sites"):
            masked.add(r["variant"])
    return [f"{variant} pools seeds trained on {len(held)} numbers of replicas ("
            + "; ".join(f"{k} replica{'s' * (k != 1)}: {n} run{'s' * (n != 1)}" for k, n in sorted(held.items()))
            + ("): each replica draws its own masks, alike in distribution, so plain dropout networks pool"
               if variant in masked else "): it has no dropout, and its replicas step as one batch up to rounding, "
               "so a plain network pools")
            + "; with BatchNorm each replica normalises by its own share of the batch, so compare those apart"
            for variant, held in sorted(counts.items()) if len(held) > 1]


def resolution_notes(rows, margins):
    """A note where one test image moves accuracy by more than the accuracy margin: a few dozen test images."""
    sizes = [r["num_examples"] for r in rows if r.get("num_examples")]
    step, margin = 1 / min(sizes) if sizes else 0, margins.get("test_accuracy", 0)
    if step <= margin:
        return []
    return [f"the smallest test data here has {min(sizes):,} images, so one image moves accuracy by "
            f"{100 * step:.2f} points, more than the ±{100 * margin:g}-point margin: the intervals count the seeds' "
            "spread only, not how few images decide each score; test on more images for an answer at this margin"]


def keras_model_notes(rows):
    """A note for each model taken from a .keras file: every seed starts from the file's weights."""
    files = sorted({(r["config"]["model"], os.path.basename(r["config"]["keras_model"])) for r in rows
                    if r["config"].get("keras_model") and r["config"].get("keras_weights", "kept") == "kept"})
    fresh = {r["config"]["model"] for r in rows if r["config"].get("keras_weights") == "fresh"}
    return [f"{model}{' (its --keras_weights=kept runs)' if model in fresh else ''}: every seed started from the "
            f"weights in {file} (--keras_model), so the seeds vary the masks "
            "and the order of the data, not the initial weights: the spread, intervals and MDEs are those of that "
            "one initialisation (--keras_weights=fresh draws them per seed)" for model, file in files]


def non_finite_notes(rows):
    """A note for each variant and column with scores that are not finite (left out of its mean); a run that
    diverged in training, which has no score, has its own note (divergence.rows)."""
    found = {}
    for r in (r for r in rows if "diverged_in_epoch" not in r):
        for column in report.COLUMNS:
            value = r.get(column.metric)
            if isinstance(value, (int, float)) and not np.isfinite(value):
                found.setdefault((r["variant"], column.metric, str(value)), []).append(r["seed"])
    return [f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, sorted(seeds)))} of {variant} "
            f"score{'s' * (len(seeds) == 1)} {metric} {value}: left out of the variant's {metric} mean and of its "
            "contrasts (its other columns' means keep the run's finite scores, a diverged run's accuracy too)"
            for (variant, metric, value), seeds in sorted(found.items())]


# ------------------------------------------------------------------ contrasts


def _runs_per_directory(runs_dirs, runs):
    """[(directory, runs found below it)] where runs were pooled from several directories, else []."""
    if len(runs_dirs) < 2:
        return []
    inside = [next((d for d in runs_dirs if files.is_within(run, d)), None) for run in runs]  # (a run named too)
    return [(d, inside.count(d)) for d in runs_dirs]


def baseline_pairs(rows, baseline="canonical", notes=None):
    """[(variant key, baseline key)]: every variant against the baseline placement of its kind, activation, ...

    The baseline is found at the variant's own rate, or at its only rate when
    the rows hold one rate per placement (rates tuned on validation). A
    variant whose baseline is split in several (mask generators) that none
    of them matches is not paired, and `notes` (a list) says so.
    """
    groups = records.group(rows)
    pairs = []
    for key, runs in groups.items():
        config = runs[0]["config"]
        if config["placement"] == baseline and not config["sites"]:
            continue
        # Data read elsewhere, or named by one run of its content only: as the key has it (variants.label_rows).
        as_keyed = {**config, **{name: dict(key)[name] for name in (*variants.READ_APART, "dataset")}}
        target = variants.row_key(runs[0], variants.baseline_config(as_keyed, baseline))
        candidates = [k for k in groups if _strip(k) == _strip(target)
                      and groups[k][0]["config"]["placement"] == baseline and not groups[k][0]["config"]["sites"]]
        if len(candidates) != 1:  # the baseline at another rate, when each placement kept one
            at_any_rate = _strip(variants.without(target, "rate"))
            candidates = [k for k in groups if _strip(variants.without(k, "rate")) == at_any_rate
                          and groups[k][0]["config"]["placement"] == baseline]
        if len(candidates) > 1:  # baselines drawn by several mask generators: the variant's own
            split = candidates
            candidates = [k for k in candidates if dict(k)["_mask_generator"] == dict(target)["_mask_generator"]]
            if len(candidates) != 1 and notes is not None:  # none of them, or split by sites too
                names = [groups[k][0]["variant"] for k in split]
                fix = ("plan it with --contrasts naming one of them" if not any(set(n) & set(":,") for n in names)
                       else "compare each directory apart, or train one of them again with this code")  # (unnamable)
                notes.append(f"{runs[0]['variant']} - {baseline} is not tested: {baseline} {SPLIT} "
                             f"{' and '.join(names)}, and none of them is {runs[0]['variant']}'s own; {fix}")
        if len(candidates) == 1 and candidates[0] != key:
            pairs.append((key, candidates[0]))
        elif not candidates and notes is not None and (note := _no_baseline_note(runs[0], target, groups, baseline)):
            notes.append(note)
    contrasts_lib.check_same_data(groups, pairs)
    # In label order, whichever directories the runs were found in.
    return sorted(pairs, key=lambda pair: (groups[pair[1]][0]["variant"], groups[pair[0]][0]["variant"]))


def _no_baseline_note(row, target, groups, baseline):
    """Why a variant is not tested where other runs are `baseline`: the nearest of them and how it differs."""
    own = dict(_strip(target))
    differences = []
    for key, runs in groups.items():
        if runs[0]["config"]["placement"] == baseline and not runs[0]["config"]["sites"]:
            theirs = dict(_strip(key))
            fields = sorted(name for name in own.keys() | theirs.keys()
                            if name != "rate" and own.get(name) != theirs.get(name))
            differences.append((len(fields), runs[0]["variant"], fields, theirs))
    if not differences:  # no baseline anywhere: the comparison's own note says so
        return None
    _, label, fields, theirs = min(differences, key=lambda d: d[:2])
    if not fields:
        return None
    told = "; ".join(f"{name.lstrip('_')} {theirs.get(name)!r} where it has {own.get(name)!r}" for name in fields[:3])
    return (f"{row['variant']} - {baseline} is not tested: no `{baseline}` run differs from it only in placement "
            f"(the nearest, {label}, has {told}); train `{baseline}` runs like it, or plan the contrast with "
            "--contrasts=A:B")


def _strip(key):
    """A key without its resolved sites and mask generator: a baseline's are its own.

    (A variant without dropout has no generator; its baseline has one.)
    """
    return tuple(item for item in key if item[0] not in ("_sites", "_mask_generator"))


# ---------------------------------------------------------------------- rates


def _rate_group(row):
    """A row's variant key without its rate: --rate, and the rates inside its recorded sites (each run of a rate
    grid records its placement's sites at its own rate: dense1.post:0.25, dense1.post:0.5). A run without --rate
    (its placement's own rates, which may differ by site) is a group of its own."""
    key = variants.without(row.get("key") or variants.variant_key(row["config"]), "rate")
    if row["config"].get("rate") is None:
        return key + (("_own_rates", True),)
    return tuple((name, re.sub(r":[0-9.eE+-]+(?=:|,|$)", "", value) if name == "_sites" and value else value)
                 for name, value in key)


def _diverged(runs, metric):
    """The runs whose `metric` is recorded and not finite (a diverged seed)."""
    return [r for r in runs if r.get(metric) is not None and not np.isfinite(r[metric])]


def _finite_mean(runs, metric):
    """The mean of `metric` over the runs that recorded a finite one (NaN without any)."""
    values = [r[metric] for r in runs if r.get(metric) is not None and np.isfinite(r[metric])]
    return float(np.mean(values)) if values else float("nan")


def tune_rates(rows):
    """Each placement's rate, chosen on validation data only; None if no placement has several.

    Groups runs by their variant key without rate (a placement of one kind, activation, norm, ...), and picks the
    rate with the lowest mean validation loss over seeds. Returns {"selected": {group: rate}, "grid": [{variant,
    rate, seeds, chosen_on, only, validation_loss, test_accuracy, test_loss, selected}], "notes": [...]}: the test
    metrics are reported, never used to choose. The choice reads the seeds every rate of the placement ran
    (`chosen_on` of them; a note names the others), and `validation_loss` is its mean there. A non-finite score (a
    diverged seed) is left out of its mean, and a note says so; a placement whose every run diverged is its lowest.
    """
    by_group = {}
    for r in rows:
        by_group.setdefault(_rate_group(r), {}).setdefault(r["config"]["rate"], []).append(r)
    if not any(len(rates) > 1 for rates in by_group.values()):
        return None
    selected, grid, left_out, unchosen, uneven, pooled = {}, [], {}, [], [], set()
    for group_key, rates in by_group.items():
        first = next(iter(rates.values()))[0]
        # Chosen on the seeds every rate has: a rate run on fewer (easier) seeds won on them alone.
        shared = set.intersection(*({r["seed"] for r in runs} for runs in rates.values()))
        if not any(np.isfinite(_finite_mean([r for r in runs if r["seed"] in shared], "validation_loss"))
                   for runs in rates.values()):  # every shared seed diverged (or none shared): each rate's own seeds
            shared = set()
        chosen_on = {rate: [r for r in runs if r["seed"] in shared] or runs for rate, runs in rates.items()}
        scored = {rate: _finite_mean(runs, "validation_loss") for rate, runs in chosen_on.items()}
        finite = {rate: loss for rate, loss in scored.items() if np.isfinite(loss)}
        no_dropout = not any(r.get("sites") for runs in rates.values() for r in runs)  # one network at every rate
        lost = all("diverged_in_epoch" in r for runs in rates.values() for r in runs)  # its lowest: inconclusive
        if not finite and len(rates) > 1 and not no_dropout and not lost:
            raise ValueError(f"the runs of {first['variant']} record no finite validation loss to choose a rate by; "
                             "train them with --validation_fraction > 0, or compare each rate's runs alone "
                             "(--runs_dir=their directories)")
        # A rate whose seeds diverged is chosen last: the mean of its survivors would flatter it. A control without
        # dropout is one network at every rate: nothing to choose (its lowest rate names it; at_selected_rates).
        selected[group_key] = min(finite, key=lambda rate: (len(_diverged(chosen_on[rate], "validation_loss")),
                                                            finite[rate], rate is None, rate or 0)) if finite and (
            not no_dropout) else min(rates, key=lambda rate: (rate is None, rate or 0))
        # The variant's label without its rate: what else tells variants apart stays (a precision, a model's digest).
        label = records.without_rate(first["variant"])
        extra = {rate: {r["seed"] for r in runs} - shared for rate, runs in rates.items()}
        if any(extra.values()) and not no_dropout and not lost:
            uneven.append((label, shared, extra))
        if no_dropout and len(rates) > 1:  # nothing chosen: its lowest rate stands for it
            unchosen.append(f"{next(r['variant'] for r in rates[selected[group_key]])} has no dropout sites: its "
                            "rates are one network (trained once), so the rate its label carries was not chosen by "
                            "anything; it stands for every rate")
            pooled.add(group_key)
        elif lost and len(rates) > 1:
            unchosen.append(f"every run of {label} diverged, at each of its rates: its lowest stands for it (its "
                            "contrasts inconclusive)")
        for rate, runs in sorted(rates.items(), key=lambda item: (item[0] is None, item[0] or 0)):
            grid.append({"variant": label, "rate": rate, "seeds": len(runs), "chosen_on": len(chosen_on[rate]),
                         "only": len(rates) == 1, "validation_loss": scored[rate],
                         "test_accuracy": _finite_mean(runs, "test_accuracy"),
                         "test_loss": _finite_mean(runs, "test_loss"), "selected": rate == selected[group_key],
                         "no_dropout": no_dropout})
            for metric in ("validation_loss", "test_accuracy", "test_loss"):
                for r in _diverged(runs, metric):
                    left_out.setdefault((r["variant"], metric), set()).add(r["seed"])
    grid.sort(key=lambda g: (records.natural_key(g["variant"]), g["rate"] is None, g["rate"] or 0))
    notes = [f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, sorted(seeds)))} of {variant} left out of the rate "
             f"grid's mean {metric} (not finite)" for (variant, metric), seeds in sorted(left_out.items())]
    for label, shared, extra in uneven:
        others = "; ".join(f"rate {rates_report.rate_text(r)}: seed{'s' * (len(seeds) > 1)} "
                           f"{contrasts_lib.seed_ranges(seeds)}" for r, seeds in extra.items() if seeds)
        notes.append(f"{label}'s rate was chosen on the seeds all its rates ran ({contrasts_lib.seed_ranges(shared)})"
                     f", leaving out of the choice {others}" if shared else f"{label}'s rates share no seed with a "
                     "finite validation loss, so its rate was chosen on means over different seeds, which may tell "
                     "the seeds apart rather than the rates; train every rate on the same seeds")
    notes += unchosen
    return {"selected": selected, "grid": grid, "notes": notes, "pooled": pooled}


def at_selected_rates(rows, tuned):
    """The rows of each placement at its selected rate; of a control without dropout sites (one network at every
    rate: `pooled`), each seed once from any of its rates, under its selected rate's label and key."""
    pooled, picked = tuned.get("pooled", ()), {}
    for r in sorted((r for r in rows if _rate_group(r) in pooled), key=lambda r: (  # a seed's diverged run first
            "diverged_in_epoch" not in r, r["config"]["rate"] is None, r["config"]["rate"] or 0)):
        picked.setdefault((_rate_group(r), r["seed"]), r)
    label = {group: next(r for r in rows if _rate_group(r) == group and r["config"]["rate"] == rate)
             for group, rate in tuned["selected"].items() if group in pooled}
    kept = []
    for r in rows:
        group = _rate_group(r)
        if group not in pooled and tuned["selected"][group] == r["config"]["rate"]:
            kept.append(r)
        elif group in pooled and picked[group, r["seed"]] is r:  # (under the label of its chosen rate)
            same = r["variant"] == label[group]["variant"]
            kept.append(r if same else {**r, "variant": label[group]["variant"], "key": label[group]["key"]})
    return kept


# ---------------------------------------------------------------------- whole


def why_no_contrasts(rows, baseline):
    """The note of a comparison without contrasts: why there is nothing to contrast, and the fix."""
    labels = sorted({r["variant"] for r in rows}, key=records.natural_key)
    apart = variants.apart_by_auto(rows)
    if len(apart) == 1 and len(apart[0][0]) == len(labels):
        return (f"nothing to contrast: the runs here are one config, apart only in the precision --precision=auto "
                f"resolved to ({', '.join(labels)}); give --runs_dir a sweep over placements, or runs trained "
                "with one --precision")
    baselines = {r["variant"] for r in rows if r["config"]["placement"] == baseline and not r["config"]["sites"]}
    if len(labels) > 1 and set(labels) == baselines:
        return (f"no contrasts by default: every variant here is a `{baseline}` baseline ({', '.join(labels)}), "
                "and each is contrasted with its own kind's; pass --contrasts=A:B to contrast them")
    if len(labels) == 1:
        return (f"nothing to contrast: every run here is one variant ({labels[0]}); give --runs_dir a sweep "
                "over placements, or several directories")
    return (f"no contrasts: no variant has a `{baseline}` baseline of its own kind, activation and data to be "
            "contrasted with; pass --baseline=PLACEMENT or --contrasts=A:B")


def compare_runs(runs_dirs, *, output_dir=None, mc_samples=0, mc_seed=0, batch_size=256,
                 baseline="canonical", data_override=None, source=None, ood=None, contrasts=None,
                 margins=None, accuracy_below=()):
    """Scores every run below `runs_dirs` (a directory or a list) and writes the comparison.

    Returns {"paths", "table", "contrasts", "regime", "num_runs", "rates", "sizes", "notes"}.
    `contrasts` [(A, B)] are the planned contrasts (default: every variant vs
    `baseline`); `margins` {metric: margin} the equivalence margins (default
    report.DEFAULT_MARGINS); `accuracy_below` (percentages) the test
    accuracies descriptive.md counts each variant's runs below. `data_override` ({"dataset", "idx_dir", ...}) or
    `source` (a sources.Source) tests every run on that data instead of its
    own; `ood` (ood.arguments, or a Source) adds out-of-distribution
    detection.
    """
    runs_dirs = [os.fspath(d) for d in ([runs_dirs] if isinstance(runs_dirs, (str, os.PathLike)) else runs_dirs)]
    evaluate.check_mc(mc_samples, mc_seed, batch_size)  # also where the records answer and nothing is evaluated
    accuracy_below = descriptive.accuracy_levels(accuracy_below)
    margins = contrasts_lib.check_margins(margins or {})  # these before the runs are scored (minutes with MC)
    contrasts = contrasts_lib.check_contrasts(contrasts)
    if (data_override := sources.as_arguments(data_override) or None) and source is not None:  # (one was ignored)
        raise ConfigError("compare_runs takes data_override= or source=, not both: give the one to test every run on")
    ood = ood_lib.checked(ood)
    if output_dir is None and len(runs_dirs) > 1:
        raise ConfigError(f"--runs_dir names {len(runs_dirs)} directories: give --output=DIR (output_dir=) for their "
                          "comparison "
                          f"(by default a comparison goes into its one runs directory, and {runs_dirs[0]}/comparison "
                          "is that directory's own)")
    run_dirs = records.find_runs(runs_dirs)
    output_dir = output_dir or os.path.join(runs_dirs[0], "comparison")  # one runs directory (checked above)
    if why := files.unwritable(output_dir, make=False):  # before the runs are scored (minutes with MC), not after
        raise ConfigError(f"cannot write the comparison to {output_dir} ({why}); give --output=DIR (output_dir=), a "
                          "directory you can write to (the runs are only read)")
    pooled_data.check(run_dirs, own_test=data_override is None and source is None)
    unfinished = workdirs.unfinished_runs(runs_dirs)  # (diverged runs among them: rows of their own, below)
    notes = [note for note in [workdirs.unfinished_note(runs_dirs, unfinished),
                               shards.missing_note(runs_dirs, run_dirs + unfinished)] if note]
    rows = records.evaluate_runs(run_dirs, mc_samples=mc_samples, mc_seed=mc_seed, batch_size=batch_size,
                                 data_override=data_override, source=source, ood=ood, notes=notes)
    diverged, said = divergence.rows(unfinished, rows, records.row, variants.row_key)
    rows, notes = rows + diverged, notes + said
    variants.label_rows(rows)
    pooled_data.check_each_run_once(rows)
    pooled_data.check_one_test_data(records.group(rows))
    placements = sorted({r["config"]["placement"] for r in rows})
    if baseline != "canonical" and not contrasts and baseline not in placements:  # a typo gave no contrasts
        raise ConfigError(f"--baseline={baseline} is not a placement these runs trained ({', '.join(placements)}); "
                          "give one of them, or plan contrasts with --contrasts=A:B")
    notes += variants.split_notes(rows)
    tuned = tune_rates(rows)
    notes += tuned["notes"] if tuned else []
    compared = at_selected_rates(rows, tuned) if tuned else rows
    table = summarise(compared, baseline)
    notes += code_notes(rows) + replica_notes(rows) + keras_model_notes(rows) + non_finite_notes(compared)
    notes += evaluate.absent_classes_notes(rows)
    notes += uncertainty_report.comparison_notes(rows, compared)
    notes += resolution_notes(rows, margins)
    kept = {id(r) for r in compared}
    unchosen = [r for r in rows if id(r) not in kept]  # (a rate grid's rates validation did not choose)
    pairs = (contrasts_lib.planned_pairs(compared, contrasts, unchosen) if contrasts
             else baseline_pairs(compared, baseline, notes))
    tested = contrasts_lib.contrast_table(compared, pairs, margins)
    notes += contrasts_lib.contrast_notes(tested)
    if not tested and not any(f"{baseline} {SPLIT} " in note for note in notes):  # (that note says why)
        notes.append(why_no_contrasts(compared, baseline))
    comparison = {"table": table, "contrasts": tested, "sizes": sizes_report.curve(compared, table, tested),
                  "planned": bool(contrasts), "regime": regime_lib.regime(compared), "rows": rows, "compared": compared,
                  "rates": tuned["grid"] if tuned else None, "margins": margins, "alpha": contrasts_lib.ALPHA,
                  "notes": notes, "accuracy_below": accuracy_below,
                  "from_dirs": _runs_per_directory(runs_dirs, [r["run"] for r in rows]),
                  "title": f"{', '.join(runs_dirs)} — test data: "
                           f"{', '.join(sorted({r['data_source'] for r in rows}))}"}
    paths = report.write(comparison, output_dir)
    return {"paths": paths, "table": table, "contrasts": comparison["contrasts"], "regime": comparison["regime"],
            "num_runs": len(rows), "rates": comparison["rates"], "sizes": comparison["sizes"], "notes": notes}
