// Types of test-summary.mjs for the TypeScript test that checks it.
export interface SkipEntry { file: string; test: string; reason: string }
export interface SkippedTest { file: string; name: string; status: string; reason?: string }
export interface Summary { passed: number; failed: number; skipped: SkippedTest[]; problems: string[] }
export const NOT_RUN: Set<string>;
export function parseAllowList(json: unknown): { allow: SkipEntry[]; errors: string[] };
export function summarize(
  report: unknown,
  options?: { root?: string; allow?: SkipEntry[]; strict?: boolean; nameFilter?: boolean },
): Summary;
export function hasNameFilter(args: string[]): boolean;
