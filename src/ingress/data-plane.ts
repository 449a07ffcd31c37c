// The local data plane: turns each snapshot into compiled route tables and cluster runtimes and
// points the listeners at them. A config change is one reference swap per listener: its version
// (route table, the clusters of the same snapshot, security filters, access log, forward proxy),
// published to every listener in one synchronous step once the new clusters are warm; a request
// keeps the version it started with, and the pools of removed clusters stay open for it up to the
// drain time. Only a listener whose port, protocol or engine (plain HTTP on uWS or on the strict
// node:http engine, uWS TLS, node TLS) changed is opened or closed (a removed one drains its requests first). Certificates are swapped
// in place: new handshakes get the new one. TCP and TLS passthrough servers are L4 listeners
// (src/egress): their filter chains and clusters are swapped the same way; a removed one lets its
// connections run up to the drain time.
import { Counter } from 'prom-client';
import type { ForwardProxyConfig, Http1Engine, Listener, SecurityConfig, Snapshot } from '../controlplane/snapshot.js';
import { SecurityRegistry, type SecurityFilters } from '../security/pipeline.js';
import { ForwardProxy } from '../egress/forward-proxy.js';
import { L4Listener } from '../l4/tcp-listener.js';
import { RouteTable } from '../routing/route-table.js';
import { AccessLog } from '../telemetry/access-log.js';
import type { Logger } from '../telemetry/log.js';
import { Stages, type StageTimes } from '../telemetry/stages.js';
import type { IstioMetrics } from '../telemetry/metrics.js';
import { TraceExporters, type BatchSink } from '../telemetry/tracing/exporters.js';
import { Tracer } from '../telemetry/tracing/tracer.js';
import { PrivateCertDir } from '../tls/cert-files.js';
import { SecretStore, type AcmeProvider, type MeshIdentityProvider } from '../tls/secret-store.js';
import { ClusterManager, type ClusterSet } from '../upstream/cluster-manager.js';
import type { DataPlaneContext } from './exchange.js';
import { NodeListener } from './node-listener.js';
import { alpnOf, needsNodeTls, tlsChains, type TlsChainSpec } from './https.js';
import type { ServedListener, TlsBinding } from './listener.js';
import { NodeTlsBinding } from './node-tls.js';
import { UwsHttpListener } from './uws-listener.js';
import { UwsTlsBinding } from './uws-tls.js';

/** How long a removed listener lets its requests finish before closing its connections. */
export const LISTENER_DRAIN_MS = 5_000;

export interface ApplyResult {
  /** Listeners that could not be opened (port in use, ...). */
  errors: string[];
  /** Milliseconds per step (route tables, clusters, publish), for the log of the reload. */
  stages?: StageTimes;
}

/** What every listener's version shares: the clusters, metrics and access log of one snapshot. */
interface BaseContext {
  readonly clusters: ClusterSet;
  readonly metrics: IstioMetrics;
  readonly accessLog: AccessLog | null;
  readonly blocked: (host: string, port: number) => void;
  readonly tracer: Tracer | null;
}

/**
 * How a port is served: `http` plain HTTP/1.1 on uWS, `strict` plain HTTP/1.1 on node:http (the
 * strict engine), `uws-tls` / `node-tls` HTTPS, `h2c` node:http2 plaintext (h2c and HTTP/1.1),
 * `tcp` / `tls-passthrough` L4.
 */
type Engine = 'http' | 'strict' | 'uws-tls' | 'node-tls' | 'h2c' | 'tcp' | 'tls-passthrough';

interface Entry {
  engine: Engine;
  /** ALPN protocols of a TLS listener, fixed when it is bound. */
  alpn?: string;
  listener: ServedListener | L4Listener;
  tls?: TlsBinding;
  proxyProtocol?: boolean;
  /** What its version was made of (a DNS rebuild gives it new clusters with the same tables). */
  wanted: Wanted;
  table: RouteTable | undefined;
  security: SecurityFilters | null;
}

interface Wanted {
  bind: string;
  routeName: string;
  engine: Engine;
  chains?: TlsChainSpec[];
  alpn?: string;
  /** TCP / TLS passthrough: the snapshot listener whose filter chains it serves. */
  l4?: Listener;
  /** An HTTP egress port that is also a forward proxy (served by node:http). */
  forwardProxy?: ForwardProxyConfig;
  security?: SecurityConfig;
  /** Connections start with a PROXY protocol header (node engine: uWS reads v2 only, measured). */
  proxyProtocol?: boolean;
}

