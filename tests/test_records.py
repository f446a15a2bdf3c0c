"""Results you can carry: a run's record alone (no SavedModel, no checkpoints) is enough to compare it.

The records of a small sweep are collected into a fresh directory; their
comparison equals the one computed beside the SavedModels, runs collected
from two directories compare as one study, and evaluations of other test
data are found by the data's content wherever it lies.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest
from conftest import tiny_arrays
from conftest import tiny_config
from conftest import tiny_source

from dropzoo import collect
from dropzoo import compare
from dropzoo import evaluations
from dropzoo import files
from dropzoo import idx
from dropzoo import performance
from dropzoo import pooled_data
from dropzoo import records
from dropzoo import sources
from dropzoo import sweep
from dropzoo import tfds_source
from dropzoo import workdir as workdirs
from dropzoo.errors import ConfigError
from dropzoo.errors import DataError
from dropzoo.errors import RunError


def _table(result):
    """A comparison's numbers, without timing (which records keep too, but a rerun would not)."""
    return [{k: v for k, v in e.items() if k not in ("train_time_sec", "key")} for e in result["table"]]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    base = tiny_config(epochs=1)
    runs = [(c, sweep.run_dir(str(root / "a"), c)) for c in sweep.expand(base, {"placement": ["canonical", "none"]},
                                                                        seeds=2)]
    runs += [(c, sweep.run_dir(str(root / "b"), c)) for c in sweep.expand(
        base, {"placement": ["before_dense"]}, seeds=2)]
    results = sweep.run_sweep(runs, source=tiny_source(), verbose=0)
    assert all(isinstance(m, dict) for _, _, m in results)
    return root


@pytest.mark.slow
def test_records_alone_compare_as_the_runs_did(study, tmp_path):
    for run in records.find_runs([str(study / "a"), str(study / "b")]):  # evaluated again, through the exports
        shutil.rmtree(os.path.join(run, evaluations.EVALUATIONS), ignore_errors=True)
    here = compare.compare_runs([str(study / "a"), str(study / "b")], source=tiny_source(),
                                output_dir=str(tmp_path / "out1"))
    assert {e["variant"] for e in here["table"]} == {"dense_mlp/canonical", "dense_mlp/none",
                                                     "dense_mlp/before_dense"}  # two directories, one study
    with open(here["paths"]["comparison.md"]) as f:
        assert re.search(rf"; 6 runs trained in [a-z0-9_]+, from {re.escape(str(study / 'a'))} \(4\), "
                         rf"{re.escape(str(study / 'b'))} \(2\)\.$", f.readline().rstrip())  # what was pooled
    with pytest.raises(ConfigError, match=r"^--baseline=canonicl is not a placement these runs trained "
                                          r"\(before_dense, canonical, none\); give one of them"):
        compare.compare_runs([str(study / "a"), str(study / "b")], source=tiny_source(), baseline="canonicl",
                             output_dir=str(tmp_path / "typo"))
    # In-memory arrays are not kept with a run: scored anew (here with MC dropout), they are asked for again.
    with pytest.raises(DataError, match=r"^the runs' test data \(named 'tiny'\) is not here as they were tested on "
                                        r"it \(sha256 \w{12}\.\.\. then, not loadable now\): give it again \(Python: "
                                        r"source=, as arrays are not kept with a run; eval.py: --npz"):
        compare.compare_runs(str(study / "b"), mc_samples=2, output_dir=str(tmp_path / "arrays"))
    with pytest.raises(ValueError, match=r"--runs_dir=.*a, has an empty entry \(a stray comma\?\); drop it"):
        records.find_runs([str(study / "a"), ""])
    collected = tmp_path / "collected"
    copied = collect.collect([str(study / "a"), str(study / "b")], str(collected))
    assert len(copied) == 6
    assert len(collect.collect(str(study / "a"), str(tmp_path / "one"))) == 4  # one directory, as compare_runs takes
    for run in copied:
        assert sorted(os.listdir(run)) == ["config.json", "evaluations", "metrics.json"]
        size = sum(os.path.getsize(os.path.join(dirpath, f)) for dirpath, _, names in os.walk(run) for f in names)
        assert size < 64_000, size  # a few KB, not the SavedModel
    there = compare.compare_runs(str(collected), output_dir=str(tmp_path / "out2"))
    assert _table(there) == _table(here)
    assert [{k: v for k, v in c.items()} for c in there["contrasts"]] == here["contrasts"]
    # The descriptive figures come from the records too: each run's CPU and times, read from its metrics.json.
    with open(here["paths"]["descriptive.md"]) as f, open(there["paths"]["descriptive.md"]) as g:
        text = f.read()
        assert text == g.read()
    cpu = performance.describe_machine()
    assert f"| {cpu['cpu']} ({cpu['cpu_kind']}), {cpu['cores']} cores available | 6 | 0 |" in text


