"""Dropout keeps its promise in every precision.

Under float32, mixed_bfloat16 and mixed_float16, at rates 0.1, 0.25, 0.4 and
0.5, for every kind and both forms of the zoo's dropout, on 10^6 inputs:

- the Bernoulli kinds (inverted, classic) drop a fraction within 4 binomial
  standard errors of the rate;
- in training mode, mean output / mean input is within 4 standard errors of
  its expectation (1; the keep probability 1 - rate for classic);
- in inference mode it is within 5e-4 of it.

The inputs vary (uniform in [0.5, 1.5]): on a constant input the one
rounding of each output element to bfloat16 would be the same for every
element, a bias no layer can avoid. They are shaped (N, 1, 1, C), so the
spatial form, one draw per channel, makes 10^6 draws too. The same check
fails on Keras' own Dropout under mixed_bfloat16, so a pass is not vacuous.

Also here: the zoo's Bernoulli layers are Keras' layers with the zoo's masks
(models/masks.py) and Keras' arithmetic in float32, Gaussian noise bitwise
Keras' own; every layer survives a .keras save; the benchmark returns its
numbers.
"""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from benchmarks import dropout_precision
from models import equivalence
from models import layers as dropout_lib
from models import masks

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
RATES = (0.1, 0.25, 0.4, 0.5)
FORMS = [(kind, spatial) for kind in dropout_lib.KINDS for spatial in (False, True)]
Z_LIMIT = 4.0
INFERENCE_TOL = 5e-4
X = np.random.default_rng(0).uniform(0.5, 1.5, (1000, 1, 1, 1000)).astype("float32")
# Variance of one draw of each kind's multiplier, keep k = 1 - rate.
DRAW_VARIANCE = {"inverted": lambda r: r / (1 - r), "classic": lambda r: r * (1 - r),
                 "gaussian": lambda r: r / (1 - r)}


def _float64(tensor):
    return keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32")).astype(np.float64)


def _build(policy, make):
    with equivalence.precision_policy(policy):
        return make()


def measure(layer, kind, rate, x=X):
    """How far `layer` is from dropout's promises on `x`, in standard errors (or absolute)."""
    expected = 1 - rate if kind == "classic" else 1.0
    x_used = _float64(keras.ops.cast(x, layer.compute_dtype))  # the layer sees the compute dtype
    train = _float64(layer(x, training=True))
    inference = _float64(layer(x, training=False))
    se = math.sqrt(DRAW_VARIANCE[kind](rate) * np.sum(x_used**2)) / np.sum(x_used)
    found = {"training_z": (train.mean() / x_used.mean() - expected) / se,
             "inference_error": inference.mean() / x_used.mean() - expected}
    if kind != "gaussian":
        dropped = np.mean(train == 0)  # inputs are >= 0.5, so 0 means dropped
        found["dropped_z"] = (dropped - rate) / math.sqrt(rate * (1 - rate) / train.size)
    return found


def broken_promises(found):
    """The promises `measure` found broken; empty when every one is kept."""
    broken = [f"{name} = {found[name]:+.2f} standard errors"
              for name in ("dropped_z", "training_z") if abs(found.get(name, 0.0)) > Z_LIMIT]
    if abs(found["inference_error"]) > INFERENCE_TOL:
        broken.append(f"inference mean off by {found['inference_error']:+.2e}")
    return broken


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kind,spatial", FORMS)
@pytest.mark.parametrize("policy", POLICIES)
def test_dropout_keeps_its_promise(policy, kind, spatial, rate):
    layer = _build(policy, lambda: dropout_lib.make_dropout(kind, rate, spatial=spatial, seed=1))
    assert layer.compute_dtype == keras.mixed_precision.Policy(policy).compute_dtype
    found = measure(layer, kind, rate)
    assert not broken_promises(found), (broken_promises(found), found)


@pytest.mark.parametrize("rate", [0.1, 0.4])
@pytest.mark.parametrize("keras_layer", [keras.layers.Dropout, keras.layers.SpatialDropout2D])
def test_the_check_fails_on_keras_dropout_in_bfloat16(keras_layer, rate):
    """Keras' own layer draws and compares in bfloat16 there: the same check catches it."""
    layer = _build("mixed_bfloat16", lambda: keras_layer(rate, seed=1))
    found = measure(layer, "inverted", rate)
    assert abs(found["training_z"]) > Z_LIMIT, found
    assert abs(found["dropped_z"]) > Z_LIMIT, found
    # In float32 the same layer passes: the check fails for the precision, not the layer.
    assert not broken_promises(measure(keras_layer(rate, seed=1), "inverted", rate))


