"""The Dockerfiles are hadolint-clean and the workflows valid (both offline)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "deploy" / "docker").glob("*.Dockerfile"))
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed: `make install` installs the test extra (pyproject.toml)"
    return path


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["node.Dockerfile", "trainer.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_hadolint_clean(dockerfile):
    r = subprocess.run([_tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    assert subprocess.run([_tool("hadolint"), str(bad)], capture_output=True).returncode != 0


def test_node_image_is_slim_non_root_and_health_checked():
    text = (ROOT / "deploy" / "docker" / "node.Dockerfile").read_text()
    assert "slim" in text.split("\nFROM ")[-1].splitlines()[0]
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/healthz" in text
    assert "whl/cpu" in text
    trainer = (ROOT / "deploy" / "docker" / "trainer.Dockerfile").read_text()
    assert "FROM nvidia/cuda:" in trainer and "whl/cu" in trainer and "USER 10001" in trainer


def test_workflows_are_valid_github_workflows():
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert any(w.endswith("images.yml") for w in workflows)
    r = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *workflows],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
