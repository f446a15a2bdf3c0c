"""Prove an export serves its model with dropout off.

`verify_export` reloads a SavedModel without Keras and proves it keeps the
serving contract (dropzoo/serving.py), is deterministic, matches the
in-memory model within its precision's tolerance and has no random ops in
its graph; given the artifacts (dropzoo/artifacts.py), it proves the same of
each TFLite model and that model.keras reloads as the in-memory model.
"""
import os
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from dropzoo import artifacts as artifacts_lib
from dropzoo import serving
from dropzoo import tflite
from dropzoo.errors import ExportError
from dropzoo.export import first_line
from dropzoo.export import load_serving_fn
from dropzoo.export import load_signatures
from dropzoo.export import serving_input_spec
from dropzoo.preprocess import scale
from dropzoo.serving import INPUT_KEY
from dropzoo.serving import MC_SEEDED_KEY
from dropzoo.serving import PROBABILITIES_KEY
from dropzoo.serving import SAMPLES_KEY
from dropzoo.serving import SEED_KEY
from dropzoo.serving import SIGNATURE_KEY

# Largest |served - keras| allowed by verify_export, per compute dtype. float32
# graph and eager kernels agree to a few ulps (~1e-7). bfloat16 keeps 8
# mantissa bits (unit roundoff 2**-8 ~ 3.9e-3): a fused graph kernel that
# rounds one intermediate differently moves a probability by about one ulp,
# so allow ~2.5 ulps at 1.0. float16 (2**-11 ~ 4.9e-4) gets ~2 ulps.
TOLERANCES = {"float32": 1e-5, "float64": 1e-5, "float16": 1e-3, "bfloat16": 1e-2}
# A float32 sum of n products rounded in another order (another kernel: XNNPACK, a fused graph op) moves by about
# sqrt(n) roundings: past this many inputs to one unit the float32 tolerance grows with sqrt(inputs / this) (a
# 64x64x3 image into a Dense layer: 12,288 inputs, 3.5x: 3.5e-5, where dropout left on or pixels scaled 2% off
# move probabilities by 1e-2 and more). bfloat16 and float16 errors come from rounding the activations
# themselves, not from the order of a sum: their tolerances stay as they are.
ACCUMULATION_INPUTS = 1024
GROWS_WITH_INPUTS = ("float32", "float64")

# Op types that draw random numbers (stateful, stateless and dataset RNGs).
# Matched as substrings, case-sensitive, so "StatelessIf"/"StatelessWhile"
# (control flow) and "StringJoin" stay out while every RNG kernel is caught.
_RANDOM_OP_PATTERN = re.compile(
    r"Random|Multinomial|TruncatedNormal|Rng|NonDeterministicInts"
    r"|^Stateful(Uniform|StandardNormal)|Shuffle|SeedGenerator"
    r"|SampleDistortedBoundingBox|CandidateSampler"
)


