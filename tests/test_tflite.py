"""model.tflite, model_int8.tflite and model.keras: written by every export, verified, evaluated."""
import json
import logging
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from conftest import tiny_source

from dropzoo import artifacts as artifacts_lib
from dropzoo import data as data_lib
from dropzoo import evaluate
from dropzoo import export
from dropzoo import serving
from dropzoo import tflite
from dropzoo import trainer
from dropzoo import verify
from dropzoo.errors import ExportError
from dropzoo.preprocess import scale

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 1)
NUM_CLASSES = 3


def build_model(seed=0):
    """Tiny untrained image classifier with a Dropout layer."""
    keras.utils.set_random_seed(seed)
    image = keras.Input(shape=SHAPE, name="image")
    x = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(image))
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(image, keras.layers.Softmax()(keras.layers.Dense(NUM_CLASSES)(x)))


def make_images(count=16, seed=0, shape=SHAPE):
    return np.random.RandomState(seed).randint(0, 256, (count,) + shape).astype(np.uint8)


def export_all(model, directory):
    """SavedModel and the three artifacts of `model` in `directory`; returns (saved_model, artifacts)."""
    saved_model = export.export_saved_model(model, os.path.join(directory, "saved_model"))
    return saved_model, artifacts_lib.export_artifacts(model, directory, make_images(64, seed=5))


def convert_custom(model, serving_fn, directory, input_dtype=tf.uint8):
    """TFLite bytes of a deliberately non-standard serving function of `model`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None,) + SHAPE, input_dtype, name="image")
    archive.add_endpoint("serving_default", serving_fn, input_signature=[spec])
    archive.write_out(str(directory), verbose=False)
    return tflite.convert(str(directory))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny training run with the default export: SavedModel, model.keras and both TFLite models."""
    workdir = str(tmp_path_factory.mktemp("run"))
    metrics = trainer.train_and_evaluate(tiny_config(), workdir, source=tiny_source(), verbose=0)
    return workdir, metrics


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = build_model()
    saved_model, artifacts = export_all(model, str(tmp_path_factory.mktemp("artifacts")))
    return model, saved_model, artifacts


# ------------------------------------------------------------- the trainer


