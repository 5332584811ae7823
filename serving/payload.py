"""Parsing and checking a ``/score`` body (pure; no web framework).

Accepted body::

    {"events": [[f1, ..., fn], ...]}                        positional, in the model's feature order
    {"events": [{"<feature>": value, ...}, ...]}            by feature name (every feature, no others)
    "keys": ["user-1", null, ...]                           optional, one per event, for sticky routing

Every refusal is an ``InputError`` naming the field (``events``, ``events[3]``,
``events[0].src_bytes``, ``events[2][5]``, ``keys[7]``) and what to send instead. Values must be
JSON numbers that are finite in float32: strings (even "1.5" or "nan"), booleans and nulls are
refused rather than guessed at. The commonest body, ``{"events": [[numbers...], ...]}``, is read
by simdjson straight into a float buffer (``_simd_matrix``); a list of equal-length number lists
with keys by numpy in one call (``_fast_matrix``); anything else takes a per-value path that finds
the exact field.

High-throughput clients may instead send ``Content-Type: application/x-ebmops-f32`` (``F32``):
the body is the events as little-endian float32, row-major, one row of ``len(schema)`` values in
the stable model's feature order (``/readyz`` "features"), no keys (canary routing is
pseudo-random, as for key-less JSON). ``parse_f32`` checks it with the same statuses and field
style as the JSON path; ``parse_request`` picks the parser from the content type.

**Categorical columns.** A served model may take some features as categories
(``categorical``, see :mod:`ebmops.core.data.categorical`). There, a JSON value may be a string
or a number (booleans and nulls are refused), a binary row carries a number; each becomes its
canonical text in ``ScoreRequest.cats`` and the matrix holds NaN in that column until the model
encodes it (``serving.model.LoadedModel.encode``). Every other feature is a number as above.
Requests for numeric-only models never take this path.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Collection, Sequence

import numpy as np
import orjson
import simdjson

from ebmops.core.data.categorical import canonical_numbers, canonical_value

ALLOWED_FIELDS = ("events", "keys")
F32 = "application/x-ebmops-f32"  # the binary /score body (and, on request, answer) media type
_F32_DTYPE = np.dtype("<f4")


class InputError(Exception):
    """A request the node refuses; ``status`` is the HTTP status (400, 413 or 422)."""

    def __init__(self, status: int, error: str, field: str | None, reason: str):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.status = status
        self.error = error
        self.field = field
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class ScoreRequest:
    """A checked request: ``x`` is float32 [n, len(schema)], ``keys`` None or one per event;
    ``cats``: categorical column -> canonical texts (object [n]), None without categorical columns."""

    x: np.ndarray
    keys: list[str | None] | None
    cats: dict[str, np.ndarray] | None = None

    @property
    def n(self) -> int:
        return len(self.x)


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or InputError 400."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InputError(400, "malformed JSON", None,
                         f"the body is not valid JSON ({e}); NaN, Infinity and numbers beyond double range are "
                         "not JSON") from None
    if not isinstance(doc, dict):
        raise InputError(400, "body must be a JSON object", None,
                         f'got a JSON {type(doc).__name__}; send {{"events": [[...], ...]}}')
    return doc


def parse_score(raw: bytes, schema: Sequence[str], *, max_events: int, positional: int | None = None,
                categorical: Collection[str] = ()) -> ScoreRequest:
    """Check a /score body against ``schema`` (the feature names, in matrix column order).

    Args:
        positional: how many values a list event must have; default ``len(schema)``. A smaller
            number means some served version needs features the positional order lacks.
        categorical: the features that take categories (strings or numbers); see the module doc.
    """
    if categorical:
        return _parse_categorical(raw, schema, max_events=max_events, positional=positional, categorical=categorical)
    if positional in (None, len(schema)):
        x = _simd_matrix(raw, len(schema), max_events)
        if x is not None:
            if np.isfinite(x).all():
                return ScoreRequest(x=x, keys=None)
            # a value beyond float32: the full path below names the field
    events, keys = _events_and_keys(raw, schema, max_events, "numbers")
    x = _fast_matrix(raw, events, len(schema)) if positional in (None, len(schema)) else None
    if x is None:
        x = _slow_matrix(events, schema, len(schema) if positional is None else positional)
    _check_finite(x, events, schema)
    return ScoreRequest(x=x, keys=keys)


def is_f32(content_type: str | None) -> bool:
    """True when ``Content-Type`` names ``F32`` (any case, parameters allowed); cheap for JSON requests."""
    if content_type is None or len(content_type) < len(F32):
        return False
    head, rest = content_type[:len(F32)], content_type[len(F32):]
    return head.lower() == F32 and (not rest or rest[0] in "; \t")


def parse_request(raw: bytes, content_type: str | None, schema: Sequence[str], *, max_events: int,
                  positional: int | None = None, categorical: Collection[str] = ()) -> ScoreRequest:
    """A /score body of either format: binary float32 rows when ``content_type`` is ``F32``,
    else JSON (whatever else the header says, as before the binary format existed)."""
    if is_f32(content_type):
        req = parse_f32(raw, schema, max_events=max_events, positional=positional)
        if categorical:  # numbers in categorical columns: their canonical texts
            req = ScoreRequest(x=req.x, keys=None, cats={c: canonical_numbers(req.x[:, list(schema).index(c)])
                                                          for c in categorical if c in schema})
        return req
    return parse_score(raw, schema, max_events=max_events, positional=positional, categorical=categorical)


def parse_f32(raw: bytes, schema: Sequence[str], *, max_events: int, positional: int | None = None) -> ScoreRequest:
    """Check a binary /score body: little-endian float32 rows of ``len(schema)`` values (no copy).

    Args:
        positional: as for ``parse_score``; when smaller than ``len(schema)`` a served version needs
            features the stable's order lacks, which binary rows cannot carry.
    """
    width = len(schema)
    if positional is not None and positional < width:
        raise InputError(422, "binary events not accepted", "body",
                         f"a served version needs features {list(schema[positional:])} that the stable model's "
                         "feature order lacks; send JSON events as objects keyed by feature name")
    row = 4 * width
    if len(raw) % row:
        raise InputError(400, "bad body length", "body",
                         f"holds {len(raw)} bytes, not a multiple of the row size {row} bytes ({width} float32 "
                         f"features: {', '.join(schema)})")
    n = len(raw) // row
    if n == 0:
        raise InputError(422, "empty batch", "body", f"holds no events; send at least one row of {row} bytes")
    if n > max_events:
        raise InputError(413, "batch too large", "body",
                         f"holds {n} events, the limit is {max_events} (serving.max_batch_events); split the batch")
    x = np.frombuffer(raw, dtype=_F32_DTYPE).reshape(n, width)
    if x.dtype != np.float32:  # a big-endian host: native order for the model
        x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        i, j = (int(v) for v in np.argwhere(~finite)[0])
        raise InputError(422, "non-finite value", f"events[{i}][{j}]",
                         f"feature {schema[j]} is {float(x[i, j])!r}, which is not a finite float32")
    return ScoreRequest(x=x, keys=None)


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _parse_keys(keys: Any, n: int) -> list[str | None] | None:
    if keys is None:
        return None
    if not isinstance(keys, list):
        raise InputError(422, "invalid keys", "keys", f"must be a list of strings or nulls, got {_json_type(keys)}")
    if len(keys) != n:
        raise InputError(422, "invalid keys", "keys",
                         f"holds {len(keys)} keys for {n} events; send one key (or null) per event")
    for i, k in enumerate(keys):
        if k is not None and type(k) is not str:
            raise InputError(422, "invalid keys", f"keys[{i}]", f"must be a string or null, got {_json_type(k)}")
    return keys


def _fast_matrix(raw: bytes, events: list, width: int) -> np.ndarray | None:
    """float32 [n, width] for a list of equal-length number lists; None sends the caller to the slow path.

    The commonest body (numbers only) was already read by ``_simd_matrix``; what reaches here holds
    event keys or odd values. numpy would quietly turn true into 1.0, null into nan and "1.5" into
    1.5, so numpy guesses the dtype, which rules out strings and nulls, and the bytes are searched
    for booleans.
    """
    if set(map(type, events)) != {list} or set(map(len, events)) != {width}:
        return None
    if b"true" in raw or b"false" in raw:
        return None
    try:
        arr = np.array(events)
    except (ValueError, TypeError, OverflowError):
        return None
    if arr.ndim != 2 or arr.shape[1] != width or arr.dtype.kind not in "iuf":
        return None
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


_parsers = threading.local()  # one simdjson parser per thread: a parser serves one document at a time


def _simd_matrix(raw: bytes, width: int, max_events: int) -> np.ndarray | None:
    """float32 [n, width] of the commonest body, ``{"events": [[numbers...], ...]}`` and nothing else,
    parsed by simdjson; None for anything else (keys, named features, bad input), which the full
    path then parses and, when wrong, answers naming the field. Only bodies holding no string but
    their one key and no true/false/null get here (``_numbers_only``), so a number is all it can see."""
    if not _numbers_only(raw):
        return None
    parser = getattr(_parsers, "p", None)
    if parser is None:
        parser = _parsers.p = simdjson.Parser()
    doc = events = None
    try:
        doc = parser.parse(raw)
        if not isinstance(doc, simdjson.Object) or len(doc) != 1:
            return None
        events = doc["events"]
        n = len(events)
        if not 0 < n <= max_events:
            return None
        if raw.count(b"[") != n + 1:  # the outer list and one per event: a nested list flattens silently
            return None
        for row in events:  # ragged rows would flatten to the right count by accident
            if len(row) != width:
                return None
        flat = np.frombuffer(events.as_buffer(of_type="d"), dtype=np.float64)
        if len(flat) != n * width:
            return None
        with np.errstate(over="ignore"):
            return flat.astype(np.float32).reshape(n, width)  # a copy: the parser's buffer is reused
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None
    finally:
        del doc, events  # the parser can be reused only once nothing references its document


def _numbers_only(raw: bytes) -> bool:
    """True when a JSON object ``raw`` holds no string but its one key, and no true, false or null."""
    first = raw.find(b'"')
    second = raw.find(b'"', first + 1)
    return raw.find(b'"', second + 1) < 0 and b"u" not in raw and b"a" not in raw


def _slow_matrix(events: list, schema: Sequence[str], positional: int) -> np.ndarray:
    """Check every event and value, naming the first bad field."""
    known = set(schema)
    rows: list[list[float]] = []
    for i, ev in enumerate(events):
        if type(ev) is list:
            rows.append(_list_row(ev, i, schema, positional))
        elif type(ev) is dict:
            rows.append(_dict_row(ev, i, schema, known))
        else:
            raise InputError(422, "invalid event", f"events[{i}]",
                             f"is {_json_type(ev)}; an event is a list of {positional} numbers or an object "
                             "keyed by feature name")
    with np.errstate(over="ignore"):
        return np.array(rows, dtype=np.float64).astype(np.float32)


def _list_row(ev: list, i: int, schema: Sequence[str], positional: int) -> list:
    if positional < len(schema):
        raise InputError(422, "positional events not accepted", f"events[{i}]",
                         f"a served version needs features {list(schema[positional:])} that the positional order "
                         "lacks; send events as objects keyed by feature name")
    if len(ev) != positional:
        raise InputError(422, "wrong feature count", f"events[{i}]",
                         f"has {len(ev)} values, the model expects {positional}: {', '.join(schema)}")
    for j, v in enumerate(ev):
        if type(v) is not float and type(v) is not int:
            raise InputError(422, "non-numeric value", f"events[{i}][{j}]",
                             f"feature {schema[j]} is {_json_type(v)} ({v!r}); send a JSON number")
    return ev


def _dict_row(ev: dict, i: int, schema: Sequence[str], known: set[str]) -> list:
    if len(ev) != len(schema) or not known.issuperset(ev):
        for name in ev:
            if name not in known:
                raise InputError(422, "unknown feature", f"events[{i}].{name}",
                                 f"is not a feature of the served model; its features are {', '.join(schema)}")
        missing = [f for f in schema if f not in ev]
        raise InputError(422, "missing feature", f"events[{i}].{missing[0]}",
                         f"is missing ({len(missing)} features missing: {', '.join(missing)}); every feature is required")
    row = []
    for name in schema:
        v = ev[name]
        if type(v) is not float and type(v) is not int:
            raise InputError(422, "non-numeric value", f"events[{i}].{name}",
                             f"is {_json_type(v)} ({v!r}); send a JSON number")
        row.append(v)
    return row


def _check_finite(x: np.ndarray, events: list, schema: Sequence[str]) -> None:
    finite = np.isfinite(x)
    if finite.all():
        return
    i, j = (int(v) for v in np.argwhere(~finite)[0])
    ev = events[i]
    name = schema[j]
    value = ev.get(name) if type(ev) is dict else ev[j]
    field = f"events[{i}].{name}" if type(ev) is dict else f"events[{i}][{j}]"
    raise InputError(422, "non-finite value", field,
                     f"feature {name} is {value!r}, which is not a finite float32 (|x| must be below 3.4e38)")


def _events_and_keys(raw: bytes, schema: Sequence[str], max_events: int, what: str) -> tuple[list, list | None]:
    """The body's ``events`` (checked: a non-empty list within the limit) and its routing ``keys``;
    ``what`` an event's values are ("numbers", or "values" where categories may be strings)."""
    doc = parse_json(raw)
    unknown = [k for k in doc if k not in ALLOWED_FIELDS]
    if unknown:
        raise InputError(422, "unknown field", unknown[0], f"the body may hold only {', '.join(ALLOWED_FIELDS)}")
    events = doc.get("events")
    if not isinstance(events, list):
        raise InputError(422, "missing events", "events",
                         f"must be a list of events, got {_json_type(events)}; each event is a list of "
                         f"{len(schema)} {what} or an object keyed by feature name")
    if not events:
        raise InputError(422, "empty batch", "events", "holds no events; send at least one")
    if len(events) > max_events:
        raise InputError(413, "batch too large", "events",
                         f"holds {len(events)} events, the limit is {max_events} (serving.max_batch_events); "
                         "split the batch")
    return events, _parse_keys(doc.get("keys"), len(events))


