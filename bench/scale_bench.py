"""Cost curve of the streaming data path: how time and memory grow with the number of events.

For 1e5, 1e6 and 1e7 events (kdd99 connections resampled with replacement and a small jitter,
generated at bench time into a temporary directory as Parquet partitions of 1e6 rows, never
committed), each stage of the train flow runs in its **own child process**, so that no stage
shares another's memory high-water mark:

* ``validate``: one streamed pass, exact checks on every event, the suite on seeded samples
  (the reference profile is built from the same pass: a fresh home per size);
* ``split``: one pass: the seeded split's sizes, standardisation and bounded samples;
* ``train``: one epoch through the shuffle buffer, with per-window checkpoints;
* ``calibrate``: the threshold on the bounded calibration sample;
* ``evaluate``: EBM and IsolationForest on the bounded holdout sample.

Per stage and size: wall seconds of the stage itself (imports excluded), peak RSS of its process
(VmHWM, imports included) and the RSS after imports. Per stage: the least-squares slope (seconds
per event) and the seconds per event at each size (linear growth keeps it flat). Training
events/s (training rows x 1 epoch / seconds, one torch thread) is compared with a peer measured
right after it in the same run (a shared machine's load moves both alike): the in-memory trainer
(``training.train_energy_model``) on the training rows of the first 1e5 events. Targets on the 2-core machine (recorded, not asserted): peak RSS at 1e7
under 2 GB for training, time linear in events, training >= 50k events/s per core.

Run: ``.venv/bin/python bench/scale_bench.py`` (``--sizes 100000,1000000`` for a quicker curve) or
``.venv/bin/python -m pytest bench/scale_bench.py --benchmark-enable``. Needs kdd99 in
``<home>/data`` (``EBMOPS_HOME``, default ``./.ebmops``; fetched with pip on first use). Writes
``bench/results/scale.json``; its ``scoring`` block (batch scoring at the same sizes against in-process
TorchScript) is written by ``bench/scoring_scale_bench.py`` and kept here.
"""

from __future__ import annotations

import argparse
import json
import shutil
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

RESULTS = ROOT / "bench" / "results" / "scale.json"
SIZES = (100_000, 1_000_000, 10_000_000)
STAGES = ("validate", "split", "train", "calibrate", "evaluate")
PART_ROWS = 1_000_000
JITTER = 0.003
PEER_EVENTS = 100_000
TARGET_TRAIN_RSS_MB = 2048
TARGET_EVENTS_PER_S_PER_CORE = 50_000


# ---- data --------------------------------------------------------------------------------------------------
def generate(n: int, root: Path, seed: int = 0) -> Path:
    """``n`` events resampled from kdd99 with jitter, as Parquet partitions under ``root``."""
    import pandas as pd

    from ebmops.core.data import load_dataset
    from ebmops.core.settings import load_settings

    ds = load_dataset("kdd99", load_settings())
    feats = list(ds.schema.features)
    x = ds.features_array()
    labels = ds.frame["label"].to_numpy().astype(np.int8)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for p, start in enumerate(range(0, n, PART_ROWS)):
        m = min(PART_ROWS, n - start)
        pick = rng.integers(0, len(x), size=m)
        rows = np.clip(x[pick] + rng.normal(0.0, JITTER, size=(m, len(feats))).astype(np.float32), 0.0, 1.0)
        frame = pd.DataFrame(rows, columns=feats)
        frame.insert(0, "event_id", np.arange(start, start + m, dtype=np.int64))
        frame.insert(1, "label", labels[pick])
        folder = root / f"part={p:03d}"
        folder.mkdir()
        frame.to_parquet(folder / "events.parquet", index=False, row_group_size=131_072)
    return root


# ---- one stage in this process -------------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _settings(data: Path, work: Path):
    import pyarrow.parquet as pq

    from ebmops.core.settings import load_settings

    feats = [c for c in pq.read_schema(next(data.rglob("*.parquet"))).names if c not in ("event_id", "label")]
    src = {"path": str(data), "features": feats, "label": "label", "event_id": "event_id"}
    return load_settings(home=work / "home", data={"sources": {"scale": src}, "dataset": "scale"},
                         training={"epochs": 1, "min_train_events": 0, "device": "cpu"})


def _save_split(sp, path: Path) -> None:
    np.savez(path, **{k: getattr(sp, k) for k in ("mean", "std", "x_calib", "x_test", "x_baseline", "calib_rows",
                                                  "test_rows", "baseline_rows")},
             y_test=sp.y_test, counts=np.array([sp.n_train, sp.n_calib, sp.n_test, sp.n_test_anomalies]),
             names=np.array(sp.feature_names))


