"""Export a trained Keras model as a SavedModel that serves with dropout off.

The exported `serving_default` signature takes raw uint8 pixels named `image`
([None, H, W, C]), scales them in-graph with `dropzoo.preprocess.scale`, calls
the model with training=False and returns float32 `probabilities` and int64
`class_id`. Exports are written to a temporary sibling directory and renamed
into place, so `path` only ever holds a complete export (or nothing).

`export_artifacts` writes the same serving path for other runtimes beside
it: `model.tflite` (float32, converted from a float32 copy of the weights),
`model_int8.tflite` (int8, calibrated on training images) and `model.keras`
(the Keras model itself, to load back for fine-tuning).

`verify_export` reloads an export without Keras and proves it is
deterministic, matches the in-memory model and has no random ops in its
graph; given the artifacts, it proves the same of each TFLite model and that
model.keras reloads as the in-memory model.
"""
import tempfile
import os
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

import models
from dropzoo import files
from dropzoo import tflite
from dropzoo.errors import ExportError
from dropzoo.preprocess import scale

SIGNATURE_KEY = "serving_default"
MC_DROPOUT_KEY = "mc_dropout"
MC_SEEDED_KEY = "mc_dropout_seeded"
MC_DRAWS_KEY = "mc_dropout_draws"
INPUT_KEY = "image"
PROBABILITIES_KEY = "probabilities"
CLASS_ID_KEY = "class_id"
STD_KEY = "probabilities_std"
SAMPLES_KEY = "samples"
SEED_KEY = "seed"
ENTROPY_KEY = "predictive_entropy"
MUTUAL_INFORMATION_KEY = "mutual_information"
OUTPUT_MODES = ("probabilities", "logits")
KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"
ARTIFACT_FILES = (KERAS_FILE, TFLITE_FILE, TFLITE_INT8_FILE)
# Training images the int8 model is calibrated on ("a few hundred"), fed in batches.
REPRESENTATIVE_EXAMPLES = 320
REPRESENTATIVE_BATCH = 32

# Largest |served - keras| allowed by verify_export, per compute dtype. float32
# graph and eager kernels agree to a few ulps (~1e-7). bfloat16 keeps 8
# mantissa bits (unit roundoff 2**-8 ~ 3.9e-3): a fused graph kernel that
# rounds one intermediate differently moves a probability by about one ulp,
# so allow ~2.5 ulps at 1.0. float16 (2**-11 ~ 4.9e-4) gets ~2 ulps.
TOLERANCES = {"float32": 1e-5, "float64": 1e-5, "float16": 1e-3, "bfloat16": 1e-2}

# Op types that draw random numbers (stateful, stateless and dataset RNGs).
# Matched as substrings, case-sensitive, so "StatelessIf"/"StatelessWhile"
# (control flow) and "StringJoin" stay out while every RNG kernel is caught.
_RANDOM_OP_PATTERN = re.compile(
    r"Random|Multinomial|TruncatedNormal|Rng|NonDeterministicInts"
    r"|^Stateful(Uniform|StandardNormal)|Shuffle|SeedGenerator"
    r"|SampleDistortedBoundingBox|CandidateSampler"
)


# ---------------------------------------------------------------- exporting


