// One request through the gateway: route action, upstream attempts (with Istio's retry policy),
// streaming in both directions with backpressure, Istio's local replies and response flags, and
// the metrics record at the end. Engine-agnostic: it talks to the client through a ResponseSink.
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { applyHeaderOps, firstMatch, pickCluster, type CompiledCors, type CompiledMirror, type CompiledRoute, type CompiledVirtualHost, type ForwardAction, type HeaderOps, type RedirectResponse, type RouteTable } from '../routing/route-table.js';
import type { ForwardProxyConfig } from '../controlplane/snapshot.js';
import type { ForwardProxy } from '../egress/forward-proxy.js';
import { portOf, stripPort } from '../routing/authority.js';
import { getHeader, type RequestHead } from '../routing/request.js';
import type { ClusterRuntime, ClusterSet, UpstreamEndpoint } from '../upstream/cluster-manager.js';
import { isTlsError } from '../upstream/tls-origination.js';
import { OVERFLOW, OVERFLOW_REPLY, PENDING, type CircuitBreaker } from '../upstream/circuit-breaker.js';
import type { IstioMetrics } from '../telemetry/metrics.js';
import type { AccessLog } from '../telemetry/access-log.js';
import type { Reroute, SecurityFilters, Verdict } from '../security/pipeline.js';
import type { SecurityRequest } from '../security/types.js';
import type { HeaderValue, ResponseSink } from './sink.js';

/**
 * One config version as a listener serves it: its route table with the clusters and policies of
 * the same version. The data plane swaps it as one reference; a request reads it once, when it
 * starts, and keeps it to its end, so that a reload never mixes one version's tables with
 * another's clusters.
 */
export interface DataPlaneContext {
  readonly clusters: ClusterSet;
  readonly metrics: IstioMetrics;
  readonly accessLog: AccessLog | null;
  /** A request reached BlackHoleCluster (REGISTRY_ONLY, host not in the registry): logged and counted. */
  readonly blocked?: (host: string, port: number) => void;
  /** The listener's route table (none: every request is answered 404 NR). */
  readonly table?: RouteTable | undefined;
  /** The listener's JWT and AuthorizationPolicy filters (null or none: no policy applies). */
  readonly security?: SecurityFilters | null;
  /** An HTTP egress port that is also a forward proxy (node engine): CONNECT and absolute-form requests. */
  readonly forwardProxy?: { readonly config: ForwardProxyConfig; readonly proxy: ForwardProxy } | null;
}

/** Bodies up to this size are kept so the request can be retried; larger ones stream and are not retried. */
const RETRY_BUFFER_LIMIT = 64 * 1024;
/** Mirrored requests carry bodies up to this size; a larger body is not mirrored (the primary is unaffected). */
export const MIRROR_BODY_LIMIT = 1024 * 1024;
/** A mirrored request is abandoned after this long when its route has no timeout. */
const MIRROR_TIMEOUT_MS = 30_000;
const RETRY_BACKOFF_BASE_MS = 25;
const RETRY_BACKOFF_MAX_MS = 250;

// Response headers that describe the upstream connection, not the response: never forwarded.
// Checked by length first so that most names are never turned into strings.
const HOP_BY_HOP_RESPONSE = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date', 'server', 'upgrade', 'proxy-connection', 'trailer', 'te']);
const HOP_LENGTHS = new Uint8Array(32);
for (const n of HOP_BY_HOP_RESPONSE) HOP_LENGTHS[n.length] = 1;

const SERVER = 'istio-envoy';
const EMPTY = Buffer.alloc(0);

/** Envoy's local reply bodies, so clients and tests see what they would see from Istio. */
export const LOCAL_REPLY = {
  noRoute: { status: 404, flags: 'NR', body: '' },
  noCluster: { status: 503, flags: 'NC', body: '' },
  noHealthyUpstream: { status: 503, flags: 'UH', body: 'no healthy upstream' },
  upstreamTimeout: { status: 504, flags: 'UT', body: 'upstream request timeout' },
} as const;

const enum Phase {
  /** Waiting for the first request body chunk before dispatching. */
  AwaitingBody,
  /** Held by an injected fault delay; body chunks that arrive meanwhile are kept. */
  Delayed,
  /** An upstream attempt is in flight (or a retry is scheduled). */
  Upstream,
  /** Upstream response headers accepted: the response belongs to the client now. */
  Responding,
  /** Finished, one way or another. */
  Done,
}

export class Exchange {
  readonly sink: ResponseSink;
  readonly ctx: DataPlaneContext;
  readonly head: RequestHead;
  readonly startedAt: number;
  /** The matched route; selected again after JWT authentication when `rerouteIn` is set. */
  route: CompiledRoute | undefined;
  /**
   * The virtual host, when its routes match JWT claims or headers (`rerouteAfterAuthn`): the route
   * is then selected again with what JWT authentication established (Envoy's clear_route_cache).
   * Set before begin; null for every other request (no second match).
   */
  rerouteIn: CompiledVirtualHost | null = null;
  phase: Phase = Phase.Upstream;
  /** Final response code and flags, for metrics and logs. */
  code = 0;
  flags = '';
  requestBytes = 0;
  responseBytes = 0;
  /** A gRPC request (content-type application/grpc or application/grpc+...), as Envoy tells them. */
  readonly grpc: boolean;
  /** gRPC: the status the client got (grpc-status of the response or its trailers), '' when none. */
  grpcStatus = '';

