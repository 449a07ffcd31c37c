// The Telemetry API (telemetry.istio.io Telemetry) over the mesh config, resolved for this gateway
// as istiod resolves it (pilot/pkg/model/telemetry.go, telemetry_logging.go, networking/core
// tracing.go and accesslog.go):
// - which Telemetries apply: the first namespace-wide one (no selector) of the root namespace,
//   then the first namespace-wide one of the gateway's namespace, then those of the gateway's
//   namespace whose selector matches its labels, in config (creation) order; later ones override.
// - a gateway is Istio's CLIENT mode: entries matching SERVER only do not apply to it.
// - access logging: providers (the entry's, else the parent's, else defaultProviders.accessLogging),
//   `disabled`, one CEL `filter` per provider; nothing from the Telemetry API → the mesh config's
//   accessLogFile (Istio's fallback). The built-in provider `envoy` writes /dev/stdout in the mesh
//   config's format.
// - metrics: per metric `disabled` and tag overrides for the Prometheus provider (defaultProviders
//   .metrics when unset: `prometheus`, as Istio's standard install sets it).
// - tracing: the first provider of the last entry naming one (else defaultProviders.tracing),
//   randomSamplingPercentage over defaultConfig.tracing.sampling, customTags, disableSpanReporting.
import { ISTIO_JSON_FORMAT, ISTIO_TEXT_FORMAT, meshJsonFormat } from '../../config/access-log-format.js';
import type { MeshConfig, Resource, TelemetryCustomTag, TelemetrySpec, WorkloadMode } from '../../config/types.js';
import { durationFromMs } from '../snapshot.js';
import { parseDurationMs } from '../../config/duration.js';
import {
  CEL_LOG_FILTER,
  clusterName,
  FILE_ACCESS_LOG,
  type AccessLogConfig,
  type StatsConfig,
  type StatsMetricConfig,
  type TelemetryConfig,
  type TracerHeader,
  type TracingConfig,
  type TracingCustomTag,
  type TracingProvider,
} from '../snapshot.js';
import type { BuildContext } from './context.js';
import type { Warn } from './inputs.js';

/** Istio's built-in extension providers (pkg/config/mesh DefaultMeshConfig); the mesh config's own replace them by name. */
const BUILTIN_PROVIDERS: readonly Provider[] = [
  { name: 'prometheus', prometheus: {} },
  { name: 'stackdriver', stackdriver: {} },
  { name: 'envoy', envoyFileAccessLog: { path: '/dev/stdout' } },
];

/** Istio's standard install names `prometheus` as the default metrics provider. */
const DEFAULT_METRICS_PROVIDERS = ['prometheus'];

/** Envoy's default for a collector request without a timeout (Istio sets 5 s). */
const COLLECTOR_TIMEOUT_MS = 5_000;

/** Istio's REQUEST_COUNT... → the Prometheus names (without `istio_`) of the stats plugin. */
export const METRIC_NAMES: Readonly<Record<string, string>> = {
  REQUEST_COUNT: 'requests_total',
  REQUEST_DURATION: 'request_duration_milliseconds',
  REQUEST_SIZE: 'request_bytes',
  RESPONSE_SIZE: 'response_bytes',
  TCP_OPENED_CONNECTIONS: 'tcp_connections_opened_total',
  TCP_CLOSED_CONNECTIONS: 'tcp_connections_closed_total',
  TCP_SENT_BYTES: 'tcp_sent_bytes_total',
  TCP_RECEIVED_BYTES: 'tcp_received_bytes_total',
  GRPC_REQUEST_MESSAGES: 'request_messages_total',
  GRPC_RESPONSE_MESSAGES: 'response_messages_total',
};
const ALL_METRICS = Object.keys(METRIC_NAMES).sort();

/** A gateway's workload mode. */
const MODE: WorkloadMode = 'CLIENT';

interface Provider {
  name: string;
  [kind: string]: unknown;
}

type Tel = Resource<TelemetrySpec>;

/** One Telemetry's entries with where they come from (for warnings). */
interface Applied {
  r: Tel;
}

