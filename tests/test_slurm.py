"""A sweep as a real Slurm array job: a one-node cluster on this machine, three tasks, each run trained once.

The cluster (munged, slurmctld, slurmd from Debian's packages, which
.ci/run installs) runs as root with its configuration, sockets, spool and
logs in a temporary directory, on free ports, so nothing of the machine's
own setup is touched. Where Slurm is not installed or this is not root, the
tests say so and skip.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from absl import flags
from conftest import ROOT

from dropzoo import collect
from dropzoo import compare
from dropzoo import files
from dropzoo import flags as flags_lib
from dropzoo import records
from dropzoo import shards
from dropzoo import sweep
from dropzoo.errors import ConfigError

DAEMONS = ("munged", "slurmctld", "slurmd")
SWEEP = ["--model=dense_mlp", "--dataset=mnist_sample", "--train_size=800", "--placement=canonical,none,before_dense",
         "--seeds=2", "--epochs=2", "--optimizer=adam", "--learning_rate=0.001", "--precision=float32",
         "--noserving_artifacts"]


def _missing():
    """Why a cluster cannot be started here ('' if it can)."""
    absent = [d for d in DAEMONS + ("sbatch", "squeue", "sinfo") if shutil.which(d) is None and not os.path.exists(
        f"/usr/sbin/{d}")]
    if absent:
        return (f"Slurm is not installed ({', '.join(absent)} missing): "
                "apt-get install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        return "starting slurmctld and slurmd as SlurmUser=root needs root"
    return ""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _daemon(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _missing()
    if why:
        pytest.skip(why)
    home = tmp_path_factory.mktemp("slurm")
    key, socket_path = home / "munge.key", home / "munge.socket"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    for name in ("state", "spool", "logs"):
        (home / name).mkdir()
    host = socket.gethostname()
    conf = home / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=dropzootest", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={socket_path}", "CredType=cred/munge",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={home / 'state'}", f"SlurmdSpoolDir={home / 'spool'}",
        f"SlurmctldPidFile={home / 'slurmctld.pid'}", f"SlurmdPidFile={home / 'slurmd.pid'}",
        f"SlurmctldLogFile={home / 'logs' / 'slurmctld.log'}", f"SlurmdLogFile={home / 'logs' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "ReturnToService=2", "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    env = dict(os.environ, SLURM_CONF=str(conf))
    started = [subprocess.Popen([_daemon("munged"), "--foreground", "--force", f"--key-file={key}",
                                 f"--socket={socket_path}", f"--pid-file={home / 'munged.pid'}",
                                 f"--log-file={home / 'logs' / 'munged.log'}", f"--seed-file={home / 'munge.seed'}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait(lambda: socket_path.exists(), 20, "munged's socket")
        for daemon in ("slurmctld", "slurmd"):
            started.append(subprocess.Popen([_daemon(daemon), "-D", "-f", str(conf)], env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                               text=True).stdout, 60, "the node to be idle")
        yield env, home
    finally:
        for process in reversed(started):
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait(ready, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def _run_array(env, logs_dir, tasks, command):
    """Submits `command` (argv, joined for the shell) as an array of `tasks`; (job id, each task's log) once done."""
    submitted = subprocess.run(["sbatch", "--parsable", f"--array=0-{tasks - 1}", "--cpus-per-task=1",
                                f"--output={logs_dir}/task_%a.log", "--open-mode=append", f"--chdir={ROOT}", "--wrap",
                                " ".join(command)],
                               env=env, capture_output=True, text=True, check=True)
    job = submitted.stdout.strip().split(";")[0]
    _wait(lambda: not subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True,
                                     text=True).stdout.strip(), 600, f"array job {job} to finish")
    return job, [(logs_dir / f"task_{i}.log").read_text() for i in range(tasks)]


def _plan(*args):
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", *args])
    return flags_lib.train_plan(fv)


def _table(result):
    return [{k: v for k, v in e.items() if k not in ("train_time_sec", "key")} for e in result["table"]]


