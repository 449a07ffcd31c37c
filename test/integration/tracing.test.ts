// Distributed tracing through a running gateway, as Istio's gateway (Envoy) does it: the trace
// context a client sends (W3C, B3 multi, B3 single) is continued, the gateway's span is its child
// and each upstream attempt a child span whose id the upstream receives as its parent, in the
// formats the client used (W3C when none); on every engine (uWS, the strict node:http engine,
// node:http2, gRPC, WebSocket handshakes), for retries and mirrors. Sampling as Istio decides it
// (Telemetry randomSamplingPercentage, the incoming decision, x-client-trace-id, a trusted
// x-envoy-force-trace), spans exported to Zipkin, OTLP/HTTP and OTLP/gRPC collectors chosen by
// Telemetry providers; a dead collector costs counted dropped spans.
import * as grpc from '@grpc/grpc-js';
import { connect as h2connect } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { rawService } from '../helpers/grpc.js';
import { freePorts, http, waitFor } from '../helpers/net.js';
import { startOtlpGrpcCollector, startOtlpHttpCollector, startZipkinCollector, type Collector, type ReceivedSpan } from '../helpers/trace-collectors.js';
import { startEcho, type Echo, type EchoBody } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const T = '4bf92f3577b34da6a3ce929d0e0e4736';
const S = '00f067aa0ba902b7';
const HOST = 'trace.test';
const APP = 'app.default.svc.cluster.local';
const ROUTER_APP = `router outbound|9080|v1|${APP} egress`;

let gw: GatewayProcess;
let app: Echo;
let shadow: Echo;
let zipkin: Collector;
let otlpHttp: Collector;
let otlpGrpc: Collector;
let wss: WebSocketServer;
const wsSeen: IncomingHttpHeaders[] = [];
let grpcServer: grpc.Server;
const ports = { uws: 0, strict: 0, h2: 0, grpc: 0 };
let rev = 0;

const SERVICE = rawService({ Unary: '/trace.Echo/Unary' });
const GrpcClient = grpc.makeGenericClientConstructor(SERVICE, 'Echo');

function meshConfigMap(): string {
  const mesh = `extensionProviders:
- name: zipkin
  zipkin: {service: 127.0.0.1, port: ${zipkin.port}}
- name: otel-http
  opentelemetry: {service: 127.0.0.1, port: ${otlpHttp.port}, http: {path: /v1/traces}}
- name: otel-grpc
  opentelemetry: {service: 127.0.0.1, port: ${otlpGrpc.port}}
- name: dead
  zipkin: {service: 127.0.0.1, port: 1}
defaultProviders:
  tracing: [zipkin]
defaultConfig:
  tracing: {sampling: 100}`;
  return `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
${mesh.split('\n').map((l) => `    ${l}`).join('\n')}
`;
}

/**
 * The root namespace's Telemetry: one tracing entry, applied once /config_dump shows its revision
 * tag (`off`: tracing is off with it, so once the previous revision's tag is gone).
 */
async function setTracing(entry: string, off = false): Promise<void> {
  rev++;
  gw.writeFile('telemetry.yaml', `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - ${entry}
    customTags:
      team: {literal: {value: edge}}
      batch: {header: {name: x-batch, defaultValue: none}}
      rev: {literal: {value: r${rev}}}
`);
  await waitFor(async () => ((await gw.admin('/config_dump')).text.includes(`"r${off ? rev - 1 : rev}"`) !== off ? true : undefined), 5000);
}

const annotated = (name: string, port: number, protocol: string, annotations: Record<string, string> = {}): Record<string, unknown> => ({
  ...gateway(name, port),
  metadata: { name, namespace: 'default', annotations },
  spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: port, name: `p-${port}`, protocol }, hosts: ['*'] }] },
});