@pytest.mark.slow
def test_a_comparison_reads_runs_it_cannot_write_to_and_refuses_an_output_it_cannot_write_first(
        study, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("kept")
    with monkeypatch.context() as patched:  # refused before any run is scored (minutes with MC dropout)
        patched.setattr(records, "evaluate_runs", lambda *a, **k: pytest.fail("scored before the output was checked"))
        with pytest.raises(ConfigError, match=rf"^cannot write the comparison to {blocker}/cmp \({blocker} is a "
                                              r"file\); give --output=DIR \(output_dir=\), a directory you can "
                                              r"write to \(the runs are only read\)$"):
            compare.compare_runs(str(study / "a"), output_dir=str(blocker / "cmp"))
    assert blocker.read_text() == "kept"
    # Records that cannot keep an evaluation (a read-only copy; here a file where evaluations/ would be): the runs
    # are scored all the same, each says its evaluation is not kept, and the next comparison scores them again.
    copy = tmp_path / "copy"
    shutil.copytree(study / "a", copy)
    for run in records.find_runs([str(copy)]):
        shutil.rmtree(os.path.join(run, evaluations.EVALUATIONS))
        with open(os.path.join(run, evaluations.EVALUATIONS), "w") as f:
            f.write("not a directory")
    expected = compare.compare_runs(str(study / "a"), source=tiny_source(), output_dir=str(tmp_path / "expected"))
    with caplog.at_level("WARNING"):
        got = compare.compare_runs(str(copy), source=tiny_source(), output_dir=str(tmp_path / "got"))
    assert _table(got) == _table(expected)
    assert caplog.text.count("its evaluation (of ") == 4 and "is not kept in its record, which this process cannot " \
        "write to" in caplog.text


@pytest.mark.slow
def test_other_test_data_is_found_by_content_wherever_it_lies(study, tmp_path, monkeypatch):
    x_test, y_test = _arrays(seed=5)  # other test images than the runs' own
    npz = tmp_path / "other.npz"
    np.savez(npz, x_train=x_test, y_train=y_test, x_test=x_test, y_test=y_test)
    moved = tmp_path / "elsewhere.npz"
    shutil.copy(npz, moved)
    compare.compare_runs(str(study / "a"), data_override={"npz": str(npz)}, output_dir=str(tmp_path / "o1"))
    collected = tmp_path / "collected"
    collect.collect([str(study / "a")], str(collected))
    # The same arrays at another path: the same fingerprint, so the records answer.
    again = compare.compare_runs(str(collected), data_override={"npz": str(moved)}, output_dir=str(tmp_path / "o2"))
    assert again["num_runs"] == 4 and again["notes"] == [  # only what 40 test images can tell
        "the smallest test data here has 40 images, so one image moves accuracy by 2.50 points, more than the "
        "±0.5-point margin: the intervals count the seeds' spread only, not how few images decide each score; test "
        "on more images for an answer at this margin"]
    # The data gone from this machine: the one evaluation of other data each record holds, said so.
    os.remove(moved)
    gone = compare.compare_runs(str(collected), data_override={"npz": str(moved)}, output_dir=str(tmp_path / "o3"))
    assert _table(gone) == _table(again) and gone["notes"][0].startswith(
        f"the data asked for (--npz={moved}) cannot be loaded here, so the records' own evaluations were read: npz:")
    # A dataset asked for by name, not here: the evaluation of other data the records hold does not answer for it
    # (it did, exit 0: Fashion-MNIST asked, the MNIST-like arrays' scores published).
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda timeout: False)
    with pytest.raises(DataError, match=r"^tfds dataset 'fashion_mnist' is not prepared in .*; the runs' records hold "
                       r"evaluations of other data only \(npz:.*other\.npz, tiny\), not known to be fashion_mnist's, "
                       r"which cannot answer for it$"):
        compare.compare_runs(str(collected), data_override={"dataset": "fashion_mnist", "tfds_data_dir": str(
            tmp_path / "no_tfds")}, output_dir=str(tmp_path / "o4"))
    # An evaluation known to be of that dataset by its content (as MNIST's and Fashion-MNIST's are) answers for it.
    monkeypatch.setitem(idx.TEST_FINGERPRINTS, "fashion_mnist", sources.fingerprint(sources.load_source(
        npz=str(npz), need_train=False)))
    named = compare.compare_runs(str(collected), data_override={"dataset": "fashion_mnist", "tfds_data_dir": str(
        tmp_path / "no_tfds")}, output_dir=str(tmp_path / "o5"))
    assert _table(named) == _table(again) and "(--dataset=fashion_mnist" in named["notes"][0]
    # The runs' own test data, named and not here: their own evaluations answer (they were refused as "other data").
    own = sources.fingerprint(tiny_source())
    monkeypatch.setitem(idx.TEST_FINGERPRINTS, "fashion_mnist", own)
    named = compare.compare_runs(str(collected), data_override={"dataset": "fashion_mnist", "tfds_data_dir": str(
        tmp_path / "no_tfds")}, output_dir=str(tmp_path / "o6"))
    assert _table(named) == _table(compare.compare_runs(str(collected), output_dir=str(tmp_path / "o7")))
    assert {r["data_sha256"] for r in records.evaluate_runs(records.find_runs([str(collected)]), data_override={
        "dataset": "fashion_mnist", "tfds_data_dir": str(tmp_path / "no_tfds")})} == {own}
    # Each run's row says which test data scored it; one run holding its evaluation of other data is not pooled
    # with the rest (it was: a variant's mean mixed two test sets without a word).
    runs = records.find_runs([str(collected)])
    fingerprint = sources.fingerprint(sources.load_source(npz=str(npz), need_train=False))
    assert {r["data_sha256"] for r in records.evaluate_runs(runs, data_override={"npz": str(moved)}, notes=[])} == {
        fingerprint}
    with open(os.path.join(runs[0], "metrics.json")) as f:
        weights = json.load(f)["weights_sha256"]
    held = next(e for e in evaluations.saved_evaluations(runs[0], weights) if e["request"]["data"] == fingerprint)
    path = evaluations.evaluation_path(runs[0], held["request"])
    with open(path) as f:
        saved = json.load(f)
    saved["request"]["data"] = "f" * 64
    with open(path, "w") as f:
        json.dump(saved, f)
    with pytest.raises(ConfigError, match=r"'s runs were scored on 2 different test data \(sha256 "):
        compare.compare_runs(str(collected), data_override={"npz": str(moved)}, output_dir=str(tmp_path / "o3b"))
    # Asking for MC dropout the records never computed, with no SavedModel: one clear line.
    with pytest.raises(RunError, match="has no saved evaluation for this request .* and no SavedModel"):
        compare.compare_runs(str(collected), mc_samples=3, output_dir=str(tmp_path / "o4"))
    # OOD data that cannot be loaded is refused, naming the flag: it was taken for none, and the plain
    # evaluations each record holds were shown without a word (no uncertainty.md).
    for where in (study / "a", collected):
        with pytest.raises(DataError, match=r"^out-of-distribution data: --ood_idx_dir .*nowhere is not a directory"):
            compare.compare_runs(str(where), ood={"idx_dir": str(tmp_path / "nowhere")},
                                 output_dir=str(tmp_path / "o4b"))
    # Out-of-distribution data that is the test data: an AUROC of 0.5 by construction, refused.
    with pytest.raises(DataError, match=r"the out-of-distribution data is the test data of .*; give images of "
                                        r"something else"):
        compare.compare_runs(str(collected), data_override={"npz": str(npz)}, ood={"npz": str(npz)},
                             output_dir=str(tmp_path / "o5"))
    # ... and near copies of it: the test images less one (refused); other images with one test image among
    # them (that image left out of the OOD scores, and counted).
    near = tmp_path / "near.npz"
    np.savez(near, x_train=x_test, y_train=y_test, x_test=x_test[1:], y_test=y_test[1:])
    with pytest.raises(DataError, match=rf"^the out-of-distribution data is the test data of .*, or a copy of some "
                                        rf"of it: all {len(x_test) - 1:,} of its images are test images "
                                        r"\(byte for byte\)"):
        compare.compare_runs(str(study / "a"), data_override={"npz": str(npz)}, ood={"npz": str(near)},
                             output_dir=str(tmp_path / "o6"))
    mixed = np.concatenate([_arrays(seed=9)[0], x_test[:1]])
    np.savez(near, x_train=x_test, y_train=y_test, x_test=mixed, y_test=np.zeros(len(mixed), int))
    rows = compare.compare_runs(str(study / "a"), data_override={"npz": str(npz)}, ood={"npz": str(near)},
                                output_dir=str(tmp_path / "o7"))["table"]
    assert rows and all(np.isfinite(e["ood_auroc_entropy"]["mean"]) for e in rows)
    with open(tmp_path / "o7" / "runs.json") as f:
        assert {r["ood_in_test_left_out"] for r in json.load(f)} == {1}
    # Said in the comparison from the records, a rerun reading the saved evaluations too (it warned of nothing).
    again = compare.compare_runs(str(study / "a"), data_override={"npz": str(npz)}, ood={"npz": str(near)},
                                 output_dir=str(tmp_path / "o7"))
    said = [n for n in again["notes"] if "left out of their OOD scores" in n]
    assert said and said[0].startswith("1 of the out-of-distribution images is a test image of "), again["notes"]
    with open(tmp_path / "o7" / "uncertainty.md") as f:
        assert "left out of their OOD scores" in f.read()
    # OOD data not here, where each record holds one evaluation with OOD data: read, and the note says whose.
    held = compare.compare_runs(str(study / "a"), data_override={"npz": str(npz)},
                                ood={"idx_dir": str(tmp_path / "nowhere")}, output_dir=str(tmp_path / "o8"))
    assert any("with the out-of-distribution data they hold" in n and n.endswith("in place of the OOD data named")
               for n in held["notes"]), held["notes"]
    # OOD data named as a dataset, not here: answered only by OOD data known to be it (kmnist's is not known).
    with pytest.raises(DataError, match=r"^out-of-distribution data: tfds dataset 'kmnist' is not prepared .*; the "
                       r"runs' records hold evaluations of other data only \(npz:.*\), not known to be kmnist's"):
        compare.compare_runs(str(study / "a"), data_override={"npz": str(npz)}, ood={
            "dataset": "kmnist", "tfds_data_dir": str(tmp_path / "no_tfds")}, output_dir=str(tmp_path / "o9"))
    # Records holding evaluations of other OOD data run by run: refused, not averaged as one (it averaged the
    # AUROCs of two OOD tasks into one mean per variant).
    split = tmp_path / "split"
    shutil.copytree(study / "a", split)
    first = records.find_runs([str(split)])[0]
    for name in os.listdir(os.path.join(first, evaluations.EVALUATIONS)):
        with open(os.path.join(first, evaluations.EVALUATIONS, name)) as f:
            if json.load(f)["request"]["ood"] is not None:
                os.remove(os.path.join(first, evaluations.EVALUATIONS, name))
    other = tmp_path / "other_ood.npz"
    np.savez(other, x_test=_arrays(seed=11)[0])
    records.evaluate_runs([first], data_override={"npz": str(npz)}, ood={"npz": str(other)})
    with pytest.raises(DataError, match=r"^the out-of-distribution data named cannot be loaded here, and the runs' "
                                        r"records hold evaluations of 2 other OOD data sets \(sha256 "):
        compare.compare_runs(str(split), data_override={"npz": str(npz)}, ood={"idx_dir": str(tmp_path / "nowhere")},
                             output_dir=str(tmp_path / "o8b"))
    # A misspelt dataset names no data anywhere: refused, not answered by an evaluation of other data the records
    # hold (it read the npz's, with a note only).
    with pytest.raises(DataError, match=r"^unknown dataset 'mnst'"):
        compare.compare_runs(str(study / "a"), data_override={"dataset": "mnst"}, output_dir=str(tmp_path / "o9"))
    with pytest.raises(DataError, match=r"^out-of-distribution data: unknown dataset 'mnst'"):  # OOD data too
        compare.compare_runs(str(study / "a"), data_override={"npz": str(npz)}, ood={"dataset": "mnst"},
                             output_dir=str(tmp_path / "o10"))


