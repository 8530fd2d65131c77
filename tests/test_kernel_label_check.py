"""Binary, two-class and short float32 logits: evaluate leaves the labels' range check to the kernel that reads them.

``validate_once`` (readers.BinaryReader for 1-D logits, readers.MulticlassReader
for (N, 2) logits and for 3-32 classes in float32 math) skips validate's pass
over the labels (two thirds of the bytes read with int64 labels and 1-D
float32 logits, half with two columns, a sixth with ten).  The 1-D logit
kernel ORs the labels' bits as it reads them; the two-class kernel counts a
row labelled other than 0, 1 or ``ignore_index`` as neither counted nor
ignored, and score_tasks_in_registers checks a block's labels before it
reads a target: either sends the block to the general path, and
kernels.score_blocks runs the check before that path reads a label.  Either
way the door raises validate's own error.  These tests hold the two
promises: the same error, word for word, from every door and wherever the
label is; and the pass really is skipped (otherwise the deferral would only
add code).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastce
from fastce import _config, validation
from fastce.errors import InputError

KINDS = ("binary", "two_class", "in_registers")
CLASSES = {"binary": 2, "two_class": 2, "in_registers": 10}


def _error(call) -> tuple:
    with pytest.raises(InputError) as info:
        call()
    return str(info.value), info.value.row, info.value.argument


def _rows(kind, n=50_000, seed=0):
    """(logits, labels): 1-D logits of class 1, or two columns, or ten (float32: the kernel finishing short rows in
    registers)."""
    rng = np.random.default_rng(seed)
    shape = (n,) if kind == "binary" else (n, CLASSES[kind])
    return (3 * rng.standard_normal(shape)).astype(np.float32), rng.integers(0, CLASSES[kind], n)


def _count_range_passes(monkeypatch) -> list:
    """The shapes of the arrays the labels' range pass (validation._value_range) reads from now on."""
    passes = []
    real = validation._value_range

    def counted(values):
        passes.append(values.shape)
        return real(values)

    monkeypatch.setattr(validation, "_value_range", counted)
    return passes


def _block_rows(kind) -> int:
    return 8192 if kind == "binary" else _config.block_rows(CLASSES[kind])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [2, 3, -1, -100, 255, np.iinfo(np.int64).min, np.iinfo(np.int64).max])
@pytest.mark.parametrize("where", ["first", "block end", "next block", "last"])
def test_every_door_raises_validates_error(kind, bad, where):
    z, y = _rows(kind)
    at = {"first": 0, "block end": _block_rows(kind) - 1, "next block": _block_rows(kind), "last": len(y) - 1}[where]
    y = y.copy()
    if bad in (2, 3):
        bad += CLASSES[kind] - 2  # the first classes past the last
    y[at] = bad
    if bad == 255:
        y = y.astype(np.uint8)
    expected = _error(lambda: fastce.Evaluator(z.shape[1] if z.ndim == 2 else None).update(y, z))  # validate's
    assert expected[1] == at and f"is {bad}" in expected[0]
    assert _error(lambda: fastce.evaluate(y, logits=z)) == expected
    assert _error(lambda: fastce.evaluate(y, logits=z, sample_weight=np.ones(len(y)))) == expected
    assert _error(lambda: fastce.evaluate(y, logits=z, groups=np.arange(len(y)) % 7)) == expected
    assert _error(lambda: fastce.diagnose(y, logits=z)) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_the_first_bad_label_is_named_when_it_lies_in_a_later_kernel_call(kind, monkeypatch):
    """Kernel calls of two blocks: the error still names the first bad row of the whole array."""
    monkeypatch.setattr(_config, "BLOCKS_PER_CALL", 2)
    monkeypatch.setattr(_config, "CALL_MIN_SCORES", 0)  # calls of exactly two blocks
    z, y = _rows(kind, 100_000)
    y = y.copy()
    y[70_000] = CLASSES[kind]
    y[90_000] = -1
    message, row, argument = _error(lambda: fastce.evaluate(y, logits=z))
    assert row == 70_000 and argument == "y_true" and f"is {CLASSES[kind]}" in message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nan_row", [10, 20, 30_000])  # before the bad label, in its block, in a later block
