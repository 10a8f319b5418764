#!/usr/bin/env python3
"""The call sites whose live bytes grow over a heaptrack run (decode.py's OUT.pkl), with their frames.

    python3 bench/tools/heaptrack/sites.py OUT.pkl [TOP]

Growth: see common.py. Prints the live heap per snapshot, then the TOP
(default 25) growing sites with their series and frames.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import EARLY, frames, growth, late, live_by, load, window_times  # noqa: E402

d = load(sys.argv[1])
top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
snaps, ai = d['snaps'], d['ainfo']
for t, live in snaps:
    print(t, round(sum(ai[i][0] * c for i, c in enumerate(live) if c) / 2**20, 2))
size, count = live_by(d, lambda ti: ti)
rows = sorted(size.items(), key=lambda kv: -growth(kv[1], snaps))
print(f'growth windows: {window_times(snaps)}')
print('total growth of growing sites KiB', sum(max(0, growth(v, snaps)) for v in size.values()) / 1024)
a, b = EARLY.start, late(snaps).stop - 1
SKIP = ('libheaptrack', 'libc.so', 'libstdc++')
for ti, v in rows[:top]:
    g = growth(v, snaps)
    if g <= 0:
        break
    mono = all(v[k + 1] >= v[k] for k in range(a, b))
    print('\n=== +%.1f KiB (%.0f s %.1f KiB -> %.0f s %.1f KiB, end %.1f KiB) count %d->%d monotone=%s' % (
        g / 1024, snaps[a][0] / 1000, v[a] / 1024, snaps[b][0] / 1000, v[b] / 1024, v[-1] / 1024, count[ti][a], count[ti][b], mono))
    print('   series KiB:', [round(x / 1024) for x in v[1::2]])
    for f in [f for f in frames(d, ti) if not any(s in f[1] for s in SKIP)][:14]:
        print('   ', f[0][:110], '|', f[1], f[2])
