/** `kvflow doctor`: what kvflow can use on this host, and why anything is missing. */
import os from 'node:os';

import { loadBinding } from '../binding/load.js';
import type { NativeBinding, NativeDeviceInfo } from '../binding/types.js';
import { defaults, type KvflowDefaults } from '../defaults.js';
import { openDevice, selectBackend } from '../index.js';
import { probeDirectIo, probeIoUring } from '../io/probe.js';

/** One line of the report. */
export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** What doctor found, also printed as JSON with --json. */
export interface DoctorReport {
  checks: DoctorCheck[];
  info?: Record<string, unknown>;
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

function cudaVersion(v: number): string {
  return v > 0 ? `${Math.floor(v / 1000)}.${(v % 1000) / 10}` : 'none';
}

/**
 * The NVMe tier: the engine files get and whether it can run, io_uring's
 * verdict, O_DIRECT's verdict in the temp directory, and the IO defaults.
 */
function ioCheck(d: KvflowDefaults): DoctorCheck {
  const uring = probeIoUring();
  const direct = probeDirectIo(os.tmpdir());
  const engine = d.ioEngine === 'auto' ? (uring.ok ? 'io_uring' : 'posix') : d.ioEngine;
  const ok = d.ioEngine !== 'io_uring' || uring.ok;
  const mib = (n: number): string => (n % 2 ** 20 === 0 ? `${n / 2 ** 20} MiB` : `${n} bytes`);
  return {
    name: 'nvme io',
    ok,
    detail:
      `engine ${engine} (KVFLOW_IO_ENGINE=${d.ioEngine}); io_uring: ${uring.ok ? 'available' : uring.reason}; ` +
      `${direct.ok ? direct.reason : `O_DIRECT not used in ${os.tmpdir()}: ${direct.reason}`}; ` +
      `KVFLOW_IO_DIRECT=${d.ioDirect} KVFLOW_IO_THREADS=${d.ioThreads} KVFLOW_IO_TASK_SIZE=${mib(d.ioTaskSize)} ` +
      `KVFLOW_IO_QUEUE_DEPTH=${d.ioQueueDepth}`,
  };
}

/** How checked file IO computes CRC32C here: CPU instructions, or the slower table fallback and why. */
function crcCheck(binding: NativeBinding): DoctorCheck {
  const impl = binding.crc32cImplementation;
  const detail =
    impl === 'table'
      ? 'slicing-by-8 tables (this CPU or build has no CRC32C instructions kvflow uses: SSE4.2, or ARMv8 CRC in a build that targets it)'
      : `${impl} instructions`;
  return { name: 'crc32c', ok: true, detail };
}

/** GPUDirect Storage: whether cuFile loads here (each file is still registered before use). */
function gdsCheck(d: KvflowDefaults, binding: NativeBinding, cuda: boolean): DoctorCheck {
  if (!cuda) return { name: 'gds', ok: false, detail: `not used: GPUDirect Storage needs the CUDA backend (KVFLOW_GDS=${d.gds})` };
  const p = binding.probeGds();
  return {
    name: 'gds',
    ok: p.available,
    detail: `${p.available ? p.reason : `${p.reason}; files move through pinned bounce buffers`} (KVFLOW_GDS=${d.gds})`,
  };
}

/**
 * How CUDA streams wait on gates: the mode in force and why, and whether
 * wait-value works on the device (why not, when it does not). A forced
 * `wait-value` that cannot work is the failing case.
 */
function cudaGateCheck(
  d: KvflowDefaults,
  info: NativeDeviceInfo,
  probe: { available: boolean; reason: string } | undefined,
): DoctorCheck {
  const setting = `KVFLOW_CUDA_GATE=${d.cudaGate}`;
  if (info.backend !== 'cuda' || probe === undefined) {
    return { name: 'cuda gate', ok: true, detail: `not used: the CPU backend waits on gates on its own threads (${setting})` };
  }
  if (d.cudaGate === 'wait-value' && !probe.available) {
    return {
      name: 'cuda gate',
      ok: false,
      detail: `${setting} cannot be used: ${probe.reason}; devices fail to open with ERR_UNSUPPORTED (this report used host functions)`,
    };
  }
  const mode = info.cudaGate === 'wait-value' ? 'wait-value' : 'host functions';
  const wv = probe.available ? 'available' : `unavailable: ${probe.reason}`;
  return { name: 'cuda gate', ok: true, detail: `${mode} (${setting}: ${info.cudaGateReason}); wait-value: ${wv}` };
}

/** Every setting a device opened here runs with (built-in defaults, `KVFLOW_*` over them), store defaults included. */
function configCheck(config: KvflowDefaults): DoctorCheck {
  const flat = (o: object, prefix: string): string[] =>
    Object.entries(o).flatMap(([k, v]) => (typeof v === 'object' && v !== null ? flat(v as object, `${prefix}${k}.`) : [`${prefix}${k}=${String(v)}`]));
  return { name: 'config', ok: true, detail: flat(config, '').join(' ') };
}

/** Runs the checks; never throws for a missing capability (it reports it). */
export async function doctor(): Promise<DoctorReport> {
  const checks: DoctorCheck[] = [];
  let loaded;
  try {
    loaded = loadBinding();
    checks.push({ name: 'addon', ok: true, detail: `${loaded.path} (${loaded.build} build)` });
  } catch (e) {
    checks.push({ name: 'addon', ok: false, detail: (e as Error).message });
    return { checks };
  }
  const probe = loaded.binding.probeCuda();
  checks.push({
    name: 'cuda',
    ok: probe.available,
    detail: probe.available
      ? `${probe.deviceCount} device(s), driver CUDA ${cudaVersion(probe.driverVersion)}, runtime ${cudaVersion(probe.runtimeVersion)}`
      : probe.reason,
  });
  const d = defaults();
  const selection = selectBackend(d.backend);
  checks.push({ name: 'backend', ok: true, detail: `${selection.backend} (requested ${selection.requested}: ${selection.reason})` });
  checks.push({
    name: 'defaults',
    ok: true,
    detail: `KVFLOW_BACKEND=${d.backend} KVFLOW_DEVICE=${d.ordinal} KVFLOW_MAX_PINNED_BYTES=${d.maxPinnedBytes || 'unlimited'}`,
  });
  checks.push(ioCheck(d));
  checks.push(crcCheck(loaded.binding));
  checks.push(gdsCheck(d, loaded.binding, selection.backend === 'cuda'));
  // A forced wait-value gate that cannot work is reported, not thrown.
  const gateProbe = selection.backend === 'cuda' ? loaded.binding.probeCudaGate(d.ordinal) : undefined;
  const cudaGate = d.cudaGate === 'wait-value' && gateProbe?.available === false ? 'host' : d.cudaGate;
  const device = openDevice({ backend: selection.backend, cudaGate });
  try {
    const info = device.info();
    if (info.backend === 'cuda') {
      checks.push({
        name: 'gpu',
        ok: true,
        detail: `${info.name}, ${gib(info.totalMemory)} (${gib(info.freeMemory)} free), compute ${info.computeCapability}, ${info.multiprocessors} SMs, ${info.asyncEngines} copy engines`,
      });
      checks.push({
        name: 'pcie',
        ok: info.pcieGen > 0,
        detail: info.pcieGen > 0
          ? `Gen${info.pcieGen} x${info.pcieWidth} (max Gen${info.pcieMaxGen} x${info.pcieMaxWidth}) at ${info.pciBusId}`
          : `link unknown: ${info.pcieNote}`,
      });
    } else {
      checks.push({ name: 'cpu', ok: true, detail: `${info.name}, ${info.cores} cores, ${gib(info.hostMemory)} memory` });
    }
    checks.push(cudaGateCheck(d, info, gateProbe));
    checks.push(configCheck(device.config));
    // Pin a small buffer to prove pinned memory works here.
    const probeBuf = device.allocPinned(1 << 20);
    await probeBuf.dispose();
    const pool = device.pinnedStats();
    checks.push({ name: 'pinned memory', ok: true, detail: `allocated and pooled 1 MiB (limit ${pool.limitBytes || 'none'})` });
    return { checks, info: { ...info } };
  } finally {
    await device.dispose();
  }
}

/** Prints the report; returns the process exit code (0 even when only optional pieces are missing). */
export async function runDoctor(args: string[]): Promise<number> {
  const report = await doctor();
  if (args.includes('--json')) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    for (const c of report.checks) process.stdout.write(`${c.ok ? 'ok ' : 'no '} ${c.name.padEnd(14)} ${c.detail}\n`);
  }
  return report.checks[0]?.ok ? 0 : 1;
}
