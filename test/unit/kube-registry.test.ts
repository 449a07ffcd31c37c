// The Kubernetes service registry as resolve() builds it (src/controlplane/build/kubernetes.ts):
// Services, EndpointSlices and Pods → clusters and endpoints, as istiod's Kubernetes registry
// would give a gateway.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG, formatProblem } from '../../src/config/types.js';
import { convertProtocol } from '../../src/controlplane/build/kubernetes.js';
import { resolve, resolveEndpoints, type ResolveOptions } from '../../src/controlplane/resolve.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';
import type { KObj } from '../helpers/kube-apiserver.js';
import { kPod, kService, kSlice } from '../helpers/kube-objects.js';
import { dest, destinationRule, gateway, virtualService, yamlDocs } from '../helpers/yaml.js';

const OPTS: ResolveOptions = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG };
const FQDN = 'reviews.default.svc.cluster.local';

function snap(docs: KObj[], opts: Partial<ResolveOptions> = {}): Snapshot {
  const { resources, problems } = parseYamlText(yamlDocs(...docs), 'cfg.yaml');
  expect(problems).toEqual([]);
  return resolve(resources, { ...OPTS, ...opts });
}

/** `address:port` of every endpoint of a cluster, sorted. */
const endpointsOf = (s: Snapshot, cluster: string): string[] =>
  (s.endpoints.get(cluster)?.endpoints ?? []).flatMap((l) => l.lb_endpoints.map((e) => `${e.endpoint.address.socket_address.address}:${e.endpoint.address.socket_address.port_value}`)).sort();
const warnings = (s: Snapshot): string[] => s.warnings.map(formatProblem);

/** reviews: v1 on .1 and .2, v2 on .3 (the slice resolved targetPort `http-web` to 9080). */
const REVIEWS: KObj[] = [
  gateway('gw', 8080),
  kService('reviews', [{ name: 'http', port: 80, targetPort: 'http-web' }]),
  kSlice('reviews-a', 'reviews', [{ ip: '10.0.0.1', pod: 'reviews-v1-a', zone: 'zone-a' }, { ip: '10.0.0.2', pod: 'reviews-v1-b' }, { ip: '10.0.0.3', pod: 'reviews-v2-a' }], [{ name: 'http', port: 9080 }]),
  kPod('reviews-v1-a', '10.0.0.1', { app: 'reviews', version: 'v1' }, { ports: { 'http-web': 9080 } }),
  kPod('reviews-v1-b', '10.0.0.2', { app: 'reviews', version: 'v1' }, { ports: { 'http-web': 9080 } }),
  kPod('reviews-v2-a', '10.0.0.3', { app: 'reviews', version: 'v2' }, { ports: { 'http-web': 9080 } }),
  destinationRule('reviews', 'reviews', { v1: { version: 'v1' }, v2: { version: 'v2' } }),
  virtualService('reviews', ['reviews.example.com'], [{ match: [{ headers: { 'x-v': { exact: '2' } } }], route: [dest('reviews', 'v2')] }, { route: [dest('reviews', 'v1')] }]),
];

