/**
 * `kvflow doctor`: what kvflow can use on this host, and why anything is
 * missing. A verdict first, the versions, then one line per check; `--json`
 * gives the same as fields.
 */
import { statSync } from 'node:fs';
import os from 'node:os';

import { loadBinding, type LoadedBinding } from '../binding/load.js';
import { defaults } from '../defaults.js';
import { openDevice, selectBackend, type BackendSelection } from '../index.js';
import { parseCommand, UsageError, type Command } from './args.js';
import {
  backendCheck, configCheck, crcCheck, cudaCheck, cudaGateCheck, environmentChecks, gdsCheck, hardwareChecks, ioCheck, pinnedCheck, type DoctorCheck,
} from './doctor-checks.js';
import { kvflowVersion } from './version.js';

export type { DoctorCheck } from './doctor-checks.js';

/** The verdict: `ready` (the CUDA backend, or the CPU backend as asked), `cpu-only` (no usable GPU), `not-usable`. */
export interface DoctorVerdict {
  status: 'ready' | 'cpu-only' | 'not-usable';
  /** The backend a device opened here gets; null when none can open. */
  backend: 'cuda' | 'cpu' | null;
  /** The verdict line without its `kvflow doctor: ` prefix. */
  summary: string;
  /** Why it is not `ready` on CUDA; null when it is. */
  reason: string | null;
}

/** What doctor found, also printed as JSON with --json. */
export interface DoctorReport {
  verdict: DoctorVerdict;
  versions: { kvflow: string; node: string; napi: string; platform: string; arch: string; kernel: string; addon: string | null };
  checks: DoctorCheck[];
  /** `device.info()` of the device opened for the checks. */
  info?: Record<string, unknown>;
}

export const DOCTOR_USAGE = `usage: kvflow doctor [--json] [--dir DIR]

What kvflow can use on this host, and why anything is missing: a verdict
line first (ready, CPU only and why, or not usable and why), the versions of
kvflow, Node and the platform, then one line per check (the addon, CUDA, the
backend chosen, every KVFLOW_* variable, the NVMe IO engine and O_DIRECT,
CRC32C, GPUDirect Storage, the device, pinned memory, the config in force).

options:
  --dir DIR   the directory whose O_DIRECT and GPUDirect Storage support is
              checked: where your store lives (default: the OS temp directory)
  --json      the same as one JSON object on stdout
  -h, --help  this text

Exit status: 0 when kvflow can run here (on the CPU backend included), 1 when
it cannot (the addon does not load, a KVFLOW_* variable is invalid, the
backend asked for cannot be used).
`;

function versions(loaded: LoadedBinding | undefined): DoctorReport['versions'] {
  return {
    kvflow: kvflowVersion(), node: process.version, napi: process.versions.napi ?? 'unknown', platform: process.platform, arch: process.arch,
    kernel: os.release(), addon: loaded ? `${loaded.build} build` : null,
  };
}

function notUsable(reason: string): DoctorVerdict {
  return { status: 'not-usable', backend: null, summary: `not usable: ${reason}`, reason };
}

