// gRPC through a GRPC Gateway server, with real @grpc/grpc-js clients and servers: routing by
// VirtualService (the classic header match between two versions), unary, server-streaming and
// bidi-streaming calls with metadata and trailers intact, status errors passed through, and the
// gateway's own failures answered as Envoy answers gRPC (trailers-only, grpc-status).
import * as grpc from '@grpc/grpc-js';
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { connect as tlsConnect } from 'node:tls';
import { rawService } from '../helpers/grpc.js';
import { freePorts, sleep, waitFor } from '../helpers/net.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { dest, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

const HOST = 'grpc.test';
// A service without protos: messages are raw bytes.
const SERVICE = rawService({ Unary: '/echo.Echo/Unary', Slow: '/echo.Echo/Slow', Count: ['/echo.Echo/Count', false, true], Chat: ['/echo.Echo/Chat', true, true] });
const Client = grpc.makeGenericClientConstructor(SERVICE, 'Echo');
type EchoClient = InstanceType<typeof Client> & Record<string, (...args: unknown[]) => any>;

interface Backend {
  name: string;
  port: number;
  server: grpc.Server;
  /** Calls whose deadline or cancellation the server saw. */
  cancelled: number;
  /** Calls seen per request text (for the flaky method). */
  seen: Map<string, number>;
}

async function startBackend(name: string): Promise<Backend> {
  const server = new grpc.Server();
  const b: Backend = { name, port: 0, server, cancelled: 0, seen: new Map() };
  const trailing = (): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('x-trailer', `${name}-done`);
    return m;
  };
  server.addService(SERVICE, {
    Unary(call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) {
      const text = call.request.toString();
      b.seen.set(text, (b.seen.get(text) ?? 0) + 1);
      // `flaky-*`: UNAVAILABLE (trailers-only) the first time a text is seen, then OK.
      if (text.startsWith('flaky-') && b.seen.get(text) === 1) return cb({ code: grpc.status.UNAVAILABLE, details: 'warming up' });
      const head = new grpc.Metadata();
      head.set('x-server', name);
      const echoed = call.metadata.get('x-client')[0];
      if (echoed !== undefined) head.set('x-client-echo', String(echoed));
      call.sendMetadata(head);
      if (text === 'notfound') return cb({ code: grpc.status.NOT_FOUND, details: 'no such thing: ünïcode 100%', metadata: trailing() });
      cb(null, Buffer.from(`${name}:${text}`), trailing());
    },
    Slow(call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) {
      const t = setTimeout(() => cb(null, Buffer.from(`${name}:slow`)), Number(call.request.toString()) || 2000);
      call.on('cancelled', () => {
        b.cancelled++;
        clearTimeout(t);
      });
    },
    Count(call: grpc.ServerWritableStream<Buffer, Buffer>) {
      const n = Number(call.request.toString());
      for (let i = 0; i < n; i++) call.write(Buffer.from(`${name}#${i}`));
      call.end(trailing());
    },
    Chat(call: grpc.ServerDuplexStream<Buffer, Buffer>) {
      // Answers first, before the client sends anything: the gateway must not wait for a message.
      call.write(Buffer.from(`${name}:hello`));
      call.on('data', (m: Buffer) => call.write(Buffer.concat([Buffer.from(`${name}:`), m])));
      call.on('end', () => call.end(trailing()));
    },
  });
  b.port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return b;
}

let gw: GatewayProcess;
let port: number;
/** HTTPS SIMPLE servers: one routing to the GRPC port (h2 by ALPN), one annotated HTTP/1.1-only. */
let tlsPort: number;
let h1TlsPort: number;
let ca: TestCa;
let cert: CertFiles;
let v1: Backend;
let v2: Backend;
let client: EchoClient;

