// ResponseSinks of the node:http2 engine: one for HTTP/2 streams (h2 and h2c), one for the
// HTTP/1.1 requests the same listener accepts (node:http). Both keep the ResponseSink contract:
// `closed` once the response is finished or the client has gone, a single drain callback,
// paired pause/resume of the request body, `finished` once.
import type { X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import http2, { type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { edgeLimits } from './edge-limits.js';
import type { Exchange } from './exchange.js';
import { writableHeaderValue, type HeaderValue, type ResponseSink } from './sink.js';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;
const EMPTY = Buffer.alloc(0);
/**
 * While the gateway holds a client's HTTP/1.1 body back (the upstream is not taking it), nothing
 * reads or writes that socket, and a reset from the client goes unseen (libuv stops watching a
 * socket it does not read). A zero-byte write to the TCP socket this often shows such a reset
 * (nothing is sent, nothing read).
 */
const PAUSED_BODY_PROBE_MS = 1_000;

/** What a sink needs of its listener. */
export interface SinkOwner {
  inflight: number;
  requestDone(): void;
  onError: (err: unknown) => void;
}

/** The peer certificate of a TLS connection, read once per connection. */
export interface PeerIdentity {
  certificate: X509Certificate | undefined;
  spiffeId: string | undefined;
  /** `source.principal` / `source.namespace` (principalOf in src/tls/spiffe.ts). */
  principal: string | undefined;
  namespace: string | undefined;
}

// Connection-specific headers HTTP/2 forbids in a response (Node throws on them).
const H2_FORBIDDEN = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'http2-settings']);

function headerName(n: HeaderValue): string {
  const s = typeof n === 'string' ? n : n.toString('latin1');
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) return s.toLowerCase();
  }
  return s;
}

