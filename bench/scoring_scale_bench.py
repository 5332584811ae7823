"""The cost curve of batch scoring: wall time and peak RSS at 1e5, 1e6 and 1e7 events.

Events are kdd99's rows resampled with small jitter (N(0, (0.01 x the feature's std)^2), clipped to [0, 1]), generated at
bench time under a temporary folder (never committed) as Parquet partitions of at most 1e6 events
(row groups of 65,536). The model is the default EBM (``harness.default_model``: 40 features,
``training.hidden``), published as a signed bundle to a local region store whose desired state makes
it the region's production version, so each run goes the way ``ebmops score`` goes: choose the
version, fetch and verify the bundle, stream every partition, write Parquet plus records.

Each size runs in a fresh child process (``services.score``: plan, then the partitions one after
another on one torch thread), so its peak RSS (its own ``ru_maxrss``) is its own. The peer,
measured in the same run, is in-process TorchScript on one thread: the same verified model scoring
an in-memory float32 array in calls of ``score.call_rows`` events, no I/O. Targets: peak RSS under
2 GB at 1e7 events; time linear in events (seconds per event at 1e7 within 25 % of 1e6's); batch
scoring throughput at least 50 % of the peer's. Recorded, not asserted: a benchmark measures.

Run: ``.venv/bin/python bench/scoring_scale_bench.py [--sizes 100000,1000000]`` or through pytest
(``pytest bench/scoring_scale_bench.py --benchmark-enable``). Writes the ``scoring`` block of
``bench/results/scale.json`` (other blocks of that file are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

import harness as h  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scale.json"
SIZES = (100_000, 1_000_000, 10_000_000)
PART_ROWS = 1_000_000
JITTER = 0.01  # noise, as a share of each feature's standard deviation
ROW_GROUP = 65_536
REGION = "us-east"
MODEL = "ebm-kdd99"
TARGET_RSS_MB = 2048.0
TARGET_LINEAR = 1.25
TARGET_PEER_SHARE = 0.5


def kdd99_features() -> tuple[np.ndarray, list[str]]:
    """kdd99 from ``<home>/data`` (EBMOPS_HOME, default ./.ebmops), fetched with pip on first use."""
    from ebmops.core.data import load_dataset
    from ebmops.core.settings import load_settings

    ds = load_dataset("kdd99", load_settings())
    return ds.features_array(ds.frame).astype(np.float32), list(ds.schema.features)


def generate(x: np.ndarray, features: list[str], n: int, root: Path, seed: int = 0) -> Path:
    """``n`` kdd99 rows resampled with jitter, as Parquet partitions of at most PART_ROWS rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    scale = (JITTER * x.std(axis=0)).astype(np.float32)  # constant features stay constant
    done = 0
    while done < n:
        m = min(PART_ROWS, n - done)
        rows = x[rng.integers(0, len(x), size=m)]
        rows += rng.standard_normal(size=rows.shape, dtype=np.float32) * scale
        np.clip(rows, 0.0, 1.0, out=rows)
        cols = {"event_id": pa.array(np.arange(done, done + m, dtype=np.int64))}
        cols.update({f: pa.array(rows[:, j]) for j, f in enumerate(features)})
        pq.write_table(pa.table(cols), root / f"part-{done // PART_ROWS:04d}.parquet", row_group_size=ROW_GROUP)
        done += m
    return root


def publish_model(home: Path, x: np.ndarray, features: list[str]) -> dict:
    from registry.bundle import publish_bundle
    from registry.desired_state import next_desired, write_desired
    from registry.objectstore import LocalStore
    from registry.signing import hmac_key

    path, threshold, desc = h.default_model(home / "model.pt", x)
    key = hmac_key(h.SIGNING_SECRET)
    store = LocalStore(home / "stores" / REGION)
    publish_bundle(store, path, model_name=MODEL, version="1", features=features, threshold=threshold,
                   gate_verdict="pass", key=key)
    write_desired(store, next_desired(None, MODEL, stable_version="1"), key)
    return desc


def _settings(home: Path):
    from ebmops.core.settings import load_settings

    return load_settings(home=home, sync={"signing_key": h.SIGNING_SECRET}, score={"torch_threads": 1},
                         data={"regions": [REGION]})


