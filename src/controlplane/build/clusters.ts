// Registry services and DestinationRules → Envoy clusters and their endpoints (pilot
// cluster_builder / cluster_traffic_policy): one cluster per service port and subset, named
// `outbound|<port>|<subset>|<host>`, with the traffic policy the rule, the subset and the port
// give it (load balancer, connection pool, outlier detection, HTTP/2, upstream TLS).
import { parseDurationMs } from '../../config/duration.js';
import { serviceNameAndNamespace } from '../../config/hosts.js';
import type { DestinationRuleSpec, Resource, TrafficPolicy } from '../../config/types.js';
import {
  BLACKHOLE_CLUSTER,
  clusterName,
  durationFromMs,
  PASSTHROUGH_CLUSTER,
  type Cluster,
  type ClusterLoadAssignment,
  type HashPolicy,
  type LbPolicy,
  type Secret,
} from '../snapshot.js';
import { upstreamTls } from './cluster-tls.js';
import type { BuildContext } from './context.js';
import { mergePolicy, portPolicy } from './destination-rules.js';
import { buildLoadAssignment } from './endpoints.js';
import { isHttp2Protocol, type RegistryService, type ServicePort } from './registry.js';

/** One cluster of a registry service: a port and a subset ('' for the whole service), with its policy. */
export interface ServiceCluster {
  name: string;
  service: RegistryService;
  port: ServicePort;
  subset: string;
  /** Labels the subset selects endpoints by. */
  labels: Record<string, string>;
  /** The rule's policy, merged with the subset's and then the port's settings. */
  policy: TrafficPolicy | undefined;
  dr: Resource<DestinationRuleSpec> | undefined;
}

/** The clusters of every registry service, by host, then port, then subset (the whole service first). */
export function serviceClusters(ctx: BuildContext): ServiceCluster[] {
  const out: ServiceCluster[] = [];
  // Aliases (ExternalName Services) have no cluster of their own; `sorted` leaves them out.
  for (const service of ctx.registry.sorted) {
    const dr = ctx.destinationRules.forHost(service.host);
    for (const port of service.ports) {
      const subsets: Array<{ name: string; labels: Record<string, string>; policy: TrafficPolicy | undefined }> = [{ name: '', labels: {}, policy: dr?.spec.trafficPolicy }];
      for (const s of dr?.spec.subsets ?? []) subsets.push({ name: s.name, labels: s.labels ?? {}, policy: mergePolicy(dr?.spec.trafficPolicy, s.trafficPolicy) });
      for (const subset of subsets) {
        out.push({ name: clusterName(port.number, subset.name, service.host), service, port, subset: subset.name, labels: subset.labels, policy: portPolicy(subset.policy, port.number), dr });
      }
    }
  }
  return out;
}

export interface Upstream {
  clusters: Map<string, Cluster>;
  endpoints: Map<string, ClusterLoadAssignment>;
  /** SDS secrets the clusters' TLS names (DestinationRule credentialName). */
  secrets: Map<string, Secret>;
}

/**
 * Every cluster and its endpoints; with `special`, Istio's BlackHoleCluster and PassthroughCluster
 * too (a forward proxy's catch-all routes to them).
 */
export function buildClusters(ctx: BuildContext, special: boolean): Upstream {
  const out: Upstream = { clusters: new Map(), endpoints: new Map(), secrets: new Map() };
  for (const sc of serviceClusters(ctx)) {
    out.clusters.set(sc.name, buildCluster(ctx, sc, out.secrets));
    out.endpoints.set(sc.name, buildLoadAssignment(sc.name, sc.service, sc.port, sc.labels));
  }
  if (special) {
    for (const [name, kind] of [[BLACKHOLE_CLUSTER, 'blackhole'], [PASSTHROUGH_CLUSTER, 'passthrough']] as const) {
      if (out.clusters.has(name)) continue;
      out.clusters.set(name, specialCluster(ctx, name, kind));
      out.endpoints.set(name, { cluster_name: name, endpoints: [] });
    }
  }
  return out;
}

