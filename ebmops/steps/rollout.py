"""The real ports of the rollout controller (canary/controller.py) and the steps of the ``rollout`` flow.

* ``RegionTraffic``: a region's object store (bundles, signed desired state) and its node
  (``/admin/reload``, ``/stats``).
* ``RegistryAliases``: MLflow aliases (``prod-<region>``, ``champion``, ``previous-champion``).
* ``StoreApprovals``: waits for a decision written to the state store by ``ebmops approve``
  (any process, any machine that reaches the state store). The flow uses Prefect's pause form
  instead when it runs against a Prefect server (flows/rollout.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from canary.controller import Decision, RolloutController, SamplesUnavailable, VersionSamples
from canary.phases import Phase, TransitionRefused, is_terminal
from canary.plan import RolloutPlan
from ebmops.errors import EbmopsError
from ebmops.settings import Settings

log = logging.getLogger(__name__)


class RolloutRefused(EbmopsError):
    """A rollout cannot start or a decision cannot be taken as asked."""

    exit_code = 2


class NotOnRoster(EbmopsError):
    """The name is not in the on-call roster; the decision was recorded as refused."""

    exit_code = 11


# ---- traffic ---------------------------------------------------------------------------------
@dataclass
class RegionTraffic:
    settings: Settings
    reload_timeout_s: float = 30.0
    _bundles: dict = field(default_factory=dict)
    _gauges: dict = field(default_factory=dict)
    _stores: dict = field(default_factory=dict)
    _signing_key: object = None

    def _store(self, region: str):
        """One store per region for the controller's life: an S3 store holds a boto3 client (slow to build)."""
        if region not in self._stores:
            from registry.objectstore.factory import store_for_region

            self._stores[region] = store_for_region(self.settings, region)
        return self._stores[region]

    def _key(self):
        if self._signing_key is None:
            from registry.signing import signing_key

            self._signing_key = signing_key(self.settings)
        return self._signing_key

    def prepare(self, region: str, version: str) -> None:
        from ebmops.steps.sync import prepare
        from registry.publish import publish_to_regions

        b = self._bundles.get(version) or prepare(self.settings, version)
        self._bundles[version] = b
        publish_to_regions({region: self._store(region)}, b.model_file, model_name=b.model_name, version=b.version,
                           features=b.features, threshold=b.threshold, gate_verdict=b.gate_verdict, key=self._key(),
                           set_stable=False, metadata=b.metadata, extra_files=b.extra_files or None)

    def set_traffic(self, region: str, *, stable: str | None, canary: str | None, weight: float) -> None:
        from registry.desired_state import next_desired, read_desired, write_desired

        if stable is None:
            raise RolloutRefused(f"region {region} has no stable version to fall back to; sync one first "
                                 "(`ebmops sync VERSION --region {region}`)")
        model = self.settings.registry.model_name
        store, key = self._store(region), self._key()
        current = read_desired(store, model, key)
        wanted = next_desired(current, model, stable_version=stable, canary_version=canary,
                              canary_weight=weight if canary else 0.0, updated_by="ebmops-rollout")
        if not wanted.same_target(current):
            write_desired(store, wanted, key)
        self._wait_applied(region, stable, canary, weight if canary else 0.0)

    def _wait_applied(self, region: str, stable: str, canary: str | None, weight: float) -> None:
        """Reload the node and wait until it serves exactly this; a node that is down is left to its
        poll (the desired state is the truth), a node that refuses is an error."""
        from ebmops.steps.sync import node_reports

        deadline = time.monotonic() + self.reload_timeout_s
        while True:
            rep = node_reports(self.settings, [region], reload=True)[region]
            if not rep.reachable:
                log.warning("%s: node unreachable (%s); it will apply the desired state when it polls", region,
                            rep.error)
                return
            if (rep.stable_version, rep.canary_version) == (stable, canary) and \
                    abs((rep.canary_weight or 0.0) - weight) < 1e-9:
                if rep.error:  # some replicas down: they apply the desired state when they poll
                    log.warning("%s: applied by every reachable replica; unreachable: %s", region, rep.error)
                return
            if time.monotonic() > deadline:
                raise EbmopsError(f"node of {region} does not apply stable {stable} / canary {canary} @ {weight}: it "
                                  f"serves {rep.stable_version} / {rep.canary_version}"
                                  + (f" (last error: {rep.last_error})" if rep.last_error else ""))
            time.sleep(0.2)

    def _gauge(self, version: str) -> np.ndarray | None:
        """The version's sorted calibration energies: each live energy becomes its percentile among them.

        Two versions' raw energies are in different gauges (an EBM's energy is defined up to shift and
        scale, and two trainings differ in shape too). The percentile within a version's own
        calibration is gauge-free: on the same traffic, two sound versions give the same percentile
        distribution, and a version whose energies moved gives a different one."""
        if version not in self._gauges:
            from registry import ModelRegistry

            reg = ModelRegistry.from_settings(self.settings)
            try:
                dst = self.settings.home / "rollouts" / "calibration" / version
                cal = np.load(reg.download_artifact(version, "calibration_energies.npy", dst))
                self._gauges[version] = np.sort(np.asarray(cal, dtype=np.float64))
            except Exception as e:  # noqa: BLE001 - without a calibration the energy metric has no data
                log.warning("no calibration energies for version %s (%s); its energies are not compared", version, e)
                self._gauges[version] = None
        return self._gauges[version]

    def samples(self, region: str) -> dict[str, VersionSamples]:
        """Every replica's recent samples, pooled per version; SamplesUnavailable names the replicas that
        could not be read (the judge does not judge on part of the region)."""
        import httpx

        from serving.client import node_client, replica_urls

        urls = replica_urls(self.settings, region)
        bodies, failed = [], []
        with node_client(self.settings, 10) as client:
            for url in urls:
                try:
                    r = client.get(url + "/stats")
                    r.raise_for_status()
                    bodies.append(r.json())
                except (httpx.HTTPError, ValueError) as e:
                    failed.append(f"{url} ({type(e).__name__}: {e})")
        if failed or not urls:
            raise SamplesUnavailable(f"{region}: {len(failed)} of {len(urls)} node replicas unreachable, not judged: "
                                     + ("; ".join(failed) or "serving.node_urls resolves to no address"))
        parts = [self._samples_of(body) for body in bodies]
        if len(parts) == 1:
            return parts[0]
        return {v: VersionSamples.pooled([p[v] if v in p else VersionSamples.empty() for p in parts])
                for v in dict.fromkeys(v for p in parts for v in p)}

    def _samples_of(self, body: dict) -> dict[str, VersionSamples]:
        out = {}
        for version, s in (body.get("by_version") or {}).items():
            e = np.asarray(s.get("energies") or [], dtype=np.float64)
            thr = s.get("threshold")
            cal = self._gauge(version)
            out[version] = VersionSamples(
                requests=int(s.get("requests", 0)), events=int(s.get("events", 0)),
                latency_ms=np.asarray(s.get("latency_ms") or [], dtype=np.float64),
                outcomes=np.asarray(s.get("outcomes") or [], dtype=np.float64),
                energies=np.searchsorted(cal, e, side="right") / len(cal) if cal is not None and len(cal) else np.empty(0),
                alerts=(e > thr).astype(np.float64) if thr is not None else np.empty(0))
        return out


