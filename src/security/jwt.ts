// RequestAuthentication: Envoy's jwt_authn filter as Istio configures it (one provider per
// jwtRule, `requires_any: [providers..., allow_missing]`).
//
// Library: jose 6.2.18, pinned. 6.x is the newest major. Its package.json declares no `engines`;
// the README lists Node.js as supported and says only `require(esm)` needs ^20.19, which does not
// concern us (we are ESM). 6.x runs only on WebCrypto (`globalThis.crypto`, present on Node 20),
// has no dependencies, and verified RS256/PS256/ES256/EdDSA here on Node 20.20. jose does the
// key import (importJWK) and the signature check (compactVerify). Parsing, the claim checks and
// the key selection are done here, in Envoy's (jwt_verify_lib's) order and with its messages:
// jose's own claim checks and JWKS matching differ in small ways (kid matching, audience
// normalisation, error text).
//
// What a request costs:
//  - no rules: nothing; rules but no token: one pass over the header list with a Map lookup per
//    header (+ a substring test of the query when a rule reads a query parameter), and a
//    synchronous result;
//  - a token: base64url + JSON.parse of header and payload, then one WebCrypto verify. Keys are
//    imported once per JWKS version (and algorithm), on first use.
//
// Remote JWKS (`jwks_uri`): one entry per URI in a process-wide LRU (shared by the authenticators
// of successive config versions, so a reload neither refetches nor loses the last good keys).
// Fetched at authenticator creation, refreshed in the background before the cache duration
// (Envoy's default, 5 min) ends, retried with backoff after a failure, the last good keys kept
// meanwhile. Only a request carrying a token of that issuer, arriving before any keys were ever
// fetched, waits for a fetch, at most the rule's timeout; then 401 `Jwks remote fetch is failed`.
// jose and undici load on first use (a key to import, a JWKS to fetch), not with this file: a
// gateway without a RequestAuthentication never loads either.
import { createRequire } from 'node:module';
import type { CryptoKey, JWK } from 'jose';
import { LRUCache } from 'lru-cache';
import type { Agent } from 'undici';
import type { JwtRuleConfig } from '../controlplane/snapshot.js';
import type { Logger } from '../telemetry/log.js';
import type { AuthnOutcome, Authenticator, RequestAuth, SecurityRequest } from './types.js';

/** Envoy's (jwt_verify_lib's) status texts, used as 401 bodies. */
export const JWT_ERRORS = {
  expired: 'Jwt is expired',
  notYetValid: 'Jwt not yet valid',
  badFormat: 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections',
  headerBadBase64: 'Jwt header is an invalid Base64url encoded',
  headerBadJson: 'Jwt header is an invalid JSON',
  headerBadAlg: 'Jwt header [alg] field is required and must be a string',
  headerAlgNotImplemented: 'Jwt header [alg] is not supported',
  headerBadKid: 'Jwt header [kid] field is not a string',
  payloadBadBase64: 'Jwt payload is an invalid Base64url encoded',
  payloadBadJson: 'Jwt payload is an invalid JSON',
  issNotString: 'Jwt payload [iss] field is not a string',
  subNotString: 'Jwt payload [sub] field is not a string',
  audNotString: 'Jwt payload [aud] field is not a string or string list',
  signatureBadBase64: 'Jwt signature is an invalid Base64url encoded',
  unknownIssuer: 'Jwt issuer is not configured',
  audienceNotAllowed: 'Audiences in Jwt are not allowed',
  verificationFail: 'Jwt verification fails',
  kidAlgMismatch: "Jwks doesn't have key to match kid or alg from Jwt",
  jwksFetchFail: 'Jwks remote fetch is failed',
} as const;

const timeClaimError = (claim: string, range: boolean): string =>
  range ? `Jwt payload [${claim}] field is not a positive 64 bit integer` : `Jwt payload [${claim}] field is not an integer`;

/** Envoy's default `clock_skew_seconds`. */
const CLOCK_SKEW_S = 60;
/** Envoy's default JWKS `cache_duration`. */
export const DEFAULT_JWKS_CACHE_DURATION_MS = 5 * 60_000;

const SUPPORTED_ALGS = new Set([
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512', 'HS256', 'HS384', 'HS512', 'EdDSA',
]);
const EC_CURVE: Record<string, string> = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' };
const B64URL = /^[A-Za-z0-9_-]*={0,2}$/;
/** Characters a JWT is made of: where a token found after a header prefix ends (Envoy's extractJWT). */
const JWT_CHAR = /[A-Za-z0-9_.-]/;
/** Values Node/undici accept in a header (others would make the upstream request throw). */
const BAD_HEADER_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

