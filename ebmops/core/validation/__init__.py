"""Batch validation: check every batch against its dataset's reference before it is used.

* :mod:`~ebmops.core.validation.profile`: the reference profile of a dataset (ranges, schema),
  built once from the first data seen and stored as ``<data_dir>/reference/<dataset>.json``;
* :mod:`~ebmops.core.validation.suite`: the expectation suite derived from it, as plain data, and
  :func:`validate_batch`, which runs it with Great Expectations;
* :mod:`~ebmops.core.validation.quarantine`: failing batches moved aside, atomically;
* :mod:`~ebmops.core.validation.gate`: :func:`validate_or_quarantine`, the call flows make;
* :mod:`~ebmops.core.validation.files`: :func:`validate_file`, for a user's file from the CLI;
* :mod:`~ebmops.core.validation.stream`: :func:`validate_source`, a streamed source in one pass:
  exact checks over every batch, the suite on a seeded sample per region, one report.

Great Expectations is imported on the first validation, not here (it costs 5-19 s).
"""

from ebmops.core.validation.files import validate_file
from ebmops.core.validation.gate import validate_or_quarantine
from ebmops.core.validation.profile import ReferenceProfile, load_or_create_reference, reference_path
from ebmops.core.validation.quarantine import quarantine_batch
from ebmops.core.validation.expectations import ExpectationSpec
from ebmops.core.validation.suite import ValidationResult, build_suite, validate_batch
from ebmops.core.validation.stream import reference_for_source, validate_source

__all__ = ["ExpectationSpec", "ReferenceProfile", "ValidationResult", "build_suite", "load_or_create_reference",
           "quarantine_batch", "reference_for_source", "reference_path", "validate_batch", "validate_file",
           "validate_or_quarantine", "validate_source"]