def test_a_comparison_reads_an_ood_folder_at_each_runs_image_size(study, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    (tmp_path / "photos").mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    result = compare.compare_runs(str(study / "a"), source=tiny_source(), ood={"image_dir": str(tmp_path / "photos")},
                                  output_dir=str(tmp_path / "out"))
    assert result["table"] and all(0 <= e["ood_auroc_entropy"]["mean"] <= 1 for e in result["table"])
    with open(result["paths"]["uncertainty.md"]) as f:
        assert f"Out-of-distribution data: images:{tmp_path / 'photos'} (its images)" in f.read()
    # Other images of the test data's own kind: no score beats chance, said in both reports (uncertainty.md lost it).
    np.savez(tmp_path / "same_kind.npz", x_test=tiny_arrays(400, 200, seed=9)[1][0])
    same = compare.compare_runs(str(study / "a"), source=tiny_source(), ood={"npz": str(tmp_path / "same_kind.npz")},
                                output_dir=str(tmp_path / "same"))
    chance = [note for note in same["notes"] if "no better than chance" in note]
    assert chance[0].startswith("4 runs (dense_mlp/canonical, dense_mlp/none) tell the out-of-distribution")
    for name in ("comparison.md", "uncertainty.md"):
        with open(same["paths"][name]) as f:
            assert chance[0] in f.read().replace("\n", " "), name
    # Each run now holds one OOD evaluation: a folder that is here but broken is refused naming the file, not
    # answered by that evaluation of the other folder (a note was all it said).
    shutil.copytree(tmp_path / "photos", tmp_path / "broken")
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"1 file\(s\) cannot be read as images: .*broken/x.png"):
        compare.compare_runs(str(study / "a"), source=tiny_source(), ood={"image_dir": str(tmp_path / "broken")},
                             output_dir=str(tmp_path / "out2"))


@pytest.mark.slow
def test_an_ood_folder_here_is_scored_at_each_runs_size_though_its_fingerprints_differ(tmp_path):
    """Runs of two image sizes and a folder of OOD images that is here: read at each run's size, so one fingerprint
    per size, which the check for OOD answered by other data set by set took for two OOD data sets and refused."""
    from PIL import Image

    rng = np.random.default_rng(4)
    (tmp_path / "photos").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    (x_train, y_train), (x_test, y_test) = _arrays(seed=5), _arrays(seed=6)
    for size in (28, 12):
        npz = tmp_path / f"data{size}.npz"
        np.savez(npz, x_train=x_train[:, :size, :size], y_train=y_train, x_test=x_test[:, :size, :size], y_test=y_test)
        config = tiny_config(epochs=1, npz=str(npz), dataset="mnist")
        sweep.run_sweep([(config, str(tmp_path / "runs" / f"size{size}"))], verbose=0)
    result = compare.compare_runs(str(tmp_path / "runs"), ood={"image_dir": str(tmp_path / "photos")},
                                  output_dir=str(tmp_path / "out"))
    assert result["num_runs"] == 2


