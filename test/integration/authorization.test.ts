// AuthorizationPolicy through the real gateway: ALLOW / DENY / CUSTOM as Istio evaluates them,
// policy scope (root namespace, the gateway's namespace and selector), remote.ip from
// X-Forwarded-For with numTrustedProxies and from the PROXY protocol (v1, v2), an external
// authorizer on loopback, gRPC denials, and `gatehouse validate` on bad policies.
import * as grpc from '@grpc/grpc-js';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { stringify } from 'yaml';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { IncomingMessage } from 'node:http';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDir, runCli, startGateway, tempConfigDir, type GatewayProcess } from '../helpers/gateway.js';
import { rawService } from '../helpers/grpc.js';
import { freePorts, http, rawExchange, rawStatus, waitFor } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

const GW_NS = 'gw-ns';

function ap(name: string, namespace: string, spec: Obj): Obj {
  return { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace }, spec };
}
const paths = (...p: string[]): Obj => ({ to: [{ operation: { paths: p } }] });
const selector = { matchLabels: { istio: 'ingressgateway' } };

/** The mesh config as a ConfigMap `istio` (reloadable, unlike --mesh-config). */
function meshConfigMap(mesh: Obj): Obj {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'istio', namespace: 'istio-system' }, data: { mesh: stringify(mesh) } };
}

interface AuthzServer {
  port: number;
  server: Server;
  seen: Array<{ method: string; url: string; headers: IncomingHttpHeaders }>;
}

/** An external authorizer: `deny` in the path → 401 with a body and headers; else 200 with headers. */
async function startAuthz(): Promise<AuthzServer> {
  const a: AuthzServer = { port: 0, server: createServer(), seen: [] };
  a.server.on('request', (req, res) => {
    a.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if ((req.url ?? '').includes('slow')) {
      setTimeout(() => {
        res.writeHead(200);
        res.end();
      }, 300);
      return;
    }
    if ((req.url ?? '').includes('deny')) {
      res.writeHead(401, { 'x-ext-reason': 'nope', 'x-not-listed': '1', 'content-type': 'text/plain' });
      res.end('denied by ext');
      return;
    }
    res.writeHead(200, { 'x-ext-user': 'alice', 'x-ext-resp': 'seen', 'x-ext-other': 'no' });
    res.end();
  });
  await new Promise<void>((r) => a.server.listen(0, '127.0.0.1', r));
  a.port = (a.server.address() as AddressInfo).port;
  return a;
}

const GRPC = rawService({ Unary: '/echo.Echo/Unary' });
const GrpcClient = grpc.makeGenericClientConstructor(GRPC, 'Echo');

let echo: Echo;
let authz: AuthzServer;
let gw: GatewayProcess;
let port: number;
let proxyPort: number;
let grpcPort: number;
/** Signs a JWT for the RequestAuthentication below (issuer https://issuer.test). */
let sign: (claims: Record<string, unknown>) => Promise<string>;

beforeAll(async () => {
  echo = await startEcho('app');
  authz = await startAuthz();
  [port, proxyPort, grpcPort] = (await freePorts(3)) as [number, number, number];
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256' };
  sign = (claims) => new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuer('https://issuer.test').setSubject('alice').setExpirationTime('5m').sign(privateKey);
  const proxyGw = gateway('gw-proxy', proxyPort);
  (proxyGw.metadata as Obj).annotations = { 'gatehouse.io/proxy-protocol': 'true' };
  const grpcGw = { ...gateway('gw-grpc', grpcPort), spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: grpcPort, name: 'grpc', protocol: 'GRPC' }, hosts: ['*'] }] } };
  const docs: Obj[] = [
    gateway('gw', port),
    proxyGw,
    grpcGw,
    ...service('app', { v1: echo.port }),
    virtualService('app', ['*'], [{ route: [dest('app')] }], { gateways: ['gw', 'gw-proxy', 'gw-grpc'] }),
    meshConfigMap({
      defaultConfig: { gatewayTopology: { numTrustedProxies: 1 } },
      extensionProviders: [
        {
          name: 'ext',
          envoyExtAuthzHttp: {
            service: '127.0.0.1',
            port: authz.port,
            pathPrefix: '/check',
            timeout: '2s',
            includeRequestHeadersInCheck: ['x-user'],
            headersToUpstreamOnAllow: ['x-ext-user'],
            headersToDownstreamOnAllow: ['x-ext-resp'],
            headersToDownstreamOnDeny: ['x-ext-reason'],
          },
        },
      ],
    }),
    ap('root-deny', 'istio-system', { action: 'DENY', rules: [paths('/public/root-denied*')] }),
    ap('allow', GW_NS, {
      selector,
      rules: [
        paths('/public*'),
        { to: [{ operation: { methods: ['POST'], paths: ['/post-only'] } }] },
        { ...paths('/hdr'), when: [{ key: 'request.headers[x-token]', values: ['secret'] }] },
        { from: [{ source: { remoteIpBlocks: ['203.0.113.0/24'] } }], ...paths('/remote') },
        paths('/ext/*'),
        paths('/echo.Echo/*'),
        { ...paths('/claims'), when: [{ key: 'request.auth.claims[realm][roles]', values: ['admin'] }] },
      ],
    }),
    { apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'jwt', namespace: GW_NS }, spec: { selector, jwtRules: [{ issuer: 'https://issuer.test', jwks: JSON.stringify({ keys: [jwk] }) }] } },
    ap('deny-secret', GW_NS, { action: 'DENY', rules: [paths('/public/secret')] }),
    ap('deny-grpc', GW_NS, { action: 'DENY', rules: [{ to: [{ operation: { paths: ['/echo.Echo/*'], ports: [String(grpcPort)] } }] }] }),
    ap('ext', GW_NS, { action: 'CUSTOM', provider: { name: 'ext' }, rules: [paths('/ext/*')] }),
    // Not for this gateway: another namespace, and a selector that does not match its labels.
    ap('elsewhere', 'default', { action: 'DENY', rules: [{}] }),
    ap('other-workload', GW_NS, { selector: { matchLabels: { app: 'other' } }, rules: [{}] }),
  ];
  gw = await startGateway({ files: { 'config.yaml': yamlDocs(...docs) }, args: ['--namespace', GW_NS] });
});

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
  authz?.server.close();
});

