"""Carrying results: copy the records of finished runs (no SavedModels) to compare them elsewhere.

Runs that diverged in training are carried too (their config.json and diverged.json): a comparison counts them.

`collect(runs_dirs, destination)` is `eval.py --runs_dir=... --collect=DIR`:
each run keeps its path below its runs directory, so several directories
(machines) merge into one study; a run is never replaced by another one.
"""
import json
import os
import shutil

from dropzoo import config as config_lib
from dropzoo import divergence
from dropzoo import evaluations
from dropzoo import files
from dropzoo import records
from dropzoo import shards
from dropzoo import variants
from dropzoo import workdir as workdirs
from dropzoo.errors import ConfigError


def collect(runs_dirs, destination):
    """Copies the records of every finished run below `runs_dirs` into `destination`; returns their paths.

    Each run keeps its path relative to the runs directory it was found in
    (so several directories merge into one study), and only its record:
    records.RECORD_FILES and evaluations/, never saved_model/, checkpoints/,
    tensorboard/ or the serving artifacts. A run recorded as identical by
    construction to another keeps pointing at it. `runs_dirs`: one directory or a list.
    """
    runs_dirs = [runs_dirs] if isinstance(runs_dirs, (str, os.PathLike)) else list(runs_dirs)
    inside = [d for d in runs_dirs if files.is_within(destination, d)]
    if inside:
        raise ConfigError(f"--collect {destination} is inside --runs_dir {inside[0]}: a later collect would copy "
                          "the copies too; collect into a directory outside it")
    pairs, found, diverged = [], set(), []
    for runs_dir in runs_dirs:
        lost = divergence.diverged_runs(workdirs.unfinished_runs([runs_dir]))  # (a directory of those alone too)
        diverged += [(run, os.path.normpath(os.path.join(destination, os.path.relpath(run, runs_dir))))
                     for run in lost]
        for run in records.find_runs([runs_dir], required=not lost):
            if os.path.realpath(run) not in found:  # runs directories that overlap: each run once
                found.add(os.path.realpath(run))
                pairs.append((run, os.path.normpath(os.path.join(destination, os.path.relpath(run, runs_dir)))))
    _check_not_nested(pairs, destination)
    _check_diverged(pairs, diverged)
    first = {}
    for run, target in pairs:  # before anything is copied: a refused collect changes nothing
        other = first.setdefault(target, run)
        if other != run and _weights_of(os.path.join(other, "metrics.json")) != _weights_of(
                os.path.join(run, "metrics.json")):
            raise ConfigError(f"{other} and {run} (other weights) would both be collected into {target}: their "
                              "paths below their --runs_dir are the same; collect each into a directory of its own "
                              "(e.g. --collect=DEST/NAME), or give --runs_dir their parent directories")
        held = os.path.join(target, "metrics.json")
        if os.path.isfile(held) and _weights_of(held) != _weights_of(os.path.join(run, "metrics.json")):
            settings = _settings_apart(held, os.path.join(run, "metrics.json"))
            why = ("their records cannot be compared (one holds no readable config); collect the runs into a "
                   "directory of their own (--collect=DEST/NAME)" if settings is None else
                   f"they trained other settings ({', '.join(settings)}) under one variant name (each sweep names "
                   "its variants for what it varies); collect each sweep into a directory of its own "
                   "(--collect=DEST/NAME), or sweep both settings in one command" if settings else
                   "two machines trained one variant and seed, and a comparison takes each seed once; collect the "
                   "other machine's runs into another directory, or give each machine its own seeds "
                   "(--seed=N --seeds=K)")
            raise ConfigError(f"{target} already holds another run (other weights) than {run}, which would "
                              f"replace its records: {why}")
    _check_identical_targets(pairs, first)
    copied = []
    for run, target in pairs:
        if first[target] != run:
            continue  # the same run (same weights) found twice: copied once
        os.makedirs(target, exist_ok=True)
        if os.path.isdir(os.path.join(run, evaluations.EVALUATIONS)):
            shutil.copytree(os.path.join(run, evaluations.EVALUATIONS), os.path.join(target, evaluations.EVALUATIONS),
                            dirs_exist_ok=True, copy_function=_copy_whole)
        for name in records.RECORD_FILES:  # metrics.json last: a run is finished by it
            if os.path.isfile(os.path.join(run, name)):
                _copy_whole(os.path.join(run, name), os.path.join(target, name))
        copied.append(target)
    for run, target in diverged:  # runs that diverged in training: their variant's diverged seeds, carried too
        os.makedirs(target, exist_ok=True)
        for name in ("config.json", divergence.FILE):  # diverged.json last: it makes the copy a diverged run
            _copy_whole(os.path.join(run, name), os.path.join(target, name))
        copied.append(target)
    for runs_dir in runs_dirs:  # the array plans too: a comparison of the copies names the runs never trained
        for plan in shards.plans(runs_dir):
            target = os.path.join(destination, os.path.relpath(plan, runs_dir))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _copy_whole(plan, target)
    return copied


