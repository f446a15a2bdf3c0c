"""The main job end to end on tiny data: train -> export -> verify -> eval, resume, reruns."""
import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from conftest import crash_after_epoch
from conftest import layer_table_rows
from conftest import tiny_arrays
from conftest import tiny_config
from conftest import tiny_source

import models
from dropzoo import checkpoints
from dropzoo import config as config_lib
from dropzoo import data as data_lib
from dropzoo import data_identity
from dropzoo import evaluate
from dropzoo import flags as flags_lib
from dropzoo import plan_notes
from dropzoo import run_data
from dropzoo import sources
from dropzoo import strategies
from dropzoo import subsets
from dropzoo import sweep
from dropzoo import trainer
from dropzoo import variants
from dropzoo.errors import DataError
from dropzoo.errors import RunError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    metrics = trainer.train_and_evaluate(tiny_config(), workdir, source=tiny_source(), verbose=0)
    return workdir, metrics


@pytest.mark.slow
def test_run_writes_everything_the_user_needs(finished_run):
    workdir, metrics = finished_run
    for name in ("config.json", "metrics.json", "saved_model/saved_model.pb", "checkpoints/epoch-0003.npz",
                 "checkpoints/epoch-0002.npz"):
        assert os.path.exists(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f) == json.loads(json.dumps(metrics))
    assert metrics["data"]["source"] == "tiny"
    assert metrics["data"]["num_train"] + metrics["data"]["num_validation"] == 96
    assert metrics["epochs_completed"] == 3
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and np.isfinite(metrics["test_loss"])
    assert metrics["test_accuracy"] > 0.5, "the quadrant task is easy; training must learn it"
    assert metrics["train_examples_per_sec"] > 0
    # One epoch in a session is all tracing: no steady-state rate (it read 2.8x low after a resume of the last).
    assert trainer.steady_examples_per_sec([(6, 2.4)], 16, 96, 6) is None
    assert trainer.steady_examples_per_sec([(6, 2.4), (6, 0.5), (3, 0.5)], 16, 96, 6) == (96 + 48) / 1.0
    seconds = metrics["epoch_train_seconds"]
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    assert sum(seconds) <= metrics["train_time_sec"] < metrics["wall_time_sec"]
    assert metrics["data"]["origin"] == {"dataset": "tiny"}
    assert len(metrics["history"]["val_accuracy"]) == 3
    check = metrics["export_check"]
    assert check["passed"] and check["bitwise_repeatable"] and check["random_ops"] == []


def test_tensorboard_has_scalars_histograms_and_hparams(finished_run):
    workdir, metrics = finished_run
    tags = {}
    for path in glob.glob(os.path.join(workdir, "tensorboard", "**", "events.out.tfevents.*"), recursive=True):
        run = os.path.relpath(os.path.dirname(path), os.path.join(workdir, "tensorboard"))
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                tags.setdefault(run, set()).add((value.tag, plugin))
    assert ("epoch_loss", "scalars") in tags["train"]
    assert ("epoch_accuracy", "scalars") in tags["validation"]
    assert any(plugin == "histograms" for _, plugin in tags["train"])
    assert ("dense1.post/variance_ratio", "scalars") in tags["dropout_stats"]
    assert ("dense1.post/train_out_var", "scalars") in tags["dropout_stats"]
    # One events file for the run's 3 epochs (a writer made each epoch wrote a file each).
    assert len(glob.glob(os.path.join(workdir, "tensorboard", "dropout_stats", "events.out.tfevents.*"))) == 1
    root = {tag for tag, _ in tags["."]}
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "test_accuracy"} <= root
    assert ("model", "text") in tags["."]  # model.txt, in the Text tab
    # No domains in a run's own experiment: TensorBoard over a sweep takes one run's, and listed its values alone.
    from tensorboard.plugins.hparams import plugin_data_pb2

    experiment = next(plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content).experiment
                      for own in glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
                      for event in tf.compat.v1.train.summary_iterator(own) for v in event.summary.value
                      if v.tag == "_hparams_/experiment")
    assert experiment.hparam_infos and not any(info.HasField("domain_discrete") for info in experiment.hparam_infos)
    # The session is named after the run (the dashboard showed a hash), and its placement column says what trained.
    start = next(plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content).session_start_info
                 for own in glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
                 for event in tf.compat.v1.train.summary_iterator(own) for v in event.summary.value
                 if v.tag == "_hparams_/session_start_info")
    # Its path's last parts and its weights: a path alone named a run moved away and the one trained in its place
    # as one row, their scores averaged.
    weights = metrics["weights_sha256"]
    parts = os.path.abspath(workdir).split(os.sep)[-4:]  # the last two first: the column shows a name's start
    assert start.group_name == f"{parts[2]}/{parts[3]} ({parts[0]}/{parts[1]}) #{weights[:8]}"
    assert start.hparams["placement"].string_value == "canonical"
    assert start.hparams["dropout_sites"].string_value == "dense1.post:0.5"  # as built (--rate not given: empty)
    assert start.hparams["dataset"].string_value == "tiny"  # the arrays' name, not --dataset's default (mnist)


def test_a_runs_hparams_name_the_data_it_read_not_the_default_dataset(tmp_path):
    """IDX files of Fashion-MNIST read without --dataset showed dataset "mnist" (its default) in TensorBoard."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    from dropzoo import idx
    from dropzoo import summaries

    for origin, sha, name in (({"idx_dir": "/data/fashion"}, idx.TEST_FINGERPRINTS["fashion_mnist"], "fashion_mnist"),
                              ({"npz": "/data/mine.npz"}, "0" * 64, ""),
                              ({"dataset": "mnist_sample"}, "1" * 64, "mnist_sample")):
        logdir = tmp_path / name / "tensorboard"
        summaries.write_run_hparams(str(logdir), tiny_config(), "source", {
            "epochs_completed": 1, "data": {"origin": origin, "test_sha256": sha}})
        start = next(plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content).session_start_info
                     for own in glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
                     for event in tf.compat.v1.train.summary_iterator(own) for v in event.summary.value
                     if v.tag == "_hparams_/session_start_info")
        assert start.hparams["dataset"].string_value == name


def test_a_run_written_again_keeps_one_hparams_session_its_last(tmp_path):
    """A run trained on to more epochs (its metrics.json deleted) wrote a second session; TensorBoard showed the
    first's settings (epochs=1) beside the last one's scores."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    from dropzoo import summaries

    logdir = str(tmp_path / "run" / "tensorboard")
    summaries.write_model(str(tmp_path / "model.txt"), logdir, models.build("dense_mlp", input_shape=(4, 4, 1)))
    # As older code wrote a run's session: in files named like any other.
    summaries.write_hparams(logdir, [("", {"epochs": 1}, {"test_accuracy": 0.25})], summaries.RUN_METRICS, step=1)
    for epochs, accuracy in ((1, 0.5), (2, 0.75)):
        summaries.write_run_hparams(logdir, dataclasses.replace(tiny_config(), epochs=epochs), "source", {
            "epochs_completed": epochs, "test_accuracy": accuracy, "data": {"origin": {"dataset": "tiny"}},
            "precision": {"requested": "auto", "policy": "mixed_bfloat16"}})
    found = {}
    for own in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(own):
            for v in event.summary.value:
                found.setdefault(v.tag, []).append((event.step, v))
    [(_, start)] = found["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(start.metadata.plugin_data.content).session_start_info
    assert start.hparams["epochs"].number_value == 2
    assert start.hparams["precision"].string_value == "mixed_bfloat16"  # what it trained in, not `auto`
    assert [(step, tf.make_ndarray(v.tensor)) for step, v in found["test_accuracy"]] == [(2, 0.75)]
    assert len(found["_hparams_/experiment"]) == 1 and "model" in found  # the network's text is kept


def test_eval_of_the_export_reproduces_the_trainer(finished_run):
    workdir, metrics = finished_run
    result = evaluate.evaluate_saved_model(os.path.join(workdir, "saved_model"),
                                           data_lib.raw_batches(tiny_source().test, 16))
    assert result["num_examples"] == 40
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert result["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4, abs=1e-5)


def test_eval_of_a_runs_export_named_as_its_workdir_names_both_flags_that_fit(finished_run, eval_main, capsys):
    """eval.py --workdir=RUN/saved_model asked for the data to score (there is no metrics.json), then, given it,
    said the export was missing and to re-export it."""
    workdir, _ = finished_run
    export = os.path.join(workdir, "saved_model")
    assert eval_main(f"--workdir={export}", "--dataset=mnist_sample") == 2
    assert capsys.readouterr().err == (f"error: {export} is a SavedModel, not a run's directory: pass "
                                       f"--saved_model={export}, or --workdir={workdir} (its run)\n")


def test_rerun_of_a_finished_run_returns_it_without_training(finished_run, capsys):
    workdir, metrics = finished_run
    before = os.path.getmtime(os.path.join(workdir, "saved_model", "saved_model.pb"))
    again = trainer.train_and_evaluate(tiny_config(), workdir, source=tiny_source(), verbose=0)
    assert again == json.loads(json.dumps(metrics))
    assert os.path.getmtime(os.path.join(workdir, "saved_model", "saved_model.pb")) == before
    assert "noserving_artifacts" not in capsys.readouterr().err  # it has them


def test_a_callers_source_beside_a_config_naming_other_data_is_refused_before_anything_is_written(tmp_path):
    """The run trained on the caller's arrays and config.json said fashion_mnist, without a word."""
    workdir = str(tmp_path / "run")
    for named, given in [({"dataset": "fashion_mnist"}, "--dataset=fashion_mnist"),
                         ({"dataset": "mnist", "idx_dir": "/data/idx"}, "--idx_dir=/data/idx")]:
        with pytest.raises(DataError, match=rf"^source=tiny replaces the config's data, and the config names other "
                                            rf"data \({given}\): the run would be recorded as that; leave the config's "
                                            r"data fields at their defaults with source=, or drop source="):
            trainer.train_and_evaluate(tiny_config(**named), workdir, source=tiny_source(), verbose=0)
        assert not os.path.exists(workdir)
    # At the defaults, or naming the source's own data: trained (the API's way, and a sweep's loaded source).
    run_data.check_given(tiny_source(), tiny_config(dataset="mnist"))
    run_data.check_given(tiny_source(), tiny_config())
    # Not a Source (load_source's arguments): one line, not an AttributeError deep in training.
    with pytest.raises(DataError, match=r"^source= takes a sources.Source \(e.g. sources.array_source"):
        trainer.train_and_evaluate(tiny_config(), workdir, source={"dataset": "mnist_sample"}, verbose=0)


def test_a_rerun_asking_for_serving_artifacts_a_run_lacks_says_so(tmp_path, capsys):
    config = tiny_config(epochs=1)
    trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0, serving_artifacts=False)
    capsys.readouterr()
    trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0)
    err = capsys.readouterr().err
    assert "was trained with --noserving_artifacts, so it has no model.keras" in err
    assert f"export them again from its last checkpoint (no training, the same weights): delete {tmp_path}/" \
           "metrics.json and rerun its train.py command" in err
    trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0, serving_artifacts=False)
    assert capsys.readouterr().err == ""
    # Exports deleted since it finished: said, with the way to make them again; that way works.
    digest = json.loads((tmp_path / "metrics.json").read_text())["weights_sha256"]
    shutil.rmtree(tmp_path / "saved_model")
    trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0, serving_artifacts=False)
    assert f"note: {tmp_path} finished, but saved_model/saved_model.pb, saved_model/variables/, " \
           "saved_model/variables/variables.index are missing: its records are reported" in capsys.readouterr().err
    os.remove(tmp_path / "metrics.json")
    again = trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0)
    assert again["weights_sha256"] == digest and again["epochs_completed"] == again["resumed_from_epoch"] == 1
    assert again["export_check"]["passed"] and (tmp_path / "saved_model" / "saved_model.pb").is_file()


