"""Validating a streamed source: exact checks over every batch, the suite on a seeded sample.

A source too large to hold is validated in one pass over its record batches
(:meth:`StreamSource.iter_tables`, types untouched). Per region the pass keeps only:

* **exact tallies** of every row: row count, nulls per schema column, min and max per feature,
  the label values seen, and which partitions hold a column of a non-numeric type;
* a **seeded sample** of up to ``validation.sample_rows`` rows per region (the rows with the
  smallest :func:`~ebmops.core.data.sample.row_keys`, the same whatever the batch size).

The expectation suite of :mod:`ebmops.core.validation.suite` then runs with Great Expectations
on each region's sample, and the exact tallies decide every check they cover: row count, nulls,
ranges and label values come from the tallies (a sample cannot prove their absence), and the
column and type checks fail when either the tallies or Great Expectations fail them. The result
is one :class:`ValidationResult` per region, with the failures worded as for an in-memory batch
and the sample and tallies in ``raw``. Memory: the batch being read plus the samples.

The same pass builds the dataset's reference profile when there is none yet
(:func:`profile_from_tallies`), so a first run needs no whole-frame read either.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ebmops.core.data.sample import BottomK, row_keys
from ebmops.core.data.schema import EVENT_ID, LABEL, REGION
from ebmops.core.data.stream import StreamSource, budget
from ebmops.core.errors import DatasetError, ValidationFailed
from ebmops.core.validation.expectations import COLUMNS, IN_SET, MAX, MIN, NOT_NULL, NUMERIC, ROWS
from ebmops.core.validation.profile import ColumnProfile, ReferenceProfile
from ebmops.core.validation.suite import ValidationResult, build_suite, required_columns

log = logging.getLogger(__name__)

SAMPLE_SALT = 0x5A11  # validation samples draw their keys apart from the training split's
NO_REGION = None


@dataclass
class RegionTally:
    """Exact figures of one region's rows, and its seeded sample."""

    region: str | None
    features: tuple[str, ...]
    rows: int = 0
    nulls: dict = field(default_factory=dict)
    mins: np.ndarray | None = None
    maxs: np.ndarray | None = None
    label_values: set = field(default_factory=set)
    bad_types: dict = field(default_factory=dict)  # column -> "type in partition path"
    sample: BottomK | None = None

    def add_nulls(self, col: str, n: int) -> None:
        self.nulls[col] = self.nulls.get(col, 0) + int(n)

    def merge_range(self, lo: np.ndarray, hi: np.ndarray) -> None:
        if self.mins is None:
            self.mins, self.maxs = lo.copy(), hi.copy()
        else:
            self.mins, self.maxs = np.fmin(self.mins, lo), np.fmax(self.maxs, hi)