def _copy_whole(source, target):
    """Copies `source` to `target` whole or not at all: a collect stopped midway (Ctrl-C, a full disk) leaves no
    half-copied record to be read later."""
    return files.atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


_TWICE = "one variant and seed trained twice, or two runs of other settings named alike"


def _check_diverged(pairs, diverged):
    """ConfigError, before anything is copied, where a run that diverged in training and a finished run (collected
    now, or held already) would share one path: one would replace the other's record."""
    finished = {target: run for run, target in pairs}
    for run, target in diverged:
        other = finished.get(target) or (target if os.path.isfile(os.path.join(target, "metrics.json")) else None)
        if other:
            raise ConfigError(f"{run} diverged in training, and {other} finished with the same path below its runs "
                              f"directory ({_TWICE}): collect each into a directory of its own (--collect=DEST/NAME)")
    for run, target in pairs:
        if os.path.isfile(divergence.path(target)):
            raise ConfigError(f"{target} holds a run that diverged in training, and {run} finished with its path "
                              f"({_TWICE}): collect each into a directory of its own (--collect=DEST/NAME)")


def _check_not_nested(pairs, destination):
    """ConfigError where a run would land inside another run (collected now, or held already).

    A comparison stops looking below a run's directory, so the inner one
    would be lost from every later comparison of `destination`.
    """
    targets = sorted({target for _, target in pairs})
    held = records.find_runs([destination]) if os.path.isdir(destination) and any(
        "metrics.json" in names for _, _, names in os.walk(destination)) else []
    every = targets + [os.path.normpath(h) for h in held]
    for outer in every:
        inner = next((t for t in every if t.startswith(outer + os.sep)), None)
        if inner is not None:
            raise ConfigError(f"collecting into {destination} would put the run at {inner} inside the run at "
                              f"{outer}, where a comparison would not find it: give --runs_dir directories that "
                              "hold runs at the same depth, or collect them into directories of their own")


def _check_identical_targets(pairs, first):
    """ConfigError where a run recorded identical by construction to another would point at no run, or at
    another run (other weights), once collected: the comparison would score it with that run's numbers."""
    for run, target in pairs:
        record = files.read_json(os.path.join(run, "metrics.json"), "delete it and rerun that run's train.py command")
        if "identical_to" not in record:
            continue
        trained = os.path.normpath(os.path.join(run, record["identical_to"]))
        lands = os.path.normpath(os.path.join(target, record["identical_to"]))
        problem = records.identical_target_problem(record, first[lands] if lands in first else lands)
        if problem == records.NO_RUN:
            raise ConfigError(f"{run} is recorded identical by construction to {trained}, which is not collected: "
                              f"its numbers are that run's; give --runs_dir a directory that holds both")
        if problem:
            raise ConfigError(f"{run} is recorded identical by construction to {trained}, but {lands} holds "
                              "another run (other weights), whose numbers it would be given; collect the runs "
                              "directory that holds both into a directory of its own (e.g. --collect=DEST/NAME)")


# Settings named by a path on the machine that trained (a folder moved, another machine's home): compared by what
# the records say they held (their digests) instead.
_BY_CONTENT = variants.READ_APART + ("keras_model",)


def _settings_apart(metrics_path, other_path):
    """The training settings in which two runs' records differ, read as a resume reads them (one spelling of a
    setting is one setting), with their data and a --keras_model file told apart by the digests the records hold,
    not by path ("data", "keras_model"); None where a record holds no config that can be compared."""
    records_ = [files.read_json(path, "delete it and rerun that run's train.py command")
                for path in (metrics_path, other_path)]
    configs = [r.get("config") for r in records_]
    if not all(isinstance(c, dict) and not config_lib.type_problem(c) for c in configs):
        return None
    try:
        apart = [k for k in config_lib.settings_apart(*configs) if k not in _BY_CONTENT]
    except (AttributeError, TypeError, ValueError):  # (a field no resume could read either: sites not a string)
        return None
    data = [r.get("data") if isinstance(r.get("data"), dict) else {} for r in records_]
    if any(data[0].get(k) and data[1].get(k) and data[0][k] != data[1][k] for k in ("train_sha256", "test_sha256")):
        apart.append("data")
    if records_[0].get("keras_model_sha256") != records_[1].get("keras_model_sha256"):
        apart.append("keras_model")
    return apart


def _weights_of(metrics_path):
    """The weights digest a run recorded (its whole record where it recorded none)."""
    record = files.read_json(metrics_path, "delete it and rerun that run's train.py command")
    return record.get("weights_sha256") or json.dumps(record, sort_keys=True)