// ---------------------------------------------------------------------------------------------
// JWKS

interface PreparedKey {
  /** Only the public key material (no use/key_ops/ext, which jose would also check). */
  jwk: JWK;
  kty: string;
  kid: string;
  alg: string;
  crv: string;
  /** Imported once per algorithm. */
  imported: Map<string, Promise<CryptoKey | Uint8Array>>;
}

/** One version of a JWKS, parsed; keys are imported lazily, once. */
export interface KeySet {
  keys: PreparedKey[];
}

const EMPTY_KEYS: KeySet = { keys: [] };

const str = (v: unknown): v is string => typeof v === 'string';

function prepareKey(k: unknown): PreparedKey | string {
  if (k === null || typeof k !== 'object' || Array.isArray(k)) return '[kty] is missing in [keys]';
  const o = k as Record<string, unknown>;
  if (o.kty === undefined) return '[kty] is missing in [keys]';
  if (!str(o.kty)) return '[kty] is bad in [keys]';
  if (o.kid !== undefined && !str(o.kid)) return '[kid] is not a string';
  if (o.alg !== undefined && !str(o.alg)) return '[alg] is not a string';
  const kid = o.kid ?? '';
  const alg = o.alg ?? '';
  let jwk: JWK;
  let crv = '';
  switch (o.kty) {
    case 'RSA':
      if (alg && !/^(RS|PS)/.test(alg)) return '[alg] is not started with [RS] or [PS] for an RSA key';
      if (!str(o.n) || !str(o.e)) return 'Jwks RSA [n] or [e] field is missing or has a parse error';
      jwk = { kty: 'RSA', n: o.n, e: o.e };
      break;
    case 'EC':
      if (alg && !alg.startsWith('ES')) return '[alg] is not started with [ES] for an EC key';
      crv = str(o.crv) ? o.crv : alg ? (EC_CURVE[alg] ?? '') : '';
      if (!Object.values(EC_CURVE).includes(crv)) return '[crv] or [alg] field is not supported for an EC key';
      if (alg && EC_CURVE[alg] !== crv) return '[crv] field specified is not compatible with [alg] for an EC key';
      if (!str(o.x) || !str(o.y)) return '[x] or [y] field is missing for an EC key';
      jwk = { kty: 'EC', crv, x: o.x, y: o.y };
      break;
    case 'oct':
      if (alg && !alg.startsWith('HS')) return '[alg] does not start with [HS] for an HMAC key';
      if (!str(o.k)) return '[k] field is missing for an HMAC key';
      jwk = { kty: 'oct', k: o.k };
      break;
    case 'OKP':
      if (alg && alg !== 'EdDSA' && alg !== 'Ed25519') return '[alg] is not [EdDSA] for an OKP key';
      if (o.crv !== 'Ed25519') return '[crv] field is not supported for an OKP key';
      if (!str(o.x)) return '[x] field is missing for an OKP key';
      crv = 'Ed25519';
      jwk = { kty: 'OKP', crv, x: o.x };
      break;
    default:
      return '[kty] is not supported in [keys]';
  }
  return { jwk, kty: o.kty, kid, alg: alg === 'Ed25519' ? 'EdDSA' : alg, crv, imported: new Map() };
}

/** Parses a JWKS document (Envoy: invalid entries are skipped; none valid is an error). */
export function parseJwks(text: string): KeySet {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error('Jwks is an invalid JSON');
  }
  if (doc === null || typeof doc !== 'object' || !('keys' in doc)) throw new Error('Jwks does not have [keys] field');
  const raw = (doc as { keys: unknown }).keys;
  if (!Array.isArray(raw)) throw new Error('[keys] in Jwks is not an array');
  const keys: PreparedKey[] = [];
  const problems: string[] = [];
  for (const k of raw) {
    const p = prepareKey(k);
    if (typeof p === 'string') problems.push(p);
    else keys.push(p);
  }
  if (keys.length === 0) {
    throw new Error(`Jwks doesn't have any valid public key${problems.length ? ` (${problems.join('; ')})` : ''}`);
  }
  return { keys };
}

