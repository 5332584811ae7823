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
import os
from datetime import datetime, timezone
from typing import Callable

from ebmops.core.aliases import PREVIOUS_CHAMPION, region_alias
from canary.controller import RolloutController
from canary.plan import RolloutPlan
from ebmops.adapters.rollout_ports import RegionTraffic, RegistryAliases
from ebmops.core.errors import NotOnRoster, RolloutRefused
from ebmops.core.phases import Phase, is_terminal
from ebmops.core.settings import Settings

log = logging.getLogger(__name__)


def approvals_for(settings: Settings, store, rollout_id: str, *, auto_approve_as: str | None = None):
    """The approval port a rollout waits on: ``auto_approve_as`` (a roster member) approves every wave;
    else ``rollout.approvals`` picks the Prefect pause form or the state store."""
    from ebmops.adapters.approvals import AutoApprovals, StoreApprovals

    if auto_approve_as:
        check_auto_approver(settings, auto_approve_as, (store.get_rollout(rollout_id).plan or {}).get("oncall_roster"))
        return AutoApprovals(auto_approve_as)
    if approval_mode(settings) == "prefect":
        from ebmops.adapters.prefect_approvals import PrefectApprovals

        return PrefectApprovals(store)
    return StoreApprovals(store)


def approval_mode(settings: Settings) -> str:
    """``rollout.approvals`` resolved: ``auto`` is ``prefect`` on a Prefect server, else ``state-store``."""
    import os

    mode = settings.rollout.approvals
    if mode == "auto":
        return "prefect" if os.environ.get("PREFECT_API_URL") else "state-store"
    return mode


def check_auto_approver(settings: Settings, name: str, plan_roster: list[str] | None = None) -> None:
    """Refuse an ``auto_approve_as`` off the roster; the flow calls it before creating anything."""
    if not check_roster(settings, plan_roster, name):
        raise NotOnRoster(f"auto_approve_as: {name!r} is not on the on-call roster "
                          f"({', '.join(plan_roster or settings.rollout.oncall_roster)}); nothing was created")


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


def scope_for(settings: Settings, store, *, model: str | None = None, version: str | None = None,
              rollout_id: str | None = None) -> Settings:
    """The model scope a rollout runs in: a resumed rollout's own model, else the one named (or the default)."""
    from ebmops.core.errors import ConfigError
    from ebmops.services.models import resolve

    ro = store.get_rollout(rollout_id) if rollout_id is not None else None
    if ro is not None:
        if model is not None and model != ro.model_name:
            raise ConfigError(f"--model {model!r}: rollout {rollout_id} is a rollout of {ro.model_name!r}")
        return resolve(settings, model=ro.model_name, version=ro.version)
    if rollout_id is not None:  # unknown: the controller names it
        return resolve(settings, model=model)
    return resolve(settings, model=model, version=version or "@candidate")


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
               actor: str = "ebmops-rollout", lease=None) -> RolloutController:
    from ebmops.services.audit import checkpoint_after_promotion

    kw = {"progress": progress} if progress else {}
    return RolloutController(store=store, traffic=RegionTraffic(settings), aliases=RegistryAliases(settings),
                             approvals=approvals, actor=actor, all_regions=list(settings.data.regions), lease=lease,
                             after_promotion=lambda: checkpoint_after_promotion(settings, store), **kw)


def driving(settings: Settings, store, rollout_id: str, *, progress: Callable[[str], None] | None = None):
    """The rollout's lease, held while the caller drives it (one driver per rollout): waits up to
    ``rollout.lease_wait_s`` for it, then ``RolloutLeaseHeld`` names the process that drives it."""
    from ebmops.core.state.lease import hold

    return hold(store, rollout_id, ttl_s=settings.rollout.lease_ttl_s, wait_s=settings.rollout.lease_wait_s,
                progress=progress)


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
    resumed = False
    if os.environ.get("PREFECT_API_URL"):  # a run paused on that server waits for this answer: resume it
        from ebmops.adapters.prefect_approvals import resume_paused_flow

        resumed = resume_paused_flow(rollout_id, reg.region, approve=approve, actor=actor, comment=comment)
    if not resumed:  # no flow paused on a Prefect server: the controller polls the state store
        store.record_decision(rollout_id, kind=kind, actor=actor, region=reg.region, wave=reg.wave, comment=comment,
                              analysis=(reg.last_analysis or {}).get("judgement"))
    return {"rollout": rollout_id, "region": reg.region, "decision": kind, "actor": actor,
            "via": "prefect" if resumed else "state-store"}


