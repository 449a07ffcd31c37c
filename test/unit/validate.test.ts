import { describe, it, expect } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { validate, type ValidateOptions } from '../../src/config/validate.js';
import { formatProblem, type Resource } from '../../src/config/types.js';

const OPTS: ValidateOptions = { gatewayNamespace: 'istio-system', labels: { istio: 'ingressgateway' }, rootNamespace: 'istio-system' };

/** Strips the leading newline and the common indentation, so line 1 is the first YAML line. */
function dedent(text: string): string {
  const lines = text.replace(/^\n/, '').replace(/\n\s*$/, '\n').split('\n');
  const indent = Math.min(...lines.filter((l) => l.trim() !== '').map((l) => /^ */.exec(l)![0].length));
  return lines.map((l) => l.slice(indent)).join('\n');
}

function parse(yaml: string, file = 'cfg.yaml'): Resource[] {
  const r = parseYamlText(dedent(yaml), file);
  expect(r.problems.map(formatProblem)).toEqual([]);
  return r.resources;
}

function check(yaml: string | Resource[], opts: ValidateOptions = OPTS) {
  const resources = typeof yaml === 'string' ? parse(yaml) : yaml;
  const res = validate(resources, opts);
  return {
    errors: res.problems.filter((p) => p.severity === 'error').map(formatProblem),
    warnings: res.problems.filter((p) => p.severity === 'warning').map(formatProblem),
    all: res.problems.map(formatProblem),
    accepted: res.accepted.map((r) => `${r.kind}/${r.metadata.namespace}/${r.metadata.name}`),
  };
}

const BOOKINFO = `
  apiVersion: networking.istio.io/v1
  kind: Gateway
  metadata:
    name: bookinfo-gateway
    namespace: default
  spec:
    selector:
      istio: ingressgateway
    servers:
    - port:
        number: 80
        name: http
        protocol: HTTP
      hosts:
      - "bookinfo.example.com"
      tls:
        httpsRedirect: true
    - port:
        number: 443
        name: https
        protocol: HTTPS
      hosts:
      - "bookinfo.example.com"
      tls:
        mode: SIMPLE
        credentialName: bookinfo-cert
  ---
  apiVersion: v1
  kind: Secret
  metadata:
    name: bookinfo-cert
    namespace: istio-system
  type: kubernetes.io/tls
  data:
    tls.crt: aGVsbG8=
    tls.key: aGVsbG8=
  ---
  apiVersion: networking.istio.io/v1beta1
  kind: VirtualService
  metadata:
    name: reviews
  spec:
    hosts:
    - bookinfo.example.com
    gateways:
    - bookinfo-gateway
    http:
    - match:
      - headers:
          end-user:
            exact: jason
        uri:
          prefix: /reviews
      route:
      - destination:
          host: reviews
          subset: v2
    - route:
      - destination:
          host: reviews
          subset: v1
        weight: 75
      - destination:
          host: reviews.default.svc.cluster.local
          subset: v3
          port:
            number: 9080
        weight: 25
      timeout: 2s
      retries:
        attempts: 3
        perTryTimeout: 500ms
        retryOn: gateway-error,connect-failure,503
  ---
  apiVersion: networking.istio.io/v1alpha3
  kind: DestinationRule
  metadata:
    name: reviews
  spec:
    host: reviews
    trafficPolicy:
      loadBalancer:
        simple: LEAST_REQUEST
      connectionPool:
        tcp:
          connectTimeout: 1s
      outlierDetection:
        consecutive5xxErrors: 5
        interval: 10s
        baseEjectionTime: 30s
        maxEjectionPercent: 50
    subsets:
    - name: v1
      labels:
        version: v1
    - name: v2
      labels:
        version: v2
    - name: v3
      labels:
        version: v3
      trafficPolicy:
        loadBalancer:
          consistentHash:
            httpCookie:
              name: user
              ttl: 0s
            maglev:
              tableSize: 65537
  ---
  apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata:
    name: reviews
  spec:
    hosts:
    - reviews.default.svc.cluster.local
    location: MESH_INTERNAL
    resolution: STATIC
    ports:
    - number: 9080
      name: http
      protocol: HTTP
    endpoints:
    - address: 127.0.0.1
      ports:
        http: 9081
      labels:
        version: v1
    - address: 127.0.0.1
      ports:
        http: 9082
      labels:
        version: v2
`;