function keyFitsAlg(k: PreparedKey, alg: string): boolean {
  switch (k.kty) {
    case 'RSA':
      return alg.startsWith('RS') || alg.startsWith('PS');
    case 'EC':
      return EC_CURVE[alg] === k.crv;
    case 'oct':
      return alg.startsWith('HS');
    case 'OKP':
      return alg === 'EdDSA';
    default:
      return false;
  }
}

const require = createRequire(import.meta.url);
type Jose = typeof import('jose');
let jose: Jose | undefined;
let josePending: Promise<Jose> | undefined;

/** jose, imported once: the first key import or signature check waits for it, later ones do not. */
function loadJose(): Jose | Promise<Jose> {
  return jose ?? (josePending ??= import('jose').then((m) => (jose = m)));
}

function importFor(k: PreparedKey, alg: string): Promise<CryptoKey | Uint8Array> {
  let p = k.imported.get(alg);
  if (!p) {
    const j = jose;
    p = j ? j.importJWK(k.jwk, alg) : Promise.resolve(loadJose()).then((m) => m.importJWK(k.jwk, alg));
    k.imported.set(alg, p);
  }
  return p;
}

/**
 * jwt_verify_lib's key selection: a key is a candidate unless both kids are set and differ, or
 * the key's alg is set and differs; no candidate → KidAlgMismatch; candidates that all fail →
 * VerificationFail.
 */
async function verifySignature(token: string, alg: string, kid: string, keys: KeySet): Promise<string | null> {
  let matched = false;
  for (const k of keys.keys) {
    if (kid && k.kid && k.kid !== kid) continue;
    if (k.alg && k.alg !== alg) continue;
    matched = true;
    if (!keyFitsAlg(k, alg)) continue;
    try {
      const key = await importFor(k, alg);
      await (jose ?? (await loadJose())).compactVerify(token, key, { algorithms: [alg] });
      return null;
    } catch {
      // try the next candidate
    }
  }
  return matched ? JWT_ERRORS.verificationFail : JWT_ERRORS.kidAlgMismatch;
}

// ---------------------------------------------------------------------------------------------
// Remote JWKS cache

export interface JwksCacheOptions {
  /** How long fetched keys are fresh (Envoy's `cache_duration`, default 5 min); refreshed at 90 % of it. */
  cacheDurationMs?: number;
  /** First retry after a failed fetch (doubling, up to the refresh interval). Default 1 s. */
  retryMinMs?: number;
  /** Remote JWKS URIs kept (LRU). Default 1000. */
  maxEntries?: number;
  /** Largest JWKS document accepted. Default 1 MiB. */
  maxBytes?: number;
}

/** A `jwks_uri`'s keys: the last good version, refreshed in the background while in use. */
export class RemoteJwks {
  /** Last good keys (kept when a refresh fails). */
  current: KeySet | null = null;
  fetchedAt = 0;
  /** Fetches made (for tests and the admin view). */
  fetches = 0;
  failures = 0;
  lastError = '';
  #inflight: Promise<void> | null = null;
  #timer: NodeJS.Timeout | undefined;
  #refs = 0;
  #lastFailureAt = 0;
  #timeoutMs: number;
  #log: Logger;
  readonly #cache: JwksCache;

  constructor(readonly uri: string, timeoutMs: number, log: Logger, cache: JwksCache) {
    this.#timeoutMs = timeoutMs;
    this.#log = log;
    this.#cache = cache;
  }

  get inUse(): boolean {
    return this.#refs > 0;
  }

  acquire(timeoutMs: number, log: Logger): void {
    this.#timeoutMs = timeoutMs;
    this.#log = log;
    if (this.#refs++ > 0) return;
    const age = Date.now() - this.fetchedAt;
    if (!this.current || age >= this.#cache.refreshMs) void this.refresh();
    else this.#schedule(this.#cache.refreshMs - age);
  }

  release(): void {
    if (this.#refs === 0 || --this.#refs > 0) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Fetches now (one fetch at a time); resolves when it ends, successful or not. */
  refresh(): Promise<void> {
    if (!this.#inflight) {
      this.#inflight = this.#fetch().finally(() => {
        this.#inflight = null;
      });
    }
    return this.#inflight;
  }

  /**
   * The keys to verify with: synchronous when some were ever fetched. Otherwise waits for a fetch
   * at most `waitMs` (null: none). Right after a failed fetch, fails at once rather than refetch
   * per request (the background retry goes on).
   */
  keys(waitMs: number): KeySet | null | Promise<KeySet | null> {
    if (this.current) return this.current;
    if (!this.#inflight && Date.now() - this.#lastFailureAt < this.#cache.retryMinMs) return null;
    const pending = this.refresh();
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(this.current), waitMs);
      void pending.then(() => {
        clearTimeout(t);
        resolve(this.current);
      });
    });
  }

