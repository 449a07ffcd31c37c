// A RouteConfiguration compiled once per config version into lookups the hot path only reads
// (virtual hosts compiled on first use, see VhostSlot):
// virtual hosts indexed by exact name and wildcard suffix, routes as ordered precompiled predicates
// (first match wins), weighted clusters as cumulative arrays, header edits as flat lists.
import { fullMatchRegExp, searchRegExp } from '../config/regex.js';
import { durationToMs, type CorsPolicy, type FilterMetadata, type HttpFault, type HeaderMatcher, type HeaderValueOption, type QueryParameterMatcher, type Route, type RouteConfiguration, type StringMatcher, type VirtualHost } from '../controlplane/snapshot.js';
import { checkMetadataMatcher, compileMetadataMatcher } from './metadata-matcher.js';
import { headerValue, queryParam, type RequestHead } from './request.js';
import { compileStringMatcher, type StringPredicate } from './string-matcher.js';

export interface HeaderOps {
  /** [name, value] pairs that replace any existing value. */
  set: ReadonlyArray<readonly [string, string]>;
  /** [name, value] pairs appended. */
  add: ReadonlyArray<readonly [string, string]>;
  remove: readonly string[];
  /** The names whose existing values go: `remove` and the names of `set` (compiled once). */
  drop: ReadonlySet<string>;
}

export interface RetryConditions {
  connectFailure: boolean;
  reset: boolean;
  refusedStream: boolean;
  fiveXX: boolean;
  gatewayError: boolean;
  retriable4xx: boolean;
  statusCodes: ReadonlySet<number>;
  /** gRPC status codes retried (Envoy's grpc retry_on: cancelled, deadline-exceeded, internal, resource-exhausted, unavailable). */
  grpcStatuses: ReadonlySet<number>;
}

export interface CompiledRetry {
  numRetries: number;
  perTryTimeoutMs: number;
  on: RetryConditions;
  /** Prefer hosts not tried yet (Envoy's previous_hosts predicate). */
  avoidPreviousHosts: boolean;
}

export interface CompiledCluster {
  name: string;
  /** Cumulative weight upper bound (exclusive) for the weighted pick. */
  upTo: number;
  request: HeaderOps | null;
  response: HeaderOps | null;
}

export interface CompiledMirror {
  cluster: string;
  /** Parts per million of requests mirrored. */
  perMillion: number;
}

export interface ForwardAction {
  kind: 'forward';
  clusters: readonly CompiledCluster[];
  totalWeight: number;
  timeoutMs: number;
  retry: CompiledRetry | null;
  rewritePath: ((path: string) => string) | null;
  hostRewrite: string | null;
  mirrors: readonly CompiledMirror[] | null;
}

export interface RedirectResponse {
  kind: 'redirect';
  status: number;
  scheme: string | null;
  host: string | null;
  /** null: keep the request's; 0: none (the scheme's default); else this port. */
  port: number | null;
  portFromRequest: boolean;
  path: string | null;
}

export interface CompiledFault {
  delayMs: number;
  delayPerMillion: number;
  abortStatus: number;
  /** gRPC status of a gRPC abort, -1 for an HTTP abort. */
  abortGrpcStatus: number;
  abortPerMillion: number;
}

export interface CompiledCors {
  allows(origin: string): boolean;
  forwardNotMatchingPreflights: boolean;
  /** Preflight answer headers (after allow-origin), as a flat list. */
  preflight: readonly string[];
  /** Headers added to actual responses for an allowed origin (after allow-origin). */
  actual: readonly string[];
}

export interface DirectResponse {
  kind: 'direct';
  status: number;
  body: Buffer | null;
}

export type RouteActionCompiled = ForwardAction | RedirectResponse | DirectResponse;

export interface CompiledRoute {
  name: string;
  /** The route's decorator operation (the name of its trace spans), '' when none. */
  operation: string;
  /** `/apis/networking.istio.io/...` of the VirtualService, for logs. */
  config: string;
  /** `md`: the request's dynamic metadata (JWT claims), once JWT authentication has set it. */
  matches: (head: RequestHead, md?: FilterMetadata) => boolean;
  action: RouteActionCompiled;
  request: HeaderOps | null;
  response: HeaderOps | null;
  fault: CompiledFault | null;
  cors: CompiledCors | null;
}

export interface CompiledVirtualHost {
  name: string;
  routes: readonly CompiledRoute[];
  /**
   * Some route matches JWT claims (dynamic metadata) or request headers: when JWT authentication
   * verified a token or edited the headers (token removed, claim headers set), the route is
   * selected again with its metadata and headers, as Envoy's jwt_authn `clear_route_cache` (set by
   * Istio at gateways) makes it. Hosts without such routes never pay for a second match.
   */
  rerouteAfterAuthn: boolean;
}

