// JWT claim based routing (Istio: `headers: {"@request.auth.claims.<claim>": ...}` in a
// VirtualService bound to a gateway): validation as Istio validates it, the Envoy metadata matcher
// resolve() emits (as istiod emits it), its xDS encoding and the proxyless dialect, the route
// table's matching (string claims, list claims, other types, withoutHeaders), and the security
// verdict that carries the verified claims to the route selection.
import { describe, expect, it } from 'vitest';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { parseYamlText } from '../../src/config/load.js';
import { DEFAULT_MESH_CONFIG, formatProblem, type Resource } from '../../src/config/types.js';
import { validate } from '../../src/config/validate.js';
import { toProxylessRoutes } from '../../src/controlplane/proxyless.js';
import { resolve } from '../../src/controlplane/resolve.js';
import type { FilterMetadata, RouteConfiguration, SecurityConfig, Snapshot } from '../../src/controlplane/snapshot.js';
import { decodeSnapshotResource, encodeSnapshotResource } from '../../src/controlplane/xds/codec.js';
import { ROUTE_TYPE } from '../../src/controlplane/xds/protos.js';
import type { RequestHead } from '../../src/routing/request.js';
import { firstMatch, RouteTable } from '../../src/routing/route-table.js';
import { ALLOWED, SecurityFilters, type Verdict } from '../../src/security/pipeline.js';
import type { SecurityRequest } from '../../src/security/types.js';
import { createLogger } from '../../src/telemetry/log.js';

const GATEWAY = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
`;

/** A VirtualService for shop.example.com with the given `http:` block (indented by 2). */
function vs(http: string, gateways = '[gw]'): string {
  return `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: ${gateways}
  http:
${http}`;
}

function parse(yaml: string): Resource[] {
  const { resources, problems } = parseYamlText(yaml, 'cfg.yaml');
  expect(problems.map(formatProblem)).toEqual([]);
  return resources;
}

function problems(yaml: string): { errors: string[]; warnings: string[] } {
  const res = validate(parse(yaml), { gatewayNamespace: 'istio-system', labels: { istio: 'ingressgateway' }, rootNamespace: 'istio-system' });
  return {
    errors: res.problems.filter((p) => p.severity === 'error').map(formatProblem),
    warnings: res.problems.filter((p) => p.severity === 'warning').map(formatProblem),
  };
}

function snap(yaml: string): Snapshot {
  return resolve(parse(yaml), { labels: { istio: 'ingressgateway' }, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });
}

const routes = (s: Snapshot): RouteConfiguration => s.routes.get('http.80')!;

function head(path = '/', headers: Record<string, string> = {}): RequestHead {
  return { method: 'GET', path, query: '', host: 'shop.example.com', authority: 'shop.example.com', scheme: 'http', headers: Object.entries(headers).flat() };
}

/** The JWT filter's metadata for a verified payload. */
const claims = (payload: Record<string, unknown>): FilterMetadata => ({ 'envoy.filters.http.jwt_authn': { payload } });

const ROUTES = `  - name: admin
    match: [{headers: {"@request.auth.claims.groups": {exact: admin}}}]
    route: [{destination: {host: app}}]
  - name: nested
    match: [{headers: {"@request.auth.claims[org][team.name]": {prefix: core}}}]
    route: [{destination: {host: app}}]
  - name: nested-dots
    match: [{headers: {"@Request.Auth.Claims.org.Region": {regex: "eu-[a-z]+"}}}]
    route: [{destination: {host: app}}]
  - name: not-beta
    match: [{uri: {prefix: /beta}, withoutHeaders: {"@request.auth.claims.beta": {exact: "yes"}}}]
    route: [{destination: {host: app}}]
  - name: default
    route: [{destination: {host: app}}]
`;

describe('validation of claim keys, as Istio validates them', () => {
  it('accepts @request.auth.claims.<a>[.<b>] and @request.auth.claims[<a>][<b>] in headers and withoutHeaders, claim names in any case', () => {
    expect(problems(GATEWAY + vs(ROUTES))).toEqual({ errors: [], warnings: [] });
  });

  it('refuses malformed claim keys with the forms to use, and still refuses upper-case header names', () => {
    const bad = (key: string): string => `  - match: [{headers: {"${key}": {exact: x}}}]
    route: [{destination: {host: app}}]
