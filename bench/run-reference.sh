#!/usr/bin/env bash
# What the GPU box runs for the reference-layer benchmark, from the repo root,
# with .device/ (bundled Node), dist/ and build-cmake/ (the addon, and
# build-cmake/tools/attention_check from native/src/cuda/reference/tools/build.sh)
# built on the development machine. Results come back through $OUT:
#   attention_check.jsonl  the paged attention kernel against an f64 reference, and its timings
#   torch_layer.json       the PyTorch peer (bench/peers/torch_layer.py)
#   reference.json         bench/reference.ts against that peer
# STEPS picks what runs (default "check peer bench"); extra arguments go to
# both benchmark programs (e.g. --quick, --cases a,b). Pass the commit in:
#   KVFLOW_COMMIT=<hash> bash bench/run-reference.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./bench-out}"
STEPS="${STEPS:-check peer bench}"
mkdir -p "$OUT"
if [ -z "${KVFLOW_CUBLAS:-}" ]; then
  for lib in /usr/local/cuda/lib64/libcublas.so.13 /usr/local/cuda/lib64/libcublas.so.12; do
    if [ -e "$lib" ]; then
      export KVFLOW_CUBLAS="$lib"
      export LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      break
    fi
  done
fi
status=0
for step in $STEPS; do
  case "$step" in
    check) build-cmake/tools/attention_check | tee "$OUT/attention_check.jsonl" || status=1 ;;
    peer) python3 bench/peers/torch_layer.py "$@" > "$OUT/torch_layer.json" || status=1 ;;
    bench)
      peer=()
      [ -s "$OUT/torch_layer.json" ] && peer=(--peer "$OUT/torch_layer.json")
      node dist/bench/reference.js --json "$OUT/reference.json" "${peer[@]}" "$@" || status=1 ;;
    *) echo "run-reference.sh: unknown step '$step' (check, peer, bench)" >&2; exit 2 ;;
  esac
done
exit $status