describe('validate: a valid configuration', () => {
  it('accepts a bookinfo-style set (Gateway, VS with header match and weights, DR with subsets, SE with STATIC endpoints) without problems', () => {
    const r = check(BOOKINFO);
    expect(r.all).toEqual([]);
    expect(r.accepted).toEqual([
      'Gateway/default/bookinfo-gateway',
      'Secret/istio-system/bookinfo-cert',
      'VirtualService/default/reviews',
      'DestinationRule/default/reviews',
      'ServiceEntry/default/reviews',
    ]);
  });

  it('lets a lone destination omit its weight, and a DestinationRule name a host nothing routes to', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: one}
      spec:
        hosts: [one]
        http:
        - route:
          - destination: {host: one}
      ---
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: unused}
      spec:
        host: nobody-calls-me.example.com
    `);
    expect(r.all).toEqual([]);
  });
});

describe('validate: kinds', () => {
  it('warns once per unsupported kind (not per resource) and leaves it out of accepted', () => {
    const r = check(`
      apiVersion: extensions.istio.io/v1alpha1
      kind: WasmPlugin
      metadata: {name: a, namespace: ns1}
      ---
      apiVersion: extensions.istio.io/v1alpha1
      kind: WasmPlugin
      metadata: {name: b}
      ---
      apiVersion: networking.istio.io/v1alpha3
      kind: EnvoyFilter
      metadata: {name: c}
      ---
      apiVersion: gateway.networking.k8s.io/v1
      kind: Gateway
      metadata: {name: k8s-gw}
      ---
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: unrelated}
      data: {anything: goes}
    `);
    expect(r.warnings).toEqual([
      'cfg.yaml:1: WasmPlugin/ns1/a: kind WasmPlugin (extensions.istio.io/v1alpha1) is not supported by Gatehouse; ignored',
      'cfg.yaml:9: EnvoyFilter/default/c: kind EnvoyFilter (networking.istio.io/v1alpha3) is not supported by Gatehouse; ignored',
      'cfg.yaml:13: Gateway/default/k8s-gw: kind Gateway (gateway.networking.k8s.io/v1) is not supported by Gatehouse; ignored',
    ]);
    expect(r.errors).toEqual([]);
    expect(r.accepted).toEqual(['ConfigMap/default/unrelated']);
  });

  it('reports the same kind/namespace/name twice as an error on the second, naming the first', () => {
    const a = parse(`
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: reviews}
      spec: {host: reviews}
    `, 'config/a.yaml');
    const b = parse(`
      apiVersion: v1
      kind: Secret
      metadata: {name: s}
      ---
      apiVersion: networking.istio.io/v1beta1
      kind: DestinationRule
      metadata:
        name: reviews
        namespace: default
      spec: {host: reviews}
    `, 'config/b.yaml');
    const r = check([...a, ...b]);
    expect(r.all).toEqual(['config/b.yaml:5: DestinationRule/default/reviews: duplicate DestinationRule/default/reviews, first defined at config/a.yaml:1']);
    expect(r.accepted).toEqual(['DestinationRule/default/reviews', 'Secret/default/s']);
  });
});

describe('validate: fields', () => {
  it('weights are relative (Istio since 1.15): any non-negative integers, only a total of 0 over several destinations is refused', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata:
        name: reviews
      spec:
        hosts:
        - reviews
        http:
        - route:
          - destination:
              host: reviews
            weight: 60
          - destination:
              host: ratings
            weight: 30
        - route:
          - destination: {host: a}
            weight: 100
          - destination: {host: b}
        - route:
          - destination: {host: a}
            weight: 50.5
          - destination: {host: b}
            weight: 101
        - route:
          - destination: {host: a}
            weight: 0
          - destination: {host: b}
        - route:
          - destination: {host: a}
            weight: -1
        tcp:
        - route:
          - destination: {host: a}
            weight: 1
          - destination: {host: b}
            weight: 3
        tls:
        - match: [{sniHosts: [reviews]}]
          route:
          - destination: {host: a}
            weight: 0
          - destination: {host: b}
            weight: 0
    `);
    // 60/30, 100/unset, 101, 1/3 and a single destination of weight 0 are all valid Istio.
    expect(r.all).toEqual([
      'cfg.yaml:22: VirtualService/default/reviews: spec.http[2].route[0].weight: must be an integer',
      'cfg.yaml:25: VirtualService/default/reviews: spec.http[3].route: total destination weight is 0: give at least one destination a weight above 0 (weights are relative)',
      'cfg.yaml:31: VirtualService/default/reviews: spec.http[4].route[0].weight: must be between 0 and 2147483647, got -1',
      'cfg.yaml:40: VirtualService/default/reviews: spec.tls[0].route: total destination weight is 0: give at least one destination a weight above 0 (weights are relative)',
    ]);
  });

  it('reports unknown fields at their own line, also when their value is a block', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata:
        name: reviews
      spec:
        host: reviews
        trafficPolcy:
          loadBalancer:
            simple: RANDOM
        subsets:
        - name: v1
          lables:
            version: v1
          wieght: 3
    `);
    expect(r.all).toEqual([
      'cfg.yaml:7: DestinationRule/default/reviews: spec.trafficPolcy: unknown field "trafficPolcy"',
      'cfg.yaml:12: DestinationRule/default/reviews: spec.subsets[0].lables: unknown field "lables"',
      'cfg.yaml:14: DestinationRule/default/reviews: spec.subsets[0].wieght: unknown field "wieght"',
    ]);
  });

  it('checks HTTP routes: matches, actions, redirects, faults, durations, retries, regexes', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata:
        name: web
        namespace: shop
      spec:
        hosts: [web]
        http:
        - match:
          - headers:
              X-User:
                exact: jason
            uri:
              prefix: /a
              exact: /b
            method:
              regex: "(?=GET)"
          route:
          - destination:
              subset: v1
          timeout: 5 seconds
          retries:
            attempts: -1
            retryOn: 5xx,sometimes
        - redirect:
            uri: /x
            redirectCode: 305
          directResponse:
            status: 100
        - match:
          - uri: {prefix: /nothing}
        - directResponse:
            status: 503
          fault:
            abort:
              httpStatus: 700
              percentage:
                value: 150
            delay:
              percentage: {value: 10}
        - route:
          - destination: {host: web}
          corsPolicy:
            allowMethods: [GET, FETCH]
            maxAge: 1d
    `);
    expect(r.all).toEqual([
      'cfg.yaml:11: VirtualService/shop/web: spec.http[0].match[0].headers.X-User: header name "X-User" must be lowercase',
      'cfg.yaml:15: VirtualService/shop/web: spec.http[0].match[0].uri.exact: set only one of exact, prefix, regex (found prefix and exact)',
      'cfg.yaml:17: VirtualService/shop/web: spec.http[0].match[0].method.regex: invalid regex "(?=GET)": lookahead (?= / ?!) is not supported by RE2',
      'cfg.yaml:19: VirtualService/shop/web: spec.http[0].route[0].destination.host: missing required field',
      'cfg.yaml:21: VirtualService/shop/web: spec.http[0].timeout: invalid duration "5 seconds": use a number with a unit (h, m, s, ms, us), e.g. "1.5s" or "300ms"',
      'cfg.yaml:23: VirtualService/shop/web: spec.http[0].retries.attempts: must be at least 0, got -1',
      'cfg.yaml:24: VirtualService/shop/web: spec.http[0].retries.retryOn: invalid retryOn policy "sometimes": use Envoy retry conditions such as 5xx, gateway-error, connect-failure, refused-stream, or status codes',
      'cfg.yaml:27: VirtualService/shop/web: spec.http[1].redirect.redirectCode: must be one of 301, 302, 303, 307, 308',
      'cfg.yaml:28: VirtualService/shop/web: spec.http[1].directResponse: set only one of route, redirect, directResponse, delegate (found redirect and directResponse)',
      'cfg.yaml:29: VirtualService/shop/web: spec.http[1].directResponse.status: must be between 200 and 599, got 100',
      'cfg.yaml:30: VirtualService/shop/web: spec.http[2]: must set one of route, redirect, directResponse, delegate',
      'cfg.yaml:36: VirtualService/shop/web: spec.http[3].fault.abort.httpStatus: must be between 200 and 599, got 700',
      'cfg.yaml:38: VirtualService/shop/web: spec.http[3].fault.abort.percentage.value: must be between 0 and 100, got 150',
      'cfg.yaml:39: VirtualService/shop/web: spec.http[3].fault.delay: a delay without fixedDelay delays nothing (Istio accepts it as well)',
      'cfg.yaml:44: VirtualService/shop/web: spec.http[4].corsPolicy.allowMethods[1]: must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH',
      'cfg.yaml:45: VirtualService/shop/web: spec.http[4].corsPolicy.maxAge: invalid duration "1d": use a number with a unit (h, m, s, ms, us), e.g. "1.5s" or "300ms"',
    ]);
  });

  it('requires hosts unless the VirtualService is a delegate, and checks delegate references', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: root}
      spec:
        gateways: [mesh]
        http:
        - delegate: {name: part}
        - delegate: {name: nope, namespace: other}
        - delegate: {name: root}
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: part}
      spec:
        http:
        - route:
          - destination: {host: part}
        tcp:
        - route:
          - destination: {host: part}
    `);
    expect(r.all).toEqual([
      'cfg.yaml:4: VirtualService/default/root: spec.hosts: missing required field (only a delegate VirtualService, which has no gateways, may omit it)',
      'cfg.yaml:7: VirtualService/default/root: spec.http[0].delegate: a delegate VirtualService cannot delegate again (one level only)',
      'cfg.yaml:8: VirtualService/default/root: spec.http[1].delegate: a delegate VirtualService cannot delegate again (one level only)',
      'cfg.yaml:8: VirtualService/default/root: spec.http[1].delegate.name: delegate VirtualService "other/nope" not found',
      'cfg.yaml:9: VirtualService/default/root: spec.http[2].delegate: a delegate VirtualService cannot delegate again (one level only)',
      'cfg.yaml:18: VirtualService/default/part: spec.tcp: a delegate VirtualService (no hosts) cannot have tcp routes',
    ]);
  });

  it('checks Gateway servers: protocol (any case), hosts, TLS settings', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata:
        name: gw
        namespace: istio-system
      spec:
        servers:
        - port: {number: 80, name: http, protocol: http}
          hosts: ["./*.example.com", "*/foo.example.com", "prod/*"]
          tls: {httpsRedirect: true}
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: ["a.example.com"]
        - port: {number: 8443, name: mtls, protocol: HTTPS}
          hosts: ["b.example.com"]
          tls:
            mode: MUTUAL
            serverCertificate: /etc/certs/cert.pem
            privateKey: /etc/certs/key.pem
        - port: {number: 8444, name: simple, protocol: HTTPS}
          hosts: ["c.example.com"]
          tls:
            mode: SIMPLE
            credentialName: c-cert
            privateKey: /k.pem
        - port: {number: 70000, protocol: SCTP}
          hosts: []
        - port: {number: 9000, name: tcp, protocol: TCP}
          hosts: ["bad_ns/foo", "-x-.com"]
          tls: {mode: SIMPLE}
        - port: {number: 9001, name: https, protocol: HTTPS}
          tls: {mode: PASSTHROUGH}
    `);
    expect(r.errors).toEqual([
      'cfg.yaml:11: Gateway/istio-system/gw: spec.servers[1].port.protocol: protocol HTTPS needs tls settings (mode SIMPLE, MUTUAL, PASSTHROUGH, ...)',
      'cfg.yaml:16: Gateway/istio-system/gw: spec.servers[2].tls.mode: mode MUTUAL needs caCertificates, or credentialName',
      'cfg.yaml:22: Gateway/istio-system/gw: spec.servers[3].tls.mode: set only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates',
      'cfg.yaml:25: Gateway/istio-system/gw: spec.servers[4].port.number: must be between 1 and 65535, got 70000',
      'cfg.yaml:25: Gateway/istio-system/gw: spec.servers[4].port.protocol: must be one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, HTTP_PROXY, MONGO, MYSQL, REDIS, TCP, TLS, UDP',
      'cfg.yaml:25: Gateway/istio-system/gw: spec.servers[4].port.name: missing required field',
      'cfg.yaml:26: Gateway/istio-system/gw: spec.servers[4].hosts: must not be empty',
      'cfg.yaml:28: Gateway/istio-system/gw: spec.servers[5].hosts[0]: invalid namespace "bad_ns" in host "bad_ns/foo": must be "*", "." or a namespace name',
      'cfg.yaml:28: Gateway/istio-system/gw: spec.servers[5].hosts[1]: invalid host "-x-.com": must be [namespace/]dnsName, e.g. "example.com", "*.example.com" or "prod/*"',
      'cfg.yaml:29: Gateway/istio-system/gw: spec.servers[5].tls.mode: mode SIMPLE needs serverCertificate and privateKey, or credentialName',
      'cfg.yaml:29: Gateway/istio-system/gw: spec.servers[5].tls: protocol TCP cannot have tls settings; use protocol TLS or HTTPS',
      'cfg.yaml:30: Gateway/istio-system/gw: spec.servers[6].hosts: missing required field',
    ]);
    // c-cert is looked up in the gateway's namespace (istio-system), then the Gateway's (also istio-system).
    expect(r.warnings).toEqual(['cfg.yaml:23: Gateway/istio-system/gw: spec.servers[3].tls.credentialName: secret "c-cert" not found in namespace istio-system']);
  });

  it('checks DestinationRule policies: enums, one load balancer, one hash key, prime maglev table, percentages, subsets', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata:
        name: reviews
      spec:
        host: reviews
        trafficPolicy:
          loadBalancer:
            simple: ROUND_ROBBIN
            consistentHash:
              httpHeaderName: x-user
              useSourceIp: true
              maglev:
                tableSize: 65536
          connectionPool:
            tcp: {connectTimeout: 10}
            http: {h2UpgradePolicy: ALWAYS}
          outlierDetection:
            maxEjectionPercent: 120
            minHealthPercent: -1
          portLevelSettings:
          - port: {number: 80}
            loadBalancer: {simple: RANDOM}
          - port: {number: 80}
        subsets:
        - name: v1
        - name: v1
        - labels: {version: v2}
        - name: V3
    `);
    expect(r.all).toEqual([
      'cfg.yaml:9: DestinationRule/default/reviews: spec.trafficPolicy.loadBalancer.simple: must be one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH, LEAST_CONN, UNSPECIFIED',
      'cfg.yaml:10: DestinationRule/default/reviews: spec.trafficPolicy.loadBalancer.consistentHash: set only one of simple, consistentHash, backendUtilization (found simple and consistentHash)',
      'cfg.yaml:12: DestinationRule/default/reviews: spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp: set only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName (found httpHeaderName and useSourceIp)',
      'cfg.yaml:14: DestinationRule/default/reviews: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: table size 65536 is not prime: use a prime such as 65537',
      'cfg.yaml:16: DestinationRule/default/reviews: spec.trafficPolicy.connectionPool.tcp.connectTimeout: must be a duration string such as "1.5s" or "300ms"',
      'cfg.yaml:17: DestinationRule/default/reviews: spec.trafficPolicy.connectionPool.http.h2UpgradePolicy: must be one of DEFAULT, DO_NOT_UPGRADE, UPGRADE',
      'cfg.yaml:19: DestinationRule/default/reviews: spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be between 0 and 100, got 120',
      'cfg.yaml:20: DestinationRule/default/reviews: spec.trafficPolicy.outlierDetection.minHealthPercent: must be between 0 and 100, got -1',
      'cfg.yaml:24: DestinationRule/default/reviews: spec.trafficPolicy.portLevelSettings[1].port.number: duplicate port 80 in portLevelSettings',
      'cfg.yaml:27: DestinationRule/default/reviews: spec.subsets[1].name: duplicate subset name "v1"',
      'cfg.yaml:28: DestinationRule/default/reviews: spec.subsets[2].name: missing required field',
      'cfg.yaml:29: DestinationRule/default/reviews: spec.subsets[3].name: invalid subset name "V3": must be a lowercase RFC 1123 label',
    ]);
  });

  it('accepts every port protocol Istio parses, unset ones, IPv6 addresses and partial wildcards (warned), as Istio does', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: ServiceEntry
      metadata: {name: db}
      spec:
        hosts: [db.example.internal, "*db.example.org"]
        addresses: ["2001:db8::10", "fd00::/64", 192.0.2.10, 001:db8::]
        resolution: STATIC
        ports:
        - {number: 3306, name: mysql, protocol: MYSQL}
        - {number: 6379, name: redis, protocol: Redis}
        - {number: 53, name: dns, protocol: UDP}
        - {number: 3128, name: proxy, protocol: HTTP_PROXY}
        - {number: 8080, name: web}
        - {number: 8081, name: web2, protocol: ""}
        endpoints: [{address: 192.0.2.10}]
      ---
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata: {name: gw, namespace: istio-system}
      spec:
        servers:
        - port: {number: 3306, name: mysql, protocol: mysql}
          hosts: ["*"]
        - port: {number: 53, name: dns, protocol: UDP}
          hosts: ["*"]
        - port: {number: 80, name: bad, protocol: ""}
          hosts: ["*"]
    `);
    expect(r.errors).toEqual([
      // go-yaml reads it as a string; YAML 1.2 (and so Gatehouse) as a mapping: said plainly.
      'cfg.yaml:6: ServiceEntry/default/db: spec.addresses[3]: must be a string: YAML reads the unquoted "001:db8::" as a mapping; quote IPv6 addresses',
      // A Gateway server needs a protocol (Istio: "invalid protocol").
      'cfg.yaml:26: Gateway/istio-system/gw: spec.servers[2].port.protocol: must be one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, HTTP_PROXY, MONGO, MYSQL, REDIS, TCP, TLS, UDP',
    ]);
    expect(r.warnings).toEqual([
      'cfg.yaml:5: ServiceEntry/default/db: spec.hosts[1]: partial wildcard host "*db.example.org" is accepted by Istio with a warning; Gatehouse matches only "*." wildcards, so this host matches nothing',
    ]);
  });

  it('current-API fields Gatehouse does not honour are warnings, never errors (warmupDurationSecs included)', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: r}
      spec:
        host: r.default.svc.cluster.local
        trafficPolicy:
          loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}
          connectionPool:
            tcp: {tcpKeepalive: {time: 7200s}}
            http: {http2KeepAlive: {interval: 10s, timeout: 2s}, useClientProtocol: true}
      ---
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: w}
      spec:
        host: w.default.svc.cluster.local
        trafficPolicy:
          loadBalancer: {simple: LEAST_REQUEST, warmup: {duration: 60s, minimumPercent: 10}}
      ---
      apiVersion: security.istio.io/v1
      kind: RequestAuthentication
      metadata: {name: ra}
      spec:
        jwtRules: [{issuer: https://i.example.com, jwks_uri: https://i.example.com/jwks, spaceDelimitedClaims: [roles], presence: REQUIRED}]
    `);
    expect(r.errors).toEqual([]);
    // file:line: resource: path (the message follows).
    expect(r.warnings.map((w) => w.split(': ').slice(0, 3).join(': '))).toEqual([
      'cfg.yaml:7: DestinationRule/default/r: spec.trafficPolicy.loadBalancer.warmupDurationSecs',
      'cfg.yaml:9: DestinationRule/default/r: spec.trafficPolicy.connectionPool.tcp.tcpKeepalive',
      'cfg.yaml:10: DestinationRule/default/r: spec.trafficPolicy.connectionPool.http.http2KeepAlive',
      'cfg.yaml:10: DestinationRule/default/r: spec.trafficPolicy.connectionPool.http.useClientProtocol',
      'cfg.yaml:18: DestinationRule/default/w: spec.trafficPolicy.loadBalancer.warmup',
      'cfg.yaml:24: RequestAuthentication/default/ra: spec.jwtRules[0].presence',
    ]);
  });

  it('checks ServiceEntry resolution, endpoints and ports, and WorkloadEntry addresses', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: ServiceEntry
      metadata: {name: wild}
      spec:
        hosts: ["*.example.org"]
        resolution: DNS
        ports:
        - {number: 443, name: tls, protocol: TLS}
      ---
      apiVersion: networking.istio.io/v1
      kind: ServiceEntry
      metadata: {name: none}
      spec:
        hosts: [api.example.org]
        resolution: NONE
        ports:
        - {number: 80, name: http}
        - {number: 81, name: http, protocol: FTP}
        endpoints:
        - address: 10.0.0.1
          ports: {http2: 8080}
      ---
      apiVersion: networking.istio.io/v1
      kind: ServiceEntry
      metadata: {name: static}
      spec:
        hosts: [svc.internal]
        resolution: STATIC
        ports:
        - {number: 80}
      ---
      apiVersion: networking.istio.io/v1
      kind: ServiceEntry
      metadata: {name: static-dns-name}
      spec:
        hosts: [db.internal]
        resolution: STATIC
        endpoints:
        - address: db.example.org
      ---
      apiVersion: networking.istio.io/v1
      kind: WorkloadEntry
      metadata: {name: no-address}
      spec:
        labels: {app: x}
      ---
      apiVersion: networking.istio.io/v1
      kind: WorkloadEntry
      metadata: {name: remote}
      spec:
        network: net2
    `);
    expect(r.all).toEqual([
      'cfg.yaml:5: ServiceEntry/default/wild: spec.hosts[0]: wildcard host "*.example.org" cannot be resolved by DNS: use resolution NONE, or list endpoints',
      'cfg.yaml:18: ServiceEntry/default/none: spec.ports[1].protocol: must be one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, HTTP_PROXY, MONGO, MYSQL, REDIS, TCP, TLS, UDP',
      'cfg.yaml:18: ServiceEntry/default/none: spec.ports[1].name: duplicate port name "http"',
      'cfg.yaml:19: ServiceEntry/default/none: spec.endpoints: endpoints are not allowed with resolution NONE; use STATIC or DNS',
      'cfg.yaml:21: ServiceEntry/default/none: spec.endpoints[0].ports.http2: port "http2" is not a port name of this ServiceEntry (ports: http)',
      'cfg.yaml:28: ServiceEntry/default/static: spec.resolution: resolution STATIC needs endpoints or a workloadSelector',
      'cfg.yaml:30: ServiceEntry/default/static: spec.ports[0].name: missing required field',
      'cfg.yaml:39: ServiceEntry/default/static-dns-name: spec.endpoints[0].address: address "db.example.org" must be an IP address with resolution STATIC',
      'cfg.yaml:44: WorkloadEntry/default/no-address: spec.address: missing required field (only an entry with a network may omit it)',
    ]);
  });

  it('checks security policies: action enum, rule shapes, jwtRules issuer, mtls mode', () => {
    const r = check(`
      apiVersion: security.istio.io/v1
      kind: AuthorizationPolicy
      metadata: {name: ap, namespace: istio-system}
      spec:
        action: BLOCK
        rules:
        - from:
          - source: {}
          - source: {ipBlocks: [10.0.0.0/33]}
          to:
          - operation: {ports: ["80"], methods: [GET]}
          when:
          - key: request.foo
            values: [x]
          - key: request.headers[x-user]
      ---
      apiVersion: security.istio.io/v1
      kind: AuthorizationPolicy
      metadata: {name: custom}
      spec:
        action: CUSTOM
        rules: [{}]
      ---
      apiVersion: security.istio.io/v1beta1
      kind: RequestAuthentication
      metadata: {name: ra}
      spec:
        selector: {matchLabels: {istio: ingressgateway}}
        jwtRules:
        - jwksUri: https://issuer.example.com/jwks
        - issuer: https://issuer.example.com
          jwksUri: not a url
      ---
      apiVersion: security.istio.io/v1beta1
      kind: PeerAuthentication
      metadata: {name: pa}
      spec:
        mtls: {mode: STRICTER}
        portLevelMtls:
          "8080": {mode: DISABLE}
      ---
      apiVersion: security.istio.io/v1alpha1
      kind: PeerAuthentication
      metadata: {name: old}
    `);
    expect(r.errors).toEqual([
      'cfg.yaml:5: AuthorizationPolicy/istio-system/ap: spec.action: must be one of ALLOW, DENY, AUDIT, CUSTOM',
      'cfg.yaml:8: AuthorizationPolicy/istio-system/ap: spec.rules[0].from[0].source: source must not be empty',
      'cfg.yaml:9: AuthorizationPolicy/istio-system/ap: spec.rules[0].from[1].source.ipBlocks[0]: invalid address "10.0.0.0/33": must be an IP address or CIDR',
      'cfg.yaml:13: AuthorizationPolicy/istio-system/ap: spec.rules[0].when[0].key: unknown condition key "request.foo": use e.g. request.headers[<name>], source.ip, remote.ip, source.namespace, request.auth.claims[<claim>]',
      'cfg.yaml:15: AuthorizationPolicy/istio-system/ap: spec.rules[0].when[1]: must set values, notValues or both',
      'cfg.yaml:21: AuthorizationPolicy/default/custom: spec.action: action CUSTOM needs a provider',
      'cfg.yaml:30: RequestAuthentication/default/ra: spec.jwtRules[0].issuer: missing required field',
      'cfg.yaml:32: RequestAuthentication/default/ra: spec.jwtRules[1].jwksUri: invalid URL "not a url": must be an http:// or https:// URL',
      'cfg.yaml:38: PeerAuthentication/default/pa: spec.mtls.mode: must be one of UNSET, DISABLE, PERMISSIVE, STRICT',
      'cfg.yaml:39: PeerAuthentication/default/pa: spec.portLevelMtls: portLevelMtls needs a selector',
    ]);
    expect(r.warnings).toEqual(['cfg.yaml:42: PeerAuthentication/default/old: kind PeerAuthentication (security.istio.io/v1alpha1) is not supported by Gatehouse; ignored']);
  });

  it('checks Secrets (base64 data, tls keys) and the istio ConfigMap mesh config; other ConfigMaps pass', () => {
    const r = check(`
      apiVersion: v1
      kind: Secret
      metadata: {name: cert, namespace: istio-system}
      type: kubernetes.io/tls
      data:
        tls.crt: "not base64!"
      stringData:
        note: plain text is fine here
      ---
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: istio
        namespace: istio-system
      data:
        mesh: |-
          accessLogFile: /dev/stdout
          accessLogEncoding: XML
          outboundTrafficPolicy:
            mode: DENY
          somethingElse: {ignored: true}
      ---
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: other}
      data:
        mesh: "not: [valid"
    `);
    expect(r.all).toEqual([
      'cfg.yaml:5: Secret/istio-system/cert: data: a kubernetes.io/tls secret needs "tls.key" in data or stringData',
      'cfg.yaml:6: Secret/istio-system/cert: data.tls.crt: must be base64-encoded',
      'cfg.yaml:18: ConfigMap/istio-system/istio: data.mesh.accessLogEncoding: must be one of TEXT, JSON',
      'cfg.yaml:20: ConfigMap/istio-system/istio: data.mesh.outboundTrafficPolicy.mode: must be one of ALLOW_ANY, REGISTRY_ONLY',
    ]);
    expect(r.accepted).toEqual(['Secret/istio-system/cert', 'ConfigMap/istio-system/istio', 'ConfigMap/default/other']);
  });

  it('checks exportTo values', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: dr}
      spec:
        host: reviews
        exportTo: [".", "Not_A_Namespace"]
      ---
      apiVersion: networking.istio.io/v1
      kind: ServiceEntry
      metadata: {name: se}
      spec:
        hosts: [api.example.com]
        exportTo:
        - "~"
        - "*"
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: vs}
      spec:
        hosts: [vs]
        exportTo: [".", "team-a", "team-a"]
        http: [{route: [{destination: {host: vs}}]}]
    `);
    expect(r.all).toEqual([
      'cfg.yaml:6: DestinationRule/default/dr: spec.exportTo[1]: invalid exportTo "Not_A_Namespace": must be ".", "*", "~" or a namespace name',
      'cfg.yaml:14: ServiceEntry/default/se: spec.exportTo[0]: "~" cannot be combined with other exportTo values',
      'cfg.yaml:15: ServiceEntry/default/se: spec.exportTo[1]: "*" cannot be combined with other exportTo values',
      'cfg.yaml:22: VirtualService/default/vs: spec.exportTo[2]: duplicate entry "team-a"',
    ]);
  });

  it('checks Sidecar egress hosts and TLS routes (sniHosts within the VirtualService hosts)', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: Sidecar
      metadata: {name: default}
      spec:
        egress:
        - hosts: ["./*", "istio-system/*", "example.com"]
          captureMode: MAYBE
        outboundTrafficPolicy: {mode: REGISTRY_ONLY}
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: tls-pass}
      spec:
        hosts: ["*.example.com"]
        gateways: [mesh]
        tls:
        - match:
          - sniHosts: [a.example.com, b.example.org]
          route:
          - destination: {host: a.example.com, port: {number: 443}}
        - match: []
          route: []
    `);
    expect(r.all).toEqual([
      'cfg.yaml:5: Sidecar/default/default: spec.egress: Sidecar egress listeners (the hosts a sidecar sees) are not applied by Gatehouse, to the gateway or to proxyless clients; ignored',
      'cfg.yaml:6: Sidecar/default/default: spec.egress[0].hosts[2]: invalid host "example.com": must be namespace/dnsName, e.g. "*/example.com" or "./*"',
      'cfg.yaml:7: Sidecar/default/default: spec.egress[0].captureMode: must be one of DEFAULT, IPTABLES, NONE',
      'cfg.yaml:18: VirtualService/default/tls-pass: spec.tls[0].match[0].sniHosts[1]: sni host "b.example.org" is not covered by the VirtualService hosts',
      'cfg.yaml:21: VirtualService/default/tls-pass: spec.tls[1].match: must not be empty',
      'cfg.yaml:22: VirtualService/default/tls-pass: spec.tls[1].route: must not be empty',
    ]);
  });

  it('warns about match fields that only sidecars use when the VirtualService is not bound to mesh', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata: {name: gw}
      spec:
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts: ["*"]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: vs}
      spec:
        hosts: [web.example.com]
        gateways: [gw]
        http:
        - match:
          - sourceLabels: {app: web}
          route:
          - destination: {host: web}
    `);
    expect(r.all).toEqual([
      'cfg.yaml:17: VirtualService/default/vs: spec.http[0].match[0].sourceLabels: sourceLabels applies to sidecars only (this VirtualService is not bound to mesh); ignored',
    ]);
  });
});

describe('validate: references and conflicts', () => {
  it('reports a subset that no DestinationRule visible to the VirtualService defines', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: reviews, namespace: default}
      spec:
        hosts: [reviews]
        http:
        - route:
          - destination: {host: reviews, subset: v1}
            weight: 50
          - destination:
              host: reviews
              subset: v3
            weight: 50
          mirror: {host: ratings.other.svc.cluster.local, subset: v1}
        - route:
          - destination: {host: details.other.svc.cluster.local, subset: v1}
      ---
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: reviews, namespace: default}
      spec:
        host: reviews.default.svc.cluster.local
        subsets: [{name: v1}, {name: v2}]
      ---
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: ratings, namespace: other}
      spec:
        host: ratings
        exportTo: ["."]
        subsets: [{name: v1}]
      ---
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: details, namespace: other}
      spec:
        host: details
        exportTo: [default]
        subsets: [{name: v1}]
    `);
    expect(r.all).toEqual([
      'cfg.yaml:12: VirtualService/default/reviews: spec.http[0].route[1].destination.subset: subset "v3" is not defined by any DestinationRule for reviews.default.svc.cluster.local',
      'cfg.yaml:14: VirtualService/default/reviews: spec.http[0].mirror.subset: subset "v1" is not defined by any DestinationRule for ratings.other.svc.cluster.local',
    ]);
  });

  it('uses a wildcard DestinationRule when no exact one exists', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: api}
      spec:
        hosts: [api.example.com]
        http:
        - route:
          - destination: {host: api.example.com, subset: blue}
      ---
      apiVersion: networking.istio.io/v1
      kind: DestinationRule
      metadata: {name: all-example}
      spec:
        host: "*.example.com"
        subsets: [{name: blue}]
    `);
    expect(r.all).toEqual([]);
  });

  it('reports gateways that do not exist (bare name = the VirtualService namespace, ns/name, per-match gateways)', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata: {name: shared, namespace: istio-system}
      spec:
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts: ["*/*.example.com"]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: web, namespace: default}
      spec:
        hosts: [web.example.com]
        gateways: [mesh, istio-system/shared, my-gw, shared]
        http:
        - match:
          - gateways: [other/gw]
          route:
          - destination: {host: web}
    `);
    expect(r.all).toEqual([
      'cfg.yaml:14: VirtualService/default/web: spec.gateways[2]: gateway "default/my-gw" not found',
      'cfg.yaml:14: VirtualService/default/web: spec.gateways[3]: gateway "default/shared" not found',
      'cfg.yaml:17: VirtualService/default/web: spec.http[0].match[0].gateways[0]: gateway "other/gw" not found',
    ]);
  });

  it('warns when two VirtualServices bind the same host to the same gateway, or a binding matches no gateway host', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata: {name: gw}
      spec:
        servers:
        - port: {number: 80, name: http, protocol: HTTP}
          hosts: ["*.example.com"]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: a}
      spec:
        hosts: [shop.example.com]
        gateways: [gw]
        http: [{route: [{destination: {host: a}}]}]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: b}
      spec:
        hosts: [blog.example.com, shop.example.com]
        gateways: [default/gw]
        http: [{route: [{destination: {host: b}}]}]
      ---
      apiVersion: networking.istio.io/v1
      kind: VirtualService
      metadata: {name: c}
      spec:
        hosts: [shop.example.org]
        gateways: [gw]
        http: [{route: [{destination: {host: c}}]}]
    `);
    expect(r.errors).toEqual([]);
    expect(r.warnings).toEqual([
      'cfg.yaml:21: VirtualService/default/b: spec.hosts[1]: host "shop.example.com" is also defined by VirtualService/default/a bound to the same gateway "default/gw" (Istio merges their routes in no defined order)',
      'cfg.yaml:30: VirtualService/default/c: spec.gateways[0]: [IST0132] no host of this VirtualService is admitted by gateway "default/gw" for namespace default; Istio ignores this binding',
    ]);
  });

  it('reports Gateway servers that conflict on a port (same host with other TLS settings; HTTP vs TCP/TLS)', () => {
    const r = check(`
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata: {name: one, namespace: istio-system}
      spec:
        selector: {istio: ingressgateway}
        servers:
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: ["a.example.com"]
          tls: {mode: SIMPLE, credentialName: a-cert}
        - port: {number: 80, name: http, protocol: HTTP}
          hosts: ["*"]
      ---
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata: {name: two, namespace: istio-system}
      spec:
        servers:
        - port: {number: 443, name: https, protocol: HTTPS}
          hosts: ["b.example.com", "a.example.com"]
          tls: {mode: PASSTHROUGH}
        - port: {number: 80, name: tcp, protocol: TCP}
          hosts: ["*"]
        - port: {number: 443, name: tls, protocol: TLS}
          hosts: ["c.example.com"]
          tls: {mode: PASSTHROUGH}
      ---
      apiVersion: networking.istio.io/v1
      kind: Gateway
      metadata: {name: elsewhere, namespace: istio-system}
      spec:
        selector: {istio: egressgateway}
        servers:
        - port: {number: 80, name: tcp, protocol: TCP}
          hosts: ["*"]
      ---
      apiVersion: v1
      kind: Secret
      metadata: {name: a-cert, namespace: istio-system}
      stringData: {cert: x, key: y}
    `);
    expect(r.all).toEqual([
      'cfg.yaml:19: Gateway/istio-system/two: spec.servers[0].hosts[1]: conflicting server for host "a.example.com" on port 443: already defined by Gateway/istio-system/one',
      'cfg.yaml:21: Gateway/istio-system/two: spec.servers[1].port.protocol: protocol TCP conflicts with the HTTP server on port 80 of Gateway/istio-system/one: plaintext HTTP, TLS and TCP servers need different ports',
    ]);
  });
});

describe('validate: configuration cannot inject protocol (CR, LF, NUL in header values)', () => {
  // YAML double-quoted strings: "\r\n" is CR LF in the value.
  const vs = (http: string): string => `
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: inject, namespace: default}
    spec:
      hosts: [inject.test]
      http:
