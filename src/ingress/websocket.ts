// WebSocket proxying (Istio allows upgrades on every HTTP route), on both engines: uWS listeners
// (uWS terminates the client's WebSocket) and the HTTP/1.1 side of node:http2 listeners (a `ws`
// server without a port of its own takes the upgraded socket). A `ws` client opens one to the
// upstream endpoint, and messages are relayed frame for frame (text/binary kept; pings and
// extensions are per hop). One Bridge holds the lifecycle; a Handshake and a Downstream adapt each
// engine. Besides uws-listener.ts this is the only file touching uWS objects, under the same
// rules: `onAborted` first, the request read synchronously, nothing touched after answer, upgrade,
// abort or close.
//
// Only upgrades this module can forward are handled here. Anything else (no route, redirect,
// direct response, malformed request) yields to the listener's HTTP handler, which answers
// exactly as it would a plain request (same reply, metrics and access log).
//
// Each connection holds its own upstream socket: a config reload only changes how new upgrades
// are routed (Istio pain point: Envoy drains WebSockets on unrelated pushes). Either side closing
// or failing closes the other, and a dead upstream is found by pings (no FD or memory leaks).
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import uWS from 'uWebSockets.js';
import type WebSocket from 'ws';
import type { WebSocketServer } from 'ws';
import { normalizePath } from '../routing/path.js';
import type { RequestHead } from '../routing/request.js';
import { firstMatch, pickCluster, type CompiledRoute, type CompiledVirtualHost, type ForwardAction, type HeaderOps } from '../routing/route-table.js';
import type { AccessLog, LoggedRequest } from '../telemetry/access-log.js';
import type { IstioMetrics } from '../telemetry/metrics.js';
import type { RequestTrace, UpstreamSpan } from '../telemetry/tracing/tracer.js';
import type { ClusterRuntime, UpstreamEndpoint } from '../upstream/cluster-manager.js';
import { failureReply, outlierFailure, responseFlag, type UpstreamError } from '../upstream/errors.js';
import { WS_CONNECTING, WS_MAX_PAYLOAD, WS_OPEN, loadWs, openUpstreamWebSocket, webSocketConnectError } from '../upstream/ws-connect.js';
import type { ConnectionFacts } from './connection.js';
import type { DataPlaneContext } from './context.js';
import { redirectLocation } from './exchange.js';
import { HTTP_FILTERS, runFilters, type FilterChain, type FilterHost } from './filters/chain.js';
import { addFlag, type LocalReply } from './filters/filter.js';
import { RetryState } from './retry-state.js';
import { HOP_BY_HOP_RESPONSE, NO_ROUTE, admitAttempt, BLOCKED, clusterFor, editResponseHeaders, isLocalReply, localReplyHeaders, upstreamPath, upstreamRequestHeaders, type Admission } from './router.js';
import { statusLine } from './status.js';
import { writableHeaderValue } from './sink.js';
// A cycle (uws-listener.ts registers this module), safe because these are only used at run time.
import { hostOnly } from '../routing/authority.js';
import { headProblem } from './request-head.js';
import { copyArrayBuffer, readForwardHeaders, remoteAddress } from './uws-request.js';

/** Largest message accepted from either side (uWS `maxPayloadLength`, `ws` `maxPayload`). */
export { WS_MAX_PAYLOAD };
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

const SERVER = 'istio-envoy';
const OPEN = WS_OPEN;

// Request headers that belong to the client connection (as on the HTTP path). The handshake's own
// headers stay in the head (routes may match them) but are not forwarded: the gateway negotiates
// each hop itself (`ws` makes its own key; the offered subprotocols are passed to it).
const HANDSHAKE_HEADERS = new Set(['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-websocket-accept', 'content-length']);

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

type UwsSocket = uWS.WebSocket<UserData>;

/** node:http upgrades: what the `ws` server adds to the 101 of each request, and the subprotocol. */
const NODE_UPGRADE = new WeakMap<IncomingMessage, { headers: readonly string[]; protocol: string }>();
/** A Sec-WebSocket-Key: 16 bytes in base64 (RFC 6455 4.2.1), as `ws` checks it. */
const WS_KEY = /^[+/0-9A-Za-z]{22}==$/;

/** The WebSocket side of one listener, either engine: the open connections, and closing them. */
export class WebSocketProxy {
  readonly host: WebSocketHost;
  /** Connections whose client side is open. */
  readonly open = new Set<Bridge>();
  #pinger: NodeJS.Timeout | null = null;
  #onEmpty: (() => void) | null = null;
  /** uWS listeners hold the thread's CorkLender while they live. */
  #lending = false;
  /** node:http listeners: a `ws` server without a port, which takes over upgraded sockets. */
  #wss: WebSocketServer | null = null;

