"""The mask generator (models/masks.py): what each rate draws, which bits make a unit's field, and
that the compiled and the portable ways apply the same masks, bit for bit, forward and backward;
an export's servable signatures hold no compiled function (TF Serving refuses them by default), and
its one fused signature draws what the portable one draws."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import models
from dropzoo import export as export_lib
from dropzoo import performance
from models import masks


@pytest.fixture
def compiled():
    """The trainer's setting: masks applied through XLA; restored afterwards."""
    performance.compile_dropout_masks()
    yield
    masks.set_mask_compiler(None)
    masks.set_row_gather(None)


@pytest.mark.parametrize("rate,bits,threshold", [
    (0.5, 1, 1), (0.25, 2, 1), (0.75, 2, 3), (0.125, 4, 2), (0.375, 4, 6), (1 / 256, 8, 1), (0.1, 16, 6554),
    (0.4, 16, 26214), (0.2, 16, 13107),
])
def test_each_rate_takes_the_fewest_bits_that_draw_it(rate, bits, threshold):
    assert (masks.mask_bits(rate), masks.threshold(rate)) == (bits, threshold)
    if bits < 16:
        assert masks.drawn_rate(rate) == rate


def test_any_other_rate_is_drawn_within_2_to_the_minus_17():
    rates = np.linspace(0.001, 0.999, 997)
    assert max(abs(masks.drawn_rate(r) - r) for r in rates) <= 2.0**-17
    assert masks.drawn_rate(0.1) == 6554 / 65536


def test_a_units_field_is_its_bits_of_the_word_in_order():
    # 2-bit fields of one word: unit j is bits 2j and 2j+1. 0b...11_10_01_00 -> fields 0, 1, 2, 3, then zeros.
    words = tf.constant([[0b11100100]], tf.int32)
    keep = masks.keep_mask(words, 0.25, 16).numpy()  # threshold 1: field 0 dropped
    np.testing.assert_array_equal(keep[0, :4], [False, True, True, True])
    assert not keep[0, 4:].any()
    keep = masks.keep_mask(words, 0.75, 16).numpy()  # threshold 3: only field 3 kept
    np.testing.assert_array_equal(keep[0, :4], [False, False, False, True])
    # 16-bit fields: the low half is unit 0. The sign bit is the high half's top bit.
    words = tf.constant([[np.int32(-(2**31)) + 6554]], tf.int32)
    np.testing.assert_array_equal(masks.keep_mask(words, 0.1, 2).numpy(), [[True, True]])
    words = tf.constant([[6553]], tf.int32)
    np.testing.assert_array_equal(masks.keep_mask(words, 0.1, 2).numpy(), [[False, False]])


SHAPES = [  # (x's shape, the mask's shape): element-wise, one per feature map, one per sample, a short last word
    ((4, 6, 6, 64), (4, 6, 6, 64)),
    ((4, 6, 6, 64), (4, 1, 1, 64)),
    ((1, 5, 128), (3, 5, 128)),
    ((5, 36), (5, 36)),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("rate", [0.5, 0.25, 0.125, 1 / 256, 0.1])
def test_the_compiled_and_the_portable_way_apply_the_same_masks(compiled, dtype, rate):
    seed = keras.random.SeedGenerator(3)
    for x_shape, mask_shape in SHAPES:
        x = tf.cast(tf.random.stateless_normal(x_shape, [1, 2]), dtype)
        words = masks.draw_words(mask_shape, rate, seed)
        args = (rate, 1 / (1 - rate), mask_shape[-1])
        ways = {"ops": masks.apply_mask(x, words, *args),
                "portable": masks.apply_mask_portable(x, words, *args),
                "compiled": masks._applier(*args)(x, words)}
        bits = {name: tf.bitcast(out, tf.int32 if dtype == "float32" else tf.int16).numpy()
                for name, out in ways.items()}
        for name in ("portable", "compiled"):
            np.testing.assert_array_equal(bits[name], bits["ops"], err_msg=f"{name} {x_shape} {mask_shape}")
        dropped = np.mean(np.broadcast_to(ways["ops"].numpy() == 0, np.broadcast_shapes(x_shape, mask_shape)))
        assert dropped > 0 or rate < 0.01


def test_the_portable_way_gathers_with_gather_nd_and_without_keras_negative_index_pass(compiled):
    """Its table indices are 16-bit words, never negative: no compare-add-select pass over them, and
    GatherNd, which copies a row inline (bf16 at 2 bits a unit: a 16-byte row as one element)."""
    x = tf.zeros((2, 64), "bfloat16")
    words = masks.draw_words((2, 64), 0.25, keras.random.SeedGenerator(0))
    graph = tf.function(lambda x, w: masks.apply_mask_portable(x, w, 0.25, 4 / 3, 64)).get_concrete_function(
        x, words).graph
    types = {op.type for op in graph.get_operations()}
    assert "GatherNd" in types and not types & {"GatherV2", "SelectV2", "Select", "Less"}


@pytest.mark.parametrize("portable", [False, True])
def test_the_gradient_applies_the_forward_mask(compiled, portable):
    x = tf.random.stateless_uniform((8, 12, 12, 64), [1, 2], 0.5, 1.5)
    with masks.portable() if portable else _nothing():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = masks.masked(x, 0.25, 4 / 3, keras.random.SeedGenerator(5))
        grad = tape.gradient(y, x, output_gradients=tf.ones_like(y) * 3.0)
    # Where a unit was kept its gradient is 3 x the scale, where dropped 0: the same mask as forward.
    np.testing.assert_array_equal(grad.numpy() == 0, y.numpy() == 0)
    np.testing.assert_allclose(grad.numpy()[y.numpy() != 0], 4.0, rtol=1e-6)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _reaches_compiled(graph):
    """{signature output node: whether it calls, at any depth, a function XLA must compile}."""
    library = {f.signature.name: f for f in graph.library.function}

    def called(node_defs):
        for node in node_defs:
            for value in node.attr.values():
                yield from ([value.func.name] if value.HasField("func") else [])
                yield from (f.name for f in value.list.func)

    def reaches(name, seen):
        if name in seen or name not in library:
            return False
        seen.add(name)
        function = library[name]
        if function.attr["_XlaMustCompile"].b or any(n.attr["_XlaMustCompile"].b for n in function.node_def):
            return True
        return any(reaches(f, seen) for f in called(function.node_def))

    nodes = {n.name: n for n in graph.node}
    return lambda node: any(reaches(f, set()) for f in called([nodes[node]]))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_only_the_fused_signature_holds_a_compiled_function_and_it_draws_the_same(compiled, tmp_path, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = models.build("keras_mnist_cnn", seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    path = export_lib.export_saved_model(model, str(tmp_path / "saved_model"))
    proto = saved_model_pb2.SavedModel()
    with open(f"{path}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    meta = proto.meta_graphs[0]
    reaches = _reaches_compiled(meta.graph_def)
    compiled_signatures = {key for key, signature in meta.signature_def.items()
                           if any(reaches(t.name.split(":")[0]) for t in signature.outputs.values())}
    assert compiled_signatures == {export_lib.MC_DRAWS_XLA_KEY}
    # The two draws signatures: the same masks, bit for bit, and a batch's draws differ from one another.
    loaded = tf.saved_model.load(path)
    request = {export_lib.INPUT_KEY: tf.constant(np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)), tf.uint8),
               export_lib.SAMPLES_KEY: tf.constant(5), export_lib.SEED_KEY: tf.constant(1)}
    portable, fused = (loaded.signatures[key](**request)[export_lib.PROBABILITIES_KEY].numpy()
                       for key in (export_lib.MC_DRAWS_KEY, export_lib.MC_DRAWS_XLA_KEY))
    assert portable.shape == (5, 3, 10)
    np.testing.assert_array_equal(portable.view(np.uint32), fused.view(np.uint32))
    assert not np.allclose(portable[0], portable[1])
    # Loaded into a TF1 session, as TF Serving loads it, the servable signatures run without XLA.
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta_graph.signature_def[export_lib.MC_DRAWS_KEY]
        feed = {signature.inputs[k].name: v.numpy() for k, v in request.items()}
        drawn = session.run(signature.outputs[export_lib.PROBABILITIES_KEY].name, feed)
    np.testing.assert_array_equal(drawn.view(np.uint32), portable.view(np.uint32))


@pytest.mark.parametrize("bits,itemsize", [(1, 2), (2, 2), (4, 2), (8, 2), (2, 4), (4, 4), (1, 8)])
def test_gather_table_rows_looks_up_what_tf_gather_does(bits, itemsize):
    """Every table shape the portable masks use (4 to 128 bytes a row), the same rows, bit for bit."""
    table = tf.constant(masks._keep_table(bits, 1, itemsize))
    indices = tf.constant(np.random.default_rng(bits).integers(0, 2**16, (3, 5, 7)), tf.int32)
    np.testing.assert_array_equal(performance.gather_table_rows(table, indices).numpy(),
                                  tf.gather(table, indices).numpy())
