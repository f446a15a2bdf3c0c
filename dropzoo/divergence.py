"""A run whose training diverged: its record, and how a comparison counts it.

A diverged run is an outcome of its variant, not a run to leave out: the
seeds that did not diverge would, alone, flatter a variant that diverges.
So the trainer records it in `diverged.json` beside the run's config.json
(what was trained, in which epoch it diverged, and why) and keeps the run's
directory; `train.py` run again does not train it (it would diverge
again) unless `--overwrite`, but says so (`Before`: its recorded outcome,
kept, as a finished run's is); `eval.py --collect` carries it; and a
comparison gives it a row of its variant whose scores are not finite, so
each contrast of that variant is inconclusive and its rate is chosen last,
as for a run whose record holds NaN scores.
"""
import math
import os

from dropzoo import files
from dropzoo import performance
from dropzoo.errors import RunError

FILE = "diverged.json"
_FIX = "delete it (and the run's directory) and rerun the run's train.py command"
WHY = "its loss or weights became NaN/inf"
RETRY = "train other settings (a lower --learning_rate) in another --workdir"


def path(workdir):
    return os.path.join(workdir, FILE)


def read(workdir):
    """The run's divergence record, or None where its training did not diverge."""
    return files.read_json(path(workdir), _FIX, {"epoch": int, "why": str, "config": {"seed": int}}) \
        if os.path.isfile(path(workdir)) else None


def write(workdir, epoch, described):
    """Records that the run in `workdir` diverged in `epoch`; `described`: what it trained (trainer.describe_run's
    entries and its precision), from which a comparison finds its variant."""
    files.write_json(path(workdir), {"epoch": epoch, "why": WHY, "machine": performance.describe_machine(),
                                     **described})


def identical(workdir, target_workdir, described):
    """Records the run in `workdir`, identical by construction to the diverged run in `target_workdir`, as diverged
    too (`described`: what it is, as `write` takes it), in place of a record of the target's earlier finished run;
    returns the sweep's line for it."""
    target = read(target_workdir)
    files.remove([os.path.join(workdir, "metrics.json")])  # (identical to the target's weights before it diverged)
    files.write_json(path(workdir), {**target, **described, "identical_to": os.path.relpath(target_workdir, workdir)})
    return f"identical by construction to {target_workdir}, which diverged in training: recorded as diverged too"


def forget_derived(workdir):
    """Removes the record of a run identical by construction to a diverged one (derived from that run's, not
    trained), so that it is derived again from what that run holds now (retrained, it may have finished)."""
    record = read(workdir)
    if record and "identical_to" in record:
        os.remove(path(workdir))


def diverged_now(workdir, epoch):
    """The trainer's one line for a run that diverged in `epoch` (recorded by `write`)."""
    return (f"training diverged ({WHY} in epoch {epoch}); recorded in {path(workdir)}, which a comparison counts as "
            "its variant's diverged seed; to train other settings (a lower --learning_rate), give another --workdir "
            "(or --overwrite this run)")


class Before(RunError):
    """The run diverged when it was trained before: a one-line refusal to train it again, and `kept`, what a sweep
    says of it (its outcome is recorded, as a finished run's is)."""

    def __init__(self, workdir, record):
        self.kept = (f"in epoch {record['epoch']} when it was trained ({path(workdir)}): recorded and kept, a "
                     "diverged seed of its variant (--overwrite trains it anew)")
        super().__init__(f"this run diverged in training before ({record['why']} in epoch {record['epoch']}; "
                         f"{path(workdir)}): run again it would diverge again, and a comparison counts it as its "
                         f"variant's diverged seed; pass --overwrite to train it anew (after a code change), or "
                         f"{RETRY}")


def check_not_diverged(workdir):
    """`Before` where the run in `workdir` diverged when it was trained (not where its record is derived from the
    run it is identical to by construction: a sweep derives it again, `forget_derived`)."""
    record = read(workdir)
    if record and "identical_to" not in record:
        raise Before(workdir, record)


