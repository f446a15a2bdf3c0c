"""A user's model whose last hidden layers are branches (parallel towers, a residual Add), or whose layers share
an input: the head is the classifier's input, and a `.pre` there is that layer's own copy of the tensor."""
import keras
import numpy as np

import models
from models import placements as placements_lib

L = keras.layers


def _placements(model):
    spec = models.describe_model(model)
    return {name: models.format_placement(p) for name, p in placements_lib.named_placements(spec).items()}


def _towers(own_dropout=False):
    """Flatten (then a Dropout(0.5) read by both towers, if `own_dropout`), towers 'a' and 'b', concatenated."""
    image = keras.Input((28, 28, 1))
    x = L.Flatten(name="f")(L.Conv2D(4, 3, activation="relu", name="c")(image))
    x = L.Dropout(0.5, name="own")(x) if own_dropout else x
    a, b = (L.Dense(16, activation="relu", name=name)(x) for name in "ab")
    return keras.Model(image, L.Dense(10, name="out")(L.Concatenate(name="cat")([a, b])))


def test_parallel_towers_get_the_head_on_the_classifiers_input_not_on_one_tower():
    # after_activation was b.post, before_dense b.pre: tower a reached the classifier undropped, and bn_before
    # read tower a as a layer "before the last".
    got = _placements(_towers())
    assert got["before_dense"] == "out.pre:0.5" and got["conv"] == "c.post:0.1,out.pre:0.5"
    assert not {"after_activation", "before_activation", "bn_before", "bn_after_last"} & set(got)
    variant = models.place_dropout(_towers(), "before_dense", seed=0)
    [dropout] = models.dropout_layers(variant)
    assert variant.get_layer("out").input is dropout.output  # both towers' units, after the concatenation


def test_a_residual_dense_block_gets_the_head_on_the_sum_not_on_its_branch():
    image = keras.Input((28, 28, 1))
    x = L.Dense(32, activation="relu", name="d1")(L.Flatten()(image))
    y = L.Dense(32, activation="relu", name="d2")(x)
    got = _placements(keras.Model(image, L.Dense(10, name="out")(L.Add(name="add")([x, y]))))
    assert got["before_dense"] == "out.pre:0.5" and "after_activation" not in got


def test_a_chain_through_single_input_layers_keeps_its_last_dense_layer_as_the_head():
    got = _placements(keras.Sequential([keras.Input((28, 28, 1)), L.Flatten(), L.Dense(16, activation="relu",
                                                                                        name="d"),
                                        L.UnitNormalization(name="n"), L.Dense(10, name="out")]))
    assert got["after_activation"] == "d.post:0.5"


def test_a_pre_on_a_tensor_other_layers_read_is_that_layers_own_copy():
    # The own Dropout after the Flatten feeds both towers (f.post); b.pre drops b's input alone, so it is not
    # f.post: before_dense (then b.pre) was renamed to the canonical and trained the canonical's network.
    spec = models.describe_model(_towers(own_dropout=True))
    assert spec.canonical == "f.post:0.5"
    assert spec.tensor_of("b.pre") != spec.tensor_of("f.post") != spec.tensor_of("a.pre")
    assert models.format_placement(placements_lib.named_placements(spec)["before_dense"]) == "out.pre:0.5"
    variant = models.place_dropout(spec, "b.pre:0.5", seed=0)
    [dropout] = models.dropout_layers(variant)
    assert variant.get_layer("a").input is variant.get_layer("f").output
    assert variant.get_layer("b").input is dropout.output
    # A residual block's c1.post and c2.pre are not one tensor: the shortcut reads c1.post alone.
    image = keras.Input((28, 28, 1))
    x = L.Conv2D(4, 3, activation="relu", name="c1")(image)
    y = L.Add()([x, L.Conv2D(4, 3, padding="same", name="c2")(x)])
    spec = models.describe_model(keras.Model(image, L.Dense(10, name="out")(L.GlobalAveragePooling2D()(y))))
    assert set(spec.parse("c1.post:0.2,c2.pre:0.2")) == {"c1.post", "c2.pre"}


