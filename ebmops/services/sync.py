"""The steps of the ``sync`` flow, as plain functions (no Prefect).

A sync takes one registered version (by default the gate-passed ``@candidate``) out of MLflow,
publishes it as a signed bundle to every region's object store (blobs first, the manifest and
the region's desired state last), records each region's seconds and bytes in the state store,
then tells the regional nodes to reload at once instead of waiting for their next poll, and
optionally waits until every reachable node serves the version. A region may have several node
replicas (serving.node_urls, serving/client.py): each is reloaded and waited for, and a region's
report combines them (versions only when every reachable replica agrees).
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

from ebmops.adapters.bundles import SyncBundle
from ebmops.adapters.nodes import NodeReport, generation_floors, node_reports
from ebmops.core.aliases import CHAMPION, region_alias
from ebmops.core.errors import ConfigError, EbmopsError, StoreError, SyncNotServed
from ebmops.core.settings import Settings

log = logging.getLogger(__name__)


def check_regions(settings: Settings, regions: Sequence[str] | None) -> list[str]:
    """The regions to act on (default every configured region); unknown names are an error."""
    known = list(settings.data.regions)
    if not regions:
        return known
    unknown = [r for r in regions if r not in known]
    if unknown:
        raise ConfigError(f"--region: unknown regions {unknown}; configured regions are {known} "
                          "(set data.regions / EBMOPS_DATA__REGIONS to add one)")
    return list(dict.fromkeys(regions))


def synced_regions(settings: Settings, regions: list[str]) -> list[str]:
    """The regions whose store holds a desired state of the scope's model: where it was synced, so where
    its node serves it (a store that cannot be read is kept: its observation reports the problem)."""
    from ebmops.core.errors import EbmopsError
    from registry.desired_state import desired_key
    from registry.objectstore.factory import store_for_region

    keep = []
    for region in regions:
        try:
            if store_for_region(settings, region).exists(desired_key(str(settings.registry.model_name))):
                keep.append(region)
        except EbmopsError:
            keep.append(region)
    return keep


def check_allowed(settings: Settings, bundle: SyncBundle, regions: Sequence[str], *,
                  override: str | dict | None = None) -> dict:
    """Whether ``bundle`` may become the stable version of ``regions``: it passed the gate and is each
    region's approved version (alias ``prod-<region>``, else ``champion``; before any approval exists, the
    first gate-passed version). Anything else needs a roster member's override token
    (services/authority.py). Returns what allowed it; raises SyncNotApproved before anything is written."""
    from ebmops.core.errors import SyncNotApproved
    from registry import ModelRegistry

    reg = ModelRegistry.from_settings(settings)
    champion = reg.get_by_alias(CHAMPION)
    problems = {}
    for region in regions:
        approved = reg.get_by_alias(region_alias(region)) or champion
        if not _gate_promotes(bundle.gate_verdict):
            problems[region] = f"v{bundle.version} did not pass the gate (verdict {bundle.gate_verdict})"
        elif approved is not None and str(approved.version) != bundle.version:
            problems[region] = f"its approved version is v{approved.version}, not v{bundle.version}"
    if not problems:
        return {"allowed_by": "policy"}
    if override is None:
        detail = "; ".join(f"{r}: {p}" for r, p in problems.items())
        raise SyncNotApproved(f"sync of {bundle.model_name} v{bundle.version} refused, nothing was published: {detail}."
                              " Roll it out (`ebmops rollout start`) or, as a roster member, override with "
                              f"`ebmops sync {bundle.version} --override --comment WHY`")
    from ebmops.services.authority import check_override

    doc = check_override(settings, override, action="sync", model=bundle.model_name, version=bundle.version,
                         regions=regions)
    return {"allowed_by": "override", "operator": doc["operator"], "how": doc["how"], "comment": doc.get("comment"),
            "problems": problems}


def _gate_promotes(verdict: str) -> bool:
    """Whether the gate's verdict lets a version be published without a human (pass; skipped: nothing to
    compare against yet, as for the first version)."""
    from gates.verdict import Verdict

    try:
        return Verdict(verdict).promotes
    except ValueError:  # "none": never gated
        return False


def publish(settings: Settings, bundle: SyncBundle, regions: Sequence[str], *, set_stable: bool = True,
            updated_by: str = "ebmops-sync", repair: bool = False, allowed: dict | None = None) -> dict:
    """Publish to ``regions`` concurrently and record each region in the state store (``allowed``: what
    ``check_allowed`` said, kept in the audit record)."""
    from registry.publish import sync_version

    floors = generation_floors(settings, regions) if set_stable else None
    result = sync_version(settings, bundle.model_file, model_name=bundle.model_name, version=bundle.version,
                          features=bundle.features, threshold=bundle.threshold, gate_verdict=bundle.gate_verdict,
                          regions=list(regions), set_stable=set_stable, updated_by=updated_by,
                          metadata=bundle.metadata, repair=repair, extra_files=bundle.extra_files or None,
                          floors=floors)
    from ebmops.core.state import open_store

    store = open_store(settings)
    try:
        store.append_audit("sync", model=bundle.model_name, version=bundle.version, actor=updated_by,
                           payload={"sync_id": result.sync_id, "regions": sorted(result.regions),
                                    "bytes_uploaded": result.bytes_uploaded, "set_stable": set_stable,
                                    "gate_verdict": bundle.gate_verdict, **(allowed or {})})
    finally:
        store.close()
    return {"sync_id": result.sync_id, "model_name": bundle.model_name, "version": bundle.version,
            "seconds": result.seconds, "bytes_uploaded": result.bytes_uploaded,
            "regions": {r: {"seconds": p.seconds, "bytes_uploaded": p.bytes_uploaded,
                            "blobs_uploaded": p.blobs_uploaded, "blobs_skipped": p.blobs_skipped,
                            "generation": p.desired_generation, "desired_written": p.desired_written}
                        for r, p in result.regions.items()}}


def notify_and_wait(settings: Settings, regions: Sequence[str], version: str, *, wait_s: float = 0.0,
                    poll_s: float = 0.1) -> dict:
    """Tell every node to reload, then wait up to ``wait_s`` until every reachable node serves ``version``.

    Returns per region the node's report and ``served_after_s`` (seconds from the first reload call);
    raises SyncNotServed when a reachable node still does not serve it after ``wait_s`` > 0.
    """
    t0 = time.perf_counter()
    reports = node_reports(settings, regions, reload=True)
    served_at = {r: time.perf_counter() - t0 for r, rep in reports.items() if rep.serves(version)}
    deadline = t0 + wait_s
    while wait_s > 0 and time.perf_counter() < deadline:
        pending = [r for r, rep in reports.items() if rep.reachable and r not in served_at]
        if not pending:
            break
        time.sleep(poll_s)
        for r, rep in node_reports(settings, pending).items():
            reports[r] = rep
            if rep.serves(version):
                served_at[r] = time.perf_counter() - t0
    out = {r: {**rep.to_dict(), "serves_version": rep.serves(version), "served_after_s": served_at.get(r)}
           for r, rep in reports.items()}
    lagging = [r for r, rep in reports.items() if not rep.serves(version)]
    if wait_s > 0 and lagging:
        detail = "; ".join(_lag(reports[r], version) for r in lagging)
        raise SyncNotServed(f"version {version} was published, but after {wait_s:.0f} s these nodes do not serve it: "
                            f"{detail}. Check `ebmops regions status` and the node logs")
    return out


def _lag(rep: NodeReport, version: str) -> str:
    if not rep.reachable:
        return f"{rep.region}: node unreachable ({rep.error}); it applies the desired state when it is back"
    if not rep.replicas:
        return f"{rep.region}: serves {rep.stable_version}" + (f" (last error: {rep.last_error})"
                                                              if rep.last_error else "")
    return f"{rep.region}: " + ", ".join(
        f"replica {r.url} serves {r.stable_version}" + (f" (last error: {r.last_error})" if r.last_error else "")
        for r in rep.replicas if r.reachable and not r.serves(version))


def regions_status(settings: Settings, regions: Sequence[str] | None = None, *, timeout_s: float = 2.0) -> dict:
    """Per region: the desired state in its store and what its node serves, with every inconsistency.

    Flags (``issues``): no desired state; the store's desired state cannot be verified; the node
    is unreachable; the node serves other versions, another weight or an older generation than
    desired; the node's last reload was refused. Across regions: stable versions that differ
    (the field's "version consistency across regions").
    """
    from registry.desired_state import read_desired
    from registry.objectstore.factory import store_for_region
    from registry.signing import signing_key

    regions = check_regions(settings, regions)
    model = settings.registry.model_name
    key = signing_key(settings, verify_only=True)
    nodes = node_reports(settings, regions, timeout_s=timeout_s)
    rows: dict[str, dict] = {}
    for region in regions:
        issues: list[str] = []
        desired = None
        try:
            store = store_for_region(settings, region)
            desired = read_desired(store, model, key)
            if desired is None:
                store.probe()  # raises when the store itself is missing or does not answer
                issues.append("no desired state: nothing was synced to this region")
            elif desired.expired():
                issues.append(f"desired state expired at {desired.expires_at.isoformat()}: the store has not been "
                              "re-signed since (run `ebmops sync --reconcile`)")
        except StoreError as e:
            issues.append(f"store unreachable: {e}")
        except EbmopsError as e:
            issues.append(f"desired state unusable: {e}")
        node = nodes[region]
        for rep in node.replicas or [node]:
            issues.extend(_replica_issues(rep, desired, prefix=f"replica {rep.url}: " if node.replicas else ""))
        rows[region] = {"region": region,
                        "desired_stable": desired.stable_version if desired else None,
                        "desired_canary": desired.canary_version if desired else None,
                        "desired_weight": desired.canary_weight if desired else None,
                        "desired_generation": desired.generation if desired else None,
                        "node_url": node.url, "node_reachable": node.reachable,
                        "served_stable": node.stable_version, "served_canary": node.canary_version,
                        "served_weight": node.canary_weight, "served_generation": node.generation,
                        "replicas": [{"url": r.url, "reachable": r.reachable, "served_stable": r.stable_version,
                                      "served_canary": r.canary_version, "served_weight": r.canary_weight,
                                      "served_generation": r.generation, "error": r.error or r.last_error}
                                     for r in node.replicas or [node]],
                        "issues": issues}
    by = {r: row["desired_stable"] for r, row in rows.items() if row["desired_stable"]}
    hotfixed = _regional_hotfixes(settings, by) if len(set(by.values())) > 1 else {}
    notes = [f"{r} serves v{v}, its own hotfix of v{of}" for r, (v, of) in hotfixed.items()]
    global_issues = []
    if len({v for r, v in by.items() if r not in hotfixed}) > 1:
        global_issues.append(f"regions disagree on the stable version: {by}")
    consistent = not global_issues and all(not r["issues"] for r in rows.values())
    return {"model": model, "consistent": consistent, "issues": global_issues, "notes": notes, "regions": rows}


def _regional_hotfixes(settings: Settings, by: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Regions whose stable version is a hotfix made for that region of a version another region serves
    (registry tags ``hotfix``, ``region``, ``hotfix_of``): {region: (version, hotfix_of)}. Such a difference
    is what a regional hotfix is for, not an inconsistency. Without the registry nothing is explained."""
    from registry import ModelRegistry

    try:
        reg = ModelRegistry.from_settings(settings)
        tags = {v: reg.get_version(v).tags for v in set(by.values())}
    except Exception as e:  # noqa: BLE001 - the registry unreachable: the regions' difference stays an issue
        log.warning("cannot read the versions' tags (%s): a regional hotfix is not told from a disagreement", e)
        return {}
    out = {}
    for region, v in by.items():
        t = tags.get(v) or {}
        others = {x for r, x in by.items() if r != region}
        if t.get("hotfix") == "true" and t.get("region") == region and t.get("hotfix_of") in others:
            out[region] = (v, t["hotfix_of"])
    return out


def _replica_issues(node: NodeReport, desired, prefix: str = "") -> list[str]:
    """What is wrong with one node replica against the region's desired state."""
    issues = []
    if not node.reachable:
        issues.append(f"{prefix}node unreachable at {node.url}")
    elif desired is not None:
        if node.stable_version != desired.stable_version:
            issues.append(f"{prefix}node serves stable {node.stable_version}, desired {desired.stable_version}")
        if node.canary_version != desired.canary_version:
            issues.append(f"{prefix}node serves canary {node.canary_version}, desired {desired.canary_version}")
        elif desired.canary_version and abs((node.canary_weight or 0.0) - desired.canary_weight) > 1e-9:
            issues.append(f"{prefix}node splits {node.canary_weight} to the canary, desired {desired.canary_weight}")
        if (node.generation or 0) < desired.generation:
            issues.append(f"{prefix}node at generation {node.generation}, desired {desired.generation}")
    if node.reachable and node.last_error:
        issues.append(f"{prefix}node refused the last reload: {node.last_error}")
    if node.reachable and node.degraded:
        issues.append(f"{prefix}node DEGRADED, serving its last verified state from disk: {node.degraded}")
    return issues


def reconcile_plan(settings: Settings, regions: Sequence[str] | None = None, store=None) -> dict:
    """What the daily reconcile must repair: per region the version the registry says it should run as
    stable (alias ``prod-<region>``, else ``champion``) when its store's desired state differs, is
    missing or cannot be verified. Regions inside an active rollout are left to the rollout."""
    from registry import ModelRegistry
    from registry.desired_state import read_desired
    from registry.objectstore.factory import store_for_region
    from registry.signing import signing_key

    regions = check_regions(settings, regions)
    reg = ModelRegistry.from_settings(settings)
    model = settings.registry.model_name
    key = signing_key(settings, verify_only=True)
    champion = reg.get_by_alias(CHAMPION)
    busy: set[str] = set()
    if store is not None:
        active = store.active_rollout(model)
        if active is not None:
            busy = {r.region for r in active.regions}
    repairs, ok, skipped = {}, {}, {}
    for region in regions:
        wanted = reg.get_by_alias(region_alias(region)) or champion
        if wanted is None:
            skipped[region] = "no prod-<region> or champion alias: nothing to reconcile against"
            continue
        if region in busy:
            skipped[region] = "inside an active rollout"
            continue
        try:
            desired = read_desired(store_for_region(settings, region), model, key)
            problem = None if desired is not None else "no desired state"
            if desired is not None and (desired.stable_version != wanted.version or desired.canary_version):
                problem = (f"desired stable {desired.stable_version}"
                           + (f" + canary {desired.canary_version}" if desired.canary_version else "")
                           + f", registry says {wanted.version}")
        except EbmopsError as e:
            problem = f"desired state unusable: {e}"
        if problem:
            repairs[region] = {"version": wanted.version, "problem": problem}
        else:
            ok[region] = wanted.version
    by_version: dict[str, list[str]] = {}
    for region, r in repairs.items():
        by_version.setdefault(r["version"], []).append(region)
    return {"repairs": repairs, "by_version": by_version, "ok": ok, "skipped": skipped}
