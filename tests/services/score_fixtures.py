"""A scoring setup shared by the scoring tests: signed bundles in a region store, a partitioned source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ebmops.core.settings import load_settings
from registry.bundle import publish_bundle
from registry.desired_state import next_desired, read_desired, write_desired
from registry.objectstore import LocalStore
from registry.signing import hmac_key
from tests.registry.sync_fixtures import FEATURES, save_energy_model

MODEL = "ebm-kdd99"
REGION = "eu-west"
SECRET = "s" * 40
THRESHOLDS = {"1": 0.05, "2": 0.08}


@dataclass
class ScoringSetup:
    home: Path
    source: Path          # a directory of Parquet partitions
    models: dict          # version -> TorchScript file
    env: dict             # environment that resolves to these settings

    def settings(self, **kw):
        return load_settings(home=self.home, sync={"signing_key": SECRET}, **kw)


def write_source(root: Path, partitions: int, rows: int, seed: int = 0, row_group: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for p in range(partitions):
        x = rng.normal(0.5, 0.2, size=(rows, len(FEATURES)))
        frame = pd.DataFrame(x, columns=FEATURES)
        frame.insert(0, "event_id", np.arange(p * rows, (p + 1) * rows, dtype=np.int64) * 7 + 3)
        frame.to_parquet(root / f"day={p:02d}.parquet", row_group_size=row_group or max(1, rows // 3))
    return root


def make_setup(tmp: Path, partitions: int = 4, rows: int = 3000) -> ScoringSetup:
    home = tmp / "home"
    key = hmac_key(SECRET)
    store = LocalStore(home / "stores" / REGION, fsync=False)
    models = {}
    (tmp / "models").mkdir(parents=True, exist_ok=True)
    for v, t in THRESHOLDS.items():
        models[v] = save_energy_model(tmp / "models" / f"v{v}.pt", seed=int(v), threshold=t)
        publish_bundle(store, models[v], model_name=MODEL, version=v, features=FEATURES, threshold=t,
                       gate_verdict="pass", key=key)
    write_desired(store, next_desired(read_desired(store, MODEL, key), MODEL, stable_version="1"), key)
    source = write_source(tmp / "events", partitions, rows)
    env = {"EBMOPS_HOME": str(home), "EBMOPS_SYNC__SIGNING_KEY": SECRET}
    return ScoringSetup(home=home, source=source, models=models, env=env)


def reference_energies(model_file: Path, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return torch.jit.load(str(model_file)).eval()(torch.from_numpy(x.astype(np.float32))).numpy()


def run_all(settings, source, out, **kw) -> dict:
    """The flow's work without the engine: plan, every partition, summary."""
    from ebmops.services import score as steps

    job = steps.plan(settings, str(source), out, **kw)
    results = [steps.score_partition(job, i) for i in job.pending]
    return steps.summary(job, results)
