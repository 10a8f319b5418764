#!/usr/bin/env bash
# On the GPU box: attention_check, the PyTorch prefill peer once, then
# bench/prefill alternating between
# builds named in VARIANTS (name=dist_dir:addon; addons may come as
# ADDON.xz, and build-bench/dist-first is made from dist with the kernel
# engine for layer 0 only), ROUNDS times, in one device call. Env: MODEL,
# TOKENS, HITS, SAMPLES, TIERS, ROUNDS, DEADLINE (s), CHECK_ONLY=1,
# SKIP_CHECK=1, PEER=0, EXTRA (more prefill arguments), TESTS (vitest paths
# run first, e.g. test/reference). Everything lands in
# $OUT/sitA-*.tgz (the device tool returns a few files only). Example:
#   VARIANTS="A=dist:build-cmake/Release/kvflow.node B=dist:build-bench/bal/kvflow.node" \
#   ROUNDS=2 bash bench/tools/prefill-ab.sh
set -u
cd "$(dirname "$0")/../.."
source .device/env.sh
export KVFLOW_CUBLAS=/usr/local/cuda/lib64/libcublas.so.13
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export KVFLOW_COMMIT=$(cat .commit)
R=$OUT/r; mkdir -p "$R"
NV=/tmp/kvflow-sit; mkdir -p $NV
nvidia-smi -L | tee "$R/smi.txt"
# The other builds, made here (carry stays under 64 MiB): the balanced addon, the first-layer-kernel dist.
for x in build-bench/*/kvflow.node.xz; do [ -s "$x" ] && xz -dc "$x" > "${x%.xz}"; done
rm -rf build-bench/dist-first && cp -r dist build-bench/dist-first
sed -i "s/a.alone \&\& computed.length === 0 ? 'kernel'/a.alone \&\& computed.length === 0 \&\& j === 0 ? 'kernel'/" build-bench/dist-first/src/pipeline/attempt.js
grep -c "j === 0 ? 'kernel'" build-bench/dist-first/src/pipeline/attempt.js
MODEL=${MODEL:-llama-3-8b}; TOKENS=${TOKENS:-16384}; HITS=${HITS:-0.9,0.95}; SAMPLES=${SAMPLES:-3}
TIERS=${TIERS:-dram}; ROUNDS=${ROUNDS:-1}
VARIANTS=${VARIANTS:-"A=dist:build-cmake/Release/kvflow.node"}
pack() { tar czf "$OUT/sitA-$1.tgz" -C "$R" . ; }
START=$(date +%s); DEADLINE=${DEADLINE:-540}
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
if [ -n "${TESTS:-}" ]; then
  t0=$(date +%s)
  timeout 240 vitest run $TESTS > "$R/tests.log" 2>&1; rc=$?
  echo "tests rc=$rc in $(( $(date +%s) - t0 ))s: $(grep -E '^ +Tests ' "$R/tests.log" | tail -n 1)"
fi
if [ "${SKIP_CHECK:-0}" != 1 ]; then
  t0=$(date +%s)
  timeout 240 build-cmake/tools/attention_check > "$R/attcheck.jsonl" 2> "$R/attcheck.err"; rc=$?
  echo "attention_check rc=$rc in $(( $(date +%s) - t0 ))s: $(tail -n 1 "$R/attcheck.jsonl")"
  python3 - "$R/attcheck.jsonl" <<'PY'
import json,sys,collections
rows=[json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
by=collections.defaultdict(dict)
for r in rows: by[r['case']][r['variant']]=r
for c,v in by.items():
  bad=[k for k,r in v.items() if not r['ok']]
  print(f"{c:28s} " + " ".join(f"v{k}={r['ms']:.3f}" for k,r in sorted(v.items())) + (f"  FAIL {bad}" if bad else ""))
PY
  if [ "${CHECK_ONLY:-0}" = 1 ]; then pack check; exit $rc; fi
  if [ $rc -ne 0 ]; then VARIANTS=$(echo $VARIANTS | tr ' ' '\n' | grep -v '^B=' | tr '\n' ' '); echo "check failed: variants now $VARIANTS"; fi
fi
peer=()
if [ "${PEER:-1}" = 1 ]; then
  t0=$(date +%s)
  if python3 bench/peers/torch_prefill.py --model $MODEL --tokens $TOKENS --hits $HITS --samples $SAMPLES > "$R/peer.json" 2> "$R/peer.err"; then
    peer=(--peer "$R/peer.json"); fi
  echo "peer done in $(( $(date +%s) - t0 ))s"
fi
for round in $(seq 1 $ROUNDS); do
  for v in $VARIANTS; do
    name=${v%%=*}; rest=${v#*=}; dist=${rest%%:*}; addon=${rest#*:}
    if [ "$(left)" -lt "${NEED_S:-90}" ]; then echo "skip $name round $round: $(left)s left"; continue; fi
    t0=$(date +%s)
    KVFLOW_ADDON=$PWD/$addon timeout $(( $(left) - 10 )) node $dist/bench/prefill.js --backend cuda "${peer[@]}" --dir $NV/p \
      --json "$R/prefill-$name-$round.json" --model $MODEL --tokens $TOKENS --hits $HITS --tiers $TIERS --samples $SAMPLES ${EXTRA:-} \
      > "$R/prefill-$name-$round.log" 2>&1
    echo "prefill $name round $round rc=$? in $(( $(date +%s) - t0 ))s"
    rm -rf $NV/p
    python3 - "$R/prefill-$name-$round.json" "$name" <<'PY'
import json,sys
try: d=json.load(open(sys.argv[1]))
except Exception as e: print(sys.argv[2], 'no json', e); sys.exit(0)
for x in d['results']:
  if 'crossover' in x['metric']: continue
  f=lambda k: (f"{x[k]:.3f}" if isinstance(x.get(k),(int,float)) else '-')
  print(sys.argv[2], f"{x['metric']:36s} {x['value']:8.2f} alone={f('computeAloneMs')} model={f('modelMs')} ovl={f('overlap')} xpeer={f('speedupVsPeerOverlap')} peerRec={f('peerRecomputeMs')}")
PY
  done
done
pack all
