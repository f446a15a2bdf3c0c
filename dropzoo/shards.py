"""One share of a sweep: which runs this process trains when a scheduler starts many.

A study of tens of seeds per variant is an array job: Slurm's `sbatch
--array=0-99%8` or a Kubernetes Indexed Job start N copies of the same
`train.py` command, each with its index in the environment. The scheduler
limits concurrency, hands out devices and requeues; this module only maps
an index to its share of the plan, deterministically:

- `task_of(task_index, num_tasks, environ)`: (index, count, where it came
  from), from the flags if given, else from Slurm (`SLURM_ARRAY_TASK_ID -
  SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT` tasks; an array with a
  step other than 1 is refused) or Kubernetes (`JOB_COMPLETION_INDEX`, with
  `--num_tasks`), else None (the whole plan);
- `share(runs, index, count)`: the runs of share `index`: the plan's groups
  of identical runs (`sweep.plan`, trained once and recorded for the rest)
  dealt round-robin in the order of their directories (not of the flags'
  values), so a group never splits and every run has one share.

A task run again resumes or skips its own runs as any rerun sweep does; the workdir lock keeps two out of one run.

A Slurm array's split comes from the environment (a Kubernetes Indexed
Job's index too), so a command that also picks its runs by the index
(`--seed=$SLURM_ARRAY_TASK_ID`) would train a share of a share without a
word: `check_slurm_share` refuses a task left with nothing to train, and
`check_array_plans` a task whose plan differs from another task's of the
same array job (each records its plan's digest in the runs' root,
`.tasks/`; a Kubernetes pod names its Job by DROPZOO_JOB_UID, which
docs/kubernetes-job.yaml sets from the pod's labels).
Shares of one plan split into other counts (task 0 of 3, task 1 of 2) leave
runs to no task: `check_task_counts` refuses the second (unless all finished).
"""
import glob
import hashlib
import itertools
import json
import os

from dropzoo import config as config_lib
from dropzoo import files
from dropzoo import sources
from dropzoo.errors import ConfigError

# What a task whose share comes from Slurm's environment is told, where it may be a share of a share.
_OWN_INDEX = ("if the command picks its runs by the array index itself (e.g. --seed=$SLURM_ARRAY_TASK_ID), pass "
              "--task_index=0 --num_tasks=1 so that each task trains its whole plan")
_OWN_INDEX_K8S = ("if the command picks its runs by the index itself (e.g. --seed=$(JOB_COMPLETION_INDEX)), pass "
                  "--task_index=0 --num_tasks=1 so that each pod trains its whole plan")


def task_of(task_index=None, num_tasks=None, environ=None):
    """(index, count, source) of this task, or None when nothing divides the plan."""
    environ = os.environ if environ is None else environ
    if num_tasks is not None and num_tasks < 1:  # before the pairing: the value itself is what is wrong
        raise ConfigError(f"--num_tasks must be a positive integer, got {num_tasks}")
    if task_index is not None or num_tasks is not None:
        if task_index is None and "JOB_COMPLETION_INDEX" in environ:
            task_index = _integer(environ["JOB_COMPLETION_INDEX"], "JOB_COMPLETION_INDEX",
                                  "a Kubernetes Indexed Job sets it to the pod's index")
            return _checked(task_index, num_tasks, "JOB_COMPLETION_INDEX (Kubernetes Indexed Job) and --num_tasks")
        in_array = "SLURM_ARRAY_TASK_ID" in environ
        if task_index is None or num_tasks is None:
            raise ConfigError("give --task_index and --num_tasks together (this task's index, 0..N-1, and the "
                              "number of tasks the plan is split into)"
                              + ("; inside a Slurm array give neither, and the array's index splits the plan"
                                 if in_array else ""))
        unused = (f"; the Slurm array's SLURM_ARRAY_TASK_ID={environ['SLURM_ARRAY_TASK_ID']} is not used" if in_array
                  else f"; JOB_COMPLETION_INDEX={environ['JOB_COMPLETION_INDEX']} is not used"
                  if "JOB_COMPLETION_INDEX" in environ else "")
        return _checked(task_index, num_tasks, "--task_index and --num_tasks" + unused)
    if "SLURM_ARRAY_TASK_ID" in environ:
        return _slurm(environ)
    if "JOB_COMPLETION_INDEX" in environ:
        raise ConfigError("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but --num_tasks is not; pass "
                          "--num_tasks=N, the Job's completions")
    return None


