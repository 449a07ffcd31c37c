// VirtualService routing through the real gateway: host and request matching, weights, subsets,
// rewrites, header edits, redirects and direct responses, observed from a client and upstreams, on
// every downstream engine (test/helpers/engines.ts).
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { ENGINES, ENGINE_GATEWAYS, EngineSet, checkSkipTable, itOn, type EngineClient, type SkipTable } from '../helpers/engines.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, service, virtualService, workloadEntry, yamlDocs, type Obj } from '../helpers/yaml.js';

const direct = (name: string, match?: Obj[]): Obj => ({ name, ...(match ? { match } : {}), directResponse: { status: 200, body: { string: name } } });

let gw: GatewayProcess;
const engines = new EngineSet();
const echos: Record<string, Echo> = {};

beforeAll(async () => {
  for (const n of ['v1', 'v2', 'v3', 'canary']) echos[n] = await startEcho(n);
  const docs: Obj[] = [
    ...(await engines.gateways()),
    ...service('app', { v1: echos.v1!.port, v2: echos.v2!.port, v3: echos.v3!.port }, { extraSubsets: { canary: { track: 'canary' } } }),
    workloadEntry('app-canary', { app: 'app', version: 'v9', track: 'canary' }, echos.canary!.port),
    virtualService('hosts-exact', ['demo.local'], [direct('demo-local')]),
    virtualService('hosts-wild', ['*.example.com'], [direct('wildcard')]),
    virtualService('hosts-exact-in-wild', ['exact.example.com'], [direct('exact-example')]),
    virtualService('matches', ['match.test', 'alt.test'], [
      direct('uri-exact', [{ uri: { exact: '/exact' } }]),
      direct('uri-prefix', [{ uri: { prefix: '/pre' } }]),
      direct('uri-regex', [{ uri: { regex: '/re/[0-9]+' } }]),
      direct('ignore-case', [{ uri: { exact: '/CaseLess' }, ignoreUriCase: true }]),
      direct('header-exact', [{ uri: { prefix: '/h' }, headers: { 'x-user': { exact: 'jason' } } }]),
      direct('header-prefix', [{ uri: { prefix: '/h' }, headers: { 'x-team': { prefix: 'blue' } } }]),
      direct('header-regex', [{ uri: { prefix: '/h' }, headers: { 'x-build': { regex: '[0-9]+' } } }]),
      direct('header-none', [{ uri: { prefix: '/h' } }]),
      direct('without-present', [{ uri: { prefix: '/w' }, withoutHeaders: { 'x-skip': {} } }]),
      direct('without-other', [{ uri: { prefix: '/w' } }]),
      direct('without-value', [{ uri: { prefix: '/v' }, withoutHeaders: { 'x-env': { exact: 'prod' } } }]),
      direct('without-value-other', [{ uri: { prefix: '/v' } }]),
      direct('method-post', [{ uri: { prefix: '/m' }, method: { exact: 'POST' } }]),
      direct('method-other', [{ uri: { prefix: '/m' } }]),
      direct('authority', [{ uri: { prefix: '/auth' }, authority: { exact: 'alt.test' } }]),
      direct('authority-other', [{ uri: { prefix: '/auth' } }]),
      direct('query-exact', [{ uri: { prefix: '/q' }, queryParams: { tier: { exact: 'gold' } } }]),
      direct('query-regex', [{ uri: { prefix: '/q' }, queryParams: { id: { regex: '[0-9]+' } } }]),
      direct('query-other', [{ uri: { prefix: '/q' } }]),
      direct('first-1', [{ uri: { prefix: '/first' } }]),
      direct('first-2', [{ uri: { prefix: '/first' } }]),
      direct('or', [{ uri: { exact: '/or-a' } }, { uri: { exact: '/or-b' } }]),
      direct('catch-all'),
    ]),
    virtualService('weights', ['weights.test'], [{ route: [dest('app', 'v1', 80), dest('app', 'v2', 20)] }]),
    virtualService('split', ['split.test'], [{ route: [dest('app', 'v1', 100), dest('app', 'v2', 0)] }]),
    // Relative weights (Istio since 1.15): 1 and 3 are 25% and 75%; they need not sum to 100.
    virtualService('relative', ['relative.test'], [{ route: [dest('app', 'v1', 1), dest('app', 'v2', 3)] }]),
    virtualService('subsets', ['subsets.test'], [
      { match: [{ headers: { 'x-version': { exact: 'v3' } } }], route: [dest('app', 'v3')] },
      { match: [{ headers: { 'x-version': { exact: 'canary' } } }], route: [dest('app', 'canary')] },
      { route: [dest('app', 'v2')] },
    ]),
    virtualService('edits', ['edits.test'], [
      { match: [{ uri: { prefix: '/old' } }], rewrite: { uri: '/new' }, route: [dest('app', 'v1')] },
      {
        match: [{ uri: { prefix: '/headers' } }],
        headers: {
          request: { set: { 'x-set': 'one' }, add: { 'x-add': 'two' }, remove: ['x-remove'] },
          response: { set: { 'x-resp': 'three', 'x-upstream': 'overridden' } },
        },
        route: [dest('app', 'v1')],
      },
      { match: [{ uri: { exact: '/go' } }], redirect: { uri: '/new-place', authority: 'other.test' } },
      { match: [{ uri: { exact: '/go-302' } }], redirect: { uri: '/elsewhere', redirectCode: 302 } },
      { match: [{ uri: { exact: '/maintenance' } }], directResponse: { status: 503, body: { string: 'down for maintenance' } } },
      { match: [{ uri: { exact: '/norm/target' } }], route: [dest('app', 'v3')] },
    ]),
  ];
  for (const d of docs) if (d.kind === 'VirtualService') (d.spec as Obj).gateways = ENGINE_GATEWAYS;
  gw = await startGateway({ files: { 'config.yaml': yamlDocs(...docs) } });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all(Object.values(echos).map((e) => e.close()));
  engines.close();
});

