"""Networks as text (models/spec_text.py): parsing, the zoo as text, errors, and a --network sweep."""
import dataclasses
import json
import os

import keras
import numpy as np
import pytest
from absl import flags
from conftest import tiny_config
from conftest import tiny_source

import models
from dropzoo import compare
from dropzoo import config as config_lib
from dropzoo import evaluate
from dropzoo import flags as flags_lib
from dropzoo import sweep
from dropzoo.errors import DataError
from models import network
from models import placements
from models import sites as sites_lib

# Each zoo network as a user would write it (the README's layer column).
ZOO_TEXT = {
    "keras_mnist_cnn": "conv32k3,conv64k3,pool2,dropout0.25,flatten,dense128,dropout0.5",
    "tf_layers_cnn": "conv32k5same,pool2,conv64k5same,pool2,flatten,dense1024,dropout0.4,logits",
    "keras_io_convnet": "conv32k3,pool2,conv64k3,pool2,flatten,dropout0.5",
    "dense_mlp": "flatten,dense128,dropout0.5,logits",
}
TINY = "conv4k3s2,pool2,flatten,dense16"  # 28x28 -> 13x13 -> 6x6x4 -> 144 -> 16
X = np.random.default_rng(0).uniform(0, 1, (2, 28, 28, 1)).astype("float32")


def same_network(spec, zoo):
    """`spec` equals the zoo network apart from its name and source."""
    return dataclasses.replace(spec, name=zoo.name, source=zoo.source) == zoo


def layer_configs(model):
    return [(type(layer), layer.get_config()) for layer in model.layers]


def test_the_example_form_parses():
    spec = models.parse_network("conv32k3,conv64k3,pool2,flatten,dense128")
    assert spec.layers == (network.Conv("conv1", 32, 3), network.Conv("conv2", 64, 3),
                           network.Pool("pool1", 2), network.Flatten(), network.Dense("dense1", 128),
                           network.Output(softmax=True))
    assert spec.canonical == "dense1.post:0.5"  # the default: after the last hidden dense layer
    assert spec.conv_rate == 0.1 and spec.outputs == "probabilities"
    assert spec.name == "conv32k3-conv64k3-pool2-flatten-dense128"
    # Spaces, case and a trailing comma do not change the network or its name.
    assert models.parse_network(" Conv32K3, conv64k3 ,pool2,FLATTEN,dense128,") == spec
    assert models.parse_network(",conv32k3,conv64k3,pool2,flatten,dense128,\n") == spec  # a file's line ends


@pytest.mark.parametrize("name", sorted(ZOO_TEXT))
def test_every_zoo_network_is_a_spec(name):
    zoo = models.get_spec(name)
    spec = models.parse_network(ZOO_TEXT[name])
    assert same_network(spec, zoo)
    assert models.parse_network(models.format_network(zoo)) == spec  # the zoo's own text form
    built, registered = models.build_from_spec(ZOO_TEXT[name], seed=0), models.build(name, seed=0)
    assert layer_configs(built) == layer_configs(registered)
    assert built.count_params() == registered.count_params()
    assert ({layer.name: layer.rate for layer in models.dropout_layers(built)}
            == {k: s.rate for k, s in models.resolve_placement(name).items()})
    assert spec.outputs == zoo.outputs
    assert models.list_placements(spec.name) == models.list_placements(name)
    np.testing.assert_array_equal(built(X).numpy(), registered(X).numpy())


@pytest.mark.parametrize("text,name", [
    ("conv32k5,pool2,conv64k5same,pool2,flatten,dense1024,dropout0.4,logits", "tf_layers_cnn"),  # padding
    ("conv32k3,conv64k3,pool2,dropout0.3,flatten,dense128,dropout0.5", "keras_mnist_cnn"),  # conv-stack rate
    ("conv32k3,pool2,conv64k3,pool2,flatten,dropout0.5,logits", "keras_io_convnet"),  # head
    ("flatten,dense128,dropout0.4,logits", "dense_mlp"),  # rate
    ("flatten,dropout0.5,dense128,logits", "dense_mlp"),  # site
])
def test_the_round_trip_check_sees_one_difference(text, name):
    assert not same_network(models.parse_network(text), models.get_spec(name))


@pytest.mark.parametrize("text", [
    "conv32k3,conv64k3,pool2,dropout0.25,flatten,dense128,dropout0.5",  # the conv-stack rate implied
    "convrate0.25,conv32k3,conv64k3,pool2,dropout0.25,flatten,dense128,dropout0.5",  # ... and written
])
def test_a_convrate_the_network_implies_is_one_network_written_or_not(text):
    spec = models.parse_network(text)
    assert same_network(spec, models.get_spec("keras_mnist_cnn"))
    config = config_lib.TrainConfig(network=text)
    assert (config.model, config.network) == ("keras_mnist_cnn", "")  # the zoo's run, however written
    other = text.replace("convrate0.25,", "").replace("pool2,dropout0.25", "pool2,dropout0.3")
    assert models.format_network(models.parse_network(other)) == models.format_network(
        models.parse_network("convrate0.3," + other)) == other  # the text as most write it, and its name


