"""Train one model x dropout placement, export it and prove the export.

    python train.py                                  # classic Keras CNN, offline-safe
    python train.py --model=tf_layers_cnn --placement=before_activation
    python train.py --flagfile=configs/keras_mnist_cnn.cfg
    python train.py --placement=all --seeds=3 --workdir=runs/study   # a sweep

See `python train.py --helpfull` for every flag.
"""
import json
import os
import re
import shlex
import sys
import time

from dropzoo import environment  # light: no TensorFlow

environment.set_defaults()  # before TensorFlow loads
environment.print_any_file_name()

from dropzoo import interrupts  # noqa: E402  (light: signals only)

if __name__ == "__main__":
    interrupts.quiet_during_start_up()  # Ctrl-C while TensorFlow loads: one line, no traceback
    environment.import_tensorflow()  # without the banner its native libraries print whatever the log level

from absl import app  # noqa: E402
from absl import logging  # noqa: E402

from dropzoo import artifacts  # noqa: E402
from dropzoo import checkpoints  # noqa: E402
from dropzoo import divergence  # noqa: E402
from dropzoo import errors  # noqa: E402
from dropzoo import flags as flags_lib  # noqa: E402
from dropzoo import locks  # noqa: E402
from dropzoo import outcomes  # noqa: E402
from dropzoo import plan_notes  # noqa: E402
from dropzoo import shards  # noqa: E402
from dropzoo import sources  # noqa: E402
from dropzoo import strategies  # noqa: E402
from dropzoo import sweep  # noqa: E402
from dropzoo import trainer  # noqa: E402
from dropzoo import workdir as workdirs  # noqa: E402

# A task whose share holds runs another process was training (EX_TEMPFAIL: a scheduler may retry it).
EXIT_SHARE_NOT_DONE = 75


def main(argv):
    errors.plain_logs()
    if len(argv) > 1:
        return errors.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    try:
        with interrupts.stop_on_signals():
            return _train(flags_lib.FLAGS.overwrite)
    except interrupts.Interrupted as e:
        try:
            start = "\n" if sys.stderr.isatty() else ""  # off the progress bar's line
            print(start + _interrupted_line(e, flags_lib.FLAGS.overwrite), file=sys.stderr, flush=True)
        except OSError:  # `train.py | tee log`: Ctrl-C ended tee too, and the pipe with it
            pass
        interrupts.exit_by_signal(e.signum)


def _train(overwrite):
    fv = flags_lib.FLAGS
    with errors.one_line():
        workdirs.check_not_file(fv.workdir)  # before any run of a sweep fails on it
        devices = {int(v) for v in (fv.cpu_devices or "").split(",") if v.strip().isdigit()}
        if len(devices) == 1 and max(devices) > 1:  # before anything starts TensorFlow (a --keras_model's plan)
            strategies.split_cpu(devices.pop())
        runs = flags_lib.train_plan()
        for note in plan_notes.unused_flags(runs, flags_lib.FLAGS) + plan_notes.model_notes(runs):
            logging.warning("%s", note)
        workdirs.check_one_run_here(runs[0][1])  # a sweep into a run's directory, a run into a sweep's: refused
        workdirs.check_run_paths(runs)  # --model='x[1]' names a sweep's run directories
        # Before any run (and a dry run) plans into an image folder (its folders are one for every run: not swept).
        workdirs.check_outside_data(runs[0][0], fv.workdir or runs[0][1])
        task = shards.task_of(fv.task_index, fv.num_tasks)
        strategies.check_one_run_per_cluster(runs, task)
        if (len(runs) > 1 or task is not None) and not fv.dry_run:
            # One line for a root it cannot write (a read-only volume), not one FAILED line per run.
            workdirs.ensure_writable(os.path.commonpath([os.path.abspath(w) for _, w in runs]), make=False)
        if task is not None:
            runs = _task_share(runs, task)
            if not runs:
                return 0
        for workdir, other in ({} if fv.overwrite or not fv.workdir else workdirs.twins(runs, fv.workdir)).items():
            logging.warning("%s has the settings of the run in %s, named otherwise before the sweep varied more "
                            "fields: it would train again; to keep that run instead, move it first: mkdir -p %s && "
                            "mv %s %s", workdir, other, *map(shlex.quote, (os.path.dirname(workdir), other, workdir)))
        if fv.dry_run:
            text, refused = sweep.dry_run(runs, overwrite=fv.overwrite)
            print(text)
            if refused:  # the command itself would fail on them: said on stderr too, as its refusal would be
                print(f"error: {refused} run(s) of this plan would be refused (see '(refused: ...)' above); do what "
                      "each says (e.g. another --workdir, or --overwrite to replace that run)", file=sys.stderr)
            return errors.EXIT_USAGE if refused else 0
        # One run alone, or a one-run share under a multi-worker cluster (an Indexed Job's --task_index=0
        # --num_tasks=1), which must build its strategy before its data starts TensorFlow: a sweep's loads it first.
        cluster = strategies.num_training_tasks(strategies.tf_config_cluster(os.environ.get("TF_CONFIG", "")))
        if len(runs) == 1 and (task is None or cluster > 1):
            config, workdir = runs[0]
            if overwrite and cluster <= 1 and workdirs.started(workdir):  # before it is deleted: a typo lost it
                sweep.check_data_fits(runs)  # the data loads, the network takes it (what a sweep checks first)
                sources.check_reachable(**sources.config_arguments(config))  # tfds data: described only
            try:
                metrics = trainer.train_and_evaluate(config, workdir, overwrite=overwrite,
                                                     serving_artifacts=fv.serving_artifacts)
            except locks.WorkdirLocked as e:
                if task is None:
                    raise
                print(f"error: {e}; task {task[0]} of {task[1]} is not done: run it again once that process ends",
                      file=sys.stderr)
                return EXIT_SHARE_NOT_DONE
            except divergence.Before as e:  # its recorded outcome, as a sweep says of it (and its dry run)
                print(outcomes.summary([(config, workdir, outcomes.Diverged(e.kept))]))
                return 0
            _print_run(metrics, workdir)
            return 0
        started_at = time.time()
        try:
            results = sweep.run_sweep(runs, overwrite=overwrite, serving_artifacts=fv.serving_artifacts)
        except interrupts.Interrupted as e:  # what this sweep wrote, and (--overwrite) the runs it had not reached
            e.sweep = [(workdir, _written_since(workdir, started_at)) for _, workdir in runs]
            raise
    return _print_sweep(results, task, fv.workdir)


