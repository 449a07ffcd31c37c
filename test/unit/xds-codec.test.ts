// The xDS protobuf codec: every resource of a rich resolved snapshot survives
// snapshot -> Envoy proto bytes -> snapshot exactly, the bytes are genuine Envoy protos (plain
// protobufjs reads them), and drift between the snapshot and the protos fails loudly.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { toProxylessCluster, toProxylessRoutes } from '../../src/controlplane/proxyless.js';
import { resolve } from '../../src/controlplane/resolve.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';
import {
  decodeAny,
  decodeResource,
  decodeSnapshotResource,
  encodeAny,
  encodeResource,
  encodeSnapshotResource,
  protoToSnapshotResource,
  snapshotResourceToProto,
} from '../../src/controlplane/xds/codec.js';
import { adsServiceClient, CLUSTER_TYPE, ENDPOINT_TYPE, HTTP_FAULT_TYPE, LISTENER_TYPE, protoRoot, ROUTE_TYPE, SECRET_TYPE } from '../../src/controlplane/xds/protos.js';

const CONFIG = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["shop/*"]
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [shop/a.example.com]
    tls: {mode: SIMPLE, serverCertificate: certs/a.crt, privateKey: /abs/a.key, minProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ["*.b.example.com"]
    tls: {mode: MUTUAL, credentialName: b-cred, subjectAltNames: [spiffe://cluster.local/ns/shop/sa/client]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: acme-gw, namespace: shop, annotations: {gatehouse.io/acme-directory: "https://acme.test/dir", gatehouse.io/acme-email: a@b.c}}
spec:
  servers:
  - port: {number: 8443, name: https-acme, protocol: HTTPS}
    hosts: [acme.example.com]
    tls: {mode: SIMPLE, credentialName: acme-cert}
---
apiVersion: v1
kind: Secret
metadata: {name: b-cred, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: B-CERT, tls.key: B-KEY, ca.crt: B-CA}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.com, a.example.com, x.b.example.com]
  gateways: [gw]
  http:
  - name: api
    match:
    - uri: {prefix: /api}
      ignoreUriCase: true
      headers: {x-user: {exact: jason}, x-any: {}}
      queryParams: {debug: {regex: "^1$"}, flag: {exact: ""}}
    - uri: {regex: "^/v[0-9]+/.*"}
      withoutHeaders: {x-skip: {prefix: a}}
      method: {exact: GET}
    route:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v1, port: {number: 9080}}
      weight: 80
      headers: {request: {set: {x-a: "1"}}, response: {remove: [x-internal]}}
    - destination: {host: reviews.shop.svc.cluster.local, subset: v2, port: {number: 9080}}
      weight: 20
    rewrite: {uri: /v2/api, authority: internal.example.com}
    timeout: 2.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,reset,503"}
    mirror: {host: ratings.shop.svc.cluster.local, port: {number: 8080}}
    mirrorPercentage: {value: 12.5}
    headers:
      request: {set: {x-b: v, x-empty: ""}, add: {x-c: w}, remove: [x-d]}
      response: {set: {x-e: f}, remove: [server]}
    corsPolicy:
      allowOrigins: [{exact: "https://a.example.com"}, {prefix: "https://b"}, {regex: ".*\\\\.c\\\\.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      exposeHeaders: [x-b]
      maxAge: 24h
      allowCredentials: false
  - name: faulty
    match: [{uri: {exact: /fault}}]
    fault:
      delay: {fixedDelay: 1.5s, percentage: {value: 0}}
      abort: {httpStatus: 503, percentage: {value: 10}}
    route: [{destination: {host: reviews.shop.svc.cluster.local, port: {number: 9080}}}]
  - name: grpc-fault
    match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: OK, percentage: {value: 100}}}
    route: [{destination: {host: grpc.shop.svc.cluster.local, port: {number: 7070}}}]
  - name: moved
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: new.example.com, derivePort: FROM_REQUEST_PORT, redirectCode: 308}
  - name: moved-default-port
    match: [{uri: {prefix: /old2}}]
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}
  - name: teapot
    match: [{uri: {prefix: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - name: bytes
    match: [{uri: {prefix: /bytes}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8=}}
  - name: regex-rewrite
    match: [{uri: {prefix: /x/}}]
    rewrite: {uriRegexRewrite: {match: "^/x/(.*)", rewrite: "/\\\\1"}}
    retries: {attempts: 0}
    route: [{destination: {host: api.external.com, port: {number: 443}}}]
  - route:
    - destination: {host: ratings.shop.svc.cluster.local, port: {number: 8080}}
    - destination: {host: mtls.shop.svc.cluster.local, port: {number: 8443}}
      weight: 0
    mirrors:
    - destination: {host: reviews.shop.svc.cluster.local, subset: v3, port: {number: 9080}}
      percentage: {value: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc, namespace: shop}
spec:
  hosts: [grpc.shop.svc.cluster.local]
  http:
  - timeout: 3s
    retries: {attempts: 2, retryOn: "unavailable,cancelled"}
    route: [{destination: {host: grpc.shop.svc.cluster.local, port: {number: 7070}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}, locality: us/east/a, weight: 3}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: shop}
spec: {address: 10.0.0.2, ports: {http: 9081}, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings.shop.svc.cluster.local]
  resolution: DNS
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: ratings.internal, labels: {app: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: grpc, namespace: shop}
spec:
  hosts: [grpc.shop.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 7070, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.1.1, labels: {app: grpc}}, {address: 10.0.1.2, labels: {}, locality: eu/west}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: shop}
spec:
  hosts: [api.external.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mtls, namespace: shop}
spec:
  hosts: [mtls.shop.svc.cluster.local]
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 8443, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 3s}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRetries: 3, idleTimeout: 60s, maxRequestsPerConnection: 5, h2UpgradePolicy: UPGRADE}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 50, minHealthPercent: 20}
    loadBalancer: {consistentHash: {httpHeaderName: X-User, ringHash: {minimumRingSize: 2048}}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpCookie: {name: sess, path: /, ttl: 60s}, maglev: {tableSize: 65537}}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  - name: v3
    labels: {version: v3}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: shop}
