// Clusters at run time: endpoints with their connection pools (undici) and load balancers, rebuilt
// from each snapshot. Pools are keyed by endpoint address and connection settings and outlive
// config versions, so a reload never drops a keep-alive connection or an in-flight request; a pool
// no version uses any more is closed gracefully (it finishes what it has in flight).
import { Pool } from 'undici';
import { durationToMs, type Cluster, type ClusterIstioMetadata, type ClusterLoadAssignment, type LbPolicy, type Snapshot } from '../controlplane/snapshot.js';
import { createLoadBalancer, type LoadBalancer } from './load-balancer.js';

/** Envoy's stream idle timeout (5 min): a stalled upstream cannot hold a request forever. */
const STREAM_IDLE_TIMEOUT_MS = 300_000;
/** Below the 5 s keep-alive of Node and many servers, to avoid reusing a socket the server is closing. */
const UPSTREAM_KEEPALIVE_MS = 4_000;

export interface UpstreamEndpoint {
  readonly address: string;
  readonly port: number;
  /** `address:port` */
  readonly hostPort: string;
  readonly weight: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly workload: string;
  readonly namespace: string;
  readonly pool: Pool;
  active: number;
}

export class ClusterRuntime {
  readonly name: string;
  readonly meta: ClusterIstioMetadata;
  readonly lbPolicy: LbPolicy;
  readonly connectTimeoutMs: number;
  readonly endpoints: readonly UpstreamEndpoint[];
  readonly #lb: LoadBalancer<UpstreamEndpoint>;

  constructor(cluster: Cluster, endpoints: readonly UpstreamEndpoint[]) {
    this.name = cluster.name;
    this.meta = cluster.metadata.filter_metadata.istio;
    this.lbPolicy = cluster.lb_policy;
    this.connectTimeoutMs = durationToMs(cluster.connect_timeout);
    this.endpoints = endpoints;
    this.#lb = createLoadBalancer(cluster.lb_policy, endpoints);
  }

  pick(exclude?: ReadonlySet<UpstreamEndpoint>): UpstreamEndpoint | undefined {
    return this.#lb.pick(exclude);
  }
}

interface PoolEntry {
  pool: Pool;
  key: string;
}

export class ClusterManager {
  #clusters = new Map<string, ClusterRuntime>();
  #pools = new Map<string, PoolEntry>();
  /** Endpoint objects by cluster+address, reused across versions so in-flight counts stay right. */
  #endpoints = new Map<string, UpstreamEndpoint>();

  get(name: string): ClusterRuntime | undefined {
    return this.#clusters.get(name);
  }

  clusters(): IterableIterator<ClusterRuntime> {
    return this.#clusters.values();
  }

  /** Builds the clusters of a new snapshot; pools no longer used are closed after their requests finish. */
  update(snapshot: Snapshot): void {
    const clusters = new Map<string, ClusterRuntime>();
    const usedPools = new Set<string>();
    const endpoints = new Map<string, UpstreamEndpoint>();
    for (const cluster of snapshot.clusters.values()) {
      const cla = snapshot.endpoints.get(cluster.name);
      const eps = this.#buildEndpoints(cluster, cla, usedPools, endpoints);
      clusters.set(cluster.name, new ClusterRuntime(cluster, eps));
    }
    this.#clusters = clusters;
    this.#endpoints = endpoints;
    for (const [key, entry] of this.#pools) {
      if (usedPools.has(key)) continue;
      this.#pools.delete(key);
      entry.pool.close().catch(() => undefined);
    }
  }

  #buildEndpoints(cluster: Cluster, cla: ClusterLoadAssignment | undefined, usedPools: Set<string>, out: Map<string, UpstreamEndpoint>): UpstreamEndpoint[] {
    const list: UpstreamEndpoint[] = [];
    const poolOpts = poolOptions(cluster);
    for (const locality of cla?.endpoints ?? []) {
      for (const lbe of locality.lb_endpoints) {
        const { address, port_value: port } = lbe.endpoint.address.socket_address;
        const meta = lbe.metadata.filter_metadata.istio;
        const hostPort = address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
        const poolKey = `${hostPort}|${poolOpts.key}`;
        usedPools.add(poolKey);
        let entry = this.#pools.get(poolKey);
        if (!entry) {
          entry = { key: poolKey, pool: new Pool(`http://${hostPort}`, poolOpts.options) };
          this.#pools.set(poolKey, entry);
        }
        const epKey = `${cluster.name}|${poolKey}|${lbe.load_balancing_weight}|${meta.workload}|${JSON.stringify(meta.labels)}`;
        let ep = this.#endpoints.get(epKey);
        if (!ep || ep.pool !== entry.pool) {
          ep = { address, port, hostPort, weight: Math.max(1, lbe.load_balancing_weight), labels: meta.labels, workload: meta.workload, namespace: meta.namespace, pool: entry.pool, active: 0 };
        }
        out.set(epKey, ep);
        list.push(ep);
      }
    }
    return list;
  }

  /** Summaries for the admin `/clusters` page. */
  summary(): Array<{ name: string; lb_policy: string; endpoints: Array<{ address: string; weight: number; active: number; labels: Record<string, string> }> }> {
    return [...this.#clusters.values()].map((c) => ({
      name: c.name,
      lb_policy: c.lbPolicy,
      endpoints: c.endpoints.map((e) => ({ address: e.hostPort, weight: e.weight, active: e.active, labels: { ...e.labels } })),
    }));
  }

  async close(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    this.#clusters.clear();
    await Promise.all(pools.map((p) => p.pool.destroy().catch(() => undefined)));
  }
}

function poolOptions(cluster: Cluster): { key: string; options: Pool.Options } {
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
  if (maxRequests > 0) options.maxRequestsPerClient = maxRequests;
  if (maxConnections > 0 && maxConnections < 4294967295) options.connections = maxConnections;
  return { key: `${connectTimeout}|${keepAliveTimeout}|${maxRequests}|${maxConnections}`, options };
}
