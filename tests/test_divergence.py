"""A run whose training diverged is recorded, kept, refused when run again, carried and counted by a comparison.

The trainer stopped such a run with an error and wrote no metrics.json (in its first epoch it removed the run's
directory): a comparison then gave a full verdict on the seeds that survived, which flatter a variant that diverges.
"""
import dataclasses
import json
import os

import pytest
from conftest import tiny_config
from conftest import tiny_source

from dropzoo import callbacks as callbacks_lib
from dropzoo import client
from dropzoo import collect
from dropzoo import compare
from dropzoo import divergence
from dropzoo import outcomes
from dropzoo import sweep
from dropzoo import trainer
from dropzoo import workdir as workdirs
from dropzoo.errors import ConfigError
from dropzoo.errors import ExportError
from dropzoo.errors import RunError


def _diverge_seed(monkeypatch, seed):
    """Training of `seed` diverges in its first epoch (its weights not finite, as ReLU hides NaN from the loss)."""
    real = callbacks_lib.diverged

    def diverged(model, logs=None):
        return trainer_seed[0] == seed or real(model, logs)

    trainer_seed = [None]
    original = trainer._train_export_verify

    def train(config, *args, **kwargs):
        trainer_seed[0] = config.seed
        return original(config, *args, **kwargs)

    monkeypatch.setattr(callbacks_lib, "diverged", diverged)
    monkeypatch.setattr(trainer, "_train_export_verify", train)