def _arrays(seed=0):
    source = tiny_source(seed=seed)
    images, labels = next(iter(source.test.batch(1000).as_numpy_iterator()))
    return images, labels


def test_a_runs_own_test_data_changed_since_is_not_scored_in_its_place(tmp_path):
    """Arrays named like a dataset (here the sample's name), or an .npz rewritten since: a new request (MC dropout)
    scored the data as it is now and saved it as the run's own test data's evaluation, without a word."""
    x_test, y_test = _arrays(seed=5)
    x_train, y_train = _arrays(seed=6)
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    runs = [(tiny_config(epochs=1, dataset=sources.DEFAULT_DATASET), str(tmp_path / "npz" / "run")),
            (tiny_config(epochs=1, dataset=sources.DEFAULT_DATASET), str(tmp_path / "named" / "run"))]
    sweep.run_sweep(runs[:1], source=sources.load_source(npz=str(npz)), verbose=0)
    sweep.run_sweep(runs[1:], source=sources.array_source(sources.SAMPLE_NAME, (x_train, y_train), (x_test, y_test)),
                    verbose=0)
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test[::-1], y_test=(y_test + 1) % 4)
    for root, what, fix in (("npz", f"--npz={npz}", f"to score them on it as it is now, as other data, pass "
                                                     f"--npz={npz}"),
                            ("named", f"named '{sources.SAMPLE_NAME}'", "give it again")):
        with pytest.raises(DataError, match=rf"^the runs' test data \({what}\) is not here as they were tested on it "
                                            rf"\(sha256 \w{{12}}\.\.\. then, \w{{12}}\.\.\. now\): {fix}"):
            compare.compare_runs(str(tmp_path / root), mc_samples=2, output_dir=str(tmp_path / f"{root}_out"))
        assert not os.listdir(os.path.join(tmp_path, root, "run", evaluations.EVALUATIONS)) or all(
            "mc" not in name for name in os.listdir(os.path.join(tmp_path, root, "run", evaluations.EVALUATIONS)))
    # Its saved evaluation of the data as it was still answers, said so.
    result = compare.compare_runs(str(tmp_path / "npz"), output_dir=str(tmp_path / "saved"))
    assert result["num_runs"] == 1 and any("now holds other test data" in note for note in result["notes"])


def test_the_fingerprint_names_content_not_order_or_path():
    images, labels = _arrays()
    first = sources.array_source("a", None, (images, labels))
    shuffled = sources.array_source("b", None, (images[::-1].copy(), labels[::-1].copy()))
    changed = labels.copy()
    changed[0] = (changed[0] + 1) % 4
    assert sources.fingerprint(first) == sources.fingerprint(shuffled)
    assert sources.fingerprint(first) != sources.fingerprint(sources.array_source("c", None, (images, changed)))


