// A lean HTTP/1.1 client for plain (non-TLS) upstreams, on node:net sockets: what undici's Pool does
// for us, without its stream / wasm parser machinery (the default; GATEHOUSE_H1_CLIENT=undici selects undici instead, see
// cluster-manager.ts). It speaks Gatehouse's upstream handler protocol (errors.ts: onStart /
// onHead(status, raw Buffer[], resume) / onData / onEnd(trailers) / onError(UpstreamError)), so the
// request lifecycle drives it exactly like the H2Pool or undici behind its adapter.
//
// Connections: one request at a time per socket (no pipelining), up to `connections` sockets;
// requests queue when all are busy. A socket is reused only after a response whose framing was
// complete and which allows it (HTTP/1.1 without `connection: close`, or HTTP/1.0 with
// `connection: keep-alive`, not read-until-close, not HEAD, no `reset`); idle sockets close after
// keepAliveTimeout (or the server's `keep-alive: timeout=N` hint less 2 s, as undici does).
//
// Parsing is strict and works on Buffers: status line `HTTP/1.x NNN reason`, header names as RFC 9110
// tokens, values without CR/LF/NUL/controls, CRLF line ends only (no bare LF, no obs-fold), head at most
// maxHeaderSize bytes. Body framing per RFC 9112 §6.3, with the smuggling guards: transfer-encoding
// must be exactly chunked (no other coding) and may not come with content-length; several content-length values must agree;
// chunk sizes are bounded hex. Any byte left over after a response on a socket with no request
// outstanding closes that socket: it never reaches the next request.
//
// Remaining race (as with any HTTP/1.1 client): a server may close an idle keep-alive socket while we
// write the next request on it. A close already seen ('end' read) is detected before writing and the
// socket is not used; one still in flight fails that request with UND_ERR_SOCKET / ECONNRESET (503 UC,
// retried when the route's retry policy allows reset).
import net from 'node:net';
import { Readable } from 'node:stream';
import type { Pool, buildConnector } from 'undici';
import { UpstreamError, kindOfCode, toUpstreamError, type UpstreamHandler, type UpstreamPool, type UpstreamRequest } from './errors.js';

export interface H1PoolOptions {
  /** Sockets at most (undici `connections`); null / undefined / 0 for no limit. */
  connections?: number | null;
  connectTimeout?: number | null;
  /** An idle socket is closed after this long. */
  keepAliveTimeout?: number | null;
  /** Upper bound for a server's `keep-alive: timeout=` hint. */
  keepAliveMaxTimeout?: number | null;
  /** From the request written until the response head is complete. */
  headersTimeout?: number | null;
  /** Between two reads of the response body (not counted while paused). */
  bodyTimeout?: number | null;
  /**
   * undici's semantics, kept so that both clients take the same options: a socket carries
   * maxRequestsPerClient + 1 requests (the one that finds its counter at the limit is sent with
   * `connection: close`). 0 / undefined: no limit.
   */
  maxRequestsPerClient?: number | null;
  /** Bytes of a response head (status line and header lines) at most. */
  maxHeaderSize?: number | null;
}

const KEEPALIVE_THRESHOLD_MS = 2000;
const MAX_CHUNK_EXT = 4096;
const EMPTY = Buffer.alloc(0);

// ---- byte classes ----

/** RFC 9110 tchar. */
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TOKEN[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 1;
/** field-vchar / SP / HTAB (obs-text allowed). */
const FIELD = new Uint8Array(256);
FIELD[0x09] = 1;
for (let c = 0x20; c <= 0x7e; c++) FIELD[c] = 1;
for (let c = 0x80; c <= 0xff; c++) FIELD[c] = 1;
/** Hex digit values, -1 for others. */
const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[0x41 + c] = 10 + c;
  HEX[0x61 + c] = 10 + c;
}

const INVALID_PATH = /[^\u0021-\u00ff]/;
const INVALID_VALUE = /[^\t\u0020-\u007e\u0080-\u00ff]/;

function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || TOKEN[c] === 0) return false;
  }
  return true;
}

function err(message: string, code: string): UpstreamError {
  return new UpstreamError(kindOfCode(code), message, code);
}

// ---- parser states ----
const S_IDLE: number = 0; // no request outstanding: any byte is an error
const S_WAIT: number = 1; // request written (or being written), waiting for the response head
const S_HEAD: number = 2; // inside a response head
const S_BODY_LEN: number = 3;
const S_CHUNK_SIZE: number = 4;
const S_CHUNK_EXT: number = 5;
const S_CHUNK_SIZE_LF: number = 6;
const S_CHUNK_DATA: number = 7;
const S_CHUNK_DATA_CR: number = 8;
const S_CHUNK_DATA_LF: number = 9;
const S_TRAILERS: number = 10;
const S_BODY_EOF: number = 11; // read until close
const S_DEAD: number = 12;

const T_NONE = 0;
const T_CONNECT = 1;
const T_HEADERS = 2;
const T_BODY = 3;
const T_IDLE = 4;

// Timers of 1 s or more (the production ones: 300 s stream idle, 4 s keep-alive) are coarse, as
// undici's fast timers are: a deadline on the connection checked by one 500 ms tick, so arming or
// moving one costs an assignment. Shorter ones (tests) use a native timer.
const TICK_MS = 500;
let fastNow = Date.now();
const timed = new Set<Conn>();
let ticker: NodeJS.Timeout | null = null;

function tick(): void {
  fastNow = Date.now();
  for (const c of timed) if (c.deadline !== 0 && fastNow >= c.deadline) c.fired();
  if (timed.size === 0 && ticker !== null) {
    clearInterval(ticker);
    ticker = null;
  }
}

function watch(c: Conn): void {
  timed.add(c);
  if (ticker === null) {
    fastNow = Date.now();
    ticker = setInterval(tick, TICK_MS);
    ticker.unref();
  }
}

