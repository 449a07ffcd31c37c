// Istio resources → xDS-shaped Snapshot: the only translation of Istio semantics in Gatehouse.
// This file is the orchestrator; the translation itself is in build/, one builder per concern,
// each a pure function of one shared context (build/context.ts: inputs, indexes, Istio's
// defaults, the warnings sink), in the spirit of istiod's pilot/pkg/networking/core:
//   build/registry.ts            services and endpoints (ServiceEntry, WorkloadEntry)
//   build/destination-rules.ts   DestinationRule lookup and policy merging
//   build/peer-authentication.ts PeerAuthentication per port
//   build/gateways.ts            the Gateway servers this workload serves, by port
//   build/listeners.ts           listeners per port: HTTP, HTTPS (TLS chains, ALPN), TCP, TLS
//   build/routes.ts              VirtualService HTTP routes (+ route-match, route-filters, retry)
//   build/l4.ts                  tcp routes, TLS passthrough, AUTO_PASSTHROUGH
//   build/forward-proxy.ts       the egress forward proxy (Gatehouse extension)
//   build/clusters.ts            clusters (+ cluster-tls, endpoints)
//   build/mesh-view.ts           the sidecar view per namespace, proxyless gRPC gaps
//   build/telemetry.ts           the Telemetry API: access logs, metric overrides, tracing
//   security.ts / gateway-tls.ts the security policies and Gateway TLS they hand off to
// Pure: same resources and options in, equal snapshot (and hash) out.
import { createHash } from 'node:crypto';
import type { Resource } from '../config/types.js';
import { buildClusters, serviceClusters, type ServiceCluster } from './build/clusters.js';
import { buildLoadAssignment } from './build/endpoints.js';
import { createContext, type ResolveOptions } from './build/context.js';
import { destinationRuleWarnings } from './build/destination-rules.js';
import { buildGatewayListeners } from './build/listeners.js';
import { buildSidecarViews, meshVirtualServices, proxylessWarnings, viewText } from './build/mesh-view.js';
import { buildTelemetry } from './build/telemetry.js';
import { buildSecurityConfig } from './security.js';
import type { ClusterLoadAssignment, RouteConfiguration, SidecarView, Snapshot, VirtualHost } from './snapshot.js';

export type { ResolveOptions } from './build/context.js';
export { DEFAULT_RETRY_ON } from './build/defaults.js';
export { exportedTo } from './build/visibility.js';
export { mergeMatch } from './build/route-match.js';
export type { MtlsMode } from './build/peer-authentication.js';

/**
 * `previous`: an earlier snapshot (of any resources and options). Route configurations, virtual
 * hosts, clusters and load assignments equal to one of it are its objects in the result - as
 * istiod pushes only what changed, the consumers (the thread transfer, the data plane's compiled
 * tables and cluster runtimes) then skip what they already hold. The content, and the hash, are
 * the same either way.
 */
export function resolve(resources: readonly Resource[], opts: ResolveOptions, previous?: Snapshot): Snapshot {
  // The inputs and indexes (registry, DestinationRules, PeerAuthentication, Secrets). The steps
  // below run in this order, so warnings come in the order a reader meets the config: policies,
  // listeners and their routes, DestinationRules and clusters, then what the mesh view reports.
  const ctx = createContext(resources, opts);
  const context = JSON.stringify(ctx.warnings.list());
  // Istio security policies (AuthorizationPolicy, RequestAuthentication): the same for every HTTP listener.
  const security = buildSecurityConfig(resources, opts, ctx.warnings.warn);
  const gateway = buildGatewayListeners(ctx, security);
  destinationRuleWarnings(ctx);
  const upstream = buildClusters(ctx, gateway.needsSpecialClusters);
  const meshServices = meshVirtualServices(ctx);
  proxylessWarnings(ctx, meshServices);
  const sidecar = opts.sidecarViews === false ? new Map<string, SidecarView>() : buildSidecarViews(ctx, meshServices);
  const telemetry = buildTelemetry(ctx);

  const { listeners } = gateway;
  const { routes, clusters, endpoints } = previous ? shareUnchanged(previous, gateway.routes, upstream.clusters, upstream.endpoints) : { ...gateway, ...upstream };
  const secrets = new Map([...gateway.secrets, ...upstream.secrets]);
  // Without the Telemetry API the telemetry config is a function of the mesh config, hashed already.
  const hash = contentHash({ listeners, routes, clusters, endpoints, secrets, sidecar, mesh: opts.mesh, telemetry });
  const snapshot = deepFreeze({ version: hash, hash, listeners, routes, clusters, endpoints, secrets, sidecar, mesh: opts.mesh, telemetry, warnings: ctx.warnings.list() });
  contextWarnings.set(snapshot, context);
  return snapshot;
}

