// DestinationRule traffic policy on the data plane: consistent hashing (ring hash, Maglev; header,
// cookie, source IP, query parameter), connection-pool circuit breaking (503 UO), outlier detection
// (ejection, return, all ejected = 503 UH, minHealthPercent panic), subset and port-level overrides.
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePort, http, sleep, waitFor, type SimpleResponse } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, fqdn, gateway, serviceEntry, service, virtualService, workloadEntry, yamlDocs, type Obj } from '../helpers/yaml.js';

let gw: GatewayProcess;
let port: number;
let e1: Echo, e2: Echo, e3: Echo, slow: Echo, conn1: Echo, conn2: Echo, conn3: Echo, retry503: Echo;
let bad: Server, bad2: Server;
let badPort: number, bad2Port: number;

/** An upstream that answers every request 503 (an unhealthy host). */
async function always503(): Promise<{ server: Server; port: number }> {
  const server = createServer((_req, res) => {
    res.writeHead(503, { 'content-type': 'text/plain', 'x-upstream': 'bad' });
    res.end('bad');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as AddressInfo).port };
}

const policy = (trafficPolicy: Obj) => ({ trafficPolicy });
const header = (name: string) => ({ loadBalancer: { consistentHash: { httpHeaderName: name } } });

/** A DestinationRule with subsets that carry their own traffic policy. */
function ruleWithSubsets(name: string, trafficPolicy: Obj, subsets: Array<{ name: string; labels: Record<string, string>; trafficPolicy?: Obj }>): Obj {
  return { apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name, namespace: 'default' }, spec: { host: name, trafficPolicy, subsets } };
}

