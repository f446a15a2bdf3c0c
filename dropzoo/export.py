"""Export a trained Keras model as a SavedModel that serves with dropout off, and load one back.

The exported `serving_default` signature keeps the serving contract
(dropzoo/serving.py): raw uint8 pixels named `image` ([None, H, W, C]),
scaled in-graph with `dropzoo.preprocess.scale`, the model called with
training=False, and the contract's outputs (`probabilities`, `class_id`).
Three more signatures serve Monte Carlo dropout. Exports are written beside
`path` and swapped in (`files.write_directory`), so `path` only ever holds a
complete export (or nothing).

model.keras and the TFLite models are written by dropzoo/artifacts.py;
dropzoo/verify.py proves an export serves the model with dropout off.
"""
import glob
import json
import os

import keras
import tensorflow as tf

import models
from dropzoo import errors
from dropzoo import files
from dropzoo import performance
from dropzoo import serving
from dropzoo import workdir as workdirs
from dropzoo.errors import ExportError
from dropzoo.preprocess import scale
from dropzoo.serving import CLASS_ID_KEY  # noqa: F401
from dropzoo.serving import ENTROPY_KEY  # noqa: F401
from dropzoo.serving import INPUT_KEY  # noqa: F401
from dropzoo.serving import MC_DRAWS_KEY  # noqa: F401
from dropzoo.serving import MC_DRAWS_XLA_KEY  # noqa: F401
from dropzoo.serving import MC_DROPOUT_KEY  # noqa: F401
from dropzoo.serving import MC_SEEDED_KEY  # noqa: F401
from dropzoo.serving import MUTUAL_INFORMATION_KEY  # noqa: F401
from dropzoo.serving import OUTPUT_MODES  # noqa: F401
from dropzoo.serving import PROBABILITIES_KEY  # noqa: F401
from dropzoo.serving import SAMPLES_KEY  # noqa: F401
from dropzoo.serving import SEED_KEY  # noqa: F401
from dropzoo.serving import SIGNATURE_KEY  # noqa: F401
from dropzoo.serving import STD_KEY  # noqa: F401

# Beside the SavedModel's own files (TF Serving reads assets.extra/ for warm-up requests only).
CLASS_NAMES_FILE = os.path.join("assets.extra", "class_names.json")
TEST_DATA_FILE = os.path.join("assets.extra", "test_data.json")

# ---------------------------------------------------------------- exporting


def export_saved_model(model, path, *, outputs="probabilities", mc_dropout=True, class_names=None, test_data=None):
    """Atomically write `model` as a uint8-in SavedModel at `path`; returns the path.

    `class_names` (the data's, in class order; [] where the classes are their
    numbers) go to CLASS_NAMES_FILE inside it, so a copy of the export still
    says which class each `class_id` is (`class_names(path)` reads them).
    `test_data` ({"source", "test_sha256"}: the run's test split) goes to
    TEST_DATA_FILE, so a copy scored on other data can say so (`recorded_test_data(path)`).

    `serving_default` takes raw uint8 pixels; `serving_float` the same
    images as float32 already scaled to [0, 1], and refuses pixels outside
    [0, 1] (raw 0-255 values sent as floats) with an error naming the fix.

    With `mc_dropout` the export also gets three Monte Carlo dropout signatures,
    which run the part of the network before the first dropout layer once and
    repeat only the rest per sample (`models.MonteCarlo`):

    - `mc_dropout(image, samples)`: the mean, per-class standard deviation,
      predictive entropy and mutual information of `samples` dropout-on passes;
    - `mc_dropout_seeded(image, samples, seed)`: the same, with masks drawn
      from the int32 `seed` (statelessly), so a request can be repeated exactly;
    - `mc_dropout_draws(image, samples, seed)`: every pass's probabilities,
      [samples, batch, classes], for evaluation;
    - `mc_dropout_draws_xla(image, samples, seed)`: the same draws, bit for
      bit, with the dropout masks fused by XLA (about twice as fast in bf16),
      for in-process use (`eval.py` calls it). It is the one signature holding
      an XLA-compiled function: TF Serving runs it only when started with
      --xla_cpu_compilation_enabled, and serves the others either way.

    A model without dropout gets them too (deterministic then), so every
    export answers the same requests.
    """
    if outputs not in OUTPUT_MODES:
        raise ValueError(f"outputs={outputs!r} is not one of {OUTPUT_MODES}")
    # Plain ops (but in mc_dropout_draws_xla): a compiled mask would make TF Serving refuse a signature.
    with models.masks.portable():
        return _export_saved_model(model, path, outputs, mc_dropout, class_names, test_data)


