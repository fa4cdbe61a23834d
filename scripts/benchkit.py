"""What the broker benchmarks (bench-archive.py, bench-detect.py) share: a tansu broker on a
free loopback port, and CPU accounting of the processes measured."""

import os
import socket
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_measured(argv, **kwargs):
    """Runs argv to completion: (stdout, wall seconds, CPU seconds); exits if it fails."""
    started = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, **kwargs)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv[:6])} failed")
    return out, time.monotonic() - started, usage.ru_utime + usage.ru_stime


def start_tansu(tansu, work):
    """A tansu broker (memory storage) on a free loopback port, answering: (process, brokers)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/tansu.log", "w"),
        env={**os.environ, "RUST_LOG": "warn"},
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return broker, f"127.0.0.1:{port}"