def status(store, rollout_id: str | None = None, *, model: str | None = None) -> dict:
    ro = store.get_rollout(rollout_id) if rollout_id else (
        store.active_rollout(model) if model else None) or next(iter(store.list_rollouts(model_name=model, limit=1)),
                                                                  None)
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
                     "power": (r.last_analysis or {}).get("power") or j.get("power"),
                     "stable": r.stable_version, "canary": r.canary_version, "waits_for": waits,
                     "deadline": r.approval_deadline.isoformat() if r.approval_deadline and waits else None,
                     "message": r.message})
    decisions = [{"when": d.created_at.isoformat(), "region": d.region, "kind": d.kind, "actor": d.actor,
                  "accepted": d.accepted, "comment": d.comment, "refusal": d.refusal_reason}
                 for d in store.list_decisions(ro.id)]
    lease = store.get_lease(ro.id)
    driver = ({"host": lease.host, "pid": lease.pid, "token": lease.token,
               "lease_expires_at": lease.expires_at.isoformat()}
              if lease is not None and ro.active and lease.held_at(datetime.now(timezone.utc)) else None)
    return {"id": ro.id, "model": ro.model_name, "version": ro.version, "kind": ro.kind, "phase": ro.phase,
            "active": ro.active, "created_by": ro.created_by, "created_at": ro.created_at.isoformat(),
            "message": ro.message, "driver": driver, "regions": rows, "decisions": decisions}


def rollback(settings: Settings, store, *, regions: list[str] | None, actor: str, comment: str | None = None) -> dict:
    """Return regions to their previous stable version now (``ebmops rollback``).

    With an active rollout, its unfinished regions roll back through the state machine (the
    controller finishes them); promoted regions and regions outside a rollout go back to the
    stable version they had before (the rollout's ``stable_before``, else the alias
    ``previous-champion``) by a desired-state write, recorded as a decision and audited."""
    from ebmops.adapters.approvals import StoreApprovals
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
    prev_champ = ModelRegistry.from_settings(settings).get_by_alias(PREVIOUS_CHAMPION)
    done = {}
    for region in targets:
        last = promoted_in(region)
        previous = (last.stable_before.get(region) if last else None) or (prev_champ.version if prev_champ else None)
        if active is not None:
            reg = active.region(region) if region in {r.region for r in active.regions} else None
            if reg is not None and not is_terminal(reg.phase) and reg.phase != Phase.ROLLING_BACK.value:
                # through the state machine: the decider says aborted or rolling_back, the controller acts
                ctl = controller(settings, store, StoreApprovals(store), actor=actor)
                done[region] = ctl.roll_back(active.id, region, actor=actor, comment=comment)
                store.record_decision(active.id, kind="rollback", actor=actor, region=region, comment=comment)
                continue
        if previous is None:
            raise RolloutRefused(f"--region {region}: no previous stable version is known (no rollout and no "
                                 "'previous-champion' alias); sync the version you want with `ebmops sync VERSION`")
        traffic.set_traffic(region, stable=previous, canary=None, weight=0.0)
        RegistryAliases(settings).set_alias(region_alias(region), previous)
        if last is not None:
            store.record_decision(last.id, kind="rollback", actor=actor, region=region, comment=comment)
        store.append_audit("rollback", model=model, version=previous, region=region, actor=actor,
                           payload={"rollout": last.id if last else None, "to": previous, "comment": comment})
        done[region] = previous
    return {"model": model, "regions": done}
