// L4 at the gateway, as Istio's gateway serves it: TCP servers with VirtualService tcp routes
// (Envoy tcp_proxy: weighted split, bytes both ways with backpressure, half-close, connect
// failure closes the client, BlackHole without a route), TLS PASSTHROUGH routed by the SNI of the
// ClientHello to upstreams that terminate TLS themselves, AUTO_PASSTHROUGH by Istio's
// `outbound_.<port>_.<subset>_.<host>` SNI, and the istio_tcp_* metrics. Real servers on 127.0.0.1.
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePort, freePorts, waitFor } from '../helpers/net.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { fqdn, yamlDocs, type Obj } from '../helpers/yaml.js';

const API = 'networking.istio.io/v1';

/** A TCP upstream: greets with `<name>\n`, echoes every byte, answers the client's FIN with `EOF <n>` and its own FIN. */
interface TcpEcho {
  name: string;
  port: number;
  server: Server;
  connections: number;
}
async function startTcpEcho(name: string): Promise<TcpEcho> {
  const e: TcpEcho = { name, port: 0, server: createServer({ allowHalfOpen: true }), connections: 0 };
  e.server.on('connection', (s: Socket) => {
    e.connections++;
    let n = 0;
    s.on('error', () => undefined);
    s.write(`${name}\n`);
    s.on('data', (d: Buffer) => {
      n += d.length;
      // Echo with backpressure: a slow reader on the far side must stall us, not grow memory.
      if (!s.write(d)) s.pause();
    });
    s.on('drain', () => s.resume());
    s.on('end', () => s.end(`EOF ${n}`));
  });
  await new Promise<void>((r) => e.server.listen(0, '127.0.0.1', () => r()));
  e.port = (e.server.address() as { port: number }).port;
  return e;
}