export interface DataPlaneOptions {
  /** Issues the certificates of ACME secrets (src/tls/acme.ts). */
  acme?: AcmeProvider;
  /** The mesh identity (SDS `default` / `ROOTCA`) for ISTIO_MUTUAL origination. */
  mesh?: MeshIdentityProvider;
  /**
   * Serve only the uWS listeners (plain HTTP/1.1, SIMPLE TLS narrowed to http/1.1): `--workers N` threads other than
   * the first, since node:net servers cannot share a port across threads on Node 20.
   */
  uwsOnly?: boolean;
  /**
   * The HTTP/1.1 engine of plain HTTP and SIMPLE HTTPS ports whose Gateways do not choose one
   * (`gatehouse.io/http1-engine`): `uws` (default) or `strict` (node:http). `--http1-engine`.
   */
  http1Engine?: Http1Engine;
}

export class DataPlane {
  readonly clusters: ClusterManager;
  readonly secrets: SecretStore;
  readonly #log: Logger;
  /** The current version's shared part. */
  #base: BaseContext;
  readonly #metrics: IstioMetrics;
  readonly #blocked: (host: string, port: number) => void;
  readonly #listeners = new Map<number, Entry>();
  #certDir: PrivateCertDir | null = null;
  #accessLogKey = '';
  #metricsKey = '';
  #tracerKey = '';
  readonly #traceExporters: TraceExporters;
  #versionMetrics: IstioMetrics;
  #snapshot: Snapshot | null = null;
  #notServed = new Set<string>();
  readonly #forwardProxy: ForwardProxy;
  readonly #security: SecurityRegistry;
  readonly #uwsOnly: boolean;
  readonly #http1Engine: Http1Engine;

