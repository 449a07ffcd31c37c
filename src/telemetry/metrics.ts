// Istio's standard metrics, as a gateway reports them (reporter="source"), served through
// prom-client's registry. The hot path never touches prom-client: each (destination, code, flags)
// gets one handle with plain counters and bucket arrays, resolved once and cached; the registry
// reads them at scrape time. prom-client's own label children hash 25 labels per observation,
// which measured ~30 us/request here.
// The Telemetry API's metric overrides (Istio's stats plugin config: a metric dropped, tags
// removed, tags added or replaced by CEL expressions) make one view per config version over the
// same series: labels are still resolved once per handle key. A tag expression that reads only
// what the key fixes (response.code, response.flags, response.grpc_status) is evaluated once per
// key; one that reads request attributes is evaluated per request when the caller passes them.
import { Counter, Registry, collectDefaultMetrics, type Metric as PromMetric } from 'prom-client';
import { celActivation, celString, compileCel, responseFlagBits, type AttributeSource, type CelExpression } from '../config/cel.js';
import type { StatsConfig } from '../controlplane/snapshot.js';

/** Envoy's default histogram buckets, which Istio uses for durations (ms) and sizes (bytes). */
export const ENVOY_BUCKETS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

export const ISTIO_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'source_canonical_service',
  'source_canonical_revision',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_cluster',
  'destination_canonical_service',
  'destination_canonical_revision',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
] as const;

type IstioLabel = (typeof ISTIO_LABELS)[number];

/** Istio's TCP metrics carry the request labels but the HTTP-only ones (response_code, grpc_response_status). */
export const ISTIO_TCP_LABELS: readonly IstioLabel[] = ISTIO_LABELS.filter((l) => l !== 'response_code' && l !== 'grpc_response_status');

/** Counters of one proxied TCP connection's series (istio_tcp_*); bytes are added as they flow. */
export interface TcpStatsHandle {
  opened(): void;
  closed(): void;
  /** Bytes sent to the downstream client. */
  sent(n: number): void;
  /** Bytes received from the downstream client. */
  received(n: number): void;
}

/** What the data plane knows about where a request went; `undefined` parts report `unknown`. */
export interface DestinationInfo {
  service?: { host: string; name: string; namespace: string } | undefined;
  endpoint?: { workload: string; namespace: string; labels: Readonly<Record<string, string>> } | undefined;
}

export interface RequestObservation {
  durationMs: number;
  requestBytes: number;
  responseBytes: number;
}

export interface RequestStatsHandle {
  record(o: RequestObservation): void;
}

export interface GatewayIdentity {
  labels: Readonly<Record<string, string>>;
  namespace: string;
}

const UNKNOWN = 'unknown';

type Labels = Record<string, string>;