def test_the_trainer_saves_its_own_evaluation_keyed_by_its_test_data(tmp_path):
    from dropzoo import trainer

    metrics = trainer.train_and_evaluate(tiny_config(epochs=1), str(tmp_path), source=tiny_source(), verbose=0,
                                         serving_artifacts=False)
    request = evaluations.make_request(metrics["data"]["test_sha256"])
    saved = evaluations.load_evaluation(str(tmp_path), request, metrics["weights_sha256"])
    assert saved["data_source"] == "tiny" and saved["result"]["num_examples"] == 40
    assert saved["result"]["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    with open(evaluations.evaluation_path(str(tmp_path), request)) as f:
        assert json.load(f)["request"] == request
    # Another model's weights: nothing saved answers for them.
    assert evaluations.load_evaluation(str(tmp_path), request, "0" * 64) is None
    assert evaluations.saved_evaluations(str(tmp_path), "0" * 64) == []


def test_an_evaluation_scored_by_earlier_scores_is_scored_again_where_the_export_is_here(tmp_path, monkeypatch,
                                                                                       caplog):
    """Saved evaluations carried no version of the scores: a score added since was missing from the runs evaluated
    before it (its comparison column dropped, its CSV cells empty), without a word."""
    from dropzoo import trainer

    run = str(tmp_path / "run")
    metrics = trainer.train_and_evaluate(tiny_config(epochs=1), run, source=tiny_source(), verbose=0,
                                         serving_artifacts=False)
    request = evaluations.make_request(metrics["data"]["test_sha256"])
    with open(evaluations.evaluation_path(run, request)) as f:
        assert json.load(f)["scorer"] == evaluations.SCORER
    assert evaluations.load_evaluation(run, request, metrics["weights_sha256"]) is not None
    monkeypatch.setattr(evaluations, "SCORER", evaluations.SCORER + 1)
    assert evaluations.load_evaluation(run, request, metrics["weights_sha256"]) is None  # scored again
    shutil.rmtree(os.path.join(run, "saved_model"))  # records alone: it answers, said
    assert evaluations.load_evaluation(run, request, metrics["weights_sha256"])["result"]["num_examples"] == 40
    assert "scored by an earlier version of the scores (1, now 2), and its export is not here" in caplog.text
    with open(evaluations.evaluation_path(run, request)) as f:
        saved = json.load(f)
    with open(evaluations.evaluation_path(run, request), "w") as f:  # a hand edit: one line, not a TypeError
        json.dump({**saved, "scorer": "2"}, f)
    with pytest.raises(files.ReadError, match=r"is corrupt \(scorer is \"2\", not an integer\); delete it"):
        evaluations.load_evaluation(run, request, metrics["weights_sha256"])


def _scores(accuracy):
    """A saved evaluation's result: what a comparison reads of it (evaluations.FIELDS)."""
    return {"accuracy": accuracy, "loss": 0.1, "num_examples": 10}


def test_a_comparison_after_a_run_trained_on_scores_its_new_weights(tmp_path):
    """A finished run trained on (its metrics.json deleted, --epochs raised, as reliability.md says) kept its
    comparison's saved evaluations, which then answered for the new weights: test accuracy, NLL and MC scores of
    the old model beside the new model's train accuracy, without a word."""
    from dropzoo import trainer

    run = str(tmp_path / "run")
    source = tiny_source()
    trainer.train_and_evaluate(tiny_config(epochs=1), run, source=source, verbose=0, serving_artifacts=False)
    with open(os.path.join(run, "metrics.json")) as f:
        first = json.load(f)["weights_sha256"]
    older = evaluations.make_request(sources.fingerprint(source), mc_samples=3, mc_seed=0)
    with open(evaluations.evaluation_path(run, older), "w") as f:  # as older code saved it: no weights named
        json.dump({"request": older, "data_source": "tiny", "result": _scores(0.123)}, f)
    assert evaluations.load_evaluation(run, older, first)["result"] == _scores(0.123)
    mc = evaluations.make_request(sources.fingerprint(source), mc_samples=4, mc_seed=0)
    evaluations.save_evaluation(run, mc, "tiny", _scores(0.456), first)
    # Weights not known (eval.py --workdir on a run without its metrics.json): it answers for no known weights.
    unknown = evaluations.make_request("u" * 64)
    assert evaluations.save_evaluation(run, unknown, "tiny", _scores(0.5), None)
    assert evaluations.load_evaluation(run, unknown, first) is None
    assert evaluations.load_evaluation(run, unknown, None)["result"] == _scores(0.5)  # a run that names none
    os.makedirs(os.path.join(run, "evaluations", "odd.json"))  # and a killed write's leftover: neither stops it
    with open(os.path.join(run, "evaluations", "x.tmp-1.json"), "w") as f:
        f.write("{")
    shutil.copy(evaluations.evaluation_path(run, mc), str(tmp_path / "backup.json"))
    os.remove(os.path.join(run, "metrics.json"))
    os.remove(os.path.join(run, "config.json"))
    metrics = trainer.train_and_evaluate(tiny_config(epochs=2), run, source=source, verbose=0,
                                         serving_artifacts=False)
    assert metrics["weights_sha256"] != first
    for request in (older, unknown):  # naming no weights: removed as it trained
        assert not os.path.exists(evaluations.evaluation_path(run, request))
    assert not os.path.exists(os.path.join(run, "evaluations", "x.tmp-1.json"))
    assert evaluations.load_evaluation(run, mc, metrics["weights_sha256"]) is None  # of the earlier weights
    assert evaluations.load_evaluation(run, mc, first)["result"] == _scores(0.456)  # (kept: they name theirs)
    shutil.copy(str(tmp_path / "backup.json"), evaluations.evaluation_path(run, mc))  # restored from a backup
    assert evaluations.load_evaluation(run, mc, metrics["weights_sha256"]) is None


def test_a_collect_stopped_midway_leaves_no_half_copied_record(tmp_path, monkeypatch):
    """Files were copied in place: a collect stopped while copying metrics.json left part of it, the finished-run
    marker, in the copy."""
    run = tmp_path / "m1" / "dense_mlp" / "canonical" / "seed0"
    (run / "evaluations").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"seed": 0}))
    (run / "metrics.json").write_text(json.dumps({"weights_sha256": "aaa", "config": {"seed": 0}}))
    (run / "evaluations" / "e.json").write_text("{}")
    copyfile = shutil.copyfile

    def stopped(source, target):
        if source.endswith("metrics.json"):
            with open(target, "w") as f:
                f.write('{"weights_sha')
            raise KeyboardInterrupt
        return copyfile(source, target)

    monkeypatch.setattr(collect.shutil, "copyfile", stopped)
    with pytest.raises(KeyboardInterrupt):
        collect.collect([str(tmp_path / "m1")], str(tmp_path / "collected"))
    copy = tmp_path / "collected" / "dense_mlp" / "canonical" / "seed0"
    assert sorted(os.listdir(copy)) == ["config.json", "evaluations"]  # no metrics.json, whole or in part
    monkeypatch.setattr(collect.shutil, "copyfile", copyfile)
    assert len(collect.collect([str(tmp_path / "m1")], str(tmp_path / "collected"))) == 1  # run again: whole
    assert json.loads((copy / "metrics.json").read_text())["weights_sha256"] == "aaa"


def test_a_collect_never_replaces_another_runs_records(tmp_path):
    """Seed 0 trained on two machines: collecting both into one directory would silently keep one."""
    from dropzoo.errors import ConfigError

    def run(root, weights):
        path = tmp_path / root / "dense_mlp" / "canonical" / "seed0"
        path.mkdir(parents=True)
        (path / "metrics.json").write_text(json.dumps({"weights_sha256": weights, "config": {"seed": 0}}))
        return str(tmp_path / root)

    first, second, target = run("m1", "aaa"), run("m2", "bbb"), str(tmp_path / "collected")
    assert len(collect.collect([first], target)) == 1
    assert len(collect.collect([first], target)) == 1  # the same run again: refreshed
    held = os.path.join(target, "dense_mlp", "canonical", "seed0", "metrics.json")
    with pytest.raises(ConfigError, match=r"seed0 already holds another run \(other weights\) than .*m2/dense_mlp/"
                                          r"canonical/seed0, which would replace its records"):
        collect.collect([second], target)
    with open(held) as f:
        assert json.load(f)["weights_sha256"] == "aaa"  # nothing replaced
    # Two sweeps that each varied one thing only name their variants alike: said as such, not as two machines.
    other = tmp_path / "m3" / "dense_mlp" / "canonical" / "seed0"
    other.mkdir(parents=True)
    (other / "metrics.json").write_text(json.dumps({"weights_sha256": "ccc",
                                                    "config": {"seed": 0, "learning_rate": 0.5}}))
    with pytest.raises(ConfigError, match=r"replace its records: they trained other settings \(learning_rate\) "
                                          r"under one variant name"):
        collect.collect([str(tmp_path / "m3")], target)
    # One setting written two ways (a data path from elsewhere, sites spaced): one variant, as a resume reads it.
    sites = "dense1.post:0.5,pool1.post:0.25"
    for root, config in (("m4", {"seed": 0, "idx_dir": "data/mnist", "sites": sites.replace(",", ", ")}),
                         ("m5", {"seed": 0, "idx_dir": "/home/me/data/mnist", "sites": sites})):
        run_dir = tmp_path / root / "dense_mlp" / "canonical" / "seed0"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"weights_sha256": root, "config": config}))
    collect.collect([str(tmp_path / "m4")], str(tmp_path / "spelled"))
    with pytest.raises(ConfigError, match=r"replace its records: two machines trained one variant and seed"):
        collect.collect([str(tmp_path / "m5")], str(tmp_path / "spelled"))
    # Other data under another path (told by the digests the records hold), or a record whose config is unreadable.
    for root, record in (("m6", {"config": {"seed": 0, "idx_dir": "data/mnist"}, "data": {"test_sha256": "aaa"}}),
                         ("m7", {"config": {"seed": 0, "idx_dir": "data/fashion"}, "data": {"test_sha256": "bbb"}}),
                         ("m8", {"config": {"seed": 0, "epochs": "12"}})):  # (a string: no config.json reads so)
        run_dir = tmp_path / root / "dense_mlp" / "canonical" / "seed0"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"weights_sha256": root, **record}))
    collect.collect([str(tmp_path / "m6")], str(tmp_path / "data"))
    with pytest.raises(ConfigError, match=r"replace its records: they trained other settings \(data\)"):
        collect.collect([str(tmp_path / "m7")], str(tmp_path / "data"))
    with pytest.raises(ConfigError, match=r"replace its records: their records cannot be compared"):
        collect.collect([str(tmp_path / "m8")], str(tmp_path / "data"))
    with pytest.raises(ConfigError, match=r"^--collect .*m1/copy is inside --runs_dir .*m1: a later collect"):
        collect.collect([first], os.path.join(first, "copy"))
    # Two runs directories whose runs lie at the same path below them: refused before anything is copied.
    fresh = str(tmp_path / "fresh")
    with pytest.raises(ConfigError, match=r"m1/dense_mlp/canonical/seed0 and .*m2/dense_mlp/canonical/seed0 \(other "
                                          r"weights\) would both be collected into .*fresh/dense_mlp/canonical/seed0"):
        collect.collect([first, second], fresh)
    assert not os.path.exists(fresh)
    # The same run found twice (a copy beside its original): copied, and counted, once.
    copy = str(tmp_path / "copy")
    collect.collect([first], copy)
    assert len(collect.collect([first, copy], fresh)) == 1
    # Runs directories that overlap: each run once.
    assert len(collect.collect([first, os.path.join(first, "dense_mlp")], str(tmp_path / "overlap"))) == 1
    # A run that would land inside another (one runs directory is itself a run): refused, as a comparison
    # would never find the inner one.
    with pytest.raises(ConfigError, match=r"would put the run at .*nested/dense_mlp/canonical/seed0 inside the run "
                                          r"at .*nested, where a comparison would not find it"):
        collect.collect([os.path.join(second, "dense_mlp", "canonical", "seed0"), first], str(tmp_path / "nested"))


