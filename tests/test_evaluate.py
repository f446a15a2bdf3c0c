"""Tests for dropzoo.evaluate: scoring through the serving signature only."""
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from dropzoo import evaluate
from dropzoo import ood as ood_lib
from dropzoo import serving
from dropzoo.errors import DataError
from dropzoo.errors import ExportError
from dropzoo.evaluate import evaluate_saved_model
from dropzoo.export import export_saved_model
from dropzoo.export import load_serving_fn
from dropzoo.preprocess import scale

SHAPE = (8, 8, 1)
NUM_CLASSES = 3


def build_model():
    keras.utils.set_random_seed(0)
    image = keras.Input(shape=SHAPE, name="image")
    x = keras.layers.Flatten()(image)
    x = keras.layers.Dense(16, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return keras.Model(image, x)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = build_model()
    return model, export_saved_model(model, tmp_path_factory.mktemp("eval") / "saved_model")


@pytest.fixture(scope="module")
def data(exported):
    """20 images labelled so the model gets exactly 12 right (accuracy 0.6)."""
    model, _ = exported
    images = np.random.RandomState(1).randint(0, 256, (20,) + SHAPE).astype(np.uint8)
    predicted = model(scale(images), training=False).numpy().argmax(axis=-1)
    wrong = (predicted + 1) % NUM_CLASSES
    labels = np.where(np.arange(20) < 12, predicted, wrong).astype(np.int64)
    return images, labels


def numpy_metrics(model, images, labels):
    """The expected result, by hand from the in-memory model."""
    probabilities = model(scale(images), training=False).numpy().astype(np.float64)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7)
    accuracy = np.mean(probabilities.argmax(axis=-1) == labels)
    return accuracy, -np.mean(np.log(picked))


def test_accuracy_and_loss_match_numpy(exported, data):
    model, path = exported
    images, labels = data
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(6)  # 6+6+6+2
    result = evaluate_saved_model(path, dataset)
    accuracy, loss = numpy_metrics(model, images, labels)
    assert accuracy == pytest.approx(0.6)
    assert result["num_examples"] == 20
    assert result["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert all(type(result[key]) is kind for key, kind in
               [("accuracy", float), ("loss", float), ("num_examples", int)])


def test_plain_iterables_give_the_same_result(exported, data):
    _, path = exported
    images, labels = data
    batches = [(images[:7], labels[:7]), (images[7:], labels[7:].reshape(-1, 1))]
    from_list = evaluate_saved_model(path, batches)
    from_generator = evaluate_saved_model(path, (batch for batch in batches))
    from_dataset = evaluate_saved_model(path, tf.data.Dataset.from_tensor_slices(data).batch(20))
    assert from_list == from_generator
    assert from_list["accuracy"] == from_dataset["accuracy"]
    # float32 kernels may round differently at another batch size (seen on AVX2: 1.4e-9).
    assert from_list["loss"] == pytest.approx(from_dataset["loss"], rel=1e-6)


def test_wrong_image_shape_fails_up_front_from_element_spec(exported):
    _, path = exported
    images = np.zeros((4, 10, 10, 1), np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(4, np.int64))).batch(2)
    with pytest.raises(ValueError) as caught:
        evaluate_saved_model(path, dataset)
    message = str(caught.value)
    assert "\n" not in message
    assert "(8, 8, 1)" in message and "(10, 10, 1)" in message
    assert "use a dataset whose images match" in message


def test_wrong_image_shape_fails_before_running_an_iterable(exported):
    _, path = exported

    def batches():
        yield np.zeros((2, 28, 28, 1), np.uint8), np.zeros(2, np.int64)
        raise AssertionError("evaluation ran past the shape check")

    with pytest.raises(ValueError, match=r"\(8, 8, 1\).*\(28, 28, 1\)"):
        evaluate_saved_model(path, batches())


def test_prescaled_float_images_are_rejected(exported, data):
    _, path = exported
    images, labels = data
    with pytest.raises(ValueError, match="uint8"):
        evaluate_saved_model(path, [(images / 255.0, labels)])


