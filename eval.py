"""Evaluate a SavedModel or a TFLite model through its serving signature alone (no Keras objects).

    python eval.py --workdir=runs/keras_mnist_cnn/canonical/seed0
    python eval.py --saved_model=PATH --idx_dir=/usr/share/datasets/fashion-mnist
    python eval.py --tflite=runs/keras_mnist_cnn/canonical/seed0/model_int8.tflite --dataset=mnist_sample
    python eval.py --runs_dir=runs/study --mc_samples=30      # compare a sweep
    python eval.py --runs_dir=runs/study --mc_samples=20 --ood_idx_dir=/usr/share/datasets/fashion-mnist
    python eval.py --workdir=runs/mine/canonical/seed0 --mc_samples=20 --ood_image_dir=photos/  # any images
"""
import json
import os
import sys

from dropzoo import environment  # light: no TensorFlow

environment.set_defaults()  # before TensorFlow loads
environment.print_any_file_name()

from dropzoo import interrupts  # noqa: E402  (light: signals only)

if __name__ == "__main__":
    interrupts.quiet_during_start_up()  # Ctrl-C while TensorFlow loads: one line, no traceback
    environment.import_tensorflow()  # without the banner its native libraries print whatever the log level

from absl import app  # noqa: E402

from dropzoo import artifacts  # noqa: E402
from dropzoo import client  # noqa: E402
from dropzoo import collect  # noqa: E402
from dropzoo import compare  # noqa: E402
from dropzoo import contrasts  # noqa: E402
from dropzoo import divergence  # noqa: E402
from dropzoo import errors  # noqa: E402
from dropzoo import evaluate  # noqa: E402
from dropzoo import evaluations  # noqa: E402
from dropzoo import export  # noqa: E402
from dropzoo import files  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import folders  # noqa: E402
from dropzoo import ood as ood_lib  # noqa: E402
from dropzoo import records  # noqa: E402
from dropzoo import sources  # noqa: E402
from dropzoo import uncertainty_report  # noqa: E402
from dropzoo import workdir as workdirs  # noqa: E402

# What only a comparison (--runs_dir) reads; --collect first.
COMPARISON_FLAGS = ("collect", "contrasts", "baseline", "margin", "nll_margin", "accuracy_below")


def main(argv):
    try:
        with interrupts.stop_on_signals():
            return _main(argv)
    except interrupts.Interrupted as e:
        try:
            print(f"interrupted ({e}): " + (
                "every evaluation that finished is kept in its run's evaluations/ (and every output file is "
                "whole or absent); the same command goes on from there" if flags_lib.FLAGS.runs_dir else
                "every output file is whole or absent; run the same command again"),
                  file=sys.stderr, flush=True)
        except OSError:  # `eval.py | tee log`: Ctrl-C ended tee too
            pass
        interrupts.exit_by_signal(e.signum)


