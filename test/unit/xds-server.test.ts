// The ADS server over real gRPC on loopback: state-of-the-world and delta subscriptions, ACK/NACK
// and stale nonces, per-client views, change-only pushes, debounce, malformed streams and cleanup
// of vanished clients. Resources are arbitrary bytes: the server treats them as opaque.
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import {
  loadAds,
  resourceHash,
  XdsServer,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type NodeMsg,
} from '../../src/controlplane/xds/server.js';
import type { ClientInfo, ClientKind, ViewSource, XdsView } from '../../src/controlplane/xds/view.js';

const T = 'type.googleapis.com/';
const LDS = `${T}envoy.config.listener.v3.Listener`;
const RDS = `${T}envoy.config.route.v3.RouteConfiguration`;
const CDS = `${T}envoy.config.cluster.v3.Cluster`;
const EDS = `${T}envoy.config.endpoint.v3.ClusterLoadAssignment`;

type Spec = Record<string, Record<string, string>>;
function makeView(version: string, spec: Spec): XdsView {
  const resources = new Map<string, Map<string, Uint8Array>>();
  for (const [type, byName] of Object.entries(spec))
    resources.set(type, new Map(Object.entries(byName).map(([n, s]) => [n, Buffer.from(s)])));
  return { version, resources };
}

class FakeSource implements ViewSource {
  views = new Map<ClientKind, XdsView>();
  calls = 0;
  seen = new Map<string, ClientInfo>();
  set(kind: ClientKind, version: string, spec: Spec): void {
    this.views.set(kind, makeView(version, spec));
  }
  setAll(version: string, spec: Spec): void {
    for (const k of ['envoy', 'proxyless', 'gatehouse'] as const) this.set(k, version, spec);
  }
  view(c: ClientInfo): XdsView {
    this.calls++;
    this.seen.set(c.id, c);
    return this.views.get(c.kind) ?? { version: '', resources: new Map() };
  }
}

const Client = grpc.makeGenericClientConstructor(loadAds(), 'AggregatedDiscoveryService');

