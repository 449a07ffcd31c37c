// istiod's own metrics for the embedded control plane, with istiod's names, labels and buckets
// (pilot/pkg/xds/monitoring.go, pkg/xds/monitoring.go), so that Istio's "Control Plane" dashboard
// and alerts read Gatehouse as they read istiod. Registered on the admin port's registry.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { shortTypeName } from './protos.js';

/** Istio's metric type of a type URL: cds, lds, rds, eds, sds (else the URL itself). */
export function metricType(typeUrl: string): string {
  switch (shortTypeName(typeUrl)) {
    case 'CDS':
      return 'cds';
    case 'LDS':
      return 'lds';
    case 'RDS':
      return 'rds';
    case 'EDS':
      return 'eds';
    case 'SDS':
      return 'sds';
    default:
      return typeUrl;
  }
}

export class XdsMetrics {
  /** pilot_xds{version}: connected clients, by the ISTIO_VERSION their node metadata gives ('' when none). */
  readonly #clients: Gauge<'version'>;
  /** Gatehouse's own: connected clients by kind (envoy, proxyless, gatehouse). */
  readonly #clientsByKind: Gauge<'kind'>;
  readonly #pushes: Counter<'type'>;
  readonly #pushTime: Histogram<'type'>;
  readonly #convergence: Histogram;
  readonly #rejects: Counter<'type'>;
  readonly #rejectByType: Record<string, Gauge<'node' | 'err'>>;
  readonly #expiredNonce: Counter<'type'>;
  readonly #configSize: Histogram<'type'>;
  readonly #triggers: Counter<'type'>;
  readonly #internalErrors: Counter;
  readonly #versionCounts = new Map<string, number>();

  constructor(registry: Registry) {
    const registers = [registry];
    this.#clients = new Gauge({ name: 'pilot_xds', help: 'Number of endpoints connected to this pilot using XDS.', labelNames: ['version'], registers });
    this.#clientsByKind = new Gauge({ name: 'gatehouse_xds_clients', help: 'xDS clients connected to the embedded control plane, by kind (envoy, proxyless gRPC, gatehouse replica)', labelNames: ['kind'], registers });
    this.#pushes = new Counter({ name: 'pilot_xds_pushes', help: 'Pilot build and send errors for lds, rds, cds and eds.', labelNames: ['type'], registers });
    this.#pushTime = new Histogram({ name: 'pilot_xds_push_time', help: 'Total time in seconds Pilot takes to push lds, rds, cds and eds.', labelNames: ['type'], buckets: [0.01, 0.1, 0.5, 1, 3, 5, 10, 20, 30], registers });
    this.#convergence = new Histogram({ name: 'pilot_proxy_convergence_time', help: 'Delay in seconds between config change and a proxy receiving all required configuration.', buckets: [0.1, 0.5, 1, 3, 5, 10, 20, 30], registers });
    this.#rejects = new Counter({ name: 'pilot_total_xds_rejects', help: 'Total number of XDS responses from pilot rejected by proxy.', labelNames: ['type'], registers });
    this.#rejectByType = {
      cds: new Gauge({ name: 'pilot_xds_cds_reject', help: 'Pilot rejected CDS configs.', labelNames: ['node', 'err'], registers }),
      eds: new Gauge({ name: 'pilot_xds_eds_reject', help: 'Pilot rejected EDS.', labelNames: ['node', 'err'], registers }),
      lds: new Gauge({ name: 'pilot_xds_lds_reject', help: 'Pilot rejected LDS.', labelNames: ['node', 'err'], registers }),
      rds: new Gauge({ name: 'pilot_xds_rds_reject', help: 'Pilot rejected RDS.', labelNames: ['node', 'err'], registers }),
    };
    this.#expiredNonce = new Counter({ name: 'pilot_xds_expired_nonce', help: 'Total number of XDS requests with an expired nonce.', labelNames: ['type'], registers });
    this.#configSize = new Histogram({ name: 'pilot_xds_config_size_bytes', help: 'Distribution of configuration sizes pushed to clients', labelNames: ['type'], buckets: [1, 10000, 1000000, 4000000, 10000000, 40000000], registers });
    this.#triggers = new Counter({ name: 'pilot_push_triggers', help: 'Total number of times a push was triggered, labeled by reason for the push.', labelNames: ['type'], registers });
    this.#internalErrors = new Counter({ name: 'pilot_total_xds_internal_errors', help: 'Total number of internal XDS errors in pilot.', registers });
  }

  connected(version: string, kind: string, delta: 1 | -1): void {
    const n = (this.#versionCounts.get(version) ?? 0) + delta;
    this.#versionCounts.set(version, n);
    this.#clients.set({ version }, n);
    this.#clientsByKind.inc({ kind }, delta);
  }

  /** One response of a type sent: its size and the time it took to build and write. */
  pushed(typeUrl: string, bytes: number, seconds: number): void {
    const type = metricType(typeUrl);
    this.#pushes.inc({ type });
    this.#pushTime.observe({ type }, seconds);
    this.#configSize.observe({ type }, bytes);
  }

  /** A client received everything a config change gave it, `seconds` after the change. */
  converged(seconds: number): void {
    this.#convergence.observe(seconds);
  }

  rejected(typeUrl: string, node: string, code: number | undefined): void {
    const type = metricType(typeUrl);
    this.#rejects.inc({ type });
    this.#rejectByType[type]?.inc({ node, err: String(code ?? '') });
  }

  expiredNonce(typeUrl: string): void {
    this.#expiredNonce.inc({ type: metricType(typeUrl) });
  }

  triggered(reason: string): void {
    this.#triggers.inc({ type: reason });
  }

  internalError(): void {
    this.#internalErrors.inc();
  }
}
