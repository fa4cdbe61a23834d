"""Archiver throughput benchmark (issue 4): Kafka → Parquet, end to end from a real broker.

Driven by scripts/bench-archive.sh (which builds the release binaries first). Steps, in one run:
  1. start tansu (a real Kafka-protocol broker, memory storage) on loopback;
  2. `event-load produce` fills warden.events with EVENTS realistic events (3 per call);
  3. baseline: `event-load consume` reads them all with a plain librdkafka consumer that does
     nothing else — what reading the topic costs;
  4. `warden archive` (a fresh consumer group) archives them; done when the manifest lists
     EVENTS rows.
CPU seconds are each process's own user + system time (wait4), so events/s per core does not
count the broker's work; the broker's CPU during each phase is reported beside it. All
processes share the machine's cores.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from benchkit import cpu_seconds, run_measured, start_tansu

EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
PARTITIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
WARDEN, EVENT_LOAD, TANSU = sys.argv[3], sys.argv[4], sys.argv[5]


def archived_rows(archive):
    rows = 0
    for entry in glob.glob(f"{archive}/_warden/manifest/*/*.json"):
        try:
            with open(entry) as f:
                rows += json.load(f)["rows"]
        except (OSError, ValueError):
            pass  # being written
    return rows


def main():
    work = tempfile.mkdtemp(prefix="warden-bench-archive-")
    tansu, brokers = start_tansu(TANSU, work)
    try:

        out, seconds, _ = run_measured(
            [EVENT_LOAD, "--brokers", brokers, "--events", str(EVENTS), "produce",
             "--partitions", str(PARTITIONS)])
        produced = json.loads(out)
        json_bytes_per_event = produced["json_bytes"] / EVENTS
        print(f"produced {EVENTS} events in {seconds:.1f} s "
              f"({json_bytes_per_event:.0f} JSON bytes/event)", file=sys.stderr)

        broker_before = cpu_seconds(tansu.pid)
        out, baseline_wall, baseline_cpu = run_measured(
            [EVENT_LOAD, "--brokers", brokers, "--events", str(EVENTS), "consume"])
        baseline_broker = cpu_seconds(tansu.pid) - broker_before
        baseline_steady = json.loads(out)["seconds"]

        archive = f"{work}/archive"
        with open(f"{work}/warden.toml", "w") as f:
            f.write(f"""
[kafka]
brokers = "{brokers}"
partitions = {PARTITIONS}
replication_factor = 1
[audit]
spool_dir = "{work}/spool"
[archive]
url = "{archive}"
flush_interval_s = 2
max_batch_events = 100000
""")
        broker_before = cpu_seconds(tansu.pid)
        started = time.monotonic()
        # PERF_DATA=file records a perf profile of the archiver (figures then include perf).
        profiler = (["perf", "record", "-F", "499", *os.environ.get("PERF_CALL_GRAPH", "-g").split(), "-o", os.environ["PERF_DATA"], "--"]
                    if os.environ.get("PERF_DATA") else [])
        warden = subprocess.Popen(
            profiler + [WARDEN, "archive", "--config", f"{work}/warden.toml"],
            stdout=subprocess.DEVNULL, stderr=open(f"{work}/warden.log", "w"),
            env={**os.environ, "WARDEN_LOG": "warn"}, cwd=work,
        )
        first_rows_at = None
        while (rows := archived_rows(archive)) < EVENTS:
            if rows and first_rows_at is None:
                first_rows_at = time.monotonic()
            if warden.poll() is not None or time.monotonic() - started > 900:
                sys.exit(f"archiver stopped or stalled at {rows} rows; see {work}/warden.log")
            time.sleep(0.1)
        done = time.monotonic()
        archive_broker = cpu_seconds(tansu.pid) - broker_before
        warden.send_signal(signal.SIGINT)
        _, _, usage = os.wait4(warden.pid, 0)
        archive_cpu = usage.ru_utime + usage.ru_stime
        archive_wall = done - started

        parquet = glob.glob(f"{archive}/events/*/*/*.parquet")
        disk_bytes = sum(os.path.getsize(p) for p in parquet)
        print(json.dumps({
            "events": EVENTS, "partitions": PARTITIONS,
            "json_bytes_per_event": round(json_bytes_per_event, 1),
            "baseline": {"wall_s": round(baseline_wall, 2), "steady_s": baseline_steady,
                         "cpu_s": round(baseline_cpu, 2), "broker_cpu_s": round(baseline_broker, 2),
                         "events_per_cpu_s": round(EVENTS / baseline_cpu)},
            "archiver": {"wall_s": round(archive_wall, 2),
                         "first_object_to_done_s": round(done - (first_rows_at or started), 2),
                         "cpu_s": round(archive_cpu, 2), "broker_cpu_s": round(archive_broker, 2),
                         "events_per_cpu_s": round(EVENTS / archive_cpu),
                         "events_per_wall_s": round(EVENTS / archive_wall)},
            "parquet": {"objects": len(parquet), "bytes": disk_bytes,
                        "bytes_per_event": round(disk_bytes / EVENTS, 1)},
        }, indent=2))
    finally:
        tansu.send_signal(signal.SIGTERM)
        tansu.wait()


if __name__ == "__main__":
    main()
