// ServiceEntry hosts resolved by DNS, through the real gateway pointed at a test DNS server
// (GATEHOUSE_DNS_SERVERS): STRICT_DNS endpoints per address, re-resolution after the TTL,
// NXDOMAIN → 503 UH with a warning naming the host, DNS_ROUND_ROBIN using one address, TLS
// origination presenting the ServiceEntry host, resolution NONE going to the request's authority.
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePort, http, waitFor } from '../helpers/net.js';
import { createCa, type TestCa } from '../helpers/openssl-ca.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

let dns: TestDnsServer;
let gw: GatewayProcess;
let port: number;
let ca: TestCa;
let tlsUpstream: HttpsServer;
let tlsPort: number;
let passthroughPort: number;
const echos: Record<string, Echo> = {};

function externalService(name: string, host: string, resolution: string, ports: Obj[], endpoints?: Obj[]): Obj {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'ServiceEntry',
    metadata: { name, namespace: 'default' },
    spec: { hosts: [host], location: 'MESH_EXTERNAL', resolution, ports, ...(endpoints ? { endpoints } : {}) },
  };
}

const HTTP80 = { number: 80, name: 'http', protocol: 'HTTP' };

beforeAll(async () => {
  for (const n of ['a', 'b', 'direct', 'rr', 'orig']) echos[n] = await startEcho(n);
  ca = createCa('ca');
  const cert = ca.issue('tls-upstream', { sans: ['DNS:tls.external.test'] });
  tlsUpstream = createHttpsServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ servername: (req.socket as TLSSocket).servername, host: req.headers.host }));
  });
  await new Promise<void>((r) => tlsUpstream.listen(0, '127.0.0.1', () => r()));
  tlsPort = (tlsUpstream.address() as AddressInfo).port;

  dns = await startDnsServer({
    'a.backend.test': ['127.0.0.1'],
    'direct.external.test': ['127.0.0.1'],
    // DNS_ROUND_ROBIN uses the first address only: the second is never connected to.
    'rr.backend.test': ['127.0.0.1', '192.0.2.1'],
    'tls.external.test': ['127.0.0.1'],
    'rr2.external.test': ['127.0.0.1'],
    'tls-bad.external.test': ['127.0.0.1'],
    'one.wild.test': ['127.0.0.1'],
    'tls.sni.test': ['127.0.0.1'],
  });
  port = await freePort();
  passthroughPort = await freePort();
  const docs: Obj[] = [
    gateway('gw', port, ['*']),
    // Two hosts behind one name: only those that resolve are endpoints.
    externalService('api', 'api.external.test', 'DNS', [HTTP80], [
      { address: 'a.backend.test', ports: { http: echos.a!.port } },
      { address: 'b.backend.test', ports: { http: echos.b!.port } },
    ]),
    // No endpoints: the host itself is resolved (port: targetPort).
    externalService('direct', 'direct.external.test', 'DNS', [{ ...HTTP80, targetPort: echos.direct!.port }]),
    externalService('missing', 'missing.external.test', 'DNS', [HTTP80]),
    externalService('rr', 'rr.external.test', 'DNS_ROUND_ROBIN', [HTTP80], [{ address: 'rr.backend.test', ports: { http: echos.rr!.port } }]),
    externalService('rr2', 'rr2.external.test', 'DNS_ROUND_ROBIN', [{ ...HTTP80, targetPort: echos.rr!.port }]),
    externalService('tls', 'tls.external.test', 'DNS', [{ ...HTTP80, targetPort: tlsPort }]),
    {
      apiVersion: 'networking.istio.io/v1',
      kind: 'DestinationRule',
      metadata: { name: 'tls', namespace: 'default' },
      spec: { host: 'tls.external.test', trafficPolicy: { tls: { mode: 'SIMPLE', caCertificates: ca.cert } } },
    },
    // The certificate does not name this host: TLS origination fails (503 UF).
    externalService('tls-bad', 'tls-bad.external.test', 'DNS', [{ ...HTTP80, targetPort: tlsPort }]),
    {
      apiVersion: 'networking.istio.io/v1',
      kind: 'DestinationRule',
      metadata: { name: 'tls-bad', namespace: 'default' },
      spec: { host: 'tls-bad.external.test', trafficPolicy: { tls: { mode: 'SIMPLE', caCertificates: ca.cert } } },
    },
    externalService('wild', '*.wild.test', 'NONE', [HTTP80]),
    virtualService('api', ['api.gw.test'], [{ route: [dest('api.external.test')] }]),
    virtualService('direct', ['direct.gw.test'], [{ route: [dest('direct.external.test')] }]),
    virtualService('missing', ['missing.gw.test'], [{ route: [dest('missing.external.test')] }]),
    virtualService('rr', ['rr.gw.test'], [{ route: [dest('rr.external.test')] }]),
    virtualService('rr2', ['rr2.gw.test'], [{ route: [dest('rr2.external.test')] }]),
    virtualService('tls', ['tls.gw.test'], [{ route: [dest('tls.external.test')] }]),
    virtualService('tls-bad', ['tls-bad.gw.test'], [{ route: [dest('tls-bad.external.test')] }]),
    virtualService('wild', ['*.wild.test'], [{ route: [dest('*.wild.test')] }]),
    // TLS passthrough to a NONE ServiceEntry: the destination is the SNI name, resolved by DNS.
    {
      apiVersion: 'networking.istio.io/v1',
      kind: 'Gateway',
      metadata: { name: 'passthrough', namespace: 'default' },
      spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: passthroughPort, name: 'tls', protocol: 'TLS' }, hosts: ['*.sni.test'], tls: { mode: 'PASSTHROUGH' } }] },
    },
    externalService('sni', '*.sni.test', 'NONE', [{ number: tlsPort, name: 'tls', protocol: 'TLS' }]),
    {
      apiVersion: 'networking.istio.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'sni', namespace: 'default' },
      spec: { hosts: ['*.sni.test'], gateways: ['passthrough'], tls: [{ match: [{ sniHosts: ['*.sni.test'] }], route: [{ destination: { host: '*.sni.test', port: { number: tlsPort } } }] }] },
    },
  ];
  gw = await startGateway({ files: { 'config.yaml': yamlDocs(...docs) }, env: { GATEHOUSE_DNS_SERVERS: dns.address } });
}, 30_000);

