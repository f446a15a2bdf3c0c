"""Compare exported runs: evaluate each SavedModel, then summarise over seeds.

`compare_runs(runs_dir)` finds every finished run below `runs_dir` (a
directory with metrics.json and a complete saved_model/), evaluates each
export on its test split through the serving signature, groups runs by the
configuration they recorded (everything but the seed; the group's name,
`<model>/<variant>`, is computed from it) and writes into
`<runs_dir>/comparison/`:

  comparison.md / .csv   per variant: mean ± std and 95% CI of test accuracy
                         and loss over seeds, ECE, MC-dropout metrics,
                         training time, Welch's t-test p-value vs the baseline
  comparison.png         accuracy per variant with its interval, and
                         validation accuracy per epoch for each variant
  runs.json              every run's evaluation
  hparams/               TensorBoard HParams summaries of the same numbers
  rates.md / .png        with several rates per placement: the rate x placement
                         grid, each placement's rate chosen on validation loss
  uncertainty.md,        with MC dropout or OOD data: calibration and OOD
  reliability.png,       detection per variant, reliability diagrams, and NLL
  mc_samples.png         and ECE against the number of MC samples
                         (dropzoo.uncertainty_report)
"""
import csv
import os

import numpy as np

from dropzoo import config as config_lib
from dropzoo import data as data_lib
from dropzoo import sources
from dropzoo import evaluate
from dropzoo import files
from dropzoo import stats
from dropzoo import sweep
from dropzoo import uncertainty_report
from dropzoo.errors import ExportError


def find_runs(runs_dir):
    """Directories below `runs_dir` holding a finished run, sorted."""
    if not os.path.isdir(runs_dir):
        raise ValueError(f"--runs_dir {runs_dir} is not a directory; point it at a sweep's --workdir")
    found = []
    for root, dirs, names in os.walk(runs_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "comparison")
        if "metrics.json" in names and (os.path.isdir(os.path.join(root, "saved_model"))
                                        or _is_identical_record(root)):
            found.append(root)
            dirs[:] = []  # a run's own subdirectories hold no runs
    if not found:
        raise ValueError(f"no finished runs (metrics.json + saved_model/) below {runs_dir}; "
                         "train some first, e.g. python train.py --placement=all --seeds=3 "
                         f"--workdir={runs_dir}")
    return sorted(found)


def _is_identical_record(run):
    """Whether `run` is a sweep's record of a run identical by construction to another."""
    try:
        return "identical_to" in files.read_json(os.path.join(run, "metrics.json"), "")
    except (OSError, ValueError):
        return False


def _data_of(metrics, override):
    """The load_source arguments to test a run on: the override, else the run's own data."""
    if override.get("dataset") or override.get("idx_dir"):
        return {"dataset": override.get("dataset") or "mnist", "idx_dir": override.get("idx_dir"),
                "tfds_data_dir": override.get("tfds_data_dir")}
    return dict(metrics["data"]["origin"])


# Fields of a recorded config that do not make a run another variant.
_NOT_VARIANT = ("seed",) + config_lib.OBSERVATION_ONLY + config_lib.EXECUTION_ONLY


def variant_key(config):
    """What runs of one variant share: their recorded config without seed and execution details.

    Fields a run recorded before they existed count at their defaults, so
    older and newer runs of one variant stay one variant.
    """
    return tuple(sorted((k, v) for k, v in config_lib.with_defaults(config).items() if k not in _NOT_VARIANT))


def variant_label(config, varying=()):
    """`<model>/<variant>`, computed from a recorded config; `varying` as sweep.variant_name takes it."""
    return f"{config['model']}/{sweep.variant_name(config, varying)}"


def baseline_config(config, baseline):
    """`config` with its placement replaced by the `baseline` placement (same kind, activation, ...)."""
    return {**config, "placement": baseline, "sites": ""}