describe('Kubernetes port protocol (Istio ConvertProtocol)', () => {
  it.each([
    ['http', undefined, 80, 'HTTP'],
    ['http-api', undefined, 80, 'HTTP'],
    ['HTTP2-x', undefined, 80, 'HTTP2'],
    ['http2', undefined, 80, 'HTTP2'],
    ['grpc', undefined, 80, 'GRPC'],
    ['grpc-api', undefined, 80, 'GRPC'],
    ['grpc-web', undefined, 80, 'GRPC-WEB'],
    ['grpc-web-ui', undefined, 80, 'GRPC-WEB'],
    ['https-admin', undefined, 443, 'HTTPS'],
    ['tls', undefined, 443, 'TLS'],
    ['tcp-db', undefined, 5432, 'TCP'],
    ['mongo', undefined, 27018, 'MONGO'],
    ['mysql-primary', undefined, 3307, 'MYSQL'],
    ['redis', undefined, 6379, 'REDIS'],
    ['httpx', undefined, 80, ''],
    ['web', undefined, 80, ''],
    ['', undefined, 8080, ''],
    // Well-known ports stay TCP when the name says nothing.
    ['', undefined, 3306, 'TCP'],
    ['dns', undefined, 53, 'TCP'],
    ['mongo-x', undefined, 27017, 'MONGO'],
    // appProtocol wins over the name, with Kubernetes' standard names.
    ['http', 'grpc', 80, 'GRPC'],
    ['web', 'kubernetes.io/h2c', 80, 'HTTP2'],
    ['web', 'kubernetes.io/ws', 80, 'HTTP'],
    ['web', 'kubernetes.io/wss', 443, 'HTTPS'],
    ['http', 'example.com/custom', 80, ''],
    ['tcp', 'http2', 80, 'HTTP2'],
  ])('port named %j, appProtocol %j, port %i: %j', (name, appProtocol, port, want) => {
    expect(convertProtocol(port, name, 'TCP', appProtocol)).toBe(want);
  });

  it('a UDP port is UDP whatever its name', () => {
    expect(convertProtocol(53, 'dns', 'UDP', undefined)).toBe('UDP');
    expect(convertProtocol(80, 'http', 'UDP', 'http')).toBe('UDP');
  });

  it('Service ports become the cluster protocol: HTTP/2 upstream for h2c, gRPC and http2; HTTP/1.1 for sniffed ports; no cluster for UDP', () => {
    const s = snap([
      kService('multi', [
        { name: 'web', port: 80, appProtocol: 'kubernetes.io/h2c' },
        { name: 'grpc-api', port: 9090 },
        { name: 'plain', port: 8080 },
        { name: 'dns', port: 53, protocol: 'UDP' },
      ]),
    ]);
    const c = (port: number) => s.clusters.get(`outbound|${port}||multi.default.svc.cluster.local`);
    expect(c(80)?.http2_protocol_options).toEqual({});
    expect(c(9090)?.http2_protocol_options).toEqual({});
    expect(c(8080)).toBeDefined();
    expect(c(8080)?.http2_protocol_options).toBeUndefined();
    expect(c(53)).toBeUndefined();
  });
});

