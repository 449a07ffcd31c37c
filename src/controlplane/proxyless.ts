// The dialect of xDS that proxyless gRPC clients (@grpc/grpc-js-xds, gRPC's own xDS resolver)
// accept, in one place: which Istio settings they cannot honour (reported by resolve() as
// warnings, so `gatehouse validate` and the log say so), and how the sidecar view is encoded for
// them. Their rules (gRFCs A27-A52, ISTIO-REFERENCE.md §3):
// - a RouteConfiguration with a redirect or direct-response route is NACKed whole: such routes
//   are left out; a route with a query-parameter matcher is ignored by the client: left out too,
//   and so is one with a JWT claim (dynamic metadata) matcher, which the client does not know;
// - timeouts are read from `max_stream_duration`, not `timeout` (Istio does the same for them);
// - retries: only gRPC status conditions (cancelled, deadline-exceeded, internal,
//   resource-exhausted, unavailable) and the count; per-try timeouts, host predicates ignored;
// - ring hash with header hash policies only (on the route), XX_HASH, ring ≤ 8M; no Maglev;
// - circuit breaking: only max_requests; outlier detection: only success-rate/failure-percentage
//   (Istio's consecutive-error settings have no effect); no header edits, mirrors, CORS, rewrites.
import { routingClaim } from '../config/jwt-claims.js';
import type { HTTPRoute, TrafficPolicy } from '../config/types.js';
import type { Cluster, HashPolicy, Route, RouteConfiguration } from './snapshot.js';

export interface Gap {
  /** Field path below the HTTPRoute / TrafficPolicy. */
  path: Array<string | number>;
  message: string;
}

/** The retry conditions a proxyless client honours (gRFC A44). */
export const PROXYLESS_RETRY_ON: ReadonlySet<string> = new Set(['cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable']);

const IGNORED = 'proxyless gRPC clients ignore';

/** What a proxyless gRPC client cannot honour in one VirtualService HTTP route. */
export function proxylessRouteGaps(http: HTTPRoute): Gap[] {
  const gaps: Gap[] = [];
  if (http.redirect) gaps.push({ path: ['redirect'], message: 'proxyless gRPC clients reject route configurations with redirects; this route is left out for them' });
  if (http.directResponse) gaps.push({ path: ['directResponse'], message: 'proxyless gRPC clients reject route configurations with direct responses; this route is left out for them' });
  (http.match ?? []).forEach((m, i) => {
    if (m.queryParams && Object.keys(m.queryParams).length > 0) gaps.push({ path: ['match', i, 'queryParams'], message: `${IGNORED} routes that match query parameters; this match is left out for them` });
    for (const field of ['headers', 'withoutHeaders'] as const) {
      for (const key of Object.keys(m[field] ?? {})) {
        if (routingClaim(key) !== null) gaps.push({ path: ['match', i, field, key], message: 'proxyless gRPC clients have no JWT claims to match (claim routing is a gateway feature); this match is left out for them' });
      }
    }
  });
  if (http.headers) gaps.push({ path: ['headers'], message: `${IGNORED} header edits` });
  (http.route ?? []).forEach((d, i) => {
    if (d.headers) gaps.push({ path: ['route', i, 'headers'], message: `${IGNORED} header edits` });
  });
  if (http.rewrite) gaps.push({ path: ['rewrite'], message: `${IGNORED} rewrites` });
  if (http.corsPolicy) gaps.push({ path: ['corsPolicy'], message: `${IGNORED} CORS policies` });
  if (http.mirror || (http.mirrors && http.mirrors.length > 0)) gaps.push({ path: [http.mirror ? 'mirror' : 'mirrors'], message: `${IGNORED} mirroring` });
  const r = http.retries;
  if (r?.retryOn !== undefined) {
    const other = r.retryOn.split(',').map((s) => s.trim()).filter((c) => c !== '' && !PROXYLESS_RETRY_ON.has(c));
    if (other.length > 0) gaps.push({ path: ['retries', 'retryOn'], message: `${IGNORED} retry conditions other than gRPC statuses (${[...PROXYLESS_RETRY_ON].join(', ')}): ${other.join(', ')}` });
  }
  if (r?.perTryTimeout !== undefined) gaps.push({ path: ['retries', 'perTryTimeout'], message: `${IGNORED} perTryTimeout` });
  if (r?.attempts !== undefined && r.attempts > 4) gaps.push({ path: ['retries', 'attempts'], message: 'proxyless gRPC clients make at most 5 attempts (4 retries)' });
  return gaps;
}

