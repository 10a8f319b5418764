#!/usr/bin/env python3
"""Growth of live heap bytes by library over a heaptrack run (decode.py's OUT.pkl).

    python3 bench/tools/heaptrack/by_library.py OUT.pkl

Libraries: kvflow.node, lmdb (the lmdb package's addon, node.abiNNN.*.node),
Node/V8, other. Then the 25 growing sites, labelled by library and function.
Growth: see common.py.
"""
import collections
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import EARLY, frames, growth, late, live_by, load, window_times  # noqa: E402

LMDB = re.compile(r'node\.abi\d+\..*\.node$|lmdb')
d = load(sys.argv[1])
snaps = d['snaps']


def classify(ti):
    fr = frames(d, ti, 60)
    mods = [f[1] for f in fr]
    fns = [f[0] or '?' for f in fr]
    if any('kvflow' in m for m in mods):
        return 'kvflow.node'
    for f in fr:
        if LMDB.search(f[1]):
            return 'lmdb:' + (f[0] or '?').split('(')[0] + ' ' + f[2]
    if any(fn.startswith('Builtins_') or 'v8::' in fn for fn in fns):
        return 'node/v8'
    return 'other:' + str([x[0] for x in fr[:4] if x[0] and 'malloc' not in x[0]][:2])


size, count = live_by(d, classify)
by_lib = collections.defaultdict(lambda: [0] * len(snaps))
for c, v in size.items():
    for k in range(len(v)):
        by_lib[c.split(':')[0]][k] += v[k]
a, b = EARLY.start, late(snaps).stop - 1
print(f'by library: growth KiB ({window_times(snaps)}), then live KiB every 2nd snapshot')
for lib, v in sorted(by_lib.items(), key=lambda kv: -growth(kv[1], snaps)):
    print(lib, round(growth(v, snaps) / 1024, 1), [round(x / 1024) for x in v[1::2]])
print()
print(f'sites: growth, live count at {snaps[a][0] / 1000:.0f} s -> {snaps[b][0] / 1000:.0f} s, live at the end')
for c, v in sorted(size.items(), key=lambda kv: -growth(kv[1], snaps))[:25]:
    print('%8.1f KiB  n %5d->%5d  end %7.1f KiB  %s' % (growth(v, snaps) / 1024, count[c][a], count[c][b], v[-1] / 1024, c[:150]))
