"""Feature drift of the benchmark window against the training data, with an Evidently report kept.

One Evidently ``ValueDrift`` per feature (score and per-feature verdict from Evidently's own test) and
one ``DriftedColumnsCount`` (the share). Evidently's sense of "drifted" depends on the method:
distance methods (wasserstein, normed by the reference std; psi; jensenshannon; ...) drift when the
score is at or above the threshold, p-value methods (ks, anderson, ...) when it is below.

Evidently costs about 6 s to import, so it is imported inside ``feature_drift`` only. Frames larger
than ``max_rows`` are sampled (seeded) first: 20 features x 20k rows runs in a few seconds, and the
per-feature drift scores are stable long before that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd


def _sample(df: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return df if len(df) <= max_rows else df.sample(n=max_rows, random_state=seed)


def feature_drift(reference_df: pd.DataFrame, current_df: pd.DataFrame, features: Sequence[str], *,
                  method: str = "wasserstein", threshold: float = 0.1, html_path: str | Path | None = None,
                  max_rows: int = 20000, seed: int = 0) -> tuple[float, dict[str, dict[str, Any]]]:
    """Share of ``features`` that drifted, and ``{feature: {"score", "drifted"}}``.

    ``reference_df`` is the training data, ``current_df`` the benchmark window. The HTML report is
    written to ``html_path`` when given (about 4 MB: it embeds plotly).
    """
    features = list(features)
    if not features:
        raise ValueError("feature_drift needs at least one feature")
    missing = [f for f in features if f not in reference_df.columns or f not in current_df.columns]
    if missing:
        raise ValueError(f"features missing from the reference or current frame: {missing}")
    if reference_df.empty or current_df.empty:
        raise ValueError("feature_drift needs non-empty reference and current frames")

    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    ref = _sample(reference_df[features], max_rows, seed).astype("float64")
    cur = _sample(current_df[features], max_rows, seed + 1).astype("float64")
    definition = DataDefinition(numerical_columns=features)
    per_feature = [ValueDrift(column=f, method=method, threshold=threshold) for f in features]
    report = Report([DriftedColumnsCount(columns=features, method=method, threshold=threshold), *per_feature],
                    include_tests=True)
    snap = report.run(current_data=Dataset.from_pandas(cur, data_definition=definition),
                      reference_data=Dataset.from_pandas(ref, data_definition=definition))
    if html_path is not None:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        snap.save_html(str(html_path))

    d = snap.dict()
    share = None
    column_of: dict[str, str] = {}
    scores: dict[str, float] = {}
    for m in d["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("DriftedColumnsCount"):
            share = float(m["value"]["share"])
        elif cfg["type"].endswith("ValueDrift"):
            column_of[m["id"]] = cfg["column"]
            scores[cfg["column"]] = float(m["value"])
    drifted = {column_of[t["metric_config"]["metric_id"]]: t["status"] == "FAIL"
               for t in d.get("tests", []) if t["metric_config"]["metric_id"] in column_of}
    result = {f: {"score": scores.get(f), "drifted": bool(drifted.get(f, False))} for f in features}
    if share is None:  # DriftedColumnsCount absent from the snapshot: count the per-feature verdicts
        share = sum(v["drifted"] for v in result.values()) / len(features)
    return share, result
