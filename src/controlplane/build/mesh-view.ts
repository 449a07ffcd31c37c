// The sidecar (mesh) view: what sidecars and proxyless gRPC clients of each namespace see — per
// service port an API listener by every name a client may use and a route table from the
// VirtualServices bound to `mesh`, exportTo applied (Istio's sidecar outbound view); and what
// proxyless gRPC clients cannot honour in the rules that concern gRPC services.
import { completeHost, hostMatches } from '../../config/hosts.js';
import type { Resource, VirtualServiceSpec } from '../../config/types.js';
import { proxylessPolicyGaps, proxylessRouteGaps } from '../proxyless.js';
import { PartsView, type ViewPart } from '../sidecar-view.js';
import { clusterName, type ApiListener, type Route, type RouteConfiguration, type SidecarView } from '../snapshot.js';
import type { BuildContext } from './context.js';
import { httpConnectionManager } from './listeners.js';
import { isHttpOrSniffed, type RegistryService } from './registry.js';
import { buildHttpRoutes, defaultServiceRoute } from './routes.js';
import { exportedTo } from './visibility.js';

/** The JSON text of a view part's listeners and route configurations, comma-separated (for the content hash). */
const PART_TEXT = new WeakMap<ViewPart, { listeners: Buffer; routes: Buffer }>();
/** Views in which two parts bring the same name (their maps are not the parts' concatenation). */
const IRREGULAR = new WeakSet<PartsView>();

/**
 * The JSON text of a view's listeners and route configurations as pieces to join with commas, in
 * map order; undefined when this module did not build the view or its maps are not its parts' texts.
 */
export function viewText(view: SidecarView): { listeners: Buffer[]; routes: Buffer[] } | undefined {
  if (!(view instanceof PartsView) || IRREGULAR.has(view)) return undefined;
  const out: { listeners: Buffer[]; routes: Buffer[] } = { listeners: [], routes: [] };
  for (const p of view.parts) {
    const t = PART_TEXT.get(p);
    if (!t) return undefined;
    if (t.listeners.length > 0) out.listeners.push(t.listeners);
    if (t.routes.length > 0) out.routes.push(t.routes);
  }
  return out;
}

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

  // The mesh VirtualServices of each service, in config order (the same for every namespace).
  const matchingOf = new Map<RegistryService, number[]>();
  const matchingFor = (svc: RegistryService): number[] => {
    let m = matchingOf.get(svc);
    if (!m) {
      const set = new Set(meshByHost.get(svc.host) ?? []);
      for (const [pattern, i] of meshWildcards) if (hostMatches(pattern, svc.host)) set.add(i);
      matchingOf.set(svc, (m = [...set].sort((a, b) => a - b)));
    }
    return m;
  };
  // Views share what they have in common (nearly everything, in a cluster with many namespaces):
  // each service's listeners and route configurations are built once per variant - seen from its
  // own namespace (which adds its short name) or from another, with the mesh VirtualServices
  // visible there - as one part of the views (src/controlplane/sidecar-view.ts).
  const parts = new Map<string, ViewPart>();
  const buildPart = (svc: RegistryService, names: string[], allNames: string[], order: number[]): ViewPart => {
    const listeners: Array<[string, ApiListener]> = [];
    const routes: Array<[string, RouteConfiguration]> = [];
    for (const port of svc.ports) {
      if (!isHttpOrSniffed(port.protocol)) continue;
      const routeName = clusterName(port.number, '', svc.host);
      const vsRoutes: Route[] = [];
      for (const i of order) vsRoutes.push(...meshRoutesFor(i, port.number));
      if (vsRoutes.length === 0) vsRoutes.push(defaultServiceRoute(ctx, routeName, svc.host, port.number));
      const domains = allNames.flatMap((n) => [n, `${n}:${port.number}`]);
      routes.push([routeName, { name: routeName, virtual_hosts: [{ name: `${svc.host}:${port.number}`, domains, routes: vsRoutes, include_request_attempt_count: true }], validate_clusters: false }]);
      for (const n of names) {
        const name = `${n}:${port.number}`;
        const hcm = httpConnectionManager(routeName, ctx.mesh);
        hcm.stat_prefix = name;
        hcm.http_filters = [
          { name: 'envoy.filters.http.fault', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault' } },
          { name: 'envoy.filters.http.router', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } },
        ];
        listeners.push([name, { name, address: { socket_address: { address: svc.host, port_value: port.number } }, api_listener: { api_listener: hcm } }]);
      }
    }
    const part: ViewPart = { listeners, routes };
    PART_TEXT.set(part, { listeners: Buffer.from(listeners.map(([, l]) => JSON.stringify(l)).join(',')), routes: Buffer.from(routes.map(([, r]) => JSON.stringify(r)).join(',')) });
    return part;
  };

  const view = (clientNs: string): SidecarView => {
    const visible = meshServices.map((vs) => exportedTo(vs.spec.exportTo, vs.metadata.namespace, clientNs));
    const viewParts: ViewPart[] = [];
    const listenerNames = new Set<string>();
    let regular = true;
    ctx.registry.sorted.forEach((svc, index) => {
      if (!exportedTo(svc.exportTo, svc.namespace, clientNs)) return;
      const matching = matchingFor(svc);
      const order = matching.length === 0 ? matching : matching.filter((i) => visible[i]);
      const names = sidecarNames(svc.host, clientNs, ctx.domain);
      // An alias (ExternalName Service) is matched wherever the host it names is (Istio's generateVirtualHostDomains).
      const aliases = ctx.registry.aliasesOf(svc.host);
      const aliasNames = aliases.length === 0 ? [] : aliases.filter((a) => exportedTo(a.exportTo, a.namespace, clientNs)).flatMap((a) => sidecarNames(a.host, clientNs, ctx.domain));
      const allNames = aliasNames.length > 0 ? [...names, ...aliasNames] : names;
      const key = `${index}\0${names.length}\0${order.join(',')}${aliasNames.length > 0 ? `\0${allNames.join(',')}` : ''}`;
      let part = parts.get(key);
      if (!part) parts.set(key, (part = buildPart(svc, names, allNames, order)));
      viewParts.push(part);
      // Two services bringing the same name (a ServiceEntry host `a.b` beside Service a in b).
      for (const [name] of part.listeners) {
        if (listenerNames.has(name)) regular = false;
        listenerNames.add(name);
      }
    });
    const v = new PartsView(viewParts);
    if (!regular) IRREGULAR.add(v);
    return v;
  };

  const sidecar = new Map<string, SidecarView>();
  // Every namespace that declares something (EndpointSlices and Pods only follow their Services:
  // a namespace with nothing else sees what '' holds).
  const clientNamespaces = new Set<string>(['']);
  for (const r of ctx.config.all) if (r.kind !== 'Pod' && r.kind !== 'EndpointSlice') clientNamespaces.add(r.metadata.namespace);
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
