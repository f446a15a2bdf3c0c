"""Call an export from Python with the right answer for any pixel dtype, or a clear error.

    from dropzoo import client
    model = client.Client("runs/keras_mnist_cnn/canonical/seed0/saved_model")
    answer = model.predict(images)     # {"probabilities": [N, classes], "class_id": [N]}
    model.class_names                  # class k's name (an image folder's); [] for numbered classes
    mc = model.mc_dropout(images, samples=20, seed=0)   # mean probabilities, their std, entropy, MI

Why it exists: a SavedModel signature with a uint8 input, called from
Python with a NumPy float array (or through `saved_model_cli run` with a
float `.npy`), has TensorFlow cast the floats to uint8 *before* the graph
runs: pixels already scaled to [0, 1] become 0 and every image gets the
same answer, without a word. `predict` picks the signature from the dtype:

- uint8 (or another integer dtype within 0-255): `serving_default`, as is;
- floats: `serving_float`, which takes pixels scaled to [0, 1] and refuses
  anything outside [0, 1]; floats above 1 (raw 0-255 values) are refused
  here already, with the fix (`.astype(np.uint8)`);
- anything else, or images of the wrong shape: a ValueError naming the fix.

`mc_dropout` calls the MC signatures, which take uint8 pixels only: floats
scaled to [0, 1] go to them as the uint8 values they came from (k/255),
and floats between those (resized, augmented) are refused with the fix.

From a shell, each image file's class, read at the export's size and
channels as `--image_dir` reads images (`main`):

    python -m dropzoo.client runs/mine/canonical/seed0 photo.jpg other.png     # a run, or its saved_model/
"""
import glob
import json
import numbers
import os
import sys

if __name__ == "__main__":  # TensorFlow's environment before it loads, as train.py's (no start-up banner)
    from dropzoo import environment

    environment.set_defaults()
    environment.import_tensorflow()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from dropzoo import data as data_lib  # noqa: E402
from dropzoo import divergence  # noqa: E402
from dropzoo import export  # noqa: E402
from dropzoo import serving  # noqa: E402
from dropzoo import workdir as workdirs  # noqa: E402
from dropzoo.errors import ExportError  # noqa: E402


def is_run_directory(path):
    """Whether `path` is a run's directory (its export, its records): what `export_of` resolves."""
    return any(os.path.exists(os.path.join(path, name)) for name in ("saved_model", "metrics.json", "config.json"))


def export_of(path):
    """The SavedModel to serve for `path`: itself, a run directory's saved_model/ (a run identical by construction
    to another: that run's); ExportError (one line, the fix) for a run without its export, a TFLite model and a
    directory of runs."""
    path = os.fspath(path)
    if os.path.isdir(os.path.join(path, "saved_model")):
        return os.path.join(path, "saved_model")
    if os.path.isfile(os.path.join(path, "metrics.json")):
        with open(os.path.join(path, "metrics.json")) as f:
            target = json.load(f).get("identical_to")
        if target:  # never trained: the run it is identical to serves for it
            return export_of(os.path.normpath(os.path.join(path, target)))
        raise ExportError(f"{path} is a run's directory without its export (saved_model/); "
                          f"{workdirs.reexport_fix(path, 'it')}")
    if os.path.isfile(os.path.join(path, "config.json")):
        raise ExportError(divergence.no_export(path) or f"{path} is a run that has not finished (no metrics.json): "
                          "its export (saved_model/) is written when its training ends; rerun its train.py command "
                          "to finish it")
    if os.path.isfile(path) and path.endswith(".tflite"):
        raise ExportError(f"{path} is a TFLite model; the client serves a SavedModel: give the run's saved_model/ (a "
                          "TFLite model runs in LiteRT's Interpreter, ai_edge_litert.interpreter; docs/serving.md)")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "saved_model.pb")) and export.holds_runs(path):
        one = os.path.dirname(sorted(glob.glob(os.path.join(glob.escape(path), "**", "metrics.json"),
                                               recursive=True))[0])
        raise ExportError(f"{path} holds runs below it, not an export; give one run (e.g. {one})")
    return path