  #action: ForwardAction | null = null;
  #cluster: ClusterRuntime | undefined;
  #upstreamPath = '';
  #upstreamHeaders: string[] = [];
  #attemptCountIndex = -1;
  #responseOps: HeaderOps | null = null;
  #clusterResponseOps: HeaderOps | null = null;
  /** Request body: a Buffer when whole (replayable), a stream while streaming, null when none. */
  #body: Buffer | Readable | null = null;
  #bodyChunks: Buffer[] | null = null;
  #bodyPaused = false;
  #bodyComplete = false;
  #attempt: Attempt | null = null;
  #attempts = 0;
  #tried: Set<UpstreamEndpoint> | null = null;
  #routeTimer: NodeJS.Timeout | null = null;
  #retryTimer: NodeJS.Timeout | null = null;
  #upstreamStartedAt = 0;
  #endpoint: UpstreamEndpoint | undefined;
  // Response head, written together with the first body bytes (one send).
  #respStatus = 0;
  #respHeaders: HeaderValue[] | null = null;
  #respLength = -1;
  #respNoBody = false;
  #resumeUpstream: (() => void) | null = null;
  #hasBody = false;
  /** Body chunks received while a fault delay holds the request. */
  #early: Array<[Buffer, boolean]> | null = null;
  #faultTimer: NodeJS.Timeout | null = null;
  /** CORS headers for the response to an allowed origin. */
  #cors: HeaderOps | null = null;
  #mirrors: CompiledMirror[] | null = null;
  #mirrorChunks: Buffer[] | null = null;
  /** Response headers an external authorizer asked for (headersToDownstreamOnAllow). */
  #authzOps: HeaderOps | null = null;
  /** While security filters decide: body bytes read before the client is paused (-1: pause at once). */
  #holdLimit = -1;

  constructor(sink: ResponseSink, ctx: DataPlaneContext, head: RequestHead, route: CompiledRoute | undefined) {
    this.sink = sink;
    this.ctx = ctx;
    this.head = head;
    this.route = route;
    this.startedAt = performance.now();
    const ct = getHeader(head, 'content-type');
    this.grpc = ct !== undefined && ct.startsWith('application/grpc') && (ct.length === 16 || ct.charCodeAt(16) === 43 /* + */);
  }

  // ---- Entry points used by the engine ----

  /**
   * Runs the route action. `hasBody`: the request has a body that will arrive via `requestData`
   * (forwarded when the route is a forward route, else read and dropped). `upstreamHeaders` is the
   * filtered header list to forward, to which the proxy headers are added.
   */
  begin(hasBody: boolean, upstreamHeaders: string[]): void {
    // Istio's filter order: jwt_authn, ext_authz (CUSTOM), rbac DENY / ALLOW, then CORS, fault, router.
    // The listener's security filters (JWT, AuthorizationPolicy) of this request's config version.
    const sec = this.ctx.security;
    if (sec != null && sec.active) {
      const verdict = sec.check(this.#securityRequest(sec, upstreamHeaders));
      if (verdict instanceof Promise) {
        // Held like a fault delay: body chunks that arrive meanwhile are kept, the client paused.
        // Small bodies are read meanwhile (so that a client going away is seen), larger ones paused.
        this.phase = Phase.Delayed;
        // (Only a body that may go upstream: the route may still change when it is selected again.)
        if (hasBody && (this.rerouteIn !== null || this.route?.action.kind === 'forward')) {
          this.#early ??= [];
          this.#holdLimit = RETRY_BUFFER_LIMIT;
        }
        verdict.then(
          (v) => this.#verdictReady(v, hasBody, upstreamHeaders),
          () => this.#verdictReady(null, hasBody, upstreamHeaders),
        );
        return;
      }
      if (!verdict.allow) return this.#denied(verdict);
      if (verdict.reroute !== null && this.rerouteIn !== null) this.#reroute(verdict.reroute);
      if (verdict.headers !== null) upstreamHeaders = verdict.headers;
      if (verdict.responseHeaders !== null) this.#authzOps = { set: [], add: pairs(verdict.responseHeaders), remove: [] };
    }
    this.#afterSecurity(hasBody, upstreamHeaders);
  }

  #verdictReady(v: Verdict | null, hasBody: boolean, upstreamHeaders: string[]): void {
    if (this.phase === Phase.Done) return; // the client went away meanwhile
    this.phase = Phase.Upstream;
    this.#holdLimit = -1;
    // A failing filter fails closed.
    if (v === null) return this.localReply(403, '', 'RBAC: access denied');
    if (!v.allow) return this.#denied(v);
    if (v.reroute !== null && this.rerouteIn !== null) this.#reroute(v.reroute);
    if (v.responseHeaders !== null) this.#authzOps = { set: [], add: pairs(v.responseHeaders), remove: [] };
    this.#afterSecurity(hasBody, v.headers ?? upstreamHeaders);
  }

