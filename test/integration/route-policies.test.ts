// VirtualService route policies as Envoy applies them for Istio: fault injection (DI/FI, missing
// percentage = 0%, no retries/timeout on a faulty route), CORS (preflights answered by the gateway,
// disallowed origins get no allow-origin), mirroring (fire-and-forget, same Host, bounded bodies),
// delegation, and redirect derivePort; on every downstream engine (test/helpers/engines.ts).
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { ENGINES, ENGINE_GATEWAYS, EngineSet, checkSkipTable, itOn, type EngineClient, type SkipTable } from '../helpers/engines.js';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { http, sleep, waitFor } from '../helpers/net.js';
import { pattern, sha256, startEcho, type Echo } from '../helpers/upstream.js';
import { dest, service, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

let gw: GatewayProcess;
const engines = new EngineSet();
let app: Echo;
let shadow: Echo;
let shadow2: Echo;
/** A mirror target that takes 2 s to answer anything. */
let slowShadow: Server;
let slowShadowPort = 0;
let slowShadowSeen = 0;
let v2: Echo;

const HOST = 'policies.test';

beforeAll(async () => {
  [app, shadow, shadow2, v2] = await Promise.all([startEcho('app'), startEcho('shadow'), startEcho('shadow2'), startEcho('v2')]);
  slowShadow = createServer((_req, res) => {
    slowShadowSeen++;
    setTimeout(() => res.end('late'), 2000).unref();
  });
  await new Promise<void>((r) => slowShadow.listen(0, '127.0.0.1', () => r()));
  slowShadowPort = (slowShadow.address() as AddressInfo).port;
  const gateways = await engines.gateways();
  const cors: Obj = {
    allowOrigins: [{ exact: 'https://shop.example.com' }, { regex: 'https://.*\\.partner\\.example' }],
    allowMethods: ['GET', 'POST'],
    allowHeaders: ['x-token', 'content-type'],
    exposeHeaders: ['x-trace'],
    maxAge: '1h',
    allowCredentials: true,
  };
  gw = await startGateway({
    files: {
      'config.yaml': yamlDocs(
        ...gateways,
        ...service('app', { v1: app.port, v2: v2.port }),
        ...service('shadow', { v1: shadow.port }),
        ...service('shadow2', { v1: shadow2.port }),
        ...service('slowshadow', { v1: slowShadowPort }),
        virtualService('policies', [HOST], [
          { match: [{ uri: { prefix: '/abort-all' } }], fault: { abort: { httpStatus: 418, percentage: { value: 100 } } }, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/abort-none' } }], fault: { abort: { httpStatus: 418 } }, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/abort-grpc' } }], fault: { abort: { grpcStatus: 'UNAVAILABLE', percentage: { value: 100 } } }, route: [dest('app', 'v1')] },
          {
            match: [{ uri: { prefix: '/delay-abort' } }],
            fault: { delay: { fixedDelay: '100ms', percentage: { value: 100 } }, abort: { httpStatus: 503, percentage: { value: 100 } } },
            route: [dest('app', 'v1')],
          },
          { match: [{ uri: { prefix: '/delay' } }], fault: { delay: { fixedDelay: '300ms', percentage: { value: 100 } } }, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/fault-timeout' } }], timeout: '50ms', fault: { delay: { fixedDelay: '10ms', percentage: { value: 100 } } }, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/half-abort' } }], fault: { abort: { httpStatus: 500, percentage: { value: 50 } } }, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/cors-ignore' } }], corsPolicy: { ...cors, unmatchedPreflights: 'IGNORE' }, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/cors' } }], corsPolicy: cors, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/mirror-two' } }], mirrors: [{ destination: { host: 'shadow' } }, { destination: { host: 'shadow2' }, percentage: { value: 100 } }], route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/mirror-none' } }], mirror: { host: 'shadow' }, mirrorPercentage: { value: 0 }, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/mirror-slow' } }], mirror: { host: 'slowshadow' }, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/mirror' } }], mirror: { host: 'shadow' }, route: [dest('app', 'v1')] },
          { match: [{ uri: { prefix: '/api' } }], delegate: { name: 'api-routes' } },
          { match: [{ uri: { prefix: '/keep-port' } }], redirect: { authority: 'elsewhere.test', derivePort: 'FROM_REQUEST_PORT' } },
          { match: [{ uri: { prefix: '/default-port' } }], redirect: { authority: 'elsewhere.test:9999', scheme: 'https', derivePort: 'FROM_PROTOCOL_DEFAULT' } },
        ], { gateways: ENGINE_GATEWAYS }),
        {
          apiVersion: 'networking.istio.io/v1',
          kind: 'VirtualService',
          metadata: { name: 'api-routes', namespace: 'default' },
          spec: {
            http: [
              { match: [{ uri: { prefix: '/api/v2' } }], route: [dest('app', 'v2')] },
              { match: [{ uri: { prefix: '/other' } }], route: [dest('app', 'v2')] },
              { headers: { request: { set: { 'x-delegated': 'yes' } } }, route: [dest('app', 'v1')] },
            ],
          },
        },
      ),
    },
  });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([app, shadow, shadow2, v2].map((e) => e?.close()));
  slowShadow?.closeAllConnections();
  await new Promise<void>((r) => (slowShadow ? slowShadow.close(() => r()) : r()));
  engines.close();
});

