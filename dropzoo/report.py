"""A comparison rendered: Markdown, CSV, plots and TensorBoard HParams, from one table of columns.

`COLUMNS` lists every per-variant number a comparison reports: the row key it
summarises, its heading, its unit and which table shows it. `CONTRASTS`
lists the metrics the contrasts test, with their units and default margins.
Everything here reads those two tables, so a new column is one entry (see
docs/contributing.md). `write(comparison, output_dir)` writes:

  comparison.md / .csv   per variant: mean ± std (95% CI) over seeds of each column;
                         the contrasts: difference, 95% CI, MDE, verdict, p-values
  descriptive.md         medians, ranges, counts below levels, paired signs, BN variance shifts, times per CPU
                         (dropzoo/descriptive.py)
  contrasts.csv          the contrasts, one row per contrast and metric
  comparison.png         accuracy per variant with its interval, and learning curves
  contrasts.png          each contrast's difference, CI, margin and MDE
  runs.json              every run's evaluation
  hparams/               TensorBoard HParams: one session per run
  rates.md / .png        with several rates per placement: the rate x placement grid
  sizes.md / .png        with several --train_size values: each variant and contrast against the size
  uncertainty.md, reliability.png, mc_samples.png
                         with MC dropout or OOD data (dropzoo/uncertainty_report.py)
"""
import csv
import dataclasses
import os
import shutil

import numpy as np

from dropzoo import descriptive
from dropzoo import files
from dropzoo import plots
from dropzoo import rates_report
from dropzoo import regime as regime_lib
from dropzoo import sizes_report
from dropzoo import stats
from dropzoo import summaries
from dropzoo import uncertainty_report

OOD_SCORES = ("entropy", "mc_entropy", "mc_mutual_information")


@dataclasses.dataclass(frozen=True)
class Column:
    """One per-variant number: the row key it summarises over seeds, and how it is shown."""

    metric: str
    heading: str
    tables: tuple  # "main" (comparison.md), "calibration", "ood" (uncertainty.md); every column goes to CSV
    scale: float = 1.0  # 100: a fraction shown in percent
    digits: int = 4
    interval: bool = False  # comparison.md shows its 95% CI beside mean ± std
    bounds: tuple = (0.0, np.inf)  # the values the metric can take; an interval past them is marked


COLUMNS = (
    Column("test_accuracy", "test acc %", ("main",), 100, 2, interval=True, bounds=(0.0, 1.0)),
    Column("test_loss", "test NLL", ("main", "calibration"), interval=True),
    Column("train_accuracy", "train acc % (dropout off)", ("main",), 100, 2),
    Column("gap_accuracy", "train-test gap (points)", ("main",), 100, 2),
    Column("gap_loss", "test - train NLL", ()),
    Column("ece", "ECE", ("main", "calibration"), bounds=(0.0, 1.0)),
    Column("brier", "Brier", ("calibration",), bounds=(0.0, 2.0)),
    Column("mc_accuracy", "MC acc %", ("main",), 100, 2),
    Column("mc_nll", "MC NLL", ("main", "calibration")),
    Column("mc_ece", "MC ECE", ("main", "calibration"), bounds=(0.0, 1.0)),
    Column("mc_brier", "MC Brier", ("calibration",), bounds=(0.0, 2.0)),
    Column("train_time_sec", "train time s", ("main",), 1, 1),
) + tuple(Column(f"ood_{measure}_{score}", f"OOD {'AUROC' if measure == 'auroc' else 'FPR95'} "
                 f"({score.replace('_', ' ')})", ("ood",), bounds=(0.0, 1.0))
          for score in OOD_SCORES for measure in ("auroc", "fpr95"))


@dataclasses.dataclass(frozen=True)
class Contrasted:
    """A metric the contrasts test: its unit, and the default equivalence margin in the metric's own units."""

    metric: str
    name: str
    unit: str
    scale: float  # shown x scale (accuracy: in points)
    margin: float
    digits: int  # decimals shown
    own_unit: str  # the unit of runs.json and contrasts.csv (unscaled)
    largest: float = np.inf  # the largest difference the metric can show (accuracy: 1)


