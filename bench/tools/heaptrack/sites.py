#!/usr/bin/env python3
"""The call sites whose live bytes grow over a heaptrack run (decode.py's OUT.pkl), with their frames.

    python3 bench/tools/heaptrack/sites.py OUT.pkl [TOP]

Growth is robust to the swings of a cycle: the lowest live bytes over
snapshots 14-19 minus the lowest over 2-7 (30 s snapshots: minutes 7-10
against 1-4).
"""
import pickle, collections, sys
d=pickle.load(open(sys.argv[1],'rb'))
S=d['strings']; ips=d['ips']; tr=d['traces']; ai=d['ainfo']; snaps=d['snaps']
def frames(ti, depth=40):
    out=[]
    while ti and len(out)<depth:
        ipi,parent=tr[ti]; p=ips[ipi]
        mod=S[int(p[1],16)] or '?'
        g=p[2:]
        if not g: out.append(('?',mod.split('/')[-1],''))
        for k in range(0,len(g),3):
            fn=S[int(g[k],16)]
            loc=(S[int(g[k+1],16)]+':'+str(int(g[k+2],16))) if k+2<len(g) else ''
            out.append((fn,mod.split('/')[-1],loc))
        ti=parent
    return out
times=[s[0] for s in snaps]
print('snap times', times)
A,B=2,19   # 60 s vs 570 s
def bytes_at(idx): 
    L=snaps[idx][1]; return sum(ai[i][0]*L[i] for i in range(len(L)))
for k in range(len(snaps)): print(times[k], round(bytes_at(k)/2**20,2))
# aggregate by trace
g=collections.defaultdict(lambda:[0]*len(snaps)); cnt=collections.defaultdict(lambda:[0]*len(snaps))
for i,(sz,ti) in enumerate(ai):
    for k in range(len(snaps)):
        L=snaps[k][1]; c=L[i] if i<len(L) else 0
        if c: g[ti][k]+=sz*c; cnt[ti][k]+=c
def score(v): return min(v[14:20])-min(v[2:8])
rows=sorted(g.items(), key=lambda kv: -score(kv[1]))
print('total robust growth of positive sites KiB', sum(max(0,score(v)) for v in g.values())/1024, 'negative', sum(min(0,score(v)) for v in g.values())/1024)
SKIP=('libheaptrack','libc.so','libstdc++')
for ti,v in rows[:int(sys.argv[2]) if len(sys.argv)>2 else 25]:
    gr=score(v)
    if gr<=0: break
    mono=all(v[k+1]>=v[k] for k in range(A,B))
    print('\n=== +%.1f KiB (60s %.1f KiB -> 570s %.1f KiB, end %.1f KiB) count %d->%d monotone=%s' % (gr/1024, v[A]/1024, v[B]/1024, v[-1]/1024, cnt[ti][A], cnt[ti][B], mono))
    print('   series KiB:', [round(x/1024) for x in v[1::2]])
    fr=[f for f in frames(ti) if not any(s in f[1] for s in SKIP)]
    for f in fr[:14]: print('   ', f[0][:110], '|', f[1], f[2])