def evaluate_runs(run_dirs, *, mc_samples=0, mc_seed=0, batch_size=256, data_override=None, source=None,
                  ood_source=None):
    """[{run, variant, seed, metrics..., evaluation...}] for each run directory.

    `source` (a sources.Source) tests every run on its test split instead;
    `ood_source` adds out-of-distribution detection against its test split. A
    run recorded as identical by construction to another gets that run's
    evaluation (one export, evaluated once) and `identical_to` its path.
    """
    loaded, evaluations, rows = {}, {}, []
    for run in run_dirs:
        metrics = files.read_json(os.path.join(run, "metrics.json"),
                                  "delete it and rerun that run's train.py command to re-measure it")
        trained = (os.path.normpath(os.path.join(run, metrics["identical_to"]))
                   if "identical_to" in metrics else run)
        if source is not None:
            key, run_source = "given", source
        else:
            origin = _data_of(metrics, data_override or {})
            key = tuple(sorted(origin.items()))
            if key not in loaded:
                loaded[key] = sources.load_source(**origin, need_train=False)
            run_source = loaded[key]
        if (trained, key) not in evaluations:
            try:
                evaluations[trained, key] = evaluate.evaluate_saved_model(
                    os.path.join(trained, "saved_model"),
                    data_lib.raw_batches(run_source.test, batch_size), mc_samples=mc_samples,
                    mc_seed=mc_seed,
                    ood_batches=(data_lib.raw_batches(ood_source.test, batch_size)
                                 if ood_source is not None else None))
            except ExportError as e:
                raise ExportError(f"run {run}: {e}") from None
        result = evaluations[trained, key]
        history = metrics.get("history", {})
        rows.append({
            "run": run,
            "variant": None,  # labelled below, once every run's config is known
            "seed": metrics["config"]["seed"],
            "config": metrics["config"],
            "data_source": run_source.name,
            "train_time_sec": metrics.get("train_time_sec"),
            "val_accuracy": history.get("val_accuracy", []),
            # The final model's validation loss (older runs: their last epoch's).
            "validation_loss": metrics.get("validation_loss", (history.get("val_loss") or [None])[-1]),
            "identical_to": trained if trained != run else None,
            **{f"test_{k}" if k in ("accuracy", "loss") else k: v for k, v in result.items()},
        })
    varying = sweep.varying_fields([r["config"] for r in rows])
    for r in rows:
        r["variant"] = variant_label(r["config"], varying)
    return rows


METRICS = ("test_accuracy", "test_loss", "ece", "brier", "mc_accuracy", "mc_nll", "mc_ece", "mc_brier",
           "train_time_sec") + uncertainty_report.OOD


def _without(key, field):
    return tuple(item for item in key if item[0] != field)


def summarise(rows, baseline="canonical"):
    """Per-variant statistics over seeds: baselines first, then by name.

    A variant whose runs are all identical by construction to another's gets
    `identical_to` (that variant's name) and no test of its own. Tests
    compare each variant with the baseline placement of the same kind,
    activation, norm and rate (or, when the rows hold one tuned rate per
    placement, the baseline at its own rate).
    """
    groups = {}
    for r in rows:
        groups.setdefault(variant_key(r["config"]), []).append(r)
    labels = {key: runs[0]["variant"] for key, runs in groups.items()}
    label_of_run = {r["run"]: labels[key] for key, runs in groups.items() for r in runs}
    order = sorted(groups, key=lambda k: (groups[k][0]["config"]["placement"] != baseline, labels[k]))
    table = []
    for key in order:
        runs = groups[key]
        entry = {"variant": labels[key], "seeds": len(runs)}
        for metric in METRICS:
            values = [r[metric] for r in runs if r.get(metric) is not None]
            if values:
                mean, std, half = stats.mean_ci(values)
                entry[metric] = {"mean": mean, "std": std, "ci95": half}
        targets = {label_of_run.get(r["identical_to"], r["identical_to"]) for r in runs}
        entry["identical_to"] = targets.pop() if len(targets) == 1 and None not in targets else None
        base = _baseline_key(groups, baseline_config(runs[0]["config"], baseline))
        compared = base is not None and base != key and entry["identical_to"] is None
        entry["p_vs_baseline"] = (stats.welch_p_value([r["test_accuracy"] for r in runs],
                                                      [r["test_accuracy"] for r in groups[base]])
                                  if compared else None)
        entry["p_paired"] = _paired_p(runs, groups[base]) if compared else None
        table.append(entry)
    _holm_over_table(table)
    return table


def _baseline_key(groups, config):
    """The group of the baseline config; at another rate if the rows hold only that one."""
    key = variant_key(config)
    if key in groups:
        return key
    same = [k for k in groups if _without(k, "rate") == _without(key, "rate")]
    return same[0] if len(same) == 1 else None