spec:
  host: ratings.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: true}}
    outlierDetection: {consecutiveGatewayErrors: 0, consecutive5xxErrors: 0, splitExternalLocalOriginErrors: false}
    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/shop/sa/ratings]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: external, namespace: shop}
spec:
  host: api.external.com
  trafficPolicy:
    tls: {mode: SIMPLE, sni: api.external.com, insecureSkipVerify: true}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mtls, namespace: shop}
spec:
  host: mtls.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpQueryParameterName: user}}
    tls: {mode: MUTUAL, clientCertificate: /certs/client.crt, privateKey: /certs/client.key, caCertificates: /certs/ca.crt, subjectAltNames: [mtls.example.com]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: l4, namespace: shop}
spec:
  servers:
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: ["*.pass.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 15443, name: tls-auto, protocol: TLS}
    hosts: ["*.shop.svc.cluster.local"]
    tls: {mode: AUTO_PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 27017, name: mongo, protocol: MONGO}]
  endpoints: [{address: 10.0.2.1, labels: {version: v1}}, {address: 10.0.2.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: shop}
spec:
  host: db.shop.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {idleTimeout: 90s}}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.shop.svc.cluster.local, a.pass.example.com, "*.w.pass.example.com"]
  gateways: [l4]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: db.shop.svc.cluster.local, subset: v1, port: {number: 27017}}
      weight: 70
    - destination: {host: db.shop.svc.cluster.local, subset: v2, port: {number: 27017}}
      weight: 30
  tls:
  - match: [{sniHosts: [a.pass.example.com]}]
    route: [{destination: {host: db.shop.svc.cluster.local, port: {number: 27017}}}]
  - match: [{sniHosts: ["*.w.pass.example.com"], port: 9443}]
    route:
    - destination: {host: db.shop.svc.cluster.local, subset: v1, port: {number: 27017}}
      weight: 50
    - destination: {host: db.shop.svc.cluster.local, subset: v2, port: {number: 27017}}
      weight: 50
