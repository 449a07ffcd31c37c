// Gateway listeners on Node's own HTTP stack, for what uWS cannot do: HTTP/2 (h2 over TLS by
// ALPN, h2c with prior knowledge), gRPC, and TLS that asks for and reads client certificates.
// HTTP/1.1 clients are served on the same port, with WebSocket upgrades on TLS ports (HTTPS
// offers h2 by default, so WebSockets over HTTPS are served here). Same compiled route tables,
// same Exchange lifecycle, same header rules and limits as the uWS listener. Its HTTP/1.1 server
// is strict (llhttp, strict-http1.ts): with `http1Only` it is the strict HTTP/1.1 engine of plain
// HTTP ports (WebSocket upgrades included).
//
// One TCP (or TLS) server owns the port and hands each connection to an HTTP/2 server or an
// HTTP/1.1 server that never listen themselves: by ALPN for TLS, by the client's first bytes
// (the HTTP/2 connection preface) for plaintext, since Node 20's `http2.createServer` cannot fall
// back to HTTP/1.1 without TLS.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import net, { type Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { normalizePath } from '../routing/path.js';
import type { RequestHead } from '../routing/request.js';
import { firstMatch } from '../routing/route-table.js';
import { WebSocketProxy } from './websocket.js';
import type { ConnectionFacts } from './exchange.js';
import { Exchange, type DataPlaneContext } from './exchange.js';
import { H1Sink, H2StreamSink, type PeerIdentity, type SinkOwner } from './node-sinks.js';
import { principalOf, spiffeIdOfSan } from '../tls/spiffe.js';
import { hostOnly } from '../routing/authority.js';
import { requestsDrained } from './listener.js';
import { parseProxyHeader } from './proxy-protocol.js';
import { ForwardHeaders, headProblem, MAX_REQUEST_HEADERS_COUNT } from './request-head.js';
import { absoluteForm, answerClientError, requestProblem } from './strict-http1.js';
import { ACME_CHALLENGE_PREFIX, acmeChallenges } from '../tls/acme-challenges.js';
import { edgeLimits, type EdgeLimits } from './edge-limits.js';
import { guardHttp1Server, SessionGuard, unguardHttp1Server } from './node-guards.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const { NGHTTP2_FLAG_END_STREAM } = http2.constants;

export interface NodeListenerOptions {
  bind: string;
  port: number;
  /** The RDS name of the listener's route table in each snapshot. */
  routeName: string;
  /**
   * TLS termination (the HTTPS servers that need this engine: MUTUAL, OPTIONAL_MUTUAL, h2 by
   * ALPN). Any `tls.createServer` options: SNICallback, requestCert, rejectUnauthorized, ca,
   * minVersion, ciphers, ALPNProtocols (default `h2, http/1.1`). Absent: plaintext h2c + HTTP/1.1.
   */
  tls?: http2.SecureServerOptions;
  /**
   * TLS: checks each connection after its handshake (client certificate per SNI name, SANs);
   * false destroys it before any request is read. Read at each connection, so it can be swapped.
   */
  acceptSecure?: (socket: TLSSocket) => boolean;
  /** Plaintext only: each connection starts with a PROXY protocol header (v1 or v2), required. */
  proxyProtocol?: boolean;
  /**
   * Plaintext only: HTTP/1.1 and nothing else (no h2c), as on a uWS port: the strict HTTP/1.1
   * engine of plain HTTP ports (`--http1-engine strict`).
   */
  http1Only?: boolean;
}

/** The addresses a PROXY protocol header gave a connection (read through HTTP/2's socket proxy too). */
const PROXIED = Symbol('gatehouse.proxied');
interface Proxied {
  source: string | undefined;
  destination: string | undefined;
}

