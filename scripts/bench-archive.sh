#!/usr/bin/env bash
# The archiver benchmark (issue 4): events/s per core from a real broker (tansu) to Parquet,
# and bytes per event on disk, beside a plain consumer reading the same topic (the baseline).
#
# Usage: scripts/bench-archive.sh [EVENTS] [PARTITIONS]   (defaults: 1000000 2)
# Needs tansu (scripts/test.sh installs it). Prints one JSON object; see BENCHMARKS.md.
# PERF_DATA=file records a perf profile of the archiver (perf report -i file).
set -euo pipefail

EVENTS=${1:-1000000}
PARTITIONS=${2:-2}
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TANSU=${TANSU_BIN:-$(command -v tansu || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu")}
[ -x "$TANSU" ] || { echo "tansu not found: scripts/test.sh installs it" >&2; exit 1; }

cargo build --release -q -p warden -p warden-testkit --bin warden --bin event-load
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$PYTHON" scripts/bench-archive.py "$EVENTS" "$PARTITIONS" \
    "$TARGET_DIR/release/warden" "$TARGET_DIR/release/event-load" "$TANSU"
