// The Telemetry API resolved for a gateway (src/controlplane/build/telemetry.ts), as istiod resolves
// it (pilot/pkg/model/telemetry.go): scoping (root namespace, namespace, selector), precedence (the
// most specific wins per field), the CLIENT mode of a gateway, access log providers and filters,
// metric overrides, and the tracing selection over the mesh config's providers and sampling.
import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { applyMeshObject } from '../../src/config/mesh.js';
import { DEFAULT_MESH_CONFIG, formatProblem, type MeshConfig } from '../../src/config/types.js';
import { resolve, type ResolveOptions } from '../../src/controlplane/resolve.js';
import type { Snapshot } from '../../src/controlplane/snapshot.js';

const OPTS: ResolveOptions = { labels: { istio: 'ingressgateway', app: 'edge' }, namespace: 'gw', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG };

function mesh(obj: unknown): MeshConfig {
  const r = applyMeshObject(DEFAULT_MESH_CONFIG, obj, () => ({ file: 'mesh.yaml', line: 1, resource: '', severity: 'error' }));
  expect(r.problems).toEqual([]);
  return r.mesh;
}

function snap(yaml: string, opts: Partial<ResolveOptions> = {}): Snapshot {
  const { resources, problems } = parseYamlText(yaml, 'cfg.yaml');
  expect(problems).toEqual([]);
  return resolve(resources, { ...OPTS, ...opts });
}
const warnings = (s: Snapshot): string[] => s.warnings.map(formatProblem);

/** Istio's service tags (buildServiceTags) for OPTS: on every span unless enableIstioTags is false. */
const ISTIO_TAGS = [
  { tag: 'istio.canonical_revision', literal: { value: 'latest' } },
  { tag: 'istio.canonical_service', literal: { value: 'edge' } },
  { tag: 'istio.cluster_id', literal: { value: 'Kubernetes' } },
  { tag: 'istio.mesh_id', literal: { value: 'cluster.local' } },
  { tag: 'istio.namespace', literal: { value: 'gw' } },
];

const TRACING_MESH = {
  defaultConfig: { tracing: { sampling: 5 } },
  extensionProviders: [
    { name: 'zipkin', zipkin: { service: 'zipkin.istio-system.svc.cluster.local', port: 9411 } },
    { name: 'otel', opentelemetry: { service: 'observability/otel-collector.observability.svc.cluster.local', port: 4318, http: { path: '/v1/traces', timeout: '2s', headers: [{ name: 'x-tenant', value: 'edge' }] } } },
    { name: 'otel-grpc', opentelemetry: { service: 'otel-collector.observability.svc.cluster.local', port: 4317 } },
    { name: 'dd', datadog: { service: 'datadog.agent', port: 8126 } },
    { name: 'file', envoyFileAccessLog: { path: '/var/log/gw.log', logFormat: { labels: { code: '%RESPONSE_CODE%', path: '%REQ(:PATH)%' } } } },
    { name: 'als', envoyHttpAls: { service: 'als.default', port: 9000 } },
  ],
};

