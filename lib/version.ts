// The package version, read once from the package.json this copy of kvcompact ships with,
// so that it cannot drift from what npm installed.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { packageRoot } from './native/locate';

function readVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/** The version of the installed kvcompact package (its package.json `version`). */
export const version: string = readVersion();
