"""BatchNorm variants (norm="batch"), the `.prenorm` site, the BN placements, and
the identical-by-construction rule (`models.construction_key`).

Dropout feeding BatchNormalization is the best-known placement failure (Li
et al., 2019, variance shift); these tests pin the networks the study uses
for it, and show the rule a sweep uses to skip duplicate variants can fail.
"""
import collections

import keras
import numpy as np
import pytest
from test_models import PARAMS
from test_models import assert_sites_where_named

import models
from dropzoo import config as config_lib
from dropzoo import sweep
from models import equivalence
from models import layers as dropout_lib
from models import mc_dropout as mc_lib
from models import network

X = np.random.default_rng(0).uniform(0, 1, (4, 28, 28, 1)).astype("float32")


def conv(k, cin, cout):
    """A k x k Conv2D kernel with no bias (BN's beta is the bias)."""
    return k * k * cin * cout


def dense(n_in, n_out):
    """A Dense kernel with no bias."""
    return n_in * n_out


def logits(n_in, classes=10):
    """The output Dense: kernel and bias, no BN."""
    return n_in * classes + classes


# (trainable, non-trainable) parameters with norm="batch", from the layer sizes.
# A BN layer over c channels has gamma and beta (2c, trained) and the moving
# mean and variance (2c, not trained). Spatial sizes: 3x3 'valid' convs take
# 28 -> 26 -> 24; 2x2 pooling halves (rounding down); 'same' keeps the size.
BN_PARAMS = {
    # conv1 3x3 1->32, conv2 3x3 32->64, pool 24 -> 12, dense1 12*12*64 -> 128.
    "keras_mnist_cnn": (conv(3, 1, 32) + 2 * 32 + conv(3, 32, 64) + 2 * 64
                        + dense(12 * 12 * 64, 128) + 2 * 128 + logits(128),
                        2 * 32 + 2 * 64 + 2 * 128),
    # conv1 5x5 'same' 1->32, pool 28 -> 14, conv2 5x5 'same' 32->64, pool 14 -> 7.
    "tf_layers_cnn": (conv(5, 1, 32) + 2 * 32 + conv(5, 32, 64) + 2 * 64
                      + dense(7 * 7 * 64, 1024) + 2 * 1024 + logits(1024),
                      2 * 32 + 2 * 64 + 2 * 1024),
    # conv1 28 -> 26, pool -> 13, conv2 13 -> 11, pool -> 5; no hidden dense.
    "keras_io_convnet": (conv(3, 1, 32) + 2 * 32 + conv(3, 32, 64) + 2 * 64 + logits(5 * 5 * 64),
                         2 * 32 + 2 * 64),
    "dense_mlp": (dense(28 * 28, 128) + 2 * 128 + logits(128), 2 * 128),
}
# With norm="none" the same layers carry biases instead of BN.
BIASES = {"keras_mnist_cnn": 32 + 64 + 128, "tf_layers_cnn": 32 + 64 + 1024,
          "keras_io_convnet": 32 + 64, "dense_mlp": 128}
BN_LAYERS = {
    "keras_mnist_cnn": ["image", "conv1", "conv1.bn", "conv1.act", "conv2", "conv2.bn", "conv2.act",
                        "pool1", "pool1.post", "flatten", "dense1", "dense1.bn", "dense1.act",
                        "dense1.post", "logits", "probabilities"],
    "tf_layers_cnn": ["image", "conv1", "conv1.bn", "conv1.act", "pool1", "conv2", "conv2.bn",
                      "conv2.act", "pool2", "flatten", "dense1", "dense1.bn", "dense1.act",
                      "dense1.post", "logits"],
    "keras_io_convnet": ["image", "conv1", "conv1.bn", "conv1.act", "pool1", "conv2", "conv2.bn",
                         "conv2.act", "pool2", "flatten", "logits.pre", "logits", "probabilities"],
    "dense_mlp": ["image", "flatten", "dense1", "dense1.bn", "dense1.act", "dense1.post", "logits"],
}
HIDDEN = {"keras_mnist_cnn": ["conv1", "conv2", "dense1"], "tf_layers_cnn": ["conv1", "conv2", "dense1"],
          "keras_io_convnet": ["conv1", "conv2"], "dense_mlp": ["dense1"]}