describe('Telemetry API: what applies to a gateway', () => {
  it('without any Telemetry, the mesh config decides: no Telemetry access log (accessLogFile applies), metrics as they are, legacy tracing at defaultConfig.tracing.sampling', () => {
    const s = snap('', { mesh: mesh({ accessLogFile: '/dev/stdout', defaultConfig: { tracing: { sampling: 2.5 } } }) });
    expect(s.telemetry).toEqual({
      api: false,
      policies: [],
      tracing: { random_sampling: { value: 2.5 }, custom_tags: ISTIO_TAGS, service_cluster: 'edge.gw', spawn_upstream_span: true, use_request_id_for_trace_sampling: true, enable_istio_tags: true },
    });
    // Istio's default sampling is 1%, and 0 reads as unset.
    expect(snap('', { mesh: mesh({ defaultConfig: { tracing: { sampling: 0 } } }) }).telemetry.tracing?.random_sampling).toEqual({ value: 1 });
    expect(snap('', { mesh: mesh({ enableTracing: false }) }).telemetry.tracing).toBeUndefined();
  });

  it('root namespace, then the gateway namespace, then a matching selector; the first namespace-wide Telemetry of a namespace wins; other namespaces and selectors do not apply', () => {
    const s = snap(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: 10}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns-default, namespace: gw}
spec:
  tracing: [{randomSamplingPercentage: 20}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns-second, namespace: gw}
spec:
  tracing: [{randomSamplingPercentage: 99}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: edge, namespace: gw}
spec:
  selector: {matchLabels: {app: edge}}
  tracing: [{randomSamplingPercentage: 30}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: other-app, namespace: gw}
spec:
  selector: {matchLabels: {app: other}}
  tracing: [{randomSamplingPercentage: 40}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: elsewhere, namespace: default}
spec:
  tracing: [{randomSamplingPercentage: 50}]
`, { mesh: mesh({ ...TRACING_MESH, defaultProviders: { tracing: ['zipkin'] } }) });
    expect(s.telemetry.policies).toEqual(['istio-system/mesh-default', 'gw/ns-default', 'gw/edge']);
    expect(s.telemetry.tracing?.random_sampling).toEqual({ value: 30 });
    expect(warnings(s)).toEqual(['cfg.yaml:17: Telemetry/gw/ns-second: spec: another namespace-wide Telemetry applies in namespace gw (ns-default, defined first); this one is ignored, as in Istio']);
    // Without the selector's match, the namespace's value wins over the root's.
    expect(snap(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: 10, customTags: {env: {literal: {value: prod}}}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns-default, namespace: gw}
spec:
  tracing: [{randomSamplingPercentage: 20}]
`, { mesh: mesh({ ...TRACING_MESH, defaultProviders: { tracing: ['zipkin'] } }) }).telemetry.tracing).toMatchObject({
      random_sampling: { value: 20 },
      // Fields the namespace leaves unset keep the root's (per field, not per resource).
      custom_tags: [...ISTIO_TAGS, { tag: 'env', literal: { value: 'prod' } }],
    });
  });

  it('targetRefs are not supported: such a Telemetry is not applied, with a warning; SERVER-only entries do not apply to a gateway', () => {
    const s = snap(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ref, namespace: gw}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: edge}]
  accessLogging: [{providers: [{name: envoy}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    match: {mode: SERVER}
`);
    expect(s.telemetry.policies).toEqual(['istio-system/mesh-default']);
    expect(s.telemetry.access_log).toEqual([]);
    expect(warnings(s)).toEqual([
      "cfg.yaml:6: Telemetry/gw/ref: spec.targetRefs: targetRef/targetRefs (Kubernetes Gateway API attachment) are not supported by Gatehouse; this Telemetry is not applied",
      "cfg.yaml:15: Telemetry/istio-system/mesh-default: spec.accessLogging[0].match.mode: applies to SERVER traffic only: a gateway's is CLIENT (outbound), so it does not apply here",
    ]);
  });
});

describe('Telemetry API: access logging', () => {
  it('the built-in envoy provider writes /dev/stdout in the mesh config format, with the CEL filter as Envoy\'s ExpressionFilter', () => {
    const s = snap(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
`, { mesh: mesh({ accessLogFile: '/tmp/legacy.log', accessLogEncoding: 'JSON' }) });
    expect(s.telemetry.access_log).toEqual([
      {
        name: 'envoy.access_loggers.file',
        filter: {
          extension_filter: {
            name: 'envoy.access_loggers.extension_filters.cel',
            typed_config: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter', expression: 'response.code >= 400' },
          },
        },
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
          path: '/dev/stdout',
          log_format: { json_format: expect.objectContaining({ response_code: '%RESPONSE_CODE%', route_name: '%ROUTE_NAME%' }) },
        },
        metadata: { filter_metadata: { istio: { provider: 'envoy' } } },
      },
    ]);
  });

  it('a namespace Telemetry disabling the root one\'s provider turns the log off; a selector one turns it on again with its own filter', () => {
    const root = `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: file}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: gw}
spec:
  accessLogging: [{disabled: true}]
`;
    const m = mesh(TRACING_MESH);
    expect(snap(root, { mesh: m }).telemetry.access_log).toEqual([]);
    const on = snap(`${root}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: errors-only, namespace: gw}
spec:
  selector: {matchLabels: {app: edge}}
  accessLogging: [{disabled: false, filter: {expression: "response.code >= 500"}}]
`, { mesh: m }).telemetry.access_log;
    expect(on?.map((l) => [l.typed_config.path, l.typed_config.log_format, l.filter?.extension_filter.typed_config.expression])).toEqual([
      ['/var/log/gw.log', { json_format: { code: '%RESPONSE_CODE%', path: '%REQ(:PATH)%' } }, undefined],
    ]);
  });

  it('defaultProviders.accessLogging turns the Telemetry API on without any Telemetry; unknown and unsupported providers are warned about and skipped', () => {
    const s = snap('', { mesh: mesh({ ...TRACING_MESH, defaultProviders: { accessLogging: ['envoy'] } }) });
    expect(s.telemetry.api).toBe(true);
    expect(s.telemetry.access_log?.map((l) => l.metadata.filter_metadata.istio.provider)).toEqual(['envoy']);
    const t = snap(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging: [{providers: [{name: als}, {name: missing}, {name: envoy}]}]
`, { mesh: mesh(TRACING_MESH) });
    expect(t.telemetry.access_log?.map((l) => l.metadata.filter_metadata.istio.provider)).toEqual(['envoy']);
    expect(warnings(t)).toEqual([
      'cfg.yaml:6: Telemetry/istio-system/mesh-default: spec.accessLogging[0].providers[0].name: extension provider "als" (envoyHttpAls) is not supported by Gatehouse; no access log for it',
      'cfg.yaml:6: Telemetry/istio-system/mesh-default: spec.accessLogging[0].providers[1].name: no extension provider named "missing" in the mesh config; no access log for it',
    ]);
  });
});

describe('Telemetry API: metrics', () => {
  it('overrides per metric: disabled, tags removed and upserted (CEL), later levels over earlier ones, SERVER-only ones left out', () => {
    const s = snap(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: ALL_METRICS}
      tagOverrides:
        destination_canonical_revision: {operation: REMOVE}
    - match: {metric: REQUEST_SIZE}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns-default, namespace: gw}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_host: {value: request.host}
        destination_canonical_revision: {value: "'v-' + string(response.code)"}
    - match: {metric: REQUEST_DURATION, mode: SERVER}
      disabled: true
`);
    const byName = Object.fromEntries((s.telemetry.stats?.metrics ?? []).map((m) => [m.name, m]));
    expect(s.telemetry.stats?.disabled).toBe(false);
    expect(byName['requests_total']).toEqual({ name: 'requests_total', drop: false, tags_to_remove: [], dimensions: { destination_canonical_revision: "'v-' + string(response.code)", request_host: 'request.host' } });
    expect(byName['request_bytes']).toEqual({ name: 'request_bytes', drop: true, tags_to_remove: ['destination_canonical_revision'], dimensions: {} });
    expect(byName['request_duration_milliseconds']).toEqual({ name: 'request_duration_milliseconds', drop: false, tags_to_remove: ['destination_canonical_revision'], dimensions: {} });
    expect(byName['tcp_sent_bytes_total']?.tags_to_remove).toEqual(['destination_canonical_revision']);
  });

  it('ALL_METRICS disabled turns every istio_* metric off; a provider other than Prometheus does too (Istio installs no stats filter for it)', () => {
    const off = snap(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics: [{overrides: [{disabled: true}]}]
`);
    expect(off.telemetry.stats).toEqual({ disabled: true, metrics: [] });
    const sd = snap(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics: [{providers: [{name: stackdriver}]}]
`);
    expect(sd.telemetry.stats).toEqual({ disabled: true, metrics: [] });
    expect(warnings(sd)).toEqual(['cfg.yaml:6: Telemetry/istio-system/mesh-default: spec.metrics[0].providers[0].name: extension provider "stackdriver" (stackdriver) is not supported by Gatehouse for metrics; Gatehouse exports Prometheus metrics only']);
  });
});