def child(home: Path, source: Path, out: Path) -> None:
    """One batch-scoring run (what the flow's tasks do), one partition after another."""
    from ebmops.services import score as steps

    t0 = time.perf_counter()
    job = steps.plan(_settings(home), str(source), out, region=REGION)
    t1 = time.perf_counter()
    results = [steps.score_partition(job, i) for i in job.pending]
    t2 = time.perf_counter()
    res = steps.summary(job, results)
    import resource

    print(json.dumps({"plan_s": t1 - t0, "score_s": t2 - t1, "events": res["events"],
                      "partitions": res["partitions"], "anomalous": res["anomalous"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(home: Path, source: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(home), str(source), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"scoring child failed: {stderr[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "process_wall_s": wall}


def peer(home: Path, x: np.ndarray, n: int = 1_000_000) -> dict:
    """In-process TorchScript on one thread: the same verified model on an in-memory array."""
    import torch

    from ebmops.services.score import choose_version, load_model
    from serving.batch import energies

    torch.set_num_threads(1)
    s = _settings(home)
    model = load_model(s, choose_version(s, MODEL, REGION, None))
    rng = np.random.default_rng(1)
    xs = np.ascontiguousarray(x[rng.integers(0, len(x), size=n)])
    energies(model, xs[:100_000], s.score.call_rows)  # settle
    t0 = time.perf_counter()
    energies(model, xs, s.score.call_rows)
    sec = time.perf_counter() - t0
    return {"events": n, "seconds": sec, "events_per_s": n / sec, "call_rows": s.score.call_rows, "threads": 1}


def run_benchmark(sizes=SIZES, workdir: Path | None = None) -> dict:
    tmp = Path(workdir or tempfile.mkdtemp(prefix="ebmops-scale-scoring-"))
    home = tmp / "home"
    x, features = kdd99_features()
    model = publish_model(home, x, features)
    rows = []
    for n in sizes:
        source = generate(x, features, n, tmp / f"events-{n}")
        r = run_child(home, source, tmp / f"scores-{n}")
        r["events_per_s"] = r["events"] / r["score_s"]
        r["seconds_per_million"] = 1e6 * r["score_s"] / r["events"]
        rows.append(r)
        print(f"{n:>12,} events: scored in {r['score_s']:.1f} s ({r['events_per_s']:,.0f}/s), process "
              f"{r['process_wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        import shutil

        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(tmp / f"scores-{n}", ignore_errors=True)
    p = peer(home, x)
    print(f"peer (in-process TorchScript, 1 thread): {p['events_per_s']:,.0f} events/s", flush=True)
    by = {r["events"]: r for r in rows}
    biggest = rows[-1]
    linear = None
    if 1_000_000 in by and 10_000_000 in by:
        linear = by[10_000_000]["seconds_per_million"] / by[1_000_000]["seconds_per_million"]
    share = biggest["events_per_s"] / p["events_per_s"]
    n = np.array([r["events"] for r in rows], dtype=np.float64)
    sec = np.array([r["score_s"] for r in rows], dtype=np.float64)
    fit = np.polyfit(n, sec, 1) if len(rows) > 1 else (sec[0] / n[0], 0.0)
    return {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {"source": "kdd99 rows resampled with N(0, (0.01 std)^2) jitter per feature, clipped to [0, 1]",
                 "features": len(features), "partition_rows": PART_ROWS, "row_group_rows": ROW_GROUP},
        "model": model,
        "how": "services.score in a fresh child process per size: plan (verify the bundle, open the source), then "
               "every partition in turn on one torch thread; peak RSS: the child's ru_maxrss",
        "rows": rows,
        "peer": p,
        "figures": {"seconds_per_million_events": {str(r["events"]): r["seconds_per_million"] for r in rows},
                    "peak_rss_mb": {str(r["events"]): r["peak_rss_mb"] for r in rows},
                    "time_per_event_ratio_1e7_to_1e6": linear,
                    "least_squares": {"us_per_event": float(fit[0]) * 1e6, "intercept_s": float(fit[1])},
                    "share_of_peer_throughput": share},
        "targets": {"peak_rss_mb_under": TARGET_RSS_MB,
                    "peak_rss_met": all(r["peak_rss_mb"] < TARGET_RSS_MB for r in rows),
                    "linear_ratio_at_most": TARGET_LINEAR,
                    "linear_met": None if linear is None else linear <= TARGET_LINEAR,
                    "share_of_peer_at_least": TARGET_PEER_SHARE, "share_of_peer_met": share >= TARGET_PEER_SHARE},
        "machine": h.machine(),
    }


def write_results(results: dict) -> Path:
    """Write the ``scoring`` block of scale.json, keeping the file's other blocks."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        doc = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        doc = {}
    doc["scoring"] = results
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    return RESULTS


def test_scale_scoring(benchmark):
    results = benchmark.pedantic(run_benchmark, rounds=1, iterations=1)
    benchmark.extra_info.update(results["figures"])
    write_results(results)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        sys.exit(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = ap.parse_args()
    res = run_benchmark(tuple(int(s) for s in args.sizes.split(",")))
    print(json.dumps(res["figures"], indent=2), "->", write_results(res))
