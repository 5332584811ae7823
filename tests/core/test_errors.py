"""Errors in one place: every class with its exit code and a one-line fix; each code means one thing;
the README's table is the module's."""

from __future__ import annotations

import re
from pathlib import Path

from ebmops.core import errors
from ebmops.core.errors import EXIT_CODES, EbmopsError, error_classes, exit_code_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_error_class_has_a_code_with_a_meaning_and_its_own_fix():
    classes = error_classes()
    assert len(classes) > 20 and classes[0] is EbmopsError
    for cls in classes:
        assert cls.exit_code in EXIT_CODES, cls.__name__
        assert "fix" in cls.__dict__ and len(cls.fix) > 20 and "\n" not in cls.fix, cls.__name__
        assert cls.__doc__, cls.__name__


def test_every_code_is_raised_by_some_error_or_by_the_cli():
    used = {cls.exit_code for cls in error_classes()}
    # 2 is also what the CLI exits with for a bad option (click) or invalid settings (pydantic)
    assert set(EXIT_CODES) == used


def test_no_error_class_is_defined_outside_the_errors_module():
    root = Path(errors.__file__).resolve().parents[2]
    offenders = []
    for pkg in ("ebmops", "flows", "registry", "drift", "canary", "training", "serving", "gates"):
        for p in (root / pkg).rglob("*.py"):
            if p.resolve() == Path(errors.__file__).resolve():
                continue
            for m in re.finditer(r"^class (\w+)\((?:\w+\.)?(\w+)\):\n(?:.*\n){0,3}?\s+exit_code = ", p.read_text(), re.M):
                offenders.append(f"{p.relative_to(root)}: {m.group(1)}")
    assert not offenders, "exit codes are defined in ebmops/core/errors.py only: " + ", ".join(offenders)


def test_the_readme_table_is_the_modules():
    text = README.read_text()
    block = text.split("<!-- exit-codes:")[1].split("<!-- /exit-codes -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()
            if re.match(r"^\|\s*\d+\s*\|", line)]
    got = [(int(code), meaning, sorted(re.findall(r"`(\w+)`", raised))) for code, meaning, raised in rows]
    want = [(r["code"], r["meaning"], r["errors"]) for r in exit_code_table()]
    assert got == want