interface TlsEcho {
  name: string;
  port: number;
  server: Server;
}
async function startTlsEcho(name: string, cert: CertFiles): Promise<TlsEcho> {
  const server = createTlsServer({ cert: cert.certPem, key: cert.keyPem }, (s) => {
    s.on('error', () => undefined);
    s.write(`${name} sni=${(s as TLSSocket & { servername?: string }).servername ?? ''}\n`);
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { name, port: (server.address() as { port: number }).port, server };
}

/** Connects through the gateway, sends `data`, half-closes, and collects everything until the server closes. */
function tcpRoundTrip(port: number, data: Buffer | string, opts: { halfClose?: boolean; timeoutMs?: number } = {}): Promise<{ data: Buffer; closed: boolean; error?: string }> {
  return new Promise((resolve) => {
    const s = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (closed: boolean, error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      s.destroy();
      resolve({ data: Buffer.concat(chunks), closed, ...(error ? { error } : {}) });
    };
    const t = setTimeout(() => done(false), opts.timeoutMs ?? 5000);
    s.on('connect', () => {
      s.write(data);
      if (opts.halfClose !== false) s.end();
    });
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => done(true));
    s.on('close', () => done(true));
    s.on('error', (e) => done(true, e.message));
  });
}

let ca: TestCa;
let certs: Record<'a' | 'b', CertFiles>;
let v1: TcpEcho;
let v2: TcpEcho;
let tlsA: TlsEcho;
let tlsB: TlsEcho;
let gw: GatewayProcess;
let P: { tcp: number; noRoute: number; dead: number; tls: number; auto: number; deadUpstream: number };

function config(): string {
  const se = (name: string, port: number, protocol: string, extra: Obj): Obj => ({
    apiVersion: API,
    kind: 'ServiceEntry',
    metadata: { name, namespace: 'default' },
    spec: { hosts: [fqdn(name)], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: port, name: 'tcp', protocol }], ...extra },
  });
  const we = (name: string, version: string, port: number): Obj => ({
    apiVersion: API,
    kind: 'WorkloadEntry',
    metadata: { name, namespace: 'default', labels: { app: 'tcpecho', version } },
    spec: { address: '127.0.0.1', ports: { tcp: port } },
  });
  return yamlDocs(
    {
      apiVersion: API,
      kind: 'Gateway',
      metadata: { name: 'gw', namespace: 'default' },
      spec: {
        selector: { istio: 'ingressgateway' },
        servers: [
          { port: { number: P.tcp, name: 'tcp', protocol: 'TCP' }, hosts: ['*'] },
          { port: { number: P.noRoute, name: 'tcp-none', protocol: 'MONGO' }, hosts: ['*'] },
          { port: { number: P.dead, name: 'tcp-dead', protocol: 'TCP' }, hosts: ['*'] },
          { port: { number: P.tls, name: 'tls', protocol: 'TLS' }, hosts: ['*.tls.test'], tls: { mode: 'PASSTHROUGH' } },
          { port: { number: P.auto, name: 'tls-auto', protocol: 'TLS' }, hosts: ['*'], tls: { mode: 'AUTO_PASSTHROUGH' } },
        ],
      },
    },
    se('tcpecho', 7000, 'TCP', { workloadSelector: { labels: { app: 'tcpecho' } } }),
    we('tcpecho-v1', 'v1', v1.port),
    we('tcpecho-v2', 'v2', v2.port),
    { apiVersion: API, kind: 'DestinationRule', metadata: { name: 'tcpecho', namespace: 'default' }, spec: { host: 'tcpecho', subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }] } },
    se('dead', 7001, 'TCP', { endpoints: [{ address: '127.0.0.1', ports: { tcp: P.deadUpstream } }] }),
    se('tlsa', 8443, 'TLS', { endpoints: [{ address: '127.0.0.1', ports: { tcp: tlsA.port } }] }),
    se('tlsb', 8443, 'TLS', { endpoints: [{ address: '127.0.0.1', ports: { tcp: tlsB.port } }] }),
    {
      apiVersion: API,
      kind: 'VirtualService',
      metadata: { name: 'tcp', namespace: 'default' },
      spec: {
        hosts: ['*'],
        gateways: ['gw'],
        tcp: [
          { match: [{ port: P.tcp }], route: [{ destination: { host: 'tcpecho', subset: 'v1', port: { number: 7000 } }, weight: 50 }, { destination: { host: 'tcpecho', subset: 'v2', port: { number: 7000 } }, weight: 50 }] },
          { match: [{ port: P.dead }], route: [{ destination: { host: 'dead', port: { number: 7001 } } }] },
        ],
      },
    },
    {
      apiVersion: API,
      kind: 'VirtualService',
      metadata: { name: 'tls', namespace: 'default' },
      spec: {
        hosts: ['a.tls.test', 'b.tls.test'],
        gateways: ['gw'],
        tls: [
          { match: [{ sniHosts: ['a.tls.test'] }], route: [{ destination: { host: 'tlsa', port: { number: 8443 } } }] },
          { match: [{ sniHosts: ['b.tls.test'], port: P.tls }], route: [{ destination: { host: 'tlsb', port: { number: 8443 } } }] },
        ],
      },
    },
  );
}

beforeAll(async () => {
  ca = createCa('l4');
  certs = { a: ca.issue('a', { cn: 'upstream-a', sans: ['DNS:a.tls.test'] }), b: ca.issue('b', { cn: 'upstream-b', sans: ['DNS:b.tls.test'] }) };
  [v1, v2] = await Promise.all([startTcpEcho('v1'), startTcpEcho('v2')]);
  [tlsA, tlsB] = await Promise.all([startTlsEcho('A', certs.a), startTlsEcho('B', certs.b)]);
  const [tcp, noRoute, dead, tls, auto] = await freePorts(5);
  P = { tcp: tcp!, noRoute: noRoute!, dead: dead!, tls: tls!, auto: auto!, deadUpstream: await freePort() };
  gw = await startGateway({ files: { 'l4.yaml': config() } });
}, 30_000);

afterAll(async () => {
  await gw?.stop();
  for (const s of [v1, v2, tlsA, tlsB]) s?.server.close();
  ca?.remove();
});

async function metrics(): Promise<ReturnType<typeof parsePrometheus>> {
  return parsePrometheus((await gw.admin('/stats/prometheus')).text);
}

