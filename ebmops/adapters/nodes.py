"""The control plane's client of the regional nodes: what each node serves of a model
(``GET /v1/models/<model>/stats``), a reload (``POST /admin/reload?model=<model>``), the recent samples a
canary judge and the drift monitor read, and the recent events a hotfix learns from
(``GET /v1/models/<model>/recent``). The model is the one ``settings.registry.model_name`` names (a node
serves several). A region may have several node replicas (``serving.node_urls``, serving/client.py):
each is asked, and a region's report combines them (versions only when every reachable replica agrees)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ebmops.core.errors import EbmopsError
from ebmops.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class NodeReport:
    """What a region's node said (or that it could not be reached); for a region of several replicas,
    their combination (see ``combine``), each replica's own report in ``replicas``."""

    region: str
    url: str
    reachable: bool
    stable_version: str | None = None
    canary_version: str | None = None
    canary_weight: float | None = None
    generation: int | None = None
    trusted_generation: int | None = None  # the highest generation the node verified, kept across restarts
    degraded: str | None = None  # why the node serves its last verified state from disk, if it does
    last_error: str | None = None
    error: str | None = None
    replicas: list["NodeReport"] = field(default_factory=list)

    def serves(self, version: str) -> bool:
        return self.reachable and version in (self.stable_version, self.canary_version)

    @property
    def highest_generation(self) -> int:
        """The highest generation this node (any reachable replica) served or trusted; 0 when none."""
        own = max(self.generation or 0, self.trusted_generation or 0) if self.reachable else 0
        return max([own, *(r.highest_generation for r in self.replicas)])

    def to_dict(self) -> dict:
        return asdict(self)


def _node_report(region: str, url: str, body: dict) -> NodeReport:
    err = body.get("last_error")
    if isinstance(err, dict):  # the node reports {"reason": ..., "message": ..., ...}
        err = f"{err.get('reason', 'refused')}: {err.get('message', '')}".rstrip(": ")
    return NodeReport(region=region, url=url, reachable=True, stable_version=body.get("stable_version"),
                      canary_version=body.get("canary_version"), canary_weight=body.get("canary_weight"),
                      generation=body.get("generation"), trusted_generation=body.get("trusted_generation"),
                      degraded=(body.get("degraded") or {}).get("reason") if isinstance(body.get("degraded"), dict)
                      else body.get("degraded"), last_error=err)


def combine(region: str, reps: list[NodeReport]) -> NodeReport:
    """One report for a region's replicas: reachable when any is; a version, weight or error only when
    every reachable replica agrees (else None: not yet served everywhere); the oldest generation."""
    if len(reps) == 1:
        return reps[0]
    up = [r for r in reps if r.reachable]

    def agreed(attr: str):
        values = {getattr(r, attr) for r in up}
        return values.pop() if len(values) == 1 else None

    errors = [f"{r.url}: {r.last_error}" for r in up if r.last_error]
    degraded = [f"{r.url}: {r.degraded}" for r in up if r.degraded]
    down = [f"{r.url}: {r.error}" for r in reps if not r.reachable]
    return NodeReport(region=region, url=", ".join(r.url for r in reps) or "(no replica)", reachable=bool(up),
                      stable_version=agreed("stable_version"), canary_version=agreed("canary_version"),
                      canary_weight=agreed("canary_weight"),
                      generation=min((r.generation or 0 for r in up), default=None),
                      trusted_generation=max((r.trusted_generation or 0 for r in up), default=None),
                      degraded="; ".join(degraded) or None, last_error="; ".join(errors) or None, error="; ".join(down) or None, replicas=reps)


def node_reports(settings: Settings, regions: Sequence[str], *, reload: bool = False,
                 timeout_s: float = 5.0) -> dict[str, NodeReport]:
    """Ask each region's node replicas what they serve of the model settings.registry.model_name names
    (``GET /v1/models/<model>/stats``), or to reload it first (``POST /admin/reload?model=<model>``); one
    combined report per region.

    A node that is down is reported as unreachable, not raised: nodes poll their store, so a
    node that was down picks the version up when it comes back. A node that does not serve the
    model (yet: no desired state of it in its store) is reachable and serves nothing of it.
    """
    import httpx

    from concurrent.futures import ThreadPoolExecutor

    from serving.client import model_path, node_client, replica_urls

    targets = [(region, url) for region in regions for url in replica_urls(settings, region)]
    model = settings.registry.model_name

    def one(client: httpx.Client, region: str, url: str) -> NodeReport:
        try:
            if reload:
                r = client.post(f"{url}/admin/reload", params={"model": model})
                # 409/502 with a JSON body mean "refused, still serving the old state": the body says what
                if r.is_error and not (r.status_code in (409, 502) and "json" in r.headers.get("content-type", "")):
                    r.raise_for_status()
            else:
                r = client.get(url + model_path(settings, "stats"))
                r.raise_for_status()
            return _node_report(region, url, r.json())
        except httpx.HTTPStatusError as e:
            unknown = _unknown_model(e.response)
            if unknown is not None:
                return NodeReport(region=region, url=url, reachable=True, last_error=unknown)
            return NodeReport(region=region, url=url, reachable=False, error=_refused(e.response))
        except (httpx.HTTPError, ValueError) as e:
            return NodeReport(region=region, url=url, reachable=False, error=f"{type(e).__name__}: {e}")

    # Nodes load in parallel: a reload verifies, loads and warms a model before it answers.
    with node_client(settings, timeout_s) as client, ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        reports = list(pool.map(lambda t: one(client, *t), targets))
    by_region: dict[str, list[NodeReport]] = {r: [] for r in regions}
    for rep in reports:
        by_region[rep.region].append(rep)
    return {r: combine(r, reps) if reps else NodeReport(region=r, url="(no replica)", reachable=False,
                                                        error="serving.node_urls names no reachable address")
            for r, reps in by_region.items()}


