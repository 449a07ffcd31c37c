// Clusters at run time: endpoints with their connection pools (undici for HTTP/1.1, H2Pool for
// HTTP/2 and gRPC upstreams, either with TLS origination per DestinationRule) and load balancers,
// rebuilt from each snapshot. Pools are keyed by endpoint address and connection settings and outlive
// config versions, so a reload never drops a keep-alive connection or an in-flight request; a pool
// no version uses any more is closed gracefully (it finishes what it has in flight).
// Circuit breakers and outlier detection live per cluster name (ClusterState) and per host, also
// across versions: a reload neither forgets an ejection nor loses count of requests in flight.
// DNS clusters (ServiceEntry resolution DNS → STRICT_DNS: one endpoint per address of each host
// name; DNS_ROUND_ROBIN → LOGICAL_DNS: the first address of each) take their addresses from the
// DnsResolver's cache and are rebuilt from the last snapshot when an answer changes. A name that
// never resolved has no endpoints (503 UH). NONE → ORIGINAL_DST: the request's authority, resolved
// on connect, with pools per destination in a bounded LRU.
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { Registry } from 'prom-client';
import { Pool, buildConnector } from 'undici';
import type { Logger } from '../telemetry/log.js';
import { durationToMs, type Cluster, type ClusterIstioMetadata, type ClusterLoadAssignment, type LbPolicy, type Snapshot, type UpstreamTlsContext } from '../controlplane/snapshot.js';
import { CircuitBreaker } from './circuit-breaker.js';
import { DnsResolver, normalizeHost } from './dns.js';
import { H1Pool } from './h1-pool.js';
import { H2Pool, type H2PoolOptions, type UpstreamPool } from './h2-pool.js';
import { RequestHasher, type HashRequest } from './hash-key.js';
import { createLoadBalancer, type LoadBalancer } from './load-balancer.js';
import { Maglev } from './maglev.js';
import { HostHealth, OutlierDetector, outlierSettings, type LocalFailure } from './outlier-detection.js';
import { RingHash } from './ring-hash.js';
import { TlsOrigination, type SdsMaterial } from './tls-origination.js';

/** Envoy's stream idle timeout (5 min): a stalled upstream cannot hold a request forever. */
const STREAM_IDLE_TIMEOUT_MS = 300_000;
/** Below the 5 s keep-alive of Node and many servers, to avoid reusing a socket the server is closing. */
const UPSTREAM_KEEPALIVE_MS = 4_000;
/** A burst of DNS answer changes is applied in one rebuild after this delay. */
const DNS_REBUILD_DEBOUNCE_MS = 50;
/** Original-destination pools kept (least recently used are closed beyond this). */
const ORIGINAL_DST_MAX_POOLS = 256;
/**
 * Plain HTTP/1.1 upstreams use our own client (h1-pool.ts): a third less CPU per proxied request
 * than undici's Pool (bench, same run). GATEHOUSE_H1_CLIENT=undici puts them back on undici; TLS
 * origination always uses undici.
 */
const LEAN_H1 = process.env.GATEHOUSE_H1_CLIENT !== 'undici';

export interface UpstreamEndpoint {
  readonly address: string;
  readonly port: number;
  /** `address:port` */
  readonly hostPort: string;
  readonly weight: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly workload: string;
  readonly namespace: string;
  /** undici's Pool (HTTP/1.1) or an H2Pool (HTTP/2, gRPC): the same dispatch protocol. */
  readonly pool: UpstreamPool;
  active: number;
  /** Outlier state of this host in its cluster, shared by every config version. */
  health: HostHealth;
  /** The host name this endpoint's address was resolved from (DNS and original-destination clusters). */
  readonly hostname?: string;
}

const NO_HEADERS: readonly string[] = [];
const hostKey = (e: UpstreamEndpoint): string => e.hostPort;