/** A client stream with a message queue. */
class Stream<Req, Res> {
  readonly got: Res[] = [];
  #waiters: (() => void)[] = [];
  error: grpc.ServiceError | undefined;
  constructor(readonly call: grpc.ClientDuplexStream<Req, Res>) {
    call.on('data', (m: Res) => {
      this.got.push(m);
      this.#wake();
    });
    call.on('error', (e: grpc.ServiceError) => {
      this.error = e;
      this.#wake();
    });
  }
  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
  send(req: Req): this {
    this.call.write(req);
    return this;
  }
  async next(ms = 2000): Promise<Res> {
    const deadline = Date.now() + ms;
    while (this.got.length === 0) {
      if (this.error) throw this.error;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a response');
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.got.shift()!;
  }
  async nothing(ms = 150): Promise<void> {
    await sleep(ms);
    expect(this.got.map((m) => (m as { type_url?: string }).type_url)).toEqual([]);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const names = (r: DiscoveryResponse) => r.resources.map((a) => Buffer.from(a.value).toString()).sort();

function node(id: string, kind: ClientKind = 'envoy', userAgent = 'envoy'): NodeMsg {
  const gen = kind === 'proxyless' ? 'grpc' : kind === 'gatehouse' ? 'gatehouse' : undefined;
  return {
    id,
    user_agent_name: userAgent,
    metadata: gen
      ? { fields: { GENERATOR: { stringValue: gen }, LABELS: { structValue: { fields: { app: { stringValue: 'a' } } } } } }
      : { fields: { CLUSTER_ID: { stringValue: 'k' } } },
  } as NodeMsg;
}

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

async function start(source: ViewSource, debounceMs = 5) {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const server = new XdsServer(source, { log, debounceMs, shutdownGraceMs: 200 });
  const port = await server.listen('127.0.0.1', 0);
  const clients: grpc.Client[] = [];
  const client = () => {
    const c = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    clients.push(c);
    return c as unknown as Record<string, () => grpc.ClientDuplexStream<unknown, unknown>>;
  };
  let shared: ReturnType<typeof client> | undefined;
  const sotw = (c = (shared ??= client())) =>
    new Stream(c['StreamAggregatedResources']!() as grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>);
  const delta = (c = (shared ??= client())) =>
    new Stream(c['DeltaAggregatedResources']!() as grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>);
  cleanups.push(async () => {
    await server.close();
    for (const c of clients) c.close();
  });
  return { server, port, lines, sotw, delta, client };
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not reached');
    await sleep(10);
  }
}

const BASE: Spec = {
  [LDS]: { l1: 'listener-1', l2: 'listener-2' },
  [RDS]: { r1: 'route-1', r2: 'route-2', r3: 'route-3' },
  [CDS]: { c1: 'cluster-1', c2: 'cluster-2' },
  [EDS]: { c1: 'endpoints-1', c2: 'endpoints-2' },
};

describe('ADS state of the world', () => {
  it('serves LDS/CDS by wildcard and RDS by name; ACK marks the type SYNCED', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { server, sotw } = await start(src);
    const s = sotw();
    s.send({ node: node('envoy-1'), type_url: LDS, resource_names: [] });
    const l = await s.next();
    expect(l).toMatchObject({ type_url: LDS, version_info: 'v1' });
    expect(l.resources.every((a) => a.type_url === LDS)).toBe(true);
    expect(names(l)).toEqual(['listener-1', 'listener-2']);
    s.send({ type_url: CDS, resource_names: ['*'] });
    expect(names(await s.next())).toEqual(['cluster-1', 'cluster-2']);
    s.send({ type_url: RDS, resource_names: ['r1', 'missing'] });
    const r = await s.next();
    expect(names(r)).toEqual(['route-1']);

    expect(server.syncz().clients[0]!.types['LDS']).toEqual({ sent: 'v1', acked: null, status: 'STALE' });
    s.send({ type_url: LDS, version_info: 'v1', response_nonce: l.nonce, resource_names: [] });
    // ACK with new names: answered with the subscribed set.
    s.send({ type_url: RDS, version_info: 'v1', response_nonce: r.nonce, resource_names: ['r1', 'r2'] });
    const r2 = await s.next();
    expect(names(r2)).toEqual(['route-1', 'route-2']);
    s.send({ type_url: RDS, version_info: 'v1', response_nonce: r2.nonce, resource_names: ['r1', 'r2'] });
    await s.nothing(80);
    const z = server.syncz();
    expect(z.version).toBe('v1');
    expect(z.clients).toHaveLength(1);
    expect(z.clients[0]).toMatchObject({ id: 'envoy-1', kind: 'envoy', stream: 'sotw' });
    expect(z.clients[0]!.types).toEqual({
      LDS: { sent: 'v1', acked: 'v1', status: 'SYNCED' },
      CDS: { sent: 'v1', acked: null, status: 'STALE' },
      RDS: { sent: 'v1', acked: 'v1', status: 'SYNCED' },
    });
    // Once names were given, an empty list unsubscribes (no legacy wildcard any more).
    s.send({ type_url: RDS, version_info: 'v1', response_nonce: r2.nonce, resource_names: [] });
    expect((await s.next()).resources).toEqual([]);
  });

  it('records a NACK (STALE + message, warn log), does not resend, and sends the next version', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { server, sotw, lines } = await start(src);
    const s = sotw();
    s.send({ node: node('envoy-nack'), type_url: LDS });
    const l = await s.next();
    s.send({ type_url: LDS, version_info: '', response_nonce: l.nonce, error_detail: { code: 3, message: 'bad listener l2' } });
    await s.nothing(100);
    expect(server.syncz().clients[0]!.types['LDS']).toEqual({
      sent: 'v1',
      acked: null,
      nacked: { version: 'v1', message: 'bad listener l2' },
      status: 'STALE',
    });
    const warn = lines.find((x) => x['msg'] === 'xds: NACK');
    expect(warn).toMatchObject({ level: 40, node: 'envoy-nack', type: 'LDS', version: 'v1', message: 'bad listener l2' });
    // Same content again (a new view with a new version, same bytes): nothing re-sent.
    src.setAll('v1b', BASE);
    server.push();
    await s.nothing(60);
    src.setAll('v2', { ...BASE, [LDS]: { l1: 'listener-1', l2: 'listener-2-fixed' } });
    server.push();
    const l2 = await s.next();
    expect(l2.version_info).toBe('v2');
    expect(names(l2)).toEqual(['listener-1', 'listener-2-fixed']);
    s.send({ type_url: LDS, version_info: 'v2', response_nonce: l2.nonce });
    await until(() => server.syncz().clients[0]!.types['LDS']!.status === 'SYNCED');
    expect(server.syncz().clients[0]!.types['LDS']).toEqual({ sent: 'v2', acked: 'v2', status: 'SYNCED' });
  });

  it('ignores requests with a stale nonce (no ACK, no re-subscription)', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { server, sotw } = await start(src);
    const s = sotw();
    s.send({ node: node('envoy-stale'), type_url: RDS, resource_names: ['r1'] });
    const first = await s.next();
    src.setAll('v2', { ...BASE, [RDS]: { ...BASE[RDS], r1: 'route-1b' } });
    server.push();
    const second = await s.next();
    expect(names(second)).toEqual(['route-1b']);
    s.send({ type_url: RDS, version_info: 'v1', response_nonce: first.nonce, resource_names: ['r1', 'r3'] });
    await s.nothing(100);
    expect(server.syncz().clients[0]!.types['RDS']).toMatchObject({ sent: 'v2', acked: null, status: 'STALE' });
    s.send({ type_url: RDS, version_info: 'v2', response_nonce: second.nonce, resource_names: ['r1'] });
    await until(() => server.syncz().clients[0]!.types['RDS']!.status === 'SYNCED');
    await s.nothing(50);
  });

