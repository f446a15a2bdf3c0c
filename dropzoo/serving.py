"""The serving contract, defined once: what every export takes and answers.

Every serving signature (the SavedModel's `serving_default`, the TFLite
models' `serving_default`) takes one uint8 batch named `image`, [None, H, W,
C] raw pixels, scales it in-graph (`dropzoo.preprocess.scale`) and answers
`OUTPUTS`, each computed from the float32 class probabilities. The MC dropout
signatures answer the same outputs for the mean of the passes, plus their own
(`MC_OUTPUTS`). The export (dropzoo/export.py, dropzoo/artifacts.py), its
verification (dropzoo/verify.py) and evaluation (dropzoo/evaluate.py) read
these tables, so a new output is one entry in `OUTPUTS`: see
docs/contributing.md.
"""
import dataclasses
import typing

import numpy as np
import tensorflow as tf

from dropzoo.errors import ExportError

INPUT_KEY = "image"
INPUT_DTYPE = tf.uint8
SIGNATURE_KEY = "serving_default"
# The same answer for float32 pixels already scaled to [0, 1]; it refuses anything outside [0, 1]
# (raw 0-255 values sent as floats), so neither signature can silently take the other's pixels.
FLOAT_SIGNATURE_KEY = "serving_float"
FLOAT_INPUT_DTYPE = tf.float32
MC_DROPOUT_KEY = "mc_dropout"
MC_SEEDED_KEY = "mc_dropout_seeded"
MC_DRAWS_KEY = "mc_dropout_draws"
# mc_dropout_draws with its masks fused by XLA: the same draws, for in-process evaluation (eval.py).
MC_DRAWS_XLA_KEY = "mc_dropout_draws_xla"
SAMPLES_KEY = "samples"
SEED_KEY = "seed"
OUTPUT_MODES = ("probabilities", "logits")  # what a model's last layer emits


def check_probabilities(what, probabilities, step=0.0):
    """ExportError unless each row of `probabilities` (what `what`, an export or a model, answers as them) is a
    distribution, within rounding: 0.01 (a bfloat16 softmax misses 1 by ~0.002), plus K * step / 2 for K classes
    where the outputs are quantised in steps of `step` (an int8 TFLite model's softmax: 1/256). Non-finite rows (a
    diverged model) are left to the scores, which say so."""
    probabilities = np.asarray(probabilities)
    finite = probabilities[np.all(np.isfinite(probabilities), axis=-1)]
    if not len(finite):
        return
    low, high = float(np.min(finite)), float(np.max(finite))
    worst = float(np.max(np.abs(np.sum(finite, axis=-1, dtype=np.float64) - 1.0)))
    if low < -1e-6 or high > 1 + 1e-6 or worst > 0.01 + finite.shape[-1] * step / 2:
        raise ExportError(f"{what} answers 'probabilities' that are not probabilities (values {low:.3g} to "
                          f"{high:.3g}, rows summing to 1 within {worst:.3g}): logits? export the model with "
                          "dropzoo.export.export_saved_model(model, path, outputs='logits'), which applies the "
                          "softmax")


@dataclasses.dataclass(frozen=True)
class Output:
    """One output of the serving signature: its dtype, rank and how it follows from the probabilities."""

    dtype: tf.DType
    rank: int  # with the batch axis
    compute: typing.Callable  # float32 probabilities [batch, classes] -> this output

    @property
    def numpy_dtype(self):
        return np.dtype(self.dtype.as_numpy_dtype)


PROBABILITIES_KEY = "probabilities"
CLASS_ID_KEY = "class_id"
# The outputs of serving_default (and of every export's deterministic answer), in order.
OUTPUTS = {
    PROBABILITIES_KEY: Output(tf.float32, 2, lambda probabilities: probabilities),
    CLASS_ID_KEY: Output(tf.int64, 1, lambda probabilities: tf.argmax(probabilities, axis=-1,
                                                                      output_type=tf.int64)),
}
# What mc_dropout and mc_dropout_seeded add to OUTPUTS (of the mean of the passes).
STD_KEY = "probabilities_std"
ENTROPY_KEY = "predictive_entropy"
MUTUAL_INFORMATION_KEY = "mutual_information"
MC_OUTPUTS = (STD_KEY, ENTROPY_KEY, MUTUAL_INFORMATION_KEY)


