"""Score an exported SavedModel through its serving signature only.

No Keras objects are involved: what is measured is exactly what a server
running the export would answer for raw uint8 pixels.
"""
import itertools
import os

import numpy as np
import tensorflow as tf

from dropzoo import files
from dropzoo import stats
from dropzoo.export import MC_DROPOUT_KEY, PROBABILITIES_KEY
from dropzoo.export import load_serving_fn, serving_input_spec

__all__ = ["evaluate_saved_model", "evaluate_on_dataset", "write_json"]

def evaluate_saved_model(path, batches, *, mc_samples=0):
    """Accuracy, loss and ECE of the export at `path` over (images, labels) batches.

    With `mc_samples` > 0 it also scores the `mc_dropout` signature (that many
    dropout-on passes averaged): mc_accuracy, mc_nll and mc_ece.
    """
    serving_fn = load_serving_fn(path)
    input_name, input_spec = serving_input_spec(serving_fn)
    batches = _check_input_shape(path, input_spec, batches)
    mc_fn = load_serving_fn(path, MC_DROPOUT_KEY) if mc_samples else None
    probabilities, mc_probabilities, labels = [], [], []
    for images, batch_labels in batches:
        images = _as_uint8(images)
        result = serving_fn(**{input_name: images})
        probabilities.append(result[PROBABILITIES_KEY].numpy())
        labels.append(_as_labels(batch_labels, probabilities[-1]))
        if mc_fn is not None:
            mc_probabilities.append(_mc_probabilities(mc_fn, images, mc_samples))
    if not labels:
        raise ValueError(f"no examples to evaluate {path} on; pass a non-empty dataset")
    labels = np.concatenate(labels)
    metrics = _scores(np.concatenate(probabilities), labels)
    metrics["num_examples"] = int(labels.shape[0])
    if mc_fn is not None:
        mc = _scores(np.concatenate(mc_probabilities), labels)
        metrics.update(mc_accuracy=mc["accuracy"], mc_nll=mc["loss"], mc_ece=mc["ece"],
                       mc_samples=int(mc_samples))
    return metrics


def _scores(probabilities, labels):
    """Accuracy (argmax, as class_id), mean cross-entropy and ECE."""
    return {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "loss": stats.negative_log_likelihood(probabilities, labels),
        "ece": stats.expected_calibration_error(probabilities, labels),
    }


# Examples x samples per mc_dropout call: bounds the tiled batch's memory.
MC_CHUNK = 4096


def _mc_probabilities(mc_fn, images, samples):
    chunk = max(1, MC_CHUNK // samples)
    parts = [mc_fn(image=images[i:i + chunk], samples=tf.constant(samples, tf.int32))
             [PROBABILITIES_KEY].numpy() for i in range(0, int(images.shape[0]), chunk)]
    return np.concatenate(parts)


def _check_input_shape(path, input_spec, batches):
    """Fail before running if the data's (H, W, C) is not the export's.

    Returns `batches` ready to iterate (a peeked first batch is put back).
    """
    want = tuple(input_spec.shape[1:])
    have, batches = _data_image_shape(batches)
    if have != want:
        raise ValueError(
            f"SavedModel {path} takes images of shape (H, W, C)={want} but the data has "
            f"{have}; use a dataset whose images match the export (or export a model "
            f"built for {have})"
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
        raise ValueError(
            f"each batch must be an (images, labels) pair, got {type(element).__name__}"
        )
    return element[0]


def _as_uint8(images):
    images = tf.convert_to_tensor(images)
    # Scaling happens inside the export; pre-scaled floats would be scaled twice.
    if images.dtype != tf.uint8:
        raise ValueError(
            f"images must be raw uint8 pixels (the export scales them), got {images.dtype.name}"
        )
    return images


def _as_labels(labels, probabilities):
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    batch, num_classes = probabilities.shape
    if labels.shape[0] != batch:
        raise ValueError(f"got {labels.shape[0]} labels for {batch} images in one batch")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be class ids in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )
    return labels


def evaluate_on_dataset(path, *, dataset="mnist", idx_dir=None, tfds_data_dir=None, batch_size=256,
                        mc_samples=0):
    """Evaluates the export at `path` on a dataset's test split; returns the result dict."""
    from dropzoo import data as data_lib  # only this entry point needs the data stack

    load_serving_fn(path)  # fail on a broken export before loading any data
    source = data_lib.load_source(dataset, idx_dir=idx_dir, tfds_data_dir=tfds_data_dir,
                                  need_train=False)
    result = evaluate_saved_model(path, data_lib.raw_batches(source.test, batch_size),
                                  mc_samples=mc_samples)
    result.update(saved_model=os.path.abspath(path), data_source=source.name, split="test")
    return result


def write_json(path, result):
    """Writes `result` to `path` atomically, creating its directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return files.write_json(path, result)