@pytest.mark.slow
def test_a_sweep_as_a_slurm_array_trains_each_run_once_and_compares_as_one_process(cluster, tmp_path):
    env, home = cluster
    root = tmp_path / "array"
    _, logs = _run_array(env, tmp_path, 3, [sys.executable, "train.py", *SWEEP, f"--workdir={root}"])
    for i, log in enumerate(logs):
        assert f"task {i} of 3 (from SLURM_ARRAY_TASK_ID={i} of array 0-2 (SLURM_ARRAY_TASK_COUNT=3))" in log, log
    trained = [line.split()[0] for log in logs for line in log.splitlines() if line.endswith("(trained here)")]
    runs = records.find_runs([str(root)])
    assert len(runs) == 6 and sorted(trained) == sorted(runs)  # every run trained, once, by one task
    pids = {json.load(open(os.path.join(run, "metrics.json")))["trained_by"]["pid"] for run in runs}
    assert len(pids) == 3  # three tasks, three processes
    # The same sweep in one process, and the array's records alone, copied without SavedModels.
    one = tmp_path / "one"
    sweep.run_sweep(_plan(*SWEEP, f"--workdir={one}"), verbose=0, serving_artifacts=False)
    carried = tmp_path / "carried"
    collect.collect([str(root)], str(carried))
    assert not any(os.path.isdir(os.path.join(run, "saved_model")) for run in records.find_runs([str(carried)]))
    in_one = compare.compare_runs(str(one), output_dir=str(tmp_path / "c1"))
    from_records = compare.compare_runs(str(carried), output_dir=str(tmp_path / "c2"))
    assert _table(from_records) == _table(in_one)
    assert from_records["contrasts"] == in_one["contrasts"]


@pytest.mark.slow
def test_an_array_whose_command_uses_the_index_is_refused_not_half_trained(cluster, tmp_path):
    env, _ = cluster
    root = tmp_path / "per_seed"
    job, logs = _run_array(env, tmp_path, 2, [
        sys.executable, "train.py", "--model=dense_mlp", "--dataset=mnist_sample", "--train_steps=2",
        "--placement=canonical,none", "--seed=$SLURM_ARRAY_TASK_ID", "--noserving_artifacts", "--precision=float32",
        f"--workdir={root}"])
    refused = [log for log in logs if f"of Slurm array {job} plans other runs" in log]
    assert refused, logs  # the task that starts second sees the first one's plan (both may refuse)
    assert all("--task_index=0 --num_tasks=1" in log and "Traceback" not in log for log in refused)


# ------------------------------------------------------- the index mapping


def test_shares_deal_groups_of_identical_runs_round_robin_and_cover_the_plan():
    runs = _plan("--model=dense_mlp", "--placement=canonical,after_activation,before_activation,none", "--seeds=2")
    plan = sweep.plan(runs)
    shares = [shards.share(runs, plan, i, 3) for i in range(3)]
    assert sorted(w for share in shares for _, w in share) == sorted(w for _, w in runs)  # each run once
    assert len(set(plan)) < len(plan)  # after_activation and before_activation: one group per seed
    for share in shares:  # a group (trained once, recorded for the rest) never splits
        mine = {w for _, w in share}
        leaders = {plan[i] for i, (_, w) in enumerate(runs) if w in mine}
        assert mine == {w for i, (_, w) in enumerate(runs) if plan[i] in leaders}
    assert shards.share(runs, plan, 0, 1) == runs
    # Tasks typed by hand with the values in another order: the same shares (they overlapped, and left runs out).
    other = _plan("--model=dense_mlp", "--placement=none,before_activation,after_activation,canonical", "--seeds=2")
    assert [sorted(w for _, w in shards.share(other, sweep.plan(other), i, 3)) for i in range(3)] == [
        sorted(w for _, w in share) for share in shares]
    assert shards._plan_digest(other, sweep.plan(other)) == shards._plan_digest(runs, plan)
    # A setting taken from the task index names no workdir (--learning_rate=0.$((SLURM_ARRAY_TASK_ID+1))): each
    # task trained its share of its own plan, and every run once at one rate, without a word.
    rated = _plan("--model=dense_mlp", "--placement=canonical,after_activation,before_activation,none", "--seeds=2",
                  "--learning_rate=0.2")
    assert [w for _, w in rated] == [w for _, w in runs]
    assert shards._plan_digest(rated, sweep.plan(rated)) != shards._plan_digest(runs, plan)
    moved = _plan("--model=dense_mlp", "--placement=canonical,after_activation,before_activation,none", "--seeds=2",
                  "--idx_dir=/elsewhere")  # a task's own copy of the data: the same plan
    assert shards._plan_digest(moved, sweep.plan(moved)) == shards._plan_digest(runs, plan)


@pytest.mark.parametrize("environ,flags_given,expected", [
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_MAX": "9",
      "SLURM_ARRAY_TASK_COUNT": "5"}, (None, None), (2, 5)),
    ({"JOB_COMPLETION_INDEX": "3"}, (None, 4), (3, 4)),
    ({}, (1, 2), (1, 2)),
    ({}, (None, None), None),
    ({"SLURM_ARRAY_TASK_ID": "1"}, (0, 1), (0, 1)),  # flags win inside an array (said: below)
])
def test_the_task_comes_from_flags_slurm_or_kubernetes(environ, flags_given, expected):
    task = shards.task_of(*flags_given, environ=environ)
    assert (task[:2] if task else None) == expected