def test_the_towers_variants_serve_what_the_source_computes():
    source = _towers(own_dropout=True)
    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    for placement in ("canonical", "before_dense", "none", "b.pre:0.3"):
        variant = models.place_dropout(source, placement, seed=1)
        np.testing.assert_allclose(variant(images, training=False), source(images, training=False), atol=1e-6)


def test_merged_branches_own_dropout_is_the_heads_rate():
    """Towers each ending in their own Dropout(0.3) got the head at the default 0.5: canonical against before_dense
    then changed the rate as well as the place (0.3 on each tower is 0.3 on their concatenation)."""
    image = keras.Input((28, 28, 1))
    x = L.Flatten(name="f")(L.Conv2D(4, 3, activation="relu", name="c")(image))
    a, b = (L.Dropout(0.3)(L.Dense(16, activation="relu", name=name)(x)) for name in "ab")
    got = _placements(keras.Model(image, L.Dense(10, name="out")(L.Concatenate()([a, b]))))
    assert got["before_dense"] == "out.pre:0.3" and got["conv"] == "c.post:0.1,out.pre:0.3"
    # A residual conv branch's own dropout stays the conv stack's: the classifier reads a pooling layer.
    x = L.Conv2D(4, 3, activation="relu", name="c1")(image)
    y = L.Dropout(0.2)(L.Conv2D(4, 3, padding="same", name="c2")(x))
    got = _placements(keras.Model(image, L.Dense(10, name="out")(L.GlobalAveragePooling2D()(L.Add()([x, y])))))
    assert got["before_dense"] == "out.pre:0.5" and got["conv"] == "c1.post:0.2,c2.post:0.2,out.pre:0.5"


def test_towers_at_several_own_rates_are_named_where_a_named_placement_takes_one(tmp_path):
    from absl import flags

    from dropzoo import flags as flags_lib
    from dropzoo import plan_notes

    image = keras.Input((28, 28, 1))
    x = L.Flatten(name="f")(L.Conv2D(4, 3, activation="relu", name="c")(image))
    a, b = (L.Dropout(rate, name=f"drop_{name}")(L.Dense(16, activation="relu", name=name)(x))
            for name, rate in (("a", 0.3), ("b", 0.5)))
    path = str(tmp_path / "towers.keras")
    keras.Model(image, L.Dense(10, activation="softmax", name="out")(L.Concatenate()([a, b]))).save(path)

    def notes(*args):
        fv = flags.FlagValues()
        flags_lib.define_train_flags(fv)
        fv(["train.py", f"--keras_model={path}", "--dataset=mnist_sample", *args])
        return plan_notes.model_notes(flags_lib.train_plan(fv))

    assert notes("--placement=before_dense,canonical") == [
        "model towers: its own dropout at the head has several rates (0.5 on b.post, 0.3 on a.post); the named "
        "placements put one head dropout at 0.3, the last of them; --rate=R sets another"]
    assert notes("--placement=canonical,none") == notes("--placement=conv", "--rate=0.3") == []
    # A Dropout(0.0) at the head is no dropout: the head placements drop at 0.5 there, said (it was not).
    x = L.Dense(16, activation="relu", name="fc")(L.Dropout(0.3, name="dfl")(x))
    keras.Model(image, L.Dense(10, activation="softmax", name="out")(L.Dropout(0.0, name="dh")(x))).save(path)
    assert notes("--placement=after_activation") == [
        "model towers: its head dropout 'dh' has rate 0 (no dropout); the head placements (after_activation, "
        "before_dense, ...) drop at 0.5 there; --rate=R sets another"]
    # One in the conv stack (no placement's site), beside a head of its own: nothing to say.
    conv = L.Dropout(0.0, name="dz")(L.Conv2D(4, 3, activation="relu", name="c")(image))
    x = L.Dense(16, activation="relu", name="fc")(L.Flatten(name="f")(L.MaxPooling2D(name="p")(conv)))
    keras.Model(image, L.Dense(10, activation="softmax", name="out")(L.Dropout(0.4, name="dh")(x))).save(path)
    assert notes("--placement=after_activation,conv") == []