export interface RouteMatchResult {
  vhost: CompiledVirtualHost;
  route: CompiledRoute;
}

/**
 * One virtual host of a table: its routes are compiled on the first request that needs them (a
 * 10,000-VirtualService configuration would otherwise cost the serving thread ~150 ms of compile
 * on every swap, for hosts most of which see no request soon). What compile can throw (regexes,
 * a route without an action) is checked when the table is built, so a bad configuration is still
 * refused at apply time.
 */
interface VhostSlot {
  source: VirtualHost | null;
  compiled: CompiledVirtualHost | null;
}

/**
 * Slots by virtual host object: a new version's table takes the slot (compiled or not) of a
 * virtual host the last version had unchanged (the snapshot keeps it as the same object), so a
 * change of one VirtualService compiles only its own host again.
 */
const slots = new WeakMap<VirtualHost, VhostSlot>();

function slotOf(vh: VirtualHost): VhostSlot {
  let slot = slots.get(vh);
  if (slot === undefined) {
    checkVirtualHost(vh);
    slots.set(vh, (slot = { source: vh, compiled: null }));
  }
  return slot;
}

function compiledOf(slot: VhostSlot): CompiledVirtualHost {
  if (slot.compiled) return slot.compiled;
  const compiled = compileVirtualHost(slot.source!);
  slot.compiled = compiled;
  slot.source = null;
  return compiled;
}

export class RouteTable {
  readonly name: string;
  readonly #exact = new Map<string, VhostSlot>();
  /** `*.example.com` domains as [".example.com", vhost], longest suffix first. */
  readonly #suffix: Array<readonly [string, VhostSlot]> = [];
  /** `example.*` domains as ["example.", vhost], longest prefix first. */
  readonly #prefix: Array<readonly [string, VhostSlot]> = [];
  #any: VhostSlot | undefined;
  /** Whether some exact domain names a port (`host:8080`): the authority is then looked up first. */
  #portDomains = false;

  constructor(rc: RouteConfiguration) {
    this.name = rc.name;
    for (const vh of rc.virtual_hosts) {
      const slot = slotOf(vh);
      for (const raw of vh.domains) {
        const d = raw.toLowerCase();
        if (d === '*') {
          this.#any ??= slot;
        } else if (d.endsWith(':*')) {
          continue; // the port is stripped before lookup, so `host:*` is `host`
        } else if (d.startsWith('*')) {
          this.#suffix.push([d.slice(1), slot]);
        } else if (d.endsWith('*')) {
          this.#prefix.push([d.slice(0, -1), slot]);
        } else if (!this.#exact.has(d)) {
          this.#exact.set(d, slot);
          if (d.includes(':')) this.#portDomains = true;
        }
      }
    }
    this.#suffix.sort((a, b) => b[0].length - a[0].length);
    this.#prefix.sort((a, b) => b[0].length - a[0].length);
  }

