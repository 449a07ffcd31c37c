// Istio resources → xDS-shaped Snapshot. The ONLY place in Gatehouse that interprets Istio
// semantics: gateway selection, VirtualService binding and merge order, host completion, cluster
// naming, DestinationRule policy merging, ServiceEntry/WorkloadEntry endpoints, Istio's defaults.
// Pure: same resources and options in, equal snapshot (and hash) out.
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { CLUSTER_DOMAIN, completeHost, hostMatches, serviceNameAndNamespace } from '../config/hosts.js';
import { parseDurationMs } from '../config/duration.js';
import { routingClaim } from '../config/jwt-claims.js';
import type {
  DestinationRuleSpec,
  GatewayServer,
  GatewaySpec,
  HTTPMatchRequest,
  HTTPRoute,
  HeaderOperations,
  L4MatchAttributes,
  MeshConfig,
  Resource,
  SidecarSpec,
  RouteDestination,
  StringMatch,
  TrafficPolicy,
  VirtualServiceSpec,
} from '../config/types.js';
import { resourceId } from '../config/types.js';
import { createContext, type ResolveOptions } from './build/context.js';
import { DEFAULT_RETRY_ON, ISTIO_DEFAULTS } from './build/defaults.js';
import { destinationRuleWarnings, mergePolicy, portPolicy } from './build/destination-rules.js';
import type { RegistryService, ServicePort } from './build/registry.js';
import { exportedTo, gatewayRef, labelsMatch, splitServerHost } from './build/visibility.js';
import { proxylessPolicyGaps, proxylessRouteGaps } from './proxyless.js';
import { buildSecurityConfig, PROXY_PROTOCOL_ANNOTATION } from './security.js';
import { HTTP1_ENGINE_ANNOTATION } from './gateway-tls.js';
import { FORWARD_PROXY_ANNOTATION, ALPN_ANNOTATION, ALPN_H1, ALPN_H2, sds, secretIndex, serverHostNames, serverTls, TERMINATING_MODES, upstreamCredential } from './gateway-tls.js';
import {
  MESH_CERT_SECRET,
  MESH_ROOT_SECRET,
  BLACKHOLE_CLUSTER,
  JWT_AUTHN_FILTER,
  JWT_PAYLOAD_METADATA_KEY,
  PASSTHROUGH_CLUSTER,
  type ForwardProxyConfig,
  clusterName,
  durationFromMs,
  ZERO_DURATION,
  type Cluster,
  type ClusterLoadAssignment,
  type CorsPolicy,
  type FilterChain,
  type HttpConnectionManager,
  type FractionalPercent,
  type HttpFault,
  type HashPolicy,
  type HeaderMatcher,
  type HeaderValueOption,
  type ApiListener,
  type LbEndpoint,
  type LbPolicy,
  type Listener,
  type MetadataMatcher,
  type ListenerProtocol,
  type Http1Engine,
  type QueryParameterMatcher,
  type RedirectAction,
  type RetryPolicy,
  type Route,
  type RouteAction,
  type RouteConfiguration,
  type RouteMatch,
  type Secret,
  type SdsSecretConfig,
  type SidecarView,
  type Snapshot,
  type StringMatcher,
  type TcpProxy,
  type VirtualHost,
  type WeightedCluster,
} from './snapshot.js';

export type { ResolveOptions } from './build/context.js';
export { DEFAULT_RETRY_ON } from './build/defaults.js';
export { exportedTo } from './build/visibility.js';
export type { MtlsMode } from './build/peer-authentication.js';

