"""Fixtures and helpers shared by the model-sync tests (object stores, bundles, desired state).

Test modules import the fixtures they use from here. Every S3 test runs against the real
SeaweedFS server of the session (``seaweedfs`` in tests/conftest.py); each test gets its own key
prefix inside one shared bucket, so tests stay independent without paying for a bucket each.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from registry.objectstore import LocalStore, ObjectStore
from registry.signing import SigningKey, hmac_key

SHARED_BUCKET = "ebmops-tests"
FEATURES = [f"f{i}" for i in range(8)]


def s3_store(server, *, bucket: str = SHARED_BUCKET, prefix: str | None = None, **kwargs) -> ObjectStore:
    from registry.objectstore import S3Store

    return S3Store(server.endpoint_url, bucket, access_key=server.access_key, secret_key=server.secret_key,
                   region_name=server.region_name, prefix=uuid.uuid4().hex[:12] if prefix is None else prefix,
                   **kwargs)


def make_store(kind: str, request, tmp_path: Path, **kwargs) -> ObjectStore:
    if kind == "local":
        return LocalStore(tmp_path / f"store-{uuid.uuid4().hex[:6]}")
    return s3_store(request.getfixturevalue("seaweedfs"), **kwargs)


@pytest.fixture(params=["local", "s3"])
def objstore(request, tmp_path) -> ObjectStore:
    """An empty object store: a LocalStore, then an S3Store on the session's SeaweedFS."""
    if request.param == "s3":  # a low multipart threshold, so large-file tests take the multipart path
        return make_store("s3", request, tmp_path, multipart_threshold=5 * 1024 * 1024)
    return make_store("local", request, tmp_path)


@pytest.fixture
def sync_key() -> SigningKey:
    return hmac_key("k" * 32 + "test-signing-key")


@pytest.fixture
def other_key() -> SigningKey:
    return hmac_key("z" * 32 + "another-signing-key")


def save_energy_model(path: Path, *, threshold: float = 0.75, seed: int = 0, hidden: int = 16,
                      n_features: int = len(FEATURES)) -> Path:
    """A TorchScript energy model: forward(x float32[B, F]) -> energies float32[B], ``threshold`` buffer.

    The file grows by about 40 bytes per hidden unit: ``hidden=7200`` gives about 300 KB, the
    model size the sync timings are reported for.
    """
    import torch

    class Energy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(seed)
            self.hidden = torch.nn.Linear(n_features, hidden)
            self.out = torch.nn.Linear(hidden, 1)
            self.register_buffer("threshold", torch.tensor(threshold, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.hidden(x))).squeeze(1) ** 2

    torch.jit.save(torch.jit.script(Energy()), str(path))
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its bytes, and every directory."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}
