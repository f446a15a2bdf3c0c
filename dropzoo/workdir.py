"""A run's working directory: what it holds, and whether a command may write it.

`prepare(config, workdir, resolved)` is the one gate a run passes before
training. `workdir/config.json` records the config and what it resolved to
on the machine that started it (`resolved`: the precision policy `auto`
picked, the dropout sites the placement meant, the mask generator's
version). A rerun of a run that has checkpoints must ask for the same
settings and resolve them the same way, or it is refused in one line naming
the difference and the flag that pins it; a run that never reached its first
checkpoint (a typo, data that was not there) blocks nothing: its config.json
is replaced by the corrected command's.
"""
import contextlib
import glob
import json
import os
import shlex
import shutil

from dropzoo import checkpoints
from dropzoo import config as config_lib
from dropzoo import divergence
from dropzoo import evaluations
from dropzoo import files
from dropzoo import performance
from dropzoo import shards
from dropzoo.errors import RunError
from models.keras_file import default_name
from models.masks import LEGACY_GENERATOR

# Everything a run writes in its workdir (artifacts.ARTIFACT_FILES are added by the trainer).
RUN_FILES = ("config.json", "tensorboard", "checkpoints", "saved_model", "metrics.json", "evaluations", "model.txt")
# What `eval.py --workdir` writes beside a run: evaluations of its export, stale once it is trained again.
EVAL_FILES = ("eval.json", "eval-*.json")
RESOLVED = "resolved"
_CONFIG_FIX = "delete it and rerun to resume with this command's settings, or --overwrite to start the run again"
# What a finished run's metrics.json holds for the lines reporting it again (train.py's, a sweep's summary).
FINISHED_FIELDS = {"test_accuracy": float, "test_loss": float, "export_check": {"passed": bool},
                   "data": {"source": str, "origin": dict}}
# What each resolved value is called in a refusal of a run that resolved otherwise, and the fix beside the
# two every refusal names (another --workdir, --overwrite); {saved} is the run's value.
_PINS = {"precision": ("the precision policy", "pass --precision={saved} to resume it here, "),
         "sites": ("the dropout sites", "its placement has been redefined since; "),
         "mask_generator": ("the dropout mask generator", ""),
         "strategy": ("the strategy", "resume it with the cluster (TF_CONFIG), GPUs or --cpu_devices it started "
                                      "with, "),
         "keras_model_sha256": ("the --keras_model file of sha256", "the file has changed since (another model, or "
                                                                     "other weights); "),
         "onednn": ("oneDNN", "set TF_ENABLE_ONEDNN_OPTS as when it began (unset: oneDNN on; 0: off) to resume "
                              "it here, ")}


def test_origin(metrics):
    """The load_source arguments of the test data a run recorded in its metrics.json (older records: a
    `test_origin` of its own)."""
    return dict(metrics["data"].get("test_origin") or metrics["data"]["origin"])


def paths(workdir, extra=()):
    """{name: path} of everything a run writes in `workdir`."""
    return {name: os.path.join(workdir, name) for name in RUN_FILES + tuple(extra)}


def check_not_file(workdir):
    """RunError where `workdir` names an existing file or a path below one, or a path TensorFlow would read as a
    pattern: every run below it would fail on it (the second after training, loading its export)."""
    existing = files.first_existing(workdir) if workdir else None
    if existing and not os.path.isdir(existing):
        where = "" if existing == os.path.abspath(workdir) else f" lies below {existing}, which"
        raise RunError(f"--workdir {workdir}{where} is a file, not a directory; pass a directory for the run (it is "
                       "created if need be)")
    _check_loadable_path(workdir or "", f"--workdir {workdir}", "a --workdir without [ or \\ (a relative one is "
                         "read as given: from inside such a directory, name the run below it)")


