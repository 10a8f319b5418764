#!/usr/bin/env python3
"""Decodes a heaptrack 1.4 data file into live allocation counts per call site every 30 s.

    zstd -dc heaptrack.node.PID.zst | python3 bench/tools/heaptrack/decode.py OUT.pkl [STEP_MS]

Then sites.py (the call sites whose live bytes grow, with their frames) and
by_library.py (growth by library: kvflow.node, lmdb's addon, Node/V8); the
growth windows are in common.py. Used
for bench/results soak-heaptrack-cpu.txt (issue #13 item 8).
"""
import sys, pickle
strings=[None]; ips=[None]; traces=[(0,0)]; ainfo=[]
live=[]  # count per allocinfo
snaps=[]; step=int(sys.argv[2]) if len(sys.argv)>2 else 30000; nextsnap=step
t=0
for line in sys.stdin:
    c=line[0]
    if c=='+':
        i=int(line[2:],16); live[i]+=1
    elif c=='-':
        i=int(line[2:],16); live[i]-=1
    elif c=='a':
        p=line.split(); ainfo.append((int(p[1],16),int(p[2],16))); live.append(0)
    elif c=='t':
        p=line.split(); traces.append((int(p[1],16),int(p[2],16)))
    elif c=='i':
        p=line.split(); ips.append(p[1:])
    elif c=='s':
        strings.append(line[2:].rstrip('\n').split(' ',1)[1] if ' ' in line[2:] else '')
    elif c=='c':
        t=int(line[2:],16)
        while t>=nextsnap:
            snaps.append((nextsnap, list(live))); nextsnap+=step
snaps.append((t, list(live)))
pickle.dump(dict(strings=strings,ips=ips,traces=traces,ainfo=ainfo,snaps=snaps), open(sys.argv[1],'wb'))
print('done', len(ainfo), len(traces), len(snaps))
