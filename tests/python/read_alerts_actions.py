"""Reads the `alerts` and `actions` tables of Warden's Parquet archive with DuckDB.

Usage: read_alerts_actions.py ARCHIVE_DIR
Prints one JSON object: {"alerts": [[detector, severity, subject, top source], ...],
"actions": [[action, subject, alert_dedup_key], ...]}, each sorted.
"""

import json
import sys

import duckdb

archive = sys.argv[1]
alerts = duckdb.execute(
    f"""
    SELECT detector, severity, subject, evidence.top_sources[1].source
    FROM read_parquet('{archive}/alerts/*/*/*.parquet', hive_partitioning = true)
    ORDER BY detector
    """
).fetchall()
actions = duckdb.execute(
    f"""
    SELECT action, subject, alert_dedup_key
    FROM read_parquet('{archive}/actions/*/*/*.parquet', hive_partitioning = true)
    ORDER BY action
    """
).fetchall()
print(json.dumps({"alerts": [list(r) for r in alerts], "actions": [list(r) for r in actions]}))
