"""Running expectation specs with Great Expectations, one cached context per process.

Importing ``great_expectations`` costs 5-19 s, so it happens here, on the first validation,
never at import time of :mod:`ebmops.core.validation`. The ephemeral context, its pandas data
source and whole-dataframe batch definition are built once per process; each distinct suite
(keyed by the hash of its specs) is built once and reused, so a repeated validation pays
only for running the expectations.

Results are matched back to specs by the ``spec`` index stored in each expectation's meta:
Great Expectations does not keep the suite order in its results.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from typing import Any

import numpy as np
import pandas as pd

_lock = threading.Lock()
_state: dict[str, Any] = {}

# Result format: BASIC gives observed values and up to 20 unexpected examples, which is all
# the failure messages use; SUMMARY and COMPLETE cost more per expectation.
RESULT_FORMAT = "BASIC"


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _context():
    """The process-wide ephemeral context and batch definition (built on first use)."""
    if "batch_definition" not in _state:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = ctx.data_sources.add_pandas("ebmops").add_dataframe_asset("batch")
        _state.update(gx=gx, context=ctx, batch_definition=asset.add_batch_definition_whole_dataframe("whole"),
                      suites={})
    return _state


def _suite(specs: list) -> Any:
    state = _context()
    payload = json.dumps([s.to_dict() for s in specs], sort_keys=True, default=str)
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    suite = state["suites"].get(key)
    if suite is None:
        gx = state["gx"]
        expectations = [getattr(gx.expectations, _camel(s.type))(**s.kwargs, meta={"spec": i})
                        for i, s in enumerate(specs)]
        suite = state["context"].suites.add(gx.ExpectationSuite(name=f"ebmops-{key}", expectations=expectations))
        state["suites"][key] = suite
    return suite


def run(frame: pd.DataFrame, specs: list) -> tuple[list[dict], dict]:
    """Validate ``frame`` against ``specs``.

    Returns one outcome per spec, in spec order (``success``, ``result``, ``exception``: the
    message when the expectation could not be evaluated, e.g. its column is missing), and the
    Great Expectations result as JSON-able data (``success``, ``statistics`` and per
    expectation its ``type``, ``kwargs``, ``success``, ``result`` and ``exception``).
    """
    with _lock:  # one context per process; Great Expectations is not documented as thread safe
        suite = _suite(specs)
        batch = _state["batch_definition"].get_batch(batch_parameters={"dataframe": frame})
        res = batch.validate(suite, result_format=RESULT_FORMAT)
    outcomes: list[dict] = [{"success": False, "result": {}, "exception": "no result"} for _ in specs]
    for r in res.results:  # GE's own to_json_dict() costs ~0.3 s for 200 results; read the fields directly
        index = (r.expectation_config.meta or {}).get("spec")
        if isinstance(index, int) and 0 <= index < len(specs):
            outcomes[index] = {"success": bool(r.success), "result": jsonable(dict(r.result or {})),
                               "exception": exception_message(r.exception_info or {})}
    raw = {"success": bool(res.success), "statistics": jsonable(dict(res.statistics or {})),
           "results": [{"type": s.type, "kwargs": jsonable(s.kwargs), **o} for s, o in zip(specs, outcomes)]}
    return outcomes, raw


def exception_message(info: dict) -> str | None:
    """The first exception message in a result's ``exception_info`` (flat or keyed by metric)."""
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "unknown error")
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return str(v.get("exception_message") or "unknown error")
    return None


def jsonable(obj: Any) -> Any:
    """Plain JSON data: numpy scalars become Python numbers, non-finite floats become the
    strings 'nan' / 'inf' / '-inf', tracebacks are dropped (they only repeat the message)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if k != "exception_traceback"}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else str(x)
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)