def test_a_models_own_dropout_before_one_of_several_readers_is_that_layers_pre():
    # It was refused ("a site drops a tensor for all its readers"), though b.pre names exactly this.
    image = keras.Input((28, 28, 1))
    x = L.Flatten(name="f")(L.Conv2D(4, 3, activation="relu", name="c")(image))
    a, b = L.Dense(16, activation="relu", name="a")(x), L.Dense(16, activation="relu", name="b")(L.Dropout(0.3)(x))
    source = keras.Model(image, L.Dense(10, name="out")(L.Concatenate()([a, b])))
    spec = models.describe_model(source)
    assert spec.canonical == "b.pre:0.3"
    variant = models.place_dropout(source, "canonical", seed=0)
    [dropout] = models.dropout_layers(variant)
    assert variant.get_layer("b").input is dropout.output and variant.get_layer("a").input is not dropout.output


def test_a_skip_from_the_conv_stack_or_the_images_keeps_their_dropout_where_it_was():
    """A merge that also reads the pooled features (a skip) made their own 0.25 the head's, and the conv stack fell
    back to 0.1; one that reads the images made an input dropout of 0.1 the head's."""
    image = keras.Input((28, 28, 1))
    x = L.MaxPooling2D(name="p")(L.Conv2D(4, 3, activation="relu", name="c")(image))
    x = L.Flatten(name="f")(L.Dropout(0.25)(x))
    d = L.Dense(16, activation="relu", name="d")(x)
    got = _placements(keras.Model(image, L.Dense(10, name="out")(L.Concatenate()([x, d]))))
    assert got["canonical"] == "p.post:0.25" and got["before_dense"] == "out.pre:0.5"
    assert got["conv"] == "p.post:0.25,out.pre:0.5"
    flat = L.Flatten(name="flat")(L.Dropout(0.1)(image))
    dense = L.Dense(784, activation="relu", name="d")(flat)
    got = _placements(keras.Model(image, L.Dense(10, name="out")(L.Add()([flat, dense]))))
    assert got["before_dense"] == "out.pre:0.5"


def _rates(model):
    return placements_lib.own_rates(models.describe_model(model))


def test_rates_follow_the_graph_not_the_order_of_its_layers():
    """What lies before a dense layer, or before any conv/dense layer, on every path from the images (a prefix of
    the sites in graph order cut into the other branch); a global pooling or a folded Rescaling is no dense layer."""
    image = keras.Input((28, 28, 1))
    c2 = L.Conv2D(8, 3, activation="relu", name="c2")(L.MaxPooling2D(name="p1")(
        L.Conv2D(4, 3, activation="relu", name="c1")(image)))
    g = L.Dropout(0.25)(L.GlobalAveragePooling2D(name="g")(c2))
    d = L.Dense(16, activation="relu", name="d")(L.Flatten(name="f")(c2))
    assert _rates(keras.Model(image, L.Dense(10, name="out")(L.Concatenate()([g, d])))) == (0.5, 0.25)
    r = L.Rescaling(1 / 255, name="r")(image)
    flat = L.Flatten(name="flat")(L.Dropout(0.1)(r))
    assert _rates(keras.Model(image, L.Dense(10, name="out")(L.Add()([flat, L.Dense(784, name="d")(flat)])))) \
        == (0.5, 0.1)
    x = L.Flatten(name="fi")(image)  # a deep dense tower beside a conv tower with its own 0.25
    for i in range(4):
        x = L.Dense(32, activation="relu", name=f"d{i}")(x)
    y = L.Flatten(name="fy")(L.Dropout(0.25)(L.MaxPooling2D(name="p")(L.Conv2D(4, 3, activation="relu",
                                                                                name="c")(image))))
    model = keras.Model(image, L.Dense(10, name="out")(L.Concatenate()([x, y])))
    assert _placements(model)["conv"] == "p.post:0.25,out.pre:0.5"
    y = L.Flatten(name="fy")(L.MaxPooling2D(name="p")(L.Conv2D(4, 3, activation="relu", name="c")(image)))
    a = L.Dense(16, activation="relu", name="a")(L.Flatten(name="fa")(L.Dropout(0.2)(image)))
    assert _rates(keras.Model(image, L.Dense(10, name="out")(L.Concatenate()([y, a])))) == (0.5, 0.1)  # input's
    # Mirror images of one network get one set of rates, whichever tower comes first.
    x = L.Flatten(name="f")(L.MaxPooling2D(name="p")(L.Conv2D(4, 3, activation="relu", name="c")(image)))
    for dropped in "ab":
        towers = [L.Dense(16, activation="relu", name=name)(L.Dropout(0.3)(x) if name == dropped else x)
                  for name in "ab"]
        assert _rates(keras.Model(image, L.Dense(10, name="out")(L.Concatenate()(towers)))) == (0.5, 0.3)


