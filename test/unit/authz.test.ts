// AuthorizationPolicy matching and evaluation (src/security/authz.ts), and the translation of
// Istio resources into a listener's SecurityConfig (src/controlplane/security.ts).
import { describe, expect, it } from 'vitest';
import type { AuthzPolicyConfig, AuthzRuleConfig, SecurityConfig } from '../../src/controlplane/snapshot.js';
import { buildSecurityConfig } from '../../src/controlplane/security.js';
import { Cidr, CompiledAuthz, claimPath, ipBytes } from '../../src/security/authz.js';
import { parseProxyHeader } from '../../src/ingress/proxy-protocol.js';
import { trustedClientAddress } from '../../src/ingress/exchange.js';
import type { RequestAuth, SecurityRequest } from '../../src/security/types.js';
import { DEFAULT_MESH_CONFIG, type Resource } from '../../src/config/types.js';
import { parseYamlText } from '../../src/config/load.js';
import { resolve } from '../../src/controlplane/resolve.js';
import { decodeSnapshotResource, encodeSnapshotResource } from '../../src/controlplane/xds/codec.js';
import { LISTENER_TYPE } from '../../src/controlplane/xds/protos.js';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { createJwtAuthenticator } from '../../src/security/jwt.js';
import { createLogger } from '../../src/telemetry/log.js';

function req(over: Partial<SecurityRequest> = {}): SecurityRequest {
  return {
    method: 'GET',
    path: '/',
    query: '',
    host: 'shop.example.com',
    authority: 'shop.example.com',
    headers: [],
    localPort: 8080,
    sourceIp: '10.1.2.3',
    remoteIp: '10.1.2.3',
    destinationIp: '127.0.0.1',
    sourcePrincipal: '',
    sourceNamespace: '',
    sni: '',
    ...over,
  };
}

const rule = (r: Partial<AuthzRuleConfig>): AuthzRuleConfig => ({ from: [], to: [], when: [], ...r });
const policy = (name: string, rules: AuthzRuleConfig[]): AuthzPolicyConfig => ({ policy: `default/${name}`, rules });

function authz(p: Partial<Pick<SecurityConfig, 'custom' | 'deny' | 'allow' | 'audit'>>): CompiledAuthz {
  return new CompiledAuthz({ custom: [], deny: [], allow: [], audit: [], ...p });
}

/** Whether an ALLOW policy with this one rule lets the request through. */
function allows(r: Partial<AuthzRuleConfig>, request: SecurityRequest, auth: RequestAuth | null = null): boolean {
  return authz({ allow: [policy('p', [rule(r)])] }).evaluate(request, auth).kind === 'allow';
}

const jwt = (claims: Record<string, unknown>): RequestAuth => ({
  principal: `${claims.iss as string}/${claims.sub as string}`,
  audiences: Array.isArray(claims.aud) ? (claims.aud as string[]) : claims.aud ? [claims.aud as string] : [],
  presenter: (claims.azp as string) ?? '',
  claims,
});

describe('CIDR matcher', () => {
  it('matches IPv4 blocks and single addresses', () => {
    expect(Cidr.parse('10.0.0.0/8').contains(ipBytes('10.255.1.1'))).toBe(true);
    expect(Cidr.parse('10.0.0.0/8').contains(ipBytes('11.0.0.1'))).toBe(false);
    expect(Cidr.parse('192.168.1.7').contains(ipBytes('192.168.1.7'))).toBe(true);
    expect(Cidr.parse('192.168.1.7').contains(ipBytes('192.168.1.8'))).toBe(false);
    expect(Cidr.parse('172.16.0.0/12').contains(ipBytes('172.31.255.255'))).toBe(true);
    expect(Cidr.parse('172.16.0.0/12').contains(ipBytes('172.32.0.0'))).toBe(false);
    expect(Cidr.parse('0.0.0.0/0').contains(ipBytes('8.8.8.8'))).toBe(true);
  });
  it('matches IPv6 blocks, and IPv4 against IPv4-mapped IPv6', () => {
    expect(Cidr.parse('2001:db8::/32').contains(ipBytes('2001:db8:1::5'))).toBe(true);
    expect(Cidr.parse('2001:db8::/32').contains(ipBytes('2001:db9::1'))).toBe(false);
    expect(Cidr.parse('::1').contains(ipBytes('::1'))).toBe(true);
    expect(Cidr.parse('10.0.0.0/8').contains(ipBytes('::ffff:10.0.0.1'))).toBe(true);
    expect(Cidr.parse('fe80::/10').contains(ipBytes('febf::1'))).toBe(true);
    expect(Cidr.parse('fe80::/10').contains(ipBytes('fec0::1'))).toBe(false);
  });
  it('refuses what is not an address or block, and never matches a non-address', () => {
    expect(() => Cidr.parse('10.0.0.0/33')).toThrow();
    expect(() => Cidr.parse('not-an-ip')).toThrow();
    expect(Cidr.parse('0.0.0.0/0').contains(ipBytes(''))).toBe(false);
  });
});

