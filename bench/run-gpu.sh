#!/usr/bin/env bash
# What the GPU box runs for the copy, paged, nvme and store benchmarks, from the repo
# root, with .device/ (bundled Node), dist/ and build-bench/{copy,paged}_baseline
# and build-bench/raw_io built on the development machine beforehand
# (bench/native/build.sh, npx tsc). BENCH picks which run (default
# "copy paged nvme"; the paged run is sized to stay under three minutes on an
# H200, the nvme run under about four at the box's 0.9-2.1 GB/s disk). Results
# come back through $OUT only: the box keeps nothing, so nothing is written
# into bench/results/ here; commit them from the development machine.
#
# nvme runs three programs on one test file's folder, NVME_DIR (default
# bench-out/nvme-data under the repo root; never inside $OUT, since each
# program writes a file of NVME_GIB GiB there, default 4, and deletes it):
# build-bench/raw_io (plain O_DIRECT pread/pwrite, the baseline) into
# $OUT/raw_io.json, bench/peers/torch_load.py (torch.load(file).cuda(), the
# box's python3 + torch) into $OUT/torch_load.json, then dist/bench/nvme.js
# against both into $OUT/nvme.json. Run as root so the page cache can be
# dropped before cold reads. If the torch peer fails, nvme runs without it.
#
# pipeline-host runs dist/bench/pipeline-host.js (the pipeline's own host cost
# per layer, tiny heads, no compute) into $OUT/pipeline-host.json.
#
# replay runs dist/bench/replay.js --restart (1, 4 and 16 chats by default) with
# its store under NVME_DIR/replay (removed after) into $OUT/replay.json.
#
# prefill runs bench/peers/torch_prefill.py (the same prefill in PyTorch: recompute,
# load then compute, per-layer overlap with the prefix in pinned DRAM) into
# $OUT/torch_prefill.json first and alone, then dist/bench/prefill.js with
# --peer on it into $OUT/prefill.json, its SVG plots into $OUT/prefill-svg/,
# and its store (the NVMe tier) under NVME_DIR/prefill-store (removed after).
# Extra arguments go to both (--model, --tokens, --hits, --samples; the peer
# ignores --tiers). If the peer fails, prefill runs without it. Run as root so
# the page cache can be dropped before cold NVMe loads.
#
# The box gets the working tree without .git: pass the commit in, e.g.
#   KVFLOW_COMMIT=<hash> bash bench/run-gpu.sh
#   KVFLOW_COMMIT=<hash> BENCH=nvme NVME_GIB=2 bash bench/run-gpu.sh
#   KVFLOW_COMMIT=<hash> BENCH=prefill LIMIT_S=540 bash bench/run-gpu.sh --model llama-3-8b --tokens 4096,16384
# Extra arguments (e.g. --quick) go to every program. SWEEP_GIB sets nvme's
# bytes per sweep point (--sweep-gib; 0.25 keeps a full nvme run within one
# 10-minute device call). LIMIT_S runs each kvflow program under
# bench/tools/watchdog.sh with that many seconds: at the limit it records what
# every thread is doing in $OUT/stacks.txt and kills the program.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./bench-out}"
BENCH="${BENCH:-copy paged nvme}"
NVME_DIR="${NVME_DIR:-bench-out/nvme-data}"
mkdir -p "$OUT"

for bench in $BENCH; do
  case "$bench" in
    copy | paged | nvme | store | pipeline | pipeline-host | prefill | replay) ;;
    *) echo "run-gpu.sh: unknown benchmark '$bench' in BENCH (copy, paged, nvme, store, pipeline, pipeline-host, prefill, replay)" >&2; exit 2 ;;
  esac
done

# shellcheck disable=SC1091
source .device/env.sh

nvidia-smi -L

# bench/paged's GEMM load loads cuBLAS at run time; name the toolkit's copy
# when the caller did not.
if [ -z "${KVFLOW_CUBLAS:-}" ]; then
  for lib in /usr/local/cuda/lib64/libcublas.so.13 /usr/local/cuda/lib64/libcublas.so.12; do
    if [ -e "$lib" ]; then
      export KVFLOW_CUBLAS="$lib"
      export LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      break
    fi
  done
fi

