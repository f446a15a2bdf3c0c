"""The uncertainty part of a comparison: a table and two figures, from evaluated runs.

    uncertainty.md   per variant, mean ± 95% CI half-width over seeds: NLL,
                     Brier and ECE of the deterministic export and of MC
                     dropout, and out-of-distribution AUROC / FPR95 of each score
    reliability.png  one panel per variant: accuracy against confidence per
                     bin, seeds pooled, deterministic and MC dropout
    mc_samples.png   NLL and ECE of the MC mean against the number of samples T

Rows and table entries are those of `dropzoo.compare`; the columns are the
"calibration" and "ood" ones of `dropzoo.report.COLUMNS`; the numbers come
from `dropzoo.uncertainty`.
"""
import numpy as np

from dropzoo import descriptive
from dropzoo import plots
from dropzoo import records
from dropzoo import uncertainty

# Marks an interval past the values its metric can take (comparison.md's too: report.PAST_RANGE).
PAST_RANGE = "†"


def has_uncertainty(rows):
    """Whether the runs were evaluated with MC dropout or against OOD data."""
    return any(r.get("mc_nll") is not None or any(k.startswith("ood_auroc") for k in r) for r in rows)


def has_mc_curve(rows):
    """Whether any run was evaluated with MC dropout (mc_samples.png has a line to draw)."""
    return any(r.get("mc_curve") for r in rows)


# What each OOD score is, as uncertainty.md says it (the scores of report.OOD_SCORES).
OOD_SCORE_TEXT = {
    "entropy": "predictive entropy of the deterministic export (entropy)",
    "mc_entropy": "predictive entropy of the MC mean (mc entropy)",
    "mc_mutual_information": "the MC mutual information (absent where the variant has no dropout: its passes "
                             "agree)",
}


def mc_notes(rows):
    """A note naming the variants whose MC dropout passes all agree (no dropout): their mc_* columns are the plain
    ones, not an effect of sampling; and one where they are of few passes (few_passes_note)."""
    flat = sorted({r["variant"] for r in rows if r.get("mc_no_spread")}, key=records.natural_key)
    few = few_passes_note(min((r.get("mc_samples") or FEW_PASSES for r in rows), default=FEW_PASSES))
    return ([f"{', '.join(flat)}: {'its' if len(flat) == 1 else 'their'} MC dropout passes all agree (no dropout "
             "to sample, or none that moves the probabilities), so the mc_* columns repeat the plain ones"
             ] if flat else []) + ([few] if few else [])


# Below this many MC dropout passes, eval.py and comparisons say their mean is noisy and its NLL biased upward.
FEW_PASSES = 10


def few_passes_note(samples):
    """A note where the MC scores are of fewer than FEW_PASSES passes (0: none), else None: the NLL of a mean of T
    passes falls as T grows (convexity), so few passes make MC dropout look worse than it is."""
    if not samples or samples >= FEW_PASSES:
        return None
    return (f"the mc_* scores are of {samples} MC dropout passes: the mean of so few is noisy and its NLL biased "
            "upward (it falls as passes are added: see mc_curve), so they understate MC dropout; 20 or more is usual")


# Why the OOD data could not be checked for a run's training images (ood.apart), and what follows.
UNCHECKED_OOD = ("its training data is not looked up here (data from tensorflow-datasets is not loaded to look, or "
                 "its files moved), so any out-of-distribution images it trained on count as unseen")