# ---- aliases -----------------------------------------------------------------------------------
@dataclass
class RegistryAliases:
    settings: Settings

    def _reg(self):
        from registry import ModelRegistry

        return ModelRegistry.from_settings(self.settings)

    def get_alias(self, alias: str) -> str | None:
        info = self._reg().get_by_alias(alias)
        return info.version if info else None

    def set_alias(self, alias: str, version: str) -> None:
        self._reg().set_alias(alias, version)


# ---- approvals ---------------------------------------------------------------------------------
@dataclass
class StoreApprovals:
    """Wait for ``ebmops approve``/``reject`` to write a decision for this rollout and region."""

    store: object
    poll_s: float = 0.5

    def wait(self, rollout_id: str, region: str, wave: int, *, summary: str, deadline: datetime,
             roster: list[str]) -> Decision | None:
        ro = self.store.get_rollout(rollout_id)
        since = ro.region(region).awaiting_since or datetime.min.replace(tzinfo=timezone.utc)
        while True:
            phase = self.store.get_rollout(rollout_id).region(region).phase
            if phase != Phase.AWAITING_APPROVAL.value:
                raise TransitionRefused(f"region {region} left awaiting_approval (now {phase}) while waiting",
                                        old=Phase.AWAITING_APPROVAL, new=phase)
            for d in self.store.list_decisions(rollout_id, region=region, limit=10_000):
                if d.accepted and d.kind in ("approve", "reject") and d.created_at >= since:
                    return Decision(approve=d.kind == "approve", actor=d.actor, comment=d.comment, recorded=True)
            if datetime.now(timezone.utc) >= deadline:
                return None
            time.sleep(self.poll_s)


