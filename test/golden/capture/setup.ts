// Capture mode for the golden tests (test/unit/resolve-golden.test.ts): a vitest setup file that
// records every configuration the test suite hands to resolve() — directly (unit tests) or through
// a gateway or CLI child process (integration tests: startGateway, its writeFile/removeFile, and
// runCli run/validate) — as JSON files in $GOLDEN_CAPTURE_DIR. `import.ts` turns them into golden
// cases. Only used by test/golden/capture/vitest.config.ts; the normal suite never loads it.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve as resolvePath } from 'node:path';
import { expect, vi } from 'vitest';

const OUT = process.env.GOLDEN_CAPTURE_DIR;
const ROOT = resolvePath(dirname(new URL(import.meta.url).pathname), '../../..');

export interface CaptureOptions {
  labels?: Record<string, string>;
  namespace?: string;
  bind?: string;
  allGateways?: boolean;
  /** resolve() captures: the mesh config object itself. */
  mesh?: unknown;
  /** CLI captures: the text of the --mesh-config file. */
  meshConfigText?: string;
}

export interface Capture {
  origin: 'resolve' | 'run' | 'validate';
  test: string;
  name: string;
  /** Config files by path relative to the config folder. */
  files: Record<string, string>;
  /** Files the config names by absolute path (certificates, keys), by that path. */
  externals: Record<string, string>;
  /** resolve() captures: files named relative to their YAML file's folder, by that relative path. */
  relatives?: Record<string, string>;
  opts: CaptureOptions;
}

function testIdentity(): { test: string; name: string } {
  const s = expect.getState();
  return { test: s.testPath ? relative(ROOT, s.testPath) : '', name: s.currentTestName ?? '' };
}

/** Absolute paths of existing regular files mentioned in a text (certificate and key paths). */
function externalFiles(texts: Iterable<string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const text of texts) {
    for (const m of text.matchAll(/\/[A-Za-z0-9._\-/]+/g)) {
      const p = m[0];
      if (out[p] !== undefined || p.length < 4) continue;
      try {
        if (!statSync(p).isFile() || statSync(p).size > 1_000_000) continue;
        out[p] = readFileSync(p, 'utf8');
      } catch {
        // not a file
      }
    }
  }
  return out;
}

function save(c: Omit<Capture, 'test' | 'name' | 'externals'>): void {
  if (!OUT) return;
  const full: Capture = { ...testIdentity(), ...c, externals: externalFiles(Object.values(c.files)) };
  const key = createHash('sha256')
    .update(JSON.stringify([full.files, full.externals, full.relatives ?? {}, full.opts]))
    .digest('hex')
    .slice(0, 16);
  mkdirSync(OUT, { recursive: true });
  const file = join(OUT, `${key}.json`);
  if (!existsSync(file)) writeFileSync(file, JSON.stringify(full));
}

/** Every regular file under a folder (or the file itself), by path relative to it. */
function readTree(p: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (abs: string, rel: string): void => {
    let st;
    try {
      st = statSync(abs);
    } catch {
      return;
    }
    if (st.isDirectory()) {
      for (const n of readdirSync(abs).sort()) if (!n.startsWith('.')) walk(join(abs, n), rel ? `${rel}/${n}` : n);
    } else if (st.isFile() && st.size <= 1_000_000) {
      out[rel || abs.split('/').pop()!] = readFileSync(abs, 'utf8');
    }
  };
  walk(p, '');
  return out;
}

function cliOptions(args: readonly string[], defaults: CaptureOptions): CaptureOptions {
  const o: CaptureOptions = { ...defaults };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const eq = a.indexOf('=');
    const flag = a.startsWith('--') ? (eq > 0 ? a.slice(2, eq) : a.slice(2)) : '';
    const value = (): string | undefined => (eq > 0 ? a.slice(eq + 1) : args[++i]);
    if (flag === 'labels') {
      const v = value() ?? '';
      o.labels = Object.fromEntries(v.split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      delete o.allGateways;
    } else if (flag === 'namespace') o.namespace = value()!;
    else if (flag === 'bind') o.bind = value()!;
    else if (flag === 'mesh-config') {
      const f = value()!;
      try {
        o.meshConfigText = readFileSync(isAbsolute(f) ? f : join(ROOT, f), 'utf8');
      } catch {
        // a test of a missing mesh config file
      }
    }
  }
  return o;
}

const FLAGS_WITH_VALUE = new Set(['--config', '--labels', '--namespace', '--bind', '--mesh-config', '--admin-port', '--admin-bind', '--xds-port', '--xds-address', '--workers', '--log-level', '--log-format', '--kubeconfig', '--watch-namespaces', '--cluster-domain']);