def ood_notes(rows):
    """Notes where the OOD data was not checked for the training images of some runs (ood.apart): their training
    data could not be looked up, or their saved evaluations are older than the check (and no SavedModel is here to
    compute them again); and where some of its images were left out of runs' scores as test or training images."""
    notes, rows = [], [r for r in rows if "diverged_in_epoch" not in r]  # (a diverged run scored nothing)
    for checked, why in ((False, f"for each, {UNCHECKED_OOD}"),
                         (None, "their OOD scores come from evaluations saved before the check, which could not be "
                                "done again here (no SavedModel to score, or the training data not looked up here)")):
        runs = [r for r in rows if r.get("ood_data_source") and r.get("ood_train_checked") is checked]
        if runs:
            variants = ", ".join(sorted({r["variant"] for r in runs}, key=records.natural_key))
            notes.append(f"the out-of-distribution data was not checked for the training images of {len(runs)} run"
                         f"{'s' * (len(runs) != 1)} ({variants}): {why}")
    # Images of the OOD data that are test or training images (ood.apart): each run scored the others only. Said
    # from the records, as a comparison reading saved evaluations warns of nothing.
    for key, which in (("ood_in_test_left_out", "test"), ("ood_in_train_left_out", "training-split")):
        runs = [r for r in rows if r.get("ood_data_source") and r.get(key)]
        if runs:
            counts = sorted({r[key] for r in runs})
            span = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,} to {counts[-1]:,}"
            are = f"is a {which} image" if counts == [1] else f"are {which} images"
            notes.append(f"{span} of the out-of-distribution images {are} of {len(runs)} "
                         f"run{'s' * (len(runs) != 1)} (byte for byte), left out of their OOD scores: each scored "
                         "the others alone")
    return notes


def ood_chance_note(result):
    """A note where no score tells the OOD images from the test images better than chance
    (uncertainty.no_better_than_chance): as for images of the test data's own kind (AUROC ~0.5), or where the
    model is less uncertain on them than on its test images (AUROC well below 0.5); None otherwise."""
    best = uncertainty.no_better_than_chance(result)
    if best is None:
        return None
    p, auroc = result[f"ood_chance_p_{best}"], result[f"ood_auroc_{best}"]
    said = f"AUROC {auroc:.3f} by {best.replace('_', ' ')}, one-sided Mann-Whitney p = {p:.2g}"
    ps = uncertainty.chance_ps(result)
    if min(ps.values()) < uncertainty.CHANCE_P:  # below 0.05 uncorrected: why it is still chance
        said += f"; none below {uncertainty.CHANCE_P:g} after Holm's correction over the {len(ps)} scores"
    if p > 1 - uncertainty.CHANCE_P:  # ranked below the test images, beyond chance: another kind, not detected
        return (f"every score finds the {result['ood_num_examples']:,} out-of-distribution images less uncertain "
                f"than the test images (at best {said}): this model does not detect them (images of the test "
                "data's own kind would score AUROC ~0.5)")
    return (f"no score tells the {result['ood_num_examples']:,} out-of-distribution images from the test images "
            f"better than chance ({said}): images of the test data's own kind score so; if these are of another "
            "kind, this model does not detect them")


def chance_notes(rows):
    """A note naming the runs (the trained runs of the variants compared) whose every OOD score tells the OOD images
    from the test images no better than chance (ood_chance_note's)."""
    chance = [r for r in rows if r.get("ood_data_source") and uncertainty.no_better_than_chance(r)]
    if not chance:
        return []
    variants = ", ".join(sorted({r["variant"] for r in chance}, key=records.natural_key))
    return [f"{len(chance)} run{'s' * (len(chance) != 1)} ({variants}) tell{'s' * (len(chance) == 1)} the "
            "out-of-distribution images from the test images no better than chance by any score (no one-sided "
            f"Mann-Whitney p below {uncertainty.CHANCE_P:g} after Holm's correction over the scores): images of the "
            "test data's own kind score so (AUROC ~0.5), as does a model less uncertain on them than on its test "
            "images (AUROC below 0.5); their OOD columns show no detection"]


def comparison_notes(rows, compared):
    """The uncertainty notes of a comparison (comparison.md's and uncertainty.md's): MC passes of `compared` (the
    rows at their chosen rates), the OOD check of all `rows`, and the chance note of compared's trained runs."""
    return mc_notes(compared) + ood_notes(rows) + chance_notes(descriptive.trained_runs(compared))


