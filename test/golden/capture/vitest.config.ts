// `GOLDEN_CAPTURE_DIR=/tmp/captures npx vitest run --config test/golden/capture/vitest.config.ts [files]`:
// runs the test suite with setup.ts recording every configuration it resolves (see import.ts).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: fileURLToPath(new URL('../../..', import.meta.url)),
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/unit/resolve-golden.test.ts', '**/node_modules/**'],
    setupFiles: [fileURLToPath(new URL('./setup.ts', import.meta.url))],
    pool: 'forks',
    testTimeout: 20000,
    hookTimeout: 20000,
  },
});
