/**
 * The checks of `kvflow doctor`, one function each: a line for people
 * (`detail`) and the same facts as fields (`data`) for `--json`.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';

import type { NativeBinding, NativeCudaProbe, NativeDeviceInfo } from '../binding/types.js';
import { readConfig, type KvflowDefaults } from '../defaults.js';
import type { BackendSelection, Device } from '../device/device.js';
import { probeDirectIo, probeIoUring } from '../io/probe.js';

/** One line of the report. */
export interface DoctorCheck {
  name: string;
  ok: boolean;
  /** The line people read. */
  detail: string;
  /** The same facts as fields. */
  data: Record<string, unknown>;
}

export const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

const mib = (n: number): string => (n % 2 ** 20 === 0 ? `${n / 2 ** 20} MiB` : `${n} bytes`);

export function cudaVersion(v: number): string {
  return v > 0 ? `${Math.floor(v / 1000)}.${(v % 1000) / 10}` : 'none';
}

/** A `KVFLOW_*` variable that does not parse. */
export interface BadVariable {
  name: string;
  value: string;
  error: string;
}

/**
 * The `KVFLOW_*` settings of `env`, each validated on its own so that every
 * bad one is named (devices refuse to open while one is bad).
 */
export function environmentChecks(env: NodeJS.ProcessEnv): { checks: DoctorCheck[]; bad: BadVariable[] } {
  const set = Object.entries(env).filter(([k, v]) => k.startsWith('KVFLOW_') && v !== undefined && v !== '').sort(([a], [b]) => a.localeCompare(b)) as [string, string][];
  const bad: BadVariable[] = [];
  for (const [name, value] of set) {
    try {
      readConfig({ [name]: value });
    } catch (e) {
      bad.push({ name, value, error: (e as Error).message });
    }
  }
  const checks: DoctorCheck[] = bad.map((b) => ({
    name: b.name,
    ok: false,
    detail: `${b.error}: devices fail to open (ERR_INVALID_ARG) until it is fixed; the checks below use the built-in default`,
    data: { variable: b.name, value: b.value, error: b.error },
  }));
  checks.unshift({
    name: 'environment',
    ok: bad.length === 0,
    detail: set.length === 0 ? 'no KVFLOW_* variables set' : set.map(([k, v]) => `${k}=${v}`).join(' '),
    data: { variables: Object.fromEntries(set), invalid: bad.map((b) => b.name) },
  });
  return { checks, bad };
}

export function cudaCheck(probe: NativeCudaProbe): DoctorCheck {
  return {
    name: 'cuda',
    ok: probe.available,
    detail: probe.available
      ? `${probe.deviceCount} device(s), driver CUDA ${cudaVersion(probe.driverVersion)}, runtime ${cudaVersion(probe.runtimeVersion)}`
      : probe.reason,
    data: {
      available: probe.available, deviceCount: probe.deviceCount, driverVersion: cudaVersion(probe.driverVersion),
      runtimeVersion: cudaVersion(probe.runtimeVersion), reason: probe.available ? null : probe.reason,
    },
  };
}

/** The backend chosen; an `auto` that fell back to the CPU points at the cuda line rather than repeating its reason. */
export function backendCheck(selection: BackendSelection): DoctorCheck {
  const fellBack = selection.requested === 'auto' && selection.backend === 'cpu';
  return {
    name: 'backend',
    ok: true,
    detail: `${selection.backend} (requested ${selection.requested}: ${fellBack ? 'no usable CUDA device, see cuda' : selection.reason})`,
    data: { requested: selection.requested, chosen: selection.backend, reason: selection.reason },
  };
}

/**
 * The NVMe tier: the engine files get and whether it can run, io_uring's
 * verdict, O_DIRECT's verdict in `dir`, and the IO settings.
 */