const SKIPS: SkipTable = {};

describe.each(ENGINES)('%s', (name) => {
  const e: EngineClient = engines.clients[name];
  /** GET with this Host; returns the direct-response body (route name) or the upstream name. */
  const get = (host: string, path: string, headers: Record<string, string> = {}, method = 'GET') => e.request(path, { method, headers: { host, ...headers } });
  const routeName = async (host: string, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<string> => {
    const r = await get(host, path, headers, method);
    return r.status === 200 ? r.text : `status ${r.status}`;
  };

  describe('routing: virtual host selection by Host (domains)', () => {
    itOn(e, SKIPS, 'an exact host matches its VirtualService', async () => {
      expect(await routeName('demo.local', '/')).toBe('demo-local');
    });
    itOn(e, SKIPS, 'the Host port is ignored for matching (`demo.local:8080` matches host demo.local)', async () => {
      expect(await routeName('demo.local:8080', '/')).toBe('demo-local');
    });
    itOn(e, SKIPS, 'hosts match case-insensitively', async () => {
      expect(await routeName('DEMO.Local', '/')).toBe('demo-local');
    });
    itOn(e, SKIPS, 'a wildcard host `*.example.com` matches one or more leading labels', async () => {
      expect(await routeName('a.example.com', '/')).toBe('wildcard');
      expect(await routeName('x.y.example.com:1234', '/')).toBe('wildcard');
    });
    itOn(e, SKIPS, 'a wildcard host does not match the bare domain', async () => {
      expect((await get('example.com', '/')).status).toBe(404);
    });
    itOn(e, SKIPS, 'an exact host wins over a wildcard that also matches', async () => {
      expect(await routeName('exact.example.com', '/')).toBe('exact-example');
    });
    itOn(e, SKIPS, 'an unknown host gets 404', async () => {
      const r = await get('nobody.test', '/');
      expect(r.status).toBe(404);
    });
  });

  describe('routing: HTTPMatchRequest conditions', () => {
    itOn(e, SKIPS, 'uri.exact matches only the exact path', async () => {
      expect(await routeName('match.test', '/exact')).toBe('uri-exact');
      expect(await routeName('match.test', '/exact/more')).toBe('catch-all');
      expect(await routeName('match.test', '/exac')).toBe('catch-all');
    });
    itOn(e, SKIPS, 'uri.exact ignores the query string', async () => {
      expect(await routeName('match.test', '/exact?a=1')).toBe('uri-exact');
    });
    itOn(e, SKIPS, 'uri.prefix matches paths that start with the prefix', async () => {
      expect(await routeName('match.test', '/pre')).toBe('uri-prefix');
      expect(await routeName('match.test', '/prefix/deep')).toBe('uri-prefix');
    });
    itOn(e, SKIPS, 'uri.regex must match the whole path (RE2 full match)', async () => {
      expect(await routeName('match.test', '/re/123')).toBe('uri-regex');
      expect(await routeName('match.test', '/re/123/x')).toBe('catch-all');
      expect(await routeName('match.test', '/x/re/1')).toBe('catch-all');
    });
    itOn(e, SKIPS, 'uri matching is case-sensitive unless ignoreUriCase is set', async () => {
      expect(await routeName('match.test', '/caseless')).toBe('ignore-case');
      expect(await routeName('match.test', '/CASELESS')).toBe('ignore-case');
      expect(await routeName('match.test', '/PRE')).toBe('catch-all');
    });
    itOn(e, SKIPS, 'headers.exact / prefix / regex (regex is a full match)', async () => {
      expect(await routeName('match.test', '/h', { 'x-user': 'jason' })).toBe('header-exact');
      expect(await routeName('match.test', '/h', { 'x-user': 'jason2' })).toBe('header-none');
      expect(await routeName('match.test', '/h', { 'x-team': 'blue-green' })).toBe('header-prefix');
      expect(await routeName('match.test', '/h', { 'x-team': 'green-blue' })).toBe('header-none');
      expect(await routeName('match.test', '/h', { 'x-build': '42' })).toBe('header-regex');
      expect(await routeName('match.test', '/h', { 'x-build': '42a' })).toBe('header-none');
    });
    itOn(e, SKIPS, 'header names match case-insensitively', async () => {
      expect(await routeName('match.test', '/h', { 'X-User': 'jason' })).toBe('header-exact');
    });
    itOn(e, SKIPS, 'withoutHeaders `{}` matches when the header is absent, not when present', async () => {
      expect(await routeName('match.test', '/w')).toBe('without-present');
      expect(await routeName('match.test', '/w', { 'x-skip': '1' })).toBe('without-other');
    });
    itOn(e, SKIPS, 'withoutHeaders with a value matches when the header has another value', async () => {
      expect(await routeName('match.test', '/v', { 'x-env': 'dev' })).toBe('without-value');
      expect(await routeName('match.test', '/v', { 'x-env': 'prod' })).toBe('without-value-other');
    });
    itOn(e, SKIPS, 'method matches the request method', async () => {
      expect(await routeName('match.test', '/m', {}, 'POST')).toBe('method-post');
      expect(await routeName('match.test', '/m', {}, 'GET')).toBe('method-other');
    });
    itOn(e, SKIPS, 'authority matches the Host header', async () => {
      expect(await routeName('alt.test', '/auth')).toBe('authority');
      expect(await routeName('match.test', '/auth')).toBe('authority-other');
    });
    itOn(e, SKIPS, 'queryParams exact and regex', async () => {
      expect(await routeName('match.test', '/q?tier=gold')).toBe('query-exact');
      expect(await routeName('match.test', '/q?tier=silver')).toBe('query-other');
      expect(await routeName('match.test', '/q?x=1&id=77')).toBe('query-regex');
      expect(await routeName('match.test', '/q?id=77b')).toBe('query-other');
    });
    itOn(e, SKIPS, 'the first matching route wins', async () => {
      expect(await routeName('match.test', '/first')).toBe('first-1');
    });
    itOn(e, SKIPS, 'several `match` entries are OR-ed', async () => {
      expect(await routeName('match.test', '/or-a')).toBe('or');
      expect(await routeName('match.test', '/or-b')).toBe('or');
      expect(await routeName('match.test', '/or-c')).toBe('catch-all');
    });
  });

  describe('routing: destinations, weights and subsets', () => {
    itOn(e, SKIPS, '80/20 weights split ~200 requests between subsets v1 and v2', async () => {
      const counts: Record<string, number> = {};
      for (let i = 0; i < 200; i += 20) {
        const batch = await Promise.all(Array.from({ length: 20 }, () => get('weights.test', '/w')));
        for (const r of batch) {
          expect(r.status).toBe(200);
          counts[r.json.name] = (counts[r.json.name] ?? 0) + 1;
        }
      }
      expect(Object.keys(counts).sort()).toEqual(['v1', 'v2']);
      expect(counts.v1).toBeGreaterThanOrEqual(120);
      expect(counts.v1).toBeLessThanOrEqual(190);
      expect(counts.v2).toBeGreaterThanOrEqual(10);
      expect(counts.v2).toBeLessThanOrEqual(80);
    });
    itOn(e, SKIPS, 'weights are relative: 1 and 3 split 400 requests about 25/75', async () => {
      const counts: Record<string, number> = {};
      for (let i = 0; i < 400; i += 25) {
        const batch = await Promise.all(Array.from({ length: 25 }, () => get('relative.test', '/r')));
        for (const r of batch) {
          expect(r.status).toBe(200);
          counts[r.json.name] = (counts[r.json.name] ?? 0) + 1;
        }
      }
      expect(Object.keys(counts).sort()).toEqual(['v1', 'v2']);
      // Binomial(400, 1/4): mean 100, sd 8.7; the bounds are ~5 sd wide, far from 50/50 (200).
      expect(counts.v1).toBeGreaterThanOrEqual(57);
      expect(counts.v1).toBeLessThanOrEqual(143);
      expect(counts.v2).toBe(400 - counts.v1!);
    });
    itOn(e, SKIPS, 'a 100/0 split never sends to the weight-0 destination', async () => {
      const names = new Set<string>();
      for (let i = 0; i < 5; i++) {
        const batch = await Promise.all(Array.from({ length: 10 }, () => get('split.test', '/')));
        for (const r of batch) names.add(r.status === 200 ? r.json.name : `status ${r.status}`);
      }
      expect([...names]).toEqual(['v1']);
    });
    itOn(e, SKIPS, 'a subset selects the WorkloadEntries with its labels', async () => {
      expect((await get('subsets.test', '/')).json.name).toBe('v2');
      expect((await get('subsets.test', '/', { 'x-version': 'v3' })).json.name).toBe('v3');
    });
    itOn(e, SKIPS, 'a subset selecting by a label other than version picks only the labelled workload', async () => {
      for (let i = 0; i < 4; i++) expect((await get('subsets.test', '/', { 'x-version': 'canary' })).json.name).toBe('canary');
    });
    itOn(e, SKIPS, 'the upstream sees the method, path and query as sent', async () => {
      const r = await get('subsets.test', '/some/path?x=1&y=two', {}, 'DELETE');
      expect(r.json).toMatchObject({ name: 'v2', method: 'DELETE', url: '/some/path?x=1&y=two' });
    });
  });

  describe('routing: rewrite, header edits, redirect, directResponse', () => {
    itOn(e, SKIPS, 'rewrite.uri replaces the matched prefix and keeps the rest and the query', async () => {
      const r = await get('edits.test', '/old/x?q=1');
      expect(r.status).toBe(200);
      expect(r.json.url).toBe('/new/x?q=1');
    });
    itOn(e, SKIPS, 'headers.request set/add/remove edit what the upstream receives', async () => {
      const r = await get('edits.test', '/headers', { 'x-set': 'original', 'x-add': 'first', 'x-remove': 'gone', 'x-keep': 'kept' });
      const h = r.json.headers;
      expect(h['x-set']).toBe('one');
      expect(h['x-add']).toBe('first, two');
      expect(h['x-remove']).toBeUndefined();
      expect(h['x-keep']).toBe('kept');
    });
    itOn(e, SKIPS, 'headers.response.set adds and overrides response headers', async () => {
      const r = await get('edits.test', '/headers');
      expect(r.headers['x-resp']).toBe('three');
      expect(r.headers['x-upstream']).toBe('overridden');
    });
    itOn(e, SKIPS, 'redirect answers 301 with a Location built from uri and authority', async () => {
      const r = await get('edits.test', '/go');
      expect(r.status).toBe(301);
      expect(r.headers.location).toBe(`${e.scheme}://other.test/new-place`);
      expect(echos.v1!.requests.some((q) => q.url === '/go')).toBe(false);
    });
    itOn(e, SKIPS, 'redirect keeps the query string of the request', async () => {
      const r = await get('edits.test', '/go?x=1&y=2');
      expect(r.status).toBe(301);
      expect(r.headers.location).toBe(`${e.scheme}://other.test/new-place?x=1&y=2`);
    });
    itOn(e, SKIPS, 'redirect with redirectCode 302 keeps the request host', async () => {
      const r = await get('edits.test', '/go-302');
      expect(r.status).toBe(302);
      expect(r.headers.location).toBe(`${e.scheme}://edits.test/elsewhere`);
    });
    itOn(e, SKIPS, 'directResponse answers with its status and body', async () => {
      const r = await get('edits.test', '/maintenance');
      expect(r.status).toBe(503);
      expect(r.text).toBe('down for maintenance');
      expect(r.headers.server).toBe('istio-envoy');
    });
  });

  describe('routing: path normalization (Istio default pathNormalization BASE = Envoy normalize_path)', () => {
    itOn(e, SKIPS, 'dot segments are resolved before matching and forwarding (`/norm/x/../target` is `/norm/target`)', async () => {
      const r = await get('edits.test', '/norm/x/../target');
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ name: 'v3', url: '/norm/target' });
    });
    itOn(e, SKIPS, '`.` segments are removed (`/norm/./target` is `/norm/target`)', async () => {
      const r = await get('edits.test', '/norm/./target');
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ name: 'v3', url: '/norm/target' });
    });
  });
});

checkSkipTable(SKIPS);
