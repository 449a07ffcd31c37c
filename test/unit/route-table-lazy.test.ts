// RouteTable compiles a virtual host's routes on the first request for it (route-table.ts VhostSlot).
// These tests pin that this changes nothing a request can observe: the virtual host chosen (exact,
// host:port, longest wildcard suffix, longest prefix, `*`, first domain wins), the route order
// (first match wins), and that what compile can throw is still thrown when the table is built.
import { describe, expect, it } from 'vitest';
import type { Route, RouteConfiguration, VirtualHost } from '../../src/controlplane/snapshot.js';
import type { RequestHead } from '../../src/routing/request.js';
import { compileRoute, RouteTable } from '../../src/routing/route-table.js';

function route(name: string, match: Partial<Route['match']> = {}): Route {
  return {
    name,
    match: { case_sensitive: true, headers: [], query_parameters: [], prefix: '/', ...match },
    route: { cluster: `c-${name}`, cluster_not_found_response_code: 'SERVICE_UNAVAILABLE', timeout: { seconds: 0, nanos: 0 } },
    metadata: { filter_metadata: { istio: { config: `/vs/${name}` } } },
  };
}

function vhost(name: string, domains: string[], routes: Route[]): VirtualHost {
  return { name, domains, routes, include_request_attempt_count: false };
}

function req(host: string, path = '/', h: Record<string, string> = {}, authority = host): RequestHead {
  const [p, q = ''] = path.split('?');
  return { method: 'GET', path: p!, query: q, host, authority, scheme: 'http', headers: Object.entries(h).flatMap(([k, v]) => [k, v]) };
}

/** A configuration exercising every lookup rule; several virtual hosts claim overlapping domains. */
function config(): RouteConfiguration {
  const hosts: VirtualHost[] = [
    vhost('exact', ['shop.example.com', 'SHOP2.example.com'], [route('exact.login', { path: '/login', prefix: undefined }), route('exact.api', { prefix: '/api' }), route('exact.all')]),
    vhost('dup', ['shop.example.com'], [route('dup.all')]), // the domain is taken: never chosen for it
    vhost('port', ['ported.example.com:8080'], [route('port.all')]),
    vhost('ported-any', ['ported.example.com', 'ported.example.com:*'], [route('ported-any.all')]),
    vhost('short-suffix', ['*.example.com'], [route('short-suffix.all')]),
    vhost('long-suffix', ['*.api.example.com'], [route('long-suffix.v', { headers: [{ name: 'x-v', string_match: { exact: '2' } }] }), route('long-suffix.all')]),
    vhost('prefix', ['internal.*'], [route('prefix.all')]),
    vhost('longer-prefix', ['internal.ops.*'], [route('longer-prefix.all')]),
    vhost('regex', ['re.example.org'], [route('regex.items', { prefix: undefined, safe_regex: { regex: '/items/[0-9]+' } }), route('regex.none', { prefix: '/zzz' })]),
    vhost('any', ['*'], [route('any.all')]),
    vhost('any2', ['*'], [route('any2.all')]), // a second `*`: the first one wins
  ];
  for (let i = 0; i < 50; i++) hosts.push(vhost(`bulk-${i}`, [`bulk-${i}.example.net`], [route(`bulk-${i}.a`, { headers: [{ name: 'x-b', string_match: { exact: 'a' } }] }), route(`bulk-${i}.b`)]));
  return { name: 'http.80', virtual_hosts: hosts, validate_clusters: false };
}

/** The reference: Envoy's rules over eagerly compiled virtual hosts, written out plainly. */
function reference(rc: RouteConfiguration, head: RequestHead): string | undefined {
  const domain = (vh: VirtualHost, d: string): boolean => vh.domains.some((x) => x.toLowerCase() === d);
  const ported = rc.virtual_hosts.find((vh) => head.authority !== head.host && domain(vh, head.authority.toLowerCase()));
  const host = head.host;
  let vh = ported ?? rc.virtual_hosts.find((v) => domain(v, host));
  if (!vh) {
    const suffixes = rc.virtual_hosts.flatMap((v) => v.domains.filter((d) => d.startsWith('*') && d !== '*').map((d) => [d.slice(1).toLowerCase(), v] as const));
    suffixes.sort((a, b) => b[0].length - a[0].length);
    vh = suffixes.find(([s]) => host.length > s.length && host.endsWith(s))?.[1];
  }
  if (!vh) {
    const prefixes = rc.virtual_hosts.flatMap((v) => v.domains.filter((d) => d.endsWith('*') && !d.startsWith('*') && !d.endsWith(':*')).map((d) => [d.slice(0, -1).toLowerCase(), v] as const));
    prefixes.sort((a, b) => b[0].length - a[0].length);
    vh = prefixes.find(([p]) => host.length > p.length && host.startsWith(p))?.[1];
  }
  vh ??= rc.virtual_hosts.find((v) => v.domains.includes('*'));
  if (!vh) return undefined;
  return vh.routes.map(compileRoute).find((r) => r.matches(head))?.name;
}

