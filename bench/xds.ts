/**
 * Control-plane benchmark (issue 5): `npm run bench:xds` builds `dist/` (the same gate as the other
 * benches) and runs this file in one Node process, `node --expose-gc --import tsx bench/xds.ts`,
 * against the TypeScript sources. It asserts nothing; it prints a markdown report and writes it to
 * bench/results/xds-latest.md.
 *
 *  1. build:  Istio config text (1 Gateway; per service a ServiceEntry, a DestinationRule with two
 *     subsets and a VirtualService with two header-matched HTTP routes, retries and timeouts) for
 *     N services; parseYamlText and resolve() timed separately (median of XDS_RUNS), heapUsed after
 *     gc, and the first (full-encode) SnapshotViews view of a proxyless and of a replica client.
 *     Variant `gw`: every VirtualService bound to the Gateway only; `mesh½`: every other one bound
 *     to the Gateway and to `mesh`, so the sidecar view has routes of its own.
 *  2. push:   an XdsServer (127.0.0.1, ephemeral port, debounce 0) over SnapshotViews of a
 *     100-service `mesh½` config; N raw grpc-js ADS clients (state of the world, all five types
 *     wildcard, ACKing every response as Envoy does), 50 per channel, each channel its own HTTP/2
 *     connection. One VirtualService is changed, re-resolved, views.update() + server.push(); the
 *     time from push() to the last client-side ACK write for every type that changed (counted on
 *     the clients), then until syncz() shows every stream SYNCED on that version.
 *  3. churn:  1,000 proxyless clients over 20 channels connect, sync, ACK, then cancel and close
 *     their channels; twice. RSS and heapUsed (after gc) before, at peak and after each round,
 *     clientCount after leaving, and a fresh client served afterwards.
 *
 * Environment: XDS_SIZES (default 1000,10000), XDS_RUNS (3, for N ≤ 1000), XDS_LARGE_RUNS (1, for
 * N > 1000: one parse of 10k services takes ~20 s here), XDS_LARGE_MESH=1 also runs `mesh½` for
 * N > 1000 (minutes: see bench/README.md), XDS_PUSH_CLIENTS (1,100,500), XDS_PUSHES (3),
 * XDS_CHURN_CLIENTS (1000), XDS_CHURN_ROUNDS (2), XDS_PARTS (build,push,churn).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { parseYamlText } from '../src/config/load.js';
import { DEFAULT_MESH_CONFIG, type Resource } from '../src/config/types.js';
import { resolve, type ResolveOptions } from '../src/controlplane/resolve.js';
import type { Snapshot } from '../src/controlplane/snapshot.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, RESOURCE_TYPES, ROUTE_TYPE, SECRET_TYPE, adsServiceClient } from '../src/controlplane/xds/protos.js';
import { XdsServer, type DiscoveryRequest, type DiscoveryResponse, type NodeMsg } from '../src/controlplane/xds/server.js';
import { SnapshotViews } from '../src/controlplane/xds/snapshot-views.js';
import type { ClientInfo, ClientKind, XdsView } from '../src/controlplane/xds/view.js';
import { gitCommit, grpcVersion, median, REPO, sleep } from './lib/common.js';
import { servicesYaml, virtualService } from './lib/configs.js';

const FILE = '/bench/xds-config.yaml';
const RESOLVE_OPTS: ResolveOptions = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG };
const CLIENTS_PER_CHANNEL = 50;
const PUSH_SERVICES = 100;
const SHORT: Record<string, string> = { [LISTENER_TYPE]: 'LDS', [ROUTE_TYPE]: 'RDS', [CLUSTER_TYPE]: 'CDS', [ENDPOINT_TYPE]: 'EDS', [SECRET_TYPE]: 'SDS' };

const envList = (name: string, dflt: string): string[] => (process.env[name] ?? dflt).split(',').map((s) => s.trim()).filter(Boolean);
const envInt = (name: string, dflt: number): number => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? Math.floor(v) : dflt;
};
const SIZES = envList('XDS_SIZES', '1000,10000').map(Number);
const RUNS = envInt('XDS_RUNS', 3);
const LARGE_RUNS = envInt('XDS_LARGE_RUNS', 1);
const LARGE_MESH = process.env['XDS_LARGE_MESH'] === '1';
const PUSH_CLIENTS = envList('XDS_PUSH_CLIENTS', '1,100,500').map(Number);
const PUSHES = envInt('XDS_PUSHES', 3);
const CHURN_CLIENTS = envInt('XDS_CHURN_CLIENTS', 1000);
const CHURN_ROUNDS = envInt('XDS_CHURN_ROUNDS', 2);
const PARTS = new Set(envList('XDS_PARTS', 'build,push,churn'));

// ---------------------------------------------------------------------------------------------
// Helpers.

const gcFn = (globalThis as { gc?: () => void }).gc;
function gc(): void {
  if (!gcFn) return;
  gcFn();
  gcFn();
}
const MiB = 2 ** 20;
const heapMiB = (): number => process.memoryUsage().heapUsed / MiB;
const rssMiB = (): number => process.memoryUsage().rss / MiB;
const f0 = (x: number): string => Math.round(x).toLocaleString('en-US');
const f1 = (x: number): string => x.toFixed(1);
const ms = (x: number): string => (x >= 100 ? f0(x) : f1(x));

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
  return performance.now() - t0;
}

function viewStats(v: XdsView): { count: number; bytes: number } {
  let count = 0;
  let bytes = 0;
  for (const byName of v.resources.values())
    for (const b of byName.values()) {
      count++;
      bytes += b.length;
    }
  return { count, bytes };
}

function info(kind: ClientKind, id: string): ClientInfo {
  return { id, kind, metadata: kind === 'gatehouse' ? { GENERATOR: 'gatehouse' } : { GENERATOR: 'grpc', NAMESPACE: 'default' }, userAgent: '' };
}

// ---------------------------------------------------------------------------------------------
// Config: servicesYaml() of bench/lib/configs.ts (1 Gateway; per service a ServiceEntry, a
// DestinationRule and a VirtualService), parsed.

function parseOk(text: string): Resource[] {
  const { resources, problems } = parseYamlText(text, FILE);
  if (problems.length > 0) throw new Error(`generated config has problems: ${problems.slice(0, 3).map((p) => `${p.line} ${p.message}`).join('; ')}`);
  return resources;
}

// ---------------------------------------------------------------------------------------------
// 1. Snapshot build.

interface BuildRow {
  n: number;
  variant: string;
  runs: number;
  yamlMB: number;
  parseMs: number;
  resolveMs: number;
  proxylessMs: number;
  proxyless: { count: number; bytes: number };
  replicaMs: number;
  replica: { count: number; bytes: number };
  heapParse: number;
  heapResolve: number;
  heapBase: number;
  sidecarRoutes: number;
}

function buildBench(n: number, meshHalf: boolean, runs: number): BuildRow {
  const text = servicesYaml(n, meshHalf);
  const parse: number[] = [];
  const res: number[] = [];
  const pv: number[] = [];
  const rv: number[] = [];
  let row: Partial<BuildRow> = {};
  for (let r = 0; r < runs; r++) {
    gc();
    const heapBase = heapMiB();
    let t = performance.now();
    let resources: Resource[] | undefined = parseOk(text);
    parse.push(performance.now() - t);
    gc();
    const heapParse = heapMiB();
    t = performance.now();
    let snap: Snapshot | undefined = resolve(resources, RESOLVE_OPTS);
    res.push(performance.now() - t);
    gc();
    const heapResolve = heapMiB();
    // A fresh SnapshotViews per client kind: its encode cache is per instance, so both are full encodes.
    let views = new SnapshotViews(() => undefined);
    views.update(snap);
    t = performance.now();
    const p = views.view(info('proxyless', 'p'));
    pv.push(performance.now() - t);
    views = new SnapshotViews(() => undefined);
    views.update(snap);
    t = performance.now();
    const g = views.view(info('gatehouse', 'g'));
    rv.push(performance.now() - t);
    row = { heapBase, heapParse, heapResolve, proxyless: viewStats(p), replica: viewStats(g), sidecarRoutes: snap.sidecar.get('default')?.routes.size ?? 0 };
    if (snap.warnings.length > 0) process.stderr.write(`  note: ${snap.warnings.length} resolve warnings, e.g. ${snap.warnings[0]!.message}\n`);
    resources = undefined;
    snap = undefined;
  }
  return {
    ...(row as BuildRow),
    n,
    variant: meshHalf ? 'mesh½' : 'gw',
    runs,
    yamlMB: text.length / 1e6,
    parseMs: median(parse),
    resolveMs: median(res),
    proxylessMs: median(pv),
    replicaMs: median(rv),
  };
}

// ---------------------------------------------------------------------------------------------
// ADS clients.

type AdsStream = grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;
type AdsClient = grpc.Client & { StreamAggregatedResources(): AdsStream };
const Ads = adsServiceClient() as unknown as new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => AdsClient;

function nodeMsg(kind: ClientKind, id: string): NodeMsg {
  // protobufjs' google.protobuf.Struct wants camelCase value fields (see server.ts).
  const fields: Record<string, unknown> =
    kind === 'gatehouse' ? { GENERATOR: { stringValue: 'gatehouse' } } : { GENERATOR: { stringValue: 'grpc' }, NAMESPACE: { stringValue: 'default' } };
  return { id, cluster: 'bench', user_agent_name: kind === 'gatehouse' ? 'gatehouse' : 'gRPC Node', metadata: { fields } } as NodeMsg;
}

interface Wait {
  version: string;
  expected: ReadonlyMap<ClientKind, ReadonlySet<string>>;
  t0: number;
  remaining: number;
  /** ms after t0 at which each client had ACKed every expected type. */
  clientDone: number[];
  done: () => void;
}