@pytest.mark.parametrize("environ,flags_given,message", [
    ({}, (3, 3), r"the task index 3 is not in 0..2"),
    ({}, (0, 0), "--num_tasks must be a positive integer, got 0"),
    ({}, (1, None), "give --task_index and --num_tasks together"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, (None, 2), "together .*; inside a Slurm array give neither, and the array's index"),
    ({}, (None, 0), "--num_tasks must be a positive integer, got 0"),
    ({"JOB_COMPLETION_INDEX": "0"}, (None, None), "but --num_tasks is not; pass --num_tasks=N"),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "8",
      "SLURM_ARRAY_TASK_COUNT": "5"}, (None, None), "the Slurm array spans 0-8 but has 5 tasks: a step or a list"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "5",  # --array=1,3,5
      "SLURM_ARRAY_TASK_COUNT": "3"}, (None, None), r"list of indices \(e.g. --array=1,3,5\)"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "1",
      "SLURM_ARRAY_TASK_COUNT": "2"}, (None, None), "SLURM_ARRAY_TASK_ID must be an integer"),
])
def test_bad_task_values_are_one_line(environ, flags_given, message):
    with pytest.raises(ConfigError, match=message) as info:
        shards.task_of(*flags_given, environ=environ)
    assert "\n" not in str(info.value)


def test_flags_inside_a_slurm_array_say_the_array_index_is_not_used():
    _, _, source = shards.task_of(0, 1, environ={"SLURM_ARRAY_TASK_ID": "3"})
    assert source == "--task_index and --num_tasks; the Slurm array's SLURM_ARRAY_TASK_ID=3 is not used"
    _, _, source = shards.task_of(0, 2, environ={"JOB_COMPLETION_INDEX": "1"})
    assert source == "--task_index and --num_tasks; JOB_COMPLETION_INDEX=1 is not used"
    with pytest.raises(ConfigError, match=r"^JOB_COMPLETION_INDEX must be an integer, got 'abc'; a Kubernetes "
                                          r"Indexed Job sets it to the pod's index$"):
        shards.task_of(None, 2, environ={"JOB_COMPLETION_INDEX": "abc"})


