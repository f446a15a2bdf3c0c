"""Planned contrasts of a comparison: which variants pair, their paired statistics, and notes on them.

`contrast_table(rows, pairs, margins)` pairs two variants' runs by seed and,
per metric, gives the mean difference with its 95% CI, the paired t-test,
the equivalence test within a margin, the minimum detectable effect at
alpha / m and a verdict; per metric, the difference tests and the
equivalence tests are each one Holm family (dropzoo/stats.py has
the statistics). `planned_pairs` finds a study's planned contrasts among
the variants; `contrast_notes` names seeds left out of a pairing and
differences without spread.
"""
import numbers
import re

import numpy as np

from dropzoo import records
from dropzoo import report
from dropzoo import sources
from dropzoo import stats
from dropzoo.errors import ConfigError

# Family-wise error rate of each Holm family (one per contrasted metric).
ALPHA = 0.05
# Equivalence within 10 points or more says nothing; a margin that large is a margin in points given as a fraction.
MAX_ACCURACY_MARGIN = 0.1
# Below one image in 10,000 a margin says nothing either: it is a fraction given as points (0.005 for 0.5).
MIN_ACCURACY_MARGIN = 1e-4
# NLL equivalence within a nat or more says nothing (guessing among 10 classes scores 2.3): 1.5 for 0.015, a slip.
MAX_NLL_MARGIN = 1.0


# The config fields that say what a run was trained and tested on.
DATA_FIELDS = sources.ARGUMENTS + ("train_size", "validation_fraction")


def data_of(runs):
    """What a variant's runs were trained on (their data fields, as the variant is keyed: one data read at two paths
    by the first run's) and tested on (the test data's hashes)."""
    keyed = dict(runs[0].get("key") or ())
    return ({name: keyed.get(name, runs[0]["config"].get(name)) for name in DATA_FIELDS},
            frozenset(r.get("data_sha256") for r in runs))


def data_label(runs, among=()):
    """The test data `runs` were scored on: names, and fingerprints where names do not tell them (or the data of
    the runs `among`) apart."""
    named = sorted({(r["data_source"], r.get("data_sha256") or "") for r in runs})
    both = {(r["data_source"], r.get("data_sha256") or "") for r in [*runs, *among]}
    twice = len({name for name, _ in both}) < len(both)
    return ", ".join(name + (f" (sha256 {sha[:12]}...)" if twice else "") for name, sha in named)


def check_contrasts(contrasts):
    """`contrasts` as a list of (A, B) pairs of variant names ("A:B", or "A:B,C:D" for all: eval.py's spelling,
    too), or ConfigError."""
    pairs = []
    for contrast in [contrasts] if isinstance(contrasts, str) else contrasts or ():
        if isinstance(contrast, str) and contrast.strip():  # eval.py's spelling: its one parser
            pairs += parse_contrasts(contrast)
            continue
        if not (isinstance(contrast, (tuple, list)) and len(contrast) == 2
                and all(isinstance(side, str) and side for side in contrast)):
            raise ConfigError(f"contrasts: give (A, B) pairs of variant names, e.g. [('before_dense', 'canonical')], "
                              f"or 'A:B'; got {contrast!r}")
        pairs.append(tuple(contrast))
    return pairs