async function flagsCount(flags: string): Promise<number> {
  const r = await http(gw.adminPort, '/stats/prometheus');
  return sumSamples(findSamples(parsePrometheus(r.text), 'istio_requests_total', { response_flags: flags }));
}

const SKIPS: SkipTable = {};

describe.each(ENGINES)('%s', (name) => {
  const e: EngineClient = engines.clients[name];
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET', body?: string | Buffer): ReturnType<typeof http> =>
    e.request(path, { method, headers: { host: HOST, ...headers }, ...(body !== undefined ? { body } : {}) });

  describe('fault injection', () => {
    itOn(e, SKIPS, 'aborts with the configured status and flag FI, without reaching the upstream', async () => {
      const before = app.requests.length;
      const r = await get('/abort-all');
      expect(r.status).toBe(418);
      expect(r.text).toBe('fault filter abort');
      expect(app.requests.length).toBe(before);
      expect(await flagsCount('FI')).toBeGreaterThanOrEqual(1);
    });

    itOn(e, SKIPS, 'a missing percentage means 0%: nothing is aborted (current Istio)', async () => {
      for (let i = 0; i < 10; i++) expect((await get('/abort-none')).status).toBe(200);
    });

    itOn(e, SKIPS, 'aborts a share of requests close to the percentage', async () => {
      const codes = await Promise.all(Array.from({ length: 200 }, () => get('/half-abort').then((r) => r.status)));
      const aborted = codes.filter((c) => c === 500).length;
      expect(aborted).toBeGreaterThan(60);
      expect(aborted).toBeLessThan(140);
      expect(codes.filter((c) => c !== 500 && c !== 200)).toEqual([]);
    });

    itOn(e, SKIPS, 'gRPC aborts answer 200 with grpc-status', async () => {
      const r = await get('/abort-grpc');
      expect(r.status).toBe(200);
      expect(r.headers['grpc-status']).toBe('14');
      expect(r.headers['content-type']).toBe('application/grpc');
    });

    itOn(e, SKIPS, 'delays by fixedDelay, flag DI, then forwards (a request body waits too)', async () => {
      const t0 = performance.now();
      const r = await get('/delay', { 'content-type': 'text/plain' }, 'POST', 'held body');
      const took = performance.now() - t0;
      expect(r.status).toBe(200);
      expect(r.json.body).toBe('held body');
      expect(took).toBeGreaterThanOrEqual(290);
      expect(await flagsCount('DI')).toBeGreaterThanOrEqual(1);
    });

    itOn(e, SKIPS, 'delay then abort reports both flags DI,FI', async () => {
      const before = await flagsCount('DI,FI');
      const r = await get('/delay-abort');
      expect(r.status).toBe(503);
      expect(await flagsCount('DI,FI')).toBe(before + 1);
    });

    itOn(e, SKIPS, 'a route with a fault has no timeout (Istio disables it)', async () => {
      const r = await get('/fault-timeout', { 'x-test-delay': '200' });
      expect(r.status).toBe(200);
    });
  });

  describe('CORS', () => {
    const preflight = (origin: string, path = '/cors'): ReturnType<typeof http> =>
      get(path, { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-token' }, 'OPTIONS');

    itOn(e, SKIPS, 'answers a preflight from an allowed origin at the gateway', async () => {
      const before = app.requests.length;
      const r = await preflight('https://shop.example.com');
      expect(r.status).toBe(200);
      expect(r.headers['access-control-allow-origin']).toBe('https://shop.example.com');
      expect(r.headers['access-control-allow-methods']).toBe('GET,POST');
      expect(r.headers['access-control-allow-headers']).toBe('x-token,content-type');
      expect(r.headers['access-control-max-age']).toBe('3600');
      expect(r.headers['access-control-allow-credentials']).toBe('true');
      expect(app.requests.length).toBe(before);
    });

    itOn(e, SKIPS, 'matches origins by regex', async () => {
      const r = await preflight('https://eu.partner.example');
      expect(r.headers['access-control-allow-origin']).toBe('https://eu.partner.example');
    });

    itOn(e, SKIPS, 'forwards a preflight from a disallowed origin upstream (unmatchedPreflights FORWARD), without CORS headers', async () => {
      const before = app.requests.length;
      const r = await preflight('https://evil.example');
      expect(r.status).toBe(200);
      expect(r.json.method).toBe('OPTIONS');
      expect(r.headers['access-control-allow-origin']).toBeUndefined();
      expect(app.requests.length).toBe(before + 1);
    });

    itOn(e, SKIPS, 'with unmatchedPreflights IGNORE answers it without CORS headers and does not forward it', async () => {
      const before = app.requests.length;
      const r = await preflight('https://evil.example', '/cors-ignore');
      expect(r.status).toBe(200);
      expect(r.headers['access-control-allow-origin']).toBeUndefined();
      expect(app.requests.length).toBe(before);
    });

    itOn(e, SKIPS, 'adds allow-origin, credentials and expose headers to responses for allowed origins only', async () => {
      const ok = await get('/cors', { origin: 'https://shop.example.com' });
      expect(ok.headers['access-control-allow-origin']).toBe('https://shop.example.com');
      expect(ok.headers['access-control-allow-credentials']).toBe('true');
      expect(ok.headers['access-control-expose-headers']).toBe('x-trace');
      const bad = await get('/cors', { origin: 'https://evil.example' });
      expect(bad.status).toBe(200);
      expect(bad.headers['access-control-allow-origin']).toBeUndefined();
      const none = await get('/cors');
      expect(none.headers['access-control-allow-origin']).toBeUndefined();
    });
  });

  describe('mirroring', () => {
    itOn(e, SKIPS, 'sends a copy with the same Host, method, path and body (mirrorPercentage absent = 100%)', async () => {
      const body = pattern(20_000);
      const before = shadow.requests.length;
      const r = await get('/mirror/x?q=1', { 'content-type': 'application/octet-stream' }, 'POST', body);
      expect(r.status).toBe(200);
      expect(r.json.name).toBe('app');
      const copy = await waitFor(() => shadow.requests[before]);
      expect(copy.method).toBe('POST');
      expect(copy.url).toBe('/mirror/x?q=1');
      expect(copy.headers.host).toBe(HOST);
      await waitFor(() => copy.completed);
      expect(Number(copy.headers['content-length'])).toBe(body.length);
      expect(sha256(body)).toBe(r.json.bodySha256);
    });

    itOn(e, SKIPS, 'mirrors to every target of `mirrors`', async () => {
      const [a, b] = [shadow.requests.length, shadow2.requests.length];
      await get('/mirror-two');
      await waitFor(() => shadow.requests.length > a && shadow2.requests.length > b);
    });

    itOn(e, SKIPS, 'mirrorPercentage 0 sends no copy', async () => {
      const before = shadow.requests.length;
      for (let i = 0; i < 5; i++) await get('/mirror-none');
      await sleep(100);
      expect(shadow.requests.length).toBe(before);
    });

    itOn(e, SKIPS, 'a slow mirror never delays the primary response', async () => {
      const before = slowShadowSeen;
      const t0 = performance.now();
      const r = await get('/mirror-slow');
      expect(r.status).toBe(200);
      expect(r.json.name).toBe('app');
      expect(performance.now() - t0).toBeLessThan(1000);
      await waitFor(() => slowShadowSeen > before);
    });

    itOn(e, SKIPS, 'a body over the mirror limit is not mirrored, and the primary still gets it whole', async () => {
      const big = pattern(1_500_000);
      const before = shadow.requests.length;
      const r = await get('/mirror/big', { 'content-type': 'application/octet-stream' }, 'POST', big);
      expect(r.status).toBe(200);
      expect(r.json.bodySha256).toBe(sha256(big));
      await sleep(150);
      expect(shadow.requests.length).toBe(before);
    });
  });

  describe('delegation', () => {
    itOn(e, SKIPS, "routes through the delegate's rules, merged with the delegating route's match", async () => {
      const r2 = await get('/api/v2/items');
      expect(r2.json.name).toBe('v2');
      const r1 = await get('/api/v1/items');
      expect(r1.json.name).toBe('app');
      expect(r1.json.headers['x-delegated']).toBe('yes');
    });

    itOn(e, SKIPS, "a delegate match outside the delegating route's prefix is dropped", async () => {
      const r = await get('/other');
      expect(r.status).toBe(404);
    });
  });

  describe('redirect derivePort', () => {
    itOn(e, SKIPS, 'FROM_REQUEST_PORT keeps the port the request came in on', async () => {
      const r = await e.request('/keep-port/x', { headers: { host: `${HOST}:${e.port}` } });
      expect(r.status).toBe(301);
      expect(r.headers.location).toBe(`${e.scheme}://elsewhere.test:${e.port}/keep-port/x`);
    });

    itOn(e, SKIPS, "FROM_PROTOCOL_DEFAULT writes no port (the scheme's default)", async () => {
      const r = await get('/default-port/y');
      expect(r.headers.location).toBe('https://elsewhere.test/default-port/y');
    });
  });
});

checkSkipTable(SKIPS);