export function buildTelemetry(ctx: BuildContext): TelemetryConfig {
  const { opts, mesh } = ctx;
  const applied = applicableTelemetries(ctx.config.telemetries, mesh.rootNamespace, opts.namespace, opts.labels, ctx.warnings.warn);
  const providers = meshProviders(mesh);
  const api = applied.length > 0 || (mesh.defaultProviders !== undefined && Object.values(mesh.defaultProviders).some((l) => (l ?? []).length > 0));
  const warn = ctx.warnings.warnOnce;
  const access_log = accessLogs(applied, mesh, providers, warn);
  const stats = statsConfig(applied, mesh, providers, warn);
  const tracing = tracingConfig(applied, mesh, providers, ctx, warn);
  return {
    api,
    policies: applied.map((a) => `${a.r.metadata.namespace}/${a.r.metadata.name}`),
    ...(access_log ? { access_log } : {}),
    ...(stats ? { stats } : {}),
    ...(tracing ? { tracing } : {}),
  };
}

/** What a snapshot carries without any Telemetry (a replica, before its first configuration): the mesh config's legacy settings. */
export function meshOnlyTelemetry(mesh: MeshConfig, workload: string): TelemetryConfig {
  const tracing = legacyTracing(mesh, workload);
  return { api: false, policies: [], ...(tracing ? { tracing } : {}) };
}

// ---- which Telemetries apply ------------------------------------------------------------------------

function targeted(spec: TelemetrySpec): boolean {
  return spec.targetRef !== undefined || (spec.targetRefs ?? []).length > 0;
}

function namespaceWide(spec: TelemetrySpec): boolean {
  return Object.keys(spec.selector?.matchLabels ?? {}).length === 0 && !targeted(spec);
}

export function applicableTelemetries(all: readonly Tel[], root: string, namespace: string, labels: Readonly<Record<string, string>>, warn: Warn): Applied[] {
  const out: Applied[] = [];
  const wide = (ns: string): void => {
    const candidates = all.filter((t) => t.metadata.namespace === ns && namespaceWide(t.spec));
    if (candidates.length === 0) return;
    out.push({ r: candidates[0]! });
    for (const other of candidates.slice(1)) {
      warn(other, ['spec'], `another namespace-wide Telemetry applies in namespace ${ns} (${candidates[0]!.metadata.name}, defined first); this one is ignored, as in Istio`);
    }
  };
  wide(root);
  if (namespace !== root) wide(namespace);
  for (const t of all) {
    if (t.metadata.namespace !== namespace || namespaceWide(t.spec)) continue;
    if (targeted(t.spec)) {
      warn(t, ['spec', t.spec.targetRef !== undefined ? 'targetRef' : 'targetRefs'], 'targetRef/targetRefs (Kubernetes Gateway API attachment) are not supported by Gatehouse; this Telemetry is not applied');
      continue;
    }
    const sel = t.spec.selector?.matchLabels ?? {};
    if (Object.entries(sel).every(([k, v]) => labels[k] === v)) out.push({ r: t });
  }
  return out;
}

function meshProviders(mesh: MeshConfig): Provider[] {
  const out = BUILTIN_PROVIDERS.map((p) => ({ ...p }));
  for (const raw of mesh.extensionProviders) {
    if (!raw || typeof raw !== 'object' || typeof (raw as Provider).name !== 'string') continue;
    const p = raw as Provider;
    const i = out.findIndex((x) => x.name === p.name);
    if (i >= 0) out[i] = p;
    else out.push(p);
  }
  return out;
}

/** Istio's fetchProvider: by name, case-insensitively. */
function fetchProvider(providers: readonly Provider[], name: string): Provider | undefined {
  const n = name.toLowerCase();
  return providers.find((p) => p.name.toLowerCase() === n);
}

const PROVIDER_KINDS = [
  'envoyExtAuthzHttp', 'envoyExtAuthzGrpc', 'zipkin', 'lightstep', 'datadog', 'stackdriver', 'opencensus', 'skywalking', 'opentelemetry',
  'prometheus', 'envoyFileAccessLog', 'envoyHttpAls', 'envoyTcpAls', 'envoyOtelAls', 'sds',
];
function kindOf(p: Provider): string {
  return PROVIDER_KINDS.find((k) => p[k] !== undefined && p[k] !== null) ?? 'unknown';
}

