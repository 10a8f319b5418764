# Sourced by the sitting scripts (verify-, copy-, ab-sitting.sh) on the GPU
# box: the repo root, Node and CUDA's libraries on the paths, S (the layout
# in build-bench/sit5), R (the results folder, made), left() (seconds left of
# TOTAL) and the card's name in $R/smi.txt.
#   source "$(dirname "$0")/sitting-env.sh" NAME RESULTS_DIR DEFAULT_TOTAL_S
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source .device/env.sh
export KVFLOW_CUBLAS=/usr/local/cuda/lib64/libcublas.so.13
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
S=$PWD/build-bench/sit5
[ -d "$S/tree" ] || { echo "$1: lay out build-bench/sit5 first (bench/tools/lay-out-verify.sh)" >&2; exit 2; }
R=$2
mkdir -p "$R"
T0=$(date +%s)
TOTAL=${TOTAL:-$3}
left() { echo $(( TOTAL - ($(date +%s) - T0) )); }
nvidia-smi -L | tee "$R/smi.txt"
