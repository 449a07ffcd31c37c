// DNS resolution of ServiceEntry hosts (resolution DNS / DNS_ROUND_ROBIN, and the authority of
// NONE clusters), as Envoy's STRICT_DNS / LOGICAL_DNS clusters resolve them for Istio:
// - A records first (AAAA only when the name has no A record), with their TTL;
// - answers cached in an LRU, each for its TTL bounded to [1 s, 5 min] (a TTL of 0 counts as 1 s);
// - names in use (`retain`) re-resolved in the background when their answer expires (Envoy's
//   dns_refresh_rate with respect_dns_ttl), so requests never wait for DNS;
// - a failed refresh (timeout, SERVFAIL, refused, ...) keeps the last good answer; an
//   authoritative "no such name" / "no address" (NXDOMAIN, NODATA) empties it, as Envoy does;
//   failures are retried with a backoff (1 s doubling to 30 s), logged once per failure streak and
//   counted in gatehouse_dns_resolutions_total{host,result};
// - IP literals and `localhost` are never looked up;
// - lookups are bounded (c-ares timeout/tries, plus a hard deadline), so a dead server hangs nothing.
// The servers are the system's, or GATEHOUSE_DNS_SERVERS (`ip` or `ip:port`, comma-separated).
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../telemetry/log.js';

export const DNS_SERVERS_ENV = 'GATEHOUSE_DNS_SERVERS';
export const MIN_TTL_MS = 1_000;
export const MAX_TTL_MS = 300_000;
const FAILURE_RETRY_MIN_MS = 1_000;
const FAILURE_RETRY_MAX_MS = 30_000;
/** Cached names (answers of names no longer in use stay until evicted, for reuse). */
const CACHE_MAX = 10_000;
/** DNS error codes that are an authoritative answer: the name has no address. */
const NO_ADDRESS_CODES = new Set(['ENOTFOUND', 'ENODATA']);

export interface DnsAnswer {
  /** Addresses in the order the server gave them (empty: the name has none). */
  readonly addresses: readonly string[];
  /** The record TTL as used (bounded), in ms. */
  readonly ttlMs: number;
}

export interface DnsResolverOptions {
  /** `ip` or `ip:port` entries; default: GATEHOUSE_DNS_SERVERS, else the system's servers. */
  servers?: readonly string[];
  /** c-ares per-try timeout (ms); default 1000. */
  timeoutMs?: number;
  /** c-ares tries per server; default 2. */
  tries?: number;
  log?: Logger | null;
  /** Where gatehouse_dns_resolutions_total is registered (a private registry when omitted). */
  registry?: Registry | null;
  minTtlMs?: number;
  maxTtlMs?: number;
}

/** A lookup's outcome: the answer, or the DNS error (answers to NXDOMAIN / NODATA are empty). */
type LookupResult = DnsAnswer | (Error & { code?: string });

interface NameState {
  /** The lookup in progress, if any. */
  inflight: Promise<LookupResult> | null;
  timer: NodeJS.Timeout | null;
  /** Consecutive failures (0: the last lookup succeeded or none was made yet). */
  failures: number;
  /** Whether any lookup of this name has completed (with success or failure). */
  settled: boolean;
  lastError: string;
}