def test_a_slurm_task_that_may_be_a_share_of_a_share_is_refused(tmp_path):
    # `--seed=$SLURM_ARRAY_TASK_ID`: each task's plan is its own, and train.py splits it by the array too.
    array = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2",
             "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_JOB_ID": "41"}
    one_run = _plan("--model=dense_mlp", f"--workdir={tmp_path}/alone")
    index, count, source = shards.task_of(environ=array)
    plan = sweep.plan(one_run)
    with pytest.raises(ConfigError, match=r"^task 1 of 3 \(SLURM_ARRAY_TASK_ID=1 .*\) has no runs to train: the plan "
                                          r"has 1 group\(s\) of runs, fewer than the array's 3 tasks; if the command "
                                          r"picks its runs by the array index itself .* pass --task_index=0 "
                                          r"--num_tasks=1 .*, or else submit --array=0-0 \(its other tasks dealt every "
                                          r"run; to rerun it at that size, first delete the split-\*-task\*.json"):
        shards.check_slurm_share(shards.share(one_run, plan, index, count), plan, index, count, source)
    shards.check_slurm_share([], plan, 1, 3, "--task_index and --num_tasks")  # flags: the user's own split
    # A Kubernetes Indexed Job's pod alike: it exited 0 having trained nothing, and the Job "succeeded".
    index, count, source = shards.task_of(None, 3, environ={"JOB_COMPLETION_INDEX": "1"})
    with pytest.raises(ConfigError, match=r"^task 1 of 3 \(JOB_COMPLETION_INDEX .*\) has no runs to train: the plan "
                                          r"has 1 group\(s\) of runs, fewer than the Job's 3 completions; .*"
                                          r"--seed=\$\(JOB_COMPLETION_INDEX\).*give the Job 1 completions and "
                                          r"--num_tasks=1 \(to rerun it at that size, first delete the "
                                          r"split-\*-task\*\.json files its pods wrote beside the runs\)$"):
        shards.check_slurm_share(shards.share(one_run, plan, index, count), plan, index, count, source)
    root = tmp_path / "study"

    def plan_of(seed, *more):
        runs = _plan("--model=dense_mlp", "--placement=canonical,none", f"--seed={seed}", f"--workdir={root}", *more)
        return runs, sweep.plan(runs)

    slurm = "SLURM_ARRAY_TASK_ID=... of array 0-3"  # task_of's source inside a Slurm array

    def check(runs_and_plan, index, environ, source=slurm):
        shards.check_array_plans(*runs_and_plan, index, source, environ=environ)

    check(plan_of(0), 0, {**array, "SLURM_ARRAY_TASK_ID": "0"})
    check(plan_of(0), 2, {**array, "SLURM_ARRAY_TASK_ID": "2"})  # the same command
    # Data staged per task (--idx_dir=$SLURM_TMPDIR/...): the same runs, so the same plan.
    check(plan_of(0, "--idx_dir=/scratch/41.3"), 3, {**array, "SLURM_ARRAY_TASK_ID": "3"})
    check(plan_of(0), 0, {**array, "SLURM_ARRAY_TASK_ID": "0"})  # requeued
    for record in (False, True):  # a dry run (record=False) says the same, and writes nothing
        with pytest.raises(ConfigError, match=r"^task 0 of Slurm array 41 plans other runs \(from .*seed0\) than "
                                              r"this task 1 \(from .*seed1\) in the job's first train.py command, "
                                              r"though its tasks run the same commands"):
            shards.check_array_plans(*plan_of(1), 1, slurm, environ=array, record=record)
        assert ("slurm-41-task1.json" in os.listdir(root / "dense_mlp" / ".tasks")) == record
    check(plan_of(1), 1, {**array, "SLURM_ARRAY_JOB_ID": "42"})  # another array
    check(plan_of(1), 1, {})  # not in an array: nothing written
    check(plan_of(1), 1, array, source="--task_index and --num_tasks")  # the user's own split: nothing compared
    assert sorted(os.listdir(root / "dense_mlp" / ".tasks")) == [
        "slurm-41-task0.json", "slurm-41-task1.json", "slurm-41-task2.json", "slurm-41-task3.json",
        "slurm-42-task1.json"]
    # A job script running two sweeps into one study in turn (seeds 0, then 1): a task reaching the second command
    # before a sibling finished its first was refused against the sibling's first plan, at random.
    job = {**array, "SLURM_ARRAY_JOB_ID": "43"}
    check(plan_of(0), 0, job)
    check(plan_of(0), 1, job)
    check(plan_of(1), 1, job)  # task 1's second command; task 0 is still at its first
    check(plan_of(1), 0, job)
    check(plan_of(0), 1, job)  # requeued: its first command again
    with pytest.raises(ConfigError, match=r"^task 0 of Slurm array 43 plans other runs \(from .*seed1\) than this "
                                          r"task 2 \(from .*seed2\) in the job's second train.py command"):
        for seed in (0, 2):  # task 2's second command depends on its index
            check(plan_of(seed), 2, job)
    with open(root / "dense_mlp" / ".tasks" / "slurm-43-task1.json") as f:
        assert [plan["first_run"].split(os.sep)[-1] for plan in json.load(f)["plans"]] == ["seed0", "seed1"]


def test_two_array_tasks_of_other_plans_starting_together_do_not_both_pass(tmp_path, monkeypatch):
    # Task 1 listed .tasks/ before task 0's record was there (two starts at once; NFS listings lag): both passed and
    # trained a share of their own plans, and seed 1's runs were trained by no task, exit 0. It reads again.
    root = tmp_path / "study"
    environ = {"SLURM_ARRAY_JOB_ID": "51"}
    slurm = "SLURM_ARRAY_TASK_ID=... of array 0-1"

    def check(seed, index):
        runs = _plan("--model=dense_mlp", "--placement=canonical,none", f"--seed={seed}", f"--workdir={root}")
        shards.check_array_plans(runs, sweep.plan(runs), index, slurm, environ=environ)

    check(0, 0)
    listings, real = [], shards._others

    def stale_first(where, prefix):  # the first listing misses task 0's record; every later one is real
        listings.append(where)
        return {} if len(listings) == 1 else real(where, prefix)

    monkeypatch.setattr(shards, "_others", stale_first)
    with pytest.raises(ConfigError, match=r"^task 0 of Slurm array 51 plans other runs \(from .*seed0\) than this "
                                          r"task 1 \(from .*seed1\)"):
        check(1, 1)


