"""fastce.cross_entropy on PyTorch's K-dimensional input: (N, C, d1, ..., dk) with (N, d1, ..., dk) targets.

torch.nn.functional.cross_entropy on float64 tensors is the oracle.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import BFLOAT16

import fastce
from fastce import _config
from fastce.errors import FastCEWarning, InputError, OmittedRowsWarning

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ["mean", "sum", "none"]
SHAPES = {1: (4, 9), 2: (3, 5, 4), 3: (2, 3, 4, 5)}  # (N, d1, ..., dk) for each k


def torch_ce(x, t, weight=None, **options):
    """The oracle, in float64 whatever the dtype of ``x`` (the same values, widened exactly)."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    t = np.asarray(t)
    tt = torch.from_numpy(t.astype(np.float64) if t.dtype.kind == "f" else t.astype(np.int64))
    wt = None if weight is None else torch.from_numpy(np.asarray(weight, dtype=np.float64))
    out = F.cross_entropy(xt, tt, weight=wt, **options)
    return out.numpy() if options.get("reduction") == "none" else float(out)


def check(got, expected, reduction, positions, rtol=1e-12, atol=1e-13):
    if reduction == "none":
        assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == positions
    else:
        assert type(got) is float
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def make(rng, k, n_classes, *, ignore=0.0, dtype=np.float64):
    positions = SHAPES[k]
    x = (rng.normal(scale=2.5, size=(positions[0], n_classes) + positions[1:])).astype(dtype)
    t = rng.integers(0, n_classes, size=positions)
    t[rng.random(positions) < ignore] = -100
    return x, t


def soft_targets(rng, shape):
    p = rng.dirichlet(np.ones(shape[1]), size=shape[:1] + shape[2:])  # classes last
    return np.moveaxis(p, -1, 1)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("n_classes", [2, 5, 33])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_class_indices_match_torch(rng, k, n_classes, reduction, weighted):
    x, t = make(rng, k, n_classes, ignore=0.2)
    w = rng.uniform(0.1, 3.0, size=n_classes) if weighted else None
    expected = torch_ce(x, t, w, reduction=reduction)
    got = fastce.cross_entropy(x, t, weight=w, reduction=reduction)
    check(got, expected, reduction, SHAPES[k])
    if reduction == "none":
        assert (got[t == -100] == 0.0).all()


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("n_classes", [2, 5, 33])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_label_smoothing_and_soft_targets_match_torch(rng, k, n_classes, reduction):
    x, t = make(rng, k, n_classes, ignore=0.2)
    w = rng.uniform(0.1, 3.0, size=n_classes)
    for weight in (None, w):
        expected = torch_ce(x, t, weight, reduction=reduction, label_smoothing=0.1)
        got = fastce.cross_entropy(x, t, weight=weight, reduction=reduction, label_smoothing=0.1)
        check(got, expected, reduction, SHAPES[k])
        p = soft_targets(rng, x.shape)
        for smoothing in (0.0, 0.1):
            expected = torch_ce(x, p, weight, reduction=reduction, label_smoothing=smoothing)
            got = fastce.cross_entropy(x, p, weight=weight, reduction=reduction, label_smoothing=smoothing)
            check(got, expected, reduction, SHAPES[k])


@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_ignore_index_is_a_class_id_too(rng, ignore_index):
    x, t = make(rng, 2, 5)
    t[0, 1:3] = ignore_index
    for reduction in REDUCTIONS:
        expected = torch_ce(x, t, ignore_index=ignore_index, reduction=reduction)
        got = fastce.cross_entropy(x, t, ignore_index=ignore_index, reduction=reduction)
        check(got, expected, reduction, SHAPES[2])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_every_position_ignored_gives_nan_mean_as_torch(rng, label_smoothing):
    x, _ = make(rng, 2, 5)
    t = np.full(SHAPES[2], -100)
    assert math.isnan(torch_ce(x, t, label_smoothing=label_smoothing))
    with pytest.warns(FastCEWarning, match="every target equals ignore_index"):
        assert math.isnan(fastce.cross_entropy(x, t, label_smoothing=label_smoothing))
    assert fastce.cross_entropy(x, t, reduction="sum", label_smoothing=label_smoothing) == 0.0
    assert (fastce.cross_entropy(x, t, reduction="none", label_smoothing=label_smoothing) == 0.0).all()


