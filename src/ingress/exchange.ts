// One request through the gateway: the filter chain (filters/), then the router: route action,
// upstream attempts (retry-state.ts, router.ts), streaming in both directions with backpressure,
// Istio's local replies and response flags, and the metrics record at the end. Engine-agnostic: it
// talks to the client through a ResponseSink and to the upstream through an UpstreamPool.
import { Readable } from 'node:stream';
import { pickCluster, type CompiledMirror, type CompiledRoute, type CompiledVirtualHost, type ForwardAction, type HeaderOps, type RedirectResponse } from '../routing/route-table.js';
import { portOf, stripPort } from '../routing/authority.js';
import { getHeader, type RequestHead } from '../routing/request.js';
import type { ClusterRuntime, UpstreamEndpoint } from '../upstream/cluster-manager.js';
import type { RequestTrace, UpstreamSpan } from '../telemetry/tracing/tracer.js';
import type { CircuitBreaker } from '../upstream/circuit-breaker.js';
import { UpstreamError, failureReply, outlierFailure, responseFlag, toUpstreamError, type UpstreamHandler, type UpstreamRequest } from '../upstream/errors.js';
import type { ConnectionFacts } from './connection.js';
import type { DataPlaneContext } from './context.js';
import { HTTP_FILTERS, runFilters, type FilterChain, type FilterHost } from './filters/chain.js';
import { roll, type LocalReply } from './filters/filter.js';
import { RetryState } from './retry-state.js';
import { HOP_BY_HOP_RESPONSE, NO_ROUTE, SERVER, UPSTREAM_TIMEOUT, admitAttempt, BLOCKED, clusterFor, editResponseHeaders, isLocalReply, localReplyHeaders, upstreamPath, upstreamRequestHeaders, type Admission } from './router.js';
import type { HeaderValue, ResponseSink } from './sink.js';

export { securityRequest, trustedClientAddress, type ConnectionFacts } from './connection.js';
export type { DataPlaneContext } from './context.js';

/** Bodies up to this size are kept so the request can be retried; larger ones stream and are not retried. */
const RETRY_BUFFER_LIMIT = 64 * 1024;
/** Mirrored requests carry bodies up to this size; a larger body is not mirrored (the primary is unaffected). */
export const MIRROR_BODY_LIMIT = 1024 * 1024;
/** A mirrored request is abandoned after this long when its route has no timeout. */
const MIRROR_TIMEOUT_MS = 30_000;

// Response headers that describe the upstream connection (router.ts), checked by length first so
// that most names are never turned into strings.
const HOP_LENGTHS = new Uint8Array(32);
for (const n of HOP_BY_HOP_RESPONSE) HOP_LENGTHS[n.length] = 1;

const EMPTY = Buffer.alloc(0);
/** How the circuit breaker counted the attempt being admitted (copied at once; one thread). */
const ADMISSION: Admission = { pending: false, retry: false };

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

export class Exchange implements FilterHost {
  /** The route policies before the router: the config version's chain (one static array by default). */
  readonly filters: FilterChain;
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
  /** The request's trace (started by the tracing filter), null when tracing is off. */
  trace: RequestTrace | null = null;
  requestBytes = 0;
  responseBytes = 0;
  /** A gRPC request (content-type application/grpc or application/grpc+...), as Envoy tells them. */
  readonly grpc: boolean;
  /** gRPC: the status the client got (grpc-status of the response or its trailers), '' when none. */
  grpcStatus = '';
  /** The header list going upstream (filters may replace it; the router adds Host and its edits). */
  upstreamHeaders: string[] = [];