  constructor(host: WebSocketHost) {
    this.host = host;
  }

  /** uWS: the `app.ws` behaviour (one per router of the listener's app). */
  behavior(): uWS.WebSocketBehavior<UserData> {
    if (!this.#lending) {
      this.#lending = true;
      CorkLender.acquire();
    }
    return {
      compression: uWS.DISABLED,
      maxPayloadLength: WS_MAX_PAYLOAD,
      idleTimeout: WS_IDLE_TIMEOUT_S,
      sendPingsAutomatically: true,
      maxBackpressure: DOWNSTREAM_HARD_LIMIT,
      closeOnBackpressureLimit: 0,
      upgrade: (res, req, context) => {
        const hs = new UwsHandshake(res, context); // registers onAborted first
        const bridge = new Bridge(this, hs);
        try {
          if (!bridge.acceptUws(req)) req.setYield(true);
        } catch (err) {
          bridge.fail(err);
        }
      },
      open: (ws) =>
        this.#guard(() => {
          OPEN_DOWNSTREAMS.add(ws);
          ws.getUserData().bridge.downstreamOpen(new UwsDownstream(ws));
        }),
      // uWS lends the message's memory for this call only: copied.
      message: (ws, message, isBinary) => this.#guard(() => ws.getUserData().bridge.downstreamMessage(copyArrayBuffer(message), isBinary)),
      drain: (ws) => this.#guard(() => ws.getUserData().bridge.downstreamDrain()),
      close: (ws, code, message) =>
        this.#guard(() => {
          OPEN_DOWNSTREAMS.delete(ws);
          const reason = Buffer.from(message).toString('utf8');
          // uWS closes a client whose message is over maxPayloadLength with 1006 and this reason.
          const failure = code === 1006 && reason === 'Received too big message' ? { code: 1009, reason: 'message too big' } : null;
          ws.getUserData().bridge.downstreamClosed(code, reason, failure);
        }),
    };
  }

  /**
   * node:http `upgrade` on an HTTP/1.1 connection: a WebSocket handshake this proxy forwards, else
   * `fallback` answers the request as the HTTP handler would. `head` is the request as the
   * listener reads it (null when it cannot be routed: too large, no valid authority...), `conn`
   * what it knows of the connection.
   */
  nodeUpgrade(req: IncomingMessage, socket: Socket, bodyHead: Buffer, head: RequestHead | null, conn: ConnectionFacts, fallback: () => void): void {
    const hs = new NodeHandshake(this.#server(), req, socket, bodyHead, (err) => this.host.onError(err));
    const bridge = new Bridge(this, hs);
    try {
      const h = req.headers;
      const key = h['sec-websocket-key'];
      const version = h['sec-websocket-version'];
      const valid = req.method === 'GET' && typeof key === 'string' && WS_KEY.test(key) && (version === '13' || version === '8');
      if (head === null || !bridge.begin(head, h['sec-websocket-protocol'] ?? '', conn, valid)) {
        hs.release();
        fallback();
      }
    } catch (err) {
      bridge.fail(err);
    }
  }

  #server(): WebSocketServer {
    if (this.#wss) return this.#wss;
    const wss = new (loadWs().WebSocketServer)({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: WS_MAX_PAYLOAD,
      // The upstream's choice, already negotiated.
      handleProtocols: (_offered, req) => NODE_UPGRADE.get(req)?.protocol || false,
    });
    wss.on('headers', (lines: string[], req: IncomingMessage) => {
      const extra = NODE_UPGRADE.get(req)?.headers ?? [];
      for (let i = 0; i < extra.length; i += 2) if (writableHeaderValue(extra[i + 1]!)) lines.push(`${extra[i]}: ${extra[i + 1]}`);
    });
    this.#wss = wss;
    return wss;
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
        for (const x of this.open) x.checkPeers();
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
    if (this.#lending) {
      this.#lending = false;
      CorkLender.release();
    }
  }
}

/** The client's handshake, whatever the engine: answered once, by a reply or by an upgrade. */
interface Handshake {
  /** Set by the Bridge: the client went away before the handshake was answered. */
  onAborted: () => void;
  /** Answers the handshake without upgrading. */
  reply(status: number, headers: readonly string[], body: Buffer): void;
  /**
   * Switches protocols: 101 with these headers and the upstream's subprotocol. The engine calls
   * `bridge.downstreamOpen` before returning unless the client socket is already gone.
   */
  upgrade(bridge: Bridge, headers: readonly string[], protocol: string): void;
}

