"""Recomputes the BN study's variance shift from each run's final checkpoint, debiased.

Runs trained before `site_stats.norm_statistics` debiased BatchNorm's moving
variance for its initial value of 1 hold the biased figure in metrics.json;
this recomputes it for any run. It loads every trained `--norm=batch` run's
last checkpoint, takes the trainer's probe batch (the first 256 training
images) and prints the debiased shift per BN layer, per variant, mean over
seeds. It also tests the run's model on the test split twice: with the
moving statistics as trained, and with them debiased (mean / (1 - r),
(variance - r) / (1 - r), r = momentum^steps), which shows how much of the
BN networks' accuracy unconverged statistics cost (the output of both BN
studies is in variance_shift.md beside this file):

    python docs/results/bn_study/variance_shift.py runs/bn_study
"""
import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from dropzoo import checkpoints  # noqa: E402
from dropzoo import config as config_lib  # noqa: E402
from dropzoo import data  # noqa: E402
from dropzoo import site_stats  # noqa: E402
from dropzoo import sources  # noqa: E402
from dropzoo import trainer  # noqa: E402
from dropzoo import variants  # noqa: E402
from dropzoo.preprocess import scale  # noqa: E402


def main(runs_dir):
    shifts, accuracy = {}, {}
    source = None
    for path in sorted(glob.glob(os.path.join(runs_dir, "*", "*", "seed*", "metrics.json"))):
        with open(path) as f:
            metrics = json.load(f)
        if "identical_to" in metrics or metrics["config"].get("norm") != "batch":
            continue
        config = config_lib.TrainConfig(**metrics["config"])
        source = source or sources.load_source(**metrics["data"]["origin"])
        model = trainer.build_model(config, source.num_classes, source.image_shape)
        model.optimizer.build(model.trainable_variables)
        epoch = checkpoints.restore(model, os.path.join(os.path.dirname(path), "checkpoints"))
        steps = epoch * metrics["steps_per_epoch"]
        probe = next(iter(data.raw_batches(source.train, 256)))[0]
        stats = site_stats.norm_statistics(model, scale(probe), steps=steps)
        label = variants.variant_label(metrics["config"])
        for layer, entry in stats.items():
            shifts.setdefault((label, layer), []).append(entry["variance_shift_mean"])
        images, labels = _arrays(source.test)
        as_trained = _accuracy(model, images, labels)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                r = float(layer.momentum) ** steps
                layer.moving_mean.assign(layer.moving_mean / (1 - r))
                layer.moving_variance.assign((layer.moving_variance - r) / (1 - r))
        accuracy.setdefault(label, []).append((as_trained, _accuracy(model, images, labels)))
    print("| variant | BN layer | variance shift (mean over channels), mean ± std over seeds |")
    print("| --- | --- | --- |")
    for (variant, layer), values in sorted(shifts.items()):
        print(f"| {variant} | {layer} | {np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} |")
    print()
    print("| variant | test acc %, moving statistics as trained | debiased | seeds |")
    print("| --- | --- | --- | --- |")
    for variant, pairs in sorted(accuracy.items()):
        trained, debiased = np.array(pairs).T * 100
        print(f"| {variant} | {trained.mean():.2f} ± {trained.std(ddof=1):.2f} | "
              f"{debiased.mean():.2f} ± {debiased.std(ddof=1):.2f} | {len(pairs)} |")


def _arrays(dataset):
    images, labels = zip(*[(x, y) for x, y in data.raw_batches(dataset, 1000)])
    return scale(np.concatenate(images)), np.concatenate(labels)


def _accuracy(model, images, labels):
    probabilities = np.asarray(model(images, training=False))
    return float(np.mean(probabilities.argmax(axis=1) == labels))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/bn_study")
