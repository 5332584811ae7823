"""The control plane's client of the regional nodes: what each node serves (``GET /stats``), a reload
(``POST /admin/reload``), the recent samples a canary judge and the drift monitor read, and the
recent events a hotfix learns from (``GET /recent``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ebmops.core.settings import Settings


@dataclass
class NodeReport:
    """What a region's node said (or that it could not be reached)."""

    region: str
    url: str
    reachable: bool
    stable_version: str | None = None
    canary_version: str | None = None
    canary_weight: float | None = None
    generation: int | None = None
    last_error: str | None = None
    error: str | None = None

    def serves(self, version: str) -> bool:
        return self.reachable and version in (self.stable_version, self.canary_version)

    def to_dict(self) -> dict:
        return asdict(self)


def _node_report(region: str, url: str, body: dict) -> NodeReport:
    err = body.get("last_error")
    if isinstance(err, dict):  # the node reports {"reason": ..., "message": ..., ...}
        err = f"{err.get('reason', 'refused')}: {err.get('message', '')}".rstrip(": ")
    return NodeReport(region=region, url=url, reachable=True, stable_version=body.get("stable_version"),
                      canary_version=body.get("canary_version"), canary_weight=body.get("canary_weight"),
                      generation=body.get("generation"), last_error=err)


def node_reports(settings: Settings, regions: Sequence[str], *, reload: bool = False,
                 timeout_s: float = 5.0) -> dict[str, NodeReport]:
    """Ask each region's node what it serves (``GET /stats``), or to reload first (``POST /admin/reload``).

    A node that is down is reported as unreachable, not raised: nodes poll their store, so a
    node that was down picks the version up when it comes back.
    """
    import httpx

    from concurrent.futures import ThreadPoolExecutor

    def one(client: httpx.Client, region: str) -> NodeReport:
        url = settings.node_url(region)
        try:
            if reload:
                r = client.post(f"{url}/admin/reload")
                # 409/502 with a JSON body mean "refused, still serving the old state": the body says what
                if r.is_error and not (r.status_code in (409, 502) and "json" in r.headers.get("content-type", "")):
                    r.raise_for_status()
            else:
                r = client.get(f"{url}/stats")
                r.raise_for_status()
            return _node_report(region, url, r.json())
        except (httpx.HTTPError, ValueError) as e:
            return NodeReport(region=region, url=url, reachable=False, error=f"{type(e).__name__}: {e}")

    # Nodes load in parallel: a reload verifies, loads and warms a model before it answers.
    with httpx.Client(timeout=timeout_s) as client, ThreadPoolExecutor(max_workers=max(1, len(regions))) as pool:
        reports = list(pool.map(lambda r: one(client, r), regions))
    out = {r.region: r for r in reports}
    return out


def node_stats(settings: Settings, region: str) -> dict:
    """The node's ``/stats``: served versions and their recent samples (latency, outcomes, energies)."""
    import httpx

    r = httpx.get(settings.node_url(region) + "/stats", timeout=10)
    r.raise_for_status()
    return r.json()


def fetch_recent(settings: Settings, region: str, n: int, path: Path) -> Path:
    """The node's recent events (features and energies) as Parquet at ``path``."""
    import httpx
    import pandas as pd

    r = httpx.get(settings.node_url(region) + "/recent", params={"n": n}, timeout=30)
    r.raise_for_status()
    body = r.json()
    frame = pd.DataFrame(np.asarray(body["events"], dtype=np.float32), columns=body["features"])
    frame["energy"] = np.asarray(body["energies"], dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    return path
