#!/usr/bin/env node
/** The `kvflow` command. */
import { KvflowError } from '../errors.js';
import { runDoctor } from './doctor.js';

const USAGE = `usage: kvflow <command>

commands:
  doctor [--json]   what kvflow can use on this host, and why anything is missing
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'doctor':
      return runDoctor(rest);
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
