// Golden tests of the translation: resolve() over the bundled config (config/), the representative
// configs in test/golden/cases and every configuration the test suite builds
// (test/golden/captured, see test/golden/README.md), each under several label sets and namespaces,
// serialised whole — listeners, routes, clusters, endpoints, secrets, sidecar views, mesh config,
// warnings with file:line, hash and version — plus digests of the config_dump and of the xDS views
// the control plane encodes for a replica, proxyless gRPC clients and Envoys. The text must be
// byte-identical (key order included: it feeds the snapshot hash). A difference is a change of
// behaviour: deliberate ones are regenerated with
//   UPDATE_GOLDEN=1 npx vitest run test/unit/resolve-golden.test.ts
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { configDump } from '../../src/admin/server.js';
import { loadPaths } from '../../src/config/load.js';
import { loadMeshConfigFile, meshFromResources } from '../../src/config/mesh.js';
import { problemLine } from '../../src/config/pipeline.js';
import { DEFAULT_MESH_CONFIG, type MeshConfig } from '../../src/config/types.js';
import { resolve, type ResolveOptions } from '../../src/controlplane/resolve.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';
import { decodeSnapshotResource } from '../../src/controlplane/xds/codec.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE } from '../../src/controlplane/xds/protos.js';
import { SnapshotViews } from '../../src/controlplane/xds/snapshot-views.js';
import type { ClientInfo } from '../../src/controlplane/xds/view.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
const GOLDEN = join(ROOT, 'test/golden');
const UPDATE = process.env.UPDATE_GOLDEN === '1';

interface Variant {
  name: string;
  labels: Record<string, string>;
  namespace: string;
  bind?: string;
  allGateways?: boolean;
  /** The mesh config object as resolve() gets it (captured from a unit test). */
  mesh?: MeshConfig;
  /** A mesh config file in the case folder (as --mesh-config); an `istio` ConfigMap applies on top. */
  meshConfig?: string;
}

/** Without a case.json: an ingress and an egress gateway, another namespace, and `validate` (every Gateway). */
const DEFAULT_VARIANTS: Variant[] = [
  { name: 'ingress', labels: { istio: 'ingressgateway' }, namespace: 'istio-system' },
  { name: 'egress', labels: { istio: 'egressgateway' }, namespace: 'istio-system' },
  { name: 'ns-default', labels: { istio: 'ingressgateway', app: 'edge' }, namespace: 'default', bind: '127.0.0.1' },
  { name: 'all-gateways', labels: { istio: 'ingressgateway' }, namespace: 'istio-system', allGateways: true },
];

interface Case {
  group: string;
  name: string;
  dir: string;
  variants: Variant[];
}