def test_a_kubernetes_pod_whose_plan_differs_from_its_jobs_other_pods_is_refused(tmp_path):
    # `--seed=$(JOB_COMPLETION_INDEX)` in a Job's command: each pod plans its own seed and takes a share of it.
    root = tmp_path / "study"
    source = "JOB_COMPLETION_INDEX (Kubernetes Indexed Job) and --num_tasks"
    job = {shards.JOB_UID: "3f2a-77"}

    def check(seed, index, environ):
        runs = _plan("--model=dense_mlp", "--placement=canonical,none", f"--seed={seed}", f"--workdir={root}")
        shards.check_array_plans(runs, sweep.plan(runs), index, source,
                                 environ={**environ, "JOB_COMPLETION_INDEX": str(index)})

    check(0, 0, job)
    check(0, 1, job)  # the same command
    with pytest.raises(ConfigError, match=r"^task 0 of Kubernetes Job 3f2a-77 plans other runs \(from .*seed0\) than "
                                          r"this task 2 \(from .*seed2\) in the job's first train.py command, "
                                          r"though its tasks run the same commands; if "
                                          r"the command picks its runs by the index itself \(e.g. "
                                          r"--seed=\$\(JOB_COMPLETION_INDEX\)\), pass --task_index=0 --num_tasks=1"):
        check(2, 2, job)
    check(2, 2, {shards.JOB_UID: "9c1d-01"})  # a later Job, though it may bear the same name
    check(5, 3, {})  # no uid: nothing can be compared, and the pod is told
    assert shards.kubernetes_unchecked(source, environ={}).startswith(
        "DROPZOO_JOB_UID is not set, so this pod cannot check that the Job's other pods plan the same runs")
    assert shards.kubernetes_unchecked(source, environ=job) is None
    assert shards.kubernetes_unchecked("--task_index and --num_tasks", environ={}) is None
    assert sorted(os.listdir(root / "dense_mlp" / ".tasks")) == [
        "k8s-3f2a-77-task0.json", "k8s-3f2a-77-task1.json", "k8s-3f2a-77-task2.json", "k8s-9c1d-01-task2.json"]


def test_tasks_of_one_plan_split_into_other_counts_are_refused(tmp_path, monkeypatch):
    # Task 0 of 3 and task 1 of 2 would each train a share of another split: some runs trained by no task.
    runs = _plan("--model=dense_mlp", "--placement=canonical,none,before_dense", "--seeds=2",
                 f"--workdir={tmp_path}/study")
    plan = sweep.plan(runs)
    shards.check_task_counts(runs, plan, 0, 3, "--task_index and --num_tasks")
    shards.check_task_counts(runs, plan, 2, 3, "--task_index and --num_tasks")
    shards.check_task_counts(runs, plan, 0, 3, "--task_index and --num_tasks")  # run again
    shards.check_task_counts(runs, plan, 1, 1, "--task_index and --num_tasks")  # the whole plan: never a gap
    tasks = tmp_path / "study" / "dense_mlp" / ".tasks"
    before = sorted(os.listdir(tasks))
    with pytest.raises(ConfigError, match=r"^task 0 of this plan split it into 3 shares, and this task 1 into 2 "
                                          r"\(--task_index and --num_tasks\): shares of two splits leave runs to no "
                                          r"task; give every task --num_tasks=3, or, to split the plan anew once "
                                          r"every task of the other split has ended, delete .*\.tasks/split-"):
        shards.check_task_counts(runs, plan, 1, 2, "--task_index and --num_tasks")
    assert sorted(os.listdir(tasks)) == before  # the refused task left no record to refuse a corrected one
    # Its own earlier start of another count too: task 0 of an array resubmitted at another size re-split the plan
    # without a word, and its siblings were refused naming the old size, then (resubmitted so) the new one.
    with pytest.raises(ConfigError, match=r"^an earlier start of this task split this plan into 3 shares, and "
                                          r"this task 0 into 2 "):
        shards.check_task_counts(runs, plan, 0, 2, "--task_index and --num_tasks")
    assert sorted(os.listdir(tasks)) == before
    # The study's directory spelt another way (relative here, absolute there; one disk mounted at other paths):
    # one plan, refused alike (it was another plan, and the two splits left a run to no task without a word).
    monkeypatch.chdir(tmp_path)
    spelt = _plan("--model=dense_mlp", "--placement=canonical,none,before_dense", "--seeds=2", "--workdir=study")
    assert shards._plan_digest(spelt, sweep.plan(spelt)) == shards._plan_digest(runs, plan)
    with pytest.raises(ConfigError, match=r"^task 0 of this plan split it into 3 shares, and this task 1 into 2 "):
        shards.check_task_counts(spelt, sweep.plan(spelt), 1, 2, "--task_index and --num_tasks")
    # A dry run (record=False) says the same, and writes nothing either way.
    with pytest.raises(ConfigError, match=r"^task 0 of this plan split it into 3 shares, and this task 1 into 2 "):
        shards.check_task_counts(runs, plan, 1, 2, "--task_index and --num_tasks", record=False)
    shards.check_task_counts(runs, plan, 1, 3, "--task_index and --num_tasks", record=False)
    assert sorted(os.listdir(tasks)) == before
    shards.check_task_counts(runs, plan, 1, 3, "--task_index and --num_tasks")
    # Every run finished: a resubmission at another size only reports them (it was refused), unless it trains
    # them again (--overwrite).
    recorded = sorted(os.listdir(tasks))
    for _, workdir in runs:
        os.makedirs(workdir)
        files.write_json(os.path.join(workdir, "metrics.json"), {"test_accuracy": 0.9})
    shards.check_task_counts(runs, plan, 1, 2, "--task_index and --num_tasks")
    assert sorted(os.listdir(tasks)) == recorded  # recorded nothing: the old split's tasks are not refused for it
    other = _plan("--model=dense_mlp", "--placement=canonical,none,before_dense", "--seeds=2", "--epochs=7",
                  f"--workdir={tmp_path}/study")  # still one line for a task typed with other flags
    with pytest.raises(ConfigError, match=r"^another task split this study with other settings"):
        shards.check_task_counts(other, sweep.plan(other), 1, 2, "--task_index and --num_tasks")
    with pytest.raises(ConfigError, match=r"^task 0 of this plan split it into 3 shares, and this task 1 into 2 "):
        shards.check_task_counts(runs, plan, 1, 2, "--task_index and --num_tasks", overwrite=True)
    os.remove(os.path.join(runs[0][1], "metrics.json"))  # one left: refused as before
    with pytest.raises(ConfigError, match=r"^task 0 of this plan split it into 3 shares, and this task 1 into 2 "):
        shards.check_task_counts(runs, plan, 1, 2, "--task_index and --num_tasks")
    # Another plan (more seeds) is split anew; a run's own directory never holds the records.
    more = _plan("--model=dense_mlp", "--placement=canonical,none,before_dense", "--seeds=3",
                 f"--workdir={tmp_path}/study")
    shards.check_task_counts(more, sweep.plan(more), 1, 2, "JOB_COMPLETION_INDEX (Kubernetes Indexed Job)")
    assert len(os.listdir(tasks)) == len(before) + 3  # task 1's split; the other plan's split and plan
    one = _plan("--model=dense_mlp", f"--workdir={tmp_path}/alone")
    shards.check_task_counts(one, sweep.plan(one), 0, 2, "--task_index and --num_tasks")
    assert one[0][1] == f"{tmp_path}/alone" and not (tmp_path / "alone").exists()  # beside the run, not in it
    assert len(os.listdir(tmp_path / ".tasks")) == 2  # its split and its plan


