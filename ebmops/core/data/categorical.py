"""Categorical columns: raw values as canonical strings, and a learnt vocabulary per column.

A source may declare some of its features ``categorical`` (protocol "tcp", service "http",
country codes, ports used as labels). Their values are read as they are, strings or numbers,
and turned into one canonical text each, so that the same value is the same category wherever
it comes from (a CSV column read as integers, a Parquet string column, a JSON number, a binary
float32 row):

* a string is itself;
* a number that is a whole number (6, 6.0, np.int8(6)) is its decimal integer ("6");
* any other finite number is Python's shortest round-trip text (6.5 -> "6.5");
* a boolean is "true"/"false"; a null or NaN is ``None`` (validation refuses nulls).

The vocabulary of a column is learnt at training (:func:`top_values`: the most frequent values
among the training rows, ties broken by the text, at most ``training.max_categories``) and
travels inside the exported model; a value outside it is **unknown** and gets the code
``len(vocabulary)``. :func:`encode` maps canonical values to float32 codes.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Vocabulary = Mapping[str, Sequence[str]]  # column -> its categories, in code order


def canonical_value(v) -> str | None:
    """The canonical text of one raw value (see the module docstring)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    if not math.isfinite(f):
        return None
    if f.is_integer() and abs(f) < 2 ** 63:
        return str(int(f))
    return repr(f)


def canonical_numbers(x: np.ndarray) -> np.ndarray:
    """Canonical texts (object array) of a numeric numpy array; NaN and infinities give None."""
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        return x.astype(str).astype(object)
    if x.dtype.kind == "b":
        return np.where(x, "true", "false").astype(object)
    f = x.astype(np.float64)
    out = np.empty(len(f), dtype=object)
    finite = np.isfinite(f)
    whole = finite & (np.floor(f) == f) & (np.abs(f) < 2.0 ** 63)
    out[whole] = f[whole].astype(np.int64).astype(str)
    rest = np.flatnonzero(finite & ~whole)
    out[rest] = [repr(float(v)) for v in f[rest]]
    out[~finite] = None
    return out


def canonical_arrow(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Canonical texts (object array, None for nulls) of an Arrow column of any type."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    if pa.types.is_dictionary(t):
        return canonical_arrow(pc.cast(col, pa.string()))
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        nulls = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
        if pa.types.is_decimal(t):
            col = pc.cast(col, pa.float64())
        values = col.to_numpy(zero_copy_only=False) if nulls is None else pc.fill_null(col, 0).to_numpy(
            zero_copy_only=False)
        out = canonical_numbers(values)
        if nulls is not None:
            out[nulls] = None
        return out
    return np.asarray(pc.cast(col, pa.string()).to_numpy(zero_copy_only=False), dtype=object)


def count_values(values: np.ndarray, counts: dict[str, int]) -> None:
    """Add the occurrences of each non-null canonical value in ``values`` to ``counts``."""
    if len(values) == 0:
        return
    keep = np.asarray([v is not None for v in values], dtype=bool) if values.dtype == object else None
    vals = values[keep] if keep is not None else values
    if len(vals) == 0:
        return
    uniq, n = np.unique(vals.astype(str), return_counts=True)
    for u, c in zip(uniq.tolist(), n.tolist()):
        counts[u] = counts.get(u, 0) + int(c)


def top_values(counts: Mapping[str, int], max_categories: int) -> tuple[str, ...]:
    """The ``max_categories`` most frequent values, most frequent first, ties by the text
    (deterministic whatever order the counts were gathered in)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(k for k, _ in ranked[:max_categories])


def encode(values: Iterable, categories: Sequence[str]) -> np.ndarray:
    """float32 codes of raw or canonical ``values``: the index in ``categories``, else ``len(categories)``."""
    index = {c: i for i, c in enumerate(categories)}
    unknown = len(categories)
    return np.fromiter((index.get(v if isinstance(v, str) else canonical_value(v), unknown) for v in values),
                       dtype=np.float32)
