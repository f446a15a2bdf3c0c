"""The dropout mask generator: k random bits per unit, compared as integers, applied where drawn.

Keras' own dropout draws a 32-bit float per unit, compares it with the rate,
and multiplies in separate passes. Here a unit gets only the bits its rate
needs: k = the smallest of 1, 2, 4, 8, 16 with rate x 2^k a whole number,
so 0.5 takes 1 bit, 0.25 and 0.75 take 2, 0.125 takes 3 -> 4, and every
multiple of 1/256 at most 8; any other rate (0.1, 0.4, 0.2, ...) takes 16.
One 32-bit random word covers 32/k units; a unit is dropped where its k-bit
field is below round(rate x 2^k). So:

- a rate that is a multiple of 2^-k is drawn exactly (the drop probability
  is the rate), up to the int32 range the words come from, which lacks one
  value (keras.random.randint over [-2^31, 2^31 - 1)): that moves a field's
  odds by at most 2^-32;
- any other rate is drawn at the nearest multiple of 2^-16: within 2^-17
  (7.6e-6) of it, e.g. 0.1 -> 6554/65536 = 0.100006, 0.4 -> 26214/65536 =
  0.399994, far inside the binomial noise of any measurement here (rates
  that would round to 0 or 1 are refused: check_drawable).

The mask is applied in float32 (kept units x scale, rounded once to the
compute dtype), as the zoo's layers always have. `masked(x, ...)` draws the
words once and gives the layer a custom gradient that reuses them, so the
backward pass applies the same mask without storing a float mask.

The generator is a version (MASK_GENERATOR), recorded with every run: a run
is never resumed, and runs are never pooled, across generators. Its masks are
not Keras' own draws for the same seed (it replaces them; the zoo's layers
are otherwise Keras' arithmetic).

Two ways apply the same masks, bit for bit (tests/test_masks.py):

- compiled: the trainer has the fields, compare, scale and casts compiled
  into one fused kernel (`set_mask_compiler`, as for max pooling's
  gradient: models/ stays Keras-only, the compiler comes from the caller);
- portable (no compiler set, or inside `portable()`): plain ops any runtime
  serves. Each 16 bits of a word index a table holding, for the units they
  cover, all-ones or all-zeros in the compute dtype's width, and the table
  rows are ANDed with the kept units' bits: a gather and an AND instead of
  a pass per shift, mask and compare. Exports trace inside `portable()`:
  TF Serving refuses XLA-compiled functions unless started with
  --xla_cpu_compilation_enabled.
"""
import contextlib
import functools
import sys

import keras
import numpy as np
from keras import ops

MASK_GENERATOR = "kbit-fields-v1"
# What runs trained before the generator was recorded used: Keras' stateless dropout (a float per unit).
LEGACY_GENERATOR = "keras-stateless-dropout"
NOISE_DTYPE = "float32"
_COMPILER = None  # fn -> compiled fn; None: the portable ops
_SET = object()  # a scope's "use the compiler set_mask_compiler set"
_SCOPES = [_SET]  # the innermost scope's compiler: _SET, None (portable()) or fused(compiler)'s
_GATHER = None  # fn(table, indices) -> rows; None: keras.ops.take
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def set_mask_compiler(compiler):
    """Has every mask be applied through `compiler(fn)` (e.g. XLA); None: plain Keras ops."""
    global _COMPILER
    if compiler is not _COMPILER:
        _COMPILER = compiler
        _compiled_apply.cache_clear()


def mask_bits(rate):
    """Random bits per unit for `rate`: the fewest of 1, 2, 4, 8, 16 that draw it exactly, else 16."""
    for bits in (1, 2, 4, 8, 16):
        if float(rate * 2**bits).is_integer():
            return bits
    return 16


def threshold(rate):
    """The field value below which a unit is dropped: round(rate x 2^bits)."""
    return int(round(rate * 2 ** mask_bits(rate)))


