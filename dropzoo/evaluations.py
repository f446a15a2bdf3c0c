"""A run's saved evaluations: `evaluations/<id>.json` in its record, one per request.

A request names what an evaluation scored: the test data and OOD data by
content (`sources.fingerprint`), MC samples, seed and batching; the record
names the weights too (the run's `weights_sha256`), so one saved before the
run trained on answers nothing for the weights it has now. The trainer
saves the evaluation of a run's own test data; a comparison (or eval.py
--workdir) saves each other evaluation it computes, so that records alone
answer it next time, on this machine or on another (`collect`).
"""
import hashlib
import json
import os

from absl import logging

from dropzoo import config as config_lib
from dropzoo import files
from dropzoo import idx
from dropzoo import ood as ood_lib
from dropzoo import sources
from dropzoo.errors import DataError

EVALUATIONS = "evaluations"
# The version of what an evaluation computes (evaluate.py's scores). Raise it when a score is added or computed
# otherwise: a saved evaluation of an earlier version is then scored again where the run's export is here (records
# alone still answer with it, said once). Evaluations saved before it was recorded are version 1.
SCORER = 1
# What a comparison reads of a saved evaluation (its result's other scores are optional: MC, OOD, calibration).
FIELDS = {"data_source": str, "request": dict, "result": {"accuracy": (int, float), "loss": (int, float),
                                                          "num_examples": int}}


def read(path, fix):
    """A saved evaluation; ReadError naming it where it lacks what a comparison reads, or scores an accuracy
    outside 0..1 or a negative NLL (a hand edit: 97.2 for 0.972 read as -962 points without a word)."""
    saved = files.read_json(path, fix, FIELDS)
    accuracy, loss = saved["result"]["accuracy"], saved["result"]["loss"]
    wrong = [what for what, bad in ((f"accuracy {accuracy} outside 0..1", not 0 <= accuracy <= 1),
                                    (f"NLL {loss} below 0", loss < 0)) if bad]
    if wrong:
        raise files.ReadError(f"{path} is corrupt ({', '.join(wrong)}); {fix}")
    return saved


def request_id(request):
    """The file name (without .json) of the evaluation `request` ({data, mc_samples, ...})."""
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]


def evaluation_path(run, request):
    return os.path.join(run, EVALUATIONS, f"{request_id(request)}.json")


def make_request(data_sha256, *, mc_samples=0, mc_seed=0, batch_size=256, ood_sha256=None):
    """What identifies an evaluation: the test data and OOD data (by content), MC samples and seed.

    The data are named by `sources.fingerprint`, not by path, so a record still matches on another machine, or
    with the same test split read from tfds instead of IDX files. MC draws depend on the batching too.
    """
    request = {"data": data_sha256, "mc_samples": int(mc_samples), "ood": ood_sha256}
    if mc_samples:  # the MC seeds of each call follow the batching
        request.update(mc_seed=int(mc_seed), batch_size=int(batch_size))
        if ood_sha256:  # earlier evaluations drew the OOD pass with the test pass's seeds: not this one
            request["ood_seeds"] = "after_test"
    return request


def save_evaluation(run, request, data_source, result, weights):
    """Writes `result` (an evaluation of `run`'s export, of weights digest `weights`, for `request`) into the run's
    record (`weights` None: unknown, a run without its finished record; it answers for no known weights). A
    record that cannot
    be written to (a read-only copy, another user's) keeps none, with a warning: the next comparison computes it
    again; returns whether it was kept."""
    why = files.unwritable(os.path.join(run, EVALUATIONS), make=False)
    if why:
        logging.warning("%s: its evaluation (of %s) is not kept in its record, which this process cannot write to "
                        "(%s); it was computed, and is computed again each time it is asked for", run, data_source, why)
        return False
    os.makedirs(os.path.join(run, EVALUATIONS), exist_ok=True)
    files.write_json(evaluation_path(run, request), {"request": request, "data_source": data_source,
                                                      "result": result, "weights_sha256": weights, "scorer": SCORER})
    return True


def load_evaluation(run, request, weights):
    """The saved {"request", "data_source", "result"} of `request` for `run`'s weights (digest `weights`), or None;
    records alone answer an MC + OOD request from before its OOD pass took seeds of its own (the test pass's
    again: correlated, not biased). A record of other weights is None (the run trained on since); one that names
    none is older than this check (the trainer removes those as a run trains on: drop_unweighted)."""
    path = evaluation_path(run, request)
    if not os.path.isfile(path):
        older = {k: v for k, v in request.items() if k != "ood_seeds"}
        alone = older != request and not os.path.isdir(os.path.join(run, "saved_model"))
        return load_evaluation(run, older, weights) if alone else None
    saved = read(path, "delete it and compare again with the run's saved_model/ present")
    if saved.get("request") != request or not _of(saved, weights):
        return None
    scorer = saved.get("scorer", 1)
    if isinstance(scorer, bool) or not isinstance(scorer, int):
        raise files.ReadError(f"{path} is corrupt (scorer is {json.dumps(scorer)[:40]}, not an integer); delete it "
                              "and compare again with the run's saved_model/ present")
    if scorer < SCORER:  # scored by earlier code: again where the export is here
        if os.path.isdir(os.path.join(run, "saved_model")):
            return None
        if run not in _SAID_EARLIER:
            _SAID_EARLIER.add(run)
            logging.warning("%s: its saved evaluation was scored by an earlier version of the scores (%s, now %s), "
                            "and its export is not here to score it again: a score added since is missing from it",
                            run, scorer, SCORER)
    return saved