class Client {
  call: AdsStream | undefined;
  pending = new Set<string>();
  closed = false;
  constructor(
    readonly fleet: Fleet,
    readonly channel: AdsClient,
    readonly id: string,
    readonly kind: ClientKind,
  ) {}

  start(): void {
    const call = this.channel.StreamAggregatedResources();
    this.call = call;
    call.on('data', (res: DiscoveryResponse) => {
      // Envoy's ACK: same type_url, the version_info and nonce of the response; wildcard stays implicit.
      call.write({ type_url: res.type_url, version_info: res.version_info, response_nonce: res.nonce, resource_names: [] });
      this.fleet.acked(this, res.type_url, res.version_info);
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (!this.closed) this.fleet.errors.push(`${this.id}: ${err.code} ${err.details}`);
    });
    call.on('status', () => undefined);
    // Envoy's order (CDS, EDS, LDS, RDS, SDS); node on the first request only.
    RESOURCE_TYPES.forEach((type_url, i) => call.write({ ...(i === 0 ? { node: nodeMsg(this.kind, this.id) } : {}), type_url, resource_names: [] }));
  }

  leave(): void {
    this.closed = true;
    this.call?.cancel();
  }
}

/** Clients of one kind spread over channels of CLIENTS_PER_CHANNEL streams, one HTTP/2 connection each. */
class Fleet {
  readonly channels: AdsClient[] = [];
  readonly clients: Client[] = [];
  readonly errors: string[] = [];
  acks = 0;
  #wait: Wait | null = null;