CONTRASTS = (
    # Half a point: the smallest placement effect the literature reports (0.4-1.6 points).
    Contrasted("test_accuracy", "accuracy", "points", 100, 0.005, 2, "fraction", largest=1.0),
    # 0.015 nats: the NLL change of the accuracy margin. Half a point of test examples moved from
    # right (~0.02 nats each) to wrong (2.7-3.4 nats each, measured on the MNIST 10k split for the
    # placement study's runs) changes the mean NLL by 0.005 x ~2.9 = ~0.015.
    Contrasted("test_loss", "NLL", "nats", 1, 0.015, 4, "nats"),
)
DEFAULT_MARGINS = {c.metric: c.margin for c in CONTRASTS}


def _present(table, columns):
    return [c for c in columns if any(c.metric in e for e in table)]


def cell(entry, column, spread="std"):
    """`mean ± spread` of one column in one variant ('' if absent)."""
    if column.metric not in entry:
        return ""
    s, scale = entry[column.metric], column.scale
    text = f"{s['mean'] * scale:.{column.digits}f}"
    text = text if np.isnan(s[spread]) else f"{text} ± {s[spread] * scale:.{column.digits}f}"
    if s.get("n", entry.get("seeds")) != entry.get("seeds"):  # a score not finite, or not whole: over fewer seeds
        text += f" ({s['n']} of {entry['seeds']} seeds)"
    return text


# Marks a 95% interval that runs past the values its metric can take (explained under the table).
PAST_RANGE = uncertainty_report.PAST_RANGE


def interval(entry, column):
    """`[low, high]` of the column's 95% t-interval, marked PAST_RANGE where it leaves the metric's range."""
    if column.metric not in entry or np.isnan(entry[column.metric]["ci95"]):
        return ""
    s, scale = entry[column.metric], column.scale
    low, high = s["mean"] - s["ci95"], s["mean"] + s["ci95"]
    past = PAST_RANGE if low < column.bounds[0] or high > column.bounds[1] else ""
    return f"[{low * scale:.{column.digits}f}, {high * scale:.{column.digits}f}]{past}"


def variants_markdown(table):
    """The per-variant table: mean ± std over seeds of each main column (95% CI beside some)."""
    columns = _present(table, [c for c in COLUMNS if "main" in c.tables])
    head = ["variant", "seeds", "sites"]
    for c in columns:
        head += [f"{c.heading} (mean ± std)"] + (["95% CI"] if c.interval else [])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for e in table:
        cells = [e["variant"], str(e["seeds"]), f"`{e['sites']}`" if e.get("sites") else "none"]
        for c in columns:
            cells += [cell(e, c)] + ([interval(e, c)] if c.interval else [])
        if e.get("identical_to"):
            cells[0] += f" (= {e['identical_to']}, identical by construction)"
        lines.append("| " + " | ".join(cells) + " |")
    if any(PAST_RANGE in line for line in lines[2:]):
        lines += ["", f"{PAST_RANGE} The 95% t-interval runs past the values the metric can take (accuracy "
                      "0–100%, NLL ≥ 0). It is shown unclipped: too few seeds, or too much spread among them, to "
                      "place the mean more closely."]
    return lines