vi.mock('../../../src/controlplane/resolve.js', async (importOriginal) => {
  const orig = await importOriginal<typeof import('../../../src/controlplane/resolve.js')>();
  return {
    ...orig,
    resolve(resources: Parameters<typeof orig.resolve>[0], opts: Parameters<typeof orig.resolve>[1]) {
      try {
        const files: Record<string, string[]> = {};
        const relatives: Record<string, string> = {};
        const scan = (v: unknown, dir: string): void => {
          if (typeof v === 'string') {
            if (v === '' || isAbsolute(v) || v.length > 300 || relatives[v] !== undefined) return;
            try {
              const p = join(dir, v);
              if (statSync(p).isFile() && statSync(p).size <= 1_000_000) relatives[v] = readFileSync(p, 'utf8');
            } catch {
              // not a file
            }
          } else if (v && typeof v === 'object') for (const x of Object.values(v)) scan(x, dir);
        };
        for (const r of resources) {
          if (isAbsolute(r.source.file)) scan(r.spec, dirname(r.source.file));
          const doc = r.apiVersion === 'v1' && (r.kind === 'Secret' || r.kind === 'ConfigMap') ? r.spec : { apiVersion: r.apiVersion, kind: r.kind, metadata: r.metadata, spec: r.spec };
          const name = r.source.file.split('/').pop()!.replace(/\.ya?ml$/i, '') + '.yaml';
          (files[name] ??= []).push(JSON.stringify(doc));
        }
        // JSON is YAML: one document per resource keeps the order resolve() saw.
        const texts = Object.fromEntries(Object.entries(files).map(([n, docs]) => [n, docs.join('\n---\n') + '\n']));
        save({ origin: 'resolve', files: texts, ...(Object.keys(relatives).length > 0 ? { relatives } : {}), opts: { labels: { ...opts.labels }, namespace: opts.namespace, bind: opts.bind, mesh: opts.mesh, ...(opts.allGateways ? { allGateways: true } : {}) } });
      } catch {
        // capturing never changes what the test sees
      }
      return orig.resolve(resources, opts);
    },
  };
});

vi.mock('../../helpers/gateway.js', async (importOriginal) => {
  const orig = await importOriginal<typeof import('../../helpers/gateway.js')>();
  const gatewayDefaults = (o: Parameters<typeof orig.startGateway>[0]): CaptureOptions => ({
    labels: o.defaultLabels ? { istio: 'ingressgateway' } : Object.fromEntries(orig.GATEWAY_LABELS.split(',').map((kv) => kv.split('=') as [string, string])),
    namespace: 'istio-system',
    bind: '127.0.0.1',
  });
  return {
    ...orig,
    async startGateway(o: Parameters<typeof orig.startGateway>[0]) {
      if (o.xdsAddress) return orig.startGateway(o);
      const files = { ...o.files };
      const opts = cliOptions(o.args ?? [], gatewayDefaults(o));
      save({ origin: 'run', files: { ...files }, opts });
      const g = await orig.startGateway(o);
      const writeFile = g.writeFile.bind(g);
      const removeFile = g.removeFile.bind(g);
      g.writeFile = (name: string, text: string) => {
        writeFile(name, text);
        files[name] = text;
        save({ origin: 'run', files: { ...files }, opts });
      };
      g.removeFile = (name: string) => {
        removeFile(name);
        delete files[name];
        save({ origin: 'run', files: { ...files }, opts });
      };
      return g;
    },
    runCli(args: string[], timeoutMs?: number) {
      const cmd = args[0];
      if (cmd === 'run' || cmd === 'validate') {
        const paths: string[] = [];
        for (let i = 1; i < args.length; i++) {
          const a = args[i]!;
          if (a === '--config') paths.push(args[++i]!);
          else if (FLAGS_WITH_VALUE.has(a)) i++;
          else if (!a.startsWith('-') && cmd === 'validate') paths.push(a);
        }
        const files: Record<string, string> = {};
        paths.forEach((p, k) => {
          for (const [n, t] of Object.entries(readTree(isAbsolute(p) ? p : join(ROOT, p)))) files[paths.length > 1 ? `${k}/${n}` : n] = t;
        });
        const defaults: CaptureOptions = cmd === 'validate' ? { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', bind: '0.0.0.0', allGateways: true } : { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', bind: '0.0.0.0' };
        if (Object.keys(files).length > 0) save({ origin: cmd, files, opts: cliOptions(args, defaults) });
      }
      return orig.runCli(args, timeoutMs);
    },
  };
});