def test_overwrite_removes_the_evaluations_of_the_model_it_replaces(tmp_path):
    config = tiny_config(epochs=1)
    trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0, serving_artifacts=False)
    for name in ("eval.json", "eval-idx_data.json", "notes.txt"):  # eval.py's files, and one of the user's
        (tmp_path / name).write_text("{}")
    trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0, serving_artifacts=False,
                               overwrite=True)
    assert not (tmp_path / "eval.json").exists() and not (tmp_path / "eval-idx_data.json").exists()
    assert (tmp_path / "notes.txt").exists()


def test_rerun_with_other_settings_is_refused_naming_them(finished_run):
    workdir, _ = finished_run
    with pytest.raises(trainer.RunError, match=r"--epochs \(3 -> 5\).*--overwrite"):
        trainer.train_and_evaluate(tiny_config(epochs=5), workdir, source=tiny_source(), verbose=0)


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = tiny_config(model="keras_io_convnet", epochs=3)
    straight = trainer.train_and_evaluate(config, str(tmp_path / "a"), source=tiny_source(), verbose=0)

    undo = crash_after_epoch(monkeypatch, 2, KeyboardInterrupt("simulated kill between epochs"))
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(config, str(tmp_path / "b"), source=tiny_source(), verbose=0)
    assert checkpoints.saved_epoch(str(tmp_path / "b" / "checkpoints")) == 2
    undo()
    resumed = trainer.train_and_evaluate(config, str(tmp_path / "b"), source=tiny_source(), verbose=0)
    assert resumed["resumed_from_epoch"] == 2 and resumed["epochs_completed"] == 3
    assert resumed["test_loss"] == straight["test_loss"]
    # Every epoch's history, the two before the resume from the checkpoint's record: as if never interrupted.
    assert resumed["history"] == straight["history"] and resumed["history_from_epoch"] == 0
    assert len(resumed["history"]["val_loss"]) == 3 and resumed["train_time_sec"] > 0


def test_a_run_resumed_on_other_data_is_refused_and_on_its_own_data_resumes(tmp_path, monkeypatch):
    # Files added to an image folder move its split: a resume would train on other images, and test on some it
    # trained on. The checkpoint records what its epochs trained on.
    config = tiny_config(epochs=2)
    undo = crash_after_epoch(monkeypatch, 1, KeyboardInterrupt("simulated kill between epochs"))
    with pytest.raises(KeyboardInterrupt):
        trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0)
    undo()
    with pytest.raises(RunError, match=r"^the training data differs from what this run's 1 epochs in "
                                       r".*checkpoints trained on .*; restore that data, or use another --workdir"):
        trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(seed=1), verbose=0)
    assert checkpoints.saved_epoch(str(tmp_path / "checkpoints")) == 1  # nothing lost
    # Other test images alone are no reason to refuse: what trained is the same.
    train_part = tiny_source()
    other_test = sources.array_source("tiny", tiny_arrays()[0], tiny_arrays(seed=3)[1])
    assert data_identity.content_id(other_test) == data_identity.content_id(train_part)
    resumed = trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0)
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs_completed"] == 2


def test_train_steps_stops_exactly(tmp_path):
    config = tiny_config(train_steps=7, epochs=1)
    metrics = trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0)
    assert metrics["steps_per_epoch"] == 7 and metrics["epochs_completed"] == 1


def test_unwritable_workdir_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(trainer.RunError, match=rf"^--workdir {blocker}/run lies below {blocker}, which is a file, "):
        trainer.train_and_evaluate(tiny_config(), str(blocker / "run"), source=tiny_source(), verbose=0)
    with pytest.raises(trainer.RunError, match=rf"^--workdir {blocker} is a file, not a directory; pass a directory"):
        trainer.train_and_evaluate(tiny_config(), str(blocker), source=tiny_source(), verbose=0)
    assert blocker.read_text() == "not a directory"
    # Trained, then its export could not be loaded back (TensorFlow reads its path as a pattern): refused first.
    with pytest.raises(trainer.RunError, match=r"holds '\[', which TensorFlow reads as a file pattern where it loads "
                                               r"the run's export; pass a --workdir without"):
        trainer.train_and_evaluate(tiny_config(), str(tmp_path / "run[1]"), source=tiny_source(), verbose=0)
    assert not os.path.exists(tmp_path / "run[1]")
    # As given, TensorFlow reads it so: a relative one below such a directory loads, and * and ? match themselves.
    from dropzoo import workdir as workdir_lib

    for fine in ("q?run", "a*b"):
        workdir_lib.check_not_file(fine)
    os.makedirs(tmp_path / "cwd[1]")
    monkeypatch.chdir(tmp_path / "cwd[1]")
    metrics = trainer.train_and_evaluate(tiny_config(epochs=1), "run", source=tiny_source(), verbose=0,
                                         serving_artifacts=False)
    assert metrics["export_check"]["passed"]
    # A sweep's run directories are named after --model: refused before any trains.
    with pytest.raises(trainer.RunError, match=r"^the run directory x\[1\]/canonical/seed0 holds '\[', which "
                                               r"TensorFlow reads as a file pattern .*pass a --workdir and a --model "
                                               r"name without \[ or"):
        workdir_lib.check_run_paths([(tiny_config(), "x[1]/canonical/seed0")])
    # A directory this process cannot write to (a read-only volume; root writes through chmod, so simulated).
    from dropzoo import files

    monkeypatch.setattr(files, "unwritable", lambda directory, make=True: "Read-only file system")
    with pytest.raises(trainer.RunError, match=r"^cannot write to workdir 'ro' \(Read-only file system\); pass a "):
        trainer.train_and_evaluate(tiny_config(), "ro", source=tiny_source(), verbose=0)


TRAIN_CONFIGS = sorted(c for c in glob.glob(os.path.join(ROOT, "configs", "*.cfg")) if not c.endswith("_eval.cfg"))
EVAL_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*_eval.cfg")))


@pytest.mark.parametrize("cfg", TRAIN_CONFIGS)
def test_every_config_parses_to_a_valid_run(cfg):
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", f"--flagfile={cfg}"])
    runs = flags_lib.train_plan(fv)
    config = runs[0][0]
    with open(cfg) as f:
        text = f.read()
    assert "Published result" in text or "Expected:" in text, "each config states what it targets"
    assert config.model in text


