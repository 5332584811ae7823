"""Which model a command or a flow acts on, and the models of the registry (``ebmops models list``).

``resolve`` turns what the caller named (a model, a dataset, a version) into a model scope
(:func:`ebmops.core.models.scoped`): settings whose ``registry.model_name`` is that model and whose
``data.dataset`` is its dataset. A version's dataset is the one its lineage records (the tag
``dataset`` every training and hotfix registration sets): the version's own data wins over the
configuration. With nothing named, the configured default (``registry.model_name`` or
``data.dataset`` set explicitly) is used; else the one registered model; several registered models
and nothing named is an error listing them, never a silent pick.
"""

from __future__ import annotations

from ebmops.core.aliases import CHAMPION, region_alias
from ebmops.core.errors import ConfigError, ModelAmbiguous
from ebmops.core.models import configured_models, dataset_of, model_of, scoped
from ebmops.core.settings import Settings

DATASET_TAG = "dataset"


def _registry(settings: Settings, model: str | None = None):
    from registry import ModelRegistry

    reg = ModelRegistry.from_settings(settings)
    return reg.for_model(model) if model and model != reg.model_name else reg


def default_named(settings: Settings) -> bool:
    """Whether the configuration names the default model (registry.model_name or data.dataset set explicitly)."""
    return ("model_name" in settings.registry.model_fields_set
            or "dataset" in settings.data.model_fields_set)


def version_dataset(settings: Settings, model: str, version: str) -> tuple[str, str | None]:
    """(version number, the dataset its lineage records, None for a version registered without one)."""
    info = _registry(settings, model).resolve(version)
    return info.version, info.tags.get(DATASET_TAG) or None


def registered(settings: Settings) -> list[str]:
    """Every registered model name in the registry."""
    return _registry(settings).registered_models()


def resolve(settings: Settings, *, model: str | None = None, dataset: str | None = None,
            version: str | None = None) -> Settings:
    """The settings scoped to the model the caller named (see the module docstring).

    ``dataset`` alone names its model (``ebm-<dataset>`` or the source's ``model``); ``model`` and
    ``dataset`` together must agree; ``version`` (a number or @alias of that model) makes its
    lineage's dataset the scope's data. Raises ModelAmbiguous when nothing is named and several
    models are registered, ConfigError for a model nobody knows or a dataset that is not the model's."""
    if dataset is not None and dataset not in configured_datasets(settings):
        raise ConfigError(f"--dataset: {dataset!r} is neither a built-in dataset nor a source under data.sources "
                          f"(known: {', '.join(sorted(configured_datasets(settings)))})")
    if model is None and dataset is not None:
        model = model_of(settings, dataset)
    if model is None:
        if default_named(settings):
            model = str(settings.registry.model_name)
        else:
            names = registered(settings)
            if len(names) > 1:
                raise ModelAmbiguous(f"several models are registered ({', '.join(names)}); name one with --model "
                                     "(or its dataset with --dataset)")
            model = names[0] if names else str(settings.registry.model_name)
    lineage = None
    if version is not None:
        _number, lineage = version_dataset(settings, model, version)
    elif dataset is None:
        lineage = newest_dataset(settings, model)
    if lineage is not None and dataset is not None and lineage != dataset:
        raise ConfigError(f"--dataset {dataset!r}: version {version} of {model} was trained on {lineage!r}; a "
                          "version is gated, synced and monitored on its own data (drop --dataset)")
    ds = lineage or dataset or dataset_of(settings, model)
    if ds is None:
        known = sorted(set(registered(settings)) | set(configured_models(settings)))
        raise ConfigError(f"--model: no model {model!r} is registered or configured (known: {', '.join(known)}); "
                          "train it first (`ebmops train --dataset NAME`) or set data.sources.<name>.model")
    return scoped(settings, model, ds)


def newest_dataset(settings: Settings, model: str) -> str | None:
    """The dataset of the model's newest version that records one (None before any)."""
    for v in _registry(settings, model).list_versions():
        if v.tags.get(DATASET_TAG):
            return v.tags[DATASET_TAG]
    return None


def configured_datasets(settings: Settings) -> set[str]:
    from ebmops.core.data.builtin import BUILTIN_DATASETS

    return {*BUILTIN_DATASETS, *settings.data.sources, settings.data.dataset}


def scopes(settings: Settings, model: str | None = None) -> list[Settings]:
    """One scope per registered model (or the one ``model`` names): what the drift monitor and
    ``regions status`` walk. The configured default when nothing is registered yet."""
    if model is not None:
        return [resolve(settings, model=model)]
    names = registered(settings) or [str(settings.registry.model_name)]
    return [resolve(settings, model=name) for name in names]


def list_models(settings: Settings) -> list[dict]:
    """Per registered model: its dataset, number of versions, champion and per-region production aliases."""
    out = []
    for name in registered(settings):
        versions = _registry(settings, name).list_versions()
        by_alias = {a: v.version for v in versions for a in v.aliases}
        ds = next((v.tags[DATASET_TAG] for v in versions if v.tags.get(DATASET_TAG)), None) or dataset_of(settings,
                                                                                                          name)
        out.append({"model": name, "dataset": ds, "versions": len(versions),
                    "newest": versions[0].version if versions else None, "champion": by_alias.get(CHAMPION),
                    "prod": {r: by_alias.get(region_alias(r)) for r in settings.data.regions}})
    return out
