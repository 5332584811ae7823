"""The ``audit-checkpoint`` flow (hourly): anchor the audit log's head in every region's store."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.services import audit as steps

# no retries: a log that does not verify stays broken, and an unreachable region gets the next hour's checkpoint
checkpoint_task = task(steps.write_checkpoint, name="verify-and-write-checkpoint", cache_policy=NO_CACHE)


@flow(name="audit-checkpoint", log_prints=True)
def audit_checkpoint(regions: list[str] | None = None) -> dict:
    """Verify the audit log (MACs, chain, the newest checkpoint), then write a MACed checkpoint of its head
    (seq, hash, time) to every region's object store; fails when the log does not verify."""
    settings = load_settings()
    prepare_environment(settings)
    store = open_store(settings)
    try:
        out = checkpoint_task(settings, store, regions)
    finally:
        store.close()
    get_run_logger().info("audit checkpoint: seq %s, head %s, regions %s", out["seq"], out["head_hash"],
                          out["regions"] or out["skipped"])
    return out
