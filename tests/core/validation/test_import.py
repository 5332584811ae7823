"""Importing ebmops.core.validation stays cheap: Great Expectations loads on the first validation."""

import subprocess
import sys


def test_import_does_not_load_great_expectations():
    code = ("import sys, ebmops.core.validation; "
            "heavy = [m for m in ('great_expectations', 'prefect', 'mlflow') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
