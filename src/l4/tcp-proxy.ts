// Envoy's tcp_proxy for one accepted connection: pick a cluster (weighted), an endpoint by the
// cluster's load balancer, connect within the cluster's connect timeout, then pipe bytes both
// ways with backpressure, passing a half-close (FIN) through to the other side, until both sides
// are done, either side fails, or no byte moved for the idle timeout. Connect failure: UF, the
// downstream is closed. Counted as istio_tcp_* with the destination's Istio labels.
import { connect, isIP, type LookupFunction, type Socket } from 'node:net';
import { BLACKHOLE_CLUSTER, durationToMs, type TcpProxy } from '../controlplane/snapshot.js';
import type { Logger } from '../telemetry/log.js';
import type { DestinationInfo, IstioMetrics, TcpStatsHandle } from '../telemetry/metrics.js';
import type { ClusterRuntime, ClusterSet, UpstreamEndpoint } from '../upstream/cluster-manager.js';
import type { HashRequest } from '../upstream/hash-key.js';

/** What the L4 data plane reads of a config version: its clusters, and the metrics. */
export interface L4Context {
  readonly clusters: ClusterSet;
  readonly metrics: IstioMetrics;
}

/** Istio's default TCP idle timeout (1 h), used when the config has none. */
const DEFAULT_IDLE_MS = 3_600_000;

/** A tcp_proxy filter compiled once per config version: cluster names and cumulative weights. */
export class CompiledTcpProxy {
  readonly statPrefix: string;
  readonly idleTimeoutMs: number;
  readonly clusters: readonly string[];
  readonly #cumulative: readonly number[];
  readonly #total: number;

  constructor(p: TcpProxy) {
    this.statPrefix = p.stat_prefix;
    this.idleTimeoutMs = durationToMs(p.idle_timeout) || DEFAULT_IDLE_MS;
    const list = p.cluster !== undefined ? [{ name: p.cluster, weight: 1 }] : (p.weighted_clusters?.clusters ?? []).filter((c) => c.weight > 0);
    this.clusters = list.map((c) => c.name);
    let acc = 0;
    this.#cumulative = list.map((c) => (acc += c.weight));
    this.#total = acc;
  }

  /** The cluster for a new connection (weighted random, as Envoy's weighted_clusters), or undefined. */
  pickCluster(): string | undefined {
    if (this.clusters.length <= 1) return this.clusters[0];
    const r = Math.random() * this.#total;
    const cum = this.#cumulative;
    for (let i = 0; i < cum.length; i++) if (r < cum[i]!) return this.clusters[i];
    return this.clusters[this.clusters.length - 1];
  }
}

export type RejectReason = 'no_route' | 'no_cluster';

/** What ClusterRuntime.pick reads of a request: an original-destination cluster its authority. */
type HashRequestWithAuthority = HashRequest & { authority: string };

export interface ProxyHooks {
  /** The connection was closed before reaching a destination (counted and logged by the listener). */
  reject(reason: RejectReason, detail: string): void;
  /** Both sockets are closed: the connection is over. */
  done(): void;
  log: Logger;
  /** The destination an original-destination cluster connects to (a CONNECT target). */
  authority?: string;
  /** The upstream is connected, before any byte flows (a CONNECT answers 200 here). */
  connected?(): void;
  /** No upstream connection (UH, UF): closes `down` itself instead of the proxy (a CONNECT answers 503). */
  failed?(flags: string): void;
}

/**
 * Proxies `down` (paused, not yet read beyond `head`, the bytes already peeked) through `route`.
 * Takes ownership of `down`: it is closed when the connection ends, whatever happens.
 */
export function proxyConnection(down: Socket, head: Buffer | null, route: CompiledTcpProxy, ctx: L4Context, hooks: ProxyHooks): void {
  const name = route.pickCluster();
  const cluster = name === undefined || name === BLACKHOLE_CLUSTER ? undefined : ctx.clusters.get(name);
  if (!cluster) {
    down.destroy();
    hooks.reject(name === undefined || name === BLACKHOLE_CLUSTER ? 'no_route' : 'no_cluster', name ?? '');
    hooks.done();
    return;
  }
  const service: DestinationInfo['service'] = { host: cluster.meta.host, name: cluster.meta.name, namespace: cluster.meta.namespace };
  const ep = cluster.pick(undefined, hooks.authority !== undefined ? ({ authority: hooks.authority, headers: [], query: '' } as HashRequestWithAuthority) : undefined, down.remoteAddress ?? '');
  if (!ep) {

    // No healthy upstream (UH): opened and closed at once, as Envoy reports it.
    const h = ctx.metrics.tcpHandle(cluster, { service }, 'UH');
    h.opened();
    if (head) h.received(head.length);
    h.closed();
    if (hooks.failed) hooks.failed('UH');
    else down.destroy();
    hooks.done();
    return;
  }
  new TcpSession(down, head, ep, cluster, service, route.idleTimeoutMs, ctx, hooks).start();
}

class TcpSession {
  readonly #down: Socket;
  readonly #head: Buffer | null;
  readonly #ep: UpstreamEndpoint;
  readonly #cluster: ClusterRuntime;
  readonly #dest: DestinationInfo;
  readonly #idleMs: number;
  readonly #ctx: L4Context;
  readonly #hooks: ProxyHooks;
  #up: Socket | null = null;
  #stats: TcpStatsHandle | null = null;
  #connectTimer: NodeJS.Timeout | null = null;
  #idleTimer: NodeJS.Timeout | null = null;
  #lastActivity = 0;
  #open = 2;
  #finished = false;