def check_run_paths(runs):
    """RunError where a run's directory (its --workdir, or below a sweep's: named after --model and the variant)
    holds a character TensorFlow reads as a file pattern: the run would train, then fail to load its export."""
    for _, workdir in runs:
        _check_loadable_path(workdir, f"the run directory {workdir}", "a --workdir and a --model name without [ or \\")


def _check_loadable_path(path, subject, fix):
    pattern = files.pattern_characters(path)
    if pattern:
        raise RunError(f"{subject} holds {pattern}, which TensorFlow reads as a file pattern where it loads the "
                       f"run's export; pass {fix}")


def check_one_run_here(workdir, depth=5):
    """RunError where `workdir` lies inside another run's directory, or holds runs below it (up to `depth` levels):
    eval.py --runs_dir and --collect take a directory holding a run as that one run, and leave the others out."""
    workdir = os.path.abspath(workdir)
    parent = os.path.dirname(workdir)
    while parent != os.path.dirname(parent):
        if is_run(parent):
            raise RunError(f"{workdir} lies inside the run {parent}{_unstarted(parent)}: a comparison (eval.py "
                           f"--runs_dir) would take {parent} as one run and leave the runs below it out; give a "
                           f"--workdir outside {parent}")
        parent = os.path.dirname(parent)
    below = run_below(workdir, depth)
    if below:
        raise RunError(f"--workdir {workdir} holds other runs below it, e.g. {below}{_unstarted(below)}: a "
                       f"comparison (eval.py --runs_dir) would take {workdir} as one run and leave them out; give "
                       "another --workdir (a sweep puts its runs below its own)")


def run_below(directory, depth=5):
    """A run below `directory` (up to `depth` levels; not in a run's own subdirectories or hidden ones), or None."""
    for level in range(1, depth + 1):
        for below in sorted({os.path.dirname(path) for name in ("config.json", "metrics.json") for path in
                             glob.iglob(os.path.join(glob.escape(directory), *["*"] * level, name))}):
            if os.path.relpath(below, directory).split(os.sep)[0] not in RUN_FILES + ("comparison",) and is_run(below):
                return below
    return None


def _unstarted(run):
    """Where the run at `run` never reached a checkpoint (killed at its start): that it may be deleted."""
    return "" if started(run) else " (which never reached a checkpoint: delete it if it is not wanted)"


def is_run(directory):
    """Whether `directory` holds a run (or its collected records): the config.json `prepare` writes, or a run's
    metrics.json (a run recorded as identical by construction has only that; an unreadable one is a run's, whose
    reader says what is wrong). Another tool's metrics.json or config.json is not."""
    for name, key in (("config.json", RESOLVED), ("metrics.json", "config")):
        try:
            with open(os.path.join(directory, name)) as f:
                if key in json.load(f):
                    return True
        except ValueError:  # corrupt: a run's metrics.json, said where it is read
            if name == "metrics.json":
                return True
        except (OSError, TypeError):
            pass
    return False


def ensure_writable(workdir, make=True):
    """Creates `workdir` if need be (unless `make` is False); RunError unless this process can write to it."""
    check_not_file(workdir)
    why = files.unwritable(workdir, make=make)
    if why:
        raise RunError(f"cannot write to workdir {workdir!r} ({why}); pass a --workdir you can write to")


def remove_unstarted(workdir, keep):
    """Removes what a run that never checkpointed wrote in `workdir`, and the directories it made.

    `keep` is `files.first_existing(workdir)` from before the run: it and its
    ancestors stay. A run that has started (a checkpoint or metrics.json) is
    never touched.
    """
    if started(workdir) or os.path.exists(divergence.path(workdir)):  # a diverged run's record stays
        return
    for name in RUN_FILES + (".lock",):
        path = os.path.join(workdir, name)
        if name == "tensorboard":
            clear_events(path)
        elif os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)
    path = os.path.abspath(workdir)
    while path != keep and path.startswith(keep + os.sep):
        try:
            os.rmdir(path)  # only if empty: anything else someone put there stays
        except OSError:
            break
        path = os.path.dirname(path)


