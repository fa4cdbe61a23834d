#!/usr/bin/env bash
# The proxy benchmark (issue 3): requests/s and p50/p99 latency of non-streamed chat calls,
# direct to a fast upstream (the TGI emulator, release build) and through `warden up` (event
# emission on: every call's three events go through the embedded broker to the Parquet
# archive), at a fixed rate and at saturation, side by side in one run.
#
# Usage: scripts/bench-proxy.sh [RATE] [SECONDS] [CONNECTIONS]   (defaults: 2000 20 64)
# Needs oha (`cargo install --locked oha`). Prints a Markdown table for BENCHMARKS.md.
# ROLE=proxy runs `warden proxy` (events to the embedded broker, no archiver or detector in
# the process) instead of `warden up`. PROFILE_DIR=dir records `perf` profiles of warden
# during the through-Warden runs (perf report -i dir/fixed.perf). WARDEN_BIN=path runs that
# warden binary instead of this checkout's release build (e.g. an earlier commit's, to
# compare builds side by side; with EMULATOR_BIN too, nothing is built). DURABILITY=acked sets `[audit].durability = "acked"` (each
# answer waits for its events' acknowledgement). BROKER=tansu runs a tansu broker (memory
# storage, `~/.cargo/bin/tansu` or $TANSU_BIN) instead of the embedded one. POLICIES=1
# configures every member of the policy chain without letting any refuse (rate limits on
# client, IP and globally, requests and tokens; a budget; router rules) — a build from before
# the chain existed does not know these keys, so leave it unset there.
set -euo pipefail

RATE=${1:-2000}
SECONDS_PER_RUN=${2:-20}
CONNECTIONS=${3:-64}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
[ -x "$OHA" ] || { echo "oha not found: cargo install --locked oha" >&2; exit 1; }
PYTHON=${PYTHON:-python3}

# WARDEN_BIN and EMULATOR_BIN together: prebuilt binaries, nothing is built.
if [ -z "${WARDEN_BIN:-}" ] || [ -z "${EMULATOR_BIN:-}" ]; then
    cargo build --release -q -p warden -p warden-testkit --bin warden --bin tgi-emulator
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
fi
WARDEN="${WARDEN_BIN:-$TARGET_DIR/release/warden}"
EMULATOR="${EMULATOR_BIN:-$TARGET_DIR/release/tgi-emulator}"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UPSTREAM_PORT=$(free_port)
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
KEY="sk-bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
KEY_SHA256=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)

"$EMULATOR" --listen "127.0.0.1:$UPSTREAM_PORT" >"$WORK/emulator.log" 2>&1 &
PIDS+=($!)
BROKERS=embedded
if [ "${BROKER:-embedded}" = tansu ]; then
    TANSU=${TANSU_BIN:-$HOME/.cargo/bin/tansu}
    BROKER_PORT=$(free_port)
    RUST_LOG=warn "$TANSU" broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
        --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
    PIDS+=($!)
    BROKERS="127.0.0.1:$BROKER_PORT"
    for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && break; sleep 0.1; done
fi
cat >"$WORK/warden.toml" <<EOF
[proxy]
listen = "127.0.0.1:$PROXY_PORT"
$( [ -n "${NO_ADMIN_LISTEN:-}" ] || printf 'admin_listen = "127.0.0.1:%s"\nfingerprint_key_file = "%s/fingerprint.key"' "$ADMIN_PORT" "$WORK" )
[[proxy.targets]]
id = "llama"
kind = "tgi-messages"
base_url = "http://127.0.0.1:$UPSTREAM_PORT"
pricing = { input_per_1k_tokens = 0.0002, output_per_1k_tokens = 0.0006 }
[[proxy.clients]]
name = "bench"
key_sha256 = "$KEY_SHA256"
$( [ -z "${POLICIES:-}" ] || cat <<'POLICIES'
role = "production"
team = "benchmarks"
[[proxy.rate_limits]]
subject = "client"
requests_per_second = 1000000
tokens_per_minute = 1000000000000
[[proxy.rate_limits]]
subject = "ip"
requests_per_minute = 1000000000
[[proxy.rate_limits]]
subject = "global"
requests_per_second = 1000000
[[proxy.budgets]]
team = "benchmarks"
usd_per_day = 1000000.0
[proxy.router]
rules = [
  { when_role = "production", target = "llama" },
  { when_header = { name = "x-tier", value = "batch" }, target = "llama" },
  { default = true, target = "llama" },
]
POLICIES
)
[kafka]
brokers = "$BROKERS"
[audit]
spool_dir = "$WORK/spool"
$( [ -z "${DURABILITY:-}" ] || printf 'durability = "%s"' "$DURABILITY" )
[archive]
url = "$WORK/archive"
flush_interval_s = 2
EOF
ROLE=${ROLE:-up}
WARDEN_LOG=warn "$WARDEN" "$ROLE" --config "$WORK/warden.toml" >"$WORK/warden.log" 2>&1 &
WARDEN_PID=$!
PIDS+=($WARDEN_PID)
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PROXY_PORT/healthz" >/dev/null && curl -sf "http://127.0.0.1:$UPSTREAM_PORT/health" >/dev/null && break
    sleep 0.1