# (bn_before, bn_after_last): each hidden layer but the last at the conv-stack rate, and
# the head rate after the last; bn_after_last only the latter. keras_mnist_cnn's conv-stack
# rate is its own 0.25, the others' the default 0.1. dense_mlp has one hidden layer: no
# BN fed by dropout, so no BN placements.
BN_PLACEMENTS = {
    "keras_mnist_cnn": ("conv1.post:0.25,conv2.post:0.25,dense1.post:0.5", "dense1.post:0.5"),
    "tf_layers_cnn": ("conv1.post:0.1,conv2.post:0.1,dense1.post:0.4", "dense1.post:0.4"),
    "keras_io_convnet": ("conv1.post:0.1,conv2.post:0.5", "conv2.post:0.5"),
}
CASES = [(m, p) for m in sorted(PARAMS) for p in models.list_placements(m)]


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_batch_norm_parameter_counts_and_layer_order(name):
    model = models.build(name, norm="batch", seed=0)
    trainable, frozen = BN_PARAMS[name]
    assert (_count(model.trainable_weights), _count(model.non_trainable_weights)) == (trainable, frozen)
    assert model.count_params() == trainable + frozen
    # The same network without BN: biases where BN was, 4 parameters per channel fewer.
    assert PARAMS[name] == trainable + frozen - 4 * BIASES[name] + BIASES[name]
    assert [layer.name for layer in model.layers] == BN_LAYERS[name]
    for hidden in HIDDEN[name]:
        linear, bn = model.get_layer(hidden), model.get_layer(f"{hidden}.bn")
        assert not linear.use_bias, "BN's beta replaces the bias"
        assert isinstance(bn, keras.layers.BatchNormalization)
    assert model.get_layer("logits").use_bias, "the output layer keeps its bias and has no BN"
    assert not any(layer.name.startswith("logits.bn") for layer in model.layers)


@pytest.mark.parametrize("name,placement", CASES)
def test_every_placement_builds_with_batch_norm(name, placement):
    model = models.build(name, placement, norm="batch", seed=0)
    assert model.count_params() == sum(BN_PARAMS[name])
    sites = models.resolve_placement(name, placement, norm="batch")
    assert [layer.name for layer in models.dropout_layers(model)] == list(sites)
    assert_sites_where_named(models.get_spec(name), model, sites, norm="batch")
    for training in (False, True):
        out = model(X, training=training).numpy()
        assert out.shape == (4, 10) and np.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(BN_PLACEMENTS))
def test_bn_before_feeds_every_bn_but_the_first_and_bn_after_last_only_follows_the_last(name):
    """Walk the layers: which BN layers have a dropout layer since the previous BN?"""
    spec = models.get_spec(name)
    hidden = HIDDEN[name]
    assert list(spec.hidden) == hidden

    def fed_bn_layers(placement):
        model = models.build(name, placement, norm="batch", seed=0)
        drops = {layer.name for layer in models.dropout_layers(model)}
        fed, dropped_since_last_bn = [], False
        for layer in model.layers:
            dropped_since_last_bn |= layer.name in drops
            if isinstance(layer, keras.layers.BatchNormalization):
                if dropped_since_last_bn:
                    fed.append(layer.name)
                dropped_since_last_bn = False
        return fed, drops

    fed, before = fed_bn_layers("bn_before")
    assert fed == [f"{h}.bn" for h in hidden[1:]]
    fed, after = fed_bn_layers("bn_after_last")
    assert fed == [] and after == {f"{hidden[-1]}.post"}
    assert after < before, "one factor: the dropout feeding the BN layers"
    placements = tuple(models.format_placement(models.resolve_placement(name, p))
                       for p in ("bn_before", "bn_after_last"))
    assert placements == BN_PLACEMENTS[name]