@dataclass
class AutoApprovals:
    """``--auto-approve --as NAME``: a roster member approves every wave without waiting."""

    actor: str

    def wait(self, rollout_id: str, region: str, wave: int, *, summary: str, deadline: datetime,
             roster: list[str]) -> Decision | None:
        return Decision(approve=True, actor=self.actor, comment="auto-approved")


def check_roster(settings: Settings, plan_roster: list[str] | None, name: str) -> bool:
    roster = plan_roster or list(settings.rollout.oncall_roster)
    return name in roster


# ---- steps of the flow and the CLI ---------------------------------------------------------------
def plan_for(settings: Settings, *, hotfix: bool = False, regions: list[str] | None = None,
             bake_s: float | None = None, steps: list[float] | None = None,
             approval: bool | None = None) -> RolloutPlan:
    overrides: dict = {}
    if regions:
        overrides["waves"] = [[r] for r in regions]
    if bake_s is not None:
        overrides["bake_s"] = bake_s
    if steps:
        overrides["steps"] = steps
    if approval is not None:
        overrides["approval"] = approval
    return RolloutPlan.from_settings(settings, hotfix=hotfix, **overrides)


def create(settings: Settings, store, version: str, *, plan: RolloutPlan, created_by: str) -> str:
    """Create the rollout record (refused while the model has an active one) after checking that every
    region has a stable version to compare against and fall back to."""
    from registry import ModelRegistry
    from registry.desired_state import read_desired
    from registry.objectstore.factory import store_for_region
    from registry.signing import signing_key

    reg = ModelRegistry.from_settings(settings)
    info = reg.resolve(version)
    key = signing_key(settings)
    stable_before: dict[str, str | None] = {}
    for region in plan.regions:
        d = read_desired(store_for_region(settings, region), settings.registry.model_name, key)
        stable_before[region] = d.stable_version if d else None
    missing = [r for r, v in stable_before.items() if v is None]
    if missing:
        raise RolloutRefused(f"regions {missing} serve no stable version yet: a canary needs one to compare with "
                             f"and to fall back to. Sync one first: `ebmops sync VERSION`")
    same = [r for r, v in stable_before.items() if v == info.version]
    if same:
        raise RolloutRefused(f"v{info.version} is already the stable version of {same}; nothing to roll out there "
                             "(pass --region to pick other regions)")
    ro = store.create_rollout(model_name=settings.registry.model_name, version=info.version, plan=plan.to_dict(),
                              stable_before=stable_before, created_by=created_by, kind=plan.kind)
    store.append_audit("rollout_step", model=ro.model_name, version=ro.version, actor=created_by,
                       payload={"rollout": ro.id, "event": "created", "plan": plan.to_dict(),
                                "stable_before": stable_before})
    return ro.id


