"""The rollout plan: which regions go in which wave, the traffic steps, bakes, analysis and approvals.

A plan is built from settings (``rollout``, or ``rollout.hotfix`` for a hotfix) with per-run
overrides, validated once, and stored as JSON with the rollout, so a rollout keeps the plan it
started with even when settings change later::

    plan = RolloutPlan.from_settings(settings, steps=[0.1, 1.0], approval=[False, True, True])

Every validation error names the field (``waves[1][0]``, ``steps[2]``, ``approval``) and is raised
as ``PlanError`` (a ``ConfigError``: exit code 2 on the command line).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ebmops.core.errors import ConfigError
from ebmops.core.settings import CanaryAnalysisSettings, Settings, check_steps


class PlanError(ConfigError):
    """A rollout plan is invalid; the message names the field."""


class RolloutPlan(BaseModel):
    """A validated rollout plan. ``bake_s`` and ``approval`` hold one entry per step and per wave."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["standard", "hotfix"] = Field(default="standard", description="Standard or hotfix plan.")
    waves: list[list[str]] = Field(min_length=1, description="Regions per wave, rolled out wave after wave.")
    steps: list[float] = Field(description="Canary traffic weights per region, strictly increasing within (0, 1].")
    bake_s: list[float] = Field(description="Seconds each step bakes before its analysis, one per step.")
    analysis: CanaryAnalysisSettings = Field(description="The judge's configuration.")
    approval: list[bool] = Field(description="Whether a wave waits for an approval before promotion, one per wave.")
    approval_timeout_s: float = Field(gt=0, description="Seconds a wave waits for an approval before rolling back.")
    oncall_roster: list[str] = Field(min_length=1, description="Who may approve or reject.")

    # Broadcast single values before the per-entry checks.
    @model_validator(mode="before")
    @classmethod
    def _broadcast(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            steps, waves = data.get("steps"), data.get("waves")
            if isinstance(data.get("bake_s"), (int, float)) and isinstance(steps, list):
                data["bake_s"] = [data["bake_s"]] * len(steps)
            if isinstance(data.get("approval"), bool) and isinstance(waves, list):
                data["approval"] = [data["approval"]] * len(waves)
        return data

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        return check_steps(v)

    @field_validator("bake_s")
    @classmethod
    def _bakes(cls, v: list[float]) -> list[float]:
        for i, b in enumerate(v):
            if b < 0:
                raise ValueError(f"bake_s[{i}] = {b} is negative")
        return v

    @field_validator("waves")
    @classmethod
    def _waves(cls, v: list[list[str]], info: ValidationInfo) -> list[list[str]]:
        known = (info.context or {}).get("regions")
        seen: dict[str, int] = {}
        for w, wave in enumerate(v):
            if not wave:
                raise ValueError(f"waves[{w}] is empty; every wave needs at least one region")
            for i, region in enumerate(wave):
                if known is not None and region not in known:
                    raise ValueError(f"waves[{w}][{i}] = {region!r} is not in data.regions ({', '.join(known)})")
                if region in seen:
                    raise ValueError(f"waves[{w}][{i}] = {region!r} is already in waves[{seen[region]}]; "
                                     "a region is rolled out once")
                seen[region] = w
        return v

    @model_validator(mode="after")
    def _lengths(self) -> "RolloutPlan":
        if len(self.bake_s) != len(self.steps):
            raise ValueError(f"bake_s has {len(self.bake_s)} entries for {len(self.steps)} steps; give one per step "
                             "or a single number")
        if len(self.approval) != len(self.waves):
            raise ValueError(f"approval has {len(self.approval)} entries for {len(self.waves)} waves; give one per "
                             "wave or a single true/false")
        return self

    # ---- reading -----------------------------------------------------------------------------
    @property
    def regions(self) -> list[str]:
        """Every region of the plan, in rollout order."""
        return [r for wave in self.waves for r in wave]

    def wave_of(self, region: str) -> int:
        for i, wave in enumerate(self.waves):
            if region in wave:
                return i
        raise PlanError(f"region {region!r} is not in this plan; its regions are {', '.join(self.regions)}")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, regions: list[str] | None = None) -> "RolloutPlan":
        return _validate(data, regions)

    # ---- building ----------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings, *, hotfix: bool = False, **overrides: Any) -> "RolloutPlan":
        """The plan from ``settings.rollout`` (``rollout.hotfix`` when ``hotfix``) with ``overrides``
        (any plan field; ``analysis`` may be a partial dict, merged per metric)."""
        r = settings.rollout
        regions = list(settings.data.regions)
        base: dict[str, Any] = {
            "kind": "hotfix" if hotfix else "standard",
            "waves": [list(w) for w in r.waves] if r.waves is not None else [[x] for x in regions],
            "steps": list(r.hotfix.steps if hotfix else r.steps),
            "bake_s": r.hotfix.bake_s if hotfix else r.bake_s,
            "approval": r.hotfix.approval_required if hotfix else r.approval_required,
            "approval_timeout_s": r.hotfix.approval_timeout_s if hotfix else r.approval_timeout_s,
            "oncall_roster": list(r.oncall_roster),
            "analysis": r.analysis.model_dump(),
        }
        unknown = set(overrides) - set(cls.model_fields) - {"kind"}
        if unknown:
            raise PlanError(f"unknown rollout plan field(s) {sorted(unknown)}; fields: {', '.join(cls.model_fields)}")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "analysis" in overrides:
            overrides["analysis"] = _merge_analysis(base["analysis"], overrides["analysis"])
        # A new number of steps without new bakes keeps the configured bake for every step.
        if "steps" in overrides and "bake_s" not in overrides:
            overrides["bake_s"] = r.hotfix.bake_s if hotfix else r.bake_s
        if "waves" in overrides and "approval" not in overrides:
            overrides["approval"] = r.hotfix.approval_required if hotfix else r.approval_required
        base.update(overrides)
        return _validate(base, regions)


def _merge_analysis(base: dict[str, Any], override: Any) -> dict[str, Any]:
    if isinstance(override, CanaryAnalysisSettings):
        return override.model_dump()
    if not isinstance(override, dict):
        raise PlanError(f"analysis must be a mapping of judge settings, got {type(override).__name__}")
    merged = {**base, **{k: v for k, v in override.items() if k != "metrics"}}
    metrics = {name: dict(cfg) for name, cfg in base["metrics"].items()}
    for name, cfg in (override.get("metrics") or {}).items():
        metrics[name] = {**metrics.get(name, {}), **dict(cfg)}
    merged["metrics"] = metrics
    return merged


def _validate(data: dict[str, Any], regions: list[str] | None) -> RolloutPlan:
    try:
        return RolloutPlan.model_validate(data, context={"regions": regions} if regions is not None else None)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "plan"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}")
        raise PlanError("invalid rollout plan: " + "; ".join(problems)) from None
