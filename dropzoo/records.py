"""A finished run's small result record, and the scores a comparison reads from it.

A run's record, a few kilobytes beside its large artifacts, is what a comparison needs:

  config.json             the config it was trained with, its resolved precision and sites
  metrics.json            its data, test and training-split scores, history, timing, export check
  evaluations/<id>.json   each evaluation of its export: on its own test data (written by the
                          trainer) and on any other data, with MC dropout or OOD data (written
                          by the comparison that computed it), keyed by the request

`evaluate_runs` scores each run for one request (test data, MC samples and seed, OOD data) from its saved
evaluation, or, where there is none yet, through its SavedModel, saving the result: a comparison works from
records alone once they hold what it asks, and from records copied off the machines that trained them (`collect`).
"""
import itertools
import json
import math
import os
import re

from dropzoo import config as config_lib
from dropzoo import descriptive
from dropzoo import divergence
from dropzoo import evaluations
from dropzoo import files
from dropzoo import folders
from dropzoo import ood as ood_lib
from dropzoo import sources
from dropzoo import uncertainty
from dropzoo import workdir as workdirs
from dropzoo.errors import DataError
from dropzoo.errors import ExportError
from dropzoo.errors import RunError
from dropzoo.errors import UnknownDataError
from models.masks import LEGACY_GENERATOR

RECORD_FILES = ("config.json", "metrics.json")
FIX = "delete it and rerun that run's train.py command to re-measure it"
# What a comparison reads of every metrics.json: one without them (a hand edit, another tool's) is refused by name.
METRICS_FIELDS = {"config": {"model": str, "placement": str, "seed": int}, "data": {"origin": dict}}


def find_runs(runs_dirs, required=True):
    """Directories below any of `runs_dirs` holding a finished run (a metrics.json), sorted; ValueError where there
    are none (unless not `required`: [])."""
    check_runs_dirs(runs_dirs)
    found = []
    for runs_dir in runs_dirs:
        if not os.path.isdir(runs_dir):
            raise ValueError(f"--runs_dir {runs_dir} is not a directory; point it at a sweep's --workdir (or at a "
                             "directory of collected records)")
        for root, dirs, names in os.walk(runs_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in workdirs.NOT_RUNS)
            if "metrics.json" in names and workdirs.is_run(root):  # (not another tool's metrics.json)
                found.append(os.path.normpath(root))
                dirs[:] = []  # a run's own subdirectories hold no runs; others would be left out of the comparison:
                if nested := workdirs.run_below(root):
                    raise ValueError(f"the run {root} holds another run below it ({nested}): a comparison takes a "
                                     "run's directory as one run; move the runs below it into a directory of their "
                                     "own, and give --runs_dir both")
    if not found and not required:
        return []
    if not found and (left := workdirs.unfinished_runs(runs_dirs)):
        raise ValueError(f"no finished runs below {', '.join(runs_dirs)} yet: " + (
            workdirs.unfinished_note(runs_dirs, left) or f"the {len(left)} run(s) there diverged in training (each "
            f"its diverged.json), so there is nothing to compare them with; {divergence.RETRY}"))
    if not found:  # into the directory given only where it holds nothing else (not a folder of images by mistake)
        workdir = runs_dirs[0] if not any(files_ for _, _, files_ in os.walk(runs_dirs[0])) else "runs/study"
        raise ValueError(f"no finished runs (metrics.json) below {', '.join(runs_dirs)}; --runs_dir takes the "
                         "--workdir of train.py runs: train some first, e.g. python train.py --placement=all "
                         f"--seeds=3 --workdir={workdir}")
    return sorted(dict.fromkeys(found))


