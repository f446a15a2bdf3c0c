"""What dropout does to the activations a model sees: per-site and per-BN-layer statistics.

`site_statistics` measures each dropout site's input and output in training
and inference mode on a batch (the train/inference variance shift, and the
fraction a Bernoulli site really drops); `norm_statistics` measures each
BatchNormalization layer's variance shift (Li et al., 2019). The trainer logs
both every epoch (`callbacks.DropoutStats`) and records the last in
metrics.json.
"""
import keras
import numpy as np
import tensorflow as tf

import models
from dropzoo import checkpoints


def site_statistics(model, images):
    """Per dropout site: mean/variance entering and leaving it, training vs inference.

    `variance_ratio` is the output variance in training mode over that in
    inference mode: the train/inference "variance shift" a following layer
    sees (Li et al., 2019, on dropout before batch normalisation).

    For Bernoulli sites (inverted, classic) `drop_fraction` is the fraction
    of units dropped in training mode, counted where the input is non-zero
    (after a ReLU about half the inputs are zero already), beside the
    nominal `rate`: the layer's promise, measured in the run's precision.
    """
    sites = models.dropout_layers(model)
    if not sites:
        return {}
    probe = keras.Model(model.input, [t for layer in sites for t in (layer.input, layer.output)])
    # The probe must leave the model as it found it: training's mask stream (the seed states) and
    # BatchNormalization's moving statistics, which a training-mode call moves toward the probe batch
    # (in the variants with dropout only: the others have no sites to probe).
    # Each replica's own copy under tf.distribute: a mirrored BN's copies drift apart (aggregation none), and
    # assigning the variable would give every replica the first one's.
    state = {id(c): c for v in [*checkpoints.seed_states(model).values(), *model.non_trainable_variables]
             for c in replica_copies(v)}
    saved = {k: v.numpy() for k, v in state.items()}
    try:
        per_mode = {mode: probe(images, training=mode == "train") for mode in ("train", "inference")}
    finally:
        for k, v in state.items():
            v.assign(saved[k])
    result = {}
    for i, layer in enumerate(sites):
        entry = {}
        for mode, tensors in per_mode.items():
            x_in, x_out = (np.asarray(keras.ops.convert_to_numpy(t), np.float64)
                           for t in tensors[2 * i:2 * i + 2])
            entry[mode] = {"in_mean": float(x_in.mean()), "in_var": float(x_in.var()),
                           "out_mean": float(x_out.mean()), "out_var": float(x_out.var())}
        inference_var = entry["inference"]["out_var"]
        entry["variance_ratio"] = entry["train"]["out_var"] / inference_var if inference_var else float("nan")
        if models.layers.is_bernoulli(layer):
            x_in, x_out = (keras.ops.convert_to_numpy(t) for t in per_mode["train"][2 * i:2 * i + 2])
            live = x_in != 0
            entry["rate"] = float(layer.rate)
            entry["drop_fraction"] = float((x_out[live] == 0).mean()) if live.any() else float("nan")
        result[layer.name] = entry
    return result


def replica_copies(variable):
    """A Keras variable's per-replica copies where tf.distribute mirrors it, else the variable itself."""
    value = getattr(variable, "value", None)
    return list(value.values) if isinstance(value, tf.distribute.DistributedValues) else [variable]


def norm_statistics(model, images, steps=None):
    """Per BatchNormalization layer: Li et al.'s (2019) variance shift, per channel.

    The moving variance the layer learned during training (with dropout on
    upstream) over the variance of its input at inference (dropout off) on
    `images`; summarised as mean and max over channels. Near 1 when the
    layer's statistics fit what it sees when serving; above 1 when dropout
    before it inflated the variance it learned.

    Keras starts the moving variance at 1 and moves it by (1 - momentum) per
    training step, so after `steps` steps momentum^steps of that 1 is still
    in it: 1.3% after 435 steps at momentum 0.99, which is 4x the variance of
    a small layer's input. With `steps` (the optimizer's iteration count) the
    moving variance is debiased as Adam debiases its moments:
    (v - momentum^steps) / (1 - momentum^steps), the average of the batch
    variances alone.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return {}
    probe = keras.Model(model.input, [layer.input for layer in norms])
    inputs = probe(images, training=False)
    if not isinstance(inputs, (list, tuple)):  # one output comes back bare
        inputs = [inputs]
    result = {}
    for layer, x in zip(norms, inputs):
        x = np.asarray(keras.ops.convert_to_numpy(x), np.float64)
        served = x.reshape(-1, x.shape[-1]).var(axis=0)  # per channel (channels last)
        learned = np.asarray(keras.ops.convert_to_numpy(layer.moving_variance), np.float64)
        if steps:
            remaining = float(layer.momentum) ** int(steps)  # of the initial moving variance, 1
            learned = (learned - remaining) / (1.0 - remaining)
        live = served > 0
        shift = learned[live] / served[live]
        result[layer.name] = {
            "variance_shift_mean": float(shift.mean()) if live.any() else float("nan"),
            "variance_shift_max": float(shift.max()) if live.any() else float("nan"),
            "channels": int(x.shape[-1]),
        }
    return result
