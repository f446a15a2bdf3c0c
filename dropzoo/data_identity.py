"""What data is, by content, wherever it was read from.

(A test split's fingerprint, which evaluation records are keyed by, is
`sources.fingerprint`.)

- `content_id`: what a run trains on (its train split and subset), so a run
  resumed on other data is refused (callbacks.py).
- `check_held_out`: test images that are training images, byte for byte (and training images under two labels).
- `ood_apart`: out-of-distribution data without the test and training images it holds.
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
        logging.warning("%s: %d of its %d test images %s (byte for byte: duplicates); the test scores count them "
                        "as unseen. Remove the duplicates to hold them out", name, shared, len(x_test),
                        "is also a training image" if shared == 1 else "are also training images")


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


def ood_apart(test_images, ood_source, what, key=None, train=None, trained=None):
    """`ood_source`'s test split without the images that are, byte for byte, test images (`test_images`, an
    iterable of arrays; `what` names whose: a run, or its data's name) or training-split images (`train`: their
    `digests`, where known; `trained` names whose, `what` by default); (that dataset, how many test images, how
    many training images were left out).

    A test image scored as out-of-distribution pulls the AUROC towards 0.5 without a word, and so does an image the
    run trained on (its own training folder given as OOD data scored AUROC 0.61): left out, with a warning; OOD data
    made only of test or training images is refused. `key` (the fingerprints) keeps the answer for the
    next run that asks.
    """
    import tensorflow as tf  # the OOD data is a tf.data split

    kept = _OOD_KEPT.get(key)
    if kept is None:
        test, train = {_digest(image) for image in test_images}, train or set()
        # Per image: 0 kept, 1 a test image, 2 a training image.
        kept = [1 if d in test else 2 if d in train else 0 for images, _ in ood_source.test.batch(1024)
                .as_numpy_iterator() for d in map(_digest, images)]
        if key is not None:
            _OOD_KEPT[key] = kept
    in_test, in_train, trained = kept.count(1), kept.count(2), trained or what
    if in_test and in_test == len(kept):
        raise DataError(f"the out-of-distribution data is the test data of {what}, or a copy of some of it: all "
                        f"{in_test:,} of its images are test images (byte for byte); give images of something else "
                        "(e.g. Fashion-MNIST for an MNIST model)")
    if in_train and in_test + in_train == len(kept):
        found = (f"the training data of {trained}, or a copy of some of it: all {in_train:,} of its images are "
                 "training-split images" if not in_test else f"made of test and training images: all {len(kept):,} "
                 f"of its images are test images of {what} ({in_test:,}) or training-split images of {trained} "
                 f"({in_train:,})")
        raise DataError(f"the out-of-distribution data is {found} (byte for byte); give images of something else, "
                        "in neither the test nor the training split of the model's data")
    for shared, which, whose in ((in_test, "test", what), (in_train, "training-split", trained)):  # (validation
        if shared:  # images are in the training split)
            logging.warning("%d of the %d out-of-distribution images %s of %s (byte for byte): left out of the OOD "
                            "scores", shared, len(kept), f"is a {which} image" if shared == 1 else f"are {which} "
                            "images", whose)
    if not in_test + in_train:
        return ood_source.test, 0, 0
    mask = tf.constant([k == 0 for k in kept])
    return (ood_source.test.enumerate().filter(lambda i, example: tf.gather(mask, i))
            .map(lambda i, example: example)), in_test, in_train
