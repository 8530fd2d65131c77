"""The reporting scripts run and say something checkable (they are not timed here)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import accuracy
import ceiling
import doors
import fastce
import kernel_timing
import readme_table
import roofline
import short_rows
import stderr_accuracy
import task_roofline


def test_kernel_timing_prints_positive_costs_per_mode(capsys):
    assert kernel_timing.main(["3", "40", "--blocks", "2", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [re.search(r"(logits|proba)", line).group(1) for line in lines] == ["logits", "proba"] * 2
    for line in lines:
        per_row, per_score = map(float, re.findall(r"([\d.]+) ns/", line))
        assert per_row > 0 and per_score > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_roofline_reads_contiguous_vectors(dtype):
    # Packed adds of contiguous loads on this host's vector ISA: a roofline that gathered its elements
    # (signed indices, compiled for AVX-512) read 5x slower than memory and inflated every fraction of it.
    assert roofline.is_vectorized(dtype)


def test_short_rows_prints_a_fraction_of_the_roofline(capsys):
    assert short_rows.main(["2", "10", "--mb", "1", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert [int(re.search(r"C=\s*(\d+)", line).group(1)) for line in lines] == [2, 10]
    for line in lines:
        assert 0 < float(re.search(r"([\d.]+)% \(min\)", line).group(1))


def test_doors_prints_every_door_against_evaluate(capsys):
    assert doors.main(["--classes", "6", "--mib", "0.5", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[2:]
    names = [name for name, _, _ in doors.doors(6, 0.01)]
    assert [line[:40].strip() for line in lines] == names
    for line in lines:
        ms, gbps, ratio = map(float, line[40:].split())
        assert ms > 0 and gbps > 0 and ratio > 0
    assert float(lines[0].split()[-1]) == 1.0  # evaluate(logits=) itself


def test_task_roofline_prints_a_fraction_per_task_and_target_dtype(capsys):
    assert task_roofline.main(["--classes", "20", "--mib", "0.5", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert [line.split("(")[0].strip() for line in lines] == ["multilabel", "multilabel", "soft"]
    for line in lines:
        assert 0 < float(re.search(r"([\d.]+)%$", line).group(1))


def test_accuracy_reference_agrees_with_fastce():
    rng = np.random.default_rng(1)
    z = (rng.standard_normal((500, 7)) * 3).astype(np.float32)
    z[::4, 2] = z[::4, 5]  # ties at the max or elsewhere
    y = rng.integers(0, 7, 500)
    ref = accuracy.long_double_cross_entropy(z, y)
    got = fastce.cross_entropy(z, y, reduction="none", precision="float64")  # float32 logits: float64 math here
    np.testing.assert_allclose(got, ref.astype(np.float64), rtol=1e-14)


def test_kernel_timing_refuses_a_call_that_did_not_do_the_job():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((64, 5)).astype(np.float32)
    y = rng.integers(0, 5, 64)
    fsums = np.zeros((1, kernel_timing.K.fsums_columns(1)))  # an untouched output: loss 0, accuracy 0
    with pytest.raises(AssertionError, match="kernel gave loss"):
        kernel_timing.check_answer(fsums, y, z, kernel_timing.K.MODE_LOGITS)


def test_ceiling_prints_costs_and_their_ratio(capsys):
    assert ceiling.main(["--mb", "8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    memory = float(re.search(r"memory\s+([\d.]+) ns", out).group(1))
    assert memory > 0
    for name in ("float64 math", "float32 contract", "float32 bare", "float64 contract"):
        floor, bound = map(float, re.search(name + r"\s+([\d.]+) ns/score/thread\s+bound\s+([\d.]+)%", out).groups())
        assert floor > 0
        # The printed figures are rounded (4 decimals, 1 for the bound): their rounding bounds the difference.
        expected = 100 * memory / floor
        assert abs(bound - expected) <= 0.05 + expected * (0.00005 / memory + 0.00005 / floor) + 1e-9
    # The per-input table: one line per input kind, its bound from the floor its math takes.
    for name in ("float32", "float16 / bfloat16", "float64", 'float32, precision="float64"'):
        assert re.search(r"^  " + re.escape(name) + r"\s+\d B\s+float(32|64) contract\s+bound\s+[\d.]+%", out, re.M)
    column = 0 if ceiling.HAS_AVX512 else 1  # the host's ISA column of issue 16's targets
    assert ("AVX-512 column" if column == 0 else "AVX2 column") in out
    for name, targets in ceiling.TARGETS.items():
        assert re.search(r"^  " + re.escape(name) + r"\s.*target %d%%" % round(100 * targets[column]), out, re.M)


def test_ceiling_exp_loops_compute_the_sums_they_time():
    scores = np.array([0.0, -1.0, 3.5, 15.0], dtype=np.float32)
    expected = np.exp(scores.astype(np.float64) - 20.0).sum() * 2
    assert ceiling.exp_sum(scores, 2) == pytest.approx(expected, rel=1e-14)
    assert ceiling.exp_sum_f32(scores, 2) == pytest.approx(expected, rel=1e-6)


def test_ceiling_contract_loop_sums_the_kernels_three_sums():
    rows = np.array([[0.0, -1.0, 3.5, 3.5], [2.0, 1.0, 0.5, -40.0]], dtype=np.float32)
    maxima = rows.max(axis=1)
    terms = np.exp(rows.astype(np.float64) - maxima[:, None])
    at_max = rows == maxima[:, None]
    rest = np.where(at_max, 0.0, terms)
    expected = 3 * (rest.sum() + (rest * rest).sum() + at_max.sum())
    assert ceiling.contract_sum(rows, maxima, 3) == pytest.approx(expected, rel=1e-6)
    wide = rows.astype(np.float64)
    chunk = np.zeros(ceiling.kernels.EXP_SCRATCH)
    assert ceiling.contract_sum_f64(wide, maxima.astype(np.float64), 3, chunk) == pytest.approx(expected, rel=1e-13)


def test_ceiling_bounds_scale_memory_by_the_inputs_bytes(monkeypatch):
    # 0.25 ns a float32 score of memory, a float32 step of 0.5 ns and a float64 one of 1 ns: float32 50%,
    # half-precision scores read half the bytes for the same math (25%), float64 ones twice the bytes (50%),
    # precision="float64" on float32 scores 25%.
    for avx512, column in ((True, 0), (False, 1)):
        monkeypatch.setattr(ceiling, "HAS_AVX512", avx512)
        rows = {name: (size, floor, bound, target)
                for name, size, floor, bound, target in ceiling.input_bounds(0.25, 0.5, 1.0)}
        assert rows["float32"] == (4, "float32 contract", pytest.approx(0.5), ceiling.TARGETS["float32"][column])
        assert rows["float16 / bfloat16"][:3] == (2, "float32 contract", pytest.approx(0.25))
        assert rows["float64"][:3] == (8, "float64 contract", pytest.approx(0.5))
        assert rows['float32, precision="float64"'] == (4, "float64 contract", pytest.approx(0.25), None)
    assert ceiling.TARGETS["float16 / bfloat16"] == (0.50, 0.35)


def test_readme_table_rows_from_compare_json():
    base = {"bytes": 8e9, "elements": 2e9, "roofline_s": 0.5, "N": 10, "problems": []}
    rows = [
        dict(base, workload="evaluate logits", C=10, dtype="float32", fastce_s=2.0,
             peers={"torch": {"ratio": 7.25, "rows": 10}, "numpy": {"skipped": "not installed"}}),
        dict(base, workload="evaluate logits", C=10, dtype="float16", bytes=4e9, fastce_s=4.0, peers={}),
        dict(base, workload="evaluate binary logits", C=1, dtype="float32", fastce_s=1.0, peers={}),
        dict(base, workload="log_loss", C=10, dtype="float32", fastce_s=None, peers={}, problems=["ERROR x"]),
    ]
    lines = readme_table.markdown(rows).splitlines()
    assert lines[0].startswith("| workload | C | dtype | fastce GB/s")
    # binary rows sort with C = 2; 8 GB in 1 s against a 0.5 s roofline: 8 GB/s, 16 GB/s, 50%
    assert lines[2] == "| evaluate binary logits | 2 (1-D) | float32 | 8.00 | 16.0 | 50% |  | — | — | — |"
    assert lines[3] == "| evaluate logits | 10 | float32 | 4.00 | 16.0 | 25% |  | 7.2 | — | — |"
    assert lines[4] == "| evaluate logits | 10 | float16 | 1.00 | 8.0 | 12% | 0.50 | — | — | — |"
    assert "failed: ERROR x" in lines[5]


def test_stderr_accuracy_reports_exact_agreement(capsys):
    stderr_accuracy.main(["--rows", "20000", "--chunk", "7000", "--classes", "5"])
    out = capsys.readouterr().out
    errors = [float(x) for x in re.findall(r"fastce rel. error ([\d.e+-]+)", out)]
    assert len(errors) == 2 and max(errors) < 1e-14


def test_stderr_accuracy_exact_moments_are_exact():
    values = np.array([0.1, 2.0**-200, 3.0, 1e100, 1 / 3], dtype=np.float64)
    accs = stderr_accuracy._exactsum.new_accumulators(2)
    stderr_accuracy._exact_moments(values, accs)
    acc_sum, acc_square = accs
    from fractions import Fraction

    scale = 1 << stderr_accuracy._exactsum.OFFSET
    assert Fraction(stderr_accuracy._exactsum.to_int(acc_sum), scale) == sum(Fraction(v) for v in values)
    assert Fraction(stderr_accuracy._exactsum.to_int(acc_square), scale) == sum(Fraction(v) ** 2 for v in values)
