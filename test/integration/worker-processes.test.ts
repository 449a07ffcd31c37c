// `--workers 2` as node:cluster processes (the default `--worker-mode`): every listener kind is
// served by both worker processes, not only the uWS ports. HTTPS (node:http2, h2 by default),
// mutual TLS, plaintext HTTP/2 (h2c), the strict HTTP/1.1 engine, TCP and TLS passthrough all run
// on node:net servers, which Node 20 cannot share across worker threads; as processes they share
// the listening socket the primary binds. A worker process that dies is restarted and takes its
// share of every port again; the main process's death ends its workers.
import { readFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePorts, h2Request, http, rawExchange, rawStatus, sleep, waitFor } from '../helpers/net.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { fqdn, service, yamlDocs, type Obj } from '../helpers/yaml.js';

const API = 'networking.istio.io/v1';
const HOST = 'app.test';

interface WorkerRow {
  worker: number;
  pid?: number;
  thread_id?: number;
  state: string;
  requests: number;
  tcp_connections: number;
  listeners: number;
}

let ca: TestCa;
let server: CertFiles;
let client: CertFiles;
let echo: Echo;
let tlsUp: TlsServer;
let tlsUpPort: number;
let gw: GatewayProcess;
let P: { http: number; strict: number; h2c: number; https: number; mtls: number; tcp: number; tls: number };

function config(): string {
  const srv = (number: number, name: string, protocol: string, extra: Obj = {}): Obj => ({ port: { number, name, protocol }, hosts: ['*'], ...extra });
  const gwDoc = (name: string, servers: Obj[], annotations?: Record<string, string>): Obj => ({
    apiVersion: API,
    kind: 'Gateway',
    metadata: { name, namespace: 'default', ...(annotations ? { annotations } : {}) },
    spec: { selector: { istio: 'ingressgateway' }, servers },
  });
  return yamlDocs(
    gwDoc('gw', [
      srv(P.http, 'http', 'HTTP'),
      srv(P.h2c, 'grpc', 'GRPC'),
      srv(P.https, 'https', 'HTTPS', { tls: { mode: 'SIMPLE', serverCertificate: 'server.crt', privateKey: 'server.key' } }),
      srv(P.mtls, 'https-m', 'HTTPS', { tls: { mode: 'MUTUAL', serverCertificate: 'server.crt', privateKey: 'server.key', caCertificates: 'ca.crt' } }),
      srv(P.tcp, 'tcp', 'TCP'),
      { port: { number: P.tls, name: 'tls', protocol: 'TLS' }, hosts: ['up.tls.test'], tls: { mode: 'PASSTHROUGH' } },
    ]),
    gwDoc('gw-strict', [srv(P.strict, 'http-strict', 'HTTP')], { 'gatehouse.io/http1-engine': 'strict' }),
    ...service('app', { v1: echo.port }),
    { apiVersion: API, kind: 'VirtualService', metadata: { name: 'web', namespace: 'default' }, spec: { hosts: ['*'], gateways: ['gw', 'gw-strict'], http: [{ route: [{ destination: { host: fqdn('app'), subset: 'v1' } }] }] } },
    { apiVersion: API, kind: 'ServiceEntry', metadata: { name: 'tcp-up', namespace: 'default' }, spec: { hosts: [fqdn('tcp-up')], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 7000, name: 'tcp', protocol: 'TCP' }], endpoints: [{ address: '127.0.0.1', ports: { tcp: echo.port } }] } },
    { apiVersion: API, kind: 'ServiceEntry', metadata: { name: 'tls-up', namespace: 'default' }, spec: { hosts: ['up.tls.test'], location: 'MESH_EXTERNAL', resolution: 'STATIC', ports: [{ number: 8443, name: 'tls', protocol: 'TLS' }], endpoints: [{ address: '127.0.0.1', ports: { tls: tlsUpPort } }] } },
    { apiVersion: API, kind: 'VirtualService', metadata: { name: 'l4', namespace: 'default' }, spec: { hosts: ['*'], gateways: ['gw'], tcp: [{ match: [{ port: P.tcp }], route: [{ destination: { host: fqdn('tcp-up'), port: { number: 7000 } } }] }] } },
    { apiVersion: API, kind: 'VirtualService', metadata: { name: 'pass', namespace: 'default' }, spec: { hosts: ['up.tls.test'], gateways: ['gw'], tls: [{ match: [{ sniHosts: ['up.tls.test'] }], route: [{ destination: { host: 'up.tls.test', port: { number: 8443 } } }] }] } },
  );
}