`;
    const { errors } = problems(GATEWAY + vs(['@request.auth.claims', '@request.auth.claims.', '@request.auth.claims[]', '@request.auth.claims[a', '@request.auth.claimsx', '@request.auth.claims.a..b', '@request.auth.claims[a][]', '@foo', 'X-Upper'].map(bad).join('')));
    expect(errors).toHaveLength(9);
    const use = '; use "@request.auth.claims.<claim>" (nested: "@request.auth.claims.<a>.<b>") or "@request.auth.claims[<claim>]" (nested: "[<a>][<b>]")';
    const keys = ['@request.auth.claims', '@request.auth.claims.', '@request.auth.claims[]', '@request.auth.claims[a', '@request.auth.claimsx'];
    keys.forEach((k, i) => expect(errors[i]).toBe(`cfg.yaml:${17 + 2 * i}: VirtualService/default/shop: spec.http[${i}].match[0].headers.${k}: invalid JWT claim key "${k}": ${use.slice(2)}`));
    expect(errors[5]).toContain('"@request.auth.claims.a..b": a claim name is empty');
    expect(errors[6]).toContain('"@request.auth.claims[a][]": a claim name is empty');
    expect(errors[7]).toContain('invalid JWT claim key "@foo"');
    expect(errors[8]).toContain('header name "X-Upper" must be lowercase');
  });

  it('is a gateway feature: a VirtualService for sidecars (no gateways, or mesh among them) may not use it (Istio refuses it)', () => {
    const claim = `  - match: [{withoutHeaders: {"@request.auth.claims.sub": {exact: x}}}]
    route: [{destination: {host: app}}]
`;
    for (const gateways of ['[]', '[mesh]', '[gw, mesh]']) {
      const { errors } = problems(GATEWAY + vs(claim, gateways));
      expect(errors, gateways).toHaveLength(1);
      expect(errors[0]).toMatch(/^cfg\.yaml:17: VirtualService\/default\/shop: spec\.http\[0\]\.match\[0\]\.withoutHeaders\.@request\.auth\.claims\.sub: /);
      expect(errors[0]).toContain('JWT claim based routing is only supported for gateways');
    }
  });

  it('needs a value to match: {} (Envoy has no "claim present" form for it) is refused', () => {
    const { errors } = problems(GATEWAY + vs(`  - match: [{headers: {"@request.auth.claims.sub": {}}}]
    route: [{destination: {host: app}}]
`));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain('a JWT claim match needs exact, prefix or regex');
  });
});

describe('resolve: the metadata matcher istiod emits', () => {
  const s = snap(GATEWAY + vs(ROUTES));
  const vh = routes(s).virtual_hosts[0]!;

  it('a claim under the JWT filter payload, matched as a string or as an element of a list; withoutHeaders inverted', () => {
    const admin = vh.routes.find((r) => r.name === 'admin')!.match;
    expect(admin.headers).toEqual([]);
    expect(admin.dynamic_metadata).toEqual([
      {
        filter: 'envoy.filters.http.jwt_authn',
        path: [{ key: 'payload' }, { key: 'groups' }],
        value: { or_match: { value_matchers: [{ list_match: { one_of: { string_match: { exact: 'admin' } } } }, { string_match: { exact: 'admin' } }] } },
      },
    ]);
    expect(vh.routes.find((r) => r.name === 'nested')!.match.dynamic_metadata![0]!.path).toEqual([{ key: 'payload' }, { key: 'org' }, { key: 'team.name' }]);
    // The prefix is case-insensitive, the claim names keep their case.
    expect(vh.routes.find((r) => r.name === 'nested-dots')!.match.dynamic_metadata![0]!.path).toEqual([{ key: 'payload' }, { key: 'org' }, { key: 'Region' }]);
    const notBeta = vh.routes.find((r) => r.name === 'not-beta')!.match;
    expect(notBeta.dynamic_metadata![0]).toMatchObject({ invert: true, path: [{ key: 'payload' }, { key: 'beta' }] });
    expect(vh.routes.find((r) => r.name === 'default')!.match.dynamic_metadata).toBeUndefined();
  });

  it('survives the xDS codec exactly (a replica routes by the same matchers)', () => {
    const rc = routes(s);
    expect(decodeSnapshotResource(ROUTE_TYPE, encodeSnapshotResource(ROUTE_TYPE, rc))).toEqual(rc);
  });

  it('proxyless gRPC clients do not get claim routes (they cannot match them), and resolve says so', () => {
    const yaml = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 50051, name: grpc, protocol: GRPC}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - name: claims
    match: [{headers: {"@request.auth.claims.sub": {exact: alice}}}]
    route: [{destination: {host: echo}}]
  - name: rest
    route: [{destination: {host: echo}}]
`;
    const m = snap(yaml);
    const rc = m.sidecar.get('default')!.routes.get('outbound|50051||echo.default.svc.cluster.local')!;
    expect(rc.virtual_hosts[0]!.routes.map((r) => r.name)).toEqual(['claims', 'rest']);
    expect(toProxylessRoutes(rc, m.clusters).virtual_hosts[0]!.routes.map((r) => r.name)).toEqual(['rest']);
    expect(m.warnings.map(formatProblem).some((w) => w.includes('spec.http[0].match[0].headers') && w.includes('proxyless gRPC clients have no JWT claims to match'))).toBe(true);
  });
});

