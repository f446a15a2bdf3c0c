"""descriptive.md: the figures a comparison's tests do not give, printed from the same runs.

The contrasts say what the seeds can and cannot show; a study's text also
says how the seeds are spread (the median run, how many runs test below a
level, how many seeds a contrast's sign holds for), how long runs took on
which CPU, and how far each BatchNormalization layer's statistics shift.
This module computes those figures from the comparison's rows, so every
descriptive number a study publishes is printed by its comparison command:

- per variant: test accuracy and training accuracy (dropout off) at their
  minimum, median and maximum over seeds; the last epoch's accuracy on the
  training batches (dropout on); and, for each level in `accuracy_below`
  (percent), the runs testing below it;
- per contrast: the paired differences' mean and median, and on how many
  seeds A scored higher, the same, or lower;
- per BatchNormalization layer: the variance shift (moving variance over the
  variance the layer sees at inference, mean over channels) over seeds;
- per recorded CPU: the runs' wall and training times.

Descriptive only: no test and no interval here (comparison.md has those).
"""
import collections
import numbers

import numpy as np

from dropzoo.errors import ConfigError


def accuracy_levels(levels):
    """`levels` (numbers or strings such as '95' or '95%') as percentages, or ConfigError naming a bad one."""
    found = []
    for level in levels.split(",") if isinstance(levels, str) else [levels] if isinstance(levels, numbers.Real) \
            else levels:
        try:
            value = float(str(level).strip().rstrip("%"))
        except ValueError:
            value = None
        if value is None or not 1 <= value <= 100:  # (below 1: a fraction, 0.95 meant as 95%)
            raise ConfigError(f"--accuracy_below takes test accuracies in percent, from 1 to 100 "
                              f"(e.g. --accuracy_below=95,80 for 95% and 80%), got {level!r}")
        found.append(value)
    return tuple(sorted(set(found), reverse=True))


def record_fields(metrics):
    """The fields of a run's metrics.json this module reads, for its comparison row."""
    accuracy = [v for v in (metrics.get("history") or {}).get("accuracy", []) if v is not None]
    shifts = {name: s["variance_shift_mean"] for name, s in (metrics.get("dropout_stats") or {}).items()
              if isinstance(s, dict) and "variance_shift_mean" in s}
    machine = metrics.get("machine") or {}
    return {"wall_time_sec": metrics.get("wall_time_sec"),
            # A run resumed from a checkpoint records the times of its last session only.
            "resumed_from_epoch": metrics.get("resumed_from_epoch", 0),
            "batch_accuracy": accuracy[-1] if accuracy else None,
            "norm_shifts": shifts or None,
            "cpu": (f"{machine['cpu']} ({machine.get('cpu_kind', 'kind not recorded')})"
                    + (f", {machine['cores']} cores available" if machine.get("cores") else "")) if machine.get("cpu")
            else None}


# The row fields above stay out of runs.json: they are in each run's metrics.json already.
ROW_FIELDS = ("wall_time_sec", "resumed_from_epoch", "batch_accuracy", "norm_shifts", "cpu")