def _load_split(path: Path):
    from training.streaming import StreamSplit

    z = np.load(path)
    n_train, n_calib, n_test, n_anom = (int(v) for v in z["counts"])
    return StreamSplit(feature_names=tuple(str(s) for s in z["names"]), n_train=n_train, n_calib=n_calib,
                       n_test=n_test, n_test_anomalies=n_anom, mean=z["mean"], std=z["std"], x_calib=z["x_calib"],
                       x_test=z["x_test"], y_test=z["y_test"], x_baseline=z["x_baseline"], calib_rows=z["calib_rows"],
                       test_rows=z["test_rows"], baseline_rows=z["baseline_rows"])


def run_stage(stage: str, data: Path, work: Path) -> dict:
    """Run one stage here; the figures as a dict (the child prints it as its last line)."""
    import torch

    from ebmops.core.data import budget, open_source
    from training import calibrate, model_from_state, torch_threads
    from training.pipeline import evaluate
    from training.stream_trainer import train_stream
    from training.streaming import prepare
    from training.trainer import TrainResult, train_energy_model

    settings = _settings(data, work)
    cfg = settings.training
    if stage == "validate":
        from ebmops.core.validation import gx_runner
        gx_runner._context()  # Great Expectations' import and context: a once-per-process cost, not per event
    rss_ready = _status_mb("VmRSS")
    out: dict = {"stage": stage}
    t0 = time.perf_counter()
    source = open_source("scale", settings)
    sizes = budget(settings, source.schema.n_features)
    if stage == "validate":
        from ebmops.core.validation import validate_source

        _profile, regions = validate_source(source, settings)
        out["events"] = sum(r["rows"] for r in regions)
        out["sample_rows"] = sum(r["sample_rows"] for r in regions)
    elif stage == "split":
        sp = prepare(source, cfg, sizes)
        _save_split(sp, work / "split.npz")
        out.update(events=source.n_rows, sizes=sp.sizes())
    elif stage == "train":
        sp = _load_split(work / "split.npz")
        res = train_stream(source, sp, cfg, shuffle_rows=sizes.shuffle_rows, checkpoint_dir=work / "ckpt",
                           resume=False, progress=False)
        torch.save({"spec": res.model.spec(), "state_dict": res.model.state_dict(), "seconds": res.seconds},
                   work / "model.pt")
        out.update(events=source.n_rows, train_rows=sp.n_train, train_seconds=res.seconds,
                   events_per_s=sp.n_train / res.seconds, threads=cfg.threads)
    elif stage in ("calibrate", "evaluate"):
        sp = _load_split(work / "split.npz")
        saved = torch.load(work / "model.pt", weights_only=True)
        model = model_from_state(saved["spec"], saved["state_dict"])
        with torch_threads(cfg.threads):
            threshold, _energies = calibrate(model, sp.x_calib, cfg.threshold_quantile)
            if stage == "evaluate":
                result = TrainResult(model=model, device="cpu", amp=False, epochs_completed=1, epochs_planned=1,
                                     seconds=saved["seconds"], device_hours=0.0, cost=0.0, stopped_reason=None,
                                     message="")
                t0 = time.perf_counter()  # the evaluation alone
                metrics = evaluate(model, sp.as_data_split(), result, cfg, n_train=sp.n_train)
                out.update(ebm_auroc=metrics.get("ebm_auroc"), iforest_auroc=metrics.get("iforest_auroc"),
                           test_sample=len(sp.x_test), baseline_sample=len(sp.x_baseline))
        out.update(events=source.n_rows, threshold=threshold, calib_sample=len(sp.x_calib))
    elif stage == "peer":
        from training.streaming import part_masks

        rows = []
        for batch in source.iter_batches():  # the training rows of the first PEER_EVENTS events, in memory
            if batch.row0 >= PEER_EVENTS:
                break
            rows.append(batch.x[part_masks(batch, cfg)[0] & (batch.rows < PEER_EVENTS)])
        x = np.concatenate(rows)
        t0 = time.perf_counter()
        res = train_energy_model(x, cfg, progress=False)
        out.update(events=PEER_EVENTS, train_rows=len(x), train_seconds=res.seconds,
                   events_per_s=len(x) / res.seconds, threads=cfg.threads)
    else:
        raise SystemExit(f"unknown stage {stage}")
    out["seconds"] = time.perf_counter() - t0
    out["rss_after_imports_mb"] = rss_ready
    out["peak_rss_mb"] = _status_mb("VmHWM")
    return out


# ---- the curve -------------------------------------------------------------------------------------------------
def child(stage: str, data: Path, work: Path) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--data", str(data),
                           "--work", str(work)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def slope(points: list[tuple[int, float]]) -> dict:
    """Least-squares seconds = a + b * events over the sizes; b in microseconds per event."""
    n = np.array([p[0] for p in points], dtype=np.float64)
    s = np.array([p[1] for p in points], dtype=np.float64)
    b, a = np.polyfit(n, s, 1) if len(points) > 1 else (s[0] / n[0], 0.0)
    return {"us_per_event": b * 1e6, "intercept_s": a,
            "us_per_event_at_size": {str(int(k)): v / k * 1e6 for k, v in zip(n, s)}}


