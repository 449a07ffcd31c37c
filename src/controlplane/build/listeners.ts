// Gateway servers → Envoy listeners, one per port (pilot networking/core gateway.go,
// listener_builder): the HTTP connection manager and route table of HTTP servers (and the forward
// proxy of an annotated egress server), one TLS filter chain per terminating HTTPS server (its
// certificate secrets, PeerAuthentication, ALPN), and the L4 chains of TCP and TLS servers; the
// security policies, PROXY protocol and HTTP/1.1 engine ride on the HTTP listeners' metadata.
import type { MeshConfig, Resource } from '../../config/types.js';
import { resourceId } from '../../config/types.js';
import { ALPN_ANNOTATION, ALPN_H1, ALPN_H2, FORWARD_PROXY_ANNOTATION, HTTP1_ENGINE_ANNOTATION, serverHostNames, serverTls, TERMINATING_MODES } from '../gateway-tls.js';
import { PROXY_PROTOCOL_ANNOTATION } from '../security.js';
import type { Http1Engine, HttpConnectionManager, Listener, ListenerProtocol, RouteConfiguration, Secret, SecurityConfig } from '../snapshot.js';
import type { BuildContext } from './context.js';
import { forwardProxy } from './forward-proxy.js';
import { PASSTHROUGH_MODES, serverId, serversByPort, type BoundServer } from './gateways.js';
import { buildTcpChain, buildTlsPassthrough } from './l4.js';
import { isHttp2Protocol } from './registry.js';
import { buildRouteConfiguration } from './routes.js';

export interface GatewayListeners {
  listeners: Listener[];
  /** `http.<port>` / `https.<port>` route tables, in port order. */
  routes: Map<string, RouteConfiguration>;
  /** SDS secrets the HTTPS servers name. */
  secrets: Map<string, Secret>;
  /** A forward proxy's catch-all routes to BlackHoleCluster / PassthroughCluster. */
  needsSpecialClusters: boolean;
}

/** The listeners of this gateway; `security` (null: none applies) rides on its HTTP listeners. */
export function buildGatewayListeners(ctx: BuildContext, security: SecurityConfig | null): GatewayListeners {
  const { opts } = ctx;
  const { warn } = ctx.warnings;
  const out: GatewayListeners = { listeners: [], routes: new Map(), secrets: new Map(), needsSpecialClusters: false };
  for (const [port, servers] of serversByPort(ctx)) {
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
    const listener: Listener = {
      name: `${opts.bind}_${port}`,
      address: { socket_address: { address: opts.bind, port_value: port, protocol: 'TCP' } },
      filter_chains: [],
      traffic_direction: 'OUTBOUND',
      metadata: { filter_metadata: { istio: { protocol, servers: kept.map(serverId) } } },
    };
    if (protocol === 'HTTP' || protocol === 'HTTP2' || protocol === 'GRPC') httpListener(ctx, out, listener, port, kept, protocol);
    else if (protocol === 'HTTPS') httpsListener(ctx, out, listener, port, kept);
    else if (protocol === 'TCP') listener.filter_chains.push(buildTcpChain(ctx, port, kept));
    else if (protocol === 'TLS') {
      if (!buildTlsPassthrough(ctx, listener, port, kept)) continue;
    }
    if (protocol === 'HTTP' || protocol === 'HTTPS' || protocol === 'HTTP2' || protocol === 'GRPC') {
      if (security) listener.metadata.filter_metadata.istio.security = security;
      if (kept.some((s) => s.gw.metadata.annotations?.[PROXY_PROTOCOL_ANNOTATION] === 'true')) listener.metadata.filter_metadata.istio.proxy_protocol = true;
    }
    if (protocol === 'HTTP' || protocol === 'HTTPS') {
      const engine = http1Engine(ctx, port, kept, listener);
      if (engine) listener.metadata.filter_metadata.istio.http1_engine = engine;
    }
    out.listeners.push(listener);
  }
  return out;
}