def no_export(workdir):
    """Why the run in `workdir` has no export or scores where its training diverged (one line), else None."""
    record = read(workdir)
    return record and (f"{workdir} is a run whose training diverged ({record['why']} in epoch {record['epoch']}; "
                       f"{path(workdir)}): it has no export and no scores; {RETRY}")


def diverged_runs(run_dirs):
    """Those of `run_dirs` (runs that started and did not finish) whose training diverged."""
    return [run for run in run_dirs if os.path.isfile(path(run))]


# A row's fields that describe the test data its scores are of (a diverged row's are those of a row like it).
_SCORED_DATA = ("data_origin", "split", "num_examples")


def rows(run_dirs, rows, make_row, key):
    """(a comparison row for each diverged run among `run_dirs`, the notes that say so).

    Each row is made by `make_row` (records.row) from the run's record, on the
    test data of a finished run of its variant (`rows`, `key`:
    variants.row_key), or where every seed of it diverged, of a run trained on
    the same data, with every score that run has set to NaN: the comparison's
    rules for a diverged seed apply. A diverged run with no finished run on its
    data here is named in a note: no row can say its test data.
    """
    made, alone, stale = [], [], []
    by_key = {}
    for r in rows:
        by_key.setdefault(key(r), r)
    for run in diverged_runs(run_dirs):
        record = read(run)
        record_row = {"config": record["config"], "sites": record.get("placement_sites"),
                      "precision": (record.get("precision") or {}).get("policy"),
                      "mask_generator": record.get("mask_generator"),
                      "keras_model_sha256": record.get("keras_model_sha256")}
        like = by_key.get(key(record_row)) or next((  # a control without dropout: one network at every rate
            r for r in rows if not record.get("placement_sites") and not r.get("sites")
            and key({**record_row, "config": {**record["config"], "rate": r["config"].get("rate")}}) == key(r)), None)
        trained_on = (record.get("data") or {}).get("train_sha256")
        if like is None and trained_on:  # every seed of its variant diverged: the test data of a run trained on its
            like = min((r for r in rows if r.get("train_sha256") == trained_on), default=None, key=lambda r: (
                r.get("train_subset_sha256") != record["data"].get("train_subset_sha256")))  # data (any --train_size)
        trained = os.path.normpath(os.path.join(run, record["identical_to"])) if "identical_to" in record else run
        if trained != run and not os.path.isfile(path(trained)):  # derived from a run trained again since
            stale.append(run)
            continue
        if like is None:
            alone.append(run)
            continue
        new = make_row(run, record, {}, like["data_source"], trained, like["data_sha256"])
        for field, value in like.items():
            if field in new:
                continue
            if isinstance(value, float):  # its evaluation's scores: not finite
                new[field] = math.nan
            elif field in _SCORED_DATA or field.startswith("ood_"):  # what was scored: the same data
                new[field] = value
            elif isinstance(value, (list, dict)):  # (a reliability table: that run's, pooled twice in a plot)
                new[field] = None
        new.update({"validation_loss": math.nan, "train_loss": math.nan, "train_accuracy": math.nan,
                    "diverged_in_epoch": record["epoch"]})
        made.append(new)
    notes = []
    if made:
        named = ", ".join(f"{r['run']} (epoch {r['diverged_in_epoch']})" for r in made[:3])
        notes.append(f"{len(made)} run(s) diverged in training (their diverged.json), each counted as a diverged "
                     f"seed of its variant (no scores: left out of every mean, and its contrasts inconclusive): "
                     f"{named}{', ...' if len(made) > 3 else ''}")
    if stale:
        notes.append(f"{len(stale)} run(s) recorded as diverged by construction, like a run that has been trained "
                     f"again since, left out: {', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}; rerun "
                     "their sweep to record them anew")
    if alone:
        notes.append(f"{len(alone)} run(s) diverged in training with no finished run on their data here, so "
                     f"their variant is not in this comparison: {', '.join(alone[:3])}"
                     f"{', ...' if len(alone) > 3 else ''}")
    return made, notes
