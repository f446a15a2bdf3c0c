"""Placements for a Keras model the user already has (models/keras_model.py) and --keras_model."""
import os
import zipfile

import keras
import numpy as np
import pytest
from absl import flags
from conftest import tiny_source

import models
from dropzoo import compare
from dropzoo import config as config_lib
from dropzoo import flags as flags_lib
from dropzoo import sweep
from dropzoo import trainer
from models import placements as placements_lib

RAW = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype("float32")
L = keras.layers


def user_sequential(num_classes=10):
    """A Sequential as users write it: Rescaling, fused activations, its own Dropout layers."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
        keras.layers.MaxPooling2D(name="p1"),
        keras.layers.Dropout(0.25),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(16, activation="relu", name="d1"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(num_classes, activation="softmax", name="out"),
    ], name="user_seq")


def user_functional(num_classes=10):
    """A functional model: a residual branch, BN, a separate activation, spatial dropout, logits."""
    image = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(image)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="tanh", name="branch")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.SpatialDropout2D(0.2, name="drop_maps")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(12, activation="elu", name="fc")(x)
    return keras.Model(image, keras.layers.Dense(num_classes, name="logits_out")(x), name="user_fn")


def dropout_sites(model):
    """{layer name: (class, rate)} of the variant's dropout layers."""
    return {layer.name: (type(layer).__name__, layer.rate) for layer in models.dropout_layers(model)}


def test_a_sequential_gets_sites_named_after_its_layers_and_its_own_dropout_as_canonical():
    spec = models.describe_model(user_sequential())
    assert spec.sites() == ("c1.pre", "c1.mid", "c1.post", "p1.post", "flat.post",
                            "d1.pre", "d1.mid", "d1.post", "out.pre")
    assert spec.spatial_sites() == ("c1.pre", "c1.mid", "c1.post", "p1.post")
    assert spec.canonical == "p1.post:0.25,d1.post:0.5"
    assert (spec.outputs, spec.num_classes, spec.rescaling) == ("probabilities", 10, True)
    placements = {name: models.format_placement(p) for name, p in placements_lib.named_placements(spec).items()}
    assert placements["before_dense"] == "d1.pre:0.5"
    assert placements["before_activation"] == "d1.mid:0.5"
    assert placements["spatial"] == "p1.post:0.25:spatial,d1.post:0.5"


@pytest.mark.parametrize("build", [user_sequential, user_functional])
def test_every_placement_keeps_the_weights_and_puts_dropout_at_its_sites(build):
    model = build()
    spec = models.describe_model(model)
    raw_input = spec.rescaling  # the fold: the variant takes [0, 1] pixels, the source raw ones
    has_bn = any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    want = model(RAW, training=False).numpy()
    before = [w.copy() for w in model.get_weights()]
    for name, placement in placements_lib.named_placements(spec).items():
        variant = models.place_dropout(model, name, seed=3)
        assert dropout_sites(variant) == {
            site: ("Float32SpatialDropout2D" if s.spatial else "Float32Dropout", s.rate)
            for site, s in placement.items()}, name
        if not has_bn:  # BN trains on batch statistics: training mode is another function there
            silent = models.place_dropout(model, name, rate=0.0, seed=3)  # every site at rate 0
            got = silent(RAW / 255.0 if raw_input else RAW, training=True).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        # Dropout off: the same function whatever the placement.
        got = variant(RAW / 255.0 if raw_input else RAW, training=False).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # source untouched


def test_the_functional_model_sites_follow_its_graph():
    spec = models.describe_model(user_functional())
    # stem -> stem_bn -> stem_relu is one block: .mid before its activation, .post after it (as in the zoo).
    assert spec.sites() == ("stem.pre", "stem.mid", "stem.post", "branch.pre", "branch.mid", "branch.post",
                            "add.post", "gap.post", "fc.pre", "fc.mid", "fc.post", "logits_out.pre")
    assert spec.layer_activation("stem", "tanh") == "relu"
    assert spec.canonical == "add.post:0.2:spatial"
    assert (spec.outputs, spec.rescaling) == ("logits", False)
    # tanh and elu do not commute with a mask: mid and post are different networks.
    assert models.describe_model(user_functional()).layer_activation("fc", "relu") == "elu"


def test_variants_train_apart_from_the_source():
    model = user_sequential()
    variant = models.place_dropout(model, "canonical", seed=0)
    variant.compile(optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy")
    variant.fit(RAW / 255.0, np.array([0, 1, 2]), epochs=1, verbose=0)
    assert not np.allclose(variant.get_layer("d1").kernel.numpy(), model.get_layer("d1").kernel.numpy())


def test_masks_are_seeded_as_the_zoo_seeds_them():
    model = user_sequential()
    x = RAW / 255.0
    mid = models.place_dropout(model, "before_activation", seed=5)
    post = models.place_dropout(model, "after_activation", seed=5)
    with models.request_seed(11):
        a, b = mid(x, training=True).numpy(), post(x, training=True).numpy()
    np.testing.assert_array_equal(a, b)  # a Bernoulli mask moved across a ReLU: one network
    other = models.place_dropout(model, "before_dense", seed=5)
    with models.request_seed(11):
        assert not np.array_equal(other(x, training=True).numpy(), a)


def test_a_saved_file_registers_and_keys_variants_by_its_own_activations(tmp_path):
    path = str(tmp_path / "resnetish.keras")
    user_functional(num_classes=4).save(path)
    name = models.register_keras_model(path)
    assert name == "resnetish" and models.register_keras_model(path) == name  # same file: same model
    assert "before_activation" in models.list_placements(name)
    # stem_bn is in the first hidden layer's block: no dropout of bn_before would feed a BN, so none listed.
    assert "bn_before" not in models.list_placements(name, norm="none")
    # fc's activation is elu: moving its dropout across it changes the network.
    assert (models.construction_key(name, "before_activation")
            != models.construction_key(name, "after_activation"))
    variant = models.build(name, "before_dense", seed=0, num_classes=4, input_shape=(28, 28, 1))
    assert dropout_sites(variant) == {"fc.pre": ("Float32Dropout", 0.5)}
    with pytest.raises(ValueError, match="has 4 outputs but the data has 10 classes"):
        models.build(name, num_classes=10)
    with pytest.raises(ValueError, match=r"takes 28x28x1 images but the data has 32x32x3; give a model built for this "
                                         r"dataset \(an image folder: --image_size=28,28 --color_mode=grayscale\)"):
        models.build(name, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="activation='tanh' changes the zoo's networks"):
        models.build(name, activation="tanh")


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(10)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, 784)))


def two_inputs():
    a, b = keras.Input((28, 28, 1)), keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(keras.layers.Add()([a, b]))
    return keras.Model([a, b], keras.layers.Dense(10)(x))


def shared_layer():
    image = keras.Input((28, 28, 1))
    conv = keras.layers.Conv2D(1, 3, padding="same", name="twice")
    x = keras.layers.Flatten()(conv(conv(image)))
    return keras.Model(image, keras.layers.Dense(10)(x))


def sigmoid_output():
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(10, activation="sigmoid")])


def flat_input():
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])


def dict_input():
    image = keras.Input((28, 28, 1), name="px")
    return keras.Model({"px": image}, keras.layers.Dense(10)(keras.layers.Flatten()(image)))


def layer_named_image():
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(name="image"), keras.layers.Dense(10)])


def layer_named_like_a_site():
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(name="fl"),
                             keras.layers.Dense(16, activation="relu", name="fc"),
                             keras.layers.Dense(16, name="fc.act"), keras.layers.Dense(10)])


def spatial_dropout_1d():
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Reshape((28, 28)),
                             keras.layers.Conv1D(4, 3, activation="relu"),
                             keras.layers.SpatialDropout1D(0.3, name="sd"), keras.layers.Flatten(),
                             keras.layers.Dense(10)])


@pytest.mark.parametrize("build,message", [
    (Subclassed, "is a subclassed model (Subclassed)"),
    (spatial_dropout_1d, "is not on a 4-D feature map; the zoo's spatial dropout drops channels of [batch, H, W, C] "
                         "only: replace it with Dropout (units one by one), or remove it"),
    (dict_input, "takes its input as a dict (px); place_dropout feeds one image tensor"),
    (layer_named_image, "has a layer named 'image', a name the rewrite gives its own layers"),
    (layer_named_like_a_site, "has a layer named 'fc.act', a name the rewrite gives its own layers"),
    (two_inputs, "has 2 inputs and 1 outputs"),
    (shared_layer, "layer 'twice' is called more than once"),
    (sigmoid_output, "ends in a sigmoid activation"),
    (flat_input, "takes inputs of shape (784,)"),
])
def test_models_it_cannot_rewrite_get_one_line_why(build, message):
    model = build()
    if isinstance(model, Subclassed):
        model(RAW)
    with pytest.raises(ValueError) as info:
        models.place_dropout(model, "canonical")
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_file_with_code_is_refused_by_safe_mode(tmp_path):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x * 2.0, name="twice"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    path = str(tmp_path / "lambda.keras")
    model.save(path)
    with pytest.raises(ValueError) as info:
        models.load_keras_model(path)
    assert "safe_mode" in str(info.value) and "\n" not in str(info.value)
    # Keras' own text offers safe_mode=False, which no flag here takes; registering a class (our earlier fix)
    # cannot help a Lambda: the layer is named, and what to do instead.
    assert "its Lambda layer 'twice' stores Python code" in str(info.value)
    assert str(info.value).endswith("replace it with Keras layers (Rescaling, Activation, Reshape, ...) and save the "
                                    "model again")
    assert "safe_mode=False" not in str(info.value) and "register" not in str(info.value)
    (tmp_path / "dir.keras").mkdir()
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:  # a zip, not a model: Keras blamed safe_mode
        archive.writestr("notes.txt", "")
    for bad, message in [(str(tmp_path / "missing.keras"), "no such file"),
                         (str(tmp_path / "m.h5"), "not a .keras file"),
                         (str(tmp_path / "dir.keras"), "dir.keras: a directory; give the path of a model saved"),
                         (str(tmp_path / "other.keras"), "other.keras: a zip archive without config.json, so not a "
                                                         "whole .keras file")]:
        with pytest.raises(ValueError, match=message):
            models.load_keras_model(bad)