def _slurm(environ):
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT")
    missing = [name for name in names if name not in environ]
    if missing:
        raise ConfigError(f"SLURM_ARRAY_TASK_ID is set but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not; run the sweep as an array "
                          "job (sbatch --array=0-N)")
    task_id, low, high, count = (_integer(environ[name], name) for name in names)
    if high - low + 1 != count:
        raise ConfigError(f"the Slurm array spans {low}-{high} but has {count} tasks: a step or a list of indices "
                          "(e.g. --array=1,3,5), which this mapping cannot number 0..N-1; to rerun some tasks of an "
                          "earlier array, resubmit its whole range (finished runs are kept) or pass "
                          "--task_index=$SLURM_ARRAY_TASK_ID --num_tasks=<its size> (an array from 0); to split the "
                          f"plan anew, delete the earlier split's .tasks/split-*-task*.json and submit "
                          f"--array=0-{count - 1} (a %limit is fine)")
    return _checked(task_id - low, count,
                    f"SLURM_ARRAY_TASK_ID={task_id} of array {low}-{high} (SLURM_ARRAY_TASK_COUNT={count})")


def _integer(text, name, fix=""):
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {text!r}" + (f"; {fix}" if fix else "")) from None


def _checked(index, count, source):
    if count is None or count < 1:
        raise ConfigError(f"--num_tasks must be a positive integer, got {count}")
    if not 0 <= index < count:
        raise ConfigError(f"the task index {index} is not in 0..{count - 1} ({source}); each of the {count} tasks "
                          "takes one index")
    return index, count, source


def share(runs, plan, index, count):
    """The runs of share `index` of `count`: the plan's groups of identical runs, dealt round-robin.

    `plan` is sweep.plan(runs): for each run, the index of the run that
    trains it. Groups are numbered in the order of their directories; group g
    goes to share g % count, with every run it stands for.
    """
    groups = _groups(runs, plan)
    mine = {leader for g, leader in enumerate(sorted(groups, key=groups.get)) if g % count == index}
    return [run for run, leader in zip(runs, plan) if leader in mine]


def _groups(runs, plan):
    """{leader: its group's workdirs, sorted}. Groups dealt in the order of their workdirs, not of the plan, so that
    tasks typed with a list's values in another order (--placement=none,canonical; canonical,none) deal alike."""
    groups = {}
    for (_, workdir), leader in zip(runs, plan):
        groups.setdefault(leader, []).append(os.path.normpath(workdir))
    return {leader: sorted(workdirs) for leader, workdirs in groups.items()}


def from_slurm(source):
    """Whether a task_of source is a Slurm array's environment (not flags)."""
    return source.startswith("SLURM_ARRAY_TASK_ID")


def from_kubernetes(source):
    """Whether a task_of source is a Kubernetes Indexed Job's environment (JOB_COMPLETION_INDEX, not flags)."""
    return source.startswith("JOB_COMPLETION_INDEX")


def check_slurm_share(mine, plan, index, count, source):
    """ConfigError where a Slurm array's task, or a Kubernetes Indexed Job's pod, got no runs: the array (Job) is
    larger than the plan, or the command picks its runs by the index too (a one-run plan per task). A split typed
    with --task_index is the user's own."""
    kubernetes = from_kubernetes(source)
    if mine or not (from_slurm(source) or kubernetes):
        return
    groups = len(set(plan))
    if kubernetes:
        larger = f"the Job's {count} completions"
        own = _OWN_INDEX_K8S
        fix = (f"give the Job {groups} completions and --num_tasks={groups} (to rerun it at that size, first "
               "delete the split-*-task*.json files its pods wrote beside the runs)")
    else:
        larger, own, fix = f"the array's {count} tasks", _OWN_INDEX, (
            f"submit --array=0-{groups - 1} (its other tasks dealt every run; to rerun it at that size, first delete "
            "the split-*-task*.json files they wrote beside the runs)")
    raise ConfigError(f"task {index} of {count} ({source}) has no runs to train: the plan has {groups} group(s) "
                      f"of runs, fewer than {larger}; {own}, or else {fix}")


