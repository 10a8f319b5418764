/** The installed kvflow's version, read from its package.json. */
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { packageRoot } from '../binding/load.js';

let version: string | undefined;

/** `version` of the package.json at the package root. */
export function kvflowVersion(): string {
  version ??= (JSON.parse(readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
  return version;
}
