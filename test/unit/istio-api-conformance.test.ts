// Gatehouse's schema against Istio's own API. `@kubernetes-models/istio` is generated from Istio's
// CRDs: its .d.ts files declare every field of every kind. Every one of them must be known to
// Gatehouse's schema (honoured, or accepted with an "ignored" warning): a field of the current API
// that validation does not know would make valid Istio an error.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import type { Schema } from '../../src/config/schema.js';
import { formatProblem } from '../../src/config/types.js';
import { validate } from '../../src/config/validate.js';
import {
  authorizationPolicySpec, destinationRuleSpec, gatewaySpec, peerAuthenticationSpec, requestAuthenticationSpec, serviceEntrySpec,
  sidecarSpec, telemetrySpec, virtualServiceSpec, workloadEntrySpec,
} from '../../src/config/schema-istio.js';
import { specFields, type ApiField } from '../helpers/istio-api-fields.js';

const KINDS: Array<{ group: string; kind: string; schema: Schema; versions: string[] }> = [
  { group: 'networking.istio.io', kind: 'Gateway', schema: gatewaySpec, versions: ['v1', 'v1beta1', 'v1alpha3'] },
  { group: 'networking.istio.io', kind: 'VirtualService', schema: virtualServiceSpec, versions: ['v1', 'v1beta1', 'v1alpha3'] },
  { group: 'networking.istio.io', kind: 'DestinationRule', schema: destinationRuleSpec, versions: ['v1', 'v1beta1', 'v1alpha3'] },
  { group: 'networking.istio.io', kind: 'ServiceEntry', schema: serviceEntrySpec, versions: ['v1', 'v1beta1', 'v1alpha3'] },
  { group: 'networking.istio.io', kind: 'WorkloadEntry', schema: workloadEntrySpec, versions: ['v1', 'v1beta1', 'v1alpha3'] },
  { group: 'networking.istio.io', kind: 'Sidecar', schema: sidecarSpec, versions: ['v1', 'v1beta1', 'v1alpha3'] },
  { group: 'security.istio.io', kind: 'AuthorizationPolicy', schema: authorizationPolicySpec, versions: ['v1', 'v1beta1'] },
  { group: 'security.istio.io', kind: 'RequestAuthentication', schema: requestAuthenticationSpec, versions: ['v1', 'v1beta1'] },
  { group: 'security.istio.io', kind: 'PeerAuthentication', schema: peerAuthenticationSpec, versions: ['v1', 'v1beta1'] },
  { group: 'telemetry.istio.io', kind: 'Telemetry', schema: telemetrySpec, versions: ['v1', 'v1alpha1'] },
];

/**
 * Fields of the current API (istio/istio master's crd-all.gen.yaml, 2026-08, and istio/api) that
 * are newer than the CRDs the package was generated from (Istio 1.29): checked the same way.
 */
const NEWER_THAN_PACKAGE: Record<string, Array<[string, string]>> = {
  DestinationRule: [
    ['spec.trafficPolicy.connectionPool.http.http2KeepAlive', 'object'],
    ['spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval', 'string'],
    ['spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout', 'string'],
    ['spec.subsets.[].trafficPolicy.portLevelSettings.[].connectionPool.http.http2KeepAlive.timeout', 'string'],
    ['spec.trafficPolicy.loadBalancer.zoneAwareLbSetting', 'object'],
    ['spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.enabled', 'boolean'],
    ['spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failover.[].from', 'string'],
    ['spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failover.[].to', 'string'],
    ['spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failoverPriority.[]', 'string'],
    ['spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.minClusterSize', 'number'],
    ['spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes.[]', 'number'],
    ['spec.trafficPolicy.retryBudget.budgetInterval', 'string'],
    ['spec.trafficPolicy.loadBalancer.backendUtilization.errorUtilizationPenaltyPercent', 'number'],
    ['spec.trafficPolicy.loadBalancer.backendUtilization.metricNamesForComputingUtilization.[]', 'string'],
    ['spec.trafficPolicy.loadBalancer.backendUtilization.weightExpirationPeriod', 'string'],
    ['spec.trafficPolicy.loadBalancer.backendUtilization.weightStabilizationPeriod', 'string'],
    ['spec.trafficPolicy.loadBalancer.backendUtilization.weightUpdatePeriod', 'string'],
  ],
  Gateway: [
    ['spec.servers.[].tls.insecureSkipVerify', 'boolean'],
    ['spec.servers.[].tls.ecdhCurves.[]', 'string'],
  ],
  RequestAuthentication: [['spec.jwtRules.[].presence', '"OPTIONAL" | "REQUIRED"']],
  VirtualService: [['spec.http.[].redirect.prefixRewrite', 'string']],
  AuthorizationPolicy: [
    ['spec.rules.[].from.[].source.trustDomains.[]', 'string'],
    ['spec.rules.[].from.[].source.notTrustDomains.[]', 'string'],
  ],
  Sidecar: [
    ['spec.inboundConnectionPool.http.http2KeepAlive.interval', 'string'],
    ['spec.ingress.[].connectionPool.http.http2KeepAlive.timeout', 'string'],
    ['spec.ingress.[].tls.insecureSkipVerify', 'boolean'],
    ['spec.ingress.[].tls.ecdhCurves.[]', 'string'],
  ],
};

