import { describe, expect, it } from 'vitest';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG } from '../../src/config/types.js';
import { resolve } from '../../src/controlplane/resolve.js';
import type { RequestHead } from '../../src/routing/request.js';
import { applyHeaderOps, headerOps, pickCluster, RouteTable, type ForwardAction } from '../../src/routing/route-table.js';
import { queryParam } from '../../src/routing/request.js';

/** A route table from a VirtualService's `http:` block (indented by 2), bound to a `*` gateway. */
function table(http: string, hosts = '[shop.example.com, "*.wild.example.com"]'): RouteTable {
  const yaml = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ${hosts}
  gateways: [gw]
  http:
${http}`;
  const { resources, problems } = parseYamlText(yaml, 't.yaml');
  expect(problems).toEqual([]);
  const s = resolve(resources, { labels: {}, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });
  return new RouteTable(s.routes.get('http.80')!);
}

function req(path: string, extra: Partial<RequestHead> & { h?: Record<string, string> } = {}): RequestHead {
  const [p, q = ''] = path.split('?');
  const headers = Object.entries(extra.h ?? {}).flatMap(([k, v]) => [k, v]);
  return { method: 'GET', path: p!, query: q, host: 'shop.example.com', authority: 'shop.example.com', scheme: 'http', headers, ...extra };
}

const routeName = (t: RouteTable, r: RequestHead): string | undefined => t.match(r)?.route.name;

describe('match: VirtualService http match semantics (first match wins)', () => {
  it('uri exact, prefix and regex (RE2 full match, not search)', () => {
    const t = table(`  - name: exact
    match: [{uri: {exact: /login}}]
    route: [{destination: {host: a}}]
  - name: regex
    match: [{uri: {regex: "/items/[0-9]+"}}]
    route: [{destination: {host: a}}]
  - name: prefix
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: a}}]
`);
    expect(routeName(t, req('/login'))).toBe('exact');
    expect(routeName(t, req('/login/x'))).toBeUndefined();
    expect(routeName(t, req('/items/42'))).toBe('regex');
    expect(routeName(t, req('/items/42/reviews'))).toBeUndefined();
    expect(routeName(t, req('/api'))).toBe('prefix');
    expect(routeName(t, req('/apiv2/x'))).toBe('prefix'); // Istio prefix is a plain string prefix
    expect(routeName(t, req('/items/42?x=1'))).toBe('regex'); // the query is not part of the path
  });

  it('ignoreUriCase applies to exact and prefix', () => {
    const t = table(`  - name: ci
    match: [{uri: {prefix: /Shop}, ignoreUriCase: true}]
    route: [{destination: {host: a}}]
`);
    expect(routeName(t, req('/shop/cart'))).toBe('ci');
    expect(routeName(t, req('/SHOP'))).toBe('ci');
    expect(routeName(t, req('/shoe'))).toBeUndefined();
  });

  it('headers exact/prefix/regex, presence with {}, and withoutHeaders', () => {
    const t = table(`  - name: canary
    match: [{headers: {x-canary: {exact: "true"}, cookie: {regex: ".*session=[a-z]+.*"}}}]
    route: [{destination: {host: a}}]
  - name: mobile
    match: [{headers: {user-agent: {prefix: Mobile}}}]
    route: [{destination: {host: a}}]
  - name: has-debug
    match: [{headers: {x-debug: {}}}]
    route: [{destination: {host: a}}]
  - name: not-internal
    match: [{withoutHeaders: {x-internal: {exact: "1"}}}]
    route: [{destination: {host: a}}]
`);
    expect(routeName(t, req('/', { h: { 'x-canary': 'true', cookie: 'a=1; session=abc; b=2' } }))).toBe('canary');
    expect(routeName(t, req('/', { h: { 'x-canary': 'true', cookie: 'session=ABC' } }))).toBe('not-internal');
    expect(routeName(t, req('/', { h: { 'user-agent': 'Mobile Safari' } }))).toBe('mobile');
    expect(routeName(t, req('/', { h: { 'x-debug': '' } }))).toBe('has-debug');
    expect(routeName(t, req('/', { h: { 'x-internal': '1' } }))).toBeUndefined();
    expect(routeName(t, req('/', { h: { 'x-internal': '2' } }))).toBe('not-internal');
  });

  it('method, authority, scheme and queryParams; match entries are OR-ed, fields inside one are AND-ed', () => {
    const t = table(`  - name: post-or-query
    match:
    - method: {exact: POST}
      authority: {prefix: shop}
    - queryParams: {v: {regex: "[0-9]+"}}
      scheme: {exact: http}
    route: [{destination: {host: a}}]
