// The route policies a request goes through before the router, as Envoy's HTTP filters that Istio
// puts on a gateway's connection manager: each filter looks at the request once and answers with
// a small verdict. Filters are stateless singletons; what they remember of a request lives on it
// (FilterRequest), so a chain costs no allocation per request.
import type { RequestHead } from '../../routing/request.js';
import type { CompiledRoute, CompiledVirtualHost, HeaderOps } from '../../routing/route-table.js';
import type { SecurityFilters } from '../../security/pipeline.js';
import type { RequestTrace, Tracer } from '../../telemetry/tracing/tracer.js';
import type { ConnectionFacts } from '../connection.js';

/** A local reply a filter (or the router) answers with instead of going upstream. */
export interface LocalReply {
  readonly kind: 'respond';
  readonly status: number;
  /** Envoy's response flags this reply adds (`FI`, `UAEX`...), '' for none. */
  readonly flags: string;
  readonly body: string | Buffer;
  /** Headers beyond `server` (and a text content-type for a body), as [name, value, ...]. */
  readonly headers: readonly string[];
  /** The route's response header edits (direct responses and redirects). */
  readonly ops: HeaderOps | null;
}

/** Go on with the next filter (the router after the last one). */
export const CONTINUE = Object.freeze({ kind: 'continue' as const });
export type Continue = typeof CONTINUE;

/** Hold the request for `ms`, then ask the same filter again (`afterDelay`): Envoy's fault delay. */
export interface Delay {
  readonly kind: 'delay';
  readonly ms: number;
}

/** The decision needs I/O (a JWKS fetch, an external authorizer): the request waits for it. */
export interface Wait {
  readonly kind: 'wait';
  readonly until: Promise<FilterVerdict>;
}

export type FilterVerdict = Continue | LocalReply | Delay | Wait;

/**
 * What filters read of the config version a request started on: a part of the lifecycle's
 * DataPlaneContext (context.ts), named here so that the filters do not import the context that
 * holds their chain. A filter that needs more of the version adds it here.
 */
export interface FilterContext {
  /** The listener's JWT and AuthorizationPolicy filters (null or none: no policy applies). */
  readonly security?: SecurityFilters | null;
  /** This version's tracing (null or none: tracing is off). */
  readonly tracer?: Tracer | null;
}

/** What a filter reads and edits of a request: an HTTP exchange and a WebSocket handshake alike. */
export interface FilterRequest {
  readonly head: RequestHead;
  /** The config version the request started on, as far as filters read it (a DataPlaneContext). */
  readonly ctx: FilterContext;
  readonly conn: ConnectionFacts;
  /** The matched route (undefined: none; the router answers 404). */
  route: CompiledRoute | undefined;
  /** The virtual host whose route is selected again after JWT authentication (Envoy's clear_route_cache), else null. */
  readonly rerouteIn: CompiledVirtualHost | null;
  /** The header list going upstream; a filter may replace it. */
  upstreamHeaders: string[];
  /** Envoy's response flags so far. */
  flags: string;
  /** performance.now() when the request began. */
  readonly startedAt: number;
  /** The request's trace (the tracing filter starts it; null when tracing is off). */
  trace: RequestTrace | null;
  /**
   * Response header edits of a filter (CORS, ext_authz's headers on allow), applied to the
   * response whatever answers it, the last added first (Envoy encodes in reverse filter order).
   */
  addResponseOps(ops: HeaderOps): void;
}

export interface HttpFilter {
  /** Envoy's name for the filter, for logs and docs. */
  readonly name: string;
  /** The request, once: synchronous filters return CONTINUE or a reply without allocating. */
  decode(req: FilterRequest): FilterVerdict;
  /** After this filter's own Delay: what happens next. Without it the chain goes on. */
  afterDelay?(req: FilterRequest): FilterVerdict;
}

export function respond(status: number, flags: string, body: string | Buffer, headers: readonly string[] = [], ops: HeaderOps | null = null): LocalReply {
  return { kind: 'respond', status, flags, body, headers, ops };
}

/** Flags accumulate as Envoy's do (a delayed then aborted request is `DI,FI`). */
export function addFlag(flags: string, flag: string): string {
  return flags ? `${flags},${flag}` : flag;
}

/** True for `perMillion` parts per million of calls. */
export function roll(perMillion: number): boolean {
  return perMillion >= 1_000_000 || Math.random() * 1_000_000 < perMillion;
}