def verdict_text(result, contrasted):
    """The verdict in words: differs (by how much), equivalent within ±margin, or inconclusive (MDE)."""
    scale, unit, digits = contrasted.scale, contrasted.unit, contrasted.digits
    margin = f"±{result['margin'] * scale:g} {unit}"
    found = result["verdict"]
    if found == [stats.DIFFERS, stats.EQUIVALENT]:
        return f"differs ({result['difference'] * scale:+.{digits}f} {unit}), within {margin}"
    if found == [stats.DIFFERS]:
        return f"differs ({result['difference'] * scale:+.{digits}f} {unit})"
    if found == [stats.EQUIVALENT]:
        return f"equivalent within {margin}"
    if result.get("diverged"):
        return f"inconclusive ({result['diverged']}: no verdict on the seeds that did not)"
    mde, n, moved = result["mde"], result["n"], result.get("untied", result["n"])  # (a tie moves no p)
    seeds = f"{n} seeds" if moved == n else f"{n} seeds, {n - moved} tied,"
    if mde == np.inf and result.get("equivalence_reachable"):  # equivalence's floor is 1/2^n, a difference's 2/2^n
        return f"inconclusive ({seeds} cannot reach α/m for a difference; equivalence not shown)"
    if mde == np.inf:
        return f"inconclusive ({seeds} cannot reach α/m)"
    if result.get("no_spread"):
        return "inconclusive (one difference at every seed: see the notes)"
    if mde >= contrasted.largest:
        return f"inconclusive (could detect only ≥ {mde * scale:.{digits}f} {unit}, past any possible difference)"
    return f"inconclusive (could detect ≥ {mde * scale:.{digits}f} {unit})" if np.isfinite(mde) else "inconclusive"


def seeds_text(entry):
    """A contrast's paired seeds: one number, or one per metric where a non-finite score left some out of one."""
    counts = [(c.name, entry[c.metric]["n"]) for c in CONTRASTS if entry.get(c.metric)]
    return (", ".join(f"{name} {n}" for name, n in counts) if len({n for _, n in counts}) > 1
            else str(counts[0][1]) if counts else "")