def _paired_p(runs, baseline_runs):
    """Paired t-test of test accuracy over the seeds both variants ran."""
    mine = {r["seed"]: r["test_accuracy"] for r in runs}
    theirs = {r["seed"]: r["test_accuracy"] for r in baseline_runs}
    seeds = sorted(set(mine) & set(theirs))
    return stats.paired_p_value([mine[k] for k in seeds], [theirs[k] for k in seeds])


# Family-wise error rate for the table's "survives Holm" column.
ALPHA = 0.05


def _holm_over_table(table):
    """Holm's correction over every paired comparison of the table."""
    compared = [e for e in table if e["p_paired"] is not None]
    adjusted = stats.holm([e["p_paired"] for e in compared])
    for entry in table:
        entry["p_paired_holm"] = None
        entry["survives_holm"] = None
    for entry, p in zip(compared, adjusted):
        entry["p_paired_holm"] = p
        entry["survives_holm"] = bool(p < ALPHA) if not np.isnan(p) else None


def _fmt(entry, metric, digits=4, pct=False):
    if metric not in entry:
        return ""
    s = entry[metric]
    scale = 100.0 if pct else 1.0
    text = f"{s['mean'] * scale:.{digits}f}"
    if not np.isnan(s["std"]):
        text += f" ± {s['std'] * scale:.{digits}f}"
    return text


def _ci(entry, metric, digits=4, pct=False):
    if metric not in entry or np.isnan(entry[metric]["ci95"]):
        return ""
    s, scale = entry[metric], (100.0 if pct else 1.0)
    return f"[{(s['mean'] - s['ci95']) * scale:.{digits}f}, {(s['mean'] + s['ci95']) * scale:.{digits}f}]"