def _task_share(runs, task):
    """The runs of the plan `runs` that `task` (index, count, where they came from) trains, checked against the
    array's other tasks and said in one line."""
    index, count, source = task
    dry_run = flags_lib.FLAGS.dry_run
    plan = sweep.plan(runs)
    mine = shards.share(runs, plan, index, count)
    print(f"task {index} of {count} (from {source}): {len(mine)} of the plan's {len(runs)} runs", flush=True)
    # The plan first: a task refused for an empty share still counts its job script's command (turn by turn).
    shards.check_array_plans(runs, plan, index, source, record=not dry_run)  # a dry run only compares
    shards.check_slurm_share(mine, plan, index, count, source)
    shards.check_task_counts(runs, plan, index, count, source, record=not dry_run,
                             overwrite=flags_lib.FLAGS.overwrite)
    unchecked = shards.kubernetes_unchecked(source)
    if unchecked:
        logging.warning("%s", unchecked)
    return mine


def _print_sweep(results, task, root):
    """The sweep's summary, and its exit status: 1 where a run failed, 75 where a task left runs to another."""
    print(outcomes.summary(results))
    if outcomes.failed(results):
        return 1
    skipped = any(isinstance(outcome, outcomes.Skipped) for _, _, outcome in results)
    if task is None and not skipped:
        root = root or os.path.commonpath([workdir for _, workdir, _ in results])
        print(f"TensorBoard:  tensorboard --logdir {shlex.quote(root)}")  # (as a single run's lines say)
        print(f"compare:      python eval.py --runs_dir={shlex.quote(root)}")
    if task is not None and skipped:
        # A task's share is its own: a run another process holds is not done, so the scheduler may retry.
        print(f"error: task {task[0]} of {task[1]} left runs another process was training (SKIPPED above); "
              "its share is not done: run the task again once that process ends", file=sys.stderr)
        return EXIT_SHARE_NOT_DONE
    return 0


def _print_run(metrics, workdir):
    """One run's results and where its files are."""
    print(f"data:         {metrics['data']['source']}")
    print(f"test accuracy {metrics['test_accuracy']:.4f}, loss {metrics['test_loss']:.4f}")
    print(f"export check: {'passed' if metrics['export_check']['passed'] else 'FAILED'}")
    missing = artifacts.missing_exports(workdir, metrics)  # deleted since a finished run was exported

    def gone(names):
        return " (missing: see the note above)" if any(name.startswith(names) for name in missing) else ""

    print(f"SavedModel:   {os.path.join(workdir, 'saved_model')}{gone('saved_model/')}")
    tflite = metrics.get("tflite")
    if tflite:  # model.keras, model.tflite, model_int8.tflite beside it
        print(f"also:         model.keras, model.tflite, model_int8.tflite (TFLite test accuracy: int8 "
              f"{tflite['int8_test_accuracy']:.4f}, float32 {tflite['float32_test_accuracy']:.4f})"
              f"{gone(artifacts.ARTIFACT_FILES)}")
    # The run's directory, not its tensorboard/: TensorBoard names a session at its logdir's root ".", and finds
    # no "./validation" run for its validation columns.
    print(f"TensorBoard:  tensorboard --logdir {workdir}")
    print(f"metrics:      {os.path.join(workdir, 'metrics.json')}")