@pytest.mark.slow
def test_a_diverged_seed_makes_its_variants_contrasts_inconclusive(tmp_path, monkeypatch):
    root = tmp_path / "study"
    runs = [(c, sweep.run_dir(str(root), c)) for c in sweep.expand(
        tiny_config(epochs=1), {"placement": ["canonical", "none", "after_activation"]}, seeds=3)]
    _diverge_seed(monkeypatch, 2)
    results = sweep.run_sweep(runs, source=tiny_source(), verbose=0)
    failed = [workdir for _, workdir, outcome in results if isinstance(outcome, str)]  # (its one line)
    assert len(failed) == 3 and all(w.endswith("seed2") for w in failed)  # each placement's seed 2
    # after_activation is canonical by construction (ReLU): not trained, and recorded as diverged too.
    follower = divergence.read(str(root / "dense_mlp" / "after_activation" / "seed2"))
    assert follower["identical_to"] == "../../canonical/seed2" and follower["config"]["placement"] == "after_activation"
    lost = root / "dense_mlp" / "none" / "seed2"
    record = divergence.read(str(lost))
    assert record["epoch"] == 1 and record["config"]["seed"] == 2 and record["config"]["placement"] == "none"
    assert (lost / "config.json").exists() and not (lost / "metrics.json").exists()  # kept, not removed
    monkeypatch.undo()
    # The sweep again at another rate in the same workdir (the trainer's advice): its runs are refused, and the
    # follower's record is not rewritten as though that rate had diverged.
    lower = [(dataclasses.replace(c, learning_rate=0.001), w) for c, w in runs]
    with pytest.raises(RunError, match=r"^9 of the 9 runs of this sweep hold runs with other settings"):
        sweep.run_sweep(lower, source=tiny_source(), verbose=0)  # (before any trains)
    (target,), (follower,) = ([(c, w) for c, w in lower if w.endswith(f"{p}/seed2")] for p in ("/canonical",
                                                                                            "after_activation"))
    refused = "RunError: workdir ... holds a run with other settings"  # (the target's outcome, refused alone)
    assert sweep._identical(*follower, (*target, refused)).endswith("which failed")  # (under its lock too)
    assert divergence.read(str(root / "dense_mlp" / "after_activation" / "seed2"))["config"]["learning_rate"] == 0.003
    # Run again, it would diverge again: refused in one line, and its record stays.
    config = next(c for c, w in runs if w == str(lost))
    with pytest.raises(divergence.Before):  # (also where only how it executes differs)
        trainer.train_and_evaluate(dataclasses.replace(config, steps_per_execution=2), str(lost),
                                   source=tiny_source(), verbose=0)
    with pytest.raises(RunError, match=r"^this run diverged in training before \(its loss or weights became "
                                       r"NaN/inf in epoch 1; .*diverged.json\): run again it would diverge again"):
        trainer.train_and_evaluate(config, str(lost), source=tiny_source(), verbose=0)
    assert divergence.read(str(lost)) is not None
    text, refused = sweep.dry_run(runs, source=tiny_source())
    assert refused == 0 and f"{lost}  " in text and "(diverged in epoch 1: recorded, kept)" in text
    assert text.endswith("9 run(s), 6 finished, 3 diverged before (kept), 0 to train; nothing was written (--dry_run)")
    # The sweep run again: its outcome is recorded, so it fails nothing (an array task rerun by its scheduler ends).
    again = sweep.run_sweep(runs, source=tiny_source(), verbose=0)
    assert not outcomes.failed(again) and sum(isinstance(o, outcomes.Diverged) for _, _, o in again) == 3
    assert f"{lost}  DIVERGED in epoch 1 when it was trained" in outcomes.summary(again)
    # Compared: each contrast of a variant with a diverged seed is inconclusive, and a note names the runs.
    result = compare.compare_runs(str(root), source=tiny_source(), output_dir=str(tmp_path / "cmp"),
                                  contrasts=[("canonical", "none")])
    (entry,) = result["contrasts"]
    assert entry["diverged"] == {"dense_mlp/canonical": [2], "dense_mlp/none": [2]}
    assert entry["test_accuracy"]["verdict"] == ["inconclusive"] and entry["test_accuracy"]["n"] == 2
    assert any(note.startswith("3 run(s) diverged in training (their diverged.json), each counted as a diverged "
                               "seed of its variant (no scores: left out of every mean, and its contrasts "
                               "inconclusive): ") for note in result["notes"])
    assert not any(" scores test_accuracy nan" in note for note in result["notes"])  # (said once, above)
    assert not any("unfinished" in note for note in result["notes"])
    assert {e["variant"]: e["seeds"] for e in result["table"]} == {
        "dense_mlp/canonical": 3, "dense_mlp/none": 3, "dense_mlp/after_activation": 3}
    # The follower is still canonical by construction: not contrasted with it, nor counted in the Holm family.
    both = compare.compare_runs(str(root), source=tiny_source(), output_dir=str(tmp_path / "cmp3"),
                                contrasts=[("after_activation", "canonical"), ("canonical", "none")])
    assert [e["identical"] for e in both["contrasts"]] == [True, False]
    # Carried to another machine with the finished runs: the copy compares alike.
    copied = collect.collect(str(root), str(tmp_path / "collected"))
    assert str(tmp_path / "collected" / "dense_mlp" / "none" / "seed2") in copied
    copy = compare.compare_runs(str(tmp_path / "collected"), source=tiny_source(),
                                output_dir=str(tmp_path / "cmp2"), contrasts=[("canonical", "none")])
    assert copy["contrasts"][0]["diverged"] == entry["diverged"]
    # The same seed finished elsewhere (another machine): one variant and seed trained twice, refused, not dropped.
    elsewhere = tmp_path / "elsewhere" / "dense_mlp" / "none" / "seed2"
    trainer.train_and_evaluate(config, str(elsewhere), source=tiny_source(), verbose=0, serving_artifacts=False)
    with pytest.raises(ConfigError, match=r"are the same variant \(dense_mlp/none\) and seed \(2\), trained apart"):
        compare.compare_runs([str(root), str(tmp_path / "elsewhere")], source=tiny_source(),
                             output_dir=str(tmp_path / "cmp4"))
    with pytest.raises(ConfigError, match=r"diverged in training, and .*elsewhere.* finished with the same path"):
        collect.collect([str(root), str(tmp_path / "elsewhere")], str(tmp_path / "both"))
    assert not (tmp_path / "both").exists()  # refused before anything was copied
    # --overwrite trains it anew (here it does not diverge), and the record goes.
    metrics = trainer.train_and_evaluate(config, str(lost), overwrite=True, source=tiny_source(), verbose=0)
    assert metrics["config"]["seed"] == 2 and divergence.read(str(lost)) is None
    # Its target retrained (finished now), the follower is derived again: identical to it, not diverged.
    target = root / "dense_mlp" / "canonical" / "seed2"
    follower = root / "dense_mlp" / "after_activation" / "seed2"
    trainer.train_and_evaluate(next(c for c, w in runs if w == str(target)), str(target), overwrite=True,
                               source=tiny_source(), verbose=0, serving_artifacts=False)
    stale = compare.compare_runs(str(root), source=tiny_source(), output_dir=str(tmp_path / "cmp5"))
    assert any(note.startswith("1 run(s) recorded as diverged by construction, like a run that has been trained "
                               "again since, left out: ") for note in stale["notes"])  # (not compared as diverged)
    assert not outcomes.failed(sweep.run_sweep(runs, source=tiny_source(), verbose=0))
    assert divergence.read(str(follower)) is None and (follower / "metrics.json").exists()
    # And the other way: the target retrained and diverging, its follower's record of the finished run goes.
    _diverge_seed(monkeypatch, 2)
    with pytest.raises(RunError, match="^training diverged"):
        trainer.train_and_evaluate(next(c for c, w in runs if w == str(target)), str(target), overwrite=True,
                                   source=tiny_source(), verbose=0)
    monkeypatch.undo()
    sweep.run_sweep(runs, source=tiny_source(), verbose=0)
    assert divergence.read(str(follower))["identical_to"] == "../../canonical/seed2"
    assert not (follower / "metrics.json").exists()


