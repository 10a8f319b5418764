#!/usr/bin/env bash
# Runs a command with a time limit on the GPU box; if it is still running at
# the limit, writes what each thread of it (and of its children) is doing to
# $OUT/stacks.txt, then kills it. For hangs: the box has no gdb.
#
#   bash bench/tools/watchdog.sh NAME SECONDS command args...
#
# The command's output goes to $OUT/NAME.log. Per process: each thread's
# kernel wait channel and state, then bench/tools/stackscan.py (the
# instruction pointer and likely return addresses as library+offset;
# symbolise kvflow.node offsets on the development machine with
# `addr2line -f -C -e build-cmake/Release/kvflow.node OFFSET`, same build).
set -u
name=$1
limit=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
"$@" > "$OUT/$name.log" 2>&1 &
pid=$!
for ((i = 0; i < limit; i++)); do
  if ! kill -0 "$pid" 2>/dev/null; then
    rc=0
    wait "$pid" || rc=$?
    echo "$name: exit $rc after ${i}s" >> "$OUT/$name.log"
    exit "$rc"
  fi
  sleep 1
done
echo "$name: still running after ${limit}s; stacks in $OUT/stacks.txt" | tee -a "$OUT/$name.log"
for p in $pid $(pgrep -P "$pid"); do
  {
    echo "== pid $p $(tr '\0' ' ' < "/proc/$p/cmdline")"
    for t in /proc/"$p"/task/*; do
      echo "-- $(cat "$t/comm") $(cat "$t/wchan" 2>/dev/null) state=$(awk '{print $3}' "$t/stat")"
    done
    python3 "$here/stackscan.py" "$p" 40 || true
  } >> "$OUT/stacks.txt" 2>&1
done
pkill -9 -P "$pid" 2>/dev/null
kill -9 "$pid" 2>/dev/null
exit 124
