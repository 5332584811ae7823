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
    """Which columns are model inputs, in order, whether a label is present, and which of the
    features are categorical (raw strings or numbers, encoded by a learnt vocabulary; see
    :mod:`ebmops.core.data.categorical`). Every other feature is numeric."""

    features: tuple[str, ...]
    has_label: bool = False
    categorical: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = [c for c in self.categorical if c not in self.features]
        if unknown:
            raise ValueError(f"categorical column(s) {unknown} are not among the features {list(self.features)}")

    def to_dict(self) -> dict:
        d = {"features": list(self.features), "has_label": self.has_label}
        if self.categorical:  # numeric-only schemas keep their old form (and fingerprints)
            d["categorical"] = list(self.categorical)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSchema":
        return cls(features=tuple(d["features"]), has_label=bool(d.get("has_label", False)),
                   categorical=tuple(d.get("categorical", ())))

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def numeric(self) -> tuple[str, ...]:
        """The features that are not categorical, in model order."""
        cats = set(self.categorical)
        return tuple(f for f in self.features if f not in cats)


@dataclass
class Dataset:
    """A named canonical frame and its schema."""

    name: str
    frame: pd.DataFrame
    schema: FeatureSchema
    meta: dict = field(default_factory=dict)

    def features_array(self, frame: pd.DataFrame | None = None, vocabulary: dict | None = None) -> np.ndarray:
        """float32 [n, F] in model order; categorical columns (canonical strings in the frame) become
        codes of ``vocabulary`` (column -> categories), which a schema with categorical columns needs."""
        f = self.frame if frame is None else frame
        if not self.schema.categorical:
            return np.ascontiguousarray(f[list(self.schema.features)].to_numpy(dtype=np.float32))
        from ebmops.core.data.categorical import encode
        from ebmops.core.errors import DatasetError

        missing = [c for c in self.schema.categorical if c not in (vocabulary or {})]
        if missing:
            raise DatasetError(f"dataset '{self.name}': categorical column(s) {missing} need a vocabulary to become "
                               f"model inputs; learn one (training.encoding.learn_vocabulary) or score through an "
                               f"exported model, which carries its own")
        cats = set(self.schema.categorical)
        x = np.empty((len(f), self.schema.n_features), dtype=np.float32)
        for j, c in enumerate(self.schema.features):
            x[:, j] = encode(f[c].tolist(), vocabulary[c]) if c in cats else f[c].to_numpy(dtype=np.float32)
        return x

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
