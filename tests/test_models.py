"""The zoo's builders: exact architectures, every placement, bad arguments."""
import pathlib

import keras
import numpy as np
import pytest
from conftest import layer_table_rows

import models
from models import layers as dropout_lib
from models import network

PARAMS = {
    "keras_mnist_cnn": 1_199_882,
    "tf_layers_cnn": 3_274_634,
    "keras_io_convnet": 34_826,
    "dense_mlp": 101_770,
}
CANONICAL_LAYERS = {
    "keras_mnist_cnn": ["image", "conv1", "conv1.act", "conv2", "conv2.act", "pool1", "pool1.post",
                        "flatten", "dense1", "dense1.act", "dense1.post", "logits", "probabilities"],
    "tf_layers_cnn": ["image", "conv1", "conv1.act", "pool1", "conv2", "conv2.act", "pool2",
                      "flatten", "dense1", "dense1.act", "dense1.post", "logits"],
    "keras_io_convnet": ["image", "conv1", "conv1.act", "pool1", "conv2", "conv2.act", "pool2",
                         "flatten", "logits.pre", "logits", "probabilities"],
    "dense_mlp": ["image", "flatten", "dense1", "dense1.act", "dense1.post", "logits"],
}
CANONICAL_RATES = {
    "keras_mnist_cnn": {"pool1.post": 0.25, "dense1.post": 0.5},
    "tf_layers_cnn": {"dense1.post": 0.4},
    "keras_io_convnet": {"logits.pre": 0.5},
    "dense_mlp": {"dense1.post": 0.5},
}
REQUIRED = {"canonical", "none", "before_dense"}
CASES = [(m, p) for m in sorted(PARAMS) for p in models.list_placements(m)]
X = np.random.default_rng(0).uniform(0, 1, (4, 28, 28, 1)).astype("float32")


def test_registry_lists_the_four_networks_sorted():
    assert models.list_models() == sorted(PARAMS)


