// Locates native test executables built by CMake (build/ searched breadth-first, or
// KVC_NATIVE_TEST_DIR), for the vitest files that run them.
import { existsSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '../..');

export function findExecutable(name: string): string | undefined {
  const fromEnv = process.env.KVC_NATIVE_TEST_DIR;
  if (fromEnv) {
    const candidate = path.join(fromEnv, name);
    if (existsSync(candidate)) return candidate;
  }
  // Breadth-first over build/, so build/Release/<name> wins over deeper copies.
  let level = [path.join(ROOT, 'build')];
  for (let depth = 0; depth < 6 && level.length > 0; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      let entries: string[];
      try {
        entries = readdirSync(dir);
      } catch {
        continue;
      }
      for (const entry of entries) {
        const full = path.join(dir, entry);
        let stat;
        try {
          stat = statSync(full);
        } catch {
          continue;
        }
        if (stat.isDirectory()) {
          if (entry !== 'CMakeFiles' && entry !== 'node_modules') next.push(full);
        } else if (entry === name && (stat.mode & 0o111) !== 0) {
          return full;
        }
      }
    }
    level = next;
  }
  return undefined;
}