def test_every_run_diverged_is_said_not_called_unfinished(tmp_path):
    """First-epoch divergence removed the run's directory: a study of diverged runs looked like no study at all."""
    config = tiny_config(optimizer="sgd", learning_rate=1e12, epochs=1)
    with pytest.raises(RunError, match=r"^training diverged \(its loss or weights became NaN/inf in epoch 1\); "
                                       r"recorded in .*diverged.json, which a comparison counts"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"), source=tiny_source(), verbose=0)
    with open(tmp_path / "run" / "diverged.json") as f:
        assert json.load(f)["config"]["learning_rate"] == 1e12
    # Another command in its workdir (a lower rate) is not told the diverged run is its outcome: other settings.
    with pytest.raises(RunError, match=r"holds a run with other settings: --learning_rate \(1000000000000.0 -> "
                                       r"0.001\)"):
        trainer.train_and_evaluate(tiny_config(optimizer="sgd", learning_rate=0.001, epochs=1), str(tmp_path / "run"),
                                   source=tiny_source(), verbose=0)
    with pytest.raises(divergence.Before):  # its own command: its recorded outcome
        trainer.train_and_evaluate(config, str(tmp_path / "run"), source=tiny_source(), verbose=0)
    with pytest.raises(ValueError, match=r"^no finished runs below .* yet: the 1 run\(s\) there diverged in training "
                                         r"\(each its diverged.json\)"):
        compare.compare_runs(str(tmp_path), source=tiny_source())
    assert os.path.isfile(tmp_path / "run" / "config.json")
    # Collected, a directory of diverged runs alone is carried (a machine whose seeds all diverged).
    assert collect.collect(str(tmp_path), str(tmp_path.parent / f"{tmp_path.name}-copy")) == [
        str(tmp_path.parent / f"{tmp_path.name}-copy" / "run")]
    # Served or scored, it is named as diverged (it said "rerun its train.py command to finish it").
    with pytest.raises(ExportError, match=r"^.*run is a run whose training diverged \(its loss or weights became "
                                          r"NaN/inf in epoch 1; .*\): it has no export and no scores"):
        client.export_of(str(tmp_path / "run"))
    assert "its training diverged (in epoch 1; " in workdirs.reexport_fix(str(tmp_path / "run"), "it")


def test_a_controls_divergence_at_a_rate_without_a_finished_run_is_counted(tmp_path):
    """The control (no dropout: one network at every rate) diverged at a rate where none of its runs finished: it
    was said to be 'not in this comparison', and the pooled control's verdicts named no divergence."""
    from dropzoo import config as config_lib
    from dropzoo import records
    from dropzoo import variants

    def config(rate, seed):
        return config_lib.TrainConfig(model="m", placement="none", rate=rate, seed=seed).to_dict()

    finished = {"run": "r/none-rate0.5/seed0", "seed": 0, "config": config(0.5, 0), "sites": "", "precision": "float32",
                "mask_generator": None, "test_accuracy": 0.9, "data_source": "d", "data_sha256": "abc"}
    run = tmp_path / "none-rate0.2" / "seed1"
    run.mkdir(parents=True)
    divergence.write(str(run), 2, {"config": config(0.2, 1), "placement_sites": "", "mask_generator": None,
                                   "precision": {"policy": "float32"}, "data": {}})
    made, notes = divergence.rows([str(run)], [finished], records.row, variants.row_key)
    assert [(r["seed"], r["config"]["rate"], r["data_sha256"]) for r in made] == [(1, 0.2, "abc")]
    assert made[0]["test_accuracy"] != made[0]["test_accuracy"]  # NaN
    assert notes[0].startswith("1 run(s) diverged in training")


def test_a_variant_whose_every_seed_diverged_stays_in_the_comparison(tmp_path):
    """Every seed of a variant diverged: it left the comparison with a note (no finished run of its variant to take
    the test data from), and the rest were labelled without the setting it swept, so a planned contrast with it
    matched no variant. Its rows now take the test data of a run trained on the same data; a rate grid whose every
    run of a placement diverged is its lowest rate, not a refusal. A diverged row takes no other run's reliability
    table (the plot pooled that run twice)."""
    from dropzoo import config as config_lib
    from dropzoo import records
    from dropzoo import variants

    data = {"train_sha256": "t", "train_subset_sha256": "s"}  # (a --train_size of its own: the same test data)
    finished = [{"run": f"r/none/seed{s}", "seed": s, "sites": "", "precision": "float32", "mask_generator": None,
                 "config": config_lib.TrainConfig(model="m", placement="none", seed=s).to_dict(),
                 "test_accuracy": 0.9, "test_loss": 0.3, "validation_loss": 0.3, "data_source": "d",
                 "data_sha256": "abc", "data_origin": {"npz": "d.npz"}, "reliability": {"count": [1]},
                 "val_accuracy": [0.8], "identical_to": None, "train_sha256": "t", "train_subset_sha256": None,
                 "ood_data_source": "npz:o.npz", "ood_in_test_left_out": 3}
                for s in (0, 1)]
    runs = []
    for rate in (0.3, 0.5):
        for seed in (0, 1):
            run = tmp_path / f"canonical-rate{rate}" / f"seed{seed}"
            run.mkdir(parents=True)
            config = config_lib.TrainConfig(model="m", placement="canonical", rate=rate, seed=seed).to_dict()
            divergence.write(str(run), 1, {"config": config, "placement_sites": f"d.post:{rate}", "data": data,
                                           "mask_generator": "g", "precision": {"policy": "float32"}})
            runs.append(str(run))
    made, notes = divergence.rows(runs, finished, records.row, variants.row_key)
    assert len(made) == 4 and not any("not in this comparison" in n for n in notes), notes
    assert all(r["data_sha256"] == "abc" and r["data_origin"] == {"npz": "d.npz"} and r["reliability"] is None
               and r["test_accuracy"] != r["test_accuracy"] for r in made)
    rows = finished + made
    variants.label_rows(rows)
    tuned = compare.tune_rates(rows)
    assert sorted(tuned["selected"].values(), key=str) == [0.3, None]  # the control has no grid
    assert [g["rate"] for g in tuned["grid"] if g["selected"] and g["variant"] == "m/canonical"] == [0.3]
    assert any(n.startswith("every run of m/canonical diverged, at each of its rates: its lowest stands for it")
               for n in tuned["notes"]), tuned["notes"]
    # The OOD images left out are counted over the runs that scored them (it counted the diverged ones too).
    from dropzoo import uncertainty_report

    assert [n for n in uncertainty_report.ood_notes(rows) if "left out" in n] == [
        "3 of the out-of-distribution images are test images of 2 runs (byte for byte), left out of their OOD "
        "scores: each scored the others alone"]
    # Its variant has no finite score at all: the comparison's plot draws the others (a KeyError stopped it).
    from dropzoo import report

    report.plot(str(tmp_path / "comparison.png"), compare.summarise(rows), rows)
    assert (tmp_path / "comparison.png").stat().st_size > 0