# What each source trained with (its file, cited in the config): the recipe configs must say the same.
RECIPES = {
    # keras-team/keras examples/mnist_cnn.py (Keras 2): Adadelta() (lr 1.0), 12 epochs on all 60,000.
    "keras_mnist_cnn": dict(optimizer="adadelta", learning_rate=1.0, batch_size=128, epochs=12,
                            train_steps=None, validation_fraction=0.0, rate=None),
    # tensorflow/examples/tutorials/layers/cnn_mnist.py: SGD 0.001, batch 100, 20,000 steps on 55,000.
    "tf_layers_cnn": dict(optimizer="sgd", learning_rate=0.001, batch_size=100, train_steps=20000,
                          validation_fraction=5000 / 60000, rate=None),
    # keras-io examples/vision/mnist_convnet.py: adam, batch 128, 15 epochs, validation_split=0.1.
    "keras_io_convnet": dict(optimizer="adam", learning_rate=0.001, batch_size=128, epochs=15,
                             train_steps=None, validation_fraction=0.1, rate=None),
    # tensorflow/docs beginner quickstart: Dropout(0.2), adam, fit(epochs=5) (batch 32), no validation.
    "tf_quickstart_mlp": dict(model="dense_mlp", optimizer="adam", learning_rate=0.001, batch_size=32, epochs=5,
                              train_steps=None, validation_fraction=0.0, rate=0.2),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_config_trains_as_its_source(recipe):
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", f"--flagfile={os.path.join(ROOT, 'configs', recipe + '.cfg')}"])
    [(config, _)] = flags_lib.train_plan(fv)
    expected = {"model": recipe, "placement": "canonical", "dataset": "mnist", "precision": "float32",
                "kind": "inverted", "activation": "relu", "norm": "none", **RECIPES[recipe]}
    assert {name: getattr(config, name) for name in expected} == expected
    if RECIPES[recipe]["validation_fraction"]:  # the hold-out the source had, to the example
        assert data_lib.validation_size(60000, config.validation_fraction) == {
            "tf_layers_cnn": 5000, "keras_io_convnet": 6000}[recipe]


@pytest.mark.parametrize("cfg", EVAL_CONFIGS)
def test_every_eval_config_parses_and_names_its_contrasts(cfg):
    from dropzoo import contrasts

    fv = flags.FlagValues()
    flags_lib.define_eval_flags(fv)
    fv(["eval.py", f"--flagfile={cfg}"])
    assert fv.runs_dir and contrasts.parse_contrasts(fv.contrasts)
    with open(cfg) as f:
        assert "Published result" in f.read()
    # The documented offline form: the config's dataset, its IDX files given.
    offline = flags.FlagValues()
    flags_lib.define_eval_flags(offline)
    offline(["eval.py", f"--flagfile={cfg}", "--idx_dir=/data/idx"])
    flags_lib.check_one_source(offline)
    study = cfg.replace("_eval.cfg", ".cfg")
    fv_study = flags.FlagValues()
    flags_lib.define_train_flags(fv_study)
    fv_study(["train.py", f"--flagfile={study}"])
    # The runs it compares include the ones its study trains, or their committed records.
    records = os.path.join("docs", "results", os.path.basename(study)[:-len(".cfg")], "runs")

    def trained_in(directory):
        """The workdir a compared directory's runs were trained in: itself, or the one its records came from."""
        if directory == records:
            return fv_study.workdir
        if directory.startswith(records + "/"):  # records of a study with several workdirs, one folder each
            return os.path.join(os.path.dirname(fv_study.workdir), directory[len(records) + 1:])
        return directory

    compared = [trained_in(d) for d in fv.runs_dir]
    assert fv_study.workdir in compared, (fv.runs_dir, fv_study.workdir)
    # Where every compared directory is a study's workdir, each planned contrast names variants
    # those studies train (a typo is found here, not after hours of training).
    plans = {}
    for train_cfg in TRAIN_CONFIGS:
        fv_train = flags.FlagValues()
        flags_lib.define_train_flags(fv_train)
        fv_train(["train.py", f"--flagfile={train_cfg}"])
        plans.setdefault(fv_train.workdir, []).extend(flags_lib.train_plan(fv_train))
    if all(d in plans for d in compared):
        rows = [{"config": c.to_dict(), "seed": c.seed, "run": w} for d in compared for c, w in plans[d]]
        rates = sorted({r["config"]["rate"] for r in rows}, key=lambda rate: (rate is None, rate or 0))
        if len(rates) > 1:  # a rate grid: each placement is contrasted at one rate (chosen on validation data)
            rows = [r for r in rows if r["config"]["rate"] == rates[0]]
        pairs = contrasts.planned_pairs(variants.label_rows(rows), contrasts.parse_contrasts(fv.contrasts))
        assert len(pairs) == len(contrasts.parse_contrasts(fv.contrasts)) and all(a != b for a, b in pairs)


@pytest.mark.parametrize("args,message", [
    (["--model=lenet"], "unknown model 'lenet'; valid models:"),
    (["--placement=middle"], "unknown placement 'middle'"),
    (["--sites=dense9.pre:0.5"], "unknown site 'dense9.pre'; valid sites:"),
    (["--kind=alpha"], "unknown dropout kind 'alpha'; valid kinds:"),
    (["--activation=softsign"], "unknown activation 'softsign'"),
    (["--rate=1.5"], "--rate must be in [0, 1)"),
    (["--epochs=0"], "--epochs must be a positive integer"),
    (["--batch_size=-4"], "--batch_size must be a positive integer"),
    (["--train_steps=0"], "--train_steps must be a positive integer"),
    (["--optimizer=lion"], "unknown optimizer 'lion'"),
    # Adam at the classic recipe's Adadelta rate: a loss of 12,044 and 14% accuracy, exit 0.
    (["--optimizer=adam"], "--optimizer=adam would train at --learning_rate=1, the flag's default, which is the "
                           "classic recipe's Adadelta rate (Keras' adam default is 0.001); pass --learning_rate, e.g. "
                           "--learning_rate=0.001"),
    (["--optimizer=adadelta,sgd"], "--optimizer=sgd would train at --learning_rate=1, the flag's default"),
    (["--learning_rate=0"], "--learning_rate must be a positive number, got 0.0"),
    (["--learning_rate=inf"], "--learning_rate must be a positive number, got inf"),  # (a NaN loss, epochs later)
    (["--workdir="], "--workdir is given but empty (an unset variable?); give a directory, or leave the flag out"),
    (["--validation_fraction=1"], "--validation_fraction must be in [0, 1)"),
    (["--precision=bf16"], "unknown precision 'bf16'; valid: auto, float32, mixed_bfloat16, mixed_float16"),
    (["--jit_compile=yes"], "unknown jit_compile 'yes'; valid: auto, true, false"),
    (["--profile_batches=ten"], "--profile_batches must be 'N' or 'START,STOP'"),
    (["--profile_batches=20,10"], "--profile_batches must be 'N' or 'START,STOP'"),
    (["--profile_batches=0"], "--profile_batches must be 'N' or 'START,STOP'"),
    (["--profile_batches=1,2,3"], "--profile_batches must be 'N' or 'START,STOP'"),
    (["--steps_per_execution=-1"], "--steps_per_execution must be a positive integer or 0 (auto)"),
    (["--seeds=0"], "--seeds must be a positive integer"),
    (["--seed=-1"], "--seed must be between 0 and 4294967295"),
    (["--placement=canonical,canonical"], "--placement='canonical,canonical' lists 'canonical' more than once"),
    # 'all' holds canonical: the trained run would be recorded as identical to itself.
    (["--placement=canonical,all"], "--placement='canonical,all' lists 'all' beside other placements"),
    (["--rate=0.5,0.50"], "--rate='0.5,0.50' lists '0.5' more than once"),
    (["--dataset=mnist_sample", "--image_size=32,32"], "--image_size applies only with --image_dir=DIR, and the "
                                                        "data given is --dataset; give --image_dir=... too"),
    (["--dataset=mnist_sample", "--test_image_dir=/tmp"], "--test_image_dir applies only with --image_dir=DIR"),
    (["--color_mode=rgb"], "--color_mode applies only with --image_dir=DIR, and no --image_dir is given; give "
                           "--image_dir=... too, or drop --color_mode"),
    (["--idx_dir=/tmp", "--tfds_data_dir=/tmp"], "--tfds_data_dir applies only with --dataset=NAME, and the data "
                                                  "given is --idx_dir; drop --tfds_data_dir"),
    (["--seed=4294967295", "--seeds=2"], "--seed must be between 0 and 4294967295"),
    # Read as the default (no --dataset), it was ignored beside the folder, and recorded in the run's config.
    (["--dataset=mnist", "--image_dir=/tmp"], "give one data source, not --image_dir and --dataset=mnist; drop "
                                              "--dataset to use --image_dir"),
    # Empty: read as not given, it trained the canonical placement, though the API reads "" as no dropout.
    (["--sites="], "--sites is given but empty; for no dropout pass --sites=none (or --placement=none)"),
    (["--sites= "], "--sites is given but empty"),
    # Read as not given: an unset $VAR trained the default dataset (or a test folder's 20% split) without a word.
    (["--image_dir="], "--image_dir is given but empty (an unset variable?); give it a value, or leave the flag out"),
    (["--image_dir=/tmp", "--test_image_dir="], "--test_image_dir is given but empty"),
    (["--npz= "], "--npz is given but empty"),
    # --sites replaced the placement: the sweep of it named one workdir per placement name, then refused that.
    (["--placement=all", "--sites=dense1.pre:0.5"], "give --sites=dense1.pre:0.5 or --placement=all, not both: "
                                                    "--sites overrides --placement, so every run of the sweep"),
    (["--placement=canonical,none", "--sites=dense1.pre:0.5"], "give --sites=dense1.pre:0.5 or --placement="),
    # Reset to the default without BN layers: ignored, and a sweep of it planned one workdir twice.
    (["--bn_momentum=0.9"], "--bn_momentum sets the momentum of the BatchNorm layers --norm=batch adds, and without "
                            "it there are none; drop --bn_momentum, or add --norm=batch"),
    (["--bn_momentum=0.9,0.99", "--norm=none"], "--bn_momentum sets the momentum"),
    # Not swept: both runs went into one workdir, the second recorded as identical to itself.
    (["--strategy=mirrored,one_device", "--cpu_devices=2"], "--strategy takes one value, not a list "
                                                            "(mirrored,one_device): runs under several strategies"),
    (["--cpu_devices=2,3"], "--cpu_devices takes one value, not a list (2,3): runs under several device counts"),
])
def test_train_flags_reject_bad_values(args, message):
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", *args])
    with pytest.raises(config_lib.ConfigError) as info:
        flags_lib.train_plan(fv)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize("args, notes", [
    # Accepted, then changed nothing: no site for the rate or kind to set.
    (["--placement=none", "--rate=0.3"], ["--rate=0.3 is not used: no run of the plan has a dropout site for it to "
                                          "set (--placement=none)"]),
    (["--placement=none", "--rate=0.3,0.5"], ["--rate=0.3,0.5 is not used: no run of the plan has a dropout site"]),
    (["--sites=none", "--kind=gaussian"], ["--kind=gaussian is not used: no run of the plan has a dropout site for "
                                           "it to set (--sites=none)"]),
    (["--epochs=3", "--train_steps=5"], ["--epochs=3 is not used: --train_steps=5 sets how long each run trains"]),
    # It trained the sites, and its placement column named the placement.
    (["--placement=before_dense", "--sites=dense1.pre:0.3"], ["--placement=before_dense is not used: "
                                                              "--sites=dense1.pre:0.3 sets where dropout goes"]),
    (["--placement=canonical", "--sites=dense1.pre:0.3"], []),  # a flagfile's canonical, overridden by --sites
    (["--rate=0"], []),  # a site turned off is a site set: halving 0 changed nothing, and it was said unused
    (["--rate=0", "--kind=classic"], ["--kind=classic is not used"]),
    # Used by some run: nothing to say.
    (["--placement=none,canonical", "--rate=0.3"], []),
    (["--placement=canonical", "--rate=0.3", "--kind=classic"], []),
    (["--sites=dense1.pre:0.5", "--kind=gaussian"], []),
    (["--train_steps=5"], []),
    (["--placement=none"], []),
    # --rate over the rates --sites gives: it trained every site at --rate without a word.
    (["--sites=dense1.pre:0.1", "--rate=0.3"], ["--rate=0.3 overrides the rates --sites gives (dense1.pre:0.1 train "
                                                "at 0.3); to train each site at its own rate, leave --rate out"]),
    (["--sites=dense1.pre:0.3", "--rate=0.3"], []),
    (["--sites=dense1.pre:0.1", "--rate=0.3,0.5"], []),  # a grid: tuning the sites' rate is what it asks
    (["--sites=none", "--rate=0.3"], ["--rate=0.3 is not used"]),  # (no site to override: it failed to unpack)
    # A rate grid without validation data: the comparison refused to choose, said only then.
    (["--placement=canonical,none", "--rate=0.3,0.5", "--validation_fraction=0"], [
        "the --rate grid trains with --validation_fraction=0, so the comparison has no validation loss to choose"]),
    (["--placement=canonical", "--rate=0.3", "--validation_fraction=0"], []),
    (["--placement=none", "--rate=0.3,0.5", "--validation_fraction=0"], ["--rate=0.3,0.5 is not used"]),  # no grid
])
def test_flags_that_no_run_uses_are_named(args, notes):
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", "--model=dense_mlp", "--dataset=mnist_sample", *args])
    plan = flags_lib.train_plan(fv)
    found = plan_notes.unused_flags(plan, fv) + [n for n in plan_notes.model_notes(plan) if "--rate grid" in n]
    assert len(found) == len(notes) and all(f.startswith(n) for f, n in zip(found, notes)), found


def test_a_batch_larger_than_the_training_data_is_named(caplog):
    from dropzoo import data as data_lib
    from dropzoo import sources

    source = sources.load_source("mnist_sample")
    with caplog.at_level("WARNING"):
        pipes = data_lib.make_pipelines(source, batch_size=5000, seed=0)
    assert pipes.steps_per_epoch == 1
    assert "--batch_size=5000 is larger than the 3,600 training images: each epoch is one step, on a batch of 3,600" \
        in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        data_lib.make_pipelines(source, batch_size=3600, seed=0)
    assert "--batch_size" not in caplog.text


def test_a_precision_sweep_of_one_policy_twice_is_refused(monkeypatch):
    """auto and the policy it picks here trained one run twice, and its comparison then refused the pair."""
    from dropzoo import performance

    monkeypatch.setattr(performance, "cpu_flags", lambda: frozenset())  # no bfloat16: auto is float32
    monkeypatch.setattr(performance, "gpu_details", lambda: [])
    for listed, ok in (("auto,float32", False), ("float32,auto", False), ("auto,mixed_bfloat16", True)):
        fv = flags.FlagValues()
        flags_lib.define_train_flags(fv)
        fv(["train.py", f"--precision={listed}"])
        if ok:
            assert len(flags_lib.train_plan(fv)) == 2
            continue
        with pytest.raises(config_lib.ConfigError, match=rf"^--precision={listed}: (auto and float32|float32 and "
                                                         r"auto) are float32 here, one run trained twice"):
            flags_lib.train_plan(fv)


def _run(script, *args, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("args,message", [
    (["--model=lenet"], "error: unknown model 'lenet'; valid models:"),
    (["--flagfile=configs/missing.cfg"], "error: Unable to open flagfile"),
    (["--idx_dir=/nonexistent"], "error: --idx_dir /nonexistent is not a directory"),
    (["--network=cnv32k3,pool2,flatten"], "error: --network: unknown layer 'cnv32k3' at position 1; valid:"),
    (["--npz=/nonexistent/d.npz"], "error: --npz /nonexistent/d.npz does not exist"),
    (["--dataset=/tmp"], "error: --dataset takes a dataset name, not a path: for /tmp pass --image_dir=/tmp"),
    # A network too deep for the images: the plan is built on the data's shape, so a dry run fails as training would.
    (["--network=pool2,pool2,pool2,pool2,pool2,flatten,logits", "--dataset=mnist_sample", "--dry_run"],
     "error: layer 'pool5' takes a 2x2 window but its input is 1x1x1: use a smaller window"),
    # A global batch the replicas cannot split: every run would fail on it, so the dry run says it once.
    (["--model=dense_mlp", "--dataset=mnist_sample", "--placement=canonical,none", "--strategy=mirrored",
      "--cpu_devices=3", "--batch_size=64", "--dry_run"],
     "error: --batch_size=64 is the global batch and must be a multiple of the 3 replicas; use e.g. --batch_size=63"),
])
@pytest.mark.slow
def test_train_script_reports_bad_input_in_one_line(args, message, tmp_path):
    workdir = tmp_path / "run"
    assert_one_line_error(_run("train.py", f"--workdir={workdir}", *args), message)
    assert not workdir.exists()  # nothing written


def _finished_with(root, placement, **settings):
    """A dense_mlp seed-0 run directory below `root` holding a finished run of `settings`."""
    workdir = root / "dense_mlp" / placement / "seed0"
    workdir.mkdir(parents=True)
    (workdir / "metrics.json").write_text("{}")
    (workdir / "config.json").write_text(json.dumps(
        config_lib.TrainConfig(model="dense_mlp", placement=placement, **settings).to_dict()))
    return workdir


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    result = _run("train.py", "--model=dense_mlp", "--placement=canonical,after_activation,before_dense",
                  "--dry_run", f"--workdir={tmp_path / 'study'}", f"--tfds_data_dir={tmp_path / 'tfds'}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    # The data is not prepared: said, and nothing downloaded (a --tfds_data_dir named: no fallback to the sample).
    assert ("note: tfds dataset 'mnist' is not prepared here, so training downloads it (without the network training "
            "fails; pass --tfds_data_dir where it is prepared)") in lines and not (tmp_path / "tfds").exists()
    assert lines[-1] == ("3 run(s), 1 identical by construction (recorded, not trained), 2 to train; nothing was "
                         "written (--dry_run)")
    assert f"{tmp_path}/study/dense_mlp/before_dense/seed0  model=dense_mlp placement=before_dense " \
           "sites=[dense1.pre:0.5] kind=inverted optimizer=adadelta learning_rate=1 batch_size=128 epochs=12" in lines
    assert any("after_activation" in line and "identical by construction to" in line for line in lines)
    assert f"data: --dataset=mnist --tfds_data_dir={tmp_path / 'tfds'}: 10 classes, images of 28x28x1" in lines
    assert not (tmp_path / "study").exists()
    # A run finished earlier (here: its metrics.json) is marked and not counted as to train.
    finished = tmp_path / "study" / "dense_mlp" / "canonical" / "seed0"
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text("{}")
    # One started with other settings is named with them: training would refuse it.
    other = _finished_with(tmp_path / "study", "before_dense", epochs=3)
    result = _run("train.py", "--model=dense_mlp", "--placement=canonical,after_activation,before_dense",
                  "--dry_run", f"--workdir={tmp_path / 'study'}")
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == ("3 run(s), 1 finished, 1 refused (see their lines), 1 identical by "
                         "construction (recorded, not trained), 0 to train; "
                         "nothing was written (--dry_run)"), result.stdout
    assert result.returncode == 2  # the command would fail on it: a script gating on the dry run must see so
    assert result.stderr.strip().splitlines()[-1] == (  # said on stdout only, exit 2 without an error line
        "error: 1 run(s) of this plan would be refused (see '(refused: ...)' above); do what each says (e.g. another "
        "--workdir, or --overwrite to replace that run)")
    assert any(line.startswith(str(finished)) and line.endswith("(finished: kept)") for line in lines)
    assert any(line.startswith(str(other)) and "other settings: --epochs (3 -> 12)" in line for line in lines)
    # A run identical by construction whose workdir holds other settings: refused, as the sweep refuses its record
    # (the dry run said "recorded, not trained").
    follower = _finished_with(tmp_path / "study", "after_activation", epochs=3)
    result = _run("train.py", "--model=dense_mlp", "--placement=canonical,after_activation,before_dense",
                  "--dry_run", f"--workdir={tmp_path / 'study'}")
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "3 run(s), 1 finished, 2 refused (see their lines), 0 to train; nothing was written (--dry_run)"
    assert any(line.startswith(str(follower)) and "other settings: --epochs (3 -> 12)" in line for line in lines)


def test_a_sweep_rerun_with_a_flag_changed_trains_none_of_its_runs(tmp_path):
    """A sweep whose runs hold runs of other settings is refused before any run trains: each was refused alone (a
    FAILED line), after the others had trained under the new settings into the same study."""
    config = tiny_config(epochs=1)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "config.json").write_text(json.dumps(dataclasses.replace(config, epochs=3).to_dict()))
    (kept / "metrics.json").write_text("{}")
    new = tmp_path / "new"
    with pytest.raises(trainer.RunError, match=r"^1 of the 2 runs of this sweep hold runs with other settings, so "
                       r"none trained \(--dry_run lists each\); the first: workdir '.*kept' holds a run with other "
                       r"settings: --epochs \(3 -> 1\);"):
        sweep.run_sweep([(dataclasses.replace(config, placement="none"), str(new)), (config, str(kept))],
                        source=tiny_source(), verbose=0, serving_artifacts=False)
    assert not new.exists() and sorted(os.listdir(kept)) == ["config.json", "metrics.json"]
    # A run another process is training (read mid-way, its settings resolved on another CPU): skipped, as it was.
    from dropzoo import locks
    from dropzoo import outcomes

    held = locks.WorkdirLock(str(kept)).acquire()
    try:
        results = sweep.run_sweep([(dataclasses.replace(config, placement="none"), str(new)), (config, str(kept))],
                                  source=tiny_source(), verbose=0, serving_artifacts=False)
    finally:
        held.release()
    assert isinstance(results[1][2], outcomes.Skipped) and results[0][2]["config"]["placement"] == "none"


@pytest.mark.slow
def test_a_sweep_into_a_file_is_one_line_before_any_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("kept")
    assert_one_line_error(_run("train.py", f"--workdir={blocker}", "--model=dense_mlp", "--placement=canonical,none"),
                          f"error: --workdir {blocker} is a file, not a directory; pass a directory")
    assert blocker.read_text() == "kept"
    # Below a file: one line for the sweep, not a FAILED line per run and exit 1; its dry run says so too.
    for dry in ([], ["--dry_run"]):
        done = _run("train.py", f"--workdir={blocker}/study", "--model=dense_mlp", "--dataset=mnist_sample",
                    "--placement=canonical,none", *dry)
        assert_one_line_error(done, f"error: --workdir {blocker}/study lies below {blocker}, which is a file, not a "
                                    "directory; pass a directory")
        assert "FAILED" not in done.stdout + done.stderr
    # A task whose share is empty trains nothing and makes no run directory (the check made the one run's).
    done = _run("train.py", f"--workdir={tmp_path}/one", "--model=dense_mlp", "--dataset=mnist_sample",
                "--task_index=1", "--num_tasks=2")
    assert done.returncode == 0 and "0 of the plan's 1 runs" in done.stdout, done.stderr
    assert sorted(os.listdir(tmp_path)) == [".tasks", "file"]


def assert_one_line_error(result, message):
    """Exit 2, no traceback, and the last stderr line is the `error:` message."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr


@pytest.mark.slow
def test_train_and_eval_scripts_end_to_end(tmp_path):
    """The user's path: train.py on the offline sample, then eval.py on its export."""
    workdir = str(tmp_path / "run")
    result = _run("train.py", "--model=dense_mlp", "--dataset=mnist_sample", "--epochs=1",
                  "--optimizer=adam", "--learning_rate=0.001", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"SavedModel:   {workdir}/saved_model" in result.stdout
    assert "export check: passed" in result.stdout
    # Nothing but the run's own lines: the native libraries' INFO (TensorFlow's start-up banner, the int8
    # calibration's settings, LiteRT's delegate) is kept off both streams.
    assert not re.search(r"InitializeLog|oneDNN custom|fully_quantize|XNNPACK", result.stdout + result.stderr), \
        result.stderr
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["data"]["source"] == "mnist_sample"
    tflite = _run("eval.py", f"--tflite={workdir}/model.tflite")
    assert tflite.returncode == 0 and tflite.stderr.startswith("accuracy "), tflite.stderr

    result = _run("eval.py", f"--workdir={workdir}")  # the run's own test data, as it recorded it
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)
    assert printed["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert printed["data_source"] == "mnist_sample" and "note:" not in result.stderr
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f) == printed
    # stdout is the JSON alone; stderr has the headline, as the terminal shows it.
    assert result.stderr.splitlines()[-1] == (
        f"accuracy {100 * printed['accuracy']:.2f}%, NLL {printed['loss']:.4f}, ECE {printed['ece']:.4f} on "
        f"mnist_sample (test, 1,000 images); written to {workdir}/eval.json")
    # The run's export named by path is scored on the run's data too (it fell back to MNIST), and written nowhere.
    result = _run("eval.py", f"--saved_model={workdir}/saved_model")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["accuracy"] == printed["accuracy"] and "note:" not in result.stderr
    assert_one_line_error(_run("eval.py", f"--saved_model={workdir}/model.keras"),
                          f"error: {workdir}/model.keras is a file, not a SavedModel directory; it is run {workdir}'s "
                          f"Keras copy of its export: pass --workdir={workdir}")
    assert_one_line_error(_run("eval.py", f"--workdir={tmp_path}", "--dataset=mnist_sample"),
                          f"error: {tmp_path} holds runs below it, not one run: compare them with "
                          f"--runs_dir={tmp_path}")


@pytest.mark.parametrize("define,argv,message", [
    (flags_lib.define_eval_flags, ["eval.py", "--epochs=2"], "error: --epochs is train.py's flag, not this "
                                                             "script's (Unknown command line flag 'epochs')"),
    (flags_lib.define_train_flags, ["train.py", "--runs_dir=x"], "error: --runs_dir is eval.py's flag, not this "
                                                                  "script's"),
    (flags_lib.define_train_flags, ["train.py", "--epochz=2"], "error: Unknown command line flag 'epochz'"),
    (flags_lib.define_train_flags, ["train.py", "--seeds=0,1"], "error: flag --seeds=0,1: invalid literal for int() "
                                                                "with base 10: '0,1' (--seeds=N trains N seeds from "
                                                                "--seed: --seed=0 --seeds=2 for seeds 0 and 1)"),
    # An unset $VAR: absl read these as not given, and trained or compared the defaults without a word.
    (flags_lib.define_train_flags, ["train.py", "--flagfile="], "error: --flagfile= is given but empty (an unset "
                                                                "variable?); name a flagfile"),
    (flags_lib.define_train_flags, ["train.py", "--train_steps="], "error: --train_steps is given but empty (an unset "
                                                                   "variable?); give it a value, or leave it out"),
    (flags_lib.define_train_flags, ["train.py", "--rate="], "error: --rate is given but empty"),
    (flags_lib.define_train_flags, ["train.py", "--train_size= "], "error: --train_size is given but empty"),
    (flags_lib.define_eval_flags, ["eval.py", "--runs_dir=r", "--contrasts="], "error: --contrasts is given but "
                                                                               "empty"),
    (flags_lib.define_eval_flags, ["eval.py", "--runs_dir=r", "--output="], "error: --output is given but empty"),
    # A traceback (absl's ValueError).
    (flags_lib.define_train_flags, ["train.py", "--nooverwrite=1"], "error: --nooverwrite=1 does not take an "
                                                                    "argument: give --nooverwrite alone, or "
                                                                    "--overwrite=false"),
])
def test_a_bad_flag_is_one_line_naming_the_fix(capsys, define, argv, message):
    """The other script's flag says whose it is; an empty flag or flagfile and a valued --noX are refused."""
    fv = flags.FlagValues()
    define(fv)
    with pytest.raises(SystemExit) as exit_:
        flags_lib.parse_or_exit(argv, fv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_a_flag_whose_empty_list_means_none_can_be_given_empty():
    # benchmarks/train_throughput.py --other_models= trains no other model (docs/performance.md)
    fv = flags.FlagValues()
    flags.DEFINE_list("other_models", ["tf_layers_cnn"], "", flag_values=fv)
    flags_lib.parse_or_exit(["x", "--other_models="], fv, empty_allowed=("other_models",))
    assert fv.other_models == []


def test_a_flagfile_that_is_not_text_is_one_line(capsys, tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"TFL3\xa8\xff\x00")  # a UnicodeDecodeError traceback
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    with pytest.raises(SystemExit) as exit_:
        flags_lib.parse_or_exit(["train.py", f"--flagfile={tmp_path / 'model.tflite'}"], fv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: cannot read the flagfile {tmp_path / 'model.tflite'} or one it names "
                          "(UnicodeDecodeError: ")
    assert err.endswith("a flagfile is text, one --flag=value per line (e.g. configs/keras_mnist_cnn.cfg)\n")


@pytest.mark.parametrize("args,message", [
    ([], "error: give exactly one of --saved_model=PATH, --workdir=DIR or --runs_dir=DIR"),
    (["--runs_dir=/nonexistent"], "error: --runs_dir /nonexistent is not a directory"),
    (["--workdir=/tmp", "--mc_samples=-1"], "error: --mc_samples must be 0 (off) or an integer of 2 or more"),
    (["--workdir=/tmp", "--mc_samples=1"], "error: --mc_samples=1 is a single dropout pass"),
    (["--saved_model=/nonexistent"], "error: no SavedModel at /nonexistent"),
    (["--workdir=/tmp", "--ood_dataset=kmnist", "--ood_idx_dir=/tmp"],
     "error: give one out-of-distribution source, not --ood_dataset=kmnist and --ood_idx_dir=/tmp; keep one of them"),
    (["--workdir=/tmp", "--mc_seed=-1"], "error: --mc_seed must be an integer in [0, 2**31)"),
    (["--workdir=/tmp", "--mc_seed=3"], "error: --mc_seed=3 seeds MC dropout, which is off; give --mc_samples=T"),
    (["--tflite=/tmp/m.tflite", "--mc_seed=3"], "error: a TFLite model serves dropout off only: MC dropout"),
    (["--workdir=/tmp", "--batch_size=0"], "error: --batch_size must be a positive integer, got 0"),
    (["--workdir=/nonexistent/run"], "error: --workdir /nonexistent/run is not a directory; give a run's"),
    (["--workdir=/nonexistent/run", "--dataset=mnist_sample"], "error: --workdir /nonexistent/run is not a "
                                                                "directory"),
    (["--runs_dir=/tmp,"], "error: --runs_dir=/tmp, has an empty entry (a stray comma?); drop it"),
    (["--runs_dir=/tmp", "--dataset=mnist", "--npz=x.npz"], "error: give one data source, not --npz and --dataset"),
    (["--workdir=/tmp", "--dataset=mnist", "--image_dir=/tmp"], "error: give one data source, not --image_dir "),
    (["--runs_dir=/tmp,", "--collect=/x"], "error: --runs_dir=/tmp, has an empty entry"),
    (["--runs_dir=/tmp,/tmp/"], "error: --runs_dir=/tmp,/tmp/ names /tmp/ and /tmp: its runs would be found twice"),
    (["--runs_dir=/tmp,/tmp/x"], "error: --runs_dir=/tmp,/tmp/x names /tmp/x inside /tmp: its runs would be found "),
    (["--runs_dir=/tmp", "--output=/tmp/r/eval.JSON"], "error: --output /tmp/r/eval.JSON names a file; a "
                                                         "comparison writes a directory of files"),
    (["--workdir=/tmp", "--image_dir="], "error: --image_dir is given but empty (an unset variable?)"),
    (["--runs_dir=/tmp", "--ood_idx_dir="], "error: --ood_idx_dir is given but empty"),
    (["--saved_model=/nonexistent", "--output=/tmp"], "error: --output /tmp is a directory; give the result's file "
                                                      "name, e.g. --output=/tmp/eval.json"),
])
def test_eval_rejects_bad_input_in_one_line(eval_main, capsys, args, message):
    assert eval_main(*args) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message), err


def test_eval_output_into_a_runs_own_files_is_refused_before_anything_is_written(eval_main, capsys, tmp_path):
    """--output=RUN/metrics.json replaced the run's record with the evaluation: exit 0, and the run broken for
    train.py and eval.py from then on."""
    run = tmp_path / "run"
    (run / "saved_model").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"resolved": {}}))
    (run / "metrics.json").write_text("{\"kept\": 1}")
    for output, own in ((run / "metrics.json", "own metrics.json"), (run / "config.json", "own config.json"),
                        (run / "saved_model" / "x.json", "inside"), (run / "model.tflite", "own model.tflite")):
        assert eval_main(f"--workdir={run}", f"--output={output}") == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --output {output} is ") and own in err and err.count("\n") == 1, err
        assert f"e.g. --output={run}/eval-mine.json" in err
    assert eval_main(f"--runs_dir={tmp_path}", f"--output={run}/checkpoints") == 2
    assert "e.g. --output=" in capsys.readouterr().err
    assert (run / "metrics.json").read_text() == "{\"kept\": 1}" and not (run / "saved_model" / "x.json").exists()
    # A record without its data (overwritten by such an --output before): one line, not a KeyError traceback.
    assert eval_main(f"--workdir={run}") == 2
    assert capsys.readouterr().err.startswith(f"error: {run}/metrics.json is corrupt (no data); delete it and rerun")