`);
    expect(routeName(t, req('/', { method: 'POST' }))).toBe('post-or-query');
    expect(routeName(t, req('/', { method: 'POST', authority: 'other.example.com' }))).toBeUndefined();
    expect(routeName(t, req('/?a=1&v=42'))).toBe('post-or-query');
    expect(routeName(t, req('/?v=4x'))).toBeUndefined();
    expect(routeName(t, req('/?v=42', { scheme: 'https' }))).toBeUndefined();
  });

  it('finds virtual hosts by exact name first, then the longest wildcard suffix; unknown hosts have none', () => {
    const t = table(`  - route: [{destination: {host: a}}]
`);
    expect(t.findVirtualHost('shop.example.com')?.name).toBe('shop.example.com:80');
    expect(t.findVirtualHost('a.wild.example.com')?.name).toBe('*.wild.example.com:80');
    expect(t.findVirtualHost('a.b.wild.example.com')?.name).toBe('*.wild.example.com:80');
    expect(t.findVirtualHost('wild.example.com')).toBeUndefined();
    expect(t.findVirtualHost('nope.example.com')).toBeUndefined();
  });

  it('rewrites a matched uri prefix, or the whole path for exact and regex matches; uriRegexRewrite uses \\1 groups', () => {
    const t = table(`  - name: prefix
    match: [{uri: {prefix: /v1/}}]
    rewrite: {uri: /api/}
    route: [{destination: {host: a}}]
  - name: exact
    match: [{uri: {exact: /old}}]
    rewrite: {uri: /new}
    route: [{destination: {host: a}}]
  - name: regex
    match: [{uri: {prefix: /users}}]
    rewrite: {uriRegexRewrite: {match: "^/users/([^/]+)/profile$", rewrite: '/profiles/\\1'}}
    route: [{destination: {host: a}}]
`);
    const rw = (p: string): string => (t.match(req(p))!.route.action as ForwardAction).rewritePath!(p);
    expect(rw('/v1/items')).toBe('/api/items');
    expect(rw('/old')).toBe('/new');
    expect(rw('/users/ada/profile')).toBe('/profiles/ada');
  });
});

describe('weighted destinations and header edits', () => {
  it('picks clusters in proportion to their weights', () => {
    const t = table(`  - route:
    - destination: {host: a}
      weight: 90
    - destination: {host: b}
      weight: 10
`);
    const action = t.match(req('/'))!.route.action as ForwardAction;
    const names = [0, 0.5, 0.899, 0.9, 0.999].map((r) => pickCluster(action, r)!.name.split('|')[3]);
    expect(names).toEqual(['a.default.svc.cluster.local', 'a.default.svc.cluster.local', 'a.default.svc.cluster.local', 'b.default.svc.cluster.local', 'b.default.svc.cluster.local']);
  });

  it('set replaces, add appends, remove drops (names are case-insensitive)', () => {
    const out = applyHeaderOps(['x-a', '1', 'x-b', '2', 'x-c', '3'], headerOps([['x-a', 'new']], [['x-b', 'more']], ['x-c']));
    expect(out).toEqual(['x-b', '2', 'x-a', 'new', 'x-b', 'more']);
  });

  it('reads query parameters without decoding them, as Envoy matches them', () => {
    expect(queryParam('a=1&b=x%20y&c', 'b')).toBe('x%20y');
    expect(queryParam('a=1&b=2&c', 'c')).toBe('');
    expect(queryParam('ab=1', 'a')).toBeUndefined();
  });
});

describe('path normalization (Istio pathNormalization BASE)', () => {
  it('resolves dot segments, also percent-encoded, and never climbs above the root', async () => {
    const { normalizePath } = await import('../../src/routing/path.js');
    expect(normalizePath('/norm/x/../target')).toBe('/norm/target');
    expect(normalizePath('/norm/./target')).toBe('/norm/target');
    expect(normalizePath('/a/b/..')).toBe('/a/');
    expect(normalizePath('/a/%2E%2e/admin')).toBe('/admin');
    expect(normalizePath('/../../etc/passwd')).toBe('/etc/passwd');
    expect(normalizePath('/a/.hidden/b..c/...')).toBe('/a/.hidden/b..c/...');
    const plain = '/api/v1/items?x=1';
    expect(normalizePath(plain)).toBe(plain);
  });
});
