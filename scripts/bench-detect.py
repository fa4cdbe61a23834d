"""Detector benchmark (issue 5) from a real broker: throughput and alert latency.

Driven by scripts/bench-detect.sh (which builds the release binaries first). In one run:
  1. start tansu (a real Kafka-protocol broker, memory storage) on loopback;
  2. `event-load produce` fills warden.events with EVENTS realistic events (3 per call, event
     time 1 ms per call, so about 3,000 events per event-time second);
  3. baseline: `event-load consume` reads them with a plain librdkafka consumer that does
     nothing else — what reading the topic costs;
  4. throughput: one `warden detect` worker (both stages: the keyed stage reads warden.events
     and passes every event on to warden.detect.shared, the shared stage reads that) works
     through the backlog; done when both groups have committed every record. Events/s per core
     is EVENTS ÷ the worker's CPU seconds (its own user + system time), so the broker's work
     and the commit interval's idle seconds do not count;
  5. latency: with the worker still running (now on live input), `event-load latency` sends
     live traffic at RATE events/s and every BURST_MS a brute-force burst from a fresh IP, and
     times each burst's threshold-crossing event to its alert arriving on warden.alerts. IP
     subjects are the shared stage's, so this is the full path: proxy-side produce → keyed
     stage → warden.detect.shared → shared stage → warden.alerts → a consumer.
All processes share the machine's cores.
"""

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
RATE = int(sys.argv[3]) if len(sys.argv) > 3 else 3_000
LATENCY_SECONDS = int(sys.argv[4]) if len(sys.argv) > 4 else 60
WARDEN, EVENT_LOAD, TANSU = sys.argv[5], sys.argv[6], sys.argv[7]
# FETCH_WAIT_MS=n sets the worker's fetch.wait.max.ms (Warden's default is 100);
# WORKER_KAFKA="name=value,..." sets other librdkafka properties of the worker.
FETCH_WAIT_MS = os.environ.get("FETCH_WAIT_MS")
WORKER_KAFKA = dict(item.split("=", 1) for item in os.environ.get("WORKER_KAFKA", "").split(",")
                    if item)
if FETCH_WAIT_MS:
    WORKER_KAFKA["fetch.wait.max.ms"] = FETCH_WAIT_MS
KAFKA_PROPERTIES = ("[kafka.properties]\n" + "".join(f'"{k}" = "{v}"\n'
                                                     for k, v in WORKER_KAFKA.items())
                    if WORKER_KAFKA else "")


def main():
    work = tempfile.mkdtemp(prefix="warden-bench-detect-")
    tansu, brokers = start_tansu(TANSU, work)
    warden = None
    try:
        load = [EVENT_LOAD, "--brokers", brokers, "--events", str(EVENTS)]

        _, seconds, _ = run_measured(load + ["produce", "--partitions", str(PARTITIONS)])
        print(f"produced {EVENTS} events in {seconds:.1f} s", file=sys.stderr)

        out, baseline_wall, baseline_cpu = run_measured(load + ["consume"])
        baseline_steady = json.loads(out)["seconds"]

        with open(f"{work}/warden.toml", "w") as f:
            f.write(f"""
[kafka]
brokers = "{brokers}"
partitions = {PARTITIONS}
replication_factor = 1
{KAFKA_PROPERTIES}
""")
        broker_before = cpu_seconds(tansu.pid)
        started = time.monotonic()
        # PERF_CALL_GRAPH=dwarf attributes time to callers (our release build has no frame
        # pointers, so the default `fp` call graphs stop at the first frame).
        call_graph = os.environ.get("PERF_CALL_GRAPH", "fp")
        profiler = (["perf", "record", "-F", "499", "--call-graph", call_graph,
                     "-o", os.environ["PERF_DATA"], "--"]
                    if os.environ.get("PERF_DATA") else [])
        warden = subprocess.Popen(
            profiler + [WARDEN, "detect", "--config", f"{work}/warden.toml"],
            stdout=subprocess.DEVNULL, stderr=open(f"{work}/warden.log", "w"),
            env={**os.environ, "WARDEN_LOG": "info"}, cwd=work,
        )
        warden_pid = warden.pid
        for group, topic in [("warden-detect", "warden.events"),
                             ("warden-detect-shared", "warden.detect.shared")]:
            run_measured(load + ["wait-committed", "--group", group, "--topic", topic])
        done = time.monotonic()
        detect_cpu = cpu_seconds(warden_pid) if not profiler else float("nan")
        detect_broker = cpu_seconds(tansu.pid) - broker_before
        print(f"detect caught up in {done - started:.1f} s", file=sys.stderr)

        out, _, _ = run_measured(load + ["latency", "--rate", str(RATE),
                                "--seconds", str(LATENCY_SECONDS)])
        latency = json.loads(out)

        warden.send_signal(signal.SIGINT)
        _, _, usage = os.wait4(warden.pid, 0)
        warden = None
        with open(f"{work}/warden.log") as f:
            closing = [line.strip() for line in f if "detect loop stopped" in line]

        print(json.dumps({
            "events": EVENTS, "partitions": PARTITIONS,
            "worker_fetch_wait_max_ms": int(FETCH_WAIT_MS or 100),
            "worker_kafka_properties": WORKER_KAFKA,
            "baseline": {"wall_s": round(baseline_wall, 2), "steady_s": baseline_steady,
                         "cpu_s": round(baseline_cpu, 2),
                         "events_per_cpu_s": round(EVENTS / baseline_cpu)},
            "detect": {"to_committed_wall_s": round(done - started, 2),
                       "cpu_s": round(detect_cpu, 2), "broker_cpu_s": round(detect_broker, 2),
                       "events_per_cpu_s": (round(EVENTS / detect_cpu)
                                            if detect_cpu == detect_cpu else None),
                       "events_per_wall_s": round(EVENTS / (done - started))},
            "latency": {"background_events_per_s": RATE, "seconds": LATENCY_SECONDS, **latency},
            "worker_log": closing[-4:],
        }, indent=2))
    finally:
        if warden is not None:
            warden.kill()
        tansu.send_signal(signal.SIGTERM)
        tansu.wait()


if __name__ == "__main__":
    main()
