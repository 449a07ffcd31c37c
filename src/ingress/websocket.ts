// WebSocket proxying on the uWS listeners (Istio allows upgrades on every HTTP route). uWS
// terminates the client's WebSocket, a `ws` client opens one to the upstream endpoint, and messages
// are relayed frame for frame (text/binary kept; pings and extensions are per hop). Besides
// uws-listener.ts this is the only file touching uWS objects, under the same rules: `onAborted`
// first, the request read synchronously, nothing touched after answer, upgrade, abort or close.
//
// Only upgrades this module can forward are handled here. Anything else (no route, redirect,
// direct response, malformed request) yields to the listener's HTTP handler, which answers
// exactly as it would a plain request (same reply, metrics and access log).
//
// Each connection holds its own upstream socket: a config reload only changes how new upgrades
// are routed (Istio pain point: Envoy drains WebSockets on unrelated pushes). Either side closing
// or failing closes the other, and a dead upstream is found by pings (no FD or memory leaks).
import type { IncomingMessage } from 'node:http';
import uWS from 'uWebSockets.js';
import WebSocket from 'ws';
import { normalizePath } from '../routing/path.js';
import { getHeader, type RequestHead } from '../routing/request.js';
import { applyHeaderOps, firstMatch, pickCluster, type CompiledCors, type CompiledRoute, type CompiledVirtualHost, type ForwardAction, type HeaderOps } from '../routing/route-table.js';
import type { AccessLog, LoggedRequest } from '../telemetry/access-log.js';
import type { IstioMetrics } from '../telemetry/metrics.js';
import { OVERFLOW, OVERFLOW_REPLY, PENDING } from '../upstream/circuit-breaker.js';
import type { ClusterRuntime, UpstreamEndpoint } from '../upstream/cluster-manager.js';
import { redirectLocation, securityRequest, type DataPlaneContext } from './exchange.js';
import type { Verdict } from '../security/pipeline.js';
import { statusLine } from './status.js';
import { writableHeaderValue } from './sink.js';
// A cycle (uws-listener.ts registers this module), safe because these are only used at run time.
import { hostOnly, validAuthority } from '../routing/authority.js';
import { MAX_REQUEST_HEADERS_BYTES, MAX_URL_BYTES, copyArrayBuffer, readForwardHeaders, remoteAddress } from './uws-listener.js';

/** Largest message accepted from either side (uWS `maxPayloadLength`, `ws` `maxPayload`). */
export const WS_MAX_PAYLOAD = 16 * 1024 * 1024;
/** Envoy's stream idle timeout; uWS pings a silent client before giving up on it. */
export const WS_IDLE_TIMEOUT_S = 300;
/** Client send buffer above which reading from the upstream pauses, and below which it resumes. */
const DOWNSTREAM_HIGH_WATER = 1024 * 1024;
const DOWNSTREAM_LOW_WATER = 256 * 1024;
/** uWS drops sends beyond this; never reached while the upstream is paused at the high water mark. */
const DOWNSTREAM_HARD_LIMIT = 64 * 1024 * 1024;
/** uWS cannot stop reading a WebSocket: a client this far ahead of its upstream is disconnected. */
const UPSTREAM_BUFFER_LIMIT = 64 * 1024 * 1024;
/** How long a forwarded close may take before the upstream socket is destroyed. */
const CLOSE_GRACE_MS = 5_000;
/** Upstreams are pinged this often; one that has not answered by the next round is dropped. */
const UPSTREAM_PING_INTERVAL_MS = 60_000;
/** Largest upstream answer relayed when it refuses the upgrade. */
const REFUSAL_BODY_LIMIT = 1024 * 1024;
const RETRY_BACKOFF_BASE_MS = 25;
const RETRY_BACKOFF_MAX_MS = 250;

const SERVER = 'istio-envoy';
const OPEN = WebSocket.OPEN;

// Request headers that belong to the client connection (as on the HTTP path). The handshake's own
// headers stay in the head (routes may match them) but are not forwarded: the gateway negotiates
// each hop itself (`ws` makes its own key; the offered subprotocols are passed to it).
const HANDSHAKE_HEADERS = new Set(['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-websocket-accept', 'content-length']);
// Upstream response headers never relayed to the client (uWS writes its own handshake headers).
const HOP_BY_HOP_RESPONSE = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date', 'server', 'upgrade', 'proxy-connection', 'trailer', 'te']);
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'ETIMEDOUT']);

/** What the proxy needs from its listener; its config version (`ctx`) is read once per upgrade. */
export interface WebSocketHost {
  readonly ctx: DataPlaneContext;
  readonly scheme: 'http' | 'https';
  /** The listener port. */
  readonly port?: number;
  readonly localAddress?: string;
  onError(err: unknown): void;
}

