"""What a library call gives back of its caller's process state.

A run sets Keras' global dtype policy and seeds Python's and NumPy's global
random generators (`keras.utils.set_random_seed`); `keras.backend.clear_session`
resets the policy. A notebook that set its own would build and draw
differently afterwards without a word, so the calls that change them put
them back. TensorFlow's and Keras' own global seeds stay at the run's seed,
as `keras.utils.set_random_seed` leaves them (docs/api.md).
"""
import contextlib
import random

import keras
import numpy as np


@contextlib.contextmanager
def kept():
    """The caller's global dtype policy and Python's and NumPy's generator states, as they were, after the block."""
    policy = keras.mixed_precision.global_policy()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def clear_session():
    """keras.backend.clear_session(), keeping the global dtype policy it would reset."""
    with kept():
        keras.backend.clear_session()
