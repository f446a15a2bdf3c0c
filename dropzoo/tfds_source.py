"""The tensorflow-datasets source: an image classification dataset by name (`--dataset=NAME`).

`load(name, data_dir, need_train, network_timeout)` returns the fields of a
`sources.Source`. When the data is not prepared and the network cannot be
reached, it raises `Unreachable` within seconds instead of retrying
downloads for minutes (dropzoo/sources.py then falls back to the embedded
MNIST sample for plain `mnist`, with one warning line).
"""
import hashlib
import os
import socket
import threading

import numpy as np
import tensorflow_datasets as tfds

from dropzoo.errors import DataError
from dropzoo.errors import UnknownDataError

# tfds downloads MNIST from this host.
_PROBE_ADDRESS = ("storage.googleapis.com", 443)

VALID_NAMES_HINT = (
    "use mnist_sample, or a tensorflow-datasets image classification name "
    "such as mnist, fashion_mnist, kmnist, cifar10; for files on disk pass "
    "--idx_dir (IDX .gz), --npz (arrays) or --image_dir (a folder of images)"
)


class Unreachable(DataError):
    """The dataset is not prepared and the network that would download it is down."""


def load(name, data_dir, need_train, network_timeout):
    """{name, train, test, num_train, num_test, num_classes, image_shape, origin} of tfds dataset `name`."""
    builder = check_reachable(name, data_dir, network_timeout)
    image_key, label_key = _image_label_keys(builder, name)
    if not _is_prepared(builder):
        builder.download_and_prepare()
    _check_splits(builder, name, need_train)
    train, num_train = _tfds_split(builder, "train") if need_train else (None, 0)
    test, num_test = _tfds_split(builder, "test")
    features = builder.info.features
    # Its classes' names where it has them (cifar10: airplane, ...), for the export and its clients; tfds names
    # unnamed classes by their numbers (mnist: '0'...'9'), which is what no names mean.
    names = [str(n) for n in features[label_key].names]
    numbered = names == [str(k) for k in range(len(names))]
    return dict(
        name=f"tfds:{name}",
        train=train,
        test=test,
        num_train=num_train,
        num_test=num_test,
        num_classes=int(features[label_key].num_classes),
        image_shape=tuple(int(d) for d in features[image_key].shape),
        origin={"dataset": name, "tfds_data_dir": os.path.abspath(data_dir) if data_dir else data_dir},
        details={} if numbered else {"class_names": names},
        # Versioned data, read as streams: named by version and size, not hashed (a resume's check, callbacks.py).
        train_sha256=hashlib.sha256(f"tfds:{name}:{builder.info.version}:{num_train}".encode()).hexdigest()
        if need_train else "",
    )


def describe(name, data_dir):
    """(image shape, number of classes, where it is prepared or None) of tfds dataset `name`.

    From its builder's description alone: nothing is downloaded or prepared
    (what `train.py --dry_run` checks a network against).
    """
    builder = _tfds_builder(name, data_dir)
    image_key, label_key = _image_label_keys(builder, name)
    features = builder.info.features
    return (tuple(int(d) for d in features[image_key].shape), int(features[label_key].num_classes),
            str(builder.data_path) if _is_prepared(builder) else None)


def check_reachable(name, data_dir, network_timeout):
    """The builder of tfds image dataset `name`; Unreachable where it is not prepared and the network is down."""
    builder = _tfds_builder(name, data_dir)
    _image_label_keys(builder, name)  # (text data: refused as such, before any probe)
    if not _is_prepared(builder) and not _network_reachable(network_timeout):
        host = f"{_PROBE_ADDRESS[0]}:{_PROBE_ADDRESS[1]}"
        raise Unreachable(f"tfds dataset {name!r} is not prepared in {builder.data_dir_root} and the network "
                          f"is unreachable (no connection to {host} within {network_timeout:g}s)")
    return builder


def check_loadable(name, data_dir, network_timeout):
    """DataError where training on `name` would stop: not prepared, the network down, and no fallback."""
    try:
        check_reachable(name, data_dir, network_timeout)
    except Unreachable as e:
        if not falls_back(name, data_dir):
            raise unreachable_error(e, name, data_dir) from None


# The tfds datasets whose original files are IDX (train-*, t10k-*.gz), which --idx_dir reads.
IDX_DATASETS = ("mnist", "fashion_mnist", "kmnist")


def falls_back(name, data_dir, need_train=True):
    """Whether training on `name` not prepared here, offline, takes the embedded MNIST sample: mnist, where no
    --tfds_data_dir names a directory for the full data (a typo?)."""
    return name == "mnist" and need_train and not data_dir


