"""The bookkeeping of one hotfix (the ``hotfix`` flow's steps that are not a task of their own).

A hotfix has a record in the state store with a timeline, and audit entries when it starts, when
its model is registered and when it serves or fails. ``HotfixRun`` keeps those writes out of the
flow: the flow calls the steps in order inside ``with run.recording():``, which marks the hotfix
failed (with the reason, audited) whatever stops it, a kill by the orchestrator included.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from drift.monitor import hotfix_mode
from ebmops.core.errors import HotfixConflict, HotfixStopped
from ebmops.core.settings import Settings

ACTOR = "ebmops-hotfix"


@dataclass
class HotfixRun:
    store: object
    settings: Settings
    region: str
    model: str
    version: str
    delta: float
    id: str | None = None
    skipped: str | None = None   # why no hotfix started (one already runs for this model and region)
    progress: Callable[[str], None] = field(default=lambda _m: None, repr=False)

    @classmethod
    def start(cls, settings: Settings, store, *, region: str, model: str, version: str, delta: float,
              progress: Callable[[str], None] | None = None) -> "HotfixRun":
        if model != settings.registry.model_name:
            raise HotfixStopped(f"model: {model!r} is not the configured model {settings.registry.model_name!r}")
        run = cls(store, settings, region, model, str(version), float(delta))
        if progress is not None:
            run.progress = progress
        try:
            run.id = store.start_hotfix(model_name=model, region=region, version=run.version, delta=run.delta).id
        except HotfixConflict as e:
            run.skipped = str(e)
            return run
        run._audit(run.version, {"event": "started", "delta": run.delta})
        run.mark(f"breach received: v{run.version} Δ={run.delta:.3f}")
        return run

    @property
    def mode(self) -> str:
        cfg = self.settings.drift
        return hotfix_mode(self.delta, setting=cfg.hotfix_mode, retrain_delta=cfg.retrain_delta)

    def mark(self, event: str, **fields) -> None:
        self.store.update_hotfix(self.id, event=event, **fields)
        self.progress(f"hotfix {self.region}: {event}")

    def _audit(self, version: str, payload: dict, kind: str = "hotfix") -> None:
        self.store.append_audit(kind, model=self.model, version=version, region=self.region, actor=ACTOR,
                                payload={"hotfix": self.id, **payload})

    @contextmanager
    def recording(self):
        """Run the hotfix's steps; whatever stops them marks the hotfix failed, audited, and is re-raised."""
        try:
            yield self
        except BaseException as e:  # a cancelled or killed run is a failed hotfix too, then it propagates
            self.store.update_hotfix(self.id, status="failed", event=f"failed: {type(e).__name__}: {e}", message=str(e))
            self._audit(self.version, {"event": "failed", "error": f"{type(e).__name__}: {e}"})
            raise

    def validated(self, n_events: int) -> None:
        self.mark(f"recent events fetched and validated ({n_events}); mode {self.mode}", mode=self.mode)

    def registered(self, built: dict) -> None:
        self.mark(f"hotfix model registered: v{built['version']} ({self.mode}, threshold {built['threshold']:.4g})",
                  new_version=built["version"])
        self._audit(built["version"], {"mode": self.mode, "hotfix_of": self.version}, kind="registration")

    def gated(self, built: dict, verdict: dict) -> None:
        """Record the gate's verdict; a fail or an inconclusive one stops the hotfix."""
        self.mark(f"gated: {verdict['verdict']}")
        if verdict["verdict"] in ("fail", "inconclusive"):
            raise HotfixStopped(f"hotfix v{built['version']} did not pass its gate ({verdict['verdict']}); "
                                f"report {verdict['markdown']}")

    def rolled_out(self, built: dict, out: dict) -> dict:
        """Record the rollout's end; anything but a promotion stops the hotfix. Returns the result."""
        self.mark(f"rollout {out['id'][:8]} ended {out['phase']}")
        if out["phase"] != "promoted":
            raise HotfixStopped(f"hotfix rollout {out['id']} ended {out['phase']}: {out.get('message')}")
        self.mark(f"serving v{built['version']} in {self.region}")
        final = self.store.update_hotfix(self.id, status="succeeded")
        self._audit(built["version"], {"event": "serving", "mode": self.mode})
        return {"status": "succeeded", "hotfix": self.id, "version": built["version"], "mode": self.mode,
                "timeline": final.timeline, "rollout": out["id"]}