beforeAll(async () => {
  [zipkin, otlpHttp, otlpGrpc] = await Promise.all([startZipkinCollector(), startOtlpHttpCollector(), startOtlpGrpcCollector()]);
  app = await startEcho('app');
  shadow = await startEcho('shadow');
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  wss.on('connection', (ws, req) => {
    wsSeen.push(req.headers);
    ws.on('message', (d) => ws.send(d));
  });
  grpcServer = new grpc.Server();
  grpcServer.addService(SERVICE, {
    Unary(call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) {
      // Answers with the trace headers it received.
      const md = call.metadata.getMap();
      cb(null, Buffer.from(JSON.stringify({ traceparent: md['traceparent'], b3: md['b3'] })));
    },
  });
  const grpcPort = await new Promise<number>((res, rej) => grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  [ports.uws, ports.strict, ports.h2, ports.grpc] = (await freePorts(4)) as [number, number, number, number];
  const grpcSvc = [
    { apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: { name: 'rpc', namespace: 'default' }, spec: { hosts: ['rpc.default.svc.cluster.local'], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 50051, name: 'grpc', protocol: 'GRPC' }], endpoints: [{ address: '127.0.0.1', ports: { grpc: grpcPort } }] } },
  ];
  const wsSvc = [
    { apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: { name: 'ws', namespace: 'default' }, spec: { hosts: ['ws.default.svc.cluster.local'], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: '127.0.0.1', ports: { http: (wss.address() as AddressInfo).port } }] } },
  ];
  const gws = ['gw', 'gw-strict', 'gw-h2', 'gw-grpc'];
  gw = await startGateway({
    files: {
      'config.yaml': yamlDocs(
        annotated('gw', ports.uws, 'HTTP'),
        annotated('gw-strict', ports.strict, 'HTTP', { 'gatehouse.io/http1-engine': 'strict' }),
        annotated('gw-h2', ports.h2, 'HTTP2'),
        annotated('gw-grpc', ports.grpc, 'GRPC'),
        ...service('app', { v1: app.port }),
        ...service('shadow', { v1: shadow.port }),
        ...grpcSvc,
        ...wsSvc,
        virtualService('trace', [HOST], [
          { name: 'retried', match: [{ uri: { prefix: '/retried' } }], retries: { attempts: 2, retryOn: '5xx' }, route: [dest('app', 'v1')] },
          { name: 'mirrored', match: [{ uri: { prefix: '/mirrored' } }], mirror: { host: 'shadow', subset: 'v1' }, route: [dest('app', 'v1')] },
          { name: 'ws', match: [{ uri: { prefix: '/ws' } }], route: [{ destination: { host: 'ws.default.svc.cluster.local', port: { number: 80 } } }] },
          { name: 'rpc', match: [{ uri: { prefix: '/trace.Echo/' } }], route: [{ destination: { host: 'rpc.default.svc.cluster.local', port: { number: 50051 } } }] },
          { name: 'app', route: [dest('app', 'v1')] },
        ], { gateways: gws }),
      ),
      'mesh.yaml': meshConfigMap(),
    },
    args: ['--labels', 'istio=ingressgateway,app=edge-gw'],
  });
  await setTracing('randomSamplingPercentage: 100');
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([app?.close(), shadow?.close(), zipkin?.close(), otlpHttp?.close(), otlpGrpc?.close()]);
  for (const c of wss?.clients ?? []) c.terminate();
  await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()));
  grpcServer?.forceShutdown();
});

/** One request on an HTTP/1.1 port; the echo's view of it. */
async function get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; echo: EchoBody }> {
  const r = await http(port, path, { headers: { host: HOST, ...headers } });
  return { status: r.status, echo: r.json as EchoBody };
}

async function getH2(path: string, headers: Record<string, string> = {}): Promise<{ status: number; echo: EchoBody }> {
  const s = h2connect(`http://127.0.0.1:${ports.h2}`);
  try {
    return await new Promise((resolve, reject) => {
      const req = s.request({ ':path': path, ':authority': HOST, ...headers });
      let status = 0;
      const chunks: Buffer[] = [];
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve({ status, echo: JSON.parse(Buffer.concat(chunks).toString()) as EchoBody }));
      req.on('error', reject);
      req.end();
    });
  } finally {
    s.close();
  }
}