def test_prenorm_sits_between_the_linear_op_and_its_bn():
    sites = "conv1.prenorm:0.1:spatial,conv1.mid:0.1,dense1.prenorm:0.5,dense1.post:0.5"
    model = models.build("keras_mnist_cnn", sites, norm="batch", seed=0)
    names = [layer.name for layer in model.layers]
    assert names[1:6] == ["conv1", "conv1.prenorm", "conv1.bn", "conv1.mid", "conv1.act"]
    assert names[names.index("dense1"):names.index("logits")] == [
        "dense1", "dense1.prenorm", "dense1.bn", "dense1.act", "dense1.post"]
    assert isinstance(model.get_layer("conv1.prenorm"), keras.layers.SpatialDropout2D)
    assert_sites_where_named(models.get_spec("keras_mnist_cnn"), model,
                             models.resolve_placement("keras_mnist_cnn", sites, norm="batch"), "batch")


def test_sites_depend_on_the_norm():
    spec = models.get_spec("keras_io_convnet")
    assert spec.sites() == spec.sites("none") == (
        "conv1.pre", "conv1.mid", "conv1.post", "pool1.post", "conv2.pre", "conv2.mid",
        "conv2.post", "pool2.post", "logits.pre")
    assert spec.sites("batch") == (
        "conv1.pre", "conv1.prenorm", "conv1.mid", "conv1.post", "pool1.post", "conv2.pre",
        "conv2.prenorm", "conv2.mid", "conv2.post", "pool2.post", "logits.pre")
    assert "conv2.prenorm" in spec.spatial_sites("batch")
    assert "conv2.prenorm" not in spec.spatial_sites()
    dense = models.get_spec("dense_mlp")
    assert dense.sites("batch") == ("dense1.pre", "dense1.prenorm", "dense1.mid", "dense1.post", "logits.pre")
    with pytest.raises(ValueError, match="valid norms: none, batch"):
        spec.sites("group")


def test_prenorm_is_rejected_without_batch_norm():
    # "unknown site", listing the sites without it, did not say that --norm=batch has it.
    for call in (lambda: models.build("keras_mnist_cnn", "conv1.prenorm:0.1"),
                 lambda: models.build("keras_mnist_cnn", "conv1.prenorm:0.1", norm="none"),
                 lambda: models.resolve_placement("keras_mnist_cnn", "conv1.prenorm:0.1")):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == ("site 'conv1.prenorm' is before a BatchNormalization, which this network has "
                                   "only with --norm=batch (norm='batch'); add it, or name a .pre, .mid or .post site")
    with pytest.raises(ValueError, match="^unknown site 'conv1.prenrm'; valid sites: "):
        models.build("keras_mnist_cnn", "conv1.prenrm:0.1")
    with pytest.raises(ValueError, match="cannot be spatial"):
        models.build("dense_mlp", "dense1.prenorm:0.5:spatial", norm="batch")
    with pytest.raises(ValueError, match="unknown site 'logits.prenorm'"):
        models.build("dense_mlp", "logits.prenorm:0.5", norm="batch")


def test_check_norm_names_the_valid_norms():
    assert models.NORMS == ("none", "batch")
    assert models.check_norm("none") == "none"
    with pytest.raises(ValueError) as info:
        models.check_norm("layer")
    assert str(info.value) == "unknown norm 'layer'; valid norms: none, batch"
    assert "norm" in models.OPTIONS


@pytest.mark.parametrize("name", ["keras_mnist_cnn", "dense_mlp"])
def test_norm_none_is_the_network_as_before(name):
    """norm='none' (or None) builds the default network: same layers, weights, masks, outputs."""
    placement = "dense1.pre:0.2,dense1.post:0.5" if name == "dense_mlp" else "conv"

    def built(**options):
        model = models.build(name, placement, seed=0, **options)
        return ([layer.name for layer in model.layers], model.count_params(),
                [model(X, training=t).numpy() for t in (True, True, False)])

    names, count, outputs = built()
    assert count == PARAMS[name] and not any(n.endswith(".bn") for n in names)
    for norm in ("none", None):
        same_names, same_count, same_outputs = built(norm=norm)
        assert (same_names, same_count) == (names, count)
        for a, b in zip(outputs, same_outputs):
            np.testing.assert_array_equal(a, b)