def check_runs_dirs(runs_dirs):
    """ValueError where the list has an empty entry (a stray comma, which would mean the cwd), or one directory
    twice (its runs were counted once, but the comparison named it as two sources)."""
    if not all(runs_dirs):
        raise ValueError(f"--runs_dir={','.join(runs_dirs)} has an empty entry (a stray comma?); drop it")
    for (i, outer), (j, inner) in itertools.permutations(enumerate(runs_dirs), 2):
        same = os.path.realpath(outer) == os.path.realpath(inner)
        if (i < j if same else files.is_within(inner, outer)):
            raise ValueError(f"--runs_dir={','.join(runs_dirs)} names {inner} {'and' if same else 'inside'} {outer}: "
                             "its runs would be found twice; give each directory once, none inside another")


def trained_content(train_sha256, subset_sha256=None):
    """How messages name what a run trained on: its training data's digest, and --train_size's subset of it."""
    return f"{train_sha256[:12]}...{f' (subset {subset_sha256[:12]}...)' if subset_sha256 else ''}"


def same_data(origin, other):
    """Whether two load_source argument dicts name the same data (None-valued arguments aside)."""
    return _clean(origin) == _clean(other)


def _clean(origin):  # sorted: a cache key
    return None if not origin else {k: v for k, v in sorted(origin.items()) if v is not None}


class _Data:
    """Test and OOD data by identity: loaded once, fingerprinted once, or unknown where they cannot be loaded."""

    def __init__(self):
        self.loaded = {}

    def identity(self, what, ood=False):
        """(fingerprint or None, Source or None, the DataError if it could not be loaded) of a Source or arguments
        (`ood`: out-of-distribution data, whose errors name the --ood_* flags)."""
        key = ("source", id(what)) if isinstance(what, sources.Source) else json.dumps([_clean(what), ood])
        if key not in self.loaded:
            try:
                source = what if isinstance(what, sources.Source) else ood_lib.load(what) if ood else \
                    sources.load_source(**what, need_train=False)
                self.loaded[key] = (sources.fingerprint(source), source, None)
            except DataError as e:
                self.loaded[key] = (None, None, e)
        return self.loaded[key]

    def own(self, metrics):
        """The run's own test data: its recorded fingerprint, or (older runs) its recorded origin loaded."""
        data = metrics["data"]
        if data.get("test_sha256"):
            return data["test_sha256"], None, None
        return self.identity(workdirs.test_origin(metrics))

    def source(self, sha, what, metrics):
        """The Source to evaluate on for fingerprint `sha`: the one loaded, or the run's own origin loaded."""
        found = next((src for fp, src, _ in self.loaded.values() if fp == sha and src is not None), None)
        if found is None and metrics is not None:
            origin = workdirs.test_origin(metrics)
            now, found, error = self.identity(origin)
            named = set(origin) == {"dataset"}  # (in-memory arrays record their name alone: sources.array_source's)
            if found is None and not (isinstance(error, UnknownDataError) and named):
                raise error
            if now != sha:  # scored and saved under `sha`, other data would answer for the run's own from then on
                flags = sources.flags_of(origin)
                what = f"named {origin['dataset']!r}" if named else flags
                fix = (f"to score them on it as it is now, as other data, pass {flags}" if now and not named
                       else "give it again (Python: source=, as arrays are not kept with a run; eval.py: --npz, "
                       "--image_dir or --idx_dir)")
                raise DataError(f"the runs' test data ({what}) is not here as they were tested on it (sha256 "
                                f"{sha[:12]}... then, {f'{now[:12]}... now' if now else 'not loadable now'}): {fix}, "
                                "or compare with the --mc_samples, --mc_seed and OOD data the runs' records hold")
        return found


