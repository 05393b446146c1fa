#!/usr/bin/env bash
# Builds `portcullis`, `portcullis-speed` and `portcullis-load` with profile-guided optimisation
# (PGO) on top of the release profile (one code unit, fat LTO):
#   1. an instrumented build (`-Cprofile-generate`) in target/pgo-gen;
#   2. training: `portcullis replay` of every synthetic scenario (`portcullis synth`, a seed the
#      benches do not use), `portcullis serve` under `portcullis-load` (HTTP pairs and batches,
#      gRPC unary and streams) on loopback, and `portcullis-speed rate` over a synthesised
#      stuffing trace (not the benches' mixed week). Everything it needs is in the repository.
#   3. the profiles merged with the toolchain's llvm-profdata (rustup component `llvm-tools`,
#      added when missing), and the final build (`-Cprofile-use`) in target/pgo.
# The binaries end up in target/pgo/<host triple>/release/. About 15 minutes on two cores.
#
# usage: scripts/pgo-build.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
host="$(rustc -vV | sed -n 's/^host: //p')"
sysroot="$(rustc --print sysroot)"
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    rustup component add llvm-tools
fi
work="$(mktemp -d)"
serve_pid=""
cleanup() {
    if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
bins=(--bin portcullis --bin portcullis-speed --bin portcullis-load)
pkgs=(-p portcullis-server -p portcullis-benches)

echo "pgo-build: 1/3 instrumented build (target/pgo-gen)" >&2
# `--target` keeps the flags off build scripts and procedural macros.
RUSTFLAGS="-Cprofile-generate=$work/profiles" CARGO_TARGET_DIR="$root/target/pgo-gen" \
    cargo build --release --target "$host" "${pkgs[@]}" "${bins[@]}"
gen="$root/target/pgo-gen/$host/release"

echo "pgo-build: 2/3 training" >&2
for scenario in spray_lowslow brute_targeted stuffing distributed_one_user ipv6_rotation \
    name_variants legit_only mixed_week; do
    "$gen/portcullis" synth --scenario "$scenario" --seed 4242 --out "$work/$scenario.jsonl"
    "$gen/portcullis" replay --trace "$work/$scenario.jsonl" --json >/dev/null
done
gzip -c "$work/mixed_week.jsonl" >"$work/mixed_week.jsonl.gz"
"$gen/portcullis" replay --trace "$work/mixed_week.jsonl.gz" --preload --json >/dev/null
"$gen/portcullis-speed" rate --threads 1 --seconds 3 --trace "$work/stuffing.jsonl" >/dev/null
"$gen/portcullis-speed" rate --threads 2 --seconds 2 --trace "$work/stuffing.jsonl" >/dev/null
"$gen/portcullis-speed" rate --threads 1 --seconds 2 --sled --trace "$work/stuffing.jsonl" >/dev/null
# The service on free loopback ports, under each kind of load for a few seconds.
read -r http_port grpc_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
"$gen/portcullis" serve --data "$work/data" --http "127.0.0.1:$http_port" \
    --grpc "127.0.0.1:$grpc_port" 2>"$work/serve.log" &
serve_pid=$!
up=false
for _ in $(seq 1 100); do
    if curl -fs "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; then up=true; break; fi
    sleep 0.1
done
if ! $up; then
    echo "pgo-build: the instrumented service did not start:" >&2
    cat "$work/serve.log" >&2
    exit 1
fi
for mode in http-pair http-batch grpc-unary grpc-stream; do
    "$gen/portcullis-load" run --mode "$mode" --duration 3 --quiet --trace "$work/mixed_week.jsonl" \
        --http "http://127.0.0.1:$http_port" --grpc "http://127.0.0.1:$grpc_port" >/dev/null
done
# A clean exit writes the service's profile.
kill -TERM "$serve_pid"
wait "$serve_pid" || true
serve_pid=""
"$profdata" merge -o "$work/merged.profdata" "$work/profiles"

echo "pgo-build: 3/3 optimised build (target/pgo)" >&2
RUSTFLAGS="-Cprofile-use=$work/merged.profdata" CARGO_TARGET_DIR="$root/target/pgo" \
    cargo build --release --target "$host" "${pkgs[@]}" "${bins[@]}"
echo "pgo-build: done: $root/target/pgo/$host/release/{portcullis,portcullis-speed,portcullis-load}" >&2
