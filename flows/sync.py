"""The ``sync`` flow: publish a registered version to the regional stores and let the nodes load it."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from ebmops.adapters import bundles
from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import load_settings
from ebmops.services import models
from ebmops.services import sync as steps

# Publishing is idempotent (content-addressed blobs, desired state rewritten only on change), so
# a retry of a half-done publish finishes the job without uploading twice.
prepare_task = task(bundles.prepare, name="fetch-version", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
publish_task = task(steps.publish, name="publish-regions", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
notify_task = task(steps.notify_and_wait, name="reload-nodes", cache_policy=NO_CACHE)
allowed_task = task(steps.check_allowed, name="check-approval", cache_policy=NO_CACHE)


@flow(name="sync", log_prints=True)
def sync(version: str | None = None, regions: list[str] | None = None, wait_s: float = 0.0,
         reason: str = "scheduled", reconcile: bool = False, override: str | dict | None = None,
         model: str | None = None) -> dict:
    """Publish ``version`` (default ``@candidate``, else ``@champion``) as the stable version of
    ``regions`` (default all), then ask each node to reload and, with ``wait_s`` > 0, wait until
    every reachable node serves it. ``reason`` (scheduled, hotfix, manual) is kept with the run.
    A version that is not each region's approved one needs ``override``: a roster member's signed
    token (`ebmops operator authorize sync VERSION`). ``model`` names the registered model (default: the
    only one, or the configured one); a reconcile without one repairs every registered model."""
    base = load_settings()
    prepare_environment(base)
    log = get_run_logger()
    regions = steps.check_regions(base, regions)
    if reconcile:
        return _reconcile_models(models.scopes(base, model), regions, wait_s, reason)
    settings = models.resolve(base, model=model, version=version)
    bundle = prepare_task(settings, version)
    allowed = allowed_task(settings, bundle, regions, override=override)
    by = f"ebmops-sync:{reason}" + (f":override:{allowed['operator']}" if allowed.get("operator") else "")
    out = publish_task(settings, bundle, regions, updated_by=by, allowed=allowed)
    for region, r in out["regions"].items():
        log.info("%s: v%s published in %.3f s, %d bytes uploaded, %d blobs skipped, generation %s",
                 region, bundle.version, r["seconds"], r["bytes_uploaded"], r["blobs_skipped"], r["generation"])
    out["nodes"] = notify_task(settings, regions, bundle.version, wait_s=wait_s)
    out["reason"] = reason
    create_table_artifact([{"region": r, **{k: v for k, v in p.items()},
                            "node_serves": out["nodes"][r]["serves_version"],
                            "node_reachable": out["nodes"][r]["reachable"]} for r, p in out["regions"].items()],
                          key="sync-regions", description=f"sync of v{bundle.version} ({reason})")
    return out


def _reconcile_models(scopes, regions, wait_s, reason) -> dict:
    """The reconcile of each model; one model's result as before, several keyed by model."""
    outs = {s.registry.model_name: _reconcile(s, regions, wait_s, reason) for s in scopes}
    if len(outs) == 1:
        return next(iter(outs.values()))
    return {"reconcile": True, "reason": reason, "models": outs}


plan_task = task(steps.reconcile_plan, name="compare-with-registry", cache_policy=NO_CACHE)


def _reconcile(settings, regions, wait_s, reason) -> dict:
    """The daily reconcile: every region whose desired state differs from the registry's aliases is
    republished (content-addressed: only what is missing uploads) and its node reloaded."""
    from ebmops.core.state import open_store

    log = get_run_logger()
    store = open_store(settings)
    plan = plan_task(settings, regions, store)
    for region, r in plan["repairs"].items():
        log.warning("%s: %s -> republishing v%s", region, r["problem"], r["version"])
    for region, why in plan["skipped"].items():
        log.info("%s: skipped (%s)", region, why)
    repaired = {}
    for version, rs in plan["by_version"].items():
        bundle = prepare_task(settings, version)
        out = publish_task(settings, bundle, rs, updated_by=f"ebmops-sync:{reason}:reconcile", repair=True)
        out["nodes"] = notify_task(settings, rs, version, wait_s=wait_s)
        repaired.update({r: version for r in rs})
    if not plan["by_version"]:
        log.info("every region matches the registry: %s", plan["ok"])
    return {"reconcile": True, "reason": reason, "model": settings.registry.model_name, "repaired": repaired, "ok": plan["ok"], "skipped": plan["skipped"],
            "problems": {r: p["problem"] for r, p in plan["repairs"].items()}}