def test_metrics_record_the_sites_as_built_with_rate_and_norm(tmp_path):
    metrics = trainer.train_and_evaluate(tiny_config(epochs=1, rate=0.3, norm="batch"), str(tmp_path),
                                         source=tiny_source(), verbose=0)
    assert metrics["placement_sites"] == "dense1.post:0.3"
    assert metrics["config"]["norm"] == "batch" and metrics["export_check"]["passed"]
    assert set(metrics["dropout_stats"]) == {"dense1.post", "dense1.bn"}
    with open(tmp_path / "model.txt") as f:
        text = f.read()
    assert text.startswith("dense_mlp: ") and text.splitlines()[0].endswith(f", {metrics['precision']['policy']}")
    rows = layer_table_rows(text)
    names = [row["layer"] for row in rows]
    assert names.index("dense1.bn") < names.index("dense1.act") < names.index("dense1.post")
    assert [(row["layer"], row["dropout"]) for row in rows if row["dropout"]] == [
        ("dense1.post", "inverted, rate 0.3, one draw per unit")]
    assert metrics["validation_loss"] > 0 and 0 <= metrics["validation_accuracy"] <= 1


@pytest.mark.slow
def test_train_size_gives_every_seed_and_variant_the_same_stratified_examples(tmp_path):
    source = tiny_source(num_train=96)
    subset = subsets.subset(source, 40)
    labels = np.array([y for _, y in subset.train.as_numpy_iterator()])
    everything = np.array([y for _, y in source.train.as_numpy_iterator()])
    # Stratified: each class keeps its share of the 96 (within rounding).
    for c in np.unique(everything):
        assert abs(np.sum(labels == c) - 40 * np.mean(everything == c)) < 1
    again = subsets.subset(source, 40)
    assert [y for _, y in again.train.as_numpy_iterator()] == labels.tolist()
    digests = set()
    for seed, placement in ((0, "canonical"), (1, "none")):
        metrics = trainer.train_and_evaluate(tiny_config(train_size=40, seed=seed, placement=placement, epochs=1),
                                             str(tmp_path / f"{placement}{seed}"), source=source, verbose=0)
        assert metrics["data"]["train_size"] == 40 and metrics["data"]["num_train"] + metrics["data"][
            "num_validation"] == 40
        digests.add(metrics["data"]["train_subset_sha256"])
        assert 0 <= metrics["train_accuracy"] <= 1 and metrics["gap_accuracy"] == pytest.approx(
            metrics["train_accuracy"] - metrics["test_accuracy"])
    assert len(digests) == 1  # the same examples for every seed and variant
    with pytest.raises(DataError, match="--train_size=500 must be between 2 and the 96 training examples"):
        subsets.subset(source, 500)
    # Fewer than the classes left one out of training (it trained silently on 3 of 4).
    with pytest.raises(DataError, match="^--train_size=3 is below the 4 classes of tiny; a stratified subset keeps "
                                        "every class: give at least 4$"):
        subsets.subset(source, 3)
    assert len({y for _, y in subsets.subset(source, 4).train.as_numpy_iterator()}) == 4


