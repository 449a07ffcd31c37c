// The admin port: config_dump, Istio standard metrics in Prometheus format, /clusters, /listeners.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePort, http } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, fqdn, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const ENVOY_BUCKETS = ['0.5', '1', '5', '10', '25', '50', '100', '250', '500', '1000', '2500', '5000', '10000', '30000', '60000', '300000', '600000', '1800000', '3600000', '+Inf'];
const FQDN = fqdn('app');

let gw: GatewayProcess;
let port: number;
let v1: Echo;
let v2: Echo;

beforeAll(async () => {
  v1 = await startEcho('v1');
  v2 = await startEcho('v2');
  port = await freePort();
  gw = await startGateway({
    files: {
      'config.yaml': yamlDocs(
        gateway('gw', port, ['admin.test']),
        ...service('app', { v1: v1.port, v2: v2.port }),
        virtualService('admin', ['admin.test'], [{ match: [{ uri: { prefix: '/v2' } }], route: [dest('app', 'v2')] }, { route: [dest('app', 'v1')] }]),
      ),
    },
  });
  for (let i = 0; i < 3; i++) expect((await http(port, '/', { headers: { host: 'admin.test' } })).status).toBe(200);
  expect((await http(port, '/v2', { headers: { host: 'admin.test' } })).status).toBe(200);
  expect((await http(port, '/', { headers: { host: 'unknown.test' } })).status).toBe(404);
});

afterAll(async () => {
  await gw?.stop();
  await v1?.close();
  await v2?.close();
});

type Dump = { configs: Array<Record<string, any>> };
const section = (d: Dump, type: string): Record<string, any> => {
  const s = d.configs.find((c) => String(c['@type']).endsWith(type));
  expect(s, type).toBeDefined();
  return s!;
};

describe('admin: /config_dump', () => {
  let dump: Dump;
  beforeAll(async () => {
    const r = await gw.admin('/config_dump');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/application\/json/);
    dump = r.json as Dump;
  });

  it('lists the listener `127.0.0.1_<port>` for the Gateway port', () => {
    const names = section(dump, 'ListenersConfigDump').dynamic_listeners.map((l: any) => l.name);
    expect(names).toEqual([`127.0.0.1_${port}`]);
  });

  it('has a route configuration `http.<port>` with a virtual host for the VirtualService host', () => {
    const rcs = section(dump, 'RoutesConfigDump').dynamic_route_configs.map((r: any) => r.route_config);
    const rc = rcs.find((r: any) => r.name === `http.${port}`);
    expect(rc).toBeDefined();
    const domains = rc.virtual_hosts.flatMap((v: any) => v.domains);
    expect(domains).toContain('admin.test');
  });

  it('has clusters named `outbound|<port>|<subset>|<fqdn>`, one per subset plus the subset-less one', () => {
    const names = section(dump, 'ClustersConfigDump').dynamic_active_clusters.map((c: any) => c.cluster.name);
    expect(names).toEqual(expect.arrayContaining([`outbound|9080||${FQDN}`, `outbound|9080|v1|${FQDN}`, `outbound|9080|v2|${FQDN}`]));
  });

  it('carries the endpoints of each subset and a configuration version', () => {
    const eps = section(dump, 'EndpointsConfigDump').dynamic_endpoint_configs.map((e: any) => e.endpoint_config);
    const v1eps = eps.find((e: any) => e.cluster_name === `outbound|9080|v1|${FQDN}`);
    const ports = v1eps.endpoints.flatMap((l: any) => l.lb_endpoints.map((e: any) => e.endpoint.address.socket_address.port_value));
    expect(ports).toEqual([v1.port]);
    expect(section(dump, 'ListenersConfigDump').version_info).toBeTruthy();
  });
});