  #action: ForwardAction | null = null;
  #cluster: ClusterRuntime | undefined;
  #retry: RetryState | null = null;
  #upstreamPath = '';
  #attemptCountIndex = -1;
  #responseOps: HeaderOps | null = null;
  #clusterResponseOps: HeaderOps | null = null;
  /** Response header edits of the filters (CORS, ext_authz), in the order they were added. */
  #filterOps: HeaderOps[] | null = null;
  /** The request has a body (it is forwarded only by a forward route). */
  #requestHasBody = false;
  /** Request body: a Buffer when whole (replayable), a stream while streaming, null when none. */
  #body: Buffer | Readable | null = null;
  #bodyChunks: Buffer[] | null = null;
  #bodyPaused = false;
  #bodyComplete = false;
  #attempt: Attempt | null = null;
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
  /** Body chunks received while a filter holds the request. */
  #early: Array<[Buffer, boolean]> | null = null;
  /** A filter's delay (fault injection). */
  #holdTimer: NodeJS.Timeout | null = null;
  #mirrors: CompiledMirror[] | null = null;
  #mirrorChunks: Buffer[] | null = null;
  /** While a filter decides asynchronously: body bytes read before the client is paused (-1: pause at once). */
  #holdLimit = -1;

  constructor(sink: ResponseSink, ctx: DataPlaneContext, head: RequestHead, route: CompiledRoute | undefined) {
    this.sink = sink;
    this.ctx = ctx;
    this.head = head;
    this.route = route;
    this.filters = ctx.filters ?? HTTP_FILTERS;
    this.startedAt = performance.now();
    const ct = getHeader(head, 'content-type');
    this.grpc = ct !== undefined && ct.startsWith('application/grpc') && (ct.length === 16 || ct.charCodeAt(16) === 43 /* + */);
  }

  // ---- Entry points used by the engine ----

  /** The connection, as filters read it. */
  get conn(): ConnectionFacts {
    return this.sink;
  }

  /**
   * Runs the filter chain, then the route action. `hasBody`: the request has a body that will
   * arrive via `requestData` (forwarded when the route is a forward route, else read and dropped).
   * `upstreamHeaders` is the filtered header list to forward, to which the proxy headers are added.
   */
  begin(hasBody: boolean, upstreamHeaders: string[]): void {
    this.#requestHasBody = hasBody;
    this.upstreamHeaders = upstreamHeaders;
    runFilters(this);
  }

  // ---- FilterHost: what the chain asks of the lifecycle ----