def test_a_resumed_runs_history_is_whole_or_says_where_it_starts():
    earlier = {"history": {"loss": [0.9, 0.5], "val_loss": [0.8, 0.6]}, "seconds": [1.0, 1.0]}
    now = {"loss": [0.4], "val_loss": [0.7]}
    assert trainer.whole_history(earlier, now, 2) == ({"loss": [0.9, 0.5, 0.4], "val_loss": [0.8, 0.6, 0.7]}, 0)
    assert trainer.whole_history(None, now, 0) == (now, 0)  # not resumed
    # A checkpoint written before records were kept: this session's epochs only, and from which epoch.
    assert trainer.whole_history(None, now, 2) == (now, 2)
    assert trainer.whole_history({"history": {"loss": [0.9]}}, now, 2) == (now, 2)
    # Resumed after its last epoch: nothing trained, the record is the history.
    assert trainer.whole_history(earlier, {}, 2) == (earlier["history"], 0)
    # A partial history cannot show whether the validation loss rose: the comparison leaves the rise out.
    from dropzoo import records
    metrics = {"config": {"seed": 0}, "history": {"val_loss": [0.5, 0.7]}, "resumed_from_epoch": 2}
    assert records.row("r", metrics, {}, "d", "r")["validation_rise"] is None
    assert records.row("r", {**metrics, "history_from_epoch": 0}, {}, "d", "r")["validation_rise"] == 0.7 / 0.5