# Where a task may differ: where it finds the same data and model file, and how it runs them (its node's devices).
_PER_TASK = (*sources.PATH_ARGUMENTS, "keras_model", "steps_per_execution", "profile_batches", "strategy",
             "cpu_devices")


def _settings(config):
    """[(field, repr(value))] a run trains with, but where a task may find its data and what devices it runs on."""
    return sorted((k, repr(v)) for k, v in config.to_dict().items() if k not in _PER_TASK)


def _plan_digest(runs, sweep_plan):
    """sha256 of the plan: the runs (workdirs), their groups and the settings each trains with (a rate or epochs
    set from the task index names no workdir), in any order; data paths, devices and such may differ per task."""
    root = os.path.dirname(_tasks_dir(runs, make=False))  # workdirs below it: one plan however the path is spelt

    def below(workdir):
        return os.path.relpath(os.path.abspath(workdir), root)

    settings = sorted((below(workdir), _settings(config)) for config, workdir in runs)
    groups = sorted(sorted(map(below, workdirs)) for workdirs in _groups(runs, sweep_plan).values())
    return hashlib.sha256(json.dumps([groups, settings]).encode()).hexdigest()


def _tasks_dir(runs, make=True):
    """The runs' root's `.tasks/`, never inside a run (made unless `make` is False)."""
    root = os.path.commonpath([os.path.abspath(workdir) for _, workdir in runs])
    where = os.path.join(os.path.dirname(root) if len(runs) == 1 else root, ".tasks")
    if make:
        os.makedirs(where, exist_ok=True)
    return where


def _others(where, prefix):
    """{task text: record} of the records `where/<prefix><task>.json`, this task's own among them."""
    records = {}
    for path in sorted(glob.glob(os.path.join(where, f"{prefix}*.json"))):
        task = os.path.basename(path)[len(prefix):-len(".json")]
        if not task.isdigit():  # another task's record being written (a temporary name)
            continue
        try:
            records[task] = files.read_json(path, f"delete it, or the whole {where}, and run the task again")
        except FileNotFoundError:  # replaced by its writer between the listing and the read
            continue
    return records


# The environment variable a Kubernetes Indexed Job's pods name their Job by (docs/kubernetes-job.yaml sets it from
# the pod's label batch.kubernetes.io/controller-uid: a Job's name is reused by the next Job of that name, its uid not).
JOB_UID = "DROPZOO_JOB_UID"


def array_job(source, environ=None):
    """(scheduler, job id) of the array job whose index gave this task its share (`source`, from task_of), or None:
    Slurm's SLURM_ARRAY_JOB_ID, or a Kubernetes Indexed Job's uid in DROPZOO_JOB_UID (None where it is not set:
    see `kubernetes_unchecked`). A split typed with --task_index is the user's own, and nothing compares it."""
    environ = os.environ if environ is None else environ
    if from_slurm(source):
        return ("slurm", environ["SLURM_ARRAY_JOB_ID"]) if environ.get("SLURM_ARRAY_JOB_ID") else None
    if from_kubernetes(source) and environ.get(JOB_UID):
        return "k8s", environ[JOB_UID]
    return None


def kubernetes_unchecked(source, environ=None):
    """The warning for a Kubernetes pod whose Job's pods cannot compare plans (DROPZOO_JOB_UID unset), or None."""
    environ = os.environ if environ is None else environ
    if not from_kubernetes(source) or environ.get(JOB_UID):
        return None
    return (f"{JOB_UID} is not set, so this pod cannot check that the Job's other pods plan the same runs (a command "
            "that picks its runs by JOB_COMPLETION_INDEX would train a share of a share without a word); set it from "
            "the pod's label batch.kubernetes.io/controller-uid as docs/kubernetes-job.yaml does")