def planned_pairs(rows, contrasts, unchosen=()):
    """[(key A, key B)] for the planned contrasts [(A, B)], each side a variant's name or label.

    A side matches the variant labelled `<model>/<side>` or `<side>`, or, where
    each placement kept one rate, the label without its `-rate<r>`. ConfigError
    (one line) for a side that matches no variant or several (or names a variant
    of `unchosen`, rows at a rate validation did not choose), a contrast of a
    variant with itself, and one contrast planned twice (A:B twice, or B:A).
    """
    groups = records.group(rows)
    labels = {key: runs[0]["variant"] for key, runs in groups.items()}

    def find(side):
        names = {key: {label, label.split("/", 1)[-1]} for key, label in labels.items()}
        for key, label in labels.items():
            base = label.split(" [")[0]
            unrated = records.without_rate(base)  # the rate alone (-train_size250 stays)
            if unrated != base:
                names[key] |= {unrated, unrated.split("/", 1)[-1]}
        found = [key for key, options in names.items() if side in options]
        # The labels but for the precision they trained in (`-precisionfloat32`, ` [precision float32]`).
        bare = {label: re.sub(r"-precision\w+| \[precision [^]]*\]", "", label) for label in labels.values()}
        apart = sorted(label for label, rest in bare.items()
                       if rest != label and side in (rest, rest.split("/", 1)[-1]))
        if not found and apart:  # a study's seeds trained in two precisions: a variant each
            raise ConfigError(f"contrast side {side!r} matches no variant: its runs trained in several precisions, "
                              f"each a variant of its own ({', '.join(apart)}); name one of them, or, to pool their "
                              "seeds, train them all with one --precision (e.g. --precision=float32)")
        named = [r for r in unchosen if side in (r["variant"], r["variant"].split("/", 1)[-1])]
        if not found and named and not named[0].get("sites"):  # a control without dropout: one network at any rate
            controls = sorted({label for key, label in labels.items() if not groups[key][0].get("sites")})
            raise ConfigError(f"contrast side {side!r} is the control without dropout, one network at every rate of "
                              f"the grid; name it as the comparison labels it: {', '.join(controls)}")
        if not found and named:
            raise ConfigError(f"contrast side {side!r} is a rate of the grid that validation did not choose (see "
                              "rates.md): contrasts take each placement at its chosen rate; to contrast at fixed "
                              "rates, give --runs_dir only those variants' directories")
        if len(found) != 1:
            what = "no variant" if not found else f"{len(found)} variants ({', '.join(labels[k] for k in found)})"
            raise ConfigError(f"contrast side {side!r} matches {what}; the variants are: "
                              f"{', '.join(sorted(labels.values(), key=records.natural_key))}")
        return found[0]

    pairs, seen = [], {}
    for a, b in contrasts:
        pair = (find(a), find(b))
        if pair[0] == pair[1]:
            raise ConfigError(f"contrast {a}:{b} names one variant ({labels[pair[0]]}) on both sides; a contrast "
                              "is variant A minus another variant B")
        # One hypothesis planned twice (or as B:A) would count twice in the Holm family: larger MDEs, other verdicts.
        if frozenset(pair) in seen:
            first, (x, y) = seen[frozenset(pair)]
            raise ConfigError(f"contrasts {first} and {a}:{b} are one contrast ({labels[x]} vs {labels[y]}); plan "
                              "it once, or each would count in the Holm family as a hypothesis of its own")
        seen[frozenset(pair)] = (f"{a}:{b}", pair)
        pairs.append(pair)
    check_same_data(groups, pairs, contrasts)
    return pairs


def check_same_data(groups, pairs, sides=None):
    """ConfigError where a contrast pairs runs trained or tested on different data (`groups`: records.group;
    `sides`: the contrasts as the user named them, by default the variants' labels)."""
    for (a, b), (label_a, label_b) in zip(pairs, sides or [(groups[a][0]["variant"], groups[b][0]["variant"])
                                                           for a, b in pairs]):
        # Where both sides recorded what they trained on (one path, other files: two machines' copies), by content;
        # at one --train_size, the examples it kept too (another subset: another machine's code or NumPy).
        one_size = len({r["config"].get("train_size") for side in (a, b) for r in groups[side]}) == 1
        contents = [sorted({records.trained_content(r["train_sha256"], one_size and r.get("train_subset_sha256"))
                            for r in groups[side] if r.get("train_sha256")}) for side in (a, b)]
        trained_apart = all(contents) and contents[0] != contents[1]
        if data_of(groups[a]) != data_of(groups[b]) or trained_apart:
            data_a, data_b = data_label(groups[a], groups[b]), data_label(groups[b], groups[a])
            if trained_apart:
                data_a, data_b = (f"{data}, trained on sha256 {', '.join(content)}"
                                  for data, content in ((data_a, contents[0]), (data_b, contents[1])))
            raise ConfigError(f"contrast {label_a}:{label_b} pairs runs trained or tested on different data "
                              f"({data_a} vs {data_b}); a contrast pairs seeds of two variants on the same data: "
                              "contrast variants of one dataset, scored on one test set")


def parse_contrasts(text):
    """[(A, B)] from 'A:B,C:D' (A is compared with B: A - B); [] from no text; ConfigError if malformed (an empty
    item too)."""
    pairs = []
    for item in (part.strip() for part in (text or "").split(",")) if (text or "").strip() else ():
        sides = [side.strip() for side in item.split(":")]
        if len(sides) != 2 or not all(sides) or sides[0] == sides[1]:
            raise ConfigError(f"malformed contrast {item!r}; write A:B (variant A minus variant B), e.g. "
                              "--contrasts=before_dense:after_activation,none:after_activation")
        pairs.append(tuple(sides))
    return pairs