function cases(): Case[] {
  const out: Case[] = [{ group: 'bundled', name: 'config', dir: join(ROOT, 'config'), variants: DEFAULT_VARIANTS }];
  for (const group of ['cases', 'captured']) {
    const base = join(GOLDEN, group);
    if (!existsSync(base)) continue;
    for (const name of readdirSync(base).sort()) {
      const dir = join(base, name);
      if (!statSync(dir).isDirectory()) continue;
      const spec = existsSync(join(dir, 'case.json')) ? (JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8')) as { variants?: Variant[] }) : {};
      out.push({ group, name, dir, variants: spec.variants ?? DEFAULT_VARIANTS });
    }
  }
  return out;
}

const sha = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex').slice(0, 16);
/** The checkout's location never reaches a golden file. */
const portable = (text: string): string => text.replaceAll(ROOT, '<root>');

/** Digest per resource type of what the xDS server sends each kind of client. */
function xdsDigests(s: Snapshot): Record<string, Record<string, string>> {
  const views = new SnapshotViews(() => undefined);
  views.update(s);
  const clients: Array<[string, ClientInfo]> = [['replica', { id: 'replica', kind: 'gatehouse', metadata: {}, userAgent: 'gatehouse' }]];
  for (const ns of s.sidecar.keys()) {
    const metadata = ns === '' ? {} : { NAMESPACE: ns };
    clients.push([`proxyless:${ns}`, { id: 'client', kind: 'proxyless', metadata, userAgent: 'grpc-node-js' }]);
    clients.push([`envoy:${ns}`, { id: 'client', kind: 'envoy', metadata, userAgent: 'envoy' }]);
  }
  const short: Record<string, string> = { [LISTENER_TYPE]: 'LDS', [ROUTE_TYPE]: 'RDS', [CLUSTER_TYPE]: 'CDS', [ENDPOINT_TYPE]: 'EDS', [SECRET_TYPE]: 'SDS' };
  const out: Record<string, Record<string, string>> = {};
  for (const [label, client] of clients) {
    const v = views.view(client);
    const byType: Record<string, string> = {};
    for (const [type, resources] of v.resources) {
      const h = createHash('sha256');
      for (const [name, bytes] of resources) {
        // The bytes themselves, unless they hold the checkout's path (a certificate file): then
        // what they decode to, with the path made portable (its length is in the encoding).
        const raw = Buffer.from(bytes).toString('latin1');
        const part = raw.includes(ROOT) ? `decoded ${portable(JSON.stringify(decodeSnapshotResource(type, bytes)))}` : raw;
        h.update(portable(name)).update('\0').update(part).update('\0');
      }
      byType[short[type] ?? type] = `${resources.size} ${h.digest('hex').slice(0, 16)}`;
    }
    out[label] = byType;
  }
  return out;
}

/**
 * JSON with stable member order, a value on one line when it fits in WIDTH columns, else one member
 * per line: short files whose diffs still point at the resource that changed.
 */
const WIDTH = 160;
function pretty(value: unknown, indent = 0): string {
  const flat = JSON.stringify(value);
  if (flat === undefined) return 'null';
  // The top level is always one member per line (options first: see outcome()).
  if (value === null || typeof value !== 'object' || (indent > 0 && flat.length + indent <= WIDTH)) return flat;
  const pad = ' '.repeat(indent + 1);
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${value.map((v) => pad + pretty(v, indent + 1)).join(',\n')}\n${' '.repeat(indent)}]`;
  }
  const members = Object.entries(value).filter(([, v]) => v !== undefined && typeof v !== 'function');
  if (members.length === 0) return '{}';
  return `{\n${members.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pretty(v, indent + 1)}`).join(',\n')}\n${' '.repeat(indent)}}`;
}

/** Above this, a golden file holds digests of its sections instead of their text (scale configs). */
const FULL_TEXT_LIMIT = 1_000_000;

function goldenText(s: Snapshot, opts: ResolveOptions): string {
  const entries = <V>(m: ReadonlyMap<string, V>): Array<[string, V]> => [...m.entries()];
  // What resolve() hashes: the hash depends on the checkout's location when a file path is in it.
  const hashed = JSON.stringify([s.listeners, [...s.routes.values()], [...s.clusters.values()], [...s.endpoints.values()], [...s.secrets.values()], [...s.sidecar].map(([ns, v]) => [ns, [...v.listeners.values()], [...v.routes.values()]]), s.mesh, s.telemetry.api ? s.telemetry : null]);
  const located = hashed.includes(ROOT);
  // Namespaces that see the same view as an earlier one say so instead of repeating it.
  const views = new Map<string, string>();
  const sidecar = [...s.sidecar].map(([ns, v]) => {
    const view = { listeners: entries(v.listeners), routes: entries(v.routes) };
    const text = JSON.stringify(view);
    const same = views.get(text);
    if (same !== undefined) return [ns, { same_as: same }];
    views.set(text, ns);
    return [ns, view];
  });
  const sections: Record<string, unknown> = {
    listeners: s.listeners,
    routes: entries(s.routes),
    clusters: entries(s.clusters),
    endpoints: entries(s.endpoints),
    secrets: entries(s.secrets),
    sidecar,
    mesh: s.mesh,
    // What the Telemetry API resolved to; without it, a function of the mesh config above.
    ...(s.telemetry.api ? { telemetry: s.telemetry } : {}),
  };
  const head = {
    options: { labels: opts.labels, namespace: opts.namespace, bind: opts.bind, ...(opts.allGateways ? { allGateways: true } : {}) },
    hash: located ? '<depends on the checkout path>' : s.hash,
    version: located ? '<depends on the checkout path>' : s.version,
    warnings: s.warnings.map(problemLine),
  };
  // The dump carries the version; it is compared above (or depends on the checkout path).
  const tail = { config_dump: sha(portable(JSON.stringify(configDump(s)).replaceAll(s.version, '<version>'))), xds: xdsDigests(s) };
  // Made portable before it is laid out: where a line breaks must not depend on the path's length.
  const text = pretty(JSON.parse(portable(JSON.stringify({ ...head, ...sections, ...tail })))) + '\n';
  if (text.length <= FULL_TEXT_LIMIT) return text;
  const digests = Object.fromEntries(Object.entries(sections).map(([k, v]) => [k, `${Array.isArray(v) ? v.length : 1} ${sha(portable(JSON.stringify(v)))}`]));
  return pretty(JSON.parse(portable(JSON.stringify({ ...head, digest_only: `over ${FULL_TEXT_LIMIT} characters: each section as its count and digest`, ...digests, ...tail })))) + '\n';
}

function run(c: Case, v: Variant): string {
  const { resources } = loadPaths([c.dir]);
  let mesh: MeshConfig;
  if (v.mesh) mesh = v.mesh;
  else {
    mesh = v.meshConfig ? loadMeshConfigFile(join(c.dir, v.meshConfig)).mesh : DEFAULT_MESH_CONFIG;
    mesh = meshFromResources(mesh, resources).mesh;
  }
  const opts: ResolveOptions = { labels: v.labels, namespace: v.namespace, bind: v.bind ?? '0.0.0.0', mesh, ...(v.allGateways ? { allGateways: true } : {}) };
  let first: Snapshot;
  try {
    first = resolve(resources, opts);
  } catch (err) {
    return pretty(JSON.parse(portable(JSON.stringify({ options: opts, throws: String((err as Error)?.message ?? err) })))) + '\n';
  }
  // Pure: the same input again gives the same hash.
  expect(resolve(loadPaths([c.dir]).resources, opts).hash).toBe(first.hash);
  return goldenText(first, opts);
}

const expectedFile = (c: Case, v: Variant): string => join(GOLDEN, 'expected', c.group, c.name, `${v.name}.json`);
const all = cases();

const computed = new Map<string, string>();
function textOf(c: Case, v: Variant): string {
  const key = `${c.group}/${c.name}/${v.name}`;
  let t = computed.get(key);
  if (t === undefined) computed.set(key, (t = run(c, v)));
  return t;
}
/** A golden text without its options (the first member). */
const outcome = (text: string): string => text.slice(text.search(/\n "(hash|throws)": /));
const optionsOf = (text: string): unknown => (JSON.parse(text) as { options: unknown }).options;

/**
 * The golden file of a variant: its text, or — when an earlier variant of the case produced the
 * same outcome (the same snapshot under other options) — its options and `same_as` that variant.
 */
function goldenFile(c: Case, v: Variant): string {
  const text = textOf(c, v);
  for (const earlier of c.variants) {
    if (earlier === v) break;
    if (outcome(textOf(c, earlier)) === outcome(text)) return pretty({ options: optionsOf(text), same_as: earlier.name }) + '\n';
  }
  return text;
}

describe('resolve() output is pinned by golden files', () => {
  for (const c of all) {
    describe(`${c.group}/${c.name}`, () => {
      for (const v of c.variants) {
        it(v.name, () => {
          const file = expectedFile(c, v);
          const text = goldenFile(c, v);
          if (UPDATE) {
            mkdirSync(dirname(file), { recursive: true });
            if (!existsSync(file) || readFileSync(file, 'utf8') !== text) writeFileSync(file, text);
            return;
          }
          expect(existsSync(file), `${relative(ROOT, file)} is missing: UPDATE_GOLDEN=1 writes it`).toBe(true);
          expect(text).toBe(readFileSync(file, 'utf8'));
        });
      }
    });
  }

  it('every golden file belongs to a case', () => {
    const found: string[] = [];
    const walk = (d: string): void => {
      if (!existsSync(d)) return;
      for (const n of readdirSync(d)) {
        const p = join(d, n);
        if (statSync(p).isDirectory()) walk(p);
        else found.push(p);
      }
    };
    walk(join(GOLDEN, 'expected'));
    const expected = new Set(all.flatMap((c) => c.variants.map((v) => expectedFile(c, v))));
    const stale = found.filter((f) => !expected.has(f));
    if (UPDATE) {
      for (const f of stale) rmSync(f);
      return;
    }
    expect(stale.map((f) => relative(ROOT, f))).toEqual([]);
  });
});