afterAll(async () => {
  await gw?.stop();
  for (const e of Object.values(echos)) await e.close();
  await new Promise<void>((r) => tlsUpstream?.close(() => r()));
  await dns?.close();
  ca?.remove();
});

const get = (host: string, path = '/'): ReturnType<typeof http> => http(port, path, { headers: { host } });

describe('ServiceEntry resolution DNS (STRICT_DNS)', () => {
  it('routes to the resolved addresses from the first request (cluster warming)', async () => {
    const r = await get('api.gw.test');
    expect(r.status).toBe(200);
    expect(r.headers['x-upstream']).toBe('a');
    const d = await get('direct.gw.test');
    expect(d.status).toBe(200);
    expect(d.headers['x-upstream']).toBe('direct');
    const clusters = (await gw.admin('/clusters?format=json')).json as { cluster_statuses: Array<{ name: string; endpoints: Array<{ address: string; hostname?: string }> }> };
    const api = clusters.cluster_statuses.find((c) => c.name === 'outbound|80||api.external.test')!;
    expect(api.endpoints).toEqual([expect.objectContaining({ address: `127.0.0.1:${echos.a!.port}`, hostname: 'a.backend.test' })]);
  });

  it('follows a changed answer once its TTL has passed', async () => {
    dns.records.delete('a.backend.test');
    dns.set('b.backend.test', ['127.0.0.1'], 1);
    await waitFor(async () => (await get('api.gw.test')).headers['x-upstream'] === 'b' || undefined, 10_000, 200);
    for (let i = 0; i < 5; i++) expect((await get('api.gw.test')).headers['x-upstream']).toBe('b');
  }, 15_000);

  it('a name that does not resolve: 503 UH, a warning naming the host and the error, counted', async () => {
    const r = await get('missing.gw.test');
    expect(r.status).toBe(503);
    expect(r.text).toBe('no healthy upstream');
    expect(gw.logs()).toMatch(/DNS resolution of missing\.external\.test failed: ENOTFOUND/);
    const samples = parsePrometheus((await gw.admin('/stats/prometheus')).text);
    expect(sumSamples(findSamples(samples, 'istio_requests_total', { destination_service: 'missing.external.test', response_code: '503', response_flags: 'UH' }))).toBeGreaterThanOrEqual(1);
    expect(sumSamples(findSamples(samples, 'gatehouse_dns_resolutions_total', { host: 'missing.external.test', result: 'failure' }))).toBeGreaterThanOrEqual(1);
    expect(sumSamples(findSamples(samples, 'gatehouse_dns_resolutions_total', { host: 'direct.external.test', result: 'ok' }))).toBeGreaterThanOrEqual(1);
  });
});