def export_saved_model(model, path, *, outputs="probabilities", mc_dropout=True):
    """Atomically write `model` as a uint8-in SavedModel at `path`; returns the path.

    With `mc_dropout` the export also gets three Monte Carlo dropout signatures,
    which run the part of the network before the first dropout layer once and
    repeat only the rest per sample (`models.MonteCarlo`):

    - `mc_dropout(image, samples)`: the mean, per-class standard deviation,
      predictive entropy and mutual information of `samples` dropout-on passes;
    - `mc_dropout_seeded(image, samples, seed)`: the same, with masks drawn
      from the int32 `seed` (statelessly), so a request can be repeated exactly;
    - `mc_dropout_draws(image, samples, seed)`: every pass's probabilities,
      [samples, batch, classes], for evaluation.

    A model without dropout gets them too (deterministic then), so every
    export answers the same requests.
    """
    if outputs not in OUTPUT_MODES:
        raise ValueError(f"outputs={outputs!r} is not one of {OUTPUT_MODES}")
    input_spec = _input_spec(model)
    endpoints = {SIGNATURE_KEY: (serving_function(model, outputs), [input_spec])}
    tracked = [model]
    if mc_dropout:
        mc = models.MonteCarlo(model)
        tracked += mc.models
        samples_spec = tf.TensorSpec((), tf.int32, name=SAMPLES_KEY)
        seed_spec = tf.TensorSpec((), tf.int32, name=SEED_KEY)
        # One traced MC computation, called by all three signatures.
        draws = tf.function(_seeded_draws(mc, outputs), input_signature=[input_spec, samples_spec, seed_spec])
        endpoints[MC_DROPOUT_KEY] = (_make_mc_dropout_fn(draws, _fresh_seed_source(model)),
                                     [input_spec, samples_spec])
        endpoints[MC_SEEDED_KEY] = (_make_mc_dropout_seeded_fn(draws), [input_spec, samples_spec, seed_spec])
        endpoints[MC_DRAWS_KEY] = (_make_mc_draws_fn(draws), [input_spec, samples_spec, seed_spec])
    archive = _build_archive(tracked, endpoints)
    return _write_atomically(archive, path)


def _input_spec(model):
    """The serving input: uint8 pixels of the model's [None, H, W, C] shape."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ExportError(
            "model must be a functional keras.Model with exactly one input "
            "(keras.Input(shape=(H, W, C), name='image')); "
            f"got inputs={inputs!r}"
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or any(dim is None for dim in shape[1:]):
        raise ExportError(
            f"model input shape {shape} is not [None, H, W, C] with known H, W, C"
        )
    return tf.TensorSpec((None,) + shape[1:], tf.uint8, name=INPUT_KEY)


def serving_function(model, outputs="probabilities"):
    """uint8 image -> {probabilities, class_id}, dropout off: serving_default's body."""

    # The argument name becomes the signature's input name.
    def serve(image):
        return _outputs_dict(_probabilities(model, scale(image), outputs, training=False))

    return serve


def _seeded_draws(mc, outputs):
    """(uint8 image, samples, seed) -> float32 probabilities of the passes, [samples, batch, classes]."""

    def draws(image, samples, seed):
        with models.request_seed(seed):
            values = tf.cast(mc.draws(scale(image), samples), tf.float32)
        return tf.nn.softmax(values, axis=-1) if outputs == "logits" else values

    return draws


def _fresh_seed_source(model):
    """A SeedGenerator the model already owns (tracked with it), or None if it has none."""
    for layer in models.dropout_layers(model):
        generator = getattr(layer, "seed_generator", None)  # absent at rate 0
        if generator is not None:
            return generator
    return None


def _mc_summary(draws):
    """The mean prediction and its uncertainty over the samples' axis 0."""
    mean = tf.reduce_mean(draws, axis=0)
    entropy = _entropy(mean)
    result = _outputs_dict(mean)
    result[STD_KEY] = tf.math.reduce_std(draws, axis=0)
    result[ENTROPY_KEY] = entropy
    # I(y; w) = H(E[p]) - E[H(p)]: >= 0 in exact arithmetic; rounding may dip below.
    result[MUTUAL_INFORMATION_KEY] = tf.maximum(entropy - tf.reduce_mean(_entropy(draws), axis=0), 0.0)
    return result


def _entropy(probabilities):
    """-sum p log p over the last axis, in nats (0 log 0 = 0)."""
    return -tf.reduce_sum(tf.math.xlogy(probabilities, probabilities), axis=-1)


def _make_mc_dropout_fn(draws, generator):
    """uint8 image, samples -> mean, std, entropy and mutual information of the passes.

    Each call draws a fresh seed from `generator` (advancing it, as every
    unseeded dropout call does), so unseeded calls differ.
    """

    def mc_dropout(image, samples):
        if generator is None:  # no dropout layer: every pass is the same
            seed = tf.constant(0, tf.int32)
        else:
            seed = keras.random.randint((), 0, 2**31 - 1, dtype="int32", seed=generator)
        return _mc_summary(draws(image, samples, seed))

    return mc_dropout


