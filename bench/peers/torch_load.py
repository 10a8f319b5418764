#!/usr/bin/env python3
"""Peer of bench/nvme.ts: what a PyTorch user does to get a file into HBM.

Saves one uint8 tensor of the benchmark's size (random bytes) with
torch.save, then times ``torch.load(path).cuda()`` from a cold page cache
(sync + ``echo 3 > /proc/sys/vm/drop_caches`` before each sample; root only,
the JSON says whether it worked), up to ``torch.cuda.synchronize()``. Also
``torch.load(path, mmap=True).cuda()`` where this torch has it. The first
sample of each is checked against the saved tensor (outside the timed
region). Prints one JSON object in the shape of DESIGN.md section 5 on
stdout; progress on stderr. nvme.ts reads it (--torch) for its
``vs_torch_load`` ratios.

    python3 bench/peers/torch_load.py [--dir DIR] [--gib N] [--samples N] [--keep] [--quick]

--dir: folder of the file (default bench-out/nvme-data, as raw_io and nvme.ts);
--gib: tensor size (default 4); --quick: 64 MiB; --samples: default 2 (quick 2).
--sweep-gib is accepted and ignored, so that run-gpu.sh can pass the same
extra arguments to all three programs.
"""

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time

MiB = 1 << 20


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


class CacheDrop:
    def __init__(self):
        self.attempts = 0
        self.failures = 0
        self.error = None

    def __call__(self):
        self.attempts += 1
        r = subprocess.run(['sh', '-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], capture_output=True, text=True)
        if r.returncode != 0:
            self.failures += 1
            if self.error is None:
                self.error = (r.stderr.strip() or f'exit {r.returncode}')

    def json(self):
        return {'attempts': self.attempts, 'failures': self.failures, 'error': self.error}


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--dir', default='bench-out/nvme-data')
    p.add_argument('--gib', type=float, default=4.0)
    p.add_argument('--sweep-gib', type=float, default=None, help='ignored (shared with raw_io and nvme.ts)')
    p.add_argument('--samples', type=int, default=None)
    p.add_argument('--keep', action='store_true')
    p.add_argument('--quick', action='store_true')
    args = p.parse_args()

    import torch

    if not torch.cuda.is_available():
        log('torch_load.py: torch.cuda is not available; this peer needs a GPU')
        return 2
    nbytes = 64 * MiB if args.quick else int(args.gib * 1024) * MiB
    samples = args.samples or 2
    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(os.path.realpath(args.dir), 'torch_load.pt')
    drop = CacheDrop()

    # CUDA context and allocator warm before anything is timed.
    torch.zeros(1, device='cuda')
    torch.cuda.synchronize()

    # Random bytes (never zeros), drawn on the GPU (fast) and kept there as the
    # reference; the saved copy comes from host memory, as a checkpoint would.
    g = torch.Generator(device='cuda')
    g.manual_seed(0x6B76666C6F77)
    ref = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device='cuda', generator=g)
    host = ref.cpu()
    t0 = time.perf_counter()
    torch.save(host, path)
    os.sync()
    save_gbps = nbytes / (time.perf_counter() - t0) / 1e9
    del host
    file_bytes = os.path.getsize(path)
    log(f'torch_load.py: saved {nbytes} bytes ({file_bytes} on disk) at {save_gbps:.3f} GB/s (torch.save + sync)')

    variants = [('torch_load_cuda', 'torch.load(path).cuda()', lambda: torch.load(path).cuda())]
    try:
        import inspect

        if 'mmap' in inspect.signature(torch.load).parameters:
            variants.append((
                'torch_load_mmap_cuda',
                'torch.load(path, mmap=True).cuda()',
                lambda: torch.load(path, mmap=True).cuda(),
            ))
    except (TypeError, ValueError):
        pass

    results = []
    for metric, call, load in variants:
        gbps, cpu = [], []
        for i in range(samples):
            drop()
            torch.cuda.synchronize()
            c0 = cpu_seconds()
            t0 = time.perf_counter()
            x = load()
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            cpu.append((cpu_seconds() - c0) / (nbytes / 1e9))
            gbps.append(nbytes / seconds / 1e9)
            if i == 0 and not (x.dtype == ref.dtype and x.shape == ref.shape and x.is_cuda and torch.equal(x, ref)):
                log(f'torch_load.py: {call} returned different bytes')
                return 1
            del x
            torch.cuda.empty_cache()
            log(f'{metric:<22} {gbps[-1]:8.3f} GB/s  cpu {cpu[-1]:.3f} s/GB')
        s = sorted(gbps)
        med = s[len(s) // 2]
        results.append({
            'metric': metric,
            'value': med,
            'unit': 'GB/s',
            'baseline': None,
            'ratio': None,
            'call': call,
            'bytes': nbytes,
            'samples': samples,
            'samples_gbps': gbps,
            'spread_pct': 100 * (s[-1] - s[0]) / med,
            'cpu_s_per_gb': sorted(cpu)[len(cpu) // 2],
        })

    if not args.keep:
        os.unlink(path)
    out = {
        'bench': 'torch_load',
        'device': torch.cuda.get_device_name(0),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'commit': os.environ.get('KVFLOW_COMMIT') or 'unknown',
        'config': {
            'dir': args.dir,
            'file': path,
            'bytes': nbytes,
            'file_bytes': file_bytes,
            'quick': args.quick,
            'samples': samples,
            'torch': torch.__version__,
            'cuda': torch.version.cuda,
            'python': sys.version.split()[0],
            'save_gbps': save_gbps,
            'cache_drop': drop.json(),
            'timing': 'perf_counter from before the load to after torch.cuda.synchronize(), page cache dropped '
                      'before each sample; GB/s = tensor bytes / time, median of samples; cpu_s_per_gb: '
                      'getrusage(RUSAGE_SELF) user + system over the same region per 1e9 bytes',
            'tensor': 'one uint8 tensor of random bytes, saved from host memory with torch.save (zip format)',
        },
        'results': results,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