def train_plan(*args):
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", *args])
    return flags_lib.train_plan(fv)


def test_describe_model_takes_a_path_as_place_dropout_does_and_refuses_other_things_in_one_line(tmp_path):
    path = str(tmp_path / "seq.keras")
    user_sequential(num_classes=4).save(path)
    assert models.describe_model(path).sites() == models.describe_model(user_sequential()).sites()
    for wrong in (None, 3):  # AttributeError: 'NoneType' object has no attribute 'name'
        with pytest.raises(ValueError, match="^describe_model takes a keras.Model or the path of a .keras file, got"):
            models.describe_model(wrong)
    with pytest.raises(ValueError, match="nope.keras: no such file"):
        models.describe_model(str(tmp_path / "nope.keras"))


def test_keras_model_flag_errors_are_one_line(tmp_path):
    path = str(tmp_path / "seq.keras")
    user_sequential(num_classes=4).save(path)
    for args, message in [
        ([f"--keras_model={path}", "--network=flatten"], "give --network=SPEC or --keras_model=PATH, not both"),
        ([f"--keras_model={tmp_path}/nope.keras"], "--keras_model: "),
        ([f"--keras_model={path}", "--activation=tanh"], "activation='tanh' changes the zoo's networks"),
        ([f"--keras_model={path}", "--placement=conv3"], "unknown placement 'conv3' for seq"),
        ([f"--keras_model={path}", "--model=dense_mlp"], "the name 'dense_mlp' is a zoo network's; with "
                                                         "--keras_model, --model names your model"),
        ([f"--keras_model={path}", "--keras_weights=new"], "unknown weights 'new'; valid: kept, fresh"),
        (["--keras_weights=fresh"], "--keras_weights=fresh is for --keras_model; 'keras_mnist_cnn' is initialised "
                                    "afresh by its seed: drop --keras_weights"),
    ]:
        with pytest.raises(config_lib.ConfigError) as info:
            for config, _ in train_plan(*args):
                config_lib.validate(config)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.mark.slow
def test_a_keras_model_study_trains_groups_resumes_exports_and_compares(tmp_path):
    path = str(tmp_path / "seq_study.keras")
    user_sequential(num_classes=4).save(path)
    root = str(tmp_path / "study")
    placements = ("canonical", "after_activation", "before_activation", "before_dense")
    runs = train_plan(f"--keras_model={path}", f"--placement={','.join(placements)}", "--epochs=1",
                      "--batch_size=16", "--optimizer=adam", "--learning_rate=0.003", "--dataset=tiny",
                      f"--workdir={root}")
    assert sorted(os.path.relpath(w, root) for _, w in runs) == sorted(f"seq_study/{p}/seed0" for p in placements)
    assert sweep.plan(runs) == [0, 1, 1, 3]  # dropout moved across a ReLU is one network
    results = sweep.run_sweep(runs, source=tiny_source(), verbose=0)
    trained = [m for _, _, m in results if "identical_to" not in m]
    assert len(trained) == 3 and all(m["export_check"]["passed"] for m in trained)
    assert all(m["config"]["keras_model"] == path and m["config"]["model"] == "seq_study" for _, _, m in results)
    # The model's content (architecture and weights), which makes its runs one model wherever the file lies.
    assert {m["keras_model_sha256"] for _, _, m in results} == {models.get_spec("seq_study").digest} != {""}
    assert trained[0]["placement_sites"] == "p1.post:0.25,d1.post:0.5"
    again = sweep.run_sweep(runs, source=tiny_source(), verbose=0)  # finished: reported, not retrained
    assert [m["test_loss"] for _, _, m in again] == [m["test_loss"] for _, _, m in results]
    comparison = compare.compare_runs(root, source=tiny_source())
    table = {e["variant"]: e for e in comparison["table"]}
    assert set(table) == {f"seq_study/{p}" for p in placements}
    assert "seq_study: every seed started from the weights in seq_study.keras (--keras_model), so the seeds vary " \
           "the masks and the order of the data, not the initial weights" in " ".join(comparison["notes"])
    assert table["seq_study/before_activation"]["identical_to"] == "seq_study/after_activation"
    # The file re-saved with other weights: its finished runs were reported as the new model's.
    keras.utils.set_random_seed(5)
    user_sequential(num_classes=4).save(path)
    runs = train_plan(f"--keras_model={path}", f"--placement={','.join(placements)}", "--epochs=1",
                      "--batch_size=16", "--optimizer=adam", "--learning_rate=0.003", "--dataset=tiny",
                      f"--workdir={root}")
    with pytest.raises(trainer.RunError, match=r"^4 of the 4 runs of this sweep hold runs with other settings, so "
                       r"none trained .* holds a run trained with the --keras_model file of sha256 .* the file has "
                       r"changed since \(another model, or other weights\)"):
        sweep.run_sweep(runs, source=tiny_source(), verbose=0)


def _sequential(*layers, name="m"):
    return keras.Sequential([keras.Input((28, 28, 1)), *layers], name=name)


def _placements(model):
    spec = models.describe_model(model)
    return {name: models.format_placement(p) for name, p in placements_lib.named_placements(spec).items()}


