#!/usr/bin/env bash
# The detector benchmark (issue 5) from a real broker (tansu): events/s per core of one
# `warden detect` worker working through a backlog, beside a plain consumer (the baseline);
# then alert latency (threshold-crossing event sent → alert received) on live traffic.
#
# Usage: scripts/bench-detect.sh [EVENTS] [PARTITIONS] [RATE] [LATENCY_SECONDS]
#        (defaults: 1000000 2 3000 60)
# Needs tansu (scripts/test.sh installs it). Prints one JSON object; see BENCHMARKS.md.
# PERF_DATA=file records a perf profile of the worker (its CPU figure is then not measured).
set -euo pipefail

EVENTS=${1:-1000000}
PARTITIONS=${2:-2}
RATE=${3:-3000}
LATENCY_SECONDS=${4:-60}
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TANSU=${TANSU_BIN:-$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")}
[ -x "$TANSU" ] || { echo "tansu not found: scripts/test.sh installs it" >&2; exit 1; }

cargo build --release -q -p warden -p warden-testkit --bin warden --bin event-load
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$PYTHON" scripts/bench-detect.py "$EVENTS" "$PARTITIONS" "$RATE" "$LATENCY_SECONDS" \
    "$TARGET_DIR/release/warden" "$TARGET_DIR/release/event-load" "$TANSU"
