// Istio resources → xDS-shaped Snapshot. The ONLY place in Gatehouse that interprets Istio
// semantics: gateway selection, VirtualService binding and merge order, host completion, cluster
// naming, DestinationRule policy merging, ServiceEntry/WorkloadEntry endpoints, Istio's defaults.
// Pure: same resources and options in, equal snapshot (and hash) out.
import { createHash } from 'node:crypto';
import { CLUSTER_DOMAIN, completeHost, hostMatches } from '../config/hosts.js';
import { parseDurationMs } from '../config/duration.js';
import type {
  DestinationRuleSpec,
  GatewayServer,
  GatewaySpec,
  L4MatchAttributes,
  MeshConfig,
  Resource,
  SidecarSpec,
  RouteDestination,
  VirtualServiceSpec,
} from '../config/types.js';
import { resourceId } from '../config/types.js';
import { buildClusters } from './build/clusters.js';
import { createContext, type ResolveOptions } from './build/context.js';
import { ISTIO_DEFAULTS } from './build/defaults.js';
import { destinationRuleWarnings, mergePolicy, portPolicy } from './build/destination-rules.js';
import { buildHttpRoutes, buildRouteConfiguration, defaultServiceRoute } from './build/routes.js';
import { exportedTo, gatewayRef, labelsMatch, splitServerHost } from './build/visibility.js';
import { proxylessPolicyGaps, proxylessRouteGaps } from './proxyless.js';
import { buildSecurityConfig, PROXY_PROTOCOL_ANNOTATION } from './security.js';
import { HTTP1_ENGINE_ANNOTATION } from './gateway-tls.js';
import { FORWARD_PROXY_ANNOTATION, ALPN_ANNOTATION, ALPN_H1, ALPN_H2, secretIndex, serverHostNames, serverTls, TERMINATING_MODES } from './gateway-tls.js';
import {
  BLACKHOLE_CLUSTER,
  PASSTHROUGH_CLUSTER,
  type ForwardProxyConfig,
  clusterName,
  durationFromMs,
  ZERO_DURATION,
  type FilterChain,
  type HttpConnectionManager,
  type ApiListener,
  type Listener,
  type ListenerProtocol,
  type Http1Engine,
  type Route,
  type RouteConfiguration,
  type Secret,
  type SidecarView,
  type Snapshot,
  type TcpProxy,
} from './snapshot.js';

export type { ResolveOptions } from './build/context.js';
export { DEFAULT_RETRY_ON } from './build/defaults.js';
export { exportedTo } from './build/visibility.js';
export { mergeMatch } from './build/route-match.js';
export type { MtlsMode } from './build/peer-authentication.js';

const DEFAULT_IDLE_TIMEOUT_MS = ISTIO_DEFAULTS.idleTimeoutMs;

const TCP_PROXY_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy' as const;
const TLS_INSPECTOR_TYPE = 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' as const;
/** Server TLS modes that route on SNI without terminating TLS. */
const PASSTHROUGH_MODES: ReadonlySet<string> = new Set(['PASSTHROUGH', 'AUTO_PASSTHROUGH']);

/** Service port protocols spoken over HTTP/2. */
const HTTP2_PROTOCOLS: ReadonlySet<string> = new Set(['GRPC', 'GRPC-WEB', 'HTTP2']);
/**
 * Service port protocols that get HTTP routes in the sidecar view and the forward proxy: Istio's
 * IsHTTPOrSniffed, i.e. HTTP-based ones and '' (protocol unset: Istio sniffs it, so HTTP traffic
 * gets the HTTP routes). MONGO, MYSQL, REDIS, TCP, TLS, HTTPS are proxied as TCP.
 */
const HTTP_SERVICE_PROTOCOLS: ReadonlySet<string> = new Set(['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB', 'HTTP_PROXY', '']);

