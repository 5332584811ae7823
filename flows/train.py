"""The ``train`` flow: validate every regional batch, train, evaluate, register (the source is streamed)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ebmops.core.runtime import prepare_environment
from ebmops.core.settings import load_settings
from ebmops.core.state import open_store
from ebmops.services import train as steps
from flows.gate import gate as gate_flow

# Retries only where they are safe: the fetch writes atomically, training resumes from its
# checkpoint, registration is idempotent. Validation and evaluation are deterministic.
load_task = task(steps.load, name="open-dataset", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
validate_task = task(steps.validate, name="validate-regions", cache_policy=NO_CACHE)
split_task = task(steps.split, name="split", cache_policy=NO_CACHE)
fit_task = task(steps.fit, name="fit", retries=1, cache_policy=NO_CACHE)
finalize_task = task(steps.finalize, name="calibrate-export", cache_policy=NO_CACHE)
evaluate_task = task(steps.evaluate, name="evaluate", cache_policy=NO_CACHE)
register_task = task(steps.register, name="register", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)


@flow(name="train", log_prints=True)
def train(dataset: str | None = None, epochs: int | None = None, device: str | None = None,
          seed: int | None = None, progress: bool = True, run_gate: bool = True, model: str | None = None) -> dict:
    """Validate each regional batch, train an EBM, evaluate it against IsolationForest,
    register it as the ``challenger`` of the dataset's model (``ebm-<dataset>`` or the source's
    ``model``; ``model`` alone names its configured dataset) and (unless ``run_gate`` is false) gate it."""
    settings = steps.settings_for_run(load_settings(), dataset=dataset, model=model, epochs=epochs, device=device,
                                      seed=seed)
    prepare_environment(settings)
    log = get_run_logger()
    store = open_store(settings)
    ds = load_task(settings)
    key = steps.run_key(ds, settings)
    with steps.TrainingRecord.start(store, ds) as record:
        validated = validate_task(ds, settings, store=store, progress=progress)
        data_split = split_task(ds, settings, progress=progress)
        result = fit_task(ds, data_split, settings, key, progress=progress)
        cand = finalize_task(result, data_split, settings, key)
        metrics = evaluate_task(cand, data_split, settings)
        name = settings.registry.model_name
        draft = steps.summary_markdown(ds, cand, metrics, validated)
        info = register_task(cand, metrics, ds, settings, summary_md=draft, data_split=data_split)
        record.registered(cand, metrics, info, name)
        create_markdown_artifact(steps.summary_markdown(ds, cand, metrics, validated, version=info.version,
                                                        model_name=name),
                                 key="train-summary", description=f"{name} v{info.version}")
        log.info("registered %s version %s (alias challenger)", name, info.version)
        gated = gate_flow(version=info.version, model=name) if run_gate else None
        return steps.result(record, cand, metrics, info, validated, gated)