/** One request/response on the pool: made by dispatch, bound to a connection when it starts. */
class H1Request {
  readonly pool: H1Pool;
  readonly opts: UpstreamRequest;
  readonly handler: UpstreamHandler;
  conn: Conn | null = null;
  done = false;
  written = false;
  /** Streamed request body still being written. */
  writing = false;
  /** Readable body listeners (only for streamed bodies). */
  onBodyData: ((chunk: Buffer) => void) | null = null;
  onBodyEnd: (() => void) | null = null;
  onBodyError: ((e: Error) => void) | null = null;
  chunked = false;
  expected = -1;
  sent = 0;

  constructor(pool: H1Pool, opts: UpstreamRequest, handler: UpstreamHandler) {
    this.pool = pool;
    this.opts = opts;
    this.handler = handler;
  }

  /** The abort function given to onStart: destroys the socket and ends the request with onError. */
  abort(reason?: Error): void {
    if (this.done) return;
    const e = reason instanceof UpstreamError ? reason : new UpstreamError('cancelled', reason?.message ?? 'request aborted', 'UND_ERR_ABORTED', reason);
    const conn = this.conn;
    if (conn !== null && conn.req === this) {
      if (this.written) conn.destroy(e);
      else conn.rejectRequest(e); // from onStart, before a byte was sent: the socket stays usable
    } else this.fail(e);
  }

  /** Ends the request with an error (once); the caller takes care of the socket. */
  fail(e: UpstreamError): void {
    if (this.done) return;
    this.done = true;
    this.detachBody();
    try {
      this.handler.onError(e);
    } catch {
      // a handler's own failure must not break the pool
    }
  }

  detachBody(): void {
    if (this.onBodyData === null) return;
    const body = this.opts.body as Readable;
    body.off('data', this.onBodyData);
    body.off('end', this.onBodyEnd!);
    body.off('error', this.onBodyError!);
    this.onBodyData = this.onBodyEnd = this.onBodyError = null;
    this.writing = false;
  }

