// The request head as every downstream engine hands it to the lifecycle: the one place that
// decides which client headers are forwarded, which the gateway sets itself (Envoy's edge
// sanitizing), and the size limits a head must keep (Envoy's and nginx's defaults). The uWS
// listener, the node:http/http2 listener and WebSocket handshakes (on either engine) read their
// heads through it; they differ only in how the fields come (uWS's `forEach`, Node's raw list).
import { randomUUID } from 'node:crypto';
import { validAuthority } from '../routing/authority.js';

/** Envoy's default `max_request_headers_kb` (60 KiB, names and values): beyond it, 431. */
export const MAX_REQUEST_HEADERS_BYTES = 60 * 1024;
/** Envoy's default `max_request_headers_count`: a request with more header fields gets 431. */
export const MAX_REQUEST_HEADERS_COUNT = 100;
/** Longest request target (path and query) accepted: beyond it, 414 (nginx's default buffer). */
export const MAX_URL_BYTES = 8 * 1024;

/**
 * Request headers that belong to the client connection, not the request: never forwarded.
 * `x-forwarded-proto` is the gateway's own (set below); `host` travels as the authority.
 */
const CONNECTION_HEADERS = new Set(['host', 'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'upgrade', 'expect', 'x-forwarded-proto', 'http2-settings']);

/** RFC 9110 token characters (a method, a header name). */
const TOKEN = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~") TOKEN[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 1;

/** Whether `s` is a non-empty RFC 9110 token. */
export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 127 || TOKEN[c] === 0) return false;
  }
  return true;
}

/**
 * The forwarded headers of one request, built field by field (names in lower case) as the engine
 * reads them, then finished with the gateway's own: `x-forwarded-for` appended with the peer,
 * `x-forwarded-proto`, `x-envoy-external-address`, `x-request-id` kept or generated. Client
 * `x-envoy-*` headers are dropped (the gateway is the edge), and so are the connection's headers
 * and those its `Connection` header names.
 *
 * It also records what the framing checks of an engine that does not check them itself (uWS)
 * need: the Host lines, transfer codings and content lengths (`framing` names the first problem;
 * '' when none), and whether a body follows.
 */
export class ForwardHeaders {
  readonly headers: string[] = [];
  /** The Host line (HTTP/1.1); the node engines take the authority from their parser instead. */
  host = '';
  /** Bytes of the head's fields as received (name + value + 4 per field), for the 60 KiB limit. */
  size = 0;
  fields = 0;
  hasBody = false;
  /** '' or the framing problem: `host` (two Host lines), `transfer-encoding`, `content-length`. */
  framing = '';
  /** The client sent `x-envoy-force-trace` (dropped with the other x-envoy-*; tracing decides whether to trust it). */
  forceTrace = false;
  #xff = '';
  #requestId = '';
  #connection = '';
  #contentLength: string | null = null;
  #transferEncodings = 0;
  #hosts = 0;
  #cookie = -1;

  /** One field; `k` in lower case. `joinCookies`: HTTP/2 clients may split Cookie (RFC 9113 8.2.3). */
  add(k: string, v: string, joinCookies = false): void {
    this.size += k.length + v.length + 4;
    this.fields++;
    if (CONNECTION_HEADERS.has(k)) {
      if (k === 'host') {
        // RFC 9112 3.2: a request with more than one Host line is a 400.
        if (++this.#hosts > 1) this.framing ||= 'host';
        this.host = v;
      } else if (k === 'transfer-encoding') {
        this.hasBody = true;
        // RFC 9112 6.1: a request's only coding may be chunked (uWS frames any value as chunked).
        if (++this.#transferEncodings > 1 || v.length !== 7 || v.toLowerCase() !== 'chunked') this.framing ||= 'transfer-encoding';
      } else if (k === 'connection') this.#connection = this.#connection ? `${this.#connection},${v}` : v;
      return;
    }
    const headers = this.headers;
    if (k.charCodeAt(0) === 120 /* x */) {
      if (k === 'x-forwarded-for') {
        this.#xff = this.#xff ? `${this.#xff}, ${v}` : v;
        return;
      }
      if (k === 'x-request-id') this.#requestId = v;
      else if (k.startsWith('x-envoy-')) {
        if (k === 'x-envoy-force-trace') this.forceTrace = true;
        return;
      }
    } else if (k === 'content-length') {
      if (v !== '0') this.hasBody = true;
      // uWS frames the body by the first of two: differing values are a smuggling vector.
      if (this.#contentLength === null) this.#contentLength = v;
      else if (this.#contentLength !== v) this.framing ||= 'content-length';
    } else if (joinCookies && k === 'cookie') {
      if (this.#cookie >= 0) {
        headers[this.#cookie] = `${headers[this.#cookie]}; ${v}`;
        return;
      }
      this.#cookie = headers.length + 1;
    }
    headers.push(k, v);
  }

  /** Appends the gateway's headers for a client at `ip` on a `scheme` listener; returns the list. */
  finish(ip: string, scheme: 'http' | 'https'): string[] {
    const headers = this.headers;
    const xff = this.#xff;
    headers.push('x-forwarded-for', xff ? `${xff}, ${ip}` : ip, 'x-forwarded-proto', scheme, 'x-envoy-external-address', ip);
    if (!this.#requestId) headers.push('x-request-id', randomUUID());
    if (this.#connection) removeConnectionTokens(headers, this.#connection);
    return headers;
  }
}

/** Removes the headers a `Connection` header names (RFC 9110 7.6.1), but `close`/`keep-alive`. */
function removeConnectionTokens(headers: string[], tokens: string): void {
  // The usual values name no header: nothing to remove (no Set, no split per request).
  const t = tokens.length <= 10 ? tokens.toLowerCase() : '';
  if (t === 'keep-alive' || t === 'close') return;
  const names = new Set(tokens.toLowerCase().split(',').map((t) => t.trim()).filter((t) => t && t !== 'close' && t !== 'keep-alive'));
  if (names.size === 0) return;
  for (let i = headers.length - 2; i >= 0; i -= 2) if (names.has(headers[i]!)) headers.splice(i, 2);
}

/**
 * The local answer to a head that must not be routed, as Envoy answers it, or null: over the
 * size or field-count limits → 431; a target over 8 KiB → 414; no valid authority, or an
 * origin-form target that does not start with `/` → 400.
 */
export function headProblem(h: ForwardHeaders, authority: string, rawPath: string, pathLength: number, queryLength: number): [status: number, text: string] | null {
  if (h.size > MAX_REQUEST_HEADERS_BYTES || h.fields > MAX_REQUEST_HEADERS_COUNT) return [431, 'Request Header Fields Too Large'];
  if (pathLength + queryLength > MAX_URL_BYTES) return [414, 'URI Too Long'];
  if (!authority || !validAuthority(authority) || rawPath.charCodeAt(0) !== 47 /* / */) return [400, 'Bad Request'];
  return null;
}
