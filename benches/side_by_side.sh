#!/usr/bin/env bash
# The do-nothing RiskEngine server (benches/null_server.rs) and `fengkong serve`, one after
# the other, under the same `fengkong loadgen` traffic. For each: server CPU per call (the
# server process's utime+stime from /proc/<pid>/stat over the loadgen run, divided by the
# decisions served), p50/p99/p99.9 as loadgen measured them, and the CPU ratio.
#
# usage: benches/side_by_side.sh [rate/s] [duration] [concurrency]   (5000 30s 8)
#   SKIP_BUILD=1 uses the binaries already built; CARGO_TARGET_DIR is honoured;
#   FENGKONG=path/to/fengkong serves (and loads) with another build, e.g. an older one.
set -euo pipefail
rate=${1:-5000}
duration=${2:-30s}
concurrency=${3:-8}
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --bin fengkong --example null_server >&2
fi
fengkong=${FENGKONG:-$target/release/fengkong}
null_server=$target/release/examples/null_server
tick=$(getconf CLK_TCK)
work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_one NAME COMMAND...: starts the server, loads it, prints one table row.
run_one() {
    local name=$1
    shift
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    server_pid=$!
    local addr=
    for _ in $(seq 1 600); do
        addr=$(sed -n 's/^fengkong listening on //p' "$work/$name.out" | head -1)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "$name did not start:" >&2
        cat "$work/$name.err" >&2
        exit 1
    fi
    local before after
    before=$(cpu_ticks "$server_pid")
    "$fengkong" loadgen --addr "$addr" --rate "$rate" --duration "$duration" \
        --concurrency "$concurrency" --json >"$work/$name.json"
    after=$(cpu_ticks "$server_pid")
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    python3 - "$name" "$work/$name.json" "$before" "$after" "$tick" "$work/cpu" <<'PY'
import json, sys
name, path, before, after, tick, cpu_file = sys.argv[1:]
r = json.load(open(path))
cpu_us = (int(after) - int(before)) / int(tick) * 1e6 / max(r["ok"], 1)
ratio = ""
try:
    floor = float(open(cpu_file).read())
    ratio = f" ({cpu_us / floor:.1f}x)"
except FileNotFoundError:
    open(cpu_file, "w").write(str(cpu_us))
l = r["latency_us"]
print(f"| {name} | {r['achieved_rps']:,.0f}/s, {r['errors']} errors, {r['refused']} refused "
      f"| {cpu_us:.0f} µs{ratio} | {l['p50']/1000:.2f} ms | {l['p99']/1000:.2f} ms "
      f"| {l['p999']/1000:.2f} ms |")
PY
}

echo "offered $rate/s for $duration, loadgen --concurrency $concurrency"
echo "| server | served | server CPU per call | p50 | p99 | p99.9 |"
echo "|---|---|---|---|---|---|"
run_one null_server "$null_server" --listen 127.0.0.1:0
run_one fengkong "$fengkong" serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --data-dir "$work/data"
