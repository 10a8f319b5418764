"""Where is each thread of a running process? (x86-64 Linux, root or ptrace rights)

    python3 bench/tools/stackscan.py PID [DEPTH]

Stops each thread briefly with ptrace, prints its instruction pointer and the
first DEPTH words on its stack that point into executable file mappings
(likely return addresses, some stale), each as library+offset. No debugger
needed; offsets into kvflow.node symbolise with addr2line on the machine that
built it. Used by bench/tools/watchdog.sh.
"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
names = "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss fs_base gs_base ds es fs gs".split()
class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in names]
pid = int(sys.argv[1]); depth = int(sys.argv[2]) if len(sys.argv) > 2 else 48
maps = []
for line in open(f"/proc/{pid}/maps"):
    parts = line.split()
    lo, hi = (int(x, 16) for x in parts[0].split("-"))
    maps.append((lo, hi, parts[1], int(parts[2], 16), parts[5] if len(parts) > 5 else ""))
def where(a):
    for lo, hi, perm, off, path in maps:
        if lo <= a < hi and "x" in perm:
            return f"{os.path.basename(path) or '[anon]'}+{a - lo + off:#x}"
    return None
mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
    comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
    if libc.ptrace(16, tid, None, None) != 0:
        print(f"tid {tid} {comm}: attach failed errno {ctypes.get_errno()}"); continue
    os.waitpid(tid, 0x40000000)
    r = Regs()
    libc.ptrace(12, tid, None, ctypes.byref(r))
    out = [f"rip {where(r.rip) or hex(r.rip)}"]
    try:
        mem.seek(r.rsp); data = mem.read(256 * 1024)
    except OSError:
        data = b""
    n = 0
    for i in range(0, len(data) - 7, 8):
        w = int.from_bytes(data[i:i + 8], "little")
        s = where(w)
        if s and not s.startswith("[anon]"):
            out.append(s); n += 1
            if n >= depth: break
    libc.ptrace(17, tid, None, None)
    print(f"tid {tid} {comm}: " + " ".join(out))