# Each network's named placements, derived from its structure (models/placements.py).
PLACEMENTS = {
    "keras_mnist_cnn": {
        "canonical": "pool1.post:0.25,dense1.post:0.5", "none": "",
        "after_activation": "dense1.post:0.5", "before_activation": "dense1.mid:0.5",
        "before_dense": "dense1.pre:0.5",
        "conv": "pool1.post:0.25,dense1.post:0.5", "spatial": "pool1.post:0.25:spatial,dense1.post:0.5",
        "bn_before": "conv1.post:0.25,conv2.post:0.25,dense1.post:0.5", "bn_after_last": "dense1.post:0.5"},
    "tf_layers_cnn": {
        "canonical": "dense1.post:0.4", "none": "", "after_activation": "dense1.post:0.4",
        "before_activation": "dense1.mid:0.4", "before_dense": "dense1.pre:0.4",
        "conv": "pool1.post:0.1,pool2.post:0.1,dense1.post:0.4",
        "spatial": "pool1.post:0.1:spatial,pool2.post:0.1:spatial,dense1.post:0.4",
        "bn_before": "conv1.post:0.1,conv2.post:0.1,dense1.post:0.4", "bn_after_last": "dense1.post:0.4"},
    "keras_io_convnet": {
        "canonical": "logits.pre:0.5", "none": "", "before_dense": "logits.pre:0.5",
        "conv": "pool1.post:0.1,logits.pre:0.5", "spatial": "pool1.post:0.1:spatial,logits.pre:0.5",
        "bn_before": "conv1.post:0.1,conv2.post:0.5", "bn_after_last": "conv2.post:0.5"},
    "dense_mlp": {
        "canonical": "dense1.post:0.5", "none": "", "after_activation": "dense1.post:0.5",
        "before_activation": "dense1.mid:0.5", "before_dense": "dense1.pre:0.5"},
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_each_network_gets_the_placements_its_structure_allows(name):
    assert REQUIRED <= set(models.list_placements(name))
    assert {p: models.format_placement(models.resolve_placement(name, p))
            for p in models.list_placements(name)} == PLACEMENTS[name]


# The planned contrasts, and the one thing each changes.
ONE_FACTOR = [("before_dense", "after_activation", "the head's site"),
              ("before_activation", "after_activation", "the head's site"),
              ("conv", "after_activation", "conv-stack dropout added"),
              ("spatial", "conv", "spatial flags"),
              ("after_activation", "none", "the head added")]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_each_planned_contrast_changes_one_thing(name):
    placements = {p: models.resolve_placement(name, p) for p in models.list_placements(name)}
    for a, b, change in ONE_FACTOR:
        if a not in placements or b not in placements:
            continue
        first, second = placements[a], placements[b]
        if change == "the head's site":
            assert len(first) == len(second) == 1 and first != second
            assert [s.rate for s in first.values()] == [s.rate for s in second.values()]
        elif change == "conv-stack dropout added":
            assert set(second) < set(first) and all(first[k] == v for k, v in second.items())
        elif change == "spatial flags":
            assert list(first) == list(second) and [s.rate for s in first.values()] == [
                s.rate for s in second.values()] and any(s.spatial for s in first.values())
        else:
            assert second == {} and len(first) == 1
    spec = models.get_spec(name)
    for placement in placements.values():  # no placement puts two masks on one tensor
        assert len({spec.tensor_of(site) for site in placement}) == len(placement)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_canonical_is_the_source_architecture(name):
    model = models.build(name)
    assert [layer.name for layer in model.layers] == CANONICAL_LAYERS[name]
    assert {layer.name: layer.rate for layer in models.dropout_layers(model)} == CANONICAL_RATES[name]
    # The sources' layer types and padding.
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if name == "tf_layers_cnn":
        assert [(c.filters, c.kernel_size, c.padding) for c in convs] == [(32, (5, 5), "same"), (64, (5, 5), "same")]
    elif convs:
        assert [(c.filters, c.kernel_size, c.padding) for c in convs] == [(32, (3, 3), "valid"), (64, (3, 3), "valid")]
    assert (model.layers[-1].name == "probabilities") == (models.get_spec(name).outputs == "probabilities")


@pytest.mark.parametrize("name,placement", CASES)
def test_every_placement_builds_right(name, placement):
    model = models.build(name, placement, seed=0)
    assert model.count_params() == PARAMS[name]
    sites = models.resolve_placement(name, placement)
    drops = models.dropout_layers(model)
    assert [layer.name for layer in drops] == list(sites)
    assert_sites_where_named(models.get_spec(name), model, sites)
    for layer in drops:
        spatial = isinstance(layer, keras.layers.SpatialDropout2D)
        assert spatial == sites[layer.name].spatial
    out = model(X, training=False).numpy()
    assert out.shape == (4, 10)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, model(X, training=False).numpy())
    if sites:
        a, b = model(X, training=True).numpy(), model(X, training=True).numpy()
        assert not np.array_equal(a, b), "training mode should draw new masks each call"
    else:
        np.testing.assert_array_equal(model(X, training=True).numpy(), out)


def assert_sites_where_named(spec, model, sites, norm="none"):
    """Each dropout layer sits where its site name says, next to the layers named for it.

    LAYER.pre comes right before LAYER; LAYER.prenorm right after the linear
    op LAYER and right before its BatchNormalization LAYER.bn; LAYER.mid right
    before the activation LAYER.act and right after LAYER.bn (norm="batch")
    or LAYER (no norm); LAYER.post right after LAYER.act where LAYER has an
    activation (conv, dense), else right after LAYER (pooling).
    """
    names = [layer.name for layer in model.layers]
    activated = {layer.name for layer in spec.layers if isinstance(layer, (network.Conv, network.Dense))}
    batch = norm == "batch"
    for site in sites:
        layer, slot = site.split(".")
        at = names.index(site)
        before, after = names[at - 1], names[at + 1]
        if slot == "pre":
            assert after == layer, (site, names)
        elif slot == "prenorm":
            assert (before, after) == (layer, f"{layer}.bn"), (site, names)
        elif slot == "mid":
            assert (before, after) == (f"{layer}.bn" if batch else layer, f"{layer}.act"), (site, names)
        else:
            assert before == (f"{layer}.act" if layer in activated else layer), (site, names)
    for layer in activated:
        assert isinstance(model.get_layer(f"{layer}.act"), keras.layers.Activation), layer
        assert (f"{layer}.bn" in names) == batch, (layer, names)
        if batch:
            assert isinstance(model.get_layer(f"{layer}.bn"), keras.layers.BatchNormalization)