def clear_events(logdir):
    """Removes the TensorBoard events files and profiles below the run's `logdir` (RUN/tensorboard) and the folders
    they leave empty: what a run that never reached a checkpoint wrote there. Anything else stays, and no link is
    followed (a linked logdir may hold other runs' events)."""
    if os.path.islink(logdir) or not os.path.isdir(logdir):
        return
    for directory, _, names in os.walk(logdir, topdown=False):  # (os.walk enters no linked folder)
        parts = os.path.relpath(directory, logdir).split(os.sep)
        profile = any(parts[i:i + 2] == ["plugins", "profile"] for i in range(len(parts)))
        for name in names:
            path = os.path.join(directory, name)
            if (profile or name.startswith("events.out.tfevents.")) and not os.path.islink(path):
                with contextlib.suppress(OSError):  # (what cannot go stays: this runs on the way out of a failed run)
                    os.remove(path)
        with contextlib.suppress(OSError):
            if not os.listdir(directory):
                os.rmdir(directory)


def started(workdir):
    """Whether the run in `workdir` got anywhere: a checkpoint or a finished metrics.json."""
    return bool(checkpoints.saved_epochs(os.path.join(workdir, "checkpoints"))) or os.path.exists(
        os.path.join(workdir, "metrics.json"))


def twins(runs, root):
    """{workdir: another run's directory under the sweep's `root` (<root>/<model>/<variant>/seed<k>), started with
    its settings} for each run of the sweep `runs` not started itself: a grid widened along a new field
    (--learning_rate=1.0 to 1.0,0.5) names its runs anew (canonical/ becomes canonical-learning_rate1/), and the runs
    it has would train again under the new names."""
    planned = {os.path.abspath(workdir) for _, workdir in runs}
    if len(planned) < 2:
        return {}
    by_seed = {}  # the root's started runs, by seed
    for path in glob.glob(os.path.join(glob.escape(root), "*", "*", "seed*", "config.json")):
        other = os.path.dirname(path)
        try:
            saved = files.read_json(path, "")
        except files.ReadError:  # said when that run is trained
            continue
        if os.path.abspath(other) not in planned and isinstance(saved, dict) and started(other):
            by_seed.setdefault(saved.get("seed"), []).append((other, saved))
    found = {}
    for config, workdir in runs:
        same = sorted(other for other, saved in by_seed.get(config.seed, ()) if _same_settings(saved, config))
        if same and not started(workdir):
            found[workdir] = same[0]
    return found


def _same_settings(saved, config):
    try:
        return not config_lib.differences(saved, config)
    except (TypeError, ValueError, KeyError):  # a hand-edited config.json: said when that run is trained
        return False


def check_outside_data(config, workdir):
    """RunError where `workdir` is an image folder the run reads, or inside one: its records and exports would
    become class folders of its own data (and a rerun or eval.py would read them as such)."""
    for name in ("image_dir", "test_image_dir"):
        folder = getattr(config, name)
        if folder and files.is_within(workdir, folder):
            inside = os.path.realpath(workdir) != os.path.realpath(folder)
            raise RunError(f"--workdir {workdir} is {'inside ' * inside}--{name} {folder}: "
                           "the run's records would be read as class folders of its images; give a --workdir "
                           "outside the image folder")


