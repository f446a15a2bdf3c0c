"""Score an exported SavedModel, or a TFLite model, through its serving signature only.

No Keras objects are involved: what is measured is exactly what a server
(or a phone running the TFLite model) would answer for raw uint8 pixels.
"""
import itertools
import numbers
import os

import numpy as np
import tensorflow as tf

from dropzoo import data as data_lib
from dropzoo import errors
from dropzoo import export
from dropzoo import files
from dropzoo import ood as ood_lib
from dropzoo import serving
from dropzoo import tflite
from dropzoo import uncertainty
from dropzoo.export import check_outputs
from dropzoo.export import check_uint8_input
from dropzoo.export import load_serving_fn
from dropzoo.export import load_signatures
from dropzoo.export import serving_input_spec
from dropzoo.serving import MC_DRAWS_KEY
from dropzoo.serving import MC_DRAWS_XLA_KEY
from dropzoo.serving import MC_DROPOUT_KEY
from dropzoo.serving import PROBABILITIES_KEY
from dropzoo.serving import SIGNATURE_KEY

__all__ = ["check_mc", "evaluate_saved_model", "evaluate_tflite", "evaluate_on_dataset", "write_json"]


def check_mc(mc_samples, mc_seed, batch_size=None):
    """ValueError (one line) unless `mc_samples` is 0 (off) or 2..MAX_PASSES, `mc_seed` in [0, 2**31) used by it,
    and `batch_size` a positive integer (the API's and eval.py's flags alike)."""
    integral = [isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (mc_samples, mc_seed)]
    if not integral[0] or not 0 <= mc_samples <= serving.MAX_PASSES:  # (2**32 + 3 once ran 3 passes, as an int32)
        raise ValueError(f"--mc_samples must be 0 (off) or an integer of 2 or more (at most {serving.MAX_PASSES}, "
                         f"the passes an MC call draws at once), got {mc_samples!r}")
    if mc_samples == 1:  # its spread would read as "no dropout to sample", and its mean is one noisy pass
        raise ValueError("--mc_samples=1 is a single dropout pass: MC dropout averages several and measures their "
                         "spread; give 2 or more (20 is usual), or 0 for none")
    if not integral[1] or not 0 <= mc_seed < 2**31:  # the draws' seeds are taken mod 2**31: 2**31 is seed 0
        raise ValueError(f"--mc_seed must be an integer in [0, 2**31), got {mc_seed!r}")
    if mc_seed and not mc_samples:  # nothing would use it
        raise ValueError(f"--mc_seed={mc_seed} seeds MC dropout, which is off; give --mc_samples=T too (e.g. 20)")
    if batch_size is not None:
        data_lib.check_batch_size(batch_size, "--batch_size")


def evaluate_saved_model(path, batches, *, mc_samples=0, mc_seed=0, ood_batches=None, signatures=None):
    """Scores of the export at `path` over (images, labels) batches.

    Deterministic (`serving_default`): accuracy, loss (NLL), ECE, Brier score
    and a reliability table. With `mc_samples` > 0, the same for the mean of
    that many dropout-on passes (mc_accuracy, mc_nll, mc_ece, mc_brier,
    mc_reliability), drawn reproducibly from `mc_seed`, and `mc_curve`: NLL,
    ECE and Brier of the mean of the first t passes, t = 1..mc_samples. With
    `ood_batches` (images of another dataset; labels ignored), how well
    predictive entropy (deterministic and MC) and mutual information (MC)
    tell those images from the test images: AUROC and FPR at 95% TPR.
    `signatures` (export.load_signatures(path)) saves loading the export again.
    """
    check_mc(mc_samples, mc_seed)
    signatures = load_signatures(path) if signatures is None else signatures
    if SIGNATURE_KEY not in signatures:
        load_serving_fn(path)  # its one-line error
    serving_fn = check_outputs(path, SIGNATURE_KEY, signatures[SIGNATURE_KEY])
    input_name, input_spec = serving_input_spec(serving_fn, f"SavedModel {path}")
    want = tuple(input_spec.shape[1:])
    batches = _check_input_shape(f"SavedModel {path}", want, batches)
    if mc_samples and MC_DROPOUT_KEY not in signatures:
        load_serving_fn(path, MC_DROPOUT_KEY)  # fail early, in one line, on an export without MC dropout
    predict = _Predictor(lambda images: serving_fn(**{input_name: images})[PROBABILITIES_KEY].numpy(),
                         signatures, mc_samples, mc_seed)
    if ood_batches is not None:
        ood_batches = _check_input_shape(f"SavedModel {path}", want, ood_batches, OOD_DATA)
    return _score(path, predict, batches, ood_batches)