def test_runs_recorded_with_either_spelling_still_resume_under_their_names():
    text = "conv8k3,pool2,dropout0.3,flatten,dense16"
    implied, written = config_lib.TrainConfig(network=text), config_lib.TrainConfig(network="convrate0.3," + text)
    assert implied.network == written.network == text and implied.model == written.model == "conv8k3-pool2-" \
        "dropout0.3-flatten-dense16"  # the name a run of the implied spelling was filed under
    named = config_lib.TrainConfig(network="convrate0.3," + text, model="mine")  # a study's named network
    assert config_lib.differences({**named.to_dict(), "network": "convrate0.3," + text}, named) == []


@pytest.mark.parametrize("typed,normal", [
    (" pool1.post:0.250 , dense1.post:.5, ", "pool1.post:0.25,dense1.post:0.5"),
    ("pool1.post:0.25:stack:spatial", "pool1.post:0.25:spatial:stack"),
    ("none", "none"), (" , ", " , "), ("dense1.post:0.2_5,", "dense1.post:0.2_5,"),  # for validate to report
])
def test_one_placement_is_one_spelling(typed, normal):
    assert sites_lib.normalize(typed) == normal
    assert config_lib.TrainConfig(sites=typed).sites == normal
    assert config_lib.differences({**config_lib.TrainConfig().to_dict(), "sites": typed},
                                  config_lib.TrainConfig(sites=normal)) == []


@pytest.mark.parametrize("text,layer,canonical", [
    ("conv8k5same,flatten", network.Conv("conv1", 8, 5, "same"), "logits.pre:0.5"),
    ("conv8k3valid,flatten", network.Conv("conv1", 8, 3), "logits.pre:0.5"),
    ("conv8k3s2,flatten", network.Conv("conv1", 8, 3, strides=2), "logits.pre:0.5"),
    ("conv8k3sames2,flatten", network.Conv("conv1", 8, 3, "same", 2), "logits.pre:0.5"),
    ("pool3,flatten", network.Pool("pool1", 3), "logits.pre:0.5"),
    ("dropout0.1,conv8k3,flatten", network.Conv("conv1", 8, 3), "conv1.pre:0.1"),
    ("conv8k3,dropout0.2,flatten,dense4", network.Conv("conv1", 8, 3), "conv1.post:0.2"),
    ("pool2,dropout0.3,flatten", network.Pool("pool1", 2), "logits.pre:0.3"),  # one tensor: after flatten's name
    ("flatten,dropout0.2,dense4,dense8", network.Dense("dense1", 4), "dense1.pre:0.2"),
    ("flatten,dense4,dense8", network.Dense("dense2", 8), "dense2.post:0.5"),
    ("pool2,flatten,dropout0.4", network.Flatten(), "logits.pre:0.4"),
    ("flatten,dense4,dropout0,dense8,dropout0.3", network.Dense("dense2", 8),
     "dense1.post:0,dense2.post:0.3"),
])
def test_options_and_dropout_tokens(text, layer, canonical):
    spec = models.parse_network(text)
    assert layer in spec.layers and spec.canonical == canonical
    assert models.parse_network(models.format_network(spec)) == spec


def test_padding_stride_pool_and_logits_reach_the_keras_layers():
    model = models.build_from_spec("conv8k3sames2,pool3,flatten,logits", seed=0)
    conv, pool = model.get_layer("conv1"), model.get_layer("pool1")
    assert (conv.strides, conv.padding, pool.pool_size) == ((2, 2), "same", (3, 3))
    assert model.get_layer("conv1").output.shape == (None, 14, 14, 8)
    assert model.layers[-1].name == "logits" and models.parse_network("flatten,logits").outputs == "logits"
    assert models.build_from_spec("flatten").layers[-1].name == "probabilities"


def test_conv_rate_and_a_conv_stack_only_dropout_make_the_placements():
    # convrate0.2 beside the network's own 0.3 was dropped without a word: two rates for one thing.
    with pytest.raises(ValueError, match=r"^'convrate0.2' and the network's own conv-stack dropout \(0.3\) are two"):
        models.parse_network("convrate0.2,conv8k3,dropout0.3,pool2,flatten,dense16")
    # A dropout on the images is not conv-stack dropout: the convrate is the conv stack's.
    on_input = models.parse_network("convrate0.2,dropout0.3,conv8k3,pool2,flatten,dense16,dropout0.5")
    models.register_spec(on_input)
    assert models.format_placement(models.resolve_placement(on_input.name, "conv")) == \
        "pool1.post:0.2,dense1.post:0.5"
    spec = models.parse_network("conv8k3,dropout0.3,pool2,flatten,dense16")
    assert spec.canonical == "conv1.post:0.3"
    models.register_spec(spec)
    placement = {p: models.format_placement(models.resolve_placement(spec.name, p))
                 for p in ("after_activation", "conv", "bn_before")}
    # The head takes DEFAULT_HEAD_RATE (the network has none); the source's own conv-stack rate,
    # 0.3, is the rate of the conv-stack sites (after pooling) and of the dropout feeding BN.
    assert placement == {
        "after_activation": "dense1.post:0.5",
        "conv": "pool1.post:0.3,dense1.post:0.5",
        "bn_before": "conv1.post:0.3,dense1.post:0.5",
    }