function config(deadPort: number): string {
  const se: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'ServiceEntry',
    metadata: { name: 'echo', namespace: 'default' },
    spec: { hosts: ['echo.default.svc.cluster.local'], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 50051, name: 'grpc', protocol: 'GRPC' }], workloadSelector: { labels: { app: 'echo' } } },
  };
  const we = (name: string, version: string, p: number): Obj => ({
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadEntry',
    metadata: { name, namespace: 'default', labels: { app: 'echo', version } },
    spec: { address: '127.0.0.1', ports: { grpc: p }, labels: { app: 'echo', version } },
  });
  const dr: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    metadata: { name: 'echo', namespace: 'default' },
    spec: {
      host: 'echo',
      subsets: [
        { name: 'v1', labels: { version: 'v1' } },
        { name: 'v2', labels: { version: 'v2' } },
        { name: 'down', labels: { version: 'down' } },
      ],
    },
  };
  const gwObj: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name: 'gw', namespace: 'default' },
    spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: port, name: 'grpc', protocol: 'GRPC' }, hosts: ['*'] }] },
  };
  const httpsGateway = (name: string, p: number, annotations: Record<string, string> = {}): Obj => ({
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: 'default', annotations },
    spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: p, name: 'https', protocol: 'HTTPS' }, hosts: [HOST], tls: { mode: 'SIMPLE', serverCertificate: cert.cert, privateKey: cert.key } }] },
  });
  const vs = virtualService('echo', [HOST], [
    { name: 'down', match: [{ headers: { 'x-version': { exact: 'down' } } }], route: [dest('echo', 'down')] },
    { name: 'abort-http', match: [{ headers: { 'x-fault': { exact: 'http' } } }], fault: { abort: { httpStatus: 503, percentage: { value: 100 } } }, route: [dest('echo', 'v1')] },
    { name: 'abort-grpc', match: [{ headers: { 'x-fault': { exact: 'grpc' } } }], fault: { abort: { grpcStatus: 'RESOURCE_EXHAUSTED', percentage: { value: 100 } } }, route: [dest('echo', 'v1')] },
    { name: 'slow', match: [{ uri: { exact: '/echo.Echo/Slow' }, headers: { 'x-timeout': { exact: 'route' } } }], timeout: '300ms', route: [dest('echo', 'v1')] },
    { name: 'v2', match: [{ headers: { 'x-version': { exact: 'v2' } } }], route: [dest('echo', 'v2')] },
    { name: 'no-retry', match: [{ headers: { 'x-retry': { exact: 'off' } } }], retries: { attempts: 0 }, route: [dest('echo', 'v1')] },
    { name: 'default', route: [dest('echo', 'v1')] },
  ], { gateways: ['gw', 'gw-tls', 'gw-h1'] });
  return yamlDocs(gwObj, httpsGateway('gw-tls', tlsPort), httpsGateway('gw-h1', h1TlsPort, { 'gatehouse.io/alpn': 'http/1.1' }), se, we('echo-v1', 'v1', v1.port), we('echo-v2', 'v2', v2.port), we('echo-down', 'down', deadPort), dr, vs);
}

beforeAll(async () => {
  v1 = await startBackend('v1');
  v2 = await startBackend('v2');
  const [p, dead, t, t1] = await freePorts(4);
  port = p!;
  tlsPort = t!;
  h1TlsPort = t1!;
  ca = createCa();
  cert = ca.issue('grpc', { sans: [`DNS:${HOST}`] });
  gw = await startGateway({ files: { 'config.yaml': config(dead!) } });
  client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': HOST }) as EchoClient;
});

afterAll(async () => {
  client?.close();
  await gw?.stop();
  v1?.server.forceShutdown();
  v2?.server.forceShutdown();
  ca?.remove();
});

interface UnaryResult {
  err: grpc.ServiceError | null;
  value: Buffer | undefined;
  headers: grpc.Metadata | undefined;
  status: grpc.StatusObject | undefined;
}

function unary(method: string, body: string, md: Record<string, string> = {}, opts: grpc.CallOptions = {}, c: EchoClient = client): Promise<UnaryResult> {
  return new Promise((resolve) => {
    const m = new grpc.Metadata();
    for (const [k, v] of Object.entries(md)) m.set(k, v);
    const r: UnaryResult = { err: null, value: undefined, headers: undefined, status: undefined };
    const call = c[method]!(Buffer.from(body), m, opts, (err: grpc.ServiceError | null, value?: Buffer) => {
      r.err = err;
      r.value = value;
    });
    call.on('metadata', (h: grpc.Metadata) => (r.headers = h));
    call.on('status', (s: grpc.StatusObject) => {
      r.status = s;
      setImmediate(() => resolve(r));
    });
  });
}