describe('TCP servers (tcp_proxy)', () => {
  it('bytes go both ways and the half-close is passed on: the upstream sees our FIN and answers before closing', async () => {
    const r = await tcpRoundTrip(P.tcp, 'hello tcp');
    const text = r.data.toString();
    expect(text).toMatch(/^v[12]\nhello tcpEOF 9$/);
    expect(r.closed).toBe(true);
  });

  it('weighted split 50/50 over two subsets: 100 connections reach both', async () => {
    const before = v1.connections + v2.connections;
    const v1Before = v1.connections;
    const results = await Promise.all(Array.from({ length: 100 }, () => tcpRoundTrip(P.tcp, 'x')));
    expect(results.every((r) => /^v[12]\nxEOF 1$/.test(r.data.toString()))).toBe(true);
    expect(v1.connections + v2.connections - before).toBe(100);
    const toV1 = v1.connections - v1Before;
    expect(toV1).toBeGreaterThan(15);
    expect(toV1).toBeLessThan(85);
  });

  it('1 MiB each way with backpressure (a client that reads slowly still gets every byte)', async () => {
    const big = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const got = await new Promise<Buffer>((resolve, reject) => {
      const s = netConnect({ port: P.tcp, host: '127.0.0.1', allowHalfOpen: true });
      const chunks: Buffer[] = [];
      s.on('connect', () => {
        s.end(big);
      });
      // Read slowly at first so that the gateway has to hold back the upstream.
      s.pause();
      setTimeout(() => s.resume(), 300);
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => resolve(Buffer.concat(chunks)));
      s.on('error', reject);
      setTimeout(() => reject(new Error('timeout')), 10_000).unref();
    });
    const nl = got.indexOf(10);
    const echoed = got.subarray(nl + 1, got.length - `EOF ${big.length}`.length);
    expect(echoed.length).toBe(big.length);
    expect(echoed.equals(big)).toBe(true);
    expect(got.subarray(got.length - `EOF ${big.length}`.length).toString()).toBe(`EOF ${big.length}`);
  });

  it('the client can keep reading after it half-closed (upstream writes after our FIN)', async () => {
    const r = await tcpRoundTrip(P.tcp, Buffer.alloc(0));
    expect(r.data.toString()).toMatch(/^v[12]\nEOF 0$/);
  });

  it('connect failure (UF): the client connection is closed', async () => {
    const r = await tcpRoundTrip(P.dead, 'anyone?', { halfClose: false });
    expect(r.closed).toBe(true);
    expect(r.data.length).toBe(0);
  });

  it('no matching tcp route (BlackHole): the connection is closed at once', async () => {
    const r = await tcpRoundTrip(P.noRoute, 'hi', { halfClose: false });
    expect(r.closed).toBe(true);
    expect(r.data.length).toBe(0);
  });

  it('istio_tcp_* metrics: opened/closed per destination, bytes both ways, UF on connect failure', async () => {
    const labels = { destination_service: fqdn('tcpecho'), request_protocol: 'tcp', response_flags: '-', reporter: 'source' };
    const s = await waitFor(async () => {
      const m = await metrics();
      const opened = sumSamples(findSamples(m, 'istio_tcp_connections_opened_total', labels));
      const closed = sumSamples(findSamples(m, 'istio_tcp_connections_closed_total', labels));
      return opened >= 103 && closed === opened ? m : null;
    }, 5000);
    expect(sumSamples(findSamples(s, 'istio_tcp_received_bytes_total', labels))).toBeGreaterThanOrEqual(1024 * 1024 + 100);
    expect(sumSamples(findSamples(s, 'istio_tcp_sent_bytes_total', labels))).toBeGreaterThanOrEqual(1024 * 1024 + 100);
    const v1s = findSamples(s, 'istio_tcp_connections_opened_total', { ...labels, destination_version: 'v1', destination_workload: 'tcpecho-v1' });
    expect(sumSamples(v1s)).toBeGreaterThan(0);
    expect(v1s[0]!.labels.response_code).toBeUndefined();
    expect(sumSamples(findSamples(s, 'istio_tcp_connections_opened_total', { destination_service: fqdn('dead'), response_flags: 'UF' }))).toBeGreaterThanOrEqual(1);
    expect(sumSamples(findSamples(s, 'istio_tcp_connections_closed_total', { destination_service: fqdn('dead'), response_flags: 'UF' }))).toBeGreaterThanOrEqual(1);
    expect(sumSamples(findSamples(s, 'gatehouse_l4_rejected_connections_total', { listener_port: String(P.noRoute), reason: 'no_route' }))).toBeGreaterThanOrEqual(1);
  });

  it('/listeners shows the TCP and TLS passthrough listeners', async () => {
    const text = (await gw.admin('/listeners')).text;
    expect(text).toContain(`127.0.0.1:${P.tcp}`);
    expect(text).toContain('TLS passthrough');
    expect(text).toContain('TCP');
  });
});