def test_a_hidden_dense_layers_dropout_is_not_the_conv_stack():
    """Its 0.5 went after every pooling layer in conv and spatial; the conv stack has none of its own: 0.1."""
    spec = models.parse_network("conv8k3,pool2,conv8k3,pool2,flatten,dense64,dropout0.5,dense32,dropout0.3")
    assert placements.own_rates(spec) == (0.3, 0.1) and not models.format_network(spec).startswith("convrate")
    named = {p: sites_lib.format_placement(s) for p, s in placements.named_placements(spec).items()}
    assert named["conv"] == "pool1.post:0.1,pool2.post:0.1,dense2.post:0.3"
    assert named["spatial"] == "pool1.post:0.1:spatial,pool2.post:0.1:spatial,dense2.post:0.3"
    # Feeding BN: the conv stack's rate after each conv, the network's own after its first dense layer.
    assert named["bn_before"] == "conv1.post:0.1,conv2.post:0.1,dense1.post:0.5,dense2.post:0.3"
    # Dropout on the flattened features is the conv stack's: it feeds the first dense layer.
    flat = models.parse_network("conv8k3,pool2,flatten,dropout0.25,dense64,dropout0.5")
    assert placements.own_rates(flat) == (0.5, 0.25)
    mlp = placements.named_placements(models.parse_network("flatten,dense128,dropout0.2,dense64,dropout0.5"))
    assert sites_lib.format_placement(mlp["bn_before"]) == "dense1.post:0.2,dense2.post:0.5"


def test_the_classifiers_input_is_one_site_and_a_pool_there_leaves_the_conv_stack_its_convs():
    """A dropout before the flatten that the classifier reads was `pool1.post`, after it `logits.pre`: two names and
    two variants (canonical, before_dense) of one network. And `conv`, with the only pool on the head's tensor,
    vanished from --placement=all instead of dropping after each conv."""
    before, after = (models.parse_network(t) for t in ("conv8k3,conv8k3,pool2,dropout0.4,flatten",
                                                       "conv8k3,conv8k3,pool2,flatten,dropout0.4"))
    assert before.name == after.name == "conv8k3-conv8k3-pool2-flatten-dropout0.4"
    assert before.canonical == after.canonical == "logits.pre:0.4"
    found = {p: sites_lib.format_placement(s) for p, s in placements.named_placements(before).items()}
    assert found["before_dense"] == found["canonical"] == "logits.pre:0.4"
    assert found["conv"] == "conv1.post:0.1,conv2.post:0.1,logits.pre:0.4"
    assert found["spatial"] == "conv1.post:0.1:spatial,conv2.post:0.1:spatial,logits.pre:0.4"
    with pytest.raises(ValueError, match="are the same tensor"):  # both: two masks on one tensor, refused as before
        models.parse_network("conv8k3,pool2,dropout0.5,flatten,dropout0.3")


def test_a_pool_before_the_first_conv_is_not_the_conv_stack():
    """conv and spatial put their conv-stack dropout on the pooled images (the input), and none after a conv."""
    spec = models.parse_network("pool2,conv8k3,dropout0.3,flatten,dense16")
    found = placements.named_placements(spec)
    assert sites_lib.format_placement(found["conv"]) == "conv1.post:0.3,dense1.post:0.5"
    spec = models.parse_network("pool2,conv8k3,pool2,flatten,dense16")
    assert sites_lib.format_placement(placements.named_placements(spec)["conv"]) == "pool2.post:0.1,dense1.post:0.5"


def test_bn_before_at_a_rate_of_0_between_layers_is_bn_after_last_by_construction():
    """A dense-only network with dropout0 between its dense layers: bn_before put that 0 where it feeds BN, and was
    trained apart from bn_after_last, one network compared with itself. Under --rate it is a variant of its own."""
    spec = models.register_spec(dataclasses.replace(
        models.parse_network("flatten,dense16,dropout0,dense8,dropout0.5"), name="zero_between"))
    found = placements.named_placements(models.get_spec(spec))
    assert sites_lib.format_placement(found["bn_before"]) == "dense1.post:0,dense2.post:0.5"
    assert models.construction_key(spec, "bn_before", norm="batch") == models.construction_key(
        spec, "bn_after_last", norm="batch")
    assert models.construction_key(spec, "bn_before", norm="batch", rate=0.3) != models.construction_key(
        spec, "bn_after_last", norm="batch", rate=0.3)
    # A .mid of rate 0 beside its layer's .post still counts: it gives .post a mask stream of its own.
    assert models.construction_key(spec, "dense2.mid:0,dense2.post:0.5") != models.construction_key(
        spec, "dense2.post:0.5")
    assert models.construction_key(spec, "dense1.pre:0,dense2.post:0.5") == models.construction_key(
        spec, "dense2.post:0.5")


def test_rates_of_any_precision_have_a_text_form():
    """{rate:g} wrote 6 digits, so the round trip failed: 'has no text form' for dropout0.1234567 or 1/3."""
    for text in ("conv8k3,pool2,flatten,dense16,dropout0.1234567", "convrate0.3333333,conv8k3,pool2,flatten,dense16"):
        spec = models.parse_network(text)
        assert models.parse_network(models.format_network(spec)) == spec
    third = models.parse_network(json.dumps(["flatten", "dense8", {"type": "dropout", "rate": 1 / 3}]))
    assert placements.own_rates(third)[0] == 1 / 3 and "dropout0.3333333333333333" in models.format_network(third)
    assert models.parse_network("flatten,dense8,dropout0.1234567").name != models.parse_network(
        "flatten,dense8,dropout0.1234568").name


