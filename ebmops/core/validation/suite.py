"""The expectation suite of a batch, derived from its reference profile, and running it.

The suite is plain data: a list of ``ExpectationSpec`` (a Great Expectations expectation type
and its kwargs), built by :func:`build_suite` from the profile and ``ValidationSettings``.
For a dataset with features ``f1..fn`` it expects:

* every schema column present: ``event_id``, ``region``, ``label`` (when the reference has
  one) and each feature (one table-level expectation; each missing column is its own failure);
* each numeric feature (and the label) of a numeric dtype; a categorical feature may hold
  strings or numbers (an unseen value is allowed: it scores as unknown);
* no nulls in the features, ``event_id``, ``region`` and ``label``;
* each numeric feature's min and max within the reference range widened by ``range_tolerance``
  times that range (see :func:`allowed_range`);
* labels only 0 or 1;
* at least ``min_rows`` rows.

Min/max and non-null *proportion* expectations are used instead of their row-by-row
equivalents on purpose: Great Expectations' cost is per expectation, not per row (about
3-8 ms for an aggregate one, about 20 ms for a row-map one, measured on 2 shared cores), and
the suite holds 4 per feature (167 for kdd99's 40 features). The observed min/max also make
the better failure message.

:func:`validate_batch` runs the suite with Great Expectations (imported lazily, see
:mod:`ebmops.core.validation.gx_runner`) and turns its result into a :class:`ValidationResult`
with one readable failure per broken expectation (:mod:`ebmops.core.validation.failures`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import pandas as pd

from ebmops.core.data.schema import EVENT_ID, LABEL, REGION
from ebmops.core.validation.expectations import (COLUMNS, IN_SET, MAX, MIN, NOT_NULL, NUMERIC, NUMERIC_TYPES, ROWS,
                                                 ExpectationSpec)
from ebmops.core.validation.profile import ColumnProfile, ReferenceProfile

@dataclass
class ValidationResult:
    """The verdict on one batch.

    ``failures`` holds one dict per failed expectation: ``expectation`` (its type), ``column``
    (None for table-level ones), ``observed`` (the value that broke it, JSON-able), ``details``
    (the expectation's kwargs) and ``message`` (a one-line explanation). ``raw`` is the Great
    Expectations result as JSON-able data, tracebacks removed.
    """

    success: bool
    failures: list[dict]
    n_rows: int
    seconds: float
    raw: dict = field(default_factory=dict)

    @property
    def messages(self) -> list[str]:
        return [f["message"] for f in self.failures]

    def to_dict(self) -> dict:
        return asdict(self)


def allowed_range(col: ColumnProfile, tolerance: float) -> tuple[float, float]:
    """The reference range widened by ``tolerance`` times its width on each side.

    A zero-range (constant) reference column would allow no movement at all, so its width
    counts as ``max(|value|, 1)``: a feature constant at 0 accepts ``[-tol, +tol]``.
    """
    width = col.range if col.range > 0 else max(abs(col.min), 1.0)
    slack = tolerance * width
    return col.min - slack, col.max + slack


def required_columns(profile: ReferenceProfile) -> list[str]:
    return [EVENT_ID, REGION, *([LABEL] if profile.has_label else []), *profile.features]


def build_suite(profile: ReferenceProfile, settings) -> list[ExpectationSpec]:
    """Derive the suite from the reference and ``ValidationSettings`` (or a whole ``Settings``)."""
    vs = getattr(settings, "validation", settings)
    numeric = [*([LABEL] if profile.has_label else []), *profile.numeric]
    specs = [ExpectationSpec(COLUMNS, {"column_set": required_columns(profile), "exact_match": False})]
    specs += [ExpectationSpec(NUMERIC, {"column": c, "type_list": NUMERIC_TYPES}) for c in numeric]
    specs += [ExpectationSpec(NOT_NULL, {"column": c, "min_value": 1.0}) for c in required_columns(profile)]
    for name in profile.numeric:
        lo, hi = allowed_range(profile.columns[name], vs.range_tolerance)
        specs.append(ExpectationSpec(MIN, {"column": name, "min_value": lo}))
        specs.append(ExpectationSpec(MAX, {"column": name, "max_value": hi}))
    if profile.has_label:
        specs.append(ExpectationSpec(IN_SET, {"column": LABEL, "value_set": [0, 1]}))
    specs.append(ExpectationSpec(ROWS, {"min_value": vs.min_rows}))
    return specs


def validate_batch(frame: pd.DataFrame, profile: ReferenceProfile, settings) -> ValidationResult:
    """Run the profile's suite on ``frame`` with Great Expectations; never raises on bad data."""
    from ebmops.core.validation import gx_runner
    from ebmops.core.validation.failures import describe_failures

    started = time.perf_counter()
    specs = build_suite(profile, settings)
    outcomes, raw = gx_runner.run(frame, specs)
    failures = describe_failures(specs, outcomes, frame)
    return ValidationResult(success=not failures, failures=failures, n_rows=int(len(frame)),
                            seconds=round(time.perf_counter() - started, 4), raw=raw)