def test_default_run_writes_three_verified_artifacts(finished_run):
    workdir, metrics = finished_run
    for name in ("model.keras", "model.tflite", "model_int8.tflite"):
        assert os.path.isfile(os.path.join(workdir, name)), name
        assert metrics["paths"][name] == os.path.join(workdir, name)
    check = metrics["export_check"]
    assert check["passed"]
    for key in ("tflite", "tflite_int8"):
        assert check[key]["random_ops"] == [] and check[key]["bitwise_repeatable"]
        assert check[key]["signature_problems"] == []
    assert check["tflite"]["max_abs_diff_vs_float32"] <= 1e-5
    assert check["tflite"]["max_abs_diff_vs_saved_model"] <= check["tolerance"]
    assert check["keras"]["max_abs_diff_vs_keras"] <= 1e-5 and check["keras"]["same_layers"]
    measured = metrics["tflite"]
    assert measured["runtime"] == tflite.RUNTIME
    # float32 TFLite is the trained model: same test accuracy as Keras' evaluate (to float32 rounding); a bfloat16
    # run (auto on AMX/AVX-512 BF16) is evaluated in bfloat16 and converted from its float32 copy, so an image near
    # a tie may go the other way (2 of 40).
    bf16 = metrics["precision"]["policy"] != "float32"
    assert measured["float32_test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=0.05 if bf16 else 1e-6)
    assert 0.0 <= measured["int8_test_accuracy"] <= 1.0
    assert measured["int8_accuracy_cost_pp"] == pytest.approx(
        100 * (measured["float32_test_accuracy"] - measured["int8_test_accuracy"]))
    assert measured["int8_bytes"] < measured["float32_bytes"]
    assert measured["calibration_examples"] > 0
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["tflite"] == json.loads(json.dumps(measured))


def test_model_keras_loads_with_the_zoo_layers_and_trains(finished_run):
    workdir, metrics = finished_run
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    # The zoo's own dropout subclasses come back as themselves (registered), not as Keras' Dropout.
    assert any(type(layer).__module__.startswith("models.") for layer in model.layers)
    images, labels = next(iter(data_lib.raw_batches(tiny_source().test, 40)))
    served = tf.saved_model.load(os.path.join(workdir, "saved_model")).signatures["serving_default"](
        image=images)["probabilities"].numpy()
    logits = model(scale(images), training=False)  # dense_mlp emits logits; the export adds softmax
    # Eager Keras and the traced graph round bfloat16 intermediates differently: the
    # tolerance is the run's own precision's (auto picks mixed_bfloat16 on AMX/AVX-512 BF16).
    compute_dtype = keras.DTypePolicy(metrics["precision"]["policy"]).compute_dtype
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), served, atol=verify.TOLERANCES[compute_dtype])
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(scale(images), labels, epochs=1, batch_size=20, verbose=0)  # compiled as trained
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_model_keras_loads_in_a_fresh_process_with_the_documented_imports(finished_run):
    """docs/serving.md: `import models, dropzoo.optimizers`, then keras.saving.load_model (nothing else
    imported first: the trainer's fused optimizer must be registered by those imports alone)."""
    workdir, _ = finished_run
    code = ("import sys, keras, models, dropzoo.optimizers; m = keras.saving.load_model(sys.argv[1]); "
            "print(type(m.optimizer).__name__, m.compiled)")
    done = subprocess.run([sys.executable, "-c", code, os.path.join(workdir, "model.keras")],
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-2000:]
    optimizer, compiled = done.stdout.split()[-2:]
    assert optimizer.startswith("Fused") and compiled == "True"  # the trainer's optimizer, as trained


def test_evaluate_tflite_reproduces_the_saved_model(finished_run):
    workdir, metrics = finished_run
    test = tiny_source().test
    saved = evaluate.evaluate_saved_model(os.path.join(workdir, "saved_model"), data_lib.raw_batches(test, 16))
    lite = evaluate.evaluate_tflite(os.path.join(workdir, "model.tflite"), data_lib.raw_batches(test, 16))
    assert lite["num_examples"] == saved["num_examples"] == 40
    # model.tflite holds the float32 weights; the SavedModel serves in the run's precision (bfloat16
    # where auto picks it), so the loss agrees to that precision's rounding.
    bf16 = metrics["precision"]["policy"] != "float32"
    assert lite["accuracy"] == pytest.approx(saved["accuracy"], abs=0.05 if bf16 else 0)
    assert lite["loss"] == pytest.approx(saved["loss"], rel=1e-2 if bf16 else 1e-4)
    int8 = evaluate.evaluate_tflite(os.path.join(workdir, "model_int8.tflite"), data_lib.raw_batches(test, 16))
    assert int8["accuracy"] == metrics["tflite"]["int8_test_accuracy"]
    # The int8 model's probabilities come in steps of 1/256, and may miss 1 by up to K/512 for K classes; the float
    # models' may not (all-zero logits of 1,000 classes served as probabilities would pass at K/512).
    assert tflite.Model.load(os.path.join(workdir, "model_int8.tflite")).probability_step == 1 / 256
    assert tflite.Model.load(os.path.join(workdir, "model.tflite")).probability_step == 0.0
    serving.check_probabilities("int8", np.zeros((2, 1000)), step=1 / 256)
    with pytest.raises(ExportError, match=r"^float answers 'probabilities' that are not probabilities \(values 0 to "
                                          r"0, rows summing to 1 within 1\): logits\?"):
        serving.check_probabilities("float", np.zeros((2, 1000)))