const MAX_U32 = ISTIO_DEFAULTS.circuitBreakerMax;
const DEFAULT_CONNECT_TIMEOUT_MS = ISTIO_DEFAULTS.connectTimeoutMs;
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
      routes.set(routeName, buildRouteConfiguration(routeName, port, kept));
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
        const rc = buildRouteConfiguration(httpsRoute, port, served);
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
        rc.virtual_hosts.push({ name: `${svc.host}:${p.number}`, domains, routes: [defaultMeshRoute(clusterName(p.number, '', svc.host), svc.host, p.number)], include_request_attempt_count: true });
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

  function buildRouteConfiguration(name: string, port: number, servers: BoundServer[]): RouteConfiguration {
    // Virtual hosts keyed by host name; routes from every VirtualService bound to a server of this
    // port that declares the host, in config order (Istio: creation order).
    const vhosts = new Map<string, VirtualHost>();
    const getVhost = (host: string): VirtualHost => {
      let vh = vhosts.get(host);
      if (!vh) {
        vh = { name: `${host}:${port}`, domains: host === '*' ? ['*'] : [host, `${host}:*`], routes: [], include_request_attempt_count: true };
        vhosts.set(host, vh);
      }
      return vh;
    };
    const redirectHosts = new Set<string>();
    for (const vs of virtualServices) {
      const vsNs = vs.metadata.namespace;
      if (!exportedTo(vs.spec.exportTo, vsNs, opts.namespace) && !servers.some((s) => exportedTo(vs.spec.exportTo, vsNs, s.gw.metadata.namespace))) continue;
      const boundGateways = (vs.spec.gateways ?? []).map((g) => gatewayRef(g, vsNs));
      // Servers of this port whose Gateway the VS binds to.
      const bound = servers.filter((s) => boundGateways.includes(`${s.gw.metadata.namespace}/${s.gw.metadata.name}`));
      if (bound.length === 0) continue;
      const vsHosts = (vs.spec.hosts ?? []).map((h) => completeHost(h, vsNs));
      const hosts = new Set<string>();
      for (const s of bound) {
        for (const sh of s.server.hosts) {
          const { ns, host: serverHost } = splitServerHost(sh, s.gw.metadata.namespace);
          if (ns !== '*' && ns !== vsNs) continue;
          for (const vh of vsHosts) {
            // The virtual host is the more specific of the two names (Istio intersects them).
            if (hostMatches(serverHost, vh)) hosts.add(vh);
            else if (hostMatches(vh, serverHost)) hosts.add(serverHost);
          }
          if (s.server.tls?.httpsRedirect && s.protocol !== 'HTTPS') for (const h of hosts) redirectHosts.add(h);
        }
      }
      if (hosts.size === 0) continue;
      const gwNames = bound.map((s) => `${s.gw.metadata.namespace}/${s.gw.metadata.name}`);
      const built = buildHttpRoutes(vs, port, gwNames);
      for (const h of hosts) getVhost(h).routes.push(...built);
    }
    // httpsRedirect servers: every route of those hosts becomes a 301 to https (Envoy's require_tls).
    for (const h of redirectHosts) {
      const vh = vhosts.get(h);
      if (!vh) continue;
      vh.routes = [
        {
          name: 'https_redirect',
          match: { prefix: '/', case_sensitive: true, headers: [], query_parameters: [] },
          redirect: { scheme_redirect: 'https', port_redirect: 443, response_code: 'MOVED_PERMANENTLY' },
          metadata: { filter_metadata: { istio: { config: '' } } },
        },
      ];
    }
    // Most specific first does not matter for lookup (the data plane indexes by exact/suffix), but a
    // stable order keeps the hash and config_dump stable.
    const virtual_hosts = [...vhosts.values()].sort((a, b) => a.name.localeCompare(b.name));
    return { name, virtual_hosts, validate_clusters: false };
  }

  function buildHttpRoutes(vs: Resource<VirtualServiceSpec>, port: number, gwNames: string[]): Route[] {
    const out: Route[] = [];
    (vs.spec.http ?? []).forEach((http, i) => {
      const base = ['spec', 'http', i];
      if (!http.delegate) {
        emitRoutes(out, vs, http, base, http.match && http.match.length > 0 ? http.match : [undefined], port, gwNames);
        return;
      }
      // Delegation (one level): the delegate's routes replace this one, each match merged with ours.
      const ns = http.delegate.namespace ?? vs.metadata.namespace;
      const target = virtualServices.find((d) => d.metadata.name === http.delegate!.name && d.metadata.namespace === ns);
      if (!target || (target.spec.hosts ?? []).length > 0) {
        warn(vs, [...base, 'delegate'], `delegate VirtualService ${ns}/${http.delegate.name} not found (a delegate has no hosts); route skipped`);
        return;
      }
      if (!exportedTo(target.spec.exportTo, ns, vs.metadata.namespace)) {
        warn(vs, [...base, 'delegate'], `delegate VirtualService ${ns}/${http.delegate.name} is not exported to namespace ${vs.metadata.namespace}; route skipped`);
        return;
      }
      (target.spec.http ?? []).forEach((dh, k) => {
        const merged: Array<HTTPMatchRequest | undefined> = [];
        const roots = http.match && http.match.length > 0 ? http.match : [undefined];
        const leaves = dh.match && dh.match.length > 0 ? dh.match : [undefined];
        for (const r of roots) {
          for (const [j, l] of leaves.entries()) {
            const m = mergeMatch(r, l);
            if (m === null) warn(target, ['spec', 'http', k, 'match', j], `conflicts with the match of the delegating route ${resourceId(vs)} spec.http[${i}]; skipped`);
            else merged.push(m);
          }
        }
        emitRoutes(out, target, dh, ['spec', 'http', k], merged, port, gwNames);
      });
    });
    return out;
  }

  /** One Envoy route per match entry of an Istio HTTPRoute (`owner` is the VirtualService that holds it). */
  function emitRoutes(
    out: Route[],
    owner: Resource<VirtualServiceSpec>,
    http: HTTPRoute,
    base: Array<string | number>,
    matches: Array<HTTPMatchRequest | undefined>,
    port: number,
    gwNames: string[],
  ): void {
    const ns = owner.metadata.namespace;
    const config = `/apis/networking.istio.io/v1/namespaces/${ns}/virtual-service/${owner.metadata.name}`;
    const name = http.name ?? `${owner.metadata.name}.${base[2]}`;
    const perFilter = routeFilters(owner, http, base);
    matches.forEach((m, j) => {
      if (m?.gateways && !m.gateways.some((g) => gwNames.includes(gatewayRef(g, ns)))) return;
      if (m?.port !== undefined && m.port !== port) return;
      if ((m?.sourceLabels || m?.sourceNamespace) && !gwNames.includes('mesh')) warn(owner, [...base, 'match', j], 'sourceLabels/sourceNamespace apply to sidecars only; a gateway ignores this match condition');
      const route: Route = {
        name,
        match: routeMatch(m),
        metadata: { filter_metadata: { istio: { config } } },
        decorator: { operation: `${owner.metadata.name}.${ns}.svc.cluster.local:${port}/*` },
      };
      const action = routeAction(owner, http, base, port);
      if ('redirect' in action) route.redirect = action.redirect;
      else if ('direct_response' in action) route.direct_response = action.direct_response;
      else route.route = action.route;
      if (perFilter) route.typed_per_filter_config = perFilter;
      addHeaderOps(route, http.headers?.request, 'request');
      addHeaderOps(route, http.headers?.response, 'response');
      out.push(route);
    });
  }

  /** Fault injection and CORS, as Istio configures Envoy's fault and cors filters per route. */
  function routeFilters(owner: Resource<VirtualServiceSpec>, http: HTTPRoute, base: Array<string | number>): Route['typed_per_filter_config'] | undefined {
    const filters: NonNullable<Route['typed_per_filter_config']> = {};
    const f = http.fault;
    if (f) {
      const fault: HttpFault = {};
      if (f.delay?.fixedDelay !== undefined) {
        fault.delay = { fixed_delay: durationFromMs(parseDurationMs(f.delay.fixedDelay) ?? 0), percentage: perMillion(f.delay.percentage?.value ?? f.delay.percent ?? 0) };
      }
      if (f.abort) {
        const percentage = perMillion(f.abort.percentage?.value ?? 0);
        if (f.abort.httpStatus !== undefined) fault.abort = { http_status: f.abort.httpStatus, percentage };
        else if (f.abort.grpcStatus !== undefined) fault.abort = { grpc_status: GRPC_CODES.indexOf(f.abort.grpcStatus.toUpperCase()), percentage };
        else if (f.abort.http2Error !== undefined) warn(owner, [...base, 'fault', 'abort', 'http2Error'], 'http2Error aborts are not implemented by Gatehouse; ignored');
      }
      if (fault.delay || fault.abort) filters['envoy.filters.http.fault'] = fault;
      if (http.timeout !== undefined || http.retries !== undefined) warn(owner, [...base, 'fault'], 'a route with fault injection has no timeout and no retries (as in Istio); its timeout/retries are ignored');
    }
    const c = http.corsPolicy;
    if (c) {
      const origins: StringMatcher[] = [];
      for (const o of c.allowOrigins ?? []) {
        const sm = stringMatcher(o);
        if (sm) origins.push(sm);
      }
      for (const o of c.allowOrigin ?? []) origins.push({ exact: o });
      const cors: CorsPolicy = { allow_origin_string_match: origins, forward_not_matching_preflights: c.unmatchedPreflights !== 'IGNORE' };
      if (c.allowMethods?.length) cors.allow_methods = c.allowMethods.join(',');
      if (c.allowHeaders?.length) cors.allow_headers = c.allowHeaders.join(',');
      if (c.exposeHeaders?.length) cors.expose_headers = c.exposeHeaders.join(',');
      if (c.maxAge !== undefined) cors.max_age = String(Math.floor((parseDurationMs(c.maxAge) ?? 0) / 1000));
      if (c.allowCredentials !== undefined) cors.allow_credentials = c.allowCredentials;
      filters['envoy.filters.http.cors'] = cors;
    }
    return filters['envoy.filters.http.fault'] || filters['envoy.filters.http.cors'] ? filters : undefined;
  }

  function routeAction(
    vs: Resource<VirtualServiceSpec>,
    http: HTTPRoute,
    base: Array<string | number>,
    listenerPort: number,
  ): { route: RouteAction } | { redirect: RedirectAction } | { direct_response: Required<Route>['direct_response'] } {
    if (http.redirect) {
      const r = http.redirect;
      const redirect: RedirectAction = { response_code: redirectCode(r.redirectCode ?? 301) };
      if (r.uri !== undefined) redirect.path_redirect = r.uri;
      if (r.authority !== undefined) redirect.host_redirect = r.authority;
      if (r.scheme !== undefined) redirect.scheme_redirect = r.scheme;
      if (r.port !== undefined) redirect.port_redirect = r.port;
      if (r.derivePort === 'FROM_REQUEST_PORT') redirect.port_from_request = true;
      // FROM_PROTOCOL_DEFAULT: the Location carries no port (the scheme's default).
      else if (r.derivePort === 'FROM_PROTOCOL_DEFAULT') redirect.port_redirect = 0;
      return { redirect };
    }
    if (http.directResponse) {
      const d = http.directResponse;
      const dr: Required<Route>['direct_response'] = { status: d.status };
      if (d.body?.string !== undefined) dr.body = { inline_string: d.body.string };
      else if (d.body?.bytes !== undefined) dr.body = { inline_bytes: d.body.bytes };
      return { direct_response: dr };
    }
    const vsNs = vs.metadata.namespace;
    const dests = (http.route ?? []).map((d, k) => {
      const host = completeHost(d.destination.host, vsNs);
      const port = services.destinationPort(host, d.destination.port?.number);
      if (port === undefined) warn(vs, [...base, 'route', k, 'destination', 'port'], `destination ${host} has several ports or none known; set destination.port.number`);
      const name = clusterName(port ?? 80, d.destination.subset ?? '', host);
      usedClusters.add(name);
      const weight = (http.route ?? []).length === 1 ? 100 : (d.weight ?? 0);
      const wc: WeightedCluster = { name, weight };
      addHeaderOps(wc, d.headers?.request, 'request');
      addHeaderOps(wc, d.headers?.response, 'response');
      return wc;
    });
    const positive = dests.filter((d) => d.weight > 0);
    const action: RouteAction = { cluster_not_found_response_code: 'SERVICE_UNAVAILABLE', timeout: ZERO_DURATION };
    const onlyOne = positive.length === 1 && !hasHeaderOps(positive[0]!);
    if (onlyOne) action.cluster = positive[0]!.name;
    else action.weighted_clusters = { clusters: positive, total_weight: positive.reduce((a, d) => a + d.weight, 0) };
    // Istio: a route with fault injection has neither timeout nor retries.
    if (http.timeout !== undefined && !http.fault) action.timeout = durationFromMs(parseDurationMs(http.timeout) ?? 0);
    const retry = http.fault ? undefined : retryPolicy(http);
    if (retry) action.retry_policy = retry;
    const mirrors: Array<{ destination: HTTPRoute['mirror'] & object; percent: number; path: Array<string | number> }> = [];
    if (http.mirror) mirrors.push({ destination: http.mirror, percent: http.mirrorPercentage?.value ?? http.mirrorPercent ?? http.mirror_percent ?? 100, path: [...base, 'mirror'] });
    (http.mirrors ?? []).forEach((m, k) => mirrors.push({ destination: m.destination, percent: m.percentage?.value ?? 100, path: [...base, 'mirrors', k] }));
    if (mirrors.length > 0) {
      action.request_mirror_policies = mirrors.map((m) => {
        const host = completeHost(m.destination.host, vsNs);
        const port = services.destinationPort(host, m.destination.port?.number) ?? listenerPort;
        return { cluster: clusterName(port, m.destination.subset ?? '', host), runtime_fraction: { default_value: perMillion(m.percent) } };
      });
    }
    if (http.rewrite?.uri !== undefined) action.prefix_rewrite = http.rewrite.uri;
    if (http.rewrite?.uriRegexRewrite) action.regex_rewrite = { pattern: { regex: http.rewrite.uriRegexRewrite.match }, substitution: http.rewrite.uriRegexRewrite.rewrite };
    if (http.rewrite?.authority !== undefined) action.host_rewrite_literal = http.rewrite.authority;
    return { route: action };
  }

  destinationRuleWarnings(ctx);

  // ---- Clusters and endpoints ----
  const clusters = new Map<string, Cluster>();
  const endpoints = new Map<string, ClusterLoadAssignment>();
  for (const svc of services.sorted) {
    const dr = drForHost(svc.host);
    const { name: shortName, namespace: svcNs } = serviceNameAndNamespace(svc.host, svc.namespace);
    for (const port of svc.ports) {
      const subsets: Array<{ name: string; labels: Record<string, string>; policy: TrafficPolicy | undefined }> = [
        { name: '', labels: {}, policy: dr?.spec.trafficPolicy },
      ];
      for (const s of dr?.spec.subsets ?? []) subsets.push({ name: s.name, labels: s.labels ?? {}, policy: mergePolicy(dr?.spec.trafficPolicy, s.trafficPolicy) });
      for (const subset of subsets) {
        const name = clusterName(port.number, subset.name, svc.host);
        const policy = portPolicy(subset.policy, port.number);
        clusters.set(name, buildCluster(name, svc, port.number, subset.name, shortName, svcNs, policy, dr ? `${dr.metadata.namespace}/${dr.metadata.name}` : ''));
        endpoints.set(name, buildLoadAssignment(name, svc, port, subset.labels));
      }
    }
  }
  for (const f of afterClusters) f();
  // The special clusters of a forward-proxy catch-all (Istio's names).
  if (needSpecialClusters) {
    for (const [name, kind] of [[BLACKHOLE_CLUSTER, 'blackhole'], [PASSTHROUGH_CLUSTER, 'passthrough']] as const) {
      if (clusters.has(name)) continue;
      clusters.set(name, {
        name,
        type: kind === 'blackhole' ? 'STATIC' : 'ORIGINAL_DST',
        connect_timeout: durationFromMs(DEFAULT_CONNECT_TIMEOUT_MS),
        lb_policy: kind === 'blackhole' ? 'ROUND_ROBIN' : 'CLUSTER_PROVIDED',
        circuit_breakers: { thresholds: [{ max_connections: MAX_U32, max_pending_requests: MAX_U32, max_requests: MAX_U32, max_retries: MAX_U32 }] },
        common_http_protocol_options: { idle_timeout: durationFromMs(DEFAULT_IDLE_TIMEOUT_MS), max_requests_per_connection: 0 },
        metadata: { filter_metadata: { istio: { host: name, name, namespace: '', port: kind === 'passthrough' ? 80 : 0, subset: '', kind, destination_rule: '' } } },
      });
      endpoints.set(name, { cluster_name: name, endpoints: [] });
    }
  }

  function buildCluster(name: string, svc: RegistryService, port: number, subset: string, shortName: string, svcNs: string, policy: TrafficPolicy | undefined, drName: string): Cluster {
    const resolution = svc.resolution;
    // DYNAMIC_DNS (Envoy's dynamic forward proxy: the request's host, resolved by DNS) is what
    // Gatehouse's ORIGINAL_DST cluster does for NONE: connect to the request's own authority.
    const type: Cluster['type'] = resolution === 'STATIC' ? 'EDS' : resolution === 'DNS' ? 'STRICT_DNS' : resolution === 'DNS_ROUND_ROBIN' ? 'LOGICAL_DNS' : 'ORIGINAL_DST';
    const lb = policy?.loadBalancer;
    let lb_policy: LbPolicy = 'ROUND_ROBIN';
    let hash_policy: HashPolicy[] | undefined;
    if (lb?.simple === 'LEAST_REQUEST' || lb?.simple === 'LEAST_CONN') lb_policy = 'LEAST_REQUEST';
    else if (lb?.simple === 'RANDOM') lb_policy = 'RANDOM';
    else if (lb?.simple === 'PASSTHROUGH') lb_policy = 'CLUSTER_PROVIDED';
    else if (lb?.consistentHash) {
      const ch = lb.consistentHash;
      lb_policy = ch.maglev ? 'MAGLEV' : 'RING_HASH';
      if (ch.httpHeaderName) hash_policy = [{ header: { header_name: ch.httpHeaderName.toLowerCase() } }];
      else if (ch.httpCookie) {
        const ttlMs = ch.httpCookie.ttl ? parseDurationMs(ch.httpCookie.ttl) : undefined;
        hash_policy = [{ cookie: { name: ch.httpCookie.name, ...(ch.httpCookie.path ? { path: ch.httpCookie.path } : {}), ...(ttlMs !== undefined ? { ttl: durationFromMs(ttlMs) } : {}) } }];
      } else if (ch.useSourceIp) hash_policy = [{ connection_properties: { source_ip: true } }];
      else if (ch.httpQueryParameterName) hash_policy = [{ query_parameter: { name: ch.httpQueryParameterName } }];
    }
    const tcp = policy?.connectionPool?.tcp;
    const http = policy?.connectionPool?.http;
    const positiveOr = (v: number | undefined, dflt: number): number => (v !== undefined && v > 0 ? v : dflt);
    const cluster: Cluster = {
      name,
      type,
      connect_timeout: durationFromMs(tcp?.connectTimeout ? (parseDurationMs(tcp.connectTimeout) ?? DEFAULT_CONNECT_TIMEOUT_MS) : DEFAULT_CONNECT_TIMEOUT_MS),
      lb_policy,
      circuit_breakers: {
        thresholds: [
          {
            // Istio applies a limit only when > 0 (0 reads as unset): otherwise effectively unlimited.
            max_connections: positiveOr(tcp?.maxConnections, MAX_U32),
            max_pending_requests: positiveOr(http?.http1MaxPendingRequests, MAX_U32),
            max_requests: positiveOr(http?.http2MaxRequests, MAX_U32),
            max_retries: positiveOr(http?.maxRetries, MAX_U32),
          },
        ],
      },
      common_http_protocol_options: {
        idle_timeout: durationFromMs(http?.idleTimeout ? (parseDurationMs(http.idleTimeout) ?? DEFAULT_IDLE_TIMEOUT_MS) : DEFAULT_IDLE_TIMEOUT_MS),
        max_requests_per_connection: http?.maxRequestsPerConnection ?? 0,
      },
      metadata: {
        filter_metadata: {
          istio: { host: svc.host, name: shortName, namespace: svcNs, port, subset, kind: 'service', destination_rule: drName, ...(hash_policy ? { hash_policy } : {}) },
        },
      },
    };
    if (type === 'EDS') cluster.eds_cluster_config = { service_name: name, eds_config: { ads: {}, resource_api_version: 'V3' } };
    // Istio treats 0 as unset: Envoy's defaults (1024 ring entries, a 65537-slot Maglev table).
    if (lb_policy === 'RING_HASH') cluster.ring_hash_lb_config = { minimum_ring_size: lb?.consistentHash?.ringHash?.minimumRingSize || lb?.consistentHash?.minimumRingSize || 1024 };
    if (lb_policy === 'MAGLEV') cluster.maglev_lb_config = { table_size: lb?.consistentHash?.maglev?.tableSize || 65537 };
    const od = policy?.outlierDetection;
    if (od) {
      // Istio: the deprecated consecutiveErrors counts gateway errors only (5xx enforcement off);
      // consecutive5xxErrors / consecutiveGatewayErrors, when set, override; 0 turns a check off.
      const legacy = (od.consecutiveErrors ?? 0) > 0 ? od.consecutiveErrors! : undefined;
      const c5xx = od.consecutive5xxErrors ?? 5;
      const cgw = od.consecutiveGatewayErrors ?? legacy ?? 0;
      cluster.outlier_detection = {
        consecutive_5xx: c5xx,
        consecutive_gateway_failure: cgw,
        enforcing_consecutive_5xx: od.consecutive5xxErrors === undefined && legacy !== undefined ? 0 : c5xx > 0 ? 100 : 0,
        enforcing_consecutive_gateway_failure: cgw > 0 ? 100 : 0,
        interval: durationFromMs(od.interval ? (parseDurationMs(od.interval) ?? 10_000) : 10_000),
        base_ejection_time: durationFromMs(od.baseEjectionTime ? (parseDurationMs(od.baseEjectionTime) ?? 30_000) : 30_000),
        // Istio passes it only when > 0; otherwise Envoy's default, 10%.
        max_ejection_percent: od.maxEjectionPercent && od.maxEjectionPercent > 0 ? od.maxEjectionPercent : 10,
        split_external_local_origin_errors: od.splitExternalLocalOriginErrors ?? false,
        consecutive_local_origin_failure: od.consecutiveLocalOriginFailures ?? 5,
      };
      cluster.metadata.filter_metadata.istio.min_health_percent = od.minHealthPercent ?? 0;
    }
    // HTTP/2 upstreams (h2c, or h2 over TLS), as Istio decides: service ports with protocol GRPC,
    // GRPC-WEB or HTTP2, and HTTP ports whose DestinationRule sets h2UpgradePolicy UPGRADE.
    const portProtocol = svc.ports.find((p) => p.number === port)?.protocol ?? '';
    if (HTTP2_PROTOCOLS.has(portProtocol) || (portProtocol === 'HTTP' && http?.h2UpgradePolicy === 'UPGRADE')) {
      cluster.http2_protocol_options = http?.maxConcurrentStreams && http.maxConcurrentStreams > 0 ? { max_concurrent_streams: http.maxConcurrentStreams } : {};
    }
    const tls = policy?.tls;
    const dr = tls ? drForHost(svc.host) : undefined;
    // Problems with the rule's tls block, reported once per rule and field (many clusters share it).
    const tlsWarn = (field: string | null, message: string): void => {
      if (!dr) return;
      const spec = dr.spec;
      const found: Array<[Array<string | number>, TrafficPolicy | undefined]> = [[['spec', 'trafficPolicy'], spec.trafficPolicy]];
      (spec.trafficPolicy?.portLevelSettings ?? []).forEach((pl, i) => found.push([['spec', 'trafficPolicy', 'portLevelSettings', i], pl]));
      (spec.subsets ?? []).forEach((sub, i) => {
        found.push([['spec', 'subsets', i, 'trafficPolicy'], sub.trafficPolicy]);
        (sub.trafficPolicy?.portLevelSettings ?? []).forEach((pl, j) => found.push([['spec', 'subsets', i, 'trafficPolicy', 'portLevelSettings', j], pl]));
      });
      const base = found.find(([, tp]) => tp?.tls === tls)?.[0] ?? ['spec', 'trafficPolicy'];
      const path = field ? [...base, 'tls', field] : [...base, 'tls'];
      ctx.warnings.warnOnce(dr, path, message);
    };
    if (tls?.mode === 'ISTIO_MUTUAL') {
      // Istio: the mesh identity over SDS (`default` certificate, `ROOTCA` trust anchor), the
      // server checked against the mesh root and, only when subjectAltNames are given, its SANs;
      // SNI `outbound_.<port>_.<subset>_.<host>` unless the rule sets one.
      const sds = (n: string): SdsSecretConfig => ({ name: n, sds_config: { ads: {}, resource_api_version: 'V3' } });
      cluster.transport_socket = {
        name: 'envoy.transport_sockets.tls',
        typed_config: {
          sni: tls.sni || `outbound_.${port}_.${subset}_.${svc.host}`,
          common_tls_context: {
            tls_certificate_sds_secret_configs: [sds(MESH_CERT_SECRET)],
            combined_validation_context: {
              default_validation_context: tls.subjectAltNames?.length ? { match_subject_alt_names: tls.subjectAltNames.map((exact) => ({ exact })) } : {},
              validation_context_sds_secret_config: sds(MESH_ROOT_SECRET),
            },
          },
          ...(tls.insecureSkipVerify ? { insecure_skip_verify: true } : {}),
        },
      };
    }
    if (tls && (tls.mode === 'SIMPLE' || tls.mode === 'MUTUAL') && tls.credentialName) {
      // A Secret in the gateway's namespace, over SDS as istiod names it (gateway-tls.ts); the
      // secrets travel in the snapshot, so a changed Secret reaches new connections without a restart.
      const c = upstreamCredential(tls, secretsByName, opts.namespace, []);
      for (const note of c.notes) tlsWarn('credentialName', note);
      if (c.cert) secrets.set(c.cert.secret.name, c.cert.secret);
      if (c.ca) secrets.set(c.ca.secret.name, c.ca.secret);
      const sans = tls.subjectAltNames ?? [];
      cluster.transport_socket = {
        name: 'envoy.transport_sockets.tls',
        typed_config: {
          ...(tls.sni ? { sni: tls.sni } : {}),
          common_tls_context: {
            // Istio names the Secret's certificate for MUTUAL only, and its CA unless insecureSkipVerify.
            ...(c.certName ? { tls_certificate_sds_secret_configs: [sds(c.certName)] } : {}),
            ...(c.caName ? { combined_validation_context: { default_validation_context: sans.length > 0 ? { match_subject_alt_names: sans.map((exact) => ({ exact })) } : {}, validation_context_sds_secret_config: sds(c.caName) } } : {}),
          },
          ...(tls.insecureSkipVerify ? { insecure_skip_verify: true } : {}),
        },
      };
    } else if (tls && (tls.mode === 'SIMPLE' || tls.mode === 'MUTUAL')) {
      if (tls.caCrl) tlsWarn('caCrl', 'caCrl is not enforced by Gatehouse yet; ignored');
      // Certificate paths are relative to the DestinationRule's YAML file, like Gateway certificates.
      const file = (p: string): string => (dr && !isAbsolute(p) ? resolvePath(dirname(dr.source.file), p) : p);
      // Unusable files are reported here, at config time, not by each request (those fail with 503 UF).
      const readPem = (field: string, p: string, kind: 'cert' | 'key'): string | null => {
        let text: string;
        try {
          text = readFileSync(p, 'utf8');
        } catch (err) {
          tlsWarn(field, `cannot read ${p} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); connections to this destination fail`);
          return null;
        }
        try {
          if (kind === 'cert') new X509Certificate(text);
          else createPrivateKey(text);
          return text;
        } catch {
          tlsWarn(field, `${p} is not a PEM ${kind === 'cert' ? 'certificate' : 'private key'}; connections to this destination fail`);
          return null;
        }
      };
      const mutual = tls.mode === 'MUTUAL' && tls.clientCertificate && tls.privateKey;
      const ca = tls.caCertificates ? file(tls.caCertificates) : undefined;
      const cert = mutual ? file(tls.clientCertificate!) : undefined;
      const key = mutual ? file(tls.privateKey!) : undefined;
      if (ca) readPem('caCertificates', ca, 'cert');
      if (cert && key) {
        const c = readPem('clientCertificate', cert, 'cert');
        const k = readPem('privateKey', key, 'key');
        if (c && k && !new X509Certificate(c).checkPrivateKey(createPrivateKey(k))) tlsWarn('privateKey', `${key} does not match the client certificate ${cert}; connections to this destination fail`);
      }
      cluster.transport_socket = {
        name: 'envoy.transport_sockets.tls',
        typed_config: {
          ...(tls.sni ? { sni: tls.sni } : {}),
          common_tls_context: {
            ...(cert && key ? { tls_certificates: [{ certificate_chain: { filename: cert }, private_key: { filename: key } }] } : {}),
            validation_context: {
              ...(ca ? { trusted_ca: { filename: ca } } : {}),
              ...(tls.subjectAltNames ? { match_subject_alt_names: tls.subjectAltNames.map((exact) => ({ exact })) } : {}),
            },
          },
          ...(tls.insecureSkipVerify ? { insecure_skip_verify: true } : {}),
        },
      };
    }
    return cluster;
  }

  function buildLoadAssignment(name: string, svc: RegistryService, port: ServicePort, subsetLabels: Record<string, string>): ClusterLoadAssignment {
    const byLocality = new Map<string, LbEndpoint[]>();
    for (const ep of svc.endpoints) {
      const labels = ep.labels ?? {};
      if (!labelsMatch(subsetLabels, labels)) continue;
      if (!ep.address) continue;
      const epPort = ep.ports?.[port.name] ?? port.targetPort ?? port.number;
      const locality = ep.locality ?? '';
      const list = byLocality.get(locality) ?? [];
      list.push({
        endpoint: { address: { socket_address: { address: ep.address, port_value: epPort } } },
        health_status: 'HEALTHY',
        load_balancing_weight: ep.weight ?? 1,
        metadata: { filter_metadata: { istio: { labels, workload: ep.workload, namespace: ep.workloadNamespace } } },
      });
      byLocality.set(locality, list);
    }
    return {
      cluster_name: name,
      endpoints: [...byLocality].map(([locality, lb_endpoints]) => {
        const [region = '', zone = '', sub_zone = ''] = locality.split('/');
        return { locality: { region, zone, sub_zone }, lb_endpoints, load_balancing_weight: lb_endpoints.reduce((a, e) => a + e.load_balancing_weight, 0), priority: 0 };
      }),
    };
  }

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
    if (!r) byPort.set(port, (r = buildHttpRoutes(meshServices[i]!, port, ['mesh'])));
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
        if (vsRoutes.length === 0) vsRoutes.push(defaultMeshRoute(routeName, svc.host, port.number));
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

  function defaultMeshRoute(cluster: string, host: string, port: number): Route {
    const retry = retryPolicy({});
    return {
      name: 'default',
      match: { prefix: '/', case_sensitive: true, headers: [], query_parameters: [] },
      route: { cluster, cluster_not_found_response_code: 'SERVICE_UNAVAILABLE', timeout: ZERO_DURATION, ...(retry ? { retry_policy: retry } : {}) },
      metadata: { filter_metadata: { istio: { config: '' } } },
      decorator: { operation: `${host}:${port}/*` },
    };
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

function stringMatcher(m: StringMatch, ignoreCase = false): StringMatcher | undefined {
  if (m.exact !== undefined) return { exact: m.exact, ...(ignoreCase ? { ignore_case: true } : {}) };
  if (m.prefix !== undefined) return { prefix: m.prefix, ...(ignoreCase ? { ignore_case: true } : {}) };
  if (m.regex !== undefined) return { safe_regex: { regex: m.regex } };
  return undefined;
}

function routeMatch(m: HTTPMatchRequest | undefined): RouteMatch {
  const match: RouteMatch = { case_sensitive: !m?.ignoreUriCase, headers: [], query_parameters: [] };
  const uri = m?.uri;
  if (uri?.exact !== undefined) match.path = uri.exact;
  else if (uri?.regex !== undefined) match.safe_regex = { regex: uri.regex };
  else match.prefix = uri?.prefix ?? '/';
  const header = (name: string, sm: StringMatch, invert: boolean): HeaderMatcher => {
    const string_match = stringMatcher(sm);
    // `{}` (or an empty exact, as Istio reads it for headers) means "present".
    const hm: HeaderMatcher = string_match && !(sm.exact === '' && Object.keys(sm).length === 1) ? { name, string_match } : { name, present_match: true };
    if (invert) hm.invert_match = true;
    return hm;
  };
  const headerOrClaim = (name: string, sm: StringMatch, invert: boolean): void => {
    // Istio: a `@request.auth.claims...` key matches a claim of the verified JWT, not a header.
    const claims = routingClaim(name);
    if (claims === null) match.headers.push(header(name.toLowerCase(), sm, invert));
    else {
      const c = claimMatcher(claims, sm, invert);
      if (c) (match.dynamic_metadata ??= []).push(c);
    }
  };
  for (const [name, sm] of Object.entries(m?.headers ?? {})) headerOrClaim(name, sm, false);
  for (const [name, sm] of Object.entries(m?.withoutHeaders ?? {})) headerOrClaim(name, sm, true);
  if (m?.method) match.headers.push(header(':method', m.method, false));
  if (m?.authority) match.headers.push(header(':authority', m.authority, false));
  if (m?.scheme) match.headers.push(header(':scheme', m.scheme, false));
  for (const [name, sm] of Object.entries(m?.queryParams ?? {})) {
    const string_match = stringMatcher(sm);
    const q: QueryParameterMatcher = string_match && !(sm.exact === '' && Object.keys(sm).length === 1) ? { name, string_match } : { name, present_match: true };
    match.query_parameters.push(q);
  }
  return match;
}

/**
 * A JWT claim match as Istio emits it (MetadataMatcherForJWTClaims): the claim under the JWT
 * filter's `payload` metadata, matched as a string or, for a list claim, by any element.
 * `withoutHeaders` inverts it, so a request without a verified token matches. undefined for a
 * match without a value (validation refuses it; Envoy would reject the route).
 */
function claimMatcher(claims: readonly string[], sm: StringMatch, invert: boolean): MetadataMatcher | undefined {
  if (stringMatcher(sm) === undefined) return undefined;
  const m: MetadataMatcher = {
    filter: JWT_AUTHN_FILTER,
    path: [JWT_PAYLOAD_METADATA_KEY, ...claims].map((key) => ({ key })),
    value: { or_match: { value_matchers: [{ list_match: { one_of: { string_match: stringMatcher(sm)! } } }, { string_match: stringMatcher(sm)! }] } },
  };
  if (invert) m.invert = true;
  return m;
}

/** Istio percentages (0-100, fractional) as Envoy's parts per million. */
function perMillion(percent: number): FractionalPercent {
  return { numerator: Math.round(Math.min(100, Math.max(0, percent)) * 10_000), denominator: 'MILLION' };
}

const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

/**
 * A delegate route's match merged into the delegating route's, as Istio merges them: the
 * delegate's conditions are added to the root's; a condition both set must agree (a delegate uri
 * must lie within the root's prefix). null when they conflict.
 */
export function mergeMatch(root: HTTPMatchRequest | undefined, leaf: HTTPMatchRequest | undefined): HTTPMatchRequest | undefined | null {
  if (!root) return leaf;
  if (!leaf) return root;
  const merged: HTTPMatchRequest = { ...root, ...leaf };
  if (root.uri && leaf.uri) {
    const r = root.uri;
    const l = leaf.uri;
    const within =
      r.prefix !== undefined ? (l.prefix ?? l.exact ?? '\u0000').startsWith(r.prefix) : r.exact !== undefined ? l.exact === r.exact : r.regex !== undefined && l.regex === r.regex;
    if (!within) return null;
  }
  for (const k of ['scheme', 'method', 'authority'] as const) {
    if (root[k] && leaf[k] && JSON.stringify(root[k]) !== JSON.stringify(leaf[k])) return null;
  }
  if (root.port !== undefined && leaf.port !== undefined && root.port !== leaf.port) return null;
  for (const k of ['headers', 'withoutHeaders', 'queryParams'] as const) {
    const a = root[k];
    const b = leaf[k];
    if (!a || !b) continue;
    for (const name of Object.keys(b)) if (a[name] && JSON.stringify(a[name]) !== JSON.stringify(b[name])) return null;
    merged[k] = { ...a, ...b };
  }
  if (root.gateways) merged.gateways = root.gateways;
  return merged;
}

function redirectCode(code: number): RedirectAction['response_code'] {
  switch (code) {
    case 302:
      return 'FOUND';
    case 303:
      return 'SEE_OTHER';
    case 307:
      return 'TEMPORARY_REDIRECT';
    case 308:
      return 'PERMANENT_REDIRECT';
    default:
      return 'MOVED_PERMANENTLY';
  }
}

function retryPolicy(http: HTTPRoute): RetryPolicy | undefined {
  const r = http.retries;
  if (r && r.attempts === 0) return undefined;
  const policy: RetryPolicy = {
    retry_on: DEFAULT_RETRY_ON,
    num_retries: 2,
    retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts' }],
    host_selection_retry_max_attempts: 5,
  };
  if (!r) return policy;
  if (r.attempts !== undefined) policy.num_retries = r.attempts;
  if (r.retryOn !== undefined) {
    const parts = r.retryOn.split(',').map((s) => s.trim()).filter(Boolean);
    const codes = parts.filter((p) => /^\d+$/.test(p)).map(Number);
    const conds = parts.filter((p) => !/^\d+$/.test(p));
    if (codes.length > 0) {
      if (!conds.includes('retriable-status-codes')) conds.push('retriable-status-codes');
      policy.retriable_status_codes = codes;
    }
    policy.retry_on = conds.join(',');
  }
  if (r.perTryTimeout !== undefined) policy.per_try_timeout = durationFromMs(parseDurationMs(r.perTryTimeout) ?? 0);
  if (r.retryIgnorePreviousHosts === false) delete policy.retry_host_predicate;
  return policy;
}

function addHeaderOps(target: Route | WeightedCluster, ops: HeaderOperations | undefined, dir: 'request' | 'response'): void {
  if (!ops) return;
  const add: HeaderValueOption[] = [];
  for (const [key, value] of Object.entries(ops.set ?? {})) add.push({ header: { key: key.toLowerCase(), value }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' });
  for (const [key, value] of Object.entries(ops.add ?? {})) add.push({ header: { key: key.toLowerCase(), value }, append_action: 'APPEND_IF_EXISTS_OR_ADD' });
  if (add.length > 0) target[`${dir}_headers_to_add`] = add;
  if (ops.remove && ops.remove.length > 0) target[`${dir}_headers_to_remove`] = ops.remove.map((h) => h.toLowerCase());
}

function hasHeaderOps(w: WeightedCluster): boolean {
  return !!(w.request_headers_to_add || w.request_headers_to_remove || w.response_headers_to_add || w.response_headers_to_remove);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    if (o instanceof Map) for (const v of o.values()) deepFreeze(v);
    else for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