def run_benchmark(sizes=SIZES, keep: Path | None = None) -> dict:
    import harness as h

    started = datetime.now(timezone.utc)
    load_before = h.machine()["load_average_1_5_15"]
    tmp = Path(tempfile.mkdtemp(prefix="ebmops-scale-", dir=keep))
    rows, peers = [], []
    try:
        for n in sizes:
            data, work = tmp / f"data-{n}", tmp / f"work-{n}"
            work.mkdir(parents=True)
            t0 = time.perf_counter()
            generate(n, data)
            gen_s = time.perf_counter() - t0
            disk_mb = sum(f.stat().st_size for f in data.rglob("*.parquet")) / 2**20
            print(f"{n:,} events: generated in {gen_s:.1f} s ({disk_mb:.0f} MB Parquet)", flush=True)
            for stage in STAGES:
                r = child(stage, data, work)
                r.update(events=n, parquet_mb=disk_mb)
                rows.append(r)
                print(f"  {stage:9s} {r['seconds']:8.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB"
                      + (f"  {r['events_per_s']:,.0f} training events/s" if "events_per_s" in r else ""), flush=True)
                if stage == "train":  # the peer right after, so both see the same load on a shared machine
                    p = child("peer", data, work)
                    p["size"] = n
                    peers.append(p)
                    print(f"  peer: in-memory trainer on the first {PEER_EVENTS:,} events: {p['events_per_s']:,.0f} "
                          f"training events/s, peak RSS {p['peak_rss_mb']:.0f} MB", flush=True)
            shutil.rmtree(data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    curves = {s: slope([(r["events"], r["seconds"]) for r in rows if r["stage"] == s]) for s in STAGES}
    memory = {s: {str(r["events"]): r["peak_rss_mb"] for r in rows if r["stage"] == s} for s in STAGES}
    largest = max(sizes)
    train_rows = [r for r in rows if r["stage"] == "train"]
    big_train = next(r for r in train_rows if r["events"] == largest)
    per_event = curves["train"]["us_per_event_at_size"]
    return {
        "created_at": started.isoformat(timespec="seconds"),
        "sizes": list(sizes), "stages": list(STAGES),
        "data": {"source": "kdd99 resampled with replacement", "jitter_sd": JITTER, "partition_rows": PART_ROWS,
                 "features": 40, "format": "parquet, float32 features"},
        "rows": rows,
        "slope": curves,
        "peak_rss_mb": memory,
        "training": {"events_per_s_by_size": {str(r["events"]): r["events_per_s"] for r in train_rows},
                     "threads": big_train.get("threads"),
                     "peer": "in-memory train_energy_model on the training rows of the first 1e5 events, run right "
                             "after each size's streamed training",
                     "peer_events_per_s_by_size": {str(p["size"]): p["events_per_s"] for p in peers},
                     "ratio_to_peer_by_size": {str(r["events"]): r["events_per_s"] / p["events_per_s"]
                                               for r, p in zip(train_rows, peers)},
                     "peers": peers},
        "targets": {
            "train_peak_rss_mb_under": TARGET_TRAIN_RSS_MB,
            "train_peak_rss_met": bool(big_train["peak_rss_mb"] < TARGET_TRAIN_RSS_MB),
            "train_events_per_s_per_core_at_least": TARGET_EVENTS_PER_S_PER_CORE,
            "train_events_per_s_per_core_met": bool(big_train["events_per_s"] / max(1, big_train.get("threads") or 1)
                                                    >= TARGET_EVENTS_PER_S_PER_CORE),
            # linear: the time per event at the largest size within 1.5x of the time per event at 1e6
            "train_time_linear": (bool(per_event[str(largest)] / per_event[str(sorted(sizes)[-2])] < 1.5)
                                  if len(sizes) > 1 else None),
            "validate_time_linear": (bool(curves["validate"]["us_per_event_at_size"][str(largest)]
                                          / curves["validate"]["us_per_event_at_size"][str(sorted(sizes)[-2])] < 1.5)
                                     if len(sizes) > 1 else None),
        },
        "machine": {**h.machine(), "load_average_at_start": load_before},
    }


def write_results(results: dict) -> Path:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:  # keep the batch-scoring block bench/scoring_scale_bench.py wrote
        scoring = json.loads(RESULTS.read_text()).get("scoring")
    except (OSError, ValueError):
        scoring = None
    if scoring is not None and "scoring" not in results:
        results = {**results, "scoring": scoring}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return RESULTS


def test_scale(benchmark):
    results = benchmark.pedantic(run_benchmark, rounds=1, iterations=1)
    benchmark.extra_info.update(results["targets"])
    write_results(results)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=[*STAGES, "peer"])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    ap.add_argument("--tmp", type=Path, default=None, help="where generated data goes (default: the system temp)")
    args = ap.parse_args(argv)
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.data, args.work)))
        return 0
    res = run_benchmark(tuple(int(float(s)) for s in args.sizes.split(",")), keep=args.tmp)
    path = write_results(res)
    print(json.dumps(res["targets"], indent=2), "->", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