describe('AuthorizationPolicy matchers', () => {
  it('paths: exact, prefix abc*, suffix *abc, presence *, templates', () => {
    expect(allows({ to: [{ paths: ['/exact'] }] }, req({ path: '/exact' }))).toBe(true);
    expect(allows({ to: [{ paths: ['/exact'] }] }, req({ path: '/exact/more' }))).toBe(false);
    expect(allows({ to: [{ paths: ['/api/*'] }] }, req({ path: '/api/v1/items' }))).toBe(true);
    expect(allows({ to: [{ paths: ['/api/*'] }] }, req({ path: '/apix' }))).toBe(false);
    expect(allows({ to: [{ paths: ['*.png'] }] }, req({ path: '/img/a.png' }))).toBe(true);
    expect(allows({ to: [{ paths: ['*.png'] }] }, req({ path: '/img/a.jpg' }))).toBe(false);
    expect(allows({ to: [{ paths: ['*'] }] }, req({ path: '/anything' }))).toBe(true);
    expect(allows({ to: [{ paths: ['/u/{*}/info'] }] }, req({ path: '/u/42/info' }))).toBe(true);
    expect(allows({ to: [{ paths: ['/u/{*}/info'] }] }, req({ path: '/u/4/2/info' }))).toBe(false);
    expect(allows({ to: [{ paths: ['/files/{**}'] }] }, req({ path: '/files/a/b/c' }))).toBe(true);
  });
  it('methods and notMethods', () => {
    expect(allows({ to: [{ methods: ['GET', 'HEAD'] }] }, req({ method: 'HEAD' }))).toBe(true);
    expect(allows({ to: [{ methods: ['GET'] }] }, req({ method: 'POST' }))).toBe(false);
    expect(allows({ to: [{ notMethods: ['DELETE'] }] }, req({ method: 'GET' }))).toBe(true);
    expect(allows({ to: [{ notMethods: ['DELETE'] }] }, req({ method: 'DELETE' }))).toBe(false);
  });
  it('hosts match case-insensitively, with or without the port', () => {
    expect(allows({ to: [{ hosts: ['Shop.Example.com'] }] }, req({ authority: 'shop.example.com:8080' }))).toBe(true);
    expect(allows({ to: [{ hosts: ['*.example.com'] }] }, req({ authority: 'a.EXAMPLE.com:80' }))).toBe(true);
    expect(allows({ to: [{ hosts: ['shop.example.com:8080'] }] }, req({ authority: 'shop.example.com:8080' }))).toBe(true);
    expect(allows({ to: [{ hosts: ['shop.example.com:8080'] }] }, req({ authority: 'shop.example.com:9090' }))).toBe(false);
    expect(allows({ to: [{ notHosts: ['*.internal'] }] }, req({ authority: 'db.internal' }))).toBe(false);
  });
  it('ports, paths and methods in one operation are AND-ed; operations are OR-ed', () => {
    const r: Partial<AuthzRuleConfig> = { to: [{ ports: ['8080'], methods: ['GET'], paths: ['/a'] }, { paths: ['/b'] }] };
    expect(allows(r, req({ path: '/a' }))).toBe(true);
    expect(allows(r, req({ path: '/a', method: 'POST' }))).toBe(false);
    expect(allows(r, req({ path: '/a', localPort: 9090 }))).toBe(false);
    expect(allows(r, req({ path: '/b', method: 'POST', localPort: 9090 }))).toBe(true);
  });
  it('sources: ipBlocks (peer), remoteIpBlocks (client), principals, namespaces, not* forms', () => {
    expect(allows({ from: [{ ipBlocks: ['10.0.0.0/8'] }] }, req({ sourceIp: '10.9.9.9', remoteIp: '203.0.113.9' }))).toBe(true);
    expect(allows({ from: [{ remoteIpBlocks: ['10.0.0.0/8'] }] }, req({ sourceIp: '10.9.9.9', remoteIp: '203.0.113.9' }))).toBe(false);
    expect(allows({ from: [{ remoteIpBlocks: ['203.0.113.0/24'] }] }, req({ remoteIp: '203.0.113.9' }))).toBe(true);
    expect(allows({ from: [{ notRemoteIpBlocks: ['203.0.113.0/24'] }] }, req({ remoteIp: '203.0.113.9' }))).toBe(false);
    expect(allows({ from: [{ remoteIpBlocks: ['2001:db8::/32'] }] }, req({ remoteIp: '2001:db8::7' }))).toBe(true);
    const mtls = req({ sourcePrincipal: 'cluster.local/ns/shop/sa/web', sourceNamespace: 'shop' });
    expect(allows({ from: [{ principals: ['cluster.local/ns/shop/sa/web'] }] }, mtls)).toBe(true);
    expect(allows({ from: [{ principals: ['*/sa/web'] }] }, mtls)).toBe(true);
    expect(allows({ from: [{ principals: ['*'] }] }, req())).toBe(false);
    expect(allows({ from: [{ namespaces: ['shop'] }] }, mtls)).toBe(true);
    expect(allows({ from: [{ notNamespaces: ['shop'] }] }, mtls)).toBe(false);
    expect(allows({ from: [{ notPrincipals: ['cluster.local/ns/x/sa/y'] }] }, req())).toBe(true);
  });
  it('sources: serviceAccounts name namespace/account in any trust domain (Istio\'s regex), trustDomains the identity\'s domain', () => {
    const peer = (p: string): SecurityRequest => req({ sourcePrincipal: p });
    const sa = (values: string[], not = false): Partial<AuthzRuleConfig> => ({ from: [{ [not ? 'notServiceAccounts' : 'serviceAccounts']: values }] });
    expect(allows(sa(['default/sleep']), peer('cluster.local/ns/default/sa/sleep'))).toBe(true);
    expect(allows(sa(['default/sleep']), peer('other.td/ns/default/sa/sleep'))).toBe(true);
    // Extra key/value segments are allowed around sa/<name>, as in Istio's regex; a longer name is not the same account.
    expect(allows(sa(['default/sleep']), peer('cluster.local/ns/default/x/y/sa/sleep/extra/1'))).toBe(true);
    expect(allows(sa(['default/sleep']), peer('cluster.local/ns/default/sa/sleep-v2'))).toBe(false);
    expect(allows(sa(['default/sleep']), peer('cluster.local/ns/prod/sa/sleep'))).toBe(false);
    // Regex metacharacters in names are literal.
    expect(allows(sa(['default/a.b']), peer('cluster.local/ns/default/sa/axb'))).toBe(false);
    // Without mTLS there is no identity: never a match, so notServiceAccounts then matches.
    expect(allows(sa(['default/sleep']), peer(''))).toBe(false);
    expect(allows(sa(['default/sleep'], true), peer(''))).toBe(true);
    expect(allows(sa(['default/sleep'], true), peer('cluster.local/ns/default/sa/sleep'))).toBe(false);
    const td = (values: string[]): Partial<AuthzRuleConfig> => ({ from: [{ trustDomains: values }] });
    expect(allows(td(['cluster.local']), peer('cluster.local/ns/default/sa/sleep'))).toBe(true);
    expect(allows(td(['cluster.local']), peer('cluster.local.evil/ns/default/sa/sleep'))).toBe(false);
    expect(allows(td(['*.example.com']), peer('east.example.com/ns/a/sa/b'))).toBe(true);
    expect(allows(td(['*.example.com']), peer('example.org/ns/a/sa/b'))).toBe(false);
    expect(allows(td(['*']), peer('anything/ns/a/sa/b'))).toBe(true);
    expect(allows(td(['*']), peer(''))).toBe(false);
    // The `when` forms read the same identity.
    expect(allows({ when: [{ key: 'source.serviceAccount', values: ['default/sleep'], not_values: [] }] }, peer('cluster.local/ns/default/sa/sleep'))).toBe(true);
    expect(allows({ when: [{ key: 'source.trustDomain', values: [], not_values: ['cluster.local'] }] }, peer('cluster.local/ns/default/sa/sleep'))).toBe(false);
    expect(allows({ when: [{ key: 'source.trustDomain', values: [], not_values: ['cluster.local'] }] }, peer('other/ns/default/sa/sleep'))).toBe(true);
  });

  it('requestPrincipals and when request.auth.*: absent without a token', () => {
    const auth = jwt({ iss: 'https://issuer', sub: 'alice', aud: ['shop', 'api'], azp: 'web-app' });
    expect(allows({ from: [{ requestPrincipals: ['*'] }] }, req(), null)).toBe(false);
    expect(allows({ from: [{ requestPrincipals: ['*'] }] }, req(), auth)).toBe(true);
    expect(allows({ from: [{ requestPrincipals: ['https://issuer/alice'] }] }, req(), auth)).toBe(true);
    expect(allows({ from: [{ notRequestPrincipals: ['*'] }] }, req(), null)).toBe(true);
    expect(allows({ when: [{ key: 'request.auth.audiences', values: ['api'], not_values: [] }] }, req(), auth)).toBe(true);
    expect(allows({ when: [{ key: 'request.auth.presenter', values: ['web-*'], not_values: [] }] }, req(), auth)).toBe(true);
    expect(allows({ when: [{ key: 'request.auth.principal', values: ['https://issuer/bob'], not_values: [] }] }, req(), auth)).toBe(false);
  });
  it('nested claims [a][b], list claims, and non-string claims', () => {
    const auth = jwt({ iss: 'i', sub: 's', groups: ['dev', 'ops'], realm: { roles: ['admin'], tier: 'gold' }, n: 5 });
    expect(claimPath('[realm][roles]')).toEqual(['realm', 'roles']);
    const when = (key: string, values: string[], not_values: string[] = []) => ({ when: [{ key, values, not_values }] });
    expect(allows(when('request.auth.claims[groups]', ['ops']), req(), auth)).toBe(true);
    expect(allows(when('request.auth.claims[realm][roles]', ['admin']), req(), auth)).toBe(true);
    expect(allows(when('request.auth.claims[realm][tier]', ['gold']), req(), auth)).toBe(true);
    expect(allows(when('request.auth.claims[realm][tier]', ['silver']), req(), auth)).toBe(false);
    expect(allows(when('request.auth.claims[realm][missing]', ['x']), req(), auth)).toBe(false);
    expect(allows(when('request.auth.claims[n]', ['5']), req(), auth)).toBe(false);
    expect(allows(when('request.auth.claims[groups]', [], ['ops']), req(), auth)).toBe(false);
  });
  it('when: headers, ips, ports, sni, namespaces; values and notValues together', () => {
    const r = req({ headers: ['x-env', 'prod', 'x-multi', 'a', 'x-multi', 'b'], sni: 'api.example.com', destinationIp: '192.0.2.1' });
    const when = (key: string, values: string[], not_values: string[] = []) => ({ when: [{ key, values, not_values }] });
    expect(allows(when('request.headers[X-Env]', ['prod']), r)).toBe(true);
    expect(allows(when('request.headers[x-env]', ['pr*']), r)).toBe(true);
    expect(allows(when('request.headers[x-env]', ['*'], ['prod']), r)).toBe(false);
    expect(allows(when('request.headers[x-absent]', ['*']), r)).toBe(false);
    expect(allows(when('request.headers[x-absent]', [], ['x']), r)).toBe(true);
    expect(allows(when('source.ip', ['10.1.0.0/16']), r)).toBe(true);
    expect(allows(when('remote.ip', ['10.2.0.0/16']), r)).toBe(false);
    expect(allows(when('destination.ip', ['192.0.2.0/24']), r)).toBe(true);
    expect(allows(when('destination.port', ['8080']), r)).toBe(true);
    expect(allows(when('connection.sni', ['*.example.com']), r)).toBe(true);
    expect(allows(when('source.namespace', ['shop']), r)).toBe(false);
  });
});

