#!/usr/bin/env bash
# An A/B sitting of two commits in one device call of about nine minutes:
# bench/copy of B in full (against copy_baseline), test/device,
# test/pipeline and test/reference of B on CUDA, bench/copy of A, the Llama-3-8B 4k prefill at
# 90% and 95% cached (DRAM, 5 samples) with the PyTorch peer, A then B, twice,
# bench/pipeline-host A, B and bench/prefill-fixed A, B, A, B, while time is
# left, then a quick bench/copy of B with KVFLOW_TRACE_CALLS=1 (where a
# record's and a copy's host time goes). Laid out in build-bench/sit5 (git-ignored):
#   tree/ (B's src test bench configs and dist), dist-a/ (A's dist),
#   addon-a.node.xz, addon-b.node.xz (sm_90 addons), copy_baseline,
#   commit, commit-a (short hashes), wgmma_probe where built (run first)
# (bench/tools/lay-out-verify.sh A B lays it out). Run from the
# repo root with carry [".device", "build-bench/sit5"]; TOTAL (s, default
# 540) bounds it; COPY_ARGS=--quick runs bench/copy quick; COPY_ROUNDS=N
# (default 1) runs bench/copy B, A N times, alternating (the tests after
# the first B); PREFILL=0 leaves the prefill A/B out. Outputs come back as
# $OUT/ab-sitting.tgz.
set -u
source "$(dirname "$0")/sitting-env.sh" ab-sitting.sh /tmp/ab-sitting 540
[ -d "$S/dist-a" ] || { echo "ab-sitting.sh: no A in build-bench/sit5 (see the header)" >&2; exit 2; }
mkdir -p $S/addon-a $S/addon-b
xz -dc $S/addon-a.node.xz > $S/addon-a/kvflow.node; xz -dc $S/addon-b.node.xz > $S/addon-b/kvflow.node
CB=$(cat $S/commit); CA=$(cat $S/commit-a 2>/dev/null || echo A)
ln -sfn ../../../node_modules $S/tree/node_modules
# variant NAME -> dist, addon, commit
var() { if [ "$1" = A ]; then echo "$S/dist-a $S/addon-a/kvflow.node $CA"; else echo "$S/tree/dist $S/addon-b/kvflow.node $CB"; fi; }
# What ran so far comes back even if the call is cut short.
save() { tar czf $OUT/ab-sitting.tgz -C $R . ; }
# 0. the Hopper wgmma building blocks' check (one tile, under a second), where laid out
[ -x $S/wgmma_probe ] && { timeout 20 $S/wgmma_probe > $R/wgmma-probe.log 2>&1; echo "wgmma_probe rc=$?: $(cat $R/wgmma-probe.log)"; }
# 1. copy of B, the tests of B, copy of A
timeout 60 $S/copy_baseline > $R/copy_baseline.json 2> $R/copy_baseline.err
echo "copy_baseline rc=$?: $(grep latency $R/copy_baseline.json)"
copy_run() {
  [ "$(left)" -lt 95 ] && return
  read d a c <<< "$(var $1)"
  local n=$(ls $R/copy-$1*.log 2>/dev/null | wc -l) t0=$(date +%s)
  KVFLOW_COMMIT=$c KVFLOW_ADDON=$a timeout 90 node $d/bench/copy.js --backend cuda ${COPY_ARGS:-} --baseline $R/copy_baseline.json --json $R/copy-$1$n.json > $R/copy-$1$n.log 2>&1
  echo "copy $1$n rc=$? in $(( $(date +%s) - t0 ))s"; grep -E "64KiB" $R/copy-$1$n.log | tail -5
}
copy_run B; save
# then the tests of B on CUDA
if [ "$(left)" -gt 160 ]; then
  t0=$(date +%s); (cd $S/tree && KVFLOW_ADDON=$S/addon-b/kvflow.node timeout 150 vitest run test/device test/pipeline test/reference) > $R/tests.log 2>&1
  echo "tests rc=$? in $(( $(date +%s) - t0 ))s"; grep -E "Test Files|Tests " $R/tests.log | tail -2; grep -E "FAIL|×" $R/tests.log | head -20
fi
save
copy_run A; save
for ((round = 1; round < ${COPY_ROUNDS:-1}; round++)); do copy_run B; save; copy_run A; save; done
# 2. 8B 4k prefill with the peer: A B, then A B again
prefill_ab() {
  for v in A B; do
    [ "$(left)" -lt 95 ] && return
    read d a c <<< "$(var $v)"
    n=$(ls $R/prefill-$v*.log 2>/dev/null | wc -l)
    t0=$(date +%s)
    KVFLOW_COMMIT=$c KVFLOW_ADDON=$a timeout 90 node $d/bench/prefill.js --backend cuda --peer $R/peer.json --dir /tmp/kvp --json $R/prefill-$v$n.json \
      --model llama-3-8b --tokens 4096 --hits 0.9,0.95 --tiers dram --samples 5 > $R/prefill-$v$n.log 2>&1
    echo "prefill $v$n rc=$? in $(( $(date +%s) - t0 ))s"; rm -rf /tmp/kvp
    grep -E "^4096 9.pct (dram|recompute)" $R/prefill-$v$n.log | cut -c1-160
  done
}
if [ "${PREFILL:-1}" != 0 ] && [ "$(left)" -gt 100 ]; then
  t0=$(date +%s); timeout 90 python3 $S/tree/bench/peers/torch_prefill.py --model llama-3-8b --tokens 4096 --hits 0.9,0.95 --samples 5 > $R/peer.json 2> $R/peer.err; echo "peer rc=$? in $(( $(date +%s) - t0 ))s"
  prefill_ab; save
fi
[ "${PREFILL:-1}" != 0 ] && [ "$(left)" -gt 150 ] && prefill_ab && save
# 3. pipeline-host A, B; a prefill's fixed host cost A, B (bench/prefill-fixed,
# copied into A's dist where A predates it)
for v in A B; do
  [ "$(left)" -lt 45 ] && break
  read d a c <<< "$(var $v)"
  KVFLOW_ADDON=$a timeout 40 node $d/bench/pipeline-host.js --backend cuda --reps 100 --json $R/ph-$v.json > $R/ph-$v.log 2>&1
  echo "pipeline-host $v rc=$?"; grep -E "_device" $R/ph-$v.log
done
for v in A B A B; do
  [ "$(left)" -lt 30 ] && break
  read d a c <<< "$(var $v)"
  [ -f $d/bench/prefill-fixed.js ] || cp $S/tree/dist/bench/prefill-fixed.js $d/bench/
  n=$(ls $R/fixed-$v*.log 2>/dev/null | wc -l)
  KVFLOW_COMMIT=$c KVFLOW_ADDON=$a timeout 25 node $d/bench/prefill-fixed.js --backend cuda --reps 300 --json $R/fixed-$v$n.json > $R/fixed-$v$n.log 2>&1
  echo "prefill-fixed $v$n rc=$?: $(grep -E "Us " $R/fixed-$v$n.log | tr -s ' ' | tr '\n' ';')"
done
save
if [ "$(left)" -gt 45 ] && [ -s $R/copy_baseline.json ]; then
  KVFLOW_TRACE_CALLS=1 KVFLOW_COMMIT=$CB KVFLOW_ADDON=$S/addon-b/kvflow.node timeout 40 node $S/tree/dist/bench/copy.js --backend cuda --quick --baseline $R/copy_baseline.json > $R/copy-traced.log 2>&1
  echo "copy traced rc=$?"; grep -E "kvflow trace|latency" $R/copy-traced.log
fi
save