describe('ServiceEntry resolution DNS_ROUND_ROBIN (LOGICAL_DNS)', () => {
  it('uses the first address of the answer only', async () => {
    for (let i = 0; i < 6; i++) {
      const r = await get('rr.gw.test');
      expect(r.status).toBe(200);
      expect(r.headers['x-upstream']).toBe('rr');
    }
    const clusters = (await gw.admin('/clusters?format=json')).json as { cluster_statuses: Array<{ name: string; endpoints: Array<{ address: string }> }> };
    const rr = clusters.cluster_statuses.find((c) => c.name === 'outbound|80||rr.external.test')!;
    expect(rr.endpoints.map((e) => e.address)).toEqual([`127.0.0.1:${echos.rr!.port}`]);
  });

  it('without endpoints, resolves the ServiceEntry host itself', async () => {
    const r = await get('rr2.gw.test');
    expect(r.status).toBe(200);
    expect(r.headers['x-upstream']).toBe('rr');
  });
});

describe('TLS origination to a DNS cluster', () => {
  it('presents the ServiceEntry host as SNI and verifies the certificate against it', async () => {
    const r = await get('tls.gw.test');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ servername: 'tls.external.test', host: 'tls.gw.test' });
    const bad = await get('tls-bad.gw.test');
    expect(bad.status).toBe(503);
    expect(bad.text).toMatch(/TLS_error: ERR_TLS_CERT_ALTNAME_INVALID/);
  });
});

describe('ServiceEntry resolution NONE (ORIGINAL_DST)', () => {
  it("goes to the request's authority, resolved by DNS", async () => {
    const r = await get(`one.wild.test:${echos.orig!.port}`);
    expect(r.status).toBe(200);
    expect(r.headers['x-upstream']).toBe('orig');
    const bad = await get(`two.wild.test:${echos.orig!.port}`);
    expect(bad.status).toBe(503);
    expect(bad.text).toMatch(/ENOTFOUND/);
  });
});

describe('a DNS server that does not answer', () => {
  it('delays start-up by a bounded time only; the names have no endpoints (503 UH) and are reported', async () => {
    const dead = await startDnsServer({ 'api.external.test': ['127.0.0.1'] });
    dead.drop = true;
    const p2 = await freePort();
    const t0 = Date.now();
    const g2 = await startGateway({
      files: { 'config.yaml': yamlDocs(gateway('gw', p2, ['*']), externalService('direct', 'direct.external.test', 'DNS', [{ ...HTTP80, targetPort: echos.direct!.port }]), virtualService('direct', ['direct.gw.test'], [{ route: [dest('direct.external.test')] }])) },
      env: { GATEHOUSE_DNS_SERVERS: dead.address },
      readyTimeoutMs: 15_000,
    });
    try {
      expect(Date.now() - t0).toBeLessThan(9_000);
      const r = await http(p2, '/', { headers: { host: 'direct.gw.test' } });
      expect(r.status).toBe(503);
      expect(r.text).toBe('no healthy upstream');
      expect(g2.logs()).toMatch(/DNS resolution of direct\.external\.test failed: ETIMEOUT/);
      expect(dead.queries.get('direct.external.test')).toBeGreaterThanOrEqual(1);
    } finally {
      await g2.stop();
      await dead.close();
    }
  }, 30_000);
});

describe('TLS passthrough to a resolution NONE ServiceEntry', () => {
  it('connects to the SNI name (resolved by DNS) on the service port, TLS untouched', async () => {
    const { connect } = await import('node:tls');
    const peer = await new Promise<string>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: passthroughPort, servername: 'tls.sni.test', rejectUnauthorized: false }, () => {
        resolve(s.getPeerCertificate().subjectaltname ?? '');
        s.end();
      });
      s.on('error', reject);
    });
    // The upstream's own certificate: the gateway did not terminate TLS.
    expect(peer).toContain('DNS:tls.external.test');
    const samples = parsePrometheus((await gw.admin('/stats/prometheus')).text);
    expect(sumSamples(findSamples(samples, 'gatehouse_dns_resolutions_total', { host: 'tls.sni.test', result: 'ok' }))).toBeGreaterThanOrEqual(1);
  });
});