/** Plain HTTP (HTTP, HTTP2, GRPC) servers: one connection manager over the port's route table. */
function httpListener(ctx: BuildContext, out: GatewayListeners, listener: Listener, port: number, kept: BoundServer[], protocol: ListenerProtocol): void {
  const routeName = `http.${port}`;
  listener.filter_chains.push({
    filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: httpConnectionManager(routeName, ctx.mesh) }],
  });
  const rc = buildRouteConfiguration(ctx, routeName, port, kept);
  out.routes.set(routeName, rc);
  const fp = kept.filter((s) => s.gw.metadata.annotations?.[FORWARD_PROXY_ANNOTATION] !== undefined);
  for (const s of fp) {
    const v = s.gw.metadata.annotations![FORWARD_PROXY_ANNOTATION];
    if (v !== 'true' && v !== 'false') ctx.warnings.warn(s.gw, ['metadata', 'annotations', FORWARD_PROXY_ANNOTATION], `${FORWARD_PROXY_ANNOTATION} must be "true" or "false", not "${v}"; ignored`);
  }
  // The forward proxy speaks HTTP/1.1 (absolute-form, CONNECT).
  if (protocol === 'HTTP' && fp.some((s) => s.gw.metadata.annotations![FORWARD_PROXY_ANNOTATION] === 'true')) {
    const proxy = forwardProxy(ctx, rc);
    listener.metadata.filter_metadata.istio.forward_proxy = proxy.config;
    if (proxy.catchAll) out.needsSpecialClusters = true;
  }
}

/**
 * HTTPS servers: one filter chain per terminating server, selected by SNI. Deviation from Istio
 * (one RDS table per server): all HTTPS servers of a port share one route table, `https.<port>`,
 * keyed by Host like the plaintext ones; the SNI only picks the certificate.
 */
function httpsListener(ctx: BuildContext, out: GatewayListeners, listener: Listener, port: number, kept: BoundServer[]): void {
  const { opts } = ctx;
  const { warn } = ctx.warnings;
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
    const t = serverTls(s.gw, s.server, s.index, ctx.secrets, opts.namespace);
    for (const n of t.notes) warn(s.gw, n.path, n.message);
    // A missing Secret or CA is reported by validation; the server cannot be served without it.
    if (!t.context || !t.cert) continue;
    out.secrets.set(t.cert.secret.name, t.cert.secret);
    if (t.ca) out.secrets.set(t.ca.secret.name, t.ca.secret);
    const names = serverHostNames(s.server);
    // PeerAuthentication decides whether a client certificate is required on servers that
    // verify them (MUTUAL / OPTIONAL_MUTUAL): STRICT requires one, PERMISSIVE makes it
    // optional, DISABLE stops asking.
    let context = t.context;
    const pa = context.common_tls_context.combined_validation_context ? ctx.peerAuthentication(port) : undefined;
    if (pa) {
      const { combined_validation_context: cvc, ...common } = context.common_tls_context;
      context = pa.mode === 'DISABLE' ? { ...context, common_tls_context: common, require_client_certificate: false } : { ...context, common_tls_context: { ...common, combined_validation_context: cvc! }, require_client_certificate: pa.mode === 'STRICT' };
    }
    listener.filter_chains.push({
      ...(names.includes('*') ? {} : { filter_chain_match: { server_names: names } }),
      transport_socket: { name: 'envoy.transport_sockets.tls', typed_config: context },
      filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: httpConnectionManager(httpsRoute, opts.mesh) }],
      metadata: { filter_metadata: { istio: { server: serverId(s), tls_mode: t.mode, ...(pa ? { mtls_mode: pa.mode, peer_authentication: pa.policy } : {}) } } },
    });
    served.push(s);
  }
  if (served.length === 0) return;
  const rc = buildRouteConfiguration(ctx, httpsRoute, port, served);
  out.routes.set(httpsRoute, rc);
  const alpn = httpsAlpn(ctx, served, rc);
  for (const fc of listener.filter_chains) {
    if (fc.transport_socket) fc.transport_socket.typed_config.common_tls_context.alpn_protocols = [...alpn];
  }
}

/**
 * The HTTP/1.1 engine the Gateways of a plain HTTP or HTTPS port ask for with
 * `gatehouse.io/http1-engine` (one engine serves a port): `strict` when any asks for it (the
 * stricter parser wins), else `uws` when any asks for it, else none (`--http1-engine` decides).
 */
function http1Engine(ctx: BuildContext, port: number, servers: BoundServer[], listener: Listener): Http1Engine | undefined {
  const { warn } = ctx.warnings;
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
function httpsAlpn(ctx: BuildContext, servers: BoundServer[], rc: RouteConfiguration): readonly string[] {
  const { warn } = ctx.warnings;
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
  const speaksHttp2 = (cluster: string): boolean => {
    const [, port, , host] = cluster.split('|');
    const p = host ? ctx.registry.get(host)?.ports.find((sp) => String(sp.number) === port) : undefined;
    return p !== undefined && isHttp2Protocol(p.protocol);
  };
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

/** Envoy's HTTP connection manager as Istio configures it on a gateway, its routes over RDS. */
export function httpConnectionManager(routeName: string, mesh: MeshConfig): HttpConnectionManager {
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