def test_site_check_fails_when_an_activation_is_missing():
    """dense1.post straight after the linear op, with no activation between, is caught."""
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(128, name="dense1")(x)
    x = keras.layers.Dropout(0.5, name="dense1.post")(x)
    bad = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    spec = models.get_spec("dense_mlp")
    with pytest.raises(AssertionError):
        assert_sites_where_named(spec, bad, models.resolve_placement("dense_mlp"))
    good = models.build("dense_mlp")
    assert_sites_where_named(spec, good, models.resolve_placement("dense_mlp"))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_same_seed_same_weights_for_every_placement(name):
    first = [w.numpy() for w in models.build(name, "none", seed=3).trainable_weights]
    for placement in models.list_placements(name):
        weights = [w.numpy() for w in models.build(name, placement, seed=3).trainable_weights]
        for a, b in zip(first, weights):
            np.testing.assert_array_equal(a, b)
    other = models.build(name, "none", seed=4).trainable_weights[0].numpy()
    assert not np.array_equal(first[0], other)


def test_two_sites_on_one_tensor_are_refused_unless_stacking_is_asked_for():
    # pool1.post and dense1.pre: only Flatten between, so one tensor with two masks.
    with pytest.raises(ValueError, match=r"sites 'pool1.post' and 'dense1.pre' are the same tensor .*one dropout "
                                         r"of rate 0.625, not two placements; .*'dense1.pre:0.5:stack'"):
        models.build("keras_mnist_cnn", "pool1.post:0.25,dense1.pre:0.5")
    with pytest.raises(ValueError, match="'conv1.post' and 'conv2.pre' are the same tensor"):
        models.resolve_placement("keras_mnist_cnn", "conv1.post:0.1,conv2.pre:0.1")
    stacked = models.build("keras_mnist_cnn", "pool1.post:0.25,dense1.pre:0.5:stack")
    assert [layer.name for layer in models.dropout_layers(stacked)] == ["pool1.post", "dense1.pre"]
    # Different tensors are fine: a layer's .pre and .post, or .mid and .post.
    models.resolve_placement("keras_mnist_cnn", "dense1.pre:0.5,dense1.post:0.5,conv2.mid:0.1,conv2.post:0.1")
    with pytest.raises(ValueError, match="malformed site"):
        models.resolve_placement("keras_mnist_cnn", "dense1.pre:0.5:stak")


def test_explicit_sites_and_rate_override():
    model = models.build("keras_mnist_cnn", "conv2.post:0.1,dense1.pre:0.5")
    assert {layer.name: layer.rate for layer in models.dropout_layers(model)} == {"conv2.post": 0.1, "dense1.pre": 0.5}
    model = models.build("keras_mnist_cnn", "conv1.mid:0.2:spatial", rate=0.3)
    (layer,) = models.dropout_layers(model)
    assert isinstance(layer, keras.layers.SpatialDropout2D) and layer.rate == 0.3
    assert models.dropout_layers(models.build("dense_mlp", "")) == []


@pytest.mark.parametrize("kind,spatial,cls,keras_cls", [
    ("inverted", False, dropout_lib.Float32Dropout, keras.layers.Dropout),
    ("inverted", True, dropout_lib.Float32SpatialDropout2D, keras.layers.SpatialDropout2D),
    ("classic", False, dropout_lib.ClassicDropout, None),
    ("classic", True, dropout_lib.SpatialClassicDropout, dropout_lib.ClassicDropout),
    ("gaussian", False, dropout_lib.Float32GaussianDropout, keras.layers.GaussianDropout),
    ("gaussian", True, dropout_lib.SpatialGaussianDropout, None),
])
def test_kinds_pick_their_layer(kind, spatial, cls, keras_cls):
    model = models.build("keras_mnist_cnn", "spatial", kind=kind, seed=0)
    layer = model.get_layer("pool1.post" if spatial else "dense1.post")
    assert type(layer) is cls
    if keras_cls is not None:  # Keras' own layer underneath, computing in float32
        assert isinstance(layer, keras_cls)
    assert model(X, training=False).shape == (4, 10)
    assert dropout_lib.kind_of(layer) == (kind, spatial)
    assert dropout_lib.is_bernoulli(layer) == (kind != "gaussian")