def _make_mc_dropout_seeded_fn(draws):
    """As mc_dropout, with every mask drawn from the request's `seed`."""

    def mc_dropout_seeded(image, samples, seed):
        return _mc_summary(draws(image, samples, seed))

    return mc_dropout_seeded


def _make_mc_draws_fn(draws):
    """uint8 image, samples, seed -> every pass's probabilities (seeded)."""

    def mc_dropout_draws(image, samples, seed):
        return {PROBABILITIES_KEY: draws(image, samples, seed)}

    return mc_dropout_draws


def _probabilities(model, images, outputs, training):
    """float32 class probabilities, whatever the model's dtype policy."""
    # Mixed-precision models return bfloat16/float16; serve float32.
    values = tf.cast(model(images, training=training), tf.float32)
    if outputs == "logits":
        values = tf.nn.softmax(values, axis=-1)
    return values


def _outputs_dict(probabilities):
    return {
        PROBABILITIES_KEY: probabilities,
        CLASS_ID_KEY: tf.argmax(probabilities, axis=-1, output_type=tf.int64),
    }


def _build_archive(tracked, endpoints):
    """An ExportArchive with one signature per {name: (fn, input_signature)}."""
    # ExportArchive, not a bare tf.Module: it also tracks Keras seed-generator
    # state, which a dropout-on signature captures and tf.Module would reject.
    archive = keras.export.ExportArchive()
    for model in tracked:
        archive.track(model)
    # serving_default goes first; the archive aliases the first endpoint.
    for name, (fn, input_signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=input_signature)
    return archive


def _write_archive(archive, directory):
    """The save step proper (tests replace it to simulate a crash)."""
    archive.write_out(directory, verbose=False)


# ------------------------------------------------ model.keras and TFLite


def artifact_paths(directory):
    """{file name: path} of the artifacts `export_artifacts` writes into `directory`."""
    return {name: os.path.join(os.fspath(directory), name) for name in ARTIFACT_FILES}


def export_artifacts(model, directory, representative_images, *, outputs="probabilities"):
    """Writes model.keras, model.tflite and model_int8.tflite into `directory`; returns {name: path}.

    `representative_images`: uint8 training images, [N, H, W, C], the int8
    model's calibration set (the first REPRESENTATIVE_EXAMPLES are used).
    Each file is written atomically, after both conversions succeeded: a
    failed conversion leaves the previous files as they were.
    """
    paths = artifact_paths(directory)
    float32_model, int8_model = convert_tflite(model, representative_images, outputs=outputs)
    os.makedirs(os.fspath(directory), exist_ok=True)
    files.atomic_write(paths[KERAS_FILE], model.save)
    for name, content in ((TFLITE_FILE, float32_model), (TFLITE_INT8_FILE, int8_model)):
        files.atomic_write(paths[name], lambda tmp, content=content: _write_bytes(tmp, content))
    return paths


def _write_bytes(path, content):
    with open(path, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())  # a full disk fails here, not after the rename


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
    archive = _build_archive([copy], {SIGNATURE_KEY: (serving_function(copy, outputs),
                                                      [_input_spec(copy)])})
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
    return copy


# ------------------------------------------------------------ atomic write


