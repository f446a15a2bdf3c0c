"""The serving path for other runtimes: model.keras, model.tflite and model_int8.tflite.

`export_artifacts` writes, beside a run's SavedModel, the same dropout-off
serving function for other runtimes: `model.tflite` (float32, converted from
a float32 copy of the weights), `model_int8.tflite` (int8, calibrated on
training images) and `model.keras` (the Keras model itself, to load back for
fine-tuning). dropzoo/verify.py checks each of them against the model.
"""
import logging
import os
import tempfile
import time

import keras
import numpy as np

import models
from dropzoo import evaluate
from dropzoo import export
from dropzoo import files
from dropzoo import serving
from dropzoo import tflite
from dropzoo import workdir as workdirs

KERAS_FILE = "model.keras"
TFLITE_FILE = tflite.FLOAT32_FILE
TFLITE_INT8_FILE = tflite.INT8_FILE
ARTIFACT_FILES = (KERAS_FILE, TFLITE_FILE, TFLITE_INT8_FILE)
# Training images the int8 model is calibrated on ("a few hundred"), fed in batches.
REPRESENTATIVE_EXAMPLES = 320
REPRESENTATIVE_BATCH = 32
# int8 losing this much test accuracy (and 2 test images or more) is warned (the zoo's networks lose under 1 point on
# MNIST): a sweep prints no per-run line, and model_int8.tflite would be served without a word.
INT8_COST_WARNING = 0.02


def artifact_paths(directory):
    """{file name: path} of the artifacts `export_artifacts` writes into `directory`."""
    return {name: os.path.join(os.fspath(directory), name) for name in ARTIFACT_FILES}


def export_artifacts(model, directory, representative_images, *, outputs="probabilities", class_names=None,
                     test_data=None):
    """Writes model.keras, model.tflite and model_int8.tflite into `directory`; returns {name: path}.

    `representative_images`: uint8 training images, [N, H, W, C], the int8
    model's calibration set (the first REPRESENTATIVE_EXAMPLES are used).
    Each file is written atomically, after both conversions succeeded: a
    failed conversion leaves the previous files as they were. `class_names`
    and `test_data` (sources.export_record), where given, go into both TFLite
    models (tflite.with_record), as the SavedModel keeps them in assets.extra.
    """
    paths = artifact_paths(directory)
    float32_model, int8_model = convert_tflite(model, representative_images, outputs=outputs)
    if class_names is not None or test_data is not None:
        record = {"class_names": class_names, "test_data": test_data}
        float32_model, int8_model = (tflite.with_record(content, record) for content in (float32_model, int8_model))
    os.makedirs(os.fspath(directory), exist_ok=True)
    files.atomic_write(paths[KERAS_FILE], model.save)
    for name, content in ((TFLITE_FILE, float32_model), (TFLITE_INT8_FILE, int8_model)):
        files.write_bytes(paths[name], content)
    return paths


def tflite_metrics(paths, converted, test_batches):
    """metrics.json's "tflite": both TFLite models' test accuracy on `test_batches`, and what int8 costs.

    `paths` as export_artifacts returns them; `converted` {"seconds",
    "calibration_examples"} of their export.
    """
    started = time.perf_counter()
    scored = {name: evaluate.evaluate_tflite(paths[name], test_batches) for name in (TFLITE_FILE, TFLITE_INT8_FILE)}
    float32, int8 = (scored[name]["accuracy"] for name in (TFLITE_FILE, TFLITE_INT8_FILE))
    images = scored[TFLITE_FILE]["num_examples"]
    lost = round((float32 - int8) * images)  # in images: 0.815 - 0.795 is 0.0199999... as floats
    if lost >= 2 and lost >= INT8_COST_WARNING * images - 1e-9:
        logging.warning("%s scores %.1f points below %s on the test data (%.4f vs %.4f, %d images): int8 "
                        "quantisation costs this model that much; serve %s or the SavedModel, or check %s on "
                        "more data first", TFLITE_INT8_FILE, 100 * (float32 - int8), TFLITE_FILE, int8, float32,
                        images, TFLITE_FILE, TFLITE_INT8_FILE)
    return {"runtime": tflite.RUNTIME,
            "float32_test_accuracy": float32, "int8_test_accuracy": int8,
            # Percentage points int8 loses against float32 (negative: it gained).
            "int8_accuracy_cost_pp": 100 * (float32 - int8),
            "float32_bytes": os.path.getsize(paths[TFLITE_FILE]),
            "int8_bytes": os.path.getsize(paths[TFLITE_INT8_FILE]),
            # A .tflite file holds no checksum of its own: a flipped bit would score without a word.
            **{key: tflite.sha256(paths[name]) for name, key in tflite.RECORDED_DIGESTS.items()},
            "calibration_examples": converted["calibration_examples"],
            "export_seconds": converted["seconds"],  # conversion and writing
            "test_seconds": time.perf_counter() - started}  # both models over the test split


