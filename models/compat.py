"""The one place the zoo works around a missing public API of another library.

Everything else in `models/` and `dropzoo/` uses public names only
(tests/test_structure.py rejects other libraries' private names outside this
module). Each workaround says why it is needed, names the upstream report,
and has a test (tests/test_structure.py) that fails when it stops working.

- `FixedSeed`: `keras.random.*` take a seed as an int or a
  `keras.random.SeedGenerator`, never as a seed tensor (Keras 3.15,
  `draw_seed`; the JAX backend alone was taught to take its arrays,
  keras-team/keras-core#651). A seed that is only known inside a traced
  function (a serving request's `seed` input, a replica's id folded into a
  layer's seed) therefore needs a SeedGenerator that hands out a given seed
  pair. A real SeedGenerator creates a state variable in its constructor,
  which a traced function may not do, so this one skips that constructor
  and keeps no state.
"""
import keras


class FixedSeed(keras.random.SeedGenerator):
    """A SeedGenerator that hands out one fixed seed pair (a tensor) and holds no state."""

    def __init__(self, seed_pair):  # no super().__init__(): it would create a state variable
        self.seed_pair = seed_pair

    def next(self, ordered=True):
        del ordered
        return self.seed_pair
