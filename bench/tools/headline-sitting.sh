#!/usr/bin/env bash
# The prefill headline set in one device call of about nine minutes, on the
# commit laid out in build-bench/sit5 (bench/tools/lay-out-verify.sh): per
# model, bench/run-gpu.sh BENCH=prefill (the PyTorch peer first and alone,
# then bench/prefill on both tiers, 5 samples) while time is left: Llama-3-8B
# 4k and 16k, Qwen3-14B 4k and 16k, Llama-3-70B 4k. Run from the repo root
# with carry [".device", "build-bench/sit5"]; DEADLINE (s, default 560)
# bounds it. Outputs come back as $OUT/headline.tgz.
set -u
cd "$(dirname "$0")/../.."
S=$PWD/build-bench/sit5
[ -d "$S/tree" ] || { echo "headline-sitting.sh: lay out build-bench/sit5 first (bench/tools/lay-out-verify.sh)" >&2; exit 2; }
ROOT=$PWD
source .device/env.sh
cd "$S/tree"
ln -sfn "$ROOT/.device" .device
ln -sfn "$ROOT/node_modules" node_modules
export KVFLOW_CUBLAS=/usr/local/cuda/lib64/libcublas.so.13
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export KVFLOW_COMMIT=$(cat "$S/commit")
mkdir -p "$S/addon-b"; xz -dc "$S/addon-b.node.xz" > "$S/addon-b/kvflow.node"
export KVFLOW_ADDON=$S/addon-b/kvflow.node
START=$(date +%s); DEADLINE=${DEADLINE:-560}
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
R=/tmp/headline; mkdir -p "$R"
nvidia-smi -L | tee "$R/smi.txt"
run() {  # name need_s args...
  local name=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then echo "skip $name: $(left)s left"; return; fi
  local t0=$(date +%s)
  OUT=$R/$name NVME_DIR=/tmp/kvflow-nvme LIMIT_S=$(( $(left) - 15 )) BENCH=prefill bash bench/run-gpu.sh "$@" > "$R/$name.log" 2>&1
  echo "$name rc=$? in $(( $(date +%s) - t0 ))s"
  grep -E "dram|nvme" "$R/$name/prefill.log" 2>/dev/null | grep -E "adaptive|load-all" | head -24
}
run 8b ${NEED_8B:-200} --model llama-3-8b --tokens 4096,16384 --samples 5
run qwen ${NEED_Q:-200} --model qwen3-14b --tokens 4096,16384 --samples 5
run 70b ${NEED_70:-120} --model llama-3-70b --tokens 4096 --samples 5
tar czf "$OUT/headline.tgz" -C "$R" .
