"""Whether the runs a comparison pools trained, and were tested, on the data their configs name, in one content.

`check(run_dirs)` refuses, in one line, runs that would be compared as data they never saw: a sweep over
the data (--dataset=a,b, --color_mode=grayscale,rgb) that once trained every run on its first run's data;
the embedded MNIST sample standing in for unreachable MNIST in such a sweep; and runs of one data whose
content changed between them (a folder edited between the runs of a sweep, one path holding other files on
two machines), by the digests each run recorded. `check_each_run_once(rows)` and `check_one_test_data(groups)`
refuse a run counted twice, and a variant whose runs were scored on different test data.
"""
import json
import os

from dropzoo import files
from dropzoo import records
from dropzoo import sources
from dropzoo import sweep
from dropzoo import workdir as workdirs
from dropzoo.errors import ConfigError


def _check_one_content(runs, own_test):
    """ConfigError where runs of one data (the same origin) trained, or (`own_test`: each scored on its own test
    data) were tested, on other contents of it: a folder changed between the runs of a sweep, or one path holds
    other files on two machines. Their scores would be pooled and paired by seed as one data's."""
    for field, what in (("train_sha256", "trained"), ("test_sha256", "tested") if own_test else (None, None)):
        groups = {}  # by where the data was read (absolute), and by the data flags as typed (what pools variants)
        for run, metrics in runs:
            data = metrics["data"]
            if field and data.get(field):
                where = workdirs.test_origin(metrics) if field == "test_sha256" else data["origin"]
                # At one --train_size, the examples it kept are what a run trained on too.
                size = metrics["config"].get("train_size") if field == "train_sha256" else None
                keys = [("read", where, size)]
                # (A run of a caller's Source, through the API, is its data: its config's defaults name none.)
                if sources.origin_mismatch(metrics["config"], data["origin"], data.get("fallback_reason", "")) is None:
                    keys.append(("typed", sources.config_arguments(metrics["config"]), size))
                subset = data.get("train_subset_sha256") if field == "train_sha256" else None
                content = records.trained_content(data[field], subset)
                for key in keys:
                    groups.setdefault(json.dumps(key, sort_keys=True), {}).setdefault(content, []).append(run)
        for versions in groups.values():
            if len(versions) > 1:
                held = "; ".join(f"{content}: {len(held)} run(s), e.g. {held[0]}"
                                 for content, held in sorted(versions.items()))
                raise ConfigError(f"the runs {what} on {len(versions)} different contents of one data ({held}): it "
                                  "changed between them, or differs where they ran (another machine's copy at that "
                                  "path, the embedded sample standing in for MNIST), so their scores cannot be "
                                  "pooled or paired; train the runs of the other contents again (--overwrite), or "
                                  "compare each apart")


def check(run_dirs, own_test=True):
    """ConfigError where the runs vary in their data (--dataset=a,b, --color_mode=grayscale,rgb) and a run
    trained on other data than its config names: such a sweep once trained every run on its first run's data,
    and its variants would be compared as other data without a word. (A run trained on a caller's source,
    through the API, records that source; nothing varies then.)"""
    runs = [(run, files.read_json(os.path.join(run, "metrics.json"), records.FIX, records.METRICS_FIELDS))
            for run in run_dirs]
    _check_one_content(runs, own_test)
    varying = set(sweep.varying_fields([metrics["config"] for _, metrics in runs])) & set(sources.ARGUMENTS)
    if not varying:
        return
    for run, metrics in runs:
        data = metrics["data"]
        # Where the sweep is over --dataset, the sample standing in for unreachable MNIST is not its variant's data.
        fallback = "" if "dataset" in varying else data.get("fallback_reason")
        mismatch = sources.origin_mismatch(metrics["config"], data["origin"], fallback)
        if mismatch and data.get("fallback_reason"):
            raise ConfigError(f"{run} trained on other data than its config names ({mismatch}: the network was "
                              "unreachable, and the embedded sample stood in), so its variant would be compared "
                              "as data it never saw; train it again where the data can be loaded (--idx_dir, "
                              "--tfds_data_dir) with --overwrite, or leave it out of --runs_dir")
        if mismatch:
            raise ConfigError(f"{run} trained on other data than its config names ({mismatch}): a sweep over "
                              f"--{', --'.join(sorted(varying))} once trained every run on its first run's data, and "
                              "a run given source= from Python keeps its config's data at the defaults; train it "
                              "again (its train.py command with --overwrite), compare it with runs of its own data "
                              "(source= for data of your own), or leave it out of --runs_dir")


def check_each_run_once(rows):
    """ConfigError (one line) if two runs are one variant and seed: the same run counted twice.

    A collected copy of a sweep beside the sweep itself (--runs_dir=sweep,copy)
    would otherwise double every seed and narrow every interval.
    """
    seen = {}
    for r in rows:
        other = seen.setdefault((r["key"], r["seed"]), r)
        if other["run"] == r["run"]:
            continue
        both = f"{other['run']} and {r['run']} are the same variant ({r['variant']}) and seed ({r['seed']})"
        if other.get("weights_sha256") == r.get("weights_sha256"):
            raise ConfigError(f"{both}: one run counted twice (a collected copy beside its original, the same "
                              "command run again into another directory, or array jobs split two ways on two "
                              "machines: each trains the same weights); give each run's directory to --runs_dir "
                              "once, or collect the directories into one first (eval.py --runs_dir=A --collect=ALL, "
                              "then --runs_dir=B --collect=ALL: the same run collected again is refreshed) and "
                              "compare --runs_dir=ALL")
        raise ConfigError(f"{both}, trained apart (other weights: two machines?); a comparison pairs runs by "
                          "seed and takes each seed once: compare each directory alone, or retrain one of them "
                          "with other seeds (--seed=N --seeds=K)")


def check_one_test_data(groups):
    """ConfigError where a variant's runs were scored on different test data (where the data asked for could
    not be loaded, each run's one saved evaluation of other data is read): their scores cannot be pooled."""
    for runs in groups.values():
        held = {}
        for r in runs:
            held.setdefault(r.get("data_sha256"), []).append(r["run"])
        if len(held) > 1:
            raise ConfigError(f"{runs[0]['variant']}'s runs were scored on {len(held)} different test data ("
                              + "; ".join(f"sha256 {str(sha)[:12]}...: {len(rs)} run(s), e.g. {rs[0]}"
                                          for sha, rs in sorted(held.items(), key=str)) +
                              "), so their scores cannot be pooled; score them on one: give its data flags "
                              "(--idx_dir, --image_dir, --npz, --dataset) where it can be loaded")
