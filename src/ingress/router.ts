// The router's pieces that every request lifecycle shares (HTTP exchanges, WebSocket handshakes):
// the cluster of a forward route, the request headers it sends upstream, the endpoint of an
// attempt through load balancing and the circuit breaker, the upstream response's headers as the
// client gets them, and Envoy's local replies for the router's own failures.
import type { RequestHead } from '../routing/request.js';
import { applyHeaderOps, type CompiledCluster, type CompiledRoute, type ForwardAction, type HeaderOps } from '../routing/route-table.js';
import { OVERFLOW, OVERFLOW_REPLY, PENDING, type RetryOwner } from '../upstream/circuit-breaker.js';
import type { ClusterRuntime, UpstreamEndpoint } from '../upstream/cluster-manager.js';
import type { DataPlaneContext } from './context.js';
import { respond, type LocalReply } from './filters/filter.js';
import type { RetryState } from './retry-state.js';

export const SERVER = 'istio-envoy';

/** Envoy's local replies of the router, so clients and tests see what they would see from Istio. */
export const NO_ROUTE = respond(404, 'NR', '');
export const NO_CLUSTER = respond(503, 'NC', '');
export const NO_HEALTHY_UPSTREAM = respond(503, 'UH', 'no healthy upstream');
export const UPSTREAM_TIMEOUT = respond(504, 'UT', 'upstream request timeout');
export const UPSTREAM_OVERFLOW = respond(OVERFLOW_REPLY.status, OVERFLOW_REPLY.flags, OVERFLOW_REPLY.body, OVERFLOW_REPLY.headers);
/** Istio's block_all: a host outside the registry under REGISTRY_ONLY. */
export const BLOCKED = respond(502, '', '');

/**
 * The runtime of the cluster a forward route picked (pickCluster) for one request, or the local
 * reply instead: NC when the cluster is unknown, 502 for BlackHoleCluster (the blocked host is
 * reported).
 */
export function clusterFor(ctx: DataPlaneContext, picked: CompiledCluster | undefined, head: RequestHead): ClusterRuntime | LocalReply {
  const cluster = picked ? ctx.clusters.get(picked.name) : undefined;
  if (!cluster) return NO_CLUSTER;
  if (cluster.meta.kind === 'blackhole') {
    ctx.blocked?.(head.host, head.localPort ?? 0);
    return BLOCKED;
  }
  return cluster;
}

export function isLocalReply(x: object): x is LocalReply {
  return (x as { kind?: unknown }).kind === 'respond';
}

/** The request headers that go upstream: Host (or the route's rewrite), then the route's and the cluster's edits. */
export function upstreamRequestHeaders(headers: string[], head: RequestHead, action: ForwardAction, route: CompiledRoute, picked: CompiledCluster): string[] {
  headers.push('host', action.hostRewrite ?? head.authority);
  if (route.request) headers = applyHeaderOps(headers, route.request);
  if (picked.request) headers = applyHeaderOps(headers, picked.request);
  return headers;
}

/** The upstream path of a forward route: rewritten, with the query. */
export function upstreamPath(action: ForwardAction, head: RequestHead): string {
  const path = action.rewritePath ? action.rewritePath(head.path) : head.path;
  return head.query ? `${path}?${head.query}` : path;
}

/** How the circuit breaker counts an admitted attempt. */
export interface Admission {
  /** Admitted to wait for a connection (counted pending until it gets one). */
  pending: boolean;
  /** A retry, counted against max_retries while in flight. */
  retry: boolean;
}

/**
 * The endpoint of the next attempt: a retry scheduled earlier is taken over (it counts against
 * max_retries already), hosts tried before are avoided as the policy says, and the circuit
 * breaker admits it. Returns the endpoint (with `into` filled), the local reply when there is none
 * (UH) or a limit is hit (UO), or null when the request is `over` already (the client went away).
 */
export function admitAttempt(
  cluster: ClusterRuntime,
  retry: RetryState,
  owner: RetryOwner,
  over: boolean,
  head: RequestHead,
  remoteAddress: string,
  forwarded: readonly string[],
  into: Admission,
): UpstreamEndpoint | LocalReply | null {
  const breaker = cluster.breaker;
  const retried = breaker.takeRetry(owner);
  if (over) {
    if (retried) breaker.dropRetry();
    return null;
  }
  const ep = cluster.pick(retry.excludedHosts, head, remoteAddress, forwarded);
  // Circuit breakers: max requests, then max pending when the endpoint's connections are all busy.
  const admission = ep ? breaker.admit(ep.active) : OVERFLOW;
  if (!ep || admission === OVERFLOW) {
    if (retried) breaker.dropRetry();
    return ep ? UPSTREAM_OVERFLOW : NO_HEALTHY_UPSTREAM;
  }
  into.pending = admission === PENDING;
  into.retry = retried;
  retry.attempts++;
  return ep;
}

/** Response header edits in Envoy's order: the cluster's, the route's, then the filters' (last added first). */
export function editResponseHeaders(headers: string[], clusterOps: HeaderOps | null, routeOps: HeaderOps | null, filterOps: readonly HeaderOps[] | null): string[] {
  if (clusterOps) headers = applyHeaderOps(headers, clusterOps);
  if (routeOps) headers = applyHeaderOps(headers, routeOps);
  if (filterOps !== null) for (let i = filterOps.length - 1; i >= 0; i--) headers = applyHeaderOps(headers, filterOps[i]!);
  return headers;
}

/** The headers of a local reply: server, a text content-type for a body, its own (`extra`), the route's (`ops`) and the filters' edits. */
export function localReplyHeaders(extra: readonly string[], ops: HeaderOps | null, bodyLength: number, filterOps: readonly HeaderOps[] | null): string[] {
  const headers: string[] = ['server', SERVER];
  if (bodyLength > 0 && !extra.includes('content-type')) headers.push('content-type', 'text/plain');
  for (let i = 0; i < extra.length; i++) headers.push(extra[i]!);
  return editResponseHeaders(headers, null, ops, filterOps);
}

// Response headers that describe the upstream connection, not the response: never forwarded.
export const HOP_BY_HOP_RESPONSE: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date', 'server', 'upgrade', 'proxy-connection', 'trailer', 'te']);