def generation_floors(settings: Settings, regions: Sequence[str]) -> dict[str, int]:
    """Per region the highest desired-state generation any reachable replica trusts: the next document
    written there must exceed it (nodes refuse anything lower, and a replayed store must not make the
    control plane reuse a generation). Unreachable nodes add nothing; they refuse on their own."""
    return {r: rep.highest_generation for r, rep in node_reports(settings, list(regions), timeout_s=2.0).items()}


def _unknown_model(r) -> str | None:
    """Why a node does not serve the model, when a 404 says so (its JSON names the model); else None."""
    if r.status_code != 404:
        return None
    try:
        body = r.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("error") != "unknown model":
        return None
    return f"not served: {body.get('reason', '')}"


def _refused(r) -> str:
    """An HTTP error of a node, with the fix when it is about the control plane's token."""
    if r.status_code in (401, 403):
        return (f"HTTP {r.status_code}: the node refused the control plane's token; set serving.client_token (or "
                "client_token_file) to a token with the read and admin scopes")
    return f"HTTP {r.status_code}: {r.text[:200]}"


def replica_get(settings: Settings, region: str, path: str, params: dict | None = None,
                timeout_s: float = 10.0) -> tuple[list[dict], list[tuple[str, str]], int]:
    """``GET path`` of every node replica of the region: the JSON bodies of those that answered, the
    (url, error) of those that did not, and how many replicas the region has."""
    import httpx

    from serving.client import node_client, replica_urls

    urls = replica_urls(settings, region)
    bodies, failed = [], []
    with node_client(settings, timeout_s) as client:
        for url in urls:
            try:
                r = client.get(url + path, params=params)
                r.raise_for_status()
                bodies.append(r.json())
            except (httpx.HTTPError, ValueError) as e:
                failed.append((url, f"{type(e).__name__}: {e}"))
    return bodies, failed, len(urls)


def _replica_bodies(settings: Settings, region: str, path: str, params: dict | None = None,
                    timeout_s: float = 10.0) -> list[dict]:
    """``GET path`` of every node replica of the region that answers; raises when none does."""
    bodies, failed, _ = replica_get(settings, region, path, params, timeout_s)
    errors = [f"{url}: {err}" for url, err in failed]
    if not bodies:
        raise EbmopsError(f"{region}: no node replica answers {path}: " + ("; ".join(errors) or "no replica configured"))
    if errors:
        log.warning("%s: %d node replicas did not answer %s, pooling the others: %s", region, len(errors), path,
                    "; ".join(errors))
    return bodies


def node_stats(settings: Settings, region: str) -> dict:
    """The region's stats of the model (``/v1/models/<model>/stats``), pooled over its replicas: roles from
    the first, each version's recent energies from all of them."""
    from serving.client import model_path

    bodies = _replica_bodies(settings, region, model_path(settings, "stats"))
    out = dict(bodies[0])
    pooled: dict[str, dict] = {}
    for body in bodies:
        for version, vs in (body.get("by_version") or {}).items():
            into = pooled.setdefault(version, {**vs, "energies": []})
            into["energies"] = list(into["energies"]) + list(vs.get("energies") or [])
    out["by_version"] = pooled
    return out


def fetch_recent(settings: Settings, region: str, n: int, path: Path) -> Path:
    """The region's recent events of the model (features and energies) as Parquet at ``path``, pooled over
    its replicas."""
    import pandas as pd

    from serving.client import model_path, replica_urls

    k = max(1, len(replica_urls(settings, region)))
    bodies = _replica_bodies(settings, region, model_path(settings, "recent"), {"n": -(-n // k)}, timeout_s=30)
    features = bodies[0]["features"]
    same = [b for b in bodies if b["features"] == features]  # a replica mid-reload may serve another schema
    rows = [row for b in same for row in b["events"]]
    frame = pd.DataFrame(rows, columns=features) if rows else pd.DataFrame(columns=features, dtype=np.float32)
    for c in features:  # numeric columns as float32; categorical ones keep the raw texts the node kept
        if pd.api.types.is_numeric_dtype(frame[c]):
            frame[c] = frame[c].astype(np.float32)
    frame["energy"] = np.concatenate([np.asarray(b["energies"], dtype=np.float32) for b in same])
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    return path