const names = (refs: ReadonlyArray<{ name: string }> | undefined): string[] => (refs ?? []).map((r) => r.name);
const modeApplies = (mode: WorkloadMode | undefined): boolean => mode === undefined || mode === 'CLIENT_AND_SERVER' || mode === MODE;

// ---- access logging ------------------------------------------------------------------------------

interface LogSpec {
  disabled: boolean;
  filter?: string;
}

function accessLogs(applied: readonly Applied[], mesh: MeshConfig, providers: readonly Provider[], warn: Warn): AccessLogConfig[] | undefined {
  const levels = applied.filter((a) => (a.r.spec.accessLogging ?? []).length > 0);
  const defaults = mesh.defaultProviders?.accessLogging ?? [];
  if (levels.length === 0 && defaults.length === 0) return undefined;
  for (const a of levels) {
    (a.r.spec.accessLogging ?? []).forEach((l, i) => {
      if (!modeApplies(l.match?.mode)) warn(a.r, ['spec', 'accessLogging', i, 'match', 'mode'], `applies to ${l.match!.mode} traffic only: a gateway's is CLIENT (outbound), so it does not apply here`);
    });
  }
  const merged = mergeLogs(levels, defaults);
  const out: AccessLogConfig[] = [];
  for (const [name, spec] of [...merged].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const p = fetchProvider(providers, name);
    const where = whereNamed(levels, 'accessLogging', name);
    if (!p) {
      if (where) warn(where.r, where.path, `no extension provider named ${JSON.stringify(name)} in the mesh config; no access log for it`);
      continue;
    }
    const kind = kindOf(p);
    if (kind !== 'envoyFileAccessLog') {
      if (where) warn(where.r, where.path, `extension provider ${JSON.stringify(name)} (${kind}) ${kind === 'envoyHttpAls' || kind === 'envoyTcpAls' || kind === 'envoyOtelAls' ? 'is not supported by Gatehouse' : 'is no access log provider'}; no access log for it`);
      continue;
    }
    if (spec.disabled) continue;
    out.push(fileAccessLog(p, mesh, spec.filter));
  }
  return out;
}

/** Istio's mergeLogs for one mode: provider name → its spec (the last level that names it wins). */
function mergeLogs(levels: readonly Applied[], defaults: readonly string[]): Map<string, LogSpec> {
  const providers = new Map<string, LogSpec>();
  if (levels.length === 0) {
    for (const d of defaults) providers.set(d, { disabled: false });
    return providers;
  }
  let providerNames: string[] = [...defaults];
  const filters = new Map<string, LogSpec>();
  for (const level of levels) {
    const named = new Set<string>();
    for (const l of level.r.spec.accessLogging ?? []) {
      if (!modeApplies(l.match?.mode)) continue;
      for (const n of names(l.providers)) {
        named.add(n);
        filters.set(n, { disabled: false, ...(l.filter?.expression ? { filter: l.filter.expression } : {}) });
      }
    }
    if (named.size > 0) providerNames = [...named];
  }
  const inScope = new Set(providerNames);
  let parent: string[] = [...defaults];
  for (const level of levels) {
    for (const l of level.r.spec.accessLogging ?? []) {
      let ps = names(l.providers);
      if (ps.length === 0) ps = parent;
      parent = ps;
      for (const p of ps) {
        if (!inScope.has(p) || !modeApplies(l.match?.mode)) continue;
        if (l.disabled === true) providers.set(p, { disabled: true });
        else providers.set(p, filters.get(p) ?? { disabled: false });
      }
    }
  }
  return providers;
}

