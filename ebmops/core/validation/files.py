"""Validating a user's event file directly (``ebmops validate FILE --dataset NAME``).

The file (Parquet or CSV) is read as it is, its declared columns are renamed to the
canonical ``event_id`` / ``region`` / ``label`` (row numbers and hashed regions fill in
when the source declares none), and it is checked against the dataset's reference
profile. Types are *not* coerced: a text column where a number belongs is the validator's
to report, and the batch is quarantined like any other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ebmops.core.data.schema import EVENT_ID, LABEL, REGION, FeatureSchema, assign_regions
from ebmops.core.data.sources import read_table
from ebmops.core.errors import ConfigError, ValidationFailed
from ebmops.core.validation.gate import validate_or_quarantine
from ebmops.core.validation.profile import ReferenceProfile, check_schema, reference_path
from ebmops.core.validation.suite import ValidationResult


def validate_file(path: str | Path, dataset_name: str, settings, store=None,
                  region: str | None = None, move_source: bool = True) -> ValidationResult:
    """Validate one file against ``dataset_name``'s reference; quarantine and raise on failure.

    ``region`` names where the batch came from; by default the file's single region, if it has one.
    With ``move_source`` a failing file is moved into its quarantine folder (as ``source.<ext>``),
    so a loader that picks up whatever lies in an inbox cannot take the bad batch by mistake."""
    raw = read_table(Path(path))
    frame = file_frame(raw, dataset_name, settings)
    profile = reference_for(dataset_name, settings)
    if region is None:
        regions = frame[REGION].dropna().unique() if REGION in frame.columns else []
        region = str(regions[0]) if len(regions) == 1 else None
    try:
        return validate_or_quarantine(frame, dataset=dataset_name, region=region, profile=profile,
                                      settings=settings, store=store)
    except ValidationFailed as e:
        if move_source and e.quarantine_path:
            target = Path(e.quarantine_path) / f"source{Path(path).suffix}"
            shutil.move(str(path), target)
        raise


def file_frame(raw: pd.DataFrame, dataset_name: str, settings) -> pd.DataFrame:
    """The file's rows under canonical column names, values untouched."""
    if dataset_name == "kdd99":
        event_id, region, label = EVENT_ID, REGION, LABEL  # a kdd99 file uses the canonical names
    else:
        src = _source(dataset_name, settings)
        event_id, region, label = src.event_id, src.region, src.label
    frame = raw.rename(columns={k: v for k, v in {event_id: EVENT_ID, region: REGION, label: LABEL}.items()
                                if k and k in raw.columns and k != v})
    if EVENT_ID not in frame.columns and (dataset_name == "kdd99" or not event_id):
        frame.insert(0, EVENT_ID, np.arange(len(frame), dtype=np.int64))
    if REGION not in frame.columns and (dataset_name == "kdd99" or not region):
        ids = frame[EVENT_ID] if EVENT_ID in frame.columns else pd.Series(np.arange(len(frame)))
        frame.insert(1, REGION, assign_regions(ids, list(settings.data.regions)))
    return frame


def reference_for(dataset_name: str, settings) -> ReferenceProfile:
    """The dataset's reference profile; built from the configured dataset when there is none yet."""
    path = reference_path(settings, dataset_name)
    if not path.is_file():  # built in one streamed pass: the dataset may be larger than memory
        from ebmops.core.data.stream import open_source
        from ebmops.core.validation.stream import reference_for_source

        return reference_for_source(open_source(dataset_name, settings), settings)
    profile = ReferenceProfile.load(path)
    if dataset_name != "kdd99":
        src = _source(dataset_name, settings)
        check_schema(profile, dataset_name, FeatureSchema(tuple(src.features), has_label=bool(src.label),
                                                                  categorical=tuple(src.categorical)), path)
    return profile


def _source(dataset_name: str, settings):
    src = settings.data.sources.get(dataset_name)
    if src is None:
        raise ConfigError(f"dataset '{dataset_name}' is not known; use one of "
                          f"{['kdd99', *settings.data.sources]} or declare it under data.sources")
    return src
