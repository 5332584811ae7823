"""A verified, warmed-up model version, ready to score.

``load_verified`` is the only way a node gets a model: the bundle is fetched through
``registry.bundle.fetch_bundle`` (manifest signature and every blob's sha256 checked before
anything is installed), loaded with TorchScript on CPU, then run once on a few rows of zeros.
The warm-up both pays TorchScript's first-call optimisation cost before traffic arrives and
proves the artifact honours the serving contract (float32 [n, features] -> finite energies
[n]); a model that does not is refused like a tampered bundle, before it can serve a request.

A model with categorical columns (``training.model.CategoricalEnergyMLP``) carries their
vocabularies and exports ``categorical_columns``, ``vocabulary`` and ``encode``; the node reads
the vocabularies once at load (checking ``encode`` agrees with them) and turns each request's
raw values into codes with :meth:`LoadedModel.encode`, counting the values the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ebmops.core.errors import BundleError
from registry.bundle import VerifiedBundle, fetch_bundle, installed_bundle
from registry.manifest import Manifest
from registry.objectstore.base import ObjectStore
from registry.signing import SigningKey

WARMUP_ROWS = 4
# TorchScript's profiling executor re-optimises a graph for the first input shapes it meets; a
# micro-batcher feeds it every batch size from 1 to max, so without this a live node paid
# multi-millisecond recompilations during its first few hundred requests (about 55 ms here).
WARMUP_SHAPES = (1, 2, 3, 7, 16, 64, 256, 1024) * 2


class ModelLoadError(BundleError):
    """A verified bundle could not be turned into a serving model: ``reason`` is
    ``model-unloadable`` (TorchScript refused the file) or ``warmup-failed`` (it ran, but not
    as float32 [n, features] -> finite energies [n])."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One model version in memory. Immutable: a node swaps whole objects, never mutates one,
    so a request that captured it keeps a consistent model however long it waits."""

    version: str
    manifest: Manifest
    features: tuple[str, ...]
    threshold: float
    module: Any = field(repr=False)  # torch.jit.ScriptModule
    loaded_at: datetime
    path: Path | None = None
    # the version's calibration energies, sorted, when the bundle carries them (role "calibration"):
    # the reference of the node's live energy-shift gauge
    calibration: np.ndarray | None = field(default=None, repr=False)
    # categorical input column index -> its categories as a pandas Index (code = position); empty: numeric-only
    categories: dict = field(default_factory=dict, repr=False)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def categorical(self) -> tuple[str, ...]:
        """The features this model takes as categories (raw strings or numbers)."""
        return tuple(self.features[j] for j in self.categories)

    def encode(self, x: np.ndarray, cats: dict[str, np.ndarray] | None) -> tuple[np.ndarray, dict[str, int]]:
        """``x`` (float32 [n, n_features], this model's order) with each categorical column replaced by
        the codes of its canonical texts in ``cats`` (column -> object [n]; a column missing there is
        read from the numbers in ``x``); and per column how many values were unknown to the model."""
        if not self.categories:
            return x, {}
        from ebmops.core.data.categorical import canonical_numbers

        out = np.array(x, dtype=np.float32, copy=True)
        unknown: dict[str, int] = {}
        for j, index in self.categories.items():
            name = self.features[j]
            texts = cats.get(name) if cats else None
            if texts is None:
                texts = canonical_numbers(x[:, j])
            codes = index.get_indexer(texts)
            missing = codes < 0
            n_missing = int(np.count_nonzero(missing))
            if n_missing:
                codes[missing] = len(index)
                unknown[name] = n_missing
            out[:, j] = codes
        return out, unknown

    def score(self, x: np.ndarray) -> np.ndarray:
        """Energies (float32 [n]) of ``x`` (float32 [n, n_features]); blocking, call off the event loop."""
        import torch

        with torch.inference_mode():
            x = np.ascontiguousarray(x, dtype=np.float32)
            if not x.flags.writeable:  # a zero-copy view of a binary body: torch wants writable memory
                x = x.copy()
            out = self.module(torch.from_numpy(x))
        return out.detach().to(torch.float32).reshape(-1).numpy()


def load_verified(store: ObjectStore, model_name: str, version: str, key: SigningKey, install_dir: Path,
                  cache_dir: Path | None = None) -> LoadedModel:
    """Fetch, verify, load and warm up ``model_name`` ``version``.

    Raises:
        BundleError: the bundle failed verification (``reason`` from ``fetch_bundle``).
        ModelLoadError: the verified file is not a usable energy model.
        StoreError: the region's store could not be read.
    """
    return _loaded(fetch_bundle(store, model_name, version, key, Path(install_dir), cache_dir=cache_dir))


def load_installed(model_name: str, version: str, key: SigningKey, install_dir: Path) -> LoadedModel:
    """Load and warm up the copy of ``model_name`` ``version`` installed on this node's disk, re-verified
    against its signed manifest there; no store is read (serving through a store outage). Raises as
    ``load_verified``, and BundleError installed-missing / installed-damaged."""
    return _loaded(installed_bundle(Path(install_dir), model_name, version, key))


def _loaded(bundle: VerifiedBundle) -> LoadedModel:
    model_name, version = bundle.manifest.model_name, bundle.manifest.version
    module = _load_module(bundle.model_path, model_name, version)
    model = LoadedModel(version=version, manifest=bundle.manifest, features=tuple(bundle.manifest.features),
                        threshold=float(bundle.manifest.threshold), module=module,
                        loaded_at=datetime.now(timezone.utc), path=bundle.path,
                        calibration=_calibration(bundle.files.get(CALIBRATION_ROLE)),
                        categories=_categories(module, len(bundle.manifest.features), model_name, version))
    warm_up(model)
    return model


CALIBRATION_ROLE = "calibration"


def _calibration(path: Path | None) -> np.ndarray | None:
    """The verified calibration energies of the bundle, sorted; None without (or with an unreadable) file."""
    if path is None:
        return None
    try:
        e = np.load(path, allow_pickle=False).astype(np.float64).reshape(-1)
        e = e[np.isfinite(e)]
        return np.sort(e) if len(e) else None
    except (OSError, ValueError):
        return None


def _categories(module: Any, n_features: int, model_name: str, version: str) -> dict:
    """The vocabularies a categorical model exports (column -> pandas Index of its categories), checked
    against its own ``encode``; {} for a numeric-only model."""
    if not hasattr(module, "categorical_columns"):
        return {}
    import pandas as pd

    def refuse(msg: str) -> ModelLoadError:
        return ModelLoadError(f"bundle {model_name} {version} refused (warmup-failed): {msg}; re-export it with "
                              "training.export.export_torchscript and publish a new version",
                              reason="warmup-failed", model=model_name, version=version)

    try:
        out = {}
        for j in module.categorical_columns():
            if not 0 <= int(j) < n_features:
                raise refuse(f"categorical column {j} is outside its {n_features} features")
            cats = list(module.vocabulary(int(j)))
            probe = [*cats, "\x00never-a-category"]
            if module.encode(int(j), probe).tolist() != [float(i) for i in range(len(cats) + 1)]:
                raise refuse(f"encode of column {j} disagrees with its vocabulary")
            out[int(j)] = pd.Index(cats, dtype=object)
        return out
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the artifact is a refusal
        raise refuse(f"reading its categorical vocabularies raised {type(e).__name__}: {e}") from e


def _load_module(path: Path, model_name: str, version: str) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, ValueError and more for bad files
        raise ModelLoadError(f"bundle {model_name} {version} refused (model-unloadable): the verified model file "
                             f"{path} is not a loadable TorchScript module ({type(e).__name__}: {e}); re-export "
                             "it with training.export.export_torchscript and publish a new version",
                             reason="model-unloadable", model=model_name, version=version) from e


def warm_up(model: LoadedModel, rows: int = WARMUP_ROWS) -> None:
    """Score ``rows`` rows of zeros and check the output is ``rows`` finite energies, then run
    the batch sizes of ``WARMUP_SHAPES`` so TorchScript has settled before traffic arrives."""
    name, version = model.manifest.model_name, model.version

    def fail(msg: str, cause: Exception | None = None) -> ModelLoadError:
        err = ModelLoadError(f"bundle {name} {version} refused (warmup-failed): {msg}; the node serves "
                             f"float32 [n, {model.n_features}] -> energies [n], fix the export and publish a new "
                             "version", reason="warmup-failed", model=name, version=version)
        err.__cause__ = cause
        return err

    x = np.zeros((rows, model.n_features), dtype=np.float32)
    try:
        import torch

        with torch.inference_mode():
            out = model.module(torch.from_numpy(x))
    except Exception as e:  # noqa: BLE001 - any failure of the artifact is a refusal, not a crash
        raise fail(f"scoring {rows} rows of {model.n_features} features raised {type(e).__name__}: {e}", e) from e
    shape = tuple(getattr(out, "shape", ()))
    if shape != (rows,):
        raise fail(f"on input [{rows}, {model.n_features}] it returned shape {list(shape)}, expected [{rows}]")
    energies = out.detach().to(torch.float32).numpy()
    if not np.isfinite(energies).all():
        raise fail(f"on rows of zeros it returned non-finite energies {energies.tolist()}")
    for n in WARMUP_SHAPES:
        try:
            shape = tuple(model.score(np.zeros((n, model.n_features), dtype=np.float32)).shape)
        except Exception as e:  # noqa: BLE001
            raise fail(f"scoring {n} rows raised {type(e).__name__}: {e}", e) from e
        if shape != (n,):
            raise fail(f"on input [{n}, {model.n_features}] it returned shape {list(shape)}, expected [{n}]")