@pytest.mark.parametrize("kind", list(dropout_lib.KINDS))
def test_the_kinds_table_is_what_every_reader_sees(kind):
    """make_dropout, kind_of, float32_call and dropout_layers all read KINDS."""
    entry = dropout_lib.KINDS[kind]
    for spatial, cls in ((False, entry.layer), (True, entry.spatial_layer)):
        layer = dropout_lib.make_dropout(kind, 0.3, spatial=spatial, seed=1)
        assert type(layer) is cls and dropout_lib.kind_of(layer) == (kind, spatial)
        assert layer.call == dropout_lib.float32_call(layer)  # the zoo's layers run their own call
    for spatial, stock, ours in ((False, entry.stock_layer, entry.layer),
                                 (True, entry.stock_spatial_layer, entry.spatial_layer)):
        if stock is not None:  # Keras' own layer: classified as the kind, run as the zoo's
            layer = stock(0.3)
            assert dropout_lib.kind_of(layer) == (kind, spatial)
            assert dropout_lib.float32_call(layer).__func__ is ours.call
    assert entry.variance(0.5) > 0 and (entry.train_scale is not None) == entry.bernoulli


def test_classic_dropout_scales_at_inference_only():
    x = np.random.default_rng(1).uniform(0.5, 1.5, (64, 6, 6, 8)).astype("float32")
    layer = dropout_lib.ClassicDropout(0.25, seed=0)
    train = layer(x, training=True).numpy()
    assert set(np.unique(train == x)) | set(np.unique(train == 0)) == {True, False}
    assert np.all((train == x) | (train == 0))
    np.testing.assert_allclose(layer(x, training=False).numpy(), 0.75 * x, rtol=1e-7)
    spatial = dropout_lib.ClassicDropout(0.5, spatial=True, seed=0)(x, training=True).numpy()
    kept = spatial != 0
    assert np.all(kept == kept[:, :1, :1, :]), "a spatial mask is constant over each feature map"
    noise = dropout_lib.SpatialGaussianDropout(0.5, seed=0)(x, training=True).numpy() / x
    np.testing.assert_allclose(noise, np.broadcast_to(noise[:, :1, :1, :], noise.shape), rtol=1e-5)


@pytest.mark.parametrize("activation", models.ACTIVATIONS)
def test_hidden_activation_option(activation):
    model = models.build("keras_mnist_cnn", activation=activation)
    acts = [layer for layer in model.layers if layer.name.endswith(".act")]
    assert len(acts) == 3
    assert all(keras.activations.serialize(layer.activation) == activation for layer in acts)


def test_num_classes_and_input_shape_options():
    model = models.build("keras_io_convnet", num_classes=3, input_shape=(32, 32, 3))
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 3)


def test_custom_layers_round_trip_through_config():
    model = models.build("keras_mnist_cnn", "spatial", kind="classic", seed=0)
    clone = keras.models.model_from_json(model.to_json())
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
    assert clone.get_layer("pool1.post").spatial


@pytest.mark.parametrize("check,value,message", [
    (models.check_kind, "alpha", "unknown dropout kind 'alpha'; valid kinds: inverted, classic, gaussian"),
    (models.check_activation, "softsign",
     "unknown activation 'softsign'; valid activations: relu, sigmoid, tanh, elu, exponential"),
    (lambda v: models.check_rate(v, what="--rate"), 1.5,
     "--rate must be in [0, 1) (1 would drop every unit), got 1.5"),
    (models.check_rate, "abc", "rate must be a number in [0, 1), got 'abc'"),
    (models.check_norm, "layer", "unknown norm 'layer'; valid norms: none, batch"),
])
def test_validators_name_the_problem_and_the_choices(check, value, message):
    with pytest.raises(ValueError) as info:
        check(value)
    assert str(info.value) == message