def test_a_comparison_names_the_runs_no_task_of_the_array_started(tmp_path):
    """Task 2 of 3 never ran: the comparison ran on the runs present, and nothing said the plan had more."""
    runs = _plan("--model=dense_mlp", "--placement=canonical,none", "--seeds=3", f"--workdir={tmp_path}/study")
    plan = sweep.plan(runs)
    for index in (0, 1):
        shards.check_task_counts(runs, plan, index, 3, "--task_index and --num_tasks")
    done = [workdir for index in (0, 1) for _, workdir in shards.share(runs, plan, index, 3)]
    left = sorted({w for _, w in runs} - set(done))
    note = shards.missing_note([str(tmp_path / "study")], done)
    assert note.startswith(f"{len(left)} of the 6 runs an array job planned have no record here (a task not run")
    assert all(os.path.relpath(workdir, tmp_path / "study") in note for workdir in left)  # each one (first 3 were)
    assert f"; run those tasks again, or, if that plan was given up, delete {tmp_path}/study/dense_mlp/.tasks/plan-" \
        in note
    assert shards.missing_note([str(tmp_path / "study")], [w for _, w in runs]) is None
    # The tasks on two machines, each with its share and the plan: compared together, nothing is missing.
    machines = []
    for index in (0, 1):
        machine = tmp_path / f"m{index}"
        shutil.copytree(tmp_path / "study", machine / "study")
        machines.append(str(machine / "study"))
    own = [w.replace(str(tmp_path / "study"), machines[index]) for index in (0, 1)
           for _, w in shards.share(runs, plan, index, 3)]
    assert shards.missing_note(machines, own).startswith(f"{len(left)} of the 6 runs")  # task 2 still missing
    assert shards.missing_note(machines, own + [w.replace(str(tmp_path / "study"), machines[0]) for w in left]) is None
    # Collected elsewhere, the plan comes along: the copies still say what was never trained.
    for workdir in done:
        os.makedirs(workdir)
        for name in ("config.json", "metrics.json"):
            with open(os.path.join(workdir, name), "w") as f:
                json.dump({"resolved": {}, "config": {"seed": 0}, "weights_sha256": workdir}, f)
    collect.collect([str(tmp_path / "study")], str(tmp_path / "collected"))
    found = records.find_runs([str(tmp_path / "collected")])
    assert len(found) == len(done) and shards.missing_note([str(tmp_path / "collected")], found).startswith(
        f"{len(left)} of the 6 runs an array job planned have no record here")