describe('gRPC through a GRPC Gateway server', () => {
  it('routes a unary call by header match to one of two versions, metadata and trailers intact', async () => {
    const a = await unary('Unary', 'hi', { 'x-client': 'c1' });
    expect(a.err).toBeNull();
    expect(a.value?.toString()).toBe('v1:hi');
    expect(a.headers?.get('x-server')).toEqual(['v1']);
    expect(a.headers?.get('x-client-echo')).toEqual(['c1']);
    expect(a.status?.metadata.get('x-trailer')).toEqual(['v1-done']);
    const b = await unary('Unary', 'hi', { 'x-version': 'v2' });
    expect(b.value?.toString()).toBe('v2:hi');
    expect(b.status?.metadata.get('x-trailer')).toEqual(['v2-done']);
  });

  it('passes a status error from the server through intact (code, message, trailing metadata)', async () => {
    const r = await unary('Unary', 'notfound');
    expect(r.err?.code).toBe(grpc.status.NOT_FOUND);
    expect(r.err?.details).toBe('no such thing: ünïcode 100%');
    expect(r.status?.metadata.get('x-trailer')).toEqual(['v1-done']);
  });

  it('streams a server-streaming call', async () => {
    const got: string[] = [];
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = client.Count!(Buffer.from('50'), new grpc.Metadata(), {});
      call.on('data', (m: Buffer) => got.push(m.toString()));
      call.on('status', resolve);
      call.on('error', () => undefined);
    });
    expect(status.code).toBe(grpc.status.OK);
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => `v1#${i}`));
    expect(status.metadata.get('x-trailer')).toEqual(['v1-done']);
  });

  it('streams a bidi call both ways (the server speaks first), with backpressure on large messages', async () => {
    const got: Buffer[] = [];
    const big = Buffer.alloc(256 * 1024, 7);
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const md = new grpc.Metadata();
      md.set('x-version', 'v2');
      const call = client.Chat!(md, {});
      call.on('data', (m: Buffer) => {
        got.push(m);
        // Send the next message only once the previous answer arrived: a real conversation.
        if (got.length === 1) call.write(Buffer.from('one'));
        else if (got.length === 2) call.write(Buffer.from('two'));
        else if (got.length <= 12) call.write(big);
        else call.end();
      });
      call.on('status', resolve);
      call.on('error', () => undefined);
    });
    expect(status.code).toBe(grpc.status.OK);
    expect(got[0]!.toString()).toBe('v2:hello');
    expect(got[1]!.toString()).toBe('v2:one');
    expect(got[2]!.toString()).toBe('v2:two');
    expect(got.length).toBe(13);
    for (const m of got.slice(3)) expect(m.length).toBe(big.length + 3);
    expect(status.metadata.get('x-trailer')).toEqual(['v2-done']);
  });

  it("retries UNAVAILABLE under Istio's default retry policy (retryOn ...,unavailable,cancelled), not with attempts: 0", async () => {
    const ok = await unary('Unary', 'flaky-a');
    expect(ok.err).toBeNull();
    expect(ok.value?.toString()).toBe('v1:flaky-a');
    expect(v1.seen.get('flaky-a')).toBe(2);
    const off = await unary('Unary', 'flaky-b', { 'x-retry': 'off' });
    expect(off.err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(off.err?.details).toBe('warming up');
    expect(v1.seen.get('flaky-b')).toBe(1);
  });

  it('answers UNIMPLEMENTED when no route matches (404 NR)', async () => {
    const other = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'unknown.test' }) as EchoClient;
    try {
      const r = await unary('Unary', 'x', {}, {}, other);
      expect(r.err?.code).toBe(grpc.status.UNIMPLEMENTED);
    } finally {
      other.close();
    }
  });

  it('answers UNAVAILABLE when the backend is down (503 UF), with the reason in grpc-message', async () => {
    const r = await unary('Unary', 'x', { 'x-version': 'down' });
    expect(r.err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.err?.details).toMatch(/upstream connect error/);
  });

  it('answers fault aborts as gRPC statuses: httpStatus 503 → UNAVAILABLE, grpcStatus as configured', async () => {
    const h = await unary('Unary', 'x', { 'x-fault': 'http' });
    expect(h.err?.code).toBe(grpc.status.UNAVAILABLE);
    expect(h.err?.details).toBe('fault filter abort');
    const g = await unary('Unary', 'x', { 'x-fault': 'grpc' });
    expect(g.err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  });

  it('answers DEADLINE_EXCEEDED when the route timeout passes (504 UT), and cancels the upstream call', async () => {
    const before = v1.cancelled;
    const started = Date.now();
    const r = await unary('Slow', '2000', { 'x-timeout': 'route' });
    expect(r.err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(r.err?.details).toBe('upstream request timeout');
    expect(Date.now() - started).toBeLessThan(1500);
    await waitFor(() => v1.cancelled > before);
  });

  it('honours grpc-timeout as the route timeout when it is shorter (trailers-only DEADLINE_EXCEEDED from the gateway)', async () => {
    // A raw HTTP/2 client, without a deadline of its own: only the gateway can end the call early.
    const s = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const started = Date.now();
      const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, 4]), Buffer.from('2000')]);
      const res = await new Promise<{ headers: http2.IncomingHttpHeaders; flags: number }>((resolve, reject) => {
        const req = s.request({ ':method': 'POST', ':path': '/echo.Echo/Slow', ':authority': HOST, 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '200m' });
        req.on('response', (headers, flags) => resolve({ headers, flags }));
        req.on('error', reject);
        req.end(frame);
      });
      const elapsed = Date.now() - started;
      expect(res.headers[':status']).toBe(200);
      expect(res.headers['content-type']).toBe('application/grpc');
      expect(res.headers['grpc-status']).toBe('4');
      // Trailers-only: the status is in the only HEADERS frame, which ends the stream.
      expect(res.flags & http2.constants.NGHTTP2_FLAG_END_STREAM).toBeTruthy();
      expect(elapsed).toBeGreaterThanOrEqual(150);
      expect(elapsed).toBeLessThan(1500);
    } finally {
      s.close();
    }
  });

  it('reports request_protocol="grpc" and grpc_response_status in the Istio metrics', async () => {
    await sleep(50);
    const text = (await gw.admin('/stats/prometheus')).text;
    const lines = text.split('\n').filter((l) => l.startsWith('istio_requests_total{') && l.includes('request_protocol="grpc"'));
    expect(lines.some((l) => l.includes('grpc_response_status="0"') && l.includes('response_code="200"') && l.includes('destination_version="v1"'))).toBe(true);
    expect(lines.some((l) => l.includes('grpc_response_status="5"'))).toBe(true);
    expect(lines.some((l) => l.includes('grpc_response_status="14"') && l.includes('response_flags="UF'))).toBe(true);
    expect(lines.some((l) => l.includes('grpc_response_status="12"') && l.includes('response_flags="NR"'))).toBe(true);
    expect(lines.some((l) => l.includes('grpc_response_status="4"') && l.includes('response_flags="UT"'))).toBe(true);
  });
});