def test_validators_return_what_they_accept():
    assert models.check_kind("classic") == "classic"
    assert models.check_activation("tanh") == "tanh"
    assert models.check_norm("batch") == "batch"
    assert models.check_rate("0.25") == 0.25 and models.check_rate(0) == 0.0


def test_a_rate_the_mask_generator_would_draw_as_0_or_1_is_refused_for_masks_only():
    """Drawn at the nearest multiple of 2^-16 (halves to even): 2e-6 and 2^-17 itself dropped nothing (0 of 4.2e6
    units), 0.999998 every unit. Gaussian noise draws no masks: its tiny rates still train."""
    from models import layers
    from models import masks

    for rate, drawn in ((2e-6, "0: it would drop nothing"), (2**-17, "0: it would drop nothing"),
                        (0.999998, "1: it would drop every unit"), (1 - 2**-17, "1: it would drop every unit")):
        with pytest.raises(ValueError, match=f"^rate {rate:.10g} is drawn by the dropout mask generator at the nearest "
                                             f"multiple of 2\\^-16, {drawn}"):
            masks.check_drawable(rate)
        with pytest.raises(ValueError, match="is drawn by the dropout mask generator"):
            layers.make_dropout("inverted", rate)
        layers.make_dropout("gaussian", rate)
    with pytest.raises(ValueError, match=r"^rate 0.9999999 is drawn .* 1: it would drop every unit"):
        masks.check_drawable(0.9999999)  # as written: it read "rate 1 is drawn ... at 1"
    for rate in (0.0, 2**-17 * 1.01, 1e-5, 1 - 2**-16):
        masks.check_drawable(rate)
        assert 0 < masks.drawn_rate(rate) < 1 or rate == 0
    with pytest.raises(ValueError, match=r"^the rate of site dense1.post 1e-06 is drawn"):
        models.check_drawn_rates({"dense1.post": models.Site(1e-6)}, "classic")
    with pytest.raises(ValueError, match=r"^--rate 1e-06 is drawn"):  # the override, whatever the sites' own
        models.check_drawn_rates({"dense1.post": models.Site(0.5)}, "inverted", 1e-6)
    models.check_drawn_rates({"dense1.post": models.Site(1e-6)}, "inverted", 0.5)
    models.check_drawn_rates({"dense1.post": models.Site(1e-6)}, "gaussian")


@pytest.mark.parametrize("make", [
    lambda: dropout_lib.make_dropout("inverted", 1.0),
    lambda: dropout_lib.make_dropout("gaussian", 1.0, spatial=True),
    lambda: dropout_lib.ClassicDropout(-0.1),
    lambda: dropout_lib.Float32GaussianDropout(1.0),
    lambda: dropout_lib.make_dropout("dropconnect", 0.5),
])
def test_layers_check_rate_and_kind_with_the_same_messages(make):
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)|valid kinds: inverted"):
        make()


@pytest.mark.parametrize("call,needle", [
    (lambda: models.build("lenet"), "valid models: dense_mlp, keras_io_convnet"),
    (lambda: models.build("dense_mlp", "conv"), "valid placements: canonical, none"),
    (lambda: models.build("dense_mlp", "conv9.post:0.1"), "valid sites: dense1.pre"),
    (lambda: models.build("dense_mlp", kind="alpha"), "valid kinds: inverted, classic, gaussian"),
    (lambda: models.build("dense_mlp", activation="softsign"), "valid activations: relu, sigmoid"),
    (lambda: models.build("dense_mlp", rate=1.0), "[0, 1)"),
    (lambda: models.build("dense_mlp", rate=-0.1), "[0, 1)"),
    (lambda: models.build("dense_mlp", "dense1.post:1.5"), "[0, 1)"),
    (lambda: models.build("dense_mlp", "dense1.post:abc"), "[0, 1)"),
    (lambda: models.build("dense_mlp", "dense1.post"), "SITE:RATE"),
    (lambda: models.build("dense_mlp", "dense1.post:0.1:wide"), "SITE:RATE"),
    (lambda: models.build("dense_mlp", "dense1.post:0.1,dense1.post:0.2"), "given twice"),
    (lambda: models.build("dense_mlp", "dense1.post:0.1:spatial"), "cannot be spatial"),
    (lambda: models.build("dense_mlp", dropout=0.1), "valid options: rate, kind"),
    (lambda: models.build("dense_mlp", norm="layer"), "valid norms: none, batch"),
    (lambda: models.build("dense_mlp", "canonical", norm="layer"), "valid norms: none, batch"),
    (lambda: models.build("dense_mlp", "dense1.prenorm:0.5"), "only with --norm=batch"),
])
def test_bad_arguments_name_the_valid_choices(call, needle):
    with pytest.raises(ValueError) as info:
        call()
    assert needle in str(info.value)