def test_out_of_range_labels_are_rejected(exported, data):
    _, path = exported
    images, _ = data
    with pytest.raises(ValueError, match=r"^labels must be class ids in \[0, 3\), got 3\.\.3: the model answers 3 "
                                         r"classes; evaluate it on data with its classes \(a run, or a comparison of "
                                         r"runs, given no data flags is scored on the test data it recorded\)$"):
        evaluate_saved_model(path, [(images, np.full(20, 3))])


def test_empty_data_is_rejected(exported):
    _, path = exported
    with pytest.raises(ValueError, match="non-empty"):
        evaluate_saved_model(path, [])


def test_load_serving_fn_returns_the_signature(exported, data):
    _, path = exported
    serving_fn = load_serving_fn(path)
    images, _ = data
    result = serving_fn(image=tf.constant(images))
    assert set(result) == {"probabilities", "class_id"}


def _missing(base):
    return str(base / "nope")


def _a_file(base):
    path = base / "model.pb"
    path.write_bytes(b"not a directory")
    return str(path)


def _empty_dir(base):
    os.makedirs(base / "empty")
    return str(base / "empty")


def _no_variables(base, source):
    path = base / "copy"
    shutil.copytree(source, path)
    shutil.rmtree(path / "variables")
    return str(path)


def _garbage_pb(base, source):
    path = base / "copy"
    shutil.copytree(source, path)
    (path / "saved_model.pb").write_bytes(b"\xff\x00garbage")
    return str(path)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda base, source: _missing(base), "does not exist"),
        (lambda base, source: _a_file(base), "not a SavedModel directory"),
        (lambda base, source: _empty_dir(base), "missing saved_model.pb"),
        (_no_variables, "missing variables/"),
        (_garbage_pb, "cannot load SavedModel"),
    ],
    ids=["missing", "file", "empty-dir", "no-variables", "garbage-pb"],
)
def test_bad_saved_model_dirs_give_one_line_errors(make, expected, exported, tmp_path):
    _, source = exported
    path = make(tmp_path, source)
    with pytest.raises(ExportError) as caught:
        load_serving_fn(path)
    message = str(caught.value)
    assert "\n" not in message
    assert expected in message and path in message
    assert "export_saved_model" in message  # names the fix
    with pytest.raises(ExportError):
        evaluate_saved_model(path, [])


@pytest.mark.parametrize("ood,message", [
    ({"idx_dir": "/nonexistent"}, "out-of-distribution data: --ood_idx_dir /nonexistent is not a directory; "
                                  "point it at the folder holding t10k-images-idx3-ubyte.gz, "
                                  "t10k-labels-idx1-ubyte.gz"),
    ({"idx_dir": os.path.dirname(__file__)}, "out-of-distribution data: --ood_idx_dir "),
])
def test_ood_data_errors_name_the_ood_flags(ood, message):
    """The loaders speak of --idx_dir and --dataset; for OOD data eval.py's flags are --ood_idx_dir and
    --ood_dataset, and only the t10k files are needed."""
    with pytest.raises(DataError) as info:
        ood_lib.load(ood)
    assert str(info.value).startswith(message) and "--idx_dir" not in str(info.value)
    assert "train-images" not in str(info.value)


def test_an_unprepared_ood_dataset_names_the_ood_flags(monkeypatch):
    from dropzoo import tfds_source

    def unreachable(name, *args):
        raise tfds_source.Unreachable(f"tfds dataset {name!r} is not prepared and the network is unreachable")

    monkeypatch.setattr(tfds_source, "load", unreachable)
    with pytest.raises(DataError) as info:
        ood_lib.load({"dataset": "kmnist", "tfds_data_dir": None})
    message = str(info.value)
    assert message.startswith("out-of-distribution data: tfds dataset 'kmnist' is not prepared")
    assert "--ood_idx_dir" in message and "--idx_dir" not in message and "--npz" not in message


