"""Counts the events of Warden's Parquet archive with independent readers, pyarrow and DuckDB.

Usage: count_archive.py ARCHIVE_DIR
Prints one JSON object: {"pyarrow": {"rows": N, "distinct_event_ids": N}, "duckdb": {...}}.
"""

import json
import sys

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds

events_dir = f"{sys.argv[1]}/events"

table = ds.dataset(events_dir, format="parquet", partitioning="hive").to_table(
    columns=["event_id"]
)
rows, distinct = duckdb.execute(
    f"""
    SELECT count(*), count(DISTINCT event_id)
    FROM read_parquet('{events_dir}/*/*/*.parquet', hive_partitioning = true)
    """
).fetchone()
print(
    json.dumps(
        {
            "pyarrow": {
                "rows": table.num_rows,
                "distinct_event_ids": len(pc.unique(table["event_id"])),
            },
            "duckdb": {"rows": rows, "distinct_event_ids": distinct},
        }
    )
)
