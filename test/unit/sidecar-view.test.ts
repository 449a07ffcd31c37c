// The sidecar view that xDS clients get (VirtualServices bound to `mesh`, per client namespace,
// as istiod's grpc generator serves proxyless clients) and the proxyless dialect: what is left
// out or moved for them, and the warnings that say so.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { toProxylessCluster, toProxylessRoutes, type RouteWithHash } from '../../src/controlplane/proxyless.js';
import { resolve } from '../../src/controlplane/resolve.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';

function snap(yaml: string): Snapshot {
  const { resources, problems } = parseYamlText(yaml, '/etc/gw/mesh.yaml');
  expect(problems).toEqual([]);
  return resolve(resources, { labels: {}, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });
}

const CONFIG = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 50051, name: grpc, protocol: GRPC}]
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}, {address: 127.0.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: team}
spec:
  hosts: [private.team.svc.cluster.local]
  exportTo: [.]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.3}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
    outlierDetection: {consecutive5xxErrors: 3}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - name: moved
    match: [{headers: {x-old: {exact: "1"}}}]
    redirect: {uri: /new}
  - name: query
    match: [{queryParams: {debug: {exact: "1"}}}]
    route: [{destination: {host: echo, subset: v2}}]
  - name: v2
    match: [{headers: {x-version: {exact: v2}}}]
    timeout: 2s
    retries: {attempts: 3, retryOn: "unavailable,5xx"}
    headers: {request: {set: {x-a: b}}}
    route: [{destination: {host: echo, subset: v2}}]
  - name: split
    route:
    - {destination: {host: echo, subset: v1}, weight: 80}
    - {destination: {host: echo, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge-only, namespace: default}
spec:
  hosts: [echo]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: echo, subset: v1}}]
`;

describe('sidecar view per client namespace', () => {
  const s = snap(CONFIG);

  it('listeners by every name a client of the namespace may ask for; other namespaces see only the FQDN forms', () => {
    expect([...s.sidecar.get('default')!.listeners.keys()]).toEqual(['echo.default.svc.cluster.local:50051', 'echo.default:50051', 'echo.default.svc:50051', 'echo:50051']);
    const other = s.sidecar.get('')!;
    expect([...other.listeners.keys()]).toEqual(['echo.default.svc.cluster.local:50051', 'echo.default:50051', 'echo.default.svc:50051']);
    const l = s.sidecar.get('default')!.listeners.get('echo:50051')!;
    expect(l.api_listener.api_listener.rds.route_config_name).toBe('outbound|50051||echo.default.svc.cluster.local');
    expect(l.api_listener.api_listener.http_filters.map((f) => f.typed_config?.['@type'])).toEqual([
      'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault',
      'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
    ]);
  });

  it('exportTo "." keeps a service to its own namespace', () => {
    expect(s.sidecar.get('team')!.listeners.has('private:8080')).toBe(true);
    expect(s.sidecar.get('default')!.listeners.has('private.team.svc.cluster.local:8080')).toBe(false);
    expect(s.sidecar.get('')!.routes.has('outbound|8080||private.team.svc.cluster.local')).toBe(false);
  });

  it('routes come from VirtualServices bound to mesh only; a service without one gets a default route', () => {
    const rc = s.sidecar.get('default')!.routes.get('outbound|50051||echo.default.svc.cluster.local')!;
    expect(rc.virtual_hosts).toHaveLength(1);
    expect(rc.virtual_hosts[0]!.domains).toContain('echo:50051');
    expect(rc.virtual_hosts[0]!.routes.map((r) => r.name)).toEqual(['moved', 'query', 'v2', 'split']);
    const team = s.sidecar.get('team')!.routes.get('outbound|8080||private.team.svc.cluster.local')!;
    expect(team.virtual_hosts[0]!.routes.map((r) => [r.name, r.route?.cluster])).toEqual([['default', 'outbound|8080||private.team.svc.cluster.local']]);
  });

  it('warns, with file and line, about what proxyless clients cannot honour', () => {
    const w = s.warnings.map((p) => `${p.line} ${p.resource} ${p.path}: ${p.message}`);
    expect(w).toContain('43 VirtualService/default/echo spec.http[0].redirect: proxyless gRPC clients reject route configurations with redirects; this route is left out for them');
    expect(w.some((x) => x.startsWith('45 VirtualService/default/echo spec.http[1].match[0].queryParams:'))).toBe(true);
    expect(w.some((x) => x.includes('spec.http[2].retries.retryOn: proxyless gRPC clients ignore retry conditions other than gRPC statuses') && x.endsWith(': 5xx'))).toBe(true);
    expect(w.some((x) => x.includes('spec.http[2].headers: proxyless gRPC clients ignore header edits'))).toBe(true);
    expect(w.some((x) => x.includes('DestinationRule/default/echo spec.trafficPolicy.outlierDetection:'))).toBe(true);
    // Reported once, though every namespace's view holds the route.
    expect(w.filter((x) => x.includes('spec.http[0].redirect')).length).toBe(1);
  });
});

describe('proxyless encoding', () => {
  const s = snap(CONFIG);
  const rc = toProxylessRoutes(s.sidecar.get('default')!.routes.get('outbound|50051||echo.default.svc.cluster.local')!, s.clusters);
  const routes = rc.virtual_hosts[0]!.routes;

  it('leaves out redirect and query-parameter routes (a redirect would make the client NACK everything)', () => {
    expect(routes.map((r) => r.name)).toEqual(['v2', 'split']);
  });

  it('timeout → max_stream_duration; retries reduced to gRPC conditions; hash policy on the route; no header edits', () => {
    const v2 = routes[0]!.route as RouteWithHash;
    expect(v2.max_stream_duration).toEqual({ max_stream_duration: { seconds: 2, nanos: 0 } });
    expect(v2.retry_policy).toEqual({ retry_on: 'unavailable', num_retries: 3 });
    expect(v2.hash_policy).toEqual([{ header: { header_name: 'x-user' } }]);
    expect(routes[0]!.request_headers_to_add).toBeUndefined();
    const split = routes[1]!.route!;
    expect(split.weighted_clusters!.clusters.map((c) => [c.name, c.weight])).toEqual([
      ['outbound|50051|v1|echo.default.svc.cluster.local', 80],
      ['outbound|50051|v2|echo.default.svc.cluster.local', 20],
    ]);
    expect(split.retry_policy).toEqual({ retry_on: 'unavailable,cancelled', num_retries: 2 });
  });

  it('clusters: EDS over ADS, ring hash kept, outlier detection and TLS left out', () => {
    const c = toProxylessCluster(s.clusters.get('outbound|50051|v1|echo.default.svc.cluster.local')!);
    expect(c.type).toBe('EDS');
    expect(c.lb_policy).toBe('RING_HASH');
    expect(c.outlier_detection).toBeUndefined();
    expect(c.eds_cluster_config!.service_name).toBe(c.name);
  });
});
