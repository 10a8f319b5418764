/**
 * Command-line parsing shared by every `kvflow` command: `node:util`'s
 * parseArgs in strict mode, `-h`/`--help` on every command, and usage errors
 * that name the flag and the value (exit 2).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A usage error: the message names the flag or value; the command exits 2. */
export class UsageError extends Error {}

/** A `kvflow` command: its one-line summary, its usage text (`--help`), and the run that returns the exit code. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  /** Throws UsageError for a bad command line (printed with exit 2). */
  run(args: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** What a command line holds: its flags' values, its positionals, and whether help was asked for. */
export interface Parsed<V> {
  values: V;
  positionals: string[];
  help: boolean;
}

const HELP: Options = { help: { type: 'boolean', short: 'h' } };

/**
 * Parses `args` against `options` (strict: an unknown flag, a missing value
 * or, unless `positionals` allows them, a stray argument is a UsageError).
 * `--flag=value` and `--flag value` both work. With `-h`/`--help` anywhere,
 * nothing else is checked.
 */
export function parseCommand<V extends object>(
  args: string[],
  options: Options,
  positionals: { min: number; max: number; name: string } = { min: 0, max: 0, name: '' },
): Parsed<V> {
  const end = args.indexOf('--');
  if ((end < 0 ? args : args.slice(0, end)).some((a) => a === '-h' || a === '--help')) {
    return { values: {} as never, positionals: [], help: true };
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, ...HELP }, strict: true, allowPositionals: true });
  } catch (e) {
    // Node's message up to its first sentence: "Unknown option '--x'", "Option '--y <value>' argument missing".
    throw new UsageError(lowerFirst((e as Error).message.split(/\. /)[0]!));
  }
  const p = parsed.positionals;
  if (p.length > positionals.max) {
    throw new UsageError(`unexpected argument '${p[positionals.max]}'${positionals.max > 0 ? ` (expected only ${positionals.name})` : ''}`);
  }
  if (p.length < positionals.min) throw new UsageError(`expected ${positionals.name}`);
  return { values: parsed.values as never, positionals: p, help: false };
}

function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}

/** An integer flag from `min` to `max`, or `fallback` when absent; a UsageError names the flag and the value. */
export function intFlag(value: string | undefined, flag: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`expected an integer from ${min} to ${max} for ${flag}, got '${value}'`);
  }
  return n;
}

/** `a, b or c`. */
export function listOf(values: readonly string[]): string {
  return values.length <= 1 ? values.join('') : `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}`;
}

/**
 * One of `allowed` (or an alias of one), or undefined when absent; a
 * UsageError names the flag, the allowed values and the value.
 */
export function choiceFlag<T extends string>(value: string | undefined, flag: string, allowed: readonly T[], aliases: Readonly<Record<string, T>> = {}): T | undefined {
  if (value === undefined) return undefined;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  const alias = Object.hasOwn(aliases, value) ? aliases[value] : undefined;
  if (alias !== undefined) return alias;
  throw new UsageError(`expected ${listOf(allowed)} for ${flag}, got '${value}'`);
}

/** The backends a command line may ask for; `gpu` is taken for `cuda`. */
export const BACKEND_FLAG = { allowed: ['auto', 'cuda', 'cpu'] as const, aliases: { gpu: 'cuda' } as const };

/** `--backend`'s value. */
export function backendFlag(value: string | undefined): 'auto' | 'cuda' | 'cpu' | undefined {
  return choiceFlag(value, '--backend', BACKEND_FLAG.allowed, BACKEND_FLAG.aliases);
}