def _export_saved_model(model, path, outputs, mc_dropout, class_names, test_data):
    input_spec = serving.input_spec(model)
    if outputs == "probabilities":  # a model ending in logits would serve them as probabilities, and NaN entropies
        pixels = tf.random.stateless_uniform((4, *input_spec.shape[1:]), seed=(0, 0))
        serving.check_probabilities("the model", serving.probabilities(model, pixels, outputs, training=False))
    endpoints = {SIGNATURE_KEY: (serving_function(model, outputs), [input_spec]),
                 serving.FLOAT_SIGNATURE_KEY: (float_serving_function(model, outputs),
                                               [serving.float_input_spec(model)])}
    tracked = [model]
    if mc_dropout:
        mc = models.MonteCarlo(model)
        tracked += mc.models
        samples_spec = tf.TensorSpec((), tf.int32, name=SAMPLES_KEY)
        seed_spec = tf.TensorSpec((), tf.int32, name=SEED_KEY)
        # One traced MC computation, called by all three signatures.
        draws = tf.function(_seeded_draws(mc, outputs, input_spec.shape),
                            input_signature=[input_spec, samples_spec, seed_spec])
        endpoints[MC_DROPOUT_KEY] = (_make_mc_dropout_fn(draws, _fresh_seed_source(model)),
                                     [input_spec, samples_spec])
        endpoints[MC_SEEDED_KEY] = (_make_mc_dropout_seeded_fn(draws), [input_spec, samples_spec, seed_spec])
        endpoints[MC_DRAWS_KEY] = (_make_mc_draws_fn(draws), [input_spec, samples_spec, seed_spec])
        with models.masks.fused(performance.xla_compiler()):  # traced now: its masks are the compiled ones
            fused = tf.function(_seeded_draws(mc, outputs, input_spec.shape)).get_concrete_function(
                input_spec, samples_spec, seed_spec)
        endpoints[MC_DRAWS_XLA_KEY] = (_make_mc_draws_fn(fused), [input_spec, samples_spec, seed_spec])
    archive = build_archive(tracked, endpoints)
    extras = {CLASS_NAMES_FILE: None if class_names is None else {"class_names": list(class_names)},
              TEST_DATA_FILE: test_data}
    try:
        return files.write_directory(path, lambda tmp: (_write_archive(archive, tmp),
                                                        *(_write_extra(tmp, name, record)
                                                          for name, record in extras.items())),
                                     missing=missing_parts)
    except files.IncompleteWrite as e:
        raise ExportError(f"SavedModel not exported: {e}") from None
    except (ExportError, files.WriteError):
        raise
    except Exception as error:
        raise ExportError(f"exporting SavedModel to {path} failed: {type(error).__name__}: {error}") from error


def serving_function(model, outputs="probabilities"):
    """uint8 image -> {probabilities, class_id}, dropout off: serving_default's body."""

    shape = serving.input_spec(model).shape

    # The argument name becomes the signature's input name.
    def serve(image):
        image = serving.checked_shape(image, shape)
        return serving.answer(serving.probabilities(model, scale(image), outputs, training=False))

    return serve


