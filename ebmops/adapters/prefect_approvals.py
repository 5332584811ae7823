"""Approvals through Prefect: the rollout flow pauses with a form in the Prefect UI (approve or
reject, your name, a comment), and ``ebmops approve`` resumes the same paused run through the API.

Prefect OSS has no per-user identity, so the approver's name is checked against the on-call roster
here: an off-roster answer is recorded as refused and the run pauses again.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from canary.controller import Decision


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
                    key=pause_key(rollout_id, region))
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


def pause_key(rollout_id: str, region: str) -> str:
    """The pause key of one region's approval: a resumed process pauses again under the same key."""
    return f"approval-{rollout_id}-{region}"


def resume_paused_flow(rollout_id: str, region: str, *, approve: bool, actor: str, comment: str | None) -> bool:
    """Resume the flow run paused for this approval, when one waits on a reachable Prefect server."""
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