def test_json_form():
    objects = json.dumps([
        {"type": "conv", "filters": 4, "kernel_size": 3, "strides": 2},
        {"type": "pool", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 16},
        {"type": "dropout", "rate": 0.5}, {"type": "convrate", "rate": 0.1},
    ])
    assert models.parse_network(objects) == models.parse_network(TINY)
    assert models.parse_network(json.dumps(TINY.split(","))) == models.parse_network(TINY)
    named = models.parse_network(json.dumps({"name": "my_net", "layers": ["flatten", "logits"]}))
    assert named.name == "my_net" and named.outputs == "logits"
    assert models.parse_network("flatten", name="other").name == "other"


def test_average_pooling_is_a_token_and_a_json_field():
    """Networks that average-pool (common in users' own CNNs) had no text form: `avgpool<size>` builds Keras'
    AveragePooling2D, named poolN as a max pool is, so the placements and sites are the same."""
    spec = models.parse_network("conv8k3,avgpool2,dropout0.25,flatten,dense16")
    assert spec.layers[1] == network.Pool("pool1", 2, average=True) and spec.canonical == "pool1.post:0.25"
    assert models.format_network(spec) == "conv8k3,avgpool2,dropout0.25,flatten,dense16"
    assert spec.name != models.parse_network("conv8k3,pool2,dropout0.25,flatten,dense16").name
    assert models.parse_network(json.dumps([{"type": "conv", "filters": 8, "kernel_size": 3},
                                            {"type": "pool", "size": 2, "average": True}, "flatten", "dense16",
                                            "dropout0.5"])) == models.parse_network("conv8k3,avgpool2,flatten,dense16")
    with pytest.raises(ValueError, match="its average must be true or false, got 1"):
        models.parse_network('[{"type": "pool", "size": 2, "average": 1}, "flatten"]')
    model = models.build_from_spec("conv8k3,avgpool2,flatten,dense16", "conv", seed=0, input_shape=(12, 12, 1),
                                   num_classes=3)
    assert type(model.get_layer("pool1")) is keras.layers.AveragePooling2D
    assert "pool1.post" in [layer.name for layer in model.layers]
    x = np.random.default_rng(0).random((2, 12, 12, 1), np.float32)
    pooled = keras.Model(model.input, model.get_layer("pool1").output)(x, training=False)
    relu = keras.Model(model.input, model.get_layer("pool1").input)(x, training=False)
    np.testing.assert_allclose(pooled, keras.ops.average_pool(relu, 2, 2), rtol=1e-6)


def test_long_specs_get_a_short_stable_name():
    text = ",".join(["conv8k3same"] * 20 + ["flatten"])
    name = models.parse_network(text).name
    assert len(name) <= 80 and name.startswith("conv8k3same-conv8k3same")
    assert models.parse_network(text.replace(",", ", ")).name == name
    assert models.parse_network(text + ",dense4").name != name


VALID = ("valid: conv<filters>k<size>[same|valid][s<stride>], pool<size>, avgpool<size>, flatten, dense<units>, "
         "dropout<rate>")


