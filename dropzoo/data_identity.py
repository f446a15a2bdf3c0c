"""What data is, by content, wherever it was read from.

(A test split's fingerprint, which evaluation records are keyed by, is
`sources.fingerprint`.)

- `content_id`: everything an in-memory source holds and the train subset a
  run took, so a run resumed on other data is refused (callbacks.py).
- `check_held_out`: test images that are training images, byte for byte.
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


def check_held_out(name, x_train, x_test, details):
    """DataError where every test image is a training image (byte for byte); a warning, recorded in
    `details["test_in_train"]`, where some are: a copy of the training folder given as the test folder, or one
    image under two names landing in both splits, scores what the model has seen as if it had not."""
    seen = {hashlib.sha1(image.tobytes()).digest() for image in np.ascontiguousarray(x_train)}
    shared = sum(hashlib.sha1(image.tobytes()).digest() in seen for image in np.ascontiguousarray(x_test))
    if shared and shared == len(x_test):
        raise DataError(f"{name}: every one of its {shared:,} test images is also a training image (byte for byte), "
                        "so the test accuracy would be the training accuracy; give test images the run does not "
                        "train on")
    if shared:
        details["test_in_train"] = shared
        logging.warning("%s: %d of its %d test images are also training images (byte for byte: copies under other "
                        "names?); the test scores count them as unseen. Remove the copies to hold them out",
                        name, shared, len(x_test))


def content_id(source):
    """What a run trains and tests on, by content (its arrays and train subset), or None where unknown (tfds)."""
    if not source.content_sha256:
        return None
    return hashlib.sha256((source.content_sha256 + json.dumps(source.subset_record, sort_keys=True)).encode()
                          ).hexdigest()
