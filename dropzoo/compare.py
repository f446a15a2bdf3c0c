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
"""
import csv
import os

import numpy as np

from dropzoo import config as config_lib
from dropzoo import data as data_lib
from dropzoo import evaluate
from dropzoo import files
from dropzoo import stats
from dropzoo import sweep
from dropzoo.errors import ExportError


def find_runs(runs_dir):
    """Directories below `runs_dir` holding a finished run, sorted."""
    if not os.path.isdir(runs_dir):
        raise ValueError(f"--runs_dir {runs_dir} is not a directory; point it at a sweep's --workdir")
    found = []
    for root, dirs, files in os.walk(runs_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "comparison")
        if "metrics.json" in files and os.path.isdir(os.path.join(root, "saved_model")):
            found.append(root)
            dirs[:] = []  # a run's own subdirectories hold no runs
    if not found:
        raise ValueError(f"no finished runs (metrics.json + saved_model/) below {runs_dir}; "
                         "train some first, e.g. python train.py --placement=all --seeds=3 "
                         f"--workdir={runs_dir}")
    return sorted(found)


def _data_of(metrics, override):
    """The load_source arguments to test a run on: the override, else the run's own data."""
    if override.get("dataset") or override.get("idx_dir"):
        return {"dataset": override.get("dataset") or "mnist", "idx_dir": override.get("idx_dir"),
                "tfds_data_dir": override.get("tfds_data_dir")}
    return dict(metrics["data"]["origin"])


# Fields of a recorded config that do not make a run another variant.
_NOT_VARIANT = ("seed",) + config_lib.OBSERVATION_ONLY + config_lib.EXECUTION_ONLY


def variant_key(config):
    """What runs of one variant share: their recorded config without seed and execution details."""
    return tuple(sorted((k, v) for k, v in config.items() if k not in _NOT_VARIANT))


def variant_label(config):
    """`<model>/<variant>`, computed from a recorded config."""
    return f"{config['model']}/{sweep.variant_name(config)}"


def baseline_config(config, baseline):
    """`config` with its placement replaced by the `baseline` placement (same kind, activation, ...)."""
    return {**config, "placement": baseline, "sites": ""}


def evaluate_runs(run_dirs, *, mc_samples=0, batch_size=256, data_override=None, source=None):
    """[{run, variant, seed, metrics..., evaluation...}] for each run directory.

    `source` (a data.Source) tests every run on its test split instead.
    """
    sources, rows = {}, []
    for run in run_dirs:
        metrics = files.read_json(os.path.join(run, "metrics.json"),
                                  "delete it and rerun that run's train.py command to re-measure it")
        if source is not None:
            key, run_source = "given", source
        else:
            origin = _data_of(metrics, data_override or {})
            key = tuple(sorted(origin.items()))
            if key not in sources:
                sources[key] = data_lib.load_source(**origin, need_train=False)
            run_source = sources[key]
        try:
            result = evaluate.evaluate_saved_model(
                os.path.join(run, "saved_model"), data_lib.raw_batches(run_source.test, batch_size),
                mc_samples=mc_samples)
        except ExportError as e:
            raise ExportError(f"run {run}: {e}") from None
        rows.append({
            "run": run,
            "variant": variant_label(metrics["config"]),
            "seed": metrics["config"]["seed"],
            "config": metrics["config"],
            "data_source": run_source.name,
            "train_time_sec": metrics.get("train_time_sec"),
            "val_accuracy": metrics.get("history", {}).get("val_accuracy", []),
            **{f"test_{k}" if k in ("accuracy", "loss") else k: v for k, v in result.items()},
        })
    return rows


METRICS = ("test_accuracy", "test_loss", "ece", "mc_accuracy", "mc_nll", "mc_ece", "train_time_sec")


def summarise(rows, baseline="canonical"):
    """Per-variant statistics over seeds: baselines first, then by name."""
    groups = {}
    for r in rows:
        groups.setdefault(variant_key(r["config"]), []).append(r)
    labels = {key: variant_label(runs[0]["config"]) for key, runs in groups.items()}
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
        base = variant_key(baseline_config(runs[0]["config"], baseline))
        compared = base in groups and base != key
        entry["p_vs_baseline"] = (stats.welch_p_value([r["test_accuracy"] for r in runs],
                                                      [r["test_accuracy"] for r in groups[base]])
                                  if compared else None)
        entry["p_paired"] = _paired_p(runs, groups[base]) if compared else None
        table.append(entry)
    _holm_over_table(table)
    return table


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


def _write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


def compare_runs(runs_dir, *, output_dir=None, mc_samples=0, batch_size=256, baseline="canonical",
                 data_override=None, source=None):
    """Evaluates every run below `runs_dir` and writes the comparison; returns paths + table."""
    rows = evaluate_runs(find_runs(runs_dir), mc_samples=mc_samples, batch_size=batch_size,
                         data_override=data_override, source=source)
    table = summarise(rows, baseline)
    output_dir = output_dir or os.path.join(runs_dir, "comparison")
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, name) for name in
             ("comparison.md", "comparison.csv", "comparison.png", "runs.json", "hparams")}
    sources = sorted({r["data_source"] for r in rows})
    title = f"{runs_dir} — test data: {', '.join(sources)}"
    text = f"Test data: {', '.join(sources)}; {len(rows)} runs.\n\n" + markdown(table, baseline)
    files.atomic_write(paths["comparison.md"], lambda tmp: _write_text(tmp, text))
    write_csv(paths["comparison.csv"], table)
    plot(paths["comparison.png"], table, rows, title)
    evaluate.write_json(paths["runs.json"], rows)
    try:
        write_hparams(paths["hparams"], rows)
    except Exception as e:  # TensorFlow's summary writer reports a full disk as its own error
        failure = files.write_failure(e, paths["hparams"])
        if failure is None:
            raise
        raise failure from None
    return {"paths": paths, "table": table, "num_runs": len(rows)}