def contrast_table(rows, pairs, margins):
    """One entry per contrast (A, B): for each metric in `margins`, its paired statistics and verdict.

    `margins` maps report.CONTRASTS' metrics to their equivalence margins
    (in the metric's own units: accuracy as a fraction). Per metric, `p_holm`
    (difference) and `p_tost_holm` (equivalence) are each adjusted over the
    contrasts (Holm), and the minimum detectable effect
    is computed at ALPHA / m, m the contrasts tested (2 or more pairs).
    A seed is paired where both variants have a finite value; an entry's
    `left_out` names the seeds that were not ([] if none). A seed whose run
    diverged (a contrasted score not finite: NaN probabilities, which still
    "score" an accuracy by argmax) is left out of every metric, and the
    entry's `diverged` ({variant: [seeds]}) makes each verdict inconclusive:
    the survivors alone would flatter a variant that diverges.
    """
    groups = records.group(rows)
    entries = []
    for a, b in pairs:
        runs_a, runs_b = groups[a], groups[b]
        entry = {"a": runs_a[0]["variant"], "b": runs_b[0]["variant"], "contrast": f"{runs_a[0]['variant']} - "
                 f"{runs_b[0]['variant']}", "identical": _same(runs_a, runs_b), "left_out": []}
        scored = list(dict.fromkeys([*margins, *report.DEFAULT_MARGINS]))  # diverged whatever is contrasted
        diverged = [{r["seed"]: f"{bad[0]} {r[bad[0]]}, diverged: left out of every metric" for r in runs
                     for bad in [[m for m in scored if _not_finite(r.get(m))]] if bad} for runs in (runs_a, runs_b)]
        entry["diverged"] = {runs[0]["variant"]: sorted(seeds) for runs, seeds in zip((runs_a, runs_b), diverged)
                             if seeds and not entry["identical"]}
        for metric in margins:
            seeds, left_out = _paired_seeds(runs_a, runs_b, metric, diverged)
            entry[metric] = None if entry["identical"] else (seeds, *_values_at(runs_a, runs_b, metric, seeds))
            entry["left_out"] += [item for item in left_out if item not in entry["left_out"]]
        entries.append(entry)
    for metric, margin in margins.items():
        m = max(1, sum(1 for e in entries if e[metric] is not None and len(e[metric][0]) >= 2))
        for e in entries:
            if e[metric] is not None:
                _, mine, theirs = e[metric]
                e[metric] = stats.paired_contrast(mine, theirs, margin, ALPHA / m)
        tested = [e[metric] for e in entries if e[metric] is not None]
        for field in ("p", "p_tost"):
            for result, adjusted in zip(tested, stats.holm([t[field] for t in tested])):
                result[f"{field}_holm"] = adjusted
        for result in tested:
            result["margin"] = margin
            result["verdict"] = stats.verdict(result["p_holm"], result["p_tost_holm"], ALPHA)
        for e in entries:
            if e[metric] is not None and e["diverged"]:  # no verdict on the survivors alone
                e[metric]["verdict"] = [stats.INCONCLUSIVE]
                e[metric]["diverged"] = "; ".join(f"{variant} diverged on seed{'s' * (len(seeds) > 1)} "
                                                  f"{seed_ranges(seeds)}" for variant, seeds in e["diverged"].items())
    return entries


def _not_finite(value):
    return value is not None and not np.isfinite(value)


def check_margins(margins):
    """`margins` as a dict of every contrasted metric's (a metric left out keeps its default), or ConfigError naming
    an unknown metric or a margin out of range."""
    if not isinstance(margins, dict):
        raise ConfigError(f"margins: give a dict {{metric: margin}}, e.g. {{'test_accuracy': 0.005}}, got "
                          f"{type(margins).__name__}")
    margins = {**report.DEFAULT_MARGINS, **margins}
    for metric, margin in margins.items():
        if metric not in report.DEFAULT_MARGINS:
            raise ConfigError(f"margins: unknown metric {metric!r}; the contrasted metrics are "
                              f"{', '.join(report.DEFAULT_MARGINS)}")
        if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0 < margin < float("inf"):
            raise ConfigError(f"margins: the {metric} margin must be a positive number, got {margin}")
    if margins.get("test_accuracy", MIN_ACCURACY_MARGIN) < MIN_ACCURACY_MARGIN:
        raise ConfigError(f"margins: the test_accuracy margin is a fraction (0.005 is half a point) of at least "
                          f"{MIN_ACCURACY_MARGIN:g} (one image in 10,000), got {margins['test_accuracy']:g}")
    if margins.get("test_accuracy", 0) >= MAX_ACCURACY_MARGIN:
        raise ConfigError(f"margins: the test_accuracy margin is a fraction (0.005 is half a point) below "
                          f"{MAX_ACCURACY_MARGIN:g}, got {margins['test_accuracy']:g} "
                          f"({100 * margins['test_accuracy']:g} points)")
    if margins.get("test_loss", 0) >= MAX_NLL_MARGIN:
        loss = margins["test_loss"]
        raise ConfigError(f"margins: the test_loss margin is in nats (0.015 by default), below {MAX_NLL_MARGIN:g}: "
                          f"equivalence within {loss:g} nats says nothing, got {loss:g}")
    return margins


