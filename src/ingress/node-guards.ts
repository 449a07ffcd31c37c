// The edge limits (edge-limits.ts) applied to the node:http2 engine's servers and sessions: what
// node:http and node:http2 do not do by themselves for servers that are handed their connections
// instead of listening, and for hostile HTTP/2 clients.
import type http from 'node:http';
import http2, { type ServerHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { EdgeLimits } from './edge-limits.js';

const { NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

/** A connection closed gracefully (GOAWAY, FIN) is destroyed after this if the peer does not finish. */
const CLOSE_LINGER_MS = 1_000;
/**
 * Envoy's premature-reset guard (CVE-2023-44487, HTTP/2 rapid reset): a stream the client resets
 * within this long of opening it is premature; a connection is closed once half of its streams,
 * counted over at least PREMATURE_RESET_STREAMS (or PREMATURE_RESET_STREAMS / 2 premature ones
 * at any point), were.
 */
const PREMATURE_RESET_LIFETIME_MS = 1_000;
const PREMATURE_RESET_STREAMS = 500;

const REQUEST_TIMEOUT_ANSWER = 'HTTP/1.1 408 Request Timeout\r\nserver: istio-envoy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n';

/**
 * node:http's own limits on a server that never listens (the listener hands it connections):
 * request heads must complete within the headers timeout (node checks it only once the server
 * emitted 'listening'), idle keep-alive connections close, and a client that went away while its
 * request was being read is let go at once instead of being answered.
 */
export function guardHttp1Server(server: http.Server, limits: EdgeLimits): void {
  server.requestTimeout = 0; // no bound on a whole request: long uploads are legitimate
  server.headersTimeout = limits.requestHeadersTimeoutMs;
  server.keepAliveTimeout = limits.idleTimeoutMs;
  // How often node looks for expired heads: a head may take up to this much longer than its bound.
  (server as http.Server & { connectionsCheckingInterval: number }).connectionsCheckingInterval = Math.max(100, Math.min(5_000, Math.floor(limits.requestHeadersTimeoutMs / 4)));
  // Starts node's connection tracking (headers timeout, closeIdleConnections) as listen() would.
  server.emit('listening');
  // Runs before the answering handler: what cannot or need not be answered is destroyed here, and
  // that handler then sees a socket that is no longer writable.
  server.prependListener('clientError', (err: Error & { code?: string }, socket: Socket) => {
    const code = err.code ?? '';
    if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      // The head did not complete in time (as Envoy's request_headers_timeout: 408, then closed).
      const res = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
      if (socket.writable && !res?.headersSent) socket.write(REQUEST_TIMEOUT_ANSWER);
      socket.destroy();
      return;
    }
    // The client's end of the connection came before its request did (HPE_INVALID_EOF_STATE), or
    // the connection failed (ECONNRESET, EPIPE...): nobody is left to answer, and ending a TLS
    // socket whose peer reset never finishes. Destroying it also ends the request in flight.
    if (!code.startsWith('HPE_') || code === 'HPE_INVALID_EOF_STATE') socket.destroy();
  });
}

/** Stops what guardHttp1Server started (node's connection check interval). */
export function unguardHttp1Server(server: http.Server): void {
  server.close();
}

/**
 * One HTTP/2 session's limits: its first stream within the headers timeout, closed after the idle
 * timeout without an open stream, a PING when it has been silent that long (nghttp2 may have
 * ended the session on its own, after which node reads nothing more from the socket and the
 * PING is never answered), and Envoy's premature-reset guard.
 */
export class SessionGuard {
  readonly #session: ServerHttp2Session;
  readonly #limits: EdgeLimits;
  #open = 0;
  #closedStreams = 0;
  #premature = 0;
  #idle: NodeJS.Timeout | null;
  #ping: NodeJS.Timeout | null = null;
  #linger: NodeJS.Timeout | null = null;

  constructor(session: ServerHttp2Session, limits: EdgeLimits) {
    this.#session = session;
    this.#limits = limits;
    this.#idle = setTimeout(onSessionIdle, limits.requestHeadersTimeoutMs, this);
    session.setTimeout(limits.idleTimeoutMs, () => this.#silent());
    session.once('close', () => this.#closed());
  }

  /** A stream opened (counted open until streamClosed). */
  streamOpened(): void {
    this.#open++;
    if (this.#idle !== null) {
      clearTimeout(this.#idle);
      this.#idle = null;
    }
  }

  /** A stream closed; `byClient` when the client reset it (or went away) before its response ended. */
  streamClosed(byClient: boolean, openedAt: number): void {
    this.#open--;
    this.#countClosed(byClient && performance.now() - openedAt < PREMATURE_RESET_LIFETIME_MS);
    if (this.#open === 0 && this.#idle === null && !this.#session.destroyed) this.#idle = setTimeout(onSessionIdle, this.#limits.idleTimeoutMs, this);
  }

  /** A stream the client reset before it could be served (never counted open). */
  resetBeforeServed(): void {
    this.#countClosed(true);
  }

  #countClosed(premature: boolean): void {
    this.#closedStreams++;
    if (premature) this.#premature++;
    const p2 = this.#premature * 2;
    if (this.#closedStreams < PREMATURE_RESET_STREAMS ? p2 < PREMATURE_RESET_STREAMS : p2 < this.#closedStreams) return;
    // Too many premature resets: closed at once, as Envoy does (downstream_rq_too_many_premature_resets).
    if (!this.#session.destroyed) this.#session.destroy(new Error('too many premature stream resets'), NGHTTP2_ENHANCE_YOUR_CALM);
  }

  /** No open stream for the idle (or first-stream) timeout: GOAWAY, then the socket is closed. */
  idle(): void {
    this.#idle = null;
    if (this.#open > 0) return;
    this.close();
  }

  /** Graceful close (GOAWAY; node destroys the session once its streams are done), bounded. */
  close(): void {
    const session = this.#session;
    if (session.destroyed) return;
    if (!session.closed) session.close();
    if (this.#open === 0 && this.#linger === null) this.#linger = setTimeout(onSessionLinger, CLOSE_LINGER_MS, session);
  }

  /** Nothing received or sent for the idle timeout: the client must answer a PING. */
  #silent(): void {
    const session = this.#session;
    if (this.#ping !== null || session.destroyed) return;
    try {
      const sent = session.ping(() => {
        if (this.#ping !== null) clearTimeout(this.#ping);
        this.#ping = null;
      });
      if (!sent) return;
    } catch {
      return; // too many PINGs outstanding: one of them is timed already
    }
    this.#ping = setTimeout(onPingTimeout, this.#limits.pingTimeoutMs, session);
  }

  #closed(): void {
    for (const t of [this.#idle, this.#ping, this.#linger]) if (t !== null) clearTimeout(t);
    this.#idle = this.#ping = this.#linger = null;
  }
}

function onSessionIdle(g: SessionGuard): void {
  g.idle();
}

function onSessionLinger(session: ServerHttp2Session): void {
  if (!session.destroyed) session.destroy();
}

function onPingTimeout(session: ServerHttp2Session): void {
  if (!session.destroyed) session.destroy();
}
