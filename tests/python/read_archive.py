"""Reads Warden's Parquet archive with independent readers, pyarrow and DuckDB.

Usage: read_archive.py ARCHIVE_DIR REQUEST_ID
Prints one JSON object: the events of REQUEST_ID as each reader sees them.
"""

import json
import sys

import duckdb
import pyarrow.dataset as ds

archive, request_id = sys.argv[1:3]
events_dir = f"{archive}/events"

dataset = ds.dataset(events_dir, format="parquet", partitioning="hive")
table = dataset.to_table(filter=ds.field("request_id") == request_id)
pyarrow_rows = sorted(
    (
        {
            "kind": row["kind"],
            "status": (row["response"] or {}).get("status"),
            "dt": str(row["dt"]),
            "hour": int(row["hour"]),
        }
        for row in table.to_pylist()
    ),
    key=lambda r: r["kind"],
)

duckdb_rows = duckdb.execute(
    f"""
    SELECT kind, response.status AS status, client.token_id AS token_id
    FROM read_parquet('{events_dir}/*/*/*.parquet', hive_partitioning = true)
    WHERE request_id = ?
    ORDER BY kind
    """,
    [request_id],
).fetchall()

print(
    json.dumps(
        {
            "pyarrow": pyarrow_rows,
            "duckdb": [{"kind": k, "status": s, "token_id": t} for k, s, t in duckdb_rows],
        }
    )
)