def contrasts_markdown(contrasts):
    """One row per contrast: per metric the difference, its 95% CI, the MDE and the verdict."""
    head = ["contrast (A - B)", "seeds"]
    for c in CONTRASTS:
        head += [f"Δ {c.name} ({c.unit})", "95% CI", "MDE", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for e in contrasts:
        results = [e.get(c.metric) for c in CONTRASTS]
        cells = [e["contrast"], seeds_text(e)]
        for c, r in zip(CONTRASTS, results):
            if e["identical"]:
                cells += ["0", "", "", "identical by construction"]
            elif r is None:
                cells += ["", "", "", ""]
            elif r["n"] < 2:  # (every seed diverged: more seeds would not help)
                cells += [f"{r['difference'] * c.scale:+.{c.digits}f}" if r["n"] else "", "", "",
                          f"inconclusive ({r['diverged']})" if r.get("diverged") else "needs 2 or more seeds"]
            elif r.get("no_spread"):  # one difference at every seed: no interval, no MDE (see the notes)
                cells += [f"{r['difference'] * c.scale:+.{c.digits}f}", "no spread", "—", verdict_text(r, c)]
            else:
                digits = c.digits
                cells += [f"{r['difference'] * c.scale:+.{digits}f}",
                          f"[{r['ci_low'] * c.scale:+.{digits}f}, {r['ci_high'] * c.scale:+.{digits}f}]",
                          f"{r['mde'] * c.scale:.{digits}f}" if np.isfinite(r["mde"]) else "—", verdict_text(r, c)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _test_data(rows):
    """The rows' test data: one source, or several, each in its own brackets (a source names its folders with
    commas: "images:A, tested on B")."""
    found = sorted({r["data_source"] for r in rows})
    return found[0] if len(found) == 1 else f"{len(found)} sets, " + " and ".join(f"[{d}]" for d in found)


def markdown(comparison):
    """comparison.md: the test data, the regime, the contrasts with their verdicts, the variants."""
    c = comparison
    lines = [f"Test data: {_test_data(c['rows'])}; {descriptive.runs_trained(c['rows'])}"
             + (f", from {', '.join(f'{d} ({n})' for d, n in c['from_dirs'])}" if c.get("from_dirs") else "") + ".",
             ""]
    lines += [f"Note: {note}." for note in c.get("notes", [])] + ([""] if c.get("notes") else [])
    if c["rates"]:
        lines += ["Each placement at the rate chosen on validation data (see rates.md).", ""]
    lines += regime_lib.lines(c["regime"]) + [""]
    if c["contrasts"]:
        margins = ", ".join(f"{x.name} ±{c['margins'][x.metric] * x.scale:g} {x.unit}" for x in CONTRASTS)
        lines += [f"**Contrasts** ({'planned' if c['planned'] else 'each variant against the baseline'}; "
                  f"per metric, the difference tests and the equivalence tests each one Holm family at "
                  f"α = {c['alpha']:g}, no difference p below an exact sign-flip test's 2/2^n over the n seeds "
                  "that differ (equivalence p: 1/2^n); 95% CI: the paired t-interval, neither adjusted for the "
                  "family nor raised to that floor (one that excludes 0 can stand beside *inconclusive*); MDE: the "
                  "smallest true difference these seeds find with 80% power at α/m, Holm's strictest step (— where "
                  "they cannot reach α/m; Holm's later steps and equivalence, which needs one seed fewer, can still "
                  "reach a verdict beside it); equivalence: "
                  f"two one-sided tests, margins {margins})",
                  ""] + contrasts_markdown(c["contrasts"]) + ["",
                  "contrasts.csv holds the same numbers in each metric's own unit: "
                  + ", ".join(f"{x.name} as a {x.own_unit}" if x.own_unit == "fraction" else f"{x.name} in "
                              f"{x.own_unit}" for x in CONTRASTS) + " (0.01 of accuracy = 1 point).", ""]
    lines += ["**Variants** (mean ± std over seeds)", ""] + variants_markdown(c["table"])
    return "\n".join(lines) + "\n"


def write_csv(path, table):
    """comparison.csv: per variant, mean, std, 95% CI half-width and seeds (n: fewer than `seeds` where a seed's
    score was not finite) of every column."""
    stats_of = ("mean", "std", "ci95", "n")
    fields = ["variant", "seeds", "sites", "precision"] + [f"{c.metric}_{s}" for c in COLUMNS for s in stats_of]

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for e in table:
                row = {"variant": e["variant"], "seeds": e["seeds"], "sites": e.get("sites"),
                       "precision": e.get("precision")}
                for c in COLUMNS:
                    for s in stats_of:
                        row[f"{c.metric}_{s}"] = e[c.metric][s] if c.metric in e else ""
                writer.writerow(row)

    files.atomic_write(path, write)


CONTRAST_FIELDS = ("n", "difference", "ci_low", "ci_high", "sd", "mde", "margin", "p", "p_holm", "p_tost",
                   "p_tost_holm")


def write_contrasts_csv(path, contrasts):
    """contrasts.csv: one row per contrast and metric, in the metric's own units (accuracy as a fraction)."""
    fields = ["a", "b", "metric", "identical", "verdict"] + list(CONTRAST_FIELDS) + ["unit"]

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for e in contrasts:
                for c in CONTRASTS:
                    r = e.get(c.metric) or {}
                    writer.writerow({"a": e["a"], "b": e["b"], "metric": c.metric, "identical": e["identical"],
                                     "verdict": "identical" if e["identical"] else "+".join(r.get("verdict", [])),
                                     **{k: r.get(k, "") for k in CONTRAST_FIELDS}, "unit": c.own_unit})

    files.atomic_write(path, write)


def plot(path, table, rows, title=""):
    """Accuracy per variant (mean, 95% CI, seeds as dots) and learning curves."""
    plt = plots.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(table) + 3))
    names = [e["variant"] for e in table]
    y = np.arange(len(table))
    scored = [e.get("test_accuracy") or {"mean": np.nan, "ci95": np.nan} for e in table]  # (every seed diverged)
    means = [100 * s["mean"] for s in scored]
    errors = [0 if np.isnan(s["ci95"]) else 100 * s["ci95"] for s in scored]
    left.errorbar(means, y, xerr=errors, fmt="o", capsize=4, color="black", label="mean ± 95% CI")
    for i, name in enumerate(names):
        seeds = [100 * r["test_accuracy"] for r in rows if r["variant"] == name]
        left.scatter(seeds, [i] * len(seeds), s=12, alpha=0.5, color="tab:blue")
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlabel("test accuracy (%)")
    left.set_title("Test accuracy per variant")
    left.legend(loc="best", fontsize=8)
    for name in names:
        curves = [r["val_accuracy"] for r in rows if r["variant"] == name and r["val_accuracy"]]
        if curves:
            n = min(len(c) for c in curves)
            right.plot(np.arange(1, n + 1), 100 * np.mean([c[:n] for c in curves], axis=0), marker=".", label=name)
    right.set_xlabel("epoch")
    right.set_ylabel("validation accuracy (%), mean over seeds")
    right.set_title("Learning curves")
    if right.lines:
        right.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plots.save(fig, path)