def check_array_plans(runs, sweep_plan, index, source, environ=None, record=True):
    """Records this array task's plan in the runs' root; ConfigError where another task's of the same job differs.

    `sweep_plan` is sweep.plan(runs), `source` task_of's. The tasks of one
    array job (a Slurm array, a Kubernetes Indexed Job: `array_job`) run the
    same commands, so their runs (workdirs), groups and settings are equal
    unless a command depends on the index: then each task would train one
    share of its own plan. A task's record lists its commands' plans in turn
    (a job script may run several sweeps into one study, seeds 0 then 1),
    and each is compared with the other tasks' plan of the same turn. The
    first task to reach a turn cannot see it; every later one refuses.
    Nothing outside an array job. `record` False (a dry run): compared only.
    """
    job = array_job(source, environ)
    if job is None or not runs:
        return
    scheduler, job_id = job
    digest, where = _plan_digest(runs, sweep_plan), _tasks_dir(runs, make=record)
    prefix = f"{scheduler}-{files.name_characters(job_id)}-task"
    others = _others(where, prefix)
    plans = _plans(others.get(str(index)))
    if digest not in [plan["plan_sha256"] for plan in plans]:  # a requeued task reruns a turn it recorded
        plans.append({"plan_sha256": digest, "first_run": runs[0][1]})
    turn = [plan["plan_sha256"] for plan in plans].index(digest)
    if record:  # then read again: of two tasks starting together, at least one sees the other (check_task_counts)
        files.write_json(os.path.join(where, f"{prefix}{index}.json"), {"plans": plans})
        others = _others(where, prefix)
    for task, other in others.items():
        theirs = _plans(other)
        if task != str(index) and turn < len(theirs) and theirs[turn]["plan_sha256"] != digest:
            what = f"Slurm array {job_id}" if scheduler == "slurm" else f"Kubernetes Job {job_id}"
            own = _OWN_INDEX if scheduler == "slurm" else _OWN_INDEX_K8S
            nth = {0: "first", 1: "second", 2: "third"}.get(turn, f"{turn + 1}th")
            raise ConfigError(f"task {task} of {what} plans other runs (from {theirs[turn]['first_run']}) than this "
                              f"task {index} (from {runs[0][1]}) in the job's {nth} train.py command, though its "
                              f"tasks run the same commands; {own}")


def _plans(record):
    """The plans a task's record lists in turn (older records: one plan of their own)."""
    if not record:
        return []
    return list(record.get("plans") or [{"plan_sha256": record["plan_sha256"], "first_run": record["first_run"]}])


def check_task_counts(runs, sweep_plan, index, count, source, record=True, overwrite=False):
    """Records this task's share of the plan in the runs' root; ConfigError where another task of the same
    plan split it into another count (but 1, the whole plan): shares of two splits leave runs to no task,
    without a word.

    The first task to start cannot see it; every later one refuses (its own earlier start's record too), and records
    nothing (a corrected rerun is not refused for it). A task reads again after writing, so of two starting together
    at least one refuses. With `record` False (a dry run) it only compares, and writes nothing.
    """
    if count == 1 or not runs:
        return
    digest = _plan_digest(runs, sweep_plan)[:16]
    prefix = f"split-{digest}-task"
    where = _tasks_dir(runs, make=record)
    check_other_settings(runs, where, digest)
    if not overwrite and all(os.path.isfile(os.path.join(w, "metrics.json")) for _, w in runs):
        return  # (every run finished, not trained again: no split leaves one to no task)
    own = os.path.join(where, f"{prefix}{index}.json")
    for written in (False, True) if record else (False,):
        for task, other in _others(where, prefix).items():
            if other["num_tasks"] != count:  # its own earlier start's too: index 0 of a new size re-split it
                if written:
                    os.remove(own)
                n, who = other["num_tasks"], ("an earlier start of this task split this plan" if task == str(index)
                                              else f"task {task} of this plan split it")
                fix = (f"submit the array as --array=0-{n - 1}" if from_slurm(source) else
                       f"give the Job {n} completions and --num_tasks={n}" if from_kubernetes(source) else
                       f"give every task --num_tasks={n}")
                raise ConfigError(
                    f"{who} into {n} shares, and this task {index} into {count} "
                    f"({source}): shares of two splits leave runs to no task; {fix}, or, to split the plan anew "
                    f"once every task of the other split has ended, delete {os.path.join(where, prefix)}*.json")
        if not written and record:
            files.write_json(own, {"num_tasks": count, "source": source})
    if not record:
        return
    # The whole plan, so that a comparison can name the runs no task has started (a task never run), and the
    # settings of each run, so that a task typed with other flags is refused (check_other_settings).
    planned = [os.path.relpath(os.path.abspath(workdir), os.path.dirname(where)) for _, workdir in runs]
    settings = [dict(_settings(config)) for config, _ in runs]
    files.write_json(os.path.join(where, f"plan-{digest}.json"), {"runs": planned, "settings": settings})