`;

function snap(yaml: string): Snapshot {
  const { resources, problems } = parseYamlText(yaml, '/etc/gw/cfg.yaml');
  expect(problems).toEqual([]);
  return resolve(resources, { labels: {}, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });
}

const json = (x: unknown): unknown => JSON.parse(JSON.stringify(x));
const roundTrip = (typeUrl: string, x: object): unknown => decodeSnapshotResource(typeUrl, encodeSnapshotResource(typeUrl, x));

/** protobufjs's own decoder, nothing of ours: proves the bytes are Envoy's messages. */
function plainDecode(typeName: string, bytes: Uint8Array): Record<string, any> {
  const T = protoRoot().lookupType(typeName);
  return T.toObject(T.decode(bytes), { longs: Number, enums: String, defaults: false }) as Record<string, any>;
}

describe('xDS codec: snapshot <-> Envoy v3 protos', () => {
  const s = snap(CONFIG);

  it('the config is rich enough to cover the extensions and the zero-valued fields', () => {
    const routes = [...s.routes.values()].flatMap((rc) => rc.virtual_hosts.flatMap((vh) => vh.routes));
    expect(routes.some((r) => r.redirect?.port_from_request === true)).toBe(true);
    expect(routes.some((r) => r.redirect?.port_redirect === 0)).toBe(true);
    expect(routes.some((r) => r.typed_per_filter_config?.['envoy.filters.http.fault']?.abort?.grpc_status === 0)).toBe(true);
    expect(routes.some((r) => r.typed_per_filter_config?.['envoy.filters.http.cors'])).toBe(true);
    expect(routes.some((r) => r.direct_response?.body?.inline_bytes)).toBe(true);
    expect(routes.some((r) => r.match.headers.length === 0 && r.match.query_parameters.length === 0)).toBe(true);
    const clusters = [...s.clusters.values()];
    expect(clusters.some((c) => c.transport_socket?.typed_config.insecure_skip_verify === true)).toBe(true);
    expect(clusters.some((c) => c.transport_socket?.typed_config.common_tls_context.tls_certificates)).toBe(true);
    // ISTIO_MUTUAL: the mesh identity over SDS, with and without SANs to check.
    const mesh = clusters.filter((c) => c.transport_socket?.typed_config.common_tls_context.tls_certificate_sds_secret_configs?.[0]?.name === 'default');
    expect(mesh.map((c) => c.transport_socket!.typed_config.common_tls_context.combined_validation_context!.validation_context_sds_secret_config.name)).toContain('ROOTCA');
    expect(mesh.some((c) => c.transport_socket!.typed_config.common_tls_context.combined_validation_context!.default_validation_context.match_subject_alt_names)).toBe(true);
    expect(mesh.some((c) => c.transport_socket!.typed_config.sni === 'outbound_.27017_.v2_.db.shop.svc.cluster.local')).toBe(true);
    expect(new Set(clusters.map((c) => c.lb_policy))).toEqual(new Set(['RING_HASH', 'MAGLEV', 'LEAST_REQUEST', 'ROUND_ROBIN']));
    expect(clusters.some((c) => c.outlier_detection?.split_external_local_origin_errors === false)).toBe(true);
    expect([...s.endpoints.values()].some((e) => e.endpoints.length === 0)).toBe(true);
    expect([...s.secrets.values()].some((x) => x.acme)).toBe(true);
    expect(s.listeners.length).toBeGreaterThanOrEqual(3);
    const tcp = s.listeners.find((l) => l.metadata.filter_metadata.istio.protocol === 'TCP')!;
    expect(tcp.filter_chains[0]!.filters[0]!.typed_config).toMatchObject({ weighted_clusters: { clusters: [{ weight: 70 }, { weight: 30 }] }, idle_timeout: { seconds: 90, nanos: 0 } });
    const tls = s.listeners.filter((l) => l.metadata.filter_metadata.istio.protocol === 'TLS');
    expect(tls).toHaveLength(2);
    expect(tls[0]!.listener_filters?.[0]?.name).toBe('envoy.filters.listener.tls_inspector');
    expect(tls[0]!.filter_chains.map((c) => c.filter_chain_match?.server_names)).toEqual([['a.pass.example.com'], ['*.w.pass.example.com']]);
    expect(tls[1]!.filter_chains.map((c) => c.filter_chain_match?.server_names?.[0])).toContain('outbound_.27017_.v2_.db.shop.svc.cluster.local');
  });

  it('every listener, route, cluster, endpoint and secret round-trips exactly', () => {
    let n = 0;
    const check = (typeUrl: string, x: object): void => {
      expect(roundTrip(typeUrl, x), `${typeUrl} ${(x as { name?: string }).name ?? (x as { cluster_name?: string }).cluster_name}`).toStrictEqual(json(x));
      n++;
    };
    for (const l of s.listeners) check(LISTENER_TYPE, l);
    for (const rc of s.routes.values()) check(ROUTE_TYPE, rc);
    for (const c of s.clusters.values()) check(CLUSTER_TYPE, c);
    for (const e of s.endpoints.values()) check(ENDPOINT_TYPE, e);
    for (const x of s.secrets.values()) check(SECRET_TYPE, x);
    expect(n).toBe(s.listeners.length + s.routes.size + s.clusters.size + s.endpoints.size + s.secrets.size);
  });

  it('the sidecar view (API listeners, mesh routes) and its proxyless dialect round-trip exactly', () => {
    let n = 0;
    for (const view of s.sidecar.values()) {
      for (const l of view.listeners.values()) {
        expect(roundTrip(LISTENER_TYPE, l)).toStrictEqual(json(l));
        n++;
      }
      for (const rc of view.routes.values()) {
        expect(roundTrip(ROUTE_TYPE, rc)).toStrictEqual(json(rc));
        const p = toProxylessRoutes(rc, s.clusters);
        expect(roundTrip(ROUTE_TYPE, p)).toStrictEqual(json(p));
        n++;
      }
    }
    for (const c of s.clusters.values()) {
      const p = toProxylessCluster(c);
      expect(roundTrip(CLUSTER_TYPE, p)).toStrictEqual(json(p));
    }
    expect(n).toBeGreaterThan(0);
  });

  it('the bytes are Envoy protos: plain protobufjs reads the expected field values', () => {
    const c = s.clusters.get('outbound|9080||reviews.shop.svc.cluster.local')!;
    const pc = plainDecode('envoy.config.cluster.v3.Cluster', encodeSnapshotResource(CLUSTER_TYPE, c));
    expect(pc.circuit_breakers.thresholds[0].max_requests.value).toBe(1000);
    expect(pc.circuit_breakers.thresholds[0].max_connections.value).toBe(100);
    expect(pc.lb_policy).toBe('RING_HASH');
    expect(pc.ring_hash_lb_config.minimum_ring_size.value).toBe(2048);
    expect(pc.connect_timeout).toEqual({ seconds: 3 });
    expect(pc.outlier_detection.consecutive_5xx.value).toBe(7);
    expect(pc.type).toBe('EDS');
    expect(pc.metadata.filter_metadata.istio.fields.host.stringValue).toBe('reviews.shop.svc.cluster.local');

    const ext = s.clusters.get('outbound|443||api.external.com')!;
    const pe = plainDecode('envoy.config.cluster.v3.Cluster', encodeSnapshotResource(CLUSTER_TYPE, ext));
    expect(pe.transport_socket.typed_config.type_url).toBe('type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext');
    const tls = plainDecode('envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', pe.transport_socket.typed_config.value);
    expect(tls.sni).toBe('api.external.com');
    expect(tls.common_tls_context.validation_context.trust_chain_verification).toBe('ACCEPT_UNTRUSTED');
    expect(pe.metadata.filter_metadata.gatehouse.fields.insecure_skip_verify.boolValue).toBe(true);

    const rc = s.routes.get('http.8080')!;
    const pr = plainDecode('envoy.config.route.v3.RouteConfiguration', encodeSnapshotResource(ROUTE_TYPE, rc));
    const routes = pr.virtual_hosts.flatMap((vh: any) => vh.routes);
    const faulty = routes.find((r: any) => r.name === 'faulty');
    const any = faulty.typed_per_filter_config['envoy.filters.http.fault'];
    expect(any.type_url).toBe(HTTP_FAULT_TYPE);
    const fault = plainDecode('envoy.extensions.filters.http.fault.v3.HTTPFault', any.value);
    expect(fault.abort.http_status).toBe(503);
    expect(fault.abort.percentage).toEqual({ numerator: 100000, denominator: 'MILLION' });
    expect(fault.delay.fixed_delay).toEqual({ seconds: 1, nanos: 500000000 });
    const moved = routes.find((r: any) => r.name === 'moved');
    expect(moved.redirect.response_code).toBe('PERMANENT_REDIRECT');
    expect(moved.redirect.port_from_request).toBeUndefined();
    expect(moved.metadata.filter_metadata.gatehouse.fields.redirect.structValue.fields.port_from_request.boolValue).toBe(true);
    const api = routes.find((r: any) => r.name === 'api');
    expect(api.route.timeout).toEqual({ seconds: 2, nanos: 500000000 });
    // BoolValue false: the wrapper is present (an empty message), its value the default.
    expect(api.match.case_sensitive).toEqual({});
    expect(api.route.weighted_clusters.clusters.map((w: any) => w.weight.value)).toEqual([80, 20]);

    const l = s.listeners.find((x) => x.address.socket_address.port_value === 443)!;
    const pl = plainDecode('envoy.config.listener.v3.Listener', encodeSnapshotResource(LISTENER_TYPE, l));
    expect(pl.traffic_direction).toBe('OUTBOUND');
    const hcm = plainDecode('envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', pl.filter_chains[0].filters[0].typed_config.value);
    expect(hcm.rds.route_config_name).toBe('https.443');
    expect(hcm.use_remote_address.value).toBe(true);
    const dtc = plainDecode('envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext', pl.filter_chains[1].transport_socket.typed_config.value);
    expect(dtc.require_client_certificate.value).toBe(true);
    expect(dtc.common_tls_context.tls_certificate_sds_secret_configs[0].name).toBe('kubernetes://b-cred');
  });

  it('TCP and TLS passthrough listeners are Envoy tcp_proxy filter chains on the wire', () => {
    const l = s.listeners.find((x) => x.address.socket_address.port_value === 9443)!;
    const pl = plainDecode('envoy.config.listener.v3.Listener', encodeSnapshotResource(LISTENER_TYPE, l));
    expect(pl.listener_filters[0].typed_config.type_url).toBe('type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector');
    expect(pl.filter_chains[1].filter_chain_match.server_names).toEqual(['*.w.pass.example.com']);
    const any = pl.filter_chains[1].filters[0].typed_config;
    expect(any.type_url).toBe('type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy');
    const tp = plainDecode('envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', any.value);
    expect(tp.weighted_clusters.clusters).toEqual([
      { name: 'outbound|27017|v1|db.shop.svc.cluster.local', weight: 50 },
      { name: 'outbound|27017|v2|db.shop.svc.cluster.local', weight: 50 },
    ]);
    expect(tp.idle_timeout).toEqual({ seconds: 90 });
    const single = plainDecode('envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', pl.filter_chains[0].filters[0].typed_config.value);
    expect(single.cluster).toBe('outbound|27017||db.shop.svc.cluster.local');
    expect(single.stat_prefix).toBe('outbound|27017||db.shop.svc.cluster.local');
  });

  it('the adapter keeps the snapshot untouched and its proto form is plain Envoy', () => {
    const c = s.clusters.get('outbound|443||api.external.com')!;
    const p = snapshotResourceToProto(CLUSTER_TYPE, c) as any;
    expect(p.transport_socket.typed_config['@type']).toBe('type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext');
    expect(p.transport_socket.typed_config.insecure_skip_verify).toBeUndefined();
    expect(c.transport_socket!.typed_config.insecure_skip_verify).toBe(true);
    expect(protoToSnapshotResource(CLUSTER_TYPE, decodeResource(CLUSTER_TYPE, encodeResource(CLUSTER_TYPE, p)))).toEqual(json(c));
    const acme = [...s.secrets.values()].find((x) => x.acme)!;
    const ps = plainDecode('envoy.extensions.transport_sockets.tls.v3.Secret', encodeSnapshotResource(SECRET_TYPE, acme));
    expect(JSON.parse(ps.generic_secret.secret.inline_string)).toEqual({ gatehouse_acme: json(acme.acme) });
  });

  it('an unknown field throws, naming its path', () => {
    const c = json(s.clusters.get('outbound|9080||reviews.shop.svc.cluster.local')) as any;
    c.circuit_breakers.thresholds[0].max_requestz = 5;
    expect(() => encodeSnapshotResource(CLUSTER_TYPE, c)).toThrow('Cluster.circuit_breakers.thresholds[0].max_requestz: no such field');
    const l = json(s.listeners[0]) as any;
    l.filter_chains[0].filters[0].typed_config.stat_prefixx = 'x';
    expect(() => encodeResource(LISTENER_TYPE, l)).toThrow('Listener.filter_chains[0].filters[0].typed_config.stat_prefixx: no such field');
    expect(() => encodeResource(ROUTE_TYPE, { name: 'r', virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/', headers: [{ name: 'a', string_match: { exakt: 'b' } }] } }] }] })).toThrow(
      'RouteConfiguration.virtual_hosts[0].routes[0].match.headers[0].string_match.exakt: no such field',
    );
  });

  it('wrong value types, unknown enum names and two members of a oneof throw', () => {
    expect(() => encodeResource(CLUSTER_TYPE, { name: 'c', lb_policy: 'ROUND_ROBINN' })).toThrow(/Cluster\.lb_policy: "ROUND_ROBINN" is not a value of enum/);
    expect(() => encodeResource(CLUSTER_TYPE, { name: 7 })).toThrow(/Cluster\.name: expected a string/);
    expect(() => encodeResource(CLUSTER_TYPE, { name: 'c', circuit_breakers: { thresholds: [{ max_requests: -1 }] } })).toThrow(/max_requests: -1 is out of range for uint32/);
    expect(() => encodeResource(ROUTE_TYPE, { virtual_hosts: [{ routes: [{ match: { prefix: '/', path: '/x' } }] }] })).toThrow(
      'RouteConfiguration.virtual_hosts[0].routes[0].match: oneof path_specifier has both prefix and path',
    );
  });

  it('an unknown @type throws, naming it', () => {
    const l = json(s.listeners[0]) as any;
    l.filter_chains[0].filters[0].typed_config['@type'] = 'type.googleapis.com/envoy.nope.v3.Nope';
    expect(() => encodeResource(LISTENER_TYPE, l)).toThrow(/unknown @type "type\.googleapis\.com\/envoy\.nope\.v3\.Nope"/);
    expect(() => encodeAny({ '@type': 'type.googleapis.com/Listener' })).toThrow(/unknown @type/);
    expect(() => decodeAny({ type_url: 'type.googleapis.com/envoy.nope.v3.Nope', value: new Uint8Array(0) })).toThrow(/unknown @type "type\.googleapis\.com\/envoy\.nope\.v3\.Nope"/);
    expect(() => encodeResource('type.googleapis.com/envoy.nope.v3.Nope', {})).toThrow(/unknown type URL/);
  });

  it('well-known types: wrappers, Struct, Duration, Any of a well-known type', () => {
    const T = 'type.googleapis.com/envoy.config.core.v3.Metadata';
    const md = { filter_metadata: { a: { n: 1.5, s: 'x', b: false, z: null, l: [1, 'two', { three: 3 }, []], o: {} } } };
    expect(decodeResource(T, encodeResource(T, md))).toEqual(md);
    const w = { '@type': 'type.googleapis.com/google.protobuf.UInt32Value', value: 7 };
    expect(decodeAny(encodeAny(w))).toEqual(w);
    const d = { '@type': 'type.googleapis.com/google.protobuf.Duration', value: { seconds: 0, nanos: 5 } };
    expect(decodeAny(encodeAny(d))).toEqual(d);
    // int64 / uint64 as numbers, bytes as base64.
    const rp = 'type.googleapis.com/envoy.config.route.v3.RetryPolicy';
    expect(decodeResource(rp, encodeResource(rp, { host_selection_retry_max_attempts: 5, num_retries: 0 }))).toEqual({ host_selection_retry_max_attempts: 5, num_retries: 0 });
    const ds = 'type.googleapis.com/envoy.config.core.v3.DataSource';
    expect(decodeResource(ds, encodeResource(ds, { inline_bytes: 'aGVsbG8=' }))).toEqual({ inline_bytes: 'aGVsbG8=' });
    // A oneof member keeps its presence even when it holds the default.
    expect(decodeResource(ds, encodeResource(ds, { inline_string: '' }))).toEqual({ inline_string: '' });
  });

  it('a DiscoveryResponse with Any resources encodes and decodes', () => {
    const T = 'type.googleapis.com/envoy.service.discovery.v3.DiscoveryResponse';
    const clusters = [...s.clusters.values()];
    const resp = {
      version_info: s.version,
      type_url: CLUSTER_TYPE,
      nonce: '1',
      resources: clusters.map((c) => ({ '@type': CLUSTER_TYPE, ...snapshotResourceToProto(CLUSTER_TYPE, c) })),
    };
    const back = decodeResource(T, encodeResource(T, resp)) as { version_info: string; resources: Array<Record<string, unknown>> };
    expect(back.version_info).toBe(s.version);
    expect(back.resources).toHaveLength(clusters.length);
    back.resources.forEach((r, i) => {
      expect(r['@type']).toBe(CLUSTER_TYPE);
      const { '@type': _t, ...rest } = r;
      expect(protoToSnapshotResource(CLUSTER_TYPE, rest)).toEqual(json(clusters[i]));
    });
    // The same resources as grpc-js hands them over ({type_url, value}) through encodeAny/decodeAny.
    const anys = clusters.map((c) => encodeAny({ '@type': CLUSTER_TYPE, ...snapshotResourceToProto(CLUSTER_TYPE, c) }));
    expect(anys[0]!.value.equals(encodeSnapshotResource(CLUSTER_TYPE, clusters[0]!))).toBe(true);
    const raw = plainDecode('envoy.service.discovery.v3.DiscoveryResponse', encodeResource(T, { ...resp, resources: undefined, control_plane: { identifier: 'gh' } }));
    expect(raw.control_plane.identifier).toBe('gh');
    const d = decodeAny(anys[1]!);
    const { '@type': _t, ...rest } = d;
    expect(protoToSnapshotResource(CLUSTER_TYPE, rest)).toEqual(json(clusters[1]));
    const delta = 'type.googleapis.com/envoy.service.discovery.v3.DeltaDiscoveryResponse';
    const dr = { system_version_info: 'v', type_url: CLUSTER_TYPE, nonce: 'n', removed_resources: ['gone'], resources: [{ name: clusters[0]!.name, version: 'v', resource: { '@type': CLUSTER_TYPE, ...snapshotResourceToProto(CLUSTER_TYPE, clusters[0]!) } }] };
    const dback = decodeResource(delta, encodeResource(delta, dr)) as any;
    expect(dback.removed_resources).toEqual(['gone']);
    expect(dback.resources[0].name).toBe(clusters[0]!.name);
    const { '@type': _dt, ...dres } = dback.resources[0].resource;
    expect(_dt).toBe(CLUSTER_TYPE);
    expect(protoToSnapshotResource(CLUSTER_TYPE, dres)).toEqual(json(clusters[0]));
  });

  it('the ADS service definition loads', () => {
    const svc = adsServiceClient();
    expect(Object.keys(svc.service)).toEqual(expect.arrayContaining(['StreamAggregatedResources', 'DeltaAggregatedResources']));
  });
});