/** The client's WebSocket once upgraded. */
interface Downstream {
  /** Queues a message; false when the engine dropped it (over its buffer limit). */
  send(data: Buffer, isBinary: boolean): boolean;
  readonly bufferedAmount: number;
  /** The close handshake, with a code (none: a close frame without one) and a reason. */
  end(code?: number, reason?: string | Buffer): void;
  /** Drops the connection (the stream is broken). */
  close(): void;
  /** node engine only (uWS cannot stop reading a WebSocket): client messages wait while paused. */
  pause?(): void;
  resume?(): void;
  /** node engine only (uWS pings by itself): pings the client; one that did not answer the last ping is dropped. */
  ping?(): void;
}

class UwsHandshake implements Handshake {
  onAborted: () => void = () => undefined;
  readonly #res: uWS.HttpResponse;
  readonly #context: uWS.us_socket_context_t;
  key = '';
  extensions = '';

  constructor(res: uWS.HttpResponse, context: uWS.us_socket_context_t) {
    // First, always: uWS aborts the process if a handler returns without this or a response.
    res.onAborted(() => this.onAborted());
    this.#res = res;
    this.#context = context;
  }

  remoteAddress(): string {
    return remoteAddress(this.#res);
  }

  reply(status: number, headers: readonly string[], body: Buffer): void {
    const res = this.#res;
    res.cork(() => {
      res.writeStatus(statusLine(status));
      for (let i = 0; i < headers.length; i += 2) if (writableHeaderValue(headers[i + 1]!)) res.writeHeader(headers[i]!, headers[i + 1]!);
      res.end(body);
    });
  }

  upgrade(bridge: Bridge, headers: readonly string[], protocol: string): void {
    const res = this.#res;
    const userData: UserData = { bridge };
    const head = (): void => {
      res.writeStatus('101 Switching Protocols');
      for (let i = 0; i < headers.length; i += 2) if (writableHeaderValue(headers[i + 1]!)) res.writeHeader(headers[i]!, headers[i + 1]!);
    };
    const upgrade = (): void => res.upgrade(userData, this.key, protocol, this.extensions, this.#context);
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
  }
}

class UwsDownstream implements Downstream {
  readonly #ws: UwsSocket;

  constructor(ws: UwsSocket) {
    this.#ws = ws;
  }

  send(data: Buffer, isBinary: boolean): boolean {
    // Outside uWS's own callbacks a send must be corked, or it can wait in the cork buffer.
    const ws = this.#ws;
    let sent = 0;
    ws.cork(() => {
      sent = ws.send(data, isBinary);
    });
    return sent !== 2;
  }

  get bufferedAmount(): number {
    return this.#ws.getBufferedAmount();
  }

  end(code?: number, reason?: string | Buffer): void {
    // uWS runs the close handler inside end().
    const ws = this.#ws;
    ws.cork(() => (code === undefined ? ws.end() : ws.end(code, reason)));
  }

  close(): void {
    const ws = this.#ws;
    ws.cork(() => ws.close());
  }
}

/** node:http: the upgrade request's socket until it is answered or handed to the `ws` server. */
class NodeHandshake implements Handshake {
  onAborted: () => void = () => undefined;
  readonly #onError: (err: unknown) => void;
  readonly #wss: WebSocketServer;
  readonly #req: IncomingMessage;
  readonly #socket: Socket;
  readonly #bodyHead: Buffer;
  readonly #onClose = (): void => this.onAborted();

  constructor(wss: WebSocketServer, req: IncomingMessage, socket: Socket, bodyHead: Buffer, onError: (err: unknown) => void) {
    this.#onError = onError;
    this.#wss = wss;
    this.#req = req;
    this.#socket = socket;
    this.#bodyHead = bodyHead;
    socket.on('error', () => undefined);
    socket.once('close', this.#onClose);
  }

  /** The socket is someone else's now (the HTTP handler's, or the `ws` server's). */
  release(): void {
    this.#socket.removeListener('close', this.#onClose);
  }

  reply(status: number, headers: readonly string[], body: Buffer): void {
    this.release();
    const lines = [`HTTP/1.1 ${statusLine(status)}`];
    for (let i = 0; i < headers.length; i += 2) if (writableHeaderValue(headers[i + 1]!)) lines.push(`${headers[i]}: ${headers[i + 1]}`);
    lines.push(`date: ${new Date().toUTCString()}`, `content-length: ${body.length}`, 'connection: close', '', '');
    // An upgrade request is the connection's last: answered, it is closed.
    this.#socket.end(Buffer.concat([Buffer.from(lines.join('\r\n'), 'latin1'), body]));
  }

  upgrade(bridge: Bridge, headers: readonly string[], protocol: string): void {
    this.release();
    const req = this.#req;
    NODE_UPGRADE.set(req, { headers, protocol });
    // Synchronous: the `ws` server writes the 101 and calls back, or destroys a socket already gone.
    this.#wss.handleUpgrade(req, this.#socket, this.#bodyHead, (ws) => {
      NODE_UPGRADE.delete(req);
      bridge.downstreamOpen(new NodeDownstream(ws, bridge, this.#onError));
    });
    NODE_UPGRADE.delete(req);
  }
}

class NodeDownstream implements Downstream {
  readonly #ws: WebSocket;
  readonly #sent: () => void;
  #alive = true;
  /** The close code for the upstream when `ws` failed the client's connection (too big, bad frame). */
  #failure: { code: number; reason: string } | null = null;

  constructor(ws: WebSocket, bridge: Bridge, onError: (err: unknown) => void) {
    this.#ws = ws;
    this.#sent = () => bridge.downstreamDrain();
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      try {
        bridge.downstreamMessage(data, isBinary);
      } catch (err) {
        onError(err);
      }
    });
    ws.on('pong', () => {
      this.#alive = true;
    });
    ws.on('error', (err: Error & { code?: string }) => {
      const code = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 1009 : err.code === 'WS_ERR_INVALID_UTF8' ? 1007 : err.code?.startsWith('WS_ERR_') ? 1002 : 0;
      if (code > 0) this.#failure = { code, reason: code === 1009 ? 'message too big' : 'downstream protocol error' };
    });
    ws.on('close', (code: number, reason: Buffer) => {
      try {
        bridge.downstreamClosed(code, reason.toString('utf8'), this.#failure);
      } catch (err) {
        onError(err);
      }
    });
  }

  send(data: Buffer, isBinary: boolean): boolean {
    this.#ws.send(data, { binary: isBinary }, this.#sent);
    return true;
  }

  get bufferedAmount(): number {
    return this.#ws.bufferedAmount;
  }

  end(code?: number, reason?: string | Buffer): void {
    const ws = this.#ws;
    if (ws.readyState !== OPEN) return;
    if (code === undefined) ws.close();
    else ws.close(code, reason);
  }

  close(): void {
    this.#ws.terminate();
  }

  pause(): void {
    this.#ws.pause();
  }

  resume(): void {
    this.#alive = true; // pongs were not read while paused
    this.#ws.resume();
  }

  ping(): void {
    const ws = this.#ws;
    if (ws.readyState !== OPEN) return;
    if (!this.#alive) return void ws.terminate();
    this.#alive = false;
    ws.ping();
  }
}

/**
 * One proxied WebSocket: the client's handshake (the same filter chain and router pieces as an
 * HTTP exchange), then both sockets until both are closed.
 */
class Bridge implements LoggedRequest, FilterHost {
  /** The route policies before the router: the config version's chain (one static array by default). */
  readonly filters: FilterChain;
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
  rerouteIn: CompiledVirtualHost | null = null;
  conn!: ConnectionFacts;
  /** The header list going upstream (filters may replace it). */
  upstreamHeaders: string[] = [];
  /** For the access log, and for the circuit breaker's retry accounting (`closed`: handshake over). */
  readonly sink = { remoteAddress: '', closed: false };
  code = 0;
  flags = '';
  requestBytes = 0;
  responseBytes = 0;
  /** The request's trace (started by the tracing filter), null when tracing is off. */
  trace: RequestTrace | null = null;
  /** The current upstream handshake's span. */
  #span: UpstreamSpan | null = null;

  /** The client's handshake: valid until answered, upgraded or aborted (or yielded), then null. */
  #hs: Handshake | null;
  #protocols: string[] = [];

  #cluster: ClusterRuntime | undefined;
  #retry: RetryState | null = null;
  #endpoint: UpstreamEndpoint | undefined;
  #responseOps: HeaderOps | null = null;
  #clusterResponseOps: HeaderOps | null = null;
  /** Response header edits of the filters (CORS, ext_authz). */
  #filterOps: HeaderOps[] | null = null;
  /** Forwarded headers as a flat list (for hash policies) and as `ws` takes them. */
  #upstreamFlat: string[] = [];
  #upstreamObject: Record<string, string | string[]> = {};
  #setCookie: string | null = null;
  #upstreamUrl = '';
  /** A fault delay or a retry backoff. */
  #timer: NodeJS.Timeout | null = null;
  #upstreamStartedAt = 0;
  #upgradeHeaders: string[] | null = null;

  /** The current upstream socket, until its `close` event. */
  #up: WebSocket | null = null;
  /** The client's WebSocket, from its `open` until its `close`. */
  #down: Downstream | null = null;
  /** node engine: client messages wait while the upstream is slow (uWS cannot pause them). */
  #downPaused = false;
  #attempt: Admission | null = null;
  #upgraded = false;
  #downOpened = false;
  #upPaused = false;
  #upAlive = true;
  /** Close code for the client when the upstream fails (from `ws`'s error), else 1011. */
  #upFailure: { code: number; reason: string } | null = null;
  #terminateUpstream = false;
  #graceTimer: NodeJS.Timeout | null = null;
  #finished = false;

  constructor(proxy: WebSocketProxy, hs: Handshake) {
    hs.onAborted = () => this.#aborted();
    this.#hs = hs;
    this.#proxy = proxy;
    const ctx = (this.#ctx = proxy.host.ctx);
    this.filters = ctx.filters ?? HTTP_FILTERS;
    this.#metrics = ctx.metrics;
    this.#accessLog = ctx.accessLog;
    this.startedAt = performance.now();
  }

  /**
   * uWS: reads the handshake (synchronously), then begin(). False when this request is not a
   * WebSocket to forward: the caller yields it to the HTTP handler, which answers it.
   */
  acceptUws(req: uWS.HttpRequest): boolean {
    const hs = this.#hs as UwsHandshake;
    const host = this.#proxy.host;
    const method = req.getCaseSensitiveMethod();
    const path = normalizePath(req.getUrl());
    const query = req.getQuery() ?? '';
    hs.key = req.getHeader('sec-websocket-key');
    hs.extensions = req.getHeader('sec-websocket-extensions');
    const offered = req.getHeader('sec-websocket-protocol');
    const ip = hs.remoteAddress();
    const fields = readForwardHeaders(req);
    const authority = fields.host;
    // A head the HTTP handler refuses (framing, limits, authority) is yielded to it to answer.
    if (fields.framing !== '' || headProblem(fields, authority, '/', path.length, query.length)) return this.#yield();
    const headers = fields.finish(ip, host.scheme);
    const head: RequestHead = { method, path, query, host: hostOnly(authority), authority, scheme: host.scheme, headers, ...(host.port !== undefined ? { localPort: host.port } : {}) };
    if (fields.forceTrace) head.forceTrace = true;
    return this.begin(head, offered, { remoteAddress: ip, localAddress: host.localAddress ?? '' });
  }

  /**
   * The handshake as its listener read it: routes it and starts connecting upstream. False when
   * it is not a WebSocket to forward (the caller yields it to the HTTP handler). `valid` false: a
   * malformed WebSocket handshake, answered 400.
   */
  begin(head: RequestHead, offered: string, conn: ConnectionFacts, valid = true): boolean {
    this.head = head;
    this.conn = conn;
    this.upstreamHeaders = head.headers;
    this.sink.remoteAddress = conn.remoteAddress;
    const ctx = this.#ctx!;
    const vhost = ctx.table?.virtualHost(head);
    const route = vhost && firstMatch(vhost, head);
    const sec = ctx.security;
    // A host whose route may change once JWT authentication has run (claim matches, headers it
    // writes) keeps the handshake whatever the first match says, and answers it here when the
    // route it ends up with does not forward. Any other non-forward route yields to the HTTP handler.
    const reroute = vhost !== undefined && vhost.rerouteAfterAuthn && sec != null && sec.active && sec.authenticates;
    if (!reroute && (!route || route.action.kind !== 'forward')) return this.#yield();
    this.route = route;
    if (reroute) this.rerouteIn = vhost;
    if (!valid) {
      this.#reply(400, 'DPE', 'Bad Request');
      return true;
    }
    this.#protocols = offered ? offered.split(',').map((s) => s.trim()).filter((s) => s.length > 0) : [];
    // As for HTTP: the filter chain (JWT and authorization, CORS, fault injection), then the router.
    runFilters(this);
    return true;
  }

  // ---- FilterHost: what the chain asks of the handshake ----

  get ctx(): DataPlaneContext {
    return this.#ctx!;
  }

  addResponseOps(ops: HeaderOps): void {
    (this.#filterOps ??= []).push(ops);
  }

  respond(reply: LocalReply): void {
    const body = typeof reply.body === 'string' ? Buffer.from(reply.body) : reply.body;
    this.#reply(reply.status, reply.flags, body, localReplyHeaders(reply.headers, reply.ops, body.length, this.#filterOps));
  }

  hold(kind: 'delay' | 'wait', timer: NodeJS.Timeout | null): void {
    // Nothing to keep: a handshake has no body.
    if (kind === 'delay') this.#timer = timer;
  }

  unhold(): boolean {
    this.#timer = null;
    return this.#hs !== null; // false: the client went away meanwhile
  }

  /** The router: the route's action once every filter let the handshake through. */
  router(): void {
    const route = this.route;
    if (!route) return this.respond(NO_ROUTE);
    const action = route.action;
    if (action.kind === 'forward') return this.#forward(route, action);
    // Only when the route was selected again after JWT authentication: answered as the HTTP path would.
    const body = action.kind === 'direct' ? (action.body ?? Buffer.alloc(0)) : Buffer.alloc(0);
    const extra = action.kind === 'redirect' ? ['location', redirectLocation(action, this.head)] : [];
    this.#reply(action.status, '', body, localReplyHeaders(extra, route.response, body.length, this.#filterOps));
  }

  #yield(): false {
    // The HTTP handler takes the request over (and its own abort handling); this object is dropped.
    this.#takeHs();
    this.#finished = true;
    return false;
  }

  /** The handshake, for its last use (answer or upgrade); null once it was used or aborted. */
  #takeHs(): Handshake | null {
    const hs = this.#hs;
    this.#hs = null;
    this.sink.closed = true;
    return hs;
  }

  #forward(route: CompiledRoute, action: ForwardAction): void {
    const picked = pickCluster(action, Math.random());
    const cluster = clusterFor(this.#ctx!, picked, this.head);
    if (isLocalReply(cluster)) {
      // A blocked host (BlackHoleCluster) is still counted and logged under that cluster.
      if (cluster === BLOCKED) this.#cluster = this.#ctx!.clusters.get(picked!.name);
      return this.respond(cluster);
    }
    this.#cluster = cluster;
    this.#retry = new RetryState(action.retry, cluster.breaker);
    this.#responseOps = route.response;
    this.#clusterResponseOps = picked.response;

    const headers = upstreamRequestHeaders(this.upstreamHeaders.slice(), this.head, action, route, picked);
    const out: Record<string, string | string[]> = {};
    for (let i = 0; i < headers.length; i += 2) {
      const k = headers[i]!;
      if (HANDSHAKE_HEADERS.has(k)) continue;
      const v = headers[i + 1]!;
      const prev = out[k];
      out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
    this.#upstreamFlat = headers;
    this.#upstreamObject = out;
    this.#upstreamUrl = upstreamPath(action, this.head);
    this.#connect();
  }

  // ---- Upstream handshake ----

  #connect(): void {
    this.#timer = null;
    const cluster = this.#cluster!;
    const breaker = cluster.breaker;
    const retry = this.#retry!;
    // Circuit breakers as for HTTP. Each WebSocket has its own upstream connection (no pool to wait
    // for), so a "pending" upgrade only counts as pending until its handshake is over.
    const att: Admission = { pending: false, retry: false };
    const ep = admitAttempt(cluster, retry, this, this.#hs === null, this.head, this.sink.remoteAddress, this.#upstreamFlat, att);
    if (ep === null) return;
    if (isLocalReply(ep)) return this.respond(ep);
    this.#setCookie = cluster.setCookie;
    this.#endpoint = ep;
    this.#upstreamObject['x-envoy-attempt-count'] = String(retry.attempts);
    if (this.trace !== null) {
      // One span per upstream handshake attempt; its context goes upstream in the client's formats.
      const ctx: string[] = [];
      this.#span = this.trace.upstream(ctx, cluster.name);
      for (let i = 0; i < ctx.length; i += 2) this.#upstreamObject[ctx[i]!] = ctx[i + 1]!;
    }
    this.#upstreamStartedAt = performance.now();
    let up: WebSocket;
    try {
      up = openUpstreamWebSocket(ep.hostPort, this.#upstreamUrl, this.#protocols, this.#upstreamObject, cluster.connectTimeoutMs);
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
    if (up !== this.#up || this.#hs === null) {
      up.terminate();
      return;
    }
    this.#handshakeOver();
    this.#endSpan(101, '');
    this.#cluster!.reportStatus(this.#endpoint!, 101);
    const hs = this.#takeHs()!;
    this.#upgraded = true;
    this.#ctx = null;
    this.code = 101;
    const headers = this.#responseHeaders(this.#upgradeHeaders ?? [], true);
    this.#upgradeHeaders = null;
    hs.upgrade(this, headers, up.protocol);
    if (!this.#downOpened) {
      // The engine opens the client side within upgrade(); without it the client socket is gone.
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
      if (this.#hs === null) return;
      const status = r.statusCode ?? 502;
      this.#endSpan(status, '');
      this.#cluster!.reportStatus(this.#endpoint!, status);
      if (length > REFUSAL_BODY_LIMIT || !r.complete) return this.#reply(503, 'UC', resetBody());
      // As for HTTP: a status the route's retry policy retries is not relayed while attempts are left.
      if (this.#maybeRetry(this.#retry!.retriesStatus(status, -1))) return;
      this.#reply(r.statusCode ?? 502, '', Buffer.concat(chunks), this.#responseHeaders(r.rawHeaders, false));
    });
  }

  #upstreamError(up: WebSocket, err: Error & { code?: string }): void {
    if (up !== this.#up) return;
    if (!this.#upgraded) {
      // Failed before the client was upgraded: a local reply as on the HTTP path.
      this.#handshakeOver();
      this.#up = null;
      if (this.#hs === null) return;
      const e: UpstreamError = webSocketConnectError(err);
      this.#endSpan(0, responseFlag(e.kind));
      this.#cluster!.reportFailure(this.#endpoint!, outlierFailure(e.kind));
      if (this.#maybeRetry(this.#retry!.retriesError(e.kind))) return;
      const r = failureReply(e);
      const flag = responseFlag(e.kind);
      return this.#reply(r.status, this.#retry!.attempts > 1 ? `${flag},URX` : flag, r.body);
    }
    // After the upgrade `close` follows; `ws` has already sent the upstream its close code.
    this.#upFailure = { code: wsErrorCode(err.code), reason: err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'upstream message too big' : 'upstream protocol error' };
  }

  /** The current upstream handshake attempt is over: its span ends. */
  #endSpan(status: number, flag: string): void {
    const span = this.#span;
    if (span === null) return;
    this.#span = null;
    this.trace!.endUpstream(span, status, this.#endpoint?.hostPort ?? '', flag, 'HTTP/1.1');
  }

  /** Schedules another upstream handshake when `retriable` (the policy retries this failure) and the rest allow it. */
  #maybeRetry(retriable: boolean): boolean {
    const retry = this.#retry;
    if (retry === null || retry.policy === null) return false;
    // A handshake has no body: always replayable.
    const ms = retry.schedule(retriable, true, this.#attempt?.retry ?? false, this, this.#endpoint);
    if (ms < 0) return false;
    this.#timer = setTimeout(() => this.#connect(), ms);
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
    headers = editResponseHeaders(headers, this.#clusterResponseOps, this.#responseOps, this.#filterOps);
    if (this.#setCookie !== null) headers.push('set-cookie', this.#setCookie);
    headers.push('x-envoy-upstream-service-time', String(Math.round(performance.now() - this.#upstreamStartedAt)), 'server', SERVER);
    return headers;
  }

  /** Answers the handshake (not upgraded) and finishes. */
  #reply(status: number, flags: string, body: string | Buffer, headers?: string[]): void {
    const hs = this.#takeHs();
    this.code = status;
    if (flags) this.flags = addFlag(this.flags, flags);
    if (hs !== null) {
      const buf = typeof body === 'string' ? Buffer.from(body) : body;
      this.responseBytes = buf.length;
      hs.reply(status, headers ?? (buf.length > 0 ? ['server', SERVER, 'content-type', 'text/plain'] : ['server', SERVER]), buf);
    }
    this.#finish();
  }

  /** The client went away during the handshake. */
  #aborted(): void {
    if (this.#takeHs() === null) return;
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
    if (this.#hs !== null) this.#reply(500, 'DPE', 'internal error');
  }

  // ---- Both sides open ----

  downstreamOpen(down: Downstream): void {
    this.#down = down;
    this.#downOpened = true;
    this.#proxy.opened(this);
  }

  /** Client → upstream. */
  downstreamMessage(data: Buffer, isBinary: boolean): void {
    const up = this.#up;
    if (up === null || up.readyState !== OPEN) return;
    this.requestBytes += data.length;
    const down = this.#down;
    if (down?.pause) {
      // The node engine can stop reading the client while the upstream is slow.
      up.send(data, { binary: isBinary }, this.#upstreamSent);
      if (!this.#downPaused && up.bufferedAmount > DOWNSTREAM_HIGH_WATER) {
        this.#downPaused = true;
        down.pause();
      }
      return;
    }
    up.send(data, { binary: isBinary });
    if (up.bufferedAmount > UPSTREAM_BUFFER_LIMIT) {
      // uWS cannot pause reading a WebSocket: a client outrunning its upstream is cut off here.
      this.#terminateUpstream = true;
      down?.end(1013, 'upstream is not keeping up');
    }
  }

  /** A message reached the upstream socket: a paused client resumes once the upstream caught up. */
  readonly #upstreamSent = (): void => {
    if (this.#downPaused && (this.#up?.bufferedAmount ?? 0) < DOWNSTREAM_LOW_WATER) {
      this.#downPaused = false;
      this.#down?.resume?.();
    }
  };

  /** Upstream → client, pausing the upstream while the client is slow to read. */
  #upstreamMessage(up: WebSocket, data: Buffer, isBinary: boolean): void {
    this.#upAlive = true;
    const down = this.#down;
    if (up !== this.#up || down === null) return;
    this.responseBytes += data.length;
    if (!down.send(data, isBinary)) {
      // Dropped (uWS, over maxBackpressure): the stream is broken, so both sides are closed.
      this.#terminateUpstream = true;
      down.close();
      return;
    }
    if (!this.#upPaused && down.bufferedAmount > DOWNSTREAM_HIGH_WATER) {
      this.#upPaused = true;
      up.pause();
    }
  }

  /** The client's send buffer went down (uWS `drain`, or a node send completed). */
  downstreamDrain(): void {
    if (this.#upPaused && this.#down !== null && this.#down.bufferedAmount < DOWNSTREAM_LOW_WATER) {
      this.#upPaused = false;
      this.#up?.resume();
    }
  }

  /**
   * The client side closed (any reason): forwards the close to the upstream if it is still open.
   * `failure`: the engine failed the connection (message too big...): that code goes upstream.
   */
  downstreamClosed(code: number, reason: string, failure: { code: number; reason: string } | null): void {
    this.#down = null;
    this.#proxy.closed(this);
    const up = this.#up;
    if (up !== null && up.readyState === OPEN) {
      if (this.#terminateUpstream) {
        up.terminate();
      } else {
        if (failure !== null) up.close(failure.code, failure.reason);
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
    } else if (up !== null && up.readyState === WS_CONNECTING) {
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
      if (this.#hs !== null) this.#reply(503, 'UC', resetBody());
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
      // uWS runs the close handler inside end(), which finishes; `ws` runs it once the client answered.
      down.end(c, text);
      return;
    }
    this.#maybeFinish();
  }

  /** Listener going away: 1001 to the client (forwarded to the upstream by the close handler). */
  goAway(): void {
    this.#down?.end(1001, 'gateway listener closing');
  }

  /** Called every ping interval while the client is open: drops a peer that stopped answering. */
  checkPeers(): void {
    // A paused client's pongs are not read either.
    if (!this.#downPaused) this.#down?.ping?.();
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
    this.#endSpan(0, this.flags);
    this.trace?.finish({
      status: this.code,
      flags: this.flags,
      cluster: cluster?.name ?? '',
      operation: this.route?.operation ?? '',
      requestBytes: this.requestBytes,
      responseBytes: this.responseBytes,
      protocol: 'HTTP/1.1',
    });
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
  /** The loopback client: a bare TCP socket that sent a WebSocket handshake (no `ws` needed). */
  static #client: Socket | null = null;

  static socket(): uWS.WebSocket<unknown> | null {
    return CorkLender.#server;
  }

  static acquire(): void {
    if (CorkLender.#users++ === 0) CorkLender.#start();
  }

  static release(): void {
    if (--CorkLender.#users > 0) return;
    CorkLender.#users = 0;
    CorkLender.#client?.destroy();
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
      const client = connect({ host: '127.0.0.1', port: uWS.us_socket_local_port(token), noDelay: true });
      CorkLender.#client = client;
      client.on('error', () => undefined);
      // The 101 answer (uWS upgrades synchronously, then sends nothing more: idleTimeout 0, no pings).
      client.once('data', stopListening);
      client.on('data', () => undefined);
      client.once('close', stopListening);
      client.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
  }
}

/** Client WebSockets open on this thread's uWS loop (every listener): lenders while CorkLender starts. */
const OPEN_DOWNSTREAMS = new Set<UwsSocket>();

function anyOpenDownstream(): UwsSocket | null {
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

function resetBody(): string {
  return 'upstream connect error or disconnect/reset before headers. reset reason: connection termination';
}
