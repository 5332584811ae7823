"""ebmops: a control plane for the life of energy-based anomaly models.

This package holds what every other package shares: typed settings, the SQL state store,
the dataset layer, batch validation and the ``ebmops`` CLI. The lifecycle logic lives in the
top-level packages ``training``, ``registry``, ``drift``, ``canary`` and ``serving``; ``flows``
only wires them into Prefect flows.
"""

__version__ = "0.1.0"
