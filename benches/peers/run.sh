#!/usr/bin/env bash
# Peers side by side: rate-limiter-flexible's documented login-protection pattern (in memory,
# on trace time) and the Portcullis engine (decide + outcome, full rules, one thread, in memory)
# over the same trace, each for SECONDS of steady state after a warm-up pass. Prints both rates
# and their ratio. Installs rate-limiter-flexible from npm into benches/peers/node_modules.
#
# usage: benches/peers/run.sh [TRACE] [SECONDS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
trace="${1:-$root/../shared/data/synthetic/mixed_week.jsonl}"
secs="${2:-5}"
(cd "$here" && npm install --silent --no-audit --no-fund >/dev/null)
cargo build --release -q -p portcullis-benches --bin portcullis-speed --manifest-path "$root/Cargo.toml"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
node_json="$(node --no-warnings "$here/login.js" "$trace" "$secs")"
engine_json="$("$root/target/release/portcullis-speed" rate --threads 1 --seconds "$secs" --trace "$trace")"
echo "rate-limiter-flexible: $node_json"
echo "portcullis engine:     $engine_json"
python3 - "$node_json" "$engine_json" <<'PY'
import json, sys
n, e = json.loads(sys.argv[1]), json.loads(sys.argv[2])
r = e["attempts_per_second"] / n["attempts_per_second"]
print(f"rate-limiter-flexible {n['attempts_per_second']:,.0f}/s, portcullis {e['attempts_per_second']:,.0f}/s: "
      f"ratio {r:.2f}x (target >= 5x)")
PY