  it('on push sends only the types whose subscribed bytes changed', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { server, sotw } = await start(src);
    const s = sotw();
    s.send({ node: node('envoy-push'), type_url: LDS });
    const acks: DiscoveryResponse[] = [await s.next()];
    s.send({ type_url: CDS });
    acks.push(await s.next());
    s.send({ type_url: RDS, resource_names: ['r1'] });
    acks.push(await s.next());
    for (const a of acks) s.send({ type_url: a.type_url, version_info: a.version_info, response_nonce: a.nonce, resource_names: a.type_url === RDS ? ['r1'] : [] });
    await s.nothing(50);
    // A version bump with the same bytes, and a change to an RDS name nobody subscribed to: nothing.
    src.setAll('v2', { ...BASE, [RDS]: { ...BASE[RDS], r2: 'route-2b' } });
    server.push();
    await s.nothing(100);
    src.setAll('v3', { ...BASE, [RDS]: { ...BASE[RDS], r2: 'route-2b' }, [CDS]: { c1: 'cluster-1', c2: 'cluster-2b', c3: 'cluster-3' } });
    server.push();
    const c = await s.next();
    expect(c.type_url).toBe(CDS);
    expect(c.version_info).toBe('v3');
    expect(names(c)).toEqual(['cluster-1', 'cluster-2b', 'cluster-3']);
    await s.nothing(100);
    // A deleted cluster: CDS is sent again, without it (SotW deletion).
    src.setAll('v4', { ...BASE, [CDS]: { c1: 'cluster-1' } });
    server.push();
    const c2 = await s.next();
    expect(names(c2)).toEqual(['cluster-1']);
    // RDS r1 is unchanged in v4 (r2 reverted, not subscribed): no RDS.
    await s.nothing(80);
  });

  it('serves each client its own view (envoy, proxyless by GENERATOR or user agent, gatehouse)', async () => {
    const src = new FakeSource();
    src.set('envoy', 'v1', { [LDS]: { l: 'envoy-listener' } });
    src.set('proxyless', 'v1', { [LDS]: { l: 'api-listener' } });
    src.set('gatehouse', 'v1', { [LDS]: { l: 'gatehouse-listener' } });
    const { server, sotw } = await start(src);
    const a = sotw();
    const b = sotw();
    const c = sotw();
    const d = sotw();
    a.send({ node: node('a'), type_url: LDS });
    b.send({ node: node('b', 'proxyless'), type_url: LDS, resource_names: ['l'] });
    c.send({ node: node('c', 'gatehouse'), type_url: LDS });
    d.send({ node: { id: 'd', user_agent_name: 'gRPC Go' }, type_url: LDS, resource_names: ['l'] });
    expect(names(await a.next())).toEqual(['envoy-listener']);
    expect(names(await b.next())).toEqual(['api-listener']);
    expect(names(await c.next())).toEqual(['gatehouse-listener']);
    expect(names(await d.next())).toEqual(['api-listener']);
    const kinds = Object.fromEntries(server.syncz().clients.map((x) => [x.id, x.kind]));
    expect(kinds).toEqual({ a: 'envoy', b: 'proxyless', c: 'gatehouse', d: 'proxyless' });
    expect(src.seen.get('b')).toEqual({ id: 'b', kind: 'proxyless', userAgent: 'envoy', metadata: { GENERATOR: 'grpc', LABELS: { app: 'a' } } });
    expect(src.seen.get('d')).toMatchObject({ kind: 'proxyless', userAgent: 'gRPC Go', metadata: {} });
    // A change in one kind's view reaches only that kind.
    src.set('proxyless', 'v2', { [LDS]: { l: 'api-listener-2' } });
    server.push();
    expect(names(await b.next())).toEqual(['api-listener-2']);
    expect(names(await d.next())).toEqual(['api-listener-2']);
    await a.nothing(80);
    await c.nothing(0);
  });

  it('ignores an unknown type URL (logged once) and keeps the stream working', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { server, sotw, lines } = await start(src);
    const s = sotw();
    s.send({ node: node('envoy-unknown'), type_url: `${T}example.Unknown` });
    s.send({ type_url: `${T}example.Unknown`, resource_names: ['x'] });
    await s.nothing(100);
    s.send({ type_url: LDS });
    expect(names(await s.next())).toEqual(['listener-1', 'listener-2']);
    expect(lines.filter((x) => x['msg'] === 'xds: ignoring request for unknown type URL')).toHaveLength(1);
    expect(Object.keys(server.syncz().clients[0]!.types)).toEqual(['LDS']);
    expect(s.error).toBeUndefined();
  });

  it('ends a stream whose first request has no node with INVALID_ARGUMENT', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { server, sotw, delta } = await start(src);
    const s = sotw();
    s.send({ type_url: LDS });
    await expect(s.next()).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining('node') });
    const d = delta();
    d.send({ type_url: CDS });
    await expect(d.next()).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    expect(server.syncz().clients).toEqual([]);
    // A later request without type_url (ADS requires it) also ends the stream.
    const t = sotw();
    t.send({ node: node('no-type'), type_url: LDS });
    await t.next();
    t.send({ resource_names: [] });
    await expect(t.next()).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining('type_url') });
    await until(() => server.syncz().clients.length === 0);
    // The server is fine afterwards.
    const ok = sotw();
    ok.send({ node: node('after'), type_url: LDS });
    expect((await ok.next()).version_info).toBe('v1');
  });
});

