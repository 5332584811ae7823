"""The ``hotfix`` flow: started by an ``ebmops.drift.breached`` event (see prefect.yaml's trigger).

Fetch the region's recent events from its node, validate them, recalibrate (or retrain), gate on
the region's recent traffic, and roll out to that region at once with the expedited hotfix plan.
One hotfix per model and region at a time (the state store refuses a second); every step is
recorded on the hotfix's timeline and in the audit log.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from drift.monitor import hotfix_mode
from ebmops.runtime import prepare_environment
from ebmops.settings import load_settings
from ebmops.state import open_store
from ebmops.state.store import HotfixConflict
from ebmops.steps import drift as steps
from flows.gate import gate as gate_flow
from flows.rollout import rollout as rollout_flow

fetch_task = task(steps.fetch_recent, name="fetch-recent-events", retries=2, retry_delay_seconds=2,
                  cache_policy=NO_CACHE)
validate_task = task(steps.validate_recent, name="validate-recent", cache_policy=NO_CACHE)
build_task = task(steps.build_hotfix, name="recalibrate-or-retrain", cache_policy=NO_CACHE)


@flow(name="hotfix", log_prints=True)
def hotfix(region: str, model: str, version: str, delta: float, auto_approve_as: str | None = None) -> dict:
    settings = load_settings()
    prepare_environment(settings)
    log = get_run_logger()
    store = open_store(settings)
    if model != settings.registry.model_name:
        raise steps.HotfixStopped(f"model: {model!r} is not the configured model {settings.registry.model_name!r}")
    try:
        hf = store.start_hotfix(model_name=model, region=region, version=str(version), delta=float(delta))
    except HotfixConflict as e:
        log.warning("%s", e)
        return {"status": "skipped", "reason": str(e)}

    def mark(event: str, **fields):
        store.update_hotfix(hf.id, event=event, **fields)
        log.info("hotfix %s: %s", region, event)

    store.append_audit("hotfix", model=model, version=str(version), region=region, actor="ebmops-hotfix",
                       payload={"hotfix": hf.id, "event": "started", "delta": delta})
    try:
        mark(f"breach received: v{version} Δ={float(delta):.3f}")
        path = fetch_task(settings, region, settings.drift.recent_events,
                          settings.home / "hotfix" / hf.id / "recent.parquet")
        ds = steps.recent_dataset(settings, region, path)
        validate_task(settings, store, ds, region)
        mode = hotfix_mode(float(delta), setting=settings.drift.hotfix_mode, retrain_delta=settings.drift.retrain_delta)
        mark(f"recent events fetched and validated ({len(ds.frame)}); mode {mode}", mode=mode)
        built = build_task(settings, str(version), ds, mode=mode, region=region, delta=float(delta))
        mark(f"hotfix model registered: v{built['version']} ({mode}, threshold {built['threshold']:.4g})",
             new_version=built["version"])
        store.append_audit("registration", model=model, version=built["version"], region=region,
                           actor="ebmops-hotfix", payload={"hotfix": hf.id, "mode": mode, "hotfix_of": version})
        verdict = gate_flow(version=built["version"], window_path=str(path), hotfix=True)
        mark(f"gated: {verdict['verdict']}")
        if verdict["verdict"] in ("fail", "inconclusive"):
            raise steps.HotfixStopped(f"hotfix v{built['version']} did not pass its gate ({verdict['verdict']}); "
                                      f"report {verdict['markdown']}")
        out = rollout_flow(version=built["version"], regions=[region], hotfix=True,
                           auto_approve_as=auto_approve_as or settings.drift.auto_approve_as,
                           created_by="ebmops-hotfix")
        mark(f"rollout {out['id'][:8]} ended {out['phase']}")
        if out["phase"] != "promoted":
            raise steps.HotfixStopped(f"hotfix rollout {out['id']} ended {out['phase']}: {out.get('message')}")
        mark(f"serving v{built['version']} in {region}")
        final = store.update_hotfix(hf.id, status="succeeded")
        store.append_audit("hotfix", model=model, version=built["version"], region=region, actor="ebmops-hotfix",
                           payload={"hotfix": hf.id, "event": "serving", "mode": mode})
        return {"status": "succeeded", "hotfix": hf.id, "version": built["version"], "mode": mode,
                "timeline": final.timeline, "rollout": out["id"]}
    except BaseException as e:
        store.update_hotfix(hf.id, status="failed", event=f"failed: {type(e).__name__}: {e}", message=str(e))
        store.append_audit("hotfix", model=model, version=str(version), region=region, actor="ebmops-hotfix",
                           payload={"hotfix": hf.id, "event": "failed", "error": f"{type(e).__name__}: {e}"})
        raise