def _paired_seeds(runs_a, runs_b, metric, diverged=({}, {})):
    """(seeds both sides have a finite `metric` for, and whose runs did not diverge (`diverged`: each side's
    {seed: which score is not finite}), [(variant, why, seed)] for the seeds left out)."""
    values = [{r["seed"]: r.get(metric) for r in runs} for runs in (runs_a, runs_b)]
    finite = [{seed for seed, v in side.items() if v is not None and np.isfinite(v)} - set(gone)
              for side, gone in zip(values, diverged)]
    paired = sorted(finite[0] & finite[1])
    left_out = []
    for side, other, runs in ((0, 1, runs_a), (1, 0, runs_b)):
        for seed in sorted(set(values[side]) - set(paired)):
            value = values[side][seed]
            why = (f"no {metric}" if value is None else diverged[side][seed] if seed in diverged[side]
                   else "no run of the other variant" if seed not in values[other] else None)
            if why:
                left_out.append((runs[0]["variant"], why, seed))
    return paired, left_out


def _values_at(runs_a, runs_b, metric, seeds):
    return [[next(r[metric] for r in runs if r["seed"] == seed) for seed in seeds] for runs in (runs_a, runs_b)]


def _left_out_text(left_out):
    """'seeds 3, 4 of m/x (no run of the other variant); seed 1 of m/y (test_loss nan)'."""
    by_reason = {}
    for variant, why, seed in left_out:
        by_reason.setdefault((variant, why), []).append(seed)
    return "; ".join(f"seed{'s' * (len(seeds) > 1)} {seed_ranges(seeds)} of {variant} ({why})"
                     for (variant, why), seeds in by_reason.items())


def seed_ranges(numbers):
    """'0, 3-5, 9' for [0, 3, 4, 5, 9]."""
    spans = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in spans)


def contrast_notes(contrasts):
    """Notes on contrasts whose pairing left seeds out, or whose differences have no spread."""
    notes = [f"{e['contrast']} is paired over the seeds both variants have a finite score for; left out: "
             f"{_left_out_text(e['left_out'])}" for e in contrasts if e["left_out"] and not e["identical"]]
    for e in contrasts:
        for c in report.CONTRASTS:
            r = e.get(c.metric)
            if r and r.get("no_spread"):
                # A difference of 0 at every seed is no evidence of one (p = 1); its equivalence is 1/2^n.
                p = "1 (no difference)" if r["p"] == 1 else f"2/2^{r['n']}"
                p_tost = f"1/2^{r['n']}" if r["p_tost"] < 1 else "1 (outside the margin)"
                notes.append(f"{e['contrast']}: the {r['n']} seeds' differences in {c.name} are all "
                             f"{r['difference'] * c.scale:+.{c.digits}f} {c.unit}, so there is no t interval; its "
                             f"tests are exact sign-flip tests (difference p = {p}, equivalence {p_tost}, against "
                             f"{_seeds_needed(r['alpha'])})")
    return notes


def _seeds_needed(alpha):
    """What the exact tests need against Holm's thresholds: α/m (`alpha`) at its first step, up to ALPHA at its last."""
    if alpha >= ALPHA:
        return f"α = {ALPHA:g}: 'differs' needs {stats.seeds_to_reach(ALPHA)} seeds, 'equivalent' " \
               f"{stats.seeds_to_reach(ALPHA, sides=1)}"
    return (f"Holm's thresholds, α/m = {alpha:.3g} at its first step up to α = {ALPHA:g} at its last: 'differs' needs "
            f"{stats.seeds_to_reach(alpha)} seeds at the first step, {stats.seeds_to_reach(ALPHA)} at the last; "
            f"'equivalent' {stats.seeds_to_reach(alpha, sides=1)} and {stats.seeds_to_reach(ALPHA, sides=1)}")


def _same(runs_a, runs_b):
    """Whether A and B are one network by construction: the same trained run for every seed they pair on.

    Seeds only one side has (more seeds of a baseline, pooled from another
    directory) do not make two identical variants differ.
    """
    def trained(runs):
        return {r["seed"]: r.get("identical_to") or r["run"] for r in runs}

    a, b = trained(runs_a), trained(runs_b)
    shared = a.keys() & b.keys()
    return bool(shared) and all(a[seed] == b[seed] for seed in shared)
