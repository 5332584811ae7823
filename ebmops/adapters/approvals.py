"""Approval ports of the rollout controller that need no orchestrator.

* ``StoreApprovals``: waits for a decision written to the state store by ``ebmops approve`` (any
  process, any machine that reaches the state store).
* ``AutoApprovals``: a roster member approves every wave without waiting (demos, pipelines that
  already hold an approval).

The Prefect pause form is ebmops/adapters/prefect_approvals.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from canary.controller import Decision
from ebmops.core.phases import Phase, TransitionRefused


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
