"""Streamed training on a CUDA device against the same machine's CPUs: the 2-hour budget per regional batch.

The field's target is training under 2 hours per regional batch. ``bench/scale_bench.py`` measures the
streamed path's cost curve on the 2-core CI machine (one torch thread); this bench runs the same
streamed trainer (``training.stream_trainer.train_stream``, one epoch through the shuffle buffer with
per-window checkpoints) on events generated the same way (kdd99 rows resampled with jitter, Parquet
partitions of 1e6 rows, never committed), once on CUDA with mixed precision and once on every CPU core
of the same machine (the peer, measured in the same run). Per size and device: training seconds,
training events/s, the holdout AUROC of the model (same split, same seeds: the GPU buys time, not a
different model), and the hours one regional batch of that size would take at the configured epochs.

Run where a CUDA device is: ``python bench/gpu_train_bench.py --sizes 1000000,10000000``. Needs kdd99 in
``<home>/data`` (``EBMOPS_HOME``). Writes ``bench/results/train_gpu.json``; without CUDA it says so and
writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import machine  # noqa: E402
from scale_bench import generate  # noqa: E402

RESULT = ROOT / "bench" / "results" / "train_gpu.json"
BUDGET_H = 2.0


def _settings(data: Path, work: Path, device: str):
    import pyarrow.parquet as pq

    from ebmops.core.settings import load_settings

    feats = [c for c in pq.read_schema(next(data.rglob("*.parquet"))).names if c not in ("event_id", "label")]
    src = {"path": str(data), "features": feats, "label": "label", "event_id": "event_id"}
    threads = 0 if device == "cuda" else (os.cpu_count() or 1)
    return load_settings(home=work / "home", data={"sources": {"scale": src}, "dataset": "scale"},
                         training={"epochs": 1, "min_train_events": 0, "device": device, "amp": device == "cuda",
                                   "threads": threads})


def run_size(n: int, tmp: Path, devices=("cuda", "cpu")) -> list[dict]:
    from ebmops.core.data import budget, open_source
    from training import detection_metrics, score
    from training.stream_trainer import train_stream
    from training.streaming import prepare

    data = generate(n, tmp / f"data-{n}")
    rows = []
    split = None
    for device in devices:
        work = tmp / f"work-{n}-{device}"
        settings = _settings(data, work, device)
        source = open_source("scale", settings)
        sizes = budget(settings, source.schema.n_features)
        if split is None:
            split = prepare(source, settings.training, sizes)
        res = train_stream(source, split, settings.training, shuffle_rows=sizes.shuffle_rows,
                           checkpoint_dir=work / "ckpt", resume=False, progress=False)
        auroc = detection_metrics(score(res.model, split.x_test), split.y_test)["auroc"]
        eps = split.n_train / res.seconds
        epochs = 8  # training.epochs' default: the hours of a whole run at this size
        rows.append({"events": n, "device": res.device, "amp": res.amp, "train_rows": split.n_train,
                     "train_seconds": round(res.seconds, 2), "events_per_s": round(eps),
                     "holdout_auroc": round(float(auroc), 4),
                     "hours_per_batch_at_8_epochs": round(split.n_train * epochs / eps / 3600, 4),
                     "threads": settings.training.threads or "torch default"})
        print(json.dumps(rows[-1]), flush=True)
        del res
    return rows


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--tmp", type=Path, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this bench compares a GPU with the same machine's CPUs")
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        rows = [r for n in sizes for r in run_size(n, Path(d))]
    speedups = {}
    for n in sizes:
        by = {r["device"]: r for r in rows if r["events"] == n}
        speedups[str(n)] = round(by["cuda"]["events_per_s"] / by["cpu"]["events_per_s"], 2)
    out = {"created_at": datetime.now(timezone.utc).isoformat(),
           "machine": machine(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda),
           "setup": {"generator": "kdd99 rows resampled with jitter (bench/scale_bench.generate)", "epochs": 1,
                     "peer": "the same streamed trainer on every CPU core of the same machine, same split"},
           "rows": rows, "cuda_over_cpu_events_per_s": speedups,
           "target": f"a regional batch trains in under {BUDGET_H:g} h at 8 epochs",
           "target_met": all(r["hours_per_batch_at_8_epochs"] < BUDGET_H for r in rows if r["device"] == "cuda")}
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"speedup": speedups, "target_met": out["target_met"]}))


if __name__ == "__main__":
    main()
