"""Turning failed expectations into one readable line each.

Only root causes are reported: when a column is missing, not numeric or all null, the
expectations on it that could then not be evaluated (Great Expectations reports them as
failed with an exception, or a NaN min/max) are folded into that first failure instead of
being listed again; so are the null and range checks of an empty batch, whose row count
failure says it all.
An expectation that fails for any other reason is always reported, so a batch passes only
when every expectation passed.
"""

from __future__ import annotations

import math

import pandas as pd

from ebmops.core.validation.gx_runner import jsonable
from ebmops.core.validation.expectations import COLUMNS, IN_SET, MAX, MIN, NOT_NULL, NUMERIC, ROWS, ExpectationSpec


def describe_failures(specs: list[ExpectationSpec], outcomes: list[dict], frame: pd.DataFrame) -> list[dict]:
    """One failure dict per root-cause failed expectation, in suite order."""
    failures: list[dict] = []
    failed_columns: set[str] = set()
    empty = len(frame) == 0
    for spec, outcome in zip(specs, outcomes):
        if outcome["success"]:
            continue
        if spec.type == COLUMNS and outcome["exception"] is None:
            missing = [c for c in spec.kwargs["column_set"] if c not in frame.columns]
            failed_columns.update(missing)
            failures += [_failure(spec, c, None, {"column_set": "schema columns"}, f"column '{c}' is missing")
                         for c in missing]
            if missing:
                continue
        observed = (outcome["result"] or {}).get("observed_value")
        col = spec.column
        # all-null column: min/max are NaN, which its null failure already explains
        not_evaluable = outcome["exception"] is not None or (spec.type in (MIN, MAX) and not _is_number(observed))
        if col is not None and not_evaluable and col in failed_columns:
            continue
        if empty and col is not None and spec.type != NUMERIC:
            continue  # an empty batch has no nulls or ranges to speak of; the row count says it all
        if col is not None:
            failed_columns.add(col)
        details = {k: ("numeric dtype" if k == "type_list" else v) for k, v in spec.kwargs.items() if k != "column"}
        failures.append(_failure(spec, col, observed, details, _message(spec, outcome, observed, frame)))
    return failures


def _failure(spec: ExpectationSpec, column: str | None, observed, details: dict, message: str) -> dict:
    return {"expectation": spec.type, "column": column, "observed": jsonable(observed),
            "details": jsonable(details), "message": message}


def _message(spec: ExpectationSpec, outcome: dict, observed, frame: pd.DataFrame) -> str:
    col, kw = spec.column, spec.kwargs
    if outcome["exception"] is not None:
        where = f" on column '{col}'" if col else ""
        return f"{spec.type}{where} could not be evaluated: {outcome['exception']}"
    if spec.type == NUMERIC:
        dtype = frame[col].dtype if col in frame.columns else "unknown"
        examples = (outcome["result"] or {}).get("partial_unexpected_list") or []
        shown = f", e.g. {examples[:3]!r}" if examples else ""
        return (f"column '{col}' is not numeric (dtype {dtype}{shown}); declare it under "
                f"data.sources.<name>.categorical if it holds categories, or clean it to numbers")
    if spec.type == NOT_NULL:
        nulls = int(frame[col].isna().sum()) if col in frame.columns else None
        return f"column '{col}' has {nulls} null value(s) in {len(frame)} rows"
    if spec.type == MIN:
        return f"column '{col}' has values down to {_num(observed)}, below the allowed minimum {_num(kw['min_value'])}"
    if spec.type == MAX:
        return f"column '{col}' has values up to {_num(observed)}, above the allowed maximum {_num(kw['max_value'])}"
    if spec.type == IN_SET:
        allowed = list(kw["value_set"])
        values = frame[col].dropna() if col in frame.columns else pd.Series([], dtype=object)
        unexpected = values[~values.isin(allowed)].unique().tolist()
        return f"column '{col}' has values {unexpected[:10]!r} outside the allowed {allowed}"
    if spec.type == ROWS:
        return f"batch has {observed} rows; at least {kw['min_value']} are required"
    where = f" on column '{col}'" if col else ""
    return f"{spec.type}{where} failed (observed {observed!r})"


def _num(x) -> str:
    try:
        return f"{float(x):.6g}"
    except (TypeError, ValueError):
        return str(x)


def _is_number(x) -> bool:
    try:
        return not math.isnan(float(x))
    except (TypeError, ValueError):
        return False