const workers = async (): Promise<WorkerRow[]> => (await gw.admin('/workers')).json.workers;

/** One request on a fresh h2 session over TLS (ALPN h2), optionally with a client certificate. */
async function h2Get(port: number, cert?: CertFiles): Promise<{ status: number; alpn: string | false }> {
  const r = await h2Request(port, '/', { headers: { host: HOST }, tls: { ca: ca.certPem, servername: 'server.test', ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}) } });
  return { status: r.status, alpn: r.alpn };
}

/** One request on a fresh plaintext HTTP/2 connection (prior knowledge, as gRPC clients do). */
async function h2cGet(port: number): Promise<number> {
  return (await h2Request(port, '/', { headers: { host: HOST } })).status;
}

/** A TCP round trip through the gateway: an HTTP request to the echo upstream, the status back. */
function tcpGet(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ port, host: '127.0.0.1' }, () => s.write(`GET /tcp HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`));
    let data = '';
    s.on('data', (d) => (data += d.toString()));
    s.on('close', () => resolve(rawStatus(data)));
    s.on('error', reject);
  });
}

/** A TLS passthrough round trip: the upstream terminates TLS and greets with its name. */
function tlsPassthrough(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ port, host: '127.0.0.1', servername: 'up.tls.test', ca: ca.certPem }, () => s.end());
    let data = '';
    s.on('data', (d) => (data += d.toString()));
    s.on('close', () => resolve(data));
    s.on('error', reject);
  });
}

/**
 * Opens fresh connections (8 at a time) with `one` until every worker shows a share of them in
 * `count` (its requests or proxied TCP connections), and checks each one's answer. Bounded: a
 * worker that never takes a connection fails the test.
 */
async function spreadOver(kind: string, one: () => Promise<void>, count: (w: WorkerRow) => number): Promise<number[]> {
  const before = (await workers()).map(count);
  for (let batch = 0; batch < 25; batch++) {
    await Promise.all(Array.from({ length: 8 }, one));
    const shares = (await workers()).map((w, i) => count(w) - (before[i] ?? 0));
    if (shares.every((n) => n > 0)) return shares;
  }
  throw new Error(`${kind}: after 200 connections some worker process took none: ${JSON.stringify((await workers()).map((w, i) => count(w) - (before[i] ?? 0)))}`);
}

beforeAll(async () => {
  ca = createCa('wp');
  server = ca.issue('server', { sans: ['DNS:server.test', 'DNS:up.tls.test', 'IP:127.0.0.1'] });
  client = ca.issue('client', { client: true, sans: ['URI:spiffe://cluster.local/ns/default/sa/client'] });
  echo = await startEcho('v1');
  tlsUp = createTlsServer({ cert: server.certPem, key: server.keyPem }, (s) => {
    s.on('error', () => undefined);
    s.end('passthrough-upstream\n');
  });
  await new Promise<void>((r) => tlsUp.listen(0, '127.0.0.1', () => r()));
  tlsUpPort = (tlsUp.address() as { port: number }).port;
  const [a, b, c, d, e, f, g] = await freePorts(7);
  P = { http: a!, strict: b!, h2c: c!, https: d!, mtls: e!, tcp: f!, tls: g! };
  gw = await startGateway({
    files: { 'config.yaml': config(), 'server.crt': server.certPem, 'server.key': server.keyPem, 'ca.crt': ca.certPem },
    args: ['--workers', '2'],
    readyTimeoutMs: 20_000,
  });
}, 40_000);

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
  tlsUp?.close();
  ca?.remove();
});