/** Servers from GATEHOUSE_DNS_SERVERS, or undefined when unset. */
export function serversFromEnv(env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  const v = env[DNS_SERVERS_ENV];
  if (v === undefined || v.trim() === '') return undefined;
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** A host name as looked up: lower case, without a trailing dot. */
export function normalizeHost(host: string): string {
  const h = host.toLowerCase();
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

/** The addresses of a name that needs no lookup (IP literal, localhost), else null. */
export function literalAddresses(host: string): string[] | null {
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (isIP(host)) return [host];
  if (host === 'localhost') return ['127.0.0.1'];
  return null;
}

export class DnsResolver {
  /** Called (after the cache is updated) when a name's address list changes. */
  onChange: ((host: string, addresses: readonly string[]) => void) | null = null;
  readonly #resolver: Resolver;
  readonly #cache: LRUCache<string, DnsAnswer>;
  readonly #names = new Map<string, NameState>();
  /** Names whose answers are kept fresh in the background. */
  #inUse = new Set<string>();
  readonly #log: Logger | null;
  readonly #counter: Counter<'host' | 'result'>;
  readonly #deadlineMs: number;
  readonly #minTtl: number;
  readonly #maxTtl: number;
  #closed = false;

  constructor(opts: DnsResolverOptions = {}) {
    const timeout = opts.timeoutMs ?? 1_000;
    const tries = opts.tries ?? 2;
    this.#resolver = new Resolver({ timeout, tries });
    this.#log = opts.log ?? null;
    const servers = opts.servers ?? serversFromEnv();
    if (servers && servers.length > 0) {
      try {
        this.#resolver.setServers(servers);
      } catch (err) {
        this.#log?.error({ servers, err: (err as Error).message }, `${DNS_SERVERS_ENV}: invalid DNS server list; using the system's DNS servers`);
      }
    }
    // c-ares doubles the timeout on each try; a little more than that, in case it does not return.
    let d = 0;
    for (let i = 0, t = timeout; i < tries; i++, t *= 2) d += t;
    this.#deadlineMs = d * Math.max(1, this.#resolver.getServers().length) + 500;
    this.#minTtl = opts.minTtlMs ?? MIN_TTL_MS;
    this.#maxTtl = opts.maxTtlMs ?? MAX_TTL_MS;
    this.#cache = new LRUCache<string, DnsAnswer>({ max: CACHE_MAX, ttl: this.#maxTtl, allowStale: true, noDeleteOnStaleGet: true, updateAgeOnGet: false });
    this.#counter = new Counter({
      name: 'gatehouse_dns_resolutions_total',
      help: 'DNS resolutions of upstream host names, by host and result (ok, failure)',
      labelNames: ['host', 'result'],
      registers: opts.registry ? [opts.registry] : [],
    });
  }

  /** The DNS servers in use. */
  servers(): string[] {
    return this.#resolver.getServers();
  }

  /**
   * The last good answer's addresses (possibly past its TTL while a refresh runs), or undefined
   * when the name never resolved. Never blocks, never starts a lookup.
   */
  addresses(host: string): readonly string[] | undefined {
    const h = normalizeHost(host);
    return literalAddresses(h) ?? this.#cache.get(h, { allowStale: true })?.addresses;
  }

  /** Whether a lookup of the name has completed (successfully or not). */
  settled(host: string): boolean {
    const h = normalizeHost(host);
    if (literalAddresses(h)) return true;
    return this.#cache.get(h, { allowStale: true }) !== undefined || (this.#names.get(h)?.settled ?? false);
  }

  /** The last error of a name ('' when its last lookup succeeded). */
  lastError(host: string): string {
    return this.#names.get(normalizeHost(host))?.lastError ?? '';
  }

  /**
   * The names to keep fresh. New ones are looked up now; names no longer listed stop refreshing
   * (their answers stay cached until they expire from the LRU).
   */
  retain(hosts: Iterable<string>): void {
    const next = new Set<string>();
    for (const host of hosts) {
      const h = normalizeHost(host);
      if (!literalAddresses(h)) next.add(h);
    }
    for (const h of this.#inUse) {
      if (next.has(h)) continue;
      const st = this.#names.get(h);
      if (st?.timer) clearTimeout(st.timer);
      if (st && !st.inflight) this.#names.delete(h);
      else if (st) st.timer = null;
    }
    this.#inUse = next;
    for (const h of next) {
      const st = this.#names.get(h);
      if (st && (st.inflight || st.timer)) continue;
      const remaining = this.#cache.getRemainingTTL(h);
      if (remaining > 0 && remaining !== Infinity) this.#schedule(h, this.#state(h), remaining);
      else void this.#lookup(h);
    }
  }

  /**
   * Waits until every listed name has had a first answer (or failure), at most `timeoutMs`.
   * Resolves true when all settled in time.
   */
  async waitSettled(hosts: Iterable<string>, timeoutMs: number): Promise<boolean> {
    const pending: Array<Promise<unknown>> = [];
    for (const host of hosts) {
      const h = normalizeHost(host);
      if (this.settled(h)) continue;
      const st = this.#names.get(h);
      pending.push(st?.inflight ?? this.#lookup(h));
    }
    if (pending.length === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((res) => {
      timer = setTimeout(() => res(false), timeoutMs);
      timer.unref();
    });
    const done = await Promise.race([Promise.all(pending).then(() => true), timeout]);
    clearTimeout(timer);
    return done;
  }

  /**
   * The addresses of a name, looking it up when it has no fresh answer (a stale answer is returned
   * at once while a refresh runs). Rejects with the DNS error when the name has no address.
   */
  async resolve(host: string): Promise<readonly string[]> {
    const h = normalizeHost(host);
    const literal = literalAddresses(h);
    if (literal) return literal;
    const fresh = this.#cache.get(h, { allowStale: false, noDeleteOnStaleGet: true });
    if (fresh && fresh.addresses.length > 0) return fresh.addresses;
    const stale = this.#cache.get(h, { allowStale: true });
    const st = this.#names.get(h);
    const lookup = st?.inflight ?? this.#lookup(h);
    if (stale && stale.addresses.length > 0) return stale.addresses;
    const result = await lookup;
    if (!(result instanceof Error) && result.addresses.length > 0) return result.addresses;
    const cause = result instanceof Error ? result : null;
    const code = cause?.code ?? 'ENOTFOUND';
    throw Object.assign(new Error(`DNS resolution of ${h} failed: ${code}${cause ? ` (${cause.message})` : ''}`), { code, dns: true });
  }

  close(): void {
    this.#closed = true;
    for (const st of this.#names.values()) if (st.timer) clearTimeout(st.timer);
    this.#names.clear();
    this.#inUse.clear();
    this.#resolver.cancel();
  }

  #state(h: string): NameState {
    let st = this.#names.get(h);
    if (!st) {
      st = { inflight: null, timer: null, failures: 0, settled: false, lastError: '' };
      this.#names.set(h, st);
    }
    return st;
  }

  #schedule(h: string, st: NameState, ms: number): void {
    if (st.timer) clearTimeout(st.timer);
    st.timer = setTimeout(() => {
      st.timer = null;
      if (this.#inUse.has(h)) void this.#lookup(h);
    }, ms);
    st.timer.unref();
  }

  #lookup(h: string): Promise<LookupResult> {
    const st = this.#state(h);
    if (st.inflight) return st.inflight;
    const p = this.#query(h).then(
      (answer) => this.#succeeded(h, st, answer),
      (err: Error & { code?: string }) => this.#failed(h, st, err),
    );
    st.inflight = p;
    return p;
  }

  async #query(h: string): Promise<DnsAnswer> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(Object.assign(new Error(`query ${h} ETIMEOUT`), { code: 'ETIMEOUT' })), this.#deadlineMs);
      timer.unref();
    });
    try {
      return await Promise.race([this.#queryRecords(h), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #queryRecords(h: string): Promise<DnsAnswer> {
    let records: Array<{ address: string; ttl: number }>;
    try {
      records = await this.#resolver.resolve4(h, { ttl: true });
    } catch (err) {
      // No A record for an existing name: try AAAA.
      if ((err as { code?: string }).code !== 'ENODATA') throw err;
      records = await this.#resolver.resolve6(h, { ttl: true });
    }
    if (records.length === 0) throw Object.assign(new Error(`query ${h} ENODATA`), { code: 'ENODATA' });
    const ttl = Math.min(...records.map((r) => r.ttl));
    return { addresses: records.map((r) => r.address), ttlMs: this.#boundTtl(ttl * 1000) };
  }

  #boundTtl(ms: number): number {
    return Math.min(this.#maxTtl, Math.max(this.#minTtl, ms));
  }

  #succeeded(h: string, st: NameState, answer: DnsAnswer): LookupResult {
    st.inflight = null;
    if (this.#closed) return answer;
    this.#counter.inc({ host: h, result: 'ok' });
    if (st.failures > 0) this.#log?.info({ host: h, addresses: answer.addresses }, `DNS resolution of ${h} recovered: ${answer.addresses.join(', ')}`);
    st.failures = 0;
    st.settled = true;
    st.lastError = '';
    this.#store(h, answer);
    if (this.#inUse.has(h)) this.#schedule(h, st, answer.ttlMs);
    else if (!st.timer) this.#names.delete(h);
    return answer;
  }

  #failed(h: string, st: NameState, err: Error & { code?: string }): LookupResult {
    st.inflight = null;
    if (this.#closed) return err;
    this.#counter.inc({ host: h, result: 'failure' });
    const code = err.code ?? 'ERROR';
    st.lastError = `${code} (${err.message})`;
    st.settled = true;
    const last = this.#cache.get(h, { allowStale: true });
    const authoritative = NO_ADDRESS_CODES.has(code);
    const retryMs = Math.min(FAILURE_RETRY_MAX_MS, FAILURE_RETRY_MIN_MS * 2 ** Math.min(st.failures, 10));
    if (st.failures === 0) {
      const outcome = authoritative
        ? 'the name has no address; its endpoints are removed'
        : last && last.addresses.length > 0
          ? `keeping the last answer (${last.addresses.join(', ')})`
          : 'no endpoints until it resolves';
      this.#log?.warn({ host: h, code, err: err.message }, `DNS resolution of ${h} failed: ${code}; ${outcome}`);
    }
    st.failures++;
    if (authoritative) {
      // NXDOMAIN / NODATA: a successful lookup of "no address", as Envoy treats it.
      this.#store(h, { addresses: [], ttlMs: retryMs });
    }
    if (this.#inUse.has(h)) this.#schedule(h, st, retryMs);
    else if (!st.timer) this.#names.delete(h);
    return err;
  }

  #store(h: string, answer: DnsAnswer): void {
    const before = this.#cache.get(h, { allowStale: true });
    this.#cache.set(h, answer, { ttl: answer.ttlMs });
    if (!sameAnswer(before?.addresses, answer.addresses)) this.onChange?.(h, answer.addresses);
  }
}

/** Same addresses (in any order) and the same first address (what LOGICAL_DNS uses). */
function sameAnswer(a: readonly string[] = [], b: readonly string[]): boolean {
  if (a.length !== b.length || a[0] !== b[0]) return false;
  const s = new Set(a);
  return b.every((x) => s.has(x));
}
