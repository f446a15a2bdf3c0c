"""A finished run's small result record, and the scores a comparison reads from it.

A run's record is what a comparison needs, a few kilobytes beside its large
artifacts:

  config.json             the config it was trained with, its resolved precision and sites
  metrics.json            its data, test and training-split scores, history, timing, export check
  evaluations/<id>.json   each evaluation of its export: on its own test data (written by the
                          trainer) and on any other data, with MC dropout or OOD data (written
                          by the comparison that computed it), keyed by the request

`evaluate_runs` scores each run for one request (test data, MC samples and
seed, OOD data) from its saved evaluation, or, where there is none yet,
through its SavedModel, saving the result: a comparison works from records
alone once they hold what it asks, and from records copied off the machines
that trained them (`collect`).
"""
import hashlib
import json
import os
import shutil

from dropzoo import files
from dropzoo import sources
from dropzoo.errors import ExportError
from dropzoo.errors import RunError

EVALUATIONS = "evaluations"
RECORD_FILES = ("config.json", "metrics.json")
_FIX = "delete it and rerun that run's train.py command to re-measure it"


def find_runs(runs_dirs):
    """Directories below any of `runs_dirs` holding a finished run (a metrics.json), sorted."""
    found = []
    for runs_dir in runs_dirs:
        if not os.path.isdir(runs_dir):
            raise ValueError(f"--runs_dir {runs_dir} is not a directory; point it at a sweep's --workdir "
                             "(or at a directory of collected records)")
        for root, dirs, names in os.walk(runs_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("comparison", EVALUATIONS))
            if "metrics.json" in names:
                found.append(os.path.normpath(root))
                dirs[:] = []  # a run's own subdirectories hold no runs
    if not found:
        raise ValueError(f"no finished runs (metrics.json) below {', '.join(runs_dirs)}; train some first, e.g. "
                         f"python train.py --placement=all --seeds=3 --workdir={runs_dirs[0]}")
    return sorted(dict.fromkeys(found))


