"""The feature schema and the canonical dataset record."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

EVENT_ID = "event_id"
REGION = "region"
LABEL = "label"


@dataclass(frozen=True)
class FeatureSchema:
    """Which columns are model inputs, in order, and whether a label is present."""

    features: tuple[str, ...]
    has_label: bool = False

    def to_dict(self) -> dict:
        return {"features": list(self.features), "has_label": self.has_label}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSchema":
        return cls(features=tuple(d["features"]), has_label=bool(d.get("has_label", False)))

    @property
    def n_features(self) -> int:
        return len(self.features)


@dataclass
class Dataset:
    """A named canonical frame and its schema."""

    name: str
    frame: pd.DataFrame
    schema: FeatureSchema
    meta: dict = field(default_factory=dict)

    def features_array(self, frame: pd.DataFrame | None = None) -> np.ndarray:
        f = self.frame if frame is None else frame
        return np.ascontiguousarray(f[list(self.schema.features)].to_numpy(dtype=np.float32))

    def fingerprint(self) -> str:
        """sha256 over the feature values, labels and ids: equal data, equal fingerprint."""
        return frame_fingerprint(self.frame, self.schema)


def frame_fingerprint(frame: pd.DataFrame, schema: FeatureSchema) -> str:
    cols = [EVENT_ID, *schema.features] + ([LABEL] if schema.has_label and LABEL in frame else [])
    hashed = pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()
    h = hashlib.sha256(hashed.tobytes())
    h.update(",".join(cols).encode())
    return h.hexdigest()


def assign_regions(event_ids: pd.Series, regions: list[str]) -> np.ndarray:
    """Deterministic region per event id: the same id always lands in the same region.

    Uses pandas' keyed SipHash of the id value (fixed key), so it is stable across runs,
    processes and machines, and spreads sequential ids evenly.
    """
    h = pd.util.hash_pandas_object(event_ids.reset_index(drop=True), index=False).to_numpy()
    return np.asarray(regions, dtype=object)[h % np.uint64(len(regions))]