  constructor(address: string, n: number, kind: ClientKind, perChannel: number, tag: string) {
    const channels = Math.ceil(n / perChannel);
    for (let c = 0; c < channels; c++) {
      // A local subchannel pool, or every channel to the same address shares one connection.
      this.channels.push(new Ads(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'grpc.max_receive_message_length': -1 }));
    }
    for (let i = 0; i < n; i++) this.clients.push(new Client(this, this.channels[Math.floor(i / perChannel)]!, `${tag}-${kind}-${i}`, kind));
  }

  /** Resolves when every client has ACKed `version` for each type `expected` lists for its kind. */
  expect(version: string, expected: ReadonlyMap<ClientKind, ReadonlySet<string>>, t0: number): Promise<{ lastMs: number; medianClientMs: number }> {
    return new Promise((resolveWait) => {
      const w: Wait = {
        version,
        expected,
        t0,
        remaining: 0,
        clientDone: [],
        done: () => {
          this.#wait = null;
          const lastMs = performance.now() - t0;
          resolveWait({ lastMs, medianClientMs: w.clientDone.length > 0 ? median(w.clientDone) : lastMs });
        },
      };
      for (const c of this.clients) {
        c.pending = new Set(expected.get(c.kind) ?? []);
        if (c.pending.size > 0) w.remaining++;
      }
      this.#wait = w;
      if (w.remaining === 0) w.done();
    });
  }

  acked(c: Client, typeUrl: string, version: string): void {
    this.acks++;
    const w = this.#wait;
    if (!w || version !== w.version || !c.pending.delete(typeUrl) || c.pending.size > 0) return;
    w.clientDone.push(performance.now() - w.t0);
    if (--w.remaining === 0) w.done();
  }

  start(): void {
    for (const c of this.clients) c.start();
  }

  /** Cancels every stream, waits until the server has forgotten them, closes the channels. */
  async leave(server: XdsServer, baseline = 0): Promise<number> {
    const t0 = performance.now();
    for (const c of this.clients) c.leave();
    await until(() => server.clientCount <= baseline, 30_000, `server.clientCount back to ${baseline}`);
    const took = performance.now() - t0;
    for (const ch of this.channels) ch.close();
    return took;
  }
}

