// Istio's standard metrics, as a gateway reports them (reporter="source"), served through
// prom-client's registry. The hot path never touches prom-client: each (destination, code, flags)
// gets one handle with plain counters and bucket arrays, resolved once and cached; the registry
// reads them at scrape time. prom-client's own label children hash 25 labels per observation,
// which measured ~30 us/request here.
import { Counter, Registry, collectDefaultMetrics, type Metric as PromMetric } from 'prom-client';

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

class TcpSeries implements TcpStatsHandle {
  readonly labels: Record<string, string>;
  openedCount = 0;
  closedCount = 0;
  sentBytes = 0;
  receivedBytes = 0;
  constructor(labels: Record<string, string>) {
    this.labels = labels;
  }
  opened(): void {
    this.openedCount++;
  }
  closed(): void {
    this.closedCount++;
  }
  sent(n: number): void {
    this.sentBytes += n;
  }
  received(n: number): void {
    this.receivedBytes += n;
  }
}

/** One istio_tcp_* counter, read from the TCP series at scrape time. */
class TcpMetric {
  readonly name: string;
  readonly help: string;
  readonly type = 'counter' as const;
  readonly aggregator = 'sum' as const;
  readonly #series: TcpSeries[];
  readonly #value: (s: TcpSeries) => number;
  constructor(name: string, help: string, series: TcpSeries[], value: (s: TcpSeries) => number) {
    this.name = name;
    this.help = help;
    this.#series = series;
    this.#value = value;
  }
  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValue[] } {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.#series.map((s) => ({ value: this.#value(s), labels: s.labels })) };
  }
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

type Labels = Record<IstioLabel, string>;

/** One label set's accumulators. */
class Series {
  readonly labels: Labels;
  requests = 0;
  readonly duration = new HistogramData();
  readonly requestBytes = new HistogramData();
  readonly responseBytes = new HistogramData();
  constructor(labels: Labels) {
    this.labels = labels;
  }
  record(o: RequestObservation): void {
    this.requests++;
    this.duration.observe(o.durationMs);
    this.requestBytes.observe(o.requestBytes);
    this.responseBytes.observe(o.responseBytes);
  }
}

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

/** A metric prom-client's Registry can print and aggregate, backed by the series' accumulators. */
class SeriesMetric {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'histogram';
  readonly aggregator = 'sum' as const;
  readonly #series: Series[];
  readonly #pick: ((s: Series) => HistogramData) | null;