def test_a_run_identical_by_construction_is_collected_only_with_the_run_it_points_at(tmp_path):
    """Its record holds the trained run's numbers by reference: pointing at another run would give it those."""
    from dropzoo.errors import ConfigError

    def run(root, variant, weights, identical=False):
        path = tmp_path / root / "dense_mlp" / variant / "seed0"
        path.mkdir(parents=True)
        record = {"weights_sha256": weights, "config": {"seed": 0, "model": "dense_mlp", "placement": variant},
                  "data": {"origin": {}}}
        (path / "metrics.json").write_text(json.dumps(
            {**record, "identical_to": "../../canonical/seed0"} if identical else record))
        return str(path)

    run("a", "canonical", "aaa")
    twin = run("a", "before_activation", "aaa", identical=True)
    run("e", "canonical", "eee")  # another machine's canonical seed 0
    with pytest.raises(ConfigError, match=r"before_activation/seed0 is recorded identical by construction to "
                                          r".*a/dense_mlp/canonical/seed0, which is not collected"):
        collect.collect([os.path.dirname(twin)], str(tmp_path / "alone"))
    mixed = str(tmp_path / "mixed")
    collect.collect([str(tmp_path / "e")], mixed)
    with pytest.raises(ConfigError, match=r"but .*mixed/dense_mlp/canonical/seed0 holds another run \(other weights\)"):
        collect.collect([str(tmp_path / "a" / "dense_mlp" / "before_activation")], os.path.join(mixed, "dense_mlp",
                                                                                                "before_activation"))
    assert len(collect.collect([str(tmp_path / "a")], str(tmp_path / "both"))) == 2
    # Records put together by hand: the comparison refuses the twin rather than score it as the other run.
    target = tmp_path / "mixed" / "dense_mlp" / "before_activation" / "seed0"
    target.mkdir(parents=True)
    (target / "metrics.json").write_text((tmp_path / "a" / "dense_mlp" / "before_activation" / "seed0" /
                                          "metrics.json").read_text())
    with pytest.raises(RunError, match=r"before_activation/seed0 is recorded identical by construction to .*mixed/"
                                       r"dense_mlp/canonical/seed0, which holds another run \(other weights\)"):
        records.evaluate_runs([str(target)])


def test_unfinished_runs_are_named_not_silently_left_out(tmp_path):
    for seed, names in [(0, ("config.json", "metrics.json")), (1, ("config.json",)), (2, ())]:
        run = tmp_path / "m" / "canonical" / f"seed{seed}"
        run.mkdir(parents=True)
        for name in names:
            (run / name).write_text("{}")
    assert workdirs.unfinished_runs([str(tmp_path)]) == [str(tmp_path / "m" / "canonical" / "seed1")]
    assert workdirs.unfinished_note([str(tmp_path)]) == (
        f"1 unfinished run(s) left out (no metrics.json yet): {tmp_path}/m/canonical/seed1; rerun their train.py "
        "command to finish them")
    # Abandoned on one machine and finished on another (its rerun went there): not "left out"; a run of another
    # config at the same path (another study of one layout) is not that run.
    config = tiny_config(seed=1).to_dict()
    (tmp_path / "m" / "canonical" / "seed1" / "config.json").write_text(json.dumps(config))
    other = tmp_path / "other"
    (other / "m" / "canonical" / "seed1").mkdir(parents=True)
    (other / "m" / "canonical" / "seed1" / "metrics.json").write_text("{}")
    for epochs, left in ((config["epochs"] + 1, 1), (config["epochs"], 0)):
        (other / "m" / "canonical" / "seed1" / "config.json").write_text(json.dumps({**config, "epochs": epochs}))
        assert len(workdirs.unfinished_runs([str(tmp_path), str(other)])) == left
    (tmp_path / "m" / "canonical" / "seed1" / "config.json").write_text("{not json")  # not known to be that run
    assert len(workdirs.unfinished_runs([str(tmp_path), str(other)])) == 1
    (tmp_path / "m" / "canonical" / "seed1" / "metrics.json").write_text("{}")
    assert workdirs.unfinished_note([str(tmp_path)]) is None


