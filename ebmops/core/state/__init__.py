"""The state store: what ebmops itself remembers, in SQL through SQLAlchemy.

SQLite (``<home>/state.db``) is the embedded default; any SQLAlchemy URL works, and the test
suite runs the same store tests on a real PostgreSQL. The store returns plain records
(dataclasses), never ORM rows, so callers cannot lazily touch the database by accident.
"""

from ebmops.core.state.store import (
    DecisionRecord,
    GateReportRecord,
    QuarantineRecord,
    RolloutRecord,
    RolloutRegionRecord,
    StateStore,
    SyncRecord,
    TrainingRunRecord,
    open_store,
)

__all__ = ["StateStore", "GateReportRecord", "TrainingRunRecord", "QuarantineRecord", "SyncRecord", "RolloutRecord",
           "RolloutRegionRecord", "DecisionRecord", "open_store"]