def test_a_damaged_tflite_model_of_a_run_is_refused_not_scored(finished_run, tmp_path):
    # A .tflite file has no checksum: a flipped weight bit scored ~20% without a word; the run records digests.
    workdir, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    images, labels = (np.concatenate(part) for part in zip(*data_lib.raw_batches(tiny_source().test, 64)))
    np.savez(tmp_path / "tiny.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    evaluate.evaluate_on_dataset(str(run / "model_int8.tflite"), data={"npz": str(tmp_path / "tiny.npz")},
                                 tflite_model=True)  # as exported: scored
    content = bytearray((run / "model_int8.tflite").read_bytes())
    content[len(content) // 2] ^= 0x10
    (run / "model_int8.tflite").write_bytes(bytes(content))
    with pytest.raises(ExportError, match=rf"model_int8.tflite is not the model {run} exported \(its sha256 differs "
                                          r"from the one recorded\): damaged or replaced since; export it again"):
        evaluate.evaluate_on_dataset(str(run / "model_int8.tflite"), data={"npz": str(tmp_path / "tiny.npz")},
                                     tflite_model=True)


def test_a_copied_tflite_model_says_what_its_run_trained_and_tested_on(finished_run, tmp_path, eval_main, capsys):
    # A .tflite copied out of its run scored other data without a word, and took any image folder as class ids:
    # each carries its run's class names and test data, as the SavedModel does in assets.extra.
    workdir, metrics = finished_run
    for name in (tflite.FLOAT32_FILE, tflite.INT8_FILE):
        with open(os.path.join(workdir, name), "rb") as f:
            carried = tflite.record(f.read())
        assert carried == {"class_names": [], "test_data": {"source": "tiny", "test_sha256": metrics["data"][
            "test_sha256"]}}, carried
        copy = tmp_path / name
        shutil.copy(os.path.join(workdir, name), copy)
        images, labels = (np.concatenate(part) for part in zip(*data_lib.raw_batches(tiny_source(seed=9).test, 64)))
        np.savez(tmp_path / "other.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
        result = evaluate.evaluate_on_dataset(str(copy), data={"npz": str(tmp_path / "other.npz")}, tflite_model=True)
        assert evaluate.copied_export_notes(str(copy), result, tflite_model=True) == [
            f"evaluated on npz:{tmp_path / 'other.npz'}, not the test data the export's run was tested on (tiny)"]
    # Given no data, a copy is not scored on the default (MNIST), which it was not tested on: told to name its data.
    copied = shutil.copytree(os.path.join(workdir, "saved_model"), tmp_path / "saved_model")
    for flag in (f"--tflite={tmp_path / tflite.INT8_FILE}", f"--saved_model={copied}"):
        assert eval_main(flag) == 2
        assert capsys.readouterr().err.endswith("was copied out of its run, which was tested on tiny; name the data "
                                                "to score it on (--image_dir and --test_image_dir, --npz, --idx_dir or "
                                                "--dataset)\n")
    # The record is metadata the interpreter does not read: the same answers, whatever it holds, replaced in place.
    with open(os.path.join(workdir, tflite.FLOAT32_FILE), "rb") as f:
        content = f.read()
    other = tflite.with_record(content, {"class_names": ["a", "b"]})
    assert tflite.record(other) == {"class_names": ["a", "b"]} and tflite.op_types(other) == tflite.op_types(content)
    batch = make_images(4, shape=tiny_source().image_shape)
    np.testing.assert_array_equal(tflite.Model(other)(batch)["probabilities"],
                                  tflite.Model(content)(batch)["probabilities"])
    # No image: one line naming the shape wanted (the interpreter's own errors named no cause).
    for nothing, said in ((batch[:0], "an empty batch"), (np.float32(0.5), "a scalar")):
        with pytest.raises(ValueError, match=rf"was given {said}; give a batch of one image or more, shaped \[N, "
                                             rf"{', '.join(map(str, tiny_source().image_shape))}\]"):
            tflite.Model(content)(nothing)


@pytest.mark.parametrize("shape", [(8, 8, 1), (8, 8, 3)])
def test_the_tflite_models_refuse_images_of_another_shape(shape):
    """The converter drops the SavedModel's shape assertions and the interpreter resizes its input to what it is
    given: 3 channels sent to a 1-channel model were answered (MNIST at 10%), an NCHW batch aborted the process."""
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    image = keras.Input(shape=shape, name="image")
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    model = keras.Model(image, keras.layers.Dense(NUM_CLASSES, activation="softmax")(keras.layers.Flatten()(x)))
    images = make_images(shape=shape)
    channels = 3 if shape[-1] == 1 else 1
    wrong = [np.repeat(images[:3, ..., :1], channels, axis=-1), images[:3, :7], np.transpose(images[:3], (0, 3, 1, 2))]
    for blob in artifacts_lib.convert_tflite(model, images):
        answer = Interpreter(model_content=blob).get_signature_runner()(image=images[:3])["probabilities"]
        np.testing.assert_allclose(answer, model(scale(images[:3]), training=False), atol=2e-2)
        for batch in wrong:
            with pytest.raises(Exception, match="failed to prepare"):
                Interpreter(model_content=blob).get_signature_runner()(image=batch)


def test_serving_artifacts_can_be_skipped(tmp_path):
    metrics = trainer.train_and_evaluate(tiny_config(epochs=1), str(tmp_path), source=tiny_source(),
                                         verbose=0, serving_artifacts=False)
    assert "tflite" not in metrics and "tflite" not in metrics["export_check"]
    assert not any(name in metrics["paths"] for name in artifacts_lib.ARTIFACT_FILES)
    assert not os.path.exists(tmp_path / "model.tflite")


# ------------------------------------------------------------ the check


def test_verify_export_checks_each_artifact(exported):
    model, saved_model, artifacts = exported
    report = verify.verify_export(saved_model, model, make_images(), artifacts=artifacts)
    assert report["passed"]
    assert report["tflite"]["max_abs_diff_vs_float32"] <= 1e-5
    assert report["tflite_int8"]["random_ops"] == [] and report["tflite_int8"]["bitwise_repeatable"]
    assert report["keras"]["max_abs_diff_vs_keras"] == 0.0


def _random_op_model(model, directory):
    def noisy(image):  # what a dropout-on graph would bring: an RNG op in the serving path
        probabilities = model(scale(image), training=False)
        probabilities += tf.random.uniform(tf.shape(probabilities), 0.0, 1e-3)
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

    return convert_custom(model, noisy, directory)


def _float_input_model(model, directory):
    def float_in(image):
        probabilities = model(image / 255.0, training=False)
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

    return convert_custom(model, float_in, directory, input_dtype=tf.float32)


def _other_model_tflite(model, directory):
    return artifacts_lib.convert_tflite(build_model(seed=1), make_images())[0]


def _not_tflite(model, directory):
    return b"\x00" * 64


@pytest.mark.parametrize("file,make,message", [
    ("model.tflite", _random_op_model, r"model\.tflite: random ops \['RandomUniform'\].*two calls"),
    ("model_int8.tflite", _random_op_model, r"model_int8\.tflite: random ops \['RandomUniform'\]"),
    ("model.tflite", _other_model_tflite, r"model\.tflite: probabilities differ from the float32 Keras"),
    ("model.tflite", _float_input_model, r"model\.tflite: input is 'image' float32"),
    ("model.tflite", _not_tflite, r"is not a TFLite model"),
], ids=["random-op", "int8-random-op", "other-weights", "float-input", "not-tflite"])
def test_verify_export_fails_on_a_broken_tflite_model(exported, tmp_path, file, make, message):
    model, saved_model, artifacts = exported
    broken = dict(artifacts)
    broken[file] = str(tmp_path / file)
    with open(broken[file], "wb") as f:
        f.write(make(model, tmp_path / "custom"))
    with pytest.raises(ExportError, match=message) as caught:
        verify.verify_export(saved_model, model, make_images(), artifacts=broken)
    assert "\n" not in str(caught.value)


def test_verify_export_fails_on_a_keras_file_of_other_weights(exported, tmp_path):
    model, saved_model, artifacts = exported
    other = str(tmp_path / "model.keras")
    build_model(seed=1).save(other)
    with pytest.raises(ExportError, match="model.keras: reloaded model differs from the in-memory model"):
        verify.verify_export(saved_model, model, make_images(), artifacts={**artifacts, "model.keras": other})


def test_failed_conversion_is_one_line_and_keeps_the_previous_artifacts(exported, tmp_path, monkeypatch):
    model, _, artifacts = exported
    directory = os.path.dirname(artifacts["model.tflite"])
    before = {name: open(path, "rb").read() for name, path in artifacts.items()}

    def dropout_on(image):  # Keras' dropout RNG has no TFLite builtin (tensorflow#50502)
        probabilities = model(scale(image), training=True)
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

    with pytest.raises(ExportError) as caught:
        convert_custom(model, dropout_on, tmp_path / "dropout_on")
    assert str(caught.value).startswith("TFLite conversion failed: ConverterError")
    assert "\n" not in str(caught.value)

    def fail(*args, **kwargs):
        raise caught.value

    monkeypatch.setattr(tflite, "convert", fail)
    with pytest.raises(ExportError, match="TFLite conversion failed"):
        artifacts_lib.export_artifacts(build_model(seed=1), directory, make_images())
    assert {name: open(path, "rb").read() for name, path in artifacts.items()} == before


def test_bfloat16_model_converts_from_a_float32_copy(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    copy = artifacts_lib.float32_copy(model)
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), copy.get_weights()))
    saved_model, artifacts = export_all(model, str(tmp_path))
    report = verify.verify_export(saved_model, model, make_images(), artifacts=artifacts)
    assert report["passed"] and report["tolerance"] == 1e-2
    assert report["tflite"]["tolerance"] == 1e-5 and report["tflite"]["saved_model_tolerance"] == 1e-2
    # The float32 copy, not the bf16 model: TFLite sits far closer to it than to bf16 rounding.
    assert report["tflite"]["max_abs_diff_vs_float32"] < 1e-5