  bodyData(chunk: Buffer | string): void {
    const conn = this.conn;
    if (this.done || conn === null) return;
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (buf.length === 0) return;
    const socket = conn.socket!;
    let ok: boolean;
    this.sent += buf.length;
    if (this.chunked) {
      socket.cork();
      socket.write(buf.length.toString(16) + '\r\n', 'latin1');
      socket.write(buf);
      ok = socket.write('\r\n', 'latin1');
      socket.uncork();
    } else {
      if (this.sent > this.expected) {
        conn.destroy(err('request body longer than its content-length', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH'));
        return;
      }
      ok = socket.write(buf);
    }
    if (!ok) (this.opts.body as Readable).pause();
  }

  bodyEnd(): void {
    const conn = this.conn;
    if (this.done || conn === null) return;
    if (!this.chunked && this.sent !== this.expected) {
      conn.destroy(err('request body shorter than its content-length', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH'));
      return;
    }
    if (this.chunked) conn.socket!.write('0\r\n\r\n', 'latin1');
    this.detachBody();
    conn.bodyWritten();
  }

  bodyError(e: Error): void {
    const conn = this.conn;
    if (this.done) return;
    const ue = toUpstreamError(e);
    if (conn !== null) conn.destroy(ue);
    else this.fail(ue);
  }
}

/** One socket and its response parser. */
class Conn {
  readonly pool: H1Pool;
  socket: net.Socket | null = null;
  connected = false;
  /** The peer ended its side, or the socket errored / closed: never take a new request. */
  gone = false;
  req: H1Request | null = null;
  /** Requests started on this socket (for maxRequestsPerClient). */
  count = 0;
  /** Close after the current request. */
  reset = false;
  error: UpstreamError | null = null;
  idleTimeoutMs: number;

  timer: NodeJS.Timeout | null = null;
  timerKind = T_NONE;
  /** Coarse deadline (fastNow ms), 0 for none. */
  deadline = 0;
  watched = false;

  // response parser
  state = S_IDLE;
  paused = false;
  /** Unparsed bytes held while paused, or the start of an incomplete head line / chunk size line. */
  stash: Buffer | null = null;
  carry: Buffer | null = null;
  /** Bytes of the current head (or trailers) consumed so far. */
  headBytes = 0;
  statusCode = 0;
  http10 = false;
  raw: Buffer[] = [];
  keepAlive = true;
  /** content-length seen (-1 none). */
  contentLength = -1;
  chunkedTE = false;
  sawTE = false;
  kaHint = -1;
  remaining = 0;
  chunkDigits = 0;
  chunkExt = 0;
  trailers: Buffer[] | null = null;

  readonly onSocketData: (chunk: Buffer) => void;
  readonly onSocketEnd: () => void;
  readonly onSocketError: (e: Error) => void;
  readonly onSocketClose: () => void;
  readonly onSocketDrain: () => void;
  readonly resume: () => void;

  constructor(pool: H1Pool) {
    this.pool = pool;
    this.idleTimeoutMs = pool.keepAliveTimeout;
    this.onSocketData = (chunk) => this.data(chunk);
    this.onSocketEnd = () => this.ended();
    this.onSocketError = (e) => this.destroy(toUpstreamError(e));
    this.onSocketClose = () => this.closed();
    this.onSocketDrain = () => this.drained();
    this.resume = () => this.doResume();
  }

  attach(socket: net.Socket): void {
    this.socket = socket;
    socket.on('data', this.onSocketData);
    socket.on('end', this.onSocketEnd);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
    socket.on('drain', this.onSocketDrain);
  }

  setTimer(kind: number, ms: number): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.timerKind = kind;
    this.deadline = 0;
    if (ms <= 0) {
      this.timerKind = T_NONE;
    } else if (ms >= 1000) {
      this.deadline = fastNow + ms;
      if (!this.watched) {
        this.watched = true;
        watch(this);
      }
    } else {
      this.timer = setTimeout(onConnTimer, ms, this);
      if (kind === T_IDLE) this.timer.unref();
    }
  }

  /** Restarts the current timer's full duration (body activity). */
  refreshTimer(ms: number): void {
    if (this.deadline !== 0) this.deadline = fastNow + ms;
    else if (this.timer !== null) this.timer.refresh();
  }

  clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.deadline = 0;
    this.timerKind = T_NONE;
  }

  fired(): void {
    const kind = this.timerKind;
    this.timer = null;
    this.deadline = 0;
    this.timerKind = T_NONE;
    const pool = this.pool;
    switch (kind) {
      case T_CONNECT:
        if (!this.connected) this.destroy(err(`connect timeout after ${pool.connectTimeout} ms`, 'UND_ERR_CONNECT_TIMEOUT'));
        break;
      case T_HEADERS: {
        const req = this.req;
        // A streamed body still being fed by a slow source (socket not backed up): keep waiting.
        if (req !== null && req.writing && !this.socket!.writableNeedDrain) this.setTimer(T_HEADERS, pool.headersTimeout);
        else this.destroy(err('Headers Timeout Error', 'UND_ERR_HEADERS_TIMEOUT'));
        break;
      }
      case T_BODY:
        if (this.paused) this.setTimer(T_BODY, pool.bodyTimeout);
        else this.destroy(err('Body Timeout Error', 'UND_ERR_BODY_TIMEOUT'));
        break;
      case T_IDLE:
        if (this.req === null) this.destroy(null);
        break;
    }
  }

  /** Usable for a new request now. */
  usable(): boolean {
    const s = this.socket;
    return this.connected && !this.gone && this.req === null && s !== null && !s.destroyed && s.readable;
  }

  // ---- request writing ----

  /** Set while start() runs, so that a request refused before sending does not re-enter the pool. */
  starting = false;
  /** start() ended with the request refused and the socket idle again. */
  refused = false;

  start(req: H1Request): void {
    const pool = this.pool;
    this.req = req;
    req.conn = this;
    this.clearTimer();
    const opts = req.opts;
    const method = opts.method;
    let reset = opts.reset === true || method === 'HEAD';
    const max = pool.maxRequests;
    if (max > 0 && this.count++ >= max) reset = true;
    else if (max === 0) this.count++;
    let host = pool.hostHeader;
    let contentLength: string | null = null;
    let lines = '';
    const headers = opts.headers;
    if (Array.isArray(headers)) {
      for (let i = 0; i < headers.length; i += 2) {
        const name = headers[i] as string;
        const value = headers[i + 1] as string;
        const n = name.length;
        if (n === 4 && name === 'host') {
          host = value;
          continue;
        }
        if (n === 14 && name === 'content-length') {
          contentLength = value;
          continue;
        }
        if (n === 10 && (name === 'connection' || name === 'keep-alive')) {
          if (name === 'connection' && /(^|,)\s*close\s*(,|$)/i.test(value)) reset = true;
          continue;
        }
        if ((n === 17 && name === 'transfer-encoding') || (n === 7 && name === 'upgrade') || (n === 6 && name === 'expect')) {
          this.rejectRequest(err(`invalid ${name} header`, 'UND_ERR_INVALID_ARG'));
          return;
        }
        if (!isToken(name) || INVALID_VALUE.test(value)) {
          this.rejectRequest(err(`invalid ${name} header`, 'UND_ERR_INVALID_ARG'));
          return;
        }
        lines += name + ': ' + value + '\r\n';
      }
    }
    const path = opts.path;
    if (!isToken(method) || INVALID_PATH.test(path) || INVALID_VALUE.test(host)) {
      this.rejectRequest(err('invalid request method, path or host', 'UND_ERR_INVALID_ARG'));
      return;
    }
    this.reset = reset;
    const body = opts.body;
    const expectsPayload = method === 'POST' || method === 'PUT' || method === 'PATCH';
    let head = method + ' ' + path + ' HTTP/1.1\r\nhost: ' + host + (reset ? '\r\nconnection: close\r\n' : '\r\nconnection: keep-alive\r\n') + lines;
    let buf: Buffer | null = null;
    let stream: Readable | null = null;
    if (body === null || body === undefined) {
      if (expectsPayload) head += 'content-length: 0\r\n';
    } else if (Buffer.isBuffer(body)) {
      if (body.length > 0) {
        buf = body;
        head += 'content-length: ' + body.length + '\r\n';
      } else if (expectsPayload) head += 'content-length: 0\r\n';
    } else if (body instanceof Readable) {
      stream = body;
      if (contentLength !== null) {
        if (!/^\d{1,15}$/.test(contentLength)) {
          this.rejectRequest(err('invalid content-length header', 'UND_ERR_INVALID_ARG'));
          return;
        }
        req.expected = Number(contentLength);
        head += 'content-length: ' + contentLength + '\r\n';
      } else {
        req.chunked = true;
        head += 'transfer-encoding: chunked\r\n';
      }
    } else {
      this.rejectRequest(err('unsupported request body', 'UND_ERR_INVALID_ARG'));
      return;
    }
    head += '\r\n';

    this.state = S_WAIT;
    this.paused = false;
    req.handler.onStart(req.abort.bind(req));
    if (req.done || this.req !== req) return; // aborted from onStart
    const socket = this.socket!;
    req.written = true;
    if (buf !== null) {
      socket.cork();
      socket.write(head, 'latin1');
      socket.write(buf);
      socket.uncork();
    } else socket.write(head, 'latin1');
    this.setTimer(T_HEADERS, pool.headersTimeout);
    if (stream !== null) {
      if (req.expected === 0 || stream.readableEnded) {
        if (req.chunked) socket.write('0\r\n\r\n', 'latin1');
        return;
      }
      req.writing = true;
      req.onBodyData = (c) => req.bodyData(c);
      req.onBodyEnd = () => req.bodyEnd();
      req.onBodyError = (e) => req.bodyError(e);
      stream.on('data', req.onBodyData);
      stream.on('end', req.onBodyEnd);
      stream.on('error', req.onBodyError);
      if (stream.isPaused()) stream.resume();
    }
  }

  /** The request cannot be sent (bad headers): it fails, the socket stays idle and usable. */
  rejectRequest(e: UpstreamError): void {
    const req = this.req!;
    this.req = null;
    req.conn = null;
    this.state = S_IDLE;
    req.fail(e);
    // Inside start(): the pool's loop hands the socket on (a recursion here overflowed the stack
    // with thousands of queued requests cancelled before they were sent).
    if (this.starting) this.refused = true;
    else this.pool.release(this);
  }

  bodyWritten(): void {
    // A response that ended before its request body was written left the socket to be closed.
    if (this.req === null) this.destroy(null);
  }

  drained(): void {
    const req = this.req;
    if (req !== null && req.writing) (req.opts.body as Readable).resume();
  }

  // ---- response parsing ----

  data(chunk: Buffer): void {
    if (this.state === S_DEAD) return;
    if (this.paused) {
      // A read that raced with pause(): keep it for resume.
      this.stash = this.stash === null ? chunk : Buffer.concat([this.stash, chunk]);
      return;
    }
    if (this.timerKind === T_BODY) this.refreshTimer(this.pool.bodyTimeout);
    let buf = chunk;
    if (this.carry !== null) {
      buf = Buffer.concat([this.carry, chunk]);
      this.carry = null;
    }
    this.execute(buf, 0);
  }

  doResume(): void {
    if (!this.paused || this.state === S_DEAD) return;
    this.paused = false;
    const stash = this.stash;
    if (stash !== null) {
      this.stash = null;
      this.execute(stash, 0);
    }
    if (this.paused || this.state === S_DEAD) return;
    if (this.gone && this.state === S_BODY_EOF && this.req !== null) {
      // Read until close, and the close came while paused.
      this.complete(null, EMPTY, 0);
      return;
    }
    if (this.timerKind === T_BODY) this.refreshTimer(this.pool.bodyTimeout);
    this.socket?.resume();
  }

  pause(buf: Buffer, pos: number): void {
    this.paused = true;
    this.socket!.pause();
    if (pos < buf.length) this.stash = buf.subarray(pos);
  }

  /** Parses `buf` from `pos`; stops when paused, dead, or out of bytes. */
  execute(buf: Buffer, pos: number): void {
    const len = buf.length;
    while (pos < len) {
      switch (this.state) {
        case S_IDLE:
          // Bytes with no request outstanding: never handed to the next request.
          this.destroy(err('unexpected data from the upstream with no request outstanding', 'UND_ERR_SOCKET'));
          return;
        case S_WAIT:
          this.state = S_HEAD;
          this.beginHead();
          continue;
        case S_HEAD:
        case S_TRAILERS: {
          const p = this.parseLines(buf, pos);
          if (p < 0) return; // incomplete (carried) or failed
          pos = p;
          if (this.state === S_DEAD) return;
          if (this.paused) {
            if (pos < len) this.stash = buf.subarray(pos);
            return;
          }
          break;
        }
        case S_BODY_LEN: {
          const n = Math.min(this.remaining, len - pos);
          const slice = pos === 0 && n === len ? buf : buf.subarray(pos, pos + n);
          pos += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            if (!this.deliver(slice)) return;
            this.complete(null, buf, pos);
            return;
          }
          if (!this.bodySlice(slice, buf, pos)) return;
          break;
        }
        case S_BODY_EOF: {
          const slice = pos === 0 ? buf : buf.subarray(pos);
          pos = len;
          if (!this.bodySlice(slice, buf, pos)) return;
          break;
        }
        case S_CHUNK_SIZE:
        case S_CHUNK_EXT:
        case S_CHUNK_SIZE_LF: {
          const p = this.parseChunkSize(buf, pos);
          if (p < 0) return;
          pos = p;
          break;
        }
        case S_CHUNK_DATA: {
          const n = Math.min(this.remaining, len - pos);
          const slice = buf.subarray(pos, pos + n);
          pos += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = S_CHUNK_DATA_CR;
          if (!this.bodySlice(slice, buf, pos)) return;
          break;
        }
        case S_CHUNK_DATA_CR:
          if (buf[pos] !== 13) return this.protocolError('HPE_CR_EXPECTED', 'missing CR after chunk data');
          pos++;
          this.state = S_CHUNK_DATA_LF;
          break;
        case S_CHUNK_DATA_LF:
          if (buf[pos] !== 10) return this.protocolError('HPE_LF_EXPECTED', 'missing LF after chunk data');
          pos++;
          this.state = S_CHUNK_SIZE;
          this.chunkDigits = 0;
          this.remaining = 0;
          break;
        default:
          return;
      }
    }
  }

  /** A body slice to the handler; false when parsing stops here (it paused, or the socket died). */
  bodySlice(slice: Buffer, buf: Buffer, pos: number): boolean {
    const req = this.req!;
    if (!req.handler.onData(slice) && !req.done) {
      this.pause(buf, pos);
      return false;
    }
    return this.state !== S_DEAD;
  }

  /** The last slice of a body: onData (a pause does not matter, the response is complete). */
  deliver(slice: Buffer): boolean {
    if (slice.length > 0) this.req!.handler.onData(slice);
    return this.state !== S_DEAD && this.req !== null && !this.req.done;
  }

  beginHead(): void {
    this.headBytes = 0;
    this.statusCode = 0;
    this.raw = [];
    this.contentLength = -1;
    this.chunkedTE = false;
    this.sawTE = false;
    this.kaHint = -1;
    this.keepAlive = true;
    this.http10 = false;
  }

  /**
   * Parses complete CRLF lines of a head (or trailers) from `pos`. Returns the position after the
   * head's empty line (the head was handled), or -1: out of bytes (the incomplete line is carried) or
   * an error (the socket is destroyed).
   */
  parseLines(buf: Buffer, pos: number): number {
    const len = buf.length;
    const max = this.pool.maxHeaderSize;
    const trailers = this.state === S_TRAILERS;
    for (;;) {
      const lf = buf.indexOf(10, pos);
      if (lf < 0) {
        if (this.headBytes + (len - pos) > max) return this.fatal('UND_ERR_HEADERS_OVERFLOW', 'response head larger than maxHeaderSize');
        // Copy: a carried slice of a socket read would pin it, and the next read is concatenated anyway.
        this.carry = pos < len ? Buffer.from(buf.subarray(pos)) : null;
        return -1;
      }
      if (lf === pos || buf[lf - 1] !== 13) return this.fatal('HPE_LF_EXPECTED', 'bare LF in response head');
      const end = lf - 1;
      this.headBytes += lf + 1 - pos;
      if (this.headBytes > max) return this.fatal('UND_ERR_HEADERS_OVERFLOW', 'response head larger than maxHeaderSize');
      if (!trailers && this.statusCode === 0) {
        if (!this.parseStatus(buf, pos, end)) return -1;
      } else if (end === pos) {
        pos = lf + 1;
        return trailers ? this.trailersDone(buf, pos) : this.headDone(buf, pos);
      } else if (!this.parseField(buf, pos, end, trailers)) return -1;
      pos = lf + 1;
    }
  }

  parseStatus(buf: Buffer, pos: number, end: number): boolean {
    // HTTP/1.x SP 3DIGIT [SP reason]
    if (
      end - pos < 12 ||
      buf[pos] !== 0x48 ||
      buf[pos + 1] !== 0x54 ||
      buf[pos + 2] !== 0x54 ||
      buf[pos + 3] !== 0x50 ||
      buf[pos + 4] !== 0x2f ||
      buf[pos + 5] !== 0x31 ||
      buf[pos + 6] !== 0x2e ||
      (buf[pos + 7] !== 0x31 && buf[pos + 7] !== 0x30) ||
      buf[pos + 8] !== 0x20
    ) {
      this.fatal('HPE_INVALID_CONSTANT', 'invalid HTTP/1.1 status line');
      return false;
    }
    const d0 = buf[pos + 9]! - 0x30;
    const d1 = buf[pos + 10]! - 0x30;
    const d2 = buf[pos + 11]! - 0x30;
    // RFC 9110: 1xx-5xx. A status outside 100-599 is a protocol error (502 UPE downstream).
    if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9 || (end > pos + 12 && buf[pos + 12] !== 0x20)) {
      this.fatal('HPE_INVALID_STATUS', 'invalid response status');
      return false;
    }
    for (let i = pos + 13; i < end; i++) {
      if (FIELD[buf[i]!] === 0) {
        this.fatal('HPE_INVALID_STATUS', 'invalid character in the reason phrase');
        return false;
      }
    }
    this.statusCode = d0 * 100 + d1 * 10 + d2;
    this.http10 = buf[pos + 7] === 0x30;
    if (this.http10) this.keepAlive = false;
    return true;
  }

