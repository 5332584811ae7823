"""Lineage: code version from git or the package, and the tags built from it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from registry import code_tags, code_version, lineage_tags
from registry.lineage import parse_threshold

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@needs_git
def test_code_version_inside_a_git_repo_gives_commit_and_dirty_flag(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "train.py").write_text("print('v1')\n")
    _git(tmp_path, "add", "train.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")

    clean = code_version(tmp_path)
    assert clean == {"commit": head, "dirty": False, "version": head[:12], "source": "git"}

    (tmp_path / "untracked.txt").write_text("not code\n")
    assert code_version(tmp_path)["dirty"] is False
    (tmp_path / "train.py").write_text("print('v2')\n")
    dirty = code_version(tmp_path)
    assert dirty["dirty"] is True and dirty["version"] == head[:12] + "-dirty"


def test_code_version_outside_git_falls_back_to_the_package_version(tmp_path):
    from ebmops import __version__

    got = code_version(tmp_path)
    assert got == {"commit": None, "dirty": None, "version": __version__, "source": "package"}
    assert code_tags(got) == {"code_version": __version__}


def test_lineage_tags_are_strings_and_the_threshold_round_trips():
    code = {"commit": "a" * 40, "dirty": True, "version": "aaaaaaaaaaaa-dirty", "source": "git"}
    tags = lineage_tags(run_id="r1", dataset="kdd99", data_fingerprint="sha256:1", threshold=0.1 + 0.2,
                        device="cuda", code=code)

    assert tags == {"run_id": "r1", "dataset": "kdd99", "data_fingerprint": "sha256:1", "device": "cuda",
                    "threshold": repr(0.1 + 0.2), "code_version": "aaaaaaaaaaaa-dirty", "code_commit": "a" * 40,
                    "code_dirty": "true"}
    assert parse_threshold(tags) == 0.1 + 0.2
    assert parse_threshold({}) is None and parse_threshold({"threshold": "n/a"}) is None