class HistogramData {
  readonly counts = new Float64Array(ENVOY_BUCKETS.length);
  sum = 0;
  count = 0;
  observe(v: number): void {
    this.sum += v;
    this.count++;
    const b = ENVOY_BUCKETS;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** One series of a counter or histogram: its labels and accumulators. */
class Series {
  readonly labels: Labels;
  value = 0;
  readonly hist: HistogramData | null;
  constructor(labels: Labels, histogram: boolean) {
    this.labels = labels;
    this.hist = histogram ? new HistogramData() : null;
  }
}

/** The series of one metric, by label set (every config version's view shares them). */
class SeriesStore {
  readonly series: Series[] = [];
  readonly #byKey = new Map<string, Series>();
  readonly #histogram: boolean;
  constructor(histogram: boolean) {
    this.#histogram = histogram;
  }
  seriesFor(labels: Labels): Series {
    const names = Object.keys(labels);
    let key = '';
    for (const n of names) key += `${n}\u0001${labels[n]}\u0000`;
    let s = this.#byKey.get(key);
    if (!s) {
      s = new Series(labels, this.#histogram);
      this.#byKey.set(key, s);
      this.series.push(s);
    }
    return s;
  }
}

/** A metric prom-client's Registry can print and aggregate, read from a store at scrape time. */
class StoreMetric {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'histogram';
  readonly aggregator = 'sum' as const;
  readonly #store: SeriesStore;

  constructor(name: string, help: string, store: SeriesStore, histogram: boolean) {
    this.name = name;
    this.help = help;
    this.type = histogram ? 'histogram' : 'counter';
    this.#store = store;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValue[] } {
    const values: MetricValue[] = [];
    for (const s of this.#store.series) {
      const h = s.hist;
      if (!h) {
        values.push({ value: s.value, labels: s.labels });
        continue;
      }
      let acc = 0;
      for (let i = 0; i < ENVOY_BUCKETS.length; i++) {
        acc += h.counts[i]!;
        values.push({ value: acc, labels: { ...s.labels, le: ENVOY_BUCKETS[i]! }, metricName: `${this.name}_bucket` });
      }
      values.push({ value: h.count, labels: { ...s.labels, le: '+Inf' }, metricName: `${this.name}_bucket` });
      values.push({ value: h.sum, labels: s.labels, metricName: `${this.name}_sum` });
      values.push({ value: h.count, labels: s.labels, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/** The HTTP metrics, in the order a handle holds them, with their stats-plugin names. */
const HTTP_METRICS = [
  { stat: 'requests_total', name: 'istio_requests_total', help: 'Total requests handled by the gateway, by Istio labels', histogram: false },
  { stat: 'request_duration_milliseconds', name: 'istio_request_duration_milliseconds', help: 'Request duration in milliseconds', histogram: true },
  { stat: 'request_bytes', name: 'istio_request_bytes', help: 'HTTP request body sizes', histogram: true },
  { stat: 'response_bytes', name: 'istio_response_bytes', help: 'HTTP response body sizes', histogram: true },
] as const;
const TCP_METRICS = [
  { stat: 'tcp_connections_opened_total', name: 'istio_tcp_connections_opened_total', help: 'TCP connections opened to a destination, by Istio labels' },
  { stat: 'tcp_connections_closed_total', name: 'istio_tcp_connections_closed_total', help: 'TCP connections closed, by Istio labels' },
  { stat: 'tcp_sent_bytes_total', name: 'istio_tcp_sent_bytes_total', help: 'Bytes sent to the downstream client over TCP connections' },
  { stat: 'tcp_received_bytes_total', name: 'istio_tcp_received_bytes_total', help: 'Bytes received from the downstream client over TCP connections' },
] as const;

/** What every config version's view shares: the registry and the series. */
interface MetricsStore {
  readonly registry: Registry;
  readonly http: readonly SeriesStore[];
  readonly tcp: readonly SeriesStore[];
  readonly l4Rejected: Counter<'listener_port' | 'reason'>;
  readonly source: Labels;
}

/** One metric's override, compiled: dropped, tags removed, tags set (CEL). */
interface CompiledMetric {
  readonly drop: boolean;
  readonly remove: ReadonlySet<string>;
  readonly dimensions: ReadonlyArray<{ name: string; expr: CelExpression; perRequest: boolean }>;
}

/** Attributes a handle key fixes: a tag expression reading only these is evaluated once per key. */
const KEY_ATTRIBUTES = new Set(['response.code', 'response.flags', 'response.grpc_status']);

/** A Prometheus label name from a tag name (Envoy replaces what Prometheus does not allow). */
function labelName(tag: string): string {
  const n = tag.replace(/[^a-zA-Z0-9_]/g, '_');
  return /^[0-9]/.test(n) ? `_${n}` : n;
}

function compileStats(stats: StatsConfig | undefined): Map<string, CompiledMetric> | null {
  const out = new Map<string, CompiledMetric>();
  if (!stats) return out;
  if (stats.disabled) return null;
  for (const m of stats.metrics) {
    const dimensions = Object.entries(m.dimensions).flatMap(([tag, source]) => {
      try {
        const expr = compileCel(source);
        return [{ name: labelName(tag), expr, perRequest: expr.attributes.some((a) => !KEY_ATTRIBUTES.has(a)) }];
      } catch {
        return []; // refused at validation; a config that reached here has none
      }
    });
    out.set(m.name, { drop: m.drop, remove: new Set(m.tags_to_remove.map(labelName)), dimensions });
  }
  return out;
}

const NOOP_REQUEST: RequestStatsHandle = { record: () => undefined };
const NOOP_TCP: TcpStatsHandle = { opened: () => undefined, closed: () => undefined, sent: () => undefined, received: () => undefined };

/** A request's handle: one series per metric kept (null: dropped). */
class RequestHandle implements RequestStatsHandle {
  readonly #count: Series | null;
  readonly #duration: Series | null;
  readonly #reqBytes: Series | null;
  readonly #respBytes: Series | null;
  constructor(series: ReadonlyArray<Series | null>) {
    [this.#count = null, this.#duration = null, this.#reqBytes = null, this.#respBytes = null] = series;
  }
  record(o: RequestObservation): void {
    if (this.#count) this.#count.value++;
    this.#duration?.hist!.observe(o.durationMs);
    this.#reqBytes?.hist!.observe(o.requestBytes);
    this.#respBytes?.hist!.observe(o.responseBytes);
  }
}

class TcpHandle implements TcpStatsHandle {
  readonly #s: ReadonlyArray<Series | null>;
  constructor(series: ReadonlyArray<Series | null>) {
    this.#s = series;
  }
  opened(): void {
    if (this.#s[0]) this.#s[0].value++;
  }
  closed(): void {
    if (this.#s[1]) this.#s[1].value++;
  }
  sent(n: number): void {
    if (this.#s[2]) this.#s[2].value += n;
  }
  received(n: number): void {
    if (this.#s[3]) this.#s[3].value += n;
  }
}

/** The attributes a handle key fixes, for tag expressions (and request attributes when given). */
function keyAttributes(code: number, flags: string, grpcStatus: string, request: AttributeSource | undefined): AttributeSource {
  return {
    attribute(root, field) {
      const k = `${root}.${field}`;
      if (k === 'response.code') return BigInt(code);
      if (k === 'response.grpc_status') return grpcStatus && /^\d+$/.test(grpcStatus) ? BigInt(grpcStatus) : request?.attribute(root, field);
      if (k === 'response.flags') return request ? request.attribute(root, field) : flagBits(flags);
      return request?.attribute(root, field);
    },
  };
}

function flagBits(flags: string): bigint {
  return responseFlagBits(flags);
}

export class IstioMetrics {
  readonly registry: Registry;
  readonly #store: MetricsStore;
  /** This view's overrides by stats name; null: every istio_* metric is off. */
  readonly #overrides: Map<string, CompiledMetric> | null;
  readonly #perRequest: boolean;
  /** Per destination object (endpoint or cluster), handles by `code|flags|protocol`. */
  readonly #handles = new WeakMap<object, Map<string, RequestStatsHandle>>();
  readonly #noDestination = {};
  /** Per destination object, TCP handles by response flags. */
  readonly #tcpHandles = new WeakMap<object, Map<string, TcpStatsHandle>>();

  /** `defaultMetrics: false` in `--workers N` threads: process metrics come from the main thread. */
  constructor(identity: GatewayIdentity, registry = new Registry(), opts: { defaultMetrics?: boolean } = {}, shared?: { store: MetricsStore; stats: StatsConfig | undefined }) {
    this.registry = registry;
    if (shared) {
      this.#store = shared.store;
      this.#overrides = compileStats(shared.stats);
    } else {
      this.#store = IstioMetrics.#createStore(identity, registry, opts);
      this.#overrides = new Map();
    }
    this.#perRequest = [...(this.#overrides?.values() ?? [])].some((m) => m.dimensions.some((d) => d.perRequest));
  }

  static #createStore(identity: GatewayIdentity, registry: Registry, opts: { defaultMetrics?: boolean }): MetricsStore {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
    const add = (m: StoreMetric): void => registry.registerMetric(m as unknown as PromMetric<string>);
    const http = HTTP_METRICS.map((m) => {
      const store = new SeriesStore(m.histogram);
      add(new StoreMetric(m.name, m.help, store, m.histogram));
      return store;
    });
    const tcp = TCP_METRICS.map((m) => {
      const store = new SeriesStore(false);
      add(new StoreMetric(m.name, m.help, store, false));
      return store;
    });
    const l4Rejected = new Counter({
      name: 'gatehouse_l4_rejected_connections_total',
      help: 'TCP/TLS-passthrough connections closed before reaching a destination (no route, no or malformed ClientHello, unknown SNI)',
      labelNames: ['listener_port', 'reason'],
      registers: [registry],
    });
    const l = identity.labels;
    const workload = l['app'] ?? l['service.istio.io/canonical-name'] ?? 'gatehouse';
    const source: Labels = {
      reporter: 'source',
      source_workload: workload,
      source_workload_namespace: identity.namespace,
      source_principal: UNKNOWN,
      source_app: l['app'] ?? UNKNOWN,
      source_version: l['version'] ?? UNKNOWN,
      source_cluster: 'Kubernetes',
      source_canonical_service: l['service.istio.io/canonical-name'] ?? workload,
      source_canonical_revision: l['service.istio.io/canonical-revision'] ?? l['version'] ?? 'latest',
      connection_security_policy: UNKNOWN,
      grpc_response_status: '',
    };
    return { registry, http, tcp, l4Rejected, source };
  }

  /**
   * A view for one config version with the Telemetry API's overrides, over the same series (the
   * same registry: counters keep counting across versions).
   */
  withOverrides(stats: StatsConfig | undefined): IstioMetrics {
    return new IstioMetrics({ labels: {}, namespace: '' }, this.registry, {}, { store: this.#store, stats });
  }

  /**
   * The stats handle for a finished request. `key` identifies the destination (the endpoint object,
   * or the cluster object when no endpoint was chosen) and is used only as a cache key.
   * `grpcStatus`: the gRPC status of a gRPC request ('' otherwise), Istio's grpc_response_status.
   * `request`: the request's attributes, read by tag overrides that name request attributes
   * (without them such a tag reads `unknown`).
   */
  handle(key: object | undefined, dest: DestinationInfo, protocol: string, code: number, flags: string, grpcStatus = '', request?: AttributeSource): RequestStatsHandle {
    if (!this.#overrides) return NOOP_REQUEST;
    const k = key ?? this.#noDestination;
    let byCode = this.#handles.get(k);
    if (!byCode) {
      byCode = new Map();
      this.#handles.set(k, byCode);
    }
    let ck = grpcStatus ? `${code}|${flags}|${protocol}|${grpcStatus}` : `${code}|${flags}|${protocol}`;
    let dynamic: Map<string, string> | undefined;
    if (this.#perRequest) {
      // Tags read per request: their values join the key (label sets are still built once per value).
      dynamic = new Map();
      const attrs = keyAttributes(code, flags, grpcStatus, request);
      for (const m of this.#overrides.values()) {
        for (const d of m.dimensions) {
          if (!d.perRequest || dynamic.has(d.expr.source)) continue;
          const v = tagValue(d.expr, attrs);
          dynamic.set(d.expr.source, v);
          ck += `\u0000${v}`;
        }
      }
    }
    let h = byCode.get(ck);
    if (!h) {
      const base = this.#labels(dest, protocol, code, flags, grpcStatus);
      const attrs = keyAttributes(code, flags, grpcStatus, request);
      h = new RequestHandle(HTTP_METRICS.map((m, i) => this.#series(this.#store.http[i]!, m.stat, base, attrs, dynamic)));
      byCode.set(ck, h);
    }
    return h;
  }

  /**
   * The istio_tcp_* series of a proxied connection; `key` identifies the destination (endpoint or
   * cluster object) and only keys the cache. Flags: '-' normally, 'UF' connect failure, ...
   */
  tcpHandle(key: object | undefined, dest: DestinationInfo, flags: string): TcpStatsHandle {
    if (!this.#overrides) return NOOP_TCP;
    const k = key ?? this.#noDestination;
    let byFlags = this.#tcpHandles.get(k);
    if (!byFlags) {
      byFlags = new Map();
      this.#tcpHandles.set(k, byFlags);
    }
    let h = byFlags.get(flags);
    if (!h) {
      const all = this.#labels(dest, 'tcp', 0, flags, '');
      const base: Labels = {};
      for (const n of ISTIO_TCP_LABELS) base[n] = all[n]!;
      const attrs = keyAttributes(0, flags, '', undefined);
      h = new TcpHandle(TCP_METRICS.map((m, i) => this.#series(this.#store.tcp[i]!, m.stat, base, attrs, undefined)));
      byFlags.set(flags, h);
    }
    return h;
  }

  /** One metric's series for a handle: the standard labels with this view's override applied (null: dropped). */
  #series(store: SeriesStore, stat: string, base: Labels, attrs: AttributeSource, dynamic: Map<string, string> | undefined): Series | null {
    const o = this.#overrides?.get(stat);
    if (!o) return store.seriesFor(base);
    if (o.drop) return null;
    const labels: Labels = {};
    for (const n in base) if (!o.remove.has(n)) labels[n] = base[n]!;
    for (const d of o.dimensions) {
      if (o.remove.has(d.name)) continue;
      labels[d.name] = d.perRequest ? (dynamic?.get(d.expr.source) ?? UNKNOWN) : tagValue(d.expr, attrs);
    }
    return store.seriesFor(labels);
  }

  /** A connection closed before it reached a destination, by listener port and reason. */
  l4Rejected(port: number, reason: string): void {
    this.#store.l4Rejected.inc({ listener_port: String(port), reason });
  }

  #labels(dest: DestinationInfo, protocol: string, code: number, flags: string, grpcStatus: string): Labels {
    const ep = dest.endpoint;
    const svc = dest.service;
    const el = ep?.labels ?? {};
    return {
      ...this.#store.source,
      destination_workload: ep?.workload ?? UNKNOWN,
      destination_workload_namespace: ep?.namespace ?? UNKNOWN,
      destination_principal: UNKNOWN,
      destination_app: el['app'] ?? UNKNOWN,
      destination_version: el['version'] ?? UNKNOWN,
      destination_service: svc?.host ?? UNKNOWN,
      destination_service_name: svc?.name ?? UNKNOWN,
      destination_service_namespace: svc?.namespace ?? UNKNOWN,
      destination_cluster: ep ? 'Kubernetes' : UNKNOWN,
      destination_canonical_service: el['service.istio.io/canonical-name'] ?? el['app'] ?? ep?.workload ?? UNKNOWN,
      destination_canonical_revision: el['service.istio.io/canonical-revision'] ?? el['version'] ?? (ep ? 'latest' : UNKNOWN),
      request_protocol: protocol,
      response_code: String(code),
      response_flags: flags || '-',
      grpc_response_status: grpcStatus,
    };
  }
}

/** A tag expression's value; one that fails (an absent attribute...) reads `unknown`, as Istio's stats plugin writes it. */
function tagValue(expr: CelExpression, attrs: AttributeSource): string {
  const v = expr.evaluate(celActivation(attrs));
  return v instanceof Error ? UNKNOWN : celString(v);
}