  parseField(buf: Buffer, pos: number, end: number, trailer: boolean): boolean {
    let i = pos;
    while (i < end && TOKEN[buf[i]!] === 1) i++;
    if (i === pos || i === end || buf[i] !== 0x3a) {
      // obs-fold (a line starting with SP/HTAB), whitespace before ':', or a non-token name.
      this.fatal('HPE_INVALID_HEADER_TOKEN', 'invalid header name or obs-fold');
      return false;
    }
    const nameEnd = i;
    i++;
    while (i < end && (buf[i] === 0x20 || buf[i] === 0x09)) i++;
    let vEnd = end;
    while (vEnd > i && (buf[vEnd - 1] === 0x20 || buf[vEnd - 1] === 0x09)) vEnd--;
    for (let j = i; j < vEnd; j++) {
      if (FIELD[buf[j]!] === 0) {
        this.fatal('HPE_INVALID_HEADER_TOKEN', 'invalid character in a header value');
        return false;
      }
    }
    const name = buf.subarray(pos, nameEnd);
    const value = buf.subarray(i, vEnd);
    if (trailer) {
      (this.trailers ??= []).push(name, value);
      return true;
    }
    this.raw.push(name, value);
    const n = nameEnd - pos;
    if (n === 14 && eqLower(buf, pos, 'content-length')) return this.contentLengthField(buf, i, vEnd);
    if (n === 17 && eqLower(buf, pos, 'transfer-encoding')) return this.transferEncodingField(buf, i, vEnd);
    if (n === 10) {
      if (eqLower(buf, pos, 'connection')) this.connectionField(buf, i, vEnd);
      else if (eqLower(buf, pos, 'keep-alive')) this.keepAliveField(buf, i, vEnd);
    }
    return true;
  }

