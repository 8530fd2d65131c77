"""Issue 14, item 4: probabilities passed as logits= warn once per call, naming the evidence.

The kernels count the logits rows that lie in [0, 1] and sum to 1 (within
the proba= row-sum tolerance of the dtype) as they read them, so the
warning costs no pass; it fires only when every row counted is such a row.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import fastce
from fastce import ProbabilitiesAsLogitsWarning, cli


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _case(n_classes, dtype=np.float32, n=300, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, n_classes))
    return _softmax(z).astype(dtype), z.astype(dtype), rng.integers(0, n_classes, size=n)


def _caught(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [w for w in caught if issubclass(w.category, ProbabilitiesAsLogitsWarning)], caught


# C = 2 and 10: the short-row column walk; 100: the long-row path.
@pytest.mark.parametrize("n_classes", [2, 10, 100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probabilities_as_logits_warn_once(n_classes, dtype):
    p, z, y = _case(n_classes, dtype)
    p[:7] = np.eye(n_classes, dtype=dtype)[y[:7]]  # saturated rows (softmax of a confident model) fit too
    for call in (
        lambda: fastce.evaluate(y, logits=p),
        lambda: fastce.evaluate(y, logits=p, top_k=(1, 2), sample_weight=np.ones(len(y))),
        lambda: fastce.diagnose(y, logits=p),
        lambda: fastce.cross_entropy(p, y),
        lambda: fastce.cross_entropy(p, y, reduction="none"),
    ):
        _, mine, _ = _caught(call)
        assert len(mine) == 1
        message = str(mine[0].message)
        assert f"all {len(y)} rows" in message and "in [0, 1] and sum to 1" in message
        assert "proba=" in message or "np.log" in message
    assert issubclass(ProbabilitiesAsLogitsWarning, fastce.FastCEWarning)
    assert issubclass(ProbabilitiesAsLogitsWarning, UserWarning)
    # The numbers are still those of the logits given (a warning, not a change of meaning).
    with pytest.warns(ProbabilitiesAsLogitsWarning):
        assert fastce.evaluate(y, logits=p).cross_entropy == fastce.cross_entropy(p, y)


@pytest.mark.parametrize("n_classes", [2, 10, 100])
def test_real_logits_and_mixes_do_not_warn(n_classes):
    p, z, y = _case(n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastce.evaluate(y, logits=z)
        fastce.evaluate(y, proba=p)  # probabilities where they belong
        mixed = p.copy()
        mixed[-1] = z[-1]  # one real logits row among probabilities: not every row is evidence
        fastce.evaluate(y, logits=mixed)
        fastce.cross_entropy(mixed, y)
        shifted = p + 1.0  # in no way in [0, 1]
        fastce.evaluate(y, logits=shifted)
        fastce.evaluate(y, logits=np.eye(n_classes)[y])  # one-hot rows alone prove nothing (hand-made logits)
        fastce.diagnose(y, logits=np.eye(n_classes, dtype=np.float32)[(y + 1) % n_classes])
        nearly = p.copy()
        nearly[:, 0] += 0.01  # in [0, 1] but rows summing to 1.01: not probabilities
        fastce.evaluate(y, logits=np.clip(nearly, 0, 1))


def test_rows_not_counted_are_not_evidence():
    """Non-finite rows (omitted) and ignored rows neither make nor break the warning."""
    p, z, y = _case(10)
    mixed = p.copy()
    mixed[3] = np.nan
    _, mine, _ = _caught(lambda: fastce.evaluate(y, logits=mixed, nan_policy="omit"))
    assert len(mine) == 1 and f"all {len(y) - 1} rows" in str(mine[0].message)
    ignored = y.copy()
    ignored[:5] = -100
    real = p.copy()
    real[:5] = z[:5]  # real logits, but in ignored rows
    _, mine, _ = _caught(lambda: fastce.cross_entropy(real, ignored))
    assert len(mine) == 1


def test_evaluator_warns_once_per_result_not_per_update():
    p, z, y = _case(10, n=1000)
    ev = fastce.Evaluator(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for start in range(0, 1000, 128):  # updates never warn (rows of a partial block are not read yet)
            ev.update(y[start : start + 128], p[start : start + 128])
    _, mine, _ = _caught(ev.result)
    assert len(mine) == 1 and "all 1000 rows" in str(mine[0].message)
    ev.update(y[:1], z[:1])  # one real logits row: no longer every row
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev.result()


def test_cli_prints_the_warning_once(tmp_path):
    p, z, y = _case(10, n=5000)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "y.npy", y)
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(["eval", "--labels", str(tmp_path / "y.npy"), "--logits", str(tmp_path / "p.npy"),
                       "--chunk-rows", "1000", "--no-progress"], out=out, err=err)
    assert status == 0
    lines = [line for line in err.getvalue().splitlines() if "look like probabilities" in line]
    assert len(lines) == 1 and lines[0].startswith("fastce: warning:") and "all 5000 rows" in lines[0]


@pytest.mark.parametrize("n_classes", [2, 10, 33])
@pytest.mark.parametrize("share", [0.02, 0.5, 1.0])
def test_probability_like_counter_matches_numpy(n_classes, share):
    """The kernel's count, for few rows (visited one by one) and many (vectorised), against numpy."""
    from fastce.api import accumulate
    from fastce.checks import sum_to_one_tolerance

    p, z, y = _case(n_classes, n=4000, seed=3)
    z = z * 0.3  # small logits: many rows have a max <= 1 without being probabilities
    pick = np.random.default_rng(4).random(len(y)) < share
    scores = np.where(pick[:, None], p, z).astype(np.float32)
    scores[:3] = np.eye(n_classes, dtype=np.float32)[y[:3]]  # one-hot rows fit, and are counted apart
    wide = scores.astype(np.float64)
    tolerance = sum_to_one_tolerance(np.finfo(np.float32).eps)
    fits = (wide.min(axis=1) >= 0) & (wide.max(axis=1) <= 1) & (np.abs(wide.sum(axis=1) - 1) <= tolerance)
    state, _ = accumulate(y, logits=scores)
    assert state.count("probability_like_rows") == int(fits.sum())
    assert state.count("one_hot_like_rows") == int((fits & (wide.max(axis=1) == 1.0)).sum())
