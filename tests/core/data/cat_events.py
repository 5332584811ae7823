"""A small synthetic event source with categorical columns, shared by the categorical tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ["proto", "port", "bytes", "duration"]
CATEGORICAL = ["proto", "port"]


def events(n: int = 3000, seed: int = 0, anomalies: int = 60) -> pd.DataFrame:
    """Normal traffic: tcp on 80/443 moves ~10 units, udp on 53 ~2; the last ``anomalies`` rows are
    udp on port 80 moving tcp-sized byte counts (a combination normal traffic never shows)."""
    rng = np.random.default_rng(seed)
    proto = rng.choice(["tcp", "udp"], n, p=[0.7, 0.3])
    port = np.where(proto == "tcp", rng.choice([80, 443], n), 53)
    size = np.where(proto == "tcp", rng.normal(10, 0.5, n), rng.normal(2, 0.3, n))
    duration = rng.exponential(1.0, n)
    label = np.zeros(n, dtype=np.int64)
    label[-anomalies:] = 1
    proto[-anomalies:], port[-anomalies:], size[-anomalies:] = "udp", 80, rng.normal(10, 0.5, anomalies)
    return pd.DataFrame({"event_id": np.arange(n), "proto": proto, "port": port, "bytes": size,
                         "duration": duration, "label": label})


def write_csv(path: Path, frame: pd.DataFrame | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (events() if frame is None else frame).to_csv(path, index=False)
    return path


def source_settings(path: Path, **extra) -> dict:
    return {"path": str(path), "features": FEATURES, "categorical": CATEGORICAL, "label": "label",
            "event_id": "event_id", **extra}


def raw_energies(path, rows) -> np.ndarray:
    """Energies of raw rows (categories as texts) through an exported file's own ``encode``: what a node
    that never saw the training data must score."""
    import torch

    m = torch.jit.load(str(path)).eval()
    x = torch.zeros(len(rows), len(FEATURES))
    for j in range(len(FEATURES)):
        col = [r[j] for r in rows]
        x[:, j] = m.encode(j, [str(v) for v in col]) if j in m.categorical_columns() else torch.tensor(col)
    with torch.no_grad():
        return m(x).numpy()