def evaluate_tflite(path, batches, *, ood_batches=None):
    """Scores of the TFLite model at `path` (its serving_default) over (images, labels) batches.

    The deterministic scores and OOD detection of `evaluate_saved_model`; a
    TFLite model serves dropout off only, so there is no MC dropout.
    """
    model = tflite.Model.load(path, num_threads=os.cpu_count())  # a whole split: use every core
    what = f"TFLite model {path}"
    check_uint8_input(what, model.input_dtype.name, callers="eval.py")
    batches = _check_input_shape(what, model.input_shape, batches)
    if ood_batches is not None:
        ood_batches = _check_input_shape(what, model.input_shape, ood_batches, OOD_DATA)
    return _score(path, _Predictor(lambda images: model(images.numpy())[PROBABILITIES_KEY]), batches, ood_batches,
                  step=model.probability_step)


def _score(path, predict, batches, ood_batches, step=0.0):
    """Accuracy, NLL, ECE, Brier, reliability (and MC, OOD scores) of `predict` over the batches, whose
    probabilities are quantised in steps of `step` (0: not quantised)."""
    mc_samples = predict.mc_samples
    probabilities, draws, labels = predict(batches, need_labels=True)
    if not len(labels):
        raise ValueError(f"no examples to evaluate {path} on; pass a non-empty dataset")
    serving.check_probabilities(path, probabilities, step)
    deterministic = uncertainty.scores(probabilities, labels)
    metrics = {"accuracy": deterministic["accuracy"], "loss": deterministic["nll"],
               "ece": deterministic["ece"], "brier": deterministic["brier"],
               "num_examples": int(labels.shape[0]),
               "reliability": uncertainty.reliability(probabilities, labels)}
    absent = sorted(set(range(probabilities.shape[-1])) - set(np.unique(labels).tolist()))
    if absent:  # arrays of some classes only (a folder is refused: its names say which classes it lacks)
        metrics["classes_absent"] = [int(k) for k in absent]
    if mc_samples:
        mean = draws.mean(axis=0)
        metrics.update({f"mc_{key}": value for key, value in uncertainty.scores(mean, labels).items()})
        # Exports from before mc_dropout_draws are sampled unseeded: say so.
        metrics.update(mc_samples=int(mc_samples), mc_seed=predict.mc_seed if predict.seeded else None,
                       mc_reliability=uncertainty.reliability(mean, labels),
                       mc_curve=uncertainty.over_samples(draws, labels))
    # Without dropout (or none that moves these probabilities) every sample is the same pass: said, and mutual
    # information, rounding noise then, is left out.
    stochastic = draws is not None and bool(np.any(np.std(draws, axis=0) > NO_SPREAD))  # (NaN rows: no spread)
    if mc_samples and not stochastic:
        metrics["mc_no_spread"] = True
    if ood_batches is not None:
        ood_probabilities, ood_draws, _ = predict(ood_batches, need_labels=False)
        metrics.update(_ood_metrics(probabilities, draws, ood_probabilities, ood_draws, stochastic))
    return metrics


def copied_export_notes(path, result, tflite_model=False):
    """[a note] where the SavedModel (`tflite_model`: the TFLite model) at `path`, scored apart from its run, was
    tested by its run on other data than `result` scored (the export records its run's test split)."""
    recorded = (tflite if tflite_model else export).recorded_test_data(path)
    if recorded is None or recorded["test_sha256"] == result.get("data_sha256"):
        return []
    return [f"evaluated on {result['data_source']}, not the test data the export's run was tested on "
            f"({recorded.get('source')})"]