def check_other_settings(runs, where, digest):
    """ConfigError where another split plan in or near `where` (`_nearby_plans`) trains one of `runs` with other
    settings: hand-typed tasks given other flags (task 0 with --epochs=12, task 1 with --epochs=20) would train
    their shares into one study as other variants, each short of seeds. Plans of more or fewer seeds of the same
    settings (a study extended) share their common runs and pass; a setting an older plan lacks (a field added to
    the code since) counts as its default. --overwrite does not pass it: one task's --overwrite replaces its own
    share only, and the other plan's runs would stay beside them as another variant."""
    mine = {os.path.abspath(workdir): (dict(_settings(config)), workdir) for config, workdir in runs}
    conflicts = []  # (plan path, the first run's difference)
    for path in _nearby_plans(where):
        if path == os.path.abspath(os.path.join(where, f"plan-{digest}.json")):
            continue
        try:
            other = files.read_json(path, f"delete it, or the whole {os.path.dirname(path)}, and run the task again")
        except FileNotFoundError:
            continue
        except (files.ReadError, OSError):  # in this study's own .tasks/, said; elsewhere maybe another study's
            if os.path.dirname(path) == os.path.abspath(where):
                raise
            continue
        base = os.path.dirname(os.path.dirname(path))  # its runs' paths are below the directory of its .tasks/
        for run, settings in zip(other.get("runs", []), other.get("settings", [])):  # (older plans: no settings)
            here, workdir = mine.get(os.path.normpath(os.path.join(base, run)), (None, None))
            differ = _differences(settings, here) if here is not None else None
            if differ:
                conflicts.append((path, f"{workdir} trains with {differ}"))
                break
    if conflicts:
        path, differ = conflicts[0]
        raise ConfigError(f"another task split this study with other settings ({path}): {differ}, so the tasks' "
                          "shares would be other variants, each short of seeds; give every task the same flags, or, "
                          f"to train the study anew with these, delete {' and '.join(p for p, _ in conflicts)} (and "
                          "the runs only they planned) and run every task with them and --overwrite")


def _differences(planned, here):
    """"epochs: 1 there, 2 here; ..." where two runs' settings (dicts of `_settings`) differ, else "": a setting one
    lacks (a field added to the code since) counts as its default."""
    defaults = {name: repr(field.default) for name, field in config_lib.FIELDS.items() if name not in _PER_TASK}
    planned, here = {**defaults, **planned}, {**defaults, **here}
    return "; ".join(f"{k}: {planned.get(k, 'unset')} there, {here.get(k, 'unset')} here"
                     for k in sorted(here.keys() | planned.keys()) if here.get(k) != planned.get(k))


def _held_settings(run):
    """The `_settings` of the run (or collected records) in directory `run`, from its config.json; None without."""
    path = os.path.join(run, "config.json")
    if not os.path.isfile(path):
        return None
    saved = config_lib.with_defaults(files.read_json(path, "delete it and rerun that run's train.py command"))
    return dict(_settings(config_lib.TrainConfig(**{k: v for k, v in saved.items() if k in config_lib.FIELDS})))