function alpnOf(p: number): Promise<string | false> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: p, servername: HOST, ca: ca.certPem, ALPNProtocols: ['h2', 'http/1.1'] }, () => {
      resolve(s.alpnProtocol ?? false);
      s.end();
    });
    s.on('error', reject);
  });
}

describe('gRPC over TLS on an HTTPS Gateway server', () => {
  it('offers h2 by ALPN on a SIMPLE port that routes to a GRPC service, and serves gRPC calls there', async () => {
    expect(await alpnOf(tlsPort)).toBe('h2');
    const c = new Client(`127.0.0.1:${tlsPort}`, grpc.credentials.createSsl(Buffer.from(ca.certPem)), { 'grpc.ssl_target_name_override': HOST, 'grpc.default_authority': HOST }) as EchoClient;
    try {
      const r = await unary('Unary', 'over-tls', { 'x-version': 'v2' }, {}, c);
      expect(r.err).toBeNull();
      expect(r.value?.toString()).toBe('v2:over-tls');
      expect(r.status?.metadata.get('x-trailer')).toEqual(['v2-done']);
      const nf = await unary('Unary', 'notfound', {}, {}, c);
      expect(nf.err?.code).toBe(grpc.status.NOT_FOUND);
    } finally {
      c.close();
    }
  });

  it('offers only HTTP/1.1 when the Gateway says gatehouse.io/alpn: http/1.1 (the uWS engine)', async () => {
    expect(await alpnOf(h1TlsPort)).not.toBe('h2');
    const text = (await gw.admin('/listeners')).text;
    expect(text).toContain(`127.0.0.1:${h1TlsPort}::HTTPS (HTTP/1.1)::https.${h1TlsPort}`);
    expect(text).toContain(`127.0.0.1:${tlsPort}::HTTPS (HTTP/1.1, h2)::https.${tlsPort}`);
  });
});