def _write_atomically(archive, path):
    """Write into a temp sibling, then swap it in for `path`."""
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    _remove_stale(parent, name, "tmp")
    tmp = _sibling(path, "tmp", os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_archive(archive, tmp)
        missing = _missing_parts(tmp)
        if missing:
            raise ExportError(f"SavedModel written to {tmp} is incomplete: missing {missing}")
        _swap_into_place(tmp, path)
    except BaseException as error:
        # Whatever stopped us (even Ctrl-C), never leave our partial temp dir.
        shutil.rmtree(tmp, ignore_errors=True)
        failure = files.write_failure(error, path) if isinstance(error, Exception) else None
        if failure is not None:
            raise failure from None
        if isinstance(error, Exception) and not isinstance(error, ExportError):
            raise ExportError(
                f"exporting SavedModel to {path} failed: {type(error).__name__}: {error}"
            ) from error
        raise
    _remove_stale(parent, name, "old")
    return path


def _swap_into_place(tmp, path):
    """Old export aside, new one in, old one deleted; rolls back on failure."""
    old = _sibling(path, "old", os.getpid())
    shutil.rmtree(old, ignore_errors=True)
    had_old = os.path.lexists(path)
    if had_old:
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if had_old:
            os.rename(old, path)
        raise
    if had_old:
        _remove_path(old)


def _remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.remove(path)


def _sibling(path, kind, pid):
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.{kind}-{pid}")


def _remove_stale(parent, name, kind):
    """Delete `.name.kind-<pid>` dirs left by exporters that are no longer running."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.{kind}-(\d+)$")
    for entry in os.listdir(parent):
        match = pattern.match(entry)
        if match and not files.process_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _missing_parts(path):
    """What a complete SavedModel dir lacks (empty list when complete)."""
    # Without variables/variables.index, tf.saved_model.load fails to restore.
    parts = [
        ("saved_model.pb", os.path.isfile),
        ("variables/", os.path.isdir),
        ("variables/variables.index", os.path.isfile),
    ]
    return [part for part, exists in parts if not exists(os.path.join(path, part))]


# ----------------------------------------------------------------- loading


def load_serving_fn(path, signature=SIGNATURE_KEY):
    """A signature (default `serving_default`) of the SavedModel at `path` (no Keras)."""
    signatures = load_signatures(path)
    if signature not in signatures:
        raise ExportError(
            f"SavedModel at {path} has no {signature!r} signature (has {sorted(signatures)}); "
            "re-export it with dropzoo.export.export_saved_model(model, path)"
        )
    return signatures[signature]


def load_signatures(path):
    """{name: signature} of the SavedModel at `path`; ExportError if it cannot be loaded."""
    path = os.fspath(path)
    fix = "re-export it with dropzoo.export.export_saved_model(model, path)"
    if not os.path.exists(path):
        raise ExportError(f"no SavedModel at {path}: path does not exist; {fix}")
    if not os.path.isdir(path):
        raise ExportError(f"{path} is a file, not a SavedModel directory; {fix}")
    missing = _missing_parts(path)
    if missing:
        raise ExportError(
            f"{path} is not a complete SavedModel (missing {', '.join(missing)}); {fix}"
        )
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:
        raise ExportError(
            f"cannot load SavedModel at {path}: {type(error).__name__}: "
            f"{_first_line(error)}; {fix}"
        ) from error
    return dict(loaded.signatures)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def serving_input_spec(serving_fn):
    """The (name, TensorSpec) of a single-input serving signature."""
    kwargs = serving_fn.structured_input_signature[1]
    if len(kwargs) != 1:
        raise ExportError(f"serving signature must take one input, takes {sorted(kwargs)}")
    return next(iter(kwargs.items()))


# ---------------------------------------------------------------- verifying


def verify_export(path, model, images, *, outputs="probabilities", tolerance=None, artifacts=None):
    """Prove the export at `path` serves `model` with dropout off; returns the checks.

    `artifacts` ({file name: path}, as `export_artifacts` returns it) adds
    checks of model.keras, model.tflite and model_int8.tflite, reported under
    "keras", "tflite" and "tflite_int8"; any failure fails the whole check.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be a uint8 [B, H, W, C] batch, got {images.dtype} {images.shape}"
        )
    signatures = load_signatures(path)
    serving_fn = load_serving_fn(path) if SIGNATURE_KEY not in signatures else signatures[SIGNATURE_KEY]
    problems = signature_problems(serving_fn)
    if problems:
        raise ExportError(f"export at {path} failed verification: signature: {'; '.join(problems)}")
    _check_image_shape(serving_fn, images)
    if tolerance is None:
        tolerance = tolerance_for(model)
    first = _call(serving_fn, images)
    second = _call(serving_fn, images)
    expected = _probabilities(model, scale(images), outputs, training=False).numpy()
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
    failures = _failures(report, outputs)
    if artifacts:
        failures += _check_artifacts(report, artifacts, model, images, outputs, first[PROBABILITIES_KEY])
    report["passed"] = not failures
    if failures:
        raise ExportError(f"export at {path} failed verification: {'; '.join(failures)}", report)
    return report