def test_the_placement_flags_help_names_only_placements_there_are():
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    named = fv["placement"].help.split("Named placement: ")[1].split(" (where")[0].split(", ")
    every = {p for m in models.list_models() for norm in ("none", "batch")
             for p in models.list_placements(m, norm=norm)}
    assert named and set(named) <= every, set(named) - every


def test_a_run_resumes_only_as_it_ran_but_a_finished_one_reports_whatever_the_strategy(tmp_path):
    """Epochs on one device, then on two replicas, would be recorded as one mirrored run."""
    import dataclasses

    from dropzoo import workdir as workdir_lib

    config = tiny_config()
    saved = {**config.to_dict(), "resolved": {}}
    mirrored = dataclasses.replace(config, strategy="mirrored", cpu_devices=2)
    with pytest.raises(trainer.RunError, match=r"holds a run with other settings: --strategy \('auto' -> 'mirrored'\), "
                                               r"--cpu_devices \(unset -> 2\); use another --workdir, or --overwrite "
                                               r"to replace that run, or rerun with --strategy=auto and without "
                                               r"--cpu_devices to resume it$"):
        workdir_lib.check_same(saved, mirrored, {}, str(tmp_path), resuming=True)
    with pytest.raises(trainer.RunError, match=r"or rerun with --strategy=mirrored --cpu_devices=2 to resume it$"):
        workdir_lib.check_same({**mirrored.to_dict(), "resolved": {}}, config, {}, str(tmp_path), resuming=True)
    # A network given as text: --model is derived from it (asked for beside it, refused); values quoted for a shell.
    typed = dataclasses.replace(config, model="conv4k3-flatten", network="conv4k3, flatten")
    with pytest.raises(trainer.RunError, match=r"or rerun with --network=conv4k3,flatten to report it$"):
        workdir_lib.check_same({**typed.to_dict(), "resolved": {}}, dataclasses.replace(
            config, model="conv8k3-flatten", network="conv8k3,flatten"), {}, str(tmp_path))
    mine = dataclasses.replace(config, model="mine", keras_model="my models/mine.keras")
    with pytest.raises(trainer.RunError, match=r"or rerun with --keras_model='\S*/my models/mine.keras' to report "
                                               r"it$"):
        workdir_lib.check_same({**mine.to_dict(), "resolved": {}}, dataclasses.replace(
            config, model="other", keras_model="other.keras"), {}, str(tmp_path))
    with pytest.raises(trainer.RunError, match=r"or rerun with --keras_model='\S*/my models/mine.keras' and without "
                                               r"--model to report it$"):  # asked with a zoo network's --model
        workdir_lib.check_same({**mine.to_dict(), "resolved": {}}, config, {}, str(tmp_path))
    # Named by --model: given back (left out, the rerun was refused again for --model).
    named = dataclasses.replace(config, model="custom", keras_model="b.keras")
    with pytest.raises(trainer.RunError, match=r"or rerun with --keras_model=\S*/b.keras --model=custom to report it$"):
        workdir_lib.check_same({**named.to_dict(), "resolved": {}}, dataclasses.replace(
            config, model="a", keras_model="a.keras"), {}, str(tmp_path))
    # A zoo network's run, asked with --network: "" is no value (--network='' is refused as empty).
    with pytest.raises(trainer.RunError, match=r"or rerun with --model=dense_mlp and without --network to report it$"):
        workdir_lib.check_same({**config.to_dict(), "resolved": {}}, typed, {}, str(tmp_path))
    workdir_lib.check_same(saved, mirrored, {}, str(tmp_path), resuming=False)  # finished: its record stands
    # The same flags resolving otherwise: a workdir of a 2-worker run copied and resumed by one process.
    cluster = json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}})
    two = strategies.resolved_here("auto", None, cluster)
    assert two == "multi_worker x2 tasks" and strategies.resolved_here("auto", None, "") == "default"
    saved = {**config.to_dict(), "resolved": {"strategy": two}}
    with pytest.raises(trainer.RunError, match=r"holds a run trained with the strategy 'multi_worker x2 tasks', but "
                                               r"this command resolves to 'default'; resume it with the cluster "
                                               r"\(TF_CONFIG\), GPUs or --cpu_devices it started with, use another"):
        workdir_lib.check_same(saved, config, {"strategy": "default"}, str(tmp_path), resuming=True)
    workdir_lib.check_same(saved, config, {"strategy": "default"}, str(tmp_path), resuming=False)
    assert strategies.resolved_here("mirrored", 2, "") == "mirrored x2"
    # Two spellings of one strategy resume each other: auto on two CPU devices is mirrored there.
    both = strategies.resolved_here("auto", 2, "")
    assert both == "mirrored x2"
    auto = dataclasses.replace(config, cpu_devices=2)
    saved = {**auto.to_dict(), "resolved": {"strategy": both}}
    workdir_lib.check_same(saved, mirrored, {"strategy": both}, str(tmp_path), resuming=True)
    with pytest.raises(trainer.RunError, match=r"--cpu_devices \(2 -> 4\)"):  # the replicas are not
        workdir_lib.check_same(saved, dataclasses.replace(mirrored, cpu_devices=4), {"strategy": "mirrored x4"},
                               str(tmp_path), resuming=True)