def test_a_comparison_names_runs_that_hold_other_settings_than_their_plan(tmp_path):
    """Task 0 typed with --epochs=1 on one machine, task 1 with --epochs=2 on another (no .tasks/ shared, so nothing
    refused either): collected, the study compared as complete, each variant split in two short of seeds."""
    plans = {epochs: _plan("--model=dense_mlp", "--placement=canonical,none", "--seeds=2", f"--epochs={epochs}",
                           f"--workdir={tmp_path}/m{epochs}/study") for epochs in (1, 2)}
    trained = []
    for index, epochs in enumerate(plans):
        runs = plans[epochs]
        shards.check_task_counts(runs, sweep.plan(runs), index, 2, "--task_index and --num_tasks")
        for config, workdir in shards.share(runs, sweep.plan(runs), index, 2):
            os.makedirs(workdir)
            with open(os.path.join(workdir, "config.json"), "w") as f:
                json.dump({**config.to_dict(), "resolved": {}}, f)
            trained.append(workdir)
    machines = [str(tmp_path / "m1" / "study"), str(tmp_path / "m2" / "study")]
    note = shards.missing_note(machines, trained)
    assert note.startswith("4 of the 4 runs an array job planned hold other settings than its plan gave them (")
    assert ": epochs: 2 planned, 1 here)" in note or ": epochs: 1 planned, 2 here)" in note
    assert "tasks given other flags, so each variant holds part of the plan's seeds; rerun those tasks with the " \
        "plan's flags and --overwrite" in note
    # One machine's own share against its own plan: nothing to say.
    assert shards.missing_note([machines[0]], [w for w in trained if w.startswith(machines[0])]).startswith(
        "2 of the 4 runs an array job planned have no record here")
    # Two complete studies of one layout side by side (--epochs=1 and --epochs=2), each with its own plan: each
    # plan is held to its own runs (it was held to the other study's, and advised --overwrite).
    for epochs in plans:
        runs = plans[epochs]
        for index in (0, 1):
            shards.check_task_counts(runs, sweep.plan(runs), index, 2, "--task_index and --num_tasks")
            for config, workdir in shards.share(runs, sweep.plan(runs), index, 2):
                os.makedirs(workdir, exist_ok=True)
                with open(os.path.join(workdir, "config.json"), "w") as f:
                    json.dump({**config.to_dict(), "resolved": {}}, f)
    assert shards.missing_note(machines, [w for runs in plans.values() for _, w in runs]) is None