  addResponseOps(ops: HeaderOps): void {
    (this.#filterOps ??= []).push(ops);
  }

  respond(reply: LocalReply): void {
    this.localReply(reply.status, reply.flags, reply.body, reply.ops, reply.headers);
  }

  hold(kind: 'delay' | 'wait', timer: NodeJS.Timeout | null): void {
    this.phase = Phase.Delayed;
    // Only a body that may go upstream is kept (the route may still change when it is selected again).
    if (kind === 'delay') {
      this.#holdTimer = timer;
      if (this.#requestHasBody && this.route?.action.kind === 'forward') this.#holdBody();
    } else if (this.#requestHasBody && (this.rerouteIn !== null || this.route?.action.kind === 'forward')) {
      // Small bodies are read meanwhile (so that a client going away is seen), larger ones paused.
      this.#early ??= [];
      this.#holdLimit = RETRY_BUFFER_LIMIT;
    }
  }

  unhold(): boolean {
    this.#holdTimer = null;
    if (this.phase === Phase.Done) return false; // the client went away meanwhile
    this.phase = Phase.Upstream;
    this.#holdLimit = -1;
    return true;
  }

  #holdBody(): void {
    this.#early ??= [];
    if (!this.#bodyPaused) {
      this.#bodyPaused = true;
      this.sink.pauseRequestBody();
    }
  }

  /** The router: the route's action once every filter let the request through. */
  router(): void {
    const route = this.route;
    if (!route) return this.respond(NO_ROUTE);
    const action = route.action;
    // Only a forward route takes the body; a local answer reads and drops it.
    this.#hasBody = this.#requestHasBody && action.kind === 'forward';
    if (action.kind === 'direct') return this.localReply(action.status, '', action.body ?? EMPTY, route.response);
    if (action.kind === 'redirect') return this.#redirect(action);
    this.#forward(route, action);
  }

  #forward(route: CompiledRoute, action: ForwardAction): void {
    this.#action = action;
    const head = this.head;
    const picked = pickCluster(action, Math.random());
    const cluster = clusterFor(this.ctx, picked, head);
    if (isLocalReply(cluster)) {
      // A blocked host (BlackHoleCluster) is still counted and logged under that cluster.
      if (cluster === BLOCKED) this.#cluster = this.ctx.clusters.get(picked!.name);
      return this.respond(cluster);
    }
    this.#cluster = cluster;
    this.#retry = new RetryState(action.retry, cluster.breaker);
    this.#responseOps = route.response;
    this.#clusterResponseOps = picked.response;

    const headers = upstreamRequestHeaders(this.upstreamHeaders, head, action, route, picked);
    headers.push('x-envoy-attempt-count', '1');
    this.#attemptCountIndex = headers.length - 1;
    this.upstreamHeaders = headers;
    this.#upstreamPath = upstreamPath(action, head);
    if (action.mirrors !== null) this.#chooseMirrors(action.mirrors);

    let timeoutMs = action.timeoutMs;
    if (this.grpc) {
      // Istio sets Envoy's max_grpc_timeout to the route timeout (0: no limit): a gRPC call's
      // grpc-timeout applies, capped by the route timeout.
      const g = grpcTimeoutMs(getHeader(head, 'grpc-timeout'));
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
      const headers = this.upstreamHeaders.slice();
      // A shadow request is a span of its own (Envoy's async client: `async <cluster> egress`).
      const span = this.trace !== null ? this.trace.upstream(headers, m.cluster, true) : null;
      const opts: UpstreamRequest = { path: this.#upstreamPath, method: this.head.method, headers, body };
      try {
        ep.pool.dispatch(opts, new MirrorHandler(timeoutMs, span !== null ? { trace: this.trace!, span, host: ep.hostPort } : null));
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
    const headers = localReplyHeaders(extra, ops, buf.length, this.#filterOps);
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
    headers = editResponseHeaders(headers, null, ops, this.#filterOps);
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
    const retry = this.#retry!;
    const ep = admitAttempt(cluster, retry, this, this.phase === Phase.Done, this.head, this.sink.remoteAddress, this.upstreamHeaders, ADMISSION);
    if (ep === null) return;
    if (isLocalReply(ep)) return this.respond(ep);
    this.#endpoint = ep;
    this.upstreamHeaders[this.#attemptCountIndex] = String(retry.attempts);
    const attempt = new Attempt(this, ep);
    attempt.breaker = cluster.breaker;
    attempt.pending = ADMISSION.pending;
    attempt.retry = ADMISSION.retry;
    attempt.setCookie = cluster.setCookie;
    this.#attempt = attempt;
    // Envoy's upstream span (spawn_upstream_span): one per attempt, its id the upstream's parent.
    if (this.trace !== null) attempt.span = this.trace.upstream(this.upstreamHeaders, cluster.name);
    ep.active++;
    const perTry = retry.perTryTimeoutMs;
    if (perTry > 0) attempt.timer = setTimeout(onPerTryTimeout, perTry, attempt);
    this.#upstreamStartedAt = performance.now();
    const req: UpstreamRequest = {
      path: this.#upstreamPath,
      method: this.head.method,
      headers: this.upstreamHeaders,
      body: this.#bodyForAttempt(),
      // undefined leaves the pool's own choice (it closes after HEAD, for instance) untouched.
      reset: cluster.closeAfterEachRequest ? true : undefined,
    };
    try {
      ep.pool.dispatch(req, attempt);
    } catch (err) {
      attempt.onError(toUpstreamError(err));
    }
  }

  #bodyForAttempt(): Buffer | Readable | null {
    const body = this.#body;
    if (body === null || Buffer.isBuffer(body)) return body;
    if (this.#retry!.attempts === 1) return body;
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
    if (attempt.span !== null) this.trace!.endUpstream(attempt.span, attempt.status, attempt.endpoint.hostPort, attempt.flag, this.#cluster!.upstreamProtocol);
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

  /** Schedules a retry of the failed attempt when `retriable` (the policy retries this failure) and the rest allow it. */
  #maybeRetry(retriable: boolean): boolean {
    const retry = this.#retry;
    if (retry === null || retry.policy === null) return false;
    // The failed attempt, when still current, is itself a counted retry that Envoy releases first.
    const held = this.#attempt !== null && this.#attempt.retry;
    const ms = retry.schedule(retriable, this.#replayable(), held, this, this.#endpoint);
    if (ms < 0) return false;
    this.#retryTimer = setTimeout(onRetryTimer, ms, this);
    this.phase = Phase.Upstream;
    return true;
  }

  retryNow(): void {
    this.#retryTimer = null;
    this.#dispatch();
  }

  upstreamHead(attempt: Attempt, status: number, raw: Buffer[], resume: () => void): boolean {
    if (status > 599 || status < 100) {
      // RFC 9110 has no such status (undici and node:http2 pass 600-999 on): a protocol error.
      attempt.cancelled = true;
      attempt.abort?.(new Error('invalid response status'));
      this.upstreamError(attempt, new UpstreamError('protocol', `invalid upstream response status ${status}`, 'HPE_INVALID_STATUS'));
      return false;
    }
    if (status < 200) return true; // 1xx: undici handles them; nothing to forward
    attempt.status = status;
    // Outlier detection sees a trailers-only gRPC response's status as Envoy maps it (14 → 503).
    this.#cluster!.reportStatus(attempt.endpoint, this.grpc ? grpcOutlierStatus(raw, status) : status);
    const retry = this.#retry!;
    if (retry.policy !== null && this.#maybeRetryStatus(attempt, retry.retriesStatus(status, this.grpc ? grpcStatusOf(raw) : -1))) return false;
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
    if (this.#responseOps || this.#clusterResponseOps || this.#filterOps) {
      // Slow path: header edits need names as strings.
      const strs = headers.map((h) => (typeof h === 'string' ? h : h.toString('latin1')));
      for (let i = 0; i < strs.length; i += 2) strs[i] = strs[i]!.toLowerCase();
      headers = editResponseHeaders(strs, this.#clusterResponseOps, this.#responseOps, this.#filterOps);
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

  #maybeRetryStatus(attempt: Attempt, retriable: boolean): boolean {
    if (!this.#maybeRetry(retriable)) return false;
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

  upstreamError(attempt: Attempt, err: UpstreamError): void {
    attempt.flag = responseFlag(err.kind);
    this.#release(attempt);
    if (this.phase === Phase.Done) return;
    const kind = err.kind;
    this.#cluster!.reportFailure(attempt.endpoint, outlierFailure(kind));
    if (this.phase === Phase.Responding) {
      if (this.#respHeaders !== null && kind === 'protocol') {
        // The head is still held back (it goes out with the first body bytes): the client gets
        // Envoy's 502 UPE instead of an empty reply (e.g. an invalid first chunk size).
        this.#respHeaders = null;
        const r = failureReply(err);
        this.localReply(r.status, 'UPE', r.body);
        return;
      }
      // The response has begun: it cannot turn into an error reply any more.
      this.flags = kind === 'protocol' ? 'UPE' : 'UC';
      this.sink.reset();
      this.#finish(this.#respStatus);
      return;
    }
    if (this.#maybeRetry(this.#retry!.retriesError(kind))) return;
    const r = failureReply(err);
    const flag = responseFlag(kind);
    this.localReply(r.status, this.#retry!.attempts > 1 ? `${flag},URX` : flag, r.body);
  }

  perTryTimeout(attempt: Attempt): void {
    attempt.timer = null;
    if (this.phase !== Phase.Upstream || attempt.released) return;
    attempt.cancelled = true;
    attempt.flag = 'UT';
    this.#release(attempt);
    attempt.abort?.(new Error('per-try timeout'));
    this.#cluster!.reportFailure(attempt.endpoint, 'timeout');
    if (this.#maybeRetry(this.#retry!.retriesPerTryTimeout())) return;
    this.respond(UPSTREAM_TIMEOUT);
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
    this.respond(UPSTREAM_TIMEOUT);
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
    if (this.#holdTimer) {
      clearTimeout(this.#holdTimer);
      this.#holdTimer = null;
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
    this.trace?.finish({
      status: code,
      flags: this.flags,
      cluster: cluster?.name ?? '',
      operation: this.route?.operation ?? '',
      requestBytes: this.requestBytes,
      responseBytes: this.responseBytes,
      protocol: this.sink.protocol ?? 'HTTP/1.1',
      grpcStatus: this.grpcStatus,
    });
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

function writeCorked(sink: ResponseSink, chunk: Buffer): boolean {
  let ok = true;
  sink.batch(() => {
    ok = sink.write(chunk);
  });
  return ok;
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

/** Discards a mirror's response; aborts it after a bound so slow mirrors cannot pile up. */
class MirrorHandler implements UpstreamHandler {
  #abort: ((err?: Error) => void) | null = null;
  #timer: NodeJS.Timeout;
  /** The shadow request's span, ended with its outcome. */
  #traced: { trace: RequestTrace; span: UpstreamSpan; host: string } | null;
  #status = 0;
  constructor(timeoutMs: number, traced: { trace: RequestTrace; span: UpstreamSpan; host: string } | null) {
    this.#timer = setTimeout(() => this.#abort?.(new Error('mirror timeout')), timeoutMs);
    this.#timer.unref();
    this.#traced = traced;
  }
  onStart(abort: (err?: Error) => void): void {
    this.#abort = abort;
  }
  onHead(status: number): boolean {
    if (status >= 200) this.#status = status;
    return true;
  }
  onData(): boolean {
    return true;
  }
  onEnd(): void {
    clearTimeout(this.#timer);
    this.#traceEnd(this.#status, '');
  }
  onError(err: UpstreamError): void {
    clearTimeout(this.#timer);
    this.#traceEnd(0, responseFlag(err.kind));
  }
  #traceEnd(status: number, flag: string): void {
    const t = this.#traced;
    if (t === null) return;
    this.#traced = null;
    t.trace.endUpstream(t.span, status, t.host, flag, 'HTTP/1.1');
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

/** The upstream handler of one attempt; stale callbacks of a cancelled attempt are ignored. */
export class Attempt implements UpstreamHandler {
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
  /** Its trace span (null when tracing is off), the response status (0: none yet) and failure flag. */
  span: UpstreamSpan | null = null;
  status = 0;
  flag = '';

  constructor(exchange: Exchange, endpoint: UpstreamEndpoint) {
    this.exchange = exchange;
    this.endpoint = endpoint;
  }

  onStart(abort: (err?: Error) => void): void {
    if (this.pending) {
      this.pending = false;
      this.breaker?.connected();
    }
    if (this.cancelled) abort(new Error('request cancelled by the gateway'));
    else this.abort = abort;
  }

  onHead(statusCode: number, headers: Buffer[], resume: () => void): boolean {
    if (this.cancelled) return false;
    return this.exchange.upstreamHead(this, statusCode, headers, resume);
  }

  onData(chunk: Buffer): boolean {
    if (this.cancelled) return false;
    return this.exchange.upstreamData(chunk);
  }

  onEnd(trailers: ReadonlyArray<Buffer | string> | null): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.exchange.upstreamComplete(this, trailers);
  }

  onError(err: UpstreamError): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.exchange.upstreamError(this, err);
  }
}