interface UserData {
  bridge: Bridge;
}

type DownstreamSocket = uWS.WebSocket<UserData>;

/** The WebSocket side of one listener: uWS behaviour, the open connections, and closing them. */
export class WebSocketProxy {
  readonly host: WebSocketHost;
  /** Connections whose client side is open. */
  readonly open = new Set<Bridge>();
  #pinger: NodeJS.Timeout | null = null;
  #onEmpty: (() => void) | null = null;
  #released = false;

  constructor(host: WebSocketHost) {
    this.host = host;
    CorkLender.acquire();
  }

  behavior(): uWS.WebSocketBehavior<UserData> {
    return {
      compression: uWS.DISABLED,
      maxPayloadLength: WS_MAX_PAYLOAD,
      idleTimeout: WS_IDLE_TIMEOUT_S,
      sendPingsAutomatically: true,
      maxBackpressure: DOWNSTREAM_HARD_LIMIT,
      closeOnBackpressureLimit: 0,
      upgrade: (res, req, context) => {
        const bridge = new Bridge(this, res); // registers onAborted first
        try {
          if (!bridge.accept(req, context)) req.setYield(true);
        } catch (err) {
          bridge.fail(err);
        }
      },
      open: (ws) => this.#guard(() => ws.getUserData().bridge.downstreamOpen(ws)),
      message: (ws, message, isBinary) => this.#guard(() => ws.getUserData().bridge.downstreamMessage(message, isBinary)),
      drain: (ws) => this.#guard(() => ws.getUserData().bridge.downstreamDrain(ws)),
      close: (ws, code, message) => this.#guard(() => ws.getUserData().bridge.downstreamClosed(code, message)),
    };
  }

  #guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.host.onError(err);
    }
  }

  /** @internal */
  opened(b: Bridge): void {
    this.open.add(b);
    if (this.#pinger === null) {
      this.#pinger = setInterval(() => {
        for (const x of this.open) x.checkUpstream();
      }, UPSTREAM_PING_INTERVAL_MS);
      this.#pinger.unref();
    }
  }

  /** @internal */
  closed(b: Bridge): void {
    if (!this.open.delete(b) || this.open.size > 0) return;
    if (this.#pinger) {
      clearInterval(this.#pinger);
      this.#pinger = null;
    }
    this.#onEmpty?.();
  }

  /**
   * Listener going away: each open WebSocket is closed with 1001 at a random moment in the first
   * half of `ms` (no reconnect storm); resolves when all are closed or `ms` has passed.
   */
  drain(ms: number): Promise<void> {
    if (this.open.size === 0 || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timers: NodeJS.Timeout[] = [];
      const done = (): void => {
        this.#onEmpty = null;
        for (const t of timers) clearTimeout(t);
        resolve();
      };
      this.#onEmpty = done;
      for (const b of this.open) timers.push(setTimeout(() => b.goAway(), Math.random() * (ms / 2)));
      timers.push(setTimeout(done, ms));
    });
  }

  /** Closes every remaining WebSocket with 1001 (going away), before the listener's sockets are. */
  closeAll(): void {
    for (const b of [...this.open]) b.goAway();
    if (!this.#released) {
      this.#released = true;
      CorkLender.release();
    }
  }
}

/** One proxied WebSocket: the client's handshake, then both sockets until both are closed. */
class Bridge implements LoggedRequest {
  readonly #proxy: WebSocketProxy;
  /**
   * The config version of the handshake (route table, clusters, policies), dropped once the socket
   * is upgraded so that a long-lived WebSocket does not keep an old version's tables alive.
   */
  #ctx: DataPlaneContext | null;
  /** Where the session is recorded when it ends (of the handshake's version). */
  readonly #metrics: IstioMetrics;
  readonly #accessLog: AccessLog | null;
  head!: RequestHead;
  readonly startedAt: number;
  route: CompiledRoute | undefined;
  /** The virtual host whose route is selected again after JWT authentication (see Exchange.rerouteIn). */
  #rerouteIn: CompiledVirtualHost | null = null;
  /** For the access log, and for the circuit breaker's retry accounting (`closed`: handshake over). */
  readonly sink = { remoteAddress: '', closed: false };
  code = 0;
  flags = '';
  requestBytes = 0;
  responseBytes = 0;

  /** The client's handshake response: valid until answered, upgraded or aborted, then null. */
  #res: uWS.HttpResponse | null;
  #key = '';
  #extensions = '';
  #context: uWS.us_socket_context_t | null = null;
  #protocols: string[] = [];