class Client:
    """The serving signatures of one export, called with checked pixels."""

    def __init__(self, saved_model):
        """`saved_model`: an export's directory, or a run's (its saved_model/)."""
        saved_model = export_of(saved_model)
        self.path = saved_model
        self.signatures = export.load_signatures(saved_model)
        self.uint8_fn = export.load_serving_fn(saved_model)
        self.float_fn = self.signatures.get(serving.FLOAT_SIGNATURE_KEY)
        self.image_shape = tuple(export.serving_input_spec(self.uint8_fn, f"SavedModel {saved_model}")[1].shape[1:])
        self.class_names = export.class_names(saved_model)  # None: exported before exports recorded them

    def predict(self, images, batch_size=256):
        """{output: NumPy array} of the serving outputs for `images` ([N, H, W, C] or one [H, W, C])."""
        data_lib.check_batch_size(batch_size)
        fn, pixels = self.route(images)
        return self._checked(_in_chunks(fn, pixels, [(i, i + batch_size) for i in range(0, len(pixels), batch_size)]))

    def mc_dropout(self, images, samples=20, seed=None, batch_size=256):
        """{output: NumPy array} of MC dropout over `samples` passes (`mc_dropout`, or `mc_dropout_seeded` with
        `seed` in [0, 2**31): the same images, seed and batch_size give the same answer, and eval.py's with its
        --mc_seed and --batch_size; each call draws its own masks, in serving.mc_chunks' calls as eval.py's do)."""
        data_lib.check_batch_size(batch_size)
        if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or not 1 <= samples <= \
                serving.MAX_PASSES:
            raise ValueError(f"samples must be a positive integer (passes to average), at most {serving.MAX_PASSES} "
                             f"(the passes an MC call draws at once), got {samples!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or not 0 <= seed < 2**31):  # an int32 input: 2**32 would be seed 0
            raise ValueError(f"seed must be an integer in [0, 2**31), or None for unseeded draws, got {seed!r}")
        fn, pixels = self.route(images)
        if fn is not self.uint8_fn:  # floats k/255: the uint8 pixels they are, else refused
            pixels = _as_uint8(pixels, np.asarray(images).dtype)
        name = serving.MC_DROPOUT_KEY if seed is None else serving.MC_SEEDED_KEY
        if name not in self.signatures:
            raise ValueError(f"SavedModel {self.path} has no {name} signature (exported by older code); export "
                             "the run again to serve MC dropout")
        return self._checked(_in_chunks(
            self.signatures[name], pixels, serving.mc_chunks(len(pixels), batch_size, samples),
            lambda call: {serving.SAMPLES_KEY: tf.constant(samples, tf.int32), **(
                {} if seed is None else {serving.SEED_KEY: tf.constant(serving.chunk_seed(seed, call), tf.int32)})}))

    def _checked(self, answer):
        """`answer`, where its probabilities are probabilities (an export of a model's logits as them: ExportError,
        as eval.py's)."""
        serving.check_probabilities(f"SavedModel {self.path}", answer[serving.PROBABILITIES_KEY])
        return answer

    def route(self, images):
        """(the signature, the pixels it takes) for `images`; ValueError (one line) if they fit neither."""
        x = np.asarray(images)
        if x.shape == self.image_shape:
            x = x[np.newaxis]
        if x.ndim != 4 or x.shape[1:] != self.image_shape or not len(x):
            raise ValueError(self._shape_problem(x.shape))
        if np.issubdtype(x.dtype, np.integer):
            if x.min() < 0 or x.max() > 255:
                raise ValueError(f"integer pixels must be 0-255, these span {x.min()}..{x.max()}")
            if x.max() == 1 and x.size > 1:  # as training says of such arrays (readers): answers for near black
                logging.warning("the images' pixels are 0 and 1 (binarized?); integer pixels are read as 0-255, so "
                                "these are near black: multiply by 255")
            return self.uint8_fn, x.astype(np.uint8, copy=False)
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"images are {x.dtype}; pass uint8 pixels (0-255) or floats scaled to [0, 1]")
        if not np.all(np.isfinite(x)):
            raise ValueError("images hold NaN or infinite pixels")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"float pixels must be scaled to [0, 1], these span {x.min():g}..{x.max():g}; if they "
                             "are raw 0-255 values, pass images.astype(np.uint8)")
        if self.float_fn is None:  # an export from before serving_float: scale back exactly
            return self.uint8_fn, np.round(x * 255.0).astype(np.uint8)
        return self.float_fn, x.astype(np.float32)

    def _shape_problem(self, shape):
        """One line: how images of `shape` miss [N, *image_shape], and the fix."""
        height, width, channels = self.image_shape
        if len(shape) == 4 and shape[1:] == self.image_shape:
            return f"no images to predict: the batch is empty (shape {shape})"
        problem = f"images have shape {shape}; this export takes [N, {height}, {width}, {channels}]"
        if channels == 1 and len(shape) in (2, 3) and shape[-2:] == (height, width):
            return f"{problem}: add the channel axis, images[..., np.newaxis]"
        if shape[-3:-2] in ((1,), (3,)) and shape[-2:] == (height, width) and len(shape) in (3, 4):  # channels first
            return f"{problem}: move the channel axis last, np.moveaxis(images, {len(shape) - 3}, -1)"
        if shape[-3:-1] == (height, width) or (len(shape) in (2, 3) and shape[-2:] == (height, width)):
            return f"{problem}: convert them to {channels} channel(s) as the training data was (1: grayscale, 3: RGB)"
        if len(shape) == 4:
            return f"{problem}: resize them as the training data was"
        if len(shape) == 3 and shape[-1] == channels:  # one image of another size
            return f"{problem}, or one [{height}, {width}, {channels}] image: resize it as the training data was"
        if len(shape) == 3 and shape[-1] in (1, 3, 4):  # one image of another size and colours (a photo)
            mode = "RGB" if channels == 3 else "L"
            return (f"{problem}, or one [{height}, {width}, {channels}] image: read it as the training data was, "
                    f"np.asarray(PIL.ImageOps.exif_transpose(PIL.Image.open(path)).convert('{mode}').resize(({width}, "
                    f"{height}), "
                    f"PIL.Image.BILINEAR)){'[..., None]' if channels == 1 else ''}, or classify image files with "
                    "python -m dropzoo.client SAVED_MODEL IMAGE...")
        return f"{problem}: a batch of images, or one [{height}, {width}, {channels}] image"


