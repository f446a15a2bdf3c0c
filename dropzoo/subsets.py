"""--train_size: a fixed, class-stratified subset of a source's train split, the same for every run.

A study of the amount of data trains every seed and variant on one subset per size; a run records what was
kept (`Source.subset_record`), so its comparison can tell runs of one size from another's.
"""
import dataclasses
import hashlib
import numbers

import numpy as np
import tensorflow as tf

from dropzoo.errors import DataError

# Fixed, and independent of any run seed: every seed and variant trains on the same subset.
_SUBSET_SEED = 20261202


def subset(source, size):
    """`source` with its train split cut to `size` examples, stratified by class, the same for every run.

    Each class keeps its share of the split, and at least one example (largest remainders get those left over
    by rounding; a rare class's one comes from the class most over its share that has more than one); within a
    class the examples kept are a fixed random choice (seeded by a constant, not by the run's seed), in the
    split's own order, so the validation hold-out (make_pipelines' first examples) comes out of these `size`
    (data.check_every_class_trained refuses one that holds all of a class).
    """
    if size is None:
        return source
    if source.train is None:
        raise DataError(f"source {source.name} was loaded without its train split; it cannot be subset")
    size = check_size(source, size, 0)  # its bounds; its classes once the labels are read
    labels = source.train_labels  # in memory for files; tfds data is read for them, in batches (one Python step
    if labels is None:  # a label made this 50 s for Fashion-MNIST's 60k on one thread)
        labels = np.concatenate([np.asarray(batch, np.int64).reshape(-1) for batch in
                                 source.train.map(lambda image, label: label).batch(8192).as_numpy_iterator()]
                                or [np.zeros(0, np.int64)])
    classes, counts = np.unique(labels, return_counts=True)
    check_size(source, size, len(classes))
    quota = counts * size / len(labels)
    keep = np.maximum(np.floor(quota).astype(int), 1)  # every class, however rare
    while keep.sum() > size:  # the rare classes' ones come from the class most over its share that can spare one
        keep[np.argmax(np.where(keep > 1, keep - quota, -np.inf))] -= 1
    for k in np.argsort(-(quota - keep), kind="stable")[:size - keep.sum()]:
        keep[k] += 1
    rng = np.random.default_rng(_SUBSET_SEED)
    chosen = np.zeros(len(labels), bool)
    for label, n in zip(classes, keep):
        members = np.flatnonzero(labels == label)
        chosen[rng.choice(members, size=n, replace=False)] = True
    indices = np.flatnonzero(chosen)
    mask = tf.constant(chosen)
    train = (source.train.enumerate().filter(lambda i, example: tf.gather(mask, i))
             .map(lambda i, example: example))
    record = {"train_size": size, "train_split_size": len(labels),
              "train_subset_sha256": hashlib.sha256(indices.astype("<i8").tobytes()).hexdigest()}
    return dataclasses.replace(source, train=train, num_train=size, subset_record=record,
                               train_labels=labels[indices])


def check_size(source, size, classes):
    """`size` as an int, or DataError unless a subset of `source`'s train split keeps each of `classes` classes."""
    whole = isinstance(size, numbers.Integral) or (isinstance(size, numbers.Real) and float(size).is_integer())
    if isinstance(size, bool) or not whole:  # 100.5 would train on 100, "1000" on 1000
        raise DataError(f"train_size must be a whole number of examples, got {size!r}")
    if not 2 <= (size := int(size)) <= source.num_train:
        raise DataError(f"--train_size={size} must be between 2 and the {source.num_train:,} training examples "
                        f"of {source.name}")
    if size < classes:  # a class left out would never be learnt, yet still be tested
        raise DataError(f"--train_size={size} is below the {classes} classes of {source.name}; a stratified "
                        f"subset keeps every class: give at least {classes}")
    return size