def check_drawable(rate, what="rate"):
    """ValueError (one line) where `rate` would be drawn as 0 or 1: (0, 2^-17] drops nothing, [1 - 2^-17, 1)
    every unit (the nearest multiple of 2^-16, halves rounded to even). Gaussian noise draws no masks."""
    drawn = drawn_rate(rate)
    if 0 < rate and drawn in (0.0, 1.0):
        fix = ("it would drop nothing; give 0 for no dropout, or a rate above 2^-17 (7.63e-06)" if drawn == 0 else
               "it would drop every unit; give a rate below 1 - 2^-17 (0.99999237)")
        raise ValueError(f"{what} {rate:.10g} is drawn by the dropout mask generator at the nearest multiple of 2^-16, "
                         f"{drawn:g}: {fix}")


def drawn_rate(rate):
    """The drop probability the generator draws for `rate` (exact where rate x 2^bits is whole)."""
    return threshold(rate) / 2 ** mask_bits(rate)


def draw_words(mask_shape, rate, seed):
    """int32 random words covering a mask of `mask_shape` (units along its last axis), 32/bits units each."""
    per_word = 32 // mask_bits(rate)
    units = mask_shape[-1]
    return keras.random.randint((*mask_shape[:-1], -(-units // per_word)), -2**31, 2**31 - 1, dtype="int32",
                                seed=seed)


def keep_mask(words, rate, units):
    """bool mask [..., units] from the words: True where the unit's field is at or above the threshold."""
    bits = mask_bits(rate)
    per_word = 32 // bits
    shifts = ops.arange(per_word, dtype="int32") * bits
    fields = ops.bitwise_and(ops.right_shift(ops.expand_dims(words, -1), shifts), 2**bits - 1)
    fields = ops.reshape(fields, (*ops.shape(words)[:-1], words.shape[-1] * per_word))
    if words.shape[-1] * per_word != units:
        fields = fields[..., :units]
    return ops.greater_equal(fields, threshold(rate))


def apply_mask(x, words, rate, scale, units):
    """`x` with the units the words drop zeroed and the rest x `scale`, in float32, rounded once.

    The mask (from `words`) broadcasts against `x`: words of shape
    [..., 1, 1, words] drop whole feature maps, and a leading samples axis in
    the words draws one mask per sample of `x`.
    """
    keep = keep_mask(words, rate, units)
    kept = ops.cast(x, NOISE_DTYPE) * ops.cast(scale, NOISE_DTYPE)
    return ops.cast(ops.where(keep, kept, ops.zeros((), NOISE_DTYPE)), x.dtype)


@functools.lru_cache(maxsize=None)
def _keep_table(bits, threshold_, itemsize):
    """[65536, n] table: row v is, for the 16 / bits units a 16-bit index v covers, each unit's
    `itemsize` bytes all ones where its field is at or above `threshold_`, else all zeros, as n
    int64 (or int32) numbers; None where the row is not a whole number of those."""
    units = 16 // bits
    row_bytes = units * itemsize
    if row_bytes % 4 or sys.byteorder != "little":  # the rows are the units' bytes, little-endian
        return None
    fields = (np.arange(2**16)[:, None] >> (np.arange(units) * bits)) & (2**bits - 1)
    ones = np.array(-1, f"i{itemsize}")
    rows = np.where(fields >= threshold_, ones, np.zeros((), f"i{itemsize}"))
    return rows.view("int64" if row_bytes % 8 == 0 else "int32")


def apply_mask_portable(x, words, rate, scale, units):
    """apply_mask's result, bit for bit, in plain ops: a table gather and an AND (see the module's doc)."""
    bits = mask_bits(rate)
    itemsize = _ITEMSIZE.get(keras.backend.standardize_dtype(x.dtype))
    table = _keep_table(bits, threshold(rate), itemsize) if bits < 16 and itemsize else None
    if table is None or units % (32 // bits):
        return apply_mask(x, words, rate, scale, units)
    kept = ops.cast(ops.cast(x, NOISE_DTYPE) * ops.cast(scale, NOISE_DTYPE), x.dtype)  # rounded once, as apply_mask
    rows = _gather_rows(ops.convert_to_tensor(table), ops.cast(ops.view(words, "uint16"), "int32"))
    # [..., words, 2, row] -> [..., units * itemsize / table item]: the units in order, as the table's integers
    rows = ops.reshape(rows, (*ops.shape(words)[:-1], -1))
    out = ops.bitwise_and(rows, ops.view(kept, str(table.dtype)))
    return ops.view(out, x.dtype)


def set_row_gather(gather):
    """Has the portable masks look their table rows up with `gather(table, indices)`; None: keras.ops.take.

    The indices are 16-bit words, never negative, and keras.ops.take first maps
    negative indices (a compare, an add and a select over every index): a
    sixth of an MC-dropout call's time. The trainer passes a lookup through
    TensorFlow's GatherNd (dropzoo/performance.gather_table_rows), faster
    still; the rows are the same either way.
    """
    global _GATHER
    _GATHER = gather


def _gather_rows(table, indices):
    if _GATHER is None:
        return ops.take(table, indices, axis=0)
    return _GATHER(table, indices)


@contextlib.contextmanager
def _scope(compiler):
    _SCOPES.append(compiler)
    try:
        yield
    finally:
        _SCOPES.pop()


def portable():
    """Masks traced inside apply through plain ops, whatever compiler is set (for exports)."""
    return _scope(None)


def fused(compiler):
    """Masks traced inside apply through `compiler` (e.g. XLA), even within portable().

    For an export's one signature meant for in-process use (mc_dropout_draws_xla):
    the same masks, bit for bit, in one fused pass.
    """
    return _scope(compiler)


@functools.lru_cache(maxsize=None)
def _compiled_apply(compiler, rate, scale, units):
    return compiler(functools.partial(apply_mask, rate=rate, scale=scale, units=units))


def _applier(rate, scale, units):
    """apply_mask(x, words) for one rate, scale and mask width: compiled where a compiler is set."""
    compiler = _COMPILER if _SCOPES[-1] is _SET else _SCOPES[-1]
    if compiler is None:
        return functools.partial(apply_mask_portable, rate=rate, scale=scale, units=units)
    return _compiled_apply(compiler, rate, scale, units)


def mask_shape(inputs, noise_shape=None):
    """The mask's shape for `inputs`: theirs, or `noise_shape` with its None entries filled from them."""
    shape = ops.shape(inputs)
    if noise_shape is None:
        return tuple(shape)
    return tuple(shape[i] if dim is None else dim for i, dim in enumerate(noise_shape))


def masked(inputs, rate, scale, seed, noise_shape=None):
    """Bernoulli dropout of `inputs` at `rate`, kept units x `scale`; its gradient applies the same mask."""
    shape = mask_shape(inputs, noise_shape)
    words = draw_words(shape, rate, seed)
    apply = _applier(float(rate), float(scale), int(shape[-1]))

    @ops.custom_gradient
    def dropped(x):
        def gradient(*args, upstream=None):
            return apply(args[0] if upstream is None else upstream, words)

        return apply(x, words), gradient

    return dropped(inputs)


def masked_samples(features, rate, scale, seed, samples):
    """`samples` dropout-on copies of `features`, [samples * batch, ...] sample-major, one mask each.

    The mask is drawn for [samples, *features.shape] and applied by
    broadcasting, so the features are never tiled before masking. No
    gradient: what MC dropout's inference needs.
    """
    words = draw_words((samples, *ops.shape(features)), rate, seed)
    out = _applier(float(rate), float(scale), int(features.shape[-1]))(ops.expand_dims(features, 0), words)
    return ops.reshape(out, (-1, *features.shape[1:]))