@pytest.mark.parametrize("text,message", [
    ("cnv32k3,pool2,flatten", f"unknown layer 'cnv32k3' at position 1; {VALID}"),
    ("conv32k3,dense128", "'dense128' at position 2 needs 'flatten' before it"),
    ("flatten,conv32k3", "'conv32k3' at position 2 comes after 'flatten'"),
    ("flatten,pool2", "'pool2' at position 2 comes after 'flatten'"),
    ("conv32k3,pool2", "the network has no 'flatten'"),
    ("flatten,flatten", "'flatten' at position 2 is the second one"),
    ("", "the network spec has no layers"),
    ("logits", "the network spec has no layers"),
    # An empty token between two was dropped: a deleted layer trained as if never written.
    ("conv8k3,,pool2,flatten", "the network spec has an empty token between 'conv8k3' and 'pool2'"),
    ("conv8k3,pool2,flatten, ,,dense8", "the network spec has an empty token between 'flatten' and 'dense8'"),
    ("conv0k3,flatten", "'conv0k3' at position 1: filters must be a positive integer, got 0"),
    ("conv8k0,flatten", "'conv8k0' at position 1: the kernel size must be a positive integer"),
    ("conv8k3s0,flatten", "'conv8k3s0' at position 1: the stride must be a positive integer"),
    ("pool0,flatten", "'pool0' at position 1: the pool size must be a positive integer"),
    ("flatten,dense0", "'dense0' at position 2: units must be a positive integer, got 0"),
    ("flatten,dropout1", "the rate of 'dropout1' at position 2 must be in [0, 1)"),
    ("flatten,dropout-0.1", "the rate of 'dropout-0.1' at position 2 must be in [0, 1)"),
    ("flatten,dropoutx", "the rate of 'dropoutx' at position 2 must be a number in [0, 1)"),
    ("convrate1.5,flatten", "the rate of 'convrate1.5' at position 1 must be in [0, 1)"),
    ("flatten,dense8,dropout0.1,dropout0.2",
     "'dropout0.2' at position 4 puts a second dropout at dense1.post"),
    ("flatten,dropout0.1,dropout0.2", "'dropout0.2' at position 3 is a second dropout on the same input"),
    # Its rate became every placement's head rate: each of them no dropout, none of them grouped with none.
    ("flatten,dense128,dropout0", "the dropout token before the classifier has rate 0, the rate every placement's "
                                  "head dropout takes"),
    ("convrate0,conv8k3,pool2,flatten,dense16", "the conv-stack dropout rate is 0 (convrate0, or dropout0 after"),
    ("conv8k3,pool2,dropout0,flatten,dense16,dropout0.5", "the conv-stack dropout rate is 0"),
    # A dropout before a pool was carried past it onto the pool's output (or the next conv's input).
    ("dropout0.3,pool2,flatten,dense16", "the dropout before 'pool2' at position 2 has no site: a pool layer has no "
                                         "input site"),
    ("dropout0.2,pool2,conv8k3,flatten,dense16", "the dropout before 'pool2' at position 2 has no site"),
    # Python's float() reads digits grouped by underscores.
    ("flatten,dropout0.2_5", "the rate of 'dropout0.2_5' at position 2 must be a number in [0, 1)"),
    ("flatten,logits,dense8", "'logits' at position 2 must be the last token"),
    (",".join(["conv1k1"] * 49 + ["flatten"]), "the network has 51 layers (classifier included); at most 50"),
    ("[", "the network spec is not valid JSON"),
    ('[{"type": "dense", "units": 64.5}]',
     'layer {"type": "dense", "units": 64.5} at position 1: its units must be a whole number, got 64.5'),
    ('[{"type": "conv", "filters": 8, "kernel_size": [3, 3]}]', 'layer {"type": "conv", "filters": 8, '
     '"kernel_size": [3, 3]} at position 1: its kernel_size must be a whole number (square kernels)'),
    ('[{"type": "conv", "filters": 8, "kernel_size": 3, "padding": "full"}]', 'layer {"type": "conv", "filters": 8, '
     '"kernel_size": 3, "padding": "full"} at position 1: its padding must be \'valid\' or \'same\', got "full"'),
    ('[{"type": "conv", "filters": true, "kernel_size": 3}]',
     'layer {"type": "conv", "filters": true, "kernel_size": 3} at position 1: its filters must be a whole number'),
    ('[{"type": "conv", "filters": 8}]',
     'layer {"type": "conv", "filters": 8} at position 1 lacks kernel_size'),
    ('[{"type": "conv", "filters": 0, "kernel_size": 3}]',
     'layer {"type": "conv", "filters": 0, "kernel_size": 3} at position 1: its filters must be a positive integer'),
    ('[{"type": "dense", "units": 8, "bias": false}]',
     'layer {"type": "dense", "units": 8, "bias": false} at position 1 has unknown field(s) bias; '
     "a dense object has: units"),
    ('["flatten", {"type": "lstm"}]', 'unknown layer {"type": "lstm"} at position 2; objects have a "type"'),
    ('{"layers": ["flatten"], "size": 3}', 'a JSON network spec object has a "layers" list'),
    ("conv8k3,pool2,dropout0.25,flatten,dropout0.5", "sites 'pool1.post' and 'logits.pre' are the same tensor "
     "(at most a Flatten between), so they put two masks on it: one dropout of rate 0.625, not two placements; "
     "keep one of the two dropout tokens (before and after 'flatten')"),
    ('{"layers": "conv8k3,flatten"}', 'the JSON network spec\'s "layers" must be a list of layer tokens or objects, '
     'got "conv8k3,flatten"; e.g. "layers": ["conv32k3", "flatten"]'),
    # Spaces inside a token were deleted: a 2-wide pool and a stray 2 read as a 22-wide pool.
    ("conv8k3,pool2 2,flatten", "layer token 'pool2 2' has a space inside; write each token as one word"),
    ('["conv8k3", "pool 2"]', "layer token 'pool 2' has a space inside"),
    ('["flatten", {"type": "dropout", "rate": "0.5"}]',
     'layer {"type": "dropout", "rate": "0.5"} at position 2: its rate must be a number in [0, 1), got "0.5"'),
    # Past int32: TensorFlow's own message, naming no token (a stride passed the dry run and failed in training).
    ("flatten,dense99999999999999999999", "'dense99999999999999999999' at position 2: units must be a positive "
     "integer below 2^31, got 99999999999999999999"),
    ("conv8k3s4294967296,flatten", "'conv8k3s4294967296' at position 1: the stride must be a positive integer below "
     "2^31"),
    # A negative number in an object read as an unknown layer (its token dense-1).
    ('["flatten", {"type": "dense", "units": -1}]',
     'layer {"type": "dense", "units": -1} at position 2: its units must be a positive integer, got -1'),
    ('[{"type": "pool", "size": -2}, "flatten"]', 'layer {"type": "pool", "size": -2} at position 1: its size must'),
    # A comment read as a token with a space inside.
    ("conv8k3,pool2,  # my pool\nflatten", "layer token '# my pool' holds a '#': a network's text has no comments"),
    # What --network reads from a file, given to Python: "unknown layer '@net.json'".
    ("@net.json", "network spec '@net.json': @FILE is the command line's; from Python pass the file's text"),
])
def test_malformed_specs_are_one_line_errors(text, message):
    with pytest.raises(ValueError) as info:
        models.parse_network(text)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_bad_names_and_untextable_specs_are_refused():
    with pytest.raises(ValueError, match="network name 'my/net' must be"):
        models.parse_network("flatten", name="my/net")
    mid = dataclasses.replace(models.get_spec("dense_mlp"), canonical="dense1.mid:0.5")
    with pytest.raises(ValueError, match="has no text form"):
        models.format_network(mid)


