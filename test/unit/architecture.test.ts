// ARCHITECTURE.md's layout rule, enforced instead of hoped for: folders import downward only, along
// the edges listed below, and no file takes part in an import cycle. The module graph is read from
// the sources (test/helpers/imports.ts): every `import`, `export … from` and `import()` of every
// file under src/.
//
// What counts:
// - Layering: every import, type-only ones included. `import type { Snapshot }` from a folder above
//   still means this folder cannot be understood, tested or moved without that one.
// - Cycles: also every import, type-only ones included (the compiler erases them, so they cannot
//   break module initialisation, but a cycle through a type couples the two files just the same;
//   issue 15 lists ingress/data-plane.ts ↔ ingress/node-tls.ts, a type-only cycle, among the
//   cycles to remove). The fix is the same either way: move the shared type below both.
// - `import()` counts like a static import; `typeof import('…')` like `import type`.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs';
import os from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { checkArchitecture, cycles, type Rules, type Unit } from '../helpers/architecture.js';
import { importGraph, parseImports } from '../helpers/imports.js';

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');

/**
 * The layers, lowest first: a unit (a folder under src/, or a file directly in it) may import
 * units of a lower layer, and of its own layer only along a row of ALLOWED_IMPORTS that keeps the
 * layer free of cycles; never a unit of a higher layer.
 */
const LAYERS: Unit[][] = [
  ['config'], // resources read (files, the Kubernetes API), validated, versioned
  ['controlplane'], // Istio → the xDS-shaped snapshot (the one translation); the xDS server and client
  ['routing', 'upstream', 'tls', 'telemetry', 'security'], // data-plane building blocks, compiled from the snapshot
  ['l4'], // TCP and TLS-passthrough listeners and Envoy's tcp_proxy, used by ingress and egress Gateways alike
  ['ingress', 'egress', 'admin'], // listeners and the request lifecycle; the admin port
  ['workers'], // threads: data-plane workers, the configuration thread
  ['gateway.ts'], // one gateway process: configuration → snapshot → data plane, certificates, admin
  ['cli.ts'], // the command line
  ['demo'], // `npm start`
];

/** Every import between two units, importer → imported → why it exists. Nothing else may cross. */
const ALLOWED_IMPORTS: Record<Unit, Record<Unit, string>> = {
  config: {},
  controlplane: {
    config: 'translates the validated resources and the mesh config',
  },
  routing: {
    config: 'the full-match regexes (config/regex.ts) exactly as validation compiled them',
    controlplane: 'compiles the snapshot route configurations into tables',
  },
  upstream: {
    controlplane: 'builds pools, load balancers and outlier detection from the snapshot clusters',
    telemetry: 'the logger (a leaf of telemetry)',
  },
  tls: {
    config: 'certificate checks report config Problems; durations of the mesh CA',
    controlplane: 'serves the Gateway TLS and Secret shapes of the snapshot',
    telemetry: 'the logger',
  },
  telemetry: {
    config: 'the mesh config access-log settings; CEL expressions of Telemetry filters and tags',
    controlplane: 'compiles the snapshot Telemetry (access-log sinks, metric overrides) once per config version',
    routing: 'the access log formats the request view routing matched on (routing/request.ts)',
  },
  security: {
    controlplane: 'runs the snapshot authorization and JWT policies',
    telemetry: 'the logger',
  },
  l4: {
    controlplane: 'TCP/TLS routes and the clusters of the snapshot',
    routing: 'L4 route tables',
    telemetry: 'logs and istio_tcp_* metrics',
    upstream: 'clusters and hash keys for TCP proxying',
  },
  egress: {
    config: 'host name matching of the forward proxy (config/hosts.ts)',
    controlplane: 'the forward-proxy policy of the snapshot',
    l4: 'a CONNECT tunnel is proxied as a TCP connection (tcp_proxy)',
    telemetry: 'logs',
  },
  ingress: {
    config: 'durations of the edge limits',
    controlplane: 'listeners of the snapshot',
    egress: 'the data plane also starts the forward-proxy (CONNECT) listeners of egress/',
    l4: 'the data plane also starts the TCP and TLS-passthrough listeners of l4/',
    routing: 'matches each request on the compiled route tables',
    security: 'runs the security pipeline on each request',
    telemetry: 'access logs, metrics, logs',
    tls: 'certificates and SNI for HTTPS listeners, ACME challenges',
    upstream: 'sends each request to a cluster (pools, circuit breakers, TLS origination)',
  },
  admin: {
    controlplane: 'serves config_dump, listeners and clusters of the snapshot',
  },
  workers: {
    config: 'the configuration thread loads, validates and hosts the Kubernetes source',
    controlplane: 'the configuration thread resolves; snapshots cross threads',
    ingress: 'a data-plane worker thread runs the listeners (the data plane) itself',
    telemetry: 'logs and metrics of each thread',
    tls: 'certificate checks of a configuration job; secrets and ACME challenges shared with workers',
    upstream: 'the worker pool passes cluster health between threads',
  },
  'gateway.ts': {
    admin: 'starts the admin server',
    config: 'reads the configuration and mesh config, watches files',
    controlplane: 'resolves and serves the snapshot (xDS)',
    ingress: 'the main thread runs the data plane itself with --workers 1',
    telemetry: 'logs and metrics',
    tls: 'certificates: files, ACME, the mesh CA',
    workers: 'the configuration thread and the data-plane worker pool',
  },
  'cli.ts': {
    config: 'validate: the config pipeline and reference checks',
    controlplane: 'dump and status: the snapshot and the xDS status client',
    'gateway.ts': 'run: starts the gateway',
    ingress: 'parses the edge-limit flags with the data plane own parser (ingress/edge-limits.ts)',
    telemetry: 'the logger',
    tls: 'the mesh CA commands',
    workers: 'validate: the same checked load a configuration job does',
  },
  demo: {
    'cli.ts': '`npm start` runs the command line on the bundled config',
  },
};

