"""The tf.data pipelines that feed a model from a data source (dropzoo/sources.py).

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
import math
import numbers

import numpy as np
import tensorflow as tf
from absl import logging

from dropzoo.errors import DataError
from dropzoo.preprocess import scale

# Data-epochs in the "infinite" train stream; no run gets near it.
_EPOCHS_FOREVER = 2**62

# A split is cached in memory iff its scaled pixels (float32: 4 bytes per
# uint8 pixel, num_examples * prod(image_shape) * 4) take at most this many
# bytes; above it the split is streamed. The train parts (after the 10%
# validation hold-out) of MNIST, 169 MB, and CIFAR-10, 553 MB, are cached;
# emnist/byclass's 1.97 GB is streamed. make_pipelines(cache_budget_bytes=...)
# overrides it for one call.
CACHE_BUDGET_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class Pipelines:
    """Batched, scaled datasets ready for `model.fit` / `model.evaluate`."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    # The train part once, in a fixed order, batched and scaled: what the
    # final model is scored on with dropout off (the train-test gap).
    train_eval: tf.data.Dataset
    steps_per_epoch: int
    num_train: int
    num_validation: int
    num_test: int
    # The splits ("train", "validation", "test") streamed rather than cached.
    streamed: tuple = ()


def summary_line(source, pipes):
    """One log line naming the data a run trains on: source, classes, split sizes, image shape."""
    names = (source.details or {}).get("class_names")
    classes = f"{source.num_classes} classes" + (f" ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
                                                 if names else "")
    shape = "x".join(str(d) for d in source.image_shape)
    return (f"data: {source.name}: {classes}; {pipes.num_train:,} train, {pipes.num_validation:,} validation, "
            f"{pipes.num_test:,} test images of {shape}")


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
    num_validation = check_every_class_trained(source, validation_fraction)
    num_train = source.num_train - num_validation
    steps_per_epoch = math.ceil(num_train / batch_size)
    if batch_size > num_train:  # Keras' batches end with the data: the run trains on batches of num_train
        logging.warning("--batch_size=%d is larger than the %s training images: each epoch is one step, on a batch "
                        "of %s", batch_size, f"{num_train:,}", f"{num_train:,}")
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
            validation, num_validation, batch_size, cache="validation" not in streamed),
        test=_eval_batches(source.test, source.num_test, batch_size, cache="test" not in streamed),
        train_eval=_eval_batches(train, num_train, batch_size, cache=False),
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


def check_every_class_trained(source, validation_fraction):
    """How many examples make_pipelines holds out for validation (the train split's first), or DataError where
    they are all a class has: it would be tested, never trained. Labels not in memory (tfds) are not checked."""
    held = validation_size(source.num_train, validation_fraction)
    labels = source.train_labels
    lost = [] if labels is None or not held else np.setdiff1d(labels[:held], labels[held:]).tolist()
    if lost:
        names = source.details.get("class_names") or []
        named = ", ".join(repr(names[k]) if k < len(names) else str(k) for k in lost[:5])
        cut = source.subset_record.get("train_size")
        raise DataError(f"{f'--train_size={cut} leaves' if cut else 'the training split of'} {source.name} "
                        f"{'' if cut else 'has '}class {named} only in the validation hold-out (its first {held}), "
                        f"so it would never be trained; give {'a larger --train_size' if cut else 'it more examples'}"
                        f" or --validation_fraction=0")
    return held


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


def _eval_batches(ds, num_examples, batch_size, cache=True):
    # Batch before scaling: one vectorized op per batch instead of per image.
    batches = ds.batch(batch_size).map(_scale_example)
    # The batch count, stated (and checked when read): a source read from files does not know it,
    # and Keras then pulls a whole steps_per_execution of batches past the end and warns "Your input
    # ran out of data; interrupting training" though nothing is lost.
    batches = batches.apply(tf.data.experimental.assert_cardinality(math.ceil(num_examples / batch_size)))
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