def float_serving_function(model, outputs="probabilities"):
    """float32 image in [0, 1] -> serving_default's answer; refuses pixels outside [0, 1]."""

    shape = serving.input_spec(model).shape

    def serve_float(image):
        image = serving.checked_float_pixels(serving.checked_shape(image, shape))
        return serving.answer(serving.probabilities(model, image, outputs, training=False))

    return serve_float


def _seeded_draws(mc, outputs, shape):
    """(uint8 image of `shape`, samples, seed) -> float32 probabilities of the passes, [samples, batch, classes]."""

    def draws(image, samples, seed):
        image = serving.checked_shape(image, shape)
        samples = serving.checked_samples(samples, image)  # 0 answered NaN for a batch of one, without a word
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
    result = serving.answer(mean)
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
    unseeded dropout call does), so unseeded calls differ; mixed with the
    clock's microseconds, as the generator's state is saved with the export
    and every fresh load (a server's restart, each replica) would otherwise
    replay the same masks.
    """

    def mc_dropout(image, samples):
        if generator is None:  # no dropout layer: every pass is the same
            seed = tf.constant(0, tf.int32)
        else:
            drawn = keras.random.randint((), 0, 2**31 - 1, dtype="int32", seed=generator)
            clock = tf.cast(tf.math.floormod(tf.cast(tf.timestamp() * 1e6, tf.int64), 2**31 - 1), tf.int32)
            seed = tf.bitwise.bitwise_xor(drawn, clock)
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


def build_archive(tracked, endpoints):
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


def _write_extra(directory, name, record):
    """`record` (a dict) into the export's file `name`; nothing for None."""
    if record is not None:
        os.makedirs(os.path.join(directory, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(directory, name), "w") as f:
            json.dump(record, f)


def _read_extra(path, name):
    """The dict in the SavedModel's file `name`, or {} where it has none (an export of older code) or another."""
    try:
        with open(os.path.join(path, name)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def recorded_test_data(path):
    """{"source", "test_sha256"} of the test split the SavedModel at `path` was tested on by its run, or None
    (exported before exports recorded it, or not by a run)."""
    recorded = _read_extra(path, TEST_DATA_FILE)
    return recorded if isinstance(recorded.get("test_sha256"), str) else None


def class_names(path):
    """The class names the SavedModel at `path` was trained on ([]: its classes are their numbers), or None where
    it records none (exported before exports carried them)."""
    names = _read_extra(path, CLASS_NAMES_FILE).get("class_names")
    return list(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def missing_parts(path):
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
    return check_outputs(path, signature, signatures[signature])


def check_outputs(path, name, signature):
    """`signature` (named `name`, of the SavedModel at `path`) if it answers probabilities; else ExportError."""
    outputs = signature.structured_outputs
    if not isinstance(outputs, dict) or PROBABILITIES_KEY not in outputs:
        answers = sorted(outputs) if isinstance(outputs, dict) else outputs
        raise ExportError(
            f"SavedModel at {path}: its {name!r} answers {answers}, not {PROBABILITIES_KEY!r} (an export made "
            "elsewhere, e.g. Keras' model.export?); export the Keras model with "
            "dropzoo.export.export_saved_model(model, path), which gives the signatures eval.py reads"
        )
    return signature


def _load_fix(path):
    """How to get a loadable SavedModel at `path`, by what `path` is: a run, a run's export, or other."""
    def is_run(directory):
        return any(os.path.isfile(os.path.join(directory, name)) for name in ("metrics.json", "config.json"))

    parent, name = os.path.split(os.path.normpath(path))
    if is_run(path):
        return (f"{path} is a run's directory: pass --workdir={path}, or "
                f"--saved_model={os.path.join(path, 'saved_model')}")
    if name.endswith(".tflite"):
        return f"it is a TFLite model: pass --tflite={path} (in Python: tflite_model=True)"
    if name.endswith(".keras"):
        return (f"it is run {parent}'s Keras copy of its export: pass --workdir={parent} (in Python: the run's "
                "directory)" if is_run(parent) else
                "it is a Keras file: export it with dropzoo.export.export_saved_model(keras.saving.load_model("
                f"{path!r}), DIR) and pass --saved_model=DIR")
    if name == "saved_model" and is_run(parent):
        return f"it is run {parent}'s export; {workdirs.reexport_fix(parent, 'it')}"
    # A sweep's --workdir, or its saved_model/ (`eval.py --workdir=SWEEP`): runs below it.
    root = path if os.path.isdir(path) else parent if name == "saved_model" and os.path.isdir(parent) else None
    if root and holds_runs(root):
        return f"{root} holds runs: compare them with --runs_dir={root}, or name one run with --workdir"
    return "re-export it with dropzoo.export.export_saved_model(model, path)"


def holds_runs(directory, depth=5):
    """Whether finished runs (a metrics.json) lie below `directory`, up to `depth` levels (a sweep's are 3)."""
    return any(next(glob.iglob(os.path.join(glob.escape(directory), *["*"] * level, "metrics.json")), None)
               for level in range(1, depth + 1))


def load_signatures(path):
    """{name: signature} of the SavedModel at `path`; ExportError if it cannot be loaded."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ExportError(f"no SavedModel at {path}: path does not exist; {_load_fix(path)}")
    if not os.path.isdir(path):
        raise ExportError(f"{path} is a file, not a SavedModel directory; {_load_fix(path)}")
    missing = missing_parts(path)
    if missing:
        raise ExportError(
            f"{path} is not a complete SavedModel (missing {', '.join(missing)}); {_load_fix(path)}"
        )
    pattern = files.pattern_characters(path)
    if pattern:  # (else: "Failed to find any matching files for .../variables/variables")
        raise ExportError(f"cannot load SavedModel at {path}: its path holds {pattern}, which TensorFlow reads as a "
                          "file pattern; move or link it to a path without [ or \\ (a relative path is read as "
                          "given: from inside such a directory, name the export below it)")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:
        raise ExportError(
            f"cannot load SavedModel at {path}: {type(error).__name__}: "
            f"{first_line(error)}; {_load_fix(path)}"
        ) from error
    _check_runs_here(loaded.signatures)
    return dict(loaded.signatures)


def first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def serving_input_spec(serving_fn, what="the SavedModel"):
    """The (name, TensorSpec) of a single-input serving signature that takes uint8 pixels."""
    kwargs = serving_fn.structured_input_signature[1]
    if len(kwargs) != 1:
        raise ExportError(f"serving signature must take one input, takes {sorted(kwargs)}")
    name, spec = next(iter(kwargs.items()))
    check_uint8_input(what, spec.dtype.name)
    return name, spec


def check_uint8_input(what, dtype, callers="eval.py, Client"):
    """ExportError (one line) unless a model's serving input is uint8 pixels, as every export of this project's."""
    if dtype != "uint8":
        raise ExportError(f"{what} takes {dtype} images, and its callers here ({callers}) give the uint8 "
                          "pixels (0-255) that this project's exports take and scale themselves; export the model "
                          "with train.py or dropzoo.export.export_saved_model, or give it a uint8 input that scales "
                          "the pixels as in training")


def _check_runs_here(signatures):
    """ExportError (one line) for a bfloat16 SavedModel where a oneDNN cap leaves no bfloat16 kernels.

    oneDNN would abort the process at the first bfloat16 matmul (a C++
    exception: no Python error to report); convolutions fail in Python. Only
    under such a cap are the signatures' graphs read for their dtypes.
    """
    try:
        performance.check_precision("mixed_bfloat16")
        return
    except ValueError:
        pass
    bf16 = tf.bfloat16.as_datatype_enum
    for signature in signatures.values():
        graph = signature.graph.as_graph_def()
        nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
        if any(value.type == bf16 or bf16 in value.list.type for node in nodes for value in node.attr.values()):
            raise ExportError(errors.onednn_cap_message())
