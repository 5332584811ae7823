"""Checks on what callers hand the registry, done before anything is written to MLflow.

Each check raises ``RegistryError`` naming the bad input and the fix, so a rejected call never
leaves a half-logged run or a half-registered version behind.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ebmops.core.errors import RegistryError

if TYPE_CHECKING:
    import numpy as np

LIST_HINT = "`ebmops models list` shows the versions"


def version_str(version: int | str) -> str:
    """A version number as MLflow spells it ("3"), from 3 or "3"."""
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise RegistryError(f"invalid model version {version!r}: versions are positive numbers; {LIST_HINT}")
    return str(int(text))


def safe_name(name: str) -> str:
    """A name usable as one path segment."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def param_value(value: Any) -> str:
    """MLflow params are strings; lists and dicts are stored as JSON so they read back unambiguously."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def check_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise RegistryError(f"metric {key!r} is not a number ({value!r}); log it as a param or tag instead") from None
    return out


def check_artifacts(files: Mapping[str, Path]) -> dict[str, Path]:
    """Artifact name (a relative path inside the run) -> existing local file."""
    out = {}
    for name, path in files.items():
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise RegistryError(f"artifact name {name!r} must be a relative path inside the run (e.g. 'summary.md')")
        if not Path(path).is_file():
            raise RegistryError(f"artifact {name!r}: no file at {path}")
        out[str(rel)] = Path(path)
    return out


def check_training_inputs(scripted_path: Path, input_example: "np.ndarray", feature_names: list[str],
                          threshold: float) -> "np.ndarray":
    """The input example as contiguous float32[B, F], after checking the model file and threshold."""
    import numpy as np

    if not math.isfinite(float(threshold)):
        raise RegistryError(f"threshold must be a finite number, got {threshold!r}")
    if not Path(scripted_path).is_file():
        raise RegistryError(f"no TorchScript model at {scripted_path}; train first or pass the saved module's path")
    x = np.ascontiguousarray(input_example, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != len(feature_names):
        raise RegistryError(f"input_example must be float32[B, {len(feature_names)}] (one column per feature), "
                            f"got shape {tuple(np.shape(input_example))}")
    return x


def load_and_score(scripted_path: Path, x: "np.ndarray"):
    """Load the TorchScript module and score the example; the model must return energies float32[B]."""
    import torch

    try:
        model = torch.jit.load(str(scripted_path), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError/ValueError variants for bad archives
        raise RegistryError(f"{scripted_path} is not a TorchScript archive ({e}); save it with torch.jit.save") from e
    with torch.no_grad():
        energies = model(torch.from_numpy(x))
    if not isinstance(energies, torch.Tensor) or tuple(energies.shape) != (x.shape[0],):
        shape = tuple(energies.shape) if isinstance(energies, torch.Tensor) else type(energies).__name__
        raise RegistryError(f"the model must return energies float32[B] for input float32[B, F]; "
                            f"got {shape} for B={x.shape[0]}")
    return model, energies.float().numpy()


@contextmanager
def staged(files: Mapping[str, Path]) -> Iterator[Path]:
    """A temporary directory holding copies of ``files`` under their artifact names."""
    with tempfile.TemporaryDirectory(prefix="ebmops-artifacts-") as tmp:
        root = Path(tmp)
        for name, path in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, root / name)
        yield root