def test_a_zoo_network_written_out_is_that_networks_run():
    """One network, one name: --network=<a zoo network's text> is --model=<its name>, filed under it."""
    for name in models.list_models():
        spec = models.get_spec(name)
        try:
            text = models.format_network(spec)
        except ValueError:
            continue  # no text form (e.g. a `.mid` canonical)
        config = config_lib.TrainConfig(network=text)
        assert (config.model, config.network) == (name, ""), name
        assert models.zoo_name_of(spec) == name
    renamed = config_lib.TrainConfig(network='{"name": "mine", "layers": ["flatten", "dense128", "dropout0.5", '
                                             '"logits"]}')
    assert (renamed.model, renamed.network) == ("mine", "flatten,dense128,logits")  # a name of its own: kept
    assert models.zoo_name_of(models.parse_network("flatten,dense64")) is None


def test_register_spec_is_one_registry():
    spec = models.parse_network("conv2k3,flatten,dense4")
    assert models.register_spec(spec) == spec.name == models.register_spec(models.parse_network(
        "conv2k3valid, flatten, dense4, dropout0.5"))  # the same network again: no-op
    assert models.get_spec(spec.name) == spec
    with pytest.raises(ValueError, match=f"model '{spec.name}' is already registered as another network"):
        models.register_spec(dataclasses.replace(spec, canonical="dense1.pre:0.5"))
    with pytest.raises(ValueError, match="model 'dense_mlp' is already registered as another network"):
        models.register_spec(models.parse_network("flatten,dense4", name="dense_mlp"))
    # A zoo network written as text under its own name is that network, not another one.
    zoo_text = models.format_network(models.get_spec("keras_mnist_cnn"))
    assert models.register_spec(models.parse_network(zoo_text, name="keras_mnist_cnn")) == "keras_mnist_cnn"
    assert models.get_spec("keras_mnist_cnn").source.startswith("Keras examples/mnist_cnn.py")
    assert spec.name not in models.list_models()  # the zoo's list stays the zoo
    key = models.construction_key(spec.name, "before_activation")
    assert key == models.construction_key(spec.name, "after_activation")


SPEC_PLACEMENTS = models.list_placements(models.register_spec(models.parse_network(
    "conv4k3,pool2,conv4k3same,flatten,dense8,dense8")))


@pytest.mark.parametrize("placement", SPEC_PLACEMENTS)
def test_every_named_placement_of_a_spec_network_builds(placement):
    text = "conv4k3,pool2,conv4k3same,flatten,dense8,dense8"
    sites = models.resolve_placement(models.parse_network(text).name, placement)
    for norm in ("none", "batch"):
        model = models.build_from_spec(text, placement, norm=norm, num_classes=3, seed=0)
        assert [layer.name for layer in models.dropout_layers(model)] == list(sites)
        out = model(X, training=False).numpy()
        assert out.shape == (2, 3) and np.isfinite(out).all()


def test_spec_placements_are_the_zoo_set():
    assert SPEC_PLACEMENTS == ["canonical", "none", "after_activation", "before_activation", "before_dense",
                               "conv", "spatial", "bn_before", "bn_after_last"]


# --------------------------------------------------------------- the trainer's side


def network_config(**overrides):
    """tiny_config for a network: `model` left at its default, so the network names itself."""
    return tiny_config(**{"model": config_lib.DEFAULT_MODEL, **overrides})


def test_config_records_the_canonical_text_and_names_the_model():
    config = network_config(network="Conv4K3S2, pool2, flatten, dense16, dropout0.5")
    assert config.network == TINY and config.model == models.parse_network(TINY).name
    assert config_lib.validate(config) is config and models.get_spec(config.model).name == config.model
    assert config_lib.TrainConfig(**config.to_dict()) == config  # as recorded in config.json
    named = network_config(network=json.dumps({"name": "tiny_net", "layers": TINY.split(",")}))
    assert (named.model, named.network) == ("tiny_net", TINY)
    assert config_lib.differences(config.to_dict(), config) == []


@pytest.mark.parametrize("overrides,message", [
    ({"network": "cnv4k3,flatten", "model": config_lib.DEFAULT_MODEL},
     "--network: unknown layer 'cnv4k3' at position 1; valid:"),
    ({"network": "flatten,dense4", "model": "dense_mlp"},
     "--network: model 'dense_mlp' is already registered as another network"),
])
def test_config_rejects_bad_networks_in_one_line(overrides, message):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.validate(tiny_config(**overrides))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def train_plan(*args):
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train.py", *args])
    return flags_lib.train_plan(fv)