  async #fetch(): Promise<void> {
    this.fetches++;
    try {
      const text = await fetchText(this.#cache.agent, this.uri, this.#timeoutMs, this.#cache.maxBytes);
      const keys = parseJwks(text);
      const wasFailing = this.failures > 0;
      this.current = keys;
      this.fetchedAt = Date.now();
      this.failures = 0;
      this.lastError = '';
      if (wasFailing) this.#log.info({ jwksUri: this.uri, keys: keys.keys.length }, 'jwt: JWKS fetched again');
      else this.#log.debug({ jwksUri: this.uri, keys: keys.keys.length }, 'jwt: JWKS fetched');
      this.#schedule(this.#cache.refreshMs);
    } catch (err) {
      this.failures++;
      this.#lastFailureAt = Date.now();
      this.lastError = err instanceof Error ? err.message : String(err);
      const retryMs = Math.min(this.#cache.retryMinMs * 2 ** Math.min(this.failures - 1, 20), this.#cache.refreshMs);
      this.#log.warn(
        { jwksUri: this.uri, err: this.lastError, failures: this.failures, keptLastGoodKeys: this.current !== null, retryMs },
        'jwt: JWKS fetch failed',
      );
      this.#schedule(retryMs);
    }
  }

  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#refs === 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.refresh();
    }, ms);
    this.#timer.unref();
  }
}