export function ioCheck(d: KvflowDefaults, dir: string): DoctorCheck {
  const uring = probeIoUring();
  const direct = probeDirectIo(dir);
  const engine = d.ioEngine === 'auto' ? (uring.ok ? 'io_uring' : 'posix') : d.ioEngine;
  return {
    name: 'nvme io',
    ok: d.ioEngine !== 'io_uring' || uring.ok,
    detail:
      `engine ${engine} (KVFLOW_IO_ENGINE=${d.ioEngine}); io_uring: ${uring.ok ? 'available' : uring.reason}; ` +
      `${direct.ok ? direct.reason : `O_DIRECT not used in ${dir}: ${direct.reason}`}; ` +
      `KVFLOW_IO_DIRECT=${d.ioDirect} KVFLOW_IO_THREADS=${d.ioThreads} KVFLOW_IO_TASK_SIZE=${mib(d.ioTaskSize)} ` +
      `KVFLOW_IO_QUEUE_DEPTH=${d.ioQueueDepth}`,
    data: {
      engine, engineRequested: d.ioEngine,
      ioUring: { available: uring.ok, reason: uring.ok ? null : uring.reason },
      direct: { dir, requested: d.ioDirect, available: direct.ok, reason: direct.reason, alignment: direct.alignment },
      threads: d.ioThreads, taskSize: d.ioTaskSize, queueDepth: d.ioQueueDepth,
    },
  };
}

/** How checked file IO computes CRC32C here: CPU instructions, or the slower table fallback and why. */
export function crcCheck(binding: NativeBinding): DoctorCheck {
  const impl = binding.crc32cImplementation;
  const detail =
    impl === 'table'
      ? 'slicing-by-8 tables (this CPU or build has no CRC32C instructions kvflow uses: SSE4.2, or ARMv8 CRC in a build that targets it)'
      : `${impl} instructions`;
  return { name: 'crc32c', ok: true, detail, data: { implementation: impl } };
}

/**
 * GPUDirect Storage, tested for real: on the CUDA backend a file is created
 * in `dir` and opened as the store opens its slabs, which registers it with
 * cuFile; the line says whether that registration worked, and why not.
 */
export async function gdsCheck(d: KvflowDefaults, binding: NativeBinding, device: Device, dir: string): Promise<DoctorCheck> {
  const setting = `KVFLOW_GDS=${d.gds}`;
  const result = (ok: boolean, status: string, reason: string, detail: string): DoctorCheck => ({
    name: 'gds', ok, detail: `${detail} (${setting})`, data: { status, requested: d.gds, dir, reason },
  });
  if (device.backend !== 'cuda') return result(false, 'not-used', 'GPUDirect Storage needs the CUDA backend', 'not used: GPUDirect Storage needs the CUDA backend');
  if (d.gds === 'off') return result(true, 'off', 'turned off', 'off: files move through pinned bounce buffers');
  const lib = binding.probeGds();
  if (!lib.available) return result(false, 'unavailable', lib.reason, `${lib.reason}; files move through pinned bounce buffers`);
  const probe = path.join(dir, `.kvflow-doctor-gds-${process.pid}`);
  try {
    const file = await device.openFile(probe, { create: true, direct: 'auto', gds: 'auto', size: 1 << 20 });
    const { gds, gdsReason } = file.info;
    await file.dispose();
    return gds
      ? result(true, 'registered', gdsReason, `cuFile registered a file in ${dir}: ${gdsReason}`)
      : result(false, 'refused', gdsReason, `cuFile loads, but a file in ${dir} was not registered: ${gdsReason}; files there move through pinned bounce buffers`);
  } catch (e) {
    return result(false, 'not-checked', (e as Error).message, `not checked: a probe file could not be opened in ${dir}: ${(e as Error).message}`);
  } finally {
    rmSync(probe, { force: true });
  }
}

/**
 * How CUDA streams wait on gates: the mode in force and why, and whether
 * wait-value works on the device (why not, when it does not). A forced
 * `wait-value` that cannot work is the failing case.
 */
