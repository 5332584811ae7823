"""Collect ``*_bench.py`` files as test modules (``make bench`` runs ``pytest bench``).

The project's python_files keeps pytest's default (test_*.py) so that ``make test`` never runs a
benchmark; here, inside bench/, benchmark modules are named for what they are.
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.name.endswith("_bench.py") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
