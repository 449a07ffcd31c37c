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
