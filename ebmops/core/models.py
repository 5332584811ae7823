"""Which registered model belongs to which dataset, and the settings scoped to one model.

Each dataset (a built-in one or a source under ``data.sources``) has its own detector, registered
as its own model: ``data.sources.<name>.model``, else ``ebm-<name>`` (``registry.model_name``
still names ``data.dataset``'s model when it is set). A **model scope** is a copy of the settings
in which ``registry.model_name`` is the model and ``data.dataset`` its dataset: every service that
takes settings then acts on that model (its registry versions and aliases, its desired state in the
region stores, its rollouts, drift and hotfixes) and reads that dataset's data, schema and reference.

Pure: no registry, no I/O (``ebmops/services/models.py`` adds what the registry knows).
"""

from __future__ import annotations

from ebmops.core.errors import ConfigError
from ebmops.core.settings import Settings, default_model


def model_of(settings: Settings, dataset: str) -> str:
    """The model ``dataset``'s detector is registered as."""
    if dataset == settings.data.dataset:
        return str(settings.registry.model_name)
    src = settings.data.sources.get(dataset)
    return (src.model if src is not None and src.model else None) or default_model(dataset)


def configured_models(settings: Settings) -> dict[str, str]:
    """model -> dataset for every dataset the settings name (data.dataset and each source)."""
    out = {str(settings.registry.model_name): settings.data.dataset}
    for name in settings.data.sources:
        out.setdefault(model_of(settings, name), name)
    return out


def dataset_of(settings: Settings, model: str) -> str | None:
    """The configured dataset of ``model``: data.dataset, a source, or a built-in dataset named by the
    default ``ebm-<dataset>``; None when the settings do not know the model."""
    found = configured_models(settings).get(model)
    if found is not None:
        return found
    from ebmops.core.data.builtin import BUILTIN_DATASETS

    for name in BUILTIN_DATASETS:
        if default_model(name) == model:
            return name
    return None


def scoped(settings: Settings, model: str, dataset: str) -> Settings:
    """A validated copy of ``settings`` acting on ``model``, whose data is ``dataset``.

    Returns ``settings`` itself when it already is that scope. Secrets stay ``SecretStr``. Another source
    configured under ``model`` is left out of the scope (a version's recorded dataset wins)."""
    if settings.registry.model_name == model and settings.data.dataset == dataset:
        return settings
    merged = settings.model_dump()  # python mode: SecretStr values stay SecretStr
    merged["registry"]["model_name"] = model
    merged["data"]["dataset"] = dataset
    # A version's lineage may name another dataset than the one configured for its model (a source renamed
    # or re-pointed since): the version's own data wins, and the scope leaves the other one out.
    merged["data"]["sources"] = {name: src for name, src in merged["data"]["sources"].items()
                                 if name == dataset or model_of(settings, name) != model}
    try:
        return type(settings).model_validate(merged)
    except ValueError as e:
        raise ConfigError(f"model {model!r} on dataset {dataset!r}: {e}") from None