  #action: ForwardAction | null = null;
  #cluster: ClusterRuntime | undefined;
  #endpoint: UpstreamEndpoint | undefined;
  #responseOps: HeaderOps | null = null;
  #clusterResponseOps: HeaderOps | null = null;
  #corsOps: HeaderOps | null = null;
  /** Forwarded headers as a flat list (for hash policies) and as `ws` takes them. */
  #upstreamFlat: string[] = [];
  #upstreamHeaders: Record<string, string | string[]> = {};
  #setCookie: string | null = null;
  #upstreamUrl = '';
  #attempts = 0;
  #tried: Set<UpstreamEndpoint> | null = null;
  /** A fault delay or a retry backoff. */
  #timer: NodeJS.Timeout | null = null;
  #upstreamStartedAt = 0;
  #upgradeHeaders: string[] | null = null;

  /** The current upstream socket, until its `close` event. */
  #up: WebSocket | null = null;
  /** The client's WebSocket, from uWS `open` until its `close`. */
  #down: DownstreamSocket | null = null;
  #attempt: AttemptState | null = null;
  #upgraded = false;
  #downOpened = false;
  #upPaused = false;
  #upAlive = true;
  /** Close code for the client when the upstream fails (from `ws`'s error), else 1011. */
  #upFailure: { code: number; reason: string } | null = null;
  #terminateUpstream = false;
  #graceTimer: NodeJS.Timeout | null = null;
  #finished = false;