def same_settings(run, other):
    """Whether the runs (or collected records) in directories `run` and `other` hold one config, by their
    config.json (where each found its data and what devices it had aside): the same run, trained again elsewhere."""
    try:
        mine = _held_settings(run)
    except files.ReadError:  # a corrupt config.json of `run`: not known to be `other` (whose own is read, and said)
        return False
    theirs = _held_settings(other)
    return mine is not None and theirs is not None and not _differences(mine, theirs)


def _nearby_plans(where, levels=4):
    """The plan-*.json files (absolute paths) in `where` (a .tasks/ directory), in every .tasks/ below its directory,
    and in the .tasks/ of the `levels` directories above it: a plan over part of a study (one placement, one model)
    lies deeper than one over all of it, and the two name the same runs."""
    root = os.path.dirname(os.path.abspath(where))
    found = set(plans(root))
    for _ in range(levels):
        root = os.path.dirname(root)
        found |= set(glob.glob(os.path.join(glob.escape(root), ".tasks", "plan-*.json")))
    return sorted(found)


def plans(runs_dir):
    """The array plans (`.tasks/plan-*.json`) below `runs_dir`."""
    return sorted(glob.glob(os.path.join(glob.escape(runs_dir), "**", ".tasks", "plan-*.json"), recursive=True))


def missing_note(runs_dirs, runs):
    """A note naming the runs an array's tasks planned below `runs_dirs` (their `.tasks/plan-*.json`) that left no
    record (`runs`: the run directories found, finished or not), or None: a task not run, or not finished.

    Runs are matched by their path below their runs directory, so a study whose tasks ran on several machines
    (--runs_dir=machine1/study,machine2/study) or was collected elsewhere matches its plan."""
    def below(path, directory):
        return os.path.relpath(os.path.abspath(path), os.path.abspath(directory))

    # {path below its runs directory: [the runs there, those below the plan's own runs directory first]}
    here = {}
    for d in runs_dirs:
        for run in runs:
            if not below(run, d).startswith(os.pardir):
                here.setdefault(below(run, d), []).append((d, run))
    planned, found, other = set(), [], {}  # other: {run: how its settings differ from its plan's}
    for runs_dir in runs_dirs:
        for path in plans(runs_dir):
            found.append(path)
            root = below(os.path.dirname(os.path.dirname(path)), runs_dir)
            plan = files.read_json(path, "delete it")
            for run, settings in itertools.zip_longest(plan["runs"], plan.get("settings", [])):  # (older: none)
                run = os.path.normpath(os.path.join(root, run))
                planned.add(run)
                # The run in the plan's own directory, else another machine's share of it (two studies of one
                # layout side by side each hold their own runs).
                held = sorted(here.get(run, []), key=lambda found_in: found_in[0] != runs_dir)
                differ = _differences(settings, _held_settings(held[0][1]) or settings) if held and settings else ""
                if differ:
                    other[run] = differ
    missing, given_up = sorted(planned - set(here)), f"{', '.join(found[:2])}{', ...' if len(found) > 2 else ''}"
    notes = []
    if missing:
        notes.append(f"{len(missing)} of the {len(planned)} runs an array job planned have no record here (a task not "
                     f"run or not finished, or a run that failed before its first checkpoint): "
                     f"{', '.join(missing[:10])}{f' and {len(missing) - 10} more' if len(missing) > 10 else ''} "
                     f"(below --runs_dir); run those tasks again, or, if that plan was given up, delete {given_up}")
    if other:  # tasks typed with other flags where they shared no .tasks/ (two machines): other variants, short
        first = min(other)
        notes.append(f"{len(other)} of the {len(planned)} runs an array job planned hold other settings than its plan "
                     f"gave them ({first}: {other[first].replace(' there', ' planned')}): tasks given other "
                     "flags, so each variant holds part of the plan's seeds; rerun those tasks with the plan's flags "
                     f"and --overwrite, or, if that plan was given up, delete {given_up}")
    return " ".join(notes) or None
