// Istio's standard metrics, as a gateway reports them (reporter="source"), on prom-client.
// Label children are resolved once per (destination, response code, flags) and cached, so a
// request costs a Map lookup and four increments, never a label object.
import { Counter, Histogram, Registry, collectDefaultMetrics, type LabelValues } from 'prom-client';

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

export class IstioMetrics {
  readonly registry: Registry;
  readonly #requests: Counter<IstioLabel>;
  readonly #duration: Histogram<IstioLabel>;
  readonly #requestBytes: Histogram<IstioLabel>;
  readonly #responseBytes: Histogram<IstioLabel>;
  readonly #source: Partial<Record<IstioLabel, string>>;
  /** Per destination object (endpoint or service), handles by `code|flags|protocol`. */
  readonly #handles = new WeakMap<object, Map<string, RequestStatsHandle>>();
  readonly #noDestination = {};

  constructor(identity: GatewayIdentity, registry = new Registry()) {
    this.registry = registry;
    collectDefaultMetrics({ register: registry });
    const labelNames = ISTIO_LABELS as unknown as IstioLabel[];
    this.#requests = new Counter({ name: 'istio_requests_total', help: 'Total requests handled by the gateway, by Istio labels', labelNames, registers: [registry] });
    this.#duration = new Histogram({ name: 'istio_request_duration_milliseconds', help: 'Request duration in milliseconds', labelNames, buckets: ENVOY_BUCKETS, registers: [registry] });
    this.#requestBytes = new Histogram({ name: 'istio_request_bytes', help: 'HTTP request body sizes', labelNames, buckets: ENVOY_BUCKETS, registers: [registry] });
    this.#responseBytes = new Histogram({ name: 'istio_response_bytes', help: 'HTTP response body sizes', labelNames, buckets: ENVOY_BUCKETS, registers: [registry] });
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
   */
  handle(key: object | undefined, dest: DestinationInfo, protocol: string, code: number, flags: string): RequestStatsHandle {
    const k = key ?? this.#noDestination;
    let byCode = this.#handles.get(k);
    if (!byCode) {
      byCode = new Map();
      this.#handles.set(k, byCode);
    }
    const ck = `${code}|${flags}|${protocol}`;
    let h = byCode.get(ck);
    if (!h) {
      h = this.#makeHandle(dest, protocol, code, flags);
      byCode.set(ck, h);
    }
    return h;
  }

  #makeHandle(dest: DestinationInfo, protocol: string, code: number, flags: string): RequestStatsHandle {
    const ep = dest.endpoint;
    const svc = dest.service;
    const el = ep?.labels ?? {};
    const labels: LabelValues<IstioLabel> = {
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
      destination_canonical_service: el['service.istio.io/canonical-name'] ?? el['app'] ?? (ep?.workload ?? UNKNOWN),
      destination_canonical_revision: el['service.istio.io/canonical-revision'] ?? el['version'] ?? (ep ? 'latest' : UNKNOWN),
      request_protocol: protocol,
      response_code: String(code),
      response_flags: flags || '-',
    };
    const requests = this.#requests.labels(labels);
    const duration = this.#duration.labels(labels);
    const reqBytes = this.#requestBytes.labels(labels);
    const respBytes = this.#responseBytes.labels(labels);
    return {
      record(o: RequestObservation): void {
        requests.inc();
        duration.observe(o.durationMs);
        reqBytes.observe(o.requestBytes);
        respBytes.observe(o.responseBytes);
      },
    };
  }
}