async function fetchText(agent: Agent, uri: string, timeoutMs: number, maxBytes: number): Promise<string> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`JWKS fetch timed out after ${timeoutMs} ms`)), timeoutMs);
  try {
    const { request } = require('undici') as typeof import('undici');
    const res = await request(uri, {
      method: 'GET',
      dispatcher: agent,
      signal: ac.signal,
      headers: { accept: 'application/json' },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    // Destroying the body (abort, oversize) emits an error nobody else listens to.
    res.body.on('error', () => undefined);
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => undefined);
      throw new Error(`JWKS endpoint answered HTTP ${res.statusCode}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) {
        res.body.destroy();
        throw new Error(`JWKS document larger than ${maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    clearTimeout(timer);
  }
}

/** Remote JWKS by URI. One per process by default (`defaultJwksCache()`); tests make their own. */
export class JwksCache {
  readonly refreshMs: number;
  readonly retryMinMs: number;
  readonly maxBytes: number;
  /** HTTPS verified against Node's default CAs (+ NODE_EXTRA_CA_CERTS). */
  #agent: Agent | undefined;
  /** Created (and undici loaded) on the first fetch. */
  get agent(): Agent {
    if (!this.#agent) {
      const { Agent: UndiciAgent } = require('undici') as typeof import('undici');
      this.#agent = new UndiciAgent({ connect: { timeout: 10_000 }, keepAliveTimeout: 4_000 });
    }
    return this.#agent;
  }
  readonly #entries: LRUCache<string, RemoteJwks>;

  constructor(opts: JwksCacheOptions = {}) {
    const duration = opts.cacheDurationMs ?? DEFAULT_JWKS_CACHE_DURATION_MS;
    this.refreshMs = Math.max(1, Math.floor(duration * 0.9));
    this.retryMinMs = opts.retryMinMs ?? 1000;
    this.maxBytes = opts.maxBytes ?? 1 << 20;
    this.#entries = new LRUCache<string, RemoteJwks>({ max: opts.maxEntries ?? 1000 });
  }

  /** The entry for `uri`, held (and refreshed) until release(). */
  acquire(uri: string, timeoutMs: number, log: Logger): RemoteJwks {
    let e = this.#entries.get(uri);
    if (!e) {
      e = new RemoteJwks(uri, timeoutMs, log, this);
      this.#entries.set(uri, e);
    }
    e.acquire(timeoutMs, log);
    return e;
  }

  get(uri: string): RemoteJwks | undefined {
    return this.#entries.peek(uri);
  }

  /** Stops every refresh and closes the HTTP agent (tests, process exit). */
  close(): void {
    for (const e of this.#entries.values()) while (e.inUse) e.release();
    this.#entries.clear();
    void this.#agent?.close().catch(() => undefined);
  }
}

let sharedCache: JwksCache | undefined;
export function defaultJwksCache(): JwksCache {
  return (sharedCache ??= new JwksCache());
}

// ---------------------------------------------------------------------------------------------
// Rules and token locations

interface CompiledRule {
  policy: string;
  issuer: string;
  /** Sanitised (scheme and trailing slash dropped); null: any audience. */
  audiences: Set<string> | null;
  inline: KeySet | null;
  remote: RemoteJwks | null;
  timeoutMs: number;
  forward: boolean;
  payloadHeader: string;
  claimHeaders: Array<{ header: string; claim: string; path: string[] }>;
  /** Top-level claims whose space-delimited string value becomes a list (Istio: permission, scope, + spaceDelimitedClaims). */
  spaceDelimited: readonly string[];
}

interface Location {
  kind: 'header' | 'param' | 'cookie';
  name: string;
  prefix: string;
  /** Rules reading this location, by issuer (Envoy: JwtLocation's allowed issuers). */
  byIssuer: Map<string, CompiledRule[]>;
}

interface FoundToken {
  token: string;
  loc: Location;
}

interface ParsedJwt {
  alg: string;
  kid: string;
  iss: string;
  sub: string;
  aud: string[];
  azp: string;
  nbf: number | undefined;
  exp: number | undefined;
  payload: Record<string, unknown>;
  payloadSegment: string;
}

/** jwt_verify_lib's CheckAudience: `http(s)://` and a trailing `/` do not count. */
function sanitizeAudience(a: string): string {
  let s = a;
  if (s.startsWith('https://')) s = s.slice(8);
  else if (s.startsWith('http://')) s = s.slice(7);
  if (s.endsWith('/')) s = s.slice(0, -1);
  return s;
}

function decodeJson(seg: string): Record<string, unknown> | 'b64' | 'json' {
  if (!B64URL.test(seg)) return 'b64';
  try {
    const v: unknown = JSON.parse(Buffer.from(seg, 'base64url').toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : 'json';
  } catch {
    return 'json';
  }
}

function timeClaim(payload: Record<string, unknown>, claim: string): number | undefined | string {
  const v = payload[claim];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) return timeClaimError(claim, false);
  if (v < 0) return timeClaimError(claim, true);
  return Math.floor(v);
}

/** jwt_verify_lib's Jwt::parseFromString: the structure and claim types, no signature. */
export function parseJwt(token: string): ParsedJwt | string {
  const d1 = token.indexOf('.');
  const d2 = d1 < 0 ? -1 : token.indexOf('.', d1 + 1);
  if (d2 < 0 || token.indexOf('.', d2 + 1) >= 0) return JWT_ERRORS.badFormat;
  const header = decodeJson(token.slice(0, d1));
  if (header === 'b64') return JWT_ERRORS.headerBadBase64;
  if (header === 'json') return JWT_ERRORS.headerBadJson;
  const alg = header.alg;
  if (!str(alg)) return JWT_ERRORS.headerBadAlg;
  if (!SUPPORTED_ALGS.has(alg)) return JWT_ERRORS.headerAlgNotImplemented;
  const kid = header.kid;
  if (kid !== undefined && !str(kid)) return JWT_ERRORS.headerBadKid;
  const payloadSegment = token.slice(d1 + 1, d2);
  const payload = decodeJson(payloadSegment);
  if (payload === 'b64') return JWT_ERRORS.payloadBadBase64;
  if (payload === 'json') return JWT_ERRORS.payloadBadJson;
  const { iss, sub, aud, azp } = payload;
  if (iss !== undefined && !str(iss)) return JWT_ERRORS.issNotString;
  if (sub !== undefined && !str(sub)) return JWT_ERRORS.subNotString;
  for (const c of ['iat', 'nbf', 'exp']) {
    const t = timeClaim(payload, c);
    if (typeof t === 'string') return t;
  }
  let audiences: string[];
  if (aud === undefined) audiences = [];
  else if (str(aud)) audiences = [aud];
  else if (Array.isArray(aud) && aud.every(str)) audiences = aud;
  else return JWT_ERRORS.audNotString;
  if (!B64URL.test(token.slice(d2 + 1))) return JWT_ERRORS.signatureBadBase64;
  return {
    alg,
    kid: kid ?? '',
    iss: iss ?? '',
    sub: sub ?? '',
    aud: audiences,
    azp: str(azp) ? azp : '',
    nbf: timeClaim(payload, 'nbf') as number | undefined,
    exp: timeClaim(payload, 'exp') as number | undefined,
    payload,
    payloadSegment,
  };
}

/** Envoy: the token starts at the first JWT character after the prefix and ends before the next non-JWT one. */
function afterPrefix(value: string, prefix: string): string | null {
  let i = 0;
  if (prefix) {
    const at = value.indexOf(prefix);
    if (at < 0) return null;
    i = at + prefix.length;
  } else {
    return value;
  }
  while (i < value.length && !JWT_CHAR.test(value[i]!)) i++;
  let j = i;
  while (j < value.length && JWT_CHAR.test(value[j]!)) j++;
  return value.slice(i, j);
}

function queryParam(query: string, name: string): string | null {
  const q = query.charCodeAt(0) === 63 /* ? */ ? query.slice(1) : query;
  for (const part of q.split('&')) {
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    let key = k;
    try {
      key = decodeURIComponent(k.replace(/\+/g, ' '));
    } catch {
      // keep it raw
    }
    if (key !== name) continue;
    const raw = eq < 0 ? '' : part.slice(eq + 1);
    try {
      return decodeURIComponent(raw.replace(/\+/g, ' '));
    } catch {
      return raw;
    }
  }
  return null;
}

function cookieValue(header: string, name: string): string | null {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    let v = part.slice(eq + 1).trim();
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
    return v;
  }
  return null;
}

function claimValue(payload: Record<string, unknown>, claim: string, path: string[]): unknown {
  if (claim in payload) return payload[claim];
  let v: unknown = payload;
  for (const p of path) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  return v;
}

/**
 * The verified payload as Envoy puts it in the request's metadata (normalize_payload_in_metadata):
 * each listed top-level claim holding a space-delimited string is a list of its words instead.
 * What claim routing and `request.auth.claims[...]` conditions read. The payload itself is kept.
 */
export function normalizePayload(payload: Record<string, unknown>, spaceDelimited: readonly string[]): Record<string, unknown> {
  let out = payload;
  for (const c of spaceDelimited) {
    const v = Object.hasOwn(payload, c) ? payload[c] : undefined;
    if (typeof v !== 'string') continue;
    const words = v.split(' ').filter((w) => w !== '');
    if (words.length === 0) continue;
    if (out === payload) out = { ...payload };
    out[c] = words;
  }
  return out;
}

/** Claims Istio always has Envoy split at spaces. */
const DEFAULT_SPACE_DELIMITED = ['permission', 'scope'];

function setHeader(headers: string[], name: string, value: string): void {
  removeHeader(headers, name);
  headers.push(name, value);
}

function removeHeader(headers: string[], name: string): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) if (headers[i] === name) headers.splice(i, 2);
}

