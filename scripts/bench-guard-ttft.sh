#!/usr/bin/env bash
# Time to first content token through `warden proxy` without and with the guardrails
# (injection, pii, content), and direct, against the TGI emulator at 20 ms a token: 50
# sequential streamed calls each; prints median and p99 ms as Markdown rows. Builds nothing:
# run after `cargo build` (or with WARDEN_TARGET=target/release after a release build).
set -e
cd "$(dirname "$0")/.."
W=${WARDEN_TARGET:-target/debug}   # set to target/release for release binaries
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK/pids") $EMU 2>/dev/null; rm -rf "$WORK"' EXIT
$W/tgi-emulator --listen 127.0.0.1:18300 --token-delay-ms 20 > "$WORK/emu.log" 2>&1 &
EMU=$!
for mode in off on; do
  port=$([ $mode = off ] && echo 18301 || echo 18302)
  chain='["auth", "router"]'
  [ $mode = on ] && chain='["auth", "injection", "pii", "content", "router"]'
  cat > "$WORK/$mode.toml" <<T
[proxy]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:0"
fingerprint_key_file = "$WORK/$mode.key"
[proxy.policies]
chain = $chain
[[proxy.targets]]
id = "llama"
kind = "tgi-messages"
base_url = "http://127.0.0.1:18300"
[kafka]
brokers = "embedded"
[audit]
spool_dir = "$WORK/spool-$mode"
T
  WARDEN_LOG=warn $W/warden proxy --config "$WORK/$mode.toml" > "$WORK/$mode.log" 2>&1 &
  echo $! >> "$WORK/pids"
done
sleep 3
python3 - <<'P'
import http.client, json, time, statistics
def ttft(port, url_path):
    c = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"model": "llama", "stream": True, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16})
    t0 = time.perf_counter()
    c.request("POST", url_path, body, {"content-type": "application/json"})
    r = c.getresponse()
    first = None
    buf = b""
    while True:
        line = r.readline()
        if not line: break
        if line.startswith(b"data: {"):
            d = json.loads(line[6:])
            ch = d.get("choices") or []
            if ch and ((ch[0].get("delta") or {}).get("content") or ch[0].get("text")):
                first = time.perf_counter() - t0
                break
    c.close()
    return first * 1000
res = {}
for name, port, path in [("direct", 18300, "/v1/chat/completions"), ("warden, no guardrails", 18301, "/v1/chat/completions"), ("warden, injection+pii+content", 18302, "/v1/chat/completions")]:
    xs = [ttft(port, path) for _ in range(5)]
    xs = sorted(ttft(port, path) for _ in range(50))
    res[name] = xs
    print(f"| {name} | {statistics.median(xs):.1f} | {xs[int(len(xs)*0.99)-1]:.1f} |")
P