/** Istio's special clusters: BlackHoleCluster (STATIC, no endpoints) and PassthroughCluster (ORIGINAL_DST). */
function specialCluster({ defaults }: BuildContext, name: string, kind: 'blackhole' | 'passthrough'): Cluster {
  const max = defaults.circuitBreakerMax;
  return {
    name,
    type: kind === 'blackhole' ? 'STATIC' : 'ORIGINAL_DST',
    connect_timeout: durationFromMs(defaults.connectTimeoutMs),
    lb_policy: kind === 'blackhole' ? 'ROUND_ROBIN' : 'CLUSTER_PROVIDED',
    circuit_breakers: { thresholds: [{ max_connections: max, max_pending_requests: max, max_requests: max, max_retries: max }] },
    common_http_protocol_options: { idle_timeout: durationFromMs(defaults.idleTimeoutMs), max_requests_per_connection: 0 },
    metadata: { filter_metadata: { istio: { host: name, name, namespace: '', port: kind === 'passthrough' ? 80 : 0, subset: '', kind, destination_rule: '' } } },
  };
}

function buildCluster(ctx: BuildContext, sc: ServiceCluster, secrets: Map<string, Secret>): Cluster {
  const { defaults } = ctx;
  const { name, service: svc, policy, dr } = sc;
  const port = sc.port.number;
  const { name: shortName, namespace: svcNs } = serviceNameAndNamespace(svc.host, svc.namespace, ctx.domain);
  const resolution = svc.resolution;
  // DYNAMIC_DNS (Envoy's dynamic forward proxy: the request's host, resolved by DNS) is what
  // Gatehouse's ORIGINAL_DST cluster does for NONE: connect to the request's own authority.
  const type: Cluster['type'] = resolution === 'STATIC' ? 'EDS' : resolution === 'DNS' ? 'STRICT_DNS' : resolution === 'DNS_ROUND_ROBIN' ? 'LOGICAL_DNS' : 'ORIGINAL_DST';
  const lb = policy?.loadBalancer;
  let lb_policy: LbPolicy = 'ROUND_ROBIN';
  let hash_policy: HashPolicy[] | undefined;
  if (lb?.simple === 'LEAST_REQUEST' || lb?.simple === 'LEAST_CONN') lb_policy = 'LEAST_REQUEST';
  else if (lb?.simple === 'RANDOM') lb_policy = 'RANDOM';
  else if (lb?.simple === 'PASSTHROUGH') lb_policy = 'CLUSTER_PROVIDED';
  else if (lb?.consistentHash) {
    const ch = lb.consistentHash;
    lb_policy = ch.maglev ? 'MAGLEV' : 'RING_HASH';
    if (ch.httpHeaderName) hash_policy = [{ header: { header_name: ch.httpHeaderName.toLowerCase() } }];
    else if (ch.httpCookie) {
      const ttlMs = ch.httpCookie.ttl ? parseDurationMs(ch.httpCookie.ttl) : undefined;
      hash_policy = [{ cookie: { name: ch.httpCookie.name, ...(ch.httpCookie.path ? { path: ch.httpCookie.path } : {}), ...(ttlMs !== undefined ? { ttl: durationFromMs(ttlMs) } : {}) } }];
    } else if (ch.useSourceIp) hash_policy = [{ connection_properties: { source_ip: true } }];
    else if (ch.httpQueryParameterName) hash_policy = [{ query_parameter: { name: ch.httpQueryParameterName } }];
  }
  const tcp = policy?.connectionPool?.tcp;
  const http = policy?.connectionPool?.http;
  const positiveOr = (v: number | undefined, dflt: number): number => (v !== undefined && v > 0 ? v : dflt);
  const max = defaults.circuitBreakerMax;
  const cluster: Cluster = {
    name,
    type,
    connect_timeout: durationFromMs(tcp?.connectTimeout ? (parseDurationMs(tcp.connectTimeout) ?? defaults.connectTimeoutMs) : defaults.connectTimeoutMs),
    lb_policy,
    circuit_breakers: {
      thresholds: [
        {
          // Istio applies a limit only when > 0 (0 reads as unset): otherwise effectively unlimited.
          max_connections: positiveOr(tcp?.maxConnections, max),
          max_pending_requests: positiveOr(http?.http1MaxPendingRequests, max),
          max_requests: positiveOr(http?.http2MaxRequests, max),
          max_retries: positiveOr(http?.maxRetries, max),
        },
      ],
    },
    common_http_protocol_options: {
      idle_timeout: durationFromMs(http?.idleTimeout ? (parseDurationMs(http.idleTimeout) ?? defaults.idleTimeoutMs) : defaults.idleTimeoutMs),
      max_requests_per_connection: http?.maxRequestsPerConnection ?? 0,
    },
    metadata: {
      filter_metadata: {
        istio: { host: svc.host, name: shortName, namespace: svcNs, port, subset: sc.subset, kind: 'service', destination_rule: dr ? `${dr.metadata.namespace}/${dr.metadata.name}` : '', ...(hash_policy ? { hash_policy } : {}) },
      },
    },
  };
  if (type === 'EDS') cluster.eds_cluster_config = { service_name: name, eds_config: { ads: {}, resource_api_version: 'V3' } };
  // Istio treats 0 as unset: Envoy's defaults (1024 ring entries, a 65537-slot Maglev table).
  if (lb_policy === 'RING_HASH') cluster.ring_hash_lb_config = { minimum_ring_size: lb?.consistentHash?.ringHash?.minimumRingSize || lb?.consistentHash?.minimumRingSize || defaults.ringHashMinimumRingSize };
  if (lb_policy === 'MAGLEV') cluster.maglev_lb_config = { table_size: lb?.consistentHash?.maglev?.tableSize || defaults.maglevTableSize };
  const od = policy?.outlierDetection;
  if (od) {
    // Istio: the deprecated consecutiveErrors counts gateway errors only (5xx enforcement off);
    // consecutive5xxErrors / consecutiveGatewayErrors, when set, override; 0 turns a check off.
    const legacy = (od.consecutiveErrors ?? 0) > 0 ? od.consecutiveErrors! : undefined;
    const c5xx = od.consecutive5xxErrors ?? defaults.outlier.consecutive5xx;
    const cgw = od.consecutiveGatewayErrors ?? legacy ?? 0;
    cluster.outlier_detection = {
      consecutive_5xx: c5xx,
      consecutive_gateway_failure: cgw,
      enforcing_consecutive_5xx: od.consecutive5xxErrors === undefined && legacy !== undefined ? 0 : c5xx > 0 ? 100 : 0,
      enforcing_consecutive_gateway_failure: cgw > 0 ? 100 : 0,
      interval: durationFromMs(od.interval ? (parseDurationMs(od.interval) ?? defaults.outlier.intervalMs) : defaults.outlier.intervalMs),
      base_ejection_time: durationFromMs(od.baseEjectionTime ? (parseDurationMs(od.baseEjectionTime) ?? defaults.outlier.baseEjectionTimeMs) : defaults.outlier.baseEjectionTimeMs),
      // Istio passes it only when > 0; otherwise Envoy's default, 10%.
      max_ejection_percent: od.maxEjectionPercent && od.maxEjectionPercent > 0 ? od.maxEjectionPercent : defaults.outlier.maxEjectionPercent,
      split_external_local_origin_errors: od.splitExternalLocalOriginErrors ?? false,
      consecutive_local_origin_failure: od.consecutiveLocalOriginFailures ?? defaults.outlier.consecutiveLocalOriginFailures,
    };
    cluster.metadata.filter_metadata.istio.min_health_percent = od.minHealthPercent ?? 0;
  }
  // HTTP/2 upstreams (h2c, or h2 over TLS), as Istio decides: service ports with protocol GRPC,
  // GRPC-WEB or HTTP2, and HTTP ports whose DestinationRule sets h2UpgradePolicy UPGRADE.
  const portProtocol = svc.ports.find((p) => p.number === port)?.protocol ?? '';
  if (isHttp2Protocol(portProtocol) || (portProtocol === 'HTTP' && http?.h2UpgradePolicy === 'UPGRADE')) {
    cluster.http2_protocol_options = http?.maxConcurrentStreams && http.maxConcurrentStreams > 0 ? { max_concurrent_streams: http.maxConcurrentStreams } : {};
  }
  const tls = upstreamTls(ctx, policy?.tls, policy?.tls ? dr : undefined, svc.host, port, sc.subset);
  if (tls.transport_socket) cluster.transport_socket = tls.transport_socket;
  for (const s of tls.secrets) secrets.set(s.name, s);
  return cluster;
}