/** The spans of one trace at a collector, once `n` of them arrived. */
async function traceSpans(c: Collector, traceId: string, n: number): Promise<ReceivedSpan[]> {
  return waitFor(() => {
    const got = c.spans.filter((s) => s.traceId === traceId);
    return got.length >= n ? got : undefined;
  }, 8000);
}

const header = (e: EchoBody, name: string): string => String(e.headers[name] ?? '');
const parseTp = (tp: string): { traceId: string; parentId: string; flags: string } => {
  const [, traceId, parentId, flags] = tp.split('-') as [string, string, string, string];
  return { traceId, parentId, flags };
};

describe('trace context through every engine', () => {
  const engines: Array<[string, (path: string, h: Record<string, string>) => Promise<{ status: number; echo: EchoBody }>]> = [
    ['uWS', (p, h) => get(ports.uws, p, h)],
    ['strict node:http', (p, h) => get(ports.strict, p, h)],
    ['node:http2', (p, h) => getH2(p, h)],
  ];
  for (const [engine, send] of engines) {
    it(`${engine}: the gateway's span is the child of the client's, the upstream's parent is the gateway's upstream span (W3C)`, async () => {
      const traceId = T.slice(0, 24) + engine.length.toString(16).padStart(8, '0');
      const { status, echo } = await send('/w3c', { traceparent: `00-${traceId}-${S}-01`, tracestate: 'vendor=1', 'x-request-id': `rid-${engine}` });
      expect(status).toBe(200);
      const up = parseTp(header(echo, 'traceparent'));
      expect(up.traceId).toBe(traceId);
      expect(up.flags).toBe('01');
      expect(up.parentId).not.toBe(S);
      expect(header(echo, 'tracestate')).toBe('vendor=1');
      expect(header(echo, 'x-request-id')).toBe(`rid-${engine}`);
      const spans = await traceSpans(zipkin, traceId, 2);
      const own = spans.find((s) => !s.name.startsWith('router '))!;
      const upstream = spans.find((s) => s.name === ROUTER_APP)!;
      expect(own).toMatchObject({ parentId: S, name: `${APP}:9080/*`, kind: 'CLIENT', serviceName: 'edge-gw.istio-system' });
      expect(upstream).toMatchObject({ parentId: own.spanId, spanId: up.parentId, kind: 'CLIENT' });
      expect(own.tags).toMatchObject({
        'http.method': 'GET',
        'http.url': `http://${HOST}/w3c`,
        'http.status_code': '200',
        upstream_cluster: `outbound|9080|v1|${APP}`,
        response_flags: '-',
        'guid:x-request-id': `rid-${engine}`,
        component: 'proxy',
        'peer.address': '127.0.0.1',
        request_size: '0',
        'istio.canonical_service': 'edge-gw',
        'istio.mesh_id': 'cluster.local',
        'istio.namespace': 'istio-system',
        team: 'edge',
        batch: 'none',
        'http.protocol': engine === 'node:http2' ? 'HTTP/2' : 'HTTP/1.1',
      });
      expect(Number(own.tags.response_size)).toBeGreaterThan(0);
      expect(own.tags.node_id).toMatch(/^router~/);
      expect(upstream.tags).toMatchObject({ 'http.status_code': '200', upstream_cluster: `outbound|9080|v1|${APP}`, 'peer.address': `127.0.0.1:${app.port}` });
    });

    it(`${engine}: B3 multi in, B3 multi out; B3 single in, B3 single out; nothing in, a new W3C trace`, async () => {
      const T = `${'b3'.repeat(12)}${engine.length.toString(16).padStart(8, '0')}`;
      const multi = (await send('/b3', { 'x-b3-traceid': T, 'x-b3-spanid': S, 'x-b3-sampled': '1' })).echo;
      expect(header(multi, 'x-b3-traceid')).toBe(T);
      expect(header(multi, 'x-b3-sampled')).toBe('1');
      const mSpan = header(multi, 'x-b3-spanid');
      expect(mSpan).toMatch(/^[0-9a-f]{16}$/);
      expect(mSpan).not.toBe(S);
      expect(header(multi, 'traceparent')).toBe('');
      const gatewaySpan = header(multi, 'x-b3-parentspanid');
      const spans = await traceSpans(zipkin, T, 2);
      expect(spans.find((s) => s.spanId === gatewaySpan)).toMatchObject({ parentId: S });
      expect(spans.find((s) => s.spanId === mSpan)).toMatchObject({ parentId: gatewaySpan });

      const single = (await send('/b3s', { b3: `${T.slice(16)}-${S}-1` })).echo;
      const [t, sp, sampled, parent] = header(single, 'b3').split('-');
      expect(t).toBe(T.slice(16));
      expect(sp).not.toBe(S);
      expect(sampled).toBe('1');
      expect(parent).toMatch(/^[0-9a-f]{16}$/);
      expect(header(single, 'x-b3-traceid')).toBe('');

      const none = (await send('/none', {})).echo;
      const tp = parseTp(header(none, 'traceparent'));
      expect(tp.traceId).toMatch(/^[0-9a-f]{32}$/);
      const fresh = await traceSpans(zipkin, tp.traceId, 2);
      expect(fresh.find((s) => !s.name.startsWith('router '))).toMatchObject({ parentId: '' });
      expect(fresh.find((s) => s.spanId === tp.parentId)?.name).toBe(ROUTER_APP);
    });
  }

  it('gRPC (node:http2): the upstream call carries the gateway span as parent; the spans arrive', async () => {
    const client = new GrpcClient(`127.0.0.1:${ports.grpc}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': HOST }) as InstanceType<typeof GrpcClient> & Record<string, (...a: unknown[]) => unknown>;
    try {
      const md = new grpc.Metadata();
      const traceId = `${T.slice(0, 28)}9999`;
      md.set('traceparent', `00-${traceId}-${S}-01`);
      const body = await new Promise<Buffer>((resolve, reject) => client.Unary!(Buffer.from('x'), md, (e: Error | null, v: Buffer) => (e ? reject(e) : resolve(v))));
      const seen = JSON.parse(body.toString()) as { traceparent: string };
      const up = parseTp(String(seen.traceparent));
      expect(up.traceId).toBe(traceId);
      const spans = await traceSpans(zipkin, traceId, 2);
      const own = spans.find((s) => !s.name.startsWith('router '))!;
      expect(own).toMatchObject({ parentId: S, name: 'rpc.default.svc.cluster.local:50051/trace.Echo/*' });
      expect(own.tags['http.protocol']).toBe('HTTP/2');
      expect(spans.find((s) => s.spanId === up.parentId)).toMatchObject({ parentId: own.spanId, name: 'router outbound|50051||rpc.default.svc.cluster.local egress' });
    } finally {
      client.close();
    }
  });

  it('WebSocket handshake: the upstream handshake carries the context; the handshake is traced', async () => {
    const traceId = `${T.slice(0, 28)}7777`;
    const ws = new WebSocket(`ws://127.0.0.1:${ports.uws}/ws`, { headers: { host: HOST, traceparent: `00-${traceId}-${S}-01` } });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.close();
    const seen = wsSeen.find((h) => String(h.traceparent ?? '').includes(traceId))!;
    const up = parseTp(String(seen.traceparent));
    const spans = await traceSpans(zipkin, traceId, 2);
    const own = spans.find((s) => !s.name.startsWith('router '))!;
    expect(own).toMatchObject({ parentId: S });
    expect(own.tags['http.status_code']).toBe('101');
    expect(spans.find((s) => s.spanId === up.parentId)).toMatchObject({ parentId: own.spanId });
  });

  it('retries: one upstream span per attempt, each attempt sent with its own span as parent', async () => {
    const traceId = `${T.slice(0, 28)}5555`;
    const before = app.requests.length;
    const { status } = await get(ports.uws, '/retried', { traceparent: `00-${traceId}-${S}-01`, 'x-test-status': '503' });
    expect(status).toBe(503);
    const attempts = app.requests.slice(before).map((r) => parseTp(String(r.headers.traceparent)));
    expect(attempts).toHaveLength(3);
    expect(new Set(attempts.map((a) => a.parentId)).size).toBe(3);
    const spans = await traceSpans(zipkin, traceId, 4);
    const own = spans.find((s) => !s.name.startsWith('router '))!;
    expect(own.tags).toMatchObject({ 'http.status_code': '503', error: 'true' });
    const ups = spans.filter((s) => s.name === ROUTER_APP);
    expect(ups.map((s) => s.spanId).sort()).toEqual(attempts.map((a) => a.parentId).sort());
    for (const u of ups) expect(u).toMatchObject({ parentId: own.spanId });
  });

  it('mirrors: the shadow request carries its own span (async ... egress), same trace', async () => {
    const traceId = `${T.slice(0, 28)}3333`;
    await get(ports.uws, '/mirrored', { traceparent: `00-${traceId}-${S}-01` });
    const shadowReq = await waitFor(() => shadow.requests.find((r) => String(r.headers.traceparent ?? '').includes(traceId)));
    const mirrorParent = parseTp(String(shadowReq.headers.traceparent)).parentId;
    const spans = await traceSpans(zipkin, traceId, 3);
    const own = spans.find((s) => !s.name.startsWith('router ') && !s.name.startsWith('async '))!;
    expect(spans.find((s) => s.spanId === mirrorParent)).toMatchObject({ name: `async outbound|9080|v1|shadow.default.svc.cluster.local egress`, parentId: own.spanId });
  });
});

describe('sampling as Istio decides it', () => {
  const batch = async (name: string, n: number, headers: Record<string, string> = {}, concurrency = 8): Promise<void> => {
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < n) {
          next++;
          const r = await http(ports.uws, '/s', { headers: { host: HOST, 'x-batch': name, ...headers } });
          expect(r.status).toBe(200);
        }
      }),
    );
  };
  const ownSpans = (name: string): ReceivedSpan[] => zipkin.spans.filter((s) => s.tags.batch === name && !s.name.startsWith('router '));
  /** Flushes the queue behind a batch: a forced request's span arrives after every span queued before it. */
  const barrier = async (name: string): Promise<void> => {
    await http(ports.uws, '/s', { headers: { host: HOST, 'x-batch': `${name}-barrier`, 'x-client-trace-id': 'barrier' } });
    await waitFor(() => (ownSpans(`${name}-barrier`).length > 0 ? true : undefined), 8000);
  };

  it('0%: none of 200 requests is traced, though each carries an unsampled context upstream', async () => {
    await setTracing('randomSamplingPercentage: 0');
    const r = await get(ports.uws, '/zero', {});
    expect(parseTp(header(r.echo, 'traceparent')).flags).toBe('00');
    await batch('zero', 200);
    await barrier('zero');
    expect(ownSpans('zero')).toHaveLength(0);
  });

  it('0%: x-client-trace-id forces a trace; a sampled incoming context is respected; x-envoy-force-trace only from a trusted internal hop', async () => {
    await batch('client', 3, { 'x-client-trace-id': 'abc' }, 1);
    await batch('incoming', 2, { traceparent: `00-${T.slice(0, 28)}1212-${S}-01` }, 1);
    // From 127.0.0.1 without an x-forwarded-for of its own: an internal request (Envoy's default).
    await batch('forced-internal', 2, { 'x-envoy-force-trace': 'true' }, 1);
    // Through an outside proxy (the client's address is public): never trusted.
    await batch('forced-outside', 2, { 'x-envoy-force-trace': 'true', 'x-forwarded-for': '203.0.113.9' }, 1);
    await barrier('forced');
    expect(ownSpans('client')).toHaveLength(3);
    expect(ownSpans('client')[0]!.tags['guid:x-client-trace-id']).toBe('abc');
    expect(ownSpans('incoming')).toHaveLength(2);
    expect(ownSpans('forced-internal')).toHaveLength(2);
    expect(ownSpans('forced-outside')).toHaveLength(0);
  });

  it('100%: all of 200 requests are traced; an unsampled incoming context is respected', async () => {
    await setTracing('randomSamplingPercentage: 100');
    await batch('all', 200);
    await batch('declined', 5, { traceparent: `00-${T.slice(0, 28)}4545-${S}-00` }, 1);
    await barrier('all');
    await waitFor(() => (ownSpans('all').length >= 200 ? true : undefined), 8000);
    expect(new Set(ownSpans('all').map((s) => s.traceId)).size).toBe(200);
    expect(ownSpans('declined')).toHaveLength(0);
  });

  it('50%: of 1000 requests, between 400 and 600 are traced (binomial: mean 500, sd 15.8)', async () => {
    await setTracing('randomSamplingPercentage: 50');
    await batch('half', 1000);
    await barrier('half');
    const n = ownSpans('half').length;
    expect(n).toBeGreaterThan(400);
    expect(n).toBeLessThan(600);
  });
});

