// The sidecar (mesh) view: what sidecars and proxyless gRPC clients of each namespace see — per
// service port an API listener by every name a client may use and a route table from the
// VirtualServices bound to `mesh`, exportTo applied (Istio's sidecar outbound view); and what
// proxyless gRPC clients cannot honour in the rules that concern gRPC services.
import { completeHost, hostMatches } from '../../config/hosts.js';
import type { Resource, VirtualServiceSpec } from '../../config/types.js';
import { proxylessPolicyGaps, proxylessRouteGaps } from '../proxyless.js';
import { clusterName, type ApiListener, type Route, type RouteConfiguration, type SidecarView } from '../snapshot.js';
import type { BuildContext } from './context.js';
import { httpConnectionManager } from './listeners.js';
import { isHttpOrSniffed } from './registry.js';
import { buildHttpRoutes, defaultServiceRoute } from './routes.js';
import { exportedTo } from './visibility.js';

/** VirtualServices bound to `mesh`: no `gateways`, or a list naming it. */
export function meshVirtualServices({ config }: BuildContext): Array<Resource<VirtualServiceSpec>> {
  return config.virtualServices.filter((vs) => {
    const gws = vs.spec.gateways ?? [];
    return gws.length === 0 || gws.includes('mesh');
  });
}

/** What proxyless gRPC clients cannot honour, said for the mesh rules that concern gRPC services. */
export function proxylessWarnings(ctx: BuildContext, meshServices: ReadonlyArray<Resource<VirtualServiceSpec>>): void {
  const { warn } = ctx.warnings;
  const grpcServiceHosts = ctx.registry.declared.filter((svc) => svc.ports.some((p) => p.protocol === 'GRPC' || p.protocol === 'GRPC-WEB')).map((svc) => svc.host);
  for (const vs of meshServices) {
    const hosts = (vs.spec.hosts ?? []).map((h) => completeHost(h, vs.metadata.namespace, ctx.domain));
    if (!grpcServiceHosts.some((g) => hosts.some((h) => hostMatches(h, g)))) continue;
    (vs.spec.http ?? []).forEach((http, i) => {
      for (const g of proxylessRouteGaps(http)) warn(vs, ['spec', 'http', i, ...g.path], g.message);
    });
  }
  for (const dr of ctx.config.destinationRules) {
    const host = completeHost(dr.spec.host, dr.metadata.namespace, ctx.domain);
    if (!grpcServiceHosts.some((g) => hostMatches(host, g))) continue;
    for (const g of proxylessPolicyGaps(dr.spec.trafficPolicy)) warn(dr, ['spec', 'trafficPolicy', ...g.path], g.message);
    (dr.spec.subsets ?? []).forEach((sub, i) => {
      for (const g of proxylessPolicyGaps(sub.trafficPolicy)) warn(dr, ['spec', 'subsets', i, 'trafficPolicy', ...g.path], g.message);
    });
  }
}

/**
 * The view of every client namespace (each namespace a resource names, and '' for a namespace
 * without resources of its own: what is exported everywhere), by namespace.
 */
export function buildSidecarViews(ctx: BuildContext, meshServices: ReadonlyArray<Resource<VirtualServiceSpec>>): Map<string, SidecarView> {
  // Mesh VirtualServices indexed by host (exact names, and wildcard patterns), with their position
  // in config order; their routes per port are built once and shared by every namespace's view.
  const meshByHost = new Map<string, number[]>();
  const meshWildcards: Array<[string, number]> = [];
  meshServices.forEach((vs, i) => {
    for (const h of new Set((vs.spec.hosts ?? []).map((x) => completeHost(x, vs.metadata.namespace, ctx.domain)))) {
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

  const view = (clientNs: string): SidecarView => {
    const visible = meshServices.map((vs) => exportedTo(vs.spec.exportTo, vs.metadata.namespace, clientNs));
    const listeners = new Map<string, ApiListener>();
    const routes = new Map<string, RouteConfiguration>();
    for (const svc of ctx.registry.sorted) {
      if (!exportedTo(svc.exportTo, svc.namespace, clientNs)) continue;
      const matching = new Set(meshByHost.get(svc.host) ?? []);
      for (const [pattern, i] of meshWildcards) if (hostMatches(pattern, svc.host)) matching.add(i);
      const order = [...matching].filter((i) => visible[i]).sort((a, b) => a - b);
      for (const port of svc.ports) {
        if (!isHttpOrSniffed(port.protocol)) continue;
        const routeName = clusterName(port.number, '', svc.host);
        const vsRoutes: Route[] = [];
        for (const i of order) vsRoutes.push(...meshRoutesFor(i, port.number));
        if (vsRoutes.length === 0) vsRoutes.push(defaultServiceRoute(ctx, routeName, svc.host, port.number));
        const names = sidecarNames(svc.host, clientNs, ctx.domain);
        // An alias (ExternalName Service) is matched wherever the host it names is (Istio's generateVirtualHostDomains).
        const aliasNames = ctx.registry.aliasesOf(svc.host).filter((a) => exportedTo(a.exportTo, a.namespace, clientNs)).flatMap((a) => sidecarNames(a.host, clientNs, ctx.domain));
        const domains = [...names, ...aliasNames].flatMap((n) => [n, `${n}:${port.number}`]);
        routes.set(routeName, {
          name: routeName,
          virtual_hosts: [{ name: `${svc.host}:${port.number}`, domains, routes: vsRoutes, include_request_attempt_count: true }],
          validate_clusters: false,
        });
        for (const n of names) {
          const name = `${n}:${port.number}`;
          const hcm = httpConnectionManager(routeName, ctx.mesh);
          hcm.stat_prefix = name;
          hcm.http_filters = [
            { name: 'envoy.filters.http.fault', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault' } },
            { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
          ];
          listeners.set(name, { name, address: { socket_address: { address: svc.host, port_value: port.number } }, api_listener: { api_listener: hcm } });
        }
      }
    }
    return { listeners, routes };
  };

  const sidecar = new Map<string, SidecarView>();
  const clientNamespaces = new Set<string>(['', ...ctx.config.all.map((r) => r.metadata.namespace)]);
  for (const ns of [...clientNamespaces].sort()) sidecar.set(ns, view(ns));
  return sidecar;
}

/**
 * The names a client in `clientNs` may use for a service: the FQDN, and for a service of its own
 * namespace `<name>`, `<name>.<ns>`, `<name>.<ns>.svc` (Kubernetes search domains); other
 * namespaces' services by `<name>.<ns>` and `<name>.<ns>.svc`.
 */
function sidecarNames(fqdn: string, clientNs: string, domain: string): string[] {
  const names = [fqdn];
  const suffix = `.svc.${domain}`;
  if (!fqdn.endsWith(suffix)) return names;
  const [name, ns, extra] = fqdn.slice(0, -suffix.length).split('.');
  if (!name || !ns || extra !== undefined) return names;
  names.push(`${name}.${ns}`, `${name}.${ns}.svc`);
  if (ns === clientNs) names.push(name);
  return names;
}