@pytest.mark.parametrize("args,message", [
    (["--network=conv4k3,dense8"], "--network: 'dense8' at position 2 needs 'flatten' before it"),
    (["--network=flatten", "--model=dense_mlp"], "give --network=SPEC or --model=dense_mlp, not both"),
    # The default model, typed: it was replaced by the network without a word.
    (["--network=flatten", "--model=keras_mnist_cnn"], "give --network=SPEC or --model=keras_mnist_cnn, not both"),
    (["--network=@/nonexistent/net.json"], "--network: cannot read '/nonexistent/net.json'"),
    (["--network=flatten,dropout2", "--placement=all"], "--network: the rate of 'dropout2' at position 2"),
    # Read as not given, an empty value trained the default zoo network without a word.
    (["--network="], "--network is given but empty; give it a value"),
    (["--network= "], "--network is given but empty; give it a value"),
    (["--keras_model="], "--keras_model is given but empty; give it a value"),
])
def test_network_flag_rejects_bad_values(args, message):
    with pytest.raises(config_lib.ConfigError) as info:
        train_plan(*args)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("content,message", [
    # Read as no --network at all, an empty file trained the default zoo network without a word.
    ("", "--network: '{path}' is empty; write the network spec in it"),
    ("  \n\n", "--network: '{path}' is empty"),
    # A name that cannot name a directory: its own error, not the default model name's clash.
    (json.dumps({"name": "a b", "layers": ["conv32k3", "flatten"]}), "--network: network name 'a b' must be"),
    # A zoo network's name is taken.
    (json.dumps({"name": "keras_mnist_cnn", "layers": ["conv32k3", "flatten"]}),
     "--network: model 'keras_mnist_cnn' is already registered as another network"),
])
def test_a_network_file_that_says_nothing_or_a_bad_name_is_one_line(tmp_path, content, message):
    path = tmp_path / "net.json"
    path.write_text(content)
    with pytest.raises(config_lib.ConfigError) as info:
        train_plan(f"--network=@{path}", "--dry_run")
    assert str(info.value).startswith(message.format(path=path)) and "\n" not in str(info.value), str(info.value)


def test_a_network_file_may_give_one_token_per_line():
    # The lines were glued into one token ("unknown layer 'conv8k3pool2flattendense16'").
    spec = models.parse_network("conv8k3,pool2,flatten,dense16")
    assert models.parse_network("conv8k3\npool2\n\nflatten\ndense16\n") == spec
    assert models.parse_network("conv8k3,\n  pool2,\nflatten ,\ndense16,\n") == spec
    assert models.parse_network("flatten,dense16,dropout-0,dense8,dropout0.5") == models.parse_network(
        "flatten,dense16,dropout0,dense8,dropout0.5")  # -0 is 0: one network, one name


def test_the_tokens_as_one_json_string_read_as_the_tokens():
    assert models.format_network(models.parse_network('"conv32k3,flatten"')) == "conv32k3,flatten"


def test_a_network_file_with_a_byte_order_mark_reads_as_without(tmp_path):
    path = tmp_path / "net.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(TINY.split(",")).encode())
    assert {c.network for c, _ in train_plan(f"--network=@{path}")} == {TINY}


def test_network_flag_reads_a_json_file_and_sweeps_every_placement(tmp_path):
    path = tmp_path / "net.json"
    path.write_text(json.dumps({"name": "mynet", "layers": TINY.split(",")}, indent=2))
    runs = train_plan(f"--network=@{path}", "--placement=all", "--seeds=2", "--workdir=study")
    assert len(runs) == 2 * len(models.list_placements("mynet", norm="none"))  # no BN variants without BN
    assert {c.network for c, _ in runs} == {TINY}
    assert ("study/mynet/before_dense/seed1") in {w for _, w in runs}


@pytest.mark.slow
def test_a_network_sweep_trains_resumes_and_compares(tmp_path):
    root = str(tmp_path)
    runs = train_plan(f"--network={TINY}", "--placement=canonical,before_activation,before_dense",
                      "--epochs=1", "--batch_size=16", "--optimizer=adam",
                      "--learning_rate=0.003", "--dataset=tiny", f"--workdir={root}")
    name = models.parse_network(TINY).name
    assert sorted(os.path.relpath(w, root) for _, w in runs) == sorted(
        f"{name}/{p}/seed0" for p in ("canonical", "before_activation", "before_dense"))
    keras.mixed_precision.set_global_policy("mixed_float16")  # a notebook's own: the sweep gives it back
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    try:
        results = sweep.run_sweep(runs, source=tiny_source(), verbose=0)
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        assert np.random.rand() == expected  # the caller's NumPy stream, not one the runs' seed set
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(isinstance(m, dict) for _, _, m in results), results
    trained = [m for _, _, m in results if "identical_to" not in m]
    assert len(trained) == 2 and all(m["export_check"]["passed"] for m in trained)
    assert all(m["config"]["network"] == TINY and m["config"]["model"] == name for _, _, m in results)
    again = sweep.run_sweep(runs, source=tiny_source(), verbose=0)  # finished: reported, not retrained
    assert [m["test_loss"] for _, _, m in again] == [m["test_loss"] for _, _, m in results]
    with pytest.raises(DataError, match=r"saved_model: its run tested on in-memory arrays named 'tiny', not kept "
                                        r"with a run; save them \(np.savez\) and pass data=\{'npz': PATH\}"):
        evaluate.evaluate_on_dataset(os.path.join(runs[0][1], "saved_model"))  # an UnknownDataError 'tiny' before
    table = {e["variant"]: e for e in compare.compare_runs(root, source=tiny_source())["table"]}
    assert set(table) == {f"{name}/{p}" for p in ("canonical", "before_activation", "before_dense")}
    assert table[f"{name}/before_activation"]["identical_to"] == f"{name}/canonical"
    assert table[f"{name}/before_dense"]["seeds"] == 1


