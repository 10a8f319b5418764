#!/usr/bin/env node
/** The `kvflow` command. */
import { KvflowError } from '../errors.js';
import { runDemo } from './demo.js';
import { runDoctor } from './doctor.js';
import { runInspect } from './inspect.js';

const USAGE = `usage: kvflow <command>

commands:
  demo [--json] [--turns N] [--backend B] [--store-check] ...
                          a multi-turn chat through kvflow with the reference model: per turn TTFT
                          against recompute, the hit, the plan, and the check against a full recompute
                          (kvflow demo --help for every option)
  doctor [--json]         what kvflow can use on this host, and why anything is missing
  inspect <dir> [--json]  what a store directory holds: capacity, chunks, counters, fingerprints
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'doctor':
      return runDoctor(rest);
    case 'demo':
      return runDemo(rest);
    case 'inspect':
      return runInspect(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 1 : 0;
    default:
      process.stderr.write(`kvflow: unknown command '${command}'\n${USAGE}`);
      return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const code = e instanceof KvflowError ? ` [${e.code}]` : '';
    process.stderr.write(`kvflow: ${(e as Error).message}${code}\n`);
    process.exitCode = 1;
  },
);