def _in_chunks(fn, pixels, chunks, other_inputs=lambda call: {}):
    """{output: NumPy array} of `fn` over `pixels` in `chunks` ([(start, stop)]), chunk `call` also given
    `other_inputs(call)`."""
    parts = [fn(**{serving.INPUT_KEY: tf.constant(pixels[start:stop])}, **other_inputs(call))
             for call, (start, stop) in enumerate(chunks)]
    return {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}


def _as_uint8(pixels, dtype):
    """The uint8 pixels that float `pixels` in [0, 1] (given as `dtype`) were scaled from (k/255); ValueError if
    they are other. Within `dtype`'s rounding of k/255: float16 holds 1/255 only to 2e-3 of a level."""
    values = pixels.astype(np.float64) * 255.0
    whole = np.round(values)
    if np.max(np.abs(values - whole)) > max(1e-3, 255 * float(np.finfo(dtype).eps)):
        raise ValueError("the MC dropout signatures take uint8 pixels, and these floats are not pixels scaled by "
                         "1/255 (resized or augmented?); pass the uint8 images, or quantize them: "
                         "np.round(images * 255).astype(np.uint8)")
    return whole.astype(np.uint8)


USAGE = "python -m dropzoo.client SAVED_MODEL_OR_RUN IMAGE [IMAGE ...]"


def classify(saved_model, paths):
    """[(path, class name or id, its probability)] of each image file, read at the export's size and channels as
    --image_dir reads images (PIL's bilinear resize of uint8 pixels)."""
    from dropzoo import readers

    model = Client(saved_model)
    height, width, channels = model.image_shape
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"{path} is not a file; give image files (PNG, JPEG, BMP, GIF), e.g. {USAGE}")
    images = readers.read_images(list(paths), (height, width), "rgb" if channels == 3 else "grayscale",
                                 model=readers.EXPORT)
    answer = model.predict(images)
    names = model.class_names or []
    return [(path, names[k] if k < len(names) else str(k), float(answer["probabilities"][i, k]))
            for i, (path, k) in enumerate(zip(paths, answer["class_id"].tolist()))]


def main(argv):
    """Prints `path<TAB>class<TAB>probability` per image; one `error:` line and exit 2 on bad input."""
    from dropzoo import environment
    from dropzoo import errors

    flags.FLAGS.mark_as_parsed()  # no flags of absl's here: its handler prints plain lines, not a note on parsing
    errors.plain_logs()
    if "-h" in argv or "--help" in argv:
        print(f"usage: {USAGE}\nprints each image file's class and its probability, the files read at the export's "
              "size and channels as --image_dir reads images")
        return 0
    if len(argv) < 2 or argv[0].startswith("-"):
        return errors.fail(f"usage: {USAGE} (each image's class, read at the export's size)")
    environment.print_any_file_name()  # a class folder named in Latin-1: printed as train.py and eval.py print it
    with errors.one_line():
        export_dir = export_of(argv[0])
        if not os.path.isdir(export_dir):
            raise ValueError(f"{export_dir} is not a SavedModel directory; give a run's saved_model/ (or the run's "
                             f"directory) first: {USAGE}")
        for path, name, probability in classify(export_dir, argv[1:]):
            print(f"{path}\t{name}\t{probability:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
