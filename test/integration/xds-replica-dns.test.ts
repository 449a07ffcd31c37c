// A replica (`--xds-address`) routes to DNS-resolved ServiceEntries as its control plane does:
// STRICT_DNS / LOGICAL_DNS clusters carry their endpoints (the host names to resolve) inline in
// the Cluster, as Envoy requires, and the replica resolves them with its own DNS servers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { yamlDocs, type Obj } from '../helpers/yaml.js';

let dns: TestDnsServer;
let cp: GatewayProcess;
let replica: GatewayProcess;
let a: Echo;
let rr: Echo;
let P: { cp: number; xds: number; replica: number };

const se = (name: string, host: string, resolution: string, endpointHost: string, port: number): Obj => ({
  apiVersion: 'networking.istio.io/v1',
  kind: 'ServiceEntry',
  metadata: { name, namespace: 'default' },
  spec: { hosts: [host], location: 'MESH_EXTERNAL', resolution, ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: endpointHost, ports: { http: port } }] },
});

const gw = (name: string, label: string, port: number): Obj => ({
  apiVersion: 'networking.istio.io/v1',
  kind: 'Gateway',
  metadata: { name, namespace: 'default' },
  spec: { selector: { istio: label }, servers: [{ port: { number: port, name: 'http', protocol: 'HTTP' }, hosts: ['*'] }] },
});

const vs = (host: string): Obj => ({
  apiVersion: 'networking.istio.io/v1',
  kind: 'VirtualService',
  metadata: { name: host.split('.')[0]!, namespace: 'default' },
  spec: { hosts: [host], gateways: ['gw', 'gw-replica'], http: [{ route: [{ destination: { host } }] }] },
});

beforeAll(async () => {
  a = await startEcho('a');
  rr = await startEcho('rr');
  dns = await startDnsServer({ 'a.backend.test': ['127.0.0.1'], 'rr.backend.test': ['127.0.0.1'] });
  const [cpPort, xds, rep] = await freePorts(3);
  P = { cp: cpPort!, xds: xds!, replica: rep! };
  const env = { GATEHOUSE_DNS_SERVERS: dns.address };
  cp = await startGateway({
    files: {
      'c.yaml': yamlDocs(
        gw('gw', 'ingressgateway', P.cp),
        gw('gw-replica', 'replica', P.replica),
        se('api', 'api.external.test', 'DNS', 'a.backend.test', a.port),
        se('rr', 'rr.external.test', 'DNS_ROUND_ROBIN', 'rr.backend.test', rr.port),
        vs('api.external.test'),
        vs('rr.external.test'),
      ),
    },
    args: ['--xds-port', String(P.xds)],
    env,
  });
  replica = await startGateway({ files: {}, xdsAddress: `127.0.0.1:${P.xds}`, args: ['--labels', 'istio=replica'], env, readyTimeoutMs: 15_000 });
}, 40_000);

afterAll(async () => {
  await replica?.stop();
  await cp?.stop();
  await dns?.close();
  await a?.close();
  await rr?.close();
});

describe('replica: DNS ServiceEntries', () => {
  it('STRICT_DNS (resolution DNS): the replica routes like the control plane', async () => {
    for (const port of [P.cp, P.replica]) {
      const r = await http(port, '/x', { headers: { host: 'api.external.test' } });
      expect(r.status, `port ${port}`).toBe(200);
      expect(r.json.name).toBe('a');
    }
  });

  it('LOGICAL_DNS (resolution DNS_ROUND_ROBIN) as well', async () => {
    const r = await http(P.replica, '/y', { headers: { host: 'rr.external.test' } });
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('rr');
  });

});