def _interrupted_line(interrupted, overwrite=False):
    """What was kept, and the command that resumes (without `overwrite`'s flag: rerun as typed, it would start over)."""
    script = sys.argv[0] if os.path.basename(sys.argv[0]) == "train.py" else "train.py"  # as typed: another cwd too
    args, share = sys.argv[1:], _array_share()  # typed as is, outside the array, the command trains the whole plan
    if share:  # (a pod's --num_tasks once)
        args = [arg for arg in args if not re.match(r"--?(task_index|num_tasks)\b", arg)] + share[0]
    command = shlex.join(["python", script, *args])
    runs = getattr(interrupted, "sweep", [])  # [(workdir, written by this sweep)]
    if interrupted.workdir is None and not any(written for _, written in runs):
        return f"interrupted ({interrupted}) before training started; nothing was written; rerun: {command}"
    again = "rerun the same command"
    if overwrite:
        kept_args = [arg for arg in args if not re.fullmatch(r"--?(no)?overwrite(=.*)?", arg)]
        flagfile = len(kept_args) == len(args) or any(re.match(r"--?flagfile", arg) for arg in kept_args)
        command = shlex.join(["python", script, *kept_args, *(["--nooverwrite"] if flagfile else [])])
        again = "rerun it without --overwrite"
        later = [workdir for workdir, written in runs if not written and workdirs.started(workdir)]
        if later:  # without --overwrite, they would be kept (or refused, where their settings differ)
            again = (f"delete the {len(later)} run(s) it had not reached, which still hold their earlier results "
                     f"(rm -r {shlex.join(later)}), then rerun it without --overwrite")
    if share:  # a requeue reruns the job script: under --overwrite, from the start
        again = f"{share[1]}, or {again} with this task's share" if share[1] and not overwrite else \
            f"{again} with this task's share"
    if interrupted.workdir is None:  # between two runs of a sweep
        return f"interrupted ({interrupted}) between runs of the sweep, whose finished runs are kept; to resume, " \
               f"{again}: {command}"
    directory = os.path.join(interrupted.workdir, "checkpoints")
    epoch = checkpoints.saved_epoch(directory)
    if not epoch:
        kept = "no epoch had finished, so the run starts over"
    elif epoch >= _planned_epochs(interrupted.workdir):
        kept = f"{directory} keeps epoch {epoch}, the last; the test evaluation and export are redone on resume"
    else:
        kept = f"{directory} keeps epoch {epoch}; the epoch in progress is redone on resume"
    cluster = strategies.num_training_tasks(strategies.tf_config_cluster(os.environ.get("TF_CONFIG", "")))
    strategy = flags_lib.FLAGS["strategy"].value if "strategy" in flags_lib.FLAGS else "auto"
    if cluster > 1 and strategy in ("auto", "multi_worker"):  # the other workers stop too (a lost peer)
        return (f"interrupted ({interrupted}): {kept}; to resume, {again} on every worker of "
                f"TF_CONFIG's {cluster}-task cluster: {command}")
    return f"interrupted ({interrupted}): {kept}; to resume, {again}: {command}"


def _array_share():
    """([--task_index, --num_tasks] of this Slurm array task's or Kubernetes pod's share, how its scheduler reruns
    it, as the job script has it), or None outside one (a share typed by hand is in the command already)."""
    given = [flags_lib.FLAGS[name].value if name in flags_lib.FLAGS else None for name in ("task_index", "num_tasks")]
    try:
        index, count, source = shards.task_of(*given)
    except (TypeError, ValueError):  # outside an array (None), or one it refused before training
        return None
    slurm = shards.from_slurm(source)
    if not (slurm or shards.from_kubernetes(source)):
        return None
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    rerun = (f"requeue this task (scontrol requeue {job}_{os.environ.get('SLURM_ARRAY_TASK_ID')})" if slurm and job
             else None if slurm else "let the Job run this index again (backoffLimitPerIndex)")
    return [f"--task_index={index}", f"--num_tasks={count}"], rerun


def _written_since(workdir, moment):
    """Whether the run in `workdir` wrote its record, a checkpoint or its metrics at `moment` or after."""
    times = []
    for name in ("config.json", "checkpoints", "metrics.json"):
        try:
            times.append(os.path.getmtime(os.path.join(workdir, name)))
        except OSError:
            pass
    return max(times, default=0) >= moment


def _planned_epochs(workdir):
    """The run's --epochs from its config.json; infinity where it trains --train_steps or has none."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return float("inf")
    return saved.get("epochs", float("inf")) if saved.get("train_steps") is None else float("inf")


if __name__ == "__main__":
    flags_lib.define_train_flags()
    sys.exit(app.run(main, flags_parser=flags_lib.parse_or_exit))