def _record(run, config, origin, fallback_reason="", **digests):
    os.makedirs(run)
    with open(os.path.join(run, "metrics.json"), "w") as f:
        json.dump({"config": config, "data": {"origin": origin, "fallback_reason": fallback_reason, **digests}}, f)
    return str(run)


def test_runs_of_one_data_whose_content_changed_between_them_are_refused(tmp_path):
    # A sweep's run left out, the folder grown by three images, the sweep rerun: that run trained (and was
    # tested) on other images, and was paired by seed with the others without a word.
    folder = {"image_dir": str(tmp_path / "imgs"), "test_image_dir": None, "image_size": None,
              "color_mode": "grayscale"}
    config = tiny_config(image_dir="imgs").to_dict()
    a = _record(tmp_path / "a", config, folder, train_sha256="1" * 64, test_sha256="a" * 64)
    b = _record(tmp_path / "b", config, folder, train_sha256="1" * 64, test_sha256="a" * 64)
    pooled_data.check([a, b])
    grown = _record(tmp_path / "grown", config, folder, train_sha256="2" * 64, test_sha256="b" * 64)
    with pytest.raises(ConfigError, match=r"^the runs trained on 2 different contents of one data "
                                          r"\(111111111111\.\.\.: 2 run\(s\), e\.g\. .*; 222222222222\.\.\.: 1 "
                                          r"run\(s\), e\.g\. .*grown\): it changed between them"):
        pooled_data.check([a, b, grown])
    retested = _record(tmp_path / "retested", config, folder, train_sha256="1" * 64, test_sha256="b" * 64)
    with pytest.raises(ConfigError, match=r"^the runs tested on 2 different contents of one data"):
        pooled_data.check([a, retested])
    pooled_data.check([a, retested], own_test=False)  # each scored on data given to the comparison
    pooled_data.check([a, _record(tmp_path / "old", config, folder)])  # older records hold no digests
    # --image_dir=imgs typed on two machines (other working directories): one variant, so one content.
    there = _record(tmp_path / "there", config, {**folder, "image_dir": "/elsewhere/imgs"}, train_sha256="3" * 64)
    with pytest.raises(ConfigError, match=r"^the runs trained on 2 different contents of one data .*differs where "
                                          r"they ran \(another machine's copy"):
        pooled_data.check([a, there])
    # Runs of two callers' Sources (the API's source=): their configs name the default dataset, their records each
    # its own arrays; two data, not "2 different contents of one data" (the contrasts check each pair's data).
    api = tiny_config(dataset="mnist").to_dict()
    pooled_data.check([_record(tmp_path / "x", api, {"dataset": "tiny"}, train_sha256="4" * 64),
                       _record(tmp_path / "y", api, {"dataset": "other"}, train_sha256="5" * 64)])
    # At one --train_size, other examples kept (another machine's subset code or NumPy): pooled as one, unsaid.
    sized = tiny_config(image_dir="imgs", train_size=8).to_dict()
    kept = _record(tmp_path / "kept", sized, folder, train_sha256="1" * 64, train_subset_sha256="6" * 64)
    other = _record(tmp_path / "other", sized, folder, train_sha256="1" * 64, train_subset_sha256="7" * 64)
    with pytest.raises(ConfigError, match=r"^the runs trained on 2 different contents of one data \(111111111111\.\.\. "
                                          r"\(subset 666666666666\.\.\.\): 1 run\(s\), e\.g\. .*kept; 111111111111"):
        pooled_data.check([kept, other])
    smaller = _record(tmp_path / "smaller", tiny_config(image_dir="imgs", train_size=4).to_dict(), folder,
                      train_sha256="1" * 64, train_subset_sha256="8" * 64)
    pooled_data.check([kept, smaller])  # two sizes: two variants, each its own subset


def test_runs_of_a_data_sweep_that_trained_on_other_data_are_refused(tmp_path):
    # A sweep over --color_mode once trained every run on the first run's data, each recording its own config.
    def config(**data):
        return tiny_config(image_dir="imgs", **data).to_dict()  # "tiny" beside it: records are read as they are

    folder = {"image_dir": str(tmp_path / "imgs"), "test_image_dir": None, "image_size": None}
    gray = _record(tmp_path / "gray", config(color_mode="grayscale"), {**folder, "color_mode": "grayscale"})
    rgb = _record(tmp_path / "rgb", config(color_mode="rgb"), {**folder, "color_mode": "grayscale"})
    with pytest.raises(ConfigError, match=r"rgb trained on other data than its config names \(--color_mode=rgb, not "
                                          r"grayscale\): a sweep over --color_mode once trained every run on its "
                                          r"first run's data, and a run given source= from Python keeps its "
                                          r"config's data at the defaults; train it again"):
        pooled_data.check([gray, rgb])
    fine = _record(tmp_path / "fine", config(color_mode="rgb"), {**folder, "color_mode": "rgb"})
    pooled_data.check([gray, fine])
    # Nothing varies: a caller's source (the API) is what a run records, whatever its config's defaults say.
    pooled_data.check([_record(tmp_path / "api", tiny_config().to_dict(), {"dataset": "tiny"})])
    # Paths as typed, relative to where the runs started: not compared.
    relative = [_record(tmp_path / f"rel{name}", tiny_config(dataset=name, tfds_data_dir="data/tfds").to_dict(),
                        {"dataset": name, "tfds_data_dir": "data/tfds"}) for name in ("kmnist", "fashion_mnist")]
    pooled_data.check(relative)
    # MNIST unreachable, the embedded sample stood in: fine where the data does not vary (nothing to check), but
    # in a sweep over --dataset its variant would be compared as data it never saw (mnist beside mnist_sample).
    sample = _record(tmp_path / "sample", tiny_config(dataset="mnist").to_dict(), {"dataset": "mnist_sample"},
                     "offline")
    pooled_data.check([sample])
    alone = _record(tmp_path / "alone", tiny_config(dataset="mnist_sample").to_dict(), {"dataset": "mnist_sample"})
    with pytest.raises(ConfigError, match=r"sample trained on other data than its config names \(--dataset=mnist, "
                                          r"not mnist_sample: the network was unreachable, and the embedded sample "
                                          r"stood in\)"):
        pooled_data.check([sample, alone])


