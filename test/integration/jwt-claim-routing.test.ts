// JWT claim based routing through a real gateway (istio.io task "JWT claim based routing"): a
// VirtualService bound to the gateway matches `@request.auth.claims.groups`, RequestAuthentication
// verifies the token first and the route is selected again with its claims, as Envoy does after
// jwt_authn clears the route cache. On the uWS listener (HTTP/1.1 and WebSocket handshakes) and
// on an HTTP2 port (node:http2, h2c and HTTP/1.1 on the same port).
import http2, { type OutgoingHttpHeaders } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWTPayload } from 'jose';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http, type SimpleResponse } from '../helpers/net.js';
import { startEcho, type Echo, type EchoBody } from '../helpers/upstream.js';
import { dest, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const ISS = 'https://auth.claims.test';
const HOST = 'claims.test';

let gw: GatewayProcess;
let uwsPort: number;
let h2Port: number;
let v1: Echo;
let v2: Echo;
let wss: Array<{ server: WebSocketServer; port: number }> = [];
let key: CryptoKey;
let otherKey: CryptoKey;

const now = (): number => Math.floor(Date.now() / 1000);
const sign = (claims: JWTPayload, k: CryptoKey = key): Promise<string> =>
  new SignJWT({ iss: ISS, sub: 'alice', exp: now() + 600, ...claims }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(k);
const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

async function wsUpstream(name: string): Promise<{ server: WebSocketServer; port: number }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => server.once('listening', () => r()));
  server.on('connection', (ws, req) => {
    ws.on('error', () => undefined);
    ws.send(JSON.stringify({ name, url: req.url, authorization: req.headers.authorization ?? null }));
  });
  return { server, port: (server.address() as AddressInfo).port };
}

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true });
  key = pair.privateKey;
  otherKey = (await generateKeyPair('ES256')).privateKey;
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] });
  [v1, v2] = await Promise.all([startEcho('v1'), startEcho('v2')]);
  wss = await Promise.all([wsUpstream('ws-v1'), wsUpstream('ws-v2')]);
  const ports = await freePorts(2);
  uwsPort = ports[0]!;
  h2Port = ports[1]!;
  const admin = { '@request.auth.claims.groups': { exact: 'admin' } };
  gw = await startGateway({
    files: {
      'config.yaml': yamlDocs(
        {
          apiVersion: 'networking.istio.io/v1',
          kind: 'Gateway',
          metadata: { name: 'gw', namespace: 'default' },
          spec: {
            selector: { istio: 'ingressgateway' },
            servers: [
              { port: { number: uwsPort, name: 'http', protocol: 'HTTP' }, hosts: ['*'] },
              { port: { number: h2Port, name: 'http2', protocol: 'HTTP2' }, hosts: ['*'] },
            ],
          },
        },
        ...service('app', { v1: v1.port, v2: v2.port }),
        ...service('wsapp', { v1: wss[0]!.port, v2: wss[1]!.port }),
        virtualService('claims', [HOST], [
          { name: 'ws-admins', match: [{ uri: { prefix: '/ws' }, headers: admin }], route: [dest('wsapp', 'v2')] },
          { name: 'ws', match: [{ uri: { prefix: '/ws' } }], route: [dest('wsapp', 'v1')] },
          { name: 'ws-admins-only', match: [{ uri: { prefix: '/sock-admin' }, headers: admin }], route: [dest('wsapp', 'v2')] },
          { name: 'ws-others', match: [{ uri: { prefix: '/sock-admin' } }], directResponse: { status: 403, body: { string: 'admins only' } } },
          { name: 'admins', match: [{ headers: admin }], route: [dest('app', 'v2')] },
          // Only for admins: without the claim there is no route at all.
          { name: 'admin-only', match: [{ uri: { prefix: '/admin-only' }, headers: admin }], route: [dest('app', 'v2')] },
          { name: 'no-route', match: [{ uri: { prefix: '/admin-only' } }], directResponse: { status: 404, body: { string: 'admins only' } } },
          // Routing on a header that authentication writes from a claim (outputClaimToHeaders).
          { name: 'team', match: [{ uri: { prefix: '/team' }, headers: { 'x-team': { exact: 'blue' } } }], route: [dest('app', 'v2')] },
          { name: 'everyone', route: [dest('app', 'v1')] },
        ]),
        {
          apiVersion: 'security.istio.io/v1',
          kind: 'RequestAuthentication',
          metadata: { name: 'jwt', namespace: 'istio-system' },
          spec: {
            selector: { matchLabels: { istio: 'ingressgateway' } },
            jwtRules: [{ issuer: ISS, jwks, outputClaimToHeaders: [{ header: 'x-team', claim: 'team' }] }],
          },
        },
      ),
    },
  });
}, 30_000);

afterAll(async () => {
  await gw?.stop();
  await Promise.all([v1?.close(), v2?.close(), ...wss.map((w) => new Promise<void>((r) => w.server.close(() => r())))]);
});

/** The upstream that answered (`v1`/`v2`), or the status when the gateway answered itself. */
const who = (r: SimpleResponse | H2Answer): string => (r.status === 200 && r.json ? (r.json as EchoBody).name : String(r.status));

interface H2Answer {
  status: number;
  json: unknown;
  text: string;
}