def _take(table: pa.Table, idx: np.ndarray) -> pa.Table:
    return table.take(pa.array(idx, type=pa.int64()))


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Join sample pieces; a column whose type differs between partitions is kept as text, so the
    suite sees (and fails) a column that is not numeric everywhere."""
    types: dict[str, set] = {}
    for t in tables:
        for f in t.schema:
            types.setdefault(f.name, set()).add(f.type)
    mixed = {name for name, ts in types.items() if len(ts) > 1}
    if mixed:
        tables = [t.select(list(types)).cast(pa.schema([pa.field(f.name, pa.string() if f.name in mixed else f.type)
                                                        for f in t.select(list(types)).schema]))
                  for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def _float_column(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(col.to_numpy(), dtype=np.float64)


def tally_source(source: StreamSource, *, sample_rows: int, seed: int = 0, progress: bool = False) -> dict:
    """One pass over ``source``: a :class:`RegionTally` per region (key None: rows without one)."""
    from ebmops.core.data.stream import progress_bar

    feats = source.schema.features
    has_label = source.schema.has_label
    tallies: dict = {}
    with progress_bar(source, f"validate {source.name}", progress) as bar:
        for pos, row0, table in source.iter_tables():
            bar.update(table.num_rows)
            _tally_table(source, tallies, pos, row0, table, feats, has_label, sample_rows, seed)
    return tallies


def _tally_table(source, tallies, pos, row0, table, feats, has_label, sample_rows, seed) -> None:
    """Fold one raw table into the region tallies (exact figures) and their samples."""
    n = table.num_rows
    if n == 0:
        return
    types = source.arrow_types.get(pos.partition, {})
    cats = set(source.schema.categorical)
    bad = {c for c in [*feats, *([LABEL] if has_label else [])]
           if c not in cats and c in types and not _is_numeric(types[c])}
    region = table.column(REGION)
    if not pa.types.is_string(region.type):
        region = pc.cast(region, pa.string())
    codes, uniques = pd.factorize(region.to_numpy(zero_copy_only=False), use_na_sentinel=True)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], n]

    x = np.zeros((n, len(feats)), dtype=np.float64)
    null_mask = np.zeros((n, len(feats)), dtype=bool)
    for j, c in enumerate(feats):
        col = table.column(c)
        if c in cats:  # any type; only nulls (and NaN) count here, no range
            null_mask[:, j] = col.is_null(nan_is_null=True).to_numpy(zero_copy_only=False)
            x[:, j] = np.nan
            continue
        if c in bad:
            null_mask[:, j] = col.is_null().to_numpy(zero_copy_only=False)
            x[:, j] = np.nan
            continue
        x[:, j] = _float_column(col)
        null_mask[:, j] = np.isnan(x[:, j])
    xs, ns = x[order], null_mask[order]
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduceat(xs, starts, axis=0)
        hi = np.fmax.reduceat(xs, starts, axis=0)
    nulls = np.add.reduceat(ns, starts, axis=0)
    id_nulls = table.column(EVENT_ID).is_null().to_numpy(zero_copy_only=False)[order]
    labels = None
    if has_label:
        lab = table.column(LABEL)
        labels = (_float_column(lab) if LABEL not in bad
                  else np.where(lab.is_null().to_numpy(zero_copy_only=False), np.nan, 0.0))[order]
    keys = row_keys(np.arange(row0, row0 + n), seed, SAMPLE_SALT)[order]

    for g, (a, b) in enumerate(zip(starts, ends)):
        code = sorted_codes[a]
        name = None if code < 0 else str(uniques[code])
        t = tallies.get(name)
        if t is None:
            t = tallies[name] = RegionTally(region=name, features=feats,
                                            sample=BottomK(sample_rows, take=_take, concat=_concat))
        t.rows += int(b - a)
        t.merge_range(lo[g], hi[g])
        for j, c in enumerate(feats):
            t.add_nulls(c, nulls[g, j])
        t.add_nulls(EVENT_ID, id_nulls[a:b].sum())
        t.add_nulls(REGION, (b - a) if name is None else 0)
        if labels is not None:
            part = labels[a:b]
            t.add_nulls(LABEL, np.isnan(part).sum())
            if LABEL not in bad:
                t.label_values.update(np.unique(part[~np.isnan(part)]).tolist())
        for c in bad:
            t.bad_types.setdefault(c, f"{types[c]} in {source.partitions[pos.partition].path}")
        k = keys[a:b]
        bound = t.sample.bound
        cand = np.arange(a, b) if bound is None else a + np.flatnonzero(k < bound)
        if len(cand):
            t.sample.offer(keys[cand], _take(table, order[cand]))


def _is_numeric(type_str: str) -> bool:
    t = type_str.lower()
    return t.startswith(("int", "uint", "float", "double", "halffloat", "decimal"))


def _kind(type_str: str) -> str:
    t = type_str.lower()
    return "u" if t.startswith("uint") else "i" if t.startswith("int") else "f"


def profile_from_tallies(source: StreamSource, tallies: dict) -> ReferenceProfile:
    """The reference profile of the whole source (every region's tallies together)."""
    feats = source.schema.features
    rows = sum(t.rows for t in tallies.values())
    if rows == 0:
        raise DatasetError(f"cannot profile dataset '{source.name}': it has no rows")
    bad: list[str] = []
    columns: dict[str, ColumnProfile] = {}
    for j, name in enumerate(feats):
        if name in source.schema.categorical:
            if sum(t.nulls.get(name, 0) for t in tallies.values()):
                bad.append(f"{name} (has nulls)")
            continue
        wrong = next((t.bad_types[name] for t in tallies.values() if name in t.bad_types), None)
        if wrong:
            bad.append(f"{name} ({wrong}, not numeric)")
            continue
        nulls = sum(t.nulls.get(name, 0) for t in tallies.values())
        lo = min(float(t.mins[j]) for t in tallies.values())
        hi = max(float(t.maxs[j]) for t in tallies.values())
        if nulls or not (math.isfinite(lo) and math.isfinite(hi)):
            bad.append(f"{name} (has nulls or infinite values)")
            continue
        kinds = {_kind(types[name]) for types in source.arrow_types.values() if name in types}
        columns[name] = ColumnProfile(dtype_kind="f" if "f" in kinds or len(kinds) != 1 else kinds.pop(), min=lo, max=hi)
    if bad:
        raise DatasetError(f"cannot use dataset '{source.name}' as a validation reference: {', '.join(bad)}. "
                           f"Clean the source data first; the reference is the baseline of every later batch.")
    return ReferenceProfile(dataset=source.name, features=tuple(feats), has_label=source.schema.has_label,
                            columns=columns, n_rows=int(rows), fingerprint=source.fingerprint(),
                            categorical=tuple(source.schema.categorical))


def _exact_outcome(spec, t: RegionTally, features: tuple[str, ...]) -> dict:
    def out(success: bool, observed) -> dict:
        return {"success": bool(success), "result": {"observed_value": observed}, "exception": None}

    col = spec.column
    if spec.type == COLUMNS:
        return out(True, list(spec.kwargs["column_set"]))  # a source maps every declared column, or fails to open
    if spec.type == NUMERIC:
        return out(col not in t.bad_types, t.bad_types.get(col, "numeric"))
    if spec.type == NOT_NULL:
        nulls = t.nulls.get(col, 0)
        return out(nulls == 0, 1.0 - nulls / t.rows if t.rows else 0.0)
    if spec.type in (MIN, MAX):
        if col in t.bad_types:
            return out(False, None)
        j = features.index(col)
        value = float(t.mins[j] if spec.type == MIN else t.maxs[j])
        if math.isnan(value):
            return out(False, value)
        ok = value >= spec.kwargs["min_value"] if spec.type == MIN else value <= spec.kwargs["max_value"]
        return out(ok, value)
    if spec.type == IN_SET:
        allowed = set(spec.kwargs["value_set"])
        return out(set(t.label_values) <= allowed, sorted(t.label_values)[:20])
    if spec.type == ROWS:
        return out(t.rows >= spec.kwargs["min_value"], t.rows)
    return out(True, None)


def validate_tally(t: RegionTally, profile: ReferenceProfile, settings) -> ValidationResult:
    """The region's verdict: the suite on its sample (Great Expectations), exact tallies deciding."""
    from ebmops.core.validation import gx_runner
    from ebmops.core.validation.failures import describe_failures

    started = time.perf_counter()
    specs = build_suite(profile, settings)
    _keys, sample = t.sample.result()
    frame = sample.to_pandas() if sample is not None else pd.DataFrame(columns=required_columns(profile))
    ge_outcomes, raw = gx_runner.run(frame, specs)
    merged = []
    for spec, ge in zip(specs, ge_outcomes):
        exact = _exact_outcome(spec, t, profile.features)
        if spec.type in (COLUMNS, NUMERIC):  # either side failing fails the check
            merged.append(ge if exact["success"] else exact)
        else:
            merged.append(exact)
    failures = describe_failures(specs, merged, frame)
    for f in failures:  # word the checks the tallies decided with the exact figures
        col = f["column"]
        if f["expectation"] == NOT_NULL:
            f["message"] = f"column '{col}' has {t.nulls.get(col, 0)} null value(s) in {t.rows} rows"
        elif f["expectation"] == IN_SET:
            unexpected = sorted(v for v in t.label_values if v not in (0, 1))
            f["message"] = f"column '{col}' has values {unexpected[:10]!r} outside the allowed [0, 1]"
        elif f["expectation"] == NUMERIC and col in t.bad_types:
            f["message"] = (f"column '{col}' is not numeric ({t.bad_types[col]}); declare it under "
                            f"data.sources.{profile.dataset}.categorical if it holds categories, or clean it to numbers")
    raw.update(sample_rows=int(len(frame)), rows=t.rows,
               exact={"nulls": dict(t.nulls), "label_values": sorted(t.label_values)[:20],
                      "bad_types": dict(t.bad_types)})
    return ValidationResult(success=not failures, failures=failures, n_rows=t.rows,
                            seconds=round(time.perf_counter() - started, 4), raw=raw)


def sample_frame(t: RegionTally) -> pd.DataFrame:
    _keys, sample = t.sample.result()
    return sample.to_pandas() if sample is not None else pd.DataFrame()


def validate_source(source: StreamSource, settings, *, profile: ReferenceProfile | None = None,
                    store=None, tallies: dict | None = None, progress: bool = False) -> tuple[ReferenceProfile, list[dict]]:
    """Validate every region of ``source`` in one pass; quarantine failing regions and raise.

    Returns the reference profile (built from this pass when ``profile`` is None and the dataset
    has none saved) and one summary per region (region, rows, sample rows, seconds). A failing
    region is quarantined (its sample, the full report) and recorded in ``store``; then one
    :class:`ValidationFailed` names every failing region."""
    from ebmops.core.validation.profile import adopt_reference
    from ebmops.core.validation.quarantine import quarantine_batch

    started = time.perf_counter()
    if tallies is None:
        tallies = tally_source(source, sample_rows=budget(settings, source.schema.n_features).validation_rows,
                               seed=settings.training.seed, progress=progress)
    if profile is None:
        profile = adopt_reference(source.name, source.schema, settings,
                                  build=lambda: profile_from_tallies(source, tallies))
    pass_s = time.perf_counter() - started
    summaries, failed = [], []
    ordered = sorted(tallies.values(), key=lambda t: (t.region is None, _region_rank(t.region, settings)))
    for t in ordered:
        res = validate_tally(t, profile, settings)
        summaries.append({"region": t.region, "rows": t.rows, "success": res.success,
                          "sample_rows": res.raw.get("sample_rows", 0), "seconds": round(res.seconds, 3)})
        if res.success:
            continue
        path = quarantine_batch(sample_frame(t), res, quarantine_dir=settings.quarantine_dir, dataset=source.name,
                                region=t.region, sample_of=source.uri)
        if store is not None:
            try:
                store.record_quarantine(dataset=source.name, region=t.region, n_rows=t.rows, path=str(path),
                                        failures=res.failures)
            except Exception as e:  # the batch is aside; do not hide the verdict behind this
                log.error("quarantined %s but could not record it in the state store: %s", path, e)
        failed.append((t, res, path))
    if failed:
        lines = []
        for t, res, path in failed:
            lines.append(f"region '{t.region}' ({t.rows} rows) failed {len(res.failures)} expectation(s), "
                         f"quarantined at {path}:")
            lines += [f"  - {m}" for m in res.messages]
        raise ValidationFailed(
            f"dataset '{source.name}' failed validation in {len(failed)} of {len(tallies)} region(s):\n"
            + "\n".join(lines) + "\nfix the source and feed it in again, or delete the quarantine folders to "
                                 "discard them (each holds the region's seeded sample and the full report).",
            quarantine_path=str(failed[0][2]), failures=[f for _t, r, _p in failed for f in r.failures])
    log.info("validated %s: %d regions, %d rows, pass %.1f s", source.name, len(tallies),
             sum(t.rows for t in tallies.values()), pass_s)
    return profile, summaries


def reference_for_source(source: StreamSource, settings) -> ReferenceProfile:
    """The dataset's saved reference, else one built from a streamed pass over ``source``."""
    from ebmops.core.validation.profile import adopt_reference

    def build() -> ReferenceProfile:
        sample = budget(settings, source.schema.n_features).validation_rows
        return profile_from_tallies(source, tally_source(source, sample_rows=min(sample, 1), seed=0))

    return adopt_reference(source.name, source.schema, settings, build=build)


def _region_rank(region: str | None, settings) -> tuple[int, str]:
    regions = list(settings.data.regions)
    return (regions.index(region), "") if region in regions else (len(regions), str(region))
