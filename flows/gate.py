"""The ``gate`` flow: measure a registered version against the champion, judge, record."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.core.aliases import CHALLENGER
from ebmops.services import gate as steps
from ebmops.services import models

resolve_task = task(steps.resolve, name="fetch-candidate-and-champion", retries=2, retry_delay_seconds=2,
                    cache_policy=NO_CACHE)
window_task = task(steps.window, name="benchmark-window", cache_policy=NO_CACHE)
benchmark_task = task(steps.benchmark, name="latency-benchmark", cache_policy=NO_CACHE)
measure_task = task(steps.measure, name="energies-detection-drift", cache_policy=NO_CACHE)
judge_task = task(steps.judge, name="judge", cache_policy=NO_CACHE)
record_task = task(steps.record, name="record-verdict", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)


@flow(name="gate", log_prints=True)
def gate(version: str | None = None, window_path: str | None = None, hotfix: bool = False,
         model: str | None = None) -> dict:
    """Gate a version (default: the challenger): latency, energy drift, alert rate, detection,
    data drift and cost against the champion. A pass sets the alias ``candidate``.
    ``window_path`` (Parquet of recent events) replaces the benchmark window: a hotfix gates on the
    region's recent traffic; ``hotfix`` waives the alert-rate comparison with the champion (on drifted
    traffic the champion's alert rate is what the hotfix corrects; the absolute ceiling still applies).
    ``model`` names the registered model (default: the only one, or the configured one); the window,
    the holdout and the champion are that model's, on the version's own dataset."""
    settings = models.resolve(load_settings(), model=model, version=version or f"@{CHALLENGER}")
    prepare_environment(settings)
    subjects = resolve_task(settings, version)
    win = window_task(settings, window_path)
    latency = benchmark_task(subjects, settings)
    measurements = measure_task(subjects, settings, latency, win)
    if hotfix:
        measurements.waived["alert_rate_vs_champion"] = ("hotfix gate: on the region's drifted traffic the champion's "
                                                          "alert rate is what the fix corrects")
    report = judge_task(measurements, settings)
    out = record_task(report, subjects, settings, open_store(settings))
    create_markdown_artifact(report.to_markdown(), key="gate-report",
                             description=f"{report.model_name} v{report.model_version}: {report.verdict.value}")
    get_run_logger().info("gate verdict for v%s: %s (%s)", out["version"], out["verdict"], out["action"])
    return {**out, "report": report.to_dict()}