describe('ADS delta', () => {
  const ver = (s: string) => resourceHash(Buffer.from(s));

  it('subscribes, unsubscribes, removes and reports ACK/NACK', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { server, delta } = await start(src);
    const d = delta();
    d.send({ node: node('delta-1', 'proxyless'), type_url: CDS }); // legacy wildcard
    const c = await d.next();
    expect(c.system_version_info).toBe('v1');
    expect(c.removed_resources).toEqual([]);
    expect(c.resources.map((r) => [r.name, r.version, Buffer.from(r.resource.value).toString(), r.resource.type_url]).sort()).toEqual([
      ['c1', ver('cluster-1'), 'cluster-1', CDS],
      ['c2', ver('cluster-2'), 'cluster-2', CDS],
    ]);
    d.send({ type_url: CDS, response_nonce: c.nonce });
    d.send({ type_url: EDS, resource_names_subscribe: ['c1', 'nope'] });
    const e = await d.next();
    expect(e.resources.map((r) => r.name)).toEqual(['c1']);
    expect(e.removed_resources).toEqual(['nope']);
    d.send({ type_url: EDS, response_nonce: e.nonce, error_detail: { code: 3, message: 'bad eds' } });
    // Unsubscribing needs no answer; a later change to c1 is not sent.
    d.send({ type_url: EDS, resource_names_unsubscribe: ['c1'] });
    await d.nothing(100);
    let z = server.syncz().clients[0]!;
    expect(z.stream).toBe('delta');
    expect(z.types['CDS']).toEqual({ sent: 'v1', acked: 'v1', status: 'SYNCED' });
    expect(z.types['EDS']).toEqual({ sent: 'v1', acked: null, nacked: { version: 'v1', message: 'bad eds' }, status: 'STALE' });

    src.setAll('v2', { ...BASE, [CDS]: { c2: 'cluster-2', c3: 'cluster-3' }, [EDS]: { c1: 'endpoints-1b', c2: 'endpoints-2' } });
    server.push();
    const c2 = await d.next();
    expect(c2.system_version_info).toBe('v2');
    expect(c2.resources.map((r) => r.name)).toEqual(['c3']);
    expect(c2.removed_resources).toEqual(['c1']);
    await d.nothing(80);
    // 'nope' appears: it is still subscribed, so it is sent.
    src.setAll('v3', { ...BASE, [EDS]: { c1: 'endpoints-1b', nope: 'endpoints-nope' } });
    server.push();
    const msgs = [await d.next(), await d.next()].sort((a, b) => a.type_url.localeCompare(b.type_url));
    const [cds, eds] = msgs as [DeltaDiscoveryResponse, DeltaDiscoveryResponse];
    expect(cds.type_url).toBe(CDS);
    expect(eds.resources.map((r) => r.name)).toEqual(['nope']);
    expect(eds.removed_resources).toEqual([]);
    d.send({ type_url: EDS, response_nonce: eds.nonce });
    await until(() => server.syncz().clients[0]!.types['EDS']!.status === 'SYNCED');
    z = server.syncz().clients[0]!;
    expect(z.types['EDS']).toEqual({ sent: 'v3', acked: 'v3', status: 'SYNCED' });
  });

  it('honours initial_resource_versions and explicit "*"', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { delta, server } = await start(src);
    const d = delta();
    d.send({
      node: node('delta-2'),
      type_url: CDS,
      resource_names_subscribe: ['*'],
      initial_resource_versions: { c1: ver('cluster-1'), c2: 'old', gone: 'x' },
    });
    const c = await d.next();
    expect(c.resources.map((r) => r.name)).toEqual(['c2']);
    expect(c.removed_resources).toEqual(['gone']);
    // Dropping '*' while holding an explicit name keeps only that one.
    d.send({ type_url: CDS, response_nonce: c.nonce, resource_names_subscribe: ['c1'], resource_names_unsubscribe: ['*'] });
    await d.nothing(80);
    src.setAll('v2', { ...BASE, [CDS]: { c1: 'cluster-1b', c2: 'cluster-2b' } });
    server.push();
    const u = await d.next();
    expect(u.resources.map((r) => [r.name, r.version])).toEqual([['c1', ver('cluster-1b')]]);
    expect(u.removed_resources).toEqual([]);
  });

  it('after unsubscribing "*" (explicitly subscribed with a name), only that name gets updates', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { delta, server } = await start(src);
    const d = delta();
    d.send({ node: node('delta-3'), type_url: CDS, resource_names_subscribe: ['*', 'c1'] });
    const c = await d.next();
    expect(c.resources.map((r) => r.name).sort()).toEqual(['c1', 'c2']);
    d.send({ type_url: CDS, response_nonce: c.nonce, resource_names_unsubscribe: ['*'] });
    await d.nothing(60);
    src.setAll('v2', { ...BASE, [CDS]: { c1: 'cluster-1b', c2: 'cluster-2b' } });
    server.push();
    const u = await d.next();
    expect(u.resources.map((r) => r.name)).toEqual(['c1']);
    expect(u.removed_resources).toEqual([]);
  });
});