/** A flat [name, value, ...] list as Node's header object; repeated names become arrays. */
function toHeaderObject(list: readonly HeaderValue[], into: OutgoingHttpHeaders): OutgoingHttpHeaders {
  for (let i = 0; i < list.length; i += 2) {
    const name = headerName(list[i]!);
    if (name.charCodeAt(0) === 58 /* : */ || H2_FORBIDDEN.has(name)) continue;
    const v = list[i + 1]!;
    if (!writableHeaderValue(v)) continue;
    const value = typeof v === 'string' ? v : v.toString('latin1');
    const prev = into[name];
    if (prev === undefined) into[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else into[name] = [String(prev), value];
  }
  return into;
}

/**
 * What both node sinks share: the ResponseSink fields, the single drain callback, the end of the
 * exchange when the client goes, and the request body's flow control (RequestBody).
 */
abstract class NodeSink {
  exchange: Exchange | null = null;
  closed = false;
  remoteAddress = '';
  peerCertificate: X509Certificate | undefined;
  peerSpiffeId: string | undefined;
  peerPrincipal: string | undefined;
  peerNamespace: string | undefined;
  localAddress: string | undefined;
  serverName: string | undefined;
  protected readonly owner: SinkOwner;
  protected readonly body: RequestBody;
  /** The response was ended by us (not cut off by the client). */
  protected ended = false;
  /** The request body stopped arriving for the stream idle timeout: the rest is not waited for. */
  protected bodyTimedOut = false;
  #drain: (() => void) | null = null;
  /** The stream idle timeout while the request body is arriving (edge-limits.ts). */
  #idleTimer: NodeJS.Timeout | null = null;

  constructor(source: Readable, owner: SinkOwner, probe: (() => void) | null) {
    this.body = new RequestBody(source, this, probe);
    this.owner = owner;
    owner.inflight++;
  }

  /** The stream or response closed: the client went away unless we had ended the response. */
  protected closedByTransport(): void {
    this.#stopIdleTimer();
    this.body.stopProbing();
    const ex = this.exchange;
    this.exchange = null;
    this.closed = true;
    if (ex && !this.ended) ex.downstreamAborted();
    else this.finished();
  }

  /** Body bytes came in, were taken by the upstream, or response bytes went out. */
  activity(): void {
    this.#idleTimer?.refresh();
  }

  /** The request body is complete (or will never be read further). */
  bodyEnded(): void {
    this.#stopIdleTimer();
  }

  #stopIdleTimer(): void {
    if (this.#idleTimer !== null) {
      clearTimeout(this.#idleTimer);
      this.#idleTimer = null;
    }
  }

  /** Nothing moved for the stream idle timeout while the body was arriving. */
  idleTimeout(): void {
    this.#idleTimer = null;
    this.body.stopProbing();
    this.bodyTimedOut = true;
    const ex = this.exchange;
    // 408 when the response has not started (then the connection or stream is let go), else a reset.
    if (ex) ex.streamIdleTimeout();
    else this.abandonBody();
  }

  /** The rest of the request body will not be read: close the HTTP/1.1 connection, reset the stream. */
  protected abstract abandonBody(): void;

  protected drained(): void {
    const cb = this.#drain;
    this.#drain = null;
    cb?.();
  }

  onDrain(cb: () => void): void {
    this.#drain = cb;
  }

  pauseRequestBody(): void {
    if (!this.closed) this.body.pause();
  }

  resumeRequestBody(): void {
    this.activity();
    this.body.resume();
  }

  finished(): void {
    if (this.bodyTimedOut) {
      // The body stalled: it is not drained; the connection (HTTP/1.1) or stream (HTTP/2) goes.
      if (!this.body.finish(false)) return;
      this.exchange = null;
      this.owner.requestDone();
      this.abandonBody();
      return;
    }
    // Whatever the client still sends is read and dropped (bounded by the stream idle timeout): an
    // unread body would stall the stream or keep-alive connection.
    if (!this.body.finish(true)) return;
    this.exchange = null;
    this.owner.requestDone();
  }

  /**
   * Request body: every chunk as it comes, then an empty last one at the end. `expectBody`: the
   * request has a body still to come, timed by the stream idle timeout (also once the request is
   * answered: the rest of the body is read and dropped, within that bound).
   */
  readBody(expectBody = true): void {
    if (expectBody && this.body.open) this.#idleTimer = setTimeout(onStreamIdle, edgeLimits().streamIdleTimeoutMs, this);
    this.body.read();
  }

  abstract start(status: number, headers: readonly HeaderValue[], length: number, noBody: boolean): void;
  abstract end(chunk?: Buffer): void;

  /** A handler error: a 500 if the response has not started (then the request is done). */
  fail(err: unknown): void {
    this.owner.onError(err);
    const ex = this.exchange;
    if (ex) {
      ex.localReply(500, 'DPE', 'internal error');
      return;
    }
    if (!this.closed) {
      this.start(500, ['server', 'istio-envoy'], 0, false);
      this.end();
    }
    this.finished();
  }
}

/** An HTTP/2 stream (h2 or h2c). The response head is sent with the first body bytes, or alone
 *  with END_STREAM when there is no body: a gRPC trailers-only response is one HEADERS frame. */
export class H2StreamSink extends NodeSink implements ResponseSink {
  readonly protocol = 'HTTP/2';
  readonly #stream: ServerHttp2Stream;
  #head: OutgoingHttpHeaders | null = null;
  #noBody = false;
  #responded = false;
  #trailers: OutgoingHttpHeaders | null = null;
  /** The client reset the stream (or its connection went) before the response ended. */
  resetByClient = false;

  constructor(stream: ServerHttp2Stream, owner: SinkOwner) {
    // HTTP/2 keeps reading the connection while a stream is paused (flow control): no probe needed.
    super(stream, owner, null);
    this.#stream = stream;
    stream.on('error', () => undefined); // resets and protocol errors end in 'close'
    stream.on('close', () => {
      this.resetByClient = !this.closed;
      this.closedByTransport();
    });
    stream.on('drain', () => this.drained());
    stream.on('wantTrailers', () => {
      if (!stream.destroyed) stream.sendTrailers(this.#trailers ?? {});
    });
  }

  start(status: number, headers: readonly HeaderValue[], length: number, noBody: boolean): void {
    if (this.closed) return;
    const h = toHeaderObject(headers, { ':status': status });
    if (length > 0 || (length === 0 && !noBody && status !== 204 && status !== 304)) h['content-length'] = length;
    this.#head = h;
    this.#noBody = noBody;
  }

  #respond(endStream: boolean): void {
    this.#responded = true;
    const head = this.#head ?? { ':status': 200 };
    this.#head = null;
    // A stream the client reset: 'close' tells the lifecycle; nothing can be sent.
    if (this.#stream.destroyed || this.#stream.closed) return;
    if (endStream) this.#stream.respond(head, { endStream: true });
    // Trailers may follow whatever the upstream is: the stream waits for them (or none) at its end.
    else this.#stream.respond(head, { waitForTrailers: true });
  }

  write(chunk: Buffer): boolean {
    if (this.closed) return false;
    if (this.#noBody) return true;
    if (!this.#responded) this.#respond(false);
    this.activity();
    return this.#stream.write(chunk);
  }

  end(chunk?: Buffer): void {
    if (this.closed) return;
    this.closed = true;
    this.ended = true;
    const stream = this.#stream;
    if (stream.destroyed) return;
    if (!this.#responded) {
      if (this.#noBody || chunk === undefined || chunk.length === 0) {
        this.#respond(true);
        return;
      }
      this.#respond(false);
    }
    if (this.#noBody || chunk === undefined) stream.end();
    else stream.end(chunk);
  }

  endWithTrailers(trailers: readonly HeaderValue[], chunk?: Buffer): void {
    if (this.closed) return;
    this.#trailers = toHeaderObject(trailers, {});
    if (!this.#responded) this.#respond(false);
    this.closed = true;
    this.ended = true;
    const stream = this.#stream;
    if (stream.destroyed) return;
    if (chunk !== undefined && chunk.length > 0 && !this.#noBody) stream.end(chunk);
    else stream.end();
  }

  reset(): void {
    if (this.closed) return;
    this.closed = true;
    this.exchange = null; // the lifecycle already knows
    if (!this.#stream.destroyed) this.#stream.close(NGHTTP2_INTERNAL_ERROR);
  }

  protected abandonBody(): void {
    const stream = this.#stream;
    if (stream.destroyed || stream.closed) return;
    // After a complete response: RST_STREAM NO_ERROR once it is sent (RFC 9113 8.1), else CANCEL.
    stream.close(this.ended ? NGHTTP2_NO_ERROR : NGHTTP2_CANCEL);
  }

  batch(fn: () => void): void {
    fn();
  }
}

/** An HTTP/1.1 request on the node:http2 listener (its HTTP/1.1 fallback, served by node:http). */
export class H1Sink extends NodeSink implements ResponseSink {
  readonly protocol = 'HTTP/1.1';
  readonly #res: ServerResponse;

  constructor(req: IncomingMessage, res: ServerResponse, owner: SinkOwner) {
    super(req, owner, () => probeTransport(req.socket));
    this.#res = res;
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    res.on('close', () => this.closedByTransport());
    res.on('drain', () => this.drained());
  }

  start(status: number, headers: readonly HeaderValue[], length: number, noBody: boolean): void {
    if (this.closed) return;
    const flat: string[] = [];
    for (let i = 0; i < headers.length; i += 2) {
      const n = headers[i]!;
      const v = headers[i + 1]!;
      if (!writableHeaderValue(v)) continue;
      flat.push(typeof n === 'string' ? n : n.toString('latin1'), typeof v === 'string' ? v : v.toString('latin1'));
    }
    if (length > 0 || (length === 0 && !noBody && status !== 204 && status !== 304)) flat.push('content-length', String(length));
    else if (noBody && length === 0 && status !== 204 && status !== 304) flat.push('content-length', '0');
    // An answer to a request whose body stalled: the connection cannot carry another request.
    if (this.bodyTimedOut) this.#res.shouldKeepAlive = false;
    this.#res.writeHead(status, flat);
  }

  write(chunk: Buffer): boolean {
    if (this.closed) return false;
    this.activity();
    return this.#res.write(chunk);
  }

  end(chunk?: Buffer): void {
    if (this.closed) return;
    this.closed = true;
    this.ended = true;
    if (chunk !== undefined && chunk.length > 0) this.#res.end(chunk);
    else this.#res.end();
  }

  reset(): void {
    if (this.closed) return;
    this.closed = true;
    this.exchange = null;
    this.#res.destroy();
  }

  protected abandonBody(): void {
    const res = this.#res;
    const socket = res.socket;
    if (socket === null || socket.destroyed) return;
    // Once the answer (if any) is flushed: nothing else can be framed on this connection.
    if (!res.headersSent || res.writableFinished) return void socket.destroy();
    const done = (): void => void socket.destroy();
    res.once('finish', done);
    res.once('close', done);
  }

  batch(fn: () => void): void {
    const socket = this.#res.socket;
    if (socket === null || this.closed) return fn();
    socket.cork();
    try {
      fn();
    } finally {
      socket.uncork();
    }
  }
}

function onStreamIdle(sink: NodeSink): void {
  sink.idleTimeout();
}

function onProbe(body: RequestBody): void {
  body.probe();
}

/**
 * A zero-byte write on the client's TCP socket (under TLS: the TCP socket, as node's TLS layer
 * drops the error of an empty write): a reset socket fails it, and the connection is destroyed.
 */
function probeTransport(socket: Socket | null): void {
  if (socket === null || socket.destroyed || !socket.writable) return;
  const tcp = socket instanceof TLSSocket ? (socket as TLSSocket & { _parent?: Socket | null })._parent : socket;
  if (!tcp || tcp.destroyed || !tcp.writable) return;
  tcp.write(EMPTY, (err) => {
    if (err) socket.destroy();
  });
}

/**
 * Request-body flow control shared by both node sinks: paired pause/resume, drained once finished;
 * with a `probe` (HTTP/1.1), the connection is probed for a reset while the body is paused.
 */
class RequestBody {
  readonly #source: Readable;
  readonly #sink: NodeSink;
  readonly #probeFn: (() => void) | null;
  #paused = false;
  #finished = false;
  #probe: NodeJS.Timeout | null = null;

  constructor(source: Readable, sink: NodeSink, probe: (() => void) | null) {
    this.#source = source;
    this.#sink = sink;
    this.#probeFn = probe;
  }

  /** More of the body may still come. */
  get open(): boolean {
    return !this.#source.destroyed && !this.#source.readableEnded;
  }

  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#source.pause();
    if (this.#probeFn !== null && this.open) this.#probe = setTimeout(onProbe, PAUSED_BODY_PROBE_MS, this);
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.stopProbing();
    this.#source.resume();
  }

  stopProbing(): void {
    if (this.#probe !== null) {
      clearTimeout(this.#probe);
      this.#probe = null;
    }
  }

  /** While paused: the connection is probed, then again later. */
  probe(): void {
    this.#probe = null;
    if (!this.#paused || !this.open) return;
    this.#probeFn!();
    if (this.#paused && this.open) this.#probe = setTimeout(onProbe, PAUSED_BODY_PROBE_MS, this);
  }

  /**
   * False when the request was already finished. `drain`: a paused body is resumed so the rest is
   * read and dropped; else it stays where it is (the connection or stream is being let go).
   */
  finish(drain: boolean): boolean {
    if (this.#finished) return false;
    this.#finished = true;
    if (drain) this.resume();
    else this.stopProbing();
    return true;
  }

  /** Every chunk as it comes, then an empty last one at the end of the body. */
  read(): void {
    const sink = this.#sink;
    this.#source.on('data', (chunk: Buffer) => {
      sink.activity();
      sink.exchange?.requestData(chunk, false);
    });
    this.#source.on('end', () => {
      sink.bodyEnded();
      sink.exchange?.requestData(EMPTY, true);
    });
  }
}

