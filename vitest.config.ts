import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Native threads and large buffers: one file at a time keeps memory bounded on small CI machines.
    fileParallelism: false,
    pool: 'forks',
  },
});