const get = (path: string, opts: Parameters<typeof http>[2] = {}, p = port) => http(p, path, { ...opts, headers: { host: 'shop.test', ...(opts.headers ?? {}) } });

describe('ALLOW and DENY policies', () => {
  it('allows by path and denies what no ALLOW policy matches with 403 RBAC: access denied', async () => {
    const ok = await get('/public/items');
    expect(ok.status).toBe(200);
    expect(ok.json.name).toBe('app');
    const denied = await get('/private');
    expect(denied.status).toBe(403);
    expect(denied.text).toBe('RBAC: access denied');
    expect(denied.headers.server).toBe('istio-envoy');
  });

  it('allows by method and by header condition', async () => {
    expect((await get('/post-only', { method: 'POST', body: 'x' })).status).toBe(200);
    expect((await get('/post-only')).status).toBe(403);
    expect((await get('/hdr', { headers: { 'x-token': 'secret' } })).status).toBe(200);
    expect((await get('/hdr', { headers: { 'x-token': 'guess' } })).status).toBe(403);
  });

  it('DENY wins over ALLOW; a root-namespace policy applies to the gateway', async () => {
    expect((await get('/public/secret')).status).toBe(403);
    expect((await get('/public/root-denied/x')).status).toBe(403);
  });

  it('ignores policies of other namespaces and of other workloads (selector)', async () => {
    // `elsewhere` would deny all; `other-workload` would allow all.
    expect((await get('/public/a')).status).toBe(200);
    expect((await get('/nothing')).status).toBe(403);
  });

  it('denies before routing: a host without a route gets 403, not 404', async () => {
    const r = await http(port, '/nothing', { headers: { host: 'unknown.test' } });
    expect(r.status).toBe(403);
  });

  it('reports denials in istio_requests_total with response_code 403', async () => {
    await get('/private');
    const m = await gw.admin('/stats/prometheus');
    expect(m.text).toMatch(/istio_requests_total\{[^}]*response_code="403"[^}]*\} [1-9]/);
  });
});

describe('with RequestAuthentication', () => {
  it('when request.auth.claims[realm][roles] allows a token with the nested claim, and only it', async () => {
    const admin = await sign({ realm: { roles: ['admin', 'dev'] } });
    const dev = await sign({ realm: { roles: ['dev'] } });
    const before = echo.requests.length;
    expect((await get('/claims', { headers: { authorization: `Bearer ${admin}` } })).status).toBe(200);
    // The token is not forwarded (forwardOriginalToken false).
    expect(echo.requests.slice(before).at(-1)!.headers.authorization).toBeUndefined();
    expect((await get('/claims', { headers: { authorization: `Bearer ${dev}` } })).status).toBe(403);
    expect((await get('/claims')).status).toBe(403);
    expect((await get('/public/x', { headers: { authorization: 'Bearer not.a.jwt' } })).status).toBe(401);
  });
});

