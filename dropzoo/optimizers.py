"""The trainer's optimizers: Keras' own, with the whole update fused into one XLA computation.

Keras applies an optimizer variable by variable, each update a dozen small
elementwise ops (Adadelta: two accumulators, square roots, a division, three
assignments), each its own pass over memory. `make(name, learning_rate)`
returns Keras' optimizer of that name (`adadelta`, `sgd`, `adam`, `rmsprop`)
as a subclass whose `apply` runs Keras' own update for every variable inside
one `tf.function(jit_compile=True)`: XLA fuses each variable's update into
one pass. The arithmetic is Keras' (`update_step` is not touched); only the
rounding of fused operations differs, within float32's (8e-7 on
keras_mnist_cnn's weights after one step). The first call (building the
slots) and any strategy with several replicas take Keras' path unchanged.

The classes are registered as Keras serializables, so a `model.keras` saved
with one loads wherever `dropzoo` is imported (and is Keras' optimizer of
the same name, config and state).
"""
import inspect
import weakref

import keras
import tensorflow as tf

from dropzoo import config as config_lib

# optimizer -> {its variables' ids: the compiled apply}
_COMPILED = weakref.WeakKeyDictionary()


class FusedApply:
    """Mixin: `apply` runs the base optimizer's update for all variables in one XLA computation."""

    def apply(self, grads, trainable_variables=None):
        if not self.built or trainable_variables is None or tf.distribute.has_strategy():
            return super().apply(grads, trainable_variables)
        variables = list(trainable_variables)
        key = tuple(id(v) for v in variables)
        compiled = _COMPILED.setdefault(self, {})  # kept off the optimizer: it would be saved with it
        if key not in compiled:
            apply = super().apply
            compiled[key] = tf.function(lambda gs: apply(gs, variables), jit_compile=True)
        return compiled[key](list(grads))


def _fused(base):
    cls = type(f"Fused{base.__name__}", (FusedApply, base), {"__doc__": f"keras.optimizers.{base.__name__}, its "
                                                                     "update fused into one XLA computation."})
    return keras.saving.register_keras_serializable(package="dropout_zoo")(cls)


# The trainer's optimizers, by the --optimizer name (config.OPTIMIZERS).
FUSED = {name: _fused(base) for name, base in (("adadelta", keras.optimizers.Adadelta),
                                                ("sgd", keras.optimizers.SGD),
                                                ("adam", keras.optimizers.Adam),
                                                ("rmsprop", keras.optimizers.RMSprop))}
assert tuple(FUSED) == config_lib.OPTIMIZERS, "an optimizer name without its fused class"


def keras_learning_rate(name):
    """Keras' default learning rate of optimizer `name` (Adam's 0.001; the classic recipe trains Adadelta at 1.0)."""
    return inspect.signature(FUSED[name]).parameters["learning_rate"].default


def make(name, learning_rate, fused=True):
    """Keras' optimizer `name` at `learning_rate`; with `fused`, its update in one XLA computation."""
    if not fused:
        return keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate}})
    return FUSED[name](learning_rate=learning_rate)
