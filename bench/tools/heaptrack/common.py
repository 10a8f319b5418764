"""What sites.py and by_library.py share: decode.py's pickle, a trace's frames, and the growth windows.

Snapshots are taken every STEP ms (decode.py; 30 s by default), snapshot k
at (k + 1) x STEP, the last one at the end of the run. Growth is robust to
the swings within a cycle: the lowest live bytes over the late window (the
six snapshots before the last) minus the lowest over the early one
(snapshots 2-7, after the first minute's warm-up at 30 s steps).
"""
import pickle
import sys

EARLY = slice(2, 8)


def load(path):
    d = pickle.load(open(path, 'rb'))
    if len(d['snaps']) < 15:
        sys.exit(f"{path}: {len(d['snaps'])} snapshots; the growth windows need at least 15 (a run of 7.5 minutes at 30 s steps)")
    return d


def late(snaps):
    n = len(snaps)
    return slice(n - 7, n - 1)


def growth(series, snaps):
    """Lowest of the late window minus lowest of the early window."""
    return min(series[late(snaps)]) - min(series[EARLY])


def window_times(snaps):
    """'90-240 s against 450-600 s' for the two windows."""
    t = [s[0] / 1000 for s in snaps]
    lw = late(snaps)
    return f"{t[EARLY.start]:.0f}-{t[EARLY.stop - 1]:.0f} s against {t[lw.start]:.0f}-{t[lw.stop - 1]:.0f} s"


def frames(d, ti, depth=40):
    """(function, module file name, file:line) from the allocation outward."""
    S, ips, tr = d['strings'], d['ips'], d['traces']
    out = []
    while ti and len(out) < depth:
        ipi, parent = tr[ti]
        p = ips[ipi]
        mod = S[int(p[1], 16)] or '?'
        g = p[2:]
        if not g:
            out.append(('?', mod.split('/')[-1], ''))
        for k in range(0, len(g), 3):
            fn = S[int(g[k], 16)]
            loc = (S[int(g[k + 1], 16)] + ':' + str(int(g[k + 2], 16))) if k + 2 < len(g) else ''
            out.append((fn, mod.split('/')[-1], loc))
        ti = parent
    return out


def live_by(d, key):
    """Live bytes and counts per snapshot, summed by key(trace index)."""
    import collections
    snaps, ai = d['snaps'], d['ainfo']
    n = len(snaps)
    size = collections.defaultdict(lambda: [0] * n)
    count = collections.defaultdict(lambda: [0] * n)
    keys = {}
    for i, (sz, ti) in enumerate(ai):
        k = keys.get(ti)
        if k is None:
            k = keys[ti] = key(ti)
        for s in range(n):
            live = snaps[s][1]
            c = live[i] if i < len(live) else 0
            if c:
                size[k][s] += sz * c
                count[k][s] += c
    return size, count