/**
 * Strings of the CRD that Istio's own validation narrows to a set of values (so Gatehouse checks
 * them as an enum): port protocols (pkg/config/protocol), CORS methods, gRPC status names, tunnel
 * protocols (CONNECT / POST).
 */
const NARROWED_BY_ISTIO_VALIDATION = [/\.port\.protocol$/, /^spec\.ports\.\[\]\.protocol$/, /\.corsPolicy\.allowMethods\.\[\]$/, /\.abort\.grpcStatus$/, /\.tunnel\.protocol$/];

const show = (path: readonly string[]): string => path.join('.').replace(/\.\[\]/g, '[]');

/** The schema at a field path (`[]` = list item, `*` = map value); 'open' under a free-form part. */
function schemaAt(root: Schema, path: readonly string[]): Schema | 'open' | undefined {
  let s: Schema = root;
  for (const seg of path) {
    const shape = s.shape;
    if (shape.type === 'any') return 'open';
    let next: Schema | undefined;
    if (seg === '[]') next = shape.type === 'list' ? shape.item : undefined;
    else if (seg === '*') next = shape.type === 'map' ? shape.value : undefined;
    else if (shape.type === 'object') {
      next = Object.hasOwn(shape.fields, seg) ? shape.fields[seg] : undefined;
      if (!next && shape.open) return 'open';
    }
    if (!next) return undefined;
    s = next;
  }
  return s;
}

/** Why Gatehouse's schema at a path does not accept what the API declares there, if it does not. */
function typeMismatch(s: Schema, f: ApiField): string | undefined {
  const t = f.type;
  const shape = s.shape;
  if (shape.type === 'any') return undefined;
  if (t === 'object') return shape.type === 'object' || shape.type === 'map' ? undefined : `is an object in the API, ${shape.type} in Gatehouse`;
  if (t === 'string') {
    if (shape.type !== 'string') return `is a string in the API, ${shape.type} in Gatehouse`;
    const narrowed = NARROWED_BY_ISTIO_VALIDATION.some((re) => re.test(f.path.join('.')));
    return shape.values && !narrowed ? 'is a free string in the API, an enum in Gatehouse' : undefined;
  }
  if (t === 'number') return shape.type === 'integer' || shape.type === 'number' ? undefined : `is a number in the API, ${shape.type} in Gatehouse`;
  if (t === 'boolean') return shape.type === 'boolean' ? undefined : `is a boolean in the API, ${shape.type} in Gatehouse`;
  if (/^"[^"]*"( \| "[^"]*")*$/.test(t)) {
    if (shape.type !== 'string') return `is an enum in the API, ${shape.type} in Gatehouse`;
    const values = [...t.matchAll(/"([^"]*)"/g)].map((m) => m[1]!);
    const missing = shape.values ? values.filter((v) => !shape.values!.includes(v)) : [];
    return missing.length > 0 ? `API values ${missing.join(', ')} are not accepted by Gatehouse` : undefined;
  }
  return undefined; // unions such as `number | string` (int-or-string) are checked by the documents below
}

describe('schema conformance with the current Istio API (@kubernetes-models/istio, generated from Istio CRDs)', () => {
  for (const k of KINDS) {
    for (const version of k.versions) {
      it(`${k.kind} ${version}: every field of the API is known to Gatehouse's schema, with a compatible type`, () => {
        const newer = (NEWER_THAN_PACKAGE[k.kind] ?? []).map(([p, type]): ApiField => ({ path: p.split('.'), type }));
        const fields = [...specFields(k.group, version, k.kind), ...newer];
        expect(fields.length).toBeGreaterThan(3);
        const unknown: string[] = [];
        const mismatched: string[] = [];
        for (const f of fields) {
          const s = schemaAt(k.schema, f.path.slice(1));
          if (s === undefined) unknown.push(show(f.path));
          else if (s !== 'open') {
            const why = typeMismatch(s, f);
            if (why) mismatched.push(`${show(f.path)} ${why}`);
          }
        }
        expect(unknown).toEqual([]);
        expect(mismatched).toEqual([]);
      });
    }
  }
});