# OOD scores: name -> function of (deterministic probabilities, MC draws or None).
OOD_SCORES = {
    "entropy": lambda probabilities, draws: uncertainty.predictive_entropy(probabilities),
    "mc_entropy": lambda probabilities, draws: uncertainty.predictive_entropy(draws.mean(axis=0)),
    "mc_mutual_information": lambda probabilities, draws: uncertainty.mutual_information(draws),
}


def _ood_metrics(probabilities, draws, ood_probabilities, ood_draws, stochastic):
    """ood_auroc_<score> and ood_fpr95_<score> for every score the evaluation has (MC mutual information only
    where the test draws vary: `stochastic`)."""
    if not len(ood_probabilities):
        raise ValueError("the out-of-distribution data has no examples; check the --ood_* flag that names it")
    result = {"ood_num_examples": int(len(ood_probabilities))}
    for name, score in OOD_SCORES.items():
        if (name.startswith("mc_") and draws is None) or (name == "mc_mutual_information"
                                                          and not stochastic):
            continue
        in_scores, out_scores = score(probabilities, draws), score(ood_probabilities, ood_draws)
        detection = uncertainty.ood_detection(in_scores, out_scores)
        result[f"ood_auroc_{name}"] = detection["auroc"]
        result[f"ood_fpr95_{name}"] = detection["fpr95"]
        result[f"ood_chance_p_{name}"] = uncertainty.chance_p(in_scores, out_scores)
    return result


def name_absent_classes(result, class_names):
    """Adds the names of the classes absent from the test labels (`classes_absent`) where the model's are known."""
    if result.get("classes_absent") and class_names and len(class_names) > max(result["classes_absent"]):
        result["classes_absent_names"] = [class_names[k] for k in result["classes_absent"]]


def absent_classes_notes(results):
    """A note for each test data whose images lack some of the model's classes (`classes_absent` of evaluations or
    comparison rows): its scores cover the other classes only."""
    found = {}
    for r in (r for r in results if r.get("classes_absent")):
        found.setdefault((r["data_source"], tuple(r.get("classes_absent_names") or r["classes_absent"])), []).append(r)
    notes = []
    for (source, absent), scored in sorted(found.items()):  # (names quoted: a folder '1' is not class id 1)
        shown = ", ".join(map(repr if scored[0].get("classes_absent_names") else str, absent[:8])) + ", ..." * (
            len(absent) > 8)
        runs = f" ({len(scored)} runs)" if len(scored) > 1 else ""
        notes.append(f"{source} has no example of class{'es' * (len(absent) > 1)} {shown} of the model{runs}: its "
                     "scores cover the other classes only (a test split with every class gives the model's)")
    return notes


def summary_line(result):
    """One line of an evaluation's headline scores (eval.py prints the whole result as JSON)."""
    n, m = result["num_examples"], result.get("ood_num_examples")
    line = (f"accuracy {100 * result['accuracy']:.2f}%, NLL {result['loss']:.4f}, ECE {result['ece']:.4f} on "
            f"{result['data_source']} ({result.get('split', 'test')}, {n:,} image{'s' * (n != 1)})")
    if result.get("mc_samples"):
        line += (f"; MC dropout ({result['mc_samples']} passes): accuracy {100 * result['mc_accuracy']:.2f}%, "
                 f"NLL {result['mc_nll']:.4f}")
    best = max((name for name in OOD_SCORES if np.isfinite(result.get(f"ood_auroc_{name}", np.nan))),
               key=lambda name: result[f"ood_auroc_{name}"], default=None)  # (NaN: a model that diverged there)
    if best:
        line += (f"; out-of-distribution ({m:,} image{'s' * (m != 1)}): AUROC "
                 f"{result[f'ood_auroc_{best}']:.3f} by {best.replace('_', ' ')}")
    return line


