// The egress gateway of a restricted network: a Gateway selecting `istio: egressgateway`,
// VirtualServices routing to MESH_EXTERNAL ServiceEntries with TLS originated per
// DestinationRule (plain HTTP in, HTTPS out), REGISTRY_ONLY from the mesh config, and the
// forward-proxy entry (gatehouse.io/forward-proxy) for workloads that only set HTTP(S)_PROXY:
// absolute-form requests and CONNECT tunnels to registered hosts and ports only; then ALLOW_ANY
// after a mesh config change. External services are servers on 127.0.0.1.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePort, waitFor } from '../helpers/net.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { yamlDocs, type Obj } from '../helpers/yaml.js';

let gw: GatewayProcess;
let port: number;
let api: Echo;
let secure: HttpsServer;
let securePort: number;
let ca: TestCa;
let secureCert: CertFiles;

function meshConfigMap(mode: string): string {
  return `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    outboundTrafficPolicy:\n      mode: ${mode}\n`;
}

function se(name: string, host: string, ports: Obj[], endpointPorts: Record<string, number>): Obj {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'ServiceEntry',
    metadata: { name, namespace: 'default' },
    spec: { hosts: [host], location: 'MESH_EXTERNAL', resolution: 'STATIC', ports, endpoints: [{ address: '127.0.0.1', ports: endpointPorts }] },
  };
}

function config(): string {
  const gateway: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name: 'egress', namespace: 'istio-system', annotations: { 'gatehouse.io/forward-proxy': 'true' } },
    spec: { selector: { istio: 'egressgateway' }, servers: [{ port: { number: port, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] },
  };
  // The egress pattern: plain HTTP to the gateway for tls.external.test, HTTPS to the service.
  const vs: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'VirtualService',
    metadata: { name: 'tls-external', namespace: 'default' },
    spec: { hosts: ['tls.external.test'], gateways: ['istio-system/egress'], http: [{ route: [{ destination: { host: 'tls.external.test', port: { number: 443 } } }] }] },
  };
  const dr: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    metadata: { name: 'tls-external', namespace: 'default' },
    spec: { host: 'tls.external.test', trafficPolicy: { portLevelSettings: [{ port: { number: 443 }, tls: { mode: 'SIMPLE', caCertificates: ca.cert, sni: 'tls.external.test' } }] } },
  };
  return yamlDocs(
    gateway,
    vs,
    dr,
    se('api', 'api.external.test', [{ number: 80, name: 'http', protocol: 'HTTP' }], { http: api.port }),
    se('tls', 'tls.external.test', [{ number: 443, name: 'https', protocol: 'HTTPS' }], { https: securePort }),
    se('secure', 'secure.external.test', [{ number: 443, name: 'tls', protocol: 'TLS' }], { tls: securePort }),
  );
}

/** An HTTP request through the gateway as a proxy client sends it (absolute-form). */
function viaProxy(url: string): Promise<{ status: number; body: string; headers: IncomingMessage['headers'] }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest({ host: '127.0.0.1', port, path: url, headers: { host: u.host }, agent: false, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** CONNECT through the gateway; on 200, a TLS handshake inside the tunnel. */
function connectTunnel(target: string, servername: string): Promise<{ status: number; peer?: PeerCertificate; body?: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: 'CONNECT', path: target, agent: false, timeout: 5000 });
    req.on('connect', (res: IncomingMessage, socket: Socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        return resolve({ status: res.statusCode ?? 0 });
      }
      const t = tlsConnect({ socket, servername, ca: ca.certPem }, () => {
        const peer = t.getPeerCertificate();
        t.write(`GET /through-tunnel HTTP/1.1\r\nhost: ${servername}\r\nconnection: close\r\n\r\n`);
        const chunks: Buffer[] = [];
        t.on('data', (c: Buffer) => chunks.push(c));
        t.on('end', () => resolve({ status: 200, peer, body: Buffer.concat(chunks).toString() }));
      });
      t.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  ca = createCa();
  secureCert = ca.issue('secure', { sans: ['DNS:secure.external.test', 'DNS:tls.external.test'] });
  api = await startEcho('api');
  secure = createHttpsServer({ cert: secureCert.certPem, key: secureCert.keyPem }, (req, res) => {
    res.end(`secure saw ${req.method} ${req.url} over TLS`);
  });
  await new Promise<void>((r) => secure.listen(0, '127.0.0.1', () => r()));
  securePort = (secure.address() as AddressInfo).port;
  port = await freePort();
  gw = await startGateway({ files: { 'egress.yaml': config(), 'mesh.yaml': meshConfigMap('REGISTRY_ONLY') }, args: ['--labels', 'istio=egressgateway'] });
}, 30_000);