def prepare(config, workdir, resolved, overwrite=False, extra=()):
    """Creates `workdir`, or checks that an existing run there is this config's; returns its metrics if finished.

    `resolved` ({"precision", "sites", ...}) is what the config resolves to
    here; a run with checkpoints that resolved otherwise is refused. Returns
    the finished run's metrics (unless `overwrite`), else None. The caller
    holds the workdir's lock.
    """
    files_ = paths(workdir, extra)
    check_one_run_here(workdir)
    check_outside_data(config, workdir)
    ensure_writable(workdir)
    eval_files = [path for pattern in EVAL_FILES for path in glob.glob(os.path.join(workdir, pattern))]
    if overwrite:
        files.remove(list(files_.values()) + eval_files + [divergence.path(workdir)])
    record = {**config.to_dict(), RESOLVED: resolved}
    check_recorded(config, workdir, resolved)
    divergence.check_not_diverged(workdir)  # (its recorded outcome: kept)
    if os.path.exists(files_["config.json"]):
        saved = files.read_json(files_["config.json"], _CONFIG_FIX)
        if not started(workdir):  # never checkpointed: the corrected command takes over
            clear_events(files_["tensorboard"])  # the killed attempt's (its model, maybe an epoch's points)
            if saved != record:
                files.write_json(files_["config.json"], record)
    else:
        files.write_json(files_["config.json"], record)
    if os.path.exists(files_["metrics.json"]):
        return files.read_json(files_["metrics.json"], "delete it and rerun the same command to re-export and "
                               "re-measure from the last checkpoint", FINISHED_FIELDS)
    # To be trained (on): earlier weights' evaluations (its metrics.json deleted to train on) would answer for the
    # new ones. Newer records name their weights; older ones go, as do serving files and eval.json, which name none.
    evaluations.drop_unweighted(workdir)
    files.remove([files_[name] for name in extra] + eval_files)
    return None



def check_recorded(config, workdir, resolved):
    """RunError unless what `workdir` holds (a finished run, or checkpoints to resume) is of `config`'s settings,
    by its config.json, else (deleted) by what its metrics.json or its newest checkpoint records."""
    files_ = paths(workdir)
    diverged = divergence.read(workdir)  # (its outcome, like a finished run's: another command's is said)
    if not started(workdir) and not diverged:
        return
    finished = os.path.exists(files_["metrics.json"]) or bool(diverged)
    if os.path.exists(files_["config.json"]):
        saved = files.read_json(files_["config.json"], _CONFIG_FIX)
        wrong = config_lib.type_problem(saved)  # a hand-edited value: not "other settings" (--overwrite loses them)
        if wrong:
            raise files.ReadError(f"{files_['config.json']} is corrupt ({wrong}); {_CONFIG_FIX}")
        check_same(saved, config, resolved, workdir, resuming=not finished)
    elif os.path.isfile(files_["metrics.json"]):  # its results would be reported as this command's (unchecked)
        recorded = files.read_json(files_["metrics.json"], "delete it and rerun the same command")
        if isinstance(recorded, dict) and isinstance(recorded.get("config"), dict):
            check_same(recorded["config"], config, resolved, workdir)
    if not finished:  # config.json deleted, or another run's checkpoint copied in
        check_checkpoint(checkpoints.newest_record(files_["checkpoints"]), config, resolved, files_["checkpoints"])


def check_checkpoint(record, config, resolved, directory=None):
    """RunError unless the run a checkpoint's `record` names (checkpoints.save) is `config`'s (unnamed: older)."""
    if (record or {}).get("run"):
        epoch, run = len(record.get("seconds", [])), record["run"]
        if run.get("train_steps") is None and config.train_steps is None and epoch <= config.epochs:
            run = {**run, "epochs": config.epochs}  # its epochs are the first of a longer run's: nothing depends on it
        check_same(run, config, resolved, directory, resuming=True,
                   subject=f"the checkpoint after epoch {epoch}{f' in {directory}' if directory else ''} is of a run")