export function resolve(resources: readonly Resource[], opts: ResolveOptions): Snapshot {
  const ctx = createContext(resources, opts);
  const { warn } = ctx.warnings;
  const { gateways, virtualServices, destinationRules } = ctx.config;
  const services = ctx.registry;
  const drForHost = (host: string): Resource<DestinationRuleSpec> | undefined => ctx.destinationRules.forHost(host);
  const peerMtls = ctx.peerAuthentication;

  // ---- Gateways that select this workload ----
  const mine = opts.allGateways ? gateways : gateways.filter((g) => labelsMatch(g.spec.selector ?? {}, opts.labels));
  interface BoundServer {
    gw: Resource<GatewaySpec>;
    server: GatewayServer;
    index: number;
    protocol: ListenerProtocol;
  }
  const byPort = new Map<number, BoundServer[]>();
  for (const gw of mine) {
    (gw.spec.servers ?? []).forEach((server, index) => {
      const protocol = listenerProtocol(server);
      const list = byPort.get(server.port.number) ?? [];
      list.push({ gw, server, index, protocol });
      byPort.set(server.port.number, list);
    });
  }

  const listeners: Listener[] = [];
  // Istio security policies (AuthorizationPolicy, RequestAuthentication): the same for every HTTP listener.
  const security = buildSecurityConfig(resources, opts, warn);
  const routes = new Map<string, RouteConfiguration>();
  const secrets = new Map<string, Secret>();
  const secretsByName = secretIndex(resources);
  const usedClusters = new Set<string>();
  /** Work that needs the clusters (AUTO_PASSTHROUGH filter chains), run once they are built. */
  const afterClusters: Array<() => void> = [];
  /** A forward proxy's catch-all needs BlackHoleCluster / PassthroughCluster. */
  let needSpecialClusters = false;

  for (const [port, servers] of [...byPort].sort((a, b) => a[0] - b[0])) {
    for (const s of servers) {
      if (s.server.port.protocol.toUpperCase() === 'UDP') warn(s.gw, ['spec', 'servers', s.index, 'port', 'protocol'], `UDP is not proxied (by Istio either): Istio's gateway builds a TCP listener for this server, and so does Gatehouse (port ${port}, tcp routes)`);
    }
    const first = servers[0]!;
    const protocol = first.protocol;
    const kept = servers.filter((s) => {
      if (s.protocol === protocol) return true;
      // An HTTPS PASSTHROUGH server beside terminating ones: the HTTPS branch says why it is not served.
      if (protocol === 'HTTPS' && s.server.port.protocol.toUpperCase() === 'HTTPS') return true;
      if ((protocol === 'TLS' && s.protocol === 'HTTPS') || (protocol === 'HTTPS' && s.protocol === 'TLS')) {
        warn(s.gw, ['spec', 'servers', s.index, 'tls', 'mode'], `port ${port} already passes TLS through or terminates it for ${resourceId(first.gw)}; Gatehouse cannot terminate TLS and pass TLS through on one port (use separate ports); this server is ignored`);
        return false;
      }
      warn(s.gw, ['spec', 'servers', s.index, 'port', 'protocol'], `port ${port} is already served as ${protocol} by ${resourceId(first.gw)}; this server is ignored`);
      return false;
    });
    const routeName = `http.${port}`;
    const listener: Listener = {
      name: `${opts.bind}_${port}`,
      address: { socket_address: { address: opts.bind, port_value: port, protocol: 'TCP' } },
      filter_chains: [],
      traffic_direction: 'OUTBOUND',
      metadata: { filter_metadata: { istio: { protocol, servers: kept.map((s) => `${resourceId(s.gw)}#${s.server.name ?? s.index}`) } } },
    };
    if (protocol === 'HTTP' || protocol === 'HTTP2' || protocol === 'GRPC') {
      listener.filter_chains.push({
        filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: httpConnectionManager(routeName, opts.mesh) }],
      });
      routes.set(routeName, buildRouteConfiguration(ctx, routeName, port, kept));
      const fp = kept.filter((s) => s.gw.metadata.annotations?.[FORWARD_PROXY_ANNOTATION] !== undefined);
      for (const s of fp) {
        const v = s.gw.metadata.annotations![FORWARD_PROXY_ANNOTATION];
        if (v !== 'true' && v !== 'false') warn(s.gw, ['metadata', 'annotations', FORWARD_PROXY_ANNOTATION], `${FORWARD_PROXY_ANNOTATION} must be "true" or "false", not "${v}"; ignored`);
      }
      if (protocol === 'HTTP' && fp.some((s) => s.gw.metadata.annotations![FORWARD_PROXY_ANNOTATION] === 'true')) {
        listener.metadata.filter_metadata.istio.forward_proxy = forwardProxy(routes.get(routeName)!);
      }
    } else if (protocol === 'HTTPS') {
      // One filter chain per terminating server, selected by SNI. Deviation from Istio (one RDS
      // table per server): all HTTPS servers of a port share one route table, `https.<port>`,
      // keyed by Host like the plaintext ones; the SNI only picks the certificate.
      const httpsRoute = `https.${port}`;
      const served: BoundServer[] = [];
      for (const s of kept) {
        const mode = s.server.tls?.mode ?? 'PASSTHROUGH';
        const tlsPath = ['spec', 'servers', s.index, 'tls', 'mode'];
        if (!TERMINATING_MODES.includes(mode)) {
          const why = PASSTHROUGH_MODES.has(mode) ? `on a port whose first server terminates TLS (port ${port}); give passthrough servers their own port` : 'by Gatehouse yet';
          warn(s.gw, tlsPath, `tls mode ${mode} on an HTTPS server is not supported ${why}; this server is not served`);
          continue;
        }
        const t = serverTls(s.gw, s.server, s.index, secretsByName, opts.namespace);
        for (const n of t.notes) warn(s.gw, n.path, n.message);
        // A missing Secret or CA is reported by validation; the server cannot be served without it.
        if (!t.context || !t.cert) continue;
        secrets.set(t.cert.secret.name, t.cert.secret);
        if (t.ca) secrets.set(t.ca.secret.name, t.ca.secret);
        const names = serverHostNames(s.server);
        // PeerAuthentication decides whether a client certificate is required on servers that
        // verify them (MUTUAL / OPTIONAL_MUTUAL): STRICT requires one, PERMISSIVE makes it
        // optional, DISABLE stops asking.
        let context = t.context;
        const pa = context.common_tls_context.combined_validation_context ? peerMtls(port) : undefined;
        if (pa) {
          const { combined_validation_context: cvc, ...common } = context.common_tls_context;
          context = pa.mode === 'DISABLE' ? { ...context, common_tls_context: common, require_client_certificate: false } : { ...context, common_tls_context: { ...common, combined_validation_context: cvc! }, require_client_certificate: pa.mode === 'STRICT' };
        }
        listener.filter_chains.push({
          ...(names.includes('*') ? {} : { filter_chain_match: { server_names: names } }),
          transport_socket: { name: 'envoy.transport_sockets.tls', typed_config: context },
          filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: httpConnectionManager(httpsRoute, opts.mesh) }],
          metadata: { filter_metadata: { istio: { server: `${resourceId(s.gw)}#${s.server.name ?? s.index}`, tls_mode: t.mode, ...(pa ? { mtls_mode: pa.mode, peer_authentication: pa.policy } : {}) } } },
        });
        served.push(s);
      }
      if (served.length > 0) {
        const rc = buildRouteConfiguration(ctx, httpsRoute, port, served);
        routes.set(httpsRoute, rc);
        const alpn = httpsAlpn(served, rc);
        for (const fc of listener.filter_chains) {
          if (fc.transport_socket) fc.transport_socket.typed_config.common_tls_context.alpn_protocols = [...alpn];
        }
      }
    } else if (protocol === 'TCP') {
      listener.filter_chains.push(buildTcpChain(port, kept));
    } else if (protocol === 'TLS') {
      if (!buildTlsPassthrough(listener, port, kept)) continue;
    }
    if (protocol === 'HTTP' || protocol === 'HTTPS' || protocol === 'HTTP2' || protocol === 'GRPC') {
      if (security) listener.metadata.filter_metadata.istio.security = security;
      if (kept.some((s) => s.gw.metadata.annotations?.[PROXY_PROTOCOL_ANNOTATION] === 'true')) listener.metadata.filter_metadata.istio.proxy_protocol = true;
    }
    if (protocol === 'HTTP' || protocol === 'HTTPS') {
      const engine = http1Engine(port, kept, listener);
      if (engine) listener.metadata.filter_metadata.istio.http1_engine = engine;
    }
    listeners.push(listener);
  }

  // ---- L4: TCP servers (VirtualService tcp routes) and TLS passthrough (tls routes, by SNI) ----

  /** The VirtualServices bound to one of `servers` (exportTo-visible) and the hosts they share with them. */
  function boundL4(servers: BoundServer[]): Array<{ vs: Resource<VirtualServiceSpec>; bound: BoundServer[]; gwNames: string[] }> {
    const out: Array<{ vs: Resource<VirtualServiceSpec>; bound: BoundServer[]; gwNames: string[] }> = [];
    for (const vs of virtualServices) {
      const vsNs = vs.metadata.namespace;
      if (!exportedTo(vs.spec.exportTo, vsNs, opts.namespace) && !servers.some((s) => exportedTo(vs.spec.exportTo, vsNs, s.gw.metadata.namespace))) continue;
      const refs = (vs.spec.gateways ?? []).map((g) => gatewayRef(g, vsNs));
      const vsHosts = (vs.spec.hosts ?? []).map((h) => completeHost(h, vsNs));
      // Istio binds a VirtualService to a server when the Gateway is named and their hosts meet.
      const bound = servers.filter((s) => {
        if (!refs.includes(`${s.gw.metadata.namespace}/${s.gw.metadata.name}`)) return false;
        return s.server.hosts.some((sh) => {
          const { ns, host } = splitServerHost(sh, s.gw.metadata.namespace);
          return (ns === '*' || ns === vsNs) && vsHosts.some((vh) => hostMatches(host, vh) || hostMatches(vh, host));
        });
      });
      if (bound.length > 0) out.push({ vs, bound, gwNames: [...new Set(bound.map((s) => `${s.gw.metadata.namespace}/${s.gw.metadata.name}`))] });
    }
    return out;
  }

  /** Whether an L4 match entry applies to this port and these gateways; warns about what a gateway ignores. */
  function l4MatchApplies(vs: Resource<VirtualServiceSpec>, m: L4MatchAttributes, path: Array<string | number>, port: number, gwNames: string[]): boolean {
    const ns = vs.metadata.namespace;
    if (m.port !== undefined && m.port !== port) return false;
    if (m.gateways && !m.gateways.some((g) => gwNames.includes(gatewayRef(g, ns)))) return false;
    if (m.sourceLabels || m.sourceNamespace) warn(vs, [...path, m.sourceLabels ? 'sourceLabels' : 'sourceNamespace'], 'sourceLabels/sourceNamespace apply to sidecars only; a gateway ignores this match condition');
    if (m.destinationSubnets) warn(vs, [...path, 'destinationSubnets'], 'destinationSubnets is not supported by Gatehouse yet; this match condition is ignored');
    return true;
  }

  /** Envoy's tcp_proxy for an Istio route destination list: one cluster, or a weighted choice. */
  function tcpProxy(vs: Resource<VirtualServiceSpec>, route: RouteDestination[], path: Array<string | number>, statPrefix?: string): TcpProxy {
    const weighted = route.map((d, k) => {
      const host = completeHost(d.destination.host, vs.metadata.namespace);
      const p = services.destinationPort(host, d.destination.port?.number);
      if (p === undefined) warn(vs, [...path, k, 'destination', 'port'], `destination ${host} has several ports or none known; set destination.port.number`);
      const name = clusterName(p ?? 80, d.destination.subset ?? '', host);
      usedClusters.add(name);
      return { name, weight: route.length === 1 ? 100 : (d.weight ?? 0), host, subset: d.destination.subset ?? '', port: p ?? 80 };
    });
    const positive = weighted.filter((w) => w.weight > 0);
    const first = positive[0] ?? weighted[0]!;
    const proxy: TcpProxy = {
      '@type': TCP_PROXY_TYPE,
      stat_prefix: statPrefix ?? first.name,
      idle_timeout: durationFromMs(tcpIdleTimeoutMs(first.host, first.subset, first.port)),
    };
    if (positive.length === 1) proxy.cluster = positive[0]!.name;
    else if (positive.length === 0) proxy.cluster = BLACKHOLE_CLUSTER;
    else proxy.weighted_clusters = { clusters: positive.map((w) => ({ name: w.name, weight: w.weight })) };
    return proxy;
  }

  /** DestinationRule connectionPool.tcp.idleTimeout of a destination (subset, port level), or Istio's 1 h. */
  function tcpIdleTimeoutMs(host: string, subset: string, port: number): number {
    const dr = drForHost(host);
    if (!dr) return DEFAULT_IDLE_TIMEOUT_MS;
    const sub = subset ? dr.spec.subsets?.find((x) => x.name === subset) : undefined;
    const policy = portPolicy(mergePolicy(dr.spec.trafficPolicy, sub?.trafficPolicy), port);
    const raw = policy?.connectionPool?.tcp?.idleTimeout;
    return raw ? (parseDurationMs(raw) ?? DEFAULT_IDLE_TIMEOUT_MS) : DEFAULT_IDLE_TIMEOUT_MS;
  }

  /**
   * A TCP server's one filter chain: the first tcp route (VirtualServices in order) whose match
   * fits this port and gateway. None: BlackHoleCluster, so the connection is closed (as Istio's
   * gateway does with no route).
   */
  function buildTcpChain(port: number, servers: BoundServer[]): FilterChain {
    for (const { vs, gwNames } of boundL4(servers)) {
      const tcp = vs.spec.tcp ?? [];
      for (let i = 0; i < tcp.length; i++) {
        const r = tcp[i]!;
        const base = ['spec', 'tcp', i];
        const matches = r.match && r.match.length > 0 ? r.match : [{}];
        let hit = false;
        matches.forEach((m, j) => {
          if (l4MatchApplies(vs, m, [...base, 'match', j], port, gwNames)) hit = true;
        });
        if (!hit || !r.route || r.route.length === 0) continue;
        return { filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: tcpProxy(vs, r.route, [...base, 'route']) }] };
      }
    }
    return { filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': TCP_PROXY_TYPE, stat_prefix: BLACKHOLE_CLUSTER, cluster: BLACKHOLE_CLUSTER, idle_timeout: durationFromMs(DEFAULT_IDLE_TIMEOUT_MS) } }] };
  }

  /**
   * TLS passthrough: one filter chain per tls route match (its sniHosts that the servers' hosts
   * admit; a name claimed by an earlier chain stays with it, as Envoy refuses duplicates), and for
   * AUTO_PASSTHROUGH servers one chain per cluster, matched by Istio's `outbound_.<port>_.<subset>_.<host>`
   * SNI (added once the clusters are known). False when no server of the port can be served.
   */
  function buildTlsPassthrough(listener: Listener, port: number, servers: BoundServer[]): boolean {
    const passthrough: BoundServer[] = [];
    const auto: BoundServer[] = [];
    for (const s of servers) {
      const mode = s.server.tls?.mode ?? 'PASSTHROUGH';
      if (mode === 'PASSTHROUGH') passthrough.push(s);
      else if (mode === 'AUTO_PASSTHROUGH') auto.push(s);
      else warn(s.gw, ['spec', 'servers', s.index, 'tls', 'mode'], `tls mode ${mode} on a TLS server (TLS termination, then tcp routes) is not supported by Gatehouse yet; this server is not served`);
    }
    if (passthrough.length === 0 && auto.length === 0) return false;
    listener.listener_filters = [{ name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': TLS_INSPECTOR_TYPE } }];
    const claimed = new Set<string>();
    const serverId = (s: BoundServer): string => `${resourceId(s.gw)}#${s.server.name ?? s.index}`;
    for (const { vs, bound, gwNames } of boundL4(passthrough)) {
      const vsNs = vs.metadata.namespace;
      (vs.spec.tls ?? []).forEach((r, i) => {
        const base = ['spec', 'tls', i];
        r.match.forEach((m, j) => {
          const path = [...base, 'match', j];
          if (!l4MatchApplies(vs, m, path, port, gwNames)) return;
          if (!r.route || r.route.length === 0) return;
          // The SNI names of this match that a bound server admits (the more specific of the two).
          const names: string[] = [];
          let owner: BoundServer | undefined;
          for (const raw of m.sniHosts) {
            const sni = raw.toLowerCase();
            for (const s of bound) {
              for (const sh of s.server.hosts) {
                const { ns, host } = splitServerHost(sh, s.gw.metadata.namespace);
                if (ns !== '*' && ns !== vsNs) continue;
                const name = hostMatches(host, sni) ? sni : hostMatches(sni, host) ? host : undefined;
                if (name === undefined || names.includes(name)) continue;
                names.push(name);
                owner ??= s;
              }
            }
          }
          const fresh = names.filter((n) => !claimed.has(n));
          if (names.length > 0 && fresh.length === 0) {
            warn(vs, [...path, 'sniHosts'], `sniHosts ${names.join(', ')} on port ${port} are already routed by an earlier tls route; this match is ignored`);
            return;
          }
          if (fresh.length === 0 || !owner) return;
          for (const n of fresh) claimed.add(n);
          listener.filter_chains.push({
            ...(fresh.includes('*') ? {} : { filter_chain_match: { server_names: fresh } }),
            filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: tcpProxy(vs, r.route, [...base, 'route']) }],
            metadata: { filter_metadata: { istio: { server: serverId(owner), tls_mode: 'PASSTHROUGH' } } },
          });
        });
      });
    }
    if (auto.length > 0) {
      afterClusters.push(() => {
        for (const c of clusters.values()) {
          const meta = c.metadata.filter_metadata.istio;
          if (meta.kind !== 'service') continue;
          const s = auto.find((a) => a.server.hosts.some((sh) => {
            const { ns, host } = splitServerHost(sh, a.gw.metadata.namespace);
            return (ns === '*' || ns === services.get(meta.host)?.namespace) && hostMatches(host, meta.host);
          }));
          if (!s) continue;
          const sni = `outbound_.${meta.port}_.${meta.subset}_.${meta.host}`;
          if (claimed.has(sni)) continue;
          claimed.add(sni);
          listener.filter_chains.push({
            filter_chain_match: { server_names: [sni] },
            filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': TCP_PROXY_TYPE, stat_prefix: c.name, cluster: c.name, idle_timeout: durationFromMs(tcpIdleTimeoutMs(meta.host, meta.subset, meta.port)) } }],
            metadata: { filter_metadata: { istio: { server: serverId(s), tls_mode: 'AUTO_PASSTHROUGH' } } },
          });
        }
      });
    }
    return true;
  }

  /**
   * The HTTP/1.1 engine the Gateways of a plain HTTP or HTTPS port ask for with
   * `gatehouse.io/http1-engine` (one engine serves a port): `strict` when any asks for it (the
   * stricter parser wins), else `uws` when any asks for it, else none (`--http1-engine` decides).
   */
  function http1Engine(port: number, servers: BoundServer[], listener: Listener): Http1Engine | undefined {
    let strict: BoundServer | undefined;
    let uws: BoundServer | undefined;
    const path = ['metadata', 'annotations', HTTP1_ENGINE_ANNOTATION];
    const seen = new Set<Resource>();
    for (const s of servers) {
      if (seen.has(s.gw)) continue;
      seen.add(s.gw);
      const raw = s.gw.metadata.annotations?.[HTTP1_ENGINE_ANNOTATION];
      if (raw === undefined) continue;
      const v = raw.trim().toLowerCase();
      if (v === 'strict') strict ??= s;
      else if (v === 'uws') uws ??= s;
      else warn(s.gw, path, `${HTTP1_ENGINE_ANNOTATION} must be "uws" or "strict", not "${raw}"; ignored`);
    }
    if (strict && uws) warn(uws.gw, path, `port ${port} is served by the strict HTTP/1.1 engine: ${resourceId(strict.gw)} asks for it on the same port (one engine serves a port; strict wins)`);
    if (uws && !strict) {
      // What uWS cannot do puts a port on node:http whatever the annotation says.
      const meta = listener.metadata.filter_metadata.istio;
      const contexts = listener.filter_chains.map((fc) => fc.transport_socket?.typed_config);
      const why = meta.forward_proxy
        ? `it is a forward proxy (${FORWARD_PROXY_ANNOTATION})`
        : meta.proxy_protocol && meta.protocol === 'HTTP'
          ? `it reads the PROXY protocol (${PROXY_PROTOCOL_ANNOTATION})`
          : contexts.some((c) => c?.common_tls_context.alpn_protocols?.includes('h2'))
            ? 'it offers h2 by ALPN'
            : contexts.some((c) => c?.common_tls_context.combined_validation_context)
              ? 'it verifies client certificates'
              : '';
      if (why) warn(uws.gw, path, `port ${port} cannot be served by uWS: ${why}; its HTTP/1.1 is served by the strict node:http engine`);
    }
    return strict ? 'strict' : uws ? 'uws' : undefined;
  }

  /**
   * The ALPN protocols of an HTTPS port (one engine serves all its servers): `h2, http/1.1`, as
   * Istio's gateway offers on every HTTPS server, unless every Gateway on the port narrows it with
   * the `gatehouse.io/alpn: "http/1.1"` annotation (such a port can stay on the uWS engine, whose
   * HTTP/1.1 is faster and which cannot negotiate h2). One Gateway without it keeps h2 offered.
   */
  function httpsAlpn(servers: BoundServer[], rc: RouteConfiguration): readonly string[] {
    let narrowed: BoundServer | undefined;
    const seen = new Set<Resource>();
    for (const s of servers) {
      if (seen.has(s.gw)) continue;
      seen.add(s.gw);
      const raw = s.gw.metadata.annotations?.[ALPN_ANNOTATION];
      if (raw === undefined) return ALPN_H2;
      const list = raw.split(',').map((p) => p.trim()).filter((p) => p !== '');
      if (list.length === 0 || list.some((p) => p !== 'h2' && p !== 'http/1.1')) {
        warn(s.gw, ['metadata', 'annotations', ALPN_ANNOTATION], `${ALPN_ANNOTATION} must be "h2,http/1.1" or "http/1.1", not "${raw}"; ignored (h2 and http/1.1 are offered)`);
        return ALPN_H2;
      }
      if (list.includes('h2')) return ALPN_H2;
      narrowed ??= s;
    }
    // gRPC clients need h2: a route reaching an HTTP2/GRPC service port cannot serve them here.
    for (const vh of rc.virtual_hosts) {
      for (const r of vh.routes) {
        const a = r.route;
        if (!a) continue;
        const names = a.cluster ? [a.cluster] : (a.weighted_clusters?.clusters ?? []).map((w) => w.name);
        if (narrowed && names.some(speaksHttp2)) {
          warn(narrowed.gw, ['metadata', 'annotations', ALPN_ANNOTATION], `port ${narrowed.server.port.number} offers only http/1.1 (${ALPN_ANNOTATION}) but routes to an HTTP2/GRPC service port: gRPC clients, which need h2, cannot be served on it`);
          return ALPN_H1;
        }
      }
    }
    return ALPN_H1;
  }

  function speaksHttp2(cluster: string): boolean {
    const [, port, , host] = cluster.split('|');
    const p = host ? services.get(host)?.ports.find((sp) => String(sp.number) === port) : undefined;
    return p !== undefined && HTTP2_PROTOCOLS.has(p.protocol);
  }

  /**
   * An egress server that is also a forward proxy (Gatehouse extension, Gateway annotation
   * `gatehouse.io/forward-proxy: "true"`): absolute-form requests and CONNECT tunnels go to the
   * registry, as a sidecar's outbound does. The route table gains, after the VirtualServices' own
   * virtual hosts, one per registered HTTP service port (to its cluster), and a catch-all that
   * blocks (REGISTRY_ONLY: BlackHoleCluster, 502) or passes through (ALLOW_ANY:
   * PassthroughCluster, the request's own authority). CONNECT targets are the registered hosts
   * and their declared ports.
   */
  function forwardProxy(rc: RouteConfiguration): ForwardProxyConfig {
    const mode = outboundPolicy();
    const taken = new Set(rc.virtual_hosts.flatMap((vh) => vh.domains));
    const connect: ForwardProxyConfig['connect'] = [];
    for (const svc of services.sorted) {
      if (!exportedTo(svc.exportTo, svc.namespace, opts.namespace)) continue;
      connect.push({ host: svc.host, ports: svc.ports.map((p) => p.number) });
      for (const p of svc.ports) {
        if (!HTTP_SERVICE_PROTOCOLS.has(p.protocol)) continue;
        const domains = p.number === 80 ? [svc.host, `${svc.host}:80`] : [`${svc.host}:${p.number}`];
        if (domains.some((d) => taken.has(d))) continue;
        for (const d of domains) taken.add(d);
        rc.virtual_hosts.push({ name: `${svc.host}:${p.number}`, domains, routes: [defaultServiceRoute(ctx, clusterName(p.number, '', svc.host), svc.host, p.number)], include_request_attempt_count: true });
      }
    }
    if (!taken.has('*')) {
      const cluster = mode === 'REGISTRY_ONLY' ? BLACKHOLE_CLUSTER : PASSTHROUGH_CLUSTER;
      rc.virtual_hosts.push({
        name: mode === 'REGISTRY_ONLY' ? 'block_all' : 'allow_any',
        domains: ['*'],
        routes: [
          {
            name: mode === 'REGISTRY_ONLY' ? 'block_all' : 'allow_any',
            match: { prefix: '/', case_sensitive: true, headers: [], query_parameters: [] },
            route: { cluster, cluster_not_found_response_code: 'SERVICE_UNAVAILABLE', timeout: ZERO_DURATION },
            metadata: { filter_metadata: { istio: { config: '' } } },
          },
        ],
        include_request_attempt_count: true,
      });
      needSpecialClusters = true;
    }
    return { policy: mode, connect };
  }

  /** Outbound policy of this gateway: its Sidecar (selected, then namespace default), the root namespace's, then mesh config. */
  function outboundPolicy(): 'ALLOW_ANY' | 'REGISTRY_ONLY' {
    const sidecars = ctx.config.sidecars;
    const pick = (ns: string, withSelector: boolean): Resource<SidecarSpec> | undefined =>
      sidecars.find((sc) => sc.metadata.namespace === ns && (withSelector ? sc.spec.workloadSelector?.labels !== undefined && labelsMatch(sc.spec.workloadSelector.labels, opts.labels) : sc.spec.workloadSelector === undefined));
    const sc = pick(opts.namespace, true) ?? pick(opts.namespace, false) ?? pick(opts.mesh.rootNamespace, false);
    return sc?.spec.outboundTrafficPolicy?.mode ?? opts.mesh.outboundTrafficPolicy.mode;
  }

  destinationRuleWarnings(ctx);

  // ---- Clusters and endpoints ----
  const upstream = buildClusters(ctx, needSpecialClusters);
  const clusters = upstream.clusters;
  const endpoints = upstream.endpoints;
  for (const [name, s] of upstream.secrets) secrets.set(name, s);
  for (const f of afterClusters) f();

  // ---- The sidecar view (xDS clients): VirtualServices bound to `mesh`, per client namespace ----
  const meshServices = virtualServices.filter((vs) => {
    const gws = vs.spec.gateways ?? [];
    return gws.length === 0 || gws.includes('mesh');
  });
  // What proxyless gRPC clients cannot honour, said for the rules that concern gRPC services.
  const grpcServiceHosts = services.declared.filter((svc) => svc.ports.some((p) => p.protocol === 'GRPC' || p.protocol === 'GRPC-WEB')).map((svc) => svc.host);
  for (const vs of meshServices) {
    const hosts = (vs.spec.hosts ?? []).map((h) => completeHost(h, vs.metadata.namespace));
    if (!grpcServiceHosts.some((g) => hosts.some((h) => hostMatches(h, g)))) continue;
    (vs.spec.http ?? []).forEach((http, i) => {
      for (const g of proxylessRouteGaps(http)) warn(vs, ['spec', 'http', i, ...g.path], g.message);
    });
  }
  for (const dr of destinationRules) {
    const host = completeHost(dr.spec.host, dr.metadata.namespace);
    if (!grpcServiceHosts.some((g) => hostMatches(host, g))) continue;
    for (const g of proxylessPolicyGaps(dr.spec.trafficPolicy)) warn(dr, ['spec', 'trafficPolicy', ...g.path], g.message);
    (dr.spec.subsets ?? []).forEach((sub, i) => {
      for (const g of proxylessPolicyGaps(sub.trafficPolicy)) warn(dr, ['spec', 'subsets', i, 'trafficPolicy', ...g.path], g.message);
    });
  }
  const sidecar = new Map<string, SidecarView>();
  const clientNamespaces = new Set<string>(['', ...resources.map((r) => r.metadata.namespace)]);

  // Mesh VirtualServices indexed by host (exact names, and wildcard patterns), with their position
  // in config order; their routes per port are built once and shared by every namespace's view.
  const meshByHost = new Map<string, number[]>();
  const meshWildcards: Array<[string, number]> = [];
  meshServices.forEach((vs, i) => {
    for (const h of new Set((vs.spec.hosts ?? []).map((x) => completeHost(x, vs.metadata.namespace)))) {
      if (h.includes('*')) meshWildcards.push([h, i]);
      else meshByHost.set(h, [...(meshByHost.get(h) ?? []), i]);
    }
  });
  const meshRoutes = new Map<number, Map<number, Route[]>>();
  const meshRoutesFor = (i: number, port: number): Route[] => {
    let byPort = meshRoutes.get(i);
    if (!byPort) meshRoutes.set(i, (byPort = new Map()));
    let r = byPort.get(port);
    if (!r) byPort.set(port, (r = buildHttpRoutes(ctx, meshServices[i]!, port, ['mesh'])));
    return r;
  };

  for (const ns of [...clientNamespaces].sort()) sidecar.set(ns, buildSidecarView(ns));

  function buildSidecarView(clientNs: string): SidecarView {
    const visible = meshServices.map((vs) => exportedTo(vs.spec.exportTo, vs.metadata.namespace, clientNs));
    const viewListeners = new Map<string, ApiListener>();
    const viewRoutes = new Map<string, RouteConfiguration>();
    for (const svc of services.sorted) {
      if (!exportedTo(svc.exportTo, svc.namespace, clientNs)) continue;
      const matching = new Set(meshByHost.get(svc.host) ?? []);
      for (const [pattern, i] of meshWildcards) if (hostMatches(pattern, svc.host)) matching.add(i);
      const order = [...matching].filter((i) => visible[i]).sort((a, b) => a - b);
      for (const port of svc.ports) {
        if (!HTTP_SERVICE_PROTOCOLS.has(port.protocol)) continue;
        const routeName = clusterName(port.number, '', svc.host);
        const vsRoutes: Route[] = [];
        for (const i of order) vsRoutes.push(...meshRoutesFor(i, port.number));
        if (vsRoutes.length === 0) vsRoutes.push(defaultServiceRoute(ctx, routeName, svc.host, port.number));
        const names = sidecarNames(svc.host, clientNs);
        const domains = names.flatMap((n) => [n, `${n}:${port.number}`]);
        viewRoutes.set(routeName, {
          name: routeName,
          virtual_hosts: [{ name: `${svc.host}:${port.number}`, domains, routes: vsRoutes, include_request_attempt_count: true }],
          validate_clusters: false,
        });
        for (const n of names) {
          const name = `${n}:${port.number}`;
          const hcm = httpConnectionManager(routeName, opts.mesh);
          hcm.stat_prefix = name;
          hcm.http_filters = [
            { name: 'envoy.filters.http.fault', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault' } },
            { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
          ];
          viewListeners.set(name, { name, address: { socket_address: { address: svc.host, port_value: port.number } }, api_listener: { api_listener: hcm } });
        }
      }
    }
    return { listeners: viewListeners, routes: viewRoutes };
  }

  const body = { listeners, routes: [...routes.values()], clusters: [...clusters.values()], endpoints: [...endpoints.values()], secrets: [...secrets.values()], sidecar: [...sidecar].map(([ns, v]) => [ns, [...v.listeners.values()], [...v.routes.values()]]), mesh: opts.mesh };
  const hash = createHash('sha256').update(JSON.stringify(body)).digest('hex').slice(0, 16);
  return deepFreeze({ version: hash, hash, listeners, routes, clusters, endpoints, secrets, sidecar, mesh: opts.mesh, warnings: ctx.warnings.list() });
}

// ---- Pure helpers ---------------------------------------------------------------------------

/**
 * The names a client in `clientNs` may use for a service: the FQDN, and for a service of its own
 * namespace `<name>`, `<name>.<ns>`, `<name>.<ns>.svc` (Kubernetes search domains); other
 * namespaces' services by `<name>.<ns>` and `<name>.<ns>.svc`.
 */
function sidecarNames(fqdn: string, clientNs: string): string[] {
  const names = [fqdn];
  const suffix = `.${CLUSTER_DOMAIN}`;
  if (!fqdn.endsWith(suffix)) return names;
  const [name, ns, extra] = fqdn.slice(0, -suffix.length).split('.');
  if (!name || !ns || extra !== undefined) return names;
  names.push(`${name}.${ns}`, `${name}.${ns}.svc`);
  if (ns === clientNs) names.push(name);
  return names;
}

function listenerProtocol(server: GatewayServer): ListenerProtocol {
  const p = server.port.protocol.toUpperCase();
  // HTTPS PASSTHROUGH is TLS passthrough, as in Istio (routes on SNI, VirtualService tls routes).
  if (p === 'HTTPS') return PASSTHROUGH_MODES.has(server.tls?.mode ?? 'PASSTHROUGH') && !server.tls?.httpsRedirect ? 'TLS' : 'HTTPS';
  if (p === 'HTTP2') return 'HTTP2';
  if (p === 'GRPC' || p === 'GRPC-WEB') return 'GRPC';
  if (p === 'TLS') return 'TLS';
  // Istio's gateway: HTTP-based protocols (HTTP, HTTP_PROXY) get HTTP routes, every other one
  // (TCP, MONGO, MYSQL, REDIS, UDP) TCP routes.
  if (p === 'HTTP' || p === 'HTTP_PROXY') return 'HTTP';
  return 'TCP';
}

function httpConnectionManager(routeName: string, mesh: MeshConfig): HttpConnectionManager {
  return {
    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    stat_prefix: 'outbound_0.0.0.0_' + routeName.slice(routeName.indexOf('.') + 1),
    rds: { route_config_name: routeName, config_source: { ads: {}, resource_api_version: 'V3' } },
    http_filters: [{ name: 'envoy.filters.http.router' }],
    use_remote_address: true,
    xff_num_trusted_hops: mesh.defaultConfig.gatewayTopology?.numTrustedProxies ?? 0,
    server_name: 'istio-envoy',
    normalize_path: true,
    http_protocol_options: { accept_http_10: false },
    max_request_headers_kb: 60,
  };
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    if (o instanceof Map) for (const v of o.values()) deepFreeze(v);
    else for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
