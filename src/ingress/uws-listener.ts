// HTTP/1.1 Gateway listeners on uWebSockets.js. This file and websocket.ts (WebSocket upgrades,
// registered here) are the only places that touch uWS objects. The rules uWS imposes are kept by
// construction:
// - every handler registers `onAborted` as its very first statement (UwsSink's constructor), so no
//   path can return without responding or having registered it (which would abort the process);
// - the request is read synchronously, before anything can await;
// - nothing touches `res` after it was ended or aborted (`closed`), and pause/resume are paired;
// - writes from upstream callbacks are corked (one send per response start).
import uWS from 'uWebSockets.js';
import { hostOnly } from '../routing/authority.js';
import { normalizePath } from '../routing/path.js';
import { firstMatch } from '../routing/route-table.js';
import type { RequestHead } from '../routing/request.js';
import { Exchange, type DataPlaneContext } from './exchange.js';
import { writableHeaderValue, type HeaderValue, type ResponseSink } from './sink.js';
import { requestsDrained } from './listener.js';
import { statusLine } from './status.js';
import { ACME_CHALLENGE_PREFIX, acmeChallenges } from '../tls/acme-challenges.js';
import { headProblem, isToken } from './request-head.js';
import { copyArrayBuffer, readForwardHeaders, remoteAddress } from './uws-request.js';
import { WebSocketProxy } from './websocket.js';

// uWS marks every response `uWebSockets: 20`, which fingerprints the stack, unless its loop is
// "silent": uWS.js's undocumented `_cfg('silent')` (src/addon.cpp: Loop::setSilent), per thread's
// loop, so here, where every thread that serves uWS loads it. (`Date` stays: Envoy sends one too.)
(uWS as unknown as { _cfg(key: string): void })._cfg('silent');

const EMPTY = Buffer.alloc(0);

export class UwsSink implements ResponseSink {
  readonly #res: uWS.HttpResponse;
  readonly #listener: UwsHttpListener;
  exchange: Exchange | null = null;
  closed = false;
  remoteAddress = '';
  /** uWS does not tell a connection's local address: the listener's bind address (unless a wildcard). */
  readonly localAddress: string;
  /** The TLS server name whose router took the request (exact names only; '' for the default). */
  serverName = '';
  #length = -1;
  #noBody = false;
  #pending: Buffer | null = null;
  #pendingOffset = 0;
  #drain: (() => void) | null = null;
  #paused = false;
  #finished = false;
  /** Close the connection once the response is written (the request's framing cannot be trusted). */
  closeConnection = false;

  constructor(res: uWS.HttpResponse, listener: UwsHttpListener) {
    // First, always: uWS aborts the process if a handler returns without this or a response.
    res.onAborted(() => this.#aborted());
    this.#res = res;
    this.#listener = listener;
    this.localAddress = listener.localAddress;
    listener.inflight++;
  }

  #aborted(): void {
    this.closed = true;
    const ex = this.exchange;
    this.exchange = null;
    if (ex) ex.downstreamAborted();
    else this.finished();
  }

  start(status: number, headers: readonly HeaderValue[], length: number, noBody: boolean): void {
    if (this.closed) return;
    const res = this.#res;
    res.writeStatus(statusLine(status));
    for (let i = 0; i < headers.length; i += 2) {
      const v = headers[i + 1]!;
      if (writableHeaderValue(v)) res.writeHeader(headers[i]!, v);
    }
    this.#length = length;
    this.#noBody = noBody;
  }

  write(chunk: Buffer): boolean {
    if (this.closed) return false;
    const res = this.#res;
    if (this.#length >= 0) {
      const offset = res.getWriteOffset();
      const [ok, done] = res.tryEnd(chunk, this.#length);
      if (done) {
        this.closed = true;
        return true;
      }
      if (!ok) {
        this.#pending = chunk;
        this.#pendingOffset = offset;
        res.onWritable((off) => this.#writable(off));
        return false;
      }
      return true;
    }
    if (res.write(chunk)) return true;
    res.onWritable(() => {
      this.#fireDrain();
      return true;
    });
    return false;
  }

  #writable(offset: number): boolean {
    const chunk = this.#pending;
    if (this.closed || chunk === null) return true;
    const [ok, done] = this.#res.tryEnd(chunk.subarray(offset - this.#pendingOffset), this.#length);
    if (done) this.closed = true;
    if (ok || done) {
      this.#pending = null;
      this.#fireDrain();
      return true;
    }
    return false;
  }

  #fireDrain(): void {
    const cb = this.#drain;
    this.#drain = null;
    cb?.();
  }