describe('the API field reader', () => {
  it('finds nested, list, map and oneof fields in the generated .d.ts', () => {
    const paths = (group: string, kind: string): string[] => specFields(group, 'v1', kind).map((f) => show(f.path));
    expect(paths('networking.istio.io', 'Gateway')).toEqual(expect.arrayContaining(['spec.servers[].tls.credentialName', 'spec.selector.*', 'spec.servers[].port.number']));
    // consistentHash sits in a oneof (`} & ({ ... } | { ... })`), under subsets and portLevelSettings too.
    expect(paths('networking.istio.io', 'DestinationRule')).toEqual(
      expect.arrayContaining(['spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name', 'spec.subsets[].trafficPolicy.portLevelSettings[].loadBalancer.consistentHash.maglev.tableSize']),
    );
    expect(paths('networking.istio.io', 'VirtualService')).toEqual(expect.arrayContaining(['spec.http[].match[].headers.*.exact', 'spec.tcp[].route[].weight']));
    expect(paths('security.istio.io', 'AuthorizationPolicy')).toEqual(expect.arrayContaining(['spec.rules[].from[].source.serviceAccounts[]', 'spec.rules[].when[].key']));
    expect(paths('telemetry.istio.io', 'Telemetry')).toEqual(
      expect.arrayContaining(['spec.accessLogging[].filter.expression', 'spec.metrics[].overrides[].tagOverrides.*.operation', 'spec.tracing[].customTags.*.header.defaultValue']),
    );
  });
});

// ---- Documents: what the package's validators (the CRD schemas) accept, Gatehouse accepts ------------

const DOCS = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls:
      mode: SIMPLE
      tlsCertificates:
      - {serverCertificate: /etc/certs/rsa.pem, privateKey: /etc/certs/rsa.key}
      - {serverCertificate: /etc/certs/ec.pem, privateKey: /etc/certs/ec.key}
  - port: {number: 3306, name: mysql, protocol: MYSQL}
    hosts: ["*"]
  - port: {number: 6379, name: redis, protocol: REDIS}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: istio-system}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /a}}]
    route:
    - {destination: {host: app.default.svc.cluster.local, subset: v1}, weight: 1}
    - {destination: {host: app.default.svc.cluster.local, subset: v2}, weight: 3}
    mirror: {host: app.default.svc.cluster.local}
    mirror_percent: 5
  - redirect: {prefixRewrite: /b}
  tcp:
  - match: [{port: 3306}]
    route:
    - {destination: {host: db.default.svc.cluster.local, port: {number: 3306}}, weight: 2}
    - {destination: {host: db2.default.svc.cluster.local, port: {number: 3306}}, weight: 2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: default}
spec:
  host: app.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      warmup: {duration: 60s, minimumPercent: 20, aggression: 1.5}
      zoneAwareLbSetting: {enabled: true, minClusterSize: 3}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s, probes: 9}, maxConnectionDuration: 1h}
      http: {http2MaxRequests: 1000, maxConcurrentStreams: 100, http2KeepAlive: {interval: 10s, timeout: 3s}, idleTimeout: 300s}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, outlierDetectionHttpErrorCodes: [429, 503]}
    retryBudget: {percent: 25, minRetryConcurrency: 5, budgetInterval: 10s}
    proxyProtocol: {version: V2}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s, attributes: [{name: SameSite, value: Strict}]}}}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy-warmup, namespace: default}
spec:
  host: legacy.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST, warmupDurationSecs: 30s}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  addresses: ["2001:db8::10", "fd00::/64", 10.1.2.3]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 3306, name: mysql, protocol: MYSQL}
  - {number: 6379, name: redis, protocol: REDIS}
  - {number: 27017, name: mongo, protocol: MONGO}
  - {number: 53, name: dns, protocol: UDP}
  - {number: 3128, name: proxy, protocol: HTTP_PROXY}
  - {number: 8080, name: sniffed}
  - {number: 8081, name: sniffed-empty, protocol: ""}
  endpoints:
  - address: 10.1.2.3
    ports: {mysql: 3306}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dfp, namespace: default}
