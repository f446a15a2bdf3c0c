"""FLOPs of a model's linear ops (convolutions and dense layers), per example.

    flops = models.flops.count(models.build("keras_mnist_cnn"))
    flops.forward            # 23,984,896 for keras_mnist_cnn
    flops.training           # 71,565,312: forward + weight gradients + input gradients
    flops.by_layer["conv2"]  # (forward, training) of one layer

A multiply-add counts as 2 FLOPs. A conv or dense layer's forward pass is
2 x outputs x (inputs each output reads); training adds its weight gradient
(the same count) and its input gradient (the same count again), except for
a layer that only layers without weights separate from the model's input:
nothing upstream needs that gradient, so frameworks skip it. Biases,
activations, pooling, dropout masks, BatchNorm and the optimizer update are
not counted: they are the time a training step should not spend, which is
what an efficiency figure (achieved FLOP/s over the rate the dominant op
reaches alone) is meant to show.
"""
import dataclasses
import math

import keras

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


@dataclasses.dataclass(frozen=True)
class Flops:
    forward: int
    training: int
    by_layer: dict  # name -> (forward, training)

    @property
    def dominant(self):
        """The layer with the most training FLOPs."""
        return max(self.by_layer, key=lambda name: self.by_layer[name][1])


def layer_forward_flops(layer):
    """Forward FLOPs per example of one built Conv1D/2D/3D or Dense layer (0 for other layers)."""
    if isinstance(layer, _CONV):
        kernel = layer.kernel.shape  # (*window, in_channels / groups, out_channels)
        outputs = math.prod(layer.output.shape[1:])
        return 2 * outputs * math.prod(kernel[:-1])
    if isinstance(layer, keras.layers.Dense):
        fan_in, units = layer.kernel.shape
        positions = math.prod(layer.input.shape[1:-1])  # Dense on [batch, ..., features]
        return 2 * positions * fan_in * units
    return 0


def count(model):
    """`Flops` of `model` (a built Sequential or functional model), per example, in graph order."""
    by_layer, seen_weights = {}, False
    for layer in model.layers:
        forward = layer_forward_flops(layer)
        if forward:
            # Weight gradient always; input gradient only if a weighted layer is upstream.
            by_layer[layer.name] = (forward, forward * (3 if seen_weights else 2))
        seen_weights = seen_weights or bool(layer.trainable_weights)
    return Flops(forward=sum(f for f, _ in by_layer.values()),
                 training=sum(t for _, t in by_layer.values()), by_layer=by_layer)