def test_a_momentum_swept_beside_no_norm_plans_each_run_once():
    # norm=none resets the momentum: two equal configs once shared a workdir, the second recorded as itself.
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", "--model=dense_mlp", "--norm=none,batch", "--bn_momentum=0.9,0.99", "--placement=canonical"])
    runs = flags_lib.train_plan(fv)
    assert [(c.norm, c.bn_momentum) for c, _ in runs] == [("none", 0.99), ("batch", 0.9), ("batch", 0.99)]
    assert len({workdir for _, workdir in runs}) == 3


def test_a_run_whose_recorded_data_is_gone_is_named_not_a_flag_never_given(eval_main, capsys, tmp_path):
    run = tmp_path / "run"
    (run / "saved_model").mkdir(parents=True)
    gone = str(tmp_path / "moved_away")
    (run / "metrics.json").write_text(json.dumps({"data": {"origin": {"image_dir": gone, "color_mode": "grayscale"}}}))
    for args in ([f"--workdir={run}"], [f"--saved_model={run}/saved_model"]):
        assert eval_main(*args) == 2
        err = capsys.readouterr().err
        assert err == (f"error: run {run} was tested on --image_dir={gone}, which is not here (moved or deleted?); "
                       "name the data to evaluate it on (--image_dir, --npz, --idx_dir or --dataset)\n"), err
    # Its test folder is what testing reads: the training folder gone is no reason to refuse (nor a tfds dir).
    tests = tmp_path / "tests"
    tests.mkdir()
    (run / "metrics.json").write_text(json.dumps({"data": {"origin": {
        "image_dir": gone, "test_image_dir": str(tests), "color_mode": "grayscale", "tfds_data_dir": "rel/tfds"}}}))
    assert eval_main(f"--workdir={run}") == 2
    assert "which is not here" not in capsys.readouterr().err
    tests.rmdir()  # the test folder moved: its own flag is named
    assert eval_main(f"--workdir={run}") == 2
    assert capsys.readouterr().err == (
        f"error: run {run} was tested on --test_image_dir={tests}, which is not here (moved or deleted?); give its "
        "new place with --test_image_dir=DIR (all of it, as the run was tested), or name the data to evaluate it on "
        "(--image_dir, --npz, --idx_dir or --dataset)\n")
    # A run trained from the Python API on arrays records their name only: it was refused as a --dataset typo.
    (run / "metrics.json").write_text(json.dumps({"data": {"source": "tiny", "origin": {"dataset": "tiny"}}}))
    assert eval_main(f"--workdir={run}") == 2
    assert capsys.readouterr().err == (
        f"error: run {run} was trained on data named 'tiny', which is no dataset eval.py can load (arrays given to "
        "the Python API are not kept with the run); name the data to evaluate it on (--image_dir, --npz, --idx_dir "
        "or --dataset)\n")
    (run / "metrics.json").write_text(json.dumps({"data": {"source": "my/arrays", "origin": {"dataset": "my/arrays"}}}))
    assert eval_main(f"--workdir={run}") == 2
    assert capsys.readouterr().err.startswith(f"error: run {run} was trained on data named 'my/arrays', which is no")


def test_sites_override_one_placement_as_a_flagfile_sets_it():
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", "--flagfile=" + os.path.join(ROOT, "configs", "keras_mnist_cnn.cfg"), "--sites=dense1.pre:0.5"])
    [(config, _)] = flags_lib.train_plan(fv)
    assert config.placement == "canonical" and config.placement_spec == "dense1.pre:0.5"


def test_a_finished_run_given_other_training_data_is_refused_not_reported(tmp_path):
    """Its old metrics came back as the new data's (0.312 on other arrays), without a word at verbose=0."""
    config, workdir = tiny_config(epochs=1), str(tmp_path / "run")
    first = trainer.train_and_evaluate(config, workdir, source=tiny_source(), verbose=0, serving_artifacts=False)
    assert trainer.train_and_evaluate(config, workdir, source=tiny_source(), verbose=0) == first  # the same data
    with pytest.raises(DataError, match=rf"^{workdir} holds a run finished on other training data \(sha256 "
                                        r"[0-9a-f]{12}\.\.\.\) than tiny \(sha256 [0-9a-f]{12}\.\.\.\), so its results "
                                        r"would be reported as this data's; use another --workdir, or --overwrite"):
        trainer.train_and_evaluate(config, workdir, source=tiny_source(seed=1), verbose=0)
    # The same training arrays, another test split: its old test scores came back as this split's.
    other_test = sources.array_source("tiny", tiny_arrays()[0], tiny_arrays(seed=2)[1])
    with pytest.raises(DataError, match=rf"^{workdir} holds a run finished and tested on other test data \(sha256 "
                                        rf".* score it on this data with eval.py --workdir={workdir} "):
        trainer.train_and_evaluate(config, workdir, source=other_test, verbose=0)
    # In a sweep, that run fails alone: the others' training data is the finished run's (a sweep is refused as a
    # whole only where it is not: tested below).
    later = (dataclasses.replace(config, seed=2), str(tmp_path / "seed2"))
    results = sweep.run_sweep([(config, workdir), later], source=other_test, verbose=0, serving_artifacts=False)
    assert "finished and tested on other test data" in results[0][2] and isinstance(results[1][2], dict)



