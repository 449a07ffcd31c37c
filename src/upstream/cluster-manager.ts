// Clusters at run time: endpoints with their connection pools (undici for HTTP/1.1, H2Pool for
// HTTP/2 and gRPC upstreams, either with TLS origination per DestinationRule) and load balancers.
// Each snapshot becomes a ClusterSet, an immutable version built beside the current one and warmed
// (`prepare`), then made current (`commit`) together with the route tables that name its clusters;
// requests keep the set they started with. A cluster whose definition and endpoints did not change
// is the same runtime object in both versions. Pools are keyed by endpoint address and connection
// settings and outlive config versions, so a reload never drops a keep-alive connection or an
// in-flight request; a pool no version uses any more is closed after the drain time (older
// versions' requests may still use it), gracefully (it finishes what it has in flight).
// Circuit breakers and outlier detection live per cluster name (ClusterState) and per host, also
// across versions: a reload neither forgets an ejection nor loses count of requests in flight;
// a version's settings reach them when it is committed.
// DNS clusters (ServiceEntry resolution DNS → STRICT_DNS: one endpoint per address of each host
// name; DNS_ROUND_ROBIN → LOGICAL_DNS: the first address of each) take their addresses from the
// DnsResolver's cache; when an answer changes, the current snapshot's set is rebuilt, committed and
// handed to `onRebuild` (the data plane republishes it with the same tables). A name that
// never resolved has no endpoints (503 UH). NONE → ORIGINAL_DST: the request's authority, resolved
// on connect, with pools per destination in a bounded LRU.
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { Registry } from 'prom-client';
import type { buildConnector, Pool } from 'undici';
import type { Logger } from '../telemetry/log.js';
import { durationToMs, type Cluster, type ClusterIstioMetadata, type ClusterLoadAssignment, type LbPolicy, type Snapshot, type UpstreamTlsContext } from '../controlplane/snapshot.js';
import { CircuitBreaker } from './circuit-breaker.js';
import { DnsResolver, normalizeHost } from './dns.js';
import { H1Pool } from './h1-pool.js';
import { H2Pool, type H2PoolOptions } from './h2-pool.js';
import type { UpstreamPool } from './errors.js';
import { UndiciPool, loadUndici } from './undici-pool.js';
import { RequestHasher, type HashRequest } from './hash-key.js';
import { createLoadBalancer, type LoadBalancer } from './load-balancer.js';
import { Maglev } from './maglev.js';
import { HostHealth, OutlierDetector, outlierSettings, type LocalFailure } from './outlier-detection.js';
import { RingHash } from './ring-hash.js';
import { TlsOrigination, type SdsMaterial } from './tls-origination.js';
import { xxh64Hex } from './xxhash64.js';

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
  /** The HTTP/1.1 pool, undici (TLS origination) or the HTTP/2 pool: the same upstream handler protocol. */
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

  /**
   * Applies a cluster's settings; `hosts` are its hosts in this version (others are forgotten):
   * `address:port`s, or with the health objects its endpoints were built with.
   */
  configure(cluster: Cluster, hosts: ReadonlySet<string> | ReadonlyMap<string, HostHealth>): void {
    this.breaker.configure(cluster.circuit_breakers.thresholds[0]);
    for (const hp of this.hosts.keys()) if (!hosts.has(hp)) this.hosts.delete(hp);
    if (hosts instanceof Map) for (const [hp, h] of hosts as ReadonlyMap<string, HostHealth>) this.hosts.set(hp, h);
    else for (const hp of hosts.keys()) if (!this.hosts.has(hp)) this.hosts.set(hp, new HostHealth());
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

/**
 * The clusters of one config version: what the requests of that version look their clusters up
 * in, whatever versions come after it. Immutable; built by ClusterManager.prepare (warm: DNS
 * answered) and made current by ClusterManager.commit, together with the route tables that name
 * them. Clusters whose definition and endpoints did not change are the same runtime objects in
 * both versions (balancer, breaker, outlier state, pools).
 */
export class ClusterSet {
  readonly #clusters: ReadonlyMap<string, ClusterRuntime>;
  readonly #manager: ClusterManager;

  constructor(manager: ClusterManager, clusters: ReadonlyMap<string, ClusterRuntime>) {
    this.#manager = manager;
    this.#clusters = clusters;
  }

  get(name: string): ClusterRuntime | undefined {
    return this.#clusters.get(name);
  }

  values(): IterableIterator<ClusterRuntime> {
    return this.#clusters.values();
  }

  get size(): number {
    return this.#clusters.size;
  }

  /** The manager's DNS resolver (original-destination connections resolve their names with it). */
  get resolver(): DnsResolver {
    return this.#manager.resolver;
  }
}

/** What a ClusterSet was built from and with; its settings reach the shared state at commit. */
interface Build {
  readonly snapshot: Snapshot | null;
  readonly clusters: Map<string, ClusterRuntime>;
  readonly states: Map<string, ClusterState>;
  /** Endpoint objects by cluster+address, reused across versions so in-flight counts stay right. */
  readonly endpoints: Map<string, UpstreamEndpoint>;
  /** TLS origination settings by content, shared by the pools that use them. */
  readonly originations: Map<string, TlsOrigination>;
  /** Keys of the pools its endpoints use. */
  readonly pools: Set<string>;
  /** Host names its DNS clusters resolve. */
  readonly dnsNames: Set<string>;
  /** Per cluster, a hash of its definition and load assignment: unchanged runtimes are reused. */
  readonly keys: Map<string, string>;
  /** Per cluster with a fixed endpoint list, what it took of the maps above (an unchanged one takes the same again). */
  readonly uses: Map<string, ClusterUses>;
  /** Settings and hosts to give the clusters' shared state at commit (changed clusters only). */
  configure: Array<{ state: ClusterState; cluster: Cluster; hosts: ReadonlyMap<string, HostHealth> }>;
  /** The DNS change count it was built with: a later change means its addresses may be stale. */
  readonly dnsEpoch: number;
}

interface ClusterUses {
  endpoints: string[];
  pools: string[];
  origination: string | null;
}

function emptyBuild(): Build {
  return { snapshot: null, clusters: new Map(), states: new Map(), endpoints: new Map(), originations: new Map(), pools: new Set(), dnsNames: new Set(), keys: new Map(), uses: new Map(), configure: [], dnsEpoch: 0 };
}

/** Content keys by snapshot object: a DNS rebuild of the same snapshot does not hash again. */
const contentKeys = new WeakMap<Cluster, { cla: ClusterLoadAssignment | undefined; key: string }>();

/** Identity of a cluster's content: definition and endpoints (128 bits of xxHash64). */
function contentKey(cluster: Cluster, cla: ClusterLoadAssignment | undefined): string {
  const known = contentKeys.get(cluster);
  if (known !== undefined && known.cla === cla) return known.key;
  const s = `${JSON.stringify(cluster)}\n${cla ? JSON.stringify(cla) : ''}`;
  const key = xxh64Hex(s, 0) + xxh64Hex(s, 1);
  contentKeys.set(cluster, { cla, key });
  return key;
}

export interface ClusterManagerOptions {
  /** Resolves DNS cluster hosts; made on first need (servers from GATEHOUSE_DNS_SERVERS) when omitted. */
  resolver?: DnsResolver;
  log?: Logger | null;
  /** Where the resolver registers gatehouse_dns_resolutions_total. */
  registry?: Registry | null;
  /** SDS-named TLS material (ISTIO_MUTUAL's mesh certificate and root). */
  sds?: SdsMaterial;
  /** How long the pools of a removed cluster stay open for requests of older versions (default 5 s). */
  drainMs?: number;
}

export class ClusterManager {
  /** The current version's clusters, and what they were built with. */
  #current: ClusterSet;
  #built: Build = emptyBuild();
  /** The version being prepared (warming), if any: its pools are not retired meanwhile. */
  #pending: Build | null = null;
  readonly #builds = new WeakMap<ClusterSet, Build>();
  /** Pools by endpoint address and connection settings, shared by every version that uses them. */
  #pools = new Map<string, PoolEntry>();
  readonly #opts: ClusterManagerOptions;
  readonly #drainMs: number;
  #resolver: DnsResolver | null = null;
  /** Counts DNS answer changes (see Build.dnsEpoch). */
  #dnsEpoch = 0;
  #rebuildTimer: NodeJS.Timeout | null = null;
  readonly #retireTimers = new Set<NodeJS.Timeout>();
  #originalDst: OriginalDstPools | null = null;
  /**
   * A DNS answer changed the current clusters: `set` (same snapshot, new addresses) is current now.
   * The data plane publishes it to the listeners with the same route tables.
   */
  onRebuild: ((set: ClusterSet) => void) | null = null;

  constructor(opts: ClusterManagerOptions = {}) {
    this.#opts = opts;
    this.#drainMs = opts.drainMs ?? 5_000;
    this.#current = new ClusterSet(this, this.#built.clusters);
    if (opts.resolver) this.#useResolver(opts.resolver);
  }

  /** The DNS resolver (made on first use). */
  get resolver(): DnsResolver {
    return this.#resolver ?? this.#useResolver(new DnsResolver({ log: this.#opts.log ?? null, registry: this.#opts.registry ?? null }));
  }

  #useResolver(r: DnsResolver): DnsResolver {
    this.#resolver = r;
    r.onChange = (host) => {
      this.#dnsEpoch++;
      if (this.#built.dnsNames.has(host)) this.#scheduleRebuild();
    };
    return r;
  }

  #scheduleRebuild(): void {
    if (this.#rebuildTimer !== null) return;
    this.#rebuildTimer = setTimeout(() => {
      this.#rebuildTimer = null;
      const snapshot = this.#built.snapshot;
      if (snapshot === null) return;
      const set = this.#prepared(this.#build(snapshot, null));
      this.commit(set);
      this.onRebuild?.(set);
    }, DNS_REBUILD_DEBOUNCE_MS);
    this.#rebuildTimer.unref();
  }

  /** The clusters of the current version. */
  get current(): ClusterSet {
    return this.#current;
  }

  get(name: string): ClusterRuntime | undefined {
    return this.#current.get(name);
  }

  clusters(): IterableIterator<ClusterRuntime> {
    return this.#current.values();
  }

  /**
   * Builds the clusters of a snapshot without touching the current ones, and warms them: host
   * names that never resolved get their first answer (waiting at most `warmMs`), so that the new
   * version starts with endpoints. Make it current with `commit`, with the tables that use it.
   */
  async prepare(snapshot: Snapshot, warmMs = 5_000): Promise<ClusterSet> {
    let build = this.#build(snapshot, null);
    this.#pending = build;
    const r = this.#resolver;
    if (r !== null && build.dnsNames.size > 0) {
      const unsettled = [...build.dnsNames].filter((h) => !r.settled(h));
      if (unsettled.length > 0) {
        const done = await r.waitSettled(unsettled, warmMs);
        if (!done) this.#opts.log?.warn({ hosts: unsettled.filter((h) => !r.settled(h)) }, `DNS: no answer within ${warmMs} ms; serving without those endpoints until they resolve`);
        build = this.#build(snapshot, build);
        this.#pending = build;
      }
    }
    return this.#prepared(build);
  }

  #prepared(build: Build): ClusterSet {
    const set = new ClusterSet(this, build.clusters);
    this.#builds.set(set, build);
    return set;
  }

  /**
   * Makes a prepared set current: cluster settings reach the shared state (breakers, outlier
   * detection), clusters it no longer has stop, and pools no version uses any more are closed
   * after the drain time (gracefully: what they have in flight finishes).
   */
  commit(set: ClusterSet): void {
    const b = this.#builds.get(set);
    if (b === undefined) throw new Error('ClusterManager.commit: not a set prepared by this manager, or committed already');
    // The build stays with the manager only while current: an old set that requests still hold
    // keeps its clusters, not the maps it was built with.
    this.#builds.delete(set);
    if (this.#pending === b) this.#pending = null;
    for (const c of b.configure) c.state.configure(c.cluster, c.hosts);
    b.configure = [];
    for (const [name, state] of this.#built.states) if (b.states.get(name) !== state) state.close();
    this.#built = b;
    this.#current = set;
    if (b.dnsNames.size > 0 || this.#resolver !== null) this.resolver.retain(b.dnsNames);
    this.#retireUnused();
    // A DNS answer changed after it was built: rebuild it with the new addresses.
    if (b.dnsEpoch !== this.#dnsEpoch) this.#scheduleRebuild();
  }

  /** Builds and commits at once, without warming (tests; DNS clusters start without endpoints). */
  update(snapshot: Snapshot): void {
    this.commit(this.#prepared(this.#build(snapshot, null)));
  }

  /** Pools that neither the current version nor the one being prepared use are closed after the drain time. */
  #retireUnused(): void {
    const unused: PoolEntry[] = [];
    for (const [key, entry] of this.#pools) if (!this.#built.pools.has(key) && !this.#pending?.pools.has(key)) unused.push(entry);
    if (unused.length === 0) return;
    const timer = setTimeout(() => {
      this.#retireTimers.delete(timer);
      for (const entry of unused) {
        // Still unused (a version may have taken it up again meanwhile), and not replaced.
        if (this.#built.pools.has(entry.key) || this.#pending?.pools.has(entry.key) || this.#pools.get(entry.key) !== entry) continue;
        this.#pools.delete(entry.key);
        entry.pool.close().catch(() => undefined);
      }
    }, this.#drainMs);
    timer.unref();
    this.#retireTimers.add(timer);
  }

  /**
   * The clusters of a snapshot. Shared runtime (pools, endpoints, cluster state, TLS origination)
   * is taken from the current version, else from `prev` (an earlier build of the same prepare);
   * a cluster whose content and endpoints did not change keeps its runtime object.
   */
  #build(snapshot: Snapshot, prev: Build | null): Build {
    const b: Build = { ...emptyBuild(), snapshot, dnsEpoch: this.#dnsEpoch };
    const cur = this.#built;
    for (const cluster of snapshot.clusters.values()) {
      const name = cluster.name;
      const cla = snapshot.endpoints.get(name);
      const state = cur.states.get(name) ?? prev?.states.get(name) ?? new ClusterState();
      b.states.set(name, state);
      const key = contentKey(cluster, cla);
      b.keys.set(name, key);
      const old = cur.clusters.get(name);
      const unchanged = old !== undefined && old.state === state && cur.keys.get(name) === key;
      if (cluster.type === 'ORIGINAL_DST' && !cla?.endpoints.some((l) => l.lb_endpoints.length > 0)) {
        if (unchanged) {
          b.clusters.set(name, old);
          continue;
        }
        b.clusters.set(name, new ClusterRuntime(cluster, [], state, this.#originalDstFor(cluster)));
        b.configure.push({ state, cluster, hosts: new Map() });
        continue;
      }
      // Unchanged, and its addresses are fixed (not DNS): the same runtime, endpoints and pools,
      // without building them again (a change of one service in thousands touches that one).
      const uses = unchanged ? cur.uses.get(name) : undefined;
      if (uses !== undefined) {
        for (const k of uses.endpoints) b.endpoints.set(k, cur.endpoints.get(k)!);
        for (const k of uses.pools) b.pools.add(k);
        if (uses.origination !== null) b.originations.set(uses.origination, cur.originations.get(uses.origination)!);
        b.uses.set(name, uses);
        b.clusters.set(name, old!);
        continue;
      }
      const hosts = new Map<string, HostHealth>();
      const eps = this.#buildEndpoints(cluster, cla, b, prev, state, hosts);
      if (unchanged && sameEndpoints(old.endpoints, eps)) {
        b.clusters.set(name, old);
        continue;
      }
      b.clusters.set(name, new ClusterRuntime(cluster, eps, state));
      b.configure.push({ state, cluster, hosts });
    }
    return b;
  }

  #buildEndpoints(cluster: Cluster, cla: ClusterLoadAssignment | undefined, b: Build, prev: Build | null, state: ClusterState, hosts: Map<string, HostHealth>): UpstreamEndpoint[] {
    const list: UpstreamEndpoint[] = [];
    const cur = this.#built;
    const dns = cluster.type === 'STRICT_DNS' || cluster.type === 'LOGICAL_DNS';
    const uses: ClusterUses = { endpoints: [], pools: [], origination: null };
    let tls: TlsOrigination | null = null;
    const tc = cluster.transport_socket?.typed_config;
    if (tc) {
      // Endpoints of a DNS cluster are addresses: TLS presents (and verifies) the service's host
      // name, as Istio's auto SNI does for a ServiceEntry host, unless the rule sets `sni`.
      const host = dns ? cluster.metadata.filter_metadata.istio.host : '';
      const k = host ? `${JSON.stringify(tc)}|${host}` : JSON.stringify(tc);
      tls = b.originations.get(k) ?? cur.originations.get(k) ?? prev?.originations.get(k) ?? new TlsOrigination(tc, host, this.#opts.sds);
      b.originations.set(k, tls);
      uses.origination = k;
    }
    const poolOpts = poolOptions(cluster, tls);
    for (const locality of cla?.endpoints ?? []) {
      for (const lbe of locality.lb_endpoints) {
        const { address: configured, port_value: port } = lbe.endpoint.address.socket_address;
        let addresses: readonly string[] = [configured];
        let hostname: string | undefined;
        if (dns && !isIP(configured)) {
          // STRICT_DNS: every address of the name; LOGICAL_DNS: the first of the latest answer.
          hostname = normalizeHost(configured);
          b.dnsNames.add(hostname);
          const answer = this.resolver.addresses(hostname) ?? [];
          addresses = cluster.type === 'LOGICAL_DNS' ? answer.slice(0, 1) : answer;
        }
        for (const address of addresses) {
          const meta = lbe.metadata.filter_metadata.istio;
          const hostPort = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
          // A connection limit is the cluster's own (Envoy pools per cluster): no sharing then.
          const poolKey = poolOpts.limited ? `${hostPort}|${poolOpts.key}|${cluster.name}` : `${hostPort}|${poolOpts.key}`;
          b.pools.add(poolKey);
          uses.pools.push(poolKey);
          let entry = this.#pools.get(poolKey);
          if (!entry) {
            entry = { key: poolKey, pool: createPool(address, port, hostPort, poolOpts, tls) };
            this.#pools.set(poolKey, entry);
          }
          const epKey = `${cluster.name}|${poolKey}|${lbe.load_balancing_weight}|${meta.workload}|${JSON.stringify(meta.labels)}|${hostname ?? ''}`;
          let ep = cur.endpoints.get(epKey) ?? prev?.endpoints.get(epKey);
          // Outlier state per host, as the cluster's state has it (new hosts: fresh).
          let health = hosts.get(hostPort);
          if (health === undefined) {
            health = state.hosts.get(hostPort) ?? ep?.health ?? new HostHealth();
            hosts.set(hostPort, health);
          }
          if (!ep || ep.pool !== entry.pool || ep.health !== health) {
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
              health,
              ...(hostname !== undefined ? { hostname } : {}),
            };
          }
          b.endpoints.set(epKey, ep);
          uses.endpoints.push(epKey);
          list.push(ep);
        }
      }
    }
    if (!dns) b.uses.set(cluster.name, uses);
    return list;
  }

  /** Summaries for the admin `/clusters` page, with Envoy's names for health flags and counters. */
  summary(): ClusterSummary[] {
    return [...this.#current.values()].map((c) => {
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
    for (const t of this.#retireTimers) clearTimeout(t);
    this.#retireTimers.clear();
    this.#resolver?.close();
    const originalDst = this.#originalDst?.drain() ?? [];
    this.#originalDst = null;
    const pools = [...this.#pools.values(), ...originalDst.map((pool) => ({ pool }))];
    this.#pools.clear();
    for (const s of this.#built.states.values()) s.close();
    this.#built = emptyBuild();
    this.#pending = null;
    this.#current = new ClusterSet(this, this.#built.clusters);
    await Promise.all(pools.map((p) => p.pool.destroy().catch(() => undefined)));
  }
}

/** The same endpoint objects in the same order. */
function sameEndpoints(a: readonly UpstreamEndpoint[], b: readonly UpstreamEndpoint[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
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
  if (!tls) return LEAN_H1 ? new H1Pool(address, port, settings.options) : new UndiciPool(`http://${hostPort}`, settings.options);
  // TLS origination: undici picks the SNI per request from the Host header (auto_sni), unless the
  // DestinationRule fixes it; the connector checks the certificate as the rule says.
  return new UndiciPool(`https://${hostPort}`, { ...settings.options, connect: tls.undiciConnector(settings.options.connectTimeout ?? 10_000) });
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
    const inner = tls ? tls.undiciConnector(timeout) : loadUndici().buildConnector({ timeout, keepAlive: true, keepAliveInitialDelay: 60_000 } as buildConnector.BuildOptions);
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
    return new UndiciPool(`${tls ? 'https' : 'http'}://${hostPort}`, { ...settings.options, connect });
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