describe('admin: /stats/prometheus (Istio standard metrics)', () => {
  let text: string;
  beforeAll(async () => {
    const r = await gw.admin('/stats/prometheus');
    expect(r.status).toBe(200);
    text = r.text;
  });

  it('istio_requests_total counts routed requests with reporter="source", destination_service and response_code', () => {
    const s = findSamples(parsePrometheus(text), 'istio_requests_total', { reporter: 'source', destination_service: FQDN, response_code: '200' });
    expect(sumSamples(s)).toBe(4);
    const byVersion = (v: string) => sumSamples(s.filter((x) => x.labels.destination_version === v));
    expect(byVersion('v1')).toBe(3);
    expect(byVersion('v2')).toBe(1);
  });

  it('labels the destination service name/namespace and the workload of the endpoint', () => {
    const [s] = findSamples(parsePrometheus(text), 'istio_requests_total', { destination_service: FQDN, destination_version: 'v1', response_code: '200' });
    expect(s).toBeDefined();
    expect(s!.labels).toMatchObject({ destination_service_name: 'app', destination_service_namespace: 'default', destination_app: 'app', request_protocol: 'http' });
    expect(s!.labels.destination_workload).toMatch(/^app-v1/);
  });

  it('a request without a route is counted with missing labels `unknown` and response_flags NR', () => {
    const s = findSamples(parsePrometheus(text), 'istio_requests_total', { response_code: '404', response_flags: 'NR' });
    expect(sumSamples(s)).toBe(1);
    expect(s[0]!.labels.destination_service).toBe('unknown');
  });

  it('istio_request_duration_milliseconds has Envoy default buckets, starting at le="0.5"', () => {
    const buckets = findSamples(parsePrometheus(text), 'istio_request_duration_milliseconds_bucket', { destination_service: FQDN, destination_version: 'v1', response_code: '200' });
    expect(buckets.map((b) => b.labels.le)).toEqual(ENVOY_BUCKETS);
    expect(buckets.find((b) => b.labels.le === '+Inf')!.value).toBe(3);
    expect(text).toMatch(/istio_request_duration_milliseconds_bucket\{[^}]*le="0\.5"[^}]*\} \d+/);
  });

  it('istio_request_bytes and istio_response_bytes histograms are exported', () => {
    const all = parsePrometheus(text);
    expect(findSamples(all, 'istio_request_bytes_count', { destination_service: FQDN }).length).toBeGreaterThan(0);
    const resp = findSamples(all, 'istio_response_bytes_sum', { destination_service: FQDN, destination_version: 'v1', response_code: '200' });
    expect(sumSamples(resp)).toBeGreaterThan(0);
  });
});

describe('admin: /clusters, /listeners, /healthz/ready', () => {
  it('/clusters lists each cluster with its endpoint addresses', async () => {
    const r = await gw.admin('/clusters');
    expect(r.status).toBe(200);
    expect(r.text).toContain(`outbound|9080|v1|${FQDN}::127.0.0.1:${v1.port}::`);
    expect(r.text).toContain(`outbound|9080|v2|${FQDN}::127.0.0.1:${v2.port}::`);
    expect(r.text).not.toContain(`outbound|9080|v1|${FQDN}::127.0.0.1:${v2.port}::`);
  });

  it('/clusters?format=json is JSON with the same clusters', async () => {
    const r = await gw.admin('/clusters?format=json');
    const names = (r.json.cluster_statuses as Array<{ name: string }>).map((c) => c.name);
    expect(names).toEqual(expect.arrayContaining([`outbound|9080|v1|${FQDN}`, `outbound|9080|v2|${FQDN}`]));
  });

  it('/listeners lists the Gateway listener and its route configuration', async () => {
    const r = await gw.admin('/listeners');
    expect(r.status).toBe(200);
    expect(r.text).toContain(`127.0.0.1_${port}`);
    expect(r.text).toContain(`http.${port}`);
  });

  it('/healthz/ready is 200 once configured', async () => {
    const r = await gw.admin('/healthz/ready');
    expect(r.status).toBe(200);
  });
});