def controller(settings: Settings, store, approvals, *, progress: Callable[[str], None] | None = None,
               actor: str = "ebmops-rollout") -> RolloutController:
    kw = {"progress": progress} if progress else {}
    return RolloutController(store=store, traffic=RegionTraffic(settings), aliases=RegistryAliases(settings),
                             approvals=approvals, actor=actor, all_regions=list(settings.data.regions), **kw)


def decide(settings: Settings, store, rollout_id: str, *, approve: bool, actor: str, comment: str | None = None,
           region: str | None = None) -> dict:
    """Record an approval or rejection by ``actor`` for the region awaiting one (checked against the roster)."""
    ro = store.get_rollout(rollout_id)
    if ro is None:
        raise RolloutRefused(f"ROLLOUT: no rollout {rollout_id}; list them with `ebmops rollout status`")
    waiting = [r for r in ro.regions if r.phase == Phase.AWAITING_APPROVAL.value and (region is None or
                                                                                      r.region == region)]
    kind = "approve" if approve else "reject"
    if not waiting:
        raise RolloutRefused(f"rollout {rollout_id} has no region awaiting approval (phases: "
                             + ", ".join(f"{r.region} {r.phase}" for r in ro.regions) + ")")
    reg = waiting[0]
    roster = list((ro.plan or {}).get("oncall_roster") or settings.rollout.oncall_roster)
    if actor not in roster:
        store.record_decision(rollout_id, kind=kind, actor=actor, region=reg.region, wave=reg.wave, comment=comment,
                              accepted=False, refusal_reason=f"{actor!r} is not on the on-call roster")
        store.append_audit("rejection" if not approve else "approval", model=ro.model_name, version=ro.version,
                           region=reg.region, actor=actor,
                           payload={"rollout": ro.id, "refused": True, "reason": "not on the on-call roster"})
        raise NotOnRoster(f"--as: {actor!r} is not on the on-call roster ({', '.join(roster)}); the refusal is "
                          "recorded and the rollout keeps waiting. Set rollout.oncall_roster to change who may decide")
    resumed = _resume_paused_flow(rollout_id, reg.region, approve=approve, actor=actor, comment=comment)
    if not resumed:  # no flow paused on a Prefect server: the controller polls the state store
        store.record_decision(rollout_id, kind=kind, actor=actor, region=reg.region, wave=reg.wave, comment=comment,
                              analysis=(reg.last_analysis or {}).get("judgement"))
    return {"rollout": rollout_id, "region": reg.region, "decision": kind, "actor": actor,
            "via": "prefect" if resumed else "state-store"}


def pause_key(rollout_id: str, region: str) -> str:
    return f"approval-{rollout_id}-{region}"


