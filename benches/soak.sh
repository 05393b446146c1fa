#!/usr/bin/env bash
# Soak benchmark (issue 7, point 8): `portcullis serve` on the shipped defaults (sled store,
# policies/default.toml) under a realistic mixed trace at half of its measured capacity for
# DURATION seconds (default 600), on loopback. Records latency per interval (open loop,
# corrected for coordinated omission), errors, the service's resident memory and its tracked
# keys every SAMPLE seconds. Not a CI test: a benchmark, bounded in time, that stops by itself.
#
#   bash benches/soak.sh                 # 10 minutes; results in target/soak/
#   DURATION=60 bash benches/soak.sh     # a short rehearsal
#
# Output: target/soak/capacity.json (closed-loop run), target/soak/soak.json (the open-loop run
# with `intervals`), target/soak/memory.csv (t, rss_kib, accounts, sources, sprays), and a summary
# on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-10}
USERS=${USERS:-20000}
HTTP=127.0.0.1:18480
GRPC=127.0.0.1:18481
OUT=target/soak
mkdir -p "$OUT"

cargo build --release -q -p portcullis-server -p portcullis-benches --bin portcullis --bin portcullis-load
BIN=target/release
TRACE="$OUT/mixed-$USERS.jsonl.gz"
[ -f "$TRACE" ] || "$BIN/portcullis" synth --scenario mixed_week --users "$USERS" --seed 11 --out "$TRACE"

DATA=$(mktemp -d)
"$BIN/portcullis" serve --data "$DATA/db" --http "$HTTP" --grpc "$GRPC" >"$OUT/serve.log" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.1; done

echo "== capacity: closed loop, 32 connections, 15 s"
"$BIN/portcullis-load" run --mode http-pair --trace "$TRACE" --http "http://$HTTP" \
  --grpc "http://$GRPC" --concurrency 32 --duration 15 >"$OUT/capacity.json"
CAP=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["attempts_per_second"]))' "$OUT/capacity.json")
RATE=$((CAP / 2))
echo "capacity $CAP attempts/s; soak at $RATE attempts/s for $DURATION s"

sample() {
  echo "t_s,rss_kib,accounts,sources,sprays" >"$OUT/memory.csv"
  local t0=$SECONDS
  while kill -0 "$PID" 2>/dev/null; do
    local rss m
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status" 2>/dev/null || echo 0)
    m=$(curl -sf "http://$HTTP/metrics" || true)
    kind() { echo "$m" | awk -v k="$1" '$1 ~ "^portcullis_tracked_keys\\{kind=\""k"\"" {print $2}'; }
    echo "$((SECONDS - t0)),$rss,$(kind accounts),$(kind sources),$(kind sprays)" >>"$OUT/memory.csv"
    sleep "$SAMPLE"
  done
}
sample &
SAMPLER=$!

"$BIN/portcullis-load" run --mode http-pair --trace "$TRACE" --http "http://$HTTP" \
  --grpc "http://$GRPC" --concurrency 64 --rate "$RATE" --duration "$DURATION" \
  --max-attempts 1000000000 --interval 30 >"$OUT/soak.json"
kill "$SAMPLER" 2>/dev/null || true

python3 - "$OUT" <<'PY'
import csv, json, sys
out = sys.argv[1]
cap = json.load(open(f"{out}/capacity.json"))
soak = json.load(open(f"{out}/soak.json"))
mem = list(csv.DictReader(open(f"{out}/memory.csv")))
print(f"capacity (closed loop): {cap['attempts_per_second']:.0f} attempts/s")
print(f"soak: {soak['target_rate']:.0f}/s target, {soak['attempts_per_second']:.0f}/s achieved, "
      f"{soak['attempts']} attempts, {soak['errors']} errors, {soak['seconds']:.0f} s")
l = soak["latency_us"]
print(f"latency over the run: p50 {l['p50']} us, p99 {l['p99']} us, p99.9 {l['p999']} us, max {l['max']} us")
print("per interval: t_s  attempts/s  errors  p50_us  p99_us  max_us")
for i in soak.get("intervals", []):
    print(f"  {i['t_s']:>6}  {i['attempts_per_second']:>9.0f}  {i['errors']:>6}  {i['p50_us']:>6}  {i['p99_us']:>6}  {i['max_us']:>7}")
rss = [int(r["rss_kib"] or 0) for r in mem if r["rss_kib"]]
if rss:
    q = len(rss) // 4 or 1
    print(f"RSS: first {rss[0]/1024:.0f} MiB, max {max(rss)/1024:.0f} MiB, last {rss[-1]/1024:.0f} MiB; "
          f"mean of first quarter {sum(rss[:q])/q/1024:.0f} MiB, of last quarter {sum(rss[-q:])/q/1024:.0f} MiB")
    print(f"tracked at the end: accounts {mem[-1]['accounts']}, sources {mem[-1]['sources']}, sprays {mem[-1]['sprays']}")
PY