export class NodeListener implements SinkOwner {
  /**
   * Listen on the socket a node:cluster primary shares (a worker process of `--workers N`)
   * rather than bind the port exclusively.
   */
  static sharedPort = false;
  readonly bind: string;
  readonly port: number;
  readonly routeName: string;
  readonly scheme: 'http' | 'https';
  /**
   * The current config version (route table, clusters, policies, forward proxy), swapped as one
   * reference; a request reads it once and keeps it to its end.
   */
  ctx: DataPlaneContext;
  inflight = 0;
  onError: (err: unknown) => void = () => undefined;
  readonly #server: net.Server | tls.Server;
  readonly #h2: http2.Http2Server;
  readonly #h1: http.Server;
  readonly #sockets = new Set<Socket>();
  readonly #sessions = new Set<ServerHttp2Session>();
  #listening = false;
  #idle: (() => void) | null = null;
  readonly #peers = new WeakMap<object, PeerIdentity>();
  /** See NodeListenerOptions.acceptSecure. */
  acceptSecure: ((socket: TLSSocket) => boolean) | undefined;
  readonly proxyProtocol: boolean;
  /**
   * WebSocket upgrades on HTTP/1.1: TLS listeners, and plaintext ones that serve HTTP/1.1 only
   * (h2c ports do not: there `Upgrade: h2c` is the client's way to HTTP/2).
   */
  readonly websockets: WebSocketProxy | null;
  readonly http1Only: boolean;
  /** Timeouts and stream limits for this engine's clients (edge-limits.ts). */
  readonly #limits: EdgeLimits = edgeLimits();
  #newStreams: NewStream[] = [];