async function h2(path: string, headers: Record<string, string> = {}, body?: string): Promise<H2Answer> {
  const session = http2.connect(`http://127.0.0.1:${h2Port}`);
  try {
    return await new Promise<H2Answer>((resolve, reject) => {
      const req = session.request({ ':method': body === undefined ? 'GET' : 'POST', ':path': path, ':authority': HOST, ...headers } as OutgoingHttpHeaders, { endStream: body === undefined });
      let status = 0;
      const chunks: Buffer[] = [];
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status, json, text });
      });
      req.on('error', reject);
      if (body !== undefined) req.end(body);
    });
  } finally {
    session.close();
  }
}

/** Each way a client reaches the gateway: uWS HTTP/1.1, and HTTP/2 and HTTP/1.1 on the HTTP2 port. */
const engines: Array<[string, (path: string, headers?: Record<string, string>, body?: string) => Promise<SimpleResponse | H2Answer>]> = [
  ['uWS HTTP/1.1', (path, headers = {}, body) => http(uwsPort, path, { method: body === undefined ? 'GET' : 'POST', headers: { host: HOST, ...headers }, ...(body !== undefined ? { body } : {}) })],
  ['HTTP2 port, h2c', (path, headers, body) => h2(path, headers, body)],
  ['HTTP2 port, HTTP/1.1', (path, headers = {}, body) => http(h2Port, path, { method: body === undefined ? 'GET' : 'POST', headers: { host: HOST, ...headers }, ...(body !== undefined ? { body } : {}) })],
];

describe.each(engines)('JWT claim routing: %s', (_name, send) => {
  it('a token with groups [admin] routes to v2; other groups, a string claim that differs, or no token to v1', async () => {
    expect(who(await send('/', bearer(await sign({ groups: ['admin'] }))))).toBe('v2');
    expect(who(await send('/', bearer(await sign({ groups: ['dev', 'admin'] }))))).toBe('v2');
    expect(who(await send('/', bearer(await sign({ groups: 'admin' }))))).toBe('v2');
    expect(who(await send('/', bearer(await sign({ groups: ['dev'] }))))).toBe('v1');
    expect(who(await send('/', bearer(await sign({ groups: 'administrators' }))))).toBe('v1');
    expect(who(await send('/', bearer(await sign({}))))).toBe('v1');
    expect(who(await send('/'))).toBe('v1');
  });

  it('an invalid token is 401 as without claim routing (expired, bad signature), never routed', async () => {
    for (const t of [await sign({ groups: ['admin'], exp: now() - 3600 }), await sign({ groups: ['admin'] }, otherKey), 'not-a-jwt']) {
      const r = await send('/', bearer(t));
      expect(r.status).toBe(401);
    }
    expect(v2.requests.some((r) => r.headers.authorization !== undefined)).toBe(false);
  });

  it('a route only admins have: their request (with its body) reaches v2, anyone else gets the fallback', async () => {
    const r = await send('/admin-only/x', bearer(await sign({ groups: ['admin'] })), 'payload for admins');
    expect(who(r)).toBe('v2');
    expect((r.json as EchoBody).body).toBe('payload for admins');
    const other = await send('/admin-only/x', bearer(await sign({ groups: ['dev'] })), 'payload');
    expect(other.status).toBe(404);
    expect(other.text).toBe('admins only');
  });

  it('a header written from a claim (outputClaimToHeaders) routes; the same header sent by the client does not', async () => {
    expect(who(await send('/team', bearer(await sign({ team: 'blue' }))))).toBe('v2');
    expect(who(await send('/team', bearer(await sign({ team: 'red' }))))).toBe('v1');
    expect(who(await send('/team', { 'x-team': 'blue' }))).toBe('v1');
    const spoof = await send('/team', { ...bearer(await sign({})), 'x-team': 'blue' });
    expect(who(spoof)).toBe('v1');
    expect((spoof.json as EchoBody).headers['x-team']).toBeUndefined();
  });
});

describe('JWT claim routing: WebSocket handshakes (uWS)', () => {
  function open(path: string, headers: Record<string, string> = {}): Promise<{ status: number; first?: { name: string }; body?: string }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${uwsPort}${path}`, { headers: { host: HOST, ...headers } });
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => {
          ws.terminate();
          resolve({ status: res.statusCode ?? 0, body });
        });
      });
      ws.once('message', (data: Buffer) => {
        ws.close();
        resolve({ status: 101, first: JSON.parse(data.toString()) as { name: string } });
      });
      ws.on('error', (e) => reject(e));
    });
  }

  it('the upgrade goes where the claims say: admins to v2, others and tokenless to v1; an invalid token is 401', async () => {
    expect((await open('/ws', bearer(await sign({ groups: ['admin'] })))).first?.name).toBe('ws-v2');
    expect((await open('/ws', bearer(await sign({ groups: ['dev'] })))).first?.name).toBe('ws-v1');
    expect((await open('/ws')).first?.name).toBe('ws-v1');
    expect((await open('/ws', bearer(await sign({ groups: ['admin'] }, otherKey)))).status).toBe(401);
  });

  it('a WebSocket route only admins have: admins are upgraded (though the first match without claims was a direct response), others get that response', async () => {
    expect((await open('/sock-admin', bearer(await sign({ groups: ['admin'] })))).first?.name).toBe('ws-v2');
    expect(await open('/sock-admin', bearer(await sign({ groups: ['dev'] })))).toEqual({ status: 403, body: 'admins only' });
    expect(await open('/sock-admin')).toEqual({ status: 403, body: 'admins only' });
  });
});
