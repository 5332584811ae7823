"""The ``hotfix`` flow: started by an ``ebmops.drift.breached`` event (see prefect.yaml's trigger).

Fetch the region's recent events from its node, validate them, recalibrate (or retrain), gate on
the region's recent traffic, and roll out to that region at once with the expedited hotfix plan.
One hotfix per model and region at a time (the state store refuses a second); every step is
recorded on the hotfix's timeline and in the audit log (ebmops/services/hotfix.py).
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ebmops.adapters import nodes
from ebmops.core.errors import EbmopsError, HotfixStopped
from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.services import drift as steps
from ebmops.services import models
from ebmops.services.hotfix import HotfixRun
from flows.gate import gate as gate_flow
from flows.rollout import rollout as rollout_flow

fetch_task = task(nodes.fetch_recent, name="fetch-recent-events", retries=2, retry_delay_seconds=2,
                  cache_policy=NO_CACHE)
validate_task = task(steps.validate_recent, name="validate-recent", cache_policy=NO_CACHE)
build_task = task(steps.build_hotfix, name="recalibrate-or-retrain", cache_policy=NO_CACHE)


@flow(name="hotfix", log_prints=True)
def hotfix(region: str, model: str, version: str, delta: float, auto_approve_as: str | None = None) -> dict:
    """Hotfix ``model`` in ``region`` (started by a breach event naming them): everything below acts on that
    model only, on the breached version's own dataset (its schema and reference validate the recent events)."""
    base = load_settings()
    prepare_environment(base)
    try:
        settings = models.resolve(base, model=model, version=version)
    except EbmopsError as e:  # an event naming a model or version this registry does not hold
        raise HotfixStopped(f"model {model!r} v{version}: {e}") from e
    log = get_run_logger()
    run = HotfixRun.start(settings, open_store(settings), region=region, model=model, version=version, delta=delta,
                          progress=log.info)
    if run.skipped:
        log.warning("%s", run.skipped)
        return {"status": "skipped", "reason": run.skipped}
    with run.recording():
        path = fetch_task(settings, region, settings.drift.recent_events,
                          settings.home / "hotfix" / run.id / "recent.parquet")
        ds = steps.recent_dataset(settings, region, path)
        validate_task(settings, run.store, ds, region)
        run.validated(len(ds.frame))
        built = build_task(settings, run.version, ds, mode=run.mode, region=region, delta=run.delta)
        run.registered(built)
        run.gated(built, gate_flow(version=built["version"], window_path=str(path), hotfix=True, model=model))
        out = rollout_flow(version=built["version"], regions=[region], hotfix=True, model=model,
                           auto_approve_as=auto_approve_as or settings.drift.auto_approve_as,
                           created_by="ebmops-hotfix")
        return run.rolled_out(built, out)