describe('AuthorizationPolicy evaluation order', () => {
  const all = [rule({})];
  it('no policy allows; an ALLOW policy without rules (spec: {}) denies all; rules: [{}] allows all', () => {
    expect(authz({}).evaluate(req(), null).kind).toBe('allow');
    expect(authz({ allow: [policy('deny-all', [])] }).evaluate(req(), null).kind).toBe('deny');
    expect(authz({ allow: [policy('allow-all', all)] }).evaluate(req(), null).kind).toBe('allow');
  });
  it('DENY wins over ALLOW; a DENY without rules matches nothing', () => {
    const a = authz({ allow: [policy('allow-all', all)], deny: [policy('no-admin', [rule({ to: [{ paths: ['/admin*'] }] })])] });
    expect(a.evaluate(req({ path: '/admin/x' }), null)).toEqual({ kind: 'deny', policy: 'default/no-admin' });
    expect(a.evaluate(req({ path: '/shop' }), null).kind).toBe('allow');
    expect(authz({ deny: [policy('empty', [])] }).evaluate(req(), null).kind).toBe('allow');
  });
  it('ALLOW policies: any match allows, none denies', () => {
    const a = authz({ allow: [policy('a', [rule({ to: [{ paths: ['/a'] }] })]), policy('b', [rule({ to: [{ paths: ['/b'] }] })])] });
    expect(a.evaluate(req({ path: '/b' }), null).kind).toBe('allow');
    expect(a.evaluate(req({ path: '/c' }), null).kind).toBe('deny');
  });
  it('AUDIT never decides but is counted', () => {
    const a = authz({ audit: [policy('audit', all)] });
    expect(a.evaluate(req(), null).kind).toBe('allow');
    const b = authz({ audit: [policy('audit', all)], allow: [policy('none', [])] });
    expect(b.evaluate(req(), null).kind).toBe('deny');
    expect(a.auditCounts.get('default/audit')).toBe(1);
  });
  it('CUSTOM first: a matching CUSTOM policy asks its provider; a missing provider denies everything', () => {
    const provider = { name: 'ext', service: '127.0.0.1', port: 1, path_prefix: '', timeout_ms: 1000, fail_open: false, status_on_error: 403, include_request_headers_in_check: [], include_additional_headers_in_check: {}, headers_to_upstream_on_allow: [], headers_to_downstream_on_deny: [], headers_to_downstream_on_allow: [] };
    const a = authz({ custom: [{ ...policy('ext', [rule({ to: [{ paths: ['/ext*'] }] })]), provider }], deny: [policy('d', all)] });
    expect(a.evaluate(req({ path: '/ext/1' }), null).kind).toBe('custom');
    expect(a.evaluate(req({ path: '/ext/1' }), null, true).kind).toBe('deny');
    const b = authz({ custom: [policy('broken', [rule({ to: [{ paths: ['/x'] }] })])] });
    expect(b.evaluate(req({ path: '/other' }), null)).toEqual({ kind: 'deny', policy: 'default/broken' });
  });
});