# Largest per-class std over MC samples still taken for "the samples agree" (float32 rounding).
NO_SPREAD = 1e-6

class _Predictor:
    """Runs an export's signatures over batches: deterministic probabilities and MC draws."""

    def __init__(self, probabilities, signatures=None, mc_samples=0, mc_seed=0):
        """`probabilities`: uint8 images -> NumPy probabilities; `signatures`: the MC ones, if any."""
        signatures = signatures or {}
        self.probabilities = probabilities
        self.mc_samples, self.mc_seed = int(mc_samples), int(mc_seed)
        # The fused masks' draws where the export has them (the same draws, bit for bit, faster);
        # exports from before mc_dropout_draws: one unseeded mc_dropout call per sample.
        self.draws_fn = signatures.get(MC_DRAWS_XLA_KEY) or signatures.get(MC_DRAWS_KEY)
        self.mc_fn = signatures.get(MC_DROPOUT_KEY)
        self.seeded = self.draws_fn is not None
        # Counts across calls: the OOD pass's seeds follow the test pass's, so no OOD image shares its masks
        # with the test image at its position.
        self.calls = 0

    def __call__(self, batches, need_labels):
        probabilities, draws, labels = [], [], []
        for images, batch_labels in batches:
            images = _as_uint8(images)
            probabilities.append(self.probabilities(images))
            if need_labels:
                labels.append(_as_labels(batch_labels, probabilities[-1]))
            if self.mc_samples:
                draws.append(self._draws(images))
        probabilities = np.concatenate(probabilities) if probabilities else np.zeros((0, 0))
        draws = np.concatenate(draws, axis=1) if draws else None
        return probabilities, draws, (np.concatenate(labels) if labels else np.zeros(0, np.int64))

    def _draws(self, images):
        """[samples, batch, classes] probabilities of the dropout-on passes."""
        samples = tf.constant(self.mc_samples, tf.int32)
        if self.draws_fn is None:
            return np.stack([self.mc_fn(image=images, samples=tf.constant(1, tf.int32))
                             [PROBABILITIES_KEY].numpy() for _ in range(self.mc_samples)])
        parts = []
        for start, stop in serving.mc_chunks(int(images.shape[0]), int(images.shape[0]), self.mc_samples):
            # Each call its own seed (else every chunk would get the same masks); the
            # sequence depends only on mc_seed and the batching, so results repeat.
            seed = tf.constant(serving.chunk_seed(self.mc_seed, self.calls), tf.int32)
            self.calls += 1
            parts.append(self.draws_fn(image=images[start:stop], samples=samples, seed=seed)
                         [PROBABILITIES_KEY].numpy())
        return np.concatenate(parts, axis=1)


OOD_DATA = "the out-of-distribution data (--ood_*)"


def _check_input_shape(what, want, batches, data="the data"):
    """Fail before running if the data's (H, W, C) is not `want`, the model's (`what`).

    Returns `batches` ready to iterate (a peeked first batch is put back).
    """
    want = tuple(want)
    have, batches = _data_image_shape(batches)
    if have != want and data == OOD_DATA:  # a tfds name, IDX files or arrays: nothing resizes them
        raise ValueError(f"{what} takes images of shape (H, W, C)={want} but {data} has {have}; give "
                         f"out-of-distribution images of the model's shape {want}, or a folder of images "
                         "(--ood_image_dir=DIR reads them at the model's size and channels)")
    if have != want:
        colour = {1: " --color_mode=grayscale", 3: " --color_mode=rgb"}.get(want[2], "")
        raise ValueError(
            f"{what} takes images of shape (H, W, C)={want} but the data has "
            f"{have}; use a dataset whose images match the export (an image folder: --image_size={want[0]},"
            f"{want[1]}{colour} reads them so), or export a model built for {have}"
        )
    return batches


