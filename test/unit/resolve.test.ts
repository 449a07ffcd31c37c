import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve, type ResolveOptions } from '../../src/controlplane/resolve.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';
import { compileRoute, pickCluster } from '../../src/routing/route-table.js';

const OPTS: ResolveOptions = { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG };

function snap(yaml: string, opts: Partial<ResolveOptions> = {}): Snapshot {
  const { resources, problems } = parseYamlText(yaml, 'cfg.yaml');
  expect(problems).toEqual([]);
  return resolve(resources, { ...OPTS, ...opts });
}

const BOOKINFO = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*.example.com", "bookinfo.local"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [bookinfo.local]
  gateways: [bookinfo-gateway]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
    - queryParams: {user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 75
    - destination: {host: reviews, subset: v3}
      weight: 25
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 300ms, retryOn: "5xx,503"}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 250ms}}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  - name: v3
    labels: {version: v3}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, ports: {http: 9081}, labels: {app: reviews, version: v1}}
  - {address: 10.0.0.2, labels: {app: reviews, version: v2}}
  - {address: 10.0.0.3, ports: {http: 9083}, labels: {app: reviews, version: v3}, locality: us/east/a}
`;

describe('resolve: Istio resources to an xDS-shaped snapshot', () => {
  it('builds one listener per Gateway port, named as Envoy names gateway listeners', () => {
    const s = snap(BOOKINFO);
    expect(s.listeners.map((l) => l.name)).toEqual(['0.0.0.0_8080']);
    expect(s.listeners[0]!.filter_chains[0]!.filters[0]!.typed_config.rds?.route_config_name).toBe('http.8080');
  });

  it('selects Gateways by --labels: a selector that does not match yields no listener', () => {
    expect(snap(BOOKINFO, { labels: { istio: 'egressgateway' } }).listeners).toEqual([]);
    expect(snap(BOOKINFO, { labels: {} }).listeners).toEqual([]);
  });

  it('names clusters outbound|<port>|<subset>|<fqdn>, completing short hosts in the resource namespace', () => {
    const s = snap(BOOKINFO);
    expect([...s.clusters.keys()]).toEqual([
      'outbound|9080||reviews.default.svc.cluster.local',
      'outbound|9080|v1|reviews.default.svc.cluster.local',
      'outbound|9080|v2|reviews.default.svc.cluster.local',
      'outbound|9080|v3|reviews.default.svc.cluster.local',
    ]);
  });

  it('selects subset endpoints by label, with the port from the endpoint ports map or the service port', () => {
    const s = snap(BOOKINFO);
    const eps = (name: string): string[] =>
      s.endpoints.get(name)!.endpoints.flatMap((l) => l.lb_endpoints.map((e) => `${e.endpoint.address.socket_address.address}:${e.endpoint.address.socket_address.port_value}`));
    expect(eps('outbound|9080||reviews.default.svc.cluster.local')).toEqual(['10.0.0.1:9081', '10.0.0.2:9080', '10.0.0.3:9083']);
    expect(eps('outbound|9080|v2|reviews.default.svc.cluster.local')).toEqual(['10.0.0.2:9080']);
    const v3 = s.endpoints.get('outbound|9080|v3|reviews.default.svc.cluster.local')!.endpoints[0]!;
    expect(v3.locality).toEqual({ region: 'us', zone: 'east', sub_zone: 'a' });
    expect(v3.load_balancing_weight).toBe(1);
  });

  it('merges subset traffic policy over the rule-level one (connect timeout inherited, LB overridden)', () => {
    const s = snap(BOOKINFO);
    const v1 = s.clusters.get('outbound|9080|v1|reviews.default.svc.cluster.local')!;
    const v2 = s.clusters.get('outbound|9080|v2|reviews.default.svc.cluster.local')!;
    expect(v1.lb_policy).toBe('ROUND_ROBIN');
    expect(v2.lb_policy).toBe('LEAST_REQUEST');
    expect(v2.connect_timeout).toEqual({ seconds: 0, nanos: 250_000_000 });
    // Istio's defaults: no circuit-breaker limits (2^32-1), 1h idle timeout.
    expect(v1.circuit_breakers.thresholds[0]!.max_pending_requests).toBe(4294967295);
    expect(v1.common_http_protocol_options.idle_timeout).toEqual({ seconds: 3600, nanos: 0 });
  });

  it('makes a virtual host per VirtualService host with port-agnostic domains, and a route per match entry', () => {
    const s = snap(BOOKINFO);
    const rc = s.routes.get('http.8080')!;
    expect(rc.virtual_hosts.map((v) => [v.name, v.domains])).toEqual([['bookinfo.local:8080', ['bookinfo.local', 'bookinfo.local:*']]]);
    const routes = rc.virtual_hosts[0]!.routes;
    expect(routes.map((r) => r.name)).toEqual(['jason', 'jason', 'reviews.1']);
    expect(routes[0]!.match.headers).toEqual([{ name: 'end-user', string_match: { exact: 'jason' } }]);
    expect(routes[1]!.match.query_parameters).toEqual([{ name: 'user', string_match: { exact: 'jason' } }]);
    expect(routes[0]!.route!.cluster).toBe('outbound|9080|v2|reviews.default.svc.cluster.local');
  });

  it('translates weights, timeout and retries (numeric retryOn codes become retriable status codes)', () => {
    const route = snap(BOOKINFO).routes.get('http.8080')!.virtual_hosts[0]!.routes[2]!;
    expect(route.route!.weighted_clusters).toEqual({
      clusters: [
        { name: 'outbound|9080|v1|reviews.default.svc.cluster.local', weight: 75 },
        { name: 'outbound|9080|v3|reviews.default.svc.cluster.local', weight: 25 },
      ],
      total_weight: 100,
    });
    expect(route.route!.timeout).toEqual({ seconds: 1, nanos: 500_000_000 });
    expect(route.route!.retry_policy).toMatchObject({ num_retries: 3, retry_on: '5xx,retriable-status-codes', retriable_status_codes: [503], per_try_timeout: { seconds: 0, nanos: 300_000_000 } });
  });

  it("applies Istio's default retry policy when a route has none, and none with attempts: 0", () => {
    const yaml = BOOKINFO.replace('    retries: {attempts: 3, perTryTimeout: 300ms, retryOn: "5xx,503"}\n', '    retries: {attempts: 0}\n');
    const routes = snap(yaml).routes.get('http.8080')!.virtual_hosts[0]!.routes;
    expect(routes[0]!.route!.retry_policy).toEqual({
      retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
      num_retries: 2,
      retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts' }],
      host_selection_retry_max_attempts: 5,
    });
    expect(routes[2]!.route!.retry_policy).toBeUndefined();
  });

  it('binds a VirtualService only to the Gateways it names, and only for hosts the server accepts', () => {
    const other = BOOKINFO.replace('gateways: [bookinfo-gateway]', 'gateways: [other-gateway]');
    expect(snap(other).routes.get('http.8080')!.virtual_hosts).toEqual([]);
    const wrongHost = BOOKINFO.replace('hosts: [bookinfo.local]', 'hosts: [shop.other.org]');
    expect(snap(wrongHost).routes.get('http.8080')!.virtual_hosts).toEqual([]);
    const wildcard = BOOKINFO.replace('hosts: [bookinfo.local]', 'hosts: ["*"]');
    // The VS host `*` intersected with the server's hosts gives the server's names.
    expect(snap(wildcard).routes.get('http.8080')!.virtual_hosts.map((v) => v.name)).toEqual(['*.example.com:8080', 'bookinfo.local:8080']);
  });

  it('respects the namespace part of server hosts (ns/host)', () => {
    const scoped = BOOKINFO.replace('hosts: ["*.example.com", "bookinfo.local"]', 'hosts: ["prod/bookinfo.local"]');
    expect(snap(scoped).routes.get('http.8080')!.virtual_hosts).toEqual([]);
    const ok = BOOKINFO.replace('hosts: ["*.example.com", "bookinfo.local"]', 'hosts: ["default/bookinfo.local"]');
    expect(snap(ok).routes.get('http.8080')!.virtual_hosts).toHaveLength(1);
  });

  it('is pure and content-hashed: same input, same hash; any change, another hash', () => {
    expect(snap(BOOKINFO).hash).toBe(snap(BOOKINFO).hash);
    expect(snap(BOOKINFO.replace('weight: 75', 'weight: 70').replace('weight: 25', 'weight: 30')).hash).not.toBe(snap(BOOKINFO).hash);
  });

  it('says what it does differently from what is written instead of dropping it silently', () => {
    const withFault = BOOKINFO.replace('    timeout: 1.5s\n', '    timeout: 1.5s\n    fault: {abort: {httpStatus: 500, percentage: {value: 10}}}\n');
    const s = snap(withFault);
    const w = s.warnings.map((p) => `${p.file}:${p.line}: ${p.path}: ${p.message}`);
    expect(w).toEqual(['cfg.yaml:30: spec.http[1].fault: a route with fault injection has no timeout and no retries (as in Istio); its timeout/retries are ignored']);
    const route = s.routes.get('http.8080')!.virtual_hosts[0]!.routes[2]!;
    expect(route.route!.retry_policy).toBeUndefined();
    expect(route.route!.timeout).toEqual({ seconds: 0, nanos: 0 });
    expect(route.typed_per_filter_config?.['envoy.filters.http.fault']).toEqual({ abort: { http_status: 500, percentage: { numerator: 100000, denominator: 'MILLION' } } });
  });

  it('turns every route of an httpsRedirect server into a 301 to https', () => {
    const redirect = BOOKINFO.replace('    hosts: ["*.example.com", "bookinfo.local"]', '    hosts: ["*.example.com", "bookinfo.local"]\n    tls: {httpsRedirect: true}');
    const routes = snap(redirect).routes.get('http.8080')!.virtual_hosts[0]!.routes;
    expect(routes).toHaveLength(1);
    expect(routes[0]!.redirect).toEqual({ scheme_redirect: 'https', port_redirect: 443, response_code: 'MOVED_PERMANENTLY' });
  });
});

describe('resolve: DestinationRule settings not enforced yet are reported', () => {
  it('warns once per field, at its line', () => {
    const yaml = BOOKINFO.replace('    connectionPool: {tcp: {connectTimeout: 250ms}}\n', '    connectionPool: {tcp: {connectTimeout: 250ms}}\n    loadBalancer: {localityLbSetting: {enabled: true}}\n');
    const w = snap(yaml).warnings.map((p) => `${p.line}: ${p.path}: ${p.message}`);
    expect(w).toEqual(['39: spec.trafficPolicy.loadBalancer.localityLbSetting: locality load balancing is not implemented by Gatehouse yet; ignored']);
  });

  it('translates outlier detection as Istio does (legacy consecutiveErrors = gateway errors; maxEjectionPercent 0 = Envoy default)', () => {
    const yaml = BOOKINFO.replace('    connectionPool: {tcp: {connectTimeout: 250ms}}\n', '    connectionPool: {tcp: {connectTimeout: 250ms}}\n    outlierDetection: {consecutiveErrors: 3, maxEjectionPercent: 0, minHealthPercent: 30}\n');
    const s = snap(yaml);
    expect(s.warnings).toEqual([]);
    const c = s.clusters.get('outbound|9080||reviews.default.svc.cluster.local')!;
    expect(c.outlier_detection).toMatchObject({ consecutive_gateway_failure: 3, enforcing_consecutive_gateway_failure: 100, enforcing_consecutive_5xx: 0, max_ejection_percent: 10 });
    expect(c.metadata.filter_metadata.istio.min_health_percent).toBe(30);
  });
});

describe('resolve: relative weights and Istio port protocols', () => {
  const WEIGHTS = BOOKINFO.replace('      weight: 75', '      weight: 1').replace('      weight: 25', '      weight: 3');

  it('weights 1 and 3 are 1/4 and 3/4 (Envoy total_weight = their sum); 400 evenly spread picks split exactly 100/300', () => {
    const rc = snap(WEIGHTS).routes.get('http.8080')!;
    const route = rc.virtual_hosts[0]!.routes[2]!;
    expect(route.route!.weighted_clusters).toEqual({
      clusters: [
        { name: 'outbound|9080|v1|reviews.default.svc.cluster.local', weight: 1 },
        { name: 'outbound|9080|v3|reviews.default.svc.cluster.local', weight: 3 },
      ],
      total_weight: 4,
    });
    const action = compileRoute(route).action;
    if (action.kind !== 'forward') throw new Error('not a forwarding route');
    const counts = new Map<string, number>();
    for (let i = 0; i < 400; i++) {
      const c = pickCluster(action, (i + 0.5) / 400).name;
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    expect(Object.fromEntries(counts)).toEqual({ 'outbound|9080|v1|reviews.default.svc.cluster.local': 100, 'outbound|9080|v3|reviews.default.svc.cluster.local': 300 });
  });

  const PROTOCOLS = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 3306, name: mysql, protocol: MYSQL}
    hosts: ["*"]
  - port: {number: 6379, name: redis, protocol: redis}
    hosts: ["*"]
  - port: {number: 5353, name: udp, protocol: UDP}
    hosts: ["*"]
  - port: {number: 3128, name: proxy, protocol: HTTP_PROXY}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backends, namespace: default}
spec:
  hosts: [backends.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 3306, name: mysql, protocol: MYSQL}
  - {number: 6379, name: redis, protocol: REDIS}
  - {number: 27017, name: mongo, protocol: MONGO}
  - {number: 53, name: dns, protocol: UDP}
  - {number: 8080, name: web}
  - {number: 8081, name: web2, protocol: ""}
  - {number: 3128, name: proxy, protocol: HTTP_PROXY}
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: l4, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{port: 3306}]
    route: [{destination: {host: backends.default.svc.cluster.local, port: {number: 3306}}}]
  - match: [{port: 6379}]
    route: [{destination: {host: backends.default.svc.cluster.local, port: {number: 6379}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: istio-system}
spec:
  hosts: [web.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: backends.default.svc.cluster.local, port: {number: 8080}}}]
`;

  it('MYSQL, REDIS, MONGO are proxied as TCP; UDP gets a TCP listener on a Gateway and no cluster on a ServiceEntry (warned); HTTP_PROXY is HTTP', () => {
    const s = snap(PROTOCOLS);
    const listener = (port: number) => s.listeners.find((l) => l.address.socket_address.port_value === port)!;
    for (const port of [3306, 6379, 5353]) expect(listener(port).metadata.filter_metadata.istio.protocol).toBe('TCP');
    expect(listener(3128).metadata.filter_metadata.istio.protocol).toBe('HTTP');
    expect(listener(3306).filter_chains[0]!.filters[0]!.typed_config).toMatchObject({ cluster: 'outbound|3306||backends.default.svc.cluster.local' });
    expect(listener(6379).filter_chains[0]!.filters[0]!.typed_config).toMatchObject({ cluster: 'outbound|6379||backends.default.svc.cluster.local' });
    const clusters = [...s.clusters.keys()].filter((c) => c.endsWith('|backends.default.svc.cluster.local')).sort();
    expect(clusters).toEqual(['outbound|27017||', 'outbound|3128||', 'outbound|3306||', 'outbound|6379||', 'outbound|8080||', 'outbound|8081||'].map((c) => `${c}backends.default.svc.cluster.local`).sort());
    const warnings = s.warnings.map((w) => `${w.line}: ${w.path}: ${w.message}`);
    expect(warnings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^13: spec\.servers\[3\]\.port\.protocol: UDP is not proxied/),
        expect.stringMatching(/^29: spec\.ports\[3\]\.protocol: UDP is not proxied/),
        expect.stringMatching(/^32: spec\.ports\[6\]\.protocol: HTTP_PROXY declares a Sidecar egress proxy port/),
      ]),
    );
  });

  it('a port without a protocol (Istio sniffs) takes HTTP routes over HTTP/1.1, and gets HTTP routes in the sidecar view', () => {
    const s = snap(PROTOCOLS);
    const vh = s.routes.get('http.8080')!.virtual_hosts.find((v) => v.domains.includes('web.example.com'))!;
    expect(vh.routes[0]!.route!.cluster).toBe('outbound|8080||backends.default.svc.cluster.local');
    expect(s.clusters.get('outbound|8080||backends.default.svc.cluster.local')!.http2_protocol_options).toBeUndefined();
    const view = s.sidecar.get('default')!;
    expect([...view.routes.keys()].filter((r) => r.endsWith('|backends.default.svc.cluster.local')).sort()).toEqual(
      ['outbound|3128||backends.default.svc.cluster.local', 'outbound|8080||backends.default.svc.cluster.local', 'outbound|8081||backends.default.svc.cluster.local'],
    );
  });
});