def evaluate_runs(run_dirs, *, mc_samples=0, mc_seed=0, batch_size=256, data_override=None, source=None,
                  ood=None, notes=None):
    """[{run, seed, config, sites, precision, metrics..., evaluation...}] for each run directory.

    Each run is scored on its own test data, or on `data_override`'s (load_source arguments), or on `source`'s test
    split (a sources.Source; `notes` says where it is named as a run's data but holds other images); `ood`
    (ood.arguments, or a Source) adds out-of-distribution detection. An evaluation the run's record holds for the
    same request is read; otherwise the run's SavedModel is evaluated and the result saved. Where the data asked for
    is not here, a record that holds exactly one evaluation of other data (with the same MC and OOD settings) is
    read, and `notes` (a list) says so; data named by a path that is here but cannot be read (a corrupt image) is
    refused. A run recorded as identical by construction to another gets that run's evaluation and `identical_to`.
    """
    data, rows, computed, scored, held_ood, renamed = _Data(), [], {}, [], set(), []
    said = notes if notes is not None else []  # what was said of evaluations read in place of the data asked for
    for run in run_dirs:
        metrics = files.read_json(os.path.join(run, "metrics.json"), FIX, METRICS_FIELDS)
        # (a folder of OOD images is read at each run's image size: loaded once for each size)
        ood_id = data.identity(ood_lib.for_model(ood, metrics["data"].get("image_shape")), ood=True) if ood else None
        trained = os.path.normpath(os.path.join(run, metrics["identical_to"])) if "identical_to" in metrics else run
        if trained != run:
            _check_identical_target(run, metrics, trained)
        origin = metrics["data"]["origin"]
        # --image_dir naming the run's own --test_image_dir: its own test data (folders.py).
        given = source if source is not None else (
            folders.with_run_image_options(data_override, origin, metrics["data"].get("image_shape"))
            if data_override and not folders.is_own_test_folder(origin, data_override) else None)
        run_test = data.identity(given) if given else data.own(metrics)
        if run_test[1] is not None and given:  # before a saved evaluation answers (older code scored label k as
            checked = _check_classes(run, run_test[1], metrics)  # class k whatever its name); relabelled by name,
            run_test = (sources.fingerprint(checked), checked, run_test[2])  # it is other test data (as in eval.py)
        uncertainty.check_ood_is_other(run_test[0], ood_id and ood_id[0], run)
        if not given and notes is not None:
            _note_changed_files(metrics, data, notes)
        recorded = metrics["data"]
        if source is not None and source.name == recorded.get("source") and recorded.get("test_sha256") not in (
                None, run_test[0]):  # a notebook's array_source rebuilt under its name with other test images
            renamed.append(run)
        request = evaluations.make_request(run_test[0], mc_samples=mc_samples, mc_seed=mc_seed,
                                           batch_size=batch_size, ood_sha256=ood_id[0] if ood_id else None)
        key = (trained, evaluations.request_id(request))
        if key not in computed:
            # OOD data that cannot be loaded is not "no OOD": an evaluation without it is not the one asked for.
            loadable = run_test[0] and not (ood_id and ood_id[2])
            saved = evaluations.load_evaluation(trained, request, metrics.get("weights_sha256")) if loadable else None
            if saved and ood and ood_lib.unchecked(saved["result"], metrics["data"]["origin"]) and os.path.isdir(
                    os.path.join(trained, "saved_model")):  # OOD scores that may count training images: again
                saved = None
            for arguments, identity in ((given, run_test), (ood, ood_id)):
                if identity and identity[2] is not None and (_here(arguments) or isinstance(identity[2],
                                                                                         UnknownDataError)):
                    raise identity[2]  # data here but broken, or misspelt: not absent, so nothing else stands in
            if saved is None and (run_test[2] or (ood_id and ood_id[2])):
                saved = evaluations.held_instead(trained, request, metrics.get("weights_sha256"), said,
                                                 data.own(metrics)[0] if given else None, (given, run_test[2]),
                                                 (ood, ood_id and ood_id[2]))
                if saved and ood_id and ood_id[2]:  # (a folder of OOD images here has a fingerprint per image size)
                    held_ood.add(saved["request"]["ood"])
            if saved is None:
                saved = _evaluate(run, trained, request, data, given, run_test, ood_id, metrics, batch_size,
                                  mc_samples, mc_seed)
            computed[key] = saved
        saved = computed[key]
        if isinstance(given, dict):
            changed = folders.split_changed(origin, metrics["data"].get("details"), given,
                                            run_test[1] and run_test[1].details)
            scored.append((origin, saved["result"]["num_examples"], run, changed))
        rows.append(row(run, metrics, saved["result"], saved["data_source"], trained,
                        saved.get("request", request)["data"]))
    if len(held_ood) > 1:  # OOD data not here, answered per run by the one its record holds: not one OOD data set
        raise DataError(f"the out-of-distribution data named cannot be loaded here, and the runs' records hold "
                        f"evaluations of {len(held_ood)} other OOD data sets (sha256 "
                        f"{', '.join(sorted(str(sha)[:12] + '...' for sha in held_ood))}), whose scores would be "
                        "averaged as one; name OOD data that is here (--ood_idx_dir, --ood_npz, --ood_image_dir, "
                        "--ood_dataset)")
    if notes is not None:
        notes += folders.notes(data_override, scored)
        if renamed:
            notes.append(f"source= {source.name!r} bears the name of the test data {len(renamed)} run(s) recorded, but "
                         f"holds other images (e.g. {renamed[0]}'s): they were scored on these")
    return rows