/** What a proxyless gRPC client cannot honour in a DestinationRule traffic policy. */
export function proxylessPolicyGaps(policy: TrafficPolicy | undefined): Gap[] {
  if (!policy) return [];
  const gaps: Gap[] = [];
  const ch = policy.loadBalancer?.consistentHash;
  if (ch) {
    if (ch.maglev) gaps.push({ path: ['loadBalancer', 'consistentHash', 'maglev'], message: 'proxyless gRPC clients have no Maglev; they get a ring hash' });
    if (!ch.httpHeaderName) gaps.push({ path: ['loadBalancer', 'consistentHash'], message: `${IGNORED} cookie, source IP and query parameter hashing (only httpHeaderName); calls are spread at random on the ring` });
  }
  const simple = policy.loadBalancer?.simple;
  if (simple && simple !== 'ROUND_ROBIN' && simple !== 'UNSPECIFIED') gaps.push({ path: ['loadBalancer', 'simple'], message: `${IGNORED} ${simple}; they use ROUND_ROBIN` });
  if (policy.outlierDetection) gaps.push({ path: ['outlierDetection'], message: `${IGNORED} consecutive-error outlier detection (only success-rate and failure-percentage ejection exist for them)` });
  const pool = policy.connectionPool;
  if (pool?.tcp || (pool?.http && Object.keys(pool.http).some((k) => k !== 'http2MaxRequests'))) {
    gaps.push({ path: ['connectionPool'], message: `${IGNORED} connection pool settings other than http.http2MaxRequests (max_requests)` });
  }
  if (policy.tls && policy.tls.mode !== 'DISABLE' && policy.tls.mode !== 'ISTIO_MUTUAL') gaps.push({ path: ['tls'], message: `${IGNORED} tls mode ${policy.tls.mode} (only ISTIO_MUTUAL); they connect in plaintext` });
  return gaps;
}

/** A route configuration as a proxyless client can take it. */
export function toProxylessRoutes(rc: RouteConfiguration, clusters: ReadonlyMap<string, Cluster>): RouteConfiguration {
  return {
    name: rc.name,
    virtual_hosts: rc.virtual_hosts.map((vh) => ({
      ...vh,
      routes: vh.routes.filter((r) => r.route !== undefined && r.match.query_parameters.length === 0 && !r.match.dynamic_metadata?.length).map((r) => proxylessRoute(r, clusters)),
    })),
    validate_clusters: false,
  };
}

function proxylessRoute(r: Route, clusters: ReadonlyMap<string, Cluster>): Route {
  const a = r.route!;
  const out: Route = { name: r.name, match: r.match, metadata: r.metadata, ...(r.decorator ? { decorator: r.decorator } : {}) };
  const fault = r.typed_per_filter_config?.['envoy.filters.http.fault'];
  if (fault) out.typed_per_filter_config = { 'envoy.filters.http.fault': fault };
  const route: NonNullable<Route['route']> = { cluster_not_found_response_code: a.cluster_not_found_response_code, timeout: a.timeout };
  if (a.cluster !== undefined) route.cluster = a.cluster;
  if (a.weighted_clusters) {
    route.weighted_clusters = { clusters: a.weighted_clusters.clusters.map((w) => ({ name: w.name, weight: w.weight })), total_weight: a.weighted_clusters.total_weight };
  }
  // Istio for proxyless nodes: the route timeout becomes max_stream_duration.
  if (a.timeout.seconds > 0 || a.timeout.nanos > 0) route.max_stream_duration = { max_stream_duration: a.timeout };
  const retry = a.retry_policy;
  if (retry) {
    const on = retry.retry_on.split(',').filter((c) => PROXYLESS_RETRY_ON.has(c));
    if (on.length > 0 && retry.num_retries > 0) route.retry_policy = { retry_on: on.join(','), num_retries: Math.min(retry.num_retries, 4) };
  }
  // Envoy (and gRPC) read hash policies from the route; Gatehouse keeps them on the cluster.
  const targets = a.cluster !== undefined ? [a.cluster] : (a.weighted_clusters?.clusters ?? []).map((w) => w.name);
  const hash: HashPolicy[] = [];
  for (const t of targets) {
    for (const h of clusters.get(t)?.metadata.filter_metadata.istio.hash_policy ?? []) {
      if (h.header && !hash.some((x) => x.header?.header_name === h.header!.header_name)) hash.push({ header: h.header });
    }
  }
  if (hash.length > 0) (route as RouteWithHash).hash_policy = hash;
  out.route = route;
  return out;
}

/** Envoy's RouteAction.hash_policy, set only in the proxyless encoding. */
export type RouteWithHash = NonNullable<Route['route']> & { hash_policy?: HashPolicy[] };

/** A cluster as a proxyless client can take it: EDS, round robin or ring hash, max_requests. */
export function toProxylessCluster(c: Cluster): Cluster {
  const ring = c.lb_policy === 'RING_HASH' || c.lb_policy === 'MAGLEV';
  const max = c.circuit_breakers.thresholds[0];
  return {
    name: c.name,
    type: 'EDS',
    eds_cluster_config: { service_name: c.name, eds_config: { ads: {}, resource_api_version: 'V3' } },
    connect_timeout: c.connect_timeout,
    lb_policy: ring ? 'RING_HASH' : 'ROUND_ROBIN',
    ...(ring ? { ring_hash_lb_config: { minimum_ring_size: Math.min(c.ring_hash_lb_config?.minimum_ring_size ?? 1024, 8_388_608) } } : {}),
    circuit_breakers: { thresholds: max ? [{ ...max }] : [] },
    common_http_protocol_options: c.common_http_protocol_options,
    metadata: c.metadata,
  };
}
