"""Model registry: training runs, numbered model versions, aliases and lineage, kept in MLflow.

``ModelRegistry`` is the one entry point; it hands out ``ModelVersionInfo`` records and raises
``ebmops.core.errors.RegistryError``. Importing this package does not import MLflow or torch.
"""

from registry.lineage import code_tags, code_version, lineage_tags
from registry.mlflow_registry import ModelRegistry
from registry.records import ModelVersionInfo

__all__ = ["ModelRegistry", "ModelVersionInfo", "code_tags", "code_version", "lineage_tags"]
