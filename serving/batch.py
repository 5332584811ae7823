"""Batch scoring with a verified model: energies of record batches, as the Arrow rows batch output holds.

A node scores requests; batch scoring scores stored events with the same model object
(:func:`serving.model.load_verified`: signature and sha256s checked, TorchScript loaded and warmed
up) and the same decision (``anomalous`` is ``energy > threshold``, as a node answers). The
difference is only the loop: a record batch is cut into calls of ``call_rows`` events, so the
activations held at once stay bounded however large the batch.

A process keeps each verified model it loaded (:func:`cached_model`), so the partition tasks a
thread pool or a Dask worker runs one after another fetch, verify and load a version once.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa

from registry.objectstore.base import ObjectStore
from registry.signing import SigningKey
from serving.model import LoadedModel, load_verified

# The columns of batch output, in order.
COLUMNS = ("event_id", "energy", "anomalous", "model", "version")

_models: dict[tuple, LoadedModel] = {}
_lock = threading.Lock()


def cached_model(store: ObjectStore, model_name: str, version: str, key: SigningKey, install_dir: Path,
                 cache_dir: Path | None = None) -> LoadedModel:
    """The verified model of this process for ``model_name`` ``version`` from ``store``; loaded on first use."""
    k = (store.description, model_name, version, str(install_dir))
    with _lock:
        if k not in _models:
            _models[k] = load_verified(store, model_name, version, key, install_dir, cache_dir)
        return _models[k]


def energies(model: LoadedModel, x: np.ndarray, call_rows: int) -> np.ndarray:
    """float32 energies of ``x`` [n, features], scored ``call_rows`` rows per TorchScript call."""
    out = np.empty(len(x), dtype=np.float32)
    for i in range(0, len(x), call_rows):
        out[i:i + call_rows] = model.score(x[i:i + call_rows])
    return out


def output_schema(event_id_type: pa.DataType) -> pa.Schema:
    return pa.schema([("event_id", event_id_type), ("energy", pa.float32()), ("anomalous", pa.bool_()),
                      ("model", pa.string()), ("version", pa.string())])


def score_rows(model: LoadedModel, event_id: np.ndarray, x: np.ndarray, call_rows: int,
               cats: dict | None = None) -> pa.Table:
    """The output rows of one batch: event id, energy, anomalous (energy > threshold), model, version.
    ``cats``: the batch's raw categorical values (``EventBatch.cats``), which a model with
    categorical columns encodes with its own vocabulary."""
    if x.ndim != 2 or x.shape[1] != model.n_features:
        raise ValueError(f"expected float32 [n, {model.n_features}] features, got shape {list(x.shape)}")
    if model.categories:
        missing = [c for c in model.categorical if c not in (cats or {})]
        if missing:
            raise ValueError(f"model {model.manifest.model_name} {model.version} takes {missing} as categories; "
                             f"declare them under the source's 'categorical' so their raw values reach it")
        x, _unknown = model.encode(x, cats)
    e = energies(model, x, call_rows)
    n = len(e)
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    ids = pa.array(event_id)
    return pa.Table.from_arrays(
        [ids, pa.array(e, type=pa.float32()), pa.array(e > model.threshold, type=pa.bool_()),
         pa.array([model.manifest.model_name], type=pa.string()).take(zeros),
         pa.array([model.version], type=pa.string()).take(zeros)],
        schema=output_schema(ids.type))