@pytest.mark.parametrize("text,message", [
    ("conv32k30,flatten,dense10", "layer 'conv1' takes a 30x30 window but its input is 28x28x1: use a smaller "
                                  "kernel, 'same' padding (e.g. conv32k5same)"),
    ("pool2,pool2,pool2,pool2,pool2,flatten", "layer 'pool5' takes a 2x2 window but its input is 1x1x1: use a "
                                              "smaller window, or fewer pooling layers before it"),
])
def test_a_network_too_deep_for_its_images_names_the_layer(text, message):
    with pytest.raises(ValueError) as info:
        models.build_from_spec(text, input_shape=(28, 28, 1), num_classes=10)
    assert str(info.value).startswith(message) and "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_an_input_shape_given_channels_first_says_so():
    with pytest.raises(ValueError, match=r"^layer 'conv1' takes a 3x3 window but its input is 1x28x28: input_shape is "
                                         r"\(height, width, channels\), channels last: e.g. \(28, 28, 1\)$"):
        models.build("keras_mnist_cnn", input_shape=(1, 28, 28), num_classes=10)
    with pytest.raises(ValueError, match=r"^layer 'conv2' takes a 3x3 window but its input is 2x2x64: use a smaller"):
        models.build_from_spec("conv64k3same,pool2,pool2,pool2,conv64k3,conv64k3,flatten", input_shape=(20, 20, 1),
                               num_classes=10)  # a deep network's small maps: not taken for channels first
    with pytest.raises(ValueError, match=r"^layer 'conv1' takes a 5x5 window but its input is 4x64x3: use a smaller"):
        models.build_from_spec("conv8k5,flatten", input_shape=(4, 64, 3), num_classes=2)  # short images, channels last
    with pytest.raises(ValueError, match=r"channels last: e.g. \(32, 32, 3\)$"):  # from the input, not a layer's
        models.build_from_spec("conv8k3same,conv8k5,flatten", input_shape=(3, 32, 32), num_classes=2)


@pytest.mark.parametrize("typed,old_name", [
    # The classic CNN written out, filed by older code under its derived name: now the zoo's run.
    ("conv32k3,conv64k3,pool2,dropout0.25,flatten,dense128,dropout0.5",
     "conv32k3-conv64k3-pool2-dropout0.25-flatten-dense128-dropout0.5"),
    # A convrate written beside the dropout that implies it: now left out of the text and the name.
    ("convrate0.3,conv8k3,pool2,dropout0.3,flatten,dense16", "convrate0.3-conv8k3-pool2-dropout0.3-flatten-dense16"),
])
def test_a_run_filed_under_an_older_name_of_its_network_is_the_same_run(typed, old_name):
    now = config_lib.TrainConfig(network=typed)
    assert now.model != old_name
    recorded = {**now.to_dict(), "network": typed, "model": old_name}  # as older code recorded it
    assert config_lib.differences(recorded, now) == []
    other = config_lib.TrainConfig(network=typed.replace("dense", "dense2"))
    assert config_lib.differences(recorded, other) == ["model", "network"]


def test_a_network_too_large_to_train_here_is_refused_before_its_weights_are_allocated(monkeypatch, tmp_path):
    # flatten,dense100000000 allocated 78.5e9 weights in --dry_run: a ResourceExhaustedError traceback, or the
    # process killed by the system.
    from models import network
    monkeypatch.setattr(network, "_memory_bytes", lambda: 2**30)  # a 1 GiB machine
    with pytest.raises(ValueError) as info:
        network.build_network(models.parse_network("conv8k3,flatten,dense20000"), {}, input_shape=(28, 28, 1))
    assert str(info.value) == (
        "layer 'dense1' brings the network to 108,180,080 parameters: building and training it hold at least three "
        "float32 copies of them (1.2 GiB: the initializer's draw, the weights, their gradients), more than the 1.0 "
        "GiB of memory here; give it fewer units or filters (or pool before the first dense layer)")
    network.build_network(models.parse_network("conv8k3,flatten,dense2000"), {}, input_shape=(28, 28, 1))
    # The process's own cgroup and those above it (a Slurm job's above its step; "max": no limit) bind where lower
    # than the machine's memory: the root's files alone missed them, and the process was killed.
    monkeypatch.undo()
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    (tmp_path / "proc").write_text("0::/job/step\n3:memory:/job/step\n2:cpu:/elsewhere\n")
    for directory, limit in (("job/step", "max"), ("job", str(2**31)), ("memory/job/step", str(2**30))):
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
        (tmp_path / directory / ("memory.max" if directory.startswith("job") else "memory.limit_in_bytes")
         ).write_text(limit + "\n")
    monkeypatch.setattr(network, "PROC_CGROUP", str(tmp_path / "proc"))
    monkeypatch.setattr(network, "CGROUP_ROOT", str(tmp_path))
    assert network._memory_bytes() == min(2**30, physical)
    (tmp_path / "memory/job/step/memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert network._memory_bytes() == min(2**31, physical)