# Why a directory is not the run a record identical to it by construction was recorded from.
NO_RUN, OTHER_WEIGHTS = "holds no finished run", "holds another run (other weights)"


def identical_target_problem(metrics, held):
    """NO_RUN or OTHER_WEIGHTS where `held` (a run directory) is not the run that `metrics` (a record
    identical to it by construction) was recorded from; None where it is."""
    path = os.path.join(held, "metrics.json")
    if not os.path.isfile(path):
        return NO_RUN
    recorded = metrics.get("weights_sha256")
    if recorded and files.read_json(path, FIX).get("weights_sha256") != recorded:
        return OTHER_WEIGHTS
    return None


def _check_identical_target(run, metrics, trained):
    """RunError unless `trained`, which `run` is recorded identical to by construction, is that run: its
    numbers are the run's. A run replaced there (trained elsewhere, or again) holds other weights."""
    problem = identical_target_problem(metrics, trained)
    fixes = {NO_RUN: "copy that run back beside it (eval.py --collect takes both), or rerun the sweep",
             OTHER_WEIGHTS: "bring back the runs directory that trained both (eval.py --collect takes both), or "
                            "delete its metrics.json and rerun its sweep to record it again"}
    if problem:
        raise RunError(f"{run} is recorded identical by construction to {trained}, which {problem}"
                       f"{' than it was recorded from' if problem == OTHER_WEIGHTS else ''}: {fixes[problem]}")


# Data sources read from files a user may change after training (a tfds dataset or the sample cannot change).


def _note_changed_files(metrics, data, notes):
    """Adds a note where a run's test files now hold other data than it was evaluated on (its records are used)."""
    recorded = metrics["data"].get("test_sha256")
    origin = workdirs.test_origin(metrics)
    if not recorded or not any(origin.get(key) for key in sources.FILE_SOURCES):
        return
    now, source, error = data.identity(origin)
    if now is not None and now != recorded:
        note = (f"{source.name} now holds other test data than the runs trained on it were tested on (sha256 "
                f"{recorded[:12]}... then, {now[:12]}... now): their evaluations of the data as it was are shown; "
                f"to score them on it as it is now, pass {sources.flags_of(origin)}")
    elif now is None:  # deleted, emptied, or records compared on another machine
        where = next(f"--{key}={origin[key]}" for key in ("test_image_dir",) + sources.FILE_SOURCES if origin.get(key))
        note = (f"the runs' test data ({where}) cannot be read here ({error}): their recorded evaluations of it, "
                "as it was when they were tested, are shown")
    else:
        return
    if note not in notes:
        notes.append(note)


def _here(arguments):
    """Whether data named by path (a folder of images, an .npz, IDX files) is on this machine: an error loading it
    is then the data's (a corrupt image), which no evaluation of other data may answer for."""
    return isinstance(arguments, dict) and any(os.path.exists(str(arguments[key])) for key in config_lib.DATA_PATHS
                                               if arguments.get(key))


