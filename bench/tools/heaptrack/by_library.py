#!/usr/bin/env python3
"""Growth of live heap bytes by library over a heaptrack run (decode.py's OUT.pkl).

    python3 bench/tools/heaptrack/by_library.py OUT.pkl
"""
import pickle, collections
import os, sys
exec(open(os.path.join(os.path.dirname(__file__), 'sites.py')).read().split("times=[s[0]")[0])
times=[s[0] for s in snaps]
def classify(ti):
    fr=frames(ti,60)
    mods=[f[1] for f in fr]
    fns=[f[0] or '?' for f in fr]
    if any('kvflow' in m for m in mods): return 'kvflow.node'
    if any('node.abi115' in m for m in mods):
        # first lmdb function
        for f in fr:
            if 'node.abi115' in f[1]: return 'lmdb:'+(f[0] or '?').split('(')[0]+' '+f[2]
    if any(fn.startswith('Builtins_') or 'v8::' in fn for fn in fns): return 'node/v8'
    return 'other:'+ str([x[0] for x in fr[:4] if x[0] and 'malloc' not in x[0]][:2])
# per allocinfo -> class
cls={}
agg=collections.defaultdict(lambda:[0]*len(snaps)); cnt=collections.defaultdict(lambda:[0]*len(snaps))
tcache={}
for i,(sz,ti) in enumerate(ai):
    c=tcache.get(ti)
    if c is None: c=tcache[ti]=classify(ti)
    for k in range(len(snaps)):
        L=snaps[k][1]
        if i<len(L) and L[i]: agg[c][k]+=sz*L[i]; cnt[c][k]+=L[i]
def score(v): return min(v[14:20])-min(v[2:8])
mod=collections.defaultdict(lambda:[0]*len(snaps))
for c,v in agg.items():
    key=c.split(':')[0]
    for k in range(len(v)): mod[key][k]+=v[k]
print('by module, KiB at 30s steps (every 2nd), robust growth')
for key,v in sorted(mod.items(), key=lambda kv:-score(kv[1])):
    print(key, round(score(v)/1024,1), [round(x/1024) for x in v[1::2]])
print()
for c,v in sorted(agg.items(), key=lambda kv:-score(kv[1]))[:25]:
    print('%8.1f KiB  n %5d->%5d  end %7.1f KiB  %s' % (score(v)/1024, cnt[c][2], cnt[c][19], v[-1]/1024, c[:150]))