def request_id(request):
    """The file name (without .json) of the evaluation `request` ({data, mc_samples, ...})."""
    text = json.dumps(request, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluation_path(run, request):
    return os.path.join(run, EVALUATIONS, f"{request_id(request)}.json")


def own_request(data_origin, batch_size=256):
    """The request of a run's evaluation on its own test data, as the trainer saves it."""
    return make_request(data_origin, mc_samples=0, mc_seed=0, batch_size=batch_size, ood_origin=None)


def make_request(data_origin, *, mc_samples, mc_seed, batch_size, ood_origin):
    """What identifies an evaluation: the test data, MC samples and seed (and the batching they depend on), OOD data."""
    request = {"data": _clean(data_origin), "mc_samples": int(mc_samples), "ood": _clean(ood_origin)}
    if mc_samples:  # the MC seeds of each call follow the batching
        request.update(mc_seed=int(mc_seed), batch_size=int(batch_size))
    return request


def same_data(origin, other):
    """Whether two load_source argument dicts name the same data (None-valued arguments aside)."""
    return _clean(origin) == _clean(other)


def _clean(origin):
    return None if not origin else {k: v for k, v in sorted(origin.items()) if v is not None}


def save_evaluation(run, request, data_source, result):
    """Writes `result` (an evaluation of `run`'s export for `request`) into the run's record."""
    os.makedirs(os.path.join(run, EVALUATIONS), exist_ok=True)
    files.write_json(evaluation_path(run, request), {"request": request, "data_source": data_source,
                                                      "result": result})


def load_evaluation(run, request):
    """The saved {"data_source", "result"} of `request` for `run`, or None."""
    path = evaluation_path(run, request)
    if not os.path.isfile(path):
        return None
    saved = files.read_json(path, "delete it and compare again with the run's saved_model/ present")
    return saved if saved.get("request") == request else None


def _data_of(metrics, override):
    """The load_source arguments to test a run on: the override, else the run's own test data."""
    if override and any(override.get(k) for k in ("dataset", "idx_dir", "npz", "image_dir")):
        return {k: v for k, v in override.items() if v is not None}
    return dict(metrics["data"].get("test_origin") or metrics["data"]["origin"])


def _ood_origin(ood):
    if ood is None or isinstance(ood, sources.Source):
        return None
    return {k: v for k, v in ood.items() if v} or None


def evaluate_runs(run_dirs, *, mc_samples=0, mc_seed=0, batch_size=256, data_override=None, source=None,
                  ood=None):
    """[{run, seed, config, sites, precision, metrics..., evaluation...}] for each run directory.

    Each run is scored on its own test data, or on `data_override`'s
    ({"dataset", "idx_dir", ...} as load_source takes them), or on `source`'s
    test split (a sources.Source: evaluated, never saved); `ood` ({"dataset",
    "idx_dir"}, or a Source) adds out-of-distribution detection. A saved
    evaluation of the same request is read instead of evaluating; a run
    recorded as identical by construction to another gets that run's
    evaluation and `identical_to` its path.
    """
    from dropzoo import evaluate  # TensorFlow is needed only to evaluate

    loaded, rows, computed = {}, [], {}
    ood_origin = _ood_origin(ood)
    ood_source = ood if isinstance(ood, sources.Source) else None
    for run in run_dirs:
        metrics = files.read_json(os.path.join(run, "metrics.json"), _FIX)
        trained = (os.path.normpath(os.path.join(run, metrics["identical_to"]))
                   if "identical_to" in metrics else run)
        origin = None if source is not None else _data_of(metrics, data_override)
        request = None if source is not None else make_request(origin, mc_samples=mc_samples, mc_seed=mc_seed,
                                                                batch_size=batch_size, ood_origin=ood_origin)
        cache_key = (trained, request_id(request) if request else id(source))
        if cache_key not in computed:
            saved = load_evaluation(trained, request) if request else None
            if saved is None:
                saved = _evaluate(evaluate, run, trained, request, origin, source, loaded, batch_size, mc_samples,
                                  mc_seed, ood_origin, ood_source)
            computed[cache_key] = saved
        saved = computed[cache_key]
        rows.append(row(run, metrics, saved["result"], saved["data_source"], trained))
    return rows


def _evaluate(evaluate, run, trained, request, origin, source, loaded, batch_size, mc_samples, mc_seed,
              ood_origin, ood_source):
    """Evaluates `trained`'s SavedModel for the request and saves it (unless the data was given in-process)."""
    saved_model = os.path.join(trained, "saved_model")
    if not os.path.isdir(saved_model):
        raise RunError(f"run {run} has no saved evaluation for this request ({json.dumps(request, sort_keys=True)}) "
                       f"and no SavedModel at {saved_model} to compute one; copy its saved_model/ back, or "
                       "compare with the test data, --mc_samples, --mc_seed and OOD data its records hold")
    if source is None:
        key = json.dumps(origin, sort_keys=True)
        if key not in loaded:
            loaded[key] = sources.load_source(**origin, need_train=False)
        test_source = loaded[key]
    else:
        test_source = source
    if ood_origin is not None and ood_source is None:
        ood_source = loaded.setdefault(json.dumps(ood_origin, sort_keys=True),
                                       sources.load_source(**ood_origin, need_train=False))
    from dropzoo import data as data_lib

    try:
        result = evaluate.evaluate_saved_model(
            saved_model, data_lib.raw_batches(test_source.test, batch_size), mc_samples=mc_samples,
            mc_seed=mc_seed,
            ood_batches=data_lib.raw_batches(ood_source.test, batch_size) if ood_source is not None else None)
    except ExportError as e:
        raise ExportError(f"run {run}: {e}") from None
    if ood_source is not None:
        result["ood_data_source"] = ood_source.name
    if request is not None:
        save_evaluation(trained, request, test_source.name, result)
    return {"data_source": test_source.name, "result": result}


def row(run, metrics, result, data_source, trained):
    """One run's row of a comparison: its record's fields and one evaluation's scores."""
    history = metrics.get("history", {})
    val_loss = [v for v in history.get("val_loss", []) if v is not None]
    return {
        "run": run,
        "variant": None,  # labelled by compare.label_rows, once every run's config is known
        "seed": metrics["config"]["seed"],
        "config": metrics["config"],
        "sites": metrics.get("placement_sites"),
        "precision": (metrics.get("precision") or {}).get("policy"),
        "data_source": data_source,
        "num_train": metrics.get("data", {}).get("num_train"),
        "steps": metrics.get("steps_trained"),
        "train_time_sec": metrics.get("train_time_sec"),
        "val_accuracy": history.get("val_accuracy", []),
        # The final model's validation loss (older runs: their last epoch's).
        "validation_loss": metrics.get("validation_loss", val_loss[-1] if val_loss else None),
        # The final validation loss over the best epoch's (> 1: it rose from its best).
        "validation_rise": (val_loss[-1] / min(val_loss)) if val_loss and min(val_loss) > 0 else None,
        "train_accuracy": metrics.get("train_accuracy"),
        "train_loss": metrics.get("train_loss"),
        "identical_to": trained if trained != run else None,
        **{f"test_{k}" if k in ("accuracy", "loss") else k: v for k, v in result.items()},
        **_gaps(metrics.get("train_accuracy"), metrics.get("train_loss"), result),
    }


def _gaps(train_accuracy, train_loss, result):
    """Train-test gaps of the run's own scores (dropout off on both): accuracy lost, NLL gained."""
    gaps = {}
    if train_accuracy is not None:
        gaps["gap_accuracy"] = train_accuracy - result["accuracy"]
    if train_loss is not None:
        gaps["gap_loss"] = result["loss"] - train_loss
    return gaps


def collect(runs_dirs, destination):
    """Copies the records of every finished run below `runs_dirs` into `destination`; returns their paths.

    Each run keeps its path relative to the runs directory it was found in
    (so several directories merge into one study), and only its record:
    RECORD_FILES and evaluations/, never saved_model/, checkpoints/,
    tensorboard/ or the serving artifacts. A run recorded as identical by
    construction to another keeps pointing at it.
    """
    copied = []
    for runs_dir in runs_dirs:
        for run in find_runs([runs_dir]):
            target = os.path.join(destination, os.path.relpath(run, runs_dir))
            os.makedirs(target, exist_ok=True)
            for name in RECORD_FILES:
                if os.path.isfile(os.path.join(run, name)):
                    shutil.copyfile(os.path.join(run, name), os.path.join(target, name))
            if os.path.isdir(os.path.join(run, EVALUATIONS)):
                shutil.copytree(os.path.join(run, EVALUATIONS), os.path.join(target, EVALUATIONS),
                                dirs_exist_ok=True)
            copied.append(target)
    return copied