  #findSlot(host: string): VhostSlot | undefined {
    const exact = this.#exact.get(host);
    if (exact) return exact;
    for (const [suffix, vh] of this.#suffix) if (host.length > suffix.length && host.endsWith(suffix)) return vh;
    for (const [prefix, vh] of this.#prefix) if (host.length > prefix.length && host.startsWith(prefix)) return vh;
    return this.#any;
  }

  /** Envoy's order: exact domain, longest suffix wildcard, longest prefix wildcard, then `*`. */
  findVirtualHost(host: string): CompiledVirtualHost | undefined {
    const slot = this.#findSlot(host);
    return slot ? compiledOf(slot) : undefined;
  }

  /** How many virtual hosts have been compiled so far (tests, diagnostics). */
  get compiledVirtualHosts(): number {
    const seen = new Set<VhostSlot>();
    for (const s of this.#exact.values()) seen.add(s);
    for (const [, s] of this.#suffix) seen.add(s);
    for (const [, s] of this.#prefix) seen.add(s);
    if (this.#any) seen.add(this.#any);
    let n = 0;
    for (const s of seen) if (s.compiled) n++;
    return n;
  }

  /** The virtual host of a request (Envoy's domain order), compiled on first use. */
  virtualHost(head: RequestHead): CompiledVirtualHost | undefined {
    // Envoy matches `host:port` domains against the Host header with its port.
    const slot = (this.#portDomains && head.authority !== head.host ? this.#exact.get(head.authority.toLowerCase()) : undefined) ?? this.#findSlot(head.host);
    if (!slot) return undefined;
    return slot.compiled ?? compiledOf(slot);
  }

  match(head: RequestHead): RouteMatchResult | undefined {
    const vhost = this.virtualHost(head);
    if (!vhost) return undefined;
    const route = firstMatch(vhost, head);
    return route ? { vhost, route } : undefined;
  }
}

/** The first route of a virtual host that matches (`md`: dynamic metadata, once known). */
export function firstMatch(vhost: CompiledVirtualHost, head: RequestHead, md?: FilterMetadata): CompiledRoute | undefined {
  const routes = vhost.routes;
  for (let i = 0; i < routes.length; i++) {
    const route = routes[i]!;
    if (route.matches(head, md)) return route;
  }
  return undefined;
}

function compileVirtualHost(vh: VirtualHost): CompiledVirtualHost {
  return {
    name: vh.name,
    routes: vh.routes.map(compileRoute),
    rerouteAfterAuthn: vh.routes.some((r) => (r.match.dynamic_metadata?.length ?? 0) > 0 || r.match.headers.some((h) => !h.name.startsWith(':'))),
  };
}

/**
 * Throws what compiling the virtual host would throw, without building it: invalid regexes (a
 * snapshot from another control plane is not validated here) and a route with no action. The
 * rest of compile only reads fields the snapshot types make present.
 */
function checkVirtualHost(vh: VirtualHost): void {
  for (const r of vh.routes) {
    const m = r.match;
    if (m.path === undefined && m.safe_regex) fullMatchRegExp(m.safe_regex.regex);
    for (const h of m.headers) if (h.string_match) checkStringMatcher(h.string_match);
    for (const q of m.query_parameters) if (q.string_match) checkStringMatcher(q.string_match);
    for (const d of m.dynamic_metadata ?? []) checkMetadataMatcher(d);
    const cors = r.typed_per_filter_config?.['envoy.filters.http.cors'];
    if (cors) for (const o of cors.allow_origin_string_match) checkStringMatcher(o);
    if (r.redirect || r.direct_response) continue;
    if (!r.route) throw new TypeError(`route ${r.name} of ${vh.name} has no action (route, redirect or direct_response)`);
    if (r.route.regex_rewrite) searchRegExp(r.route.regex_rewrite.pattern.regex);
  }
}

function checkStringMatcher(m: StringMatcher): void {
  if (m.safe_regex) fullMatchRegExp(m.safe_regex.regex, m.ignore_case);
}

export function compileRoute(r: Route): CompiledRoute {
  return {
    name: r.name,
    operation: r.decorator?.operation ?? '',
    config: r.metadata.filter_metadata.istio.config,
    matches: compileMatch(r),
    action: compileAction(r),
    request: compileHeaderOps(r.request_headers_to_add, r.request_headers_to_remove),
    response: compileHeaderOps(r.response_headers_to_add, r.response_headers_to_remove),
    fault: compileFault(r.typed_per_filter_config?.['envoy.filters.http.fault']),
    cors: compileCors(r.typed_per_filter_config?.['envoy.filters.http.cors']),
  };
}

function compileFault(f: HttpFault | undefined): CompiledFault | null {
  if (!f) return null;
  return {
    delayMs: f.delay ? durationToMs(f.delay.fixed_delay) : 0,
    delayPerMillion: f.delay ? f.delay.percentage.numerator : 0,
    abortStatus: f.abort?.http_status ?? 0,
    abortGrpcStatus: f.abort?.grpc_status ?? -1,
    abortPerMillion: f.abort ? f.abort.percentage.numerator : 0,
  };
}

function compileCors(c: CorsPolicy | undefined): CompiledCors | null {
  if (!c) return null;
  // Envoy: an exact "*" allows any origin.
  const anyOrigin = c.allow_origin_string_match.some((m) => m.exact === '*');
  const tests = c.allow_origin_string_match.map(compileStringMatcher);
  const preflight: string[] = [];
  if (c.allow_methods) preflight.push('access-control-allow-methods', c.allow_methods);
  if (c.allow_headers) preflight.push('access-control-allow-headers', c.allow_headers);
  if (c.max_age) preflight.push('access-control-max-age', c.max_age);
  const actual: string[] = [];
  if (c.allow_credentials) {
    preflight.push('access-control-allow-credentials', 'true');
    actual.push('access-control-allow-credentials', 'true');
  }
  if (c.expose_headers) actual.push('access-control-expose-headers', c.expose_headers);
  return {
    allows: (origin) => anyOrigin || tests.some((t) => t(origin)),
    forwardNotMatchingPreflights: c.forward_not_matching_preflights,
    preflight,
    actual,
  };
}

function compileMatch(r: Route): (head: RequestHead, md?: FilterMetadata) => boolean {
  const m = r.match;
  let path: (p: string) => boolean;
  if (m.path !== undefined) {
    const want = m.case_sensitive ? m.path : m.path.toLowerCase();
    path = m.case_sensitive ? (p) => p === want : (p) => p.toLowerCase() === want;
  } else if (m.safe_regex) {
    const re = fullMatchRegExp(m.safe_regex.regex);
    path = (p) => re.test(p);
  } else {
    const want = m.case_sensitive ? (m.prefix ?? '/') : (m.prefix ?? '/').toLowerCase();
    path = want === '/' ? (p) => p.startsWith('/') : m.case_sensitive ? (p) => p.startsWith(want) : (p) => p.toLowerCase().startsWith(want);
  }
  const headers = m.headers.map(compileHeaderMatcher);
  const params = m.query_parameters.map(compileQueryMatcher);
  const metadata = (m.dynamic_metadata ?? []).map(compileMetadataMatcher);
  if (headers.length === 0 && params.length === 0 && metadata.length === 0) return (head) => path(head.path);
  if (metadata.length === 0) {
    return (head) => {
      if (!path(head.path)) return false;
      for (let i = 0; i < headers.length; i++) if (!headers[i]!(head)) return false;
      for (let i = 0; i < params.length; i++) if (!params[i]!(head)) return false;
      return true;
    };
  }
  // Without metadata (no verified token yet, or none at all) a claim never matches; an inverted one does.
  return (head, md) => {
    if (!path(head.path)) return false;
    for (let i = 0; i < headers.length; i++) if (!headers[i]!(head)) return false;
    for (let i = 0; i < params.length; i++) if (!params[i]!(head)) return false;
    for (let i = 0; i < metadata.length; i++) if (!metadata[i]!(md)) return false;
    return true;
  };
}

function compileHeaderMatcher(h: HeaderMatcher): (head: RequestHead) => boolean {
  const name = h.name;
  const invert = h.invert_match === true;
  const test: StringPredicate | null = h.string_match ? compileStringMatcher(h.string_match) : null;
  // Envoy: an absent header never matches a value matcher; invert_match flips the whole result.
  return (head) => {
    const v = headerValue(head, name);
    const ok = v !== undefined && (test === null || test(v));
    return ok !== invert;
  };
}

function compileQueryMatcher(q: QueryParameterMatcher): (head: RequestHead) => boolean {
  const name = q.name;
  const test: StringPredicate | null = q.string_match ? compileStringMatcher(q.string_match) : null;
  return (head) => {
    const v = queryParam(head.query, name);
    return v !== undefined && (test === null || test(v));
  };
}

const REDIRECT_STATUS: Record<string, number> = {
  MOVED_PERMANENTLY: 301,
  FOUND: 302,
  SEE_OTHER: 303,
  TEMPORARY_REDIRECT: 307,
  PERMANENT_REDIRECT: 308,
};

function compileAction(r: Route): RouteActionCompiled {
  if (r.redirect) {
    const rd = r.redirect;
    return {
      kind: 'redirect',
      status: REDIRECT_STATUS[rd.response_code] ?? 301,
      scheme: rd.scheme_redirect ?? null,
      host: rd.host_redirect ?? null,
      port: rd.port_redirect ?? null,
      portFromRequest: rd.port_from_request === true,
      path: rd.path_redirect ?? null,
    };
  }
  if (r.direct_response) {
    const d = r.direct_response;
    const body = d.body?.inline_string !== undefined ? Buffer.from(d.body.inline_string) : d.body?.inline_bytes !== undefined ? Buffer.from(d.body.inline_bytes, 'base64') : null;
    return { kind: 'direct', status: d.status, body };
  }
  const a = r.route!;
  const entries = a.weighted_clusters ? a.weighted_clusters.clusters : [{ name: a.cluster ?? '', weight: 1 }];
  let acc = 0;
  const clusters: CompiledCluster[] = entries.map((c) => {
    acc += c.weight;
    const w = c as { request_headers_to_add?: HeaderValueOption[]; request_headers_to_remove?: string[]; response_headers_to_add?: HeaderValueOption[]; response_headers_to_remove?: string[] };
    return {
      name: c.name,
      upTo: acc,
      request: compileHeaderOps(w.request_headers_to_add, w.request_headers_to_remove),
      response: compileHeaderOps(w.response_headers_to_add, w.response_headers_to_remove),
    };
  });
  return {
    kind: 'forward',
    clusters,
    totalWeight: acc,
    timeoutMs: durationToMs(a.timeout),
    retry: a.retry_policy ? compileRetry(a.retry_policy.retry_on, a.retry_policy.num_retries, durationToMs(a.retry_policy.per_try_timeout), a.retry_policy.retriable_status_codes ?? [], !!a.retry_policy.retry_host_predicate?.length) : null,
    rewritePath: compileRewrite(r),
    hostRewrite: a.host_rewrite_literal ?? null,
    mirrors: a.request_mirror_policies?.length ? a.request_mirror_policies.map((m) => ({ cluster: m.cluster, perMillion: m.runtime_fraction.default_value.numerator })) : null,
  };
}

export function compileRetry(retryOn: string, numRetries: number, perTryTimeoutMs: number, codes: readonly number[], avoidPreviousHosts: boolean): CompiledRetry {
  const set = new Set(retryOn.split(',').map((s) => s.trim()));
  return {
    numRetries,
    perTryTimeoutMs,
    avoidPreviousHosts,
    on: {
      // `reset` covers connect failures too in Envoy; `5xx` covers connect failures and resets.
      connectFailure: set.has('connect-failure') || set.has('reset') || set.has('5xx') || set.has('gateway-error'),
      reset: set.has('reset') || set.has('5xx'),
      refusedStream: set.has('refused-stream'),
      fiveXX: set.has('5xx'),
      gatewayError: set.has('gateway-error'),
      retriable4xx: set.has('retriable-4xx'),
      statusCodes: new Set(set.has('retriable-status-codes') ? codes : []),
      grpcStatuses: new Set(Object.entries(GRPC_RETRY_ON).filter(([name]) => set.has(name)).map(([, code]) => code)),
    },
  };
}

const GRPC_RETRY_ON: Record<string, number> = { cancelled: 1, 'deadline-exceeded': 4, 'resource-exhausted': 8, internal: 13, unavailable: 14 };

function compileRewrite(r: Route): ((path: string) => string) | null {
  const a = r.route!;
  if (a.regex_rewrite) {
    const re = searchRegExp(a.regex_rewrite.pattern.regex);
    // Envoy substitutions use `\1`; JavaScript uses `$1`. Escape literal `$` first.
    const sub = a.regex_rewrite.substitution.replace(/\$/g, '$$$$').replace(/\\(\d)/g, '$$$1');
    return (p) => p.replace(re, sub);
  }
  if (a.prefix_rewrite === undefined) return null;
  const to = a.prefix_rewrite;
  const m = r.match;
  if (m.prefix !== undefined) {
    const n = m.prefix.length;
    return (p) => to + p.slice(n);
  }
  // Exact or regex matches: the whole path is replaced.
  return () => to;
}

function compileHeaderOps(add: HeaderValueOption[] | undefined, remove: string[] | undefined): HeaderOps | null {
  if (!add?.length && !remove?.length) return null;
  const set: Array<[string, string]> = [];
  const append: Array<[string, string]> = [];
  for (const o of add ?? []) (o.append_action === 'OVERWRITE_IF_EXISTS_OR_ADD' ? set : append).push([o.header.key, o.header.value]);
  return headerOps(set, append, remove ?? []);
}

/** Header edits with their `drop` set. */
export function headerOps(set: ReadonlyArray<readonly [string, string]>, add: ReadonlyArray<readonly [string, string]>, remove: readonly string[]): HeaderOps {
  return { set, add, remove, drop: new Set([...remove, ...set.map(([k]) => k)]) };
}

/** Applies header edits to a flat [name, value, ...] array in place order: remove, set, add. */
export function applyHeaderOps(headers: string[], ops: HeaderOps): string[] {
  let out = headers;
  const drop = ops.drop;
  if (drop.size > 0) {
    out = [];
    for (let i = 0; i < headers.length; i += 2) if (!drop.has(headers[i]!)) out.push(headers[i]!, headers[i + 1]!);
  }
  for (const [k, v] of ops.set) out.push(k, v);
  for (const [k, v] of ops.add) out.push(k, v);
  return out;
}

/** Picks a cluster of a forward action by weight; `r` in [0, 1). */
export function pickCluster(action: ForwardAction, r: number): CompiledCluster {
  const cs = action.clusters;
  if (cs.length === 1) return cs[0]!;
  const x = r * action.totalWeight;
  for (let i = 0; i < cs.length; i++) if (x < cs[i]!.upTo) return cs[i]!;
  return cs[cs.length - 1]!;
}
