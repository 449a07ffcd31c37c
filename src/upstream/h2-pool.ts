// HTTP/2 connections to one upstream endpoint (h2c, or h2 over TLS when the cluster originates
// TLS): what gRPC and HTTP2 service ports use, since undici drops HTTP/2 response trailers.
// It speaks Gatehouse's upstream handler protocol (errors.ts), so the request lifecycle drives
// every kind of pool the same way, with the same retries, timeouts, outlier detection and circuit
// breaking. Failures are UpstreamErrors: a session that never connected fails its streams as a
// connection failure, a refused stream (REFUSED_STREAM, past GOAWAY) as `refused-stream`.
//
// Sessions: opened on demand, many streams each, up to the peer's SETTINGS_MAX_CONCURRENT_STREAMS
// (and the DestinationRule's maxConcurrentStreams); a session that received GOAWAY, reached
// maxRequestsPerConnection or closed takes no new streams and is replaced; idle sessions close.
// With TLS and no fixed `sni`, sessions are per SNI name (the request's Host).
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import net from 'node:net';
import tlsModule from 'node:tls';
import { Readable } from 'node:stream';
import type { TlsOrigination } from './tls-origination.js';
import { UpstreamError, toUpstreamError, type UpstreamHandler, type UpstreamPool, type UpstreamRequest } from './errors.js';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR } = http2.constants;

export type { UpstreamPool } from './errors.js';

export interface H2PoolOptions {
  connectTimeoutMs: number;
  /** Close a session after this long without streams. */
  idleTimeoutMs: number;
  /** Envoy's stream idle timeout: a stream with no activity this long fails. */
  streamIdleTimeoutMs: number;
  /** Streams per session at most (the peer's own limit applies too); 0 for no limit of ours. */
  maxConcurrentStreams: number;
  /** Sessions per SNI name at most (DestinationRule tcp.maxConnections); 0 for no limit. */
  maxSessions: number;
  /** Streams a session carries in its life (maxRequestsPerConnection); 0 for no limit. */
  maxStreamsPerSession: number;
  tls: TlsOrigination | null;
}

