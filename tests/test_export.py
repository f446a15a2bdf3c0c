"""Tests for dropzoo.export: the serving signature, dropout-off proof, atomicity."""
import errno
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from dropzoo import export
from dropzoo.errors import ExportError
from dropzoo.export import export_saved_model
from dropzoo.files import WriteError
from dropzoo.preprocess import scale
from dropzoo.verify import is_random_op
from dropzoo.verify import verify_export

SHAPE = (8, 8, 1)
NUM_CLASSES = 3
DEAD_PID = 2**31 - 1  # above any pid_max, so never a running process


def build_model(outputs="probabilities", seed=0):
    """Tiny untrained image classifier with a Dropout layer."""
    keras.utils.set_random_seed(seed)
    image = keras.Input(shape=SHAPE, name="image")
    x = keras.layers.Flatten()(image)
    x = keras.layers.Dense(16, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(NUM_CLASSES)(x)
    if outputs == "probabilities":
        x = keras.layers.Softmax()(x)
    return keras.Model(image, x)


def make_images(count=16, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (count,) + SHAPE).astype(np.uint8)


def serve(path, images):
    result = tf.saved_model.load(str(path)).signatures["serving_default"](image=tf.constant(images))
    return {key: value.numpy() for key, value in result.items()}


def write_custom_export(model, path, serving_fn):
    """A deliberately non-standard export, to show verify_export can fail."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None,) + SHAPE, tf.uint8, name="image")
    archive.add_endpoint("serving_default", serving_fn, input_signature=[spec])
    archive.write_out(str(path), verbose=False)
    return str(path)


def leftovers(path):
    """Temp/old siblings of `path` (there should be none after an export)."""
    parent, name = os.path.split(str(path))
    return [entry for entry in os.listdir(parent) if entry.startswith(f".{name}.")]


@pytest.fixture(scope="module")
def prob_export(tmp_path_factory):
    model = build_model("probabilities")
    path = export_saved_model(model, tmp_path_factory.mktemp("prob") / "saved_model")
    return model, path


@pytest.fixture(scope="module")
def logits_export(tmp_path_factory):
    model = build_model("logits")
    path = tmp_path_factory.mktemp("logits") / "saved_model"
    return model, export_saved_model(model, path, outputs="logits")


@pytest.fixture
def bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ------------------------------------------------------------- signature


def test_signature_names_dtypes_shapes(prob_export):
    _, path = prob_export
    signatures = tf.saved_model.load(path).signatures
    assert set(signatures) == {"serving_default", "serving_float", "mc_dropout", "mc_dropout_seeded",
                               "mc_dropout_draws", "mc_dropout_draws_xla"}
    image = tf.TensorSpec((None,) + SHAPE, tf.uint8, name="image")
    assert signatures["serving_float"].structured_input_signature[1] == {
        "image": tf.TensorSpec((None,) + SHAPE, tf.float32, name="image")}
    samples = tf.TensorSpec((), tf.int32, name="samples")
    seed = tf.TensorSpec((), tf.int32, name="seed")
    assert signatures["mc_dropout"].structured_input_signature[1] == {"image": image, "samples": samples}
    for name in ("mc_dropout_seeded", "mc_dropout_draws", "mc_dropout_draws_xla"):
        assert signatures[name].structured_input_signature[1] == {
            "image": image, "samples": samples, "seed": seed}
    summary = {"probabilities": [None, NUM_CLASSES], "probabilities_std": [None, NUM_CLASSES],
               "class_id": [None], "predictive_entropy": [None], "mutual_information": [None]}
    for name in ("mc_dropout", "mc_dropout_seeded"):
        outputs = signatures[name].structured_outputs
        assert {k: v.shape.as_list() for k, v in outputs.items()} == summary
    for name in ("mc_dropout_draws", "mc_dropout_draws_xla"):
        draws = signatures[name].structured_outputs
        assert {k: v.shape.as_list() for k, v in draws.items()} == {"probabilities": [None, None, NUM_CLASSES]}
    fn = signatures["serving_default"]
    args, kwargs = fn.structured_input_signature
    assert args == ()
    assert kwargs == {"image": tf.TensorSpec((None,) + SHAPE, tf.uint8, name="image")}
    outputs = fn.structured_outputs
    assert set(outputs) == {"probabilities", "class_id"}
    assert outputs["probabilities"].dtype == tf.float32
    assert outputs["probabilities"].shape.as_list() == [None, NUM_CLASSES]
    assert outputs["class_id"].dtype == tf.int64
    assert outputs["class_id"].shape.as_list() == [None]


@pytest.mark.slow
def test_saved_model_cli_shows_exactly_the_signature(prob_export):
    _, path = prob_export
    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    shown = subprocess.run(
        cli + ["show", "--dir", path, "--all"], capture_output=True, text=True, check=True
    ).stdout
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)(?=signature_def\[|\Z)", shown, re.S))
    assert set(blocks) == {"__saved_model_init_op", "serving_default", "serving_float", "mc_dropout",
                           "mc_dropout_seeded", "mc_dropout_draws", "mc_dropout_draws_xla"}
    block = blocks["serving_default"]
    assert re.findall(r"inputs\['(\w+)'\]", block) == ["image"]
    assert sorted(re.findall(r"outputs\['(\w+)'\]", block)) == ["class_id", "probabilities"]
    tensor_info = re.findall(
        r"(\w+)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", block
    )
    assert sorted(tensor_info) == [
        ("inputs", "image", "DT_UINT8", "(-1, 8, 8, 1)"),
        ("outputs", "class_id", "DT_INT64", "(-1)"),
        ("outputs", "probabilities", "DT_FLOAT", "(-1, 3)"),
    ]


@pytest.mark.parametrize("which", ["prob_export", "logits_export"])
def test_probabilities_sum_to_one_and_class_id_is_argmax(which, request):
    _, path = request.getfixturevalue(which)
    served = serve(path, make_images())
    assert served["probabilities"].dtype == np.float32
    assert served["class_id"].dtype == np.int64
    np.testing.assert_allclose(served["probabilities"].sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(served["class_id"], served["probabilities"].argmax(axis=-1))


def test_logits_export_applies_softmax_in_graph(logits_export):
    model, path = logits_export
    images = make_images()
    logits = model(scale(images), training=False).numpy()
    served = serve(path, images)["probabilities"]
    assert not np.allclose(served, logits)
    np.testing.assert_allclose(served, tf.nn.softmax(logits).numpy(), atol=1e-6)


def test_export_creates_parent_dirs_and_returns_absolute_path(tmp_path):
    path = export_saved_model(build_model(), tmp_path / "nested" / "dir" / "m")
    assert path == str(tmp_path / "nested" / "dir" / "m")
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))


def test_export_rejects_non_image_model_in_one_line(tmp_path):
    vector = keras.Input(shape=(4,), name="x")
    model = keras.Model(vector, keras.layers.Dense(2)(vector))
    with pytest.raises(ExportError) as caught:
        export_saved_model(model, tmp_path / "m")
    assert "[None, H, W, C]" in str(caught.value) and "\n" not in str(caught.value)
    assert not os.path.exists(tmp_path / "m")


def test_export_rejects_unknown_outputs_mode(tmp_path):
    with pytest.raises(ValueError, match="outputs="):
        export_saved_model(build_model(), tmp_path / "m", outputs="softmax")


def test_mc_dropout_is_stochastic_and_serving_default_is_not(prob_export):
    _, path = prob_export
    loaded = tf.saved_model.load(path)
    images = tf.constant(make_images(8))
    mc = loaded.signatures["mc_dropout"]
    first = mc(image=images, samples=tf.constant(16))
    second = mc(image=images, samples=tf.constant(16))
    assert set(first) == {"probabilities", "probabilities_std", "class_id", "predictive_entropy",
                          "mutual_information"}
    assert first["probabilities"].shape == (8, NUM_CLASSES)
    assert first["probabilities_std"].shape == (8, NUM_CLASSES)
    np.testing.assert_allclose(first["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert not np.array_equal(first["probabilities"].numpy(), second["probabilities"].numpy())
    assert (first["probabilities_std"].numpy() > 0).any()
    serving = loaded.signatures["serving_default"]
    np.testing.assert_array_equal(serving(image=images)["probabilities"].numpy(),
                                  serving(image=images)["probabilities"].numpy())
    # Many dropout-on passes of this tiny model: their mean lies near the deterministic output.
    many = mc(image=images, samples=tf.constant(2000))["probabilities"].numpy()
    assert np.abs(many - serving(image=images)["probabilities"].numpy()).max() < 0.15


def test_mc_dropout_without_dropout_equals_serving_default(tmp_path):
    image = keras.Input(shape=SHAPE, name="image")
    model = keras.Model(image, keras.layers.Softmax()(keras.layers.Dense(NUM_CLASSES)(
        keras.layers.Flatten()(image))))
    loaded = tf.saved_model.load(export_saved_model(model, tmp_path / "m"))
    images = tf.constant(make_images(4))
    mc = loaded.signatures["mc_dropout"](image=images, samples=tf.constant(3))
    np.testing.assert_allclose(mc["probabilities"].numpy(),
                               loaded.signatures["serving_default"](image=images)["probabilities"].numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(mc["probabilities_std"].numpy(), 0.0, atol=1e-7)
    np.testing.assert_allclose(mc["mutual_information"].numpy(), 0.0, atol=1e-6)


def test_seeded_signatures_repeat_per_seed_and_unseeded_calls_differ(prob_export):
    _, path = prob_export
    signatures = tf.saved_model.load(path).signatures
    images, samples = tf.constant(make_images(8)), tf.constant(6)

    def seeded(seed, name="mc_dropout_seeded"):
        result = signatures[name](image=images, samples=samples, seed=tf.constant(seed))
        return {key: value.numpy() for key, value in result.items()}

    def unseeded():
        return signatures["mc_dropout"](image=images, samples=samples)["probabilities"].numpy()

    first, again, other = seeded(1), seeded(1), seeded(2)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["probabilities"], other["probabilities"])
    # Seeded calls leave the shared seed state alone: unseeded calls still differ.
    assert not np.array_equal(unseeded(), unseeded())
    # A fresh load (a restarted server, another replica) restores the saved generator state, yet its first
    # unseeded answer is not the first answer of every other load.
    firsts = [tf.saved_model.load(path).signatures["mc_dropout"](image=images, samples=samples)["probabilities"]
              for _ in range(2)]
    assert not np.array_equal(firsts[0].numpy(), firsts[1].numpy())
    # The draws behind a seeded summary: the same seed gives the same passes.
    draws = seeded(1, "mc_dropout_draws")["probabilities"]
    assert draws.shape == (6, 8, NUM_CLASSES)
    np.testing.assert_allclose(draws.mean(axis=0), first["probabilities"], atol=1e-6)
    # Entropy of the mean, and mutual information = that minus the mean entropy.
    entropy = -(first["probabilities"] * np.log(first["probabilities"])).sum(axis=1)
    mean_entropy = -(draws * np.log(draws)).sum(axis=2).mean(axis=0)
    np.testing.assert_allclose(first["predictive_entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(first["mutual_information"], np.maximum(entropy - mean_entropy, 0),
                               atol=1e-6)
    assert (first["mutual_information"] > 0).all()


# ------------------------------------------------------------ verification


class StatefulOnlyDropout(keras.layers.Dropout):
    """A dropout layer that always draws from its own state, ignoring models.request_seed."""

    def call(self, inputs, training=False):
        return keras.random.dropout(inputs, self.rate, seed=self.seed_generator) if training else inputs


def test_verify_export_fails_when_a_dropout_layer_ignores_the_request_seed(tmp_path):
    image = keras.Input(shape=SHAPE, name="image")
    x = StatefulOnlyDropout(0.5)(keras.layers.Dense(8)(keras.layers.Flatten()(image)))
    model = keras.Model(image, keras.layers.Softmax()(keras.layers.Dense(NUM_CLASSES)(x)))
    path = export_saved_model(model, tmp_path / "m")
    with pytest.raises(ExportError, match="mc_dropout_seeded calls with one seed differ"):
        verify_export(path, model, make_images())


def test_verify_export_passes_on_good_export(prob_export):
    model, path = prob_export
    report = verify_export(path, model, make_images())
    assert report == {
        "passed": True,
        "bitwise_repeatable": True,
        "max_abs_diff_vs_keras": report["max_abs_diff_vs_keras"],
        "random_ops": [],
        "tolerance": 1e-5,
        "num_examples": 16,
        "mc_seeded_repeatable": True,
        # The same images scaled to [0, 1] outside the graph: the same answer within float32 rounding.
        "float_signature": {"max_abs_diff_vs_uint8": pytest.approx(0.0, abs=1e-6), "refuses_unscaled_pixels": True},
    }
    assert report["max_abs_diff_vs_keras"] <= 1e-5


def test_verify_export_passes_on_logits_export(logits_export):
    model, path = logits_export
    assert verify_export(path, model, make_images(), outputs="logits")["passed"]


def test_verify_rejects_logits_export_checked_as_probabilities(logits_export):
    model, path = logits_export
    with pytest.raises(ExportError, match="differ from the Keras model"):
        verify_export(path, model, make_images())


def test_verify_rejects_dropout_on_export(tmp_path):
    model = build_model()

    def dropout_on(image):
        probabilities = model(scale(image), training=True)
        return {"probabilities": probabilities, "class_id": tf.argmax(probabilities, axis=-1)}

    path = write_custom_export(model, tmp_path / "m", dropout_on)
    with pytest.raises(ExportError) as caught:
        verify_export(path, model, make_images())
    message, details = str(caught.value), caught.value.details
    assert "\n" not in message and "failed verification" in message
    assert "random ops" in message and "differ" in message
    assert details["passed"] is False
    assert details["bitwise_repeatable"] is False
    assert any("StatelessRandomUniformV2" in entry for entry in details["random_ops"])


def test_verify_rejects_export_of_a_different_model(tmp_path):
    model, other = build_model(seed=0), build_model(seed=1)
    path = export_saved_model(other, tmp_path / "m")
    with pytest.raises(ExportError) as caught:
        verify_export(path, model, make_images())
    details = caught.value.details
    assert "probabilities differ from the Keras model" in str(caught.value)
    assert details["random_ops"] == [] and details["bitwise_repeatable"] is True
    assert details["max_abs_diff_vs_keras"] > details["tolerance"]


def test_verify_rejects_wrong_signature(tmp_path):
    model = build_model()

    def unnamed(image):
        return {"output_0": model(scale(image), training=False)}

    path = write_custom_export(model, tmp_path / "m", unnamed)
    with pytest.raises(ExportError, match="signature: outputs are"):
        verify_export(path, model, make_images())


def test_verify_rejects_images_of_the_wrong_shape(prob_export):
    model, path = prob_export
    with pytest.raises(ValueError, match=r"\(9, 9, 1\).*\(8, 8, 1\)"):
        verify_export(path, model, np.zeros((2, 9, 9, 1), np.uint8))


@pytest.mark.parametrize(
    "op_type",
    ["RandomUniform", "RandomStandardNormal", "StatelessRandomUniformV2",
     "StatelessRandomGetKeyCounter", "Multinomial", "StatelessMultinomial",
     "TruncatedNormal", "StatefulUniform", "RngReadAndSkip", "RandomShuffle",
     "StatelessShuffle", "AnonymousSeedGenerator", "NonDeterministicInts"],
)
def test_random_op_predicate_catches_rng_ops(op_type):
    assert is_random_op(op_type)


@pytest.mark.parametrize(
    "op_type",
    ["MatMul", "Softmax", "StatelessIf", "StatelessWhile", "StatefulPartitionedCall",
     "StringJoin", "Lgamma", "ReadVariableOp", "ArgMax"],
)
def test_random_op_predicate_ignores_deterministic_ops(op_type):
    assert not is_random_op(op_type)


# --------------------------------------------------------------- atomicity


def test_reexport_replaces_existing_export(tmp_path):
    first, second, images = build_model(seed=0), build_model(seed=1), make_images()
    path = export_saved_model(first, tmp_path / "m")
    assert export_saved_model(second, tmp_path / "m") == path
    assert verify_export(path, second, images)["passed"]
    assert leftovers(path) == []


def test_crash_mid_export_keeps_previous_export(tmp_path, monkeypatch):
    first, second, images = build_model(seed=0), build_model(seed=1), make_images()
    path = export_saved_model(first, tmp_path / "m")
    before = serve(path, images)

    def crash_half_way(archive, directory):
        os.makedirs(os.path.join(directory, "variables"))
        with open(os.path.join(directory, "saved_model.pb"), "wb") as partial:
            partial.write(b"\x08\x01")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export, "_write_archive", crash_half_way)
    with pytest.raises(WriteError, match="No space left on device") as caught:
        export_saved_model(second, path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert leftovers(path) == []
    np.testing.assert_array_equal(serve(path, images)["probabilities"], before["probabilities"])
    assert verify_export(path, first, images)["passed"]


def test_incomplete_write_never_reaches_path(tmp_path, monkeypatch):
    # Saving "succeeds" but leaves no variables: must not replace anything.
    monkeypatch.setattr(export, "_write_archive", lambda archive, directory: os.makedirs(directory))
    with pytest.raises(ExportError, match="incomplete"):
        export_saved_model(build_model(), tmp_path / "m")
    assert not os.path.exists(tmp_path / "m")
    assert leftovers(tmp_path / "m") == []


def test_stale_temp_dirs_of_dead_exporters_are_removed(tmp_path):
    for stale in (f".m.tmp-{DEAD_PID}", f".m.old-{DEAD_PID}", f".m.tmp-{os.getpid()}"):
        os.makedirs(tmp_path / stale / "variables")
    live = tmp_path / f".m.tmp-{os.getppid()}"  # a running process may still be writing
    os.makedirs(live)
    path = export_saved_model(build_model(), tmp_path / "m")
    assert leftovers(path) == [live.name]


# ----------------------------------------------------------- mixed precision


def test_mixed_bfloat16_model_exports_float32_and_verifies(tmp_path, bfloat16_policy):
    model = build_model()
    assert model.outputs[0].dtype == "bfloat16"
    path = export_saved_model(model, tmp_path / "m")
    served = serve(path, make_images())
    assert served["probabilities"].dtype == np.float32
    # bf16 softmax rows sum to 1 only to within a few bf16 ulps (2**-8 each).
    np.testing.assert_allclose(served["probabilities"].sum(axis=-1), 1.0, atol=1e-2)
    report = verify_export(path, model, make_images())
    assert report["passed"] and report["tolerance"] == 1e-2
    assert report["random_ops"] == []


@pytest.mark.parametrize("bad", [
    np.zeros((2,) + SHAPE, np.float32),          # pre-scaled floats instead of raw pixels
    np.zeros((2, 9, 8, 1), np.uint8),            # another image size
    np.zeros(SHAPE, np.uint8),                   # a single image without its batch axis
], ids=["float32", "wrong_size", "no_batch_axis"])
def test_serving_signature_itself_rejects_wrong_dtype_or_shape(prob_export, bad):
    _, path = prob_export
    serving = tf.saved_model.load(path).signatures["serving_default"]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        serving(image=tf.constant(bad))


@pytest.mark.parametrize("signature", ["mc_dropout", "mc_dropout_seeded", "mc_dropout_draws",
                                       "mc_dropout_draws_xla"])
@pytest.mark.parametrize("samples", [0, -1])
def test_mc_signatures_refuse_fewer_than_one_sample_naming_the_fix(prob_export, signature, samples):
    """samples=0 once answered NaN for a batch of one (not the request's), without an error."""
    _, path = prob_export
    call = tf.saved_model.load(path).signatures[signature]
    request = {"image": tf.constant(make_images(5)), "samples": tf.constant(samples)}
    if "seed" in call.structured_input_signature[1]:
        request["seed"] = tf.constant(1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be at least 1"):
        call(**request)


@pytest.mark.parametrize("signature", ["mc_dropout", "mc_dropout_seeded", "mc_dropout_draws",
                                       "mc_dropout_draws_xla"])
def test_mc_signatures_refuse_more_passes_than_they_hold_at_once(prob_export, signature):
    """samples=10**6 for one image aborted the process (std::bad_alloc): a request could take a server down."""
    from dropzoo import serving
    _, path = prob_export
    call = tf.saved_model.load(path).signatures[signature]
    seed = {"seed": tf.constant(1)} if "seed" in call.structured_input_signature[1] else {}
    for images, samples in ((1, 10**6), (5, serving.MAX_PASSES // 4), (1, 2**31 - 1)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"samples x images is the number of dropout passes "
                                                                 r"one MC call draws at once, .* at most 16384; send "
                                                                 r"fewer images per request, or fewer samples"):
            call(image=tf.constant(make_images(images)), samples=tf.constant(samples), **seed)
    answer = call(image=tf.constant(make_images(4)), samples=tf.constant(serving.MAX_PASSES // 4), **seed)
    assert all(np.isfinite(value.numpy()).all() for value in answer.values())  # at the limit: drawn


def _leaky_residual(layer):
    """A conv, a residual Add and `layer`(negative_slope=0.1): the pattern TensorFlow 2.21's oneDNN remapper fuses
    (Conv2D + BiasAdd + Add + LeakyRelu) and computes with the default slope 0.2."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    x = keras.layers.Add()([x, keras.layers.Conv2D(4, 3, padding="same")(x)])
    x = layer(negative_slope=0.1)(x)
    return keras.Model(image, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x)))


def test_a_bfloat16_export_check_runs_the_model_in_float32_where_its_tolerance_would_hide_a_rewrite(
        tmp_path, bfloat16_policy):
    from models import activations

    images = np.random.default_rng(1).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    good = _leaky_residual(activations.LeakyReLU)
    report = verify_export(export_saved_model(good, tmp_path / "good"), good, images)
    assert report["tolerance"] == 1e-2 and report["float32_graph"]["max_abs_diff_vs_eager"] <= 1e-5
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0":  # the rewrite that computes otherwise
        bad = _leaky_residual(keras.layers.LeakyReLU)
        with pytest.raises(ExportError, match=r"the model run in float32 by a TensorFlow graph differs from its "
                                              r"eager run by .* > tolerance 1e-05: a graph rewrite computes another "
                                              r"function than the model"):
            verify_export(export_saved_model(bad, tmp_path / "bad"), bad, images)