def test_the_inference_check_fails_for_a_keep_rounded_to_bfloat16():
    """The old ClassicDropout multiplied by 1 - rate rounded to bfloat16 (0.6 -> 0.6016)."""

    class RoundedKeep(dropout_lib.ClassicDropout):
        def call(self, inputs, training=False):
            if training:
                return super().call(inputs, training=True)
            return inputs * keras.ops.cast(1.0 - self.rate, inputs.dtype)

    found = measure(_build("mixed_bfloat16", lambda: RoundedKeep(0.4, seed=1)), "classic", 0.4)
    assert found["inference_error"] > 2 * INFERENCE_TOL, found
    assert broken_promises(found) == [f"inference mean off by {found['inference_error']:+.2e}"]


# ------------------------------------------- float32: Keras' layers, the zoo's masks


def _zoo_masked(x, rate, scale, seed, mask_shape):
    """What the zoo's Bernoulli layers compute: the generator's mask for the seed, Keras' arithmetic in float32."""
    words = masks.draw_words(mask_shape, rate, keras.random.SeedGenerator(seed))
    return masks.apply_mask(x, words, rate, scale, mask_shape[-1])


@pytest.mark.parametrize("zoo_cls,keras_cls,spatial", [
    (dropout_lib.Float32Dropout, keras.layers.Dropout, False),
    (dropout_lib.Float32SpatialDropout2D, keras.layers.SpatialDropout2D, True),
])
def test_the_bernoulli_layers_are_keras_layers_with_the_zoos_masks(zoo_cls, keras_cls, spatial):
    x = np.random.default_rng(2).uniform(-1, 1, (16, 6, 6, 8)).astype("float32")
    shape = (16, 1, 1, 8) if spatial else x.shape
    zoo = zoo_cls(0.4, seed=7)
    np.testing.assert_array_equal(zoo(x, training=True).numpy(),
                                  _zoo_masked(x, 0.4, np.float32(1 / 0.6), 7, shape).numpy())
    np.testing.assert_array_equal(zoo(x, training=False).numpy(), x)
    assert isinstance(zoo, keras_cls)
    stock = keras_cls(0.4, seed=7)
    same = {key: value for key, value in stock.get_config().items() if key not in ("name", "dtype")}
    assert same.items() <= zoo.get_config().items()
    # Successive calls draw new masks from the seed generator's state, traced as in fit.
    zoo_fn = tf.function(lambda t: zoo(t, training=True))
    assert not np.array_equal(zoo_fn(x).numpy(), zoo_fn(x).numpy())


def test_gaussian_noise_is_bitwise_keras():
    x = np.random.default_rng(2).uniform(-1, 1, (16, 6, 6, 8)).astype("float32")
    zoo, stock = dropout_lib.Float32GaussianDropout(0.4, seed=7), keras.layers.GaussianDropout(0.4, seed=7)
    for _ in range(3):  # successive noise from the same seed generator state
        np.testing.assert_array_equal(zoo(x, training=True).numpy(), stock(x, training=True).numpy())


def test_classic_and_spatial_gaussian_compute_what_they_promise():
    x = np.random.default_rng(2).uniform(-1, 1, (16, 6, 6, 8)).astype("float32")
    classic = dropout_lib.ClassicDropout(0.4, seed=7)
    np.testing.assert_array_equal(classic(x, training=True).numpy(), _zoo_masked(x, 0.4, 1.0, 7, x.shape).numpy())
    np.testing.assert_array_equal(classic(x, training=False).numpy(), x * np.float32(0.6))
    noise = keras.random.normal((16, 1, 1, 8), mean=1.0, stddev=math.sqrt(0.4 / 0.6),
                                seed=keras.random.SeedGenerator(7))
    gaussian = dropout_lib.SpatialGaussianDropout(0.4, seed=7)
    np.testing.assert_array_equal(gaussian(x, training=True).numpy(), (x * noise).numpy())


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_spatial_masks_cover_whole_feature_maps_in_mixed_precision(policy):
    x = np.random.default_rng(2).uniform(0.5, 1.5, (16, 6, 6, 8)).astype("float32")
    for kind in dropout_lib.KINDS:
        layer = _build(policy, lambda kind=kind: dropout_lib.make_dropout(kind, 0.5, spatial=True, seed=0))
        ratio = _float64(layer(x, training=True)) / _float64(keras.ops.cast(x, layer.compute_dtype))
        # One multiplier per (example, channel), up to the output's one rounding.
        np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1, :], ratio.shape),
                                   rtol=2 ** -7, atol=0)