def plot_contrasts(path, contrasts, title=""):
    """Per metric: each contrast's difference with its 95% CI, the ±margin band and ±MDE ticks."""
    plt = plots.pyplot()
    tested = [e for e in contrasts if not e["identical"]]
    fig, axes = plt.subplots(1, len(CONTRASTS), figsize=(6 * len(CONTRASTS), 0.5 * max(1, len(tested)) + 2.5),
                             squeeze=False)
    y = np.arange(len(tested))
    for ax, c in zip(axes[0], CONTRASTS):
        results = [e[c.metric] for e in tested]
        margin = (results[0]["margin"] if results else DEFAULT_MARGINS[c.metric]) * c.scale
        ax.axvspan(-margin, margin, color="tab:green", alpha=0.12, label=f"±margin ({margin:g} {c.unit})")
        ax.axvline(0, color="grey", linewidth=1)
        for i, r in enumerate(results):
            color = {stats.DIFFERS: "tab:red", stats.EQUIVALENT: "tab:green"}.get(r["verdict"][0], "black")
            low, high = stats.error_bar(r)
            ax.errorbar([r["difference"] * c.scale], [i], xerr=[[low * c.scale], [high * c.scale]], fmt="o",
                        capsize=4, color=color)
            if np.isfinite(r["mde"]):
                ax.scatter([-r["mde"] * c.scale, r["mde"] * c.scale], [i, i], marker="|", s=120, color="tab:orange",
                           label="±MDE" if i == 0 else None)
        ax.set_yticks(y, [e["contrast"] for e in tested] if ax is axes[0][0] else [""] * len(tested))
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {c.name} ({c.unit}), A - B")
        ax.set_title(f"{c.name}: mean difference and 95% CI\n(red: differs, green: equivalent, black: inconclusive)",
                     fontsize=8)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plots.save(fig, path)


def write_hparams(logdir, rows):
    """One HParams session per run: the fields that vary among the runs (the precision each trained in, not `auto`),
    and every column it has, named and scaled as comparison.md shows it (test acc % in percent, the gap in points),
    a scaled one under a tag of its own (`test_accuracy_percent`: a run's own summaries hold the fraction under
    `test_accuracy`, and one TensorBoard over a runs directory shows both)."""
    from dropzoo import sweep

    configs = [{**r["config"], "precision": r.get("precision") or r["config"].get("precision")} for r in rows]
    keys = ("model", "placement") + tuple(k for k in sweep.varying_fields(configs) if k not in ("model", "placement"))
    columns = [c for c in COLUMNS if any(r.get(c.metric) is not None for r in rows)]
    def tag(column):
        return column.metric if column.scale == 1 else f"{column.metric}_percent"

    sessions = [(os.path.join(r["variant"], f"seed{r['seed']}"),
                 {"variant": r["variant"], **{k: config.get(k) for k in keys + ("seed",)}},
                 {tag(c): r[c.metric] * c.scale for c in columns if r.get(c.metric) is not None})
                for r, config in zip(rows, configs)]
    summaries.write_hparams(logdir, sessions, [(tag(c), None, c.heading) for c in columns])


# Every file a comparison may write; those this one does not write are removed from its directory.
OUTPUT_NAMES = ("comparison.md", "descriptive.md", "comparison.csv", "contrasts.csv", "comparison.png", "runs.json",
                "hparams", "contrasts.png", "rates.md", "rates.png", "sizes.md", "sizes.png", "uncertainty.md",
                "reliability.png", "mc_samples.png")


