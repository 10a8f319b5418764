#!/usr/bin/env bash
# Runs test files one at a time on the GPU box, each under bench/tools/watchdog.sh
# (each file's log in $OUT/suite-logs/, with the thread stacks of a file that
# hangs in stacks.txt there), and stops starting new files once the call's own
# budget is spent. One line per file in $OUT/suite.txt: the file, its exit
# status and seconds, vitest's summary.
#
#   PER_FILE_S=120 BUDGET_S=540 bash bench/tools/suite-gpu.sh test/a.test.ts test/b.test.ts ...
#   FROM=N bash bench/tools/suite-gpu.sh     (no files: every test file, from the Nth, 0-based)
set -u
if (( $# == 0 )); then
  mapfile -t all < <(ls test/*/*.test.ts)
  set -- "${all[@]:${FROM:-0}}"
fi
here=$(cd "$(dirname "$0")" && pwd)
per=${PER_FILE_S:-120}
budget=${BUDGET_S:-540}
start=$(date +%s)
logs="$OUT/suite-logs"
mkdir -p "$logs"
for f in "$@"; do
  used=$(( $(date +%s) - start ))
  if (( used + 10 > budget )); then echo "$f: not started (budget)" >> "$OUT/suite.txt"; continue; fi
  left=$(( budget - used ))
  limit=$(( per < left ? per : left ))
  name=$(echo "$f" | sed 's#^test/##; s#\.test\.ts$##; s#/#-#g')
  t0=$(date +%s)
  rc=0
  OUT="$logs" NO_COLOR=1 bash "$here/watchdog.sh" "$name" "$limit" vitest run --reporter=verbose "$f" || rc=$?
  summary=$(grep -E "Tests +[0-9]" "$logs/$name.log" | tail -1 | tr -s ' ')
  echo "$f: rc=$rc $(( $(date +%s) - t0 ))s $summary" | tee -a "$OUT/suite.txt"
done