describe('ADS server lifecycle', () => {
  it('coalesces several push() calls into one response per client', async () => {
    const src = new FakeSource();
    src.setAll('v0', BASE);
    const { server, sotw } = await start(src, 60);
    const streams = [0, 1, 2].map(() => sotw());
    streams.forEach((s, i) => s.send({ node: node(`deb-${i}`), type_url: LDS }));
    for (const s of streams) await s.next();
    const before = src.calls;
    for (let v = 1; v <= 5; v++) {
      src.setAll(`v${v}`, { ...BASE, [LDS]: { l1: `listener-1-v${v}` } });
      server.push();
    }
    await sleep(40);
    for (const s of streams) expect(s.got).toEqual([]);
    for (const s of streams) {
      const r = await s.next();
      expect(r.version_info).toBe('v5');
      expect(names(r)).toEqual(['listener-1-v5']);
    }
    await sleep(120);
    for (const s of streams) expect(s.got).toEqual([]);
    expect(src.calls - before).toBe(3); // one view computation per client
  });

  it('forgets 200 clients that cancel, half-close or drop the socket', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { server, port, sotw, client } = await start(src);
    const channels = [client(), client(), client(), client()];
    const streams: Stream<DiscoveryRequest, DiscoveryResponse>[] = [];
    for (let i = 0; i < 180; i++) {
      const s = sotw(channels[i % channels.length]);
      s.call.on('error', () => {});
      s.send({ node: node(`many-${i}`, i % 2 ? 'envoy' : 'proxyless'), type_url: LDS });
      streams.push(s);
    }
    // 20 raw HTTP/2 sessions whose sockets are destroyed mid-stream.
    const ads = loadAds()['StreamAggregatedResources']!;
    const sessions: http2.ClientHttp2Session[] = [];
    for (let i = 0; i < 20; i++) {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on('error', () => {});
      const req = session.request({
        ':method': 'POST',
        ':path': ads.path,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      req.on('error', () => {});
      req.on('data', () => {});
      const payload = ads.requestSerialize({ node: { id: `raw-${i}` }, type_url: LDS });
      const frame = Buffer.alloc(5 + payload.length);
      frame.writeUInt32BE(payload.length, 1);
      payload.copy(frame, 5);
      req.write(frame);
      sessions.push(session);
    }
    await until(() => server.syncz().clients.length === 200);
    expect(server.clientCount).toBe(200);
    for (const s of streams) await s.next();
    streams.forEach((s, i) => (i % 2 ? s.call.cancel() : s.call.end()));
    for (const s of sessions) s.destroy();
    await until(() => server.syncz().clients.length === 0);
    expect(server.clientCount).toBe(0);
    // push() with nobody connected is a no-op.
    server.push();
    await sleep(20);
  });

  it('close() ends open streams and shuts the server down', async () => {
    const src = new FakeSource();
    src.setAll('v1', BASE);
    const { server, sotw } = await start(src);
    const s = sotw();
    s.send({ node: node('closing'), type_url: LDS });
    await s.next();
    const ended = new Promise<grpc.StatusObject>((r) => s.call.on('status', r));
    const t0 = Date.now();
    await server.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    expect((await ended).code).toBe(grpc.status.OK);
    expect(server.syncz().clients).toEqual([]);
  });
});