def _resume_paused_flow(rollout_id: str, region: str, *, approve: bool, actor: str, comment: str | None) -> bool:
    """Resume the flow run paused for this approval, when one waits on a reachable Prefect server."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        return False
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
    wanted = pause_key(rollout_id, region)
    # newest first: a rollout process killed while paused leaves its run paused; the resumed one is newer
    runs = sorted(runs, key=lambda r: r.created or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    for run in runs:
        details = run.state.state_details if run.state else None
        if details is not None and (details.pause_key or "").endswith(wanted):
            resume_flow_run(run.id, run_input={"approved": approve, "approver": actor, "comment": comment or ""})
            return True
    return False


def status(store, rollout_id: str | None = None, *, model: str | None = None) -> dict:
    ro = store.get_rollout(rollout_id) if rollout_id else (
        store.active_rollout(model) if model else None) or next(iter(store.list_rollouts(limit=1)), None)
    if ro is None:
        raise RolloutRefused("no rollout found" + (f" with id {rollout_id}" if rollout_id else "")
                             + "; start one with `ebmops rollout start VERSION`")
    plan = ro.plan or {}
    rows = []
    for r in ro.regions:
        j = (r.last_analysis or {}).get("judgement") or {}
        waits = ", ".join(plan.get("oncall_roster", [])) if r.phase == Phase.AWAITING_APPROVAL.value else None
        rows.append({"region": r.region, "wave": r.wave + 1, "phase": r.phase,
                     "step": None if r.step_index is None else f"{r.step_index + 1}/{len(plan.get('steps', []))}",
                     "weight": r.weight, "verdict": j.get("verdict"), "failed": r.failed_checks,
                     "stable": r.stable_version, "canary": r.canary_version, "waits_for": waits,
                     "deadline": r.approval_deadline.isoformat() if r.approval_deadline and waits else None,
                     "message": r.message})
    decisions = [{"when": d.created_at.isoformat(), "region": d.region, "kind": d.kind, "actor": d.actor,
                  "accepted": d.accepted, "comment": d.comment, "refusal": d.refusal_reason}
                 for d in store.list_decisions(ro.id)]
    return {"id": ro.id, "model": ro.model_name, "version": ro.version, "kind": ro.kind, "phase": ro.phase,
            "active": ro.active, "created_by": ro.created_by, "created_at": ro.created_at.isoformat(),
            "message": ro.message, "regions": rows, "decisions": decisions}


def rollback(settings: Settings, store, *, regions: list[str] | None, actor: str, comment: str | None = None) -> dict:
    """Return regions to their previous stable version now (``ebmops rollback``).

    With an active rollout, its unfinished regions roll back through the state machine (the
    controller finishes them); promoted regions and regions outside a rollout go back to the
    stable version they had before (the rollout's ``stable_before``, else the alias
    ``previous-champion``) by a desired-state write, recorded as a decision and audited."""
    from registry import ModelRegistry

    model = settings.registry.model_name
    targets = list(regions or settings.data.regions)
    active = store.active_rollout(model)
    history = store.list_rollouts(model_name=model, limit=200)

    def promoted_in(region: str):
        """The newest rollout that promoted ``region``: its stable_before is what the region ran before."""
        for ro in history:
            if any(r.region == region and r.phase == Phase.PROMOTED.value for r in ro.regions):
                return ro
        return None

    traffic = RegionTraffic(settings)
    prev_champ = ModelRegistry.from_settings(settings).get_by_alias("previous-champion")
    done = {}
    for region in targets:
        last = promoted_in(region)
        previous = (last.stable_before.get(region) if last else None) or (prev_champ.version if prev_champ else None)
        if active is not None:
            reg = active.region(region) if region in {r.region for r in active.regions} else None
            if reg is not None and not is_terminal(reg.phase) and reg.phase != Phase.ROLLING_BACK.value:
                if reg.phase == Phase.PENDING.value:
                    store.update_region(active.id, region, phase=Phase.ABORTED, expected_phase=reg.phase,
                                        message=f"rollback by {actor}")
                else:
                    store.update_region(active.id, region, phase=Phase.ROLLING_BACK, expected_phase=reg.phase,
                                        message=f"rollback by {actor}: {comment or 'no comment'}")
                    traffic.set_traffic(region, stable=reg.stable_version, canary=None, weight=0.0)
                    store.update_region(active.id, region, phase=Phase.ROLLED_BACK, expected_phase=Phase.ROLLING_BACK)
                store.record_decision(active.id, kind="rollback", actor=actor, region=region, comment=comment)
                store.append_audit("rollback", model=model, version=active.version, region=region, actor=actor,
                                   payload={"rollout": active.id, "to": reg.stable_version, "comment": comment})
                done[region] = reg.stable_version
                continue
        if previous is None:
            raise RolloutRefused(f"--region {region}: no previous stable version is known (no rollout and no "
                                 "'previous-champion' alias); sync the version you want with `ebmops sync VERSION`")
        traffic.set_traffic(region, stable=previous, canary=None, weight=0.0)
        RegistryAliases(settings).set_alias(f"prod-{region}", previous)
        if last is not None:
            store.record_decision(last.id, kind="rollback", actor=actor, region=region, comment=comment)
        store.append_audit("rollback", model=model, version=previous, region=region, actor=actor,
                           payload={"rollout": last.id if last else None, "to": previous, "comment": comment})
        done[region] = previous
    return {"model": model, "regions": done}