def input_spec(model):
    """The serving input of `model`: uint8 pixels of its [None, H, W, C] shape; ExportError if it has none."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ExportError("model must be a functional keras.Model with exactly one input "
                         f"(keras.Input(shape=(H, W, C), name='image')); got inputs={inputs!r}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or any(dim is None for dim in shape[1:]):
        raise ExportError(f"model input shape {shape} is not [None, H, W, C] with known H, W, C")
    return tf.TensorSpec((None,) + shape[1:], INPUT_DTYPE, name=INPUT_KEY)


def float_input_spec(model):
    """serving_float's input: float32 pixels in [0, 1], of the model's [None, H, W, C] shape."""
    return tf.TensorSpec(input_spec(model).shape, FLOAT_INPUT_DTYPE, name=INPUT_KEY)


FLOAT_RANGE_MESSAGE = ("serving_float takes pixels scaled to [0, 1], and these are outside it (raw 0-255 "
                       "values?): send raw uint8 pixels to serving_default, or divide by 255")


EMPTY_BATCH_MESSAGE = "no images to predict: the batch is empty; send at least one image"


def checked_shape(image, shape):
    """`image` after checking it has `shape` ([None, H, W, C]) and one image or more: InvalidArgumentError
    naming both shapes, or the empty batch, otherwise.

    A loaded signature does not check its inputs' shapes: other channels
    would be answered (a grouped convolution), a missing axis would abort
    the process, and oneDNN's convolution refuses an empty batch with a
    message about its own arguments.
    """
    image = tf.ensure_shape(image, shape)
    check = tf.debugging.assert_positive(tf.shape(image)[0], message=EMPTY_BATCH_MESSAGE)
    with tf.control_dependencies([check]):
        return tf.identity(image)


def shape_locked(image, shape):
    """`image` ([N, H, W, C]) through ops that fail on any other shape than `shape` ([None, H, W, C]) once
    converted to TFLite, whose converter drops checked_shape's assertions and whose interpreter resizes its input to
    whatever it is given: 3 channels sent to a 1-channel model were answered (10% accuracy on MNIST), without a
    word. A reshape to the shape refuses another element count; a broadcast to it refuses a permutation (NCHW),
    a crop or a pad; where both pass, they are the image, and their minimum is it (in int32: TFLite has no
    uint8 minimum)."""
    target = tf.concat([tf.shape(image)[:1], tf.constant(list(shape[1:]), tf.int32)], axis=0)
    reshaped, broadcast = tf.reshape(image, target), tf.broadcast_to(image, target)
    return tf.cast(tf.minimum(tf.cast(reshaped, tf.int32), tf.cast(broadcast, tf.int32)), image.dtype)


def checked_float_pixels(image):
    """`image` after asserting every pixel is in [0, 1] (InvalidArgumentError naming the fix otherwise)."""
    checks = [tf.debugging.assert_greater_equal(image, tf.constant(0.0, image.dtype), message=FLOAT_RANGE_MESSAGE),
              tf.debugging.assert_less_equal(image, tf.constant(1.0, image.dtype), message=FLOAT_RANGE_MESSAGE)]
    with tf.control_dependencies(checks):
        return tf.identity(image)


SAMPLES_MESSAGE = ("samples is the number of MC dropout passes to average and must be at least 1 (20 is "
                   "typical); 0 would average no passes and answer NaN")


# Examples x samples per MC call: bounds the tiled batch's memory.
MC_CHUNK = 4096
# The most passes (samples x images) one MC signature call draws at once: each is a forward pass held in memory
# together (a request of 10**6 samples aborted its process); eval.py and the client call with MC_CHUNK at most.
MAX_PASSES = 4 * MC_CHUNK
PASSES_MESSAGE = (f"samples x images is the number of dropout passes one MC call draws at once, held in memory "
                  f"together, and must be at most {MAX_PASSES}; send fewer images per request, or fewer samples "
                  f"(the zoo's client and eval.py split their calls)")


def mc_chunks(count, batch_size, samples):
    """[(start, stop)] of the MC calls over `count` images taken in batches of `batch_size`, each batch split
    into calls of at most MC_CHUNK // samples images: eval.py's and the client's, so that one seed, with the
    `call`-th chunk drawing with chunk_seed(seed, call), gives both the same masks."""
    chunk = max(1, MC_CHUNK // samples)
    return [(i, min(i + chunk, start + batch_size, count)) for start in range(0, count, batch_size)
            for i in range(start, min(start + batch_size, count), chunk)]


def chunk_seed(seed, call):
    """The seed of the `call`-th chunk of a seeded MC request split into chunks: each chunk its own masks (one
    seed for all would repeat them every chunk), the sequence fixed by `seed` and the chunking."""
    return (seed * 1_000_003 + call) % 2**31


def checked_samples(samples, images):
    """`samples` after asserting it is at least 1, and that samples x the batch of `images` is at most MAX_PASSES
    (InvalidArgumentError naming the fix otherwise)."""
    checks = [tf.debugging.assert_greater_equal(samples, tf.constant(1, samples.dtype), message=SAMPLES_MESSAGE)]
    with tf.control_dependencies(checks):  # (a negative count times a batch is small: said as below 1 first)
        passes = tf.cast(samples, tf.int64) * tf.cast(tf.shape(images)[0], tf.int64)
        checks.append(tf.debugging.assert_less_equal(passes, tf.constant(MAX_PASSES, tf.int64),
                                                     message=PASSES_MESSAGE))
    with tf.control_dependencies(checks):
        return tf.identity(samples)


def probabilities(model, images, outputs="probabilities", training=False):
    """float32 class probabilities of `model` on scaled `images`, whatever its dtype policy."""
    if outputs not in OUTPUT_MODES:
        raise ValueError(f"outputs={outputs!r} is not one of {OUTPUT_MODES}")
    # Mixed-precision models return bfloat16/float16; serve float32.
    values = tf.cast(model(images, training=training), tf.float32)
    return tf.nn.softmax(values, axis=-1) if outputs == "logits" else values


def answer(probabilities):
    """{output name: tensor} of OUTPUTS for float32 probabilities."""
    return {name: output.compute(probabilities) for name, output in OUTPUTS.items()}


def signature_problems(serving_fn):
    """Ways a SavedModel signature departs from the contract (empty when it keeps it)."""
    problems = []
    inputs = serving_fn.structured_input_signature[1]
    spec = inputs.get(INPUT_KEY)
    if set(inputs) != {INPUT_KEY} or spec.dtype != INPUT_DTYPE or spec.shape.rank != 4:
        problems.append(f"input is {inputs}, want one {INPUT_DTYPE.name} [None, H, W, C] named {INPUT_KEY!r}")
    want = {name: (output.dtype, output.rank) for name, output in OUTPUTS.items()}
    got = {key: (value.dtype, value.shape.rank) for key, value in serving_fn.structured_outputs.items()}
    if got != want:
        problems.append(f"outputs are {got}, want {want}")
    return problems


def tflite_problems(model):
    """Ways a TFLite model's signature (a dropzoo.tflite.Model) departs from the contract."""
    problems = []
    if (model.input_name != INPUT_KEY or model.input_dtype != np.dtype(INPUT_DTYPE.as_numpy_dtype)
            or len(model.input_shape) != 3):
        problems.append(f"input is {model.input_name!r} {model.input_dtype} [N, *{model.input_shape}], "
                        f"want one {INPUT_DTYPE.name} [None, H, W, C] named {INPUT_KEY!r}")
    want = {name: output.numpy_dtype for name, output in OUTPUTS.items()}
    if model.output_dtypes != want:
        problems.append(f"outputs are { {k: str(v) for k, v in model.output_dtypes.items()} }, "
                        f"want { {k: str(v) for k, v in want.items()} }")
    return problems