def write(comparison, output_dir):
    """Writes every file of the comparison into `output_dir`; returns {name: path}.

    What an earlier comparison left there (a contrasts.png this one does not
    write, hparams sessions of other runs) is removed first, so the directory
    holds this comparison only, and comparison.md is written last: one stopped
    half-way leaves no comparison.md, and no mix of two comparisons' files.
    """
    os.makedirs(output_dir, exist_ok=True)
    names = ["comparison.md", "descriptive.md", "comparison.csv", "contrasts.csv", "comparison.png", "runs.json",
             "hparams"]
    if comparison["contrasts"]:
        names.append("contrasts.png")
    if comparison["rates"]:
        names += ["rates.md", "rates.png"]
    if comparison.get("sizes"):
        names += ["sizes.md", "sizes.png"]
    compared = comparison["compared"]
    if uncertainty_report.has_uncertainty(comparison["rows"]):
        names += ["uncertainty.md", "reliability.png"] + (
            ["mc_samples.png"] if uncertainty_report.has_mc_curve(comparison["rows"]) else [])
    paths = {name: os.path.join(output_dir, name) for name in names}
    for name in OUTPUT_NAMES:
        stale = os.path.join(output_dir, name)
        if name == "hparams" and os.path.isdir(stale):
            shutil.rmtree(stale)  # rewritten below: sessions of runs no longer compared would stay in it
        elif os.path.isfile(stale):
            os.remove(stale)
    files.write_text(paths["descriptive.md"], descriptive.markdown(comparison, CONTRASTS,
                                                                   comparison.get("accuracy_below", ())))
    write_csv(paths["comparison.csv"], comparison["table"])
    write_contrasts_csv(paths["contrasts.csv"], comparison["contrasts"])
    plot(paths["comparison.png"], comparison["table"], compared, comparison["title"])
    if "contrasts.png" in paths:
        plot_contrasts(paths["contrasts.png"], comparison["contrasts"], comparison["title"])
    if "uncertainty.md" in paths:
        ood = sorted({r.get("ood_data_source") for r in comparison["rows"] if r.get("ood_data_source")})
        text = (f"Test data: {_test_data(comparison['rows'])}; {descriptive.runs_trained(comparison['rows'])}"
                + ("; each placement at the rate chosen on validation data.\n\n" if comparison["rates"] else ".\n\n"))
        text += uncertainty_report.markdown(comparison["table"], COLUMNS, cell, ", ".join(ood) or None,
                                            uncertainty_report.comparison_notes(comparison["rows"],
                                                                                comparison["compared"]))
        files.write_text(paths["uncertainty.md"], text)
        variants = [e["variant"] for e in comparison["table"]]
        uncertainty_report.plot_reliability(paths["reliability.png"], compared, variants)
        if "mc_samples.png" in paths:
            uncertainty_report.plot_mc_samples(paths["mc_samples.png"], compared, variants)
    if comparison["rates"]:
        files.write_text(paths["rates.md"], rates_report.markdown(comparison["rates"]))
        rates_report.plot(paths["rates.png"], comparison["rates"], comparison["title"])
    if "sizes.md" in paths:
        files.write_text(paths["sizes.md"], sizes_report.markdown(comparison["sizes"], COLUMNS[0], CONTRASTS, cell,
                                                                  verdict_text, seeds_text))
        sizes_report.plot(paths["sizes.png"], comparison["sizes"], COLUMNS[0], CONTRASTS, comparison["title"])
    # (Fingerprints and frameworks stay out: the records' runs.json files predate them; metrics.json holds them.)
    left_out = ("key", "data_sha256", "train_subset_sha256", "frameworks") + descriptive.ROW_FIELDS
    files.write_json(paths["runs.json"], [{k: v for k, v in r.items() if k not in left_out}
                                          for r in comparison["rows"]])
    try:
        write_hparams(paths["hparams"], compared)
    except Exception as e:  # TensorFlow's summary writer reports a full disk as its own error
        failure = files.write_failure(e, paths["hparams"])
        if failure is None:
            raise
        raise failure from None
    files.write_text(paths["comparison.md"], markdown(comparison))
    return paths