def unreachable_error(error, name, data_dir, need_train=True):
    """The DataError for Unreachable `error`: the fix for `name` (training on mnist from a --tfds_data_dir given: it,
    or none for the sample; evaluating never takes the sample)."""
    if name == "mnist" and data_dir and need_train:
        return DataError(f"{error}; pass the --tfds_data_dir where {name} is prepared, or leave --tfds_data_dir out "
                         "to train on the embedded 5,000-example MNIST sample")
    idx = ("--idx_dir" + ("" if need_train else " (the t10k-*.gz files are enough to evaluate)") + ", "
           if name.split(":")[0] in IDX_DATASETS else "")  # (fashion_mnist:3.0.1 too)
    return DataError(f"{error}; pass --tfds_data_dir pointing at a directory where {name} is already prepared, or "
                     f"its files with {idx}--npz or --image_dir")


def prepared_sizes(name, data_dir):
    """(train, test) examples of tfds dataset `name` where it is prepared (its recorded splits), else None."""
    builder = _tfds_builder(name, data_dir)
    if not _is_prepared(builder):
        return None
    _check_splits(builder, name, need_train=True)  # prepared without a test split: refused now, as training will
    splits = builder.info.splits
    if "train" not in splits or "test" not in splits:  # not recorded (mocked data)
        return None
    return int(splits["train"].num_examples), int(splits["test"].num_examples)


def _tfds_builder(name, data_dir):
    path_hint = _path_hint(name)
    if path_hint:
        raise UnknownDataError(path_hint)
    if name != name.lower() and _registered(name.lower()):  # tfds takes either; a run records the name as given
        raise UnknownDataError(f"dataset {name!r}: tfds names are lower case; pass --dataset={name.lower()} (runs "
                               "of one dataset spelt two ways would be two variants)")
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UnknownDataError(f"unknown dataset {name!r}: {VALID_NAMES_HINT}") from None
    except (ValueError, TypeError) as e:  # tfds' parser: "Parsing builder name string ... failed"
        raise UnknownDataError(f"{name!r} is not a dataset name ({' '.join(str(e).split())[:150]}): "
                        f"{VALID_NAMES_HINT}") from None


def _path_hint(name):
    """The flag that takes `name` if it is a path on disk (a dataset name is not); '' otherwise. A registered tfds
    dataset's name is a name, with its config (`emnist/byclass`) and whatever folder of that name lies here."""
    if not (os.sep in name or os.path.exists(name) or name.endswith(".npz")) or _registered(name):
        return ""
    configs = _configs(name.partition("/")[0])
    if configs is not None and not os.path.exists(name):  # emnist/nonesuch: a dataset, not a path
        return (f"tfds dataset {name.partition('/')[0]!r} has no config {name.partition('/')[2]!r}; "
                + (f"its configs: {', '.join(configs)}" if configs else "it has none: give its name alone"))
    if os.path.isdir(name):
        if any(f.endswith("idx3-ubyte.gz") for f in os.listdir(name)):
            flag = f"--idx_dir={name}"
        else:
            flag = f"--image_dir={name} (a folder with one subfolder of images per class)"
    elif name.endswith(".npz"):
        flag = f"--npz={name}"
    else:
        return (f"--dataset takes a dataset name, and {name!r} looks like a path; for files on disk pass "
                "--npz=FILE.npz, --image_dir=DIR or --idx_dir=DIR")
    return f"--dataset takes a dataset name, not a path: for {name} pass {flag}"


def _registered(name):
    """Whether `name` (`dataset`, `dataset/config`, `dataset:version`) names a dataset tfds has a builder for,
    and a config it has (`cifar10/train`, `mnist/` are paths)."""
    base, slash, config = name.partition("/")
    configs = _configs(base)
    return configs is not None and (not slash or config.split(":")[0] in configs)


def _configs(base):
    """The config names of the tfds dataset `base` (`name` or `name:version`), or None where tfds has none such."""
    try:
        builder = tfds.builder_cls(base.split(":")[0])
    except (tfds.core.registered.DatasetNotFoundError, ValueError, TypeError):
        return None
    return [c.name for c in builder.BUILDER_CONFIGS or []]


def _image_label_keys(builder, name):
    """(image, label) feature keys; DataError unless fixed-size images, class labels."""
    not_images = (f"tfds dataset {name!r} is not an image classification dataset; "
                  f"{VALID_NAMES_HINT}")
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