def _check_artifacts(report, artifacts, model, images, outputs, served):
    """Adds the artifacts' checks to `report`; returns one phrase per failed check."""
    failures = []
    keras_path = artifacts.get(KERAS_FILE)
    if keras_path:
        report["keras"] = _check_keras_file(keras_path, model, images)
        if report["keras"]["max_abs_diff_vs_keras"] > report["keras"]["tolerance"]:
            failures.append(f"{KERAS_FILE}: reloaded model differs from the in-memory model by "
                            f"{report['keras']['max_abs_diff_vs_keras']:.3g}")
        if not report["keras"]["same_layers"]:
            failures.append(f"{KERAS_FILE}: reloaded layers differ from the in-memory model's")
    expected = None
    for name, key in ((TFLITE_FILE, "tflite"), (TFLITE_INT8_FILE, "tflite_int8")):
        if not artifacts.get(name):
            continue
        if expected is None:  # what model.tflite must equal: the trained weights run in float32
            expected = _probabilities(float32_copy(model), scale(images), outputs, training=False).numpy()
        check, probabilities = _check_tflite(artifacts[name], images, expected)
        report[key] = check
        failures += [f"{name}: {problem}" for problem in check["signature_problems"] + _nondeterminism(check)]
        if key == "tflite" and probabilities is not None:
            # int8 is measured (its accuracy goes to metrics.json), not held to a tolerance.
            check["tolerance"] = TOLERANCES["float32"]
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
                          f"{type(error).__name__}: {_first_line(error)}") from error
    x = scale(images)
    diff = _max_abs_diff(_probabilities(reloaded, x, "probabilities", False).numpy(),
                         _probabilities(model, x, "probabilities", False).numpy())
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
    check = {"signature_problems": _tflite_signature_problems(model),
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


def _tflite_signature_problems(model):
    """Ways a TFLite serving signature departs from image:uint8 -> probabilities, class_id."""
    problems = []
    if model.input_name != INPUT_KEY or model.input_dtype != np.uint8 or len(model.input_shape) != 3:
        problems.append(f"input is {model.input_name!r} {model.input_dtype} [N, *{model.input_shape}], "
                        f"want one uint8 [None, H, W, C] named {INPUT_KEY!r}")
    want = {PROBABILITIES_KEY: np.dtype(np.float32), CLASS_ID_KEY: np.dtype(np.int64)}
    if model.output_dtypes != want:
        problems.append(f"outputs are { {k: str(v) for k, v in model.output_dtypes.items()} }, "
                        f"want { {k: str(v) for k, v in want.items()} }")
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
    if not report["max_abs_diff_vs_keras"] <= report["tolerance"]:
        failures.append(
            f"probabilities differ from the Keras model (training=False, "
            f"outputs={outputs!r}) by {report['max_abs_diff_vs_keras']:.3g} "
            f"> tolerance {report['tolerance']:g}"
        )
    return failures


def signature_problems(serving_fn):
    """Ways the signature departs from image:uint8 -> probabilities, class_id."""
    problems = []
    inputs = serving_fn.structured_input_signature[1]
    spec = inputs.get(INPUT_KEY)
    if set(inputs) != {INPUT_KEY} or spec.dtype != tf.uint8 or spec.shape.rank != 4:
        problems.append(f"input is {inputs}, want one uint8 [None, H, W, C] named {INPUT_KEY!r}")
    outputs = serving_fn.structured_outputs
    want = {PROBABILITIES_KEY: (tf.float32, 2), CLASS_ID_KEY: (tf.int64, 1)}
    got = {key: (value.dtype, value.shape.rank) for key, value in outputs.items()}
    if got != want:
        problems.append(f"outputs are {got}, want {want}")
    return problems


def tolerance_for(model):
    """The loosest TOLERANCES entry over the float compute dtypes of all layers."""
    dtypes = {_dtype_name(layer.compute_dtype) for layer in _all_layers(model)}
    dtypes.add(_dtype_name(model.compute_dtype))
    # Integer/string layers (lookups) do no float rounding; they don't count.
    return max([TOLERANCES[dtype] for dtype in dtypes if dtype in TOLERANCES] or [1e-5])


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