# ----------------------------------------------------------- loading, eval.py


@pytest.mark.parametrize("make,expected", [
    (lambda base: str(base / "nope.tflite"), "does not exist"),
    (lambda base: str(base), "is a directory"),
    (lambda base: _write(base / "m.tflite", b"not a flatbuffer at all"), "is not a TFLite model"),
], ids=["missing", "directory", "garbage"])
def test_bad_tflite_paths_give_one_line_errors(make, expected, tmp_path):
    path = make(tmp_path)
    with pytest.raises(ExportError) as caught:
        tflite.Model.load(path)
    assert expected in str(caught.value) and path in str(caught.value) and "\n" not in str(caught.value)


def _write(path, content):
    path.write_bytes(content)
    return str(path)


@pytest.fixture(scope="module")
def mnist_shaped_export(tmp_path_factory):
    """An untrained 28x28x1, 10-class dense_mlp's SavedModel and TFLite models (for eval.py on MNIST)."""
    import models
    model = models.build("dense_mlp", "canonical", num_classes=10, input_shape=(28, 28, 1), seed=0)
    directory = str(tmp_path_factory.mktemp("mnist_shaped"))
    export.export_saved_model(model, os.path.join(directory, "saved_model"), outputs="logits")
    artifacts_lib.export_artifacts(model, directory, make_images(64, shape=(28, 28, 1)), outputs="logits")
    return directory