describe('Kubernetes Services in the registry', () => {
  it('a Service is <name>.<ns>.svc.cluster.local, an EDS cluster whose endpoints are its EndpointSlices on the resolved target port; DestinationRule subsets select by Pod labels', () => {
    const s = snap(REVIEWS);
    const all = s.clusters.get(`outbound|80||${FQDN}`)!;
    expect(all.type).toBe('EDS');
    expect(all.metadata.filter_metadata.istio).toMatchObject({ host: FQDN, name: 'reviews', namespace: 'default', port: 80 });
    expect(endpointsOf(s, `outbound|80||${FQDN}`)).toEqual(['10.0.0.1:9080', '10.0.0.2:9080', '10.0.0.3:9080']);
    expect(endpointsOf(s, `outbound|80|v1|${FQDN}`)).toEqual(['10.0.0.1:9080', '10.0.0.2:9080']);
    expect(endpointsOf(s, `outbound|80|v2|${FQDN}`)).toEqual(['10.0.0.3:9080']);
    // The Pod's labels are the endpoint's; its zone its locality.
    const v1 = s.endpoints.get(`outbound|80|v1|${FQDN}`)!.endpoints;
    const a = v1.find((l) => l.locality.zone === 'zone-a')!;
    expect(a.lb_endpoints[0]!.metadata.filter_metadata.istio).toEqual({ labels: { app: 'reviews', version: 'v1' }, workload: 'reviews-v1-a', namespace: 'default' });
    // The route: `reviews` in the VirtualService's namespace is the Service.
    const vh = s.routes.get('http.8080')!.virtual_hosts.find((v) => v.name === 'reviews.example.com:8080')!;
    expect(vh.routes.map((r) => r.route?.cluster)).toEqual([`outbound|80|v2|${FQDN}`, `outbound|80|v1|${FQDN}`]);
    expect(warnings(s)).toEqual([]);
  });

  it('not-ready and terminating endpoints are left out; an endpoint whose Pod is not known yet waits for it; conditions absent mean ready', () => {
    // Conditions absent (the API's "unknown"): ready.
    const unknown = kSlice('app-2', 'app', [{ ip: '10.1.0.5', pod: 'p5' }], [{ name: 'http', port: 8080 }]);
    delete unknown.endpoints[0].conditions;
    const s = snap([
      kService('app', [{ name: 'http', port: 80, targetPort: 8080 }]),
      kSlice('app-1', 'app', [
        { ip: '10.1.0.1', pod: 'p1' },
        { ip: '10.1.0.2', pod: 'p2', ready: false },
        { ip: '10.1.0.3', pod: 'p3', ready: false, serving: true, terminating: true },
        { ip: '10.1.0.4', pod: 'gone' },
      ], [{ name: 'http', port: 8080 }]),
      unknown,
      kPod('p1', '10.1.0.1', { app: 'app' }),
      kPod('p2', '10.1.0.2', { app: 'app' }, { ready: false }),
      kPod('p3', '10.1.0.3', { app: 'app' }),
      kPod('p5', '10.1.0.5', { app: 'app' }),
    ]);
    expect(endpointsOf(s, 'outbound|80||app.default.svc.cluster.local')).toEqual(['10.1.0.1:8080', '10.1.0.5:8080']);
  });

  it('publishNotReadyAddresses: Kubernetes marks every endpoint ready, and every one serves', () => {
    const s = snap([kService('app', [{ name: 'http', port: 80 }]), kSlice('app-1', 'app', [{ ip: '10.1.0.1', pod: 'p1', ready: true, terminating: true }], [{ name: 'http', port: 80 }]), kPod('p1', '10.1.0.1', { app: 'app' }, { ready: false })]);
    expect(endpointsOf(s, 'outbound|80||app.default.svc.cluster.local')).toEqual(['10.1.0.1:80']);
  });

  it('each service port gets the endpoints its slices list for that port name; a slice port without a number takes the named targetPort from the Pod', () => {
    const s = snap([
      kService('app', [{ name: 'http', port: 80, targetPort: 'web' }, { name: 'grpc', port: 9090, targetPort: 'rpc' }]),
      // One slice per distinct resolved port set, as the EndpointSlice controller makes them.
      kSlice('app-a', 'app', [{ ip: '10.1.0.1', pod: 'p1' }], [{ name: 'http', port: 8080 }, { name: 'grpc', port: 9000 }]),
      kSlice('app-b', 'app', [{ ip: '10.1.0.2', pod: 'p2' }], [{ name: 'http', port: 8081 }]),
      kSlice('app-c', 'app', [{ ip: '10.1.0.3', pod: 'p3' }], [{ name: 'http' }]),
      kPod('p1', '10.1.0.1', { app: 'app' }, { ports: { web: 8080, rpc: 9000 } }),
      kPod('p2', '10.1.0.2', { app: 'app' }, { ports: { web: 8081 } }),
      kPod('p3', '10.1.0.3', { app: 'app' }, { ports: { web: 8082 } }),
    ]);
    expect(endpointsOf(s, 'outbound|80||app.default.svc.cluster.local')).toEqual(['10.1.0.1:8080', '10.1.0.2:8081', '10.1.0.3:8082']);
    expect(endpointsOf(s, 'outbound|9090||app.default.svc.cluster.local')).toEqual(['10.1.0.1:9000']);
  });

  it('an endpoint without targetRef takes the labels of the ready Pod at its address in the namespace; slices of another Service or of MCS are not its own', () => {
    const mcs = kSlice('app-mcs', 'app', [{ ip: '10.9.9.9', pod: null }], [{ name: 'http', port: 80 }]);
    mcs.metadata.labels['multicluster.kubernetes.io/service-name'] = 'app';
    const s = snap([
      kService('app', [{ name: 'http', port: 80 }]),
      destinationRule('app', 'app', { blue: { color: 'blue' } }),
      kSlice('app-1', 'app', [{ ip: '10.1.0.1', pod: null }, { ip: '10.1.0.2', pod: null }], [{ name: 'http', port: 80 }]),
      kSlice('other-1', 'other', [{ ip: '10.1.0.7', pod: null }], [{ name: 'http', port: 80 }]),
      mcs,
      kPod('p1', '10.1.0.1', { color: 'blue' }),
    ]);
    expect(endpointsOf(s, 'outbound|80||app.default.svc.cluster.local')).toEqual(['10.1.0.1:80', '10.1.0.2:80']);
    expect(endpointsOf(s, 'outbound|80|blue|app.default.svc.cluster.local')).toEqual(['10.1.0.1:80']);
  });

  it('the same address in two slices (an endpoint moving between slices) is one endpoint', () => {
    const s = snap([
      kService('app', [{ name: 'http', port: 80 }]),
      kSlice('app-1', 'app', [{ ip: '10.1.0.1', pod: 'p1' }], [{ name: 'http', port: 80 }]),
      kSlice('app-2', 'app', [{ ip: '10.1.0.1', pod: 'p1' }, { ip: '10.1.0.2', pod: 'p2' }], [{ name: 'http', port: 80 }]),
      kPod('p1', '10.1.0.1', {}),
      kPod('p2', '10.1.0.2', {}),
    ]);
    expect(endpointsOf(s, 'outbound|80||app.default.svc.cluster.local')).toEqual(['10.1.0.1:80', '10.1.0.2:80']);
  });

  it('IPv6 slices give IPv6 endpoints; FQDN slices are not read (as in Istio), said once', () => {
    const s = snap([
      kService('app', [{ name: 'http', port: 80 }]),
      kSlice('app-v6', 'app', [{ ip: 'fd00::1', pod: 'p1' }], [{ name: 'http', port: 80 }], { addressType: 'IPv6' }),
      kSlice('app-fqdn', 'app', [{ ip: 'backend.example.com', pod: null }], [{ name: 'http', port: 80 }], { addressType: 'FQDN' }),
      kPod('p1', 'fd00::1', {}),
    ]);
    expect(endpointsOf(s, 'outbound|80||app.default.svc.cluster.local')).toEqual(['fd00::1:80']);
    expect(warnings(s)).toEqual([expect.stringContaining('EndpointSlice/default/app-fqdn: addressType: EndpointSlices of addressType FQDN are not supported (by Istio either); its endpoints are ignored')]);
  });

  it('a headless Service (clusterIP None) is routed to its endpoints, the Pod IPs (EDS, as Istio does for a gateway)', () => {
    const s = snap([
      kService('db', [{ name: 'tcp', port: 5432 }], { clusterIP: 'None' }),
      kSlice('db-1', 'db', [{ ip: '10.2.0.1', pod: 'db-0' }, { ip: '10.2.0.2', pod: 'db-1' }], [{ name: 'tcp', port: 5432 }]),
      kPod('db-0', '10.2.0.1', { app: 'db' }),
      kPod('db-1', '10.2.0.2', { app: 'db' }),
    ]);
    expect(s.clusters.get('outbound|5432||db.default.svc.cluster.local')?.type).toBe('EDS');
    expect(endpointsOf(s, 'outbound|5432||db.default.svc.cluster.local')).toEqual(['10.2.0.1:5432', '10.2.0.2:5432']);
  });

  it('an ExternalName Service is an alias: routes to it go to the clusters of the host it names; none of its own; said when that host is unknown', () => {
    const s = snap([
      gateway('gw', 8080),
      kService('ext', [{ name: 'http', port: 80 }], { type: 'ExternalName', externalName: 'reviews.default.svc.cluster.local' }),
      kService('nowhere', [{ name: 'http', port: 80 }], { type: 'ExternalName', externalName: 'api.example.com.' }),
      ...REVIEWS.slice(1, 6),
      virtualService('alias', ['alias.example.com'], [{ route: [dest('ext')] }]),
    ]);
    expect([...s.clusters.keys()].filter((k) => k.includes('ext.default') || k.includes('nowhere'))).toEqual([]);
    const vh = s.routes.get('http.8080')!.virtual_hosts.find((v) => v.name === 'alias.example.com:8080')!;
    expect(vh.routes[0]!.route?.cluster).toBe(`outbound|80||${FQDN}`);
    expect(warnings(s)).toEqual([expect.stringContaining('Service/default/nowhere: spec.externalName: ExternalName api.example.com is neither a Service nor a ServiceEntry host here')]);
  });

  it('an ExternalName alias of a ServiceEntry DNS host routes to that ServiceEntry (STRICT_DNS to the name)', () => {
    const s = snap([
      gateway('gw', 8080),
      kService('httpbin', [{ name: 'http', port: 80 }], { type: 'ExternalName', externalName: 'httpbin.org' }),
      { apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: { name: 'httpbin', namespace: 'default' }, spec: { hosts: ['httpbin.org'], location: 'MESH_EXTERNAL', resolution: 'DNS', ports: [{ number: 80, name: 'http', protocol: 'HTTP' }] } },
      virtualService('hb', ['hb.example.com'], [{ route: [dest('httpbin')] }]),
    ]);
    const vh = s.routes.get('http.8080')!.virtual_hosts.find((v) => v.name === 'hb.example.com:8080')!;
    expect(vh.routes[0]!.route?.cluster).toBe('outbound|80||httpbin.org');
    expect(s.clusters.get('outbound|80||httpbin.org')?.type).toBe('STRICT_DNS');
    expect(warnings(s)).toEqual([]);
  });

  it('a Kubernetes Service wins its host over a ServiceEntry declaring it (Istio), said on the ServiceEntry; the ServiceEntry’s other hosts keep working', () => {
    const se = {
      apiVersion: 'networking.istio.io/v1',
      kind: 'ServiceEntry',
      metadata: { name: 'squat', namespace: 'default' },
      spec: { hosts: ['other.example.com', 'reviews'], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 80, name: 'http', protocol: 'HTTP' }], endpoints: [{ address: '192.168.0.9' }] },
    };
    // The ServiceEntry first in config order (older): the Service still wins.
    const s = snap([se, ...REVIEWS]);
    expect(endpointsOf(s, `outbound|80||${FQDN}`)).toEqual(['10.0.0.1:9080', '10.0.0.2:9080', '10.0.0.3:9080']);
    expect(endpointsOf(s, 'outbound|80||other.example.com')).toEqual(['192.168.0.9:80']);
    expect(warnings(s)).toEqual([
      `cfg.yaml:9: ServiceEntry/default/squat: spec.hosts[1]: host ${FQDN} is also Kubernetes Service default/reviews, which takes precedence (as in Istio); this ServiceEntry's ports and endpoints for it are not used`,
    ]);
  });

  it('WorkloadEntries the Service selects are endpoints too, on its targetPort (by number, or by name from their ports)', () => {
    const we = (name: string, address: string, labels: Record<string, string>, ports?: Record<string, number>) => ({ apiVersion: 'networking.istio.io/v1', kind: 'WorkloadEntry', metadata: { name, namespace: 'default' }, spec: { address, labels, ...(ports ? { ports } : {}) } });
    const s = snap([
      kService('vm', [{ name: 'http', port: 80, targetPort: 8080 }, { name: 'admin', port: 9000, targetPort: 'admin-port' }], { selector: { app: 'vm' } }),
      we('vm-1', '192.168.1.1', { app: 'vm' }),
      we('vm-2', '192.168.1.2', { app: 'vm' }, { http: 8081, 'admin-port': 9901 }),
      we('other', '192.168.1.3', { app: 'other' }),
    ]);
    expect(endpointsOf(s, 'outbound|80||vm.default.svc.cluster.local')).toEqual(['192.168.1.1:8080', '192.168.1.2:8081']);
    expect(endpointsOf(s, 'outbound|9000||vm.default.svc.cluster.local')).toEqual(['192.168.1.2:9901']);
  });

  it('--cluster-domain: Services and short hosts complete with it', () => {
    const s = snap(REVIEWS, { clusterDomain: 'corp.example' });
    const host = 'reviews.default.svc.corp.example';
    expect(endpointsOf(s, `outbound|80|v1|${host}`)).toEqual(['10.0.0.1:9080', '10.0.0.2:9080']);
    const vh = s.routes.get('http.8080')!.virtual_hosts.find((v) => v.name === 'reviews.example.com:8080')!;
    expect(vh.routes.map((r) => r.route?.cluster)).toEqual([`outbound|80|v2|${host}`, `outbound|80|v1|${host}`]);
    expect(s.clusters.get(`outbound|80||${host}`)!.metadata.filter_metadata.istio).toMatchObject({ name: 'reviews', namespace: 'default' });
    expect([...s.clusters.keys()].some((k) => k.endsWith('cluster.local'))).toBe(false);
    // The sidecar view answers the Kubernetes short names of the domain.
    const view = s.sidecar.get('default')!;
    expect([...view.listeners.keys()]).toEqual(expect.arrayContaining(['reviews:80', 'reviews.default:80', 'reviews.default.svc:80', `${host}:80`]));
    expect(warnings(s)).toEqual([]);
  });

  it('the networking.istio.io/exportTo annotation scopes a Service as exportTo does', () => {
    const s = snap([kService('private', [{ name: 'http', port: 80 }], { annotations: { 'networking.istio.io/exportTo': '.' } }), kService('public', [{ name: 'http', port: 80 }]), { apiVersion: 'v1', kind: 'Service', metadata: { name: 'x', namespace: 'other' }, spec: { ports: [{ name: 'http', port: 80 }] } }]);
    const names = (ns: string) => [...s.sidecar.get(ns)!.listeners.keys()].filter((k) => !k.startsWith('x'));
    expect(names('default')).toEqual(expect.arrayContaining(['private:80', 'public:80']));
    expect(names('other')).not.toContain('private.default:80');
    expect(names('other')).toContain('public.default:80');
  });
});

