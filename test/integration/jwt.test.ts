// RequestAuthentication through the real gateway, with AuthorizationPolicies that use its result:
// 401 for a bad token (Envoy's bodies), 403 without one where a principal is required, claims
// copied to upstream headers, and a JWKS endpoint that hangs not slowing down tokenless traffic.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWTPayload } from 'jose';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort, http } from '../helpers/net.js';
import { startEcho, type Echo, type EchoBody } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const ISS = 'https://auth.jwt.test';
const ISS_DOWN = 'https://down.jwt.test';
const HOST = 'jwt.test';

let gw: GatewayProcess;
let port: number;
let app: Echo;
let key: CryptoKey;
let otherKey: CryptoKey;
let jwksServer: Server;
let jwksHits = 0;
/** A JWKS endpoint that accepts connections and never answers. */
let hangServer: Server;
let hangHits = 0;

const listen = async (s: Server): Promise<number> => {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return (s.address() as AddressInfo).port;
};

const now = (): number => Math.floor(Date.now() / 1000);
const sign = (claims: JWTPayload, k: CryptoKey = key): Promise<string> =>
  new SignJWT({ iss: ISS, sub: 'alice', aud: 'shop', exp: now() + 600, ...claims }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).sign(k);
const get = (path: string, headers: Record<string, string> = {}): ReturnType<typeof http> => http(port, path, { headers: { host: HOST, ...headers } });
const withToken = (path: string, t: string): ReturnType<typeof http> => get(path, { authorization: `Bearer ${t}` });

beforeAll(async () => {
  const pair = await generateKeyPair('RS256', { extractable: true });
  key = pair.privateKey;
  otherKey = (await generateKeyPair('RS256')).privateKey;
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] });
  jwksServer = createServer((_req, res) => {
    jwksHits++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(jwks);
  });
  hangServer = createServer(() => {
    hangHits++;
  });
  const [jwksPort, hangPort] = [await listen(jwksServer), await listen(hangServer)];
  app = await startEcho('app');
  port = await freePort();
  const selector = { matchLabels: { istio: 'ingressgateway' } };
  gw = await startGateway({
    files: {
      'config.yaml': yamlDocs(
        gateway('gw', port),
        ...service('app', { v1: app.port }),
        virtualService('all', [HOST], [{ route: [dest('app', 'v1')] }]),
        {
          apiVersion: 'security.istio.io/v1',
          kind: 'RequestAuthentication',
          metadata: { name: 'jwt', namespace: 'istio-system' },
          spec: {
            selector,
            jwtRules: [
              {
                issuer: ISS,
                audiences: ['shop'],
                jwksUri: `http://127.0.0.1:${jwksPort}/.well-known/jwks.json`,
                outputPayloadToHeader: 'x-jwt-payload',
                outputClaimToHeaders: [
                  { header: 'x-jwt-sub', claim: 'sub' },
                  { header: 'x-jwt-team', claim: 'team' },
                ],
              },
              { issuer: ISS_DOWN, jwksUri: `http://127.0.0.1:${hangPort}/jwks`, timeout: '500ms' },
            ],
          },
        },
        {
          apiVersion: 'security.istio.io/v1',
          kind: 'AuthorizationPolicy',
          metadata: { name: 'require-jwt', namespace: 'istio-system' },
          spec: {
            selector,
            action: 'ALLOW',
            rules: [
              { to: [{ operation: { paths: ['/public*'] } }] },
              { from: [{ source: { requestPrincipals: ['*'] } }], to: [{ operation: { paths: ['/secure*'] } }] },
              { to: [{ operation: { paths: ['/admin*'] } }], when: [{ key: 'request.auth.claims[groups]', values: ['admin'] }] },
            ],
          },
        },
      ),
    },
  });
}, 30_000);

afterAll(async () => {
  await gw?.stop();
  await app?.close();
  jwksServer?.closeAllConnections();
  hangServer?.closeAllConnections();
  await Promise.all([jwksServer, hangServer].map((s) => new Promise<void>((r) => (s ? s.close(() => r()) : r()))));
});

describe('RequestAuthentication + AuthorizationPolicy through the gateway', () => {
  it('no token: allowed where no principal is required, 403 RBAC where one is', async () => {
    const pub = await get('/public/x');
    expect(pub.status).toBe(200);
    expect((pub.json as EchoBody).headers['x-jwt-sub']).toBeUndefined();
    const sec = await get('/secure/x');
    expect(sec.status).toBe(403);
    expect(sec.text).toBe('RBAC: access denied');
  });

  it('a bad token is a 401 with Envoy’s body and Bearer challenge (403 for a disallowed audience), even where no principal is required', async () => {
    const cases: Array<[Promise<string> | string, string, number]> = [
      ['garbage', 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections', 401],
      [sign({ exp: now() - 3600 }), 'Jwt is expired', 401],
      [sign({}, otherKey), 'Jwt verification fails', 401],
      [sign({ aud: 'elsewhere' }), 'Audiences in Jwt are not allowed', 403],
      [sign({ iss: 'https://stranger.test' }), 'Jwt issuer is not configured', 401],
    ];
    for (const [t, body, status] of cases) {
      for (const path of ['/public/x', '/secure/x']) {
        const r = await withToken(path, await t);
        expect(r.status, `${path} ${body}`).toBe(status);
        expect(r.text).toBe(body);
        if (status === 401) expect(r.headers['www-authenticate']).toMatch(/^Bearer realm="http:\/\/[^"]+", error="invalid_token"$/);
      }
    }
  });

  it('a valid token: 200, the token header stripped, claims and payload sent upstream; spoofed claim headers replaced', async () => {
    const t = await sign({ team: 'blue', groups: ['dev'] });
    const r = await get('/secure/orders', { authorization: `Bearer ${t}`, 'x-jwt-sub': 'mallory' });
    expect(r.status).toBe(200);
    const up = (r.json as EchoBody).headers;
    expect(up.authorization).toBeUndefined();
    expect(up['x-jwt-sub']).toBe('alice');
    expect(up['x-jwt-team']).toBe('blue');
    const payload = JSON.parse(Buffer.from(String(up['x-jwt-payload']), 'base64url').toString('utf8'));
    expect(payload).toMatchObject({ iss: ISS, sub: 'alice', team: 'blue', groups: ['dev'] });
    // The keys were fetched once (at start-up), not per request.
    await withToken('/secure/again', t);
    expect(jwksHits).toBe(1);
  });

  it('request.auth.claims[groups] decides /admin', async () => {
    expect((await withToken('/admin/x', await sign({ groups: ['dev'] }))).status).toBe(403);
    expect((await withToken('/admin/x', await sign({ groups: ['dev', 'admin'] }))).status).toBe(200);
    expect((await get('/admin/x')).status).toBe(403);
  });

  it('a JWKS endpoint that hangs: its tokens get 401 after the timeout, tokenless and other-issuer requests do not wait', async () => {
    const t = await sign({ iss: ISS_DOWN, aud: 'any' });
    const started = Date.now();
    const pending = withToken('/public/x', t);
    const fast: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = Date.now();
      expect((await get('/public/x')).status).toBe(200);
      expect((await withToken('/secure/x', await sign({}))).status).toBe(200);
      fast.push(Date.now() - t0);
    }
    const r = await pending;
    const waited = Date.now() - started;
    expect(r.status).toBe(401);
    expect(r.text).toBe('Jwks remote fetch is failed');
    expect(waited).toBeLessThan(3000);
    expect(Math.max(...fast)).toBeLessThan(400);
    expect(hangHits).toBeGreaterThan(0);
  });
});
