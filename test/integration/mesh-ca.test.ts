// The mesh CA end to end on a real gateway: `gatehouse ca sign` certificates accepted by a MUTUAL
// server whose CA is the mesh root (another CA's refused), PeerAuthentication STRICT / PERMISSIVE /
// DISABLE on such servers, DestinationRule ISTIO_MUTUAL origination presenting the gateway's own
// SPIFFE identity to an upstream that requires a mesh client certificate, and rotation of that
// identity with a short TTL (new upstream connections present the new certificate).
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, request, type RequestOptions, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePorts, http, waitFor } from '../helpers/net.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { service, yamlDocs, type Obj } from '../helpers/yaml.js';

const CLIENT_ID = 'spiffe://cluster.local/ns/default/sa/client';
const UPSTREAM_ID = 'spiffe://cluster.local/ns/default/sa/upstream';
const GATEWAY_ID = 'spiffe://cluster.local/ns/istio-system/sa/gatehouse';

let stateDir: string;
let work: string;
let other: TestCa;
let otherClient: CertFiles;
let serverCert: CertFiles;
let echo: Echo;
let upstream: Server;
let upstreamPort = 0;
/** What the upstream saw per request: the client's URI SAN and certificate serial. */
const seen: Array<{ san: string | undefined; serial: string }> = [];
let gw: GatewayProcess;
let P: { mutual: number; optional: number; http: number; replica: number; xds: number };

interface MeshFiles {
  cert: string;
  key: string;
  root: string;
}
const files = (dir: string): MeshFiles => ({ cert: readFileSync(join(dir, 'cert-chain.pem'), 'utf8'), key: readFileSync(join(dir, 'key.pem'), 'utf8'), root: readFileSync(join(dir, 'root-cert.pem'), 'utf8') });
let client: MeshFiles;
let upstreamFiles: MeshFiles;