def check_same(saved, config, resolved, workdir, resuming=False, subject=None):
    """RunError, one line, unless the saved run's settings and resolved values are this command's.

    `resuming` (a run with checkpoints and no metrics): how it runs must not
    change either (--strategy, --cpu_devices), or its later epochs would
    train otherwise than its earlier ones, and it would be recorded as one.
    A finished run whose `auto` precision resolves otherwise here (another
    CPU) is not refused: nothing trains, and its records name its precision.
    `subject` begins the message (default: the workdir holds a run).
    """
    subject = subject or f"workdir {workdir!r} holds a run"
    before = saved.get(RESOLVED) or {}  # runs recorded before this check resolve as they do now
    changed = config_lib.differences(saved, config)
    if resuming:
        saved_all = config_lib.with_defaults(saved)
        # A flag whose resolution the run recorded (--strategy: auto is the mirrored it resolves to) is held to
        # that resolution below, not to its spelling.
        changed += [k for k in config_lib.EXECUTION_ONLY if saved_all[k] != getattr(config, k) and k not in before]
    if "precision" in changed and before.get("precision") == resolved.get("precision"):
        changed.remove("precision")  # auto and the policy it resolved to ask for the same run
    if "jit_compile" in changed and not performance.gpu_details() and {
            config_lib.with_defaults(saved)["jit_compile"], config.jit_compile} == {"auto", "false"}:
        changed.remove("jit_compile")  # likewise auto and off, as it resolves without a GPU (with one: by strategy)
    if changed:
        def shown(value):
            return "unset" if value is None else repr(value)

        listed = ", ".join(f"--{k} ({shown(saved.get(k))} -> {shown(getattr(config, k))})" for k in changed)
        longer = changed == ["epochs"] and config.epochs > config_lib.with_defaults(saved)["epochs"] \
            and config.train_steps is None and workdir and os.path.isdir(workdir) and (checkpoints.newest_record(
                os.path.join(workdir, "checkpoints")) or {}).get("run")  # (older ones: nothing checks the flags)
        both = " and metrics.json" if workdir and os.path.exists(os.path.join(workdir, "metrics.json")) else ""
        extend = (f"; to train it on to {config.epochs} epochs from its checkpoints, delete its config.json{both} "
                  "and rerun this command" if longer else "")
        again = _rerun(saved, changed, config)
        raise RunError(f"{subject} with other settings: {listed}{extend}; use another --workdir, or --overwrite to "
                       "replace that run" + (f", or rerun {again} to {'resume' if resuming else 'report'} it"
                                             if again else ""))
    for name, value in resolved.items():
        if name in ("precision", "strategy", "onednn") and not resuming:  # finished: reported as trained (records say)
            continue
        if before and name not in before and name == "mask_generator" and value is not None:
            before = {**before, name: LEGACY_GENERATOR}  # recorded before the generator was: Keras' own
        if name in before and before[name] != value:
            what, fix = _PINS[name]
            fix = fix.format(saved=before[name])
            if name == "precision" and "bfloat16" in str(before[name]) and performance.onednn_state() == "off":
                fix = ("TF_ENABLE_ONEDNN_OPTS turns off oneDNN, whose bfloat16 kernels it trained with: unset it "
                       "to resume it here, or ")
            elif name == "precision":
                try:
                    performance.check_precision(before[name])
                except ValueError:  # the pin cannot run here either: a oneDNN cap in the environment
                    variable, cap = performance.onednn_isa_cap()
                    fix = (f"{variable}={cap} leaves oneDNN without bfloat16 kernels, so {performance.bf16_cap_fix()}"
                           f" and {fix}")
            raise RunError(f"{subject} trained with {what} {before[name]!r}, but this command "
                           f"resolves to {value!r}; {fix}use another --workdir, or --overwrite to train it again "
                           "from the start")


def _rerun(saved, changed, config):
    """How to ask for the `changed` fields' values in `saved` (a run's config.json) instead of `config`'s on the
    command line: "with --a=1 --b=x and without --c"; --model left out where it is derived (from --network, or a
    --keras_model's own name; "without --model" where `config` names a zoo network), and given otherwise."""
    derived = saved.get("network") or (saved.get("keras_model") and saved.get("model") == default_name(
        saved["keras_model"]))
    names = [k for k in changed if not (k == "model" and derived)]
    given = [(f"--{k}" if saved[k] else f"--no{k}") if isinstance(saved.get(k), bool) else
             f"--{k}={shlex.quote(str(saved[k]))}" for k in names if saved.get(k) not in (None, "")]
    zoo = derived and "model" in changed and not (config.network or config.keras_model)
    left = [f"--{k}" for k in names if saved.get(k) in (None, "")] + ["--model"] * bool(zoo)
    return " and ".join(part for part in (given and "with " + " ".join(given), left and "without " + ", ".join(left))
                        if part)