  constructor(proxy: WebSocketProxy, res: uWS.HttpResponse) {
    // First, always: uWS aborts the process if a handler returns without this or a response.
    res.onAborted(() => this.#aborted());
    this.#res = res;
    this.#proxy = proxy;
    const ctx = (this.#ctx = proxy.host.ctx);
    this.#metrics = ctx.metrics;
    this.#accessLog = ctx.accessLog;
    this.startedAt = performance.now();
  }

  /**
   * Reads the handshake (synchronously) and starts connecting upstream. False when this request is
   * not a WebSocket to forward: the caller yields it to the HTTP handler, which answers it.
   */
  accept(req: uWS.HttpRequest, context: uWS.us_socket_context_t): boolean {
    const res = this.#res!;
    const host = this.#proxy.host;
    const method = req.getCaseSensitiveMethod();
    const path = normalizePath(req.getUrl());
    const query = req.getQuery() ?? '';
    this.#key = req.getHeader('sec-websocket-key');
    this.#extensions = req.getHeader('sec-websocket-extensions');
    const offered = req.getHeader('sec-websocket-protocol');
    const ip = remoteAddress(res);
    this.sink.remoteAddress = ip;

    const { headers, host: authority, size, framing } = readForwardHeaders(req, ip, host.scheme);
    if (framing !== '' || size > MAX_REQUEST_HEADERS_BYTES || path.length + query.length > MAX_URL_BYTES || !authority || !validAuthority(authority)) return this.#yield();
    this.head = { method, path, query, host: hostOnly(authority), authority, scheme: host.scheme, headers, ...(host.port !== undefined ? { localPort: host.port } : {}) };

    const ctx = this.#ctx!;
    const vhost = ctx.table?.virtualHost(this.head);
    const route = vhost && firstMatch(vhost, this.head);
    const sec = ctx.security;
    // A host whose route may change once JWT authentication has run (claim matches, headers it
    // writes) keeps the handshake whatever the first match says, and answers it here when the
    // route it ends up with does not forward. Any other non-forward route yields to the HTTP handler.
    const reroute = vhost !== undefined && vhost.rerouteAfterAuthn && sec != null && sec.active && sec.authenticates;
    if (!reroute && (!route || route.action.kind !== 'forward')) return this.#yield();
    this.route = route;
    if (reroute) this.#rerouteIn = vhost;
    this.#context = context;
    this.#protocols = offered ? offered.split(',').map((s) => s.trim()).filter((s) => s.length > 0) : [];
    // As for HTTP: JWT and authorization first, then CORS, fault injection and the router.
    if (sec && sec.active) {
      const conn = { remoteAddress: ip, localAddress: host.localAddress ?? '' };
      const verdict = sec.check(securityRequest(this.head, conn, sec.numTrustedProxies, headers));
      if (verdict instanceof Promise) {
        verdict.then(
          (v) => this.#verdictReady(v),
          () => this.#verdictReady(null),
        );
        return true;
      }
      this.#verdictReady(verdict);
      return true;
    }
    this.#afterSecurity();
    return true;
  }

  #verdictReady(v: Verdict | null): void {
    if (this.#res === null) return; // the client went away meanwhile
    if (v === null) return this.#reply(403, '', 'RBAC: access denied');
    if (!v.allow) return this.#reply(v.status, v.flags, v.body, ['server', SERVER, ...(v.body.length > 0 && !v.headers.includes('content-type') ? ['content-type', 'text/plain'] : []), ...v.headers]);
    if (v.reroute !== null && this.#rerouteIn !== null) {
      const head = v.reroute.headers === this.head.headers ? this.head : { ...this.head, headers: v.reroute.headers };
      this.route = firstMatch(this.#rerouteIn, head, v.reroute.metadata ?? undefined);
    }
    if (v.headers !== null) this.head.headers = v.headers;
    this.#afterSecurity();
  }

  #afterSecurity(): void {
    const route = this.route;
    if (!route) return this.#reply(404, 'NR', '');
    // As for HTTP: CORS, then fault injection, then the router. Mirrors do not copy upgrades.
    if (route.cors !== null) this.#corsOps = corsResponseOps(route.cors, this.head);
    const fault = route.fault;
    if (fault !== null && fault.delayPerMillion > 0 && roll(fault.delayPerMillion)) {
      this.flags = 'DI';
      this.#timer = setTimeout(() => this.#route(), fault.delayMs);
      return;
    }
    this.#route();
  }

  #route(): void {
    this.#timer = null;
    const route = this.route!;
    if (this.#res === null) return;
    const fault = route.fault;
    if (fault !== null && fault.abortPerMillion > 0 && roll(fault.abortPerMillion)) {
      if (fault.abortGrpcStatus < 0) return this.#reply(fault.abortStatus, 'FI', 'fault filter abort');
      return this.#reply(200, 'FI', '', ['server', SERVER, 'content-type', 'application/grpc', 'grpc-status', String(fault.abortGrpcStatus), 'grpc-message', 'fault filter abort']);
    }
    const action = route.action;
    if (action.kind === 'forward') return this.#forward(route, action);
    // Only when the route was selected again after JWT authentication: answered as the HTTP path would.
    const body = action.kind === 'direct' ? (action.body ?? Buffer.alloc(0)) : Buffer.alloc(0);
    let headers = ['server', SERVER];
    if (body.length > 0) headers.push('content-type', 'text/plain');
    if (action.kind === 'redirect') headers.push('location', redirectLocation(action, this.head));
    if (route.response) headers = applyHeaderOps(headers, route.response);
    if (this.#corsOps) headers = applyHeaderOps(headers, this.#corsOps);
    this.#reply(action.status, '', body, headers);
  }

  #yield(): false {
    // The HTTP handler takes the response over (and its own onAborted); this object is dropped.
    this.#takeRes();
    this.#finished = true;
    return false;
  }

  /** The handshake response, for its last use (answer or upgrade); null once it was used or aborted. */
  #takeRes(): uWS.HttpResponse | null {
    const res = this.#res;
    this.#res = null;
    this.sink.closed = true;
    return res;
  }

  #forward(route: CompiledRoute, action: ForwardAction): void {
    this.#action = action;
    const picked = pickCluster(action, Math.random());
    const cluster = picked && this.#ctx !== null ? this.#ctx.clusters.get(picked.name) : undefined;
    if (!picked || !cluster) return this.#reply(503, 'NC', '');
    this.#cluster = cluster;
    this.#responseOps = route.response;
    this.#clusterResponseOps = picked.response;

    let headers = this.head.headers.slice();
    headers.push('host', action.hostRewrite ?? this.head.authority);
    if (route.request) headers = applyHeaderOps(headers, route.request);
    if (picked.request) headers = applyHeaderOps(headers, picked.request);
    const out: Record<string, string | string[]> = {};
    for (let i = 0; i < headers.length; i += 2) {
      const k = headers[i]!;
      if (HANDSHAKE_HEADERS.has(k)) continue;
      const v = headers[i + 1]!;
      const prev = out[k];
      out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
    this.#upstreamFlat = headers;
    this.#upstreamHeaders = out;
    const path = action.rewritePath ? action.rewritePath(this.head.path) : this.head.path;
    this.#upstreamUrl = this.head.query ? `${path}?${this.head.query}` : path;
    this.#connect();
  }

  // ---- Upstream handshake ----

  #connect(): void {
    this.#timer = null;
    const cluster = this.#cluster!;
    const breaker = cluster.breaker;
    // A retry scheduled by #maybeRetry counts against maxRetries already: this attempt takes it over.
    const retried = breaker.takeRetry(this);
    if (this.#res === null) {
      if (retried) breaker.dropRetry();
      return;
    }
    const ep = cluster.pick(this.#tried ?? undefined, this.head, this.sink.remoteAddress, this.#upstreamFlat);
    // Circuit breakers as for HTTP. Each WebSocket has its own upstream connection (no pool to wait
    // for), so a "pending" upgrade only counts as pending until its handshake is over.
    const admission = ep ? breaker.admit(ep.active) : OVERFLOW;
    if (!ep || admission === OVERFLOW) {
      if (retried) breaker.dropRetry();
      if (!ep) return this.#reply(503, 'UH', 'no healthy upstream');
      return this.#reply(OVERFLOW_REPLY.status, OVERFLOW_REPLY.flags, OVERFLOW_REPLY.body, ['server', SERVER, 'content-type', 'text/plain', ...OVERFLOW_REPLY.headers]);
    }
    const att: AttemptState = { pending: admission === PENDING, retry: retried };
    this.#setCookie = cluster.setCookie;
    this.#attempts++;
    this.#endpoint = ep;
    this.#upstreamHeaders['x-envoy-attempt-count'] = String(this.#attempts);
    this.#upstreamStartedAt = performance.now();
    let up: WebSocket;
    try {
      up = new WebSocket(`ws://${ep.hostPort}${this.#upstreamUrl}`, this.#protocols, {
        headers: this.#upstreamHeaders,
        perMessageDeflate: false,
        handshakeTimeout: Math.max(1, Math.round(cluster.connectTimeoutMs)),
        maxPayload: WS_MAX_PAYLOAD,
        followRedirects: false,
      });
    } catch {
      // An invalid subprotocol list or header value: nothing an upstream could accept.
      breaker.release(att.pending, att.retry);
      return this.#reply(400, 'DPE', 'Bad Request');
    }
    ep.active++;
    this.#up = up;
    this.#attempt = att;
    up.on('upgrade', (r: IncomingMessage) => {
      if (up === this.#up) this.#upgradeHeaders = r.rawHeaders;
    });
    up.on('open', () => this.#upstreamOpen(up));
    up.on('unexpected-response', (_req, r: IncomingMessage) => this.#upstreamRefused(up, r));
    up.on('message', (data, isBinary) => this.#upstreamMessage(up, data as Buffer, isBinary));
    up.on('pong', () => {
      this.#upAlive = true;
    });
    up.on('error', (err: Error & { code?: string }) => this.#upstreamError(up, err));
    up.on('close', (code: number, reason: Buffer) => {
      ep.active--;
      breaker.release(att.pending, att.retry);
      att.pending = false;
      this.#upstreamClosed(up, code, reason);
    });
  }

  /** The upstream handshake is over (either way): a pending admission got its connection. */
  #handshakeOver(): void {
    const att = this.#attempt;
    if (att !== null && att.pending) {
      att.pending = false;
      this.#cluster!.breaker.connected();
    }
  }

  #upstreamOpen(up: WebSocket): void {
    if (up !== this.#up || this.#res === null) {
      up.terminate();
      return;
    }
    this.#handshakeOver();
    this.#cluster!.reportStatus(this.#endpoint!, 101);
    const res = this.#takeRes()!;
    this.#upgraded = true;
    this.#ctx = null;
    this.code = 101;
    const headers = this.#responseHeaders(this.#upgradeHeaders ?? [], true);
    this.#upgradeHeaders = null;
    const userData: UserData = { bridge: this };
    const context = this.#context!;
    this.#context = null;
    const head = (): void => {
      res.writeStatus('101 Switching Protocols');
      for (let i = 0; i < headers.length; i += 2) if (writableHeaderValue(headers[i + 1]!)) res.writeHeader(headers[i]!, headers[i + 1]!);
    };
    const upgrade = (): void => res.upgrade(userData, this.#key, up.protocol, this.#extensions, context);
    // Not a plain res.cork(): see CorkLender. Uncorked is safe too, but uWS.js warns on stderr.
    const lender = CorkLender.socket() ?? anyOpenDownstream();
    if (lender !== null) {
      lender.cork(() =>
        res.cork(() => {
          head();
          upgrade();
        }),
      );
    } else {
      res.cork(head);
      upgrade();
    }
    if (!this.#downOpened) {
      // uWS runs `open` inside upgrade(); without it the client socket is already gone.
      this.flags = 'DC';
      this.#up = null;
      up.terminate();
      this.#finish();
    }
  }

  /** The upstream answered the upgrade with something other than 101: relayed as it is. */
  #upstreamRefused(up: WebSocket, r: IncomingMessage): void {
    if (up !== this.#up) return;
    const chunks: Buffer[] = [];
    let length = 0;
    r.on('data', (c: Buffer) => {
      length += c.length;
      if (length <= REFUSAL_BODY_LIMIT) chunks.push(c);
      else r.destroy();
    });
    r.on('error', () => undefined);
    r.on('close', () => {
      if (up !== this.#up) return;
      this.#handshakeOver();
      this.#up = null;
      up.terminate();
      if (this.#res === null) return;
      this.#cluster!.reportStatus(this.#endpoint!, r.statusCode ?? 502);
      if (length > REFUSAL_BODY_LIMIT || !r.complete) return this.#reply(503, 'UC', resetBody());
      this.#reply(r.statusCode ?? 502, '', Buffer.concat(chunks), this.#responseHeaders(r.rawHeaders, false));
    });
  }

  #upstreamError(up: WebSocket, err: Error & { code?: string }): void {
    if (up !== this.#up) return;
    if (!this.#upgraded) {
      // Failed before the client was upgraded: a local reply as on the HTTP path.
      this.#handshakeOver();
      this.#up = null;
      if (this.#res === null) return;
      const timeout = err.message.includes('timed out');
      const connect = timeout || (err.code !== undefined && CONNECT_ERRORS.has(err.code));
      this.#cluster!.reportFailure(this.#endpoint!, timeout ? 'timeout' : connect ? 'connect' : 'reset');
      if (connect && this.#maybeRetry()) return;
      const retried = this.#attempts > 1 ? ',URX' : '';
      if (!connect) return this.#reply(503, `UC${retried}`, resetBody());
      const reason = timeout ? 'connection timeout' : `delayed connect error: ${err.code ?? err.message}`;
      return this.#reply(503, `UF${retried}`, `upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: ${reason}`);
    }
    // After the upgrade `close` follows; `ws` has already sent the upstream its close code.
    this.#upFailure = { code: wsErrorCode(err.code), reason: err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'upstream message too big' : 'upstream protocol error' };
  }

  #maybeRetry(): boolean {
    const retry = this.#action?.retry;
    if (!retry || !retry.on.connectFailure || this.#attempts > retry.numRetries) return false;
    const breaker = this.#cluster!.breaker;
    if (!breaker.retryAllowed(this.#attempt?.retry ?? false)) return false;
    breaker.retryScheduled(this);
    if (retry.avoidPreviousHosts && this.#endpoint) (this.#tried ??= new Set()).add(this.#endpoint);
    const cap = Math.min(RETRY_BACKOFF_MAX_MS, RETRY_BACKOFF_BASE_MS * (2 ** this.#attempts - 1));
    this.#timer = setTimeout(() => this.#connect(), Math.random() * cap);
    return true;
  }

  /** 101 or refusal headers from the upstream, filtered and edited as the HTTP path does. */
  #responseHeaders(raw: readonly string[], upgrade: boolean): string[] {
    let headers: string[] = [];
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      if (HOP_BY_HOP_RESPONSE.has(name) || (upgrade && name.startsWith('sec-websocket-'))) continue;
      headers.push(name, raw[i + 1]!);
    }
    if (this.#clusterResponseOps) headers = applyHeaderOps(headers, this.#clusterResponseOps);
    if (this.#responseOps) headers = applyHeaderOps(headers, this.#responseOps);
    if (this.#corsOps) headers = applyHeaderOps(headers, this.#corsOps);
    if (this.#setCookie !== null) headers.push('set-cookie', this.#setCookie);
    headers.push('x-envoy-upstream-service-time', String(Math.round(performance.now() - this.#upstreamStartedAt)), 'server', SERVER);
    return headers;
  }

  /** Answers the handshake (not upgraded) and finishes. */
  #reply(status: number, flags: string, body: string | Buffer, headers?: string[]): void {
    const res = this.#takeRes();
    this.code = status;
    this.flags = flags;
    if (res !== null) {
      const buf = typeof body === 'string' ? Buffer.from(body) : body;
      const hs = headers ?? (buf.length > 0 ? ['server', SERVER, 'content-type', 'text/plain'] : ['server', SERVER]);
      this.responseBytes = buf.length;
      res.cork(() => {
        res.writeStatus(statusLine(status));
        for (let i = 0; i < hs.length; i += 2) if (writableHeaderValue(hs[i + 1]!)) res.writeHeader(hs[i]!, hs[i + 1]!);
        res.end(buf);
      });
    }
    this.#finish();
  }

  /** The client went away during the handshake. */
  #aborted(): void {
    if (this.#takeRes() === null) return;
    this.flags = 'DC';
    if (this.#timer) clearTimeout(this.#timer);
    const up = this.#up;
    this.#up = null;
    up?.terminate();
    this.#finish();
  }

  /** The handler threw: 500 if the handshake is still unanswered. */
  fail(err: unknown): void {
    this.#proxy.host.onError(err);
    if (this.#res !== null) this.#reply(500, 'DPE', 'internal error');
  }

  // ---- Both sides open ----

  downstreamOpen(ws: DownstreamSocket): void {
    this.#down = ws;
    this.#downOpened = true;
    OPEN_DOWNSTREAMS.add(ws);
    this.#proxy.opened(this);
  }

  /** Client → upstream. uWS reuses the message's memory after this call, so it is copied. */
  downstreamMessage(message: ArrayBuffer, isBinary: boolean): void {
    const up = this.#up;
    if (up === null || up.readyState !== OPEN) return;
    const data = copyArrayBuffer(message);
    this.requestBytes += data.length;
    up.send(data, { binary: isBinary });
    if (up.bufferedAmount > UPSTREAM_BUFFER_LIMIT) {
      // uWS cannot pause reading a WebSocket: a client outrunning its upstream is cut off here.
      this.#terminateUpstream = true;
      this.#down?.end(1013, 'upstream is not keeping up');
    }
  }

  /** Upstream → client, pausing the upstream while the client is slow to read. */
  #upstreamMessage(up: WebSocket, data: Buffer, isBinary: boolean): void {
    this.#upAlive = true;
    const down = this.#down;
    if (up !== this.#up || down === null) return;
    this.responseBytes += data.length;
    // Outside uWS's own callbacks a send must be corked, or it can wait in the cork buffer.
    let sent = 0;
    down.cork(() => {
      sent = down.send(data, isBinary);
    });
    if (sent === 2) {
      // Dropped by uWS (over maxBackpressure): the stream is broken, so both sides are closed.
      this.#terminateUpstream = true;
      down.cork(() => down.close());
      return;
    }
    if (!this.#upPaused && down.getBufferedAmount() > DOWNSTREAM_HIGH_WATER) {
      this.#upPaused = true;
      up.pause();
    }
  }

  downstreamDrain(ws: DownstreamSocket): void {
    if (this.#upPaused && ws.getBufferedAmount() < DOWNSTREAM_LOW_WATER) {
      this.#upPaused = false;
      this.#up?.resume();
    }
  }

  /** uWS `close` (any reason): forwards the close to the upstream if it is still open. */
  downstreamClosed(code: number, message: ArrayBuffer): void {
    if (this.#down) OPEN_DOWNSTREAMS.delete(this.#down);
    this.#down = null;
    this.#proxy.closed(this);
    const up = this.#up;
    if (up !== null && up.readyState === OPEN) {
      if (this.#terminateUpstream) {
        up.terminate();
      } else {
        const reason = Buffer.from(message).toString('utf8');
        if (code === 1006 && reason === 'Received too big message') up.close(1009, 'message too big');
        else if (code === 1006) {
          this.flags ||= 'DC';
          up.close(1011, 'downstream connection lost');
        } else {
          const c = sendableCode(code);
          if (c === undefined) up.close();
          else up.close(c, c === code ? reason : undefined);
        }
        this.#graceTimer = setTimeout(() => up.terminate(), CLOSE_GRACE_MS);
        this.#graceTimer.unref();
      }
    } else if (up !== null && up.readyState === WebSocket.CONNECTING) {
      up.terminate();
    }
    this.#maybeFinish();
  }

  /** The upstream socket is closed: the client gets its close code (or 1011 when it was lost). */
  #upstreamClosed(up: WebSocket, code: number, reason: Buffer): void {
    if (up !== this.#up) return;
    this.#up = null;
    if (this.#graceTimer) {
      clearTimeout(this.#graceTimer);
      this.#graceTimer = null;
    }
    if (!this.#upgraded) {
      // Closed without error, open or refusal: should not happen, but the handshake must be answered.
      if (this.#res !== null) this.#reply(503, 'UC', resetBody());
      return;
    }
    const down = this.#down;
    if (down !== null) {
      const failure = this.#upFailure;
      let c: number | undefined = failure?.code;
      let text: string | Buffer | undefined = failure?.reason;
      if (failure === null && code === 1006) {
        this.flags ||= 'UC';
        c = 1011;
        text = 'upstream connection lost';
      } else if (failure === null) {
        c = sendableCode(code);
        text = c === code ? reason : undefined;
      }
      // uWS runs the close handler inside end(), which finishes.
      down.cork(() => (c === undefined ? down.end() : down.end(c, text)));
      return;
    }
    this.#maybeFinish();
  }

  /** Listener going away: 1001 to the client (forwarded to the upstream by the close handler). */
  goAway(): void {
    const down = this.#down;
    down?.cork(() => down.end(1001, 'gateway listener closing'));
  }

  /** Called every ping interval while the client is open: drops an upstream that stopped answering. */
  checkUpstream(): void {
    const up = this.#up;
    if (up === null || up.readyState !== OPEN) return;
    if (this.#upPaused) {
      this.#upAlive = true; // not reading it, so its pongs cannot be seen
      return;
    }
    if (!this.#upAlive) {
      this.#upFailure = { code: 1011, reason: 'upstream not responding' };
      up.terminate();
      return;
    }
    this.#upAlive = false;
    up.ping();
  }

  #maybeFinish(): void {
    if (this.#down === null && this.#up === null) this.#finish();
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    const cluster = this.#cluster;
    const ep = this.#endpoint;
    const durationMs = performance.now() - this.startedAt;
    this.#ctx = null;
    this.#metrics
      .handle(ep ?? cluster, { service: cluster?.meta, endpoint: ep }, 'http', this.code, this.flags)
      .record({ durationMs, requestBytes: this.requestBytes, responseBytes: this.responseBytes });
    this.#accessLog?.log(this, durationMs);
  }

  get upstreamHost(): string {
    return this.#endpoint?.hostPort ?? '';
  }
  get upstreamCluster(): string {
    return this.#cluster?.name ?? '';
  }
}

/**
 * uWS v20 cannot safely finish an upgrade inside `res.cork()` called from outside its own
 * callbacks (uNetworking/uWebSockets#1928, fixed upstream by #1929, not in this build): cork's
 * epilogue may take the just-upgraded socket for an HTTP response and close it right after `open`
 * (measured: ~5% of upgrades here). While another socket holds the loop's cork, `res.cork()` just
 * runs its callback, which is safe and keeps uWS.js from warning. This keeps one such socket per
 * thread: a loopback WebSocket to a private uWS App (upgraded synchronously, the safe path), whose
 * listen socket is closed once connected. It lives while any listener does.
 */
class CorkLender {
  static #users = 0;
  static #app: uWS.TemplatedApp | null = null;
  static #server: uWS.WebSocket<unknown> | null = null;
  static #client: WebSocket | null = null;

  static socket(): uWS.WebSocket<unknown> | null {
    return CorkLender.#server;
  }

  static acquire(): void {
    if (CorkLender.#users++ === 0) CorkLender.#start();
  }

  static release(): void {
    if (--CorkLender.#users > 0) return;
    CorkLender.#users = 0;
    CorkLender.#client?.terminate();
    CorkLender.#client = null;
    const app = CorkLender.#app;
    CorkLender.#app = null;
    app?.close(); // also closes the listen socket if the client never connected
  }

  static #start(): void {
    const app = uWS.App();
    CorkLender.#app = app;
    app.ws<unknown>('/*', {
      idleTimeout: 0,
      maxPayloadLength: 1024,
      open: (ws) => {
        if (CorkLender.#app === app) CorkLender.#server = ws;
      },
      close: (ws) => {
        if (CorkLender.#server === ws) CorkLender.#server = null;
      },
    });
    app.listen('127.0.0.1', 0, (token) => {
      if (!token || CorkLender.#app !== app) return; // without a lender, upgrades borrow or run uncorked
      let listening = true;
      const stopListening = (): void => {
        if (listening && CorkLender.#app === app) uWS.us_listen_socket_close(token);
        listening = false;
      };
      const client = new WebSocket(`ws://127.0.0.1:${uWS.us_socket_local_port(token)}/`, { perMessageDeflate: false });
      CorkLender.#client = client;
      client.on('error', () => undefined);
      client.once('open', stopListening);
      client.once('close', stopListening);
    });
  }
}

/** One upstream connection attempt's standing with the cluster's circuit breaker. */
interface AttemptState {
  /** Admitted as pending and its handshake is not over yet. */
  pending: boolean;
  /** It is a retry (counted against maxRetries until it ends). */
  retry: boolean;
}

/** Client WebSockets open on this thread's uWS loop (every listener): lenders while CorkLender starts. */
const OPEN_DOWNSTREAMS = new Set<DownstreamSocket>();

function anyOpenDownstream(): DownstreamSocket | null {
  for (const ws of OPEN_DOWNSTREAMS) return ws;
  return null;
}

/** A close code that may be sent in a close frame; undefined for 1005 (send a close without code). */
function sendableCode(code: number): number | undefined {
  if (code === 1005 || code === 0) return undefined;
  if ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)) return code;
  return 1011; // 1006, 1015 and anything invalid
}

/** The close code `ws` sends when it fails a connection for this error. */
function wsErrorCode(code: string | undefined): number {
  switch (code) {
    case 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH':
      return 1009;
    case 'WS_ERR_INVALID_UTF8':
      return 1007;
    default:
      return 1011;
  }
}

/** Envoy's cors filter on an actual (non-preflight) request: headers for an allowed origin's response. */
function corsResponseOps(cors: CompiledCors, head: RequestHead): HeaderOps | null {
  const origin = getHeader(head, 'origin');
  if (origin === undefined || !cors.allows(origin)) return null;
  const set: Array<[string, string]> = [['access-control-allow-origin', origin]];
  for (let i = 0; i < cors.actual.length; i += 2) set.push([cors.actual[i]!, cors.actual[i + 1]!]);
  return { set, add: [], remove: [] };
}

function roll(perMillion: number): boolean {
  return perMillion >= 1_000_000 || Math.random() * 1_000_000 < perMillion;
}

function resetBody(): string {
  return 'upstream connect error or disconnect/reset before headers. reset reason: connection termination';
}