  contentLengthField(buf: Buffer, i: number, end: number): boolean {
    // A list of identical values is allowed (RFC 9110 §8.6), as are repeated identical fields.
    let value = -1;
    while (i <= end) {
      let j = i;
      let v = 0;
      while (j < end && buf[j]! >= 0x30 && buf[j]! <= 0x39) {
        v = v * 10 + (buf[j]! - 0x30);
        j++;
      }
      if (j === i || j - i > 15) return this.badLength();
      if (value >= 0 && v !== value) return this.badLength();
      value = v;
      while (j < end && (buf[j] === 0x20 || buf[j] === 0x09)) j++;
      if (j === end) break;
      if (buf[j] !== 0x2c) return this.badLength();
      j++;
      while (j < end && (buf[j] === 0x20 || buf[j] === 0x09)) j++;
      i = j;
    }
    if (this.contentLength >= 0 && this.contentLength !== value) return this.badLength();
    this.contentLength = value;
    return true;
  }

  badLength(): boolean {
    this.fatal('HPE_UNEXPECTED_CONTENT_LENGTH', 'invalid or conflicting content-length');
    return false;
  }

  transferEncodingField(buf: Buffer, i: number, end: number): boolean {
    // Only `chunked`, once: another coding (gzip, chunked) would be de-chunked and forwarded without
    // its coding (the downstream framing is ours), so the client would get undecodable bytes.
    this.sawTE = true;
    const text = buf.toString('latin1', i, end).toLowerCase();
    for (const c of text.split(',')) {
      const t = c.trim();
      if (t === '') continue;
      if (t !== 'chunked' || this.chunkedTE) {
        this.chunkedTE = false;
        this.fatal('HPE_INVALID_TRANSFER_ENCODING', t === 'chunked' ? 'chunked applied twice' : `unsupported transfer coding "${t}" (only chunked)`);
        return false;
      }
      this.chunkedTE = true;
    }
    return true;
  }