/** The warnings of a snapshot's context (its registry, PeerAuthentication), as resolved here. */
const contextWarnings = new WeakMap<Snapshot, string>();

/**
 * resolve() of resources that differ from those `prev` was resolved from, with the same options,
 * only in Kubernetes EndpointSlices and Pods. What those change is endpoints - istiod pushes EDS
 * alone for them - so `prev` is kept, the same objects, but for its endpoints, built again (an
 * unchanged one keeps its object too). The result equals resolve(resources, opts), hash included
 * (the tests hold it to that); undefined when the change turns out to reach further than
 * endpoints (the service clusters or what the registry says differ): then resolve() it.
 */
export function resolveEndpoints(prev: Snapshot, resources: readonly Resource[], opts: ResolveOptions): Snapshot | undefined {
  const before = contextWarnings.get(prev);
  if (before === undefined) return undefined;
  const ctx = createContext(resources, opts);
  const context = JSON.stringify(ctx.warnings.list());
  if (context !== before) return undefined;
  const byName = new Map<string, ServiceCluster>();
  for (const sc of serviceClusters(ctx)) byName.set(sc.name, sc);
  let services = 0;
  for (const c of prev.clusters.values()) {
    if (c.metadata.filter_metadata.istio.kind !== 'service') continue;
    services++;
    if (!byName.has(c.name)) return undefined;
  }
  if (services !== byName.size) return undefined;
  const endpoints = new Map<string, ClusterLoadAssignment>();
  let changed = false;
  for (const [name, old] of prev.endpoints) {
    const sc = byName.get(name);
    const cla = sc ? buildLoadAssignment(name, sc.service, sc.port, sc.labels) : old;
    const same = cla === old || textOf(cla) === textOf(old);
    if (!same) changed = true;
    endpoints.set(name, same ? old : deepFreeze(cla));
  }
  if (!changed) return prev;
  const hash = contentHash({ ...prev, endpoints });
  const snapshot: Snapshot = Object.freeze({ ...prev, version: hash, hash, endpoints });
  contextWarnings.set(snapshot, context);
  return snapshot;
}

/**
 * The content hash: SHA-256 of the JSON text of
 * `{listeners, routes, clusters, endpoints, secrets, sidecar: [[ns, listeners, routes]...], mesh,
 * telemetry}` (maps as lists of their values; telemetry only when the Telemetry API is in use). Written piece by piece, each listener and route configuration
 * of the sidecar views turned into text once however many views share it: with many namespaces
 * (a Kubernetes cluster) the views repeat the same objects many times over.
 */
const COMMA = Buffer.from(',');

/**
 * The JSON text of snapshot objects, by object: they are frozen once resolved, and a new version
 * shares most of them with the last one (shareUnchanged, resolveEndpoints), whose text is then not
 * made again, for the hash or for the comparison.
 */
const texts = new WeakMap<object, string>();

function textOf(o: object): string {
  let t = texts.get(o);
  if (t === undefined) texts.set(o, (t = JSON.stringify(o)));
  return t;
}

/** Stands for the virtual hosts in a route configuration's text (unique to this process). */
const VHOSTS_MARK = `\u0001virtual_hosts:${Math.random()}`;
const VHOSTS_MARK_JSON = JSON.stringify(VHOSTS_MARK);