spec:
  hosts: ["*.wikipedia.org"]
  location: MESH_EXTERNAL
  resolution: DYNAMIC_DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - from:
    - source: {serviceAccounts: [default/sleep, bookinfo/productpage], trustDomains: [cluster.local]}
    - source: {notServiceAccounts: [evil]}
    when:
    - {key: source.serviceAccount, values: [default/sleep]}
    - {key: source.trustDomain, notValues: ["*.evil.example"]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: istio-system}
spec:
  jwtRules:
  - issuer: https://issuer.example.com
    jwks_uri: https://issuer.example.com/jwks
    spaceDelimitedClaims: [roles, custom_scope]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400 || request.headers['x-debug'] == '1'"}
    match: {mode: CLIENT}
  metrics:
  - providers: [{name: prometheus}]
    reportingInterval: 10s
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT_AND_SERVER}
      disabled: false
      tagOverrides:
        request_host: {value: request.host}
        destination_port: {value: string(destination.port)}
        destination_version: {operation: REMOVE}
    - match: {customMetric: my_metric}
      disabled: true
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 10.5
    disableSpanReporting: false
    useRequestIdForTraceSampling: true
    enableIstioTags: true
    disableContextPropagation: false
    match: {mode: CLIENT}
    customTags:
      cluster: {literal: {value: edge}}
      pod: {environment: {name: POD_NAME, defaultValue: unknown}}
      user: {header: {name: x-user, defaultValue: anonymous}}
      route: {formatter: {value: "%ROUTE_NAME%"}}
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: by-ref, namespace: default}
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: edge}
  accessLogging:
  - disabled: true
`;

describe('documents the CRD schemas accept are accepted by Gatehouse (warnings at most)', () => {
  it('a configuration using newer fields, every ServiceEntry protocol and relative weights validates without errors', async () => {
    const { resources, problems } = parseYamlText(DOCS, 'istio.yaml');
    expect(problems).toEqual([]);
    // The package's own validators (the CRD schemas) accept every document.
    // Each model class takes its own kind's data.
    const models: Record<string, new (data: any) => { validate(): void }> = {
      Gateway: (await import('@kubernetes-models/istio/networking.istio.io/v1/Gateway')).Gateway,
      VirtualService: (await import('@kubernetes-models/istio/networking.istio.io/v1/VirtualService')).VirtualService,
      DestinationRule: (await import('@kubernetes-models/istio/networking.istio.io/v1/DestinationRule')).DestinationRule,
      ServiceEntry: (await import('@kubernetes-models/istio/networking.istio.io/v1/ServiceEntry')).ServiceEntry,
      Sidecar: (await import('@kubernetes-models/istio/networking.istio.io/v1/Sidecar')).Sidecar,
      AuthorizationPolicy: (await import('@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy')).AuthorizationPolicy,
      RequestAuthentication: (await import('@kubernetes-models/istio/security.istio.io/v1/RequestAuthentication')).RequestAuthentication,
      Telemetry: (await import('@kubernetes-models/istio/telemetry.istio.io/v1/Telemetry')).Telemetry,
    };
    for (const r of resources) {
      const Model = models[r.kind]!;
      expect(() => new Model({ metadata: r.metadata, spec: r.spec }).validate(), `${r.kind}/${r.metadata.name}`).not.toThrow();
    }
    const res = validate(resources, { gatewayNamespace: 'istio-system', labels: { istio: 'ingressgateway' }, rootNamespace: 'istio-system' });
    expect(res.problems.filter((p) => p.severity === 'error').map(formatProblem)).toEqual([]);
    // What Gatehouse does not honour is said, never dropped silently.
    const warnings = res.problems.filter((p) => p.severity === 'warning').map((p) => `${p.resource}: ${p.path}`);
    expect(warnings).toEqual(
      expect.arrayContaining([
        'Gateway/istio-system/gw: spec.servers[1].tls.tlsCertificates',
        'DestinationRule/default/dr: spec.trafficPolicy.loadBalancer.warmup',
        'DestinationRule/default/dr: spec.trafficPolicy.connectionPool.tcp.tcpKeepalive',
        'DestinationRule/default/dr: spec.trafficPolicy.connectionPool.http.http2KeepAlive',
        'DestinationRule/default/legacy-warmup: spec.trafficPolicy.loadBalancer.warmupDurationSecs',
        'Telemetry/istio-system/mesh-default: spec.metrics[0].reportingInterval',
      ]),
    );
  });
});
