"""TorchScript export: the artifact that the registry stores and serving loads.

``torch.jit.script`` compiles the model (standardisation, network, threshold and the
``is_anomalous`` method) into a file that loads without this package or its Python classes,
in Python or in C++. The model is not frozen: freezing would fold the ``threshold`` buffer
into constants and the loaded module could no longer report it. The file is written
atomically, so a registry upload never picks up a half-written model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from training.atomic import atomic_write


def script_model(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """A scripted copy of ``model`` on CPU in eval mode (the original is left as it is)."""
    return torch.jit.script(copy.deepcopy(model).cpu().eval())


def export_torchscript(model: torch.nn.Module, path: Path) -> Path:
    """Script ``model`` and save it to ``path`` atomically; return the path."""
    scripted = script_model(model)
    return atomic_write(Path(path), lambda f: torch.jit.save(scripted, f))


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load an exported model on CPU, in eval mode."""
    return torch.jit.load(str(path), map_location="cpu").eval()
