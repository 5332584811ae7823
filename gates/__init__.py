"""The promotion gate: pure checks over measured numbers, combined into one verdict.

``gates.verdict``   Verdict (PASS < SKIPPED < INCONCLUSIVE < FAIL), CheckResult, combine
``gates.checks``    one pure function per check (latency, energy drift, alert rate, detection, data, cost)
``gates.engine``    GateMeasurements -> evaluate_gate -> GateReport
``gates.report``    GateReport: JSON record and markdown summary
``gates.latency``   the TorchScript latency benchmark, run in a fresh single-threaded process
``gates.data_drift`` the Evidently feature-drift report (Evidently imported lazily)

Nothing here imports Prefect or MLflow; the flow gathers the numbers and acts on the verdict.
Importing this package does not import torch or Evidently.
"""

from gates.checks import (DetectionMetrics, check_alert_rate, check_cost, check_data_drift, check_detection,
                          check_energy_drift, check_latency)
from gates.engine import GateMeasurements, evaluate_gate, run_checks
from gates.latency import LatencyBenchmarkError, LatencyStats, benchmark_models
from gates.report import GateReport
from gates.verdict import CheckResult, Verdict, combine

__all__ = ["CheckResult", "DetectionMetrics", "GateMeasurements", "GateReport", "LatencyBenchmarkError",
           "LatencyStats", "Verdict", "benchmark_models", "check_alert_rate", "check_cost", "check_data_drift",
           "check_detection", "check_energy_drift", "check_latency", "combine", "evaluate_gate", "run_checks"]
