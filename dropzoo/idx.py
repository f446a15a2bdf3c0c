"""The IDX format: the original MNIST / Fashion-MNIST `.gz` files, each problem one line naming the file and the fix.

`read_idx(images, labels)` returns uint8 images [N, H, W, 1] and int64 labels [N].
"""
import gzip
import hashlib
import math
import os
import zlib

import numpy as np
from absl import logging

from dropzoo.errors import DataError

IDX_TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
IDX_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IDX_LABEL_NAMES = (IDX_TRAIN_FILES[1], IDX_TEST_FILES[1])
# The sha256 of each IDX dataset's t10k labels, unpacked (a re-compressed copy, as Debian ships Fashion-MNIST, is the
# same content): a --dataset named beside --idx_dir names those files, and is checked against them (check_named).
TEST_LABELS_SHA256 = {
    "mnist": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "fashion_mnist": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# sources.fingerprint of each such dataset's 10,000 test images (IDX files or tfds, the same content): an evaluation
# a run's record holds is known to be of that dataset by it (records.py, where the dataset is not here).
TEST_FINGERPRINTS = {
    "mnist": "6af081a225966b457b62d881bd728a921fee9b59f54765277536df657d20702a",
    "fashion_mnist": "68993702c4bd643b9d01be480af277a321fd6464a4c4df8f3ae260bbe27a9a7c",
}
# Each known dataset's other files, to find an --idx_dir holding files of two datasets (check_one_dataset): the sha256
# of the unpacked t10k images and train labels, and, where the train labels' digest is not kept here (MNIST's), their
# class counts, which no other 60,000-label set shares.
TEST_IMAGES_SHA256 = {
    "mnist": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "fashion_mnist": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
}
TRAIN_LABELS_SHA256 = {"fashion_mnist": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"}
TRAIN_LABEL_COUNTS = {"mnist": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, H, W)
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (N)


def read_idx(images_path, labels_path):
    """Reads one IDX gzip image file and its label file: uint8 [N, H, W, 1], int64 [N]."""
    images = _read_idx_file(images_path, _IDX_IMAGES_MAGIC, ndim=3)
    labels = _read_idx_file(labels_path, _IDX_LABELS_MAGIC, ndim=1)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; use the image and label files of the same split")
    if not len(images) or 0 in images.shape[1:]:
        raise DataError(f"{images_path} holds {len(images)} images of {'x'.join(map(str, images.shape[1:]))} pixels; "
                        "give IDX files that hold the split's images")
    return images[..., np.newaxis], labels.astype(np.int64)


def check_named(dataset, idx_dir):
    """DataError where `dataset` (a --dataset beside --idx_dir, which it names) is not the data of the IDX files in
    `idx_dir`: the run would be recorded, and shown, as data it did not read. Files not there are left to the loader."""
    path = os.path.join(idx_dir, IDX_TEST_FILES[1])
    if dataset == "mnist_sample":  # the embedded sample: no IDX files are it
        raise DataError(f"--dataset=mnist_sample is the embedded sample, not IDX files; drop --dataset to read "
                        f"{idx_dir}'s files, or name their dataset (mnist, fashion_mnist, ...)")
    if os.path.isfile(path) and os.path.isfile(os.path.join(idx_dir, IDX_TEST_FILES[0])):  # two datasets' files:
        check_one_dataset(idx_dir, os.path.isfile(os.path.join(idx_dir, IDX_TRAIN_FILES[1])))  # said as such first
    digest = hashlib.sha256(_gunzip(path)).hexdigest() if os.path.isfile(path) else None
    found = next((name for name, sha in TEST_LABELS_SHA256.items() if sha == digest), None)
    if found is None and dataset not in TEST_LABELS_SHA256:  # (kmnist's files, ...: labels not known here)
        if digest is not None and (dataset, idx_dir) not in _WARNED:
            _WARNED.add((dataset, idx_dir))
            logging.warning("--idx_dir %s is recorded as %s's files, unchecked: only %s's are known here", idx_dir,
                            dataset, " and ".join(TEST_LABELS_SHA256))
        return
    if digest is not None and found != dataset:
        what, fix = ((f"{found}'s files", f"give --dataset={found}, or drop --dataset") if found else
                     ("other IDX files", f"drop --dataset, or point --idx_dir at {dataset}'s files"))
        raise DataError(f"--idx_dir {idx_dir} holds {what}, not {dataset}'s (by its {IDX_TEST_FILES[1]}); {fix}")


def check_one_dataset(idx_dir, need_train):
    """DataError where the IDX files in `idx_dir` are of two known datasets (MNIST's t10k files beside Fashion-MNIST's
    train files, ...): read together they train on one dataset and test on another without a word. Each file is
    known by its content where this module keeps it (train images are not); files of no known dataset pass."""
    files = {IDX_TEST_FILES[0]: TEST_IMAGES_SHA256, IDX_TEST_FILES[1]: TEST_LABELS_SHA256}
    if need_train:
        files[IDX_TRAIN_FILES[1]] = TRAIN_LABELS_SHA256
    known = {}
    for name, digests in files.items():
        raw = _gunzip(os.path.join(idx_dir, name))
        digest = hashlib.sha256(raw).hexdigest()
        found = next((dataset for dataset, sha in digests.items() if sha == digest), None)
        if found is None and name == IDX_TRAIN_FILES[1] and len(raw) > 8:
            counts = tuple(int(n) for n in np.bincount(np.frombuffer(raw, np.uint8, offset=8)))
            found = next((dataset for dataset, known_counts in TRAIN_LABEL_COUNTS.items() if known_counts == counts),
                         None)
        if found:
            known[name] = found
    if len(set(known.values())) > 1:
        said = ", ".join(f"{name} is {dataset}'s" for name, dataset in known.items())
        raise DataError(f"--idx_dir {idx_dir} mixes the files of two datasets ({said}); put one dataset's "
                        f"{' and '.join(files if not need_train else IDX_TRAIN_FILES + IDX_TEST_FILES)} in it")


_WARNED = set()  # (dataset, idx_dir) said unchecked once (the flags and the config each check it)


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
            f"{' x '.join(map(str, dims))}{f' = {math.prod(dims)}' if len(dims) > 1 else ''}; the file is "
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