def _main(argv):
    errors.plain_logs()
    if len(argv) > 1:
        return errors.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    f = flags_lib.FLAGS
    problem = _flags_problem(f)
    if problem:
        return errors.fail(problem)
    with errors.one_line():
        _ood(f)  # one OOD source, before any data loads
    if f.tflite and (f.mc_samples or f.mc_seed):  # before check_mc, whose fix (add --mc_samples) would not do
        return errors.fail("a TFLite model serves dropout off only: MC dropout (--mc_samples, --mc_seed) needs the "
                           "SavedModel; pass --saved_model=DIR (or --workdir) instead of --tflite")
    with errors.one_line():
        evaluate.check_mc(f.mc_samples, f.mc_seed, f.batch_size)
    run = f.output and _run_owning(f.output)
    if run:  # `--output=RUN/metrics.json` replaced the run's record, and the run was lost to every later command
        own = os.path.relpath(os.path.abspath(f.output), run).split(os.sep)
        return errors.fail(f"--output {f.output} is {'inside ' * (len(own) > 1)}{run}'s own {own[0]}: give a file "
                           "(or a comparison's directory) outside the run's records and exports, e.g. "
                           f"--output={os.path.join(run, 'eval-mine.json' if not f.runs_dir else 'comparison')}")
    if f.runs_dir and f.output and (os.path.isfile(f.output) or f.output.lower().endswith(".json")):
        return errors.fail(f"--output {f.output} names a file; a comparison writes a directory of files "
                           "(comparison.md, contrasts.csv, ...): give a directory, e.g. "
                           f"--output={os.path.dirname(f.output) or '.'}/comparison")
    for name in ("output", "collect"):  # before any scoring: a path through a file was a bare OSError after it
        target = f[name].value if f[name].present else None
        if target and (why := files.unwritable(target if f.runs_dir else os.path.dirname(os.path.abspath(target)),
                                               make=False)):
            return errors.fail(f"--{name} {target}: cannot write there ({why}); give a path in a directory you can "
                               "write to")
    if f.runs_dir:
        return _compare(f)
    if f.output and os.path.isdir(f.output):  # a comparison's --output is a directory; one result is a file
        return errors.fail(f"--output {f.output} is a directory; give the result's file name, e.g. "
                           f"--output={os.path.join(f.output, 'eval.json')}")
    if f.workdir and not os.path.isdir(f.workdir):
        return errors.fail(f"--workdir {f.workdir} is not a directory; give a run's directory (the --workdir "
                           "train.py wrote, e.g. runs/keras_mnist_cnn/canonical/seed0), or --saved_model=PATH")
    return _score_one(f)


def _run_owning(path):
    """The run of which `path` is one of its own files or directories (a record, an export, its checkpoints), or
    None. Its eval.json, eval-*.json and comparison/ are outputs, not its own."""
    below = os.path.abspath(path)
    while below != os.path.dirname(below):
        parent = os.path.dirname(below)
        if os.path.basename(below) in workdirs.RUN_FILES + artifacts.ARTIFACT_FILES and workdirs.is_run(parent):
            return parent
        below = parent
    return None


def _flags_problem(f):
    """The line refusing flags that cannot go together, or None."""
    if sum(bool(x) for x in (f.saved_model, f.tflite, f.workdir, f.runs_dir)) != 1:
        return "give exactly one of --saved_model=PATH, --workdir=DIR or --runs_dir=DIR (or --tflite=PATH)"
    given_only = [name for name in COMPARISON_FLAGS if f[name].present]
    if given_only and not f.runs_dir:  # (scoring one export would ignore it: --collect would copy nothing, unsaid)
        return f"--{given_only[0]} applies only with --runs_dir (a comparison of runs); drop it to score one export"
    ignored = [name for name in (*COMPARISON_FLAGS[1:], "mc_samples", "mc_seed", "output", "batch_size",
                                 *flags_lib.DATA_FIELDS, *flags_lib.OOD_FIELDS) if f[name].present]
    if f.collect and ignored:
        return (f"--collect copies the runs' records and compares nothing, so --{ignored[0]} would be ignored; "
                f"collect first, then compare with python eval.py --runs_dir={f.collect}")
    return None