def test_eval_script_tflite_matches_its_saved_model(eval_main, mnist_shaped_export, capsys, tmp_path):
    """eval.py --tflite on a dataset the trainer reads (the offline MNIST sample)."""
    workdir = mnist_shaped_export
    results = {}
    for flag, path in (("saved_model", "saved_model"), ("tflite", "model.tflite")):
        output = str(tmp_path / f"{flag}.json")
        assert eval_main(f"--{flag}={os.path.join(workdir, path)}", "--dataset=mnist_sample",
                         f"--output={output}") == 0
        results[flag] = json.loads(capsys.readouterr().out)
    saved, lite = results["saved_model"], results["tflite"]
    assert lite["tflite"] == os.path.join(workdir, "model.tflite")
    assert lite["num_examples"] == saved["num_examples"] > 0
    # Stated tolerance: float32 TFLite moves a probability by <= 1e-5, so at most a near-tie flips.
    assert abs(lite["accuracy"] - saved["accuracy"]) <= 1 / saved["num_examples"]
    assert lite["loss"] == pytest.approx(saved["loss"], rel=1e-4)


@pytest.mark.parametrize("args,message", [
    (["--tflite=/nonexistent.tflite"], "error: no TFLite model at /nonexistent.tflite"),
    (["--tflite=/tmp"], "error: /tmp is a directory, not a TFLite model file"),
    (["--tflite=" + os.path.join(ROOT, "setup.py")], "error: " + os.path.join(ROOT, "setup.py")
     + " is not a TFLite model"),
    (["--tflite=x.tflite", "--saved_model=/tmp"], "error: give exactly one of"),
])
def test_eval_tflite_rejects_bad_input_in_one_line(eval_main, capsys, args, message):
    assert eval_main(*args) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(message), err


