"""The ``rollout`` flow: a canary rollout region by region, driven by canary/controller.py.

The controller persists every transition in the state store; this flow only supplies the ports and
holds the rollout's lease while it drives (a second process driving the same rollout waits, then
exits naming this one).
Approvals: against a Prefect server (``PREFECT_API_URL`` set) the flow pauses with a form in the
Prefect UI (approve / reject, your name, a comment), which ``ebmops approve`` can also answer; with
the temporary server of a local run it waits for ``ebmops approve`` through the state store.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.services import rollout as steps


create_task = task(steps.create, name="create-rollout", cache_policy=NO_CACHE)


@flow(name="rollout", log_prints=True)
def rollout(version: str | None = None, rollout_id: str | None = None, regions: list[str] | None = None,
            bake_s: float | None = None, hotfix: bool = False, auto_approve_as: str | None = None,
            created_by: str = "ebmops", model: str | None = None) -> dict:
    """Roll ``version`` (default ``@candidate``) out wave by wave, or resume ``rollout_id``.

    ``auto_approve_as`` names a roster member who approves every wave (demos, pipelines that
    already hold an approval); without it the waves that need approval wait for a human. ``model`` names
    the registered model (default: the only one, or the configured one); a resumed rollout is its own model's.
    One active rollout per model: rollouts of two models may run at once, on the same nodes."""
    base = load_settings()
    prepare_environment(base)
    log = get_run_logger()
    store = open_store(base)
    settings = steps.scope_for(base, store, model=model, version=version, rollout_id=rollout_id)
    if rollout_id is None:
        if auto_approve_as:  # refused before anything is written: no rollout is left behind
            steps.check_auto_approver(settings, auto_approve_as)
        plan = steps.plan_for(settings, hotfix=hotfix, regions=regions, bake_s=bake_s)
        rollout_id = create_task(settings, store, version or "@candidate", plan=plan, created_by=created_by)
    approvals = steps.approvals_for(settings, store, rollout_id, auto_approve_as=auto_approve_as)
    with steps.driving(settings, store, rollout_id, progress=lambda m: log.info("%s", m)) as lease:
        ctl = steps.controller(settings, store, approvals, progress=lambda m: log.info("%s", m), lease=lease)
        final = ctl.run(rollout_id)
    out = steps.status(store, rollout_id)
    create_table_artifact([{k: v for k, v in r.items() if k != "failed"} for r in out["regions"]],
                          key="rollout-status", description=f"rollout {rollout_id} of v{final.version}: {final.phase}")
    create_markdown_artifact(f"Rollout `{rollout_id}` of v{final.version} ended **{final.phase}**: {final.message}",
                             key="rollout-result")
    return out
