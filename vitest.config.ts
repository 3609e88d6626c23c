import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Native code is shared per process; forks isolate a crash to one file and keep
    // the addon's per-environment state simple.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
