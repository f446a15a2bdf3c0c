"""A new dropout kind, comparison column or serving output is one entry in one table.

Each test adds an entry the way docs/contributing.md describes (here with
monkeypatch, so the table is restored after) and checks that everything that
reads the table picks it up, with no other change.
"""
import os

import keras
import numpy as np
import tensorflow as tf
from conftest import tiny_config
from conftest import tiny_source

import models
from dropzoo import compare
from dropzoo import export
from dropzoo import report
from dropzoo import serving
from dropzoo import tflite
from dropzoo import trainer
from dropzoo import verify
from models import layers as dropout_lib


def test_a_new_dropout_kind_is_one_entry_in_KINDS(monkeypatch):
    halved = dropout_lib.Kind(layer=dropout_lib.Float32Dropout, spatial_layer=dropout_lib.Float32SpatialDropout2D,
                              bernoulli=True, variance=lambda rate: rate / (1 - rate),
                              train_scale=lambda rate: 1 / (1 - rate))
    monkeypatch.setitem(dropout_lib.KINDS, "copy", halved)
    assert models.check_kind("copy") == "copy"
    model = models.build("keras_mnist_cnn", "conv", kind="copy", seed=0)
    assert [type(layer) for layer in models.dropout_layers(model)][:1] == [dropout_lib.Float32Dropout]
    assert models.construction_key("dense_mlp", "before_activation", kind="copy") == models.construction_key(
        "dense_mlp", "after_activation", kind="copy")  # Bernoulli: moves across ReLU like inverted
    spatial = models.build("keras_mnist_cnn", "spatial", kind="copy", seed=0)
    assert any(dropout_lib.kind_of(layer) == ("inverted", True) for layer in models.dropout_layers(spatial))


def test_a_new_comparison_column_is_one_entry_in_COLUMNS(monkeypatch, tmp_path):
    column = report.Column("validation_loss", "validation NLL", ("main",))
    monkeypatch.setattr(report, "COLUMNS", report.COLUMNS + (column,))
    workdir = str(tmp_path / "runs" / "dense_mlp" / "canonical" / "seed0")
    trainer.train_and_evaluate(tiny_config(epochs=1), workdir, source=tiny_source(), verbose=0,
                               serving_artifacts=False)
    result = compare.compare_runs(tmp_path / "runs", source=tiny_source())  # a pathlib.Path, as a notebook gives
    [entry] = result["table"]
    assert "validation_loss" in entry
    with open(result["paths"]["comparison.md"]) as f:
        assert "validation NLL (mean ± std)" in f.read()
    with open(result["paths"]["comparison.csv"]) as f:
        assert "validation_loss_mean" in f.readline()


def test_a_new_serving_output_is_one_entry_in_OUTPUTS(monkeypatch, tmp_path):
    confidence = serving.Output(tf.float32, 1, lambda probabilities: tf.reduce_max(probabilities, axis=-1))
    monkeypatch.setitem(serving.OUTPUTS, "confidence", confidence)
    keras.utils.set_random_seed(0)
    image = keras.Input(shape=(8, 8, 1), name="image")
    model = keras.Model(image, keras.layers.Softmax()(keras.layers.Dense(3)(keras.layers.Flatten()(image))))
    path = export.export_saved_model(model, str(tmp_path / "saved_model"))
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)).astype(np.uint8)
    assert verify.verify_export(path, model, images)["passed"]  # the contract includes it
    served = tf.saved_model.load(path).signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_allclose(served["confidence"].numpy(), served["probabilities"].numpy().max(axis=1))
    from dropzoo import artifacts
    paths = artifacts.export_artifacts(model, str(tmp_path), images)
    assert "confidence" in tflite.Model.load(paths[artifacts.TFLITE_FILE])(images)
    assert os.path.isfile(paths[artifacts.TFLITE_INT8_FILE])