def verify_export(path, model, images, *, outputs="probabilities", tolerance=None, artifacts=None,
                  signatures=None):
    """Prove the export at `path` serves `model` with dropout off; returns the checks.

    `artifacts` ({file name: path}, as `export_artifacts` returns it) adds
    checks of model.keras, model.tflite and model_int8.tflite, reported under
    "keras", "tflite" and "tflite_int8"; any failure fails the whole check.
    `signatures` (export.load_signatures(path)) saves loading the export again.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be a uint8 [B, H, W, C] batch, got {images.dtype} {images.shape}"
        )
    signatures = load_signatures(path) if signatures is None else signatures
    serving_fn = load_serving_fn(path) if SIGNATURE_KEY not in signatures else signatures[SIGNATURE_KEY]
    problems = serving.signature_problems(serving_fn)
    if problems:
        raise ExportError(f"export at {path} failed verification: signature: {'; '.join(problems)}")
    _check_image_shape(serving_fn, images)
    if tolerance is None:
        tolerance = tolerance_for(model)
    first = _call(serving_fn, images)
    second = _call(serving_fn, images)
    expected = serving.probabilities(model, scale(images), outputs, training=False).numpy()
    report = {
        "bitwise_repeatable": all(np.array_equal(first[k], second[k]) for k in first),
        "max_abs_diff_vs_keras": _max_abs_diff(first[PROBABILITIES_KEY], expected),
        "random_ops": find_random_ops(serving_fn),
        "tolerance": float(tolerance),
        "num_examples": int(images.shape[0]),
    }
    seeded = signatures.get(MC_SEEDED_KEY)
    if seeded is not None:
        report["mc_seeded_repeatable"] = _seeded_repeatable(seeded, images)
    floats = signatures.get(serving.FLOAT_SIGNATURE_KEY)
    if floats is not None:
        report["float_signature"] = _check_float_signature(floats, images, first[PROBABILITIES_KEY])
    if tolerance_for(model) > tolerance_for(model, "float32"):  # bfloat16/float16's would hide a graph's error
        report["float32_graph"] = _check_float32_graph(model, images, outputs)
    failures = _failures(report, outputs)
    if artifacts:
        failures += _check_artifacts(report, artifacts, model, images, outputs, first[PROBABILITIES_KEY])
    report["passed"] = not failures
    if failures:
        raise ExportError(f"export at {path} failed verification: {'; '.join(failures)}", report)
    return report


FAILED_EXPORT = "failed_export"  # where a run's export that failed its check is moved


def verify_or_set_aside(path, model, images, **kwargs):
    """verify_export; where the check fails, the export and its artifacts move to FAILED_EXPORT beside it (so
    nothing serves them as the run's, and a rerun exports again from the last checkpoint)."""
    aside = os.path.join(os.path.dirname(os.path.abspath(path)), FAILED_EXPORT)
    try:
        report = verify_export(path, model, images, **kwargs)
        shutil.rmtree(aside, ignore_errors=True)  # an earlier try's, now passed
        return report
    except ExportError as e:
        shutil.rmtree(aside, ignore_errors=True)
        os.makedirs(aside)
        for item in [path, *(kwargs.get("artifacts") or {}).values()]:
            if item and os.path.exists(item):
                os.replace(item, os.path.join(aside, os.path.basename(os.path.normpath(item))))
        raise ExportError(f"{e}; the export is moved to {aside} (for inspection: nothing serves it as the run's; "
                          "rerunning the command exports again from the last checkpoint)", e.details) from None


def _check_float_signature(float_fn, images, served):
    """serving_float on the same images scaled to [0, 1]: its answer, and that it refuses 0-255 floats."""
    scaled = images.astype(np.float32) / np.float32(255.0)
    answer = float_fn(**{INPUT_KEY: tf.constant(scaled)})[PROBABILITIES_KEY].numpy()
    try:
        float_fn(**{INPUT_KEY: tf.constant(images.astype(np.float32))})
        refuses = not images.max() > 1  # an all-dark batch (every pixel 0 or 1) is in range after all
    except tf.errors.InvalidArgumentError as e:
        refuses = serving.FLOAT_RANGE_MESSAGE in str(e)
    return {"max_abs_diff_vs_uint8": _max_abs_diff(answer, served), "refuses_unscaled_pixels": bool(refuses)}


def _check_float32_graph(model, images, outputs):
    """The model in float32 run by a tf.function (TensorFlow's graph rewrites, oneDNN's fusions) against its eager
    run, held to float32's tolerance: a rewrite that computes another function (TF 2.21 fused Conv2D + BiasAdd +
    Add + LeakyRelu with the default slope) moves a bfloat16 model by less than bfloat16's own roundoff."""
    copy = artifacts_lib.float32_copy(model)
    x = tf.constant(scale(images))
    eager = serving.probabilities(copy, x, outputs, training=False).numpy()
    graph = tf.function(lambda v: serving.probabilities(copy, v, outputs, training=False))(x).numpy()
    return {"max_abs_diff_vs_eager": _max_abs_diff(graph, eager), "tolerance": tolerance_for(model, "float32")}


def _check_artifacts(report, artifacts, model, images, outputs, served):
    """Adds the artifacts' checks to `report`; returns one phrase per failed check."""
    failures = []
    keras_path = artifacts.get(artifacts_lib.KERAS_FILE)
    if keras_path:
        report["keras"] = _check_keras_file(keras_path, model, images)
        if report["keras"]["max_abs_diff_vs_keras"] > report["keras"]["tolerance"]:
            failures.append(f"{artifacts_lib.KERAS_FILE}: reloaded model differs from the in-memory model by "
                            f"{report['keras']['max_abs_diff_vs_keras']:.3g}")
        if not report["keras"]["same_layers"]:
            failures.append(f"{artifacts_lib.KERAS_FILE}: reloaded layers differ from the in-memory model's")
    expected = None
    for name, key in ((artifacts_lib.TFLITE_FILE, "tflite"), (artifacts_lib.TFLITE_INT8_FILE, "tflite_int8")):
        if not artifacts.get(name):
            continue
        if expected is None:  # what model.tflite must equal: the trained weights run in float32
            expected = serving.probabilities(artifacts_lib.float32_copy(model), scale(images), outputs,
                                             training=False).numpy()
        check, probabilities = _check_tflite(artifacts[name], images, expected)
        report[key] = check
        failures += [f"{name}: {problem}" for problem in check["signature_problems"] + _nondeterminism(check)]
        if key == "tflite" and probabilities is not None:
            # int8 is measured (its accuracy goes to metrics.json), not held to a tolerance.
            check["tolerance"] = tolerance_for(model, "float32")
            check["max_abs_diff_vs_saved_model"] = _max_abs_diff(probabilities, served)
            check["saved_model_tolerance"] = report["tolerance"]
            if not check["max_abs_diff_vs_float32"] <= check["tolerance"]:
                failures.append(f"{name}: probabilities differ from the float32 Keras model by "
                                f"{check['max_abs_diff_vs_float32']:.3g} > tolerance {check['tolerance']:g}")
            if not check["max_abs_diff_vs_saved_model"] <= check["saved_model_tolerance"]:
                failures.append(f"{name}: probabilities differ from the SavedModel by "
                                f"{check['max_abs_diff_vs_saved_model']:.3g} > tolerance "
                                f"{check['saved_model_tolerance']:g}")
    return failures


def _check_keras_file(path, model, images):
    """Reloads model.keras (the zoo's layers are registered) and runs it beside `model`."""
    try:
        reloaded = keras.saving.load_model(path)
    except Exception as error:
        raise ExportError(f"cannot load {path} with keras.saving.load_model: "
                          f"{type(error).__name__}: {first_line(error)}") from error
    x = scale(images)
    diff = _max_abs_diff(serving.probabilities(reloaded, x, "probabilities", False).numpy(),
                         serving.probabilities(model, x, "probabilities", False).numpy())
    return {"max_abs_diff_vs_keras": diff, "tolerance": TOLERANCES["float32"],
            "same_layers": _layer_types(reloaded) == _layer_types(model),
            "trainable_weights": len(reloaded.trainable_weights)}


def _layer_types(model):
    return [(type(layer).__name__, layer.name) for layer in _all_layers(model)]


def _check_tflite(path, images, expected):
    """(signature, op and determinism checks of one TFLite model, its probabilities or None).

    A model whose signature is wrong is not run (it could not take the images).
    """
    model = tflite.Model.load(path)
    check = {"signature_problems": serving.tflite_problems(model),
             "random_ops": find_tflite_random_ops(model.content),
             "bitwise_repeatable": None, "max_abs_diff_vs_float32": None,
             "bytes": len(model.content), "runtime": tflite.RUNTIME}
    if check["signature_problems"]:
        return check, None
    first, second = model(images), model(images)
    check["bitwise_repeatable"] = all(np.array_equal(first[k], second[k]) for k in first)
    check["max_abs_diff_vs_float32"] = _max_abs_diff(first[PROBABILITIES_KEY], expected)
    return check, first[PROBABILITIES_KEY]


def _nondeterminism(check):
    problems = []
    if check["random_ops"]:
        problems.append(f"random ops {check['random_ops']} (dropout on?)")
    if check["bitwise_repeatable"] is False:
        problems.append("two calls on the same batch differ")
    return problems


def find_tflite_random_ops(content):
    """The op types of a TFLite model that draw random numbers (is_random_op)."""
    return [op for op in tflite.op_types(content) if is_random_op(op)]


def _seeded_repeatable(seeded_fn, images):
    """Whether two seeded MC calls with one seed agree bitwise (every mask follows the seed)."""
    def call():
        result = seeded_fn(**{INPUT_KEY: tf.constant(images), SAMPLES_KEY: tf.constant(2),
                              SEED_KEY: tf.constant(1)})
        return result[PROBABILITIES_KEY].numpy()

    return bool(np.array_equal(call(), call()))


def _check_image_shape(serving_fn, images):
    want = tuple(serving_input_spec(serving_fn)[1].shape[1:])
    if tuple(images.shape[1:]) != want:
        raise ValueError(
            f"images have shape (H, W, C)={tuple(images.shape[1:])} but the export "
            f"takes {want}; pass images of the exported shape"
        )


def _call(serving_fn, images):
    result = serving_fn(**{INPUT_KEY: tf.constant(images)})
    return {key: value.numpy() for key, value in result.items()}


def _max_abs_diff(served, expected):
    if served.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(served.astype(np.float64) - expected), initial=0.0))


