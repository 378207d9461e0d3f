"""Write a PCollection of records as one sorted Parquet file (nothing at all when it is empty)."""
from __future__ import annotations

from typing import Callable

import apache_beam as beam
import pyarrow as pa

from corpus.shards import table_bytes
from storage import fs


def _sort_key(row: dict):
    return tuple("" if v is None else str(v) for v in row.values())


def write_rows(path: str, rows, schema: pa.Schema) -> int:
    rows = sorted(rows, key=_sort_key)
    if rows:
        fs.atomic_write_bytes(path, table_bytes(rows, schema))
    return len(rows)


class WriteTable(beam.PTransform):
    """records → ``path`` (Parquet, rows sorted so reruns write the same file); emits the row count."""

    def __init__(self, path: str, schema: pa.Schema, to_row: Callable):
        super().__init__()
        self.path, self.schema, self.to_row = path, schema, to_row

    def expand(self, records):
        path, schema = self.path, self.schema
        return (records
                | "ToRow" >> beam.Map(self.to_row)
                | "One" >> beam.Map(lambda row: (None, row))
                | "Gather" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(lambda _, rows: write_rows(path, rows, schema)))