def test_label_errors_come_before_the_scores_errors_as_before(kind, nan_row):
    z, y = _rows(kind)
    z, y = z.copy(), y.copy()
    z[nan_row] = np.nan  # a NaN row raises at the end of the read, under nan_policy="raise"
    y[20] = CLASSES[kind]
    message, row, _ = _error(lambda: fastce.evaluate(y, logits=z))
    assert row == 20 and f"y_true row 20 is {CLASSES[kind]}" in message
    y[20] = 1
    with pytest.raises(InputError, match="NaN"):
        fastce.evaluate(y, logits=z)


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_untouched_and_bool_labels_read_as_they_are(kind):
    z, y = _rows(kind)
    y_before, z_before = y.copy(), z.copy()
    y[5] = 17
    y_before[5] = 17
    with pytest.raises(InputError):
        fastce.evaluate(y, logits=z)
    assert np.array_equal(y, y_before) and np.array_equal(z, z_before)
    y[5] = 1
    if kind != "in_registers":
        assert fastce.evaluate(y.astype(bool), logits=z) == fastce.evaluate(y, logits=z)


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_skips_the_range_pass_only_where_the_kernel_checks(kind, monkeypatch):
    """Unweighted logits: no range pass (validation._value_range) at all; weights, probabilities, groups and the
    Evaluator keep it."""
    z, y = _rows(kind)
    proba = 1 / (1 + np.exp(-z)) if kind == "binary" else np.full(z.shape, 1 / z.shape[1])
    expected = {
        "plain": fastce.evaluate(y, logits=z),
        "weighted": fastce.evaluate(y, logits=z, sample_weight=np.ones(len(y))),
        "proba": fastce.evaluate(y, proba=proba),
    }
    passes = _count_range_passes(monkeypatch)
    assert fastce.evaluate(y, logits=z) == expected["plain"]
    assert passes == []
    assert fastce.evaluate(y, logits=z, sample_weight=np.ones(len(y))) == expected["weighted"]
    assert fastce.evaluate(y, proba=proba) == expected["proba"]
    fastce.Evaluator(z.shape[1] if z.ndim == 2 else None).update(y, z)
    fastce.evaluate(y, logits=z, groups=np.arange(len(y)) % 7)
    assert len(passes) == 4


# -- two columns and short float32 rows: ignored labels, rare blocks, the general path ----------------------------


def _streamed(y, z, **options):
    """The Evaluator's result (its labels checked at the door), in chunks that do not end at a block's end."""
    evaluator = fastce.Evaluator(z.shape[1], **options)
    for start in range(0, len(y), 7000):
        evaluator.update(y[start:start + 7000], z[start:start + 7000])
    return evaluator.result()


@pytest.mark.parametrize("kind", ["two_class", "in_registers"])
def test_ignored_labels_are_not_out_of_range(kind):
    z, y = _rows(kind)
    y = y.copy()
    y[::97] = -100
    got = fastce.evaluate(y, logits=z, ignore_index=-100)
    assert got == _streamed(y, z, ignore_index=-100)
    assert got.n == len(y) - len(y[::97])
    y[3000] = -5
    expected = _error(lambda: fastce.Evaluator(z.shape[1], ignore_index=-100).update(y, z))
    assert expected[1] == 3000
    assert _error(lambda: fastce.evaluate(y, logits=z, ignore_index=-100)) == expected


def test_two_class_uint64_labels_beyond_int64_are_checked_at_the_door():
    """The kernel reads labels as int64: 2**64 - 1 would read as -1, an ignore_index; the door checks them."""
    z, y = _rows("two_class")
    y = y.astype(np.uint64)
    y[40] = np.iinfo(np.uint64).max
    message, row, _ = _error(lambda: fastce.evaluate(y, logits=z, ignore_index=-1))
    assert row == 40 and str(np.iinfo(np.uint64).max) in message


@pytest.mark.parametrize("kind", ["two_class", "in_registers"])
@pytest.mark.parametrize("nan_policy", ["omit", "propagate"])
def test_rare_blocks_with_good_labels_read_as_before(kind, nan_policy, monkeypatch):
    """A NaN row sends its block to the general path, which runs the deferred check first (once) and then
    gives the numbers of a read whose labels were checked at the door (the Evaluator's)."""
    z, y = _rows(kind)
    z = z.copy()
    z[[3, 700, 20_000]] = np.nan
    passes = _count_range_passes(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastce.OmittedRowsWarning)  # nan_policy="omit" says it skipped rows
        got = fastce.evaluate(y, logits=z, nan_policy=nan_policy)
        assert passes == [y.shape]
        assert got == _streamed(y, z, nan_policy=nan_policy)
    assert got.n == len(y) - 3 and (nan_policy == "omit") == (got.cross_entropy == got.cross_entropy)
