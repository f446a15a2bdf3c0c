"""What data is, by content, wherever it was read from.

(A test split's fingerprint, which evaluation records are keyed by, is
`sources.fingerprint`.)

- `content_id`: what a run trains on (its train split and subset), so a run
  resumed on other data is refused (callbacks.py).
- `check_held_out`: test images that are training images, byte for byte (and training images under two labels).
- `ood_apart`: out-of-distribution data without the test images it holds.
"""
import hashlib
import json

import numpy as np
from absl import logging

from dropzoo.errors import DataError


def arrays_sha256(arrays):
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_held_out(name, train, x_test, details):
    """DataError where every test image is a training image (byte for byte); a warning, recorded in
    `details["test_in_train"]`, where some are: a copy of the training folder given as the test folder, or one
    image under two names landing in both splits, scores what the model has seen as if it had not. A warning,
    recorded in `details["images_under_two_labels"]`, where one training image has two labels (a class folder
    linked to another, a copy filed under two classes): it is trained toward both."""
    x_train, y_train = train
    labels = {}
    for image, label in zip(x_train, y_train):
        labels.setdefault(_digest(image), set()).add(int(label))
    twice = sum(len(found) > 1 for found in labels.values())
    if twice:
        details["images_under_two_labels"] = twice
        logging.warning("%s: %d of its training images %s under two or more labels (byte for byte: a class folder "
                        "linked to another, or one image filed under two classes); each is trained toward every label "
                        "it has", name, twice, "is" if twice == 1 else "are")
    seen = set(labels)
    shared = sum(_digest(image) in seen for image in x_test)
    if shared and shared == len(x_test):
        raise DataError(f"{name}: every one of its {shared:,} test images is also a training image (byte for byte), "
                        "so the test accuracy would be the training accuracy; give test images the run does not "
                        "train on")
    if shared:
        details["test_in_train"] = shared
        logging.warning("%s: %d of its %d test images %s also training images (byte for byte: duplicates); the test "
                        "scores count them as unseen. Remove the duplicates to hold them out", name, shared,
                        len(x_test), "is" if shared == 1 else "are")


def content_id(source):
    """What a run trains on: its train split's digest (sources.Source.train_sha256) and the subset it took; None
    where unknown. Its test split is named apart (sources.fingerprint): a resume may test on other images."""
    if not source.train_sha256:
        return None
    return hashlib.sha256((source.train_sha256 + json.dumps(source.subset_record, sort_keys=True)).encode()
                          ).hexdigest()


def _digest(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()


def digests(images):
    """The set of per-image digests of an iterable of images (byte for byte: equal digests, equal images)."""
    return {_digest(image) for image in images}


# Which out-of-distribution images are not test images, by the pair's fingerprints: a comparison asks once.
_OOD_KEPT = {}


def ood_apart(test_images, ood_source, what, key=None):
    """`ood_source`'s test split without the images that are, byte for byte, test images (`test_images`, an
    iterable of arrays; `what` names whose: a run, or its data's name); (that dataset, how many were left out).

    A test image scored as out-of-distribution pulls the AUROC towards 0.5 without a word: left out, with a
    warning; OOD data that is all test images (the test data itself, or a copy less some) is refused.
    `key` (the two fingerprints) keeps the answer for the next run that asks.
    """
    import tensorflow as tf  # the OOD data is a tf.data split

    kept = _OOD_KEPT.get(key)
    if kept is None:
        test = {_digest(image) for image in test_images}
        kept = [_digest(image) not in test for images, _ in ood_source.test.batch(1024).as_numpy_iterator()
                for image in images]
        if key is not None:
            _OOD_KEPT[key] = kept
    shared = len(kept) - sum(kept)
    if shared and shared == len(kept):
        raise DataError(f"the out-of-distribution data is the test data of {what}, or a copy of some of it: all "
                        f"{shared:,} of its images are test images (byte for byte); give images of something else "
                        "(e.g. Fashion-MNIST for an MNIST model)")
    if not shared:
        return ood_source.test, 0
    logging.warning("%d of the %d out-of-distribution images %s of %s (byte for byte): left out of the OOD scores",
                    shared, len(kept), "is a test image" if shared == 1 else "are test images", what)
    mask = tf.constant(kept)
    return (ood_source.test.enumerate().filter(lambda i, example: tf.gather(mask, i))
            .map(lambda i, example: example)), shared