def test_eval_tflite_rejects_mc_and_other_shapes_in_one_line(eval_main, exported, capsys):
    _, _, artifacts = exported  # an 8x8x1 model; the MNIST sample is 28x28x1
    path = artifacts["model.tflite"]
    assert eval_main(f"--tflite={path}", "--dataset=mnist_sample") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: TFLite model {path} takes images of shape (H, W, C)=(8, 8, 1) "
                          "but the data has (28, 28, 1); use a dataset whose images match the export (an image "
                          "folder: --image_size=8,8 --color_mode=grayscale reads them so)"), err
    assert err.count("\n") == 1, err
    assert eval_main(f"--tflite={path}", "--mc_samples=5") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a TFLite model serves dropout off only") and err.count("\n") == 1, err


@pytest.mark.slow
def test_an_export_that_fails_its_check_is_moved_aside_and_the_rerun_exports_again(tmp_path, monkeypatch):
    # It stayed at saved_model/ beside the TFLite files, unmarked, where a Client served it as the run's.
    config = tiny_config(epochs=1)
    with monkeypatch.context() as patch:
        for dtype in verify.TOLERANCES:  # no difference passes, in any precision
            patch.setitem(verify.TOLERANCES, dtype, -1.0)
        with pytest.raises(ExportError, match=rf"failed verification: .*; the export is moved to {tmp_path}/"
                                              r"failed_export \(for inspection: nothing serves it as the run's; "
                                              r"rerunning the command exports again from the last checkpoint\)$"):
            trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0)
    assert sorted(os.listdir(tmp_path / "failed_export")) == ["model.keras", "model.tflite", "model_int8.tflite",
                                                              "saved_model"]
    assert not any((tmp_path / name).exists() for name in ("saved_model", "model.tflite", "metrics.json"))
    metrics = trainer.train_and_evaluate(config, str(tmp_path), source=tiny_source(), verbose=0)
    assert metrics["export_check"]["passed"] and metrics["resumed_from_epoch"] == 1
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file() and not (tmp_path / "failed_export").exists()


def test_the_tolerance_grows_with_the_widest_sum_a_unit_computes():
    # A 64x64x3 image into a Dense layer: 12,288 products summed in another order by XNNPACK than by oneDNN
    # differed by 1.3e-5 on random pixels, past a flat 1e-5, and the run could never finish.
    keras.mixed_precision.set_global_policy("float32")
    narrow = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    wide = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    assert verify.tolerance_for(narrow) == verify.TOLERANCES["float32"]  # 784 inputs: as it was
    assert verify.tolerance_for(wide) == pytest.approx(verify.TOLERANCES["float32"] * (12288 / 1024) ** 0.5)
    # bfloat16's error is the rounding of the activations, not the order of a sum: kept (2% off pixels move
    # probabilities by 1.3e-2, which a grown 3e-2 let through).
    assert verify.tolerance_for(wide, "bfloat16") == verify.TOLERANCES["bfloat16"]