describe('Telemetry API: tracing', () => {
  it('defaultProviders.tracing selects a zipkin provider: collector URI, 128-bit ids, B3; sampling from defaultConfig.tracing.sampling', () => {
    const s = snap('', { mesh: mesh({ ...TRACING_MESH, defaultProviders: { tracing: ['zipkin'] } }) });
    expect(s.telemetry.tracing).toEqual({
      random_sampling: { value: 5 },
      custom_tags: ISTIO_TAGS,
      service_cluster: 'edge.gw',
      spawn_upstream_span: true,
      use_request_id_for_trace_sampling: true,
      enable_istio_tags: true,
      provider: {
        name: 'envoy.tracers.zipkin',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.config.trace.v3.ZipkinConfig',
          collector_service: { http_uri: { uri: 'http://zipkin.istio-system.svc.cluster.local:9411/api/v2/spans', timeout: { seconds: 5, nanos: 0 } }, request_headers_to_add: [] },
          collector_endpoint_version: 'HTTP_JSON',
          trace_id_128bit: true,
          shared_span_context: false,
          trace_context_option: 'USE_B3',
        },
        metadata: { filter_metadata: { istio: { provider: 'zipkin' } } },
      },
    });
  });

  it('a Telemetry picks an OpenTelemetry provider (HTTP or gRPC), its sampling, custom tags (literal, environment, header) and disableSpanReporting', () => {
    const yaml = (provider: string, extra = ''): string => `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: ${provider}}]
    randomSamplingPercentage: 100
    customTags:
      zone: {environment: {name: ZONE, defaultValue: unknown}}
      user: {header: {name: x-user}}
      cluster: {literal: {value: edge-1}}
${extra}`;
    const m = mesh({ ...TRACING_MESH, defaultProviders: { tracing: ['zipkin'] } });
    const http = snap(yaml('otel'), { mesh: m }).telemetry.tracing!;
    expect(http.random_sampling).toEqual({ value: 100 });
    expect(http.custom_tags).toEqual([
      ...ISTIO_TAGS,
      { tag: 'cluster', literal: { value: 'edge-1' } },
      { tag: 'user', request_header: { name: 'x-user' } },
      { tag: 'zone', environment: { name: 'ZONE', default_value: 'unknown' } },
    ]);
    expect(http.provider).toEqual({
      name: 'envoy.tracers.opentelemetry',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig',
        http_service: { http_uri: { uri: 'http://otel-collector.observability.svc.cluster.local:4318/v1/traces', timeout: { seconds: 2, nanos: 0 } }, request_headers_to_add: [{ key: 'x-tenant', value: 'edge' }] },
        service_name: 'edge.gw',
      },
      metadata: { filter_metadata: { istio: { provider: 'otel' } } },
    });
    expect(snap(yaml('otel-grpc'), { mesh: m }).telemetry.tracing?.provider?.typed_config).toEqual({
      '@type': 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig',
      grpc_service: { authority: 'otel-collector.observability.svc.cluster.local:4317', initial_metadata: [] },
      service_name: 'edge.gw',
    });
    // disableSpanReporting: no tracing config at all, as istiod leaves the HCM's tracing unset.
    expect(snap(yaml('otel', '    disableSpanReporting: true'), { mesh: m }).telemetry.tracing).toBeUndefined();
  });

  it('a tracing entry without any provider (none named, no default) turns tracing off; an unknown provider too, with a warning; an unsupported one keeps sampling without export', () => {
    const t = (provider: string): string => `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{${provider}randomSamplingPercentage: 50}]
`;
    const m = mesh(TRACING_MESH);
    expect(snap(t(''), { mesh: m }).telemetry.tracing).toBeUndefined();
    const unknown = snap(t('providers: [{name: jaeger}], '), { mesh: m });
    expect(unknown.telemetry.tracing).toBeUndefined();
    expect(warnings(unknown)).toEqual(['cfg.yaml:6: Telemetry/istio-system/mesh-default: spec.tracing[0].providers[0].name: no extension provider named "jaeger" in the mesh config; tracing is off for this gateway, as in Istio']);
    const dd = snap(t('providers: [{name: dd}], '), { mesh: m });
    expect(dd.telemetry.tracing?.random_sampling).toEqual({ value: 50 });
    expect(dd.telemetry.tracing?.provider).toBeUndefined();
    expect(warnings(dd)).toEqual(['cfg.yaml:6: Telemetry/istio-system/mesh-default: spec.tracing[0].providers[0].name: extension provider "dd" (datadog) is not supported by Gatehouse: requests are sampled and traced, spans are not exported']);
  });

  it('the content hash follows the Telemetry resources; a change of sampling is a new snapshot', () => {
    const t = (p: number): string => `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: ${p}}]
`;
    const m = mesh({ ...TRACING_MESH, defaultProviders: { tracing: ['zipkin'] } });
    expect(snap(t(10), { mesh: m }).hash).not.toBe(snap(t(20), { mesh: m }).hash);
    expect(snap(t(10), { mesh: m }).hash).toBe(snap(t(10), { mesh: m }).hash);
  });
});