def test_the_heads_own_dropout_keeps_its_name_and_masks_in_every_placement():
    # GAP -> Dropout(0.3) -> Dense: canonical and before_dense named the head gap.post, conv and spatial out.pre,
    # which draws other masks: conv against before_dense differed by the head's masks as well as the conv stack.
    model = _sequential(keras.layers.Conv2D(4, 3, activation="relu", name="c"), keras.layers.MaxPooling2D(name="p"),
                        keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dropout(0.3),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    got = _placements(model)
    assert got["canonical"] == got["before_dense"] == "gap.post:0.3"
    assert got["conv"] == "p.post:0.1,gap.post:0.3" and got["spatial"] == "p.post:0.1:spatial,gap.post:0.3"
    spec = models.describe_model(model)
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    with_stack_off = models.place_dropout(spec, "p.post:0,gap.post:0.3", seed=0)
    assert np.array_equal(with_stack_off(x, training=True), models.place_dropout(spec, "gap.post:0.3", seed=0)(
        x, training=True))


def test_derived_placements_keep_a_user_models_own_rates():
    """Conv, Pool, Conv, Pool, Flatten, Dropout(0.25), Dense(64, relu, 'fc'), Dropout(0.5), Dense(10)."""
    model = _sequential(keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
                        keras.layers.MaxPooling2D(name="pool1"),
                        keras.layers.Conv2D(4, 3, activation="relu", name="conv2"),
                        keras.layers.MaxPooling2D(name="pool2"), keras.layers.Flatten(name="flatten"),
                        keras.layers.Dropout(0.25), keras.layers.Dense(64, activation="relu", name="fc"),
                        keras.layers.Dropout(0.5), keras.layers.Dense(10, name="logits"))
    got = _placements(model)
    assert got["canonical"] == "fc.pre:0.25,fc.post:0.5"  # after the Flatten: fc's input, as the zoo names it
    # The head keeps its 0.5; with ReLU, canonical's head and after_activation are one network.
    assert (got["after_activation"], got["before_activation"], got["before_dense"]) == (
        "fc.post:0.5", "fc.mid:0.5", "fc.pre:0.5")
    # The dropout on fc's input is the conv-stack dropout: its 0.25 goes after each pooling layer.
    assert got["conv"] == "pool1.post:0.25,pool2.post:0.25,fc.post:0.5"
    assert got["spatial"] == "pool1.post:0.25:spatial,pool2.post:0.25:spatial,fc.post:0.5"
    name = models.register_spec(models.describe_model(model, name="fc_model"))
    assert models.construction_key(name, "after_activation") == models.construction_key(name, "before_activation")
    # Suggested sites exist in the model (not the zoo's dense1.pre).
    with pytest.raises(ValueError, match=r"or explicit sites like 'fc.pre:0.5'"):
        models.resolve_placement(name, "middle")


@pytest.mark.parametrize("layers,expected", [
    # No dropout at all: the head takes 0.5, the conv stack the default 0.1.
    ([keras.layers.Conv2D(4, 3, activation="relu", name="c"), keras.layers.MaxPooling2D(name="p"),
      keras.layers.Flatten(name="f"), keras.layers.Dense(16, activation="relu", name="d"),
      keras.layers.Dense(10, name="out")],
     {"canonical": "", "after_activation": "d.post:0.5", "before_dense": "d.pre:0.5",
      "conv": "p.post:0.1,d.post:0.5"}),
    # Dropout only before the classifier, after the last hidden dense layer: that is its head.
    ([keras.layers.Flatten(name="f"), keras.layers.Dense(16, activation="relu", name="d"),
      keras.layers.Dropout(0.3), keras.layers.Dense(10, name="out")],
     {"canonical": "d.post:0.3", "after_activation": "d.post:0.3", "before_dense": "d.pre:0.3"}),
    # Two hidden dense layers: the head is the last one's (0.5); the first's 0.2 is the input dropout.
    ([keras.layers.Flatten(name="f"), keras.layers.Dense(32, activation="relu", name="d1"),
      keras.layers.Dropout(0.2), keras.layers.Dense(16, activation="relu", name="d2"),
      keras.layers.Dropout(0.5), keras.layers.Dense(10, name="out")],
     {"canonical": "d1.post:0.2,d2.post:0.5", "after_activation": "d2.post:0.5",
      "before_activation": "d2.mid:0.5", "before_dense": "d2.pre:0.5",
      "bn_before": "d1.post:0.2,d2.post:0.5", "bn_after_last": "d2.post:0.5"}),
])
def test_derived_placements_for_other_user_layouts(layers, expected):
    got = _placements(_sequential(*layers))
    assert {name: got[name] for name in expected} == expected
    assert "conv" in got if any(isinstance(layer, keras.layers.Conv2D) for layer in layers) else "conv" not in got


def test_a_user_models_stacked_sites_are_refused_unless_asked_for():
    model = _sequential(keras.layers.Conv2D(4, 3, activation="relu", name="c"), keras.layers.MaxPooling2D(name="p"),
                        keras.layers.Flatten(name="f"), keras.layers.Dense(16, activation="relu", name="d"),
                        keras.layers.Dense(10, name="out"))
    spec = models.describe_model(model)
    assert spec.tensor_of("p.post") == spec.tensor_of("f.post") == spec.tensor_of("d.pre")
    with pytest.raises(ValueError, match="sites 'p.post' and 'd.pre' are the same tensor"):
        models.place_dropout(model, "p.post:0.25,d.pre:0.5")
    variant = models.place_dropout(model, "p.post:0.25,d.pre:0.5:stack")
    assert set(dropout_sites(variant)) == {"p.post", "d.pre"}


def _feeds(variant):
    """{dropout layer name: (the layer it reads, the layers that read it)} of a variant."""
    found = {}
    for layer in models.dropout_layers(variant):
        node = variant.get_layer(layer.name)._inbound_nodes[0]
        source = node.input_tensors[0]._keras_history[0].name
        readers = [other.name for other in variant.layers for n in other._inbound_nodes
                   for t in n.input_tensors if t._keras_history[0] is layer]
        found[layer.name] = (source, readers)
    return found


@pytest.mark.parametrize("block,mid_reader,post_source", [
    # Dense -> Activation layer: .post after the activation, .mid before it.
    ([keras.layers.Dense(32, name="fc"), keras.layers.Activation("tanh", name="fcact")], "fcact", "fcact"),
    # The Keras BN idiom, Dense -> BN -> ReLU: no BN is fed by the head dropout; .mid is between BN and ReLU.
    ([keras.layers.Dense(32, use_bias=False, name="fc"), keras.layers.BatchNormalization(name="fcbn"),
      keras.layers.Activation("relu", name="fcrelu")], "fcrelu", "fcrelu"),
    # ReLU and LeakyReLU layers are activations too.
    ([keras.layers.Dense(32, name="fc"), keras.layers.LeakyReLU(name="fcact")], "fcact", "fcact"),
    # A fused activation then BN: .mid is the split activation's input, .post after the BN.
    ([keras.layers.Dense(32, activation="relu", name="fc"), keras.layers.BatchNormalization(name="fcbn")],
     "fc.act", "fcbn"),
])
def test_a_dense_layers_block_of_bn_and_activation_layers_is_one_layer(block, mid_reader, post_source):
    """after_activation is after the block's activation (and BN), never between the dense layer and them."""
    model = _sequential(keras.layers.Conv2D(4, 3, name="c1"), keras.layers.BatchNormalization(name="c1bn"),
                        keras.layers.ReLU(name="c1relu"), keras.layers.MaxPooling2D(name="p1"),
                        keras.layers.Flatten(name="fl"), *block, keras.layers.Dropout(0.3),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    got = _placements(model)
    # Its own Dropout(0.3) after the block is the head, at its own rate, whatever the block holds.
    assert got["canonical"] == got["after_activation"] == got["bn_after_last"] == "fc.post:0.3"
    assert got["before_activation"] == "fc.mid:0.3" and got["bn_before"] == "c1.post:0.1,fc.post:0.3"
    assert _feeds(models.place_dropout(model, "after_activation", seed=0)) == {"fc.post": (post_source, ["out"])}
    assert _feeds(models.place_dropout(model, "before_activation", seed=0))["fc.mid"][1] == [mid_reader]
    # bn_before: the first BN sees no dropout; the conv block's .post is after its ReLU.
    assert _feeds(models.place_dropout(model, "bn_before", seed=0))["c1.post"] == ("c1relu", ["p1"])
    # ReLU right after .mid commutes with the mask (one network); tanh, or BN in between, do not.
    name = models.register_spec(models.describe_model(model, name=f"block_{type(block[-1]).__name__}_{len(block)}"))
    same = models.construction_key(name, "after_activation") == models.construction_key(name, "before_activation")
    assert same == (mid_reader == "fcrelu")
    # BN of its own in fc's block, fed by bn_before's dropout after c1: --placement=all (norm none, as for every
    # Keras model) trains the BN placements too; without BN there, c1bn alone is fed by no dropout.
    has_bn = {"bn_before", "bn_after_last"} <= set(models.list_placements(name, norm="none"))
    assert has_bn == any(isinstance(layer, keras.layers.BatchNormalization) for layer in block)


@pytest.mark.parametrize("where", ["dense", "activation_layer"])
def test_an_activity_regularizer_between_mid_and_post_keeps_them_apart(where):
    # It reads the activations: dropped before them at .mid, not at .post, so the two train differently.
    penalty = {"activity_regularizer": "l2"}
    fc = keras.layers.Dense(8, activation="relu", name="fc", **(penalty if where == "dense" else {}))
    block = [fc] if where == "dense" else [keras.layers.Dense(8, name="fc"),
                                           keras.layers.Activation("relu", name="fcrelu", **penalty)]
    model = _sequential(keras.layers.Flatten(name="fl"), *block, keras.layers.Dropout(0.5),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    name = models.register_spec(models.describe_model(model, name=f"penalised_{where}"))
    assert models.construction_key(name, "after_activation") != models.construction_key(name, "before_activation")


def test_a_dropout_inside_a_block_is_refused_naming_the_sites_there_are():
    model = _sequential(keras.layers.Flatten(name="fl"), keras.layers.Dense(16, name="fc"), keras.layers.Dropout(0.2),
                        keras.layers.BatchNormalization(name="fcbn"), keras.layers.ReLU(name="fcrelu"),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    with pytest.raises(ValueError, match=r"is inside the block fc -> fcbn -> fcrelu, after 'fc', where no site is: "
                                         r"place_dropout names fc.pre, fc.mid \(before its activation\) and fc.post "
                                         r"\(after 'fcrelu', the block's end\)"):
        models.describe_model(model)
    # Dense(relu) -> Dropout -> BN: the dropout is after the activation the dense layer runs itself, and says so.
    fused = _sequential(keras.layers.Flatten(name="fl"), keras.layers.Dense(16, activation="relu", name="fc"),
                        keras.layers.Dropout(0.2), keras.layers.BatchNormalization(name="fcbn"),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    with pytest.raises(ValueError, match=r"inside the block fc \(relu\) -> fcbn, after 'fc' and its relu, where no "
                                         r"site is: .* and fc.post \(after 'fcbn', the block's end\)"):
        models.describe_model(fused)


def test_dropout_on_the_images_before_a_flatten_is_the_flattened_inputs_site():
    """Input -> Dropout -> Flatten -> Dense was refused as 'not at a site', though unit by unit it drops what
    the dense layer's input site drops; channels dropped whole before a Flatten have no such site."""
    model = _sequential(keras.layers.Dropout(0.2), keras.layers.Flatten(name="f"),
                        keras.layers.Dense(16, activation="relu", name="fc"), keras.layers.Dropout(0.5),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    got = _placements(model)
    assert got["canonical"] == "fc.pre:0.2,fc.post:0.5" and got["before_dense"] == "fc.pre:0.5"
    spatial = _sequential(keras.layers.SpatialDropout2D(0.2), keras.layers.Flatten(name="f"),
                          keras.layers.Dense(10, activation="softmax", name="out"))
    with pytest.raises(ValueError, match=r"dropout layer .* is not at a site place_dropout can name"):
        models.describe_model(spatial)


def test_a_user_models_input_dropout_is_not_its_conv_stack_rate():
    """Dropout(0.1) on the input and Dropout(0.5) on the dense layer's input: the conv stack takes 0.5."""
    model = _sequential(keras.layers.Dropout(0.1), keras.layers.Conv2D(4, 3, activation="relu", name="c"),
                        keras.layers.MaxPooling2D(name="p"), keras.layers.Flatten(name="f"), keras.layers.Dropout(0.5),
                        keras.layers.Dense(16, activation="relu", name="fc"), keras.layers.Dense(10, name="out"))
    got = _placements(model)
    assert got["canonical"] == "c.pre:0.1,fc.pre:0.5"
    assert got["conv"] == "p.post:0.5,fc.post:0.5"


def test_the_python_api_takes_a_path_and_refuses_wrong_types_in_one_line(tmp_path):
    path = str(tmp_path / "mine.keras")
    user_sequential().save(path)
    variant = models.place_dropout(path, "none", seed=0)  # a path, as --keras_model takes
    assert models.dropout_layers(variant) == []
    for call, message in [
        (lambda: models.place_dropout(3, "none"), "place_dropout takes a keras.Model or the path of a .keras file"),
        (lambda: models.place_dropout(user_sequential(), None), "placement must be a placement's name"),
        (lambda: models.place_dropout(user_sequential(), "none", seed="a"), "seed must be an integer"),
        (lambda: models.build("keras_mnist_cnn", None), "placement must be a placement's name"),
        (lambda: models.build("keras_mnist_cnn", seed="a"), "seed must be an integer (or None), got 'a'"),
    ]:
        with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
            call()


def test_a_dropout_on_one_branch_of_a_tensor_says_the_tensor_has_other_readers():
    image = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c")(image)
    y = keras.layers.Add(name="add")([x, keras.layers.Dropout(0.2, name="drop")(x)])
    model = keras.Model(image, keras.layers.Dense(10, name="out")(keras.layers.Flatten(name="f")(y)))
    with pytest.raises(ValueError, match=r"^dropout layer 'drop' of model .* drops units of a tensor that 'add' also "
                                         r"read\(s\) without it; a .post drops a tensor for all its readers, a "
                                         r"conv/dense layer's .pre for that layer alone: .* or at c.post for all of "
                                         r"them$"):
        models.describe_model(model)


def test_a_models_own_gaussian_dropout_is_canonical_only_as_gaussian_and_alpha_dropout_is_refused():
    """canonical means the model's own dropout: drawn as another kind it would not be, so it is refused."""
    model = _sequential(keras.layers.Flatten(name="fl"), keras.layers.Dense(16, activation="relu", name="fc"),
                        keras.layers.GaussianDropout(0.3), keras.layers.Dense(10, activation="softmax", name="out"))
    assert models.describe_model(model).own_kinds == ("gaussian",)
    with pytest.raises(ValueError, match=r"own dropout of model .* is of kind gaussian, so its canonical placement "
                                         r"drawn as inverted would not be the model's own: pass --kind=gaussian"):
        models.place_dropout(model, "canonical")
    assert dropout_sites(models.place_dropout(model, "canonical", kind="gaussian"))
    assert dropout_sites(models.place_dropout(model, "after_activation"))  # a placement of its own kind's choosing
    alpha = _sequential(keras.layers.Flatten(name="fl"), keras.layers.Dense(16, activation="selu", name="fc"),
                        keras.layers.AlphaDropout(0.1), keras.layers.Dense(10, activation="softmax", name="out"))
    with pytest.raises(ValueError, match=r"is AlphaDropout, which no dropout kind here draws"):
        models.describe_model(alpha)


def test_a_variant_given_back_to_place_dropout_is_sent_to_its_source():
    model = _sequential(keras.layers.Flatten(name="fl"), keras.layers.Dense(16, activation="relu", name="fc"),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    with pytest.raises(ValueError, match=r"it looks like a variant the zoo built \(place_dropout's, or a run's "
                                         r"model.keras\): give the model it started from"):
        models.place_dropout(models.place_dropout(model, "after_activation"), "before_dense")


def test_the_head_rate_is_the_dropout_nearest_the_classifier():
    """Pool -> Dropout(0.25) -> Flatten -> Dropout(0.5) -> classifier: the head is the 0.5 on its input."""
    model = _sequential(keras.layers.Conv2D(4, 3, activation="relu", name="c1"), keras.layers.MaxPooling2D(name="p1"),
                        keras.layers.Dropout(0.25), keras.layers.Flatten(name="fl"), keras.layers.Dropout(0.5),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    got = _placements(model)
    assert got["canonical"] == "p1.post:0.25,out.pre:0.5" and got["before_dense"] == "out.pre:0.5"


@pytest.mark.parametrize("between", [lambda: keras.layers.Identity(name="x"), lambda: keras.layers.GaussianNoise(
    0.1, name="x"), lambda: keras.layers.ActivityRegularization(name="x"), lambda: keras.layers.Activation("linear",
                                                                                                         name="x")])
def test_the_head_rate_is_read_through_layers_between_the_last_dense_layer_and_its_dropout(between):
    # Dense(relu) -> GaussianNoise -> Dropout(0.3) -> classifier: canonical kept the 0.3 and every head placement
    # silently took the default 0.5, so canonical vs after_activation changed the rate as well as the place.
    got = _placements(_head(keras.layers.Dense(16, activation="relu", name="fc"), between(),
                            keras.layers.Dropout(0.3)))
    assert got["canonical"] == "x.post:0.3"
    assert (got["after_activation"], got["before_activation"], got["before_dense"]) == (
        "fc.post:0.3", "fc.mid:0.3", "fc.pre:0.3")


def _head(*layers):
    """Conv, pool, flatten, then `layers`, then a Dense(10) classifier."""
    return _sequential(keras.layers.Conv2D(4, 3, activation="relu", name="c"), keras.layers.MaxPooling2D(name="p"),
                       keras.layers.Flatten(name="f"), *layers, keras.layers.Dense(10, name="out"))


def test_two_own_dropouts_stacked_at_the_head_leave_the_head_placements_their_own_site():
    """Dropout(0.3) then Dropout(0.2) after the last dense layer: after_activation took the second's name
    (out.pre), whose masks are not fc.mid's, so before and after the activation (a ReLU between) trained twice."""
    model = _head(keras.layers.Dense(32, activation="relu", name="fc"), keras.layers.Dropout(0.3, name="da"),
                  keras.layers.Dropout(0.2, name="db"))
    got = _placements(model)
    assert got["canonical"] == "fc.post:0.3,out.pre:0.2"
    assert (got["after_activation"], got["before_activation"]) == ("fc.post:0.2", "fc.mid:0.2")
    name = models.register_spec(models.describe_model(model, name="stacked_head_model"))
    assert models.construction_key(name, "after_activation") == models.construction_key(name, "before_activation")
    three = _head(keras.layers.Dense(32, activation="relu", name="fc"), keras.layers.Dropout(0.3, name="da"),
                  keras.layers.Dropout(0.2, name="db"), keras.layers.Dropout(0.1, name="dc"))
    with pytest.raises(ValueError, match=r"^dropout layers 'da', 'db', 'dc' of model 'm' are stacked on one tensor; "
                                         r"place_dropout names two there at most"):  # (it said 'db' is at no site)
        models.describe_model(three)
    # One own dropout there keeps its own name (a Dropout after a global pooling is gap.post in every placement).
    assert _placements(_head(keras.layers.Dense(32, activation="relu", name="fc"), keras.layers.Dropout(
        0.2, name="da")))["after_activation"] == "fc.post:0.2"


def test_rms_and_unit_normalization_are_part_of_a_dense_layers_block():
    # The block stopped at RMSNormalization: fc.post (and "after the activation") was before the norm and ReLU.
    for norm in (keras.layers.RMSNormalization, keras.layers.UnitNormalization):
        got = _placements(_head(keras.layers.Dense(16, name="fc"), norm(name="n"), keras.layers.ReLU(name="r"),
                                keras.layers.Dropout(0.5)))
        assert got["canonical"] == got["after_activation"] == "fc.post:0.5"
        assert got["before_activation"] == "fc.mid:0.5"
        variant = models.place_dropout(_head(keras.layers.Dense(16, name="fc"), norm(name="n"),
                                             keras.layers.ReLU(name="r")), "after_activation")
        assert _feeds(variant)["fc.post"] == ("r", ["out"])


@pytest.mark.parametrize("layers,message", [
    (lambda: [keras.layers.Conv2D(4, 3, activation="relu", name="c"), keras.layers.MaxPooling2D(name="p"),
              keras.layers.Flatten(name="f"), keras.layers.Dense(16, name="fc"),
              keras.layers.GaussianNoise(0.1, name="gn"), keras.layers.ReLU(name="r")],
     r"^layer 'gn' \(GaussianNoise\) sits between 'fc' and its activation 'r'"),
    # Walked through: a reshape is not the end of the block's way to its activation.
    (lambda: [keras.layers.Flatten(name="f"), keras.layers.Dense(16, name="d"), keras.layers.Reshape((16,), name="rs"),
              keras.layers.ReLU(name="r")],
     r"layer 'rs' \(Reshape\) sits between 'd' and its activation 'r'"),
])
def test_a_layer_between_a_linear_layer_and_its_activation_is_refused(layers, message):
    with pytest.raises(ValueError, match=message):
        models.describe_model(_sequential(*layers(), keras.layers.Dense(10, name="out")))


@pytest.mark.parametrize("layers,site", [
    # Max pooling before the ReLU starts the next part, as in the zoo's text networks: no refusal.
    (lambda: [keras.layers.Conv2D(4, 3, name="c"), keras.layers.MaxPooling2D(name="p"), keras.layers.ReLU(name="r"),
              keras.layers.Flatten(name="f")], "p.post"),
    # So does any pooling, global pooling too.
    (lambda: [keras.layers.Conv2D(4, 3, name="c"), keras.layers.BatchNormalization(name="bn"),
              keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.ReLU(name="r")], "gap.post"),
])
def test_pooling_before_an_activation_starts_the_next_part(layers, site):
    assert site in models.describe_model(_sequential(*layers(), keras.layers.Dense(10, name="out"))).sites()


def test_conv_drops_after_the_bn_and_activation_that_follow_a_pool_not_into_them():
    # Conv -> MaxPool -> BN -> ReLU put conv's dropout on the pool's output: into the BN (the variance shift bn_before
    # shows), and before a tanh written after the pool, where Conv(tanh) -> MaxPool, the same function, drops after.
    L = keras.layers

    def block(i, *after):
        return [L.Conv2D(4, 3, use_bias=False, name=f"c{i}"), L.MaxPooling2D(name=f"p{i}"), *after]

    bn_relu = _sequential(*block(1, L.BatchNormalization(name="bn1"), L.ReLU(name="r1")),
                          *block(2, L.BatchNormalization(name="bn2"), L.ReLU(name="r2"), L.Dropout(0.25, name="d")),
                          L.Flatten(name="f"), L.Dense(16, activation="relu", name="fc"), L.Dense(10, name="out"))
    found = _placements(bn_relu)
    assert found["canonical"] == "r2.post:0.25"
    assert found["conv"] == "r1.post:0.25,r2.post:0.25,fc.post:0.5"
    assert found["spatial"] == "r1.post:0.25:spatial,r2.post:0.25:spatial,fc.post:0.5"
    written_late = _placements(_sequential(*block(1, L.Activation("tanh", name="t1")), L.Flatten(name="f"),
                                           L.Dense(16, activation="relu", name="fc"), L.Dense(10, name="out")))
    fused = _placements(_sequential(L.Conv2D(4, 3, activation="tanh", name="c1"), L.MaxPooling2D(name="p1"),
                                    L.Flatten(name="f"), L.Dense(16, activation="relu", name="fc"),
                                    L.Dense(10, name="out")))
    assert (written_late["conv"], fused["conv"]) == ("t1.post:0.1,fc.post:0.5", "p1.post:0.1,fc.post:0.5")
    # A pool the classifier's dense layer reads through its activation is the head's: conv drops after the conv.
    head = _placements(_sequential(L.Conv2D(4, 3, name="c1"), L.Conv2D(4, 3, name="c2"), L.MaxPooling2D(name="p"),
                                   L.ReLU(name="r"), L.Flatten(name="f"), L.Dense(10, name="out")))
    assert head["conv"] == "c1.post:0.1,c2.post:0.1,out.pre:0.5"


def test_adaptive_pooling_is_pooling_and_a_channel_noise_shape_is_spatial():
    got = _placements(_sequential(
        keras.layers.Conv2D(4, 3, activation="relu", name="c"), keras.layers.AdaptiveMaxPooling2D((7, 7), name="ap"),
        keras.layers.Dropout(0.25, noise_shape=(None, 1, 1, 4)), keras.layers.Flatten(name="f"),
        keras.layers.Dense(16, activation="relu", name="fc"), keras.layers.Dropout(0.5),
        keras.layers.Dense(10, name="out")))
    # The user's own channel dropout was drawn element-wise, and conv went before the adaptive pooling.
    assert got["canonical"] == "ap.post:0.25:spatial,fc.post:0.5"
    assert got["conv"] == "ap.post:0.25,fc.post:0.5"
    odd = _head(keras.layers.Dropout(0.5, noise_shape=(None, 1)), keras.layers.Dense(16, name="fc"))
    with pytest.raises(ValueError, match=r"has noise_shape \(None, 1\); the zoo drops units one by one or whole"):
        models.describe_model(odd)


def test_preprocessing_that_would_see_scaled_pixels_is_refused_and_adapted_statistics_are_kept():
    augment_first = _sequential(keras.layers.RandomTranslation(0.1, 0.1, name="shift"),
                                keras.layers.Rescaling(1 / 255, name="resc"), keras.layers.Flatten(name="f"),
                                keras.layers.Dense(10, name="out"))
    with pytest.raises(ValueError, match=r"rescales pixels in layer 'resc', which is not its first layer"):
        models.describe_model(augment_first)
    dropout_first = _sequential(keras.layers.Dropout(0.2, name="drop"), keras.layers.Rescaling(1 / 255, name="resc"),
                                keras.layers.Flatten(name="f"), keras.layers.Dense(10, name="out"))
    with pytest.raises(ValueError, match=r"rescales pixels in layer 'resc' after its input dropout; .* make 'resc' "
                                         r"the model's first layer, with the dropout after it"):
        models.describe_model(dropout_first)
    images = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1)).astype("float32")
    for pixels, refused in ((images, True), (images / 255.0, False)):
        norm = keras.layers.Normalization(name="norm")
        norm.adapt(pixels)
        model = _sequential(norm, keras.layers.Flatten(name="f"), keras.layers.Dense(10, name="out"))
        if refused:
            with pytest.raises(ValueError, match=r"normalizes its input in layer 'norm' with statistics of raw "
                                                 r"pixels \(a mean of 12"):
                models.describe_model(model)
            continue
        # Adapted statistics were copied as variables the layer never read again: mean 0, variance 1.
        variant = models.place_dropout(model, "none")
        x = images[:4] / 255.0
        np.testing.assert_allclose(variant(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_a_first_rescaling_or_normalization_made_for_unit_pixels_is_refused_not_scaled_twice():
    """A first Rescaling is folded as one of raw pixels (its scale x 255); Rescaling(2, offset=-1), made for pixels
    in [0, 1], became Rescaling(510, -1) and trained on [-1, 509] without a word. A Normalization of raw pixels was
    caught by its mean only: mean 0, variance 255^2 normalized [0, 1] pixels by 255."""
    for first, message in (
            (keras.layers.Rescaling(2.0, offset=-1.0, name="unit"), r"^model '.*' begins with 'unit' \(Rescaling, "
             r"scale 2, offset -1\), which takes raw pixels \[0, 255\] to \[-1, 509\] and pixels in \[0, 1\] to "
             r"\[-1, 1\]: it looks made for the latter; .*: divide its scale by 255"),
            (keras.layers.Rescaling(1.0, offset=-0.5, name="unit"), r"to \[-0.5, 254.5\] and pixels in \[0, 1\] to "
             r"\[-0.5, 0.5\]: it looks made for the latter"),  # centring [0, 1] pixels (folded: by 255)
            (keras.layers.Normalization(mean=0.0, variance=255.0**2, name="norm"), r"normalizes its input in layer "
             r"'norm' with statistics of raw pixels \(a standard deviation of 255\)")):
        with pytest.raises(ValueError, match=message):
            models.describe_model(_sequential(first, keras.layers.Flatten(name="f"),
                                              keras.layers.Dense(10, name="out")))
    for first in (keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="raw"), keras.layers.Rescaling(1.0, name="raw"),
                  keras.layers.Rescaling(1.0, offset=-103.939, name="caffe"),  # keras.applications' mean subtraction
                  keras.layers.Normalization(mean=0.13, variance=0.09, name="norm"),
                  keras.layers.Normalization(mean=0.5, variance=4.0, name="norm")):  # made for raw, [0, 1] pixels
        model = _sequential(first, keras.layers.Flatten(name="f"), keras.layers.Dense(10, name="out"))
        assert models.describe_model(model).rescaling == isinstance(first, keras.layers.Rescaling)


def test_an_activity_regularizer_stays_on_the_activations_output():
    model = _head(keras.layers.Dense(16, activation="relu", activity_regularizer=keras.regularizers.L1(0.01),
                                     name="fc"))
    variant = models.place_dropout(model, "none")
    x = np.random.default_rng(1).random((4, 28, 28, 1)).astype("float32")
    model(x), variant(x)
    assert float(sum(variant.losses)) == pytest.approx(float(sum(model.losses)), rel=1e-5)
    assert variant.get_layer("fc").activity_regularizer is None
    assert variant.get_layer("fc.act").activity_regularizer is not None


@pytest.mark.parametrize("build,message", [
    (lambda: keras.Model(*(lambda i: (i, keras.layers.Dense(10, name="out")(
        keras.layers.Flatten(name="f")(i / 255.0))))(keras.Input((28, 28, 1)))),
     "computes 'true_divide' (TrueDivide) with a keras.ops call or an operator on tensors between its layers"),
    (lambda: _head(keras.layers.Dense(16, activation="relu", name="fc:1")),
     "has a layer named 'fc:1'; its sites are written LAYER.SLOT:RATE,... so a layer name cannot hold"),
    # It was "a softmax that does not follow a linear Dense/conv layer", which it does, but for the dropout.
    (lambda: _sequential(keras.layers.Flatten(), keras.layers.Dense(10, name="logits"),
                         keras.layers.Dropout(0.1, name="drop"), keras.layers.Softmax()),
     "drops the classifier's logits ('drop', before its softmax), a site the zoo does not place; move that"),
])
def test_models_with_ops_or_unwritable_layer_names_are_refused(build, message):
    with pytest.raises(ValueError) as info:
        models.describe_model(build())
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_damaged_file_is_named_as_damaged(tmp_path):
    path = tmp_path / "cut.keras"
    user_sequential().save(str(path))
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ValueError, match=r"cut.keras: not a .keras archive \(a .keras file is a zip archive"):
        models.load_keras_model(str(path))


def test_a_kind_that_would_refuse_canonical_is_refused_before_anything_trains(tmp_path):
    # --kind=classic on a model with its own (inverted) dropout: canonical failed after the others had been
    # grouped with it as identical, and those were lost with it.
    path = str(tmp_path / "own_inverted.keras")
    user_sequential().save(path)
    with pytest.raises(config_lib.ConfigError, match=r"is of kind inverted, so its canonical placement drawn as "
                                                     r"classic would not be the model's own"):
        for config, _ in train_plan(f"--keras_model={path}", "--placement=canonical,conv", "--kind=classic"):
            config_lib.validate(config)
    with pytest.raises(config_lib.ConfigError, match=r"the name 'keras_mnist_cnn' is a zoo network's"):
        train_plan(f"--keras_model={path}", "--model=keras_mnist_cnn")


def test_noise_shapes_are_read_against_the_input_shape():
    def canonical(shape):
        return models.describe_model(_sequential(
            keras.layers.Conv2D(4, 3, activation="relu", name="c"), keras.layers.Dropout(0.3, noise_shape=shape),
            keras.layers.Flatten(name="f"), keras.layers.Dense(10, name="o"))).canonical

    # None is the input's own size: these are element-wise dropout, as Keras draws them.
    assert canonical((None, None, None, 4)) == canonical((None, 26, 26, 4)) == "c.post:0.3"
    assert canonical((None, 1, 1, None)) == canonical((None, 1, 1, 4)) == "c.post:0.3:spatial"
    with pytest.raises(ValueError, match=r"has noise_shape \(1, 1, 1, 4\)"):  # one mask for the whole batch
        canonical((1, 1, 1, 4))


def test_a_folded_rescaling_lets_later_preprocessing_be_and_an_unfoldable_one_says_why():
    # Rescaling(1/255) first, then Rescaling(2, offset=-1): the second sees what it saw in the source.
    twice = _sequential(keras.layers.Rescaling(1 / 255, name="r1"), keras.layers.Rescaling(2.0, offset=-1.0, name="r2"),
                        keras.layers.Conv2D(4, 3, name="c"), keras.layers.Flatten(name="f"),
                        keras.layers.Dense(10, name="o"))
    variant = models.place_dropout(twice, "none")
    np.testing.assert_allclose(variant(RAW / 255.0).numpy(), twice(RAW).numpy(), rtol=1e-4, atol=1e-5)
    image = keras.Input((28, 28, 1))
    shared_input = _two_branches(image, keras.layers.Rescaling(1 / 255, name="r")(image), image)
    with pytest.raises(ValueError, match=r"rescales its input in its first layer 'r', but other layers read the "
                                         r"input too"):
        models.describe_model(shared_input)


def _two_branches(image, left, right):
    """A model of `image` reading `left` and `right` through Flatten layers 'f1' and 'f2', concatenated."""
    merged = keras.layers.Concatenate(name="cat")([keras.layers.Flatten(name="f1")(left),
                                                   keras.layers.Flatten(name="f2")(right)])
    return keras.Model(image, keras.layers.Dense(10, name="o")(merged))


def test_input_dropout_after_preprocessing_is_not_the_conv_stack_rate():
    got = _placements(_sequential(
        keras.layers.RandomFlip(name="fl"), keras.layers.Dropout(0.2),
        keras.layers.Conv2D(4, 3, activation="relu", name="c"), keras.layers.MaxPooling2D(name="p"),
        keras.layers.Flatten(name="f"), keras.layers.Dense(16, activation="relu", name="d"),
        keras.layers.Dropout(0.5), keras.layers.Dense(10, name="o")))
    assert got["conv"] == "p.post:0.1,d.post:0.5"  # was p.post:0.2, the input dropout's rate


def test_a_rate_zero_dropout_is_no_dropout():
    # Dropout(0.0) as a placeholder gave every head placement rate 0: four runs of `none`.
    got = _placements(_head(keras.layers.Dense(16, activation="relu", name="fc"), keras.layers.Dropout(0.0)))
    assert got["canonical"] == "" and got["after_activation"] == "fc.post:0.5"


def test_the_float32_copy_for_tflite_keeps_adapted_statistics():
    from dropzoo import artifacts

    norm = keras.layers.Normalization(name="norm")
    norm.adapt(np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32") + 0.5)
    model = _sequential(norm, keras.layers.Flatten(name="f"), keras.layers.Dense(10, name="out"))
    x = np.random.default_rng(1).random((4, 28, 28, 1)).astype("float32")
    # The copy's mean was 0 and its variance 1: the TFLite export failed its check after training.
    np.testing.assert_allclose(artifacts.float32_copy(model)(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_no_bn_placements_where_a_bn_follows_the_last_hidden_layer():
    # A pre-activation residual block: conv_b -> Add -> BN. bn_after_last put dropout into that BN.
    image = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(image)
    y = keras.layers.ReLU(name="r_a")(keras.layers.BatchNormalization(name="bn_a")(x))
    y = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(y)
    y = keras.layers.ReLU(name="r_b")(keras.layers.BatchNormalization(name="bn_b")(y))
    y = keras.layers.Conv2D(8, 3, padding="same", name="conv_b")(y)
    z = keras.layers.BatchNormalization(name="bn_f")(keras.layers.Add(name="add")([x, y]))
    z = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.ReLU(name="r_f")(z))
    spec = models.describe_model(keras.Model(image, keras.layers.Dense(10, activation="softmax", name="pred")(z)))
    assert spec.norm_after_hidden
    assert not set(placements_lib.BN_PLACEMENTS) & set(placements_lib.named_placements(spec))


def test_an_rgb_model_on_grayscale_images_names_the_colour_mode():
    model = keras.Sequential([keras.Input((28, 28, 3)), keras.layers.Flatten(name="f"), keras.layers.Dense(10)],
                             name="rgb")
    with pytest.raises(ValueError, match=r"takes 28x28x3 images but the data has 28x28x1; give a model built for "
                                         r"this dataset \(an image folder: --color_mode=rgb\)"):
        models.keras_rewrite.build_placed(models.describe_model(model), {}, input_shape=(28, 28, 1))


def test_an_input_dropout_read_by_two_branches_says_so():
    image = keras.Input((28, 28, 1))
    dropped = keras.layers.Dropout(0.2, name="in_drop")(image)
    model = _two_branches(image, dropped, dropped)
    with pytest.raises(ValueError, match=r"dropout layer 'in_drop' of model '.*' drops the model's input for 2 "
                                         r"layers \('f1', 'f2'\); a site on the input is one layer's .pre"):
        models.describe_model(model)


@pytest.mark.parametrize("source", ["zoo", "keras"])
def test_mid_and_post_of_one_layer_draw_two_masks_not_one_twice(source):
    """Sharing a stream, a unit dropped at `.mid` was dropped at `.post`: half kept, each scaled 4x, so the
    layer's expected output doubled in training. Two masks keep a quarter, and the expectation."""
    sites = "d1.mid:0.5,d1.post:0.5"
    if source == "zoo":
        model = models.build("dense_mlp", sites.replace("d1", "dense1"), seed=3)
        linear, post = "dense1", "dense1.post"
    else:
        user = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(2048, name="d1"), keras.layers.Dropout(0.5),
                                 keras.layers.ReLU(name="r1"), keras.layers.Dropout(0.5), keras.layers.Dense(10)])
        model = models.place_dropout(user, "canonical", seed=3)
        assert {layer.name for layer in models.dropout_layers(model)} == {"d1.mid", "d1.post"}
        linear, post = "d1", "d1.post"
    x = np.random.default_rng(0).uniform(size=(96, 28, 28, 1)).astype("float32")
    before = keras.Model(model.input, model.get_layer(linear).output)(x).numpy()
    after = keras.Model(model.input, model.get_layer(post).output)(x, training=True).numpy()
    positive = before > 0
    kept = after[positive] != 0
    assert positive.sum() > 5000 and abs(kept.mean() - 0.25) < 0.03, kept.mean()
    np.testing.assert_allclose(after[positive][kept], 4 * before[positive][kept], rtol=1e-5)


def _attention(dropout):
    image = keras.Input((28, 28, 1))
    rows = keras.layers.Reshape((28, 28))(image)
    attended = keras.layers.MultiHeadAttention(2, 8, dropout=dropout, name="mha")(rows, rows)
    return keras.Model(image, keras.layers.Dense(10)(keras.layers.Flatten()(attended)))


@pytest.mark.parametrize("build,message", [
    # Accepted before: `none` still dropped inside the layer, and canonical was "identical" to it.
    (lambda: _sequential(L.Reshape((28, 28)), L.LSTM(8, dropout=0.3, recurrent_dropout=0.2, name="rnn"), L.Dense(10)),
     "layer 'rnn' of model 'm' drops units itself (dropout=0.3, recurrent_dropout=0.2), which no placement moves or "
     "removes, so `none` would still drop: set it to 0"),
    (lambda: _sequential(L.Reshape((28, 28)), L.Bidirectional(L.GRU(8, dropout=0.25), name="bi"), L.Dense(10)),
     "layer 'bi' of model 'm' drops units itself (dropout=0.25), which"),
    (lambda: _attention(0.3), "layer 'mha' of model 'functional"),
    # Accepted before, with a channels-last spatial mask on channels-first maps (it zeroed columns).
    (lambda: _sequential(L.Permute((3, 1, 2)), L.Conv2D(4, 3, data_format="channels_first", name="cf"),
                         L.Flatten(), L.Dense(10)),
     "layer 'cf' of model 'm' is channels_first; the zoo's sites and spatial masks take [batch, H, W, C]"),
    # Failed later with "Could not interpret activation function identifier: {...}".
    (lambda: _head(L.Dense(16, activation=L.LeakyReLU(negative_slope=0.2), name="fc")),
     "layer 'fc' of model 'm' has the activation 'LeakyReLU', which is no built-in activation's name; the rewrite"),
    # A wrapped dropout layer drops as a Dropout does, out of every placement's reach.
    (lambda: _sequential(L.Reshape((28, 28)), L.TimeDistributed(L.Dropout(0.5), name="td"), L.Flatten(), L.Dense(10)),
     "layer 'td' of model 'm' wraps dropout layer"),
    # Always-on dropout (MC sampling in the model) became train-only dropout in canonical without a word.
    (lambda: (lambda i: keras.Model(i, L.Dense(10)(L.Dropout(0.5, name="mc")(L.Flatten()(i), training=True))))(
        keras.Input((28, 28, 1))),
     "is called with training=True, so it drops always; the trainer drops in training only (eval.py --mc_samples"),
    # A second activation: after_activation dropped after the ReLU, before the tanh, without a word.
    (lambda: _head(L.Dense(16, activation="relu", name="fc"), L.Activation("tanh", name="t")),
     "layer 't' is a second activation after 'fc''s, so \"after the activation\" would fall between the two"),
    (lambda: _head(L.Dense(16, activation="relu", name="fc"), L.BatchNormalization(), L.ReLU(name="r")),
     "layer 'r' is a second activation after 'fc''s"),
    # The first an identity layer: "a second activation after 'fc''s", though 'fc' has none.
    (lambda: _head(L.Dense(16, name="fc"), L.Activation("linear", name="lin"), L.ReLU(name="r")),
     "layer 'r' follows 'lin', a linear (identity) activation after 'fc', so \"after the activation\" would fall "
     "between the two: remove 'lin' and save the model again"),
    # Passed --dry_run, then failed in Keras' loss while training.
    (lambda: _sequential(L.Conv2D(4, 3), L.MaxPooling2D(), L.Dense(10, activation="softmax")),
     "model 'm' outputs (13, 13, 10) per image; the zoo trains classifiers with one score per class"),
])
def test_models_no_placement_could_be_faithful_to_are_refused_in_one_line(build, message):
    with pytest.raises(ValueError) as info:
        models.describe_model(build())
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    models.describe_model(_sequential(L.Reshape((28, 28)), L.LSTM(8), L.Dense(10)))  # without its own dropout
    models.describe_model(_attention(0.0))
    # A Flatten's data_format orders the flattened units only; a softmax after a Flatten is no conv's activation.
    models.describe_model(_sequential(L.Conv2D(4, 3), L.Flatten(data_format="channels_first"), L.Dense(10)))
    models.describe_model(_sequential(L.Conv2D(4, 3), L.Flatten(), L.Softmax(), L.Dense(10)))


def test_the_structure_decides_each_placement_in_shapes_the_zoo_lacks():
    # 1-D feature maps have no channels to drop whole: no `spatial` (it was `conv` under another name).
    conv1d = _placements(_sequential(L.Reshape((28, 28)), L.Conv1D(4, 3, activation="relu", name="c"),
                                     L.MaxPooling1D(name="p"), L.Flatten(), L.Dense(16, activation="relu", name="fc"),
                                     L.Dense(10)))
    assert "spatial" not in conv1d and conv1d["conv"] == "p.post:0.1,fc.post:0.5"
    # A softmax layer inside the network is its layer's activation, as a fused one is.
    model = _sequential(L.Flatten(), L.Dense(16, name="d"), L.Softmax(name="sm"), L.Dense(10))
    assert _placements(model)["before_activation"] == "d.mid:0.5"
    assert [layer.name for layer in models.place_dropout(model, "after_activation").layers][2:5] == [
        "d", "sm", "d.post"]
    # A Dense on a feature map works per position, as a 1x1 conv: the head is the classifier's input.
    per_position = _placements(_sequential(L.Conv2D(4, 3, activation="relu", name="c1"),
                                           L.Dense(8, activation="relu", name="px"), L.MaxPooling2D(name="p"),
                                           L.GlobalAveragePooling2D(name="gap"), L.Dense(10, name="out")))
    assert per_position["before_dense"] == "out.pre:0.5" and "after_activation" not in per_position
    # Dropout after a folded Rescaling is on the images as the trainer feeds them: the first conv's input.
    model = _sequential(L.Rescaling(1 / 255), L.Dropout(0.1), L.Conv2D(4, 3, activation="relu", name="c"),
                        L.Flatten(), L.Dense(10))
    assert models.describe_model(model).canonical == "c.pre:0.1"
    # A rate 6 digits cannot hold is kept whole.
    spec = models.describe_model(_head(L.Dense(16, activation="relu", name="fc"), L.Dropout(1 / 3)))
    assert spec.canonical == "fc.post:0.3333333333333333"
    assert models.dropout_layers(models.place_dropout(spec))[0].rate == 1 / 3


class Swish(keras.layers.Layer):
    """An activation written as a layer class of the user's own."""

    def call(self, x):
        return x * keras.ops.sigmoid(x)


class NoConfig(keras.layers.Layer):
    """A layer whose constructor takes an argument its config does not give back."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def call(self, x):
        return x * self.k


class Unconfigurable(keras.layers.Layer):
    def call(self, x):
        return x

    def get_config(self):
        raise NotImplementedError


class OwnDropout(keras.layers.Layer):
    """Dropout written by hand: keras.random.dropout at a rate its config names SETTING, no Keras dropout class."""

    SETTING = "rate"

    def __init__(self, rate=0.5, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def call(self, x, training=None):
        return keras.random.dropout(x, self.rate) if training else x

    def get_config(self):
        return {**super().get_config(), self.SETTING: self.rate}


class DropPath(OwnDropout):
    """Stochastic depth's name for its rate."""

    SETTING = "drop_prob"

    def __init__(self, drop_prob=0.2, **kwargs):
        super().__init__(drop_prob, **kwargs)


class DenseBlock(keras.layers.Layer):
    """A block holding Keras layers, one of them a Dropout."""

    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units, self.dense = units, keras.layers.Dense(units, activation="relu")
        self.drop = keras.layers.Dropout(0.4)

    def call(self, x, training=None):
        return self.drop(self.dense(x), training=training)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class Holder(keras.layers.Layer):
    """A block whose get_config forgets Layer's own (super().get_config()): rebuilt, it has another name."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units, self.dense = units, keras.layers.Dense(units)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        return {"units": self.units}


class Scale(keras.layers.Layer):
    """Nothing random: a `rate` of 1 or more is no dropout's (a scale, a dilation)."""

    def __init__(self, rate=2.0, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.placeholder = rate, keras.layers.Dropout(0.0)  # a Dropout(0.0) drops nothing

    def call(self, x):
        return self.placeholder(x) * self.rate

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class Flip(keras.layers.RandomFlip):
    """Keras' own augmentation, subclassed: augmentation still."""


class FlipDrop(keras.layers.RandomFlip):
    """Keras' augmentation subclassed, with a Dropout of its own inside: the Dropout still drops in `none`."""

    def __init__(self, mode="horizontal", **kwargs):
        super().__init__(mode, **kwargs)
        self.drop = keras.layers.Dropout(0.5)

    def call(self, x, training=None):
        return self.drop(super().call(x, training=training), training=training)


class Solarized(keras.layers.Solarization):
    """Keras' augmentation of another name than Random*, subclassed: augmentation still."""


class AlwaysOnDropout(keras.layers.Dropout):
    """MC dropout built into the model: drops at inference too."""

    def call(self, x, training=None):
        return super().call(x, training=True)


class Jitter(keras.layers.Layer):
    """Noise of the user's own, drawn from a SeedGenerator it holds."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(1)

    def call(self, x, training=None):
        return x + keras.random.normal(keras.ops.shape(x), seed=self.seed_generator) if training else x


@pytest.mark.parametrize("layers,message", [
    # Kept in every placement, `none` too, without a word: `none` still dropped in training.
    (lambda: [keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"), OwnDropout(0.3, name="od")],
     "layer 'od' of model 'm' (OwnDropout) looks like it drops units itself (rate=0.3, named as a dropout's "
     "setting), which no placement moves or removes, "
     "so `none` would still drop: take the dropout out of it"),
    (lambda: [keras.layers.Flatten(), DenseBlock(name="blk")],
     "layer 'blk' of model 'm' (DenseBlock) looks like it drops units itself (Dropout 'dropout"),
    (lambda: [keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"), DropPath(name="dp")],
     "layer 'dp' of model 'm' (DropPath) looks like it drops units itself (drop_prob=0.2, named"),
    (lambda: [FlipDrop(name="fd"), keras.layers.Flatten(), keras.layers.Dense(16, activation="relu")],
     "layer 'fd' of model 'm' (FlipDrop) looks like it drops units itself (Dropout 'dropout"),
    (lambda: [keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"), Jitter(name="j")],
     "layer 'j' of model 'm' (Jitter) looks like it drops units itself (a SeedGenerator of 'j')"),
    # Became the zoo's train-only dropout in every placement: the model's own dropped at inference too.
    (lambda: [keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"), AlwaysOnDropout(0.3, name="mc")],
     "layer 'mc' of model 'm' is of AlwaysOnDropout, a dropout class of its own; place_dropout redraws every dropout "
     "layer as the zoo's, which drops in training only"),
    # A KeyError from inside the rewrite.
    (lambda: [keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"), Holder(name="h")],
     "layer 'h' (Holder) does not rebuild from its config (it came back named 'holder"),
    # "after the activation" was put before the Swish without a word.
    (lambda: [keras.layers.Flatten(), keras.layers.Dense(16, name="d"), Swish(name="sw")],
     "layer 'sw' (Swish, a class Keras does not define) follows 'd', which has no activation, so place_dropout cannot "
     "tell whether it is the activation"),
    (lambda: [keras.layers.Flatten(), keras.layers.Dense(16, name="d"), keras.layers.Lambda(lambda x: 2 * x)],
     "is a Lambda; place_dropout rebuilds each layer from its config"),
    (lambda: [keras.layers.Flatten(), keras.layers.Dense(16, activation="relu", name="d"), Unconfigurable(name="u")],
     "layer 'u' of model 'm' (Unconfigurable) has no get_config(); place_dropout rebuilds each layer"),
    (lambda: [keras.layers.Flatten(), keras.layers.Dense(16, activation="relu", name="d"), NoConfig(2.0)],
     "layer 'no_config' (NoConfig) does not rebuild from its config (Error when deserializing class 'NoConfig'"),
])
def test_layers_of_a_users_own_class_are_refused_where_no_site_could_be_right(layers, message):
    model = _sequential(*layers(), keras.layers.Dense(10, name="out"))
    with pytest.raises(ValueError) as info:
        models.place_dropout(model, "after_activation")
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    swish_after_activation = _sequential(keras.layers.Flatten(), keras.layers.Dense(16, activation="relu", name="d"),
                                         Swish(name="sw"), keras.layers.Dense(10, name="out"))
    assert "d.post" in [layer.name for layer in models.place_dropout(swish_after_activation, "after_activation").layers]
    # Kept: a rate of 2 and a Dropout(0.0) inside (no randomness), Keras' augmentation subclassed.
    for kept in (Scale(2.0, name="s"), Flip("horizontal", name="s"), Solarized(addition_factor=0.1, name="s")):
        model = _sequential(kept, keras.layers.Flatten(), keras.layers.Dense(16, activation="relu", name="d"),
                            keras.layers.Dense(10, name="out"))
        assert "s" in [layer.name for layer in models.place_dropout(model, "after_activation").layers]


def test_a_file_with_a_class_of_ones_own_names_the_class(tmp_path):
    registered = keras.saving.register_keras_serializable(package="mine")(type("Cube", (Swish,), {}))
    path = str(tmp_path / "cube.keras")
    _sequential(keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"), registered(),
                keras.layers.Dense(10)).save(path)
    del keras.saving.get_custom_objects()["mine>Cube"]  # another Python: the class is not defined there
    with pytest.raises(ValueError, match=r"cube.keras: its class 'mine>Cube' is one of your own, which this Python "
                                         r"does not know; build the model from Keras' own layers"):
        models.load_keras_model(path)


@pytest.mark.parametrize("build,message", [
    (lambda: keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)]),
     "takes inputs of shape (28, 28); place_dropout rewrites image classifiers with one fixed-size [H, W, C] input: "
     "give grayscale images their channel axis, keras.Input(shape=(28, 28, 1))"),
    (lambda: _sequential(keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Conv2D(10, 1),
                         keras.layers.GlobalAveragePooling2D(), keras.layers.Softmax()),
     "after a global pooling, end with Dense(num_classes) and the softmax"),
    (lambda: models.place_dropout(_sequential(keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"),
                                              keras.layers.Dense(10)), "none"),
     "it looks like a variant the zoo built (place_dropout's, or a run's model.keras): give the model it started"),
])
def test_refusals_name_the_fix_for_shapes_users_write(build, message):
    with pytest.raises(ValueError) as info:
        models.place_dropout(build(), "canonical")
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_dropout_after_a_flatten_is_the_dense_layers_input_as_in_the_zoo():
    """The keras.io convnet (Flatten -> Dropout -> classifier): canonical and before_dense were two sites on one
    tensor (flatten.post, out.pre) with two mask streams, so one network trained twice as two variants."""
    model = _sequential(keras.layers.Conv2D(4, 3, activation="relu", name="c1"), keras.layers.MaxPooling2D(name="p1"),
                        keras.layers.Flatten(name="fl"), keras.layers.Dropout(0.5),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    got = _placements(model)
    assert got["canonical"] == got["before_dense"] == "out.pre:0.5"
    name = models.register_spec(models.describe_model(model, name="kio_model"))
    assert models.construction_key(name, "canonical") == models.construction_key(name, "before_dense")
    # Through a Reshape too; a dropout before a BN after the Flatten stays the Flatten's output.
    reshaped = _sequential(keras.layers.Flatten(name="fl"), keras.layers.Dropout(0.3),
                           keras.layers.Reshape((784,), name="rs"), keras.layers.Dense(10, name="out"))
    assert _placements(reshaped)["canonical"] == "out.pre:0.3"
    normed = _sequential(keras.layers.Flatten(name="fl"), keras.layers.Dropout(0.3),
                         keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(10, name="out"))
    assert _placements(normed)["canonical"] == "fl.post:0.3"
    # The same tensor without a Flatten (global pooling), or with the dropout before it: one variant, once.
    heads = ([keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dropout(0.4)],
             [keras.layers.MaxPooling2D(name="gap"), keras.layers.Dropout(0.4), keras.layers.Flatten()])
    for number, head in enumerate(heads):
        pooled = _sequential(keras.layers.Conv2D(4, 3, activation="relu", name="c1"), *head,
                             keras.layers.Dense(10, activation="softmax", name="out"))
        got = _placements(pooled)
        assert got["canonical"] == got["before_dense"] == "gap.post:0.4", got
        name = models.register_spec(models.describe_model(pooled, name=f"pooled_head{number}"))
        assert models.construction_key(name, "canonical") == models.construction_key(name, "before_dense")


def test_fresh_weights_draw_each_seeds_own_and_keep_frozen_layers(tmp_path):
    """--keras_weights=fresh: seeds are replicates of the initialisation too, as for the zoo's networks."""
    model = _sequential(keras.layers.Conv2D(4, 3, activation="relu", name="frozen"),
                        keras.layers.BatchNormalization(name="bn"), keras.layers.MaxPooling2D(name="p"),
                        keras.layers.Flatten(name="f"), keras.layers.Dense(16, activation="relu", name="fc"),
                        keras.layers.Dense(10, activation="softmax", name="out"))
    model.get_layer("frozen").trainable = False
    path = str(tmp_path / "fresh.keras")
    model.save(path)

    def weights(*args):
        [(config, _)] = train_plan(f"--keras_model={path}", "--workdir=w", *args)
        config_lib.validate(config)
        return by_layer(trainer.build_network(config, 10, (28, 28, 1)))

    def by_layer(built):
        return {f"{layer.name}/{v.name}": v.numpy() for layer in built.layers for v in layer.weights}

    source = by_layer(model)
    kept, seed1, seed1_other_placement, seed2 = (
        weights("--seed=1"), weights("--seed=1", "--keras_weights=fresh"),
        weights("--seed=1", "--keras_weights=fresh", "--placement=before_dense"),
        weights("--seed=2", "--keras_weights=fresh"))
    assert all(np.array_equal(kept[k], source[k]) for k in source)
    for k in ("fc/kernel", "out/kernel"):
        assert not np.array_equal(seed1[k], source[k]) and not np.array_equal(seed1[k], seed2[k])
        assert np.array_equal(seed1[k], seed1_other_placement[k])  # one seed, one network in every placement
    assert np.array_equal(seed1["frozen/kernel"], source["frozen/kernel"])  # frozen: the file's
    with pytest.raises(ValueError, match=r"weights='fresh' is for a Keras model of your own; 'dense_mlp' is "):
        models.build("dense_mlp", weights="fresh", seed=0)


def test_a_models_own_rate_drawn_as_0_or_1_is_refused_naming_its_layer():
    """Dropout(1e-6) was refused under the site name the rewrite gives it, with a fix ('give 0') a file cannot take."""
    for rate, what in ((1e-6, "nothing"), (0.999999, "every unit")):
        model = _sequential(keras.layers.Flatten(name="fl"), keras.layers.Dropout(rate, name="tiny"),
                            keras.layers.Dense(10, activation="softmax", name="out"))
        with pytest.raises(ValueError, match=f"dropout layer 'tiny' of model .* has rate {rate:g}, which the zoo's "
                                             f"mask generator draws .*: it would drop {what}; remove the layer"):
            models.describe_model(model)
    gaussian = _sequential(keras.layers.Flatten(name="fl"), keras.layers.GaussianDropout(1e-6, name="g"),
                           keras.layers.Dense(10, activation="softmax", name="out"))
    assert models.describe_model(gaussian).canonical == "out.pre:1e-06"
