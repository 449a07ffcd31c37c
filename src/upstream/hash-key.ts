// The request's hash key for consistent hashing (Envoy's route hash_policy, which Istio builds from
// DestinationRule consistentHash): a header, a cookie (generated when missing and a ttl is set),
// the client address or a query parameter, hashed with xxHash64. Several policies combine as in
// Envoy: hash = rotl(hash, 1) ^ next.
import { durationToMs, type HashPolicy } from '../controlplane/snapshot.js';
import { hashHigh, hashLow, xxh64Hex, xxh64StringInto } from './xxhash64.js';

/** What hashing reads from a request (RequestHead satisfies it): lower-case header pairs, raw query. */
export interface HashRequest {
  readonly headers: readonly string[];
  readonly query: string;
}

interface Compiled {
  kind: 'header' | 'cookie' | 'source_ip' | 'query';
  name: string;
  /** Cookie generation: path, ttl in seconds (-1: never generate, 0: session cookie). */
  path: string;
  ttlSeconds: number;
}

export class RequestHasher {
  readonly #policies: readonly Compiled[];
  /** Result of the last `hash`: the two halves of the 64-bit key hash. */
  hi = 0;
  lo = 0;
  /** After `hash`: a Set-Cookie value to add to the response (a cookie was generated), else null. */
  setCookie: string | null = null;

  constructor(policies: readonly HashPolicy[]) {
    this.#policies = policies.map((p): Compiled => {
      if (p.header) return { kind: 'header', name: p.header.header_name.toLowerCase(), path: '', ttlSeconds: -1 };
      if (p.cookie) return { kind: 'cookie', name: p.cookie.name, path: p.cookie.path ?? '', ttlSeconds: p.cookie.ttl ? Math.floor(durationToMs(p.cookie.ttl) / 1000) : -1 };
      if (p.connection_properties?.source_ip) return { kind: 'source_ip', name: '', path: '', ttlSeconds: -1 };
      return { kind: 'query', name: p.query_parameter?.name ?? '', path: '', ttlSeconds: -1 };
    });
  }

  /**
   * Hashes the request's key into `hi`/`lo`. False when no policy found a key: the caller picks at
   * random, as Envoy does. `forwarded` (the upstream header list) supplies x-request-id, which seeds
   * a generated cookie so that retries of one request generate the same value.
   */
  hash(req: HashRequest, remoteAddress: string, forwarded: readonly string[]): boolean {
    this.setCookie = null;
    let found = false;
    let hi = 0;
    let lo = 0;
    for (const p of this.#policies) {
      let key: string | undefined;
      switch (p.kind) {
        case 'header':
          key = header(req.headers, p.name);
          break;
        case 'source_ip':
          key = remoteAddress || undefined;
          break;
        case 'query':
          key = queryParam(req.query, p.name);
          break;
        case 'cookie':
          key = cookie(req.headers, p.name);
          if (key === undefined && p.ttlSeconds >= 0) {
            key = xxh64Hex(`${remoteAddress}|${header(forwarded, 'x-request-id') ?? Math.random()}`);
            this.setCookie = setCookieValue(p.name, key, p.path, p.ttlSeconds);
          }
          break;
      }
      if (key === undefined) continue;
      xxh64StringInto(key);
      if (found) {
        // rotate the combined hash left by one, then xor in the new one
        const rh = ((hi << 1) | (lo >>> 31)) >>> 0;
        const rl = ((lo << 1) | (hi >>> 31)) >>> 0;
        hi = (rh ^ hashHigh()) >>> 0;
        lo = (rl ^ hashLow()) >>> 0;
      } else {
        hi = hashHigh();
        lo = hashLow();
        found = true;
      }
    }
    this.hi = hi;
    this.lo = lo;
    return found;
  }
}

/** Envoy's generated-cookie header: `name="value"; Max-Age=<s>; Path=<p>; HttpOnly` (no Max-Age for ttl 0). */
export function setCookieValue(name: string, value: string, path: string, ttlSeconds: number): string {
  let s = `${name}="${value}"`;
  if (ttlSeconds > 0) s += `; Max-Age=${ttlSeconds}`;
  if (path) s += `; Path=${path}`;
  return s + '; HttpOnly';
}

function header(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return headers[i + 1];
  return undefined;
}

/** A cookie's value from any `cookie` header, surrounding double quotes removed (as Envoy parses it). */
export function cookie(headers: readonly string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] !== 'cookie') continue;
    const v = headers[i + 1]!;
    let start = 0;
    while (start < v.length) {
      let end = v.indexOf(';', start);
      if (end < 0) end = v.length;
      let s = start;
      while (s < end && v.charCodeAt(s) === 32) s++;
      if (end - s > name.length && v.charCodeAt(s + name.length) === 61 && v.startsWith(name, s)) {
        let a = s + name.length + 1;
        let b = end;
        if (b - a >= 2 && v.charCodeAt(a) === 34 && v.charCodeAt(b - 1) === 34) {
          a++;
          b--;
        }
        return v.slice(a, b);
      }
      start = end + 1;
    }
  }
  return undefined;
}

/** First value of a query parameter, not decoded (Envoy hashes it as sent). */
function queryParam(query: string, name: string): string | undefined {
  if (!query) return undefined;
  let start = 0;
  while (start < query.length) {
    let end = query.indexOf('&', start);
    if (end < 0) end = query.length;
    if (query.startsWith(name, start)) {
      const after = start + name.length;
      if (after === end) return '';
      if (query.charCodeAt(after) === 61) return query.slice(after + 1, end);
    }
    start = end + 1;
  }
  return undefined;
}
