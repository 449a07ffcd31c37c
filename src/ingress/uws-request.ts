// What the uWS engine reads from uWS's objects while its handler runs (they are valid only
// synchronously there): the request's fields into a ForwardHeaders (request-head.ts decides what
// is forwarded), the peer's address, and copies of the memory uWS lends. Used by the HTTP
// listener (uws-listener.ts) and WebSocket handshakes (websocket.ts) alike.
import type uWS from 'uWebSockets.js';
import { ForwardHeaders } from './request-head.js';

/** A uWS request's fields (uWS gives names in lower case), read synchronously in the handler. */
export function readForwardHeaders(req: uWS.HttpRequest): ForwardHeaders {
  const fields = new ForwardHeaders();
  req.forEach((k, v) => fields.add(k, v));
  return fields;
}

/**
 * A Buffer copy of memory uWS lends for one call (it reuses or neuters it afterwards). allocUnsafe
 * + set: small copies come from Node's pool slab (0.4 µs for 100 B vs 2.8 µs with
 * Buffer.copyBytesFrom, 9.9 vs 11.5 µs for 64 KiB; measured).
 */
export function copyArrayBuffer(ab: ArrayBuffer): Buffer {
  const b = Buffer.allocUnsafe(ab.byteLength);
  b.set(new Uint8Array(ab));
  return b;
}

/** IPv4 peers as text, by their 32-bit value: most requests come from a few addresses. */
const ipv4Text = new Map<number, string>();
const IPV4_TEXT_CACHE_MAX = 4096;

/**
 * The peer's address as text (IPv4-mapped IPv6 shown as IPv4). Read from uWS's binary form: its
 * text form costs an extra native string and a decode per request (~1 µs, measured).
 */
export function remoteAddress(res: uWS.HttpResponse): string {
  const b = new Uint8Array(res.getRemoteAddress());
  let o = -1;
  if (b.length === 4) o = 0;
  else if (b.length === 16 && b[10] === 0xff && b[11] === 0xff && isZero(b, 10)) o = 12;
  if (o < 0) {
    const text = Buffer.from(res.getRemoteAddressAsText()).toString('latin1');
    return text.startsWith('::ffff:') ? text.slice(7) : text;
  }
  const key = ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
  let text = ipv4Text.get(key);
  if (text === undefined) {
    if (ipv4Text.size >= IPV4_TEXT_CACHE_MAX) ipv4Text.clear();
    text = `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
    ipv4Text.set(key, text);
  }
  return text;
}

function isZero(b: Uint8Array, end: number): boolean {
  for (let i = 0; i < end; i++) if (b[i] !== 0) return false;
  return true;
}