const RULES: Rules = { layers: LAYERS, allowed: ALLOWED_IMPORTS };

describe('architecture: the layering of src/ is enforced', () => {
  const { files, edges } = importGraph(SRC);
  const findings = checkArchitecture(RULES, files, edges);

  it('reads the module graph of src/', () => {
    // A broken reader would pass every check below: make sure it sees the imports there are.
    expect(files.length).toBeGreaterThan(100);
    expect(edges.filter((e) => e.to !== undefined).length).toBeGreaterThan(300);
    expect(edges).toContainEqual(expect.objectContaining({ from: 'cli.ts', to: 'gateway.ts', kind: 'static' }));
    expect(edges).toContainEqual(expect.objectContaining({ from: 'admin/server.ts', to: 'controlplane/snapshot.ts', kind: 'type' }));
  });

  it('no import cycle and no import across folders beyond ALLOWED_IMPORTS, and no upward row in it', () => {
    expect(findings.map((f) => f.id), `\n${findings.map((f) => f.message).join('\n\n')}\n`).toEqual([]);
  });
});

describe('architecture: the import reader', () => {
  it('reads every import and export-from form, with lines, and which of them are type-only', () => {
    const src = [
      "import fs from 'node:fs';", // 1
      "import type { A } from './a.js';", // 2
      "import { type B, c } from './b.js';", // 3: emitted as a runtime import under verbatimModuleSyntax
      'import {', // 4
      '  d,',
      '  e,',
      "} from './multi.js';",
      "import './side-effect.js';", // 8
      "export * from './star.js';", // 9
      "export type { F } from './f.js';", // 10
      "export { g as h } from './g.js';", // 11
      'export const x = 1;', // 12: no from
      "const m = await import('./lazy.js');", // 13
      "type N = typeof import('./typed.js');", // 14
      "import * as ns from './ns.js';", // 15
      "import def, { named } from './both.js';", // 16
      "export type * as T from './types.js';", // 17
    ].join('\n');
    expect(parseImports(src, 'x.ts').map((e) => `${e.line} ${e.specifier} ${e.kind}`)).toEqual([
      '1 node:fs static',
      '2 ./a.js type',
      '3 ./b.js static',
      '4 ./multi.js static',
      '8 ./side-effect.js static',
      '9 ./star.js static',
      '10 ./f.js type',
      '11 ./g.js static',
      '13 ./lazy.js dynamic',
      '14 ./typed.js type',
      '15 ./ns.js static',
      '16 ./both.js static',
      '17 ./types.js type',
    ]);
  });

  it('ignores imports written in comments, strings, template literals and regular expressions', () => {
    const src = [
      "// import { a } from './comment.js';",
      "/* import b from './block.js'; */",
      "const s = \"import c from './string.js'\";",
      "const t = `import d from './template.js' ${x + `import('./nested.js')`}`;",
      "const r = /import e from '.\\/regex.js'/;",
      "const q = a / b; const w = c / d; import f from './real.js';",
      'const y = import.meta.url;',
    ].join('\n');
    expect(parseImports(src, 'x.ts').map((e) => `${e.line} ${e.specifier}`)).toEqual(['6 ./real.js']);
  });
});

