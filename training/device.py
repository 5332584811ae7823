"""Choosing the compute device and the mixed-precision mode.

``training.device`` is ``auto`` (CUDA, then Apple MPS, then CPU) or an explicit device. An
explicit accelerator that is not there is a configuration error, not a silent fallback to
CPU: a job that asked for a GPU and quietly ran for hours on a CPU costs more than a job that
failed at once with the fix in the message.

Mixed precision applies on CUDA only (``training.amp``): bf16 autocast where the GPU
supports it (same exponent range as fp32, so no loss scaling), else fp16 autocast with a
``GradScaler`` against gradient underflow. On CPU and MPS training runs in fp32: the model is
small and CPU autocast would only add casts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ebmops.core.errors import ConfigError


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """The torch device for a ``training.device`` value: 'auto', 'cpu', 'cuda' (or 'cuda:N'), 'mps'."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = torch.version.cuda or "none (a CPU-only build)"
            raise ConfigError(f"training.device is '{name}' but no CUDA device is available (torch {torch.__version__}, "
                              f"CUDA {build}); set training.device to 'auto' or 'cpu' "
                              f"(EBMOPS_TRAINING__DEVICE=cpu), or install a CUDA build of torch on a GPU machine")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise ConfigError("training.device is 'mps' but Apple MPS is not available on this machine; "
                              "set training.device to 'auto' or 'cpu' (EBMOPS_TRAINING__DEVICE=cpu)")
        return torch.device("mps")
    raise ConfigError(f"training.device is '{name}'; use one of 'auto', 'cpu', 'cuda', 'mps'")


@dataclass(frozen=True)
class AmpMode:
    """How (and whether) to autocast: ``dtype`` None means full fp32."""

    dtype: torch.dtype | None = None
    use_scaler: bool = False

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def label(self) -> str:
        """' with bf16 autocast' and the like, for messages; empty when off."""
        if self.dtype is None:
            return ""
        name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, str(self.dtype))
        return f" with {name} autocast" + (" and loss scaling" if self.use_scaler else "")

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def scaler(self):
        return torch.amp.GradScaler("cuda") if self.use_scaler else None


def amp_mode(device: torch.device, enabled: bool) -> AmpMode:
    """The mixed-precision mode for ``device`` when ``training.amp`` is ``enabled``."""
    if not enabled or device.type != "cuda":
        return AmpMode()
    if torch.cuda.is_bf16_supported():
        return AmpMode(dtype=torch.bfloat16)
    return AmpMode(dtype=torch.float16, use_scaler=True)