DTYPES = [pytest.param(np.float16, id="f16"), pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
if BFLOAT16 is not None:
    DTYPES.append(pytest.param(BFLOAT16, id="bf16"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_narrow_dtypes_match_torch_on_the_same_values_in_float64(rng, dtype, reduction):
    x, t = make(rng, 2, 33, ignore=0.1, dtype=dtype)
    w = rng.uniform(0.1, 3.0, size=33)
    # float32 math for narrow inputs: each loss within a few float32 ulp
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for weight in (None, w):
        expected = torch_ce(x, t, weight, reduction=reduction)
        got = fastce.cross_entropy(x, t, weight=weight, reduction=reduction)
        check(got, expected, reduction, SHAPES[2], rtol=rtol, atol=rtol)
        p = soft_targets(rng, x.shape)
        expected = torch_ce(x, p, weight, reduction=reduction)
        check(fastce.cross_entropy(x, p, weight=weight, reduction=reduction), expected, reduction, SHAPES[2],
              rtol=rtol, atol=rtol)


def layouts(x):
    """The same values in other memory layouts: classes last in memory, F order, a strided view."""
    classes_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
    wide[..., ::2] = x
    return {"C": x, "classes-last": classes_last, "F": np.asfortranarray(x), "strided": wide[..., ::2]}


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("budget", [None, 64], ids=["default-budget", "tiny-budget"])
def test_layouts_and_piece_sizes_give_the_same_bits(rng, monkeypatch, k, budget):
    # A tiny budget makes every sample larger than a piece: the strided-view path (k = 1)
    # and the walk over the first trailing axis (k > 1).
    if budget is not None:
        monkeypatch.setattr(_config, "COPY_BYTES_PER_CALL", budget)
    x, t = make(rng, k, 5, ignore=0.2)
    w = rng.uniform(0.1, 3.0, size=5)
    p = soft_targets(rng, x.shape)
    results = {}
    for view in layouts(x).values():
        assert np.array_equal(view, x)
        for reduction in REDUCTIONS:
            for target, smoothing in ((t, 0.0), (t, 0.1), (p, 0.0)):
                got = fastce.cross_entropy(view, target, weight=w, reduction=reduction, label_smoothing=smoothing)
                check(got, torch_ce(x, target, w, reduction=reduction, label_smoothing=smoothing), reduction, SHAPES[k])
                results.setdefault((reduction, target is p, smoothing), []).append(got)
        # targets in other layouts too
        for target in layouts(t).values():
            check(fastce.cross_entropy(view, target, weight=w), torch_ce(x, t, w), "mean", SHAPES[k])
        for target in layouts(p).values():
            check(fastce.cross_entropy(view, target), torch_ce(x, p), "mean", SHAPES[k])
    for key, values in results.items():
        for value in values[1:]:  # where pieces start depends on the shape only
            np.testing.assert_array_equal(value, values[0], err_msg=str(key))


def test_agrees_with_the_rows_of_the_two_dimensional_call(rng):
    x, t = make(rng, 2, 33, ignore=0.2)
    rows = np.moveaxis(x, 1, -1).reshape(-1, 33)
    for reduction in REDUCTIONS:
        got = fastce.cross_entropy(x, t, reduction=reduction)
        flat = fastce.cross_entropy(rows, t.reshape(-1), reduction=reduction)
        np.testing.assert_allclose(np.reshape(got, np.shape(flat)), flat, rtol=1e-15, atol=0)


@settings(max_examples=30, deadline=None)
@given(
    positions=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple),
    n_classes=st.integers(1, 7),
    reduction=st.sampled_from(REDUCTIONS),
    smoothing=st.sampled_from([0.0, 0.1]),
    soft=st.booleans(),
    weighted=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_shapes_match_torch(positions, n_classes, reduction, smoothing, soft, weighted, seed):
    rng = np.random.default_rng(seed)
    shape = positions[:1] + (n_classes,) + positions[1:]
    x = rng.normal(scale=3.0, size=shape)
    if soft:
        t = soft_targets(rng, shape)
    else:
        t = rng.integers(0, n_classes, size=positions)
        t[rng.random(positions) < 0.3] = -100
    w = rng.uniform(0.0, 2.0, size=n_classes) if weighted else None
    expected = torch_ce(x, t, w, reduction=reduction, label_smoothing=smoothing)
    with np.errstate(all="ignore"):
        undefined = reduction == "mean" and not soft and math.isnan(expected)
    if undefined:  # every position ignored (or weighted 0): NaN, as torch, with a warning
        with pytest.warns(FastCEWarning):
            assert math.isnan(fastce.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=smoothing))
        return
    got = fastce.cross_entropy(x, t, weight=w, reduction=reduction, label_smoothing=smoothing)
    check(got, expected, reduction, positions)


def test_inputs_are_not_modified(rng):
    x, t = make(rng, 2, 5, ignore=0.2)
    x[1, :, 2, 3] = np.nan
    p = soft_targets(rng, x.shape)
    w = rng.uniform(0.1, 3.0, size=5)
    arrays = {"x": x, "t": t, "p": p, "w": w, "xs": layouts(x)["strided"]}
    pristine = {key: value.copy() for key, value in arrays.items()}
    for reduction in REDUCTIONS:
        for nan_policy in ("omit", "propagate"):
            for scores in (x, arrays["xs"]):
                for target, smoothing in ((t, 0.0), (t, 0.1), (p, 0.0)):
                    with pytest.warns(OmittedRowsWarning) if nan_policy == "omit" else _no_warning():
                        fastce.cross_entropy(scores, target, weight=w, reduction=reduction, nan_policy=nan_policy,
                                             label_smoothing=smoothing)
    for key, value in arrays.items():
        assert np.array_equal(value, pristine[key], equal_nan=True), key
        assert value.flags.writeable, key


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_nan_policy_and_positions_in_messages(rng, smoothing):
    x, t = make(rng, 2, 5)
    x[2, 3, 1, 2] = np.nan
    x[2, 0, 4, 0] = np.nan  # a later position
    with pytest.raises(InputError, match=r"input\[2, :, 1, 2\] holds NaN or \+inf \(2 such row") as info:
        fastce.cross_entropy(x, t, label_smoothing=smoothing)
    assert info.value.argument == "input" and info.value.row == np.ravel_multi_index((2, 1, 2), SHAPES[2])
    keep = np.ones(SHAPES[2], dtype=bool)
    keep[2, 1, 2] = keep[2, 4, 0] = False
    expected = torch_ce(x, t, reduction="none", label_smoothing=smoothing)
    with pytest.warns(OmittedRowsWarning, match=r"skipped 2 row\(s\) .*first: input\[2, :, 1, 2\]"):
        got = fastce.cross_entropy(x, t, reduction="none", nan_policy="omit", label_smoothing=smoothing)
    np.testing.assert_allclose(got, expected[keep], rtol=1e-12)  # the kept positions, in C order
    with pytest.warns(OmittedRowsWarning):
        got = fastce.cross_entropy(x, t, nan_policy="omit", label_smoothing=smoothing)
    assert got == pytest.approx(expected[keep].mean(), rel=1e-12)
    assert math.isnan(fastce.cross_entropy(x, t, nan_policy="propagate", label_smoothing=smoothing))
    got = fastce.cross_entropy(x, t, reduction="none", nan_policy="propagate", label_smoothing=smoothing)
    assert np.isnan(got[2, 1, 2]) and np.isnan(got[2, 4, 0]) and np.isfinite(got[keep]).all()


def test_memory_does_not_grow_with_n(rng):
    n, c, steps = 5000, 8, 125  # 40 MB of float64 logits
    x = rng.normal(size=(n, c, steps))
    t = rng.integers(0, c, size=(n, steps))
    expected = fastce.cross_entropy(np.moveaxis(x, 1, -1).reshape(-1, c), t.reshape(-1))
    uniform = np.broadcast_to(np.full((1, c, 1), 1.0 / c), x.shape)  # soft targets that take no memory
    for target in (t, uniform):
        fastce.cross_entropy(x[:2], target[:2])  # compile outside the measurement
        tracemalloc.start()
        try:
            got = fastce.cross_entropy(x, target)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        if target is t:
            assert got == pytest.approx(expected, rel=1e-14)
        assert peak < x.nbytes // 4, f"peak {peak / 1e6:.1f} MB for {x.nbytes / 1e6:.0f} MB of input"


# -- shapes that do not fit ---------------------------------------------------------

X3 = np.zeros((2, 3, 4))


@pytest.mark.parametrize(
    "target,pattern",
    [
        (np.zeros((2, 4, 3), dtype=np.int64), r"target has shape \(2, 4, 3\), which does not fit the input's shape \(2, 3, 4\)"),
        (np.zeros((2, 3), dtype=np.int64), r"target has shape \(2, 3\), the input's shape \(2, 3, 4\) without its last axis: the class axis of the input looks last.*np\.moveaxis\(input, -1, 1\)"),
        (np.zeros((2, 3, 4), dtype=np.int64), r"target has the input's shape \(2, 3, 4\) but dtype int64: probabilities must be floating point, class indices must have shape \(2, 4\)"),
        (np.zeros((4,), dtype=np.int64), r"target has shape \(4,\), which does not fit.*class indices of shape \(2, 4\) or probabilities of shape \(2, 3, 4\)"),
        (np.zeros((2, 4, 1), dtype=np.int64), r"class indices of shape \(2, 4\)"),
    ],
)
def test_target_shapes_that_do_not_fit(target, pattern):
    with pytest.raises(InputError, match=pattern) as info:
        fastce.cross_entropy(X3, target)
    assert info.value.argument == "target" and info.value.value == target.shape
    assert "cross_entropy takes the class axis at position 1, as PyTorch: input (N, C, d1, ..., dk)" in str(info.value)


def test_bad_labels_are_named_by_position():
    t = np.zeros((2, 4), dtype=np.int64)
    t[1, 2] = 3
    with pytest.raises(InputError, match=r"target\[1, 2\] is 3, outside the valid class indices 0\.\.2 "
                                         r"\(the input has 3 classes on axis 1\)") as info:
        fastce.cross_entropy(X3, t)
    assert info.value.argument == "target" and info.value.row == 6
    with pytest.raises(InputError, match=r"target must hold integer class indices; target\[0, 1\] is 0\.5"):
        fastce.cross_entropy(X3, np.array([[0, 0.5, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(InputError, match=r"target has dtype float64; pass integer class indices"):
        fastce.cross_entropy(X3, np.zeros((2, 4)))


def test_bad_soft_targets_are_named_by_position(rng):
    p = soft_targets(rng, X3.shape)
    p[1, :, 3] = [0.5, -0.5, 1.0]
    with pytest.raises(InputError, match=r"target\[1, :, 3\] holds a negative, NaN or infinite value") as info:
        fastce.cross_entropy(X3, p)
    assert info.value.row == 7
    p[1, :, 3] = [0.5, 0.5, 1.0]
    with pytest.warns(FastCEWarning, match=r"1 row\(s\) of target do not sum to 1 \(first: target\[1, :, 3\]\)"):
        fastce.cross_entropy(X3, p)


def test_other_bad_inputs():
    t = np.zeros((2, 4), dtype=np.int64)
    with pytest.raises(InputError, match=r"weight must have shape \(3,\)"):
        fastce.cross_entropy(X3, t, weight=np.ones(4))
    with pytest.raises(InputError, match=r"input is empty"):
        fastce.cross_entropy(np.zeros((0, 3, 4)), np.zeros((0, 4), dtype=np.int64))
    with pytest.raises(InputError, match=r"input has dtype complex128"):
        fastce.cross_entropy(X3.astype(complex), t)


def test_unbatched_input_is_refused_with_the_batch_of_one_advice():
    # torch takes a (C,) input with a scalar target; fastce asks for a batch of one
    with pytest.raises(InputError, match=r"unbatched form .* x\[None\] \(shape \(1, C\)\)"):
        fastce.cross_entropy(np.zeros(3), np.int64(1))