def markdown(table, baseline="canonical"):
    """The comparison as a Markdown table (accuracy in %)."""
    mc = any("mc_accuracy" in e for e in table)
    head = ["variant", "seeds", "test acc % (mean ± std)", "95% CI", "test loss (mean ± std)", "95% CI", "ECE"]
    if mc:
        head += ["MC acc %", "MC NLL", "MC ECE"]
    head += ["train time s", f"p vs {baseline} (Welch)", "p paired", "p paired, Holm",
             f"differs (Holm, α={ALPHA:g})"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for e in table:
        cells = [e["variant"], str(e["seeds"]), _fmt(e, "test_accuracy", 2, True),
                 _ci(e, "test_accuracy", 2, True), _fmt(e, "test_loss"), _ci(e, "test_loss"),
                 _fmt(e, "ece")]
        if mc:
            cells += [_fmt(e, "mc_accuracy", 2, True), _fmt(e, "mc_nll"), _fmt(e, "mc_ece")]
        cells += [_fmt(e, "train_time_sec", 1)] + [
            "" if e[key] is None else f"{e[key]:.3g}" for key in ("p_vs_baseline", "p_paired", "p_paired_holm")]
        if e.get("identical_to"):
            cells.append(f"identical by construction to {e['identical_to']}")
        else:
            cells.append("" if e["survives_holm"] is None else ("yes" if e["survives_holm"] else "no"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_TESTS = ("p_vs_baseline", "p_paired", "p_paired_holm", "survives_holm")


def write_csv(path, table):
    files.atomic_write(path, lambda tmp: _write_csv(tmp, table))


def _write_csv(path, table):
    fields = ["variant", "seeds"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci95")]
    fields += list(_TESTS)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for e in table:
            row = {"variant": e["variant"], "seeds": e["seeds"], **{k: e[k] for k in _TESTS}}
            for m in METRICS:
                for s in ("mean", "std", "ci95"):
                    row[f"{m}_{s}"] = e[m][s] if m in e else ""
            writer.writerow(row)


def plot(path, table, rows, title=""):
    """Accuracy per variant (mean, 95% CI, seeds as dots) and learning curves."""
    import matplotlib
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(table) + 3))
    names = [e["variant"] for e in table]
    y = np.arange(len(table))
    means = [100 * e["test_accuracy"]["mean"] for e in table]
    errors = [0 if np.isnan(e["test_accuracy"]["ci95"]) else 100 * e["test_accuracy"]["ci95"] for e in table]
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
            mean = 100 * np.mean([c[:n] for c in curves], axis=0)
            right.plot(np.arange(1, n + 1), mean, marker=".", label=name)
    right.set_xlabel("epoch")
    right.set_ylabel("validation accuracy (%), mean over seeds")
    right.set_title("Learning curves")
    if right.lines:
        right.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_hparams(logdir, rows):
    """One HParams session per run, so TensorBoard's dashboard shows the comparison."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    keys = ("model", "placement", "kind", "activation", "rate", "seed")
    metric_tags = [m for m in METRICS if any(r.get(m) is not None for r in rows)]
    with tf.summary.create_file_writer(logdir).as_default():
        hp.hparams_config(hparams=[hp.HParam("variant")] + [hp.HParam(k) for k in keys],
                          metrics=[hp.Metric(m) for m in metric_tags])
    for r in rows:
        run_logdir = os.path.join(logdir, r["variant"], f"seed{r['seed']}")
        with tf.summary.create_file_writer(run_logdir).as_default():
            values = {"variant": r["variant"]}
            values.update({k: ("" if r["config"].get(k) is None else r["config"][k]) for k in keys})
            hp.hparams(values, trial_id=f"{r['variant']}/seed{r['seed']}")
            for m in metric_tags:
                if r.get(m) is not None:
                    tf.summary.scalar(m, r[m], step=0)


def tune_rates(rows):
    """Each placement's rate, chosen on validation data only; None if no placement has several.

    Groups runs by their config without rate and seed (a placement of one
    kind, activation, norm, ...), and picks the rate with the lowest mean
    validation loss over seeds. Returns {"selected": {group: rate}, "grid":
    [{variant, rate, seeds, validation_loss, test_accuracy, test_loss,
    selected}]}: the test metrics are reported, never used to choose.
    """
    by_group, varying = {}, sweep.varying_fields([r["config"] for r in rows])
    for r in rows:
        group = _without(variant_key(r["config"]), "rate")
        by_group.setdefault(group, {}).setdefault(r["config"]["rate"], []).append(r)
    if not any(len(rates) > 1 for rates in by_group.values()):
        return None
    selected, grid = {}, []
    for group, rates in by_group.items():
        def mean(runs, metric):
            values = [r[metric] for r in runs if r.get(metric) is not None]
            return float(np.mean(values)) if values else float("nan")

        scored = {rate: mean(runs, "validation_loss") for rate, runs in rates.items()}
        finite = {rate: loss for rate, loss in scored.items() if np.isfinite(loss)}
        if not finite:
            raise ValueError(f"the runs of {rates[next(iter(rates))][0]['variant']} record "
                             "no validation loss to choose a rate by; train them with "
                             "--validation_fraction > 0")
        selected[group] = min(finite, key=lambda rate: (finite[rate], rate is None, rate or 0))
        first = next(iter(rates.values()))[0]
        label = variant_label({**first["config"], "rate": None}, varying)
        for rate, runs in sorted(rates.items(), key=lambda item: (item[0] is None, item[0] or 0)):
            grid.append({"variant": label, "rate": rate, "seeds": len(runs),
                         "validation_loss": scored[rate], "test_accuracy": mean(runs, "test_accuracy"),
                         "test_loss": mean(runs, "test_loss"), "selected": rate == selected[group]})
    return {"selected": selected, "grid": grid}


def at_selected_rates(rows, tuned):
    """The rows of each placement at its selected rate."""
    return [r for r in rows
            if tuned["selected"][_without(variant_key(r["config"]), "rate")] == r["config"]["rate"]]


def _rate_text(rate):
    return "sites' own" if rate is None else f"{rate:g}"


def rates_markdown(grid):
    """The rate x placement grid as Markdown: mean validation loss, test accuracy and NLL."""
    lines = ["Rate chosen per placement by the lowest mean validation loss over seeds (marked *); "
             "the test columns are reported, not used to choose.", "",
             "| variant | rate | seeds | validation loss | test acc % | test NLL |",
             "| --- | --- | --- | --- | --- | --- |"]
    for g in grid:
        lines.append(f"| {g['variant']} | {_rate_text(g['rate'])}{' *' if g['selected'] else ''} | "
                     f"{g['seeds']} | {g['validation_loss']:.4f} | {100 * g['test_accuracy']:.2f} | "
                     f"{g['test_loss']:.4f} |")
    return "\n".join(lines) + "\n"


def plot_rates(path, grid, title=""):
    """Heat maps of mean test accuracy and test NLL over rate x placement (chosen rate boxed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(g["variant"] for g in grid))
    rates = sorted({g["rate"] for g in grid}, key=lambda r: (r is None, r or 0))
    cells = {(g["variant"], g["rate"]): g for g in grid}
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.3 * len(rates) * 2, 1.5 + 0.45 * len(variants)))
    for ax, metric, name, scale, cmap in ((axes[0], "test_accuracy", "test accuracy (%)", 100, "viridis"),
                                          (axes[1], "test_loss", "test NLL", 1, "viridis_r")):
        values = np.array([[scale * cells[v, r][metric] if (v, r) in cells else np.nan for r in rates]
                           for v in variants])
        image = ax.imshow(values, cmap=cmap, aspect="auto")
        fig.colorbar(image, ax=ax, shrink=0.8)
        for i, v in enumerate(variants):
            for j, r in enumerate(rates):
                if (v, r) in cells:
                    ax.text(j, i, f"{values[i, j]:.2f}" if scale == 100 else f"{values[i, j]:.3f}",
                            ha="center", va="center", fontsize=7, color="white")
                    if cells[v, r]["selected"]:
                        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                                   edgecolor="red", linewidth=2))
        ax.set_xticks(range(len(rates)), [_rate_text(r) for r in rates])
        ax.set_yticks(range(len(variants)), variants if ax is axes[0] else [""] * len(variants))
        ax.set_xlabel("dropout rate")
        ax.set_title(f"{name}; red: rate chosen on validation loss", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def compare_runs(runs_dir, *, output_dir=None, mc_samples=0, mc_seed=0, batch_size=256,
                 baseline="canonical", data_override=None, source=None, ood=None):
    """Evaluates every run below `runs_dir` and writes the comparison; returns paths + table.

    `ood` ({"dataset", "idx_dir"}, or a sources.Source) adds out-of-distribution
    detection against that data's test split.
    """
    run_dirs = find_runs(runs_dir)
    ood_source = (ood if isinstance(ood, sources.Source)
                  else evaluate.load_ood_source(ood, (data_override or {}).get("tfds_data_dir")))
    rows = evaluate_runs(run_dirs, mc_samples=mc_samples, mc_seed=mc_seed, batch_size=batch_size,
                         data_override=data_override, source=source, ood_source=ood_source)
    tuned = tune_rates(rows)
    table = summarise(at_selected_rates(rows, tuned) if tuned else rows, baseline)
    output_dir = output_dir or os.path.join(runs_dir, "comparison")
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, name) for name in
             ("comparison.md", "comparison.csv", "comparison.png", "runs.json", "hparams")}
    if tuned:
        paths.update({name: os.path.join(output_dir, name) for name in ("rates.md", "rates.png")})
    compared = at_selected_rates(rows, tuned) if tuned else rows
    if uncertainty_report.has_uncertainty(rows):
        paths.update({name: os.path.join(output_dir, name)
                      for name in ("uncertainty.md", "reliability.png", "mc_samples.png")})
    names = sorted({r["data_source"] for r in rows})
    title = f"{runs_dir} — test data: {', '.join(names)}"
    text = f"Test data: {', '.join(names)}; {len(rows)} runs.\n\n"
    if tuned:
        text += "Each placement at the rate chosen on validation data (see rates.md).\n\n"
    text += markdown(table, baseline)
    files.atomic_write(paths["comparison.md"], lambda tmp: _write_text(tmp, text))
    write_csv(paths["comparison.csv"], table)
    plot(paths["comparison.png"], table, compared, title)
    if "uncertainty.md" in paths:
        text = f"Test data: {', '.join(names)}; {len(rows)} runs" + (
            "; each placement at the rate chosen on validation data.\n\n" if tuned else ".\n\n")
        text += uncertainty_report.markdown(table, ood_source.name if ood_source else None)
        files.atomic_write(paths["uncertainty.md"], lambda tmp: _write_text(tmp, text))
        variants = [e["variant"] for e in table]
        uncertainty_report.plot_reliability(paths["reliability.png"], compared, variants)
        uncertainty_report.plot_mc_samples(paths["mc_samples.png"], compared, variants)
    if tuned:
        files.atomic_write(paths["rates.md"], lambda tmp: _write_text(tmp, rates_markdown(tuned["grid"])))
        plot_rates(paths["rates.png"], tuned["grid"], title)
    evaluate.write_json(paths["runs.json"], rows)
    try:
        write_hparams(paths["hparams"], rows)
    except Exception as e:  # TensorFlow's summary writer reports a full disk as its own error
        failure = files.write_failure(e, paths["hparams"])
        if failure is None:
            raise
        raise failure from None
    return {"paths": paths, "table": table, "num_runs": len(rows),
            "rates": tuned["grid"] if tuned else None}
