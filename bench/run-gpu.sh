#!/usr/bin/env bash
# What the GPU box runs for the copy and paged benchmarks, from the repo root,
# with .device/ (bundled Node), dist/ and build-bench/{copy,paged}_baseline
# built on the development machine beforehand (bench/native/build.sh, npx tsc).
# BENCH picks which run (default "copy paged"; the paged run is sized to stay
# under three minutes on an H200). Results come back through $OUT only: the
# box keeps nothing, so nothing is written into bench/results/ here; commit
# them from the development machine.
#
# The box gets the working tree without .git: pass the commit in, e.g.
#   KVFLOW_COMMIT=<hash> bash bench/run-gpu.sh
# Extra arguments (e.g. --quick) go to every program.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./bench-out}"
BENCH="${BENCH:-copy paged}"
mkdir -p "$OUT"

# shellcheck disable=SC1091
source .device/env.sh

nvidia-smi -L
# Each baseline first and alone, so nothing of kvflow's competes with it; its
# JSON is the --baseline of the kvflow run that follows in the same call (the
# paged one also hands over its seed, block tables and busy-kernel iterations).
for bench in $BENCH; do
  case "$bench" in
    copy | paged) ;;
    *) echo "run-gpu.sh: unknown benchmark '$bench' in BENCH (copy, paged)" >&2; exit 2 ;;
  esac
  "build-bench/${bench}_baseline" "$@" > "$OUT/${bench}_baseline.json"
  node "dist/bench/${bench}.js" --backend cuda --baseline "$OUT/${bench}_baseline.json" --json "$OUT/${bench}.json" "$@"
done