def test_a_tower_that_does_not_pool_beside_one_that_does_drops_after_its_convs_in_conv():
    # `conv` put dropout after the pooling tower's pool only: the other tower's conv reached the head undropped.
    image = keras.Input((28, 28, 1))
    a = L.MaxPooling2D(name="pa")(L.Conv2D(4, 3, padding="same", activation="relu", name="ca")(image))
    b = L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="cb")(image)
    x = L.Dense(16, activation="relu", name="d")(L.Flatten()(L.Concatenate(name="cat")([a, b])))
    got = _placements(keras.Model(image, L.Dense(10, name="out")(x)))
    assert got["conv"] == "pa.post:0.1,cb.post:0.1,d.post:0.5"
    assert got["spatial"] == "pa.post:0.1:spatial,cb.post:0.1:spatial,d.post:0.5"
    # One branch that pools after two convs: its convs are the pool's, as in a chain.
    c = L.MaxPooling2D(name="p")(L.Conv2D(4, 3, padding="same", activation="relu", name="c2")(
        L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(image)))
    x = L.Dense(16, activation="relu", name="d")(L.Flatten()(L.Concatenate()([c, b])))
    assert _placements(keras.Model(image, L.Dense(10, name="out")(x)))["conv"] == "p.post:0.1,cb.post:0.1,d.post:0.5"


def test_a_model_saved_compiled_says_its_optimizer_is_not_used(tmp_path):
    """A .keras file compiled with Adam(3e-4) trained with Adadelta at 1.0 (the trainer's flags), without a word."""
    from absl import flags

    from dropzoo import flags as flags_lib
    from dropzoo import plan_notes

    image = keras.Input((28, 28, 1))
    model = keras.Model(image, L.Dense(10, activation="softmax")(L.Dense(8, activation="relu")(L.Flatten()(image))))
    path = str(tmp_path / "compiled.keras")

    def notes(*args):
        fv = flags.FlagValues()
        flags_lib.define_train_flags(fv)
        fv(["train.py", f"--keras_model={path}", "--dataset=mnist_sample", *args])
        return [n for n in plan_notes.model_notes(flags_lib.train_plan(fv)) if "saved compiled" in n]

    model.save(path)  # uncompiled: nothing to say
    assert notes() == []
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="sparse_categorical_crossentropy")
    model.save(path)
    assert notes() == [f"--keras_model {path} was saved compiled with Adam (learning rate 0.0003), which is not used: "
                       "it trains with --optimizer=adadelta --learning_rate=1 and sparse categorical cross-entropy, "
                       "as every network here; pass --optimizer=adam --learning_rate=0.0003 for its own"]
    assert notes("--optimizer=adam", "--learning_rate=0.0003") == []  # (its rate stored as float32)
    assert notes("--optimizer=adam", "--learning_rate=0.001,0.0003") == []  # a sweep that holds its own rate
    [swept] = notes("--learning_rate=1.0,0.5,0.1")  # one line for the sweep's rates, not one each
    assert "it trains with --optimizer=adadelta --learning_rate=1,0.5,0.1 and" in swept
    # A schedule: no constant --learning_rate is it, whatever the optimizer.
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=100, decay_rate=0.9)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy")
    model.save(path)
    assert notes("--optimizer=adam", "--learning_rate=0.001") == [
        f"--keras_model {path} was saved compiled with Adam with a learning-rate schedule, which is not used: it "
        "trains with --optimizer=adam --learning_rate=0.001 and sparse categorical cross-entropy, as every network "
        "here; the trainer's learning rate is a constant (--learning_rate)"]
    assert notes()[0].endswith("; pass --optimizer=adam for its own (with a constant rate)")
    model.compile(optimizer=keras.optimizers.AdamW(), loss="sparse_categorical_crossentropy")
    model.save(path)
    assert notes()[0].endswith("; --optimizer takes adadelta, sgd, adam, rmsprop")