describe('tracing: span names and Istio tags', () => {
  it("enableIstioTags: false leaves Istio's service tags off; the gateway's labels name them otherwise", () => {
    const m = mesh({ ...TRACING_MESH, defaultProviders: { tracing: ['zipkin'] } });
    const off = snap(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{enableIstioTags: false}]
`, { mesh: m });
    expect(off.telemetry.tracing?.custom_tags).toEqual([]);
    const labelled = snap('', { mesh: m, labels: { 'service.istio.io/canonical-name': 'ingress', 'service.istio.io/canonical-revision': 'v7', app: 'x' } });
    expect(labelled.telemetry.tracing?.custom_tags.slice(0, 2)).toEqual([
      { tag: 'istio.canonical_revision', literal: { value: 'v7' } },
      { tag: 'istio.canonical_service', literal: { value: 'ingress' } },
    ]);
  });

  it("routes are named as Istio's GetRouteOperation names them: host:port of a single destination, else the VirtualService, then the match's path", () => {
    const s = snap(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: gw}
spec:
  hosts: [shop.test]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /api/}}]
    route: [{destination: {host: api.gw.svc.cluster.local, port: {number: 8080}}}]
  - match: [{uri: {exact: /login}}]
    route: [{destination: {host: a.gw.svc.cluster.local, port: {number: 80}}, weight: 50}, {destination: {host: b.gw.svc.cluster.local, port: {number: 80}}, weight: 50}]
  - route: [{destination: {host: web.gw.svc.cluster.local, port: {number: 80}}}]
`);
    const routes = [...s.routes.values()].flatMap((rc) => rc.virtual_hosts.flatMap((vh) => vh.routes.map((r) => r.decorator?.operation)));
    expect(routes).toEqual(['api.gw.svc.cluster.local:8080/api/*', 'shop:80/login', 'web.gw.svc.cluster.local:80/*']);
  });
});