describe('a change of EndpointSlices and Pods only (the --kubernetes fast path, istiod: EDS push alone)', () => {
  const parse = (docs: KObj[]) => {
    const { resources, problems } = parseYamlText(yamlDocs(...docs), 'cfg.yaml');
    expect(problems).toEqual([]);
    return resources;
  };
  /** What resolve() makes of `docs`, as JSON (maps as entry lists), to compare two snapshots whole. */
  const whole = (s: Snapshot): string => JSON.stringify(s, (_k, v: unknown) => (v instanceof Map ? [...v] : v));
  const scaled = (endpoints: Parameters<typeof kSlice>[2]): KObj[] => REVIEWS.map((d) => (d.kind === 'EndpointSlice' ? kSlice('reviews-a', 'reviews', endpoints, [{ name: 'http', port: 9080 }]) : d));

  it('endpoints added, removed, made not ready, or moved between subsets by a Pod label: the same snapshot as a full translation, hash included, with the rest of the last one kept', () => {
    const before = resolve(parse(REVIEWS), OPTS);
    const changes: KObj[][] = [
      scaled([{ ip: '10.0.0.1', pod: 'reviews-v1-a' }, { ip: '10.0.0.3', pod: 'reviews-v2-a' }]),
      scaled([{ ip: '10.0.0.1', pod: 'reviews-v1-a' }, { ip: '10.0.0.2', pod: 'reviews-v1-b', ready: false, terminating: true }, { ip: '10.0.0.3', pod: 'reviews-v2-a' }]),
      REVIEWS.map((d) => (d.kind === 'Pod' && d.metadata.name === 'reviews-v1-b' ? kPod('reviews-v1-b', '10.0.0.2', { app: 'reviews', version: 'v2' }, { ports: { 'http-web': 9080 } }) : d)),
    ];
    for (const docs of changes) {
      const full = resolve(parse(docs), OPTS);
      const fast = resolveEndpoints(before, parse(docs), OPTS)!;
      expect(fast).toBeDefined();
      expect(fast.hash).not.toBe(before.hash);
      expect(fast.hash).toBe(full.hash);
      expect(whole(fast)).toBe(whole(full));
      // The parts that did not change are the last snapshot's own objects.
      expect(fast.routes).toBe(before.routes);
      expect(fast.clusters).toBe(before.clusters);
    }
    // 10.0.0.2 (v1) removed: the v2 subset's endpoints are the same object as before.
    const first = resolveEndpoints(before, parse(changes[0]!), OPTS)!;
    expect(first.endpoints.get(`outbound|80|v2|${FQDN}`)).toBe(before.endpoints.get(`outbound|80|v2|${FQDN}`));
    expect(first.endpoints.get(`outbound|80|v1|${FQDN}`)).not.toBe(before.endpoints.get(`outbound|80|v1|${FQDN}`));
    // Nothing that matters changed: the same snapshot.
    expect(resolveEndpoints(before, parse(REVIEWS), OPTS)).toBe(before);
  });

  it('a change that reaches further than endpoints (an FQDN slice said once) is left to a full translation', () => {
    const before = resolve(parse(REVIEWS), OPTS);
    const fqdn = kSlice('reviews-b', 'reviews', [{ ip: 'reviews.example.com', pod: null }], [{ name: 'http', port: 9080 }], { addressType: 'FQDN' });
    expect(resolveEndpoints(before, parse([...REVIEWS, fqdn]), OPTS)).toBeUndefined();
  });

  it('sidecarViews: false leaves the sidecar views out, and only them', () => {
    const all = resolve(parse(REVIEWS), OPTS);
    const gatewayOnly = resolve(parse(REVIEWS), { ...OPTS, sidecarViews: false });
    expect(all.sidecar.size).toBeGreaterThan(0);
    expect(gatewayOnly.sidecar.size).toBe(0);
    expect(JSON.stringify([...gatewayOnly.routes])).toBe(JSON.stringify([...all.routes]));
    expect(JSON.stringify([...gatewayOnly.endpoints])).toBe(JSON.stringify([...all.endpoints]));
  });
});