def test_models_package_uses_keras_only():
    root = pathlib.Path(models.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        assert "import tensorflow" not in text and "tf." not in text, path


def test_the_layer_table_of_a_model_with_branches_says_what_each_layer_reads():
    """In graph order a branch's layers interleave: a dropout's next row need not read it (model.txt showed
    `bpool.post` above three convs that one of them reads)."""
    import keras

    image = keras.Input((12, 12, 1), name="image")
    stem = keras.layers.Conv2D(4, 3, activation="relu", name="tbl_stem")(image)
    wide = keras.layers.Conv2D(4, 1, activation="relu", name="tbl_wide")(stem)
    pooled = keras.layers.MaxPooling2D(3, strides=1, padding="same", name="tbl_pool")(stem)
    narrow = keras.layers.Conv2D(4, 1, activation="relu", name="tbl_narrow")(pooled)
    x = keras.layers.Flatten(name="tbl_flat")(keras.layers.Concatenate(name="tbl_cat")([wide, narrow]))
    model = keras.Model(image, keras.layers.Dense(3, activation="softmax", name="tbl_out")(x), name="tbl_branched")
    rows = {row["layer"]: row for row in layer_table_rows(dropout_lib.layer_table(models.place_dropout(model, "conv")))}
    assert rows["tbl_pool.post"]["dropout"] == "inverted, rate 0.1, one draw per unit"
    assert (rows["tbl_wide"]["reads"], rows["tbl_narrow"]["reads"]) == ("tbl_stem.act", "tbl_pool.post")
    assert rows["tbl_cat"]["reads"] == "tbl_wide.post, tbl_narrow.act"  # (the branch that does not pool drops)
    assert rows["tbl_flat"]["reads"] == ""
    assert "reads" not in dropout_lib.layer_table(models.build("keras_mnist_cnn", "canonical"))  # one chain


def test_the_layer_table_shows_each_dropout_where_the_placement_put_it():
    text = dropout_lib.layer_table(models.build("keras_mnist_cnn", "spatial", kind="classic"))
    assert text.splitlines()[0] == "keras_mnist_cnn: 13 layers, 1,199,882 trainable parameters, float32"
    rows = layer_table_rows(text)
    names = [row["layer"] for row in rows]
    assert names.index("pool1") + 1 == names.index("pool1.post") < names.index("dense1.act") + 1 == names.index(
        "dense1.post")
    assert {row["layer"]: row["dropout"] for row in rows if row["dropout"]} == {
        "pool1.post": "classic, rate 0.25, one draw per feature map",
        "dense1.post": "classic, rate 0.5, one draw per unit"}
    assert rows[names.index("conv2")] == {"layer": "conv2", "type": "Conv2D", "shape": "(None, 24, 24, 64)",
                                          "params": "18,496", "dropout": ""}


def test_networks_are_channels_last_whatever_keras_json_says():
    """Under image_data_format channels_first a 28x28x1 digit was read as 28 channels of 28x1 columns (a text
    network's conv1 had 2,024 weights, not 80) and the inverted spatial mask dropped columns, silently."""
    keras.config.set_image_data_format("channels_first")
    try:
        assert models.build("keras_mnist_cnn", input_shape=(28, 28, 1)).count_params() == 1_199_882
        model = models.build_from_spec("conv8k3same,flatten,dense16", "spatial", input_shape=(28, 28, 1),
                                       num_classes=10)
        assert model.get_layer("conv1").count_params() == 80
        drops = [layer for layer in model.layers if isinstance(layer, keras.layers.SpatialDropout2D)]
        assert drops and all(layer.data_format == "channels_last" for layer in drops)
    finally:
        keras.config.set_image_data_format("channels_last")
