"""Run one training job in its own process: ``python -m training.run SPEC.json``.

The spec is a JSON object::

    {"x_train": "rows.npy",            # float32 [events, features], raw features
     "training": {...},                # TrainingSettings fields (defaults for the rest)
     "checkpoint_dir": "ckpt/",        # optional; enables per-epoch checkpoints
     "resume": true,                   # continue from checkpoint_dir when it holds one
     "output": "model.pt",             # where the final (spec, state_dict) is saved, atomically
     "progress": false}

or, to train from a streamed source instead of an array (``training.stream_trainer``)::

    {"source": {"path": "events/", "features": ["a", "b"], "label": "y"},   # as under data.sources
     "batch_rows": 4096, "shuffle_rows": 16384, ...}                         # plus the keys above

On success it prints one JSON line summarising the :class:`~training.trainer.TrainResult`
and exits 0; a configuration error exits 2 with the message on stderr. Killing the process
at any point leaves at worst the last complete checkpoint, from which the same command
resumes: this is what the kill-and-resume test drives.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from ebmops.core.errors import EbmopsError
from ebmops.core.settings import TrainingSettings
from training.atomic import atomic_write
from training.trainer import train_energy_model


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.run SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    try:
        cfg = TrainingSettings(**spec.get("training", {}))
    except ValidationError as e:
        print(f"error: invalid training settings in {args[0]}: {e}", file=sys.stderr)
        return 2
    try:
        ckpt = spec.get("checkpoint_dir")
        common = dict(checkpoint_dir=Path(ckpt) if ckpt else None, resume=bool(spec.get("resume", True)),
                      progress=bool(spec.get("progress", False)))
        if "source" in spec:
            result = _train_streamed(spec, cfg, common)
        else:
            result = train_energy_model(np.load(spec["x_train"]), cfg, **common)
    except EbmopsError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if spec.get("output"):
        payload = {"spec": result.model.spec(), "state_dict": result.model.state_dict()}
        atomic_write(Path(spec["output"]), lambda f: torch.save(payload, f))
    print(json.dumps({"epochs_completed": result.epochs_completed, "epochs_planned": result.epochs_planned,
                      "resumed_from_epoch": result.resumed_from_epoch, "seconds": result.seconds,
                      "stopped_reason": result.stopped_reason, "message": result.message}))
    return 0


def _train_streamed(spec: dict, cfg: TrainingSettings, common: dict):
    from ebmops.core.data.stream import budget, open_path
    from ebmops.core.settings import Settings
    from training.stream_trainer import train_stream
    from training.streaming import prepare

    src = spec["source"]
    settings = Settings(training=cfg, data={"batch_rows": int(spec.get("batch_rows", 65536))})
    sizes = budget(settings, len(src["features"]))
    source = open_path(src["path"], name=src.get("name", "source"), features=list(src["features"]),
                       label=src.get("label"), event_id=src.get("event_id"), region=src.get("region"),
                       categorical=list(src.get("categorical", [])),
                       regions=list(settings.data.regions), batch_rows=sizes.batch_rows)
    split = prepare(source, cfg, sizes)
    return train_stream(source, split, cfg, shuffle_rows=int(spec.get("shuffle_rows", sizes.shuffle_rows)), **common)


if __name__ == "__main__":
    sys.exit(main())
