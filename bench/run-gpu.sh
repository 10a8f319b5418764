#!/usr/bin/env bash
# What the GPU box runs for the copy benchmark, from the repo root, with
# .device/ (bundled Node), dist/ and build-bench/copy_baseline built on the
# development machine beforehand (bench/native/build.sh, npx tsc). Results
# come back through $OUT only: the box keeps nothing, so nothing is written
# into bench/results/ here; commit them from the development machine.
#
# The box gets the working tree without .git: pass the commit in, e.g.
#   KVFLOW_COMMIT=<hash> bash bench/run-gpu.sh
# Extra arguments (e.g. --quick) go to both programs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./bench-out}"
mkdir -p "$OUT"

# shellcheck disable=SC1091
source .device/env.sh

nvidia-smi -L
# The baseline first and alone, so nothing of kvflow's competes with it; its
# JSON is the --baseline of the kvflow run that follows in the same call.
build-bench/copy_baseline "$@" > "$OUT/copy_baseline.json"
node dist/bench/copy.js --backend cuda --baseline "$OUT/copy_baseline.json" --json "$OUT/copy.json" "$@"
