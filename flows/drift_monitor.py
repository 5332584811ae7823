"""The ``drift-monitor`` flow (hourly): Δ per region and version, stored, logged, and breaches emitted."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.services import drift as steps
from ebmops.services import models
from ebmops.services.sync import check_regions, synced_regions

monitor_task = task(steps.monitor_region, name="observe-region", cache_policy=NO_CACHE)
metrics_task = task(steps.log_metrics, name="log-mlflow-metrics", retries=2, retry_delay_seconds=2,
                    cache_policy=NO_CACHE)
report_task = task(steps.breach_report, name="breach-report", cache_policy=NO_CACHE)
decide_task = task(steps.hotfix_candidates, name="decide-hotfixes", cache_policy=NO_CACHE)


@flow(name="drift-monitor", log_prints=True)
def drift_monitor(regions: list[str] | None = None, model: str | None = None) -> dict:
    """Compare each region's live energies with a week earlier (or the calibration), per model and served
    version; on a breach keep an Evidently report and emit ``ebmops.drift.breached`` naming the model (which
    the ``hotfix`` deployment's trigger turns into a hotfix run of that model), unless a hotfix of that model
    runs or cools down in the region. Watches every registered model in the regions it is synced to, or the
    one ``model`` names."""
    base = load_settings()
    prepare_environment(base)
    log = get_run_logger()
    store = open_store(base)
    observations, breaches = [], []
    watched = models.scopes(base, model)
    for settings in watched:
        cache: dict = {}
        seen = []
        wanted = check_regions(settings, regions)
        # several models: each where it is synced (a model in no region's store has nothing to watch)
        for region in (synced_regions(settings, wanted) if len(watched) > 1 else wanted):
            seen += monitor_task(settings, store, region, calibration_cache=cache)
        metrics_task(settings, seen)
        breaches += [{**b, "settings": settings} for b in decide_task(settings, store, seen)]
        observations += seen
    for b in breaches:
        b["report"] = report_task(b.pop("settings"), b)
        steps.record_breach(store, b)
        if b["start_hotfix"]:
            emit_event(**steps.breach_event(b))
            log.warning("drift breach of %s in %s: v%s Δ=%.3f -> %s emitted", b["model"], b["region"], b["version"],
                        b["delta"], steps.BREACH_EVENT)
        else:
            log.info("drift breach of %s in %s: v%s Δ=%.3f, no hotfix: %s", b["model"], b["region"], b["version"],
                     b["delta"], b["decision"])
    for o in observations:
        log.info("%s %s v%s (%s): Δ=%s %s (reference %s, %d events)", o["model"], o["region"], o["version"], o["role"],
                 "-" if o["delta"] is None else f"{o['delta']:.4f}", o["level"], o["reference_kind"], o["n_events"])
    if observations:
        create_table_artifact([{k: o.get(k) for k in ("model", "region", "version", "role", "delta", "level",
                                                       "reference_kind", "n_events")} for o in observations],
                              key="drift", description="live energy shift per region")
    return {"observations": observations, "breaches": breaches}
