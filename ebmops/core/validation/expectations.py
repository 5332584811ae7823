"""The expectations of a batch as data: each one's Great Expectations type and kwargs, and the
names of the types the suite uses (the suite builds them, the failure reader explains them)."""

from __future__ import annotations

from dataclasses import dataclass, field

# dtype names a numeric feature may have (numpy and pandas' nullable ones); bool is not a number here.
NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "Int8", "Int16", "Int32", "Int64",
                 "UInt8", "UInt16", "UInt32", "UInt64", "Float32", "Float64"]

COLUMNS = "expect_table_columns_to_match_set"
NUMERIC = "expect_column_values_to_be_in_type_list"
NOT_NULL = "expect_column_proportion_of_non_null_values_to_be_between"
MIN = "expect_column_min_to_be_between"
MAX = "expect_column_max_to_be_between"
IN_SET = "expect_column_distinct_values_to_be_in_set"
ROWS = "expect_table_row_count_to_be_between"


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation as data: its Great Expectations type (snake case) and kwargs."""

    type: str
    kwargs: dict = field(default_factory=dict)

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    def to_dict(self) -> dict:
        return {"type": self.type, "kwargs": dict(self.kwargs)}