beforeAll(async () => {
  [e1, e2, e3, slow, conn1, conn2, conn3, retry503] = (await Promise.all(['e1', 'e2', 'e3', 'slow', 'conn1', 'conn2', 'conn3', 'retry503'].map((n) => startEcho(n)))) as [Echo, Echo, Echo, Echo, Echo, Echo, Echo, Echo];
  ({ server: bad, port: badPort } = await always503());
  ({ server: bad2, port: bad2Port } = await always503());
  port = await freePort();
  const three = [e1.port, e2.port, e3.port];
  const noRetry = { retries: { attempts: 0 } };
  const od = (extra: Obj) => ({ outlierDetection: { consecutive5xxErrors: 2, interval: '0.2s', baseEjectionTime: '1s', maxEjectionPercent: 100, ...extra } });
  gw = await startGateway({
    files: {
      'config.yaml': yamlDocs(
        gateway('gw', port),
        ...service('hdr', { v1: three }, policy(header('x-user'))),
        ...service('mag', { v1: three }, policy({ loadBalancer: { consistentHash: { httpHeaderName: 'x-user', maglev: { tableSize: 65537 } } } })),
        ...service('ck', { v1: three }, policy({ loadBalancer: { consistentHash: { httpCookie: { name: 'sticky', path: '/', ttl: '60s' } } } })),
        ...service('sip', { v1: three }, policy({ loadBalancer: { consistentHash: { useSourceIp: true } } })),
        ...service('qp', { v1: three }, policy({ loadBalancer: { consistentHash: { httpQueryParameterName: 'user' } } })),
        ...service('cb', { v1: slow.port }, policy({ connectionPool: { tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1 } } })),
        ...service('rq', { v1: slow.port }, policy({ connectionPool: { http: { http2MaxRequests: 2 } } })),
        ...service('rt', { v1: retry503.port }, policy({ connectionPool: { http: { maxRetries: 1 } } })),
        ...service('mrpc', { v1: conn1.port }, policy({ connectionPool: { http: { maxRequestsPerConnection: 1 } } })),
        ...service('mrpc3', { v1: conn3.port }, policy({ connectionPool: { http: { maxRequestsPerConnection: 3 } } })),
        ...service('idle', { v1: conn2.port }, policy({ connectionPool: { http: { idleTimeout: '0.3s' } } })),
        ...service('od', { v1: [e1.port, badPort] }, policy(od({}))),
        ...service('odall', { v1: [badPort, bad2Port] }, policy(od({ consecutive5xxErrors: 1 }))),
        ...service('panic', { v1: [e1.port, badPort] }, policy(od({ consecutive5xxErrors: 1, minHealthPercent: 60 }))),
        // Subset policy overrides the rule's: `rr` balances round robin, `hashed` keeps the rule's hashing.
        serviceEntry('sub', fqdn('sub'), 9080),
        ...three.map((p, i) => workloadEntry(`sub-${i}`, { app: 'sub', version: 'v1' }, p)),
        ruleWithSubsets('sub', header('x-user'), [
          { name: 'hashed', labels: { version: 'v1' } },
          { name: 'rr', labels: { version: 'v1' }, trafficPolicy: { loadBalancer: { simple: 'ROUND_ROBIN' } } },
        ]),
        // Port-level settings replace the rule's policy for that port.
        serviceEntry('port', fqdn('port'), 9080),
        ...three.map((p, i) => workloadEntry(`port-${i}`, { app: 'port', version: 'v1' }, p)),
        ruleWithSubsets('port', { loadBalancer: { simple: 'ROUND_ROBIN' }, portLevelSettings: [{ port: { number: 9080 }, ...header('x-user') }] }, []),
        virtualService('dr', ['dr.test'], [
          { match: [{ uri: { prefix: '/hdr' } }], route: [dest('hdr')] },
          { match: [{ uri: { prefix: '/mag' } }], route: [dest('mag')] },
          { match: [{ uri: { prefix: '/ck' } }], route: [dest('ck')] },
          { match: [{ uri: { prefix: '/sip' } }], route: [dest('sip')] },
          { match: [{ uri: { prefix: '/qp' } }], route: [dest('qp')] },
          { match: [{ uri: { prefix: '/cb' } }], route: [dest('cb')], ...noRetry },
          { match: [{ uri: { prefix: '/rq' } }], route: [dest('rq')], ...noRetry },
          { match: [{ uri: { prefix: '/rt' } }], route: [dest('rt')], retries: { attempts: 2, retryOn: '503' } },
          { match: [{ uri: { prefix: '/mrpc3' } }], route: [dest('mrpc3')] },
          { match: [{ uri: { prefix: '/mrpc' } }], route: [dest('mrpc')] },
          { match: [{ uri: { prefix: '/idle' } }], route: [dest('idle')] },
          { match: [{ uri: { prefix: '/odall' } }], route: [dest('odall')], ...noRetry },
          { match: [{ uri: { prefix: '/od' } }], route: [dest('od')], ...noRetry },
          { match: [{ uri: { prefix: '/panic' } }], route: [dest('panic')], ...noRetry },
          { match: [{ uri: { prefix: '/sub-hashed' } }], route: [dest('sub', 'hashed')] },
          { match: [{ uri: { prefix: '/sub-rr' } }], route: [dest('sub', 'rr')] },
          { match: [{ uri: { prefix: '/port' } }], route: [dest('port')] },
        ]),
      ),
    },
  });
});

afterAll(async () => {
  await gw?.stop();
  await Promise.all([e1, e2, e3, slow, conn1, conn2, conn3, retry503].map((e) => e?.close()));
  await Promise.all([bad, bad2].map((s) => new Promise((r) => (s ? s.close(r) : r(undefined)))));
});

const get = (path: string, headers: Record<string, string> = {}) => http(port, path, { headers: { host: 'dr.test', ...headers } });
const upstreamOf = (r: SimpleResponse): string => String(r.headers['x-upstream'] ?? r.status);

/** GET from a given loopback source address (127.0.0.x), for source-IP hashing. */
function getFrom(localAddress: string, path: string): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, localAddress, headers: { host: 'dr.test' }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString(), json: undefined, localPort: 0 });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** For each of `keys`, the set of upstreams that answered `tries` requests made by `send(key)`. */
async function stickiness(keys: string[], tries: number, send: (key: string) => Promise<SimpleResponse>): Promise<Map<string, Set<string>>> {
  const out = new Map<string, Set<string>>();
  for (const key of keys) {
    const seen = new Set<string>();
    for (let i = 0; i < tries; i++) {
      const r = await send(key);
      expect(r.status).toBe(200);
      seen.add(upstreamOf(r));
    }
    out.set(key, seen);
  }
  return out;
}

function expectSticky(map: Map<string, Set<string>>): void {
  for (const [key, seen] of map) expect([key, seen.size]).toEqual([key, 1]);
  const used = new Set([...map.values()].map((s) => [...s][0]));
  expect(used.size).toBeGreaterThan(1); // the keys spread over the endpoints
}