_SAID_EARLIER = set()  # runs whose evaluations of earlier scores were said (once each)


def _of(saved, weights):
    """Whether a saved evaluation scored weights `weights`: it names them, or it names none at all (saved by older
    code, before this check; the trainer removes those as a run trains on)."""
    return "weights_sha256" not in saved or saved["weights_sha256"] == weights


def drop_unweighted(run):
    """Removes `run`'s saved evaluations that name no weights (saved by older code), before it trains: they would
    answer for the weights it is about to have. Those that name theirs stay (a re-export keeps its weights)."""
    directory = os.path.join(run, EVALUATIONS)
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                named = json.load(f).get("weights_sha256")
        except (OSError, ValueError, AttributeError):  # a cache entry: unreadable (a killed write's), it goes too
            named = None
        if named is None and os.path.isfile(path):
            os.remove(path)


def saved_evaluations(run, weights):
    """Every evaluation saved in `run`'s record of its weights (digest `weights`; or naming none: older)."""
    directory = os.path.join(run, EVALUATIONS)
    if not os.path.isdir(directory):
        return []
    saved = [read(os.path.join(directory, name), "delete it and compare again")
             for name in sorted(os.listdir(directory)) if name.endswith(".json")]
    return [record for record in saved if _of(record, weights)]


def _named(arguments):
    """The dataset `arguments` (load_source's) name without a path (a tfds name: the default one where only
    --tfds_data_dir is given), or None."""
    named = isinstance(arguments, dict) and not any(arguments.get(key) for key in config_lib.DATA_PATHS)
    return (arguments.get("dataset") or sources.DEFAULT_DATASET) if named else None


def _known_as(name, sha, data_source):
    """Whether data of fingerprint `sha`, read from `data_source`, is the dataset `name` (by content, or tfds')."""
    return sha == idx.TEST_FINGERPRINTS.get(name) or data_source == f"tfds:{name}"


def held_instead(run, request, weights, said, own_sha, test, ood):
    """The one saved evaluation of `run` answering `request` where its test or OOD data cannot be loaded here
    (their fingerprints None in it; `test`, `ood`: (what was asked, the error loading it)), said in `said` (a
    list) and on stderr; None where there is none. Data asked for by path may be answered by the one evaluation of
    other data the record holds (the data elsewhere); a dataset asked for by name only by one known to be of it
    (_known_as; the run's own too), and DataError where the record holds only others: fashion_mnist offline was
    answered by the MNIST evaluation a record held, exit 0."""
    (asked, error), (ood_asked, ood_error) = test, ood
    name = _named(asked) if request["data"] is None else None
    ood_name = _named(ood_asked) if ood_asked and request["ood"] is None else None
    matches = [saved for saved in saved_evaluations(run, weights) if all(
        saved["request"].get(k) == v for k, v in request.items() if v is not None or k not in ("data", "ood"))
        and (saved["request"]["ood"] is not None) == bool(ood_asked)]
    tested = [saved for saved in matches if _known_as(name, saved["request"]["data"], saved["data_source"])] \
        if name else [saved for saved in matches if request["data"] is not None or saved["request"]["data"] != own_sha]
    found = [saved for saved in tested if not ood_name or _known_as(ood_name, saved["request"]["ood"],
                                                                  saved["result"].get("ood_data_source"))]
    if (name and matches and not tested) or (ood_name and tested and not found):  # the side not known to be it
        what, why, among, key = (name, error, matches, "data_source") if name and not tested else (
            ood_name, ood_error, tested, "ood_data_source")
        held = sorted({str(saved.get(key) or saved["result"].get(key)) for saved in among})
        raise DataError(f"{why or f'{what} cannot be loaded here'}; the runs' records hold evaluations of other "
                        f"data only ({', '.join(held)}), not known to be {what}'s, which cannot answer for it")
    if len(found) != 1:
        return None
    held = found[0]
    flags = [sources.flags_of(asked)] if request["data"] is None and isinstance(asked, dict) else []
    if request["ood"] is None and isinstance(ood_asked, dict):
        flags.append(" ".join(f"{ood_lib.FLAGS.get(k, '--' + k)}={v}" for k, v in ood_asked.items()))
    note = (f"the data asked for{' (' + '; '.join(flags) + ')' if flags else ''} cannot be loaded here, so the "
            f"records' own evaluations were read: {held['data_source']} (sha256 {str(held['request']['data'])[:12]}"
            "...)" + (f", with the out-of-distribution data they hold ({held['result'].get('ood_data_source')}, "
                      f"sha256 {str(held['request']['ood'])[:12]}...)" + (
                          "" if request["ood"] is not None else f": {ood_name}'s" if ood_name else
                          " in place of the OOD data named") if ood_asked else ""))
    if note not in said:
        logging.warning("%s", note)
        said.append(note)
    return held