def _failures(report, outputs):
    """One short phrase per failed check."""
    failures = []
    if report["random_ops"]:
        types = sorted({entry.rsplit(" ", 1)[-1] for entry in report["random_ops"]})
        failures.append(f"random ops in serving graph {types} (dropout on?)")
    if not report["bitwise_repeatable"]:
        failures.append("two calls on the same batch differ (dropout on?)")
    if report.get("mc_seeded_repeatable") is False:
        failures.append(f"two {MC_SEEDED_KEY} calls with one seed differ (a dropout layer "
                        "that ignores models.request_seed?)")
    floats = report.get("float_signature")
    if floats and not floats["max_abs_diff_vs_uint8"] <= report["tolerance"]:
        failures.append(f"serving_float answers {floats['max_abs_diff_vs_uint8']:.3g} away from serving_default "
                        "on the same images")
    if floats and not floats["refuses_unscaled_pixels"]:
        failures.append("serving_float took 0-255 float pixels instead of refusing them")
    graph = report.get("float32_graph")
    if graph and not graph["max_abs_diff_vs_eager"] <= graph["tolerance"]:
        failures.append(f"the model run in float32 by a TensorFlow graph differs from its eager run by "
                        f"{graph['max_abs_diff_vs_eager']:.3g} > tolerance {graph['tolerance']:g}: a graph rewrite "
                        "computes another function than the model (oneDNN's fusions: TF_ENABLE_ONEDNN_OPTS=0 turns "
                        "them off), which this precision's own tolerance would hide")
    if not report["max_abs_diff_vs_keras"] <= report["tolerance"]:
        failures.append(
            f"probabilities differ from the Keras model (training=False, "
            f"outputs={outputs!r}) by {report['max_abs_diff_vs_keras']:.3g} "
            f"> tolerance {report['tolerance']:g}"
        )
    return failures