def _data_image_shape(batches):
    """(H, W, C) of the data: from element_spec if static, else the first batch."""
    if isinstance(batches, tf.data.Dataset):
        spec = _images_part(batches.element_spec)
        shape = tuple(spec.shape[1:]) if spec.shape.rank is not None else None
        if shape is not None and None not in shape:
            return shape, batches
    iterator = iter(batches)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError("no batches to evaluate on; pass a non-empty dataset") from None
    images = _images_part(first)
    return tuple(np.shape(images)[1:]), itertools.chain([first], iterator)


def _images_part(element):
    if not isinstance(element, (tuple, list)) or len(element) != 2:
        raise ValueError(f"each batch must be an (images, labels) pair, got {type(element).__name__}")
    return element[0]


def _as_uint8(images):
    images = tf.convert_to_tensor(images)
    # Scaling happens inside the export; pre-scaled floats would be scaled twice.
    if images.dtype != tf.uint8:
        raise ValueError(f"images must be raw uint8 pixels (the export scales them), got {images.dtype.name}")
    return images


def _as_labels(labels, probabilities):
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    batch, num_classes = probabilities.shape
    if labels.shape[0] != batch:
        raise ValueError(f"got {labels.shape[0]} labels for {batch} images in one batch")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be class ids in [0, {num_classes}), got {labels.min()}..{labels.max()}: the model "
            f"answers {num_classes} classes; evaluate it on data with its classes (a run, or a comparison of runs, "
            "given no data flags is scored on the test data it recorded)")
    return labels