def test_prenorm_has_its_own_mask_stream():
    """pre, prenorm and mid/post draw from three streams; mid and post share one."""
    for index in range(8):
        pre, prenorm = network.mask_stream(index, "pre"), network.mask_stream(index, "prenorm")
        mid, post = network.mask_stream(index, "mid"), network.mask_stream(index, "post")
        assert mid == post and len({pre, prenorm, mid}) == 3
    streams = [network.mask_stream(i, s) for i in range(8) for s in ("pre", "prenorm", "post")]
    assert len(set(streams)) == len(streams) and min(streams) >= 100, "no clash with kernel seeds"
    model = models.build("keras_mnist_cnn", "conv2.pre:0.1,conv2.prenorm:0.1,conv2.post:0.1",
                         norm="batch", seed=2)
    seeds = [model.get_layer(f"conv2.{slot}").seed for slot in ("pre", "prenorm", "post")]
    assert len(set(seeds)) == 3
    mid = models.build("keras_mnist_cnn", "conv2.mid:0.1", norm="batch", seed=2)
    assert mid.get_layer("conv2.mid").seed == seeds[2]


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_batch_norm_models_run_under_each_policy(precision):
    with equivalence.precision_policy(precision):
        model = models.build("keras_mnist_cnn", "bn_before", norm="batch", seed=0)
    for hidden in HIDDEN["keras_mnist_cnn"]:
        assert model.get_layer(f"{hidden}.bn").dtype_policy.name == precision
    bn = model.get_layer("conv2.bn")
    assert bn.moving_mean.dtype == "float32", "BN keeps its statistics in float32"
    for training in (False, True):
        out = model(X, training=training)
        assert out.dtype == "float32" and np.isfinite(out.numpy()).all()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    before = bn.moving_mean.numpy().copy()
    loss = model.train_on_batch(X, np.arange(4))
    assert np.isfinite(loss)
    assert not np.array_equal(bn.moving_mean.numpy(), before), "training updates BN's statistics"


def test_mc_dropout_keeps_batch_norm_in_inference_mode():
    model = models.build("keras_mnist_cnn", "bn_before", norm="batch", seed=0)
    model(X, training=True)  # move the moving statistics off their initial 0 / 1
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    stats = [[w.numpy().copy() for w in (layer.moving_mean, layer.moving_variance)] for layer in bns]
    mc = models.mc_dropout_model(model)
    first, second = mc(X).numpy(), mc(X).numpy()
    assert not np.array_equal(first, second), "dropout is on: each call draws new masks"
    mc(X, training=False)
    for layer, (mean, variance) in zip(bns, stats):
        assert mc.get_layer(layer.name) is layer, "the MC model shares the BN layers"
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
        np.testing.assert_array_equal(layer.moving_variance.numpy(), variance)
    # Without dropout the MC model is the model in inference mode, not in training mode.
    plain = models.build("keras_mnist_cnn", "none", norm="batch", seed=0)
    plain(X, training=True)
    mc_plain = models.mc_dropout_model(plain)(X).numpy()
    np.testing.assert_array_equal(mc_plain, plain(X, training=False).numpy())
    assert not np.allclose(mc_plain, plain(X, training=True).numpy())


def test_mc_check_fails_when_the_wrapper_switches_the_whole_call_to_training(monkeypatch):
    """The old AlwaysOn (`self.layer(inputs, training=True)`) trains every BN after it."""
    monkeypatch.setattr(mc_lib.AlwaysOn, "call",
                        lambda self, inputs, training=None: self.layer(inputs, training=True))
    model = models.build("dense_mlp", "dense1.prenorm:0.5", norm="batch", seed=0)
    bn = model.get_layer("dense1.bn")
    mean = bn.moving_mean.numpy().copy()
    models.mc_dropout_model(model)(X)
    assert not np.array_equal(bn.moving_mean.numpy(), mean)


# --- identical by construction -------------------------------------------------

def sweep_groups(name, **options):
    """A sweep's view: the model's placements grouped by construction key."""
    groups = collections.defaultdict(list)
    for placement in models.list_placements(name):
        groups[models.construction_key(name, placement, **options)].append(placement)
    return {frozenset(g) for g in groups.values()}


def _singletons(name, *grouped):
    together = set().union(*grouped)
    return {frozenset([p]) for p in models.list_placements(name) if p not in together}