async function clusterStatus(name: string): Promise<any> {
  const r = await gw.admin('/clusters?format=json');
  return r.json.cluster_statuses.find((c: { name: string }) => c.name === `outbound|9080||${fqdn(name)}`);
}

async function requestsTotal(want: Record<string, string | RegExp>): Promise<number> {
  const r = await gw.admin('/stats/prometheus');
  return sumSamples(findSamples(parsePrometheus(r.text), 'istio_requests_total', want));
}

const KEYS = Array.from({ length: 20 }, (_, i) => `user-${i}`);

describe('consistentHash', () => {
  it('httpHeaderName (ring hash): the same key always reaches the same endpoint (3 endpoints, 20 keys x 5)', async () => {
    expectSticky(await stickiness(KEYS, 5, (k) => get('/hdr', { 'x-user': k })));
  });

  it('httpHeaderName with maglev: sticky too', async () => {
    expectSticky(await stickiness(KEYS, 5, (k) => get('/mag', { 'x-user': k })));
  });

  it('no hash key: requests are spread at random, like Envoy', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 30; i++) seen.add(upstreamOf(await get('/hdr')));
    expect(seen.size).toBeGreaterThan(1);
  });

  it('httpCookie with a ttl: a missing cookie is generated (Set-Cookie), then the client sticks to one endpoint', async () => {
    const first = await get('/ck');
    expect(first.status).toBe(200);
    const setCookie = first.headers['set-cookie']?.[0] ?? '';
    expect(setCookie).toMatch(/^sticky="[0-9a-f]{16}"; Max-Age=60; Path=\/; HttpOnly$/);
    const cookie = setCookie.split(';')[0]!;
    const upstream = upstreamOf(first);
    for (let i = 0; i < 5; i++) {
      const r = await get('/ck', { cookie: `other=1; ${cookie}` });
      expect(upstreamOf(r)).toBe(upstream);
      expect(r.headers['set-cookie']).toBeUndefined();
    }
    // Clients holding different cookies spread over the endpoints.
    expectSticky(await stickiness(KEYS, 3, (k) => get('/ck', { cookie: `sticky=${k}` })));
  });

  it('useSourceIp: each client address sticks to one endpoint', async () => {
    const addrs = Array.from({ length: 12 }, (_, i) => `127.0.0.${i + 1}`);
    expectSticky(await stickiness(addrs, 4, (a) => getFrom(a, '/sip')));
  });

  it('httpQueryParameterName: the parameter value is the key', async () => {
    expectSticky(await stickiness(KEYS, 5, (k) => get(`/qp?x=1&user=${k}`)));
  });
});

describe('subset and port-level policies', () => {
  it("a subset's loadBalancer replaces the rule's; a subset without one keeps the rule's hashing", async () => {
    expectSticky(await stickiness(KEYS.slice(0, 8), 4, (k) => get('/sub-hashed', { 'x-user': k })));
    const rr = new Set<string>();
    for (let i = 0; i < 9; i++) rr.add(upstreamOf(await get('/sub-rr', { 'x-user': 'same-user' })));
    expect(rr.size).toBe(3);
  });

  it("portLevelSettings for the destination port replace the rule's loadBalancer", async () => {
    expectSticky(await stickiness(KEYS.slice(0, 8), 4, (k) => get('/port', { 'x-user': k })));
  });
});

