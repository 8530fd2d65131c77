"""The reporting scripts run and say something checkable (they are not timed here)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import accuracy
import fastce
import kernel_timing


def test_kernel_timing_prints_positive_costs_per_mode(capsys):
    assert kernel_timing.main(["3", "40", "--blocks", "2", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [re.search(r"(logits|proba)", line).group(1) for line in lines] == ["logits", "proba"] * 2
    for line in lines:
        per_row, per_score = map(float, re.findall(r"([\d.]+) ns/", line))
        assert per_row > 0 and per_score > 0


def test_accuracy_reference_agrees_with_fastce():
    rng = np.random.default_rng(1)
    z = (rng.standard_normal((500, 7)) * 3).astype(np.float32)
    z[::4, 2] = z[::4, 5]  # ties at the max or elsewhere
    y = rng.integers(0, 7, 500)
    ref = accuracy.long_double_cross_entropy(z, y)
    got = fastce.cross_entropy(z, y, reduction="none")
    np.testing.assert_allclose(got, ref.astype(np.float64), rtol=1e-14)


def test_kernel_timing_refuses_a_call_that_did_not_do_the_job():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 5, 64)
    fsums = np.zeros((1, kernel_timing.K.F_TOPK + 1))  # an untouched output: loss 0, accuracy 0
    with pytest.raises(AssertionError, match="kernel gave loss"):
        kernel_timing.check_answer(fsums, y, z, kernel_timing.K.MODE_LOGITS)