def test_a_finished_run_of_a_file_is_compared_with_the_file_as_it_is_now(tmp_path, caplog):
    """From the command line (no source given) an edited .npz got the old scores: its data is now loaded and
    compared; data that cannot be loaded here is said, and the record reported as it was."""
    def save(seed):
        x, y = tiny_source(seed=seed).train, tiny_source(seed=seed).test
        arrays = [np.stack(part) for split in (x, y) for part in zip(*split.as_numpy_iterator())]
        np.savez(tmp_path / "d.npz", x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3])

    save(0)
    config, workdir = tiny_config(epochs=1, dataset="mnist", npz=str(tmp_path / "d.npz")), str(tmp_path / "run")
    first = trainer.train_and_evaluate(config, workdir, verbose=0, serving_artifacts=False)
    assert trainer.train_and_evaluate(config, workdir, verbose=0) == first
    save(1)
    with pytest.raises(DataError, match=rf"^{workdir} holds a run finished on other training data"):
        trainer.train_and_evaluate(config, workdir, verbose=0)
    # A sweep extended after the file changed trained its new seeds on the new data, then failed the finished run:
    # refused before any trains.
    later = (dataclasses.replace(config, seed=2), str(tmp_path / "seed2"))
    with pytest.raises(DataError, match=rf"^{workdir} holds a run finished on other training data .* \(the sweep "
                                        r"trains none of its runs: the others would train on data this finished run "
                                        r"did not\)$"):
        sweep.run_sweep([(config, workdir), later], verbose=0)
    assert not os.path.exists(later[1])
    os.remove(tmp_path / "d.npz")
    assert trainer.train_and_evaluate(config, workdir, verbose=0) == first
    assert "the run's data cannot be loaded here (--npz" in caplog.text


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": 2.5}, "--epochs must be an integer, got 2.5"),  # failed deep in Keras
    ({"train_size": 100.7}, "--train_size must be an integer, got 100.7"),  # trained on 100
    ({"rate": "0.5"}, "--rate must be a number, got '0.5'"),  # read as '0.50.5'
    ({"epochs": True}, "--epochs must be an integer, got True"),
    ({"seed": np.int64(3)}, "--seed must be an integer, got np.int64(3) (a numpy int64: pass int(...))"),
    ({"model": None}, "--model must be a string, got None"),
    ({"sites": ["dense1.pre:0.5"]}, "--sites must be a string, got ['dense1.pre:0.5']"),  # an AttributeError
    ({"placement": " "}, "--placement is given but empty (an unset variable?); give a placement (e.g. canonical, "
                         "or none for no dropout)"),  # trained without dropout, filed without a variant, unsaid
])
def test_a_config_field_of_another_type_is_one_line_from_python(overrides, message):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.validate(config_lib.TrainConfig(**overrides))
    assert str(info.value) == message
    config_lib.validate(config_lib.TrainConfig(learning_rate=1, rate=np.float64(0.5)))  # an int is a number


def test_a_placement_that_may_not_be_what_was_meant_is_said(tmp_path):
    """bn_before without --norm=batch feeds no BN; sites in --placement sweep one site each (--sites' spelling)."""
    def notes(*args):
        fv = flags.FlagValues()
        flags_lib.define_train_flags(fv)
        fv(["train.py", "--dataset=mnist_sample", *args])
        return plan_notes.model_notes(flags_lib.train_plan(fv))

    assert notes("--placement=bn_before,none") == [
        "--placement=bn_before is meant for BatchNorm, which this network lacks without --norm=batch: its sites are "
        "trained without a BN layer to feed (add --norm=batch)"]
    assert notes("--placement=bn_before", "--norm=batch") == notes("--placement=bn_before", "--norm=none,batch") == []
    path = str(tmp_path / "plain.keras")  # --norm rebuilds zoo networks only: a Keras model's BN is its own
    relu = [keras.layers.Dense(8, activation="relu") for _ in range(2)]
    keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), *relu,
                      keras.layers.Dense(10, activation="softmax")]).save(path)
    assert notes(f"--keras_model={path}", "--placement=bn_before") == [
        "--placement=bn_before is meant for BatchNorm, which this network lacks: its sites are trained without a BN "
        "layer to feed (give the Keras model BatchNormalization layers)"]
    assert notes("--placement=dense1.pre:0.5,dense1.post:0.3") == [
        "--placement=dense1.pre:0.5,dense1.post:0.3 sweeps each site as a placement of its own; for one placement "
        "of them all, pass --sites=dense1.pre:0.5,dense1.post:0.3"]
    assert notes("--placement=dense1.pre:0.5,none") == notes("--sites=dense1.pre:0.5,dense1.post:0.3") == []
    # Another --optimizer beside a flagfile's Adadelta rate (keras_mnist_cnn.cfg's 1.0) trained Adam at 1.0 silently.
    flagfile = tmp_path / "recipe.cfg"
    flagfile.write_text("--optimizer=adadelta\n--learning_rate=1.0\n")
    assert notes(f"--flagfile={flagfile}", "--optimizer=adam,sgd") == [
        "--optimizer=adam,sgd trains at --learning_rate=1, a rate for Adadelta (the classic recipe's 1.0, from a "
        "flagfile?): Keras' default for adam is 0.001, sgd is 0.01; if it is not meant, pass another --learning_rate"]
    assert notes(f"--flagfile={flagfile}") == notes(f"--flagfile={flagfile}", "--optimizer=adam",
                                                    "--learning_rate=0.001") == []


def test_sweep_values_that_are_not_a_list_are_one_line_from_python():
    # "all" was swept letter by letter ("unknown placement 'a'"), 0.5 a bare TypeError.
    for sweeps, message in (({"placement": "all"}, "sweeps['placement'] must be a list of values, got 'all': e.g. "
                                                   "{'placement': ['all']}"),
                            ({"learning_rate": 0.5}, "sweeps['learning_rate'] must be a list of values, got 0.5"),
                            ({"workdir": ["x"]}, "cannot sweep workdir; sweepable fields: model,"),
                            ({"placement": []}, "sweeps['placement'] is empty; give at least one value, or leave")):
        with pytest.raises(config_lib.ConfigError) as info:
            sweep.expand(config_lib.TrainConfig(), sweeps)
        assert str(info.value).startswith(message)
    configs = sweep.expand(config_lib.TrainConfig(model="dense_mlp"), {"placement": (p for p in ("canonical", "none"))})
    assert len(configs) == 2
    # What a sweep takes from Python: (config, workdir) pairs, each its own workdir, and a config, not its dict.
    for runs, message in (([configs[0]], "runs are (TrainConfig, workdir) pairs, e.g. [(config, sweep.run_dir(root, "
                                         "config))], got TrainConfig"),
                          ([(configs[0], None)], "runs are (TrainConfig, workdir) pairs, e.g. [(config, "
                                                 "sweep.run_dir(root, config))], got a workdir of type NoneType"),
                          ([(configs[0], "r"), (configs[1], "./r")], "two runs share the workdir ./r with other "
                                                                    "settings; give each its own")):
        with pytest.raises(config_lib.ConfigError) as info:
            sweep.plan(runs)
        assert str(info.value).startswith(message)
    with pytest.raises(config_lib.ConfigError, match=r"^runs are \(TrainConfig, workdir\) pairs, .*got TrainConfig"):
        sweep.run_sweep((configs[0], "r"))  # one pair, not a list of them: a TypeError unpacking it
    # A model object for keras_model (place_dropout takes one), @FILE (the flags read it): one line with the fix.
    with pytest.raises(config_lib.ConfigError, match=r"^keras_model takes the path of a .keras file, got a model "
                                                     r"object; save it \(model.save\('my_model.keras'\)\)"):
        config_lib.TrainConfig(keras_model=keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    with pytest.raises(config_lib.ConfigError, match=r"^network '@net.json': @FILE is the command line's; from "
                                                     r"Python pass the file's text, network=open\(PATH\).read\(\)$"):
        config_lib.validate(config_lib.TrainConfig(network="@net.json"))
    with pytest.raises(config_lib.ConfigError, match=r"^give a TrainConfig \(dropzoo.config.TrainConfig\(\*\*fields"
                                                     r"\)\), got dict$"):
        config_lib.validate(configs[0].to_dict())


def test_a_dataset_beside_files_is_refused_when_the_config_is_validated():
    # It passed validate() and was refused only when the data loaded (a dry run, a sweep's first run).
    with pytest.raises(config_lib.ConfigError, match=r"^give one data source, not --npz and --dataset=fashion_mnist"):
        config_lib.validate(config_lib.TrainConfig(npz="/x.npz", dataset="fashion_mnist"))