MOVED = frozenset(["after_activation", "before_activation", "bn_after_last"])
SAME_SITES = frozenset(["after_activation", "bn_after_last"])  # one site set, two names
CONV_SITES = frozenset(["canonical", "conv"])  # equal site sets in keras_mnist_cnn


def test_sweep_groups_only_what_relu_makes_identical():
    """keras_mnist_cnn, relu: the keys group placements, and every group is one network.

    Each placement is built with one seed; equal keys must give bitwise equal
    logits in both modes, and unequal keys different ones.
    """
    name = "keras_mnist_cnn"
    assert sweep_groups(name) == {MOVED, CONV_SITES} | _singletons(name, MOVED, CONV_SITES)
    outputs = {}
    for placement in models.list_placements(name):
        model = models.build(name, placement, seed=0)
        outputs[placement] = [model(X, training=t).numpy() for t in (False, True)]
    for a in outputs:
        for b in outputs:
            same_key = models.construction_key(name, a) == models.construction_key(name, b)
            same = all(np.array_equal(u, v) for u, v in zip(outputs[a], outputs[b]))
            assert same == same_key, (a, b)


@pytest.mark.parametrize("options", [dict(activation="tanh"), dict(kind="gaussian"),
                                     dict(activation="sigmoid", kind="classic")])
def test_sweep_keeps_before_activation_apart_without_relu_and_bernoulli(options):
    """before_activation is its own network; after_activation and bn_after_last stay one
    (the same site set under two names), as do canonical and conv."""
    name = "keras_mnist_cnn"
    assert sweep_groups(name, **options) == (
        {SAME_SITES, CONV_SITES} | _singletons(name, SAME_SITES, CONV_SITES))


@pytest.mark.parametrize("kind", sorted(models.KINDS))
def test_at_rate_0_every_placement_is_none(kind):
    """--rate=0 drops nothing at any site, in any kind: one network, trained once, with `none`'s logits."""
    name = "keras_mnist_cnn"
    assert sweep_groups(name, kind=kind, rate=0.0) == {frozenset(models.list_placements(name))}
    plain = models.build(name, "none", seed=0)
    for placement in ("canonical", "spatial", "before_activation", "conv"):
        model = models.build(name, placement, kind=kind, rate=0.0, seed=0)
        assert np.array_equal(model(X, training=True).numpy(), plain(X, training=True).numpy()), placement
    assert models.construction_key(name, "canonical", kind=kind, rate=0.1) != models.construction_key(name, "none")


def test_construction_key_covers_everything_that_changes_the_network():
    key = models.construction_key
    m = "keras_mnist_cnn"
    assert key(m, "before_activation", kind="classic") == key(m, "after_activation", kind="classic")
    assert key(m, "before_activation", norm="batch") == key(m, "after_activation", norm="batch")
    assert key(m, "after_activation") != key(m, "after_activation", norm="batch")
    assert key(m, "after_activation") != key(m, "after_activation", kind="classic")
    assert key(m, "after_activation") != key(m, "after_activation", rate=0.3)
    assert key(m, "before_activation", rate=0.3) == key(m, "dense1.post:0.3")
    assert key(m, "canonical", rate=0.3) == key(m, "dense1.post:0.3,pool1.post:0.3")
    assert key(m, "after_activation") != key("dense_mlp", "after_activation")
    # Two masks are not one: mid is not moved onto a post that carries dropout too.
    assert key(m, "dense1.mid:0.5,dense1.post:0.5") != key(m, "dense1.post:0.5")
    assert key(m, "conv1.mid:0.2:spatial") == key(m, "conv1.post:0.2:spatial")
    assert key(m, "conv1.mid:0.2:spatial") != key(m, "conv1.post:0.2")
    assert key(m, "conv1.mid:0.2") != key(m, "conv1.post:0.3")
    assert key(m, "dense1.prenorm:0.5", norm="batch") != key(m, "dense1.mid:0.5", norm="batch")
    assert key(m, "dense1.pre:0.5") != key(m, "dense1.post:0.5")
    k = key(m, "before_activation")
    assert hash(k) == hash(key(m, "after_activation")) and k.sites == (("dense1.post", 0.5, False),)
    for bad, message in ((dict(kind="alpha"), "valid kinds"), (dict(activation="gelu"), "valid activations"),
                         (dict(norm="layer"), "valid norms"), (dict(rate=1.0), r"\[0, 1\)")):
        with pytest.raises(ValueError, match=message):
            key(m, "canonical", **bad)