def _score_one(f):
    """Scores one export (--saved_model, --tflite, or a run's --workdir): its JSON on stdout, the summary and notes on
    stderr, and where it is a run's, the result saved with it."""
    with errors.one_line():
        flags_lib.check_one_source(f)
    # A run's own export named by path (RUN/saved_model, RUN/model.tflite) is scored on the run's data too.
    home = f.workdir or evaluate.run_holding(path_of(f))
    given = _given_data(f, runs_own=bool(home))
    with errors.one_line():
        own = _own_data(home, required=not given) if home else None
        if not given and not home:  # a copied export: the default data (MNIST) is right only for an MNIST model
            evaluate.check_copied_export_data(path_of(f), bool(f.tflite))
        if own and "test_image_dir" in given and "image_dir" not in given and own["trained_on"].get("image_dir"):
            given = {**given, "image_dir": own["trained_on"]["image_dir"]}  # a test folder for the run's classes
        given = folders.with_run_image_options(given, own and own["trained_on"], own and own["image_shape"])
        data = _data_to_score(given, own)
        if own and data is own["origin"]:
            _check_recorded_data_here(home, data)
        result = evaluate.evaluate_on_dataset(path_of(f), data=data,
                                              batch_size=f.batch_size,
                                              mc_samples=f.mc_samples, mc_seed=f.mc_seed, ood=_ood(f),
                                              tflite_model=bool(f.tflite),
                                              run_class_names=own and (own["class_names"] or ()),
                                              trained_on=own and own["trained_on"])
        on_own = own is not None and (result["data_sha256"] == own.get("test_sha256") if own.get("test_sha256")
                                      else records.same_data(result["data_origin"], own["origin"]))
        output, unwritable = f.output, None
        if f.workdir and not f.tflite:
            # The run's own data goes to eval.json (and its record); other data to a file of its own, where the
            # run can be written to (a read-only copy: the result is printed, and --output keeps it).
            name = "eval.json" if on_own else f"eval-{files.slug(result['data_source'])}.json"
            unwritable = None if output else files.unwritable(f.workdir, make=False)
            output = output or (None if unwritable else os.path.join(f.workdir, name))
            evaluations.save_evaluation(f.workdir, evaluations.make_request(
                result["data_sha256"], mc_samples=f.mc_samples, mc_seed=f.mc_seed, batch_size=f.batch_size,
                ood_sha256=result.get("ood_sha256")), result["data_source"], result, (own or {}).get("weights_sha256"))
        if output:
            evaluate.write_json(output, result)
    print(json.dumps(result, indent=2, sort_keys=True))
    written = f"; written to {output}" if output else ""
    print(f"{evaluate.summary_line(result)}{written}", file=sys.stderr)  # stdout stays JSON
    if unwritable:
        print(f"note: not written to {f.workdir} ({unwritable}); pass --output=FILE to keep the result",
              file=sys.stderr)
    for note in _notes(result, path_of(f), bool(f.tflite), home, own, data, given, on_own):
        print(f"note: {note}", file=sys.stderr)
    return 0


def _notes(result, path, tflite, home, own, data, given, on_own):
    """What a reader of one export's `result` must know: data other than the run's own or changed since, training
    images among those scored, classes absent, MC passes that all agree."""
    notes = []
    trained_on = (own or {}).get("trained_on", {})
    changed = bool(own) and bool(data) and folders.split_changed(trained_on, own["details"], data,
                                                                 result.get("data_details"))
    if result.get("ood_train_checked") is False:
        notes.append(f"the out-of-distribution data was not checked for {home}'s training images: "
                     f"{uncertainty_report.UNCHECKED_OOD}" if home else  # a copied export: the scored data's own
                     f"the out-of-distribution data was not checked for the training images of "
                     f"{result['data_source']} (data from tensorflow-datasets is not loaded to look), so any of those "
                     "among the OOD images count as unseen")
    if home and not on_own:
        moved = own is not None and records.same_data(result["data_origin"], own["origin"])  # same files, changed
        notes.append(f"evaluated on {result['data_source']}, " + (
            "whose files now hold other test data than the run was tested on (sha256 "
            f"{str(own.get('test_sha256'))[:12]}... then, {result['data_sha256'][:12]}... now)" if moved else
            "not the test data the run recorded"))
    if not home:  # an export copied out of its run: it records the run's test data
        notes += evaluate.copied_export_notes(path, result, tflite_model=tflite)
    if data and (data is given or not on_own):  # a folder named, or the run's own that changed since
        found = folders.notes(data, [(trained_on, result["num_examples"], home, changed)])
        found += folders.trained_images_notes(trained_on, data, home, result["num_examples"]) if home else []
        notes += found[-1:] if changed and data is not given else found  # its own changed split says it all
    notes += evaluate.absent_classes_notes([result])
    notes += [note] if (note := uncertainty_report.ood_chance_note(result)) else []
    notes += [note] if (note := uncertainty_report.few_passes_note(result.get("mc_samples"))) else []
    if result.get("mc_no_spread"):
        notes.append(f"the {result['mc_samples']} MC dropout passes all agree (no dropout to sample, or none that "
                     "moves these probabilities), so the mc_* scores repeat the plain ones")
    return notes


