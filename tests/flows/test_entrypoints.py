"""Entrypoints load under a worker exactly as they load in-process.

A Prefect worker loads a ``path/to/file.py:func`` entrypoint as a script, with the script's folder
first on ``sys.path``; a ``flows/drift.py`` then shadowed the ``drift`` package for everything the
run imported, and every deployment failed under the worker while working in-process. Entrypoints
are module paths (``flows.train:train``), which Prefect imports as a package member from the
working directory, and no flow module may carry the name of an importable top-level module.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FLOW_MODULES = sorted(p.stem for p in (ROOT / "flows").glob("*.py") if p.stem != "__init__")
# the project's own top-level packages (what a shadowing flow module would hide)
PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "flows"))


def _entrypoints() -> dict[str, str]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d["entrypoint"] for d in doc["deployments"]}


def shadowed_names(modules: list[str]) -> list[str]:
    """Flow module names that are also importable top-level modules (the project's packages, the
    standard library, anything installed)."""
    return [m for m in modules
            if m in PACKAGES or m in sys.stdlib_module_names or importlib.util.find_spec(m) is not None]


def test_no_flow_module_is_named_like_an_importable_top_level_module():
    assert FLOW_MODULES, "flows/ holds no flow modules"
    assert {"drift", "training", "registry", "canary", "gates", "serving"} <= set(PACKAGES)
    bad = shadowed_names(FLOW_MODULES)
    assert not bad, (f"flows/{bad[0]}.py has the name of an importable module {bad[0]!r}: a worker that loads "
                     "flows as scripts would import it instead; name flow modules after their flow")


def test_the_check_catches_the_old_layout():
    # flows/drift.py (the module that broke every deployment) must be caught by the same check
    assert shadowed_names(["drift", "train", "json"]) == ["drift", "json"]


@pytest.mark.parametrize("name", sorted(_entrypoints()))
def test_entrypoint_is_a_module_path_in_the_flows_package(name):
    ep = _entrypoints()[name]
    module, _, func = ep.partition(":")
    assert ".py" not in module and "/" not in module, (
        f"{name}: entrypoint {ep!r} is a script path; a worker puts the script's folder first on sys.path, "
        "which lets a flow module shadow a package. Use flows.<module>:<function>")
    assert module.startswith("flows.") and module.split(".")[1] in FLOW_MODULES and func


def test_a_worker_loads_every_entrypoint_without_shadowing_a_package():
    """Load each entrypoint with Prefect's own loader in a fresh process, from the checkout as the
    worker's working directory, then check where every project package came from."""
    code = (
        "import json, sys\n"
        "from prefect.flows import load_flow_from_entrypoint\n"
        f"eps = {sorted(set(_entrypoints().values()))!r}\n"
        "names = {ep: load_flow_from_entrypoint(ep).name for ep in eps}\n"
        f"origins = {{p: getattr(sys.modules.get(p), '__file__', None) for p in {PACKAGES!r}}}\n"
        "print(json.dumps({'names': names, 'origins': origins}))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out["names"].values()) == {"train", "gate", "rollout", "sync", "drift-monitor", "hotfix", "score",
                                            "audit-checkpoint"}
    for pkg, origin in out["origins"].items():
        if origin is not None:  # imported while loading: it must be the package, not a flow module
            assert Path(origin).resolve() == (ROOT / pkg / "__init__.py").resolve(), (pkg, origin)
    assert out["origins"]["drift"] is not None, "the drift flow imports the drift package"