  constructor(metrics: IstioMetrics, log: Logger, opts: DataPlaneOptions = {}) {
    this.#log = log;
    this.#uwsOnly = opts.uwsOnly ?? false;
    this.#http1Engine = opts.http1Engine ?? 'uws';
    this.#security = new SecurityRegistry(log.child({ component: 'security' }));
    this.clusters = new ClusterManager({
      log: log.child({ component: 'dns' }),
      registry: metrics.registry,
      sds: { certificate: (n) => this.secrets.certificate(n), ca: (n) => this.secrets.ca(n) },
    });
    this.#forwardProxy = new ForwardProxy(log.child({ component: 'forward-proxy' }));
    const refused = new Counter({
      name: 'gatehouse_outbound_refused_total',
      help: 'Outbound requests and CONNECT tunnels refused by the outbound traffic policy (REGISTRY_ONLY → 502) or to an undeclared port (403), by host',
      labelNames: ['host', 'status'],
      registers: [metrics.registry],
    });
    const hosts = new Set<string>();
    this.#forwardProxy.onRefused = (host, status) => {
      // Bounded cardinality: beyond 500 distinct hosts, the rest are counted as "other".
      if (!hosts.has(host) && hosts.size >= 500) host = 'other';
      else hosts.add(host);
      refused.inc({ host, status: String(status) });
    };
    this.#metrics = metrics;
    this.#versionMetrics = metrics;
    this.#blocked = (host, port) => this.#forwardProxy.refused(host, port, 502, `${host} is not in the registry (outbound traffic policy REGISTRY_ONLY)`);
    this.#traceExporters = new TraceExporters(metrics.registry);
    this.#base = { clusters: this.clusters.current, metrics, accessLog: null, blocked: this.#blocked, tracer: null };
    // A DNS answer changed the current clusters: the same tables and policies with the new set.
    this.clusters.onRebuild = (set) => this.#republish(set);
    this.secrets = new SecretStore(log.child({ component: 'tls' }), metrics.registry, opts.acme, opts.mesh);
    this.secrets.onChange = () => this.#secretsChanged();
  }

  get snapshot(): Snapshot | null {
    return this.#snapshot;
  }

  /** The current version's clusters, metrics and access log (what L4 listeners see). */
  get context(): DataPlaneContext {
    return this.#base;
  }

  #notServedOnce(port: number, protocol: string, message: string): void {
    const key = `${port}/${protocol}/${message}`;
    if (this.#notServed.has(key)) return;
    this.#notServed.add(key);
    this.#log.warn({ port, protocol }, message);
  }

  async apply(snapshot: Snapshot): Promise<ApplyResult> {
    const errors: string[] = [];
    const stages = new Stages();
    const tables = new Map<string, RouteTable>();
    for (const [name, rc] of snapshot.routes) tables.set(name, new RouteTable(rc));
    stages.mark('routes');
    // The clusters of this version, built beside the current ones and warmed (new DNS host names
    // get their first answer, bounded) while the current version keeps serving.
    const clusters = await this.clusters.prepare(snapshot, 5_000);
    stages.mark('clusters');
    await this.secrets.update(snapshot.secrets ?? new Map());
    stages.mark('secrets');

    const wanted = new Map<number, Wanted>();
    for (const l of snapshot.listeners) {
      const protocol = l.metadata.filter_metadata.istio.protocol;
      const port = l.address.socket_address.port_value;
      const bind = l.address.socket_address.address;
      const security = l.metadata.filter_metadata.istio.security;
      const sec = security ? { security } : {};
      const proxyProtocol = l.metadata.filter_metadata.istio.proxy_protocol === true;
      // The Gateways' annotation, else the process default.
      const strict = (l.metadata.filter_metadata.istio.http1_engine ?? this.#http1Engine) === 'strict';
      if (protocol === 'HTTP') {
        const rds = l.filter_chains[0]?.filters[0]?.typed_config.rds?.route_config_name ?? `http.${port}`;
        // A forward proxy needs CONNECT and absolute-form requests, which uWS refuses: node:http.
        // So does the PROXY protocol: uWS parses v2 headers but answers v1 with 505 (measured).
        const fp = l.metadata.filter_metadata.istio.forward_proxy;
        if (fp || proxyProtocol) wanted.set(port, { bind, routeName: rds, engine: 'h2c', ...sec, ...(fp ? { forwardProxy: fp } : {}), ...(proxyProtocol ? { proxyProtocol } : {}) });
        else wanted.set(port, { bind, routeName: rds, engine: strict ? 'strict' : 'http', ...sec });
        continue;
      }
      if (protocol === 'HTTP2' || protocol === 'GRPC') {
        // node:http2, plaintext: h2c with prior knowledge (gRPC clients) and HTTP/1.1 on one port.
        const rds = l.filter_chains[0]?.filters[0]?.typed_config.rds?.route_config_name ?? `http.${port}`;
        wanted.set(port, { bind, routeName: rds, engine: 'h2c', ...sec, ...(proxyProtocol ? { proxyProtocol } : {}) });
        continue;
      }
      if (protocol === 'HTTPS' && proxyProtocol) this.#notServedOnce(port, protocol, `the PROXY protocol is not supported on HTTPS ports yet; port ${port} is served without it`);
      if (protocol === 'HTTPS') {
        const chains = tlsChains(l).filter((c) => {
          if (this.secrets.certificate(c.certSecret) && (!c.caSecret || this.secrets.ca(c.caSecret))) return true;
          this.#log.error({ port, server: c.server, secret: c.certSecret }, `no valid certificate for ${c.server}; its server names are not served`);
          return false;
        });
        if (chains.length === 0) {
          this.#notServedOnce(port, protocol, `no HTTPS server on port ${port} can be served (no terminating server with a valid certificate); port ${port} is not opened`);
          continue;
        }
        const rds = l.filter_chains[0]?.filters[0]?.typed_config.rds?.route_config_name ?? `https.${port}`;
        wanted.set(port, { bind, routeName: rds, engine: strict || needsNodeTls(chains) ? 'node-tls' : 'uws-tls', chains, alpn: alpnOf(chains).join(), ...sec });
        continue;
      }
      if (protocol === 'TCP' || protocol === 'TLS') {
        wanted.set(port, { bind, routeName: '', engine: protocol === 'TCP' ? 'tcp' : 'tls-passthrough', l4: l });
        continue;
      }
      this.#notServedOnce(port, protocol, `Gateway servers with protocol ${protocol} are not served by this version yet; port ${port} is not opened`);
    }

    if (this.#uwsOnly) for (const [port, w] of wanted) if (w.engine !== 'http' && w.engine !== 'uws-tls') wanted.delete(port);

    // Remove first, so that a port moving between protocols or engines can be re-bound.
    const closing: Array<Promise<void>> = [];
    for (const [port, e] of this.#listeners) {
      const w = wanted.get(port);
      if (w && w.bind === e.listener.bind && w.engine === e.engine && w.routeName === e.listener.routeName && w.alpn === e.alpn && (w.proxyProtocol ?? false) === (e.proxyProtocol ?? false)) continue;
      this.#listeners.delete(port);
      this.#log.info({ port }, 'closing listener (removed or changed in config); draining its requests');
      closing.push(e.listener.close(LISTENER_DRAIN_MS));
    }
    // Security filters are compiled once per distinct config and version, shared by listeners.
    const security = this.#security.begin();
    stages.mark('listeners');
    // Publish the version: clusters, then every listener's tables and policies with them, in one
    // synchronous step (no request sees one without the others). Requests in flight keep theirs.
    this.clusters.commit(clusters);
    const base = (this.#base = { clusters, metrics: this.#metricsFor(snapshot), accessLog: this.#accessLogFor(snapshot), blocked: this.#blocked, tracer: this.#tracerFor(snapshot) });
    const added: Array<[number, Wanted]> = [];
    for (const [port, w] of wanted) {
      const existing = this.#listeners.get(port);
      if (!existing) {
        added.push([port, w]);
        continue;
      }
      existing.wanted = w;
      existing.table = tables.get(w.routeName);
      existing.security = security.get(w.security);
      if (existing.listener instanceof L4Listener) {
        if (w.l4) existing.listener.update(w.l4, base);
        else existing.listener.ctx = base;
        continue;
      }
      existing.listener.ctx = this.#version(existing);
      if (w.chains) existing.tls?.update(w.chains);
    }
    // A port that changed engine is bound again only once the old listener stopped accepting.
    for (const [port, w] of added) {
      let entry: Entry;
      try {
        entry = this.#create(port, w, tables.get(w.routeName), security.get(w.security));
      } catch (e) {
        errors.push(`port ${port}: ${(e as Error).message}`);
        continue;
      }
      try {
        await entry.listener.listen();
        // Listening took a moment: a DNS rebuild may have published newer clusters meanwhile.
        if (entry.listener.ctx.clusters !== this.#base.clusters) entry.listener.ctx = entry.listener instanceof L4Listener ? this.#base : this.#version(entry);
        this.#listeners.set(port, entry);
        this.#log.info({ port, bind: w.bind, engine: w.engine }, w.engine === 'tcp' ? 'listening (TCP, tcp_proxy)' : w.engine === 'tls-passthrough' ? 'listening (TLS passthrough, routed by SNI)' : w.engine === 'http' ? 'listening (HTTP/1.1)' : w.engine === 'strict' ? 'listening (HTTP/1.1, strict node:http engine)' : w.engine === 'h2c' ? 'listening (h2c and HTTP/1.1, node:http2)' : `listening (HTTPS, ${w.engine === 'uws-tls' ? 'uWS, HTTP/1.1' : `node:http2, ALPN ${w.alpn}`})`);
      } catch (e) {
        await entry.listener.close(0);
        errors.push((e as Error).message);
      }
    }
    // Filters of configs no longer in use stop (JWKS refreshes, authorizer connections).
    security.commit();
    this.#snapshot = snapshot;
    this.#pruneCertFiles();
    if (closing.length > 0) void Promise.all(closing);
    stages.mark('publish');
    return { errors, stages: stages.times };
  }

  /** A listener's version: its table, policies and forward proxy with the current shared part. */
  #version(e: { wanted: Wanted; table: RouteTable | undefined; security: SecurityFilters | null }): DataPlaneContext {
    const fp = e.wanted.forwardProxy;
    return { ...this.#base, table: e.table, security: e.security, forwardProxy: fp ? { config: fp, proxy: this.#forwardProxy } : null };
  }

  /** DNS answers changed the current clusters: every listener keeps its tables with the new set. */
  #republish(clusters: ClusterSet): void {
    this.#base = { ...this.#base, clusters };
    for (const e of this.#listeners.values()) {
      if (e.listener instanceof L4Listener) e.listener.ctx = this.#base;
      else e.listener.ctx = this.#version(e);
    }
  }

  #create(port: number, w: Wanted, table: RouteTable | undefined, security: SecurityFilters | null): Entry {
    const version = { wanted: w, table, security };
    if (w.engine === 'tcp' || w.engine === 'tls-passthrough') {
      const listener = new L4Listener({ bind: w.bind, port, mode: w.engine }, this.#base, w.l4!, this.#log.child({ component: 'l4', port }));
      return { ...version, engine: w.engine, listener };
    }
    const ctx = this.#version(version);
    const opts = { bind: w.bind, port, routeName: w.routeName };
    if (w.engine === 'h2c' && w.proxyProtocol) {
      const listener = new NodeListener({ ...opts, proxyProtocol: true }, ctx);
      listener.onError = (err) => this.#log.error({ err, port }, 'request handler failed; answered 500');
      return { ...version, engine: 'h2c', listener, proxyProtocol: true };
    }
    if (w.engine === 'http') {
      const listener = new UwsHttpListener({ ...opts, scheme: 'http' }, ctx);
      listener.onError = (err) => this.#log.error({ err, port }, 'request handler failed; answered 500');
      return { ...version, engine: 'http', listener };
    }
    if (w.engine === 'strict') {
      // The strict HTTP/1.1 engine: node:http (llhttp), HTTP/1.1 only as on uWS (no h2c).
      const listener = new NodeListener({ ...opts, http1Only: true }, ctx);
      listener.onError = (err) => this.#log.error({ err, port }, 'request handler failed; answered 500');
      return { ...version, engine: 'strict', listener };
    }
    if (w.engine === 'h2c') {
      const listener = new NodeListener(opts, ctx);
      listener.onError = (err) => this.#log.error({ err, port }, 'request handler failed; answered 500');
      return { ...version, engine: 'h2c', listener };
    }
    if (w.engine === 'uws-tls') {
      this.#certDir ??= new PrivateCertDir();
      const tls = new UwsTlsBinding(opts, ctx, w.chains!, this.secrets, this.#certDir, this.#log);
      tls.listener.onError = (err) => this.#log.error({ err, port }, 'request handler failed; answered 500');
      return { ...version, engine: 'uws-tls', listener: tls.listener, tls, ...(w.alpn !== undefined ? { alpn: w.alpn } : {}) };
    }
    const tls = new NodeTlsBinding(opts, ctx, w.chains!, this.secrets, this.#log);
    return { ...version, engine: 'node-tls', listener: tls.listener, tls, ...(w.alpn !== undefined ? { alpn: w.alpn } : {}) };
  }

  /** Certificate files may have changed: re-read them and rotate what changed. */
  refreshSecrets(): void {
    if (this.secrets.refresh().size > 0) this.#secretsChanged();
  }

  /** Files the current certificates are read from (watched by the gateway). */
  secretFiles(): string[] {
    return this.secrets.files();
  }

  /** Called after certificates changed (rotation, ACME issuance): the control plane re-serves SDS. */
  onSecretsChanged: (() => void) | null = null;

  #secretsChanged(): void {
    this.onSecretsChanged?.();
    for (const e of this.#listeners.values()) {
      try {
        e.tls?.secretsChanged();
      } catch (err) {
        this.#log.error({ err, port: e.listener.port }, 'certificate rotation failed; the listener keeps its certificates');
      }
    }
    this.#pruneCertFiles();
  }

  #pruneCertFiles(): void {
    if (!this.#certDir) return;
    const keep = new Set<string>();
    for (const e of this.#listeners.values()) for (const h of e.tls?.hashes() ?? []) keep.add(h);
    this.#certDir.prune(keep);
  }

  /**
   * The access log of a version: the current one when the mesh config's log settings did not
   * change, else a new one (on the same stream when the file is the same). A replaced log's stream
   * is closed once requests of its version had the drain time to finish.
   */
  #accessLogFor(snapshot: Snapshot): AccessLog | null {
    const m = snapshot.mesh;
    // The Telemetry API's logs when it configures logging, else the mesh config's (Istio's fallback).
    const logs = snapshot.telemetry?.access_log;
    const key = logs ? JSON.stringify(logs) : `${m.accessLogFile}|${m.accessLogEncoding}|${m.accessLogFormat}`;
    const old = this.#base.accessLog;
    if (key === this.#accessLogKey) return old;
    this.#accessLogKey = key;
    const next = AccessLog.forSnapshot(m, snapshot.telemetry, old);
    // Files the new version no longer writes are closed once requests of the old one had the drain time.
    if (old) setTimeout(() => old.close(next), LISTENER_DRAIN_MS).unref();
    return next;
  }

  /** The metrics of a version: the shared series, with the Telemetry API's overrides (the same view while they do not change). */
  #metricsFor(snapshot: Snapshot): IstioMetrics {
    const stats = snapshot.telemetry?.stats;
    const key = stats ? JSON.stringify(stats) : '';
    if (key !== this.#metricsKey) {
      this.#metricsKey = key;
      this.#versionMetrics = this.#metrics.withOverrides(stats);
    }
    return this.#versionMetrics;
  }

  /**
   * The tracer of a version (the Telemetry API's tracing over the mesh config): the same one while
   * its config does not change. A collector no longer used is flushed and closed once the requests
   * of the old version had the drain time.
   */
  #tracerFor(snapshot: Snapshot): Tracer | null {
    const tracing = snapshot.telemetry?.tracing;
    const hops = snapshot.mesh.defaultConfig.gatewayTopology?.numTrustedProxies ?? 0;
    const key = tracing ? `${hops}|${JSON.stringify(tracing)}` : '';
    if (key === this.#tracerKey) return this.#base.tracer;
    this.#tracerKey = key;
    const tracer = tracing ? Tracer.compile(tracing, tracing.service_cluster, { exporters: this.#traceExporters, trustedHops: hops }) : null;
    setTimeout(() => {
      const current = this.#base.tracer?.sink;
      this.#traceExporters.retain(new Set(current ? [current as BatchSink] : []));
    }, LISTENER_DRAIN_MS).unref();
    return tracer;
  }

  /** True when every listener of the current snapshot is bound. */
  get allBound(): boolean {
    for (const e of this.#listeners.values()) if (!e.listener.listening) return false;
    return true;
  }

  listenersSummary(): Array<{ name: string; address: string; protocol: string; engine: 'uWS' | 'node:http' | 'node:http2' | 'node:net'; route_config: string; active_requests: number }> {
    return [...this.#listeners.values()].map(({ listener: l, engine, alpn }) => ({
      name: `${l.bind}_${l.port}`,
      address: `${l.bind}:${l.port}`,
      // The library serving the port (node:http2's listener also answers HTTP/1.1, through
      // node:http; a port that offers HTTP/1.1 only is node:http's: the strict engine).
      engine: engine === 'http' || engine === 'uws-tls' ? 'uWS' : engine === 'strict' || (engine === 'node-tls' && alpn === 'http/1.1') ? 'node:http' : engine === 'tcp' || engine === 'tls-passthrough' ? 'node:net' : 'node:http2',
      protocol:
        engine === 'tcp' ? 'TCP' : engine === 'tls-passthrough' ? 'TLS passthrough' : engine === 'http' || engine === 'strict' ? 'HTTP/1.1' : engine === 'h2c' ? 'HTTP/1.1, h2c' : engine === 'uws-tls' || alpn === 'http/1.1' ? 'HTTPS (HTTP/1.1)' : 'HTTPS (HTTP/1.1, h2)',
      // L4 listeners have no route configuration: their routes are the tcp_proxy filter chains.
      route_config: l instanceof L4Listener ? (engine === 'tcp' ? 'tcp_proxy' : 'tcp_proxy by SNI') : l.routeName,
      active_requests: l.inflight,
    }));
  }

  /** Closes the uWS listeners and their connections now (a worker thread that is exiting). */
  abortUws(): void {
    for (const e of this.#listeners.values()) if (e.listener instanceof UwsHttpListener) e.listener.abort();
  }

  /** Stops accepting on every listener, lets requests finish up to `drainMs`, then closes. */
  async close(drainMs: number): Promise<void> {
    const all = [...this.#listeners.values()];
    this.#listeners.clear();
    await Promise.all(all.map((e) => e.listener.close(drainMs)));
    await this.clusters.close();
    this.#security.close();
    this.#base.accessLog?.close();
    await this.#traceExporters.close();
    this.#certDir?.remove();
  }
}