def _data_to_score(given, own):
    """The load_source arguments to score: those given, else the run's own.

    `--image_dir` alone naming the run's own test folder means the run's own
    test data (alone it would mean that folder's 20% test split).
    """
    if not given or (own and folders.is_own_test_folder(own["trained_on"], given)):
        return own and own["origin"]
    return given


def path_of(f):
    """The export scored: --tflite, --saved_model (a run's directory named there: its export, as the client takes
    it, so the run's own data and notes follow), or --workdir's."""
    if f.saved_model and client.is_run_directory(f.saved_model):
        return client.export_of(f.saved_model)
    return f.tflite or f.saved_model or os.path.join(f.workdir, "saved_model")


def _check_recorded_data_here(run, origin):
    """RunError naming the run where the data it recorded is not at its path here (moved, deleted, another
    machine): the loader's error would name a flag the user never gave."""
    # What testing reads: a test folder alone where one was given (the training folder may be gone); tfds data is
    # found (or downloaded) by name, in the --tfds_data_dir the run recorded.
    needed = ("npz", "idx_dir", "test_image_dir" if origin.get("test_image_dir") else "image_dir")
    fix = "name the data to evaluate it on (--image_dir, --npz, --idx_dir or --dataset)"
    for key in needed:
        if origin.get(key) and not os.path.exists(origin[key]):
            moved = ("give its new place with --test_image_dir=DIR (all of it, as the run was tested), or "
                     if key == "test_image_dir" else "")
            raise errors.RunError(f"run {run} was tested on --{key}={origin[key]}, which is not here (moved or "
                                  f"deleted?); {moved}{fix}")
    name = origin.get("dataset")
    if name and not any(origin.get(key) for key in sources.PATH_ARGUMENTS if key != "tfds_data_dir"):
        try:
            sources.describe(dataset=name, tfds_data_dir=origin.get("tfds_data_dir"))  # a name, nothing loaded
        except errors.DataError as e:
            # A source of arrays (the Python API's) records its name only; train.py refuses any other such --dataset.
            if str(e).startswith(("unknown dataset", "--dataset takes a dataset name", f"{name!r} is not a dataset")):
                raise errors.RunError(f"run {run} was trained on data named {name!r}, which is no dataset eval.py "
                                      f"can load (arrays given to the Python API are not kept with the run); {fix}"
                                      ) from None
            raise


def _given_data(f, runs_own=True):
    """The data flags given on the command line, as load_source arguments ({} if none). Where runs have data of
    their own (`runs_own`), --tfds_data_dir beside --ood_dataset alone is where that is: it scored the runs on the
    default dataset (mnist) instead of their own; an export copied out of its run has none: the default's there."""
    given = {name: f[name].value for name in flags_lib.DATA_FIELDS if f[name].present}
    if set(given) == {"tfds_data_dir"} and f.ood_dataset and runs_own:
        return {}
    return given