def test_an_export_that_takes_float_pixels_is_refused_in_one_line(exported, data, tmp_path):
    # eval.py and the Client give uint8 pixels; such an export failed inside TensorFlow with a traceback.
    model, _ = exported
    images, labels = data

    class FloatPixels(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, *images.shape[1:]], tf.float32, name="image")])
        def serve(self, image):
            probabilities = self.model(image / 255.0, training=False)
            return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

    module = FloatPixels()
    path = str(tmp_path / "float_pixels")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    with pytest.raises(ExportError, match=r"^SavedModel .*float_pixels takes float32 images, and its callers here "
                                          r"\(eval.py, Client\) give the uint8 pixels"):
        evaluate_saved_model(path, dataset)
    from dropzoo import client
    with pytest.raises(ExportError, match=r"float_pixels takes float32 images"):
        client.Client(path)
    from dropzoo.evaluate import evaluate_tflite
    (tmp_path / "float_pixels.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(path).convert())
    with pytest.raises(ExportError, match=r"^TFLite model .*float_pixels.tflite takes float32 images"):
        evaluate_tflite(str(tmp_path / "float_pixels.tflite"), dataset)


def test_an_export_copied_out_of_its_run_says_when_it_is_scored_on_other_data(exported, data, tmp_path, eval_main,
                                                                                 capsys):
    # Scored on other data through its run, a note said so; copied out, a Fashion-MNIST model scored 10% on MNIST
    # without a word. The export now carries its run's test split by content.
    from dropzoo import sources
    model, _ = exported
    images, labels = data
    np.savez(tmp_path / "test.npz", x_test=images[..., 0], y_test=labels)
    np.savez(tmp_path / "other.npz", x_test=255 - images[..., 0], y_test=labels)
    tested = sources.load_source(npz=str(tmp_path / "test.npz"), need_train=False)
    path = export_saved_model(model, str(tmp_path / "copy"), test_data=sources.export_record(tested)["test_data"])
    assert eval_main(f"--saved_model={path}", f"--npz={tmp_path / 'test.npz'}") == 0
    assert "note:" not in capsys.readouterr().err  # its own test data
    assert eval_main(f"--saved_model={path}", f"--npz={tmp_path / 'other.npz'}") == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"note: evaluated on npz:{tmp_path / 'other.npz'}, not the test data the export's run was tested on "
        f"(npz:{tmp_path / 'test.npz'})")


def test_exports_made_elsewhere_or_answering_logits_are_one_line(exported, data, tmp_path, monkeypatch):
    model, path = exported
    images, labels = data
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    keras_export = str(tmp_path / "keras_export")
    model.export(keras_export, verbose=False)  # serving_default answers output_0
    with pytest.raises(ExportError, match=r"its 'serving_default' answers \['output_0'\], not 'probabilities' \(an "
                                          r"export made elsewhere, e.g. Keras' model.export\?\); export the Keras "
                                          r"model with dropzoo.export.export_saved_model"):
        evaluate_saved_model(keras_export, dataset)
    logits = keras.Model(model.inputs, model.layers[-1].output)  # softmax still inside: rebuild without it
    logits.layers[-1].activation = keras.activations.linear
    # Exporting it as probabilities is refused; an export of one made before the check: refused by eval and client.
    with pytest.raises(ExportError, match=r"^the model answers 'probabilities' that are not probabilities .*: "
                                          r"logits\? export the model with .*outputs='logits'"):
        export_saved_model(logits, str(tmp_path / "refused"), mc_dropout=False)
    assert not os.path.exists(tmp_path / "refused")
    with monkeypatch.context() as patched:
        patched.setattr(serving, "check_probabilities", lambda *args: None)
        old_export = export_saved_model(logits, str(tmp_path / "logits"))
    with pytest.raises(ExportError, match=r"answers 'probabilities' that are not probabilities .*: logits\? export "
                                          r"the model with .*outputs='logits'"):
        evaluate_saved_model(old_export, dataset)
    from dropzoo import client

    for call in (lambda c: c.predict(images), lambda c: c.mc_dropout(images, samples=2, seed=0)):
        with pytest.raises(ExportError, match=r"^SavedModel .*logits answers 'probabilities' that are not "):
            call(client.Client(old_export))
    assert client.Client(path).predict(images)["probabilities"].shape == (len(images), model.output_shape[-1])
    # A run's directory, or runs below one, named as the SavedModel: the flag that fits.
    run = tmp_path / "run"
    shutil.copytree(path, run / "saved_model")
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ExportError, match=rf"{run} is a run's directory: pass --workdir={run}, or "
                                          rf"--saved_model={run}/saved_model"):
        evaluate_saved_model(str(run), dataset)
    with pytest.raises(ExportError, match=rf"{tmp_path} holds runs: compare them with --runs_dir={tmp_path}"):
        evaluate_saved_model(str(tmp_path), dataset)
    # A path TensorFlow reads as a pattern: "Failed to find any matching files for .../variables/variables".
    shutil.copytree(path, tmp_path / "copy[1]")
    with pytest.raises(ExportError, match=r"path holds '\[', which TensorFlow reads as a file pattern; move or link "
                                          r"it to a path without"):
        evaluate_saved_model(str(tmp_path / "copy[1]"), dataset)
    os.remove(run / "saved_model" / "saved_model.pb")
    with pytest.raises(ExportError, match=rf"not a complete SavedModel \(missing saved_model.pb\); it is run {run}'s "
                                          r"export; it cannot be exported again here: the run has no checkpoint"):
        evaluate_saved_model(str(run / "saved_model"), dataset)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch-2.npz").write_bytes(b"")  # its last checkpoint, as saved_epoch finds it
    with pytest.raises(ExportError, match=rf"export; export it again from its last checkpoint \(no training, the "
                                          rf"same weights\): delete {run}/metrics.json and rerun its train.py"):
        evaluate_saved_model(str(run / "saved_model"), dataset)
    with pytest.raises(ExportError, match=rf"it is a TFLite model: pass --tflite={run}/model.tflite \(in Python: "
                                          r"tflite_model=True\)"):
        evaluate_saved_model(str(run / "model.tflite"), dataset)