/** Runs the checks; never throws for a missing capability or a bad variable (it reports them). */
export async function doctor(options: { dir?: string } = {}): Promise<DoctorReport> {
  const dir = options.dir ?? os.tmpdir();
  const checks: DoctorCheck[] = [];
  let loaded: LoadedBinding;
  try {
    loaded = loadBinding();
    checks.push({ name: 'addon', ok: true, detail: `${loaded.path} (${loaded.build} build)`, data: { path: loaded.path, build: loaded.build } });
  } catch (e) {
    const reason = (e as Error).message;
    checks.push({ name: 'addon', ok: false, detail: reason, data: { path: null, error: reason } });
    return { verdict: notUsable(`the native addon does not load (see addon)`), versions: versions(undefined), checks };
  }
  const report = { versions: versions(loaded), checks };
  // Every bad variable is a failed check; the rest of the report runs without it.
  const env = environmentChecks(process.env);
  checks.push(...env.checks);
  for (const b of env.bad) delete process.env[b.name];
  let verdictFailure = env.bad.length > 0
    ? `${env.bad.map((b) => b.name).join(', ')} ${env.bad.length === 1 ? 'is' : 'are'} invalid (devices refuse to open)`
    : undefined;

  const probe = loaded.binding.probeCuda();
  checks.push(cudaCheck(probe));
  const d = defaults();
  let selection: BackendSelection;
  try {
    selection = selectBackend(d.backend);
    checks.push(backendCheck(selection));
  } catch (e) {
    // KVFLOW_BACKEND=cuda where CUDA cannot be used: reported; the rest is checked on what auto gets.
    const reason = (e as Error).message;
    checks.push({ name: 'backend', ok: false, detail: `KVFLOW_BACKEND=${d.backend}: ${reason}`, data: { requested: d.backend, chosen: null, reason } });
    verdictFailure ??= `KVFLOW_BACKEND=${d.backend}: ${reason}`;
    selection = selectBackend('auto');
  }
  checks.push(ioCheck(d, dir));
  checks.push(crcCheck(loaded.binding));
  // A forced wait-value gate that cannot work is reported, not thrown.
  const gateProbe = selection.backend === 'cuda' ? loaded.binding.probeCudaGate(d.ordinal) : undefined;
  const cudaGate = d.cudaGate === 'wait-value' && gateProbe?.available === false ? 'host' : d.cudaGate;
  const device = openDevice({ backend: selection.backend, cudaGate });
  try {
    const info = device.info();
    checks.push(...hardwareChecks(info));
    checks.push(await gdsCheck(d, loaded.binding, device, dir));
    const gate = cudaGateCheck(d, info, gateProbe);
    checks.push(gate);
    if (!gate.ok) verdictFailure ??= `KVFLOW_CUDA_GATE=${d.cudaGate} cannot be used (see cuda gate)`;
    checks.push(configCheck(device.config));
    checks.push(await pinnedCheck(device));
    let verdict: DoctorVerdict;
    if (verdictFailure !== undefined) verdict = notUsable(verdictFailure);
    else if (selection.backend === 'cuda') {
      verdict = { status: 'ready', backend: 'cuda', summary: `ready (CUDA: ${info.name}, ${(info.totalMemory / 2 ** 30).toFixed(0)} GiB)`, reason: null };
    } else if (selection.requested === 'cpu') {
      verdict = { status: 'ready', backend: 'cpu', summary: 'ready (the CPU backend, as KVFLOW_BACKEND=cpu asks)', reason: null };
    } else {
      verdict = { status: 'cpu-only', backend: 'cpu', summary: `CPU only: ${probe.reason}`, reason: probe.reason };
    }
    return { verdict, ...report, info: { ...info } };
  } finally {
    await device.dispose();
  }
}

/** The report for people: the verdict, the versions, a line per check; no reason printed twice. */
export function formatDoctor(r: DoctorReport): string {
  const v = r.versions;
  const lines = [
    `kvflow doctor: ${r.verdict.summary}`,
    `kvflow ${v.kvflow}, Node ${v.node} (N-API ${v.napi}), ${v.platform} ${v.arch} (kernel ${v.kernel})`,
  ];
  const width = Math.max(14, ...r.checks.map((c) => c.name.length));
  for (const c of r.checks) {
    const detail = r.verdict.reason !== null && c.detail === r.verdict.reason ? 'unavailable: the reason above' : c.detail;
    lines.push(`${c.ok ? 'ok ' : 'no '} ${c.name.padEnd(width)} ${detail}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Prints the report; exit 0 when kvflow can run here, 1 when it cannot. */
export async function runDoctor(args: string[]): Promise<number> {
  const { values, help } = parseCommand<{ json?: boolean; dir?: string }>(args, { json: { type: 'boolean' }, dir: { type: 'string' } });
  if (help) {
    process.stdout.write(DOCTOR_USAGE);
    return 0;
  }
  if (values.dir !== undefined) {
    let isDir = false;
    try {
      isDir = statSync(values.dir).isDirectory();
    } catch {
      // missing: refused below
    }
    if (!isDir) throw new UsageError(`expected an existing directory for --dir, got '${values.dir}'`);
  }
  const report = await doctor({ dir: values.dir });
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatDoctor(report));
  return report.verdict.status === 'not-usable' ? 1 : 0;
}

export const doctorCommand: Command = {
  name: 'doctor',
  summary: 'what kvflow can use on this host, and why anything is missing',
  usage: DOCTOR_USAGE,
  run: runDoctor,
};