  connectionField(buf: Buffer, i: number, end: number): void {
    const n = end - i;
    if (n === 10 && eqLower(buf, i, 'keep-alive')) {
      if (this.http10) this.keepAlive = true;
      return;
    }
    if (n === 5 && eqLower(buf, i, 'close')) {
      this.keepAlive = false;
      return;
    }
    const text = buf.toString('latin1', i, end).toLowerCase();
    for (const t of text.split(',')) {
      const tok = t.trim();
      if (tok === 'close') this.keepAlive = false;
      else if (tok === 'keep-alive' && this.http10) this.keepAlive = true;
    }
  }

  keepAliveField(buf: Buffer, i: number, end: number): void {
    const m = /(?:^|[,;\s])timeout=(\d+)/i.exec(buf.toString('latin1', i, end));
    if (m) this.kaHint = Number(m[1]) * 1000;
  }

  headDone(buf: Buffer, pos: number): number {
    const status = this.statusCode;
    const req = this.req!;
    if (status < 200) {
      if (status === 101) return this.fatal('UND_ERR_SOCKET', 'unexpected 101 Switching Protocols');
      // 100 Continue, 103 Early Hints, ...: skipped; the real response follows.
      this.state = S_HEAD;
      this.beginHead();
      return pos;
    }
    if (this.sawTE && this.contentLength >= 0) return this.fatal('HPE_UNEXPECTED_CONTENT_LENGTH', 'transfer-encoding together with content-length');
    if (this.sawTE && !this.chunkedTE) return this.fatal('HPE_INVALID_TRANSFER_ENCODING', 'transfer-encoding without chunked as the final coding');
    let noBody = false;
    if (req.opts.method === 'HEAD' || status === 204 || status === 304) noBody = true;
    else if (this.chunkedTE) {
      this.state = S_CHUNK_SIZE;
      this.chunkDigits = 0;
      this.remaining = 0;
    } else if (this.contentLength >= 0) {
      if (this.contentLength === 0) noBody = true;
      else {
        this.state = S_BODY_LEN;
        this.remaining = this.contentLength;
      }
    } else {
      this.state = S_BODY_EOF;
      this.keepAlive = false;
    }
    this.idleTimeoutMs = this.pool.keepAliveTimeout;
    if (this.keepAlive && this.kaHint >= 0) {
      const t = Math.min(this.kaHint - KEEPALIVE_THRESHOLD_MS, this.pool.keepAliveMaxTimeout);
      if (t <= 0) this.keepAlive = false;
      else this.idleTimeoutMs = t;
    }
    if (noBody) {
      this.state = S_WAIT; // placeholder until complete()
      this.clearTimer();
    } else if (this.timerKind === T_HEADERS && this.pool.bodyTimeout === this.pool.headersTimeout) {
      this.timerKind = T_BODY;
      this.refreshTimer(this.pool.bodyTimeout);
    } else this.setTimer(T_BODY, this.pool.bodyTimeout);
    const raw = this.raw;
    this.raw = [];
    const ok = req.handler.onHead(status, raw, this.resume);
    if (this.state === S_DEAD || req.done) return -1;
    if (noBody) {
      this.complete(null, buf, pos);
      return -1;
    }
    if (ok === false) {
      this.paused = true;
      this.socket!.pause();
    }
    return pos;
  }

  trailersDone(buf: Buffer, pos: number): number {
    const t = this.trailers;
    this.trailers = null;
    this.complete(t, buf, pos);
    return -1;
  }

  parseChunkSize(buf: Buffer, pos: number): number {
    const len = buf.length;
    while (pos < len) {
      const b = buf[pos]!;
      switch (this.state) {
        case S_CHUNK_SIZE: {
          const h = HEX[b]!;
          if (h >= 0) {
            this.remaining = this.remaining * 16 + h;
            if (++this.chunkDigits > 14 || this.remaining > Number.MAX_SAFE_INTEGER) return this.fatal('HPE_INVALID_CHUNK_SIZE', 'chunk size too large');
            pos++;
            continue;
          }
          if (this.chunkDigits === 0) return this.fatal('HPE_INVALID_CHUNK_SIZE', 'invalid chunk size');
          if (b === 13) this.state = S_CHUNK_SIZE_LF;
          else if (b === 0x3b || b === 0x20 || b === 0x09) {
            this.state = S_CHUNK_EXT;
            this.chunkExt = 0;
          } else return this.fatal('HPE_INVALID_CHUNK_SIZE', 'invalid chunk size');
          pos++;
          continue;
        }
        case S_CHUNK_EXT:
          if (b === 13) this.state = S_CHUNK_SIZE_LF;
          else if (FIELD[b] === 0 || ++this.chunkExt > MAX_CHUNK_EXT) return this.fatal('HPE_INVALID_CHUNK_SIZE', 'invalid chunk extension');
          pos++;
          continue;
        case S_CHUNK_SIZE_LF:
          if (b !== 10) return this.fatal('HPE_LF_EXPECTED', 'missing LF after chunk size');
          pos++;
          if (this.remaining === 0) {
            this.state = S_TRAILERS;
            this.headBytes = 0;
            this.trailers = null;
          } else this.state = S_CHUNK_DATA;
          return pos;
      }
      return pos;
    }
    return pos;
  }