function config(peerAuth?: string): string {
  const https = (port: number, name: string, tls: Obj): Obj => ({ port: { number: port, name, protocol: 'HTTPS' }, hosts: ['*'], tls });
  const docs: Obj[] = [
    {
      apiVersion: 'networking.istio.io/v1',
      kind: 'Gateway',
      metadata: { name: 'gw', namespace: 'default' },
      spec: {
        selector: { istio: 'ingressgateway' },
        servers: [
          https(P.mutual, 'https-m', { mode: 'MUTUAL', serverCertificate: 'server.crt', privateKey: 'server.key', caCertificates: 'mesh-root.pem' }),
          https(P.optional, 'https-o', { mode: 'OPTIONAL_MUTUAL', serverCertificate: 'server.crt', privateKey: 'server.key', caCertificates: 'mesh-root.pem' }),
          { port: { number: P.http, name: 'http', protocol: 'HTTP' }, hosts: ['*'] },
        ],
      },
    },
    // Served by a replica (`--labels istio=replica`), which gets its mesh identity over SDS.
    { apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: { name: 'gw-replica', namespace: 'default' }, spec: { selector: { istio: 'replica' }, servers: [{ port: { number: P.replica, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] } },
    ...service('meshecho', { v1: echo.port }),
    ...service('secure', { v1: upstreamPort }, { trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL', subjectAltNames: [UPSTREAM_ID] } } }),
    ...service('wrongsan', { v1: upstreamPort }, { trafficPolicy: { tls: { mode: 'ISTIO_MUTUAL', subjectAltNames: ['spiffe://cluster.local/ns/default/sa/someone-else'] } } }),
    {
      apiVersion: 'networking.istio.io/v1',
      kind: 'VirtualService',
      metadata: { name: 'vs', namespace: 'default' },
      spec: {
        hosts: ['*'],
        gateways: ['gw', 'gw-replica'],
        http: [
          { match: [{ authority: { exact: 'secure.test' } }], route: [{ destination: { host: 'secure' } }] },
          { match: [{ authority: { exact: 'wrong.test' } }], route: [{ destination: { host: 'wrongsan' } }] },
          { route: [{ destination: { host: 'meshecho' } }] },
        ],
      },
    },
  ];
  if (peerAuth) docs.push({ apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'default', namespace: 'istio-system' }, spec: { mtls: { mode: peerAuth } } });
  return yamlDocs(...docs);
}

beforeAll(async () => {
  stateDir = mkdtempSync(join(tmpdir(), 'gatehouse-mesh-state-'));
  work = mkdtempSync(join(tmpdir(), 'gatehouse-mesh-'));
  // `ca sign` and the gateway share the state dir, hence the root.
  process.env.GATEHOUSE_STATE_DIR = stateDir;
  for (const [id, dir] of [
    [CLIENT_ID, 'client'],
    [UPSTREAM_ID, 'upstream'],
  ] as const) {
    const r = await runCli(['ca', 'sign', '--spiffe', id, '--out-dir', join(work, dir), '--ttl', '1h']);
    expect(r.code, r.stderr).toBe(0);
  }
  client = files(join(work, 'client'));
  upstreamFiles = files(join(work, 'upstream'));
  other = createCa('other');
  otherClient = other.issue('other-client', { client: true, sans: [`URI:${CLIENT_ID}`] });
  serverCert = other.issue('server', { sans: ['DNS:m.test'] });
  echo = await startEcho('meshecho');
  // An in-mesh HTTPS server: requires a client certificate from the mesh root.
  upstream = createServer({ cert: upstreamFiles.cert, key: upstreamFiles.key, ca: upstreamFiles.root, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const peer = (req.socket as TLSSocket).getPeerX509Certificate();
    seen.push({ san: peer?.subjectAltName, serial: peer?.serialNumber ?? '' });
    // One request per connection, so every request shows the certificate in use now.
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
    res.end(peer?.subjectAltName ?? 'none');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamPort = (upstream.address() as { port: number }).port;
  const [m, o, h, r, x] = await freePorts(5);
  P = { mutual: m!, optional: o!, http: h!, replica: r!, xds: x! };
  gw = await startGateway({
    files: { 'gw.yaml': config(), 'server.crt': serverCert.certPem, 'server.key': serverCert.keyPem, 'mesh-root.pem': client.root },
    env: { GATEHOUSE_STATE_DIR: stateDir, GATEHOUSE_WORKLOAD_CERT_TTL: '4s' },
    args: ['--xds-port', String(P.xds)],
  });
}, 30_000);

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  other?.remove();
  for (const d of [stateDir, work]) if (d) rmSync(d, { recursive: true, force: true });
});

/** An HTTPS request; resolves with the status, or rejects when the connection is refused. */
function get(port: number, opts: Partial<RequestOptions> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, servername: 'm.test', path: '/', headers: { host: 'm.test' }, rejectUnauthorized: false, agent: false, timeout: 3000, ...opts }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

const meshCert = (): Partial<RequestOptions> => ({ cert: client.cert, key: client.key });
const otherCert = (): Partial<RequestOptions> => ({ cert: otherClient.certPem, key: otherClient.keyPem });

describe('gatehouse ca', () => {
  it('sign writes cert-chain.pem, key.pem and root-cert.pem: an EC P-256 SPIFFE certificate from the root `ca root` prints', async () => {
    const leaf = new X509Certificate(client.cert);
    expect(leaf.subjectAltName).toBe(`URI:${CLIENT_ID}`);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const root = await runCli(['ca', 'root']);
    expect(root.code).toBe(0);
    expect(root.stdout).toBe(client.root);
    expect(leaf.verify(new X509Certificate(root.stdout).publicKey)).toBe(true);
    const bad = await runCli(['ca', 'sign', '--spiffe', 'https://nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--spiffe must be spiffe://');
  });
});

describe('MUTUAL server with the mesh root as its CA', () => {
  it('accepts a `ca sign` client certificate and refuses one from another CA, or none', async () => {
    expect(await get(P.mutual, meshCert())).toBe(200);
    await expect(get(P.mutual, otherCert())).rejects.toThrow();
    await expect(get(P.mutual)).rejects.toThrow();
    expect(await get(P.optional)).toBe(200);
  });
});

describe('ISTIO_MUTUAL origination', () => {
  it("presents the gateway's SPIFFE identity, verified by the upstream against the mesh root", async () => {
    const r = await http(P.http, '/', { headers: { host: 'secure.test' } });
    expect(r.status, r.text).toBe(200);
    expect(r.text).toBe(`URI:${GATEWAY_ID}`);
  });

  it("refuses an upstream whose SPIFFE identity is not one of subjectAltNames (503)", async () => {
    const r = await http(P.http, '/', { headers: { host: 'wrong.test' } });
    expect(r.status).toBe(503);
  });

  it('rotates the workload certificate (short TTL): new upstream connections present the new one', async () => {
    const before = seen.length;
    expect((await http(P.http, '/', { headers: { host: 'secure.test' } })).status).toBe(200);
    const first = seen[seen.length - 1]!.serial;
    const next = await waitFor(
      async () => {
        const r = await http(P.http, '/', { headers: { host: 'secure.test' } });
        expect(r.status).toBe(200);
        const s = seen[seen.length - 1]!.serial;
        return s !== first ? s : undefined;
      },
      8000,
      250,
    );
    expect(next).not.toBe(first);
    expect(seen.slice(before).every((x) => x.san === `URI:${GATEWAY_ID}`)).toBe(true);
  }, 15_000);
});

describe('a replica over xDS', () => {
  it('gets its own workload certificate (SDS default, ROOTCA) and originates ISTIO_MUTUAL with it', async () => {
    const replica = await startGateway({ files: {}, xdsAddress: `127.0.0.1:${P.xds}`, args: ['--labels', 'istio=replica', '--namespace', 'edge'], readyTimeoutMs: 15_000 });
    try {
      const r = await waitFor(async () => {
        const x = await http(P.replica, '/', { headers: { host: 'secure.test' } }).catch(() => undefined);
        return x?.status === 200 ? x : undefined;
      }, 10_000, 200);
      expect(r.text).toBe('URI:spiffe://cluster.local/ns/edge/sa/gatehouse');
    } finally {
      await replica.stop();
    }
    // Citadel's metrics on the control plane: its own identity (and its rotations) and the
    // replica's SDS certificate are certificate requests, each issued.
    const samples = parsePrometheus((await gw.admin('/stats/prometheus')).text);
    const csr = sumSamples(findSamples(samples, 'citadel_server_csr_count'));
    expect(csr).toBeGreaterThanOrEqual(2);
    expect(sumSamples(findSamples(samples, 'citadel_server_success_cert_issuance_count'))).toBe(csr);
    const rootExpiry = sumSamples(findSamples(samples, 'citadel_server_root_cert_expiry_timestamp'));
    expect(rootExpiry).toBeGreaterThan(Date.now() / 1000);
    expect(sumSamples(findSamples(samples, 'citadel_server_root_cert_expiry_seconds'))).toBeGreaterThan(0);
  }, 30_000);
});

describe('PeerAuthentication on mutual-TLS servers', () => {
  it('STRICT requires a client certificate even on the OPTIONAL_MUTUAL server', async () => {
    gw.writeFile('gw.yaml', config('STRICT'));
    await waitFor(async () => ((await get(P.optional).catch(() => 0)) === 0 ? true : undefined), 5000, 100);
    await expect(get(P.optional)).rejects.toThrow();
    expect(await get(P.optional, meshCert())).toBe(200);
    await expect(get(P.optional, otherCert())).rejects.toThrow();
  });

  it('PERMISSIVE makes the MUTUAL server accept clients without a certificate (a wrong one is still refused)', async () => {
    gw.writeFile('gw.yaml', config('PERMISSIVE'));
    await waitFor(async () => ((await get(P.mutual).catch(() => 0)) === 200 ? true : undefined), 5000, 100);
    expect(await get(P.mutual, meshCert())).toBe(200);
    await expect(get(P.mutual, otherCert())).rejects.toThrow();
  });

  it('DISABLE stops asking for a client certificate', async () => {
    gw.writeFile('gw.yaml', config('DISABLE'));
    await waitFor(async () => ((await get(P.mutual, otherCert()).catch(() => 0)) === 200 ? true : undefined), 5000, 100);
    expect(await get(P.mutual)).toBe(200);
    expect(await get(P.optional)).toBe(200);
  });
});