def _parse_categorical(raw: bytes, schema: Sequence[str], *, max_events: int, positional: int | None,
                       categorical: Collection[str]) -> ScoreRequest:
    """The JSON path of a model with categorical columns: every value checked, naming the first bad field."""
    events, keys = _events_and_keys(raw, schema, max_events, "values")
    width = len(schema) if positional is None else positional
    known = set(schema)
    cat_cols = [j for j, name in enumerate(schema) if name in categorical]
    is_cat = [name in categorical for name in schema]
    x = np.empty((len(events), len(schema)), dtype=np.float64)
    texts = np.empty((len(events), len(cat_cols)), dtype=object)
    for i, ev in enumerate(events):
        if type(ev) is list:
            if width < len(schema):
                _list_row(ev, i, schema, width)  # raises: positional events not accepted
            if len(ev) != width:
                raise InputError(422, "wrong feature count", f"events[{i}]",
                                 f"has {len(ev)} values, the model expects {width}: {', '.join(schema)}")
            values, fields = ev, [f"events[{i}][{j}]" for j in range(len(schema))]
        elif type(ev) is dict:
            if len(ev) != len(schema) or not known.issuperset(ev):
                _dict_row(ev, i, schema, known)  # raises: unknown or missing feature
            values, fields = [ev[name] for name in schema], [f"events[{i}].{name}" for name in schema]
        else:
            raise InputError(422, "invalid event", f"events[{i}]",
                             f"is {_json_type(ev)}; an event is a list of {width} values or an object keyed by "
                             "feature name")
        k = 0
        for j, v in enumerate(values):
            t = type(v)
            if is_cat[j]:
                if t is str or ((t is int or t is float) and np.isfinite(v)):
                    texts[i, k] = canonical_value(v)
                    x[i, j] = np.nan
                    k += 1
                    continue
                raise InputError(422, "invalid category", fields[j],
                                 f"feature {schema[j]} is categorical and got {_json_type(v)} ({v!r}); send a string "
                                 "or a finite number")
            if t is not float and t is not int:
                raise InputError(422, "non-numeric value", fields[j],
                                 f"feature {schema[j]} is {_json_type(v)} ({v!r}); send a JSON number")
            x[i, j] = v
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    numeric = [j for j in range(len(schema)) if not is_cat[j]]
    if numeric:
        finite = np.isfinite(x32[:, numeric])
        if not finite.all():
            i, jj = (int(v) for v in np.argwhere(~finite)[0])
            j = numeric[jj]
            ev = events[i]
            field = f"events[{i}].{schema[j]}" if type(ev) is dict else f"events[{i}][{j}]"
            value = ev[schema[j]] if type(ev) is dict else ev[j]
            raise InputError(422, "non-finite value", field,
                             f"feature {schema[j]} is {value!r}, which is not a finite float32 (|x| must be below "
                             "3.4e38)")
    return ScoreRequest(x=x32, keys=keys, cats={schema[j]: texts[:, k] for k, j in enumerate(cat_cols)})