  constructor(opts: NodeListenerOptions, ctx: DataPlaneContext) {
    const limits = this.#limits;
    this.bind = opts.bind;
    this.port = opts.port;
    this.routeName = opts.routeName;
    this.scheme = opts.tls ? 'https' : 'http';
    this.acceptSecure = opts.acceptSecure;
    this.proxyProtocol = opts.proxyProtocol === true && !opts.tls;
    this.http1Only = opts.http1Only === true && !opts.tls;
    this.ctx = ctx;
    this.#h2 = http2.createServer({
      // Header lists up to the 60 KiB limit (answered 431 above it) need room at the protocol level.
      maxHeaderListPairs: 4096,
      settings: { maxHeaderListSize: 256 * 1024, enablePush: false, maxConcurrentStreams: limits.h2MaxConcurrentStreams },
      maxSessionMemory: 64,
    });
    this.#h2.on('session', (session: ServerHttp2Session) => {
      this.#sessions.add(session);
      session.on('error', () => undefined);
      const guard = new SessionGuard(session, limits);
      // The session's own 'stream' event, not the server's: a stream may already be destroyed when
      // node emits it (reset in the same read), and a destroyed stream no longer knows its session.
      session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => this.#deferStream(stream, guard, headers, flags, rawHeaders));
      session.once('close', () => this.#sessions.delete(session));
    });
    // llhttp strict (never insecureHTTPParser); a missing Host is answered by #serve (400, logged).
    // Its timeouts (request head, keep-alive idle) are the edge limits: guardHttp1Server.
    this.#h1 = http.createServer({ maxHeaderSize: 256 * 1024, insecureHTTPParser: false, requireHostHeader: false }, (req, res) => this.#onRequest(req, res));
    this.#h1.maxHeadersCount = MAX_REQUEST_HEADERS_COUNT + 1;
    guardHttp1Server(this.#h1, limits);
    this.#h1.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      const ctx = this.ctx;
      const fp = ctx.forwardProxy;
      if (!fp) {
        socket.on('error', () => undefined);
        socket.end('HTTP/1.1 405 Method Not Allowed\r\nserver: istio-envoy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
        return;
      }
      fp.proxy.connect(fp.config, req.url ?? '', socket, head, ctx);
    });
    // What llhttp refuses: 400 (431 over its size limit), after the answers pipelined before it.
    this.#h1.on('clientError', answerClientError);
    this.websockets = opts.tls || this.http1Only ? new WebSocketProxy(this) : null;
    if (this.websockets) this.#h1.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#onUpgrade(req, socket, head));
    if (opts.tls) {
      this.#server = tls.createServer({ ALPNProtocols: ['h2', 'http/1.1'], handshakeTimeout: limits.handshakeTimeoutMs, ...opts.tls }, (socket) => this.#onSecure(socket));
      // A failed or timed-out handshake: node leaves the socket to this listener (a handshake
      // timeout alone would otherwise keep it open).
      this.#server.on('tlsClientError', (_err: Error, socket: TLSSocket) => socket.destroy());
    } else {
      this.#server = net.createServer({ noDelay: true }, (socket) => this.#onPlain(socket));
    }
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new Error(`cannot listen on ${this.bind}:${this.port}: ${(err as Error & { code?: string }).code ?? err.message}`));
      this.#server.once('error', onError);
      // Exclusive: a stale process on the port must make this fail, as for the uWS listener. In a
      // worker process of `--workers N` the cluster primary shares one listening socket instead
      // (it probed the port first).
      this.#server.listen({ host: this.bind, port: this.port, exclusive: !NodeListener.sharedPort }, () => {
        this.#server.removeListener('error', onError);
        this.#server.on('error', (err) => this.onError(err));
        this.#listening = true;
        resolve();
      });
    });
  }

  get listening(): boolean {
    return this.#listening;
  }

  /** The bound port (useful with port 0). */
  get boundPort(): number {
    const a = this.#server.address();
    return typeof a === 'object' && a ? a.port : this.port;
  }

  /**
   * Certificate rotation: new handshakes use these options (`tls.Server.setSecureContext`), open
   * connections keep theirs. `requestCert` / `rejectUnauthorized` apply to new connections too.
   * The SNICallback given at construction stays: it should read the current certificates itself.
   */
  updateTls(options: http2.SecureServerOptions): void {
    const server = this.#server;
    if (!(server instanceof tls.Server)) throw new Error('updateTls on a plaintext listener');
    server.setSecureContext(options);
    const mutable = server as unknown as { requestCert: boolean; rejectUnauthorized: boolean };
    if (options.requestCert !== undefined) mutable.requestCert = options.requestCert;
    if (options.rejectUnauthorized !== undefined) mutable.rejectUnauthorized = options.rejectUnauthorized;
  }

  requestDone(): void {
    this.inflight--;
    if (this.inflight === 0 && this.#idle) this.#idle();
  }

  /**
   * Stops accepting, tells HTTP/2 clients to go away (GOAWAY) and closes idle HTTP/1.1
   * connections, lets requests in flight finish (up to `drainMs`), then closes every connection.
   */
  async close(drainMs: number): Promise<void> {
    this.#listening = false;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sessions) s.close();
    this.#h1.closeIdleConnections();
    // WebSockets are closed with 1001, spread over the drain.
    const websockets = this.websockets?.drain(drainMs);
    await requestsDrained(this.inflight, drainMs, (idle) => (this.#idle = idle));
    await websockets;
    this.#idle = null;
    this.websockets?.closeAll();
    for (const s of this.#sessions) s.destroy();
    for (const s of this.#sockets) s.destroy();
    unguardHttp1Server(this.#h1);
    await closed;
  }

  // ---- Connections ----

  #track(socket: Socket): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    socket.on('error', () => undefined);
  }

  #onSecure(socket: TLSSocket): void {
    this.#track(socket);
    socket.setNoDelay(true);
    if (this.acceptSecure && !this.acceptSecure(socket)) return void socket.destroy();
    if (socket.alpnProtocol === 'h2') this.#h2.emit('connection', socket);
    else this.#h1.emit('connection', socket);
  }

  /** Plaintext: HTTP/2 when the client starts with the connection preface (prior knowledge), else HTTP/1.1. */
  #onPlain(socket: Socket): void {
    this.#track(socket);
    let seen: Buffer | null = null;
    let proxy = this.proxyProtocol;
    socket.setTimeout(this.#limits.handshakeTimeoutMs, () => socket.destroy());
    const onData = (chunk: Buffer): void => {
      let buf: Buffer = seen === null ? chunk : Buffer.concat([seen, chunk]);
      if (proxy) {
        // The PROXY protocol header first (Envoy's proxy_protocol listener filter): required.
        const h = parseProxyHeader(buf);
        if (h.kind === 'incomplete') {
          seen = buf;
          return;
        }
        if (h.kind === 'invalid') return void socket.destroy();
        proxy = false;
        (socket as Socket & { [PROXIED]?: Proxied })[PROXIED] = { source: h.source, destination: h.destination };
        buf = buf.subarray(h.consumed);
        seen = null;
        if (buf.length === 0) return;
      }
      const n = Math.min(buf.length, PREFACE.length);
      const h2 = !this.http1Only && buf.compare(PREFACE, 0, n, 0, n) === 0;
      if (h2 && buf.length < PREFACE.length) {
        seen = buf;
        return;
      }
      socket.removeListener('data', onData);
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(buf);
      if (h2) {
        this.#h2.emit('connection', socket);
      } else {
        this.#h1.emit('connection', socket);
        socket.resume();
      }
    };
    socket.on('data', onData);
  }

  #peer(key: object, socket: Socket | TLSSocket | null | undefined): PeerIdentity | undefined {
    if (this.scheme !== 'https' || !socket) return undefined;
    let p = this.#peers.get(key);
    if (!p) {
      const cert = (socket as TLSSocket).getPeerX509Certificate?.();
      const spiffeId = spiffeIdOfSan(cert?.subjectAltName);
      const who = principalOf(spiffeId);
      p = { certificate: cert, spiffeId, principal: who?.principal, namespace: who?.namespace || undefined };
      this.#peers.set(key, p);
    }
    return p;
  }

  /** The client's and the local address (the PROXY protocol's when it gave them) and the SNI. */
  #addresses(sink: { remoteAddress: string; localAddress?: string | undefined; serverName?: string | undefined }, socket: Socket | TLSSocket | null | undefined): void {
    const proxied = (socket as (Socket & { [PROXIED]?: Proxied }) | null | undefined)?.[PROXIED];
    sink.remoteAddress = proxied?.source ?? clientAddress(socket?.remoteAddress);
    sink.localAddress = proxied?.destination ?? clientAddress(socket?.localAddress);
    if (this.scheme === 'https') {
      const sni = (socket as TLSSocket | null | undefined)?.servername;
      if (typeof sni === 'string') sink.serverName = sni;
    }
  }

  // ---- Requests ----

  /**
   * node emits 'stream' while nghttp2 is still reading the same bytes, before it has seen a
   * RST_STREAM that came with the HEADERS: new streams are served once the read is done (the
   * check phase of the same loop turn), so that a stream reset in the same read (HTTP/2 rapid
   * reset) never starts or connects anything upstream.
   */
  #deferStream(stream: ServerHttp2Stream, guard: SessionGuard, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]): void {
    if (this.#newStreams.length === 0) setImmediate(serveNewStreams, this);
    this.#newStreams.push({ stream, guard, headers, flags, rawHeaders });
  }

  /** The streams deferred by #deferStream, in order. */
  serveNewStreams(): void {
    const batch = this.#newStreams;
    this.#newStreams = [];
    for (const s of batch) this.#onStream(s.stream, s.guard, s.headers, s.flags, s.rawHeaders);
  }

  #onStream(stream: ServerHttp2Stream, guard: SessionGuard, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]): void {
    // Reset by the client in the read that opened it (rapid reset): nothing is started for it.
    if (stream.destroyed || stream.closed) return void guard.resetBeforeServed();
    // The config version this request runs with, to its end.
    const ctx = this.ctx;
    const sink = new H2StreamSink(stream, this);
    const openedAt = performance.now();
    guard.streamOpened();
    stream.once('close', () => guard.streamClosed(sink.resetByClient, openedAt));
    try {
      const session = stream.session;
      const socket = session?.socket;
      this.#addresses(sink, socket);
      const peer = session ? this.#peer(session, socket) : undefined;
      if (peer) {
        sink.peerCertificate = peer.certificate;
        sink.peerSpiffeId = peer.spiffeId;
        sink.peerPrincipal = peer.principal;
        sink.peerNamespace = peer.namespace;
      }
      const target = headers[':path'];
      const authority = headers[':authority'] ?? headers['host'];
      const method = headers[':method'] ?? 'GET';
      const hasBody = (flags & NGHTTP2_FLAG_END_STREAM) === 0 && !stream.endAfterHeaders;
      this.#serve(ctx, sink, method, typeof target === 'string' ? target : '', typeof authority === 'string' ? authority : '', rawHeaders, true, hasBody);
      sink.readBody(hasBody);
    } catch (err) {
      sink.fail(err);
    }
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const ctx = this.ctx;
    const sink = new H1Sink(req, res, this);
    try {
      const socket = req.socket;
      this.#addresses(sink, socket);
      const peer = this.#peer(socket, socket);
      if (peer) {
        sink.peerCertificate = peer.certificate;
        sink.peerSpiffeId = peer.spiffeId;
        sink.peerPrincipal = peer.principal;
        sink.peerNamespace = peer.namespace;
      }
      const h = req.headers;
      const hasBody = (h['content-length'] !== undefined && h['content-length'] !== '0') || h['transfer-encoding'] !== undefined;
      // HTTP/1.0 (426, as Envoy without accept_http_10), other versions, two Hosts, codings.
      const problem = requestProblem(req);
      if (problem) {
        res.shouldKeepAlive = false;
        const head: RequestHead = { method: req.method ?? 'GET', path: '/', query: '', host: '', authority: '', scheme: this.scheme, headers: [], localPort: this.port };
        const ex = (sink.exchange = new Exchange(sink, ctx, head, undefined));
        sink.readBody();
        return ex.localReply(problem[0], 'DPE', problem[1]);
      }
      let target = req.url ?? '';
      let authority = h.host ?? '';
      // Absolute-form (a client of a forward proxy, or any client: RFC 9112 3.2.2): its authority replaces Host.
      const absolute = absoluteForm(target);
      if (absolute) ({ authority, target } = absolute);
      this.#serve(ctx, sink, req.method ?? 'GET', target, authority, req.rawHeaders, false, hasBody);
      sink.readBody(hasBody);
    } catch (err) {
      sink.fail(err);
    }
  }

  /**
   * The request head as the uWS listener builds it: the connection's headers dropped, the proxy's
   * added, the path normalised; `problem` is the local answer to a request that cannot be routed
   * (limits: 431 / 414, no valid authority: 400).
   */
  #requestHead(conn: ConnectionFacts, method: string, target: string, authority: string, raw: readonly string[], h2: boolean): { head: RequestHead; problem: [number, string] | null } {
    const q = target.indexOf('?');
    const rawPath = q >= 0 ? target.slice(0, q) : target;
    const query = q >= 0 ? target.slice(q + 1) : '';
    const path = normalizePath(rawPath);
    const fields = new ForwardHeaders();
    for (let i = 0; i < raw.length; i += 2) {
      // HTTP/2 names are lower case already; HTTP/1.1 raw names keep the client's case.
      const k = h2 ? raw[i]! : raw[i]!.toLowerCase();
      // Pseudo-headers are HTTP/2's request line: read by the caller, never forwarded, but counted
      // against the limits (Envoy's header map holds them too).
      if (k.charCodeAt(0) === 58 /* : */) {
        fields.size += k.length + raw[i + 1]!.length + 4;
        fields.fields++;
        continue;
      }
      fields.add(k, raw[i + 1]!, h2);
    }
    const headers = fields.finish(conn.remoteAddress, this.scheme);
    const head: RequestHead = { method, path, query, host: hostOnly(authority), authority, scheme: this.scheme, headers, localPort: this.port };
    if (fields.forceTrace) head.forceTrace = true;
    const problem = headProblem(fields, authority, rawPath, path.length, query.length);
    return { head, problem };
  }

  /** Builds the request head, answers it if it cannot be routed, else routes it with this config version. */
  #serve(ctx: DataPlaneContext, sink: H2StreamSink | H1Sink, method: string, target: string, authority: string, raw: readonly string[], h2: boolean, hasBody: boolean): void {
    const { head, problem } = this.#requestHead(sink, method, target, authority, raw, h2);
    if (problem) {
      const ex = (sink.exchange = new Exchange(sink, ctx, head, undefined));
      return ex.localReply(problem[0], 'DPE', problem[1]);
    }
    // ACME HTTP-01 challenges for this gateway's own certificates, before routing (plaintext ports).
    if (this.scheme === 'http' && acmeChallenges.size > 0 && head.path.startsWith(ACME_CHALLENGE_PREFIX)) {
      const answer = acmeChallenges.get(head.path.slice(ACME_CHALLENGE_PREFIX.length));
      if (answer !== undefined) return void (sink.exchange = new Exchange(sink, ctx, head, undefined)).localReply(200, '', answer);
    }
    const vhost = ctx.table?.virtualHost(head);
    const ex = (sink.exchange = new Exchange(sink, ctx, head, vhost && firstMatch(vhost, head)));
    if (vhost?.rerouteAfterAuthn) ex.rerouteIn = vhost;
    ex.begin(hasBody, head.headers);
  }

  // ---- Upgrades (HTTP/1.1 on TLS ports and on the strict engine's plaintext ports) ----

  /**
   * WebSocket handshakes go to the WebSocket proxy, which hands back (to #answerUpgrade) those it
   * does not forward. `Upgrade: h2c` is served as HTTP/1.1 (Envoy's codec drops it). Other
   * upgrades are refused 403, as Envoy refuses an upgrade type Istio does not configure
   * (`upgrade_failed`).
   */
  #onUpgrade(req: IncomingMessage, socket: Socket, bodyHead: Buffer): void {
    try {
      const conn: ConnectionFacts & { remoteAddress: string } = { remoteAddress: '' };
      this.#addresses(conn, socket);
      const peer = this.#peer(socket, socket);
      const facts: ConnectionFacts = peer ? { ...conn, peerSpiffeId: peer.spiffeId, peerPrincipal: peer.principal, peerNamespace: peer.namespace } : conn;
      const upgrade = String(req.headers.upgrade ?? '').toLowerCase();
      if (upgrade === 'h2c') return this.#withoutUpgrade(req, socket, bodyHead);
      // HTTP/1.0, two Hosts, a coding: refused as on any request (strict-http1.ts).
      const refused = requestProblem(req);
      if (refused) return this.#answerUpgrade(req, socket, refused);
      if (upgrade !== 'websocket') return this.#answerUpgrade(req, socket, [403, '']);
      const { head, problem } = this.#requestHead(facts, req.method ?? 'GET', req.url ?? '', req.headers.host ?? '', req.rawHeaders, false);
      this.websockets!.nodeUpgrade(req, socket, bodyHead, problem ? null : head, facts, () => this.#answerUpgrade(req, socket));
    } catch (err) {
      this.onError(err);
      socket.destroy();
    }
  }

  /**
   * A request that asked for `Upgrade: h2c` (curl --http2 on http://), served as HTTP/1.1 on the
   * same keep-alive connection, as Envoy does. Node's parser has already left the socket, so the
   * request goes back to the HTTP/1.1 server as it came without its upgrade fields, followed by
   * what the client sent after its head: its body and any next request, parsed again, strictly.
   */
  #withoutUpgrade(req: IncomingMessage, socket: Socket, bodyHead: Buffer): void {
    const raw = req.rawHeaders;
    // Fields beyond maxHeadersCount were not kept: the head cannot be rebuilt whole (its framing
    // fields may be among them), so it is refused and the connection closed.
    if (raw.length > 2 * MAX_REQUEST_HEADERS_COUNT) return this.#answerUpgrade(req, socket, [431, 'Request Header Fields Too Large']);
    let head = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}\r\n`;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      let value = raw[i + 1]!;
      if (name === 'upgrade' || name === 'http2-settings') continue;
      if (name === 'connection') {
        value = value
          .split(',')
          .map((t) => t.trim())
          .filter((t) => t !== '' && !/^(upgrade|http2-settings)$/i.test(t))
          .join(', ');
        if (value === '') continue;
      }
      head += `${raw[i]}: ${value}\r\n`;
    }
    socket.pause();
    socket.unshift(Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), bodyHead]));
    this.#h1.emit('connection', socket);
    socket.resume();
  }

  /**
   * An upgrade request answered over HTTP/1.1 as the request handler answers it (or with `local`),
   * then the connection is closed: Node's parser has left the socket, so it cannot read another.
   */
  #answerUpgrade(req: IncomingMessage, socket: Socket, local?: [number, string]): void {
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    (res as unknown as { assignSocket(s: Socket): void }).assignSocket(socket);
    res.once('finish', () => socket.end());
    if (!local) return this.#onRequest(req, res);
    const sink = new H1Sink(req, res, this);
    try {
      this.#addresses(sink, socket);
      const { head } = this.#requestHead(sink, req.method ?? 'GET', req.url ?? '', req.headers.host ?? '', req.rawHeaders, false);
      const ex = (sink.exchange = new Exchange(sink, this.ctx, head, undefined));
      // (Past an upgrade head, what the client sends is the socket's, not this request's body.)
      sink.readBody(false);
      ex.localReply(local[0], '', local[1]);
    } catch (err) {
      sink.fail(err);
    }
  }
}

interface NewStream {
  stream: ServerHttp2Stream;
  guard: SessionGuard;
  headers: IncomingHttpHeaders;
  flags: number;
  rawHeaders: string[];
}

function serveNewStreams(listener: NodeListener): void {
  listener.serveNewStreams();
}

function clientAddress(a: string | undefined): string {
  if (!a) return '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