  onDrain(cb: () => void): void {
    this.#drain = cb;
  }

  end(chunk?: Buffer): void {
    if (this.closed) return;
    const res = this.#res;
    if (this.closeConnection && this.#pending === null && res.getWriteOffset() === 0) {
      // A local reply (no body written yet): uWS adds `Connection: close` and closes after it.
      this.closed = true;
      res.end(this.#noBody ? undefined : chunk, true);
      return;
    }
    if (this.#noBody) {
      this.closed = true;
      // endWithoutBody(length) leaves uWS expecting a body and the keep-alive connection dead
      // (measured): announce the length as a header instead.
      if (this.#length > 0) res.writeHeader('content-length', String(this.#length));
      res.endWithoutBody();
      return;
    }
    if (this.#length >= 0) {
      if (this.#pending !== null) return; // finishes in #writable once the client reads
      const body = chunk ?? EMPTY;
      if (res.getWriteOffset() + body.length < this.#length) {
        // The upstream sent less than it announced: the client must not take this as complete.
        this.reset();
        return;
      }
      if (body.length === 0 && this.#length === 0) {
        this.closed = true;
        res.end();
        return;
      }
      this.write(body);
      return;
    }
    this.closed = true;
    if (chunk) res.end(chunk);
    else res.end();
  }

  reset(): void {
    if (this.closed) return;
    this.closed = true;
    this.exchange = null; // closing fires onAborted; the lifecycle already knows
    this.#res.close();
  }

  batch(fn: () => void): void {
    if (this.closed) fn();
    else this.#res.cork(fn);
  }

  pauseRequestBody(): void {
    if (this.closed || this.#paused) return;
    this.#paused = true;
    this.#res.pause();
  }

  resumeRequestBody(): void {
    if (this.closed || !this.#paused) return;
    this.#paused = false;
    this.#res.resume();
  }

  finished(): void {
    if (this.#finished) return;
    this.#finished = true;
    // A paused connection would never read its next keep-alive request.
    if (this.#paused && !this.closed) {
      this.#paused = false;
      this.#res.resume();
    }
    this.exchange = null;
    this.#listener.requestDone();
  }

  /** A request body chunk; uWS reuses the memory after this call, so it is copied. */
  data(ab: ArrayBuffer, isLast: boolean): void {
    const ex = this.exchange;
    if (ex === null) return;
    ex.requestData(copyArrayBuffer(ab), isLast);
  }

  /** Last resort when the handler threw: answer 500 if nothing was sent yet. */
  fail(err: unknown): void {
    this.#listener.onError(err);
    const ex = this.exchange;
    if (ex) {
      ex.localReply(500, 'DPE', 'internal error');
      return;
    }
    if (this.closed) return;
    this.batch(() => {
      this.start(500, ['server', 'istio-envoy'], 0, false);
      this.end();
    });
    this.finished();
  }
}

export interface ListenerOptions {
  bind: string;
  port: number;
  /** The listener's RDS name (`http.<port>`), to find its table in each snapshot. */
  routeName: string;
  scheme: 'http' | 'https';
  /** TLS (SIMPLE HTTPS servers): the default certificate; server names are added with addServerName. */
  ssl?: uWS.AppOptions;
}

/** A uWS app and its live connections (HTTP and WebSocket), to close a replaced app once idle. */
interface AppState {
  app: uWS.TemplatedApp;
  connections: number;
}

/** How often a replaced TLS app (old default certificate) is checked for remaining connections. */
const RETIRED_APP_CHECK_MS = 1_000;

export class UwsHttpListener {
  readonly bind: string;
  readonly port: number;
  readonly routeName: string;
  readonly scheme: 'http' | 'https';
  /**
   * The current config version (route table, clusters, policies), swapped as one reference; a
   * request reads it once and keeps it to its end.
   */
  ctx: DataPlaneContext;
  /** `destination.ip` for its requests: the bind address, '' when it is a wildcard. */
  readonly localAddress: string;
  inflight = 0;
  onError: (err: unknown) => void = () => undefined;
  #app: uWS.TemplatedApp;
  #state!: AppState;
  /** Apps replaced by replaceDefaultCertificate, serving their open connections until closed. */
  readonly #retired = new Set<AppState>();
  #retiredTimer: NodeJS.Timeout | null = null;
  /** TLS: called synchronously in a handshake whose server name is not known; may addServerName. */
  onMissingServerName: (name: string) => void = () => undefined;
  #socket: uWS.us_listen_socket | null = null;
  #idle: (() => void) | null = null;
  /** WebSocket upgrades on this listener (`app.ws`; other requests fall through to `app.any`). */
  readonly websockets: WebSocketProxy;

  constructor(opts: ListenerOptions, ctx: DataPlaneContext) {
    this.bind = opts.bind;
    this.port = opts.port;
    this.routeName = opts.routeName;
    this.scheme = opts.scheme;
    this.localAddress = opts.bind === '0.0.0.0' || opts.bind === '::' ? '' : opts.bind;
    this.ctx = ctx;
    this.websockets = new WebSocketProxy(this);
    this.#app = this.#newApp(opts.ssl);
  }

  /** A uWS app with this listener's handlers: an SSLApp (default certificate) when `ssl` is given. */
  #newApp(ssl: uWS.AppOptions | undefined): uWS.TemplatedApp {
    const app = ssl ? uWS.SSLApp(ssl) : uWS.App();
    const state: AppState = { app, connections: 0 };
    this.#state = state;
    if (ssl) {
      // uWS reports a connection's open and close (+1/-1) but not the close of an upgraded one.
      app.filter((_res, count) => void (state.connections += Number(count)));
      app.missingServerName((name) => this.onMissingServerName(name));
    }
    this.#attachRoutes(app);
    return app;
  }

  /** The handlers, on the app's current router (uWS keeps one router per TLS server name). */
  #attachRoutes(app: uWS.TemplatedApp, serverName = ''): void {
    const state = this.#state;
    const ws = this.websockets.behavior();
    const close = ws.close;
    ws.close = (socket, code, message) => {
      state.connections--;
      close?.(socket, code, message);
    };
    app.ws('/*', ws);
    app.any('/*', (res, req) => {
      const sink = new UwsSink(res, this);
      sink.serverName = serverName;
      try {
        this.#serve(sink, res, req);
      } catch (err) {
        sink.fail(err);
      }
    });
  }

  /** TLS: serves this server name (exact, or `*.example.com` for one label) with these files. */
  addServerName(name: string, files: uWS.AppOptions): void {
    this.#app.addServerName(name, files);
    this.#attachRoutes(this.#app.domain(name), name.startsWith('*') ? '' : name);
  }

  /** TLS: forgets a server name (and, in uWS, its routes); new handshakes get the default. */
  removeServerName(name: string): void {
    this.#app.removeServerName(name);
  }

  /**
   * TLS: a new default certificate. uWS cannot change an app's own certificate, so a new app takes
   * over the listening socket (server names must be added again); the old one keeps serving its
   * open connections and is closed once they are gone.
   */
  replaceDefaultCertificate(ssl: uWS.AppOptions): void {
    const old = this.#state;
    this.#app = this.#newApp(ssl);
    if (this.#socket) {
      uWS.us_listen_socket_close(this.#socket);
      this.#socket = null;
      this.#listenApp(this.#app, (token) => {
        if (token) this.#socket = token;
        else this.onError(new Error(`cannot listen again on ${this.bind}:${this.port} after a certificate change`));
      });
    }
    this.#retired.add(old);
    this.#retiredTimer ??= setInterval(() => {
      for (const r of this.#retired) {
        if (r.connections > 0) continue;
        this.#retired.delete(r);
        r.app.close();
      }
      if (this.#retired.size === 0 && this.#retiredTimer) {
        clearInterval(this.#retiredTimer);
        this.#retiredTimer = null;
      }
    }, RETIRED_APP_CHECK_MS);
    this.#retiredTimer.unref();
  }

  /**
   * False in `--workers N` threads: they share each port through SO_REUSEPORT (uSockets' default),
   * and the main thread probes new ports for stale listeners instead (src/workers/pool.ts).
   */
  static exclusivePort = true;

  #listenApp(app: uWS.TemplatedApp, cb: (token: uWS.us_listen_socket | false) => void): void {
    // Exclusive: a stale process on the port must make this fail, not silently share it (SO_REUSEPORT).
    (app as unknown as { listen(h: string, p: number, o: number, cb: (t: uWS.us_listen_socket | false) => void): void }).listen(
      this.bind,
      this.port,
      UwsHttpListener.exclusivePort ? (uWS as unknown as { LIBUS_LISTEN_EXCLUSIVE_PORT: number }).LIBUS_LISTEN_EXCLUSIVE_PORT : 0,
      cb,
    );
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#listenApp(this.#app, (token) => {
        if (token) {
          this.#socket = token;
          resolve();
        } else reject(new Error(`cannot listen on ${this.bind}:${this.port}: address in use or not available`));
      });
    });
  }

  get listening(): boolean {
    return this.#socket !== null;
  }

  requestDone(): void {
    this.inflight--;
    if (this.inflight === 0 && this.#idle) this.#idle();
  }

  /**
   * Stops accepting, lets requests in flight finish (up to `drainMs`) while WebSockets are closed
   * with 1001 spread over the drain, then closes every connection.
   */
  async close(drainMs: number): Promise<void> {
    if (this.#socket) {
      uWS.us_listen_socket_close(this.#socket);
      this.#socket = null;
    }
    const websockets = this.websockets.drain(drainMs);
    await requestsDrained(this.inflight, drainMs, (idle) => (this.#idle = idle));
    await websockets;
    this.#idle = null;
    this.websockets.closeAll();
    this.#app.close();
    if (this.#retiredTimer) clearInterval(this.#retiredTimer);
    this.#retiredTimer = null;
    for (const r of this.#retired) r.app.close();
    this.#retired.clear();
  }

  /**
   * Closes the listening socket and every app and connection at once, synchronously: a worker
   * thread about to exit must (Node aborts the whole process if a uWS socket is still open).
   */
  abort(): void {
    if (this.#socket) uWS.us_listen_socket_close(this.#socket);
    this.#socket = null;
    this.#app.close();
    if (this.#retiredTimer) clearInterval(this.#retiredTimer);
    this.#retiredTimer = null;
    for (const r of this.#retired) r.app.close();
    this.#retired.clear();
  }

  #serve(sink: UwsSink, res: uWS.HttpResponse, req: uWS.HttpRequest): void {
    // The config version this request runs with, to its end.
    const ctx = this.ctx;
    const method = req.getCaseSensitiveMethod();
    const path = normalizePath(req.getUrl());
    const query = req.getQuery() ?? '';
    sink.remoteAddress = remoteAddress(res);

    const fields = readForwardHeaders(req);
    const { host, hasBody, framing } = fields;
    const headers = fields.finish(sink.remoteAddress, this.scheme);

    const head: RequestHead = { method, path, query, host: hostOnly(host), authority: host, scheme: this.scheme, headers, localPort: this.port };
    if (fields.forceTrace) head.forceTrace = true;
    if (framing !== '' || !isToken(method)) {
      // uWS routes a method that is not a token (`G@T`) and a request with two Host lines, and
      // frames any transfer-encoding as chunked and the first of two content-lengths: refused as
      // Envoy and nginx do (RFC 9112), never forwarded, and the connection closed (the bytes after
      // this head cannot be trusted).
      const ex = (sink.exchange = new Exchange(sink, this.ctx, head, undefined));
      if (framing === '') return ex.localReply(400, 'DPE', 'Bad Request');
      // Answered on the next turn: uWS would parse and serve bytes pipelined after this head if
      // the answer were synchronous (measured), while a connection that pipelines behind a
      // pending response is closed by uWS itself, unread. Either way nothing after it is served.
      sink.closeConnection = true;
      setImmediate(() => ex.localReply(400, 'DPE', 'Bad Request'));
      return;
    }
    // uWS hands the target from its first `/`: the origin-form check is uWS's own.
    const problem = headProblem(fields, host, '/', path.length, query.length);
    if (problem) {
      const ex = (sink.exchange = new Exchange(sink, ctx, head, undefined));
      return ex.localReply(problem[0], 'DPE', problem[1]);
    }
    // ACME HTTP-01 challenges for this gateway's own certificates, before routing.
    if (this.scheme === 'http' && acmeChallenges.size > 0 && path.startsWith(ACME_CHALLENGE_PREFIX)) {
      const answer = acmeChallenges.get(path.slice(ACME_CHALLENGE_PREFIX.length));
      if (answer !== undefined) return (sink.exchange = new Exchange(sink, ctx, head, undefined)).localReply(200, '', answer);
    }
    const vhost = ctx.table?.virtualHost(head);
    const ex = (sink.exchange = new Exchange(sink, ctx, head, vhost && firstMatch(vhost, head)));
    if (vhost?.rerouteAfterAuthn) ex.rerouteIn = vhost;
    // Always consume a body, even one answered locally: unread, it would stall the keep-alive connection.
    if (hasBody) res.onData((ab, isLast) => sink.data(ab, isLast));
    ex.begin(hasBody, headers);
  }
}