const ALL_TYPES: ReadonlySet<string> = new Set(RESOURCE_TYPES);

/** syncz(): every stream of these kinds SYNCED on every type, and the `expected` types acked at `version`. */
function synced(server: XdsServer, version: string, expected: ReadonlyMap<ClientKind, ReadonlySet<string>>, count: number): boolean {
  const z = server.syncz();
  if (z.clients.length < count) return false;
  return z.clients.every((c) => {
    const exp = expected.get(c.kind) ?? new Set<string>();
    for (const s of Object.values(c.types)) if (s.status !== 'SYNCED') return false;
    for (const t of exp) if (c.types[SHORT[t] ?? t]?.acked !== version) return false;
    return true;
  });
}

/** The types whose served content differs between two snapshots for a client kind (what a push resends). */
function changedTypes(before: Snapshot, after: Snapshot, kind: ClientKind): Set<string> {
  const a = new SnapshotViews(() => undefined);
  a.update(before);
  const b = new SnapshotViews(() => undefined);
  b.update(after);
  const va = a.view(info(kind, 'probe'));
  const vb = b.view(info(kind, 'probe'));
  const out = new Set<string>();
  for (const t of RESOURCE_TYPES) {
    const ma = va.resources.get(t) ?? new Map<string, Uint8Array>();
    const mb = vb.resources.get(t) ?? new Map<string, Uint8Array>();
    if (ma.size !== mb.size) out.add(t);
    else for (const [n, bytes] of ma) if (!mb.has(n) || Buffer.compare(Buffer.from(bytes), Buffer.from(mb.get(n)!)) !== 0) out.add(t);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// 2. Push latency.

interface PushRow {
  clients: number;
  kind: ClientKind;
  channels: number;
  syncMs: number;
  changed: string;
  flushMs: number[];
  ackMs: number[];
  medianClientMs: number[];
  synczMs: number[];
  cpuMs: number[];
  errors: number;
}

class Plane {
  resources: Resource[];
  snapshot: Snapshot;
  readonly views = new SnapshotViews(() => undefined);
  readonly server: XdsServer;
  address = '';
  #bump = 0;

  constructor(services: number) {
    this.resources = parseOk(servicesYaml(services, true));
    this.snapshot = resolve(this.resources, RESOLVE_OPTS);
    this.views.update(this.snapshot);
    const log = pino({ level: 'warn' }, pino.destination(2));
    this.server = new XdsServer(this.views, { log, debounceMs: 0, shutdownGraceMs: 1000 });
  }

  async listen(): Promise<void> {
    const port = await this.server.listen('127.0.0.1', 0);
    this.address = `127.0.0.1:${port}`;
  }

  /** svc-0's VirtualService (bound to the Gateway and mesh) with another canary timeout; the new snapshot. */
  nextSnapshot(): { before: Snapshot; after: Snapshot; resolveMs: number } {
    this.#bump++;
    const vs = parseOk(virtualService(0, true, 5 + this.#bump))[0]!;
    const i = this.resources.findIndex((r) => r.kind === 'VirtualService' && r.metadata.name === 'svc-0');
    this.resources = [...this.resources.slice(0, i), vs, ...this.resources.slice(i + 1)];
    const t = performance.now();
    const after = resolve(this.resources, RESOLVE_OPTS);
    const resolveMs = performance.now() - t;
    const before = this.snapshot;
    this.snapshot = after;
    return { before, after, resolveMs };
  }
}

async function pushBench(plane: Plane, n: number, kind: ClientKind): Promise<PushRow> {
  const fleet = new Fleet(plane.address, n, kind, CLIENTS_PER_CHANNEL, `push${n}`);
  const all = new Map<ClientKind, ReadonlySet<string>>([[kind, ALL_TYPES]]);
  let t0 = performance.now();
  const initial = fleet.expect(plane.snapshot.version, all, t0);
  fleet.start();
  const syncMs = (await withTimeout(initial, 60_000, `initial sync of ${n} ${kind} clients`)).lastMs;
  await until(() => synced(plane.server, plane.snapshot.version, all, n), 30_000, 'initial syncz');
  const row: PushRow = { clients: n, kind, channels: fleet.channels.length, syncMs, changed: '', flushMs: [], ackMs: [], medianClientMs: [], synczMs: [], cpuMs: [], errors: 0 };
  for (let p = 0; p < PUSHES; p++) {
    await sleep(100);
    const { before, after } = plane.nextSnapshot();
    const changed = changedTypes(before, after, kind);
    row.changed = [...changed].map((t) => SHORT[t] ?? t).join('+') || 'none';
    const expected = new Map<ClientKind, ReadonlySet<string>>([[kind, changed]]);
    plane.views.update(after);
    const cpu0 = process.cpuUsage();
    t0 = performance.now();
    const acked = fleet.expect(after.version, expected, t0);
    let flushEnd = 0;
    plane.server.push();
    // The push's debounce timer (0 ms) was armed first; this one fires right after its callback,
    // which refreshes every stream synchronously: views, digests, serialising and writing.
    setTimeout(() => (flushEnd = performance.now()), 0);
    const r = await withTimeout(acked, 60_000, `ACKs of push ${p + 1} to ${n} ${kind} clients`);
    const cpu = process.cpuUsage(cpu0);
    row.ackMs.push(r.lastMs);
    row.medianClientMs.push(r.medianClientMs);
    row.flushMs.push(flushEnd - t0);
    row.cpuMs.push((cpu.user + cpu.system) / 1000);
    await until(() => synced(plane.server, after.version, expected, n), 30_000, 'syncz SYNCED after push');
    row.synczMs.push(performance.now() - t0);
  }
  row.errors = fleet.errors.length;
  if (fleet.errors.length > 0) process.stderr.write(`  stream errors: ${fleet.errors.slice(0, 3).join('; ')}\n`);
  await fleet.leave(plane.server);
  return row;
}

function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// 3. Churn.

interface ChurnRow {
  round: number;
  syncMs: number;
  leaveMs: number;
  rss: [number, number, number];
  heap: [number, number, number];
  countAfter: number;
  errors: number;
}

function mem(): { rss: number; heap: number } {
  gc();
  return { rss: rssMiB(), heap: heapMiB() };
}

async function churnBench(plane: Plane): Promise<{ rows: ChurnRow[]; fresh: string }> {
  const rows: ChurnRow[] = [];
  const channels = Math.ceil(CHURN_CLIENTS / CLIENTS_PER_CHANNEL);
  const all = new Map<ClientKind, ReadonlySet<string>>([['proxyless', ALL_TYPES]]);
  for (let round = 1; round <= CHURN_ROUNDS; round++) {
    await sleep(200);
    const before = mem();
    const fleet = new Fleet(plane.address, CHURN_CLIENTS, 'proxyless', Math.ceil(CHURN_CLIENTS / channels), `churn${round}`);
    const t0 = performance.now();
    const initial = fleet.expect(plane.snapshot.version, all, t0);
    fleet.start();
    const syncMs = (await withTimeout(initial, 90_000, `round ${round}: ${CHURN_CLIENTS} clients synced`)).lastMs;
    await until(() => synced(plane.server, plane.snapshot.version, all, CHURN_CLIENTS), 30_000, 'churn syncz');
    const peak = mem();
    const leaveMs = await fleet.leave(plane.server);
    const countAfter = plane.server.clientCount;
    await sleep(300); // let the closed connections' sockets and sessions go
    const after = mem();
    rows.push({ round, syncMs, leaveMs, rss: [before.rss, peak.rss, after.rss], heap: [before.heap, peak.heap, after.heap], countAfter, errors: fleet.errors.length });
  }
  // A fresh client afterwards.
  const fleet = new Fleet(plane.address, 1, 'proxyless', 1, 'fresh');
  const t0 = performance.now();
  const p = fleet.expect(plane.snapshot.version, all, t0);
  fleet.start();
  const r = await withTimeout(p, 10_000, 'fresh client after churn');
  await until(() => synced(plane.server, plane.snapshot.version, all, 1), 10_000, 'fresh client syncz');
  const z = plane.server.syncz();
  const fresh = `a fresh proxyless client got and ACKed all 5 types in ${ms(r.lastMs)} ms; syncz: ${z.clients.length} client, ${Object.values(z.clients[0]?.types ?? {}).map((t) => t.status).join('/')}`;
  await fleet.leave(plane.server);
  return { rows, fresh };
}

// ---------------------------------------------------------------------------------------------
// Report.

const kib = (b: number): string => f0(b / 1024);

async function main(): Promise<void> {
  const started = performance.now();
  const lines: string[] = [];
  const out = (s = ''): void => {
    lines.push(s);
    process.stdout.write(`${s}\n`);
  };
  const cpus = os.cpus();
  out(`# Gatehouse control-plane bench, ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}`);
  out();
  out(`commit ${gitCommit({ dirtySrc: true, fallback: 'unknown' })} · node ${process.version} · ${cpus.length} × ${cpus[0]?.model.trim() ?? '?'} · grpc-js ${grpcVersion()} · one process (server and clients share the event loop)${gcFn ? '' : ' · **no --expose-gc: heap numbers include garbage**'}`);

  if (PARTS.has('build')) {
    // Warm-up: loads the Envoy protos for the codec and JIT-compiles the paths before timing.
    const warm = new SnapshotViews(() => undefined);
    warm.update(resolve(parseOk(servicesYaml(20, true)), RESOLVE_OPTS));
    warm.view(info('proxyless', 'w'));
    warm.view(info('gatehouse', 'w'));
    const rows: BuildRow[] = [];
    for (const n of SIZES) {
      for (const meshHalf of [false, true]) {
        const large = n > 1000;
        if (large && meshHalf && !LARGE_MESH) continue;
        process.stderr.write(`build: N=${n} ${meshHalf ? 'mesh½' : 'gw'} …\n`);
        rows.push(buildBench(n, meshHalf, large ? LARGE_RUNS : RUNS));
      }
    }
    out();
    out('## 1. Snapshot build');
    out();
    out('| N services | variant | YAML MB | runs | parse ms | resolve ms | proxyless view ms | proxyless view | replica view ms | replica view | heap after parse MiB | heap after resolve MiB |');
    out('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of rows) {
      out(
        `| ${f0(r.n)} | ${r.variant} | ${f1(r.yamlMB)} | ${r.runs} | ${ms(r.parseMs)} | ${ms(r.resolveMs)} | ${ms(r.proxylessMs)} | ${f0(r.proxyless.count)} res, ${kib(r.proxyless.bytes)} KiB | ${ms(r.replicaMs)} | ${f0(r.replica.count)} res, ${kib(r.replica.bytes)} KiB | ${f0(r.heapParse)} | ${f0(r.heapResolve)} |`,
      );
    }
    out();
    out(
      `Times are medians of the runs. Per service: ServiceEntry (2 endpoints), DestinationRule (2 subsets), VirtualService (2 header-matched routes, retries, timeouts) = 3 clusters + 3 endpoint sets. \`gw\`: all VirtualServices on the Gateway; \`mesh½\`: every other one on the Gateway and \`mesh\`. Views are first builds (full encode) of a fresh SnapshotViews: proxyless = namespace \`default\` sidecar view, replica = GENERATOR gatehouse. Heap = heapUsed after gc with the parsed resources (and then the snapshot) alive; baseline before parsing ≈ ${f0(rows[0]?.heapBase ?? 0)} MiB.${SIZES.some((n) => n > 1000) && !LARGE_MESH ? ' `mesh½` for N > 1000 is skipped by default (XDS_LARGE_MESH=1).' : ''}`,
    );
  }

  if (PARTS.has('push') || PARTS.has('churn')) {
    const plane = new Plane(PUSH_SERVICES);
    await plane.listen();
    try {
      if (PARTS.has('push')) {
        const rows: PushRow[] = [];
        for (const n of PUSH_CLIENTS) {
          process.stderr.write(`push: ${n} proxyless clients …\n`);
          rows.push(await pushBench(plane, n, 'proxyless'));
        }
        process.stderr.write(`push: 500 replica clients …\n`);
        rows.push(await pushBench(plane, 500, 'gatehouse'));
        out();
        out(`## 2. Push latency (${PUSH_SERVICES} services, \`mesh½\`, ${PUSHES} pushes)`);
        out();
        out('| clients | kind | channels | initial sync ms | types resent | flush ms p50 | all ACKed ms p50 | all ACKed ms max | median client ms | syncz SYNCED ms p50 | CPU ms/push | stream errors |');
        out('|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|');
        for (const r of rows) {
          out(
            `| ${r.clients} | ${r.kind === 'gatehouse' ? 'replica' : r.kind} | ${r.channels} | ${ms(r.syncMs)} | ${r.changed} | ${ms(median(r.flushMs))} | ${ms(median(r.ackMs))} | ${ms(Math.max(...r.ackMs))} | ${ms(median(r.medianClientMs))} | ${ms(median(r.synczMs))} | ${ms(median(r.cpuMs))} | ${r.errors} |`,
          );
        }
        out();
        out(
          'Each push: svc-0\'s VirtualService (on the Gateway and `mesh`) gets another timeout → resolve() → views.update() → server.push() (debounce 0 here; the gateway uses 100 ms, add it). **all ACKed**: from push() until the last client wrote its ACK for every resent type (counted client-side in the ACK handler); **median client**: the same for the median client; **syncz SYNCED**: until server.syncz() showed every stream SYNCED on the new version (polled every 2 ms once all ACKs were written). **flush**: push() until the server\'s synchronous refresh of every stream ended (new view built once, then per stream digest + serialise + write). **initial sync**: connect until every client ACKed all 5 types. CPU = user+sys of the whole process (server and clients) over the push.',
        );
      }
      if (PARTS.has('churn')) {
        process.stderr.write(`churn: ${CHURN_CLIENTS} clients × ${CHURN_ROUNDS} rounds …\n`);
        const { rows, fresh } = await churnBench(plane);
        out();
        out(`## 3. Churn (${CHURN_CLIENTS} proxyless clients over ${Math.ceil(CHURN_CLIENTS / CLIENTS_PER_CHANNEL)} channels, ${PUSH_SERVICES} services)`);
        out();
        out('| round | sync ms | leave ms | RSS MiB before → peak → after | heapUsed MiB before → peak → after | clientCount after | stream errors |');
        out('|---:|---:|---:|---|---|---:|---:|');
        for (const r of rows) {
          out(`| ${r.round} | ${ms(r.syncMs)} | ${ms(r.leaveMs)} | ${r.rss.map(f0).join(' → ')} | ${r.heap.map(f1).join(' → ')} | ${r.countAfter} | ${r.errors} |`);
        }
        out();
        out(
          `sync = connect until all ACKed all 5 types; leave = cancel() of every stream until server.clientCount was 0 (then the channels are closed). Memory after gc (global.gc), of the whole process: the clients' side is in it too. After the rounds: ${fresh}.`,
        );
      }
    } finally {
      await plane.server.close();
    }
  }
  out();
  out(`Total run time ${f1((performance.now() - started) / 1000)} s.`);
  const dir = path.join(REPO, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'xds-latest.md'), `${lines.join('\n')}\n`);
  process.stdout.write('\nwritten to bench/results/xds-latest.md\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:xds failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
  // Open streams and channels would keep the process alive after a failure.
  setTimeout(() => process.exit(1), 2000).unref();
});