def _check_classes(run, test_source, metrics):
    """folders.check_classes for `run`, naming it: the test data with its labels as the run's class ids, or a
    DataError where they cannot be."""
    try:
        return folders.check_classes(test_source, metrics["data"].get("num_classes"),
                                     (metrics["data"].get("details") or {}).get("class_names") or ())
    except DataError as e:
        raise DataError(f"run {run}: {e}") from None


def _evaluate(run, trained, request, data, given, run_test, ood_id, metrics, batch_size, mc_samples, mc_seed):
    """Evaluates `trained`'s SavedModel for the request and saves the result in its record."""
    from dropzoo import data as data_lib
    from dropzoo import evaluate  # TensorFlow is needed only to evaluate

    saved_model = os.path.join(trained, "saved_model")
    for identity in (run_test, ood_id):
        if identity is not None and identity[2] is not None:
            raise identity[2]  # the data is not here, and no record holds an evaluation of it
    if not os.path.isdir(saved_model):
        raise RunError(f"run {run} has no saved evaluation for this request (test data sha256 "
                       f"{str(request['data'])[:12]}..., {request['mc_samples']} MC samples, OOD "
                       f"{str(request['ood'])[:12]}) and no SavedModel at {saved_model} to compute one; copy its "
                       "saved_model/ back, or compare with the test data, --mc_samples, --mc_seed and OOD data its "
                       "records hold")
    test_source = run_test[1] or data.source(run_test[0], given, metrics)
    ood_source = ood_id[1] if ood_id else None
    ood_test, ood_fields = (ood_lib.apart(test_source, ood_source, run, metrics["data"]["origin"],
                                          key=(run_test[0], ood_id[0])) if ood_source else (None, {}))
    if not given:  # (given data was checked, and relabelled, before any saved evaluation could answer)
        test_source = _check_classes(run, test_source, metrics)
    try:
        result = evaluate.evaluate_saved_model(
            saved_model, data_lib.raw_batches(test_source.test, batch_size), mc_samples=mc_samples,
            mc_seed=mc_seed,
            ood_batches=data_lib.raw_batches(ood_test, batch_size) if ood_source is not None else None)
    except (ExportError, ValueError) as e:  # (labels the model has no class for): which run of the comparison
        raise type(e)(f"run {run}: {e}") from None
    result.update(ood_fields)
    evaluate.name_absent_classes(result, (metrics["data"].get("details") or {}).get("class_names"))
    evaluations.save_evaluation(trained, request, test_source.name, result, metrics.get("weights_sha256"))
    return {"data_source": test_source.name, "result": result}