describe('route table: claims matched as Envoy matches the metadata', () => {
  const table = new RouteTable(routes(snap(GATEWAY + vs(ROUTES))));
  const vh = table.virtualHost(head())!;
  const name = (path: string, md?: FilterMetadata, h: Record<string, string> = {}): string | undefined => firstMatch(vh, head(path, h), md)?.name;

  it('is compiled to be matched again after JWT authentication (hosts without claim or header matches are not)', () => {
    expect(vh.rerouteAfterAuthn).toBe(true);
    const plain = new RouteTable(routes(snap(GATEWAY + vs(`  - match: [{uri: {prefix: /a}, method: {exact: GET}}]
    route: [{destination: {host: app}}]
`)))).virtualHost(head())!;
    expect(plain.rerouteAfterAuthn).toBe(false);
    const headers = new RouteTable(routes(snap(GATEWAY + vs(`  - match: [{headers: {x-team: {exact: a}}}]
    route: [{destination: {host: app}}]
`)))).virtualHost(head())!;
    expect(headers.rerouteAfterAuthn).toBe(true);
  });

  it('a string claim, or a list claim with a matching element; other types never', () => {
    expect(name('/', claims({ groups: 'admin' }))).toBe('admin');
    expect(name('/', claims({ groups: ['dev', 'admin'] }))).toBe('admin');
    expect(name('/', claims({ groups: ['dev'] }))).toBe('default');
    expect(name('/', claims({ groups: 'administrators' }))).toBe('default'); // exact
    expect(name('/', claims({ groups: [['admin']] }))).toBe('default'); // one level of list only
    expect(name('/', claims({ groups: { admin: true } }))).toBe('default');
    // prefix and RE2 full-match regex, nested claims by either form
    expect(name('/', claims({ org: { 'team.name': 'core-platform' } }))).toBe('nested');
    expect(name('/', claims({ org: { team: { name: 'core' } } }))).toBe('default'); // `[team.name]` is one key
    expect(name('/', claims({ org: { Region: 'eu-west' } }))).toBe('nested-dots');
    expect(name('/', claims({ org: { Region: 'eu-west-1' } }))).toBe('default');
    expect(name('/', claims({ org: { region: 'eu-west' } }))).toBe('default'); // claim names are case-sensitive
    expect(name('/', claims({ org: [{ Region: 'eu-west' }] }))).toBe('default'); // a list on the path is no value
  });

  it('numbers and booleans never match a string matcher', () => {
    const t = new RouteTable(routes(snap(GATEWAY + vs(`  - name: five
    match: [{headers: {"@request.auth.claims.level": {exact: "5"}}}]
    route: [{destination: {host: app}}]
  - name: yes
    match: [{headers: {"@request.auth.claims.admin": {regex: "true"}}}]
    route: [{destination: {host: app}}]
`))));
    const v = t.virtualHost(head())!;
    expect(firstMatch(v, head(), claims({ level: 5 }))).toBeUndefined();
    expect(firstMatch(v, head(), claims({ level: [5] }))).toBeUndefined();
    expect(firstMatch(v, head(), claims({ admin: true }))).toBeUndefined();
    expect(firstMatch(v, head(), claims({ level: '5' }))?.name).toBe('five');
  });

  it('no verified token (no metadata): a claim match never matches, an inverted one (withoutHeaders) always does', () => {
    expect(name('/')).toBe('default');
    expect(name('/beta/x')).toBe('not-beta');
    expect(name('/beta/x', claims({ beta: 'yes' }))).toBe('default');
    expect(name('/beta/x', claims({ beta: 'no' }))).toBe('not-beta');
    expect(name('/beta/x', claims({}))).toBe('not-beta');
    // A request header named like the claim is not the claim.
    expect(name('/', undefined, { '@request.auth.claims.groups': 'admin', 'request.auth.claims.groups': 'admin' })).toBe('default');
    // Metadata of other filters, or inherited properties, are not claims.
    expect(name('/', { other: { payload: { groups: 'admin' } } })).toBe('default');
    expect(name('/', claims(Object.create({ groups: 'admin' }) as Record<string, unknown>))).toBe('default');
  });

  it('a replica refuses a snapshot with a matcher it cannot evaluate (at apply time, not per request)', () => {
    const rc = structuredClone(routes(snap(GATEWAY + vs(ROUTES))));
    rc.virtual_hosts[0]!.routes[0]!.match.dynamic_metadata![0]!.value = { string_match: { safe_regex: { regex: '(' } } };
    expect(() => new RouteTable(rc)).toThrow();
    rc.virtual_hosts[0]!.routes[0]!.match.dynamic_metadata![0]!.value = {};
    expect(() => new RouteTable(rc)).toThrow(/unsupported value matcher/);
  });
});