# ------------------------------------------- what the rest of the zoo relies on


@pytest.mark.parametrize("kind", dropout_lib.KINDS)
def test_seed_generators_dropout_layers_and_mc_dropout_still_work(kind):
    model = models.build("keras_mnist_cnn", "conv1.post:0.1:spatial,pool1.post:0.25:spatial,dense1.post:0.5",
                         kind=kind, seed=0)
    layers = models.dropout_layers(model)
    assert [layer.name for layer in layers] == ["conv1.post", "pool1.post", "dense1.post"]
    for layer in layers:  # the seed transform calls .next; checkpoints find the state by path
        assert callable(layer.seed_generator.next)
        assert any("seed_generator_state" in v.path for v in layer.variables), layer.name
    x = np.random.default_rng(0).uniform(0, 1, (4, 28, 28, 1)).astype("float32")
    mc = models.mc_dropout_model(model)
    assert not np.array_equal(mc(x).numpy(), mc(x).numpy()), "MC dropout draws new masks"
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("kind,spatial", FORMS)
def test_saved_keras_model_reloads(tmp_path, policy, kind, spatial):
    def build():
        inputs = keras.Input((3, 3, 5), name="image")
        layer = dropout_lib.make_dropout(kind, 0.3, spatial=spatial, seed=2, name="drop")
        return keras.Model(inputs, layer(inputs))

    model = _build(policy, build)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    original, reloaded = model.get_layer("drop"), loaded.get_layer("drop")
    assert type(reloaded) is type(original) and reloaded.get_config() == original.get_config()
    # (Keras 3.15's own SpatialDropout2D comes back float32 here; the zoo's keeps its policy.)
    assert reloaded.compute_dtype == original.compute_dtype == model.compute_dtype
    x = np.random.default_rng(0).uniform(0.5, 1.5, (4, 3, 3, 5)).astype("float32")
    np.testing.assert_array_equal(_float64(loaded(x)), _float64(model(x)))
    # Same seed state, same masks: the reloaded layer is the same dropout.
    reloaded.seed_generator.state.assign(original.seed_generator.state)
    np.testing.assert_array_equal(_float64(loaded(x, training=True)), _float64(model(x, training=True)))


# ------------------------------------------------------------------ benchmark


@pytest.mark.slow
def test_benchmark_returns_its_numbers():
    x = np.random.default_rng(0).integers(0, 256, (48, 28, 28, 1)).astype("uint8")
    y = np.arange(48) % 10
    result = dropout_precision.run(x, y, epochs=2, batch_size=16, rounds=1, units=20_000,
                                   log=lambda *_: None)
    rows = {(r["policy"], r["rate"], r["layer"]): r for r in result["table"]}
    assert len(rows) == 12
    for rate in (0.1, 0.4):
        zoo_row = rows["float32", rate, "zoo"]
        assert abs(zoo_row["dropped"] - rate) < 5 * math.sqrt(rate * (1 - rate) / 20_000)
        for policy in ("mixed_bfloat16", "mixed_float16"):  # the same masks, whatever the policy
            assert rows[policy, rate, "zoo"]["dropped"] == zoo_row["dropped"]
    assert rows["mixed_bfloat16", 0.4, "keras"]["kept_value"] == 1.6640625
    for way in ("keras", "zoo"):
        training = result["training"][way]
        assert training["examples_per_sec"] > 0 and training["num_epochs_timed"] == 1
        assert training["dropout_ms_per_step"] > 0
    assert result["zoo_vs_keras"] > 0 and isinstance(result["bf16_native"], bool)
    text = dropout_precision.report(result)
    assert "zoo / keras" in text and "E[out]/E[in]" in text
    assert "NOTE: 1 timed epoch(s) a way: the fastest quarter is 1 epoch(s)" in text  # a quick run says so


def test_the_benchmark_prints_the_precision_table_alone_without_training():
    x = np.zeros((4, 28, 28, 1), "uint8")
    result = dropout_precision.run(x, np.arange(4), rounds=0, units=20_000, log=lambda *_: None)
    assert result["training"] is None and "zoo_vs_keras" not in result and len(result["table"]) == 12
    text = dropout_precision.report(result)
    assert "E[out]/E[in]" in text and text.endswith("(--rounds=0: no training timed)")
    assert "zoo / keras" not in text