def _own_data(workdir, required):
    """{"origin" (load_source arguments), "test_sha256", "class_names", "trained_on", "details"}: the data a run
    in `workdir` recorded; and "weights_sha256", the weights it recorded (its saved evaluations name them)."""
    path = os.path.join(workdir, "metrics.json")
    if not os.path.isfile(path) and export.holds_runs(workdir):
        raise errors.RunError(f"{workdir} holds runs below it, not one run: compare them with --runs_dir={workdir}, "
                              "or name one of them with --workdir")
    if not os.path.isfile(path) and os.path.isfile(os.path.join(workdir, "saved_model.pb")):  # a run's export
        parent = os.path.dirname(os.path.abspath(workdir))
        raise errors.RunError(f"{workdir} is a SavedModel, not a run's directory: pass --saved_model={workdir}"
                              + (f", or --workdir={parent} (its run)" if os.path.isfile(
                                  os.path.join(parent, "metrics.json")) else ""))
    if not os.path.isfile(path):
        if not required:
            return None
        raise errors.RunError(divergence.no_export(workdir) or f"{workdir} holds no finished run (no metrics.json) "
                              "to take its test data from; name the data to evaluate on (--dataset, --idx_dir, --npz "
                              "or --image_dir)")
    metrics = files.read_json(path, "delete it and rerun that run's train.py command", {"data": {"origin": dict}})
    data = metrics["data"]
    return {"origin": workdirs.test_origin(metrics), "test_sha256": data.get("test_sha256"),
            "class_names": (data.get("details") or {}).get("class_names"), "trained_on": dict(data["origin"]),
            "details": data.get("details") or {}, "weights_sha256": metrics.get("weights_sha256"),
            "image_shape": data.get("image_shape")}


def _compare(f):
    with errors.one_line():
        records.check_runs_dirs(f.runs_dir)  # first: the other checks would read '' as the working directory
        flags_lib.check_one_source(f)
    if f.collect:
        with errors.one_line():
            copied = collect.collect(f.runs_dir, f.collect)
        print(f"collected the records of {len(copied)} run{'s' * (len(copied) != 1)} into {f.collect}; compare "
              f"them with python eval.py --runs_dir={f.collect}")
        left = workdirs.unfinished_note(f.runs_dir)
        if left:
            print(f"note: {left}", file=sys.stderr)
        return 0
    # Without data flags given explicitly, each run is tested on its own data.
    override = _given_data(f) or None
    if not 0 < f.margin < float("inf") or not 0 < f.nll_margin < float("inf"):
        return errors.fail(f"--margin and --nll_margin must be positive numbers, got {f.margin} and {f.nll_margin}")
    low, high = 100 * contrasts.MIN_ACCURACY_MARGIN, 100 * contrasts.MAX_ACCURACY_MARGIN
    if not low <= f.margin < high:
        return errors.fail(f"--margin is in accuracy points, from {low:g} (one image in 10,000) to below {high:g}, "
                           f"got {f.margin:g}: e.g. --margin=0.5 for half a point")
    if f.nll_margin >= contrasts.MAX_NLL_MARGIN:
        return errors.fail(f"--nll_margin is in nats, below {contrasts.MAX_NLL_MARGIN:g} (equivalence within more "
                           f"says nothing), got {f.nll_margin:g}: e.g. --nll_margin=0.015")
    with errors.one_line():
        result = compare.compare_runs(f.runs_dir, output_dir=f.output, mc_samples=f.mc_samples,
                                      mc_seed=f.mc_seed, batch_size=f.batch_size, baseline=f.baseline,
                                      data_override=override, ood=_ood(f),
                                      contrasts=contrasts.parse_contrasts(f.contrasts),
                                      margins={"test_accuracy": f.margin / 100, "test_loss": f.nll_margin},
                                      accuracy_below=f.accuracy_below)
    with open(result["paths"]["comparison.md"]) as md:
        print(md.read())
    for name, path in result["paths"].items():
        print(f"{name:<15} {path}")
    print(f"TensorBoard:    tensorboard --logdir {result['paths']['hparams']}  (HParams tab; restart one left open)")
    return 0


def _ood(f):
    """The OOD data the --ood_* flags name (ood.arguments), or None."""
    return ood_lib.arguments(f.ood_dataset, f.ood_idx_dir, f.ood_npz, f.ood_image_dir, f.tfds_data_dir)


if __name__ == "__main__":
    flags_lib.define_eval_flags()
    sys.exit(app.run(main, flags_parser=flags_lib.parse_or_exit))
