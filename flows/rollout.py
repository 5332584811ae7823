"""The ``rollout`` flow: a canary rollout region by region, driven by canary/controller.py.

The controller persists every transition in the state store; this flow only supplies the ports.
Approvals: against a Prefect server (``PREFECT_API_URL`` set) the flow pauses with a form in the
Prefect UI (approve / reject, your name, a comment), which ``ebmops approve`` can also answer; with
the temporary server of a local run it waits for ``ebmops approve`` through the state store.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from canary.controller import Decision
from ebmops.runtime import prepare_environment
from ebmops.settings import load_settings
from ebmops.state import open_store
from ebmops.steps import rollout as steps


class Approval(RunInput):
    """The form on-call engineers fill in the Prefect UI."""

    approved: bool
    approver: str
    comment: str = ""


class PrefectApprovals:
    """Pause the flow run with an approval form; refuse (and record) names off the roster."""

    def __init__(self, store):
        self.store = store

    def wait(self, rollout_id: str, region: str, wave: int, *, summary: str, deadline: datetime,
             roster: list[str]) -> Decision | None:
        from prefect.exceptions import FlowPauseTimeout

        while True:
            left = int((deadline - datetime.now(timezone.utc)).total_seconds())
            if left <= 0:
                return None
            try:
                answer = pause_flow_run(wait_for_input=Approval.with_initial_data(
                    description=summary, approved=False, approver=""), timeout=left, poll_interval=2,
                    key=steps.pause_key(rollout_id, region))
            except FlowPauseTimeout:
                return None
            if answer.approver in roster:
                return Decision(approve=answer.approved, actor=answer.approver, comment=answer.comment or None)
            ro = self.store.get_rollout(rollout_id)
            self.store.record_decision(rollout_id, kind="approve" if answer.approved else "reject",
                                       actor=answer.approver or "(blank)", region=region, wave=wave,
                                       comment=answer.comment or None, accepted=False,
                                       refusal_reason=f"{answer.approver!r} is not on the on-call roster")
            self.store.append_audit("approval" if answer.approved else "rejection", model=ro.model_name,
                                    version=ro.version, region=region, actor=answer.approver or "(blank)",
                                    payload={"rollout": rollout_id, "refused": True,
                                             "reason": "not on the on-call roster"})
            get_run_logger().warning("%r is not on the on-call roster (%s): refused, still waiting",
                                     answer.approver, ", ".join(roster))


create_task = task(steps.create, name="create-rollout", cache_policy=NO_CACHE)


@flow(name="rollout", log_prints=True)
def rollout(version: str | None = None, rollout_id: str | None = None, regions: list[str] | None = None,
            bake_s: float | None = None, hotfix: bool = False, auto_approve_as: str | None = None,
            created_by: str = "ebmops") -> dict:
    """Roll ``version`` (default ``@candidate``) out wave by wave, or resume ``rollout_id``.

    ``auto_approve_as`` names a roster member who approves every wave (demos, pipelines that
    already hold an approval); without it the waves that need approval wait for a human."""
    settings = load_settings()
    prepare_environment(settings)
    log = get_run_logger()
    store = open_store(settings)
    if rollout_id is None:
        plan = steps.plan_for(settings, hotfix=hotfix, regions=regions, bake_s=bake_s)
        rollout_id = create_task(settings, store, version or "@candidate", plan=plan, created_by=created_by)
    if auto_approve_as:
        if not steps.check_roster(settings, (store.get_rollout(rollout_id).plan or {}).get("oncall_roster"),
                                  auto_approve_as):
            raise steps.NotOnRoster(f"auto_approve_as: {auto_approve_as!r} is not on the on-call roster")
        approvals = steps.AutoApprovals(auto_approve_as)
    elif os.environ.get("PREFECT_API_URL"):
        approvals = PrefectApprovals(store)
    else:
        approvals = steps.StoreApprovals(store)
    ctl = steps.controller(settings, store, approvals, progress=lambda m: log.info("%s", m))
    final = ctl.run(rollout_id)
    out = steps.status(store, rollout_id)
    create_table_artifact([{k: v for k, v in r.items() if k != "failed"} for r in out["regions"]],
                          key="rollout-status", description=f"rollout {rollout_id} of v{final.version}: {final.phase}")
    create_markdown_artifact(f"Rollout `{rollout_id}` of v{final.version} ended **{final.phase}**: {final.message}",
                             key="rollout-result")
    return out
