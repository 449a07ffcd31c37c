// Generated Istio configurations the benches share, so that "the same config" is the same text:
// - run.ts's routes1k and config-swap VirtualServices (resolve-time.ts's swap10k is their 10,000);
// - xds.ts's per-service shape (resolve-time.ts's mesh1k is its 1,000 services, `mesh½`).

// routes1k: this many extra VirtualServices (hosts vs-<i>.bench.local, 2 header-matched routes
// each); the request goes to the last one's second route.
export const ROUTES_COUNT = 1000;
export const ROUTES_SWAP_COUNT = 10_000; // the config-swap extra measurement's big config
export const ROUTES_HEADER = 'x-bench-variant';
export const routesHost = (i: number): string => `vs-${i}.bench.local`;

/**
 * `n` extra VirtualServices bound to bench-gateway: host vs-<i>.bench.local, two routes each that
 * match on the x-bench-variant header (a, b), both to the upstream.
 */
export function routesYaml(n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    out.push(`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs-${i}
  namespace: bench
spec:
  hosts: ['${routesHost(i)}']
  gateways: [bench-gateway]
  http:
    - name: a
      match: [{ headers: { ${ROUTES_HEADER}: { exact: a } } }]
      route: [{ destination: { host: upstream.bench.svc.cluster.local, port: { number: 80 } } }]
    - name: b
      match: [{ headers: { ${ROUTES_HEADER}: { exact: b } } }]
      route: [{ destination: { host: upstream.bench.svc.cluster.local, port: { number: 80 } } }]
`);
  }
  return out.join('');
}


// ---------------------------------------------------------------------------------------------
// Per service a ServiceEntry (2 endpoints), a DestinationRule (2 subsets) and a VirtualService
// (2 header-matched HTTP routes, retries, timeouts), behind one Gateway.

const SERVICES_GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*/*"]
`;

export function virtualService(i: number, mesh: boolean, canaryTimeoutS = 5): string {
  const h = `svc-${i}.default.svc.cluster.local`;
  return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc-${i}, namespace: default}
spec:
  hosts: [${h}]
  gateways: [istio-system/gw${mesh ? ', mesh' : ''}]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "true"}}}]
    timeout: ${canaryTimeoutS}s
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: "5xx,connect-failure"}
    route: [{destination: {host: ${h}, subset: v2, port: {number: 8080}}}]
  - name: default
    match: [{headers: {x-user: {prefix: "u-"}}}, {uri: {prefix: /}}]
    timeout: 10s
    retries: {attempts: 2, retryOn: "connect-failure,refused-stream"}
    route: [{destination: {host: ${h}, subset: v1, port: {number: 8080}}}]
`;
}

function serviceYaml(i: number, mesh: boolean): string[] {
  const h = `svc-${i}.default.svc.cluster.local`;
  const a = `10.${(i >> 8) & 255}.${i & 255}`;
  return [
    `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-${i}, namespace: default}
spec:
  hosts: [${h}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints:
  - {address: ${a}.1, labels: {version: v1}}
  - {address: ${a}.2, labels: {version: v2}}
`,
    `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-${i}, namespace: default}
spec:
  host: ${h}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`,
    virtualService(i, mesh),
  ];
}

/** `meshHalf`: even-numbered VirtualServices are bound to `mesh` too. */
export function servicesYaml(n: number, meshHalf: boolean): string {
  const docs = [SERVICES_GATEWAY];
  for (let i = 0; i < n; i++) docs.push(...serviceYaml(i, meshHalf && i % 2 === 0));
  return docs.join('---\n');
}


// ---------------------------------------------------------------------------------------------
// The `policy` scenario of run.ts: issue 18's "realistic policy route", a VirtualService of its
// own (host policy.bench.local) so that the plain route (bench.local) stays plain:
// - one header-matched rule in front (x-bench-canary: "true" → the plain upstream; not hit),
// - a regex URI match (RE2 full match) carrying request and response header edits, a timeout and
//   retries,
// - to a service of its own (the same upstream port) whose DestinationRule has consistent hashing
//   on x-user, a connection pool and outlier detection,
// - and an ALLOW AuthorizationPolicy: the policy route only from 127.0.0.0/8, GET, paths
//   /policy/*, with an x-user header starting with `bench-`; a second rule allows every other
//   host. An ALLOW policy applies to the whole workload (as in Istio), so every scenario of a run
//   evaluates it; on the other hosts that is a failed first rule and a `notHosts` match.
// nginx's equivalent as far as nginx goes: a server for the host, a `map` on the header choosing
// the upstream group, a regex location, `allow`/`deny` + `limit_except` + an `if` on the header,
// proxy_set_header / add_header / proxy_hide_header, proxy timeouts and proxy_next_upstream, and a
// `hash … consistent` upstream with keepalive, max_conns and max_fails (passive health checks).