def identical_target(workdir):
    """The run `workdir` is recorded identical by construction to (a sweep's record, never trained), else None."""
    try:
        with open(os.path.join(workdir, "metrics.json")) as f:
            target = json.load(f).get("identical_to")
    except (OSError, ValueError, AttributeError):
        return None
    return os.path.normpath(os.path.join(workdir, target)) if isinstance(target, str) else None


def recorded_elsewhere(workdir, target_workdir):
    """Whether `workdir` holds a record identical to another run than `target_workdir` (moved beside its target,
    or its target moved: a comparison refuses it), which the sweep records again."""
    target = identical_target(workdir)
    return target is not None and os.path.abspath(target) != os.path.abspath(target_workdir)


def reexport_fix(workdir, what, rerun=""):
    """How to make a finished run's exports (`what`: "them", "it") again, where its checkpoints allow (`rerun`:
    what its train.py command needs changed for that, e.g. " without --noserving_artifacts")."""
    if diverged := divergence.read(workdir):
        return (f"its training diverged (in epoch {diverged['epoch']}; {divergence.path(workdir)}), so it has no "
                f"exports; {divergence.RETRY}")
    target = identical_target(workdir)
    if target:  # recorded, never trained: it has no exports or checkpoints of its own
        return (f"this run was never trained: it is identical by construction to {target}, whose exports are its "
                f"own; pass --workdir={target}")
    if checkpoints.saved_epoch(os.path.join(workdir, "checkpoints")):
        return (f"export {what} again from its last checkpoint (no training, the same weights): delete "
                f"{os.path.join(workdir, 'metrics.json')} and rerun its train.py command{rerun}")
    subject = {"them": "they"}.get(what, what)
    return (f"{subject} cannot be exported again here: the run has no checkpoint here (records carried from where "
            "it trained?); use the exports where it trained")


NOT_RUNS = ("comparison", evaluations.EVALUATIONS)  # directories below a runs directory that hold no runs


def unfinished_runs(runs_dirs):
    """Run directories below `runs_dirs` that started (a config.json) and hold no metrics.json yet, sorted."""
    found = []
    for runs_dir in runs_dirs:
        for root, dirs, names in os.walk(runs_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_RUNS)
            if "metrics.json" in names:
                dirs[:] = []
            elif "config.json" in names:  # (finished below another of runs_dirs, where its rerun went: not left)
                elsewhere = [os.path.join(d, os.path.relpath(root, runs_dir)) for d in runs_dirs]
                if os.path.isfile(divergence.path(root)) or not any(  # (a diverged run is an outcome: counted)
                        os.path.isfile(os.path.join(run, "metrics.json")) and shards.same_settings(root, run)
                        for run in elsewhere):
                    found.append(os.path.normpath(root))
                dirs[:] = []
    return sorted(found)


def unfinished_note(runs_dirs, found=None):
    """A note naming the runs below `runs_dirs` left out as unfinished (`found`: unfinished_runs of them), or None."""
    found = unfinished_runs(runs_dirs) if found is None else found
    if not (left := [run for run in found if not os.path.isfile(divergence.path(run))]):
        return None  # (a diverged run is said by the comparison: divergence.rows)
    return (f"{len(left)} unfinished run(s) left out (no metrics.json yet): {', '.join(left[:3])}"
            f"{', ...' if len(left) > 3 else ''}; rerun their train.py command to finish them")