/** The objects of `next` equal to those of `prev` under the same name replaced by them (see resolve()). */
function shareUnchanged<R extends RouteConfiguration, C extends object, E extends object>(
  prev: Snapshot,
  routes: ReadonlyMap<string, R>,
  clusters: ReadonlyMap<string, C>,
  endpoints: ReadonlyMap<string, E>,
): { routes: Map<string, RouteConfiguration>; clusters: Map<string, C>; endpoints: Map<string, E> } {
  const sameAs = <T extends object>(old: ReadonlyMap<string, object>, next: ReadonlyMap<string, T>): Map<string, T> => {
    const out = new Map<string, T>();
    for (const [k, v] of next) {
      const p = old.get(k);
      out.set(k, p !== undefined && textOf(p) === textOf(v) ? (p as T) : v);
    }
    return out;
  };
  const outRoutes = new Map<string, RouteConfiguration>();
  for (const [k, rc] of routes) {
    const p = prev.routes.get(k);
    if (p === undefined) outRoutes.set(k, rc);
    else {
      // One VirtualService changed: the other virtual hosts are the previous objects.
      const byName = new Map<string, VirtualHost>();
      for (const vh of p.virtual_hosts) byName.set(vh.name, vh);
      const virtual_hosts = rc.virtual_hosts.map((vh) => {
        const old = byName.get(vh.name);
        return old !== undefined && textOf(old) === textOf(vh) ? old : vh;
      });
      if (virtual_hosts.length === p.virtual_hosts.length && virtual_hosts.every((vh, i) => vh === p.virtual_hosts[i]) && JSON.stringify({ ...rc, virtual_hosts: [] }) === JSON.stringify({ ...p, virtual_hosts: [] })) {
        outRoutes.set(k, p);
        continue;
      }
      const shared = { ...rc, virtual_hosts };
      // Its text from those of its virtual hosts (most known already), not written out again.
      const outer = JSON.stringify({ ...rc, virtual_hosts: VHOSTS_MARK });
      const at = outer.indexOf(VHOSTS_MARK_JSON);
      texts.set(shared, at < 0 ? JSON.stringify(shared) : `${outer.slice(0, at)}[${virtual_hosts.map(textOf).join(',')}]${outer.slice(at + VHOSTS_MARK_JSON.length)}`);
      outRoutes.set(k, shared);
    }
  }
  return { routes: outRoutes, clusters: sameAs(prev.clusters, clusters), endpoints: sameAs(prev.endpoints, endpoints) };
}

/** `[a,b,...]` of the texts of the values, written piece by piece. */
function hashValues(h: ReturnType<typeof createHash>, values: Iterable<object>): void {
  h.update('[');
  let first = true;
  for (const v of values) {
    if (!first) h.update(COMMA);
    first = false;
    h.update(textOf(v));
  }
  h.update(']');
}

function contentHash(s: Pick<Snapshot, 'listeners' | 'routes' | 'clusters' | 'endpoints' | 'secrets' | 'sidecar' | 'mesh' | 'telemetry'>): string {
  const h = createHash('sha256');
  h.update(`{"listeners":${JSON.stringify(s.listeners)},"routes":`);
  hashValues(h, s.routes.values());
  h.update(',"clusters":');
  hashValues(h, s.clusters.values());
  h.update(',"endpoints":');
  hashValues(h, s.endpoints.values());
  h.update(`,"secrets":${JSON.stringify([...s.secrets.values()])},"sidecar":[`);
  const text = textOf;
  let first = true;
  for (const [ns, v] of s.sidecar) {
    h.update(`${first ? '' : ','}[${JSON.stringify(ns)},[`);
    first = false;
    const known = viewText(v);
    if (known) {
      known.listeners.forEach((b, i) => (i === 0 ? h.update(b) : h.update(COMMA).update(b)));
      h.update('],[');
      known.routes.forEach((b, i) => (i === 0 ? h.update(b) : h.update(COMMA).update(b)));
      h.update(']]');
      continue;
    }
    let i = 0;
    for (const l of v.listeners.values()) h.update(i++ === 0 ? text(l) : `,${text(l)}`);
    h.update('],[');
    i = 0;
    for (const r of v.routes.values()) h.update(i++ === 0 ? text(r) : `,${text(r)}`);
    h.update(']]');
  }
  h.update(']');
  if (s.mesh !== undefined) h.update(`,"mesh":${JSON.stringify(s.mesh)}`);
  if (s.telemetry.api) h.update(`,"telemetry":${JSON.stringify(s.telemetry)}`);
  h.update('}');
  return h.digest('hex').slice(0, 16);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    if (o instanceof Map) for (const v of o.values()) deepFreeze(v);
    else for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