/** What a cluster keeps across config versions: breaker, host health, outlier detector. */
export class ClusterState {
  readonly breaker = new CircuitBreaker();
  /** Health of the cluster's hosts by `address:port`. */
  readonly hosts = new Map<string, HostHealth>();
  outlier: OutlierDetector | null = null;
  /** Istio minHealthPercent: below this % of healthy hosts the balancer uses all hosts (panic). */
  minHealthPercent = 0;
  /** Bumped whenever a host is ejected or returns: balancers rebuild their host set. */
  generation = 0;
  #timer: NodeJS.Timeout | null = null;
  #intervalMs = 0;

  /** Applies a cluster's settings; `hostPorts` are its hosts in this version (others are forgotten). */
  configure(cluster: Cluster, hostPorts: ReadonlySet<string>): void {
    this.breaker.configure(cluster.circuit_breakers.thresholds[0]);
    for (const hp of this.hosts.keys()) if (!hostPorts.has(hp)) this.hosts.delete(hp);
    for (const hp of hostPorts) if (!this.hosts.has(hp)) this.hosts.set(hp, new HostHealth());
    const od = cluster.outlier_detection;
    if (od) {
      const settings = outlierSettings(od);
      if (this.outlier) this.outlier.settings = settings;
      else this.outlier = new OutlierDetector(settings, this.hosts, () => this.generation++);
      this.outlier.recount();
      this.minHealthPercent = cluster.metadata.filter_metadata.istio.min_health_percent ?? 0;
      if (this.#intervalMs !== settings.intervalMs) {
        this.#stopTimer();
        this.#intervalMs = settings.intervalMs;
        const detector = this.outlier;
        this.#timer = setInterval(() => detector.tick(), settings.intervalMs);
        this.#timer.unref();
      }
    } else if (this.outlier) {
      // Outlier detection switched off: every host is back.
      for (const h of this.hosts.values()) h.ejected = false;
      this.outlier = null;
      this.minHealthPercent = 0;
      this.#stopTimer();
      this.generation++;
    }
  }

  health(hostPort: string): HostHealth {
    let h = this.hosts.get(hostPort);
    if (!h) {
      h = new HostHealth();
      this.hosts.set(hostPort, h);
    }
    return h;
  }

  close(): void {
    this.#stopTimer();
  }

  #stopTimer(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#intervalMs = 0;
  }
}

interface HashBalancer {
  pickHash(hi: number, lo: number): UpstreamEndpoint | undefined;
  pick(): UpstreamEndpoint | undefined;
}

export class ClusterRuntime {
  readonly name: string;
  readonly meta: ClusterIstioMetadata;
  readonly lbPolicy: LbPolicy;
  readonly connectTimeoutMs: number;
  readonly endpoints: readonly UpstreamEndpoint[];
  readonly state: ClusterState;
  readonly breaker: CircuitBreaker;
  /** Consistent hashing: computes the request's key hash; null for the other policies. */
  readonly hasher: RequestHasher | null;
  /** maxRequestsPerConnection 1: every request on a fresh connection, closed after it. */
  readonly closeAfterEachRequest: boolean;
  /** Upstream connections: HTTP/2 (GRPC / HTTP2 ports, h2UpgradePolicy UPGRADE) or HTTP/1.1; TLS origination. */
  readonly upstreamProtocol: 'HTTP/2' | 'HTTP/1.1';
  readonly tls: boolean;
  /** After `pick`: a Set-Cookie value for the response (a hash cookie was generated), else null. */
  setCookie: string | null = null;
  readonly #ringSize: number;
  #lb: LoadBalancer<UpstreamEndpoint> | null = null;
  #hashLb: HashBalancer | null = null;
  /** The state generation the balancer was built for (-1: not built yet). */
  #generation = -1;
  /** ORIGINAL_DST (resolution NONE): endpoints by request authority instead of a fixed list. */
  readonly #originalDst: OriginalDst | null;