  /** A response is complete: decide on the socket before any callback, then onEnd. */
  complete(trailers: Buffer[] | null, buf: Buffer, pos: number): void {
    const req = this.req!;
    const pool = this.pool;
    this.clearTimer();
    this.req = null;
    req.conn = null;
    const reusable = this.keepAlive && !this.reset && !req.writing && pos >= buf.length && this.stash === null && this.usable();
    if (req.writing) req.detachBody();
    req.done = true;
    if (reusable) {
      this.state = S_IDLE;
      pool.release(this);
    } else {
      this.state = S_DEAD;
      this.destroy(null);
    }
    try {
      req.handler.onEnd(trailers);
    } catch {
      // a handler's own failure must not break the pool
    }
  }

  protocolError(code: string, message: string): void {
    this.fatal(code, message);
  }

  fatal(code: string, message: string): number {
    this.destroy(err(`Response does not match the HTTP/1.1 protocol (${message})`, code));
    return -1;
  }

  // ---- socket lifecycle ----

  ended(): void {
    this.gone = true;
    const req = this.req;
    if (req !== null && this.state === S_BODY_EOF && !this.paused) {
      // Read until close: the close ends the response.
      this.complete(null, EMPTY, 0);
      return;
    }
    if (req !== null && this.state === S_BODY_EOF) return; // paused: completes on resume
    this.destroy(req !== null ? err('other side closed', 'UND_ERR_SOCKET') : null);
  }

  /** Destroys the socket; the current request (if any) fails with `e` (or "closed"). */
  destroy(e: UpstreamError | null): void {
    this.state = S_DEAD;
    this.gone = true;
    this.clearTimer();
    if (this.watched) {
      this.watched = false;
      timed.delete(this);
    }
    this.stash = null;
    this.carry = null;
    if (e !== null && this.error === null) this.error = e;
    const req = this.req;
    this.req = null;
    if (req !== null) {
      req.conn = null;
      req.fail(e ?? this.error ?? err('socket closed', 'UND_ERR_SOCKET'));
    }
    const s = this.socket;
    if (s !== null && !s.destroyed) s.destroy();
    this.pool.forget(this, this.connected ? null : (e ?? this.error));
  }

  closed(): void {
    if (this.state === S_DEAD && this.req === null) {
      this.pool.forget(this, null);
      return;
    }
    const req = this.req;
    if (req !== null && this.state === S_BODY_EOF && this.error === null) {
      this.gone = true;
      if (!this.paused) this.complete(null, EMPTY, 0);
      return;
    }
    this.destroy(this.error ?? (req !== null ? err('other side closed', 'UND_ERR_SOCKET') : null));
  }
}

function onConnTimer(conn: Conn): void {
  conn.fired();
}

function onDrainQueue(pool: H1Pool): void {
  pool.drainQueue();
}

