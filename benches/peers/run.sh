#!/usr/bin/env bash
# Peers side by side: rate-limiter-flexible's documented login-protection pattern (in memory,
# on trace time) and the Portcullis engine (decide + outcome, full rules, one thread, in memory)
# over the same trace, each for SECONDS of steady state after a warm-up pass. Prints both rates
# and their ratio. Installs rate-limiter-flexible from npm into benches/peers/node_modules.
#
# The two alternate for ROUNDS rounds (node, then the engine, in each), because this host's
# speed moves by up to 1.5x within minutes: each round's ratio compares runs seconds apart, and
# the median of the rounds is the figure.
#
# usage: benches/peers/run.sh [TRACE] [SECONDS] [ROUNDS]
# PORTCULLIS_SPEED=path/to/portcullis-speed runs that build of the engine bench (for example the
# PGO build of scripts/pgo-build.sh) instead of building target/release/portcullis-speed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
trace="${1:-$root/../shared/data/synthetic/mixed_week.jsonl}"
secs="${2:-5}"
rounds="${3:-3}"
(cd "$here" && npm install --silent --no-audit --no-fund >/dev/null)
speed="${PORTCULLIS_SPEED:-}"
if [ -z "$speed" ]; then
    cargo build --release -q -p portcullis-benches --bin portcullis-speed --manifest-path "$root/Cargo.toml"
    speed="$root/target/release/portcullis-speed"
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
results=()
for ((r = 1; r <= rounds; r++)); do
    echo "round $r of $rounds: rate-limiter-flexible, then the engine, ${secs} s each" >&2
    node_json="$(node --no-warnings "$here/login.js" "$trace" "$secs")"
    engine_json="$("$speed" rate --threads 1 --seconds "$secs" --trace "$trace")"
    echo "rate-limiter-flexible: $node_json"
    echo "portcullis engine:     $engine_json"
    results+=("$node_json" "$engine_json")
done
python3 - "${results[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
pairs = list(zip(runs[0::2], runs[1::2]))
ratios = []
for i, (n, e) in enumerate(pairs, 1):
    r = e["attempts_per_second"] / n["attempts_per_second"]
    ratios.append(r)
    print(f"round {i}: rate-limiter-flexible {n['attempts_per_second']:,.0f}/s, "
          f"portcullis {e['attempts_per_second']:,.0f}/s: ratio {r:.2f}x")
print(f"median ratio {statistics.median(ratios):.2f}x over {len(ratios)} rounds "
      f"(range {min(ratios):.2f}-{max(ratios):.2f}x; target >= 5x)")
PY
