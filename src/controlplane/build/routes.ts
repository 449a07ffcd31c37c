// VirtualService HTTP routes → Envoy route configurations: virtual hosts per host a Gateway server
// admits, one route per match (delegates expanded, one level), and each route's action — cluster
// or weighted clusters, redirect or direct response, timeout, retries, mirrors, rewrites, header
// edits (pilot networking/core/route). The sidecar view and the forward proxy build their routes
// with the same functions.
import { parseDurationMs } from '../../config/duration.js';
import { completeHost, hostMatches } from '../../config/hosts.js';
import type { HTTPMatchRequest, HTTPRoute, HeaderOperations, Resource, VirtualServiceSpec } from '../../config/types.js';
import { resourceId } from '../../config/types.js';
import {
  clusterName,
  durationFromMs,
  ZERO_DURATION,
  type HeaderValueOption,
  type RedirectAction,
  type Route,
  type RouteAction,
  type RouteConfiguration,
  type VirtualHost,
  type WeightedCluster,
} from '../snapshot.js';
import type { BuildContext } from './context.js';
import { gatewayName, type BoundServer } from './gateways.js';
import { retryPolicy } from './retry.js';
import { perMillion, routeFilters } from './route-filters.js';
import { mergeMatch, routeMatch } from './route-match.js';
import { exportedTo, gatewayRef, splitServerHost } from './visibility.js';

/**
 * The route table of the HTTP servers of one port: a virtual host per host name, holding the
 * routes of every VirtualService bound to a server of the port that declares the host, in config
 * order (Istio: creation order).
 */
