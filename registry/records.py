"""Domain records the registry hands out (never MLflow entities, so callers do not import MLflow)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version of the model.

    ``version`` is MLflow's version number as a string ("1", "2", ...); ``aliases`` lists the
    aliases that point at it now (e.g. ``["champion"]``); ``tags`` holds its lineage and gate tags;
    ``threshold`` is the alert threshold recorded at registration, when there is one.
    """

    name: str
    version: str
    run_id: str | None
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    source: str = ""
    threshold: float | None = None

    @property
    def uri(self) -> str:
        """The MLflow URI of this version, e.g. ``models:/ebm-anomaly/3``."""
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetime as ISO 8601)."""
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat() if self.created_at else None
        d["uri"] = self.uri
        return d