describe('providers and reporting', () => {
  it('Telemetry providers choose the collector: OTLP over HTTP, then OTLP over gRPC', async () => {
    await setTracing('providers: [{name: otel-http}]\n    randomSamplingPercentage: 100');
    const a = `${T.slice(0, 28)}aaa1`;
    await get(ports.uws, '/otlp', { traceparent: `00-${a}-${S}-01` });
    const httpSpans = await traceSpans(otlpHttp, a, 2);
    expect(httpSpans.find((s) => s.parentId === S)).toMatchObject({ kind: 'CLIENT', serviceName: 'edge-gw.istio-system', name: `${APP}:9080/*` });
    expect(httpSpans.find((s) => s.parentId === S)!.tags).toMatchObject({ 'http.status_code': '200', 'http.method': 'GET' });

    await setTracing('providers: [{name: otel-grpc}]\n    randomSamplingPercentage: 100');
    const b = `${T.slice(0, 28)}bbb2`;
    await get(ports.uws, '/otlp', { traceparent: `00-${b}-${S}-01` });
    const grpcSpans = await traceSpans(otlpGrpc, b, 2);
    expect(grpcSpans.find((s) => s.parentId === S)?.tags['guid:x-request-id']).toMatch(/.+/);
    expect(zipkin.spans.some((s) => s.traceId === a || s.traceId === b)).toBe(false);
  });

  it('disableSpanReporting: nothing is exported', async () => {
    await setTracing('disableSpanReporting: true\n    randomSamplingPercentage: 100', true);
    const c = `${T.slice(0, 28)}ccc3`;
    await get(ports.uws, '/quiet', { traceparent: `00-${c}-${S}-01` });
    await setTracing('randomSamplingPercentage: 100');
    await barrier();
    expect(zipkin.spans.some((s) => s.traceId === c)).toBe(false);

    async function barrier(): Promise<void> {
      const d = `${T.slice(0, 28)}ddd4`;
      await get(ports.uws, '/after', { traceparent: `00-${d}-${S}-01` });
      await traceSpans(zipkin, d, 2);
    }
  });

  it('a dead collector: requests are served, the spans are dropped and counted', async () => {
    await setTracing('providers: [{name: dead}]\n    randomSamplingPercentage: 100');
    for (let i = 0; i < 5; i++) expect((await get(ports.uws, '/dead-collector')).status).toBe(200);
    const dropped = await waitFor(async () => {
      const text = (await gw.admin('/stats/prometheus')).text;
      const m = /gatehouse_tracing_spans_dropped_total\{provider="dead",reason="export_failed"\} (\d+)/.exec(text);
      return m && Number(m[1]) >= 10 ? Number(m[1]) : undefined;
    }, 8000);
    expect(dropped).toBeGreaterThanOrEqual(10);
    await setTracing('randomSamplingPercentage: 100');
  });
});