describe('remote.ip and the PROXY protocol', () => {
  it('numTrustedProxies N: the Nth X-Forwarded-For address from the right, else the peer', () => {
    const h = (xff: string) => ['x-forwarded-for', xff];
    // The listener appended the peer (10.0.0.1) to what the client sent.
    expect(trustedClientAddress(h('203.0.113.5, 198.51.100.2, 10.0.0.1'), 0, '10.0.0.1')).toBe('10.0.0.1');
    expect(trustedClientAddress(h('203.0.113.5, 198.51.100.2, 10.0.0.1'), 1, '10.0.0.1')).toBe('198.51.100.2');
    expect(trustedClientAddress(h('203.0.113.5, 198.51.100.2, 10.0.0.1'), 2, '10.0.0.1')).toBe('203.0.113.5');
    expect(trustedClientAddress(h('203.0.113.5, 198.51.100.2, 10.0.0.1'), 3, '10.0.0.1')).toBe('10.0.0.1');
    expect(trustedClientAddress(h('garbage, 10.0.0.1'), 1, '10.0.0.1')).toBe('10.0.0.1');
  });
  it('parses PROXY v1 and v2 headers, and refuses connections without one', () => {
    const v1 = parseProxyHeader(Buffer.from('PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n'));
    expect(v1).toMatchObject({ kind: 'ok', source: '203.0.113.7', destination: '127.0.0.1', consumed: 42 });
    expect(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::1 ::1 5555 80\r\n'))).toMatchObject({ kind: 'ok', source: '2001:db8::1' });
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4'))).toEqual({ kind: 'incomplete' });
    expect(parseProxyHeader(Buffer.from('GET / HTTP/1.1\r\n')).kind).toBe('invalid');
    const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
    const v2 = Buffer.concat([sig, Buffer.from([0x21, 0x11, 0, 12, 198, 51, 100, 9, 127, 0, 0, 1, 0x11, 0x5c, 0, 80])]);
    expect(parseProxyHeader(v2)).toMatchObject({ kind: 'ok', source: '198.51.100.9', destination: '127.0.0.1', sourcePort: 4444, consumed: 28 });
    expect(parseProxyHeader(v2.subarray(0, 20))).toEqual({ kind: 'incomplete' });
    const local = Buffer.concat([sig, Buffer.from([0x20, 0x00, 0, 0])]);
    expect(parseProxyHeader(local)).toEqual({ kind: 'ok', consumed: 16 });
  });
});

describe('security policy selection (resolve)', () => {
  const res = (kind: string, ns: string, name: string, spec: Record<string, unknown>): Resource => ({
    apiVersion: 'security.istio.io/v1',
    kind,
    metadata: { name, namespace: ns },
    spec,
    source: { file: 'x.yaml', lineOf: () => 1 },
  }) as unknown as Resource;
  const opts = { labels: { istio: 'ingressgateway' }, namespace: 'gw-ns', mesh: { ...DEFAULT_MESH_CONFIG } };

  it('root namespace and the gateway namespace (selector matching) apply; others do not', () => {
    const warnings: string[] = [];
    const sc = buildSecurityConfig(
      [
        res('AuthorizationPolicy', 'istio-system', 'root', { action: 'DENY', rules: [{}] }),
        res('AuthorizationPolicy', 'gw-ns', 'mine', { selector: { matchLabels: { istio: 'ingressgateway' } }, rules: [{}] }),
        res('AuthorizationPolicy', 'gw-ns', 'other-selector', { selector: { matchLabels: { app: 'x' } }, rules: [{}] }),
        res('AuthorizationPolicy', 'default', 'elsewhere', { rules: [{}] }),
        res('AuthorizationPolicy', 'gw-ns', 'targeted', { targetRef: { kind: 'Gateway', name: 'gw' } }),
        res('AuthorizationPolicy', 'gw-ns', 'audit', { action: 'AUDIT', rules: [{}] }),
        res('RequestAuthentication', 'gw-ns', 'jwt', { jwtRules: [{ issuer: 'https://i', jwksUri: 'https://i/jwks', timeout: '2s' }] }),
      ],
      opts,
      (_r, _p, m) => warnings.push(m),
    )!;
    expect(sc.deny.map((p) => p.policy)).toEqual(['istio-system/root']);
    expect(sc.allow.map((p) => p.policy)).toEqual(['gw-ns/mine']);
    expect(sc.audit.map((p) => p.policy)).toEqual(['gw-ns/audit']);
    expect(sc.jwt_rules).toEqual([
      { policy: 'gw-ns/jwt', issuer: 'https://i', audiences: [], jwks_uri: 'https://i/jwks', timeout_ms: 2000, from_headers: [], from_params: [], from_cookies: [], output_claim_to_headers: [], forward_original_token: false },
    ]);
    expect(warnings.join('\n')).toMatch(/targetRef/);
  });

  it('CUSTOM providers come from extensionProviders; a missing one warns and stays unresolved', () => {
    const warnings: string[] = [];
    const mesh = { ...DEFAULT_MESH_CONFIG, extensionProviders: [{ name: 'ext', envoyExtAuthzHttp: { service: 'authz.default.svc.cluster.local', port: 9000, timeout: '2s', includeRequestHeadersInCheck: ['X-User'] } }] };
    const sc = buildSecurityConfig(
      [res('AuthorizationPolicy', 'istio-system', 'ext', { action: 'CUSTOM', provider: { name: 'ext' }, rules: [{}] })],
      { ...opts, mesh },
      (_r, _p, m) => warnings.push(m),
    )!;
    expect(sc.custom[0]!.provider).toMatchObject({ service: 'authz.default.svc.cluster.local', port: 9000, timeout_ms: 2000, status_on_error: 403, fail_open: false, include_request_headers_in_check: ['x-user'] });
    const missing = buildSecurityConfig([res('AuthorizationPolicy', 'istio-system', 'ext', { action: 'CUSTOM', provider: { name: 'nope' }, rules: [{}] })], opts, (_r, _p, m) => warnings.push(m))!;
    expect(missing.custom[0]!.provider).toBeUndefined();
    expect(warnings.join('\n')).toMatch(/"nope" is not defined/);
  });

  it('serviceAccounts without a namespace are in the policy\'s namespace (also in `when`); jwks_uri and spaceDelimitedClaims are carried', () => {
    const sc = buildSecurityConfig(
      [
        res('AuthorizationPolicy', 'gw-ns', 'sa', {
          rules: [{ from: [{ source: { serviceAccounts: ['sleep', 'prod/api'], notServiceAccounts: ['evil'] } }], when: [{ key: 'source.serviceAccount', notValues: ['api'] }] }],
        }),
        res('RequestAuthentication', 'gw-ns', 'jwt', { jwtRules: [{ issuer: 'https://i', jwks_uri: 'https://i/jwks', spaceDelimitedClaims: ['roles'] }] }),
      ],
      opts,
      () => undefined,
    )!;
    expect(sc.allow[0]!.rules[0]).toEqual({
      from: [{ serviceAccounts: ['gw-ns/sleep', 'prod/api'], notServiceAccounts: ['gw-ns/evil'] }],
      to: [],
      when: [{ key: 'source.serviceAccount', values: [], not_values: ['gw-ns/api'] }],
    });
    expect(sc.jwt_rules[0]).toMatchObject({ jwks_uri: 'https://i/jwks', space_delimited_claims: ['roles'] });
    const authz = new CompiledAuthz(sc);
    const decide = (principal: string): string => authz.evaluate(req({ sourcePrincipal: principal }), null).kind;
    expect(decide('cluster.local/ns/gw-ns/sa/sleep')).toBe('allow');
    expect(decide('cluster.local/ns/default/sa/sleep')).toBe('deny'); // sleep means gw-ns/sleep
    expect(decide('cluster.local/ns/prod/sa/api')).toBe('allow'); // the `when` excludes gw-ns/api, not prod/api
    expect(decide('cluster.local/ns/gw-ns/sa/evil')).toBe('deny');
  });

  it('scope and permission claims, and a rule\'s spaceDelimitedClaims, are matched word by word (Envoy\'s payload normalisation)', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256' };
    const iss = 'https://issuer.example.com';
    const jwtRule = { policy: 'gw-ns/ra', issuer: iss, audiences: [], jwks: JSON.stringify({ keys: [jwk] }), timeout_ms: 5000, from_headers: [], from_params: [], from_cookies: [], output_claim_to_headers: [], forward_original_token: false };
    const claimsOf = async (space: string[] | undefined, claims: Record<string, unknown>): Promise<RequestAuth> => {
      const a = createJwtAuthenticator([{ ...jwtRule, ...(space ? { space_delimited_claims: space } : {}) }], createLogger('silent'));
      try {
        const t = await new SignJWT({ iss, sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600, ...claims }).setProtectedHeader({ alg: 'ES256', kid: 'k' }).sign(privateKey);
        const out = await a.authenticate(req({ headers: ['authorization', `Bearer ${t}`] }));
        if (!out.ok || !out.auth) throw new Error('token refused');
        return out.auth;
      } finally {
        a.close();
      }
    };
    const when = (claim: string, values: string[]): Partial<AuthzRuleConfig> => ({ when: [{ key: `request.auth.claims[${claim}]`, values, not_values: [] }] });
    const auth = await claimsOf(undefined, { scope: 'read write', permission: 'a  b', roles: 'admin ops' });
    expect(allows(when('scope', ['write']), req(), auth)).toBe(true);
    expect(allows(when('permission', ['b']), req(), auth)).toBe(true);
    // Not listed: one string, compared whole.
    expect(allows(when('roles', ['ops']), req(), auth)).toBe(false);
    expect(allows(when('roles', ['admin ops']), req(), auth)).toBe(true);
    const listed = await claimsOf(['roles'], { scope: 'read write', roles: 'admin ops' });
    expect(allows(when('roles', ['ops']), req(), listed)).toBe(true);
    expect(allows(when('scope', ['read']), req(), listed)).toBe(true);
  });

  it('nothing to carry without policies and trusted proxies', () => {
    expect(buildSecurityConfig([], opts, () => undefined)).toBeNull();
    const mesh = { ...DEFAULT_MESH_CONFIG, defaultConfig: { gatewayTopology: { numTrustedProxies: 2 } } };
    expect(buildSecurityConfig([], { ...opts, mesh }, () => undefined)?.num_trusted_proxies).toBe(2);
  });
});