describe('architecture: the checks catch what they are for', () => {
  // A small tree of its own with the real rules: each check must fail on the mistake it is for.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-arch-'));
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  const tree = (files: Record<string, string>): ReturnType<typeof importGraph> => {
    const dir = fs.mkdtempSync(path.join(root, 't-'));
    for (const [f, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
      fs.writeFileSync(path.join(dir, f), text);
    }
    return importGraph(dir);
  };
  // Minimal use of every allowed row, so that only the planted mistake is reported.
  const allRows = (): Record<string, string> => {
    const files: Record<string, string> = {};
    for (const [from, row] of Object.entries(ALLOWED_IMPORTS)) {
      const file = from.endsWith('.ts') ? from : `${from}/a.ts`;
      const rel = (to: string): string => (from.endsWith('.ts') ? './' : '../') + (to.endsWith('.ts') ? to.replace(/\.ts$/, '.js') : `${to}/a.js`);
      files[file] = Object.keys(row).map((to) => `import type { X } from '${rel(to)}';\n`).join('') + 'export type X = 1;\n';
    }
    return files;
  };

  it('the minimal tree that uses every allowed row passes', () => {
    const g = tree(allRows());
    expect(checkArchitecture(RULES, g.files, g.edges)).toEqual([]);
  });

  it('an upward import fails, naming file:line → target', () => {
    const files = allRows();
    files['config/up.ts'] = "export const a = 1;\nimport type { Snapshot } from '../controlplane/a.js';\n";
    const g = tree(files);
    const f = checkArchitecture(RULES, g.files, g.edges);
    expect(f.map((x) => x.id)).toEqual(['import: config/up.ts → controlplane/a.ts']);
    expect(f[0]!.message).toContain('src/config/up.ts:2 → controlplane/a.ts (import type)');
    expect(f[0]!.message).toContain('an upward import');
  });

  it('a same-layer import without a row fails, and so does a downward one nobody listed', () => {
    const files = allRows();
    files['routing/b.ts'] = "import { x } from '../tls/a.js';\n";
    files['admin/b.ts'] = "import { y } from '../config/a.js';\n";
    const g = tree(files);
    const f = checkArchitecture(RULES, g.files, g.edges);
    expect(f.map((x) => x.id).sort()).toEqual(['import: admin/b.ts → config/a.ts', 'import: routing/b.ts → tls/a.ts']);
    expect(f.find((x) => x.id.startsWith('import: routing'))!.message).toContain('same layer');
    expect(f.find((x) => x.id.startsWith('import: admin'))!.message).toContain('downward, but ALLOWED_IMPORTS has no row admin → config');
  });

  it('a cycle fails, type-only or not, and names the imports that close it', () => {
    const files = allRows();
    files['ingress/x.ts'] = "import { y } from './y.js';\nexport const x = 1;\n";
    files['ingress/y.ts'] = "export const y = 2;\n\nimport type { Z } from './z.js';\n";
    files['ingress/z.ts'] = "import type { X } from './x.js';\n";
    const g = tree(files);
    const f = checkArchitecture(RULES, g.files, g.edges);
    expect(f.map((x) => x.id)).toEqual(['cycle: ingress/x.ts, ingress/y.ts, ingress/z.ts']);
    expect(f[0]!.message).toContain('src/ingress/x.ts:1 → ingress/y.ts\n  src/ingress/y.ts:3 → ingress/z.ts (import type)\n  src/ingress/z.ts:1 → ingress/x.ts (import type)');
  });

  it('a row that allows an upward import, a new folder in no layer and a row nobody uses fail', () => {
    const files = allRows();
    files['newstage/a.ts'] = 'export const a = 1;\n';
    files['admin/a.ts'] = 'export type X = 1;\n'; // no longer imports controlplane
    const g = tree(files);
    const rules: Rules = { layers: LAYERS, allowed: { ...ALLOWED_IMPORTS, config: { ingress: 'wrong on purpose' } } };
    expect(checkArchitecture(rules, g.files, g.edges).map((x) => x.id).sort()).toEqual([
      'rule: admin → controlplane unused',
      'rule: config → ingress unused',
      'rule: config → ingress upward',
      'rule: newstage in no layer',
    ]);
  });

  it('Tarjan finds every component, also through long chains', () => {
    const files = Array.from({ length: 5000 }, (_, i) => `f${i}.ts`);
    const edges = files.map((f, i) => ({ from: f, to: files[(i + 1) % files.length]!, line: 1, specifier: '', kind: 'static' as const }));
    expect(cycles(files, edges)).toHaveLength(1);
    expect(cycles(files, edges.slice(0, -1))).toEqual([]);
  });
});