def convert_tflite(model, representative_images, *, outputs="probabilities"):
    """(float32, int8) TFLite flatbuffers of `model`'s serving_default, from a float32 copy.

    Both take uint8 `image` and return `probabilities` and `class_id`, dropout
    off, like the SavedModel's serving_default. The int8 model is calibrated
    on `representative_images` (uint8, as the signature takes them).
    """
    images = np.asarray(representative_images)[:REPRESENTATIVE_EXAMPLES]
    if images.dtype != np.uint8 or images.ndim != 4 or not len(images):
        raise ValueError(f"representative images must be a non-empty uint8 [N, H, W, C] batch, "
                         f"got {images.dtype} {images.shape}")
    copy = float32_copy(model)
    serve, spec = export.serving_function(copy, outputs), serving.input_spec(copy)

    def image_locked(image):  # the converter drops serve's shape assertions: ops that fail on another shape instead
        return serve(serving.shape_locked(image, spec.shape))

    archive = export.build_archive([copy], {serving.SIGNATURE_KEY: (image_locked, [spec])})
    with tempfile.TemporaryDirectory(prefix="dropzoo-tflite-") as directory:
        archive.write_out(directory, verbose=False)
        float32_model = tflite.convert(directory)
        batches = [images[i:i + REPRESENTATIVE_BATCH] for i in range(0, len(images), REPRESENTATIVE_BATCH)]
        int8_model = tflite.convert(directory, representative=batches)
    return float32_model, int8_model


def float32_copy(model):
    """A copy of `model` that computes in float32, with the same weights.

    Mixed-precision variables are float32 already; only the compute dtype of
    each layer changes, so the copy is the trained model without bf16/fp16
    rounding (what a TFLite float32 model should hold).
    """
    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return models.finalize_states(copy)  # an adapted Normalization's mean and variance, from the copied weights


def missing_exports(workdir, metrics):
    """The exports a finished run made that are not in `workdir` now: saved_model/ parts, serving artifacts."""
    missing = [f"saved_model/{part}" for part in export.missing_parts(os.path.join(workdir, "saved_model"))]
    if "tflite" in metrics:  # made with serving artifacts
        missing += [name for name in ARTIFACT_FILES if not os.path.isfile(os.path.join(workdir, name))]
    return missing


def finished_run_notes(workdir, metrics, serving_artifacts):
    """What a finished run reported again lacks: exports deleted since, or serving artifacts never made."""
    if "identical_to" in metrics:  # its exports are the run it points at
        return []
    notes = []
    missing = missing_exports(workdir, metrics)
    if missing:
        notes.append(f"{workdir} finished, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: "
                     f"its records are reported; {workdirs.reexport_fix(workdir, 'them')}")
    if serving_artifacts and "tflite" not in metrics:
        notes.append(f"{workdir} was trained with --noserving_artifacts, so it has no model.keras or TFLite models; "
                     f"{workdirs.reexport_fix(workdir, 'them', ' without --noserving_artifacts')}")
    return notes

