// Data-plane-only replicas (`gatehouse run --xds-address`): one control plane from files, two
// replicas that take all their configuration from it over ADS (their certificates too, over SDS),
// route the same way, and follow a config file change. Each replica runs with its own workload
// labels and gets the Gateways that select them, as istiod serves each gateway deployment, so
// that all three processes can listen on 127.0.0.1 without sharing a port.
import { connect, type PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http, waitFor } from '../helpers/net.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { service, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

let cp: GatewayProcess;
let replicas: GatewayProcess[] = [];
let v1: Echo;
let v2: Echo;
let ca: TestCa;
let cert: CertFiles;
let P: { cp: number; xds: number; a: number; b: number; tlsA: number };

function gatewayFor(name: string, label: string, servers: Obj[]): Obj {
  return { apiVersion: 'networking.istio.io/v1', kind: 'Gateway', metadata: { name, namespace: 'default' }, spec: { selector: { istio: label }, servers } };
}

function config(subset: string): string {
  const http = (port: number): Obj => ({ port: { number: port, name: `http-${port}`, protocol: 'HTTP' }, hosts: ['*'] });
  const tls: Obj = { port: { number: P.tlsA, name: 'https', protocol: 'HTTPS' }, hosts: ['shop.test'], tls: { mode: 'SIMPLE', serverCertificate: cert.cert, privateKey: cert.key } };
  return yamlDocs(
    gatewayFor('gw', 'ingressgateway', [http(P.cp)]),
    gatewayFor('gw-a', 'replica-a', [http(P.a), tls]),
    gatewayFor('gw-b', 'replica-b', [http(P.b)]),
    ...service('shop', { v1: v1.port, v2: v2.port }),
    virtualService('shop', ['shop.test'], [{ route: [{ destination: { host: 'shop', subset } }] }], { gateways: ['gw', 'gw-a', 'gw-b'] }),
  );
}

const via = async (port: number): Promise<string> => {
  const r = await http(port, '/x', { headers: { host: 'shop.test' } });
  return r.status === 200 ? (JSON.parse(r.text) as { name: string }).name : `status ${r.status}`;
};

beforeAll(async () => {
  v1 = await startEcho('v1');
  v2 = await startEcho('v2');
  ca = createCa();
  cert = ca.issue('shop', { sans: ['DNS:shop.test'] });
  const [cpPort, xds, a, b, tlsA] = await freePorts(5);
  P = { cp: cpPort!, xds: xds!, a: a!, b: b!, tlsA: tlsA! };
  cp = await startGateway({ files: { 'shop.yaml': config('v1') }, args: ['--xds-port', String(P.xds)] });
  replicas = await Promise.all(
    ['replica-a', 'replica-b'].map((label) => startGateway({ files: {}, xdsAddress: `127.0.0.1:${P.xds}`, args: ['--labels', `istio=${label}`], readyTimeoutMs: 15_000 })),
  );
}, 40_000);

afterAll(async () => {
  await Promise.all(replicas.map((r) => r.stop()));
  await cp?.stop();
  await v1?.close();
  await v2?.close();
  ca?.remove();
});

describe('replicas following one control plane', () => {
  it('both replicas serve their Gateways and route as the control plane does', async () => {
    expect(await via(P.cp)).toBe('v1');
    expect(await via(P.a)).toBe('v1');
    expect(await via(P.b)).toBe('v1');
    // Each replica opens only the Gateways that select it.
    expect((await replicas[0]!.admin('/listeners')).text).toContain(`127.0.0.1:${P.a}::HTTP/1.1`);
    expect((await replicas[0]!.admin('/listeners')).text).not.toContain(`:${P.b}::`);
    expect((await replicas[1]!.admin('/listeners')).text).toContain(`127.0.0.1:${P.b}::HTTP/1.1`);
  });

  it('a replica terminates TLS with the certificate it got over SDS (it has no files)', async () => {
    const peer = await new Promise<PeerCertificate>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: P.tlsA, servername: 'shop.test', ca: ca.certPem }, () => {
        resolve(s.getPeerCertificate());
        s.end();
      });
      s.on('error', reject);
    });
    expect(peer.subjectaltname).toContain('DNS:shop.test');
  });

  it('the control plane lists both replicas as SYNCED (proxy-status)', async () => {
    const r = await runCli(['proxy-status', '--xds-address', `127.0.0.1:${P.xds}`]);
    expect(r.code).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => l.startsWith('router~'));
    expect(rows).toHaveLength(2);
    for (const row of rows) expect(row).toMatch(/gatehouse\s+SYNCED\s+SYNCED\s+SYNCED\s+SYNCED\s+SYNCED/);
  });

  it('a config file change reaches both replicas, which then route the same way', async () => {
    cp.writeFile('shop.yaml', config('v2'));
    await waitFor(async () => (await via(P.a)) === 'v2' && (await via(P.b)) === 'v2' && (await via(P.cp)) === 'v2', 8_000);
  });

  it('a replica keeps serving its last configuration while the control plane is away', async () => {
    await cp.stop();
    expect(await via(P.a)).toBe('v2');
    expect(await via(P.b)).toBe('v2');
    expect((await replicas[0]!.admin('/healthz/ready')).status).toBe(200);
  });
});
