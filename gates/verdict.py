"""Verdicts of the promotion gate and how they combine.

Every check returns a ``CheckResult``: a verdict, the measured value, the threshold it was held to
and a one-line reason. The gate's verdict is the *worst* of its checks' verdicts, under this order
(a table lookup, as in Argo Rollouts' analysis phases):

    PASS < SKIPPED < INCONCLUSIVE < FAIL

* PASS          the measurement was taken and is inside its threshold.
* SKIPPED       the check did not apply: a comparison with the champion when there is no champion
                yet. It is *not* a pass and is reported as such, but it asserts nothing bad about the
                candidate, so on its own it does not block a first model: a gate whose worst verdict
                is SKIPPED promotes (``Verdict.promotes``), and its report lists what was skipped.
                It ranks above PASS so that the gate's verdict shows that something was not checked.
* INCONCLUSIVE  the check applied but could not be decided: a measurement is missing, too small to
                trust, or not comparable (e.g. champion timed in another run). The model is held
                for a human, who promotes or rejects it (Argo Rollouts pauses on inconclusive).
* FAIL          the measurement crossed its threshold; the model is rejected.

A gate with no checks, or with every check skipped, measured nothing and is INCONCLUSIVE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable

from ebmops.core.jsonsafe import decode_json, decode_number, encode_json, encode_number



class Verdict(str, Enum):
    PASS = "pass"                  # measured and inside the threshold
    SKIPPED = "skipped"            # did not apply (no champion); shown, not counted as a pass, does not block
    INCONCLUSIVE = "inconclusive"  # could not be decided; holds the model for a human
    FAIL = "fail"                  # crossed the threshold; rejects the model

    @property
    def rank(self) -> int:
        return _RANK[self]

    def worse_than(self, other: "Verdict") -> bool:
        return self.rank > other.rank

    # Order by severity, not by the string values (str's own comparison would be alphabetical).
    def __lt__(self, other: object) -> bool:
        return self.rank < other.rank if isinstance(other, Verdict) else NotImplemented

    def __le__(self, other: object) -> bool:
        return self.rank <= other.rank if isinstance(other, Verdict) else NotImplemented

    def __gt__(self, other: object) -> bool:
        return self.rank > other.rank if isinstance(other, Verdict) else NotImplemented

    def __ge__(self, other: object) -> bool:
        return self.rank >= other.rank if isinstance(other, Verdict) else NotImplemented

    @property
    def promotes(self) -> bool:
        """Whether a gate ending in this verdict may promote without a human."""
        return self in (Verdict.PASS, Verdict.SKIPPED)

    @property
    def action(self) -> str:
        """What the orchestrator does with a gate ending in this verdict."""
        return _ACTION[self]


_RANK = {Verdict.PASS: 0, Verdict.SKIPPED: 1, Verdict.INCONCLUSIVE: 2, Verdict.FAIL: 3}
_ACTION = {Verdict.PASS: "promote", Verdict.SKIPPED: "promote", Verdict.INCONCLUSIVE: "hold for a human",
           Verdict.FAIL: "reject"}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. ``value`` and ``threshold`` are in the unit the reason names."""

    name: str
    verdict: Verdict
    value: float | None
    threshold: float | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict.value, "value": encode_number(self.value),
                "threshold": encode_number(self.threshold), "reason": self.reason,
                "details": encode_json(self.details)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckResult":
        return cls(name=d["name"], verdict=Verdict(d["verdict"]), value=decode_number(d.get("value")),
                   threshold=decode_number(d.get("threshold")), reason=d["reason"],
                   details=decode_json(d.get("details") or {}))


def combine(results: Iterable[CheckResult | Verdict]) -> Verdict:
    """The worst verdict wins. Nothing measured (no results, or all skipped) is INCONCLUSIVE."""
    verdicts = [r.verdict if isinstance(r, CheckResult) else Verdict(r) for r in results]
    if not verdicts or all(v is Verdict.SKIPPED for v in verdicts):
        return Verdict.INCONCLUSIVE
    return max(verdicts)
