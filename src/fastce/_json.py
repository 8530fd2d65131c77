"""Strict JSON (RFC 8259) for every writer of fastce: results, reports, states, checkpoints.

One encoding, documented in the README ("JSON output"):

* a field that does not apply (a multi-label field of a multiclass result)
  is left out by the object's ``to_dict``;
* a float that is NaN or infinite because of the data (an infinite loss from
  a -inf logit on the true class, NaN under ``nan_policy="propagate"``, an
  empty bin's accuracy) is written as the string ``"inf"``, ``"-inf"`` or
  ``"nan"`` (Python's ``repr``), so that it survives the round trip and no
  strict parser (``JSON.parse``, ``json.loads(parse_constant=...)``) rejects
  the document.

Writers call :func:`dumps`, which serialises with ``allow_nan=False``: a bare
NaN that slipped through raises instead of producing invalid JSON.
"""

from __future__ import annotations

import json
import math

import numpy as np

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def encode_float(value) -> float | str:
    """``value`` as a float, or "inf" / "-inf" / "nan" when it is not finite."""
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def decode_float(value) -> float:
    """Inverse of :func:`encode_float` (a JSON number or one of the three strings); ValueError otherwise."""
    if isinstance(value, str):
        if value not in _NONFINITE:
            raise ValueError(f"expected a number or one of 'inf', '-inf', 'nan', got {value!r}")
        return _NONFINITE[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def plain(value, *, encode: bool = True):
    """JSON-ready copy: numpy arrays and scalars become lists and numbers, keys strings.

    Non-finite floats become strings too, unless ``encode`` is False (a
    Python dict for the caller, not yet JSON).
    """
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): plain(v, encode=encode) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, encode=encode) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), encode=encode)
    if isinstance(value, np.generic):
        return plain(value.item(), encode=encode)
    if isinstance(value, float) and encode:
        return encode_float(value)
    return value


def decode_floats(values) -> np.ndarray:
    """A float64 array from a JSON list written by :func:`plain` (numbers, "inf", "-inf", "nan")."""
    if not isinstance(values, list):
        raise ValueError(f"expected a list of numbers, got {type(values).__name__}")
    if any(isinstance(v, (str, bool)) or not isinstance(v, (int, float)) for v in values):
        return np.array([decode_float(v) for v in values], dtype=np.float64)
    return np.asarray(values, dtype=np.float64)


def dumps(value, **kwargs) -> str:
    """Strict JSON text of ``value`` (see the module docstring)."""
    return json.dumps(plain(value), allow_nan=False, **kwargs)