def test_the_construction_check_fails_when_the_rule_merges_pre_with_post(monkeypatch):
    """A rule that also called .pre the same as .post is caught by claim 4 (and the grouping)."""
    assert all(f.holds for f in equivalence.check_construction("dense_mlp", "relu"))
    monkeypatch.setattr(network, "interchangeable_slots",
                        lambda kind, activation: {"mid": "post", "pre": "post"})
    name = "keras_mnist_cnn"
    assert sweep_groups(name) != {MOVED, CONV_SITES} | _singletons(name, MOVED, CONV_SITES)
    rows = {f.claim: f for f in equivalence.check_construction("dense_mlp", "relu")}
    wrong = rows["4 before_dense vs after_activation"]
    assert (wrong.expected, wrong.measured, wrong.holds) == ("identical", "different", False)


def test_the_construction_check_fails_when_mid_and_post_masks_differ(monkeypatch):
    """Give mid its own mask stream: the rule then moves nothing (it asks the builder) ..."""
    real = network.mask_stream
    monkeypatch.setattr(network, "mask_stream",
                        lambda index, slot: real(index, slot) + (50 if slot == "mid" else 0))
    assert network.interchangeable_slots("inverted", "relu") == {}
    rows = equivalence.check_construction("dense_mlp", "relu")
    assert all(f.holds for f in rows)
    # ... and a rule that moved it anyway is caught: different masks, different networks.
    monkeypatch.setattr(network, "interchangeable_slots", lambda kind, activation: {"mid": "post"})
    rows = {f.claim: f for f in equivalence.check_construction("dense_mlp", "relu")}
    wrong = rows["4 before_activation vs after_activation"]
    assert (wrong.expected, wrong.measured, wrong.holds) == ("identical", "different", False)


def test_bernoulli_kinds_are_the_ones_with_a_mask():
    assert {k for k, entry in dropout_lib.KINDS.items() if entry.bernoulli} == set(models.KINDS) - {"gaussian"}
    assert network.interchangeable_slots("classic", "relu") == {"mid": "post"}
    assert network.interchangeable_slots("gaussian", "relu") == {}
    assert network.interchangeable_slots("inverted", "elu") == {}


def test_bn_momentum_reaches_every_bn_layer_and_names_the_variant():
    model = models.build("keras_io_convnet", "canonical", norm="batch", bn_momentum=0.9, seed=0)
    momenta = {layer.name: layer.momentum for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {"conv1.bn": 0.9, "conv2.bn": 0.9}
    default = models.build("keras_io_convnet", "canonical", norm="batch", seed=0)
    assert {layer.momentum for layer in default.layers
            if isinstance(layer, keras.layers.BatchNormalization)} == {models.DEFAULT_BN_MOMENTUM}
    with pytest.raises(ValueError, match=r"bn_momentum must be in \(0, 1\), got 1.0"):
        models.build("keras_io_convnet", norm="batch", bn_momentum=1.0)
    # A sweep over norm none and batch: the momentum given applies where there is BN, and
    # the runs without BN record the default (it changes nothing there), so their
    # directories are those of any other momentum.
    base = config_lib.TrainConfig(model="keras_io_convnet")
    configs = sweep.expand(base, {"norm": ["none", "batch"], "bn_momentum": [0.9]})
    assert [(c.norm, c.bn_momentum) for c in configs] == [("none", models.DEFAULT_BN_MOMENTUM),
                                                          ("batch", 0.9)]
    assert [sweep.variant_name(c) for c in configs] == ["canonical", "canonical-batchnorm-bnmomentum0.9"]
    with pytest.raises(config_lib.ConfigError, match="^--bn_momentum must be in"):
        config_lib.validate(config_lib.TrainConfig(norm="batch", bn_momentum=0.0))