# A kvflow program, under the watchdog when LIMIT_S is set (its output then
# goes to $OUT/NAME.log, and is printed after).
guarded() {
  local name=$1
  shift
  if [ -z "${LIMIT_S:-}" ]; then
    "$@"
    return
  fi
  local rc=0
  bash bench/tools/watchdog.sh "$name" "$LIMIT_S" "$@" || rc=$?
  cat "$OUT/$name.log"
  return "$rc"
}
# Each baseline first and alone, so nothing of kvflow's competes with it; its
# JSON is the --baseline of the kvflow run that follows in the same call (the
# paged one also hands over its seed, block tables and busy-kernel iterations).
for bench in $BENCH; do
  case "$bench" in
    copy | paged)
      "build-bench/${bench}_baseline" "$@" > "$OUT/${bench}_baseline.json"
      guarded "$bench" node "dist/bench/${bench}.js" --backend cuda --baseline "$OUT/${bench}_baseline.json" --json "$OUT/${bench}.json" "$@"
      ;;
    nvme)
      nvme_args=(--dir "$NVME_DIR")
      if [ -n "${NVME_GIB:-}" ]; then nvme_args+=(--gib "$NVME_GIB"); fi
      sweep_args=()
      if [ -n "${SWEEP_GIB:-}" ]; then sweep_args+=(--sweep-gib "$SWEEP_GIB"); fi
      # A run cut off midway must not leave gigabytes behind (unless --keep).
      case " $* " in
        *" --keep "*) ;;
        *) trap 'rm -f "$NVME_DIR"/{raw_io.bin,torch_load.pt,nvme.bin,nvme-warm.bin,nvme-raw-write.bin}' EXIT ;;
      esac
      mkdir -p "$NVME_DIR"
      df -hT "$NVME_DIR" || true
      build-bench/raw_io "${nvme_args[@]}" "$@" > "$OUT/raw_io.json"
      torch_args=()
      if python3 bench/peers/torch_load.py "${nvme_args[@]}" "$@" > "$OUT/torch_load.json"; then
        torch_args=(--torch "$OUT/torch_load.json")
      else
        echo "run-gpu.sh: the torch.load peer failed; nvme runs without vs_torch_load" >&2
        rm -f "$OUT/torch_load.json"
      fi
      guarded nvme node dist/bench/nvme.js --backend cuda --baseline "$OUT/raw_io.json" ${torch_args[@]+"${torch_args[@]}"} \
        "${nvme_args[@]}" ${sweep_args[@]+"${sweep_args[@]}"} --json "$OUT/nvme.json" "$@"
      ;;
    store)
      # The raw O_DIRECT figures of the same disk: nvme's run when it ran in this call, else its own.
      mkdir -p "$NVME_DIR"
      if [ ! -f "$OUT/raw_io.json" ]; then
        build-bench/raw_io --dir "$NVME_DIR" --gib "${NVME_GIB:-2}" > "$OUT/raw_io.json"
      fi
      guarded store node dist/bench/store.js --backend cuda --baseline "$OUT/raw_io.json" --dir "$NVME_DIR/store" --json "$OUT/store.json"
      ;;
    pipeline)
      guarded pipeline node dist/bench/pipeline.js --backend cuda --json "$OUT/pipeline.json" "$@"
      ;;
    pipeline-host)
      guarded pipeline-host node dist/bench/pipeline-host.js --backend cuda --json "$OUT/pipeline-host.json" "$@"
      ;;
    replay)
      # The multi-turn replay: recompute, kvflow and kvflow after a restart, its store under NVME_DIR.
      mkdir -p "$NVME_DIR/replay"
      replay_rc=0
      guarded replay node dist/bench/replay.js --backend cuda --restart --dir "$NVME_DIR/replay" --json "$OUT/replay.json" "$@" || replay_rc=$?
      rm -rf "$NVME_DIR/replay"
      if [ "$replay_rc" -ne 0 ]; then exit "$replay_rc"; fi
      ;;
    prefill)
      # The PyTorch peer first and alone (its GPU memory is freed when it exits).
      peer_args=()
      if python3 bench/peers/torch_prefill.py "$@" > "$OUT/torch_prefill.json"; then
        peer_args=(--peer "$OUT/torch_prefill.json")
      else
        echo "run-gpu.sh: the PyTorch prefill peer failed ($(head -c 300 "$OUT/torch_prefill.json")); prefill runs without it" >&2
      fi
      mkdir -p "$NVME_DIR"
      df -hT "$NVME_DIR" || true
      prefill_rc=0
      guarded prefill node dist/bench/prefill.js --backend cuda ${peer_args[@]+"${peer_args[@]}"} --dir "$NVME_DIR/prefill-store" \
        --json "$OUT/prefill.json" --svg "$OUT/prefill-svg" "$@" || prefill_rc=$?
      rm -rf "$NVME_DIR/prefill-store"
      if [ "$prefill_rc" -ne 0 ]; then exit "$prefill_rc"; fi
      ;;
  esac
done