def row(run, metrics, result, data_source, trained, data_sha256=None):
    """One run's row of a comparison: its record's fields and one evaluation's scores (of the test data whose
    fingerprint is `data_sha256`)."""
    history = metrics.get("history", {})
    # A history that starts at a resume (older runs, or a checkpoint without its record) cannot show a rise.
    partial = metrics.get("history_from_epoch", metrics.get("resumed_from_epoch", 0)) > 0
    val_loss = [] if partial else [v for v in history.get("val_loss", []) if v is not None]
    return {
        "run": run,
        "weights_sha256": metrics.get("weights_sha256"),
        "variant": None,  # labelled by variants.label_rows, once every run's config is known
        "seed": metrics["config"]["seed"],
        "config": metrics["config"],
        "sites": metrics.get("placement_sites"),
        "precision": (metrics.get("precision") or {}).get("policy"),
        # Runs recorded before the generator was recorded drew Keras' own masks.
        "mask_generator": metrics.get("mask_generator", LEGACY_GENERATOR if metrics.get("placement_sites") and
                                      metrics["config"].get("kind") != "gaussian" else None),
        "data_source": data_source,
        "data_sha256": data_sha256,
        # What it trained on, wherever it was read, and the --keras_model's content (runs.json entries: where known).
        **({"train_sha256": train} if (train := metrics.get("data", {}).get("train_sha256")) else {}),
        "train_subset_sha256": metrics.get("data", {}).get("train_subset_sha256"),  # --train_size's examples
        **({"keras_model_sha256": model} if (model := metrics.get("keras_model_sha256")
                                              or _keras_model_digest(run, metrics)) else {}),
        **{k: metrics.get("data", {}).get(k) for k in ("num_train", "num_validation", "num_classes")},
        "steps": metrics.get("steps_trained"),
        "train_time_sec": None if partial else metrics.get("train_time_sec"),  # (resumed: its last session's only)
        "partial_history": partial,
        "val_accuracy": [] if partial else history.get("val_accuracy", []),
        # The final model's validation loss (older runs: their last epoch's).
        "validation_loss": metrics.get("validation_loss", val_loss[-1] if val_loss else None),
        "validation_rise": _rise(val_loss),  # > 1: it rose from its best
        "train_accuracy": metrics.get("train_accuracy"),
        "train_loss": metrics.get("train_loss"),
        "identical_to": trained if trained != run else None,
        # The code that trained it (a git commit), where recorded: runs.json of older records is unchanged.
        **({"code": code} if (code := (metrics.get("versions") or {}).get("dropout_zoo")) else {}),
        "frameworks": ", ".join(f"{k} {v}" for k, v in (metrics.get("versions") or {}).items() if k != "dropout_zoo"),
        # Runs on several replicas (mirrored, multi-worker), which draw other mask streams: a runs.json entry.
        **({"replicas": n} if (n := (metrics.get("strategy") or {}).get("num_replicas", 1)) != 1 else {}),
        **{f"test_{k}" if k in ("accuracy", "loss") else k: v for k, v in result.items()},
        **_gaps(metrics.get("train_accuracy"), metrics.get("train_loss"), result),
        **descriptive.record_fields(metrics),  # times, CPU, BN shifts: descriptive.md's (not runs.json's)
    }


def _keras_model_digest(run, metrics):
    """The --keras_model file's sha256 a run recorded before metrics.json kept it: its config.json's (None)."""
    path = os.path.join(run, "config.json")
    if not metrics["config"].get("keras_model") or not os.path.isfile(path):
        return None
    return (files.read_json(path, FIX).get(workdirs.RESOLVED) or {}).get("keras_model_sha256")


def _rise(val_loss):
    """The final validation loss over the best epoch's; NaN where the final one is not finite (diverged); None with
    one validation point (a run of one long epoch cannot show a rise)."""
    finite = [v for v in val_loss if math.isfinite(v)]
    if len(val_loss) < 2 or not finite or min(finite) <= 0:
        return None
    return val_loss[-1] / min(finite) if math.isfinite(val_loss[-1]) else float("nan")


def _gaps(train_accuracy, train_loss, result):
    """Train-test gaps of the run's own scores (dropout off on both): accuracy lost, NLL gained."""
    gaps = {}
    if train_accuracy is not None:
        gaps["gap_accuracy"] = train_accuracy - result["accuracy"]
    if train_loss is not None:
        gaps["gap_loss"] = result["loss"] - train_loss
    return gaps


def group(rows):
    """{variant key: [rows]} in first-seen order (rows labelled by variants.label_rows)."""
    groups = {}
    for r in rows:
        groups.setdefault(r["key"], []).append(r)
    return groups


# A variant label's `-rate<r>` field (not `-learning_rate<r>`), up to the next field: what a chosen rate adds to it.
RATE_FIELD = re.compile(r"-rate([0-9.]+(e[+-]?[0-9]+)?)(?=-|\s|$)")


def without_rate(label):
    """`label` without its `-rate<r>` field (`m/conv-rate0.25-train_size250` -> `m/conv-train_size250`)."""
    return RATE_FIELD.sub("", label)


def rate_of(label):
    """The `<r>` of `label`'s `-rate<r>` field as written ('0.25'), or None."""
    found = RATE_FIELD.search(label)
    return found.group(1) if found else None


def natural_key(label):
    """Sorts labels with their numbers as numbers: `-train_size500` before `-train_size1000`."""
    return [(0, float(part), "") if i % 2 else (1, 0.0, part)
            for i, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", label))]