describe('security verdict: what the route is selected again with', () => {
  const log = createLogger('silent');
  const ISS = 'https://issuer.claims.test';

  async function setup(allow: SecurityConfig['allow'] = []): Promise<{ filters: SecurityFilters; sign: (c: Record<string, unknown>) => Promise<string> }> {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256' }] });
    const config: SecurityConfig = {
      jwt_rules: [{ policy: 'istio-system/jwt', issuer: ISS, audiences: [], jwks, timeout_ms: 1000, from_headers: [], from_params: [], from_cookies: [], output_claim_to_headers: [{ header: 'x-team', claim: 'team' }], forward_original_token: false }],
      custom: [],
      deny: [],
      allow,
      audit: [],
      num_trusted_proxies: 0,
    };
    const sign = (c: Record<string, unknown>): Promise<string> =>
      new SignJWT({ iss: ISS, sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600, ...c }).setProtectedHeader({ alg: 'ES256', kid: 'k' }).sign(privateKey);
    return { filters: new SecurityFilters(config, log), sign };
  }

  const request = (headers: string[]): SecurityRequest => ({
    method: 'GET', path: '/', query: '', host: 'h', authority: 'h', headers, localPort: 80,
    sourceIp: '127.0.0.1', remoteIp: '127.0.0.1', destinationIp: '127.0.0.1', sourcePrincipal: '', sourceNamespace: '', sni: '',
  });
  const allowed = (v: Verdict): Extract<Verdict, { allow: true }> => {
    if (!v.allow) throw new Error(`denied ${v.status}`);
    return v;
  };

  it('a verified token: its normalized payload as the JWT filter metadata and the headers as authentication left them', async () => {
    const { filters, sign } = await setup();
    const v = allowed(await filters.check(request(['authorization', `Bearer ${await sign({ groups: ['admin'], scope: 'a b', team: 'blue' })}`, 'x-a', '1'])));
    expect(v.reroute).not.toBeNull();
    expect(v.reroute!.metadata).toEqual({ 'envoy.filters.http.jwt_authn': { payload: expect.objectContaining({ sub: 'alice', groups: ['admin'], scope: ['a', 'b'] }) } });
    expect(v.reroute!.headers).toEqual(['x-a', '1', 'x-team', 'blue']);
    filters.close();
  });

  it('no token and nothing removed: the shared ALLOWED verdict (no second route match); a removed spoofed header: headers only', async () => {
    const { filters } = await setup();
    expect(filters.check(request(['x-a', '1']))).toBe(ALLOWED);
    const v = allowed(await filters.check(request(['x-team', 'admins', 'x-a', '1'])));
    expect(v.reroute).toEqual({ headers: ['x-a', '1'], metadata: null });
    filters.close();
  });

  it('request.auth.claims conditions read the same normalized claims: one scope of a space-delimited scope matches', async () => {
    const { filters, sign } = await setup([{ policy: 'istio-system/writers', rules: [{ from: [], to: [], when: [{ key: 'request.auth.claims[scope]', values: ['write'], not_values: [] }] }] }]);
    expect((await filters.check(request(['authorization', `Bearer ${await sign({ scope: 'read write' })}`]))).allow).toBe(true);
    expect((await filters.check(request(['authorization', `Bearer ${await sign({ scope: 'read' })}`]))).allow).toBe(false);
    filters.close();
  });

  it('an invalid token is refused before any route is selected again', async () => {
    const { filters } = await setup();
    const v = await filters.check(request(['authorization', 'Bearer not.a.jwt']));
    expect(v.allow).toBe(false);
    filters.close();
  });
});