@pytest.mark.parametrize("float32,int8,images,warned", [
    (0.8667, 0.7333, 60, True),  # a user's residual model: 13 points, said
    (0.97, 0.965, 1000, False),  # half a point: what the zoo's networks lose
    (0.9667, 0.9333, 30, False),  # one image of 30: not a measurement of quantisation
    (0.815, 0.795, 1000, True),  # exactly 2 points (20 images), 0.0199999... as floats: it was not said
])
def test_an_int8_model_that_loses_accuracy_is_said(monkeypatch, caplog, float32, int8, images, warned):
    from dropzoo import artifacts
    from dropzoo import evaluate

    scores = {artifacts.TFLITE_FILE: float32, artifacts.TFLITE_INT8_FILE: int8}
    monkeypatch.setattr(evaluate, "evaluate_tflite", lambda path, batches: {
        "accuracy": scores[os.path.basename(path)], "num_examples": images})
    monkeypatch.setattr(os.path, "getsize", lambda path: 1)
    monkeypatch.setattr(artifacts.tflite, "sha256", lambda path: "0" * 64)
    paths = {name: f"/run/{name}" for name in artifacts.ARTIFACT_FILES}
    with caplog.at_level(logging.WARNING):
        metrics = artifacts.tflite_metrics(paths, {"seconds": 1.0, "calibration_examples": 320}, None)
    assert metrics["int8_accuracy_cost_pp"] == pytest.approx(100 * (float32 - int8))
    assert ("model_int8.tflite scores 13.3 points below model.tflite on the test data (0.7333 vs 0.8667, 60 "
            "images): int8 quantisation costs this model that much" in caplog.text) == (warned and images == 60)
    assert ("model_int8.tflite scores" in caplog.text) == warned


def test_a_runs_missing_tflite_model_is_named_with_why_and_the_fix(tmp_path):
    """A run trained with --noserving_artifacts was told to "pass a .tflite file a training run wrote (... in its
    workdir)": that was its workdir."""
    (tmp_path / "metrics.json").write_text(json.dumps({"weights_sha256": "0" * 64}))
    with pytest.raises(ExportError) as info:
        tflite.read(tmp_path / "model.tflite")
    assert str(info.value) == (f"no TFLite model at {tmp_path / 'model.tflite'}: run {tmp_path} was trained with "
                               "--noserving_artifacts, so it has none; they cannot be exported again here: the run "
                               "has no checkpoint here (records carried from where it trained?); use the exports "
                               "where it trained")
    (tmp_path / "metrics.json").write_text(json.dumps({"tflite": {}}))
    with pytest.raises(ExportError, match=r"^no TFLite model at .*: run .* wrote it, and it is gone since; it "
                                          r"cannot be exported again here"):
        tflite.read(tmp_path / "model.tflite")
    with pytest.raises(ExportError, match=r"^no TFLite model at .*: path does not exist; pass a \.tflite file a "
                                          r"training run wrote"):
        tflite.read(tmp_path / "elsewhere" / "model.tflite")
    # A misspelt name in a run's directory is no export gone (it said so, and to delete metrics.json).
    with pytest.raises(ExportError, match=r"^no TFLite model at .*modle\.tflite: path does not exist; pass"):
        tflite.read(tmp_path / "modle.tflite")
    # A run identical by construction to another: that run's file.
    (tmp_path / "metrics.json").write_text(json.dumps({"identical_to": "../other"}))
    with pytest.raises(ExportError) as info:
        tflite.read(tmp_path / "model_int8.tflite")
    other = os.path.normpath(tmp_path / ".." / "other")
    assert str(info.value) == (f"no TFLite model at {tmp_path / 'model_int8.tflite'}: run {tmp_path} was never "
                               f"trained: it is identical by construction to {other}, whose exports are its own; "
                               f"pass --tflite={other}/model_int8.tflite")
