"""The gate report: every check's value, threshold, verdict and reason, as JSON and as markdown.

The JSON is the record (strict JSON: non-finite numbers are written as "inf"/"-inf"/"nan" strings and
read back as floats); the markdown is what a reviewer reads when an inconclusive gate holds a model.
Skipped checks appear in both, marked skipped, never folded into the passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ebmops.core.jsonsafe import decode_json, encode_json
from gates.verdict import CheckResult, Verdict

SCHEMA_VERSION = 1


@dataclass
class GateReport:
    model_name: str
    model_version: str | None
    champion_version: str | None
    checks: list[CheckResult]
    verdict: Verdict
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    measurements: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    # ---- views ------------------------------------------------------------------------------------------
    def by_verdict(self, verdict: Verdict) -> list[CheckResult]:
        return [c for c in self.checks if c.verdict is verdict]

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.by_verdict(Verdict.FAIL)]

    @property
    def inconclusive(self) -> list[str]:
        return [c.name for c in self.by_verdict(Verdict.INCONCLUSIVE)]

    @property
    def skipped(self) -> list[str]:
        return [c.name for c in self.by_verdict(Verdict.SKIPPED)]

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; the report holds {[c.name for c in self.checks]}")

    # ---- JSON ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "model_name": self.model_name, "model_version": self.model_version,
                "champion_version": self.champion_version, "verdict": self.verdict.value,
                "action": self.verdict.action, "created_at": self.created_at,
                "counts": {v.value: len(self.by_verdict(v)) for v in Verdict},
                "checks": [c.to_dict() for c in self.checks],
                "measurements": encode_json(self.measurements), "settings": encode_json(self.settings)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GateReport":
        return cls(model_name=d["model_name"], model_version=d.get("model_version"),
                   champion_version=d.get("champion_version"),
                   checks=[CheckResult.from_dict(c) for c in d["checks"]], verdict=Verdict(d["verdict"]),
                   created_at=d["created_at"], measurements=decode_json(d.get("measurements") or {}),
                   settings=decode_json(d.get("settings") or {}))

    @classmethod
    def from_json(cls, text: str) -> "GateReport":
        return cls.from_dict(json.loads(text))

    # ---- markdown -----------------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        version = f" v{self.model_version}" if self.model_version is not None else ""
        lines = [f"# Promotion gate: {self.model_name}{version}: {self.verdict.value.upper()} ({self.verdict.action})", ""]
        if self.champion_version is None:
            lines.append("Champion: none yet. Comparative checks are skipped (shown as skipped, not passed); "
                         "absolute checks apply.")
        else:
            lines.append(f"Champion: v{self.champion_version}.")
        counts = ", ".join(f"{len(self.by_verdict(v))} {v.value}" for v in Verdict)
        lines += [f"Checks: {counts}. Created {self.created_at}.", "",
                  "| Check | Verdict | Value | Threshold | Reason |", "|---|---|---:|---:|---|"]
        for c in self.checks:
            lines.append(f"| {c.name} | {c.verdict.value.upper()} | {_fmt(c.value)} | {_fmt(c.threshold)} | "
                         f"{c.reason.replace('|', '/')} |")
        for title, names in (("Failed", self.failed), ("Held for a human (inconclusive)", self.inconclusive),
                             ("Skipped", self.skipped)):
            if names:
                lines += ["", f"{title}: {', '.join(names)}."]
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path, stem: str = "gate") -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.md`` under ``directory``; returns both paths."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        j, m = d / f"{stem}.json", d / f"{stem}.md"
        j.write_text(self.to_json())
        m.write_text(self.to_markdown())
        return j, m


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"
