// `node --import ./test/helpers/module-trace.mjs`: with GATEHOUSE_MODULE_TRACE=<file>, the main
// thread's loaded modules are listed in that file, one path or URL a line: every module resolved
// through the ESM loader as it is resolved (from a loader hook), every CommonJS module in
// require.cache when the process exits. What a user sees with the same hook; no Gatehouse code.
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import { isMainThread } from 'node:worker_threads';

const out = process.env.GATEHOUSE_MODULE_TRACE;
if (out && isMainThread) {
  register(new URL('./module-trace-hooks.mjs', import.meta.url), { data: { out } });
  const require = createRequire(import.meta.url);
  process.on('exit', () => appendFileSync(out, `${Object.keys(require.cache).join('\n')}\n`));
}