export interface JwtAuthenticatorOptions {
  /** Where remote JWKS live; default: the process-wide cache. */
  jwksCache?: JwksCache;
}

class JwtAuthenticator implements Authenticator {
  readonly #log: Logger;
  readonly #remotes: RemoteJwks[] = [];
  /** Header locations by (lower-case) header name. */
  readonly #headerLocs = new Map<string, Location[]>();
  readonly #paramLocs: Location[] = [];
  readonly #cookieLocs: Location[] = [];
  /**
   * Headers the rules write (outputPayloadToHeader, outputClaimToHeaders): removed from every
   * request first, token or not, so that a client cannot send them itself (Envoy's extractor
   * sanitizes them before verifying).
   */
  readonly #written = new Set<string>();
  readonly #empty: boolean;
  #closed = false;

  constructor(rules: readonly JwtRuleConfig[], log: Logger, opts: JwtAuthenticatorOptions) {
    this.#log = log;
    this.#empty = rules.length === 0;
    const cache = rules.some((r) => !r.jwks && r.jwks_uri) ? (opts.jwksCache ?? defaultJwksCache()) : undefined;
    const locs = new Map<string, Location>();
    const remotes = new Map<string, RemoteJwks>();
    for (const r of rules) {
      const rule = this.#compile(r, cache, remotes);
      if (rule.payloadHeader) this.#written.add(rule.payloadHeader);
      for (const c of rule.claimHeaders) this.#written.add(c.header);
      const defaults = r.from_headers.length === 0 && r.from_params.length === 0 && r.from_cookies.length === 0;
      const at: Array<Omit<Location, 'byIssuer'>> = defaults
        ? [{ kind: 'header', name: 'authorization', prefix: 'Bearer ' }, { kind: 'param', name: 'access_token', prefix: '' }]
        : [
            ...r.from_headers.map((h) => ({ kind: 'header' as const, name: h.name.toLowerCase(), prefix: h.prefix })),
            ...r.from_params.map((p) => ({ kind: 'param' as const, name: p, prefix: '' })),
            ...r.from_cookies.map((c) => ({ kind: 'cookie' as const, name: c, prefix: '' })),
          ];
      for (const l of at) {
        const key = `${l.kind}\0${l.name}\0${l.prefix}`;
        let loc = locs.get(key);
        if (!loc) {
          loc = { ...l, byIssuer: new Map() };
          locs.set(key, loc);
          if (loc.kind === 'header') {
            const list = this.#headerLocs.get(loc.name);
            if (list) list.push(loc);
            else this.#headerLocs.set(loc.name, [loc]);
          } else if (loc.kind === 'param') this.#paramLocs.push(loc);
          else this.#cookieLocs.push(loc);
        }
        const same = loc.byIssuer.get(rule.issuer);
        if (same) {
          if (!same.includes(rule)) same.push(rule);
        } else loc.byIssuer.set(rule.issuer, [rule]);
      }
    }
    this.#remotes.push(...remotes.values());
  }