describe('--workers 2 (worker processes, the default)', () => {
  it('runs two worker processes, each serving all seven listeners', async () => {
    const rows = await workers();
    expect(rows.map((w) => w.state)).toEqual(['ready', 'ready']);
    const pids = rows.map((w) => w.pid);
    for (const pid of pids) expect(pid).toBeGreaterThan(0);
    expect(new Set([...pids, gw.proc.pid]).size).toBe(3);
    expect(rows.map((w) => w.listeners)).toEqual([7, 7]);
  });

  it('process metrics cover the worker processes: the merged resident memory is the three processes\' sum', async () => {
    const rssOf = (pid: number): number => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
    const pids = [gw.proc.pid!, ...(await workers()).map((w) => w.pid!)];
    const samples = parsePrometheus((await gw.admin('/stats/prometheus')).text);
    const merged = sumSamples(findSamples(samples, 'process_resident_memory_bytes'));
    const sum = pids.reduce((a, p) => a + rssOf(p), 0);
    // Read a moment apart: within 25%. The main process alone is well under half of it.
    expect(merged).toBeGreaterThan(sum * 0.75);
    expect(merged).toBeLessThan(sum * 1.25);
    expect(findSamples(samples, 'process_start_time_seconds')).toHaveLength(1);
  });

  it('plain HTTP/1.1 on uWS: both processes take connections', async () => {
    await spreadOver('uWS', async () => expect((await http(P.http, '/', { headers: { host: HOST } })).status).toBe(200), (w) => w.requests);
  });

  it('HTTPS with h2 (node:http2 over TLS, the default HTTPS engine): both processes take connections', async () => {
    await spreadOver('h2', async () => expect(await h2Get(P.https)).toEqual({ status: 200, alpn: 'h2' }), (w) => w.requests);
  });

  it('mutual TLS: both processes take connections; a client without a certificate is refused', async () => {
    await spreadOver('mTLS', async () => expect((await h2Get(P.mtls, client)).status).toBe(200), (w) => w.requests);
    await expect(h2Get(P.mtls)).rejects.toThrow();
  });

  it('plaintext HTTP/2 (a GRPC port, h2c): both processes take connections', async () => {
    await spreadOver('h2c', async () => expect(await h2cGet(P.h2c)).toBe(200), (w) => w.requests);
  });

  it('the strict HTTP/1.1 engine (node:http): both processes take connections, and it is the strict engine', async () => {
    await spreadOver('strict', async () => expect((await http(P.strict, '/', { headers: { host: HOST } })).status).toBe(200), (w) => w.requests);
    // Whitespace before a colon: the strict engine answers 400 (uWS would leave it unanswered).
    expect(rawStatus((await rawExchange(P.strict, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-A : b\r\n\r\n`, { timeoutMs: 2000 })).data)).toBe(400);
  });

  it('TCP: both processes proxy connections', async () => {
    await spreadOver('TCP', async () => expect(await tcpGet(P.tcp)).toBe(200), (w) => w.tcp_connections);
  });

  it('TLS passthrough: both processes proxy connections by SNI', async () => {
    await spreadOver('TLS passthrough', async () => expect(await tlsPassthrough(P.tls)).toBe('passthrough-upstream\n'), (w) => w.tcp_connections);
  });

  it('a worker process that dies is restarted with the configuration and takes its share of node:net ports again', async () => {
    const [first] = await workers();
    process.kill(first!.pid!, 'SIGKILL');
    // Meanwhile the other process serves every port alone.
    await waitFor(async () => (await workers())[0]!.state !== 'ready', 3000);
    expect(await h2Get(P.https)).toEqual({ status: 200, alpn: 'h2' });
    expect(await tcpGet(P.tcp)).toBe(200);
    const rows = await waitFor(async () => {
      const r = await workers();
      return r.every((w) => w.state === 'ready') ? r : null;
    }, 10_000);
    expect(rows[0]!.pid).not.toBe(first!.pid);
    expect((rows[0] as WorkerRow & { restarts: number }).restarts).toBe(1);
    await spreadOver('h2 after the restart', async () => expect((await h2Get(P.https)).status).toBe(200), (w) => w.requests);
    await spreadOver('TCP after the restart', async () => expect(await tcpGet(P.tcp)).toBe(200), (w) => w.tcp_connections);
  });

  it('SIGTERM drains both processes: exit 0, and no worker process is left', async () => {
    const pids = (await workers()).map((w) => w.pid!);
    gw.proc.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
    await sleep(200);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});
