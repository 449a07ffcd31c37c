// Gatehouse extension: an HTTP egress server that is also a forward proxy (Gateway annotation
// `gatehouse.io/forward-proxy: "true"`), absolute-form requests and CONNECT tunnels going to the
// registry as a sidecar's outbound does, under the outbound traffic policy (Sidecar, mesh config).
import type { Resource, SidecarSpec } from '../../config/types.js';
import { BLACKHOLE_CLUSTER, clusterName, PASSTHROUGH_CLUSTER, ZERO_DURATION, type ForwardProxyConfig, type RouteConfiguration } from '../snapshot.js';
import type { BuildContext } from './context.js';
import { isHttpOrSniffed } from './registry.js';
import { defaultServiceRoute } from './routes.js';
import { exportedTo, labelsMatch } from './visibility.js';

/**
 * The forward proxy of a route table: after the VirtualServices' own virtual hosts, one per
 * registered HTTP service port (to its cluster), and a catch-all that blocks (REGISTRY_ONLY:
 * BlackHoleCluster, 502) or passes through (ALLOW_ANY: PassthroughCluster, the request's own
 * authority). CONNECT targets are the registered hosts and their declared ports. Adds the virtual
 * hosts to `rc`; `catchAll` says whether the special clusters are needed.
 */
export function forwardProxy(ctx: BuildContext, rc: RouteConfiguration): { config: ForwardProxyConfig; catchAll: boolean } {
  const mode = outboundPolicy(ctx);
  const taken = new Set(rc.virtual_hosts.flatMap((vh) => vh.domains));
  const connect: ForwardProxyConfig['connect'] = [];
  for (const svc of ctx.registry.sorted) {
    if (!exportedTo(svc.exportTo, svc.namespace, ctx.opts.namespace)) continue;
    connect.push({ host: svc.host, ports: svc.ports.map((p) => p.number) });
    // An alias (ExternalName Service) is matched wherever the host it names is.
    const aliases = ctx.registry.aliasesOf(svc.host).filter((a) => exportedTo(a.exportTo, a.namespace, ctx.opts.namespace));
    for (const p of svc.ports) {
      if (!isHttpOrSniffed(p.protocol)) continue;
      const domainsOf = (h: string): string[] => (p.number === 80 ? [h, `${h}:80`] : [`${h}:${p.number}`]);
      const own = domainsOf(svc.host);
      if (own.some((d) => taken.has(d))) continue;
      const domains = [...own, ...aliases.flatMap((a) => domainsOf(a.host)).filter((d) => !taken.has(d))];
      for (const d of domains) taken.add(d);
      rc.virtual_hosts.push({ name: `${svc.host}:${p.number}`, domains, routes: [defaultServiceRoute(ctx, clusterName(p.number, '', svc.host), svc.host, p.number)], include_request_attempt_count: true });
    }
  }
  if (taken.has('*')) return { config: { policy: mode, connect }, catchAll: false };
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
  return { config: { policy: mode, connect }, catchAll: true };
}

/** Outbound policy of this gateway: its Sidecar (selected, then namespace default), the root namespace's, then mesh config. */
function outboundPolicy({ opts, config }: BuildContext): 'ALLOW_ANY' | 'REGISTRY_ONLY' {
  const pick = (ns: string, withSelector: boolean): Resource<SidecarSpec> | undefined =>
    config.sidecars.find((sc) => sc.metadata.namespace === ns && (withSelector ? sc.spec.workloadSelector?.labels !== undefined && labelsMatch(sc.spec.workloadSelector.labels, opts.labels) : sc.spec.workloadSelector === undefined));
  const sc = pick(opts.namespace, true) ?? pick(opts.namespace, false) ?? pick(opts.mesh.rootNamespace, false);
  return sc?.spec.outboundTrafficPolicy?.mode ?? opts.mesh.outboundTrafficPolicy.mode;
}