def markdown(table, columns, cell, ood_source=None, notes=()):
    """Calibration, then OOD detection, per variant (mean ± 95% CI half-width over seeds), then `notes`.

    `columns` are report.COLUMNS (their "calibration" and "ood" tables);
    `cell(entry, column, spread)` formats one (report.cell).
    """
    def marked(entry, column):
        """The cell, marked PAST_RANGE where its interval leaves the values the metric can take."""
        text, s = cell(entry, column, "ci95"), entry.get(column.metric)
        past = s and np.isfinite(s["ci95"]) and not (column.bounds[0] <= s["mean"] - s["ci95"]
                                                     and s["mean"] + s["ci95"] <= column.bounds[1])
        return text + (PAST_RANGE if past else "")

    def section(name, title):
        chosen = [c for c in columns if name in c.tables and any(c.metric in e for e in table)]
        head = ["variant", "seeds"] + [c.heading for c in chosen]
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for e in table:
            cells = [e["variant"], str(e["seeds"])]
            cells += ["="] * len(chosen) if e.get("identical_to") else [marked(e, c) for c in chosen]
            lines.append("| " + " | ".join(cells) + " |")
        return lines, chosen

    lines = ["Each cell: mean ± 95% CI half-width over seeds. `=`: identical by construction "
             "to another variant (same numbers).", ""]
    lines += section("calibration", "Calibration (lower is better)")[0]
    ood_lines, chosen = section("ood", "OOD detection")
    if chosen:
        present = {c.metric.split("_", 2)[2] for c in chosen}  # ood_<auroc|fpr95>_<score>
        scores = [text for score, text in OOD_SCORE_TEXT.items() if score in present]
        part = "its images" if str(ood_source).startswith(("images:", "npz:")) else "test split"  # a folder
        lines += ["", f"Out-of-distribution data: {ood_source or 'given'} ({part}), the "
                  f"positives. Scores: {'; '.join(scores)}. AUROC: higher is better; FPR95 "
                  "(false-positive rate at 95% true-positive rate): lower is better.", ""]
        lines += ood_lines
    if any(PAST_RANGE in line for line in lines):
        lines += ["", f"{PAST_RANGE} mean ± 95% CI half-width past the values the metric can take (AUROC, FPR95 "
                  "and ECE 0–1, Brier 0–2), shown unclipped: too few seeds, or too much spread among them."]
    lines += [line for note in notes for line in ("", f"Note: {note}.")]
    return "\n".join(lines) + "\n"


def _grid(count):
    columns = min(4, count)
    return columns, -(-count // columns)


def plot_reliability(path, rows, variants):
    """Reliability diagrams, one panel per variant, seeds pooled."""
    plt = plots.pyplot()
    columns, lines = _grid(len(variants))
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 3.2 * lines), squeeze=False)
    for ax, variant in zip(axes.flat, variants):
        runs = [r for r in rows if r["variant"] == variant]
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for key, label, style in (("reliability", "deterministic", "o-"), ("mc_reliability", "MC dropout", "s--")):
            tables = [r[key] for r in runs if r.get(key)]
            if tables:
                pooled = uncertainty.pool_reliability(tables)
                filled = [i for i, n in enumerate(pooled["count"]) if n]
                ax.plot([pooled["confidence"][i] for i in filled], [pooled["accuracy"][i] for i in filled],
                        style, markersize=3, label=label)
        ax.set_title(variant, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize=7)
        ax.set_ylabel("accuracy", fontsize=7)
        ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(variants):]:
        ax.axis("off")
    fig.suptitle("Reliability per variant (seeds pooled;\non the diagonal = calibrated)" if columns == 1 else
                 "Reliability per variant (seeds pooled; on the diagonal = calibrated)", fontsize=9)
    fig.tight_layout()
    plots.save(fig, path, dpi=100)


def plot_mc_samples(path, rows, variants):
    """NLL and ECE of the MC mean against the number of samples, mean over seeds per variant."""
    plt = plots.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for variant in variants:
        curves = [r["mc_curve"] for r in rows if r["variant"] == variant and r.get("mc_curve")  # (not finite: left
                  and np.all(np.isfinite(r["mc_curve"]["nll"] + r["mc_curve"]["ece"]))]  # out, as of the means)
        if not curves:
            continue
        samples = curves[0]["samples"]
        for ax, key in ((left, "nll"), (right, "ece")):
            ax.plot(samples, np.mean([c[key] for c in curves], axis=0), marker=".", label=variant)
    for ax, name in ((left, "test NLL"), (right, "test ECE")):
        ax.xaxis.get_major_locator().set_params(integer=True)  # T is a count
        ax.set_xlabel("MC samples T")
        ax.set_ylabel(f"{name} of the MC mean (mean over seeds)")
        ax.set_title(f"{name} against the number of MC dropout samples", fontsize=9)
    if left.lines:
        left.legend(fontsize=7)
    fig.tight_layout()
    plots.save(fig, path, dpi=100)