describe('connectionPool circuit breaking', () => {
  it('maxConnections=1 + http1MaxPendingRequests=1: parallel requests beyond one in flight and one queued get 503 UO', async () => {
    const rs = await Promise.all(Array.from({ length: 6 }, () => get('/cb', { 'x-test-delay': '300' })));
    const ok = rs.filter((r) => r.status === 200);
    const overflow = rs.filter((r) => r.status === 503);
    expect(ok.length).toBeGreaterThanOrEqual(2);
    expect(overflow.length).toBeGreaterThanOrEqual(1);
    expect(ok.length + overflow.length).toBe(6);
    for (const r of overflow) {
      expect(r.text).toBe('upstream connect error or disconnect/reset before headers. reset reason: overflow');
      expect(r.headers['x-envoy-overloaded']).toBe('true');
      expect(r.headers.server).toBe('istio-envoy');
    }
    expect(await requestsTotal({ response_code: '503', response_flags: 'UO', destination_service: fqdn('cb') })).toBe(overflow.length);
    const c = await clusterStatus('cb');
    expect(c.circuit_breakers.upstream_rq_pending_overflow).toBe(overflow.length);
    // Once the burst is over the breaker admits again.
    expect((await get('/cb')).status).toBe(200);
  });

  it('http2MaxRequests caps requests in flight (503 UO beyond it)', async () => {
    const rs = await Promise.all(Array.from({ length: 5 }, () => get('/rq', { 'x-test-delay': '300' })));
    expect(rs.filter((r) => r.status === 200).length).toBe(2);
    expect(rs.filter((r) => r.status === 503 && r.headers['x-envoy-overloaded'] === 'true').length).toBe(3);
  });

  it('maxRetries caps retries in flight: other requests return their failure without retrying', async () => {
    const before = retry503.requests.length;
    const rs = await Promise.all(Array.from({ length: 4 }, () => get('/rt', { 'x-test-status': '503', 'x-test-delay': '300' })));
    for (const r of rs) expect(r.status).toBe(503);
    // One request retried twice (3 attempts); the three others got no retry.
    const attempts = retry503.requests.slice(before).map((q) => Number(q.headers['x-envoy-attempt-count']));
    expect(attempts.sort()).toEqual([1, 1, 1, 1, 2, 3]);
    expect((await clusterStatus('rt')).circuit_breakers.upstream_rq_retry_overflow).toBe(3);
  });

  it('maxRequestsPerConnection: 1 opens a connection per request, 3 reuses each for three', async () => {
    const before = conn1.connections;
    for (let i = 0; i < 4; i++) expect((await get('/mrpc')).status).toBe(200);
    expect(conn1.connections - before).toBe(4);
    const before3 = conn3.connections;
    for (let i = 0; i < 6; i++) expect((await get('/mrpc3')).status).toBe(200);
    expect(conn3.connections - before3).toBe(2);
  });

  it('http idleTimeout closes idle upstream connections', async () => {
    const before = conn2.connections;
    await get('/idle');
    await get('/idle');
    expect(conn2.connections - before).toBe(1);
    await sleep(600);
    await get('/idle');
    expect(conn2.connections - before).toBe(2);
  });
});

describe('outlierDetection', () => {
  it('ejects an endpoint after consecutive5xxErrors, sends it no traffic, returns it after baseEjectionTime', async () => {
    // Round robin over a good and a bad endpoint: the bad one answers 503 until it is ejected.
    let bads = 0;
    for (let i = 0; i < 8 && bads < 2; i++) if ((await get('/od')).status === 503) bads++;
    expect(bads).toBe(2);
    const c = await clusterStatus('od');
    const badEp = c.endpoints.find((e: { address: string }) => e.address === `127.0.0.1:${badPort}`);
    expect(badEp.health_flags).toBe('/failed_outlier_check');
    expect(c.outlier_detection.ejections_active).toBe(1);
    for (let i = 0; i < 10; i++) expect(upstreamOf(await get('/od'))).toBe('e1');
    // baseEjectionTime 1s, swept every 0.2s: back in rotation after about a second.
    await waitFor(async () => (await get('/od')).status === 503, 3000, 50);
    expect((await clusterStatus('od')).endpoints.find((e: { address: string }) => e.address === `127.0.0.1:${badPort}`).ejections).toBe(1);
  });

  it('every endpoint ejected: 503 `no healthy upstream`, flag UH', async () => {
    for (let i = 0; i < 4; i++) await get('/odall');
    const r = await get('/odall');
    expect(r.status).toBe(503);
    expect(r.text).toBe('no healthy upstream');
    expect(await requestsTotal({ response_code: '503', response_flags: 'UH', destination_service: fqdn('odall') })).toBeGreaterThanOrEqual(1);
  });

  it('minHealthPercent: below it the balancer ignores ejections (panic) and uses every endpoint', async () => {
    for (let i = 0; i < 4; i++) await get('/panic');
    const c = await clusterStatus('panic');
    expect(c.outlier_detection.ejections_active).toBe(1); // 50% healthy < 60%
    const seen = new Set<string>();
    for (let i = 0; i < 10; i++) seen.add(upstreamOf(await get('/panic')));
    expect(seen).toEqual(new Set(['e1', 'bad']));
  });
});
