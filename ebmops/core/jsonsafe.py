"""Strict JSON for measurements: JSON has no NaN or infinity, so non-finite floats travel as the
strings "nan", "inf" and "-inf" and are read back as floats. Used by gate reports, canary
judgements and the audit log (whose hashes need one canonical encoding)."""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def encode_number(x: float | None) -> float | str | None:
    if x is None:
        return None
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def decode_number(x: float | str | None) -> float | None:
    if x is None:
        return None
    if isinstance(x, str):
        return _NONFINITE[x]
    return float(x)


def encode_json(obj: Any) -> Any:
    """Make nested measurement data strict-JSON safe (non-finite floats to "inf"/"-inf"/"nan")."""
    if isinstance(obj, dict):
        return {str(k): encode_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_json(v) for v in obj]
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float) or hasattr(obj, "__float__"):
        return encode_number(float(obj))
    return str(obj)


def decode_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: decode_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_json(v) for v in obj]
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj
