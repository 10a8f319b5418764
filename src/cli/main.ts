#!/usr/bin/env node
/** The `kvflow` command: parses the command name, hands the rest to the command. */
import { KvflowError } from '../errors.js';
import { UsageError, type Command } from './args.js';
import { demoCommand } from './demo.js';
import { doctorCommand } from './doctor.js';
import { inspectCommand } from './inspect.js';
import { kvflowVersion } from './version.js';

const COMMANDS: readonly Command[] = [demoCommand, doctorCommand, inspectCommand];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `usage: kvflow <command> [options]

commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n')}

options:
  -h, --help     this text (kvflow <command> --help: that command's options)
  -v, --version  kvflow's version

Exit status: 0 done, 1 failed, 2 a usage error, 130 interrupted.
`;
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    process.stderr.write(`kvflow: expected a command\n${usage()}`);
    return 2;
  }
  if (first === '--help' || first === '-h' || first === 'help') {
    const about = first === 'help' && rest[0] !== undefined ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    if (first === 'help' && rest[0] !== undefined && about === undefined) return unknownCommand(rest[0]);
    process.stdout.write(about ? about.usage : usage());
    return 0;
  }
  if (first === '--version' || first === '-v') {
    if (rest.length > 0) return usageError('kvflow', `unexpected argument '${rest[0]}' after ${first}`);
    process.stdout.write(`${kvflowVersion()}\n`);
    return 0;
  }
  if (first.startsWith('-')) return usageError('kvflow', `unknown option '${first}' (options go after the command)`);
  const command = COMMANDS.find((c) => c.name === first);
  if (!command) return unknownCommand(first);
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError) return usageError(`kvflow ${command.name}`, e.message);
    throw e;
  }
}

function unknownCommand(name: string): number {
  process.stderr.write(`kvflow: unknown command '${name}'\n${usage()}`);
  return 2;
}

function usageError(who: string, message: string): number {
  process.stderr.write(`${who}: ${message}\n(${who} --help lists the options)\n`);
  return 2;
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