// Request headers HTTP/2 forbids (connection-specific) or that become pseudo-headers.
const SKIP_REQUEST = new Set(['host', 'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'http2-settings']);

interface Session {
  readonly h2: ClientHttp2Session;
  readonly key: string;
  connected: boolean;
  /** Takes no new streams (GOAWAY received, stream budget used, closing). */
  draining: boolean;
  active: number;
  total: number;
  /** The error that ended the session, for streams that fail with it. */
  error: (Error & { code?: string }) | null;
  idleTimer: NodeJS.Timeout | null;
}

interface Waiting {
  opts: UpstreamRequest;
  handler: UpstreamHandler;
  key: string;
  servername: string;
}

type NodeError = Error & { code?: string };

export class H2Pool implements UpstreamPool {
  readonly #address: string;
  readonly #port: number;
  readonly #opts: H2PoolOptions;
  readonly #sessions = new Map<string, Session[]>();
  readonly #waiting: Waiting[] = [];
  #closed = false;
  #closedResolvers: Array<() => void> = [];

  constructor(address: string, port: number, opts: H2PoolOptions) {
    this.#address = address;
    this.#port = port;
    this.#opts = opts;
  }

  dispatch(opts: UpstreamRequest, handler: UpstreamHandler): void {
    if (this.#closed) return fail(handler, new UpstreamError('destroyed', 'the HTTP/2 pool is closed', 'UND_ERR_CLOSED'));
    const tls = this.#opts.tls;
    let session: Session | null;
    let key: string;
    let servername: string;
    try {
      servername = tls ? tls.serverName(hostHeader(opts.headers) ?? this.#address) : '';
      key = tls ? servername : '';
      session = this.#sessionFor(key, servername);
    } catch (err) {
      // Unusable TLS settings (TlsConfigError): a connection failure, as Envoy reports it.
      return fail(handler, toUpstreamError(err, true));
    }
    if (session === null) {
      this.#waiting.push({ opts, handler, key, servername });
      return;
    }
    this.#start(session, opts, handler);
  }

  /** Graceful: no new streams; sessions close once their streams are done. */
  close(): Promise<void> {
    this.#closed = true;
    for (const w of this.#waiting.splice(0)) fail(w.handler, new UpstreamError('destroyed', 'the HTTP/2 pool was closed', 'UND_ERR_CLOSED'));
    const all = [...this.#sessions.values()].flat();
    if (all.length === 0) return Promise.resolve();
    for (const s of all) {
      s.draining = true;
      if (s.active === 0) s.h2.close();
    }
    return new Promise((resolve) => this.#closedResolvers.push(resolve));
  }

  async destroy(): Promise<void> {
    this.#closed = true;
    for (const w of this.#waiting.splice(0)) fail(w.handler, new UpstreamError('destroyed', 'the HTTP/2 pool was destroyed', 'UND_ERR_DESTROYED'));
    for (const s of [...this.#sessions.values()].flat()) s.h2.destroy();
    this.#sessions.clear();
    this.#resolveClosed();
  }

  /** Sessions open now (for tests and the admin page). */
  get sessionCount(): number {
    let n = 0;
    for (const list of this.#sessions.values()) n += list.length;
    return n;
  }

  #limit(s: Session): number {
    const ours = this.#opts.maxConcurrentStreams > 0 ? this.#opts.maxConcurrentStreams : Infinity;
    const peer = s.connected ? (s.h2.remoteSettings.maxConcurrentStreams ?? Infinity) : Infinity;
    return Math.min(ours, peer);
  }

  #sessionFor(key: string, servername: string): Session | null {
    const list = this.#sessions.get(key);
    if (list) {
      for (const s of list) if (!s.draining && !s.h2.destroyed && s.active < this.#limit(s)) return s;
    }
    const max = this.#opts.maxSessions;
    if (max > 0 && list && list.filter((s) => !s.draining).length >= max) return null;
    return this.#open(key, servername);
  }

  #open(key: string, servername: string): Session {
    const tls = this.#opts.tls;
    const host = this.#address.includes(':') ? `[${this.#address}]` : this.#address;
    const authority = `${tls ? 'https' : 'http'}://${host}:${this.#port}`;
    const options: http2.SecureClientSessionOptions = {
      settings: { enablePush: false },
      // Header lists as large as the downstream may send (60 KiB), with room.
      maxHeaderListPairs: 2000,
      maxSendHeaderBlockLength: 128 * 1024,
    };
    // Small gRPC messages must not wait for Nagle's algorithm: our own sockets, with TCP_NODELAY.
    const host0 = this.#address;
    const port0 = this.#port;
    if (tls) {
      // Unusable TLS settings throw here (TlsConfigError, a connection failure) to the caller.
      const tlsOptions: tlsModule.ConnectionOptions = { ...tls.connectOptions(), host: host0, port: port0, ALPNProtocols: ['h2'], ...(servername ? { servername } : {}) };
      options.createConnection = () => tlsModule.connect(tlsOptions).setNoDelay(true);
    } else {
      options.createConnection = () => net.connect({ host: host0, port: port0, noDelay: true });
    }
    const h2 = http2.connect(authority, options);
    const s: Session = { h2, key, connected: false, draining: false, active: 0, total: 0, error: null, idleTimer: null };
    let list = this.#sessions.get(key);
    if (!list) this.#sessions.set(key, (list = []));
    list.push(s);
    const connectTimer = setTimeout(() => {
      if (!s.connected) h2.destroy(Object.assign(new Error(`connect timeout after ${this.#opts.connectTimeoutMs} ms`), { code: 'UND_ERR_CONNECT_TIMEOUT' }));
    }, this.#opts.connectTimeoutMs);
    h2.once('connect', () => {
      clearTimeout(connectTimer);
      s.connected = true;
    });
    // The peer's SETTINGS may raise the stream limit: waiting requests can go now.
    h2.on('remoteSettings', () => this.#drainWaiting());
    h2.on('error', (err: NodeError) => {
      s.error = err;
    });
    h2.on('goaway', () => {
      s.draining = true;
      this.#drainWaiting();
    });
    h2.once('close', () => {
      clearTimeout(connectTimer);
      if (s.idleTimer) clearTimeout(s.idleTimer);
      s.draining = true;
      const l = this.#sessions.get(key);
      if (l) {
        const i = l.indexOf(s);
        if (i >= 0) l.splice(i, 1);
        if (l.length === 0) this.#sessions.delete(key);
      }
      if (this.#closed && this.#sessions.size === 0) this.#resolveClosed();
      else this.#drainWaiting();
    });
    return s;
  }

  #resolveClosed(): void {
    for (const r of this.#closedResolvers.splice(0)) r();
  }

  #drainWaiting(): void {
    if (this.#waiting.length === 0) return;
    const waiting = this.#waiting.splice(0);
    for (const w of waiting) {
      if (this.#closed) {
        fail(w.handler, new UpstreamError('destroyed', 'the HTTP/2 pool was closed', 'UND_ERR_CLOSED'));
        continue;
      }
      let s: Session | null;
      try {
        s = this.#sessionFor(w.key, w.servername);
      } catch (err) {
        fail(w.handler, toUpstreamError(err, true));
        continue;
      }
      if (s === null) this.#waiting.push(w);
      else this.#start(s, w.opts, w.handler);
    }
  }

  #streamDone(s: Session): void {
    s.active--;
    if (s.draining) {
      if (s.active === 0 && !s.h2.closed) s.h2.close();
    } else if (s.active === 0 && this.#opts.idleTimeoutMs > 0) {
      s.idleTimer = setTimeout(() => {
        s.draining = true;
        if (s.active === 0) s.h2.close();
      }, this.#opts.idleTimeoutMs);
      s.idleTimer.unref();
    }
    this.#drainWaiting();
  }

  #start(s: Session, opts: UpstreamRequest, handler: UpstreamHandler): void {
    if (s.idleTimer) {
      clearTimeout(s.idleTimer);
      s.idleTimer = null;
    }
    s.active++;
    s.total++;
    if (this.#opts.maxStreamsPerSession > 0 && s.total >= this.#opts.maxStreamsPerSession) s.draining = true;
    const tls = this.#opts.tls;
    const headers: OutgoingHttpHeaders = {
      ':method': opts.method,
      ':path': opts.path,
      ':scheme': tls ? 'https' : 'http',
    };
    let authority: string | undefined;
    let grpc = false;
    const raw = opts.headers;
    if (Array.isArray(raw)) {
      for (let i = 0; i < raw.length; i += 2) {
        const name = String(raw[i]).toLowerCase();
        const value = String(raw[i + 1]);
        if (SKIP_REQUEST.has(name)) {
          if (name === 'host') authority = value;
          continue;
        }
        if (name === 'content-type' && value.startsWith('application/grpc')) grpc = true;
        const prev = headers[name];
        if (prev === undefined) headers[name] = value;
        else if (Array.isArray(prev)) prev.push(value);
        else headers[name] = [String(prev), value];
      }
    }
    headers[':authority'] = authority ?? `${this.#address}:${this.#port}`;
    // gRPC servers expect `te: trailers` (the only TE value HTTP/2 allows).
    if (grpc) headers['te'] = 'trailers';
    const body = opts.body;
    const noBody = body === null || body === undefined || (Buffer.isBuffer(body) && body.length === 0);
    new H2Request(this, s, handler, headers, noBody ? null : (body as Buffer | Readable), this.#opts.streamIdleTimeoutMs).start();
  }

  /** Called by a request when its stream is over. */
  released(s: Session): void {
    this.#streamDone(s);
  }
}

/** One request/response exchange on a session, reporting to an upstream handler. */
class H2Request {
  readonly #pool: H2Pool;
  readonly #session: Session;
  readonly #handler: UpstreamHandler;
  readonly #headers: OutgoingHttpHeaders;
  readonly #body: Buffer | Readable | null;
  readonly #idleMs: number;
  #stream: ClientHttp2Stream | null = null;
  #done = false;
  #released = false;
  #trailers: Buffer[] | null = null;
  #gotHeaders = false;

  constructor(pool: H2Pool, session: Session, handler: UpstreamHandler, headers: OutgoingHttpHeaders, body: Buffer | Readable | null, idleMs: number) {
    this.#pool = pool;
    this.#session = session;
    this.#handler = handler;
    this.#headers = headers;
    this.#body = body;
    this.#idleMs = idleMs;
  }

  start(): void {
    const s = this.#session;
    let stream: ClientHttp2Stream;
    try {
      stream = s.h2.request(this.#headers, { endStream: this.#body === null });
    } catch (err) {
      // Thrown synchronously: nothing was sent. A session that went away between the pick and
      // the request fails it as a connection failure (never connected) or a refused stream.
      this.#release();
      const code = (err as NodeError).code;
      let e: UpstreamError;
      if (!s.connected && s.error) e = toUpstreamError(s.error, true);
      else if (code === 'ERR_HTTP2_GOAWAY_SESSION' || code === 'ERR_HTTP2_INVALID_SESSION') e = new UpstreamError('refused-stream', (err as Error).message, code, err);
      else e = toUpstreamError(s.error ?? err);
      this.#finishWithError(e);
      return;
    }
    this.#stream = stream;
    this.#handler.onStart((err?: Error) => this.#abort(err));
    if (this.#done) return; // aborted synchronously by onStart
    if (this.#idleMs > 0) {
      stream.setTimeout(this.#idleMs, () => {
        this.#fail(new UpstreamError('body-timeout', `upstream stream idle for ${this.#idleMs} ms`, 'UND_ERR_BODY_TIMEOUT'));
        stream.close(NGHTTP2_CANCEL);
      });
    }
    stream.on('response', (headers: IncomingHttpHeaders) => this.#onResponse(headers));
    stream.on('data', (chunk: Buffer) => {
      if (this.#done) return;
      if (!this.#handler.onData(chunk)) stream.pause();
    });
    stream.on('trailers', (trailers: IncomingHttpHeaders) => {
      this.#trailers = toRaw(trailers);
    });
    stream.on('end', () => {
      if (this.#done) return;
      if (!this.#gotHeaders) return; // reported by 'close'
      this.#done = true;
      this.#release();
      this.#handler.onEnd(this.#trailers);
    });
    stream.on('error', (err: NodeError) => this.#fail(this.#classify(err, stream)));
    stream.on('close', () => {
      this.#release();
      if (this.#done) return;
      const code = stream.rstCode;
      const err: NodeError = new Error(`upstream stream reset (code ${code ?? 'none'})`);
      err.code = 'UND_ERR_SOCKET';
      this.#fail(this.#classify(err, stream));
    });
    const body = this.#body;
    if (body === null) return;
    if (Buffer.isBuffer(body)) {
      stream.end(body);
      return;
    }
    // A streamed request body, with backpressure: pipe pauses the source when the stream is full.
    body.on('error', () => {
      if (!stream.destroyed) stream.close(NGHTTP2_CANCEL);
    });
    body.pipe(stream);
  }

  #onResponse(headers: IncomingHttpHeaders): void {
    if (this.#done) return;
    const status = Number(headers[':status']);
    this.#gotHeaders = true;
    const stream = this.#stream!;
    const ok = this.#handler.onHead(status, toRaw(headers), () => stream.resume());
    if (ok === false && !this.#done) stream.pause();
  }

  #classify(err: NodeError, stream: ClientHttp2Stream): UpstreamError {
    const s = this.#session;
    if (!s.connected) {
      // Streams of a session that failed are cancelled (ERR_HTTP2_STREAM_CANCEL) before the session
      // reports its own error; the cause is the connection's failure.
      const cause = s.error ?? (err.code === 'ERR_HTTP2_STREAM_CANCEL' && err.cause instanceof Error ? err.cause : err);
      return toUpstreamError(cause, true);
    }
    if (!this.#gotHeaders && (stream.rstCode === NGHTTP2_REFUSED_STREAM || err.code === 'ERR_HTTP2_GOAWAY_SESSION' || (stream.rstCode === NGHTTP2_NO_ERROR && s.draining))) {
      return new UpstreamError('refused-stream', err.message, err.code, err);
    }
    return toUpstreamError(err);
  }

  #abort(_err?: Error): void {
    if (this.#done) return;
    this.#done = true;
    const stream = this.#stream;
    if (stream && !stream.destroyed) stream.close(NGHTTP2_CANCEL);
    this.#unpipe();
    this.#release();
  }

  #fail(err: UpstreamError): void {
    if (this.#done) return;
    this.#finishWithError(err);
    const stream = this.#stream;
    if (stream && !stream.destroyed) stream.close(NGHTTP2_CANCEL);
  }

  #finishWithError(err: UpstreamError): void {
    this.#done = true;
    this.#unpipe();
    fail(this.#handler, err);
  }

  #unpipe(): void {
    const body = this.#body;
    if (body instanceof Readable && this.#stream) body.unpipe(this.#stream);
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#pool.released(this.#session);
  }
}

function fail(handler: UpstreamHandler, err: UpstreamError): void {
  try {
    handler.onError(err);
  } catch {
    // a handler's own failure must not break the pool
  }
}

function hostHeader(headers: readonly string[]): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (String(headers[i]).toLowerCase() === 'host') return String(headers[i + 1]);
  return undefined;
}

/** Node's header object as undici's raw form: [name, value, ...] Buffers, pseudo-headers left out. */
function toRaw(h: IncomingHttpHeaders): Buffer[] {
  const out: Buffer[] = [];
  for (const name in h) {
    if (name.charCodeAt(0) === 58 /* : */) continue;
    const v = h[name];
    if (v === undefined) continue;
    const n = Buffer.from(name, 'latin1');
    if (Array.isArray(v)) for (const x of v) out.push(n, Buffer.from(x, 'latin1'));
    else out.push(n, Buffer.from(String(v), 'latin1'));
  }
  return out;
}
