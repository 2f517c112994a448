#!/usr/bin/env bash
# Build memspy and profile the bundled demo service (fixtures/demo/leaky_service.py): a request
# loop that burns CPU and churns memory, and a cache that leaks. Writes into demo-out/:
#   demo.msp      the recording
#   wall.svg      flamegraph of wall time
#   growth.svg    flamegraph of memory growth
#   memory.svg    memory over time, with the top functions by growth marked
#   lines.txt     per-line table of memory growth, with source text
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
out="${1:-demo-out}"
mkdir -p "$out"

cargo build --release --quiet
memspy=./target/release/memspy

"$memspy" record -o "$out/demo.msp" -- "$python" fixtures/demo/leaky_service.py 6
"$memspy" flame -i "$out/demo.msp" "$out/wall.svg"
"$memspy" flame -i "$out/demo.msp" --metric growth "$out/growth.svg"
"$memspy" plot -i "$out/demo.msp" "$out/memory.svg"
"$memspy" lines -i "$out/demo.msp" --metric growth --top 15 | tee "$out/lines.txt"
echo
echo "Open $out/wall.svg, $out/growth.svg and $out/memory.svg in a browser."