def test_the_kubernetes_recipe_parses_and_maps_its_indices():
    """docs/kubernetes-job.yaml: an Indexed Job whose pods each train their share of the study."""
    import yaml

    with open(os.path.join(ROOT, "docs", "kubernetes-job.yaml")) as f:
        job = yaml.safe_load(f)
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    args = container["command"] + container.get("args", [])
    num_tasks = next(int(a.split("=", 1)[1]) for a in args if a.startswith("--num_tasks="))
    assert num_tasks == spec["completions"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never" and spec["backoffLimitPerIndex"] >= 1
    # Each pod names its Job by the Job's uid, from the label Kubernetes puts on the Job's pods.
    env = {e["name"]: e for e in container["env"]}
    assert env[shards.JOB_UID]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/controller-uid']")
    for index in range(num_tasks):  # what each pod computes from JOB_COMPLETION_INDEX
        environ = {"JOB_COMPLETION_INDEX": str(index), shards.JOB_UID: "3f2a-77"}
        index_, count, source = shards.task_of(None, num_tasks, environ=environ)
        assert (index_, count) == (index, num_tasks)
        assert shards.array_job(source, environ) == ("k8s", "3f2a-77")


def test_a_task_typed_with_other_flags_than_its_siblings_is_refused(tmp_path):
    # Task 0 of 2 at 12 epochs and task 1 of 2 at 20 name the same workdirs: each would train its share as
    # another variant (the comparison splits them by epochs), each half the seeds, without a word.
    study = f"--workdir={tmp_path}/study"
    runs = _plan("--model=dense_mlp", "--placement=canonical,none", "--seeds=2", "--epochs=12", study)
    shards.check_task_counts(runs, sweep.plan(runs), 0, 2, "--task_index and --num_tasks")
    other = _plan("--model=dense_mlp", "--placement=canonical,none", "--seeds=2", "--epochs=20", study)
    for record in (False, True):  # a dry run says so too
        with pytest.raises(ConfigError, match=(
                r"^another task split this study with other settings \(.*\.tasks/plan-[0-9a-f]+\.json\): "
                r".*/study/dense_mlp/canonical/seed0 trains with epochs: 12 there, 20 here, so the tasks' shares "
                r"would be other variants, each short of seeds; give every task the same flags, or, to train the "
                r"study anew with these, delete .*plan-[0-9a-f]+\.json \(and the runs only they planned\) and run "
                r"every task with them and --overwrite$")):
            shards.check_task_counts(other, sweep.plan(other), 1, 2, "--task_index and --num_tasks", record=record)
    tasks = tmp_path / "study" / "dense_mlp" / ".tasks"
    assert len(list(tasks.glob("split-*"))) == 1  # the refused task recorded nothing
    # A plan written before a setting existed: the setting counts as its default.
    [plan] = tasks.glob("plan-*.json")
    older = json.loads(plan.read_text())
    for settings in older["settings"]:
        del settings["jit_compile"]
    plan.write_text(json.dumps(older))
    shards.check_task_counts(runs, sweep.plan(runs), 1, 2, "--task_index and --num_tasks")
    # The same settings over more seeds (a study extended) share their common runs, and pass; so does a task
    # that finds its data at another path.
    more = _plan("--model=dense_mlp", "--placement=canonical,none", "--seeds=3", "--epochs=12", study)
    shards.check_task_counts(more, sweep.plan(more), 1, 2, "--task_index and --num_tasks")
    elsewhere = _plan("--model=dense_mlp", "--placement=canonical,none", "--seeds=2", "--epochs=12",
                      f"--idx_dir={tmp_path}/copy", study)
    shards.check_task_counts(elsewhere, sweep.plan(elsewhere), 1, 2, "--task_index and --num_tasks")
    # The study trained anew with the new settings: the old plan deleted, as the message says (one task's
    # --overwrite replaces its own share only, so it does not pass the check by itself).
    for path in tasks.glob("plan-*.json"):  # the plans the message names (this one, and the 3-seed one)
        path.unlink()
    for index in (0, 1):
        shards.check_task_counts(other, sweep.plan(other), index, 2, "--task_index and --num_tasks")
    # A plan over part of the study (one placement) keeps its .tasks/ deeper, and one over more of it higher: each
    # still sees the other's settings (an extension at --epochs=20 trained its new seeds into canonical/ unchecked).
    part = _plan("--model=dense_mlp", "--placement=canonical", "--seeds=4", "--epochs=12", study)
    with pytest.raises(ConfigError, match=r"^another task split this study with other settings \(.*/study/dense_mlp/"
                                          r"\.tasks/plan-.* with epochs: 20 there, 12 here"):
        shards.check_task_counts(part, sweep.plan(part), 1, 2, "--task_index and --num_tasks")
    # An unreadable plan of the .tasks/ above (another study's, maybe) is not this study's to refuse for.
    (tmp_path / ".tasks").mkdir()
    (tmp_path / ".tasks" / "plan-0000.json").write_text('{"runs": [')
    fresh = _plan("--model=dense_mlp", "--placement=canonical", "--seeds=2", f"--workdir={tmp_path}/fresh")
    shards.check_task_counts(fresh, sweep.plan(fresh), 1, 2, "--task_index and --num_tasks")
    deeper = tmp_path / "deeper"
    part = _plan("--model=dense_mlp", "--placement=canonical", "--seeds=2", "--epochs=12", f"--workdir={deeper}")
    shards.check_task_counts(part, sweep.plan(part), 0, 2, "--task_index and --num_tasks")
    assert (deeper / "dense_mlp" / "canonical" / ".tasks").is_dir()
    whole = _plan("--model=dense_mlp", "--placement=canonical,none", "--seeds=2", "--epochs=20", f"--workdir={deeper}")
    with pytest.raises(ConfigError, match=r"^another task split this study with other settings \(.*/deeper/dense_mlp/"
                                          r"canonical/\.tasks/plan-.* with epochs: 12 there, 20 here"):
        shards.check_task_counts(whole, sweep.plan(whole), 1, 2, "--task_index and --num_tasks")