  constructor(down: Socket, head: Buffer | null, ep: UpstreamEndpoint, cluster: ClusterRuntime, service: DestinationInfo['service'], idleMs: number, ctx: L4Context, hooks: ProxyHooks) {
    this.#down = down;
    this.#head = head;
    this.#ep = ep;
    this.#cluster = cluster;
    this.#dest = { service, endpoint: ep };
    this.#idleMs = idleMs;
    this.#ctx = ctx;
    this.#hooks = hooks;
  }

  start(): void {
    const down = this.#down;
    const ep = this.#ep;
    ep.active++;
    down.pause();
    // A named destination (original destination: the SNI or CONNECT host) resolves with the
    // gateway's DNS resolver, as HTTP pools do.
    const resolver = isIP(ep.address) === 0 ? this.#ctx.clusters.resolver : null;
    const lookup: LookupFunction | undefined = resolver
      ? (hostname, opts, cb) => {
          resolver.resolve(hostname).then(
            (addrs) => {
              // Node 20 asks for every address (happy eyeballs) unless autoSelectFamily is off.
              if (opts.all) (cb as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, addrs.map((address) => ({ address, family: isIP(address) })));
              else cb(null, addrs[0]!, isIP(addrs[0]!));
            },
            (err: Error) => cb(err as NodeJS.ErrnoException, '', 4),
          );
        }
      : undefined;
    const up = connect({ host: ep.address, port: ep.port, allowHalfOpen: true, noDelay: true, ...(lookup ? { lookup } : {}) });
    this.#up = up;
    // Errors after a failed connect (the socket is destroyed by then) must not go unhandled.
    up.on('error', () => undefined);
    const onEarlyDownClose = (): void => {
      // The client left before the upstream answered: nothing to proxy.
      up.destroy();
      this.#failEarly('DC', null);
    };
    down.once('close', onEarlyDownClose);
    down.on('error', () => undefined);
    const onConnectError = (err: Error): void => {
      if (this.#finished) return;
      down.off('close', onEarlyDownClose);
      this.#cluster.reportFailure(ep, 'connect');
      this.#hooks.log.debug({ err, upstream: ep.hostPort }, 'upstream connect failed (UF); closing the downstream connection');
      up.destroy();
      if (this.#hooks.failed) this.#hooks.failed('UF');
      else down.destroy();
      this.#failEarly('UF', err);
    };
    up.once('error', onConnectError);
    this.#connectTimer = setTimeout(() => onConnectError(new Error(`connect timeout after ${this.#cluster.connectTimeoutMs} ms`)), Math.max(1, this.#cluster.connectTimeoutMs));
    up.once('connect', () => {
      clearTimeout(this.#connectTimer!);
      this.#connectTimer = null;
      down.off('close', onEarlyDownClose);
      up.off('error', onConnectError);
      if (down.destroyed) {
        up.destroy();
        this.#failEarly('DC', null);
        return;
      }
      this.#hooks.connected?.();
      this.#connected(up);
    });
  }

  /** The connection ended before it was established: counted opened and closed with `flags`. */
  #failEarly(flags: string, _err: Error | null): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    this.#ep.active--;
    const h = this.#ctx.metrics.tcpHandle(this.#ep, this.#dest, flags);
    h.opened();
    if (this.#head) h.received(this.#head.length);
    h.closed();
    this.#hooks.done();
  }

  #connected(up: Socket): void {
    const down = this.#down;
    const stats = this.#ctx.metrics.tcpHandle(this.#ep, this.#dest, '-');
    this.#stats = stats;
    stats.opened();
    this.#lastActivity = performance.now();
    const onClose = (): void => {
      if (--this.#open === 0) this.#end();
    };
    // Any error on either side ends both (a reset is passed on as a close).
    const onError = (): void => {
      down.destroy();
      up.destroy();
    };
    down.on('error', onError);
    up.on('error', onError);
    // A side closed before both of its directions finished (destroyed: drain, idle timeout,
    // reset) takes the other side down too; a clean close leaves the other to flush and finish.
    const closeWith = (a: Socket, b: Socket) => (): void => {
      if (!a.readableEnded || !a.writableFinished) b.destroy();
      onClose();
    };
    down.once('close', closeWith(down, up));
    up.once('close', closeWith(up, down));
    this.#pump(down, up, (n) => stats.received(n));
    this.#pump(up, down, (n) => stats.sent(n));
    if (this.#head && this.#head.length > 0) {
      stats.received(this.#head.length);
      if (!up.write(this.#head)) {
        // The upstream is already full: read no more from the client until it drains.
        down.pause();
        up.once('drain', () => down.resume());
        this.#armIdle();
        return;
      }
    }
    down.resume();
    this.#armIdle();
  }

  /** src → dst with backpressure; src's FIN becomes dst's FIN (half-close), as tcp_proxy does. */
  #pump(src: Socket, dst: Socket, count: (n: number) => void): void {
    src.on('data', (chunk: Buffer) => {
      count(chunk.length);
      this.#lastActivity = performance.now();
      if (!dst.write(chunk)) src.pause();
    });
    dst.on('drain', () => {
      if (!src.destroyed) src.resume();
    });
    src.once('end', () => {
      if (!dst.destroyed) dst.end();
    });
  }

  #armIdle(): void {
    const ms = this.#idleMs;
    if (!(ms > 0)) return;
    const check = (): void => {
      const idle = performance.now() - this.#lastActivity;
      if (idle >= ms) {
        this.#hooks.log.debug({ upstream: this.#ep.hostPort, idleMs: ms }, 'TCP connection idle timeout; closing both sides');
        this.#down.destroy();
        this.#up?.destroy();
        return;
      }
      this.#idleTimer = setTimeout(check, ms - idle);
    };
    this.#idleTimer = setTimeout(check, ms);
  }

  #end(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#ep.active--;
    this.#stats?.closed();
    this.#hooks.done();
  }
}