/** A TLS client through the gateway; resolves with the certificate it saw and the first line, or the failure. */
function tlsThrough(port: number, servername: string | undefined): Promise<{ ok: true; cn: string; line: string } | { ok: false; error: string }> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ...(servername !== undefined ? { servername } : {}), ca: ca.certPem, checkServerIdentity: () => undefined });
    let settled = false;
    const done = (r: { ok: true; cn: string; line: string } | { ok: false; error: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      s.destroy();
      resolve(r);
    };
    const t = setTimeout(() => done({ ok: false, error: 'timeout' }), 5000);
    let buf = '';
    s.on('secureConnect', () => s.write('ping'));
    s.on('data', (d) => {
      buf += d.toString();
      if (buf.endsWith('ping')) done({ ok: true, cn: String(s.getPeerCertificate().subject?.CN), line: buf.slice(0, buf.indexOf('\n')) });
    });
    s.on('error', (e) => done({ ok: false, error: e.message }));
    s.on('close', () => done({ ok: false, error: 'closed' }));
  });
}

describe('TLS PASSTHROUGH and AUTO_PASSTHROUGH', () => {
  it('routes by SNI; the client sees the upstream certificate (TLS is not terminated)', async () => {
    const a = await tlsThrough(P.tls, 'a.tls.test');
    expect(a).toEqual({ ok: true, cn: 'upstream-a', line: 'A sni=a.tls.test' });
    const b = await tlsThrough(P.tls, 'b.tls.test');
    expect(b).toEqual({ ok: true, cn: 'upstream-b', line: 'B sni=b.tls.test' });
  });

  it('an SNI no route names, and a ClientHello without SNI, are closed (and counted)', async () => {
    const unknown = await tlsThrough(P.tls, 'c.tls.test');
    expect(unknown.ok).toBe(false);
    const none = await tlsThrough(P.tls, undefined);
    expect(none.ok).toBe(false);
    const garbage = await tcpRoundTrip(P.tls, 'GET / HTTP/1.1\r\nHost: a.tls.test\r\n\r\n', { halfClose: false });
    expect(garbage.closed).toBe(true);
    expect(garbage.data.length).toBe(0);
    const m = await waitFor(async () => {
      const x = await metrics();
      return sumSamples(findSamples(x, 'gatehouse_l4_rejected_connections_total', { listener_port: String(P.tls) })) >= 3 ? x : null;
    });
    for (const reason of ['unknown_sni', 'no_sni', 'not_tls']) expect(sumSamples(findSamples(m, 'gatehouse_l4_rejected_connections_total', { listener_port: String(P.tls), reason })), reason).toBeGreaterThanOrEqual(1);
    expect(gw.logs()).toContain('no filter chain for SNI \\"c.tls.test\\"');
  });

  it('AUTO_PASSTHROUGH: outbound_.<port>_.<subset>_.<host> reaches that cluster', async () => {
    const a = await tlsThrough(P.auto, `outbound_.8443_._.${fqdn('tlsa')}`);
    expect(a).toMatchObject({ ok: true, cn: 'upstream-a' });
    const b = await tlsThrough(P.auto, `outbound_.8443_._.${fqdn('tlsb')}`);
    expect(b).toMatchObject({ ok: true, cn: 'upstream-b' });
    expect((await tlsThrough(P.auto, 'a.tls.test')).ok).toBe(false);
  });

  it('TLS passthrough connections are counted as istio_tcp_* for their destination', async () => {
    const m = await metrics();
    expect(sumSamples(findSamples(m, 'istio_tcp_connections_opened_total', { destination_service: fqdn('tlsa'), response_flags: '-' }))).toBeGreaterThanOrEqual(2);
    expect(sumSamples(findSamples(m, 'istio_tcp_received_bytes_total', { destination_service: fqdn('tlsb') }))).toBeGreaterThan(100);
  });
});
