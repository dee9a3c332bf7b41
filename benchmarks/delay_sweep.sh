#!/usr/bin/env bash
# Compare maxBatchDelay values on the served endpoint, interleaved: one server per delay per round, in turn,
# so that drift on a shared machine spreads over every delay instead of favouring whichever ran first.
# Usage: benchmarks/delay_sweep.sh [DELAYS_MS] [ROUNDS]     e.g. benchmarks/delay_sweep.sh "1 2 3 5" 3
# Needs `make archive` first. Writes under build/delay_sweep/ and prints bench's summary line for each level.
set -euo pipefail
cd "$(dirname "$0")/.."
delays=${1:-"1 2 5"}
rounds=${2:-3}
out=build/delay_sweep
PY=.venv/bin/python
for d in $delays; do
  mkdir -p "$out/d$d"
  sed "s/^maxBatchDelay: .*/maxBatchDelay: $d/" model-config.yaml > "$out/d$d/model-config.yaml"
  make -s archive MODEL_CONFIG="$out/d$d/model-config.yaml" MODEL_STORE="$out/d$d/store" \
    > "$out/d$d/archive.log" 2>&1 || { echo "make archive failed for ${d} ms, see $out/d$d/archive.log"; exit 1; }
done
for r in $(seq "$rounds"); do
  for d in $delays; do
    run="$out/d$d/round$r"
    rm -rf "$run" "$run.log"  # never print a previous sweep's numbers
    "$PY" -m benchmarks.bench --skip stock --backends "" --photo-concurrency "" --concurrency 1,4,16 --duration 20 --warmup 4 \
      --mar "$out/d$d/store/classifier.mar" --work-dir "$run/work" --out-dir "$run" > "$run.log" 2>&1 \
      || echo "delay ${d} ms round $r: the bench exited non-zero, see $run.log"
    # benchmarks.bench already prints one summary line per level ("ours c=N: ... req/s, p50 ..."); label and show them
    grep '^ours c=' "$run.log" | sed "s/^ours /delay ${d} ms round $r: /" || true
  done
done