def tolerance_for(model, dtype=None):
    """The loosest TOLERANCES entry over the float compute dtypes of all layers (or `dtype`'s); a float32 one grown
    with the widest sum a unit computes (ACCUMULATION_INPUTS)."""
    dtypes = {_dtype_name(layer.compute_dtype) for layer in _all_layers(model)}
    dtypes.add(_dtype_name(model.compute_dtype))
    # Integer/string layers (lookups) do no float rounding; they don't count.
    dtype = dtype or max([d for d in dtypes if d in TOLERANCES] or ["float32"], key=TOLERANCES.get)
    if dtype not in GROWS_WITH_INPUTS:
        return TOLERANCES[dtype]
    widest = max([int(np.prod(layer.kernel.shape[:-1])) for layer in _all_layers(model)
                  if isinstance(getattr(layer, "kernel", None), keras.Variable)] or [1])
    return TOLERANCES[dtype] * max(1.0, float(np.sqrt(widest / ACCUMULATION_INPUTS)))


def _dtype_name(dtype):
    return getattr(dtype, "name", str(dtype))


def _all_layers(layer):
    for child in getattr(layer, "layers", ()):
        yield child
        yield from _all_layers(child)


def is_random_op(op_type):
    """Whether a graph op type draws random numbers."""
    return bool(_RANDOM_OP_PATTERN.search(op_type))


def find_random_ops(concrete_fn):
    """'function/node OpType' for every random op in the graph and its library."""
    graph_def = concrete_fn.graph.as_graph_def()
    # The top level is only a StatefulPartitionedCall; the model's ops live in
    # library functions (the library is flat and includes nested calls).
    found = [f"signature/{node.name} {node.op}" for node in graph_def.node if is_random_op(node.op)]
    for function in graph_def.library.function:
        found += [
            f"{function.signature.name}/{node.name} {node.op}"
            for node in function.node_def
            if is_random_op(node.op)
        ]
    return sorted(found)
