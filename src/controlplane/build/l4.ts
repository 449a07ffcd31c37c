// L4 at the Gateway (pilot networking/core gateway.go, networkfilter, tls): TCP servers routed by
// VirtualService `tcp` routes, TLS passthrough servers by `tls` routes matched on SNI, and
// AUTO_PASSTHROUGH servers by Istio's `outbound_.<port>_.<subset>_.<host>` SNI, each connection
// handed to Envoy's tcp_proxy.
import { parseDurationMs } from '../../config/duration.js';
import { completeHost, hostMatches } from '../../config/hosts.js';
import type { L4MatchAttributes, Resource, RouteDestination, VirtualServiceSpec } from '../../config/types.js';
import { BLACKHOLE_CLUSTER, clusterName, durationFromMs, type FilterChain, type Listener, type TcpProxy } from '../snapshot.js';
import { serviceClusters } from './clusters.js';
import type { BuildContext } from './context.js';
import { destinationPolicy } from './destination-rules.js';
import { gatewayName, serverId, type BoundServer } from './gateways.js';
import { exportedTo, gatewayRef, splitServerHost } from './visibility.js';

const TCP_PROXY_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy' as const;
const TLS_INSPECTOR_TYPE = 'type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector' as const;

interface BoundVirtualService {
  vs: Resource<VirtualServiceSpec>;
  /** The servers it is bound to. */
  bound: BoundServer[];
  /** Their Gateways, `namespace/name`. */
  gwNames: string[];
}

/** The VirtualServices bound to one of `servers` (exportTo-visible) and the hosts they share with them. */
function boundL4({ opts, config, domain }: BuildContext, servers: BoundServer[]): BoundVirtualService[] {
  const out: BoundVirtualService[] = [];
  for (const vs of config.virtualServices) {
    const vsNs = vs.metadata.namespace;
    if (!exportedTo(vs.spec.exportTo, vsNs, opts.namespace) && !servers.some((s) => exportedTo(vs.spec.exportTo, vsNs, s.gw.metadata.namespace))) continue;
    const refs = (vs.spec.gateways ?? []).map((g) => gatewayRef(g, vsNs));
    const vsHosts = (vs.spec.hosts ?? []).map((h) => completeHost(h, vsNs, domain));
    // Istio binds a VirtualService to a server when the Gateway is named and their hosts meet.
    const bound = servers.filter((s) => {
      if (!refs.includes(gatewayName(s))) return false;
      return s.server.hosts.some((sh) => {
        const { ns, host } = splitServerHost(sh, s.gw.metadata.namespace);
        return (ns === '*' || ns === vsNs) && vsHosts.some((vh) => hostMatches(host, vh) || hostMatches(vh, host));
      });
    });
    if (bound.length > 0) out.push({ vs, bound, gwNames: [...new Set(bound.map(gatewayName))] });
  }
  return out;
}

/** Whether an L4 match entry applies to this port and these gateways; warns about what a gateway ignores. */
function l4MatchApplies(ctx: BuildContext, vs: Resource<VirtualServiceSpec>, m: L4MatchAttributes, path: Array<string | number>, port: number, gwNames: string[]): boolean {
  const { warn } = ctx.warnings;
  const ns = vs.metadata.namespace;
  if (m.port !== undefined && m.port !== port) return false;
  if (m.gateways && !m.gateways.some((g) => gwNames.includes(gatewayRef(g, ns)))) return false;
  if (m.sourceLabels || m.sourceNamespace) warn(vs, [...path, m.sourceLabels ? 'sourceLabels' : 'sourceNamespace'], 'sourceLabels/sourceNamespace apply to sidecars only; a gateway ignores this match condition');
  if (m.destinationSubnets) warn(vs, [...path, 'destinationSubnets'], 'destinationSubnets is not supported by Gatehouse yet; this match condition is ignored');
  return true;
}

/** Envoy's tcp_proxy for an Istio route destination list: one cluster, or a weighted choice. */
function tcpProxy(ctx: BuildContext, vs: Resource<VirtualServiceSpec>, route: RouteDestination[], path: Array<string | number>): TcpProxy {
  const weighted = route.map((d, k) => {
    const named = completeHost(d.destination.host, vs.metadata.namespace, ctx.domain);
    const p = ctx.registry.destinationPort(named, d.destination.port?.number);
    if (p === undefined) ctx.warnings.warn(vs, [...path, k, 'destination', 'port'], `destination ${named} has several ports or none known; set destination.port.number`);
    // An alias (ExternalName Service) goes to the clusters of the host it names.
    const host = ctx.registry.clusterHost(named);
    const name = clusterName(p ?? 80, d.destination.subset ?? '', host);
    return { name, weight: route.length === 1 ? 100 : (d.weight ?? 0), host, subset: d.destination.subset ?? '', port: p ?? 80 };
  });
  const positive = weighted.filter((w) => w.weight > 0);
  const first = positive[0] ?? weighted[0]!;
  const proxy: TcpProxy = {
    '@type': TCP_PROXY_TYPE,
    stat_prefix: first.name,
    idle_timeout: durationFromMs(tcpIdleTimeoutMs(ctx, first.host, first.subset, first.port)),
  };
  if (positive.length === 1) proxy.cluster = positive[0]!.name;
  else if (positive.length === 0) proxy.cluster = BLACKHOLE_CLUSTER;
  else proxy.weighted_clusters = { clusters: positive.map((w) => ({ name: w.name, weight: w.weight })) };
  return proxy;
}