  #compile(r: JwtRuleConfig, cache: JwksCache | undefined, remotes: Map<string, RemoteJwks>): CompiledRule {
    let inline: KeySet | null = null;
    let remote: RemoteJwks | null = null;
    if (r.jwks) {
      try {
        inline = parseJwks(r.jwks);
      } catch (err) {
        // Istio also keeps such a rule, with keys that match no token.
        this.#log.warn({ policy: r.policy, issuer: r.issuer, err: (err as Error).message }, 'jwt: invalid inline jwks; its tokens will fail');
        inline = EMPTY_KEYS;
      }
    } else if (r.jwks_uri && cache) {
      remote = remotes.get(r.jwks_uri) ?? null;
      if (!remote) {
        remote = cache.acquire(r.jwks_uri, r.timeout_ms, this.#log);
        remotes.set(r.jwks_uri, remote);
      }
    } else {
      this.#log.warn({ policy: r.policy, issuer: r.issuer }, 'jwt: rule has neither jwks nor jwks_uri; its tokens will fail');
      inline = EMPTY_KEYS;
    }
    return {
      policy: r.policy,
      issuer: r.issuer,
      audiences: r.audiences.length ? new Set(r.audiences.map(sanitizeAudience)) : null,
      inline,
      remote,
      timeoutMs: r.timeout_ms,
      forward: r.forward_original_token,
      payloadHeader: r.output_payload_to_header?.toLowerCase() ?? '',
      claimHeaders: r.output_claim_to_headers.map((c) => ({ header: c.header.toLowerCase(), claim: c.claim, path: c.claim.split('.') })),
      spaceDelimited: r.space_delimited_claims?.length ? [...DEFAULT_SPACE_DELIMITED, ...r.space_delimited_claims] : DEFAULT_SPACE_DELIMITED,
    };
  }

  authenticate(req: SecurityRequest): AuthnOutcome | Promise<AuthnOutcome> {
    if (this.#empty) return { ok: true, auth: null, headers: req.headers };
    const headers = this.#sanitized(req.headers);
    const found = this.#extract(headers, req.query);
    if (found === null) return { ok: true, auth: null, headers };
    return this.#verifyAll(req, headers, found);
  }

  /** `headers` without the ones the rules write; the same array when it has none of them. */
  #sanitized(headers: string[]): string[] {
    const written = this.#written;
    if (written.size === 0) return headers;
    let i = 0;
    while (i < headers.length && !written.has(headers[i]!)) i += 2;
    if (i >= headers.length) return headers;
    const out = headers.slice(0, i);
    for (; i < headers.length; i += 2) if (!written.has(headers[i]!)) out.push(headers[i]!, headers[i + 1]!);
    return out;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const r of this.#remotes) r.release();
  }

