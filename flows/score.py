"""The ``score`` flow: score a stored source with a region's production version (or a named one).

Wiring only (the work is :mod:`ebmops.services.score`): plan, then one task per pending
partition, run by the ``score-partitions`` subflow on Prefect's thread pool, or on a Dask cluster
(prefect-dask) when ``orchestration.dask_address`` names a scheduler. A rerun resumes: finished
partitions are skipped.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import Settings, load_settings
from ebmops.services import score as steps

# Planning fails for reasons a retry does not change (no production version, a foreign output folder).
plan_task = task(steps.plan, name="plan-scoring", cache_policy=NO_CACHE)
# A retry rescoring a partition is safe: its file appears only by rename, with the same bytes.
partition_task = task(steps.score_partition, name="score-partition", retries=1, retry_delay_seconds=2,
                      cache_policy=NO_CACHE)


def task_runner(settings: Settings):
    """Dask when a scheduler address is configured, else threads in this process."""
    address = settings.orchestration.dask_address
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=settings.score.max_workers)


@flow(name="score-partitions", validate_parameters=False)
def score_partitions(job: steps.ScoreJob) -> list[dict]:
    """One task per pending partition; returns their records."""
    log = get_run_logger()
    futures = [partition_task.with_options(task_run_name=f"score-{steps.part_name(i)}").submit(job, i)
               for i in job.pending]
    results = []
    for f in futures:
        results.append(f.result())
        done, total = steps.progress(job)
        r = results[-1]
        log.info("partition %d: %d events, %d anomalous; %d/%d partitions done", r["partition"], r["events"],
                 r["anomalous"], done, total)
    return results


@flow(name="score", log_prints=True)
def score(source: str, out: str | None = None, model: str | None = None, region: str | None = None,
          version: str | None = None, event_id: str | None = None) -> dict:
    """Score ``source`` (a dataset name or a path) into Parquet under ``out`` (default
    ``<home>/scores/<source name>``) with ``region``'s production version of ``model`` (or ``version``);
    resumes a killed run."""
    settings = load_settings()
    prepare_environment(settings)
    out = out or steps.default_out(settings, source)
    log = get_run_logger()
    job = plan_task(settings, source, out, model=model, region=region, version=version, event_id=event_id)
    where = settings.orchestration.dask_address or f"{settings.score.max_workers} threads"
    log.info("%s v%s (%s): %d partitions, %d already scored; scoring %d on %s", job.choice.model,
             job.choice.version, job.choice.why, job.total, len(job.finished), len(job.pending), where)
    results = score_partitions.with_options(task_runner=task_runner(settings))(job) if job.pending else []
    return steps.summary(job, results)