def test_records_alone_answer_an_mc_and_ood_request_with_an_evaluation_from_before_its_own_ood_seeds(tmp_path):
    # Since the OOD pass took MC seeds of its own, such a request has another id: collected records (no SavedModel
    # to evaluate again) were refused, saying to compare with the MC and OOD data they hold, which they did.
    run = str(tmp_path / "run")
    request = evaluations.make_request("d" * 64, mc_samples=20, mc_seed=0, ood_sha256="o" * 64)
    older = {k: v for k, v in request.items() if k != "ood_seeds"}
    assert request["ood_seeds"] == "after_test" and evaluations.request_id(older) != evaluations.request_id(request)
    evaluations.save_evaluation(run, older, "idx:mnist", _scores(0.9), "w" * 64)
    assert evaluations.load_evaluation(run, request, "w" * 64)["result"] == _scores(0.9)
    os.makedirs(os.path.join(run, "saved_model"))  # evaluated again where the export is here
    assert evaluations.load_evaluation(run, request, "w" * 64) is None
    plain = evaluations.make_request("d" * 64, mc_samples=20, mc_seed=0)  # no OOD: its id as it always was
    assert "ood_seeds" not in plain and evaluations.load_evaluation(run, plain, "w" * 64) is None


@pytest.mark.parametrize("edit, wrong", [
    (lambda saved: saved["result"].pop("loss"), "no result.loss"),
    (lambda saved: saved["result"].update(accuracy=None), "result.accuracy is null, not an integer or a number"),
    (lambda saved: saved["result"].update(accuracy="0.97"), 'result.accuracy is "0.97", not an integer or a number'),
    (lambda saved: saved.update(result=[]), "result is not an object"),
    (lambda saved: saved["result"].update(accuracy=97.2), "accuracy 97.2 outside 0..1"),
    (lambda saved: saved["result"].update(loss=-0.5), "NLL -0.5 below 0"),
])
def test_a_saved_evaluation_missing_a_score_or_out_of_range_is_refused_by_name(tmp_path, edit, wrong):
    # Each was a traceback (KeyError, TypeError, AttributeError), or, for a percent given as a fraction,
    # a comparison reading "-962.04 points" without a word.
    saved = {"data_source": "d", "request": {}, "result": {"accuracy": 0.97, "loss": 0.1, "num_examples": 10}}
    edit(saved)
    path = tmp_path / "e.json"
    path.write_text(json.dumps(saved))
    with pytest.raises(files.ReadError) as info:
        evaluations.read(str(path), "delete it and compare again")
    assert str(info.value) == f"{path} is corrupt ({wrong}); delete it and compare again"


def test_a_metrics_record_without_what_a_comparison_reads_is_refused_by_name(tmp_path):
    run = tmp_path / "m" / "canonical" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"data": {"origin": {}}, "test_accuracy": 0.9}))
    with pytest.raises(files.ReadError, match=r"metrics.json is corrupt \(no config\); delete it and rerun that "
                                              r"run's train.py command to re-measure it"):
        pooled_data.check([str(run)])
    (run / "metrics.json").write_text(json.dumps({"config": {"model": "m", "placement": "canonical", "seed": "0"},
                                                  "data": {"origin": {}}}))
    with pytest.raises(files.ReadError, match=r"\(config.seed is \"0\", not an integer\)"):
        pooled_data.check([str(run)])


def test_an_evaluation_read_for_data_not_here_is_of_the_data_named(tmp_path):
    """held_instead, case by case: what a record's evaluations may answer for data that cannot be loaded here."""
    mnist, own, other = idx.TEST_FINGERPRINTS["mnist"], idx.TEST_FINGERPRINTS["fashion_mnist"], "a" * 64
    result = {"accuracy": 0.9, "loss": 0.3, "num_examples": 10}
    for data, source, ood, ood_source in ((own, "idx:/f", None, None), (other, "npz:/o.npz", None, None),
                                          (own, "idx:/f", mnist, "idx:/m")):
        evaluations.save_evaluation(str(tmp_path), evaluations.make_request(data, ood_sha256=ood), source,
                                    {**result, **({"ood_data_source": ood_source} if ood else {})}, "w")
    gone = DataError("not here")

    def held(asked, ood=None):
        return evaluations.held_instead(str(tmp_path), evaluations.make_request(None), "w", [], own, (asked, gone),
                                        (ood, ood and gone))

    assert held({"npz": "/gone.npz"})["data_source"] == "npz:/o.npz"  # by path: the one evaluation of other data
    assert held({"dataset": "fashion_mnist"})["data_source"] == "idx:/f"  # by name: the runs' own, known to be it
    # The default dataset (mnist), asked with --tfds_data_dir alone, is not answered by the npz's scores.
    with pytest.raises(DataError, match=r"^not here; the runs' records hold evaluations of other data only "
                                        r"\(idx:/f, npz:/o.npz\), not known to be mnist's"):
        held({"tfds_data_dir": "/nowhere"})
    assert held({"dataset": "fashion_mnist"}, {"dataset": "mnist"})["result"]["ood_data_source"] == "idx:/m"
    # The OOD data here (its fingerprint in the request), the test data not: the OOD scores held are of it.
    said = []
    evaluations.held_instead(str(tmp_path), evaluations.make_request(None, ood_sha256=mnist), "w", said, own,
                             ({"dataset": "fashion_mnist"}, gone), ({"idx_dir": "/m"}, None))
    assert said[0].endswith("with the out-of-distribution data they hold (idx:/m, sha256 " + mnist[:12] + "...)")
    # Only the OOD data is not known to be what was named: the error is about it, not the test data.
    with pytest.raises(DataError, match=r"^not here; .* \(idx:/m\), not known to be kmnist's"):
        held({"dataset": "fashion_mnist"}, {"dataset": "kmnist"})


def test_a_source_rebuilt_under_its_name_with_other_test_images_is_said(tmp_path):
    """A notebook's array_source rebuilt under the same name with another test slice: the comparison scored the new
    slice, and said only "Test data: tiny"."""
    from dropzoo import trainer

    run = str(tmp_path / "runs" / "dense_mlp" / "canonical" / "seed1")
    trainer.train_and_evaluate(tiny_config(epochs=1), run, source=tiny_source(), verbose=0, serving_artifacts=False)
    same = compare.compare_runs(str(tmp_path / "runs"), source=tiny_source(), output_dir=str(tmp_path / "a"))
    assert not any("bears the name" in n for n in same["notes"])
    (x_train, y_train), (x_test, y_test) = tiny_arrays()
    other = sources.array_source("tiny", (x_train, y_train), (x_test[::-1][:30], y_test[::-1][:30]))
    moved = compare.compare_runs(str(tmp_path / "runs"), source=other, output_dir=str(tmp_path / "b"))
    assert any(n.startswith("source= 'tiny' bears the name of the test data 1 run(s) recorded, but holds other "
                            f"images (e.g. {run}'s)") for n in moved["notes"]), moved["notes"]