describe('WebSocket upgrades', () => {
  it('a denied upgrade gets 403 before anything goes upstream', async () => {
    const before = echo.requests.length;
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/private`, { headers: { host: 'shop.test' } });
      ws.on('unexpected-response', (_req, res) => {
        resolve(res.statusCode ?? 0);
        ws.terminate();
      });
      ws.on('open', () => reject(new Error('upgraded')));
      ws.on('error', () => undefined);
    });
    expect(status).toBe(403);
    expect(echo.requests.length).toBe(before);
  });

  it("an upgrade the external authorizer allows carries its headersToDownstreamOnAllow, and the upstream its headersToUpstreamOnAllow, as an HTTP request's", async () => {
    const before = echo.requests.length;
    // The upstream is a plain HTTP echo: it answers the upgrade 200, relayed to the client.
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ext/ws`, { headers: { host: 'shop.test' } });
      ws.on('unexpected-response', (_req, r) => {
        resolve(r);
        ws.terminate();
      });
      ws.on('open', () => reject(new Error('upgraded')));
      ws.on('error', () => undefined);
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-ext-resp']).toBe('seen');
    expect(echo.requests.slice(before).at(-1)!.headers['x-ext-user']).toBe('alice');
  });
});

describe('remote.ip', () => {
  it('numTrustedProxies 1: remoteIpBlocks read the last X-Forwarded-For address', async () => {
    expect((await get('/remote', { headers: { 'x-forwarded-for': '203.0.113.9' } })).status).toBe(200);
    expect((await get('/remote', { headers: { 'x-forwarded-for': '203.0.113.9, 198.51.100.1' } })).status).toBe(403);
    expect((await get('/remote')).status).toBe(403);
  });

  const request = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n`;

  it('PROXY protocol v1: the PROXY source is the client', async () => {
    const before = echo.requests.length;
    const ok = await rawExchange(proxyPort, `PROXY TCP4 203.0.113.7 127.0.0.1 5555 ${proxyPort}\r\n${request('/remote')}`, { timeoutMs: 3000 });
    expect(rawStatus(ok.data)).toBe(200);
    expect(echo.requests.slice(before).some((r) => String(r.headers['x-forwarded-for']).includes('203.0.113.7'))).toBe(true);
    const denied = await rawExchange(proxyPort, `PROXY TCP4 198.51.100.7 127.0.0.1 5555 ${proxyPort}\r\n${request('/remote')}`, { timeoutMs: 3000 });
    expect(rawStatus(denied.data)).toBe(403);
  });

  it('PROXY protocol v2 (binary), and no header at all closes the connection', async () => {
    const v2 = (src: number[]): Buffer =>
      Buffer.concat([
        Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0, 12, ...src, 127, 0, 0, 1, 0x11, 0x5c, proxyPort >> 8, proxyPort & 0xff]),
        Buffer.from(request('/remote')),
      ]);
    expect(rawStatus((await rawExchange(proxyPort, v2([203, 0, 113, 8]), { timeoutMs: 3000 })).data)).toBe(200);
    expect(rawStatus((await rawExchange(proxyPort, v2([198, 51, 100, 8]), { timeoutMs: 3000 })).data)).toBe(403);
    const none = await rawExchange(proxyPort, request('/public/x'), { timeoutMs: 3000 });
    expect(rawStatus(none.data)).toBe(0);
    expect(none.closed).toBe(true);
  });
});

describe('CUSTOM (external authorizer)', () => {
  it('allows on 200, with the listed headers checked, sent upstream and returned to the client', async () => {
    const before = echo.requests.length;
    authz.seen.length = 0;
    const r = await get('/ext/ok?q=1', { headers: { 'x-user': 'bob', 'x-private': 'no' } });
    expect(r.status).toBe(200);
    expect(r.headers['x-ext-resp']).toBe('seen');
    const up = echo.requests.slice(before).at(-1)!;
    expect(up.headers['x-ext-user']).toBe('alice');
    expect(up.headers['x-ext-other']).toBeUndefined();
    const check = authz.seen.at(-1)!;
    expect(check.method).toBe('GET');
    expect(check.url).toBe('/check/ext/ok?q=1');
    expect(check.headers['x-user']).toBe('bob');
    expect(check.headers['x-private']).toBeUndefined();
    expect(check.headers.host).toBe('shop.test');
  });

  it('denies with the authorizer status, body and listed headers', async () => {
    const r = await get('/ext/deny');
    expect(r.status).toBe(401);
    expect(r.text).toBe('denied by ext');
    expect(r.headers['x-ext-reason']).toBe('nope');
    expect(r.headers['x-not-listed']).toBeUndefined();
  });

  it('holds a request body while the authorizer decides, then forwards it whole', async () => {
    const body = 'x'.repeat(200_000);
    const r = await get('/ext/body', { method: 'POST', body });
    expect(r.status).toBe(200);
    expect(r.json.bodyLength).toBe(body.length);
  });

  it('a client that goes away while the authorizer decides is let go; the gateway keeps serving', async () => {
    for (const p of [port, grpcPort]) {
      const before = echo.requests.length;
      await expect(get('/ext/slow', { method: 'POST', body: 'abc', timeoutMs: 100 }, p)).rejects.toThrow();
      await new Promise((r) => setTimeout(r, 400));
      expect(echo.requests.length).toBe(before);
      expect((await get('/public/after', {}, p)).status).toBe(200);
    }
  });

  it('is not asked for requests its policy does not match', async () => {
    authz.seen.length = 0;
    expect((await get('/public/q')).status).toBe(200);
    expect(authz.seen.length).toBe(0);
  });
});

describe('gRPC', () => {
  it('a denied call gets PERMISSION_DENIED with the RBAC message', async () => {
    const client = new GrpcClient(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'shop.test' }) as unknown as Record<string, (...a: unknown[]) => unknown> & grpc.Client;
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) => client.Unary!(Buffer.from('hi'), (e: grpc.ServiceError | null) => resolve(e)));
      expect(err?.code).toBe(grpc.status.PERMISSION_DENIED);
      expect(err?.details).toBe('RBAC: access denied');
    } finally {
      client.close();
    }
  });
});

describe('whole-gateway policies, changed at run time', () => {
  let g: GatewayProcess;
  let p: number;
  let deadPort: number;
  let e: Echo;
  const base = (): Obj[] => [gateway('gw', p), ...service('app', { v1: e.port }), virtualService('app', ['*'], [{ route: [dest('app')] }])];
  const withPolicy = (spec: Obj, mesh: Obj = {}): string => yamlDocs(...base(), meshConfigMap(mesh), ap('policy', 'istio-system', spec));
  const ext = (extra: Obj): Obj => ({ extensionProviders: [{ name: 'down', envoyExtAuthzHttp: { service: '127.0.0.1', port: deadPort, timeout: '500ms', ...extra } }] });
  const status = async (): Promise<number> => (await http(p, '/x', { headers: { host: 'a.test' } })).status;

  beforeAll(async () => {
    e = await startEcho('e');
    [p, deadPort] = (await freePorts(2)) as [number, number];
    g = await startGateway({ files: { 'config.yaml': withPolicy({}) } });
  });
  afterAll(async () => {
    await g?.stop();
    await e?.close();
  });

  it('`spec: {}` denies everything; `rules: [{}]` allows everything', async () => {
    expect(await status()).toBe(403);
    g.writeFile('config.yaml', withPolicy({ rules: [{}] }));
    await waitFor(async () => (await status()) === 200, 5000);
  });

  it('an unreachable authorizer: statusOnError, or allowed with failOpen', async () => {
    g.writeFile('config.yaml', withPolicy({ action: 'CUSTOM', provider: { name: 'down' }, rules: [{}] }, ext({ statusOnError: '503' })));
    await waitFor(async () => (await status()) === 503, 5000);
    g.writeFile('config.yaml', withPolicy({ action: 'CUSTOM', provider: { name: 'down' }, rules: [{}] }, ext({ failOpen: true })));
    await waitFor(async () => (await status()) === 200, 5000);
  });

  it('a CUSTOM policy naming a missing provider denies (fails closed) and says why', async () => {
    g.writeFile('config.yaml', withPolicy({ action: 'CUSTOM', provider: { name: 'missing' }, rules: [{ to: [{ operation: { paths: ['/never'] } }] }] }));
    await waitFor(async () => (await status()) === 403, 5000);
    expect(g.logs()).toMatch(/extension provider \\?"missing\\?" is not defined/);
  });
});

describe('gatehouse validate', () => {
  it('reports a bad CIDR with file:line, and warns that an experimental when key matches nothing here', async () => {
    const text = yamlDocs(
      ap('bad', 'default', {
        rules: [
          {
            from: [{ source: { ipBlocks: ['10.0.0.0/33'] } }],
            when: [
              { key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: ['x'] },
              { key: 'remote.ip', values: ['not-an-ip'] },
            ],
          },
        ],
      }),
    );
    const dir = tempConfigDir({ 'policy.yaml': text });
    try {
      const r = await runCli(['validate', dir]);
      expect(r.code).toBe(1);
      const lines = r.stdout.trim().split('\n');
      expect(lines.some((l) => /policy\.yaml:\d+: AuthorizationPolicy\/default\/bad: spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: invalid address "10\.0\.0\.0\/33"/.test(l))).toBe(true);
      // Valid Istio (Envoy filter metadata): a warning, as Gatehouse has no such metadata to match.
      expect(lines.some((l) => /policy\.yaml:\d+: AuthorizationPolicy\/default\/bad: spec\.rules\[0\]\.when\[0\]\.key: warning: condition key .* never match/.test(l))).toBe(true);
      expect(lines.some((l) => /policy\.yaml:\d+: AuthorizationPolicy\/default\/bad: spec\.rules\[0\]\.when\[1\]\.values\[0\]: invalid address "not-an-ip"/.test(l))).toBe(true);
    } finally {
      removeDir(dir);
    }
  });
});
