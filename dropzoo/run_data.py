"""A run's data against what it records: a finished run's record against the data as it is now, and a caller's
source against the config it trains (each would otherwise report results as data the run did not read)."""
import os

from absl import logging

from dropzoo import files
from dropzoo import sources
from dropzoo.errors import DataError


def check_finished_on(source, config, recorded, workdir, test=True):
    """DataError where a finished run's record (`recorded`: its metrics' "data") names other training or (`test`)
    test data than `source` (None: `config`'s data, loaded as it is now): its results would be reported as this
    data's. Data that cannot be loaded here is said, and the record reported as it was."""
    if source is None:
        try:
            source = sources.load_source(**sources.config_arguments(config))
        except DataError as e:
            logging.warning("%s: the run's data cannot be loaded here (%s), so it is not compared with what the run "
                            "recorded; its results are reported as they were", workdir, e)
            return
    fix = "use another --workdir, or --overwrite to train it on this data"
    held = recorded.get("train_sha256")
    if source.train_sha256 and held and source.train_sha256 != held:
        raise DataError(f"{workdir} holds a run finished on other training data (sha256 {held[:12]}...) than "
                        f"{source.name} (sha256 {source.train_sha256[:12]}...), so its results would be reported as "
                        f"this data's; {fix}")
    held = recorded.get("test_sha256") if test else None
    now = sources.fingerprint(source) if held else None
    if held and held != now:
        raise DataError(f"{workdir} holds a run finished and tested on other test data (sha256 {held[:12]}...) than "
                        f"{source.name}'s (sha256 {now[:12]}...), so its test scores would be reported as this data's; "
                        f"score it on this data with eval.py --workdir={workdir} (evaluate.evaluate_on_dataset), or "
                        f"{fix}")


def check_given(source, config):
    """DataError where `config` names data (not at the defaults) other than `source`, a caller's, which it replaces:
    the run would be recorded as data it did not read."""
    if source is None:
        return
    if not isinstance(source, sources.Source):  # (an AttributeError deep in training)
        raise DataError(f"source= takes a sources.Source (e.g. sources.array_source(...) or sources.load_source(...)),"
                        f" not {type(source).__name__}; to name data by its arguments, set the config's data fields")
    arguments = sources.config_arguments(config)
    named = sources.flags_of({k: v for k, v in arguments.items() if (k, v) != ("dataset", sources.DEFAULT_DATASET)})
    other = named and (sources.choose(arguments).name != sources.choose(source.origin).name  # (paths: not compared)
                       or sources.origin_mismatch(arguments, source.origin, source.fallback_reason))
    if other:
        raise DataError(f"source={source.name} replaces the config's data, and the config names other data ({named}): "
                        "the run would be recorded as that; leave the config's data fields at their defaults with "
                        "source=, or drop source= to load what the config names")


def check_finished_runs(runs, loaded):
    """DataError where a finished run of a sweep's `runs` ((config, workdir) pairs) was trained on other data than
    its config names now (`loaded(config)`: the source, or None): the sweep's other runs would train on data the
    finished ones did not, a study no comparison can pool, so before any trains. An unreadable record is left to
    its run (which fails alone, in its own words)."""
    for config, workdir in runs:
        path, source = os.path.join(workdir, "metrics.json"), loaded(config)
        if source is None or source.train is None or not os.path.isfile(path):
            continue
        try:
            recorded = files.read_json(path, "").get("data", {})
        except (files.ReadError, OSError):
            continue
        try:  # (its training data alone: other test data leaves the others' training as it was; that run says it)
            check_finished_on(source, config, recorded, workdir, test=False)
        except DataError as e:
            raise DataError(f"{e} (the sweep trains none of its runs: the others would train on data this finished "
                            "run did not)") from None