  constructor(cluster: Cluster, endpoints: readonly UpstreamEndpoint[], state: ClusterState = new ClusterState(), originalDst: OriginalDst | null = null) {
    this.#originalDst = originalDst;
    this.name = cluster.name;
    this.meta = cluster.metadata.filter_metadata.istio;
    this.lbPolicy = cluster.lb_policy;
    this.connectTimeoutMs = durationToMs(cluster.connect_timeout);
    this.endpoints = endpoints;
    this.state = state;
    this.breaker = state.breaker;
    this.closeAfterEachRequest = cluster.common_http_protocol_options.max_requests_per_connection === 1;
    this.upstreamProtocol = cluster.http2_protocol_options ? 'HTTP/2' : 'HTTP/1.1';
    this.tls = cluster.transport_socket !== undefined;
    const hashed = cluster.lb_policy === 'RING_HASH' || cluster.lb_policy === 'MAGLEV';
    this.hasher = hashed && this.meta.hash_policy?.length ? new RequestHasher(this.meta.hash_policy) : null;
    this.#ringSize = cluster.lb_policy === 'MAGLEV' ? (cluster.maglev_lb_config?.table_size ?? 65537) : (cluster.ring_hash_lb_config?.minimum_ring_size ?? 1024);
  }

  /**
   * The endpoint for an attempt. Other policies avoid `exclude` (hosts already tried) when they can;
   * consistent hashing ignores it, as Istio drops the previous_hosts retry predicate for it, and
   * hashes the request (`req`, the client address, the forwarded headers) instead.
   */
  pick(exclude?: ReadonlySet<UpstreamEndpoint>, req?: HashRequest, remoteAddress = '', forwarded: readonly string[] = NO_HEADERS): UpstreamEndpoint | undefined {
    // The exchange passes its RequestHead: an original-destination cluster goes to its authority.
    if (this.#originalDst !== null) return this.#originalDst.pick((req as { authority?: string } | undefined)?.authority);
    if (this.#generation !== this.state.generation) this.#rebuild();
    const hashLb = this.#hashLb;
    if (hashLb === null) return this.#lb!.pick(exclude);
    const hasher = this.hasher;
    if (hasher !== null && req !== undefined && hasher.hash(req, remoteAddress, forwarded)) {
      this.setCookie = hasher.setCookie;
      return hashLb.pickHash(hasher.hi, hasher.lo);
    }
    this.setCookie = null;
    return hashLb.pick();
  }

  /** Outlier detection: an HTTP status from an endpoint. */
  reportStatus(ep: UpstreamEndpoint, status: number): void {
    this.state.outlier?.httpStatus(ep.health, status);
  }

  /** Outlier detection: a connect failure, reset or timeout at an endpoint. */
  reportFailure(ep: UpstreamEndpoint, kind: LocalFailure): void {
    this.state.outlier?.localFailure(ep.health, kind);
  }

  /** Hosts not ejected, or all of them in panic (fewer healthy than minHealthPercent), as Envoy balances. */
  #rebuild(): void {
    this.#generation = this.state.generation;
    let eps = this.endpoints;
    if (this.state.outlier !== null) {
      const healthy = eps.filter((e) => !e.health.ejected);
      const panic = healthy.length < eps.length && (100 * healthy.length) / eps.length < this.state.minHealthPercent;
      if (!panic) eps = healthy;
    }
    if (this.lbPolicy === 'RING_HASH') this.#hashLb = new RingHash(eps, hostKey, this.#ringSize);
    else if (this.lbPolicy === 'MAGLEV') this.#hashLb = new Maglev(eps, hostKey, this.#ringSize);
    else this.#lb = createLoadBalancer(this.lbPolicy, eps);
  }
}

interface PoolEntry {
  pool: UpstreamPool;
  key: string;
}

export interface ClusterManagerOptions {
  /** Resolves DNS cluster hosts; made on first need (servers from GATEHOUSE_DNS_SERVERS) when omitted. */
  resolver?: DnsResolver;
  log?: Logger | null;
  /** Where the resolver registers gatehouse_dns_resolutions_total. */
  registry?: Registry | null;
  /** SDS-named TLS material (ISTIO_MUTUAL's mesh certificate and root). */
  sds?: SdsMaterial;
}

export class ClusterManager {
  #clusters = new Map<string, ClusterRuntime>();
  #pools = new Map<string, PoolEntry>();
  #states = new Map<string, ClusterState>();
  /** TLS origination settings by content, shared by the pools that use them. */
  #originations = new Map<string, TlsOrigination>();
  /** Endpoint objects by cluster+address, reused across versions so in-flight counts stay right. */
  #endpoints = new Map<string, UpstreamEndpoint>();
  readonly #opts: ClusterManagerOptions;
  #resolver: DnsResolver | null = null;
  /** Host names the DNS clusters of the current snapshot resolve. */
  #dnsNames = new Set<string>();
  /** The last snapshot, rebuilt when a DNS answer changes. */
  #snapshot: Snapshot | null = null;
  #rebuildTimer: NodeJS.Timeout | null = null;
  #originalDst: OriginalDstPools | null = null;

