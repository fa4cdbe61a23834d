"""Counts the events of Warden's Parquet archive with independent readers, pyarrow and DuckDB.

Usage: count_archive.py ARCHIVE [S3_ENDPOINT]
ARCHIVE is a local directory, or s3://bucket/prefix on the S3-compatible server at S3_ENDPOINT
(credentials from the AWS_* environment). DuckDB reads local files itself; an S3 archive it
scans through pyarrow's S3 filesystem (DuckDB's own httpfs extension would need a download).
Prints one JSON object: {"pyarrow": {"rows": N, "distinct_event_ids": N}, "duckdb": {...}}.
"""

import json
import sys
from urllib.parse import urlparse

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

archive = sys.argv[1]
if archive.startswith("s3://"):
    endpoint = urlparse(sys.argv[2])
    filesystem = pafs.S3FileSystem(
        endpoint_override=endpoint.netloc, scheme=endpoint.scheme, region="us-east-1"
    )
    events_dir = archive.removeprefix("s3://").rstrip("/") + "/events"
    dataset = ds.dataset(events_dir, format="parquet", partitioning="hive", filesystem=filesystem)
    duckdb_source = "dataset"
else:
    events_dir = f"{archive}/events"
    dataset = ds.dataset(events_dir, format="parquet", partitioning="hive")
    duckdb_source = f"read_parquet('{events_dir}/*/*/*.parquet', hive_partitioning = true)"

table = dataset.to_table(columns=["event_id"])
rows, distinct = duckdb.execute(
    f"SELECT count(*), count(DISTINCT event_id) FROM {duckdb_source}"
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