  /** The route again, with the headers and JWT claims authentication left (Envoy's clear_route_cache). */
  #reroute(r: Reroute): void {
    const head = r.headers === this.head.headers ? this.head : { ...this.head, headers: r.headers };
    this.route = firstMatch(this.rerouteIn!, head, r.metadata ?? undefined);
  }

  #denied(v: Extract<Verdict, { allow: false }>): void {
    this.localReply(v.status, v.flags, v.body, null, v.headers);
  }

  #holdBody(): void {
    this.#early ??= [];
    if (!this.#bodyPaused) {
      this.#bodyPaused = true;
      this.sink.pauseRequestBody();
    }
  }

  /** The request as the security filters see it (only built when the listener has policies). */
  #securityRequest(sec: SecurityFilters, headers: string[]): SecurityRequest {
    return securityRequest(this.head, this.sink, sec.numTrustedProxies, headers);
  }

  #afterSecurity(hasBody: boolean, upstreamHeaders: string[]): void {
    const route = this.route;
    if (!route) return this.localReply(LOCAL_REPLY.noRoute.status, LOCAL_REPLY.noRoute.flags, LOCAL_REPLY.noRoute.body);
    // Only a forward route takes the body; a local answer reads and drops it.
    this.#hasBody = hasBody && route.action.kind === 'forward';
    this.#upstreamHeaders = upstreamHeaders;
    // Istio's filter order: CORS, then fault injection, then the router.
    if (route.cors !== null && this.#applyCors(route.cors)) return;
    const fault = route.fault;
    if (fault !== null && fault.delayPerMillion > 0 && roll(fault.delayPerMillion)) {
      this.flags = 'DI';
      this.phase = Phase.Delayed;
      if (this.#hasBody) this.#holdBody();
      this.#faultTimer = setTimeout(onFaultDelay, fault.delayMs, this);
      return;
    }
    this.#route();
  }

  /** After CORS and any fault delay: a fault abort, or the route's action. */
  faultDelayDone(): void {
    this.#faultTimer = null;
    if (this.phase !== Phase.Done) this.#route();
  }

  #route(): void {
    const route = this.route!;
    const fault = route.fault;
    if (fault !== null && fault.abortPerMillion > 0 && roll(fault.abortPerMillion)) {
      if (fault.abortGrpcStatus >= 0) {
        return this.localReply(200, 'FI', '', null, ['content-type', 'application/grpc', 'grpc-status', String(fault.abortGrpcStatus), 'grpc-message', 'fault filter abort']);
      }
      return this.localReply(fault.abortStatus, 'FI', 'fault filter abort');
    }
    const action = route.action;
    if (action.kind === 'direct') return this.localReply(action.status, '', action.body ?? EMPTY, route.response);
    if (action.kind === 'redirect') return this.#redirect(action);
    this.#action = action;
    const picked = pickCluster(action, Math.random());
    const cluster = picked ? this.ctx.clusters.get(picked.name) : undefined;
    if (!picked || !cluster) return this.localReply(LOCAL_REPLY.noCluster.status, LOCAL_REPLY.noCluster.flags, LOCAL_REPLY.noCluster.body);
    this.#cluster = cluster;
    if (cluster.meta.kind === 'blackhole') {
      // Istio's block_all: a host outside the registry under REGISTRY_ONLY gets 502.
      this.ctx.blocked?.(this.head.host, this.head.localPort ?? 0);
      return this.localReply(502, '', '');
    }
    this.#responseOps = route.response;
    this.#clusterResponseOps = picked.request || picked.response ? picked.response : null;

    let headers = this.#upstreamHeaders;
    if (action.hostRewrite !== null) headers.push('host', action.hostRewrite);
    else headers.push('host', this.head.authority);
    if (route.request) headers = applyHeaderOps(headers, route.request);
    if (picked.request) headers = applyHeaderOps(headers, picked.request);
    headers.push('x-envoy-attempt-count', '1');
    this.#attemptCountIndex = headers.length - 1;
    this.#upstreamHeaders = headers;
    const path = action.rewritePath ? action.rewritePath(this.head.path) : this.head.path;
    this.#upstreamPath = this.head.query ? `${path}?${this.head.query}` : path;
    if (action.mirrors !== null) this.#chooseMirrors(action.mirrors);

    let timeoutMs = action.timeoutMs;
    if (this.grpc) {
      // Istio sets Envoy's max_grpc_timeout to the route timeout (0: no limit): a gRPC call's
      // grpc-timeout applies, capped by the route timeout.
      const g = grpcTimeoutMs(getHeader(this.head, 'grpc-timeout'));
      if (g > 0 && (timeoutMs <= 0 || g < timeoutMs)) timeoutMs = g;
    }
    if (timeoutMs > 0) this.#routeTimer = setTimeout(onRouteTimeout, timeoutMs, this);
    if (this.#hasBody) {
      this.phase = Phase.AwaitingBody;
      // A gRPC call goes upstream at once, its messages streamed as they come: a call may wait for
      // the server's first message before the client sends one. Other bodies wait for their first
      // chunk, so that a whole small body can be retried.
      if (this.grpc) this.#openBodyStream();
      const early = this.#early;
      if (early !== null) {
        this.#early = null;
        for (const [chunk, last] of early) this.#bodyData(chunk, last);
        this.#resumeBody();
      }
      if (this.grpc) this.#dispatch();
      return;
    }
    this.#dispatch();
  }

  /** The request body as a stream, before any chunk arrived (chunks are kept while it may be retried). */
  #openBodyStream(): void {
    this.phase = Phase.Upstream;
    const stream = new Readable({ read: () => this.#resumeBody(), highWaterMark: 64 * 1024 });
    stream.on('error', () => undefined);
    this.#body = stream;
    this.#bodyChunks = [];
  }

  /** A chunk of the request body (a copy the exchange may keep). */
  requestData(chunk: Buffer, isLast: boolean): void {
    this.requestBytes += chunk.length;
    if (this.phase === Phase.Done) return;
    if (this.phase === Phase.Delayed) {
      this.#early?.push([chunk, isLast]);
      if (this.#holdLimit >= 0 && !isLast && this.requestBytes > this.#holdLimit) this.#holdBody();
      return;
    }
    this.#bodyData(chunk, isLast);
  }

  #bodyData(chunk: Buffer, isLast: boolean): void {
    if (this.#mirrorChunks !== null) this.#mirrorData(chunk, isLast);
    if (this.phase === Phase.AwaitingBody) {
      this.phase = Phase.Upstream;
      if (isLast) {
        this.#body = chunk;
      } else {
        const stream = new Readable({ read: () => this.#resumeBody(), highWaterMark: 64 * 1024 });
        stream.on('error', () => undefined);
        this.#body = stream;
        this.#bodyChunks = [chunk];
        stream.push(chunk);
      }
      this.#dispatch();
      return;
    }
    const body = this.#body;
    if (!(body instanceof Readable) || body.destroyed) return;
    if (this.#bodyChunks) {
      this.#bodyChunks.push(chunk);
      if (this.requestBytes > RETRY_BUFFER_LIMIT) this.#bodyChunks = null;
    }
    if (!body.push(chunk) && !isLast && !this.#bodyPaused) {
      this.#bodyPaused = true;
      this.sink.pauseRequestBody();
    }
    if (isLast) {
      this.#bodyComplete = true;
      body.push(null);
    }
  }

  // ---- CORS (Envoy's cors filter) ----

  /** Answers a preflight (true), or remembers the headers for an allowed origin's response. */
  #applyCors(cors: CompiledCors): boolean {
    const origin = getHeader(this.head, 'origin');
    if (origin === undefined) return false;
    const allowed = cors.allows(origin);
    const preflight = this.head.method === 'OPTIONS' && getHeader(this.head, 'access-control-request-method') !== undefined;
    if (preflight) {
      if (allowed) {
        this.localReply(200, '', EMPTY, null, ['access-control-allow-origin', origin, ...cors.preflight]);
        return true;
      }
      if (!cors.forwardNotMatchingPreflights) {
        this.localReply(200, '', EMPTY);
        return true;
      }
      return false;
    }
    if (allowed) {
      const set: Array<[string, string]> = [['access-control-allow-origin', origin]];
      for (let i = 0; i < cors.actual.length; i += 2) set.push([cors.actual[i]!, cors.actual[i + 1]!]);
      this.#cors = { set, add: [], remove: [] };
    }
    return false;
  }

  // ---- Mirroring: fire-and-forget copies that never affect the primary ----

  #chooseMirrors(mirrors: readonly CompiledMirror[]): void {
    let chosen: CompiledMirror[] | null = null;
    for (const m of mirrors) if (roll(m.perMillion)) (chosen ??= []).push(m);
    if (chosen === null) return;
    this.#mirrors = chosen;
    if (this.#hasBody) this.#mirrorChunks = [];
    else this.#sendMirrors(null);
  }

  #mirrorData(chunk: Buffer, isLast: boolean): void {
    const chunks = this.#mirrorChunks!;
    chunks.push(chunk);
    if (this.requestBytes > MIRROR_BODY_LIMIT) {
      // Too large to copy: the primary goes on, the mirrors are skipped.
      this.#mirrorChunks = null;
      this.#mirrors = null;
      return;
    }
    if (isLast) {
      this.#mirrorChunks = null;
      this.#sendMirrors(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    }
  }

  #sendMirrors(body: Buffer | null): void {
    const mirrors = this.#mirrors;
    this.#mirrors = null;
    if (mirrors === null) return;
    const timeoutMs = this.#action?.timeoutMs || MIRROR_TIMEOUT_MS;
    for (const m of mirrors) {
      const ep = this.ctx.clusters.get(m.cluster)?.pick();
      if (!ep) continue;
      // The Host as current Istio sends it: unchanged (no `-shadow` suffix since 1.28).
      const opts: Dispatcher.DispatchOptions = { path: this.#upstreamPath, method: this.head.method as Dispatcher.HttpMethod, headers: this.#upstreamHeaders.slice(), body };
      try {
        ep.pool.dispatch(opts, new MirrorHandler(timeoutMs));
      } catch {
        // a closed pool during a reload: the mirror is skipped
      }
    }
  }

  /** The client went away. */
  downstreamAborted(): void {
    if (this.phase === Phase.Done) return;
    this.#cancelUpstream();
    this.flags = this.flags ? `${this.flags},DC` : 'DC';
    this.#finish(this.phase === Phase.Responding ? this.#respStatus : 0);
  }

  // ---- Local replies ----

  localReply(status: number, flags: string, body: string | Buffer, ops: HeaderOps | null = null, extra: readonly string[] = []): void {
    if (this.phase === Phase.Done) return;
    this.#cancelUpstream();
    // Flags accumulate as Envoy's do (a delayed then aborted request is `DI,FI`).
    if (flags) this.flags = this.flags ? `${this.flags},${flags}` : flags;
    const buf = typeof body === 'string' ? Buffer.from(body) : body;
    if (this.grpc) return this.#grpcLocalReply(status, flags, buf, ops, extra);
    let headers: string[] = ['server', SERVER];
    if (buf.length > 0 && !extra.includes('content-type')) headers.push('content-type', 'text/plain');
    for (let i = 0; i < extra.length; i++) headers.push(extra[i]!);
    if (ops) headers = applyHeaderOps(headers, ops);
    if (this.#cors) headers = applyHeaderOps(headers, this.#cors);
    const sink = this.sink;
    if (!sink.closed) {
      const head = this.head.method === 'HEAD';
      sink.batch(() => {
        sink.start(status, headers, buf.length, head);
        sink.end(head ? undefined : buf);
      });
      this.responseBytes = head ? 0 : buf.length;
    }
    this.#finish(status);
  }

  /**
   * A local reply to a gRPC call, as Envoy sends it: HTTP 200, trailers-only, the status in
   * `grpc-status` (Envoy's HTTP → gRPC mapping; a router timeout is DEADLINE_EXCEEDED since
   * envoyproxy/envoy#44479) and the body text, percent-encoded, in `grpc-message`.
   */
  #grpcLocalReply(status: number, flags: string, body: Buffer, ops: HeaderOps | null, extra: readonly string[]): void {
    let grpcStatus = '';
    let message = '';
    let headers: string[] = ['server', SERVER, 'content-type', 'application/grpc'];
    for (let i = 0; i < extra.length; i += 2) {
      const name = extra[i]!;
      if (name === 'grpc-status') grpcStatus = extra[i + 1]!;
      else if (name === 'grpc-message') message = extra[i + 1]!;
      else if (name !== 'content-type' && name !== 'content-length') headers.push(name, extra[i + 1]!);
    }
    if (!grpcStatus) grpcStatus = String(flags === 'UT' ? GRPC_DEADLINE_EXCEEDED : httpToGrpcStatus(status));
    if (!message && body.length > 0) message = grpcMessageEncode(body.toString('utf8'));
    headers.push('grpc-status', grpcStatus);
    if (message) headers.push('grpc-message', message);
    if (ops) headers = applyHeaderOps(headers, ops);
    if (this.#cors) headers = applyHeaderOps(headers, this.#cors);
    this.grpcStatus = grpcStatus;
    const sink = this.sink;
    if (!sink.closed) {
      sink.batch(() => {
        sink.start(200, headers, -1, false);
        sink.end();
      });
    }
    this.responseBytes = 0;
    this.#finish(200);
  }

  #redirect(r: RedirectResponse): void {
    this.localReply(r.status, '', '', this.route?.response ?? null, ['location', redirectLocation(r, this.head)]);
  }

  // ---- Upstream attempts ----

  #dispatch(): void {
    const cluster = this.#cluster!;
    const breaker = cluster.breaker;
    // A retry scheduled by #maybeRetry counts against maxRetries already: this attempt takes it over.
    const retried = breaker.takeRetry(this);
    if (this.phase === Phase.Done) {
      if (retried) breaker.dropRetry();
      return;
    }
    const ep = cluster.pick(this.#tried ?? undefined, this.head, this.sink.remoteAddress, this.#upstreamHeaders);
    // Circuit breakers: max requests, then max pending when the endpoint's connections are all busy.
    const admission = ep ? breaker.admit(ep.active) : OVERFLOW;
    if (!ep || admission === OVERFLOW) {
      if (retried) breaker.dropRetry();
      if (!ep) return this.localReply(LOCAL_REPLY.noHealthyUpstream.status, LOCAL_REPLY.noHealthyUpstream.flags, LOCAL_REPLY.noHealthyUpstream.body);
      return this.localReply(OVERFLOW_REPLY.status, OVERFLOW_REPLY.flags, OVERFLOW_REPLY.body, null, OVERFLOW_REPLY.headers);
    }
    const setCookie = cluster.setCookie;
    this.#attempts++;
    this.#endpoint = ep;
    this.#upstreamHeaders[this.#attemptCountIndex] = String(this.#attempts);
    const attempt = new Attempt(this, ep);
    attempt.breaker = breaker;
    attempt.pending = admission === PENDING;
    attempt.retry = retried;
    attempt.setCookie = setCookie;
    this.#attempt = attempt;
    ep.active++;
    const retry = this.#action!.retry;
    if (retry && retry.perTryTimeoutMs > 0) attempt.timer = setTimeout(onPerTryTimeout, retry.perTryTimeoutMs, attempt);
    this.#upstreamStartedAt = performance.now();
    const opts: Dispatcher.DispatchOptions = {
      path: this.#upstreamPath,
      method: this.head.method as Dispatcher.HttpMethod,
      headers: this.#upstreamHeaders,
      body: this.#bodyForAttempt(),
      // undefined leaves undici's own choice (it closes after HEAD, for instance) untouched.
      reset: cluster.closeAfterEachRequest ? true : undefined,
    };
    try {
      ep.pool.dispatch(opts, attempt);
    } catch (err) {
      attempt.onError(err as Error);
    }
  }

  #bodyForAttempt(): Buffer | Readable | null {
    const body = this.#body;
    if (body === null || Buffer.isBuffer(body)) return body;
    if (this.#attempts === 1) return body;
    // A retry of a streamed body: only possible while every chunk was kept and the body is complete.
    return Buffer.concat(this.#bodyChunks ?? []);
  }

  /** A request can be sent again when its body is whole in memory (bounded by RETRY_BUFFER_LIMIT). */
  #replayable(): boolean {
    const body = this.#body;
    if (body === null || Buffer.isBuffer(body)) return true;
    return this.#bodyChunks !== null && this.#bodyComplete;
  }

  #resumeBody(): void {
    if (this.#bodyPaused && !this.sink.closed) {
      this.#bodyPaused = false;
      this.sink.resumeRequestBody();
    }
  }

  /** Cleans up the current attempt (exactly once per attempt). */
  #release(attempt: Attempt): void {
    if (attempt.released) return;
    attempt.released = true;
    attempt.endpoint.active--;
    attempt.breaker?.release(attempt.pending, attempt.retry);
    attempt.pending = false;
    if (attempt.timer) {
      clearTimeout(attempt.timer);
      attempt.timer = null;
    }
    if (this.#attempt === attempt) this.#attempt = null;
  }

  #cancelUpstream(): void {
    const attempt = this.#attempt;
    if (attempt) {
      attempt.cancelled = true;
      this.#release(attempt);
      attempt.abort?.(new Error('request cancelled by the gateway'));
    }
    if (this.#retryTimer) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
    const body = this.#body;
    if (body instanceof Readable && !body.destroyed) body.destroy();
  }

  /** Whether a failed attempt may be retried, and if so schedules it. */
  #maybeRetry(kind: 'connect' | 'reset' | 'refused' | 'timeout' | 'status' | 'grpc', status = 0): boolean {
    const retry = this.#action?.retry;
    if (!retry || this.#attempts > retry.numRetries) return false;
    const on = retry.on;
    let ok: boolean;
    switch (kind) {
      case 'connect':
        ok = on.connectFailure;
        break;
      case 'reset':
        ok = on.reset;
        break;
      case 'refused':
        // An HTTP/2 stream the upstream refused (REFUSED_STREAM, or past its GOAWAY): never processed.
        ok = on.refusedStream || on.reset;
        break;
      case 'timeout':
        ok = on.fiveXX || on.gatewayError;
        break;
      case 'status':
        ok =
          on.statusCodes.has(status) ||
          (on.fiveXX && status >= 500) ||
          (on.gatewayError && (status === 502 || status === 503 || status === 504)) ||
          (on.retriable4xx && status === 409);
        break;
      case 'grpc':
        // A trailers-only gRPC failure: `status` is its grpc-status.
        ok = on.grpcStatuses.has(status);
        break;
    }
    if (!ok || !this.#replayable()) return false;
    // Retry overflow (maxRetries retries in flight): no retry, the failure stands.
    const current = this.#attempt;
    const breaker = this.#cluster!.breaker;
    if (!breaker.retryAllowed(current !== null && current.retry)) return false;
    breaker.retryScheduled(this);
    if (retry.avoidPreviousHosts && this.#endpoint) (this.#tried ??= new Set()).add(this.#endpoint);
    const cap = Math.min(RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_BASE_MS * (2 ** this.#attempts - 1));
    this.#retryTimer = setTimeout(onRetryTimer, Math.random() * cap, this);
    this.phase = Phase.Upstream;
    return true;
  }

  retryNow(): void {
    this.#retryTimer = null;
    this.#dispatch();
  }

  upstreamHeaders(attempt: Attempt, status: number, raw: Buffer[], resume: () => void): boolean {
    if (status > 599 || status < 100) {
      // RFC 9110 has no such status (undici and node:http2 pass 600-999 on): a protocol error.
      attempt.cancelled = true;
      attempt.abort?.(new Error('invalid response status'));
      this.upstreamError(attempt, Object.assign(new Error(`invalid upstream response status ${status}`), { code: 'HPE_INVALID_STATUS' }));
      return false;
    }
    if (status < 200) return true; // 1xx: undici handles them; nothing to forward
    // Outlier detection sees a trailers-only gRPC response's status as Envoy maps it (14 → 503).
    this.#cluster!.reportStatus(attempt.endpoint, this.grpc ? grpcOutlierStatus(raw, status) : status);
    if (this.#action!.retry) {
      const grpcStatus = this.grpc ? grpcStatusOf(raw) : -1;
      if ((grpcStatus > 0 && this.#maybeRetryStatus(attempt, 'grpc', grpcStatus)) || this.#maybeRetryStatus(attempt, 'status', status)) return false;
    }
    this.phase = Phase.Responding;
    this.#resumeUpstream = resume;
    if (attempt.timer) {
      clearTimeout(attempt.timer);
      attempt.timer = null;
    }
    let length = -1;
    const out: HeaderValue[] = [];
    const grpc = this.grpc;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      // A trailers-only gRPC response carries its status in the headers.
      if (grpc && name.length === 11 && name.toString('latin1').toLowerCase() === 'grpc-status') this.grpcStatus = raw[i + 1]!.toString('latin1');
      if (name.length < 32 && HOP_LENGTHS[name.length] === 1) {
        const lower = name.toString('latin1').toLowerCase();
        if (HOP_BY_HOP_RESPONSE.has(lower)) {
          if (lower === 'content-length') length = Number(raw[i + 1]!.toString('latin1'));
          continue;
        }
      }
      out.push(name, raw[i + 1]!);
    }
    let headers: HeaderValue[] = out;
    if (this.#responseOps || this.#clusterResponseOps || this.#cors || this.#authzOps) {
      // Slow path: header edits need names as strings.
      let strs = headers.map((h) => (typeof h === 'string' ? h : h.toString('latin1')));
      for (let i = 0; i < strs.length; i += 2) strs[i] = strs[i]!.toLowerCase();
      if (this.#clusterResponseOps) strs = applyHeaderOps(strs, this.#clusterResponseOps);
      if (this.#responseOps) strs = applyHeaderOps(strs, this.#responseOps);
      if (this.#cors) strs = applyHeaderOps(strs, this.#cors);
      if (this.#authzOps) strs = applyHeaderOps(strs, this.#authzOps);
      headers = strs;
    }
    headers.push('x-envoy-upstream-service-time', String(Math.round(performance.now() - this.#upstreamStartedAt)), 'server', SERVER);
    if (attempt.setCookie !== null) headers.push('set-cookie', attempt.setCookie);
    const noBody = this.head.method === 'HEAD' || status === 204 || status === 304;
    if (!Number.isFinite(length) || length < 0) length = noBody && status !== 200 ? 0 : -1;
    this.#respStatus = status;
    this.#respHeaders = headers;
    this.#respLength = length;
    this.#respNoBody = noBody;
    return true;
  }

  #maybeRetryStatus(attempt: Attempt, kind: 'status' | 'grpc', status: number): boolean {
    if (!this.#maybeRetry(kind, status)) return false;
    attempt.cancelled = true;
    this.#release(attempt);
    attempt.abort?.(new Error('retrying'));
    return true;
  }

  #flushHead(): void {
    const headers = this.#respHeaders;
    if (headers === null) return;
    this.#respHeaders = null;
    this.sink.start(this.#respStatus, headers, this.#respLength, this.#respNoBody);
  }

  upstreamData(chunk: Buffer): boolean {
    const sink = this.sink;
    if (sink.closed) return false;
    if (this.#respNoBody) return true;
    this.responseBytes += chunk.length;
    let ok = true;
    if (this.#respHeaders !== null) {
      sink.batch(() => {
        this.#flushHead();
        ok = sink.write(chunk);
      });
    } else {
      ok = writeCorked(sink, chunk);
    }
    if (!ok) {
      sink.onDrain(() => this.#resumeUpstream?.());
      return false;
    }
    return true;
  }

  /** The upstream response is complete; `trailers` as raw [name, value, ...] pairs (HTTP/2, chunked HTTP/1.1). */
  upstreamComplete(attempt: Attempt, trailers: ReadonlyArray<Buffer | string> | null = null): void {
    this.#release(attempt);
    const sink = this.sink;
    let out: HeaderValue[] | null = null;
    if (trailers !== null && trailers.length > 0) {
      out = [];
      for (let i = 0; i < trailers.length; i += 2) {
        const name = String(trailers[i]!).toLowerCase();
        if (HOP_BY_HOP_RESPONSE.has(name)) continue;
        const value = trailers[i + 1]!;
        if (this.grpc && name === 'grpc-status') this.grpcStatus = String(value);
        out.push(name, value);
      }
    }
    if (!sink.closed) {
      sink.batch(() => {
        this.#flushHead();
        if (out !== null && out.length > 0 && sink.endWithTrailers !== undefined) sink.endWithTrailers(out);
        else sink.end();
      });
    }
    this.#finish(this.#respStatus);
  }

  upstreamError(attempt: Attempt, err: Error & { code?: string }): void {
    this.#release(attempt);
    if (this.phase === Phase.Done) return;
    const connect = isConnectFailure(err);
    const tlsFailure = connect && isTlsError(err);
    const timedOut = err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT';
    this.#cluster!.reportFailure(attempt.endpoint, connect ? 'connect' : timedOut ? 'timeout' : 'reset');
    // An invalid response (bad framing, smuggling guard, oversized head): Envoy's 502 UPE.
    const protocolError = err.code !== undefined && (err.code.startsWith('HPE_') || err.code === 'UND_ERR_HEADERS_OVERFLOW');
    if (this.phase === Phase.Responding) {
      if (this.#respHeaders !== null && protocolError) {
        // The head is still held back (it goes out with the first body bytes): the client gets
        // Envoy's 502 UPE instead of an empty reply (e.g. an invalid first chunk size).
        this.#respHeaders = null;
        this.localReply(502, 'UPE', 'upstream connect error or disconnect/reset before headers. reset reason: protocol error');
        return;
      }
      // The response has begun: it cannot turn into an error reply any more.
      this.flags = protocolError ? 'UPE' : 'UC';
      this.sink.reset();
      this.#finish(this.#respStatus);
      return;
    }
    if (this.#maybeRetry(connect ? 'connect' : (err as { refusedStream?: boolean }).refusedStream ? 'refused' : 'reset')) return;
    if (connect) {
      const reason =
        err.code === 'UND_ERR_CONNECT_TIMEOUT' ? 'connection timeout' : tlsFailure ? `TLS_error: ${err.code}: ${err.message}` : `delayed connect error: ${err.code ?? err.message}`;
      this.localReply(503, this.#attempts > 1 ? 'UF,URX' : 'UF', `upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: ${reason}`);
    } else if (protocolError) {
      this.localReply(502, this.#attempts > 1 ? 'UPE,URX' : 'UPE', 'upstream connect error or disconnect/reset before headers. reset reason: protocol error');
    } else {
      this.localReply(503, this.#attempts > 1 ? 'UC,URX' : 'UC', 'upstream connect error or disconnect/reset before headers. reset reason: connection termination');
    }
  }

  perTryTimeout(attempt: Attempt): void {
    attempt.timer = null;
    if (this.phase !== Phase.Upstream || attempt.released) return;
    attempt.cancelled = true;
    this.#release(attempt);
    attempt.abort?.(new Error('per-try timeout'));
    this.#cluster!.reportFailure(attempt.endpoint, 'timeout');
    if (this.#maybeRetry('timeout')) return;
    this.localReply(LOCAL_REPLY.upstreamTimeout.status, LOCAL_REPLY.upstreamTimeout.flags, LOCAL_REPLY.upstreamTimeout.body);
  }

  routeTimeout(): void {
    this.#routeTimer = null;
    if (this.phase === Phase.Done) return;
    if (this.phase === Phase.Responding) {
      this.#cancelUpstream();
      this.flags = 'UT';
      this.sink.reset();
      this.#finish(this.#respStatus);
      return;
    }
    this.localReply(LOCAL_REPLY.upstreamTimeout.status, LOCAL_REPLY.upstreamTimeout.flags, LOCAL_REPLY.upstreamTimeout.body);
  }

  /**
   * The request body stopped moving for the stream idle timeout (Envoy's stream_idle_timeout):
   * 408 `stream timeout` before the response started, else a reset; flag SI.
   */
  streamIdleTimeout(): void {
    if (this.phase === Phase.Done) return;
    if (this.phase === Phase.Responding) {
      this.#cancelUpstream();
      this.flags = this.flags ? `${this.flags},SI` : 'SI';
      this.sink.reset();
      this.#finish(this.#respStatus);
      return;
    }
    this.localReply(408, 'SI', 'stream timeout');
  }

  #finish(code: number): void {
    if (this.phase === Phase.Done) return;
    this.phase = Phase.Done;
    this.code = code;
    if (this.#routeTimer) {
      clearTimeout(this.#routeTimer);
      this.#routeTimer = null;
    }
    if (this.#retryTimer) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
    if (this.#faultTimer) {
      clearTimeout(this.#faultTimer);
      this.#faultTimer = null;
    }
    if (this.#bodyPaused && !this.sink.closed) {
      this.#bodyPaused = false;
      this.sink.resumeRequestBody();
    }
    const cluster = this.#cluster;
    const ep = this.#endpoint;
    const durationMs = performance.now() - this.startedAt;
    this.ctx.metrics
      .handle(ep ?? cluster, { service: cluster?.meta, endpoint: ep }, this.grpc ? 'grpc' : 'http', code, this.flags, this.grpcStatus)
      .record({ durationMs, requestBytes: this.requestBytes, responseBytes: this.responseBytes });
    this.ctx.accessLog?.log(this, durationMs);
    this.sink.finished();
  }

  /** For access logs. */
  get upstreamHost(): string {
    return this.#endpoint?.hostPort ?? '';
  }
  get upstreamCluster(): string {
    return this.#cluster?.name ?? '';
  }
}

/** The `location` of a redirect route's answer to a request, as Envoy builds it. */
export function redirectLocation(r: RedirectResponse, head: RequestHead): string {
  const scheme = r.scheme ?? head.scheme;
  let host = r.host ?? head.authority;
  const defaultPort = scheme === 'https' ? 443 : scheme === 'http' ? 80 : -1;
  if (r.port !== null) {
    // 0: derivePort FROM_PROTOCOL_DEFAULT, the scheme's default port (not written).
    host = stripPort(host);
    if (r.port > 0 && r.port !== defaultPort) host = `${host}:${r.port}`;
  } else if (r.portFromRequest) {
    const port = portOf(head.authority) ?? head.localPort;
    host = stripPort(host);
    if (port !== undefined && port !== defaultPort) host = `${host}:${port}`;
  } else if (r.scheme !== null && r.scheme !== head.scheme) {
    host = stripPort(host);
  }
  let path = r.path ?? head.path;
  if (r.path === null || !r.path.includes('?')) path = head.query ? `${path}?${head.query}` : path;
  return `${scheme}://${host}${path}`;
}

/** What the security filters read of a connection (a ResponseSink has it). */
export type ConnectionFacts = Pick<ResponseSink, 'remoteAddress' | 'localAddress' | 'serverName' | 'peerSpiffeId' | 'peerPrincipal' | 'peerNamespace'>;

/** The SecurityRequest of a request head on a connection; `headers` are the ones going upstream. */
export function securityRequest(head: RequestHead, conn: ConnectionFacts, trustedHops: number, headers: string[]): SecurityRequest {
  const sourceIp = conn.remoteAddress;
  const spiffe = conn.peerSpiffeId;
  // The mesh identity as the TLS layer read it; else the SPIFFE id without `spiffe://`.
  const principal = conn.peerPrincipal ?? (spiffe !== undefined && spiffe.startsWith('spiffe://') ? spiffe.slice(9) : '');
  const ns = principal.indexOf('/ns/');
  return {
    method: head.method,
    path: head.path,
    query: head.query,
    host: head.host,
    authority: head.authority,
    headers,
    localPort: head.localPort ?? 0,
    sourceIp,
    remoteIp: trustedClientAddress(headers, trustedHops, sourceIp),
    destinationIp: conn.localAddress ?? '',
    sourcePrincipal: principal,
    sourceNamespace: conn.peerNamespace ?? (ns >= 0 ? principal.slice(ns + 4).split('/')[0]! : ''),
    sni: conn.serverName ?? '',
  };
}

/** A flat [name, value, ...] list as pairs. */
function pairs(list: readonly string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i < list.length; i += 2) out.push([list[i]!, list[i + 1]!]);
  return out;
}

/**
 * `remote.ip` as Envoy derives it with use_remote_address and xff_num_trusted_hops = N: the Nth
 * address from the right of the X-Forwarded-For the client sent (the listener appended the peer
 * to it), else the peer itself (N = 0, too few or invalid entries).
 */
export function trustedClientAddress(headers: readonly string[], hops: number, peer: string): string {
  if (hops <= 0) return peer;
  let xff: string | undefined;
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === 'x-forwarded-for') xff = headers[i + 1];
  if (xff === undefined) return peer;
  const parts = xff.split(',');
  // The last entry is the peer appended by the listener: the Nth from the right of the rest.
  const i = parts.length - 1 - hops;
  if (i < 0) return peer;
  const ip = parts[i]!.trim();
  return isIP(ip) !== 0 ? ip : peer;
}

function writeCorked(sink: ResponseSink, chunk: Buffer): boolean {
  let ok = true;
  sink.batch(() => {
    ok = sink.write(chunk);
  });
  return ok;
}

const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'ETIMEDOUT']);

function isConnectFailure(err: Error & { code?: string; connectFailure?: boolean }): boolean {
  // `connectFailure`: set by the HTTP/2 pool on errors of a session that never connected.
  if (err.connectFailure === true) return true;
  return err.code !== undefined && (CONNECT_ERRORS.has(err.code) || isTlsError(err));
}

const GRPC_DEADLINE_EXCEEDED = 4;

/** Envoy's Grpc::Utility::grpcToHttpStatus, by gRPC code. */
const GRPC_TO_HTTP = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];

/** The HTTP status Envoy's router gives outlier detection for a gRPC response's headers. */
function grpcOutlierStatus(raw: readonly Buffer[], status: number): number {
  const g = grpcStatusOf(raw);
  return g < 0 ? status : (GRPC_TO_HTTP[g] ?? 500);
}

/** The grpc-status of a trailers-only gRPC response's headers, -1 when there is none. */
function grpcStatusOf(raw: readonly Buffer[]): number {
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 11 && name.toString('latin1').toLowerCase() === 'grpc-status') {
      const n = Number(raw[i + 1]!.toString('latin1'));
      return Number.isInteger(n) ? n : -1;
    }
  }
  return -1;
}

/** Envoy's Grpc::Utility::httpToGrpcStatus (grpc's doc/http-grpc-status-mapping.md). */
export function httpToGrpcStatus(status: number): number {
  switch (status) {
    case 400:
      return 13; // INTERNAL
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 12; // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504:
      return 14; // UNAVAILABLE
    default:
      return 2; // UNKNOWN
  }
}

const GRPC_TIMEOUT_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** The `grpc-timeout` header (1-8 digits and a unit) in milliseconds; 0 when absent or malformed. */
export function grpcTimeoutMs(value: string | undefined): number {
  if (value === undefined || value.length < 2 || value.length > 9) return 0;
  const unit = GRPC_TIMEOUT_UNITS[value[value.length - 1]!];
  const digits = value.slice(0, -1);
  if (unit === undefined || !/^\d+$/.test(digits)) return 0;
  const ms = Number(digits) * unit;
  // Sub-millisecond deadlines still expire: at least 1 ms.
  return ms > 0 ? Math.max(1, Math.ceil(ms)) : 0;
}

/** gRPC's percent-encoding of grpc-message: bytes outside printable ASCII, and '%'. */
export function grpcMessageEncode(text: string): string {
  let plain = true;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return text;
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) out += b < 0x20 || b > 0x7e || b === 0x25 ? `%${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
  return out;
}

/** True for `perMillion` parts per million of calls. */
function roll(perMillion: number): boolean {
  return perMillion >= 1_000_000 || Math.random() * 1_000_000 < perMillion;
}


function onFaultDelay(ex: Exchange): void {
  ex.faultDelayDone();
}

/** Discards a mirror's response; aborts it after a bound so slow mirrors cannot pile up. */
class MirrorHandler implements Dispatcher.DispatchHandler {
  #abort: ((err?: Error) => void) | null = null;
  #timer: NodeJS.Timeout;
  constructor(timeoutMs: number) {
    this.#timer = setTimeout(() => this.#abort?.(new Error('mirror timeout')), timeoutMs);
    this.#timer.unref();
  }
  onConnect(abort: (err?: Error) => void): void {
    this.#abort = abort;
  }
  onHeaders(): boolean {
    return true;
  }
  onData(): boolean {
    return true;
  }
  onComplete(): void {
    clearTimeout(this.#timer);
  }
  onError(): void {
    clearTimeout(this.#timer);
  }
}

function onRouteTimeout(ex: Exchange): void {
  ex.routeTimeout();
}

function onRetryTimer(ex: Exchange): void {
  ex.retryNow();
}

function onPerTryTimeout(attempt: Attempt): void {
  attempt.exchange.perTryTimeout(attempt);
}

/** undici's (legacy) dispatch handler for one upstream attempt; stale callbacks of a cancelled attempt are ignored. */
export class Attempt implements Dispatcher.DispatchHandler {
  readonly exchange: Exchange;
  readonly endpoint: UpstreamEndpoint;
  abort: ((err?: Error) => void) | null = null;
  timer: NodeJS.Timeout | null = null;
  cancelled = false;
  released = false;
  /** The cluster's circuit breaker this attempt is counted in. */
  breaker: CircuitBreaker | null = null;
  /** Counted as waiting for a connection until undici writes it to a socket. */
  pending = false;
  /** A retry, counted against maxRetries while in flight. */
  retry = false;
  /** Set-Cookie for the response when consistent hashing generated the cookie. */
  setCookie: string | null = null;

  constructor(exchange: Exchange, endpoint: UpstreamEndpoint) {
    this.exchange = exchange;
    this.endpoint = endpoint;
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.pending) {
      this.pending = false;
      this.breaker?.connected();
    }
    if (this.cancelled) abort(new Error('request cancelled by the gateway'));
    else this.abort = abort;
  }

  onHeaders(statusCode: number, headers: Buffer[], resume: () => void): boolean {
    if (this.cancelled) return false;
    return this.exchange.upstreamHeaders(this, statusCode, headers, resume);
  }

  onData(chunk: Buffer): boolean {
    if (this.cancelled) return false;
    return this.exchange.upstreamData(chunk);
  }

  onComplete(trailers: string[] | null): void {
    if (this.cancelled) return;
    this.cancelled = true;
    // undici gives raw Buffers (HTTP/1.1 chunked trailers), the HTTP/2 pool too; typed string[].
    this.exchange.upstreamComplete(this, trailers as ReadonlyArray<Buffer | string> | null);
  }

  onError(err: Error): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.exchange.upstreamError(this, err);
  }
}
