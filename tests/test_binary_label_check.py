"""1-D binary logits: evaluate leaves the labels' range check to the kernel that reads them.

readers.BinaryReader.validate_once skips validate's pass over the labels (two
thirds of the bytes read, with int64 labels and float32 logits); the logit
kernel ORs the labels' bits as it reads them and, when one is neither 0 nor
1, the door raises validate's own error.  These tests hold the two promises:
the same error, word for word, from every door and wherever the label is;
and the pass really is skipped (otherwise the deferral would only add code).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastce
from fastce import _config, validation
from fastce.errors import InputError


def _error(call) -> tuple:
    with pytest.raises(InputError) as info:
        call()
    return str(info.value), info.value.row, info.value.argument


def _rows(n=50_000, seed=0):
    rng = np.random.default_rng(seed)
    return (3 * rng.standard_normal(n)).astype(np.float32), rng.integers(0, 2, n)


@pytest.mark.parametrize("bad", [2, 3, -1, -100, 255, np.iinfo(np.int64).min, np.iinfo(np.int64).max])
@pytest.mark.parametrize("where", [0, 8191, 8192, 49_999])  # first row, a block's last and next, the last row
def test_every_door_raises_validates_error(bad, where):
    z, y = _rows()
    y = y.copy()
    y[where] = bad
    if bad == 255:
        y = y.astype(np.uint8)
    expected = _error(lambda: fastce.Evaluator().update(y, z))  # validate's check, before any read
    assert expected[1] == where and f"is {bad}" in expected[0]
    assert _error(lambda: fastce.evaluate(y, logits=z)) == expected
    assert _error(lambda: fastce.evaluate(y, logits=z, sample_weight=np.ones(z.size))) == expected
    assert _error(lambda: fastce.evaluate(y, logits=z, groups=np.arange(z.size) % 7)) == expected
    assert _error(lambda: fastce.diagnose(y, logits=z)) == expected


def test_the_first_bad_label_is_named_when_it_lies_in_a_later_kernel_call(monkeypatch):
    """Kernel calls of two blocks (16384 rows): the error still names the first bad row of the whole array."""
    monkeypatch.setattr(_config, "BLOCKS_PER_CALL", 2)
    z, y = _rows(100_000)
    y = y.copy()
    y[70_000] = 2
    y[90_000] = -1
    message, row, argument = _error(lambda: fastce.evaluate(y, logits=z))
    assert row == 70_000 and argument == "y_true" and "is 2" in message


def test_label_errors_come_before_the_scores_errors_as_before():
    z, y = _rows()
    z, y = z.copy(), y.copy()
    z[10] = np.nan  # a NaN row raises at the end of the read, under nan_policy="raise"
    y[20] = 2
    message, row, _ = _error(lambda: fastce.evaluate(y, logits=z))
    assert row == 20 and "y_true row 20 is 2" in message
    y[20] = 1
    with pytest.raises(InputError, match="NaN"):
        fastce.evaluate(y, logits=z)


def test_inputs_untouched_and_bool_labels_read_as_they_are():
    z, y = _rows()
    y_before, z_before = y.copy(), z.copy()
    y[5] = 7
    y_before[5] = 7
    with pytest.raises(InputError):
        fastce.evaluate(y, logits=z)
    assert np.array_equal(y, y_before) and np.array_equal(z, z_before)
    y[5] = 1
    assert fastce.evaluate(y.astype(bool), logits=z) == fastce.evaluate(y, logits=z)


def test_evaluate_skips_the_range_pass_only_where_the_kernel_checks(monkeypatch):
    """Unweighted logits: no range pass (validation._value_range) at all; weights, probabilities, groups and the
    Evaluator keep it."""
    z, y = _rows()
    expected = {
        "plain": fastce.evaluate(y, logits=z),
        "weighted": fastce.evaluate(y, logits=z, sample_weight=np.ones(z.size)),
        "proba": fastce.evaluate(y, proba=1 / (1 + np.exp(-z))),
    }
    passes = []
    real = validation._value_range

    def counted(values):
        passes.append(values.shape)
        return real(values)

    monkeypatch.setattr(validation, "_value_range", counted)
    assert fastce.evaluate(y, logits=z) == expected["plain"]
    assert passes == []
    assert fastce.evaluate(y, logits=z, sample_weight=np.ones(z.size)) == expected["weighted"]
    assert fastce.evaluate(y, proba=1 / (1 + np.exp(-z))) == expected["proba"]
    fastce.Evaluator().update(y, z)
    fastce.evaluate(y, logits=z, groups=np.arange(z.size) % 7)
    assert len(passes) == 4