def _spread(values, scale=1.0, digits=2):
    """'min / median / max' of the finite values ('' without any), and '(n of N)' where some are not."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return ""
    text = " / ".join(f"{x * scale:.{digits}f}" for x in (min(finite), float(np.median(finite)), max(finite)))
    return text + (f" ({len(finite)} of {len(values)})" if len(finite) < len(values) else "")


def _by_variant(rows):
    found = {}
    for r in rows:
        found.setdefault(r["variant"], []).append(r)
    return found


def variants_lines(table, compared, accuracy_below=()):
    """Per variant: test and training accuracy over seeds, and the runs below each level of `accuracy_below`."""
    runs_of = _by_variant(compared)
    head = ["variant", "seeds", "test acc % (min / median / max)", "train acc %, dropout off (min / median / max)",
            "training batches acc %, dropout on, last epoch (min / median / max)"]
    head += [f"test acc below {level:g}%" for level in accuracy_below]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    listed = []
    for entry in table:
        runs = runs_of[entry["variant"]]
        cells = [entry["variant"], str(len(runs))] + [_spread([r.get(m) for r in runs], 100) for m in
                                                      ("test_accuracy", "train_accuracy", "batch_accuracy")]
        for level in accuracy_below:
            low = sorted((r["test_accuracy"], r["seed"]) for r in runs if r.get("test_accuracy") is not None
                         and r["test_accuracy"] < level / 100)  # (0.57 * 100 is 56.99999999999999)
            cells.append(f"{len(low)} of {len(runs)}")
            if low:
                listed.append(f"- {entry['variant']} below {level:g}%: "
                              + ", ".join(f"{100 * value:.2f} (seed {seed})" for value, seed in low))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ([""] + listed if listed else [])


def contrasts_lines(contrasts, contrasted):
    """Per contrast and metric (`contrasted`: report.CONTRASTS): the paired differences' mean and median, and
    the seeds' signs."""
    head = ["contrast (A - B)"]
    for c in contrasted:
        head += [f"Δ {c.name} ({c.unit}): mean / median", f"{c.name}: seeds A > B / = / <"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for e in contrasts:
        cells = [e["contrast"]]
        for c in contrasted:
            r = e.get(c.metric)
            if e["identical"] or not r or not r["n"]:
                cells += ["identical by construction" if e["identical"] else "", ""]
                continue
            cells += [" / ".join(f"{round(r[k] * c.scale, c.digits) + 0.0:+.{c.digits}f}"  # (no -0.00)
                                 for k in ("difference", "median")),
                      " / ".join(str(n) for n in r["signs"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def norm_lines(table, compared):
    """Per variant and BatchNormalization layer: the variance shift's mean / median / max over seeds (variants
    without BatchNormalization left out)."""
    runs_of = _by_variant(compared)
    layers = list(dict.fromkeys(name for r in compared for name in (r.get("norm_shifts") or {})))
    if not layers:
        return []
    lines = ["| variant | " + " | ".join(layers) + " |", "|" + " --- |" * (len(layers) + 1)]
    for entry in table:
        runs = runs_of[entry["variant"]]
        cells = []
        for name in layers:
            values = [r["norm_shifts"][name] for r in runs if name in (r.get("norm_shifts") or {})]
            cells.append(f"{np.mean(values):.2f} / {np.median(values):.2f} / {max(values):.2f}" if values else "")
        if any(cells):
            lines.append(f"| {entry['variant']} | " + " | ".join(cells) + " |")
    return lines


def trained_runs(rows):
    """The rows of runs trained (not those recorded as identical by construction to another)."""
    return [r for r in rows if not r.get("identical_to")]


def time_lines(rows):
    """Per recorded CPU: each trained run's wall and training time (a variant identical by construction to
    another reuses its runs, and is not counted twice; a run resumed from a checkpoint recorded its last session's
    wall time only, and is counted apart, and its training time where its record sums every session's)."""
    trained = trained_runs(rows)
    by_cpu = {}
    for r in trained:
        by_cpu.setdefault(r.get("cpu") or "CPU not recorded", []).append(r)
    lines = ["| CPU | runs | resumed (wall time not whole) | wall time s (min / median / max) | wall time h, summed | "
             "train time s (min / median / max) | train time h, summed |", "|" + " --- |" * 7]
    for cpu, runs in sorted(by_cpu.items(), key=lambda item: (item[0] == "CPU not recorded", item[0])):
        whole = [r for r in runs if not r.get("resumed_from_epoch")]
        cells = [cpu, str(len(runs)), str(len(runs) - len(whole))]
        for metric, timed in (("wall_time_sec", whole), ("train_time_sec", runs)):  # (records.row: None if partial)
            values = [r[metric] for r in timed if r.get(metric) is not None]
            hours = sum(values) / 3600
            cells += [_spread(values, digits=0), (f"{hours:.2f}" if hours >= 0.1 else f"{hours:.3f}") if values else ""]
            if values and len(values) < len(timed):
                cells[-1] += f" ({len(values)} of {len(timed)} runs)"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def runs_trained(rows):
    """"N runs trained in P" of a comparison's rows; runs identical by construction to a trained one (recorded, not
    trained) are counted apart."""
    trained = trained_runs(rows)
    if not trained:  # records of runs trained outside these directories
        return (f"{len(rows)} run{'s' * (len(rows) != 1)} recorded as identical by construction to runs trained "
                f"elsewhere, in {trained_in(rows)}")
    copies = len(rows) - len(trained)
    return (f"{len(trained)} run{'s' * (len(trained) != 1)} trained in {trained_in(trained)}"
            + (f" (and {copies} recorded as identical by construction to a trained run)" if copies else ""))


def trained_in(rows):
    """The precision the rows trained in ("float32"), or each of several with its runs ("float32 (4) and
    mixed_bfloat16 (4)"): a study pins one, so that machines pool seeds; a comparison says which it holds."""
    found = sorted(collections.Counter(str(r.get("precision") or "an unrecorded precision") for r in rows).items())
    return " and ".join(name if len(found) == 1 else f"{name} ({n})" for name, n in found)


def markdown(comparison, contrasted, accuracy_below=()):
    """descriptive.md of a comparison (report.write's `comparison`; `contrasted`: report.CONTRASTS)."""
    c = comparison
    lines = [f"Descriptive figures of the runs compared in comparison.md, {runs_trained(c['rows'])}: no test, no "
             "interval; the tests are in comparison.md.", "",
             "**Per variant**, over seeds" + (" (each placement at the rate chosen on validation data)"
                                              if c.get("rates") else ""), ""]
    lines += variants_lines(c["table"], c["compared"], accuracy_below) + [""]
    if c["contrasts"]:
        lines += ["**Contrasts**, over the seeds each pairs (as in comparison.md)", ""]
        lines += contrasts_lines(c["contrasts"], contrasted) + [""]
    if c.get("rates"):  # every rate's (the shift grows with the rate of the dropout feeding a BN layer); copies once
        variants = sorted({r["variant"] for r in trained_runs(c["rows"]) or c["rows"]})
        norm = norm_lines([{"variant": v} for v in variants], c["rows"])
    else:
        norm = norm_lines(c["table"], c["compared"])
    if norm:
        grid_note = "; every rate of the grid (variants identical by construction, as none at each rate, once)"
        lines += ["**Variance shift** of each BatchNormalization layer, mean / median / max over seeds (its moving "
                  "variance over the variance of its input at inference, mean over channels; 1: the statistics "
                  "fit what it sees when serving)" + (grid_note if c.get("rates") else ""), ""] + norm + [""]
    lines += ["**Time per run**, by the CPU each run recorded", ""] + time_lines(c["rows"])
    return "\n".join(lines) + "\n"