  constructor(name: string, help: string, series: Series[], pick: ((s: Series) => HistogramData) | null) {
    this.name = name;
    this.help = help;
    this.type = pick ? 'histogram' : 'counter';
    this.#series = series;
    this.#pick = pick;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValue[] } {
    const values: MetricValue[] = [];
    const pick = this.#pick;
    for (const s of this.#series) {
      if (!pick) {
        values.push({ value: s.requests, labels: s.labels });
        continue;
      }
      const h = pick(s);
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

export class IstioMetrics {
  readonly registry: Registry;
  readonly #series: Series[] = [];
  /** Series by label set, so that equal label sets from different cache keys share one. */
  readonly #byLabels = new Map<string, Series>();
  readonly #source: Omit<Labels, Exclude<IstioLabel, `source_${string}` | 'reporter' | 'connection_security_policy' | 'grpc_response_status'>>;
  /** Per destination object (endpoint or cluster), series by `code|flags|protocol`. */
  readonly #handles = new WeakMap<object, Map<string, RequestStatsHandle>>();
  readonly #noDestination = {};
  readonly #tcpSeries: TcpSeries[] = [];
  readonly #tcpByLabels = new Map<string, TcpSeries>();
  /** Per destination object, TCP series by response flags. */
  readonly #tcpHandles = new WeakMap<object, Map<string, TcpSeries>>();
  readonly #l4Rejected: Counter<'listener_port' | 'reason'>;

  /** `defaultMetrics: false` in `--workers N` threads: process metrics come from the main thread. */
  constructor(identity: GatewayIdentity, registry = new Registry(), opts: { defaultMetrics?: boolean } = {}) {
    this.registry = registry;
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
    const s = this.#series;
    const add = (m: SeriesMetric): void => registry.registerMetric(m as unknown as PromMetric<string>);
    add(new SeriesMetric('istio_requests_total', 'Total requests handled by the gateway, by Istio labels', s, null));
    add(new SeriesMetric('istio_request_duration_milliseconds', 'Request duration in milliseconds', s, (x) => x.duration));
    add(new SeriesMetric('istio_request_bytes', 'HTTP request body sizes', s, (x) => x.requestBytes));
    add(new SeriesMetric('istio_response_bytes', 'HTTP response body sizes', s, (x) => x.responseBytes));
    const t = this.#tcpSeries;
    add(new TcpMetric('istio_tcp_connections_opened_total', 'TCP connections opened to a destination, by Istio labels', t, (x) => x.openedCount) as unknown as SeriesMetric);
    add(new TcpMetric('istio_tcp_connections_closed_total', 'TCP connections closed, by Istio labels', t, (x) => x.closedCount) as unknown as SeriesMetric);
    add(new TcpMetric('istio_tcp_sent_bytes_total', 'Bytes sent to the downstream client over TCP connections', t, (x) => x.sentBytes) as unknown as SeriesMetric);
    add(new TcpMetric('istio_tcp_received_bytes_total', 'Bytes received from the downstream client over TCP connections', t, (x) => x.receivedBytes) as unknown as SeriesMetric);
    this.#l4Rejected = new Counter({
      name: 'gatehouse_l4_rejected_connections_total',
      help: 'TCP/TLS-passthrough connections closed before reaching a destination (no route, no or malformed ClientHello, unknown SNI)',
      labelNames: ['listener_port', 'reason'],
      registers: [registry],
    });
    const l = identity.labels;
    const workload = l['app'] ?? l['service.istio.io/canonical-name'] ?? 'gatehouse';
    this.#source = {
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
  }

  /**
   * The stats handle for a finished request. `key` identifies the destination (the endpoint object,
   * or the cluster object when no endpoint was chosen) and is used only as a cache key.
   * `grpcStatus`: the gRPC status of a gRPC request ('' otherwise), Istio's grpc_response_status.
   */
  handle(key: object | undefined, dest: DestinationInfo, protocol: string, code: number, flags: string, grpcStatus = ''): RequestStatsHandle {
    const k = key ?? this.#noDestination;
    let byCode = this.#handles.get(k);
    if (!byCode) {
      byCode = new Map();
      this.#handles.set(k, byCode);
    }
    const ck = grpcStatus ? `${code}|${flags}|${protocol}|${grpcStatus}` : `${code}|${flags}|${protocol}`;
    let h = byCode.get(ck);
    if (!h) {
      h = this.#seriesFor(this.#labels(dest, protocol, code, flags, grpcStatus));
      byCode.set(ck, h);
    }
    return h;
  }

  /**
   * The istio_tcp_* series of a proxied connection; `key` identifies the destination (endpoint or
   * cluster object) and only keys the cache. Flags: '-' normally, 'UF' connect failure, ...
   */
  tcpHandle(key: object | undefined, dest: DestinationInfo, flags: string): TcpStatsHandle {
    const k = key ?? this.#noDestination;
    let byFlags = this.#tcpHandles.get(k);
    if (!byFlags) {
      byFlags = new Map();
      this.#tcpHandles.set(k, byFlags);
    }
    let h = byFlags.get(flags);
    if (!h) {
      const all = this.#labels(dest, 'tcp', 0, flags, '');
      const labels: Record<string, string> = {};
      for (const n of ISTIO_TCP_LABELS) labels[n] = all[n];
      const lk = ISTIO_TCP_LABELS.map((n) => labels[n]).join('\u0000');
      h = this.#tcpByLabels.get(lk);
      if (!h) {
        h = new TcpSeries(labels);
        this.#tcpByLabels.set(lk, h);
        this.#tcpSeries.push(h);
      }
      byFlags.set(flags, h);
    }
    return h;
  }

  /** A connection closed before it reached a destination, by listener port and reason. */
  l4Rejected(port: number, reason: string): void {
    this.#l4Rejected.inc({ listener_port: String(port), reason });
  }

  #seriesFor(labels: Labels): Series {
    const key = ISTIO_LABELS.map((n) => labels[n]).join('\u0000');
    let s = this.#byLabels.get(key);
    if (!s) {
      s = new Series(labels);
      this.#byLabels.set(key, s);
      this.#series.push(s);
    }
    return s;
  }

  #labels(dest: DestinationInfo, protocol: string, code: number, flags: string, grpcStatus: string): Labels {
    const ep = dest.endpoint;
    const svc = dest.service;
    const el = ep?.labels ?? {};
    return {
      ...this.#source,
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
