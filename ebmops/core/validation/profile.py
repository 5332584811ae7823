"""The reference profile: what a good batch of a dataset looks like.

The first time a dataset is validated, its full canonical frame is summarised into a
``ReferenceProfile``: per numeric feature the dtype kind, min and max (categorical features have
no range: any value is allowed, an unseen one scores as unknown); the schema's feature order;
whether a label is present; the row count, creation time and the data fingerprint. The
profile is saved as ``<data_dir>/reference/<dataset>.json`` and is the fixed baseline every
later batch is checked against: it is *not* rebuilt when newer data has wider ranges.
To re-baseline on purpose, delete the file; the next validation rebuilds it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ebmops.core.data.schema import EVENT_ID, LABEL, Dataset, FeatureSchema, frame_fingerprint
from ebmops.core.errors import DatasetError

PROFILE_VERSION = 1


@dataclass(frozen=True)
class ColumnProfile:
    """One feature of the reference: numpy dtype kind ('f', 'i', 'u') and its observed range."""

    dtype_kind: str
    min: float
    max: float

    @property
    def range(self) -> float:
        return self.max - self.min


@dataclass(frozen=True)
class ReferenceProfile:
    """The baseline of one dataset. Build with :meth:`from_frame`; persist with :meth:`save`."""

    dataset: str
    features: tuple[str, ...]
    has_label: bool
    columns: dict[str, ColumnProfile]
    n_rows: int
    fingerprint: str
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    version: int = PROFILE_VERSION
    categorical: tuple[str, ...] = ()  # features of any type, not null, no range

    @property
    def schema(self) -> FeatureSchema:
        return FeatureSchema(features=self.features, has_label=self.has_label, categorical=self.categorical)

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if f not in self.categorical)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, schema: FeatureSchema, *, dataset: str = "") -> "ReferenceProfile":
        """Profile a canonical frame. The reference itself must be clean: every feature present,
        numeric and finite; otherwise a :class:`DatasetError` says which columns are not."""
        missing = [c for c in (EVENT_ID, *schema.features) if c not in frame.columns]
        if schema.has_label and LABEL not in frame.columns:
            missing.append(LABEL)
        if missing:
            raise DatasetError(f"cannot profile dataset '{dataset}': column(s) {missing} are missing")
        if len(frame) == 0:
            raise DatasetError(f"cannot profile dataset '{dataset}': it has no rows")
        columns: dict[str, ColumnProfile] = {}
        bad: list[str] = []
        for name in schema.features:
            col = frame[name]
            if name in schema.categorical:
                if col.isna().any():
                    bad.append(f"{name} (has nulls)")
                continue
            if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                bad.append(f"{name} (dtype {col.dtype}, not numeric)")
                continue
            values = col.to_numpy(dtype=np.float64, na_value=np.nan)
            if not np.isfinite(values).all():
                bad.append(f"{name} (has nulls or infinite values)")
                continue
            columns[name] = ColumnProfile(dtype_kind=col.dtype.kind, min=float(values.min()), max=float(values.max()))
        if bad:
            raise DatasetError(f"cannot use dataset '{dataset}' as a validation reference: {', '.join(bad)}. "
                               f"Clean the source data first; the reference is the baseline of every later batch.")
        return cls(dataset=dataset, features=tuple(schema.features), has_label=schema.has_label, columns=columns,
                   n_rows=int(len(frame)), fingerprint=frame_fingerprint(frame, schema),
                   categorical=tuple(schema.categorical))

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        if self.categorical:
            d["categorical"] = list(self.categorical)
        else:  # numeric-only profiles keep their old form
            del d["categorical"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ReferenceProfile":
        if d.get("version") != PROFILE_VERSION:
            raise DatasetError(f"reference profile version {d.get('version')} is not supported "
                               f"(expected {PROFILE_VERSION}); delete the file to rebuild it")
        return cls(dataset=d["dataset"], features=tuple(d["features"]), has_label=bool(d["has_label"]),
                   columns={k: ColumnProfile(**v) for k, v in d["columns"].items()}, n_rows=int(d["n_rows"]),
                   fingerprint=d["fingerprint"], created_at=d["created_at"], version=d["version"],
                   categorical=tuple(d.get("categorical", ())))

    def save(self, path: Path) -> Path:
        """Write atomically (temp file, then rename): a reader never sees half a profile."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_temp(path, self.to_dict())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> "ReferenceProfile":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"cannot read the reference profile {path}: {e}; delete it to rebuild it "
                               f"from the dataset") from e


def _write_temp(path: Path, payload: dict) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    return Path(tmp)


def reference_path(settings, dataset: str) -> Path:
    """Where the reference of ``dataset`` lives: ``<data_dir>/reference/<dataset>.json``."""
    return Path(settings.data_dir) / "reference" / f"{dataset}.json"


def load_or_create_reference(ds: Dataset, settings) -> ReferenceProfile:
    """Load the dataset's reference; on first use, profile ``ds`` and save it as the baseline.

    Creation is first-writer-wins: the new profile is written to a temp file and hard-linked
    into place, so two processes racing here end up using the same baseline.
    """
    return adopt_reference(ds.name, ds.schema, settings,
                           build=lambda: ReferenceProfile.from_frame(ds.frame, ds.schema, dataset=ds.name))


def adopt_reference(dataset: str, schema: FeatureSchema, settings, *, build) -> ReferenceProfile:
    """The saved reference of ``dataset`` (checked against ``schema``), else ``build()`` saved as it
    (first writer wins; see :func:`load_or_create_reference`). A streamed source builds it from
    the tallies of its validation pass."""
    path = reference_path(settings, dataset)
    if path.is_file():
        return check_schema(ReferenceProfile.load(path), dataset, schema, path)
    profile = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path, profile.to_dict())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return check_schema(ReferenceProfile.load(path), dataset, schema, path)
    except OSError:  # a filesystem without hard links: plain atomic rename
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return profile


def check_schema(profile: ReferenceProfile, dataset: str, schema: FeatureSchema, path: Path) -> ReferenceProfile:
    """Return ``profile`` when it was built for ``schema``; else say how to re-baseline."""
    if (tuple(schema.features) == profile.features and schema.has_label == profile.has_label
            and tuple(schema.categorical) == profile.categorical):
        return profile
    added = [f for f in schema.features if f not in profile.features]
    dropped = [f for f in profile.features if f not in schema.features]
    reordered = not added and not dropped and tuple(schema.features) != profile.features
    raise DatasetError(f"dataset '{dataset}' no longer matches its reference profile {path} "
                       f"(features added: {added}, dropped: {dropped}, order changed: {reordered}, "
                       f"label: {profile.has_label} -> {schema.has_label}, categorical: {list(profile.categorical)} -> "
                       f"{list(schema.categorical)}). If the schema change is intended, "
                       f"delete {path} to re-baseline on the current data.")
