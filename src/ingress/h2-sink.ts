// ResponseSinks of the node:http2 engine: one for HTTP/2 streams (h2 and h2c), one for the
// HTTP/1.1 requests the same listener accepts (node:http). Both keep the ResponseSink contract:
// `closed` once the response is finished or the client has gone, a single drain callback,
// paired pause/resume of the request body, `finished` once.
import type { X509Certificate } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import http2, { type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Readable } from 'node:stream';
import type { Exchange } from './exchange.js';
import { writableHeaderValue, type HeaderValue, type ResponseSink } from './sink.js';

const { NGHTTP2_INTERNAL_ERROR } = http2.constants;
const EMPTY = Buffer.alloc(0);

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
  #drain: (() => void) | null = null;

  constructor(source: Readable, owner: SinkOwner) {
    this.body = new RequestBody(source);
    this.owner = owner;
    owner.inflight++;
  }

  /** The stream or response closed: the client went away unless we had ended the response. */
  protected closedByTransport(): void {
    const ex = this.exchange;
    this.exchange = null;
    this.closed = true;
    if (ex && !this.ended) ex.downstreamAborted();
    else this.finished();
  }

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
    this.body.resume();
  }

  finished(): void {
    // Whatever the client still sends is read and dropped: an unread body would stall the stream
    // or keep-alive connection.
    if (!this.body.finish()) return;
    this.exchange = null;
    this.owner.requestDone();
  }

  /** Request body: every chunk as it comes, then an empty last one at the end. */
  readBody(): void {
    this.body.read(this);
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

  constructor(stream: ServerHttp2Stream, owner: SinkOwner) {
    super(stream, owner);
    this.#stream = stream;
    stream.on('error', () => undefined); // resets and protocol errors end in 'close'
    stream.on('close', () => this.closedByTransport());
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

  batch(fn: () => void): void {
    fn();
  }
}

/** An HTTP/1.1 request on the node:http2 listener (its HTTP/1.1 fallback, served by node:http). */
export class H1Sink extends NodeSink implements ResponseSink {
  readonly protocol = 'HTTP/1.1';
  readonly #res: ServerResponse;

  constructor(req: IncomingMessage, res: ServerResponse, owner: SinkOwner) {
    super(req, owner);
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
    this.#res.writeHead(status, flat);
  }

  write(chunk: Buffer): boolean {
    if (this.closed) return false;
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

/** Request-body flow control shared by both node sinks: paired pause/resume, drained once finished. */
class RequestBody {
  readonly #source: Readable;
  #paused = false;
  #finished = false;

  constructor(source: Readable) {
    this.#source = source;
  }

  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#source.pause();
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#source.resume();
  }

  /** False when the request was already finished; otherwise resumes a paused body so the rest drains. */
  finish(): boolean {
    if (this.#finished) return false;
    this.#finished = true;
    this.resume();
    return true;
  }

  /** Every chunk as it comes, then an empty last one at the end of the body. */
  read(sink: { exchange: { requestData(chunk: Buffer, isLast: boolean): void } | null }): void {
    this.#source.on('data', (chunk: Buffer) => sink.exchange?.requestData(chunk, false));
    this.#source.on('end', () => sink.exchange?.requestData(EMPTY, true));
  }
}