/** The first place a provider name is written in the applied entries of one section (for warnings). */
function whereNamed(levels: readonly Applied[], section: 'accessLogging' | 'metrics' | 'tracing', name: string): { r: Tel; path: Array<string | number> } | undefined {
  for (let li = levels.length - 1; li >= 0; li--) {
    const r = levels[li]!.r;
    const entries = (r.spec[section] ?? []) as Array<{ providers?: Array<{ name: string }> }>;
    for (let i = 0; i < entries.length; i++) {
      const j = (entries[i]!.providers ?? []).findIndex((p) => p.name === name);
      if (j >= 0) return { r, path: ['spec', section, i, 'providers', j, 'name'] };
    }
  }
  return undefined;
}

function fileAccessLog(p: Provider, mesh: MeshConfig, filter: string | undefined): AccessLogConfig {
  const f = (p.envoyFileAccessLog ?? {}) as { path?: string; logFormat?: { text?: string; labels?: Record<string, unknown> }; omitEmptyValues?: boolean };
  const path = f.path || '/dev/stdout';
  let log_format: AccessLogConfig['typed_config']['log_format'];
  if (p.name === 'envoy' && !f.logFormat && !f.omitEmptyValues) {
    // The built-in provider takes the mesh config's format (Istio's FileAccessLogFromMeshConfig).
    log_format = mesh.accessLogEncoding === 'JSON' ? { json_format: meshJsonFormat(mesh) } : { text_format_source: { inline_string: mesh.accessLogFormat || ISTIO_TEXT_FORMAT } };
  } else if (f.logFormat?.labels && Object.keys(f.logFormat.labels).length > 0) {
    log_format = { json_format: { ...f.logFormat.labels } };
  } else if (f.logFormat?.labels) {
    log_format = { json_format: { ...ISTIO_JSON_FORMAT } };
  } else {
    log_format = { text_format_source: { inline_string: f.logFormat?.text || ISTIO_TEXT_FORMAT } };
  }
  if (f.omitEmptyValues) log_format = { ...log_format, omit_empty_values: true };
  return {
    name: FILE_ACCESS_LOG,
    ...(filter
      ? { filter: { extension_filter: { name: CEL_LOG_FILTER, typed_config: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter' as const, expression: filter } } } }
      : {}),
    typed_config: { '@type': 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog', path, log_format },
    metadata: { filter_metadata: { istio: { provider: p.name } } },
  };
}

// ---- metrics ---------------------------------------------------------------------------------------

interface Override {
  disabled?: boolean;
  tags: Map<string, { remove: boolean; value: string }>;
}

function statsConfig(applied: readonly Applied[], mesh: MeshConfig, providers: readonly Provider[], warn: Warn): StatsConfig | undefined {
  const entries = applied.flatMap((a) => (a.r.spec.metrics ?? []).map((m, i) => ({ r: a.r, m, i })));
  if (entries.length === 0) return undefined;
  const defaults = mesh.defaultProviders?.metrics ?? DEFAULT_METRICS_PROVIDERS;
  // Which providers are in scope: the last entry naming any replaces the parent's (Istio's mergeMetrics).
  let inScope = [...defaults];
  for (const e of entries) if ((e.m.providers ?? []).length > 0) inScope = names(e.m.providers);
  const prometheus = inScope.filter((n) => {
    const p = fetchProvider(providers, n);
    const where = whereNamed(applied, 'metrics', n);
    if (!p) {
      if (where) warn(where.r, where.path, `no extension provider named ${JSON.stringify(n)} in the mesh config; no metrics for it`);
      return false;
    }
    if (kindOf(p) !== 'prometheus') {
      if (where) warn(where.r, where.path, `extension provider ${JSON.stringify(n)} (${kindOf(p)}) is not supported by Gatehouse for metrics; Gatehouse exports Prometheus metrics only`);
      return false;
    }
    return true;
  });
  // No Prometheus provider in scope: Istio installs no stats filter, so no istio_* metric at all.
  if (prometheus.length === 0) return { disabled: true, metrics: [] };
  const provider = prometheus[0]!;
  let parent = [...defaults];
  let allDisabled = false;
  const overrides = new Map<string, Override>();
  for (const { r, m, i } of entries) {
    let ps = names(m.providers);
    if (ps.length === 0) ps = parent;
    parent = ps;
    if (!ps.includes(provider)) continue;
    (m.overrides ?? []).forEach((o, j) => {
      const match = o.match ?? {};
      if (!modeApplies(match.mode)) return;
      const all = match.customMetric === undefined && (match.metric === undefined || match.metric === 'ALL_METRICS');
      if (all && o.disabled === true) {
        allDisabled = true;
        return;
      }
      allDisabled = false;
      if (match.customMetric !== undefined) {
        warn(r, ['spec', 'metrics', i, 'overrides', j, 'match', 'customMetric'], `custom metrics are not supported by Gatehouse: it exports Istio's standard metrics only; this override does nothing`);
      }
      const metricNames = match.customMetric !== undefined ? [match.customMetric] : all ? ALL_METRICS : [match.metric!];
      for (const name of metricNames) {
        const cur: Override = overrides.get(name) ?? { tags: new Map() };
        if (o.disabled !== undefined) cur.disabled = o.disabled;
        for (const [tag, t] of Object.entries(o.tagOverrides ?? {})) {
          if (t.operation === 'REMOVE') cur.tags.set(tag, { remove: true, value: '' });
          else if (t.value) cur.tags.set(tag, { remove: false, value: t.value });
        }
        overrides.set(name, cur);
      }
    });
  }
  if (allDisabled) return { disabled: true, metrics: [] };
  const metrics: StatsMetricConfig[] = [];
  for (const [name, o] of [...overrides].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const tags = [...o.tags].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    metrics.push({
      name: METRIC_NAMES[name] ?? name,
      drop: o.disabled === true,
      tags_to_remove: tags.filter(([, t]) => t.remove).map(([k]) => k),
      dimensions: Object.fromEntries(tags.filter(([, t]) => !t.remove).map(([k, t]) => [k, t.value])),
    });
  }
  return { disabled: false, metrics };
}

// ---- tracing --------------------------------------------------------------------------------------

/** Istio's proxyConfigSamplingValue: defaultConfig.tracing.sampling, unset (or 0) → 1, above 100 → 1. */
function meshSampling(mesh: MeshConfig): number {
  const s = mesh.defaultConfig.tracing?.sampling;
  if (s === undefined || s === 0) return 1;
  return s > 100 ? 1 : s;
}

function meshCustomTags(mesh: MeshConfig): Record<string, TelemetryCustomTag> {
  const t = mesh.defaultConfig.tracing;
  return (t?.custom_tags ?? t?.customTags ?? {}) as Record<string, TelemetryCustomTag>;
}

function maxPathTagLength(mesh: MeshConfig): number | undefined {
  const t = mesh.defaultConfig.tracing;
  const v = t?.max_path_tag_length ?? t?.maxPathTagLength;
  return typeof v === 'number' && v > 0 ? v : undefined;
}

function customTags(tags: Record<string, TelemetryCustomTag>): TracingCustomTag[] {
  return Object.keys(tags)
    .sort()
    .map((tag): TracingCustomTag => {
      const t = tags[tag]!;
      if (t.literal) return { tag, literal: { value: t.literal.value } };
      if (t.environment) return { tag, environment: { name: t.environment.name, ...(t.environment.defaultValue !== undefined ? { default_value: t.environment.defaultValue } : {}) } };
      if (t.header) return { tag, request_header: { name: t.header.name, ...(t.header.defaultValue !== undefined ? { default_value: t.header.defaultValue } : {}) } };
      return { tag, value: t.formatter?.value ?? '' };
    });
}

/** The gateway's own name on its spans (Istio: the node's cluster, `<deployment>.<namespace>`). */
function serviceName(ctx: BuildContext): string {
  const l = ctx.opts.labels;
  return `${l['app'] ?? l['service.istio.io/canonical-name'] ?? 'gatehouse'}.${ctx.opts.namespace}`;
}

/**
 * Istio's buildServiceTags: literal tags naming the gateway on every span (enableIstioTags, on by
 * default): canonical service and revision from its labels, the mesh id (the trust domain, as
 * Istio's default), its namespace, its cluster id (Istio's default `Kubernetes`).
 */
function istioServiceTags(ctx: BuildContext): TracingCustomTag[] {
  const l = ctx.opts.labels;
  const lit = (tag: string, value: string): TracingCustomTag => ({ tag, literal: { value } });
  return [
    lit('istio.canonical_revision', l['service.istio.io/canonical-revision'] ?? l['version'] ?? 'latest'),
    lit('istio.canonical_service', l['service.istio.io/canonical-name'] ?? l['app'] ?? 'unknown'),
    lit('istio.cluster_id', 'Kubernetes'),
    lit('istio.mesh_id', ctx.mesh.trustDomain || 'unknown'),
    lit('istio.namespace', ctx.opts.namespace || 'default'),
  ];
}


/** No Telemetry tracing and no default provider: the mesh config's legacy tracing (sampling, custom tags), no provider. */
function legacyTracing(mesh: MeshConfig, workload: string, ctx?: BuildContext): TracingConfig | undefined {
  if (mesh.enableTracing === false) return undefined;
  const max = maxPathTagLength(mesh);
  return {
    random_sampling: { value: meshSampling(mesh) },
    custom_tags: [...(ctx ? istioServiceTags(ctx) : []), ...customTags(meshCustomTags(mesh))],
    service_cluster: workload,
    ...(max !== undefined ? { max_path_tag_length: max } : {}),
    spawn_upstream_span: true,
    use_request_id_for_trace_sampling: true,
    enable_istio_tags: true,
  };
}

function tracingConfig(applied: readonly Applied[], mesh: MeshConfig, providers: readonly Provider[], ctx: BuildContext, warn: Warn): TracingConfig | undefined {
  const entries = applied.flatMap((a) => (a.r.spec.tracing ?? []).map((t, i) => ({ r: a.r, t, i })));
  const defaults = mesh.defaultProviders?.tracing ?? [];
  if (entries.length === 0 && defaults.length === 0) return legacyTracing(mesh, serviceName(ctx), ctx);
  let providerName: string | undefined = defaults[0];
  let providerAt: { r: Tel; path: Array<string | number> } | undefined;
  let disabled = false;
  let sampling: number | undefined;
  let tags: Record<string, TelemetryCustomTag> | undefined;
  let useRequestId = true;
  let istioTags = true;
  let noPropagation = false;
  for (const { r, t, i } of entries) {
    if (!modeApplies(t.match?.mode)) {
      warn(r, ['spec', 'tracing', i, 'match', 'mode'], `applies to ${t.match!.mode} traffic only: a gateway's is CLIENT (outbound), so it does not apply here`);
      continue;
    }
    const ps = names(t.providers);
    if (ps.length > 0) {
      providerName = ps[0];
      providerAt = { r, path: ['spec', 'tracing', i, 'providers', 0, 'name'] };
    }
    if (t.disableSpanReporting !== undefined) disabled = t.disableSpanReporting;
    if (t.customTags !== undefined) tags = t.customTags;
    if (t.randomSamplingPercentage !== undefined) sampling = t.randomSamplingPercentage;
    if (t.useRequestIdForTraceSampling !== undefined) useRequestId = t.useRequestIdForTraceSampling;
    if (t.enableIstioTags !== undefined) istioTags = t.enableIstioTags;
    if (t.disableContextPropagation !== undefined) noPropagation = t.disableContextPropagation;
  }
  const p = providerName !== undefined ? fetchProvider(providers, providerName) : undefined;
  if (providerName !== undefined && !p && providerAt) warn(providerAt.r, providerAt.path, `no extension provider named ${JSON.stringify(providerName)} in the mesh config; tracing is off for this gateway, as in Istio`);
  // Istio: no provider (or none found) disables the tracing config; so does disableSpanReporting.
  if (!p || disabled) return undefined;
  const max = maxPathTagLength(mesh);
  const base: TracingConfig = {
    random_sampling: { value: sampling ?? meshSampling(mesh) },
    custom_tags: [...(istioTags ? istioServiceTags(ctx) : []), ...customTags(tags ?? meshCustomTags(mesh))],
    service_cluster: serviceName(ctx),
    ...(max !== undefined ? { max_path_tag_length: max } : {}),
    spawn_upstream_span: true,
    use_request_id_for_trace_sampling: useRequestId,
    enable_istio_tags: istioTags,
    ...(noPropagation ? { no_context_propagation: true } : {}),
  };
  const provider = tracingProvider(p, ctx);
  if (!provider) {
    const why = `extension provider ${JSON.stringify(p.name)} (${kindOf(p)}) ${['datadog', 'lightstep', 'skywalking', 'stackdriver', 'opencensus'].includes(kindOf(p)) ? 'is not supported by Gatehouse' : 'is no tracing provider'}: requests are sampled and traced, spans are not exported`;
    if (providerAt) warn(providerAt.r, providerAt.path, why);
    return base;
  }
  return { ...base, provider };
}

interface HeaderSpec {
  name: string;
  value?: string;
  envName?: string;
}
const headers = (hs: readonly HeaderSpec[] | undefined): TracerHeader[] => (hs ?? []).map((h) => ({ key: h.name, ...(h.envName ? { env_name: h.envName } : { value: h.value ?? '' }) }));
const timeout = (t: unknown): ReturnType<typeof durationFromMs> => durationFromMs((typeof t === 'string' ? parseDurationMs(t) : undefined) ?? COLLECTOR_TIMEOUT_MS);

/** A collector `service` as Istio writes it (`[namespace/]host`) → host, and its cluster when the registry has it. */
function collector(ctx: BuildContext, service: string, port: number): { host: string; cluster?: string } {
  const host = service.includes('/') ? service.slice(service.indexOf('/') + 1) : service;
  return { host, ...(ctx.registry.get(host) ? { cluster: clusterName(port, '', host) } : {}) };
}

function tracingProvider(p: Provider, ctx: BuildContext): TracingProvider | undefined {
  const meta = { filter_metadata: { istio: { provider: p.name } } };
  if (p.zipkin) {
    const z = p.zipkin as { service: string; port: number; path?: string; maxTagLength?: number; enable64bitTraceId?: boolean; traceContextOption?: string; timeout?: string; headers?: HeaderSpec[] };
    const c = collector(ctx, z.service, z.port);
    return {
      name: 'envoy.tracers.zipkin',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.config.trace.v3.ZipkinConfig',
        collector_service: { http_uri: { uri: `http://${c.host}:${z.port}${z.path || '/api/v2/spans'}`, timeout: timeout(z.timeout), ...(c.cluster ? { cluster: c.cluster } : {}) }, request_headers_to_add: headers(z.headers) },
        collector_endpoint_version: 'HTTP_JSON',
        trace_id_128bit: z.enable64bitTraceId !== true,
        shared_span_context: false,
        trace_context_option: z.traceContextOption === 'USE_B3_WITH_W3C_PROPAGATION' ? 'USE_B3_WITH_W3C_PROPAGATION' : 'USE_B3',
        ...(z.maxTagLength ? { max_tag_length: z.maxTagLength } : {}),
      },
      metadata: meta,
    };
  }
  if (p.opentelemetry) {
    const o = p.opentelemetry as { service: string; port: number; maxTagLength?: number; http?: { path?: string; timeout?: string; headers?: HeaderSpec[] }; grpc?: { timeout?: string; initialMetadata?: HeaderSpec[] } };
    const c = collector(ctx, o.service, o.port);
    const transport = o.http
      ? { http_service: { http_uri: { uri: `http://${c.host}:${o.port}${o.http.path || '/v1/traces'}`, timeout: timeout(o.http.timeout), ...(c.cluster ? { cluster: c.cluster } : {}) }, request_headers_to_add: headers(o.http.headers) } }
      : { grpc_service: { authority: `${c.host}:${o.port}`, ...(o.grpc?.timeout ? { timeout: timeout(o.grpc.timeout) } : {}), initial_metadata: headers(o.grpc?.initialMetadata), ...(c.cluster ? { cluster_name: c.cluster } : {}) } };
    return {
      name: 'envoy.tracers.opentelemetry',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig',
        ...transport,
        service_name: serviceName(ctx),
        ...(o.maxTagLength ? { max_tag_length: o.maxTagLength } : {}),
      },
      metadata: meta,
    };
  }
  return undefined;
}