afterAll(async () => {
  await gw?.stop();
  await api?.close();
  secure?.closeAllConnections();
  await new Promise<void>((r) => (secure ? secure.close(() => r()) : r()));
  ca?.remove();
});

describe('egress gateway', () => {
  it('originates TLS for a VirtualService route to a MESH_EXTERNAL host (plain HTTP in, HTTPS out)', async () => {
    const r = await viaProxy('http://tls.external.test/orders?x=1');
    expect(r.status).toBe(200);
    expect(r.body).toBe('secure saw GET /orders?x=1 over TLS');
  });

  it('forward proxy: an absolute-form request to a registered host goes to its endpoints', async () => {
    const r = await viaProxy('http://api.external.test/items');
    expect(r.status).toBe(200);
    const seen = JSON.parse(r.body) as { url: string; headers: Record<string, string> };
    expect(seen.url).toBe('/items');
    expect(seen.headers.host).toBe('api.external.test');
  });

  it('REGISTRY_ONLY: a host outside the registry gets 502, logged and counted with the host named', async () => {
    const r = await viaProxy('http://not-registered.test/x');
    expect(r.status).toBe(502);
    expect(r.headers.server).toBe('istio-envoy');
    await waitFor(() => gw.logs().includes('forward proxy refused not-registered.test:'), 3000);
    const samples = parsePrometheus((await gw.admin('/stats/prometheus')).text);
    expect(sumSamples(findSamples(samples, 'gatehouse_outbound_refused_total', { host: 'not-registered.test', status: '502' }))).toBe(1);
    expect(sumSamples(findSamples(samples, 'istio_requests_total', { destination_service_name: 'BlackHoleCluster', response_code: '502' }))).toBeGreaterThanOrEqual(1);
  });

  it('CONNECT to a registered TLS host and port: a tunnel to its endpoint (TLS end to end, not terminated)', async () => {
    const r = await connectTunnel('secure.external.test:443', 'secure.external.test');
    expect(r.status).toBe(200);
    expect(r.peer?.subjectaltname).toContain('DNS:secure.external.test');
    expect(r.body).toContain('secure saw GET /through-tunnel over TLS');
  });

  it('CONNECT to an undeclared port is refused with 403, to an unregistered host with 502', async () => {
    expect((await connectTunnel('secure.external.test:8443', 'secure.external.test')).status).toBe(403);
    expect((await connectTunnel('elsewhere.test:443', 'elsewhere.test')).status).toBe(502);
    const samples = parsePrometheus((await gw.admin('/stats/prometheus')).text);
    expect(sumSamples(findSamples(samples, 'gatehouse_outbound_refused_total', { host: 'secure.external.test', status: '403' }))).toBe(1);
    expect(sumSamples(findSamples(samples, 'istio_tcp_connections_opened_total', { destination_service: 'secure.external.test' }))).toBeGreaterThanOrEqual(1);
  });

  it('ALLOW_ANY (mesh config changed at run time): unregistered destinations pass through', async () => {
    gw.writeFile('mesh.yaml', meshConfigMap('ALLOW_ANY'));
    await waitFor(async () => (await viaProxy(`http://127.0.0.1:${api.port}/anything`)).status === 200, 5000);
    const r = await connectTunnel(`127.0.0.1:${securePort}`, 'secure.external.test');
    expect(r.status).toBe(200);
    expect(r.body).toContain('over TLS');
  });
});