const REQUESTS: RequestHead[] = [
  req('shop.example.com', '/login'),
  req('shop.example.com', '/login/x'),
  req('shop.example.com', '/api/v1'),
  req('shop2.example.com', '/'),
  req('ported.example.com', '/', {}, 'ported.example.com:8080'),
  req('ported.example.com', '/', {}, 'ported.example.com:9090'),
  req('ported.example.com', '/'),
  req('a.example.com'),
  req('a.api.example.com'),
  req('a.api.example.com', '/', { 'x-v': '2' }),
  req('api.example.com'),
  req('internal.foo'),
  req('internal.ops.foo'),
  req('re.example.org', '/items/42'),
  req('re.example.org', '/items/x'),
  req('unknown.test'),
  req('bulk-7.example.net', '/', { 'x-b': 'a' }),
  req('bulk-7.example.net', '/'),
  req('bulk-49.example.net', '/', { 'x-b': 'a' }),
];

describe('RouteTable: virtual hosts compiled on first use', () => {
  it('matches exactly as the eagerly compiled reference, whatever order the hosts are first asked for in', () => {
    const rc = config();
    const expected = REQUESTS.map((r) => reference(rc, r));
    // Spot-check the reference itself on the rules that matter.
    expect(expected.slice(0, 16)).toEqual([
      'exact.login',
      'exact.all', // an exact path is not a prefix
      'exact.api',
      'exact.all',
      'port.all',
      'ported-any.all',
      'ported-any.all',
      'short-suffix.all',
      'long-suffix.all',
      'long-suffix.v',
      'short-suffix.all',
      'prefix.all',
      'longer-prefix.all',
      'regex.items',
      undefined,
      'any.all',
    ]);
    for (const order of [REQUESTS, [...REQUESTS].reverse(), [...REQUESTS.slice(7), ...REQUESTS.slice(0, 7)]]) {
      const t = new RouteTable(rc);
      const got = new Map(order.map((r) => [r, t.match(r)?.route.name]));
      expect(REQUESTS.map((r) => got.get(r))).toEqual(expected);
      // Asked again (now compiled): the same answers.
      expect(REQUESTS.map((r) => t.match(r)?.route.name)).toEqual(expected);
    }
  });

  it('compiles nothing when built, each virtual host once when first needed, and shares it across its domains', () => {
    const t = new RouteTable(config());
    expect(t.compiledVirtualHosts).toBe(0);
    const a = t.match(req('shop.example.com'));
    expect(a?.vhost.name).toBe('exact');
    expect(t.compiledVirtualHosts).toBe(1);
    const b = t.match(req('SHOP2.example.com'.toLowerCase()));
    expect(b?.vhost).toBe(a?.vhost); // one compiled virtual host for all its domains
    expect(t.findVirtualHost('shop.example.com')).toBe(a?.vhost);
    expect(t.compiledVirtualHosts).toBe(1);
    t.match(req('nothing.here'));
    expect(t.compiledVirtualHosts).toBe(2); // the `*` host
    expect(t.findVirtualHost('bulk-3.example.net')?.routes.map((r) => r.name)).toEqual(['bulk-3.a', 'bulk-3.b']);
    expect(t.compiledVirtualHosts).toBe(3);
  });

  it('a table without `*` answers nothing for unknown hosts', () => {
    const rc = config();
    rc.virtual_hosts = rc.virtual_hosts.filter((v) => !v.domains.includes('*'));
    const t = new RouteTable(rc);
    expect(t.match(req('unknown.test'))).toBeUndefined();
    expect(t.findVirtualHost('unknown.test')).toBeUndefined();
  });

  it('still refuses, when built, what compiling would throw on (invalid regexes, a route with no action)', () => {
    const bad = (r: Route): RouteConfiguration => ({ name: 'x', validate_clusters: false, virtual_hosts: [vhost('ok', ['ok.test'], [route('ok')]), vhost('bad', ['bad.test'], [r])] });
    expect(() => new RouteTable(bad(route('r', { prefix: undefined, safe_regex: { regex: '(' } })))).toThrow();
    expect(() => new RouteTable(bad(route('r', { headers: [{ name: 'h', string_match: { safe_regex: { regex: '[' } } }] })))).toThrow();
    expect(() => new RouteTable(bad(route('r', { query_parameters: [{ name: 'q', string_match: { safe_regex: { regex: '(?<x' } } }] })))).toThrow();
    const cors = route('r');
    cors.typed_per_filter_config = { 'envoy.filters.http.cors': { allow_origin_string_match: [{ safe_regex: { regex: '*' } }], forward_not_matching_preflights: true } };
    expect(() => new RouteTable(bad(cors))).toThrow();
    const rewrite = route('r');
    rewrite.route!.regex_rewrite = { pattern: { regex: '(' }, substitution: '' };
    expect(() => new RouteTable(bad(rewrite))).toThrow();
    const none = route('r');
    delete none.route;
    expect(() => new RouteTable(bad(none))).toThrow(/no action/);
    // And each of those does throw when compiled: the check is not stricter than compile.
    for (const r of [route('r', { prefix: undefined, safe_regex: { regex: '(' } }), none]) expect(() => compileRoute(r)).toThrow();
    // A valid one builds.
    expect(() => new RouteTable(bad(route('r', { prefix: undefined, safe_regex: { regex: '/a(b|c)+' } })))).not.toThrow();
  });
});