describe('SecurityConfig in the snapshot', () => {
  const yaml = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system, annotations: {gatehouse.io/proxy-protocol: "true"}}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ip, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from: [{source: {remoteIpBlocks: ["10.0.0.0/8"]}}]
    to: [{operation: {paths: ["/admin*"], ports: ["8080"]}}]
    when: [{key: "request.auth.claims[a][b]", values: ["x"], notValues: ["y"]}]
`;
  it('rides in HTTP listeners only, with the PROXY protocol flag, and survives xDS (replicas)', () => {
    const { resources, problems } = parseYamlText(yaml, '/etc/gw/cfg.yaml');
    expect(problems).toEqual([]);
    const snap = resolve(resources, { labels: {}, namespace: 'istio-system', bind: '0.0.0.0', mesh: DEFAULT_MESH_CONFIG });
    const http = snap.listeners.find((l) => l.address.socket_address.port_value === 8080)!;
    const tcp = snap.listeners.find((l) => l.address.socket_address.port_value === 9000)!;
    expect(http.metadata.filter_metadata.istio.security?.deny[0]!.rules[0]!.when).toEqual([{ key: 'request.auth.claims[a][b]', values: ['x'], not_values: ['y'] }]);
    expect(http.metadata.filter_metadata.istio.proxy_protocol).toBe(true);
    expect(tcp.metadata.filter_metadata.istio.security).toBeUndefined();
    const back = decodeSnapshotResource(LISTENER_TYPE, encodeSnapshotResource(LISTENER_TYPE, http)) as unknown as typeof http;
    expect(back.metadata.filter_metadata.istio.security).toEqual(JSON.parse(JSON.stringify(http.metadata.filter_metadata.istio.security)));
    expect(back.metadata.filter_metadata.istio.proxy_protocol).toBe(true);
  });
});