${http}`;

  it('a headers set/add value with CR LF is an error at its path; remove keeps taking names', () => {
    const r = check(vs(`
      - route: [{destination: {host: a}}]
        headers:
          response:
            set: {x-a: "a\\r\\nX-Injected: 1"}
          request:
            add: {x-b: "b\\u0000c"}`));
    expect(r.errors).toEqual([
      expect.stringMatching(/cfg\.yaml:\d+: VirtualService\/default\/inject: spec\.http\[0\]\.headers\.response\.set\.x-a: must not contain CR or LF/),
      expect.stringMatching(/spec\.http\[0\]\.headers\.request\.add\.x-b: must not contain NUL/),
    ]);
  });

  it('destination-level headers, redirect, rewrite and CORS lists are checked too', () => {
    const r = check(vs(`
      - match: [{uri: {prefix: /r}}]
        redirect: {uri: "/x\\r\\nSet-Cookie: a=b", authority: "a\\nb"}
      - match: [{uri: {prefix: /w}}]
        rewrite: {authority: "h\\r\\nx: y"}
        corsPolicy: {allowOrigins: [{exact: "https://a.test"}], allowHeaders: ["x\\r\\ny"], exposeHeaders: ["ok", "a\\u0001b"]}
        route:
        - destination: {host: a}
          headers: {response: {set: {x-d: "d\\r\\n"}}}`));
    expect(r.errors.map((e) => e.replace(/^.*?: VirtualService\/default\/inject: /, '').replace(/:.*$/, ''))).toEqual([
      'spec.http[0].redirect.uri',
      'spec.http[0].redirect.authority',
      'spec.http[1].rewrite.authority',
      'spec.http[1].corsPolicy.allowHeaders[0]',
      'spec.http[1].corsPolicy.exposeHeaders[1]',
      'spec.http[1].route[0].headers.response.set.x-d',
    ]);
  });

  it('HTAB and ordinary punctuation stay valid', () => {
    const r = check(vs(`
      - route: [{destination: {host: a}}]
        headers: {response: {set: {x-a: "a\\tb; c=d, e"}}}`));
    expect(r.errors).toEqual([]);
  });
});

describe('validate: Telemetry (telemetry.istio.io v1, v1alpha1)', () => {
  it('accepts the Telemetry kind and reports its problems at their lines: CEL filters and tag values, tag operations, custom tags, sampling', () => {
    const r = check(`
      apiVersion: telemetry.istio.io/v1
      kind: Telemetry
      metadata: {name: mesh-default, namespace: istio-system}
      spec:
        accessLogging:
        - providers: [{name: envoy}]
          filter:
            expression: response.code >= 400
        - filter:
            expression: response.code >= "500"
        - filter:
            expression: request.host
        metrics:
        - overrides:
          - match: {metric: REQUEST_COUNT}
            tagOverrides:
              request_host: {value: request.host}
              destination_version: {operation: REMOVE, value: "'x'"}
              source_app: {operation: UPSERT}
              other: {value: "upstream_peer.labels['app']"}
          - match: {metric: REQUEST_COUNT, customMetric: mine}
        tracing:
        - randomSamplingPercentage: 101
          customTags:
            both: {literal: {value: a}, header: {name: x-a}}
      ---
      apiVersion: telemetry.istio.io/v1alpha1
      kind: Telemetry
      metadata: {name: t, namespace: default}
      spec:
        selector: {matchLabels: {app: edge}}
        targetRefs: [{kind: Gateway, name: edge}]
    `);
    expect(r.errors).toEqual([
      'cfg.yaml:10: Telemetry/istio-system/mesh-default: spec.accessLogging[1].filter.expression: invalid CEL expression "response.code >= \\"500\\"": no such overload: int >= string',
      'cfg.yaml:12: Telemetry/istio-system/mesh-default: spec.accessLogging[2].filter.expression: CEL expression "request.host" must be a condition (bool), it is string',
      'cfg.yaml:18: Telemetry/istio-system/mesh-default: spec.metrics[0].overrides[0].tagOverrides.destination_version.value: value must not be set when operation is REMOVE',
      'cfg.yaml:19: Telemetry/istio-system/mesh-default: spec.metrics[0].overrides[0].tagOverrides.source_app: value must be set when operation is UPSERT',
      "cfg.yaml:20: Telemetry/istio-system/mesh-default: spec.metrics[0].overrides[0].tagOverrides.other.value: invalid CEL expression \"upstream_peer.labels['app']\": Unknown variable: upstream_peer",
      'cfg.yaml:21: Telemetry/istio-system/mesh-default: spec.metrics[0].overrides[1].match.customMetric: set only one of metric, customMetric (found metric and customMetric)',
      'cfg.yaml:23: Telemetry/istio-system/mesh-default: spec.tracing[0].randomSamplingPercentage: must be between 0 and 100, got 101',
      'cfg.yaml:25: Telemetry/istio-system/mesh-default: spec.tracing[0].customTags.both.header: set only one of literal, environment, header, formatter (found literal and header)',
      'cfg.yaml:32: Telemetry/default/t: spec.targetRefs: set only one of selector, targetRef, targetRefs (found selector and targetRefs)',
    ]);
    expect(r.accepted).toEqual(['Telemetry/istio-system/mesh-default', 'Telemetry/default/t']);
  });

  it('checks the mesh config tracing and logging providers: zipkin, opentelemetry, envoyFileAccessLog, default providers', () => {
    const r = check(`
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: istio, namespace: istio-system}
      data:
        mesh: |-
          defaultProviders:
            tracing: [zipkin]
            accessLogging: logs
          extensionProviders:
          - name: zipkin
            zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, path: api/v2/spans}
          - name: otel
            opentelemetry: {service: otel.observability.svc.cluster.local, http: {path: /v1/traces}, grpc: {}}
          - name: file
            envoyFileAccessLog: {path: /tmp/a.log, logFormat: {text: "%RESPONSE_CODE%", labels: {code: "%RESPONSE_CODE%"}}}
          - name: nothing
          defaultConfig:
            tracing: {sampling: 100.5}
    `);
    expect(r.errors).toEqual([
      'cfg.yaml:8: ConfigMap/istio-system/istio: data.mesh.defaultProviders.accessLogging: must be a list',
      'cfg.yaml:11: ConfigMap/istio-system/istio: data.mesh.extensionProviders[0].zipkin.path: must be a path starting with "/", got "api/v2/spans"',
      'cfg.yaml:13: ConfigMap/istio-system/istio: data.mesh.extensionProviders[1].opentelemetry.port: missing required field',
      'cfg.yaml:13: ConfigMap/istio-system/istio: data.mesh.extensionProviders[1].opentelemetry.grpc: set only one of http, grpc (found http and grpc)',
      'cfg.yaml:15: ConfigMap/istio-system/istio: data.mesh.extensionProviders[2].envoyFileAccessLog.logFormat.labels: set only one of text, labels (found text and labels)',
      'cfg.yaml:16: ConfigMap/istio-system/istio: data.mesh.extensionProviders[3]: must set one provider: envoyExtAuthzHttp, envoyExtAuthzGrpc, zipkin, lightstep, datadog, stackdriver, opencensus, skywalking, opentelemetry, prometheus, envoyFileAccessLog, envoyHttpAls, envoyTcpAls, envoyOtelAls, sds',
      'cfg.yaml:18: ConfigMap/istio-system/istio: data.mesh.defaultConfig.tracing.sampling: must be between 0 and 100, got 100.5',
    ]);
  });
});
