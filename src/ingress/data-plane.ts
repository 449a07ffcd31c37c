// The local data plane: turns each snapshot into compiled route tables and cluster runtimes and
// points the listeners at them. A config change is a reference swap; only a listener whose port
// or protocol changed is opened or closed (a removed one drains its requests first).
import type { Snapshot } from '../controlplane/snapshot.js';
import { RouteTable } from '../routing/route-table.js';
import { AccessLog } from '../telemetry/access-log.js';
import type { Logger } from '../telemetry/log.js';
import type { IstioMetrics } from '../telemetry/metrics.js';
import { ClusterManager } from '../upstream/cluster-manager.js';
import type { DataPlaneContext } from './exchange.js';
import { UwsHttpListener } from './uws-listener.js';

/** How long a removed listener lets its requests finish before closing its connections. */
export const LISTENER_DRAIN_MS = 5_000;

export interface ApplyResult {
  /** Listeners that could not be opened (port in use, ...). */
  errors: string[];
}

interface MutableContext {
  clusters: ClusterManager;
  metrics: IstioMetrics;
  accessLog: AccessLog | null;
}

export class DataPlane {
  readonly clusters = new ClusterManager();
  readonly #log: Logger;
  readonly #ctx: MutableContext;
  readonly #listeners = new Map<number, UwsHttpListener>();
  #accessLogKey = '';
  #snapshot: Snapshot | null = null;
  #notServed = new Set<string>();

  constructor(metrics: IstioMetrics, log: Logger) {
    this.#log = log;
    this.#ctx = { clusters: this.clusters, metrics, accessLog: null };
  }

  get snapshot(): Snapshot | null {
    return this.#snapshot;
  }

  get context(): DataPlaneContext {
    return this.#ctx;
  }

  async apply(snapshot: Snapshot): Promise<ApplyResult> {
    const errors: string[] = [];
    const tables = new Map<string, RouteTable>();
    for (const [name, rc] of snapshot.routes) tables.set(name, new RouteTable(rc));
    this.clusters.update(snapshot);
    this.#updateAccessLog(snapshot);

    const wanted = new Map<number, { bind: string; routeName: string }>();
    for (const l of snapshot.listeners) {
      const protocol = l.metadata.filter_metadata.istio.protocol;
      const port = l.address.socket_address.port_value;
      if (protocol !== 'HTTP') {
        const key = `${port}/${protocol}`;
        if (!this.#notServed.has(key)) {
          this.#notServed.add(key);
          this.#log.warn({ port, protocol }, `Gateway servers with protocol ${protocol} are not served by this version yet (HTTP only); port ${port} is not opened`);
        }
        continue;
      }
      const rds = l.filter_chains[0]?.filters[0]?.typed_config.rds.route_config_name ?? `http.${port}`;
      wanted.set(port, { bind: l.address.socket_address.address, routeName: rds });
    }

    // Remove first, so that a port moving between protocols can be re-bound.
    const closing: Array<Promise<void>> = [];
    for (const [port, listener] of this.#listeners) {
      const w = wanted.get(port);
      if (w && w.bind === listener.bind) continue;
      this.#listeners.delete(port);
      this.#log.info({ port }, 'closing listener (removed from config); draining its requests');
      closing.push(listener.close(LISTENER_DRAIN_MS));
    }
    for (const [port, w] of wanted) {
      const existing = this.#listeners.get(port);
      if (existing) {
        existing.table = tables.get(w.routeName);
        existing.ctx = this.#ctx;
        continue;
      }
      const listener = new UwsHttpListener({ bind: w.bind, port, routeName: w.routeName, scheme: 'http' }, this.#ctx, tables.get(w.routeName));
      listener.onError = (err) => this.#log.error({ err, port }, 'request handler failed; answered 500');
      try {
        await listener.listen();
        this.#listeners.set(port, listener);
        this.#log.info({ port, bind: w.bind }, 'listening (HTTP/1.1)');
      } catch (e) {
        await listener.close(0);
        errors.push((e as Error).message);
      }
    }
    this.#snapshot = snapshot;
    if (closing.length > 0) void Promise.all(closing);
    return { errors };
  }

  #updateAccessLog(snapshot: Snapshot): void {
    const m = snapshot.mesh;
    const key = `${m.accessLogFile}|${m.accessLogEncoding}|${m.accessLogFormat}`;
    if (key === this.#accessLogKey) return;
    this.#accessLogKey = key;
    const old = this.#ctx.accessLog;
    this.#ctx.accessLog = AccessLog.fromMesh(m);
    // Requests in flight may still log to the old stream for a moment.
    if (old) setTimeout(() => old.close(), 1000).unref();
  }

  /** True when every HTTP listener of the current snapshot is bound. */
  get allBound(): boolean {
    for (const l of this.#listeners.values()) if (!l.listening) return false;
    return true;
  }

  listenersSummary(): Array<{ name: string; address: string; protocol: string; route_config: string; active_requests: number }> {
    return [...this.#listeners.values()].map((l) => ({
      name: `${l.bind}_${l.port}`,
      address: `${l.bind}:${l.port}`,
      protocol: 'HTTP/1.1',
      route_config: l.routeName,
      active_requests: l.inflight,
    }));
  }

  /** Stops accepting on every listener, lets requests finish up to `drainMs`, then closes. */
  async close(drainMs: number): Promise<void> {
    const all = [...this.#listeners.values()];
    this.#listeners.clear();
    await Promise.all(all.map((l) => l.close(drainMs)));
    await this.clusters.close();
    this.#ctx.accessLog?.close();
  }
}