/** DestinationRule connectionPool.tcp.idleTimeout of a destination (subset, port level), or Istio's 1 h. */
function tcpIdleTimeoutMs(ctx: BuildContext, host: string, subset: string, port: number): number {
  const dflt = ctx.defaults.idleTimeoutMs;
  const raw = destinationPolicy(ctx.destinationRules, host, subset, port)?.connectionPool?.tcp?.idleTimeout;
  return raw ? (parseDurationMs(raw) ?? dflt) : dflt;
}

/**
 * A TCP server's one filter chain: the first tcp route (VirtualServices in order) whose match
 * fits this port and gateway. None: BlackHoleCluster, so the connection is closed (as Istio's
 * gateway does with no route).
 */
export function buildTcpChain(ctx: BuildContext, port: number, servers: BoundServer[]): FilterChain {
  for (const { vs, gwNames } of boundL4(ctx, servers)) {
    const tcp = vs.spec.tcp ?? [];
    for (let i = 0; i < tcp.length; i++) {
      const r = tcp[i]!;
      const base = ['spec', 'tcp', i];
      const matches = r.match && r.match.length > 0 ? r.match : [{}];
      let hit = false;
      matches.forEach((m, j) => {
        if (l4MatchApplies(ctx, vs, m, [...base, 'match', j], port, gwNames)) hit = true;
      });
      if (!hit || !r.route || r.route.length === 0) continue;
      return { filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: tcpProxy(ctx, vs, r.route, [...base, 'route']) }] };
    }
  }
  return { filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': TCP_PROXY_TYPE, stat_prefix: BLACKHOLE_CLUSTER, cluster: BLACKHOLE_CLUSTER, idle_timeout: durationFromMs(ctx.defaults.idleTimeoutMs) } }] };
}

/**
 * TLS passthrough: one filter chain per tls route match (its sniHosts that the servers' hosts
 * admit; a name claimed by an earlier chain stays with it, as Envoy refuses duplicates), and for
 * AUTO_PASSTHROUGH servers one chain per registry cluster, matched by Istio's
 * `outbound_.<port>_.<subset>_.<host>` SNI. Adds the chains to `listener`; false when no server
 * of the port can be served.
 */
export function buildTlsPassthrough(ctx: BuildContext, listener: Listener, port: number, servers: BoundServer[]): boolean {
  const passthrough: BoundServer[] = [];
  const auto: BoundServer[] = [];
  for (const s of servers) {
    const mode = s.server.tls?.mode ?? 'PASSTHROUGH';
    if (mode === 'PASSTHROUGH') passthrough.push(s);
    else if (mode === 'AUTO_PASSTHROUGH') auto.push(s);
    else ctx.warnings.warn(s.gw, ['spec', 'servers', s.index, 'tls', 'mode'], `tls mode ${mode} on a TLS server (TLS termination, then tcp routes) is not supported by Gatehouse yet; this server is not served`);
  }
  if (passthrough.length === 0 && auto.length === 0) return false;
  listener.listener_filters = [{ name: 'envoy.filters.listener.tls_inspector', typed_config: { '@type': TLS_INSPECTOR_TYPE } }];
  const claimed = new Set<string>();
  for (const { vs, bound, gwNames } of boundL4(ctx, passthrough)) {
    const vsNs = vs.metadata.namespace;
    (vs.spec.tls ?? []).forEach((r, i) => {
      const base = ['spec', 'tls', i];
      r.match.forEach((m, j) => {
        const path = [...base, 'match', j];
        if (!l4MatchApplies(ctx, vs, m, path, port, gwNames)) return;
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
          ctx.warnings.warn(vs, [...path, 'sniHosts'], `sniHosts ${names.join(', ')} on port ${port} are already routed by an earlier tls route; this match is ignored`);
          return;
        }
        if (fresh.length === 0 || !owner) return;
        for (const n of fresh) claimed.add(n);
        listener.filter_chains.push({
          ...(fresh.includes('*') ? {} : { filter_chain_match: { server_names: fresh } }),
          filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: tcpProxy(ctx, vs, r.route, [...base, 'route']) }],
          metadata: { filter_metadata: { istio: { server: serverId(owner), tls_mode: 'PASSTHROUGH' } } },
        });
      });
    });
  }
  if (auto.length > 0) {
    for (const c of serviceClusters(ctx)) {
      const host = c.service.host;
      const s = auto.find((a) =>
        a.server.hosts.some((sh) => {
          const { ns, host: serverHost } = splitServerHost(sh, a.gw.metadata.namespace);
          return (ns === '*' || ns === c.service.namespace) && hostMatches(serverHost, host);
        }),
      );
      if (!s) continue;
      const sni = `outbound_.${c.port.number}_.${c.subset}_.${host}`;
      if (claimed.has(sni)) continue;
      claimed.add(sni);
      listener.filter_chains.push({
        filter_chain_match: { server_names: [sni] },
        filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': TCP_PROXY_TYPE, stat_prefix: c.name, cluster: c.name, idle_timeout: durationFromMs(tcpIdleTimeoutMs(ctx, host, c.subset, c.port.number)) } }],
        metadata: { filter_metadata: { istio: { server: serverId(s), tls_mode: 'AUTO_PASSTHROUGH' } } },
      });
    }
  }
  return true;
}