  constructor(opts: ClusterManagerOptions = {}) {
    this.#opts = opts;
    if (opts.resolver) this.#useResolver(opts.resolver);
  }

  /** The DNS resolver (made on first use). */
  get resolver(): DnsResolver {
    return this.#resolver ?? this.#useResolver(new DnsResolver({ log: this.#opts.log ?? null, registry: this.#opts.registry ?? null }));
  }

  #useResolver(r: DnsResolver): DnsResolver {
    this.#resolver = r;
    r.onChange = (host) => {
      if (this.#dnsNames.has(host)) this.#scheduleRebuild();
    };
    return r;
  }

  #scheduleRebuild(): void {
    if (this.#rebuildTimer !== null) return;
    this.#rebuildTimer = setTimeout(() => {
      this.#rebuildTimer = null;
      if (this.#snapshot) this.update(this.#snapshot);
    }, DNS_REBUILD_DEBOUNCE_MS);
    this.#rebuildTimer.unref();
  }

  /**
   * Cluster warming: waits (at most `timeoutMs`) for the first DNS answer of host names that
   * never resolved yet, then applies the answers at once, so that new routes start with endpoints.
   */
  async warm(timeoutMs = 5_000): Promise<void> {
    const r = this.#resolver;
    if (r === null) return;
    const pending = [...this.#dnsNames].filter((h) => !r.settled(h));
    if (pending.length > 0) {
      const done = await r.waitSettled(pending, timeoutMs);
      if (!done) this.#opts.log?.warn({ hosts: pending.filter((h) => !r.settled(h)) }, `DNS: no answer within ${timeoutMs} ms; serving without those endpoints until they resolve`);
    }
    if (this.#rebuildTimer !== null) {
      clearTimeout(this.#rebuildTimer);
      this.#rebuildTimer = null;
      if (this.#snapshot) this.update(this.#snapshot);
    }
  }

  get(name: string): ClusterRuntime | undefined {
    return this.#clusters.get(name);
  }

  clusters(): IterableIterator<ClusterRuntime> {
    return this.#clusters.values();
  }

  /** Builds the clusters of a new snapshot; pools no longer used are closed after their requests finish. */
  update(snapshot: Snapshot): void {
    this.#snapshot = snapshot;
    const dnsNames = new Set<string>();
    const clusters = new Map<string, ClusterRuntime>();
    const usedPools = new Set<string>();
    const endpoints = new Map<string, UpstreamEndpoint>();
    const states = new Map<string, ClusterState>();
    const originations = new Map<string, TlsOrigination>();
    for (const cluster of snapshot.clusters.values()) {
      const cla = snapshot.endpoints.get(cluster.name);
      const state = this.#states.get(cluster.name) ?? new ClusterState();
      states.set(cluster.name, state);
      if (cluster.type === 'ORIGINAL_DST' && !cla?.endpoints.some((l) => l.lb_endpoints.length > 0)) {
        state.configure(cluster, new Set());
        clusters.set(cluster.name, new ClusterRuntime(cluster, [], state, this.#originalDstFor(cluster)));
        continue;
      }
      const eps = this.#buildEndpoints(cluster, cla, usedPools, endpoints, state, originations, dnsNames);
      clusters.set(cluster.name, new ClusterRuntime(cluster, eps, state));
    }
    this.#dnsNames = dnsNames;
    if (dnsNames.size > 0 || this.#resolver !== null) this.resolver.retain(dnsNames);
    for (const [name, state] of this.#states) if (!states.has(name)) state.close();
    this.#states = states;
    this.#originations = originations;
    this.#clusters = clusters;
    this.#endpoints = endpoints;
    for (const [key, entry] of this.#pools) {
      if (usedPools.has(key)) continue;
      this.#pools.delete(key);
      entry.pool.close().catch(() => undefined);
    }
  }

  #buildEndpoints(
    cluster: Cluster,
    cla: ClusterLoadAssignment | undefined,
    usedPools: Set<string>,
    out: Map<string, UpstreamEndpoint>,
    state: ClusterState,
    originations: Map<string, TlsOrigination>,
    dnsNames: Set<string>,
  ): UpstreamEndpoint[] {
    const list: UpstreamEndpoint[] = [];
    const dns = cluster.type === 'STRICT_DNS' || cluster.type === 'LOGICAL_DNS';
    let tls: TlsOrigination | null = null;
    const tc = cluster.transport_socket?.typed_config;
    if (tc) {
      // Endpoints of a DNS cluster are addresses: TLS presents (and verifies) the service's host
      // name, as Istio's auto SNI does for a ServiceEntry host, unless the rule sets `sni`.
      const host = dns ? cluster.metadata.filter_metadata.istio.host : '';
      const k = host ? `${JSON.stringify(tc)}|${host}` : JSON.stringify(tc);
      tls = originations.get(k) ?? this.#originations.get(k) ?? new TlsOrigination(tc, host, this.#opts.sds);
      originations.set(k, tls);
    }
    const poolOpts = poolOptions(cluster, tls);
    const hostPorts = new Set<string>();
    for (const locality of cla?.endpoints ?? []) {
      for (const lbe of locality.lb_endpoints) {
        const { address: configured, port_value: port } = lbe.endpoint.address.socket_address;
        let addresses: readonly string[] = [configured];
        let hostname: string | undefined;
        if (dns && !isIP(configured)) {
          // STRICT_DNS: every address of the name; LOGICAL_DNS: the first of the latest answer.
          hostname = normalizeHost(configured);
          dnsNames.add(hostname);
          const answer = this.resolver.addresses(hostname) ?? [];
          addresses = cluster.type === 'LOGICAL_DNS' ? answer.slice(0, 1) : answer;
        }
        for (const address of addresses) {
          const meta = lbe.metadata.filter_metadata.istio;
          const hostPort = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
          hostPorts.add(hostPort);
          // A connection limit is the cluster's own (Envoy pools per cluster): no sharing then.
          const poolKey = poolOpts.limited ? `${hostPort}|${poolOpts.key}|${cluster.name}` : `${hostPort}|${poolOpts.key}`;
          usedPools.add(poolKey);
          let entry = this.#pools.get(poolKey);
          if (!entry) {
            entry = { key: poolKey, pool: createPool(address, port, hostPort, poolOpts, tls) };
            this.#pools.set(poolKey, entry);
          }
          const epKey = `${cluster.name}|${poolKey}|${lbe.load_balancing_weight}|${meta.workload}|${JSON.stringify(meta.labels)}|${hostname ?? ''}`;
          let ep = this.#endpoints.get(epKey);
          if (!ep || ep.pool !== entry.pool) {
            ep = {
              address,
              port,
              hostPort,
              weight: Math.max(1, lbe.load_balancing_weight),
              labels: meta.labels,
              workload: meta.workload,
              namespace: meta.namespace,
              pool: entry.pool,
              active: 0,
              health: state.health(hostPort),
              ...(hostname !== undefined ? { hostname } : {}),
            };
          }
          out.set(epKey, ep);
          list.push(ep);
        }
      }
    }
    state.configure(cluster, hostPorts);
    for (const ep of list) ep.health = state.health(ep.hostPort);
    return list;
  }

  /** Summaries for the admin `/clusters` page, with Envoy's names for health flags and counters. */
  summary(): ClusterSummary[] {
    return [...this.#clusters.values()].map((c) => {
      const b = c.breaker;
      const od = c.state.outlier;
      return {
        name: c.name,
        lb_policy: c.lbPolicy,
        upstream_protocol: c.upstreamProtocol,
        tls: c.tls,
        circuit_breakers: {
          max_connections: b.maxConnections || 4294967295,
          max_pending_requests: b.maxPending,
          max_requests: b.maxRequests,
          max_retries: b.maxRetries,
          rq_active: b.active,
          rq_pending_active: b.pending,
          rq_retry_active: b.retries,
          upstream_rq_pending_overflow: b.pendingOverflow,
          upstream_rq_overflow: b.requestOverflow,
          upstream_rq_retry_overflow: b.retryOverflow,
        },
        ...(od ? { outlier_detection: { ejections_active: od.ejectedCount, ejections_enforced_total: od.ejectionsEnforced, ejections_overflow: od.ejectionsOverflow } } : {}),
        endpoints: c.endpoints.map((e) => ({
          address: e.hostPort,
          weight: e.weight,
          active: e.active,
          labels: { ...e.labels },
          ...(e.hostname !== undefined ? { hostname: e.hostname } : {}),
          health_flags: e.health.ejected ? '/failed_outlier_check' : 'healthy',
          ejections: e.health.numEjections,
        })),
      };
    });
  }

  /** The original-destination side of an ORIGINAL_DST cluster (pools shared by settings). */
  #originalDstFor(cluster: Cluster): OriginalDst {
    this.#originalDst ??= new OriginalDstPools(this.resolver, this.#opts.sds);
    const tc = cluster.transport_socket?.typed_config ?? null;
    // poolOptions only reads the TLS setting's key: one made for the settings, not a host.
    const settings = poolOptions(cluster, tc ? new TlsOrigination(tc, '', this.#opts.sds) : null);
    return new OriginalDst(this.#originalDst, cluster.metadata.filter_metadata.istio, settings, tc);
  }

  async close(): Promise<void> {
    if (this.#rebuildTimer !== null) clearTimeout(this.#rebuildTimer);
    this.#rebuildTimer = null;
    this.#resolver?.close();
    const originalDst = this.#originalDst?.drain() ?? [];
    this.#originalDst = null;
    const pools = [...this.#pools.values(), ...originalDst.map((pool) => ({ pool }))];
    this.#pools.clear();
    this.#clusters.clear();
    for (const s of this.#states.values()) s.close();
    this.#states.clear();
    await Promise.all(pools.map((p) => p.pool.destroy().catch(() => undefined)));
  }
}

export interface ClusterSummary {
  name: string;
  lb_policy: string;
  upstream_protocol: string;
  tls: boolean;
  circuit_breakers: Record<string, number>;
  outlier_detection?: { ejections_active: number; ejections_enforced_total: number; ejections_overflow: number };
  endpoints: Array<{ address: string; hostname?: string; weight: number; active: number; labels: Record<string, string>; health_flags: string; ejections: number }>;
}

interface PoolSettings {
  key: string;
  options: Pool.Options;
  limited: boolean;
  /** HTTP/2 to the upstream (GRPC / HTTP2 ports, h2UpgradePolicy UPGRADE). */
  h2: H2PoolOptions | null;
}

function createPool(address: string, port: number, hostPort: string, settings: PoolSettings, tls: TlsOrigination | null): UpstreamPool {
  if (settings.h2) return new H2Pool(address, port, settings.h2);
  if (!tls) return LEAN_H1 ? new H1Pool(address, port, settings.options) : new Pool(`http://${hostPort}`, settings.options);
  // TLS origination: undici picks the SNI per request from the Host header (auto_sni), unless the
  // DestinationRule fixes it; the connector checks the certificate as the rule says.
  return new Pool(`https://${hostPort}`, { ...settings.options, connect: tls.undiciConnector(settings.options.connectTimeout ?? 10_000) });
}

function poolOptions(cluster: Cluster, tls: TlsOrigination | null): PoolSettings {
  const connectTimeout = Math.max(1, Math.round(durationToMs(cluster.connect_timeout)));
  const idle = durationToMs(cluster.common_http_protocol_options.idle_timeout);
  const keepAliveTimeout = Math.max(1, Math.min(UPSTREAM_KEEPALIVE_MS, idle || UPSTREAM_KEEPALIVE_MS));
  const maxRequests = cluster.common_http_protocol_options.max_requests_per_connection;
  const maxConnections = cluster.circuit_breakers.thresholds[0]?.max_connections ?? 0;
  const options: Pool.Options = {
    connectTimeout,
    keepAliveTimeout,
    keepAliveMaxTimeout: keepAliveTimeout,
    headersTimeout: STREAM_IDLE_TIMEOUT_MS,
    bodyTimeout: STREAM_IDLE_TIMEOUT_MS,
    pipelining: 1,
    // Large enough for any header block an upstream should send; undici's default is 16 KiB.
    maxHeaderSize: 64 * 1024,
  };
  // undici lets a socket carry maxRequestsPerClient + 1 requests (it marks the socket for closing only
  // once its counter has reached the limit): N - 1 gives N. N = 1 cannot be said that way; the
  // exchange sends those requests with `reset` (see ClusterRuntime.closeAfterEachRequest).
  if (maxRequests > 1) options.maxRequestsPerClient = maxRequests - 1;
  const limited = maxConnections > 0 && maxConnections < 4294967295;
  if (limited) options.connections = maxConnections;
  let key = `${connectTimeout}|${keepAliveTimeout}|${maxRequests}|${maxConnections}`;
  let h2: H2PoolOptions | null = null;
  const h2opts = cluster.http2_protocol_options;
  if (h2opts) {
    h2 = {
      connectTimeoutMs: connectTimeout,
      // HTTP/2 sessions stay open for the cluster's idle timeout (1 h by default), as Envoy's do.
      idleTimeoutMs: idle || 3_600_000,
      streamIdleTimeoutMs: STREAM_IDLE_TIMEOUT_MS,
      maxConcurrentStreams: h2opts.max_concurrent_streams ?? 0,
      maxSessions: limited ? maxConnections : 0,
      maxStreamsPerSession: maxRequests,
      tls,
    };
    key += `|h2|${h2.idleTimeoutMs}|${h2.maxConcurrentStreams}`;
  }
  if (tls) key += `|tls|${tls.key}`;
  return { key, options, limited, h2 };
}

// ---- ORIGINAL_DST (ServiceEntry resolution NONE) ----

/** Host and port of an authority (`host`, `host:port`, `[v6]:port`); the port defaults to `defaultPort`. */
export function splitAuthority(authority: string, defaultPort: number): { host: string; port: number } | null {
  let host = authority;
  let port = defaultPort;
  if (authority.startsWith('[')) {
    const end = authority.indexOf(']');
    if (end < 0) return null;
    host = authority.slice(1, end);
    const rest = authority.slice(end + 1);
    if (rest.startsWith(':')) port = Number(rest.slice(1));
  } else {
    const i = authority.lastIndexOf(':');
    if (i >= 0) {
      host = authority.slice(0, i);
      port = Number(authority.slice(i + 1));
    }
  }
  if (!host || !Number.isInteger(port) || port <= 0 || port > 65535) return null;
  return { host: host.toLowerCase(), port };
}

/**
 * Pools to original destinations, shared by every ORIGINAL_DST cluster with the same connection
 * settings, bounded: the least recently used beyond ORIGINAL_DST_MAX_POOLS is closed (gracefully:
 * it finishes what it has in flight).
 */
class OriginalDstPools {
  readonly #resolver: DnsResolver;
  readonly #lru: LRUCache<string, UpstreamEndpoint>;
  readonly #sds: SdsMaterial | undefined;
  #draining = false;

  constructor(resolver: DnsResolver, sds?: SdsMaterial) {
    this.#resolver = resolver;
    this.#sds = sds;
    this.#lru = new LRUCache<string, UpstreamEndpoint>({
      max: ORIGINAL_DST_MAX_POOLS,
      dispose: (ep, _key, reason) => {
        if (reason !== 'set' && !this.#draining) ep.pool.close().catch(() => undefined);
      },
    });
  }

  endpoint(host: string, port: number, meta: ClusterIstioMetadata, settings: PoolSettings, tc: UpstreamTlsContext | null): UpstreamEndpoint {
    const hostPort = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    const key = `${hostPort}|${settings.key}`;
    let ep = this.#lru.get(key);
    if (ep === undefined) {
      ep = {
        address: host,
        port,
        hostPort,
        weight: 1,
        labels: {},
        workload: meta.host,
        namespace: meta.namespace,
        pool: this.#createPool(host, port, hostPort, settings, tc),
        active: 0,
        health: new HostHealth(),
        hostname: host,
      };
      this.#lru.set(key, ep);
    }
    return ep;
  }

  #createPool(host: string, port: number, hostPort: string, settings: PoolSettings, tc: UpstreamTlsContext | null): UpstreamPool {
    const literal = isIP(host) !== 0;
    // TLS to a named destination presents that name (and checks the certificate against it).
    const tls = tc ? new TlsOrigination(tc, literal ? '' : host, this.#sds) : null;
    if (literal) return createPool(host, port, hostPort, { ...settings, h2: settings.h2 ? { ...settings.h2, tls } : null }, tls);
    // HTTP/2 sessions connect by name (the system resolver); HTTP/1.1 pools resolve with ours.
    if (settings.h2) return new H2Pool(host, port, { ...settings.h2, tls });
    const timeout = settings.options.connectTimeout ?? 10_000;
    const inner = tls ? tls.undiciConnector(timeout) : buildConnector({ timeout, keepAlive: true, keepAliveInitialDelay: 60_000 } as buildConnector.BuildOptions);
    const resolver = this.#resolver;
    let next = 0;
    const connect: buildConnector.connector = (opts, cb) => {
      resolver.resolve(opts.hostname).then(
        (addresses) => inner({ ...opts, hostname: addresses[next++ % addresses.length]! }, cb),
        (err: Error & { code?: string }) => {
          // Reported as a connect failure (503 UF): NXDOMAIN as ENOTFOUND, anything else as EAI_AGAIN.
          const e = new Error(err.message) as Error & { code: string };
          e.code = err.code === 'ENOTFOUND' || err.code === 'ENODATA' ? 'ENOTFOUND' : 'EAI_AGAIN';
          cb(e, null);
        },
      );
    };
    if (!tls && LEAN_H1) return new H1Pool(host, port, settings.options, connect);
    return new Pool(`${tls ? 'https' : 'http'}://${hostPort}`, { ...settings.options, connect });
  }

  /** Forgets every pool and returns them (to be destroyed). */
  drain(): UpstreamPool[] {
    const pools = [...this.#lru.values()].map((ep) => ep.pool);
    this.#draining = true;
    this.#lru.clear();
    return pools;
  }
}

/** The original-destination view of one cluster: its settings and service port. */
class OriginalDst {
  readonly #pools: OriginalDstPools;
  readonly #meta: ClusterIstioMetadata;
  readonly #settings: PoolSettings;
  readonly #tc: UpstreamTlsContext | null;

  constructor(pools: OriginalDstPools, meta: ClusterIstioMetadata, settings: PoolSettings, tc: UpstreamTlsContext | null) {
    this.#pools = pools;
    this.#meta = meta;
    this.#settings = settings;
    this.#tc = tc;
  }

  /** The endpoint for a request authority; undefined when there is none (503 UH). */
  pick(authority: string | undefined): UpstreamEndpoint | undefined {
    if (!authority) return undefined;
    const dest = splitAuthority(authority, this.#meta.port);
    if (dest === null) return undefined;
    return this.#pools.endpoint(dest.host, dest.port, this.#meta, this.#settings, this.#tc);
  }
}