export const POLICY_HOST = 'policy.bench.local';
export const POLICY_PATH = '/policy/item';
export const POLICY_HEADERS = { 'x-user': 'bench-user' } as const;

/**
 * A ServiceEntry `<name>.bench.svc.cluster.local` on `port` (`protocol`), its one endpoint the
 * bench's upstream on 127.0.0.1:`upstreamPort`. Ends with a newline.
 */
export function localServiceEntry(name: string, port: number, protocol: 'HTTP' | 'GRPC', upstreamPort: number): string {
  const portName = protocol.toLowerCase();
  return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ${name}
  namespace: bench
spec:
  hosts: [${name}.bench.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
    - { number: ${port}, name: ${portName}, protocol: ${protocol} }
  endpoints:
    - address: 127.0.0.1
      ports: { ${portName}: ${upstreamPort} }
`;
}

/** The policy route's Istio resources; `gateways` = the Gateways its VirtualService binds to. */
export function policyGatewayYaml(upstreamPort: number, gateways: string[]): string {
  return `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench-policy
  namespace: bench
spec:
  hosts: ['${POLICY_HOST}']
  gateways: [${gateways.join(', ')}]
  http:
    - name: canary
      match: [{ headers: { x-bench-canary: { exact: "true" } } }]
      route:
        - destination: { host: upstream.bench.svc.cluster.local, port: { number: 80 } }
    - name: policy
      match: [{ uri: { regex: "/policy/[a-z0-9-]+" } }]
      headers:
        request:
          set: { x-bench-route: policy }
          add: { x-bench-via: gatehouse }
          remove: [x-remove-me]
        response:
          set: { x-bench-policy: applied }
          remove: [x-powered-by]
      timeout: 10s
      retries: { attempts: 2, perTryTimeout: 2s, retryOn: "5xx,connect-failure,refused-stream" }
      route:
        - destination: { host: policy-upstream.bench.svc.cluster.local, port: { number: 80 } }
---
${localServiceEntry('policy-upstream', 80, 'HTTP', upstreamPort)}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: policy-upstream
  namespace: bench
spec:
  host: policy-upstream.bench.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash: { httpHeaderName: x-user }
    connectionPool:
      tcp: { maxConnections: 1024, connectTimeout: 1s }
      http: { http1MaxPendingRequests: 1024, maxRetries: 3, idleTimeout: 60s }
    outlierDetection:
      consecutive5xxErrors: 5
      consecutiveGatewayErrors: 3
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: bench-allow
  namespace: istio-system
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: ALLOW
  rules:
    - from: [{ source: { ipBlocks: ["127.0.0.0/8"] } }]
      to: [{ operation: { hosts: ["${POLICY_HOST}"], methods: ["GET"], paths: ["/policy/*"] } }]
      when: [{ key: "request.headers[x-user]", values: ["bench-*"] }]
    - to: [{ operation: { notHosts: ["${POLICY_HOST}"] } }]
`;
}

/** nginx's equivalent: `http` = upstream groups and the map, `server` = the policy host's server. */
export function policyNginx(upstreamPort: number, listenPort: number): { http: string; server: string } {
  return {
    http: `
  upstream policy_upstream {
    hash $http_x_user consistent;
    server 127.0.0.1:${upstreamPort} max_conns=1024 max_fails=5 fail_timeout=30s;
    keepalive 64;
    keepalive_requests 1000000;
  }
  map $http_x_bench_canary $bench_policy_pool {
    "true" bench_upstream;
    default policy_upstream;
  }`,
    server: `
  server {
    listen 127.0.0.1:${listenPort};
    server_name ${POLICY_HOST};
    location ~ ^/policy/[a-z0-9-]+$ {
      allow 127.0.0.0/8;
      deny all;
      limit_except GET { deny all; }
      if ($http_x_user !~ ^bench-) { return 403; }
      proxy_pass http://$bench_policy_pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header x-bench-route policy;
      proxy_set_header x-bench-via nginx;
      proxy_set_header x-remove-me "";
      proxy_hide_header x-powered-by;
      add_header x-bench-policy applied;
      proxy_connect_timeout 1s;
      proxy_send_timeout 10s;
      proxy_read_timeout 10s;
      proxy_next_upstream error timeout http_502 http_503 http_504;
      proxy_next_upstream_tries 3;
    }
    location / { return 404; }
  }`,
  };
}