export function buildRouteConfiguration(ctx: BuildContext, name: string, port: number, servers: BoundServer[]): RouteConfiguration {
  const { opts, config } = ctx;
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
  for (const vs of config.virtualServices) {
    const vsNs = vs.metadata.namespace;
    if (!exportedTo(vs.spec.exportTo, vsNs, opts.namespace) && !servers.some((s) => exportedTo(vs.spec.exportTo, vsNs, s.gw.metadata.namespace))) continue;
    const boundGateways = (vs.spec.gateways ?? []).map((g) => gatewayRef(g, vsNs));
    // Servers of this port whose Gateway the VS binds to.
    const bound = servers.filter((s) => boundGateways.includes(gatewayName(s)));
    if (bound.length === 0) continue;
    const vsHosts = (vs.spec.hosts ?? []).map((h) => completeHost(h, vsNs, ctx.domain));
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
    const gwNames = bound.map(gatewayName);
    const built = buildHttpRoutes(ctx, vs, port, gwNames);
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

/** The routes of one VirtualService for a port and the gateways it is bound to there (`['mesh']` for sidecars). */
export function buildHttpRoutes(ctx: BuildContext, vs: Resource<VirtualServiceSpec>, port: number, gwNames: string[]): Route[] {
  const { config, warnings } = ctx;
  const out: Route[] = [];
  (vs.spec.http ?? []).forEach((http, i) => {
    const base = ['spec', 'http', i];
    if (!http.delegate) {
      emitRoutes(ctx, out, vs, http, base, http.match && http.match.length > 0 ? http.match : [undefined], port, gwNames);
      return;
    }
    // Delegation (one level): the delegate's routes replace this one, each match merged with ours.
    const ns = http.delegate.namespace ?? vs.metadata.namespace;
    const target = config.virtualServices.find((d) => d.metadata.name === http.delegate!.name && d.metadata.namespace === ns);
    if (!target || (target.spec.hosts ?? []).length > 0) {
      warnings.warn(vs, [...base, 'delegate'], `delegate VirtualService ${ns}/${http.delegate.name} not found (a delegate has no hosts); route skipped`);
      return;
    }
    if (!exportedTo(target.spec.exportTo, ns, vs.metadata.namespace)) {
      warnings.warn(vs, [...base, 'delegate'], `delegate VirtualService ${ns}/${http.delegate.name} is not exported to namespace ${vs.metadata.namespace}; route skipped`);
      return;
    }
    (target.spec.http ?? []).forEach((dh, k) => {
      const merged: Array<HTTPMatchRequest | undefined> = [];
      const roots = http.match && http.match.length > 0 ? http.match : [undefined];
      const leaves = dh.match && dh.match.length > 0 ? dh.match : [undefined];
      for (const r of roots) {
        for (const [j, l] of leaves.entries()) {
          const m = mergeMatch(r, l);
          if (m === null) warnings.warn(target, ['spec', 'http', k, 'match', j], `conflicts with the match of the delegating route ${resourceId(vs)} spec.http[${i}]; skipped`);
          else merged.push(m);
        }
      }
      emitRoutes(ctx, out, target, dh, ['spec', 'http', k], merged, port, gwNames);
    });
  });
  return out;
}

/** One Envoy route per match entry of an Istio HTTPRoute (`owner` is the VirtualService that holds it). */
function emitRoutes(
  ctx: BuildContext,
  out: Route[],
  owner: Resource<VirtualServiceSpec>,
  http: HTTPRoute,
  base: Array<string | number>,
  matches: Array<HTTPMatchRequest | undefined>,
  port: number,
  gwNames: string[],
): void {
  const { warn } = ctx.warnings;
  const ns = owner.metadata.namespace;
  const config = `/apis/networking.istio.io/v1/namespaces/${ns}/virtual-service/${owner.metadata.name}`;
  const name = http.name ?? `${owner.metadata.name}.${base[2]}`;
  const perFilter = routeFilters(owner, http, base, warn);
  matches.forEach((m, j) => {
    if (m?.gateways && !m.gateways.some((g) => gwNames.includes(gatewayRef(g, ns)))) return;
    if (m?.port !== undefined && m.port !== port) return;
    if ((m?.sourceLabels || m?.sourceNamespace) && !gwNames.includes('mesh')) warn(owner, [...base, 'match', j], 'sourceLabels/sourceNamespace apply to sidecars only; a gateway ignores this match condition');
    const route: Route = {
      name,
      match: routeMatch(m),
      metadata: { filter_metadata: { istio: { config } } },
    };
    const action = routeAction(ctx, owner, http, base, port);
    if ('redirect' in action) route.redirect = action.redirect;
    else if ('direct_response' in action) route.direct_response = action.direct_response;
    else route.route = action.route;
    route.decorator = { operation: routeOperation(route, owner.metadata.name, port) };
    if (perFilter) route.typed_per_filter_config = perFilter;
    addHeaderOps(route, http.headers?.request, 'request');
    addHeaderOps(route, http.headers?.response, 'response');
    out.push(route);
  });
}

function routeAction(
  ctx: BuildContext,
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
  const { registry, warnings } = ctx;
  const vsNs = vs.metadata.namespace;
  const dests = (http.route ?? []).map((d, k) => {
    const host = completeHost(d.destination.host, vsNs, ctx.domain);
    const port = registry.destinationPort(host, d.destination.port?.number);
    if (port === undefined) warnings.warn(vs, [...base, 'route', k, 'destination', 'port'], `destination ${host} has several ports or none known; set destination.port.number`);
    // An alias (ExternalName Service) goes to the clusters of the host it names (Istio's GetDestinationCluster).
    const name = clusterName(port ?? 80, d.destination.subset ?? '', registry.clusterHost(host));
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
  const retry = http.fault ? undefined : retryPolicy(http, ctx.defaults.retry);
  if (retry) action.retry_policy = retry;
  const mirrors: Array<{ destination: HTTPRoute['mirror'] & object; percent: number; path: Array<string | number> }> = [];
  if (http.mirror) mirrors.push({ destination: http.mirror, percent: http.mirrorPercentage?.value ?? http.mirrorPercent ?? http.mirror_percent ?? 100, path: [...base, 'mirror'] });
  (http.mirrors ?? []).forEach((m, k) => mirrors.push({ destination: m.destination, percent: m.percentage?.value ?? 100, path: [...base, 'mirrors', k] }));
  if (mirrors.length > 0) {
    action.request_mirror_policies = mirrors.map((m) => {
      const host = completeHost(m.destination.host, vsNs, ctx.domain);
      const port = registry.destinationPort(host, m.destination.port?.number) ?? listenerPort;
      return { cluster: clusterName(port, m.destination.subset ?? '', registry.clusterHost(host)), runtime_fraction: { default_value: perMillion(m.percent) } };
    });
  }
  if (http.rewrite?.uri !== undefined) action.prefix_rewrite = http.rewrite.uri;
  if (http.rewrite?.uriRegexRewrite) action.regex_rewrite = { pattern: { regex: http.rewrite.uriRegexRewrite.match }, substitution: http.rewrite.uriRegexRewrite.rewrite };
  if (http.rewrite?.authority !== undefined) action.host_rewrite_literal = http.rewrite.authority;
  return { route: action };
}

/**
 * Istio's GetRouteOperation (the route's decorator, the name of its trace spans): `host:port` of
 * its single destination cluster, else `<VirtualService name>:<listener port>`, then the match's
 * path (`prefix*`, the exact path, the regex; `/*` without one).
 */
export function routeOperation(r: Route, vsName: string, port: number): string {
  const m = r.match;
  const path = m.prefix !== undefined ? `${m.prefix}*` : m.path !== undefined ? m.path : m.safe_regex !== undefined ? m.safe_regex.regex : '/*';
  const c = r.route?.cluster;
  if (c !== undefined) {
    const parts = c.split('|');
    if (parts.length === 4 && parts[0] === 'outbound') return `${parts[3]}:${parts[1]}${path}`;
  }
  return `${vsName}:${port}${path}`;
}

/** The route of a service port no VirtualService routes: all of it to the service, with Istio's default retries. */
export function defaultServiceRoute(ctx: BuildContext, cluster: string, host: string, port: number): Route {
  const retry = retryPolicy({}, ctx.defaults.retry);
  return {
    name: 'default',
    match: { prefix: '/', case_sensitive: true, headers: [], query_parameters: [] },
    route: { cluster, cluster_not_found_response_code: 'SERVICE_UNAVAILABLE', timeout: ZERO_DURATION, ...(retry ? { retry_policy: retry } : {}) },
    metadata: { filter_metadata: { istio: { config: '' } } },
    decorator: { operation: `${host}:${port}/*` },
  };
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