  #extract(h: readonly string[], query: string): FoundToken[] | null {
    let found: FoundToken[] | null = null;
    const cookies = this.#cookieLocs.length > 0;
    for (let i = 0; i + 1 < h.length; i += 2) {
      const name = h[i]!;
      const locs = this.#headerLocs.get(name);
      if (locs) {
        for (const loc of locs) {
          const t = afterPrefix(h[i + 1]!, loc.prefix);
          if (t !== null) (found ??= []).push({ token: t, loc });
        }
      }
      if (cookies && name === 'cookie') {
        for (const loc of this.#cookieLocs) {
          const t = cookieValue(h[i + 1]!, loc.name);
          if (t !== null) (found ??= []).push({ token: t, loc });
        }
      }
    }
    if (this.#paramLocs.length > 0 && query.length > 1) {
      for (const loc of this.#paramLocs) {
        if (!query.includes(loc.name)) continue;
        const t = queryParam(query, loc.name);
        if (t !== null) (found ??= []).push({ token: t, loc });
      }
    }
    return found;
  }

  /** Envoy: every token found must verify (a good one does not cover a bad one). */
  async #verifyAll(req: SecurityRequest, sanitized: string[], found: FoundToken[]): Promise<AuthnOutcome> {
    let auth: RequestAuth | null = null;
    // Edited in place once it is a copy of the request's own list.
    let headers: string[] | null = sanitized !== req.headers ? sanitized : null;
    for (const f of found) {
      const r = await this.#verify(f);
      if (typeof r === 'string') {
        this.#log.debug({ location: `${f.loc.kind}:${f.loc.name}`, reason: r, path: req.path }, 'jwt: token rejected');
        // Envoy: 403 for a disallowed audience, else 401 with a Bearer challenge.
        if (r === JWT_ERRORS.audienceNotAllowed) return { ok: false, status: 403, body: r, headers: [] };
        return { ok: false, status: 401, body: r, headers: ['www-authenticate', `Bearer realm="${req.sni ? 'https' : 'http'}://${req.authority}${req.path}", error="invalid_token"`] };
      }
      const { rule, jwt } = r;
      auth ??= {
        principal: `${jwt.iss}/${jwt.sub}`,
        audiences: jwt.aud,
        presenter: jwt.azp,
        claims: normalizePayload(jwt.payload, rule.spaceDelimited),
      };
      if (!rule.forward && f.loc.kind === 'header') {
        headers ??= req.headers.slice();
        removeHeader(headers, f.loc.name);
      }
      if (rule.payloadHeader) {
        headers ??= req.headers.slice();
        setHeader(headers, rule.payloadHeader, jwt.payloadSegment);
      }
      for (const c of rule.claimHeaders) {
        const v = claimValue(jwt.payload, c.claim, c.path);
        // Istio: string, number and boolean claims only; a claim of another type (or absent) sets no header.
        if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') continue;
        const s = typeof v === 'string' ? v : JSON.stringify(v);
        if (s === '' || BAD_HEADER_VALUE.test(s)) continue;
        headers ??= req.headers.slice();
        setHeader(headers, c.header, s);
      }
    }
    return { ok: true, auth, headers: headers ?? req.headers };
  }

  async #verify(f: FoundToken): Promise<{ rule: CompiledRule; jwt: ParsedJwt } | string> {
    const jwt = parseJwt(f.token);
    if (typeof jwt === 'string') return jwt;
    const rules = f.loc.byIssuer.get(jwt.iss);
    if (!rules) return JWT_ERRORS.unknownIssuer;
    const now = Math.floor(Date.now() / 1000);
    if (jwt.nbf !== undefined && now + CLOCK_SKEW_S < jwt.nbf) return JWT_ERRORS.notYetValid;
    if (jwt.exp !== undefined && now > jwt.exp + CLOCK_SKEW_S) return JWT_ERRORS.expired;
    let firstError: string | undefined;
    for (const rule of rules) {
      if (rule.audiences && !jwt.aud.some((a) => rule.audiences!.has(sanitizeAudience(a)))) {
        firstError ??= JWT_ERRORS.audienceNotAllowed;
        continue;
      }
      const keys = rule.inline ?? (await rule.remote!.keys(rule.timeoutMs));
      if (!keys) {
        firstError ??= JWT_ERRORS.jwksFetchFail;
        continue;
      }
      const err = await verifySignature(f.token, jwt.alg, jwt.kid, keys);
      if (err === null) return { rule, jwt };
      firstError ??= err;
    }
    return firstError ?? JWT_ERRORS.verificationFail;
  }
}

/**
 * RequestAuthentication for one workload and config version: `rules` are the jwtRules of every
 * applicable policy. Starts fetching every `jwks_uri` now; close() stops their refreshes.
 */
export function createJwtAuthenticator(
  rules: readonly JwtRuleConfig[],
  log: Logger,
  opts: JwtAuthenticatorOptions = {},
): Authenticator {
  return new JwtAuthenticator(rules, log, opts);
}