done

BODY='{"model":"llama","messages":[{"role":"user","content":"Say hello to the benchmark"}],"max_tokens":16}'
DIRECT="http://127.0.0.1:$UPSTREAM_PORT/v1/chat/completions"
THROUGH="http://127.0.0.1:$PROXY_PORT/v1/chat/completions"

run() { # name url extra-oha-args...
    local name=$1 url=$2
    shift 2
    "$OHA" --no-tui --output-format json -m POST -T application/json \
        -H "authorization: Bearer $KEY" -d "$BODY" "$@" "$url" >"$WORK/$name.json"
}

# Warm both paths (connection pools, allocator, page cache).
run warmup-direct "$DIRECT" -n 2000 -c 16
run warmup-through "$THROUGH" -n 2000 -c 16

run fixed-direct "$DIRECT" -z "${SECONDS_PER_RUN}s" -q "$RATE" -c "$CONNECTIONS" --latency-correction
profiled() { # name: runs the rest under perf when PROFILE_DIR is set
    local name=$1
    shift
    if [ -n "${PROFILE_DIR:-}" ]; then
        mkdir -p "$PROFILE_DIR"
        perf record -q -F 997 -g -p "$WARDEN_PID" -o "$PROFILE_DIR/$name.perf" 2>/dev/null &
        local perf_pid=$!
        "$@"
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
    else
        "$@"
    fi
}
profiled fixed run fixed-through "$THROUGH" -z "${SECONDS_PER_RUN}s" -q "$RATE" -c "$CONNECTIONS" --latency-correction
run saturation-direct "$DIRECT" -z "${SECONDS_PER_RUN}s" -c "$CONNECTIONS"
profiled saturation run saturation-through "$THROUGH" -z "${SECONDS_PER_RUN}s" -c "$CONNECTIONS"

# /metrics is on the admin listener (NO_ADMIN_LISTEN=1: a build from before it existed).
METRICS_PORT=$ADMIN_PORT; [ -z "${NO_ADMIN_LISTEN:-}" ] || METRICS_PORT=$PROXY_PORT
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics.txt"

"$PYTHON" - "$WORK" "$RATE" "$CONNECTIONS" "$SECONDS_PER_RUN" <<'EOF'
import json, sys, re
work, rate, connections, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

def load(name):
    with open(f"{work}/{name}.json") as f:
        data = json.load(f)
    summary = data["summary"]
    pct = data["latencyPercentiles"]
    codes = data.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    total = sum(codes.values()) + sum(data.get("errorDistribution", {}).values())
    return {
        "rps": summary["requestsPerSec"],
        "p50": pct["p50"] * 1000,
        "p99": pct["p99"] * 1000,
        "ok": ok,
        "total": total,
    }

print(f"| load | path | requests/s | p50 ms | p99 ms | 2xx / sent |")
print("|---|---|---:|---:|---:|---:|")
rows = {}
for load_name, label in [("fixed", f"fixed {rate} req/s"), ("saturation", f"saturation, {connections} connections")]:
    for path in ["direct", "through"]:
        r = load(f"{load_name}-{path}")
        rows[(load_name, path)] = r
        print(f"| {label} | {'direct' if path == 'direct' else 'through Warden'} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['ok']} / {r['total']} |")
fixed_added = rows[("fixed", "through")]["p99"] - rows[("fixed", "direct")]["p99"]
ratio = rows[("saturation", "through")]["rps"] / rows[("saturation", "direct")]["rps"]
print()
print(f"Added p99 at {rate} req/s: {fixed_added:.3f} ms (goal <= 1 ms). "
      f"Saturation throughput through Warden: {ratio:.0%} of direct (goal >= 60%).")

metrics = open(f"{work}/metrics.txt").read()
def hist(name):
    buckets = [(float('inf') if le == '+Inf' else float(le), float(v)) for le, v in re.findall(name + r'_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)', metrics)]
    count = re.search(name + r'_count(?:\{[^}]*\})? (\S+)', metrics)
    total = re.search(name + r'_sum(?:\{[^}]*\})? (\S+)', metrics)
    return buckets, float(count.group(1)) if count else 0, float(total.group(1)) if total else 0
for name in ["warden_proxy_added_latency_seconds", "warden_proxy_upstream_latency_seconds"]:
    _, count, total = hist(name)
    if count:
        print(f"{name}: mean {total / count * 1000:.3f} ms over {count:.0f} calls")
emitted = re.search(r'warden_events_emitted_total (\S+)', metrics)
dropped = re.search(r'warden_events_dropped_total (\S+)', metrics)
print(f"events emitted {emitted.group(1) if emitted else '?'}, dropped {dropped.group(1) if dropped else '?'}")
EOF
