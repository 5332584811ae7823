"""The MLflow aliases that carry a version through its life, named once.

``challenger`` (newly registered) -> the gate's pass -> ``candidate`` -> a rollout promotes it in a
region: ``prod-<region>`` -> in every region: ``champion`` (the one it replaced becomes
``previous-champion``). A hotfix or a partial rollout moves ``prod-<region>`` only.
"""

from __future__ import annotations

CHALLENGER = "challenger"
CANDIDATE = "candidate"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"


def region_alias(region: str) -> str:
    """The alias of the version a region serves as stable after a promotion there."""
    return f"prod-{region}"