function eqLower(buf: Buffer, pos: number, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) if ((buf[pos + i]! | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

export class H1Pool implements UpstreamPool {
  readonly address: string;
  readonly port: number;
  readonly hostHeader: string;
  readonly connectTimeout: number;
  readonly keepAliveTimeout: number;
  readonly keepAliveMaxTimeout: number;
  readonly headersTimeout: number;
  readonly bodyTimeout: number;
  readonly maxRequests: number;
  readonly maxHeaderSize: number;
  readonly #max: number;
  readonly #connector: buildConnector.connector | null;
  readonly #conns = new Set<Conn>();
  readonly #idle: Conn[] = [];
  #queue: H1Request[] = [];
  #queueHead = 0;
  #drainScheduled = false;
  #closed = false;
  #destroyed = false;
  #closedResolvers: Array<() => void> = [];

  constructor(address: string, port: number, opts: H1PoolOptions | Pool.Options = {}, connect?: buildConnector.connector) {
    this.address = address;
    this.port = port;
    const host = address.includes(':') ? `[${address}]` : address;
    this.hostHeader = port === 80 ? host : `${host}:${port}`;
    this.connectTimeout = opts.connectTimeout ?? 10_000;
    this.keepAliveTimeout = opts.keepAliveTimeout ?? 4_000;
    this.keepAliveMaxTimeout = opts.keepAliveMaxTimeout ?? 600_000;
    this.headersTimeout = opts.headersTimeout ?? 300_000;
    this.bodyTimeout = opts.bodyTimeout ?? 300_000;
    this.maxRequests = opts.maxRequestsPerClient ?? 0;
    this.maxHeaderSize = opts.maxHeaderSize ?? 16 * 1024;
    this.#max = opts.connections ?? 0;
    this.#connector = connect ?? null;
  }

  /** Sockets open or opening (for tests). */
  get connectionCount(): number {
    return this.#conns.size;
  }

  /** Requests waiting for a socket (for tests). */
  get queued(): number {
    return this.#queue.length - this.#queueHead;
  }

  dispatch(opts: UpstreamRequest, handler: UpstreamHandler): void {
    const req = new H1Request(this, opts, handler);
    if (this.#closed || this.#destroyed) {
      req.fail(err(this.#destroyed ? 'The client is destroyed' : 'The client is closed', this.#destroyed ? 'UND_ERR_DESTROYED' : 'UND_ERR_CLOSED'));
      return;
    }
    // Requests already waiting go first.
    if (this.#queueHead === this.#queue.length) {
      const conn = this.#takeIdle();
      if (conn !== null) {
        if (this.#startOn(conn, req)) this.release(conn);
        return;
      }
    }
    this.#queue.push(req);
    if (this.#max <= 0 || this.#conns.size < this.#max) this.#open();
  }

  close(): Promise<void> {
    this.#closed = true;
    for (const c of this.#idle.splice(0)) c.destroy(null);
    if (this.#conns.size === 0 && this.queued === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#closedResolvers.push(resolve);
      this.#maybeClosed();
    });
  }

  destroy(): Promise<void> {
    this.#closed = true;
    this.#destroyed = true;
    const e = err('The client is destroyed', 'UND_ERR_DESTROYED');
    const queue = this.#queue.slice(this.#queueHead);
    this.#queue = [];
    this.#queueHead = 0;
    for (const r of queue) r.fail(e);
    this.#idle.length = 0;
    for (const c of [...this.#conns]) c.destroy(e);
    this.#conns.clear();
    this.#resolveClosed();
    return Promise.resolve();
  }

  #takeIdle(): Conn | null {
    const idle = this.#idle;
    while (idle.length > 0) {
      const c = idle.pop()!;
      if (c.usable()) return c;
      c.destroy(null);
    }
    return null;
  }

  #open(): void {
    const conn = new Conn(this);
    this.#conns.add(conn);
    conn.setTimer(T_CONNECT, this.connectTimeout);
    const connector = this.#connector;
    if (connector === null) {
      const socket = net.connect({ host: this.address, port: this.port, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 });
      conn.attach(socket);
      socket.once('connect', () => this.#connected(conn));
      return;
    }
    connector(
      { hostname: this.address, host: this.hostHeader, protocol: 'http:', port: String(this.port), servername: null, localAddress: null, httpSocket: undefined } as unknown as buildConnector.Options,
      (e, socket) => {
        if (conn.state === S_DEAD) {
          socket?.destroy();
          return;
        }
        if (e !== null || socket === null) {
          conn.destroy(e !== null ? toUpstreamError(e, true) : err('connect failed', 'UND_ERR_SOCKET'));
          return;
        }
        conn.attach(socket as net.Socket);
        if ((socket as net.Socket).connecting) (socket as net.Socket).once('connect', () => this.#connected(conn));
        else this.#connected(conn);
      },
    );
  }

  #connected(conn: Conn): void {
    if (conn.state === S_DEAD) return;
    conn.connected = true;
    conn.clearTimer();
    this.release(conn);
  }

  /** A socket free for the next request: the head of the queue, else the idle list. */
  release(conn: Conn): void {
    // A loop, not a recursion: each queued request refused before sending frees the socket again.
    for (;;) {
      if (this.#destroyed) {
        conn.destroy(null);
        return;
      }
      const req = this.#nextQueued();
      if (req === null) break;
      if (!this.#startOn(conn, req)) return;
    }
    if (this.#closed) {
      conn.destroy(null);
      return;
    }
    conn.setTimer(T_IDLE, conn.idleTimeoutMs);
    this.#idle.push(conn);
  }

  /** Starts a request; true when it was refused before a byte was sent and the socket is free again. */
  #startOn(conn: Conn, req: H1Request): boolean {
    conn.starting = true;
    conn.refused = false;
    try {
      conn.start(req);
    } finally {
      conn.starting = false;
    }
    return conn.refused && conn.state === S_IDLE && conn.req === null;
  }

  #nextQueued(): H1Request | null {
    const q = this.#queue;
    while (this.#queueHead < q.length) {
      const r = q[this.#queueHead]!;
      q[this.#queueHead++] = undefined as unknown as H1Request;
      if (this.#queueHead === q.length) {
        q.length = 0;
        this.#queueHead = 0;
      }
      if (!r.done) return r;
    }
    return null;
  }

  /** A socket closed; `connectError` when it never connected (a queued request fails with it). */
  forget(conn: Conn, connectError: UpstreamError | null): void {
    if (!this.#conns.delete(conn)) return;
    const i = this.#idle.indexOf(conn);
    if (i >= 0) this.#idle.splice(i, 1);
    if (connectError !== null) {
      // One waiting request per failed connect; all of them when no socket is left to serve them.
      const r = this.#nextQueued();
      r?.fail(connectError);
      if (this.#conns.size === 0) for (let q = this.#nextQueued(); q !== null; q = this.#nextQueued()) q.fail(connectError);
    } else if (this.queued > 0 && !this.#drainScheduled) {
      this.#drainScheduled = true;
      setImmediate(onDrainQueue, this);
    }
    this.#maybeClosed();
  }

  /** Waiting requests after a socket went away: open replacements. */
  drainQueue(): void {
    this.#drainScheduled = false;
    let need = this.queued;
    while (need > 0) {
      const c = this.#takeIdle();
      if (c === null) break;
      const r = this.#nextQueued();
      if (r === null) {
        this.release(c);
        return;
      }
      if (this.#startOn(c, r)) {
        this.release(c);
        need = this.queued;
        continue;
      }
      need--;
    }
    let opening = 0;
    for (const c of this.#conns) if (!c.connected) opening++;
    need = this.queued - opening;
    while (need-- > 0 && (this.#max <= 0 || this.#conns.size < this.#max)) this.#open();
  }

  #maybeClosed(): void {
    if (this.#closed && this.#conns.size === 0 && this.queued === 0) this.#resolveClosed();
  }

  #resolveClosed(): void {
    for (const r of this.#closedResolvers.splice(0)) r();
  }
}
