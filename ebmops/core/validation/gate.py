"""Validate a batch, and on failure quarantine it, record it and stop the caller.

This is the one call flows make before a batch is used for training or scoring:
a passing batch returns its :class:`ValidationResult` and leaves nothing behind; a failing
batch is moved aside (see :mod:`ebmops.core.validation.quarantine`), recorded in the state store
when one is given, and :class:`ValidationFailed` is raised with one line per failed
expectation and the quarantine path.
"""

from __future__ import annotations

import logging

import pandas as pd

from ebmops.core.errors import ValidationFailed
from ebmops.core.validation.profile import ReferenceProfile
from ebmops.core.validation.quarantine import quarantine_batch
from ebmops.core.validation.suite import ValidationResult, validate_batch

log = logging.getLogger(__name__)


def validate_or_quarantine(frame: pd.DataFrame, *, dataset: str, region: str | None, profile: ReferenceProfile,
                           settings, store=None) -> ValidationResult:
    """Return the result of a passing batch; quarantine a failing one and raise ValidationFailed.

    ``settings`` is the whole ``Settings`` (its ``quarantine_dir`` and ``validation``);
    ``store`` an optional ``StateStore`` that records the quarantine.
    """
    result = validate_batch(frame, profile, settings)
    if result.success:
        return result
    path = quarantine_batch(frame, result, quarantine_dir=settings.quarantine_dir, dataset=dataset, region=region)
    note = ""
    if store is not None:
        try:
            store.record_quarantine(dataset=dataset, region=region, n_rows=result.n_rows, path=str(path),
                                    failures=result.failures)
        except Exception as e:  # the batch is safely aside; do not hide the validation verdict behind this
            log.error("quarantined %s but could not record it in the state store: %s", path, e)
            note = f"\n(not recorded in the state store: {e.__class__.__name__}: {e})"
    where = f"dataset '{dataset}', region '{region}'" if region else f"dataset '{dataset}'"
    lines = "\n".join(f"  - {m}" for m in result.messages)
    raise ValidationFailed(
        f"batch of {result.n_rows} rows ({where}) failed {len(result.failures)} expectation(s):\n{lines}\n"
        f"quarantined at {path} (see summary.md there); fix the source and feed it in again, "
        f"or delete the folder to discard it.{note}",
        quarantine_path=str(path), failures=result.failures)