export function cudaGateCheck(d: KvflowDefaults, info: NativeDeviceInfo, probe: { available: boolean; reason: string } | undefined): DoctorCheck {
  const setting = `KVFLOW_CUDA_GATE=${d.cudaGate}`;
  const waitValue = probe && { available: probe.available, reason: probe.available ? null : probe.reason };
  if (info.backend !== 'cuda' || probe === undefined) {
    return {
      name: 'cuda gate', ok: true, detail: `not used: the CPU backend waits on gates on its own threads (${setting})`,
      data: { mode: 'none', requested: d.cudaGate, waitValue: null },
    };
  }
  if (d.cudaGate === 'wait-value' && !probe.available) {
    return {
      name: 'cuda gate',
      ok: false,
      detail: `${setting} cannot be used: ${probe.reason}; devices fail to open with ERR_UNSUPPORTED (this report used host functions)`,
      data: { mode: 'host', requested: d.cudaGate, waitValue },
    };
  }
  const mode = info.cudaGate === 'wait-value' ? 'wait-value' : 'host functions';
  const wv = probe.available ? 'available' : `unavailable: ${probe.reason}`;
  return {
    name: 'cuda gate', ok: true, detail: `${mode} (${setting}: ${info.cudaGateReason}); wait-value: ${wv}`,
    data: { mode: info.cudaGate, requested: d.cudaGate, reason: info.cudaGateReason, waitValue },
  };
}

/** The device itself: the GPU and its PCIe link, or the CPU. */
export function hardwareChecks(info: NativeDeviceInfo): DoctorCheck[] {
  if (info.backend !== 'cuda') {
    return [{
      name: 'cpu', ok: true, detail: `${info.name}, ${info.cores} cores, ${gib(info.hostMemory)} memory`,
      data: { name: info.name, cores: info.cores, hostMemory: info.hostMemory },
    }];
  }
  return [
    {
      name: 'gpu',
      ok: true,
      detail: `${info.name}, ${gib(info.totalMemory)} (${gib(info.freeMemory)} free), compute ${info.computeCapability}, ${info.multiprocessors} SMs, ${info.asyncEngines} copy engines`,
      data: {
        name: info.name, totalMemory: info.totalMemory, freeMemory: info.freeMemory, computeCapability: info.computeCapability,
        multiprocessors: info.multiprocessors, asyncEngines: info.asyncEngines,
      },
    },
    {
      name: 'pcie',
      ok: info.pcieGen > 0,
      detail: info.pcieGen > 0
        ? `Gen${info.pcieGen} x${info.pcieWidth} (max Gen${info.pcieMaxGen} x${info.pcieMaxWidth}) at ${info.pciBusId}`
        : `link unknown: ${info.pcieNote}`,
      data: { gen: info.pcieGen, width: info.pcieWidth, maxGen: info.pcieMaxGen, maxWidth: info.pcieMaxWidth, busId: info.pciBusId, note: info.pcieNote || null },
    },
  ];
}

/** Every setting a device opened here runs with (built-in defaults, `KVFLOW_*` over them), store defaults included. */
export function configCheck(config: KvflowDefaults): DoctorCheck {
  const flat = (o: object, prefix: string): string[] =>
    Object.entries(o).flatMap(([k, v]) => (typeof v === 'object' && v !== null ? flat(v as object, `${prefix}${k}.`) : [`${prefix}${k}=${String(v)}`]));
  return { name: 'config', ok: true, detail: flat(config, '').join(' '), data: { ...config } };
}

/** Pins a small buffer to prove pinned memory works here. */
export async function pinnedCheck(device: Device): Promise<DoctorCheck> {
  const probe = device.allocPinned(1 << 20);
  await probe.dispose();
  const pool = device.pinnedStats();
  return {
    name: 'pinned memory', ok: true, detail: `allocated and pooled 1 MiB (limit ${pool.limitBytes || 'none'})`,
    data: { probeBytes: 1 << 20, limitBytes: pool.limitBytes || null },
  };
}
