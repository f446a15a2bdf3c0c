"""The one definition of how raw pixels become model inputs.

Training pipelines and the exported serving signature both call `scale`, so
a served model cannot drift from the way it was trained.
"""
import tensorflow as tf


def scale(images):
    """uint8 pixels in [0, 255] -> float32 in [0, 1], any leading shape."""
    return tf.cast(images, tf.float32) / 255.0