def test_the_summary_line_names_the_headline_scores_and_the_best_ood_score():
    result = {"accuracy": 0.98765, "loss": 0.04321, "ece": 0.0123, "data_source": "mnist", "split": "test",
              "num_examples": 10000}
    assert evaluate.summary_line(result) == "accuracy 98.77%, NLL 0.0432, ECE 0.0123 on mnist (test, 10,000 images)"
    result.update(mc_samples=20, mc_accuracy=0.9881, mc_nll=0.0401, ood_num_examples=10000, ood_auroc_entropy=0.91,
                  ood_auroc_mc_entropy=0.93, ood_auroc_mc_mutual_information=0.925)
    assert evaluate.summary_line(result) == (
        "accuracy 98.77%, NLL 0.0432, ECE 0.0123 on mnist (test, 10,000 images); MC dropout (20 passes): accuracy "
        "98.81%, NLL 0.0401; out-of-distribution (10,000 images): AUROC 0.930 by mc entropy")
    result.update(num_examples=1, ood_num_examples=1)
    line = evaluate.summary_line(result)
    assert "(test, 1 image); MC" in line and "(1 image): AUROC" in line


def test_test_data_without_some_of_the_models_classes_is_said(exported, data):
    """An .npz of classes 0 and 1 scored by a 3-class run: the scores cover those classes only, said (a test folder
    lacking a class is refused by name; arrays carry no names)."""
    _, path = exported
    images, labels = data
    assert "classes_absent" not in evaluate_saved_model(path, tf.data.Dataset.from_tensor_slices(
        (images, np.arange(20) % NUM_CLASSES)).batch(8))
    result = evaluate_saved_model(path, tf.data.Dataset.from_tensor_slices((images, labels % 2)).batch(8))
    assert result["classes_absent"] == [2]
    result["data_source"] = "npz:two.npz"
    assert evaluate.absent_classes_notes([result]) == [
        "npz:two.npz has no example of class 2 of the model: its scores cover the other classes only (a test split "
        "with every class gives the model's)"]
    rows = [{"data_source": "npz:two.npz", "classes_absent": [0, 2]}] * 3 + [{"data_source": "mnist"}]
    assert evaluate.absent_classes_notes(rows) == [
        "npz:two.npz has no example of classes 0, 2 of the model (3 runs): its scores cover the other classes only "
        "(a test split with every class gives the model's)"]
    # A folder's classes by name, quoted: its folder '1' (class id 0) read as class id 1.
    named = [{"data_source": "images:t", "classes_absent": [0], "classes_absent_names": ["1"]}]
    assert evaluate.absent_classes_notes(named)[0].startswith("images:t has no example of class '1' of the model")