def evaluate_on_dataset(path, *, data=None, batch_size=256, mc_samples=0, mc_seed=0, ood=None,
                        tflite_model=False, run_class_names=None, trained_on=None):
    """Evaluates the export at `path` on a data source's test split; returns the result dict.

    `data` is sources.load_source arguments ({"dataset": ...}, {"idx_dir": ...},
    {"npz": ...}, ...; default: a run's own export (RUN/saved_model, RUN/model.tflite)
    is scored on the test data its run recorded, as eval.py does; another export on
    MNIST, unless it records that its run tested on other data, which is refused:
    `check_copied_export_data`); `ood` (ood.arguments: a tfds name, IDX
    files, arrays or a folder of images, read at the model's size) adds
    out-of-distribution detection against that source's test split. With
    `tflite_model`, `path` is a .tflite file (model.tflite, model_int8.tflite).
    `run_class_names`: the class folders the run trained on, if it recorded
    them (else the SavedModel's own record of them); an image folder of other
    classes, or scored by a model that records none, is refused
    (folders.check_classes). `trained_on`: the run's training data (load_source
    arguments), whose images are left out of the OOD data, as the test images are
    (an export out of its run: the scored data's own training split, in-distribution
    by definition).
    """
    from dropzoo import client
    from dropzoo import folders
    from dropzoo import sources

    check_mc(mc_samples, mc_seed, batch_size)
    ood = ood_lib.checked(ood)
    path = client.export_of(path) if not tflite_model and client.is_run_directory(path) else path  # as the client
    if tflite_model and mc_samples:
        raise ValueError("a TFLite model serves dropout off only: MC dropout (--mc_samples) needs "
                         "the SavedModel's signatures; pass --saved_model for it")
    # Fail on a broken model before loading any data.
    if tflite_model:
        tflite.check_recorded(path)  # a run's TFLite model, against its record
        model = tflite.Model.load(path)
        classes, image_shape = model.num_classes, model.input_shape
    else:
        serving_fn = load_serving_fn(path)
        classes = serving_fn.structured_outputs[PROBABILITIES_KEY].shape[-1]
        image_shape = serving_input_spec(serving_fn, f"SavedModel {path}")[1].shape[1:]
    if isinstance(data, dict) and data.get("image_dir") and not data.get("color_mode") and image_shape[-1] == 3:
        data = {**data, "color_mode": "rgb"}  # (a folder named for a colour export out of its run, unsaid: was gray)
    run, own = run_holding(path), data is None  # (OOD training images are named after the data scored where own)
    if run and (data is None or trained_on is None):  # a run's own export: its data, as eval.py reads them
        from dropzoo import workdir as workdirs

        metrics = files.read_json(os.path.join(run, "metrics.json"), "delete it and rerun that run's train.py "
                                  "command", {"data": {"origin": dict}})
        trained_on = trained_on or metrics["data"]["origin"]  # its training images are left out of OOD data
        if data is None:  # its own test data
            data = workdirs.test_origin(metrics)
            if run_class_names is None:
                run_class_names = (metrics["data"].get("details") or {}).get("class_names") or ()
    elif data is None:
        check_copied_export_data(path, tflite_model)
    try:
        source = sources.load_source(**sources.as_arguments(data), need_train=False)
    except errors.UnknownDataError:  # a run's own in-memory arrays record their name alone (sources.array_source's)
        if not (run and own and set(data) == {"dataset"}):
            raise
        raise errors.DataError(f"{path}: its run tested on in-memory arrays named {data['dataset']!r}, not kept "
                               "with a run; save them (np.savez) and pass data={'npz': PATH}, or other data") from None
    if run_class_names is None:  # an export copied out of its run says them itself
        run_class_names = (tflite if tflite_model else export).class_names(path)
    source = folders.check_classes(source, classes, run_class_names, path)  # its labels as the model's class ids
    ood_source = ood_lib.load(ood_lib.for_model(ood, image_shape)) if ood else None  # a folder: the model's size
    data_sha256 = sources.fingerprint(source)
    ood_sha256 = ood_source and sources.fingerprint(ood_source)
    uncertainty.check_ood_is_other(data_sha256, ood_sha256, source.name)
    # An export copied out of its run: the scored data's own training split is in-distribution by definition.
    training, whose = (ood_lib.scored_training(source.origin), None) if run is None and trained_on is None else (
        trained_on, None if own else "the model")
    ood_test, ood_fields = ood_lib.apart(source, ood_source, source.name, training, trained=whose) if ood_source \
        else (None, {})
    batches = data_lib.raw_batches(source.test, batch_size)
    ood_batches = data_lib.raw_batches(ood_test, batch_size) if ood_source else None
    if tflite_model:
        result = evaluate_tflite(path, batches, ood_batches=ood_batches)
    else:
        result = evaluate_saved_model(path, batches, mc_samples=mc_samples, mc_seed=mc_seed,
                                      ood_batches=ood_batches)
    result.update({"tflite" if tflite_model else "saved_model": os.path.abspath(path),
                   "data_source": source.name, "data_origin": source.origin, "split": "test",
                   "data_sha256": data_sha256})
    if source.details.get("test_split"):  # a folder split for testing: which files (folders.split_changed)
        result["data_details"] = {"test_split": source.details["test_split"]}
    if mc_samples:  # the masks are drawn per batch: the seed repeats them at this batch size only
        result["mc_batch_size"] = batch_size
    if ood_source is not None:
        result.update(ood_sha256=ood_sha256, **ood_fields)
    name_absent_classes(result, run_class_names)
    return result


def run_holding(path):
    """The run directory whose export `path` is (RUN/saved_model, RUN/model.tflite, ...), or None."""
    run = os.path.dirname(os.path.normpath(os.path.abspath(path)))
    return run if os.path.isfile(os.path.join(run, "metrics.json")) else None


def check_copied_export_data(path, tflite_model):
    """DataError where an export copied out of its run, given no data, records that its run was tested on other
    data than the default (MNIST): the default's error, or score, would be about data never asked for."""
    from dropzoo.errors import DataError

    recorded = (tflite if tflite_model else export).recorded_test_data(path)
    source = str((recorded or {}).get("source", ""))
    if source and source not in ("mnist_sample", "tfds:mnist"):
        raise DataError(f"{path} was copied out of its run, which was tested on {source}; name the data to "
                        "score it on (--image_dir and --test_image_dir, --npz, --idx_dir or --dataset)")


def write_json(path, result):
    """Writes `result` to `path` atomically, creating its directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return files.write_json(path, result)
