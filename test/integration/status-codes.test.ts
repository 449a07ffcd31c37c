// Istio's local replies and response flags: NR, NC, UH, UF (after the default retries), UC, UPE, UT,
// and VirtualService retries, on every downstream engine (test/helpers/engines.ts).
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { ENGINES, ENGINE_GATEWAYS, EngineSet, checkSkipTable, itOn, type EngineClient, type SkipTable } from '../helpers/engines.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { createServer, type Server } from 'node:net';
import { freePort } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, fqdn, service, virtualService, yamlDocs } from '../helpers/yaml.js';

let gw: GatewayProcess;
const engines = new EngineSet();
let live: Echo;
let slow: Echo;
let deadPort: number;
let raw: Server;

// Answers with exact bytes chosen by the request path: responses a strict HTTP/1.1 client refuses.
const RAW_ANSWERS: Record<string, string> = {
  '/te-and-cl': 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
  '/gzip-chunked': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
  '/two-lengths': 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
  '/bare-lf': 'HTTP/1.1 200 OK\nContent-Length: 3\n\nabc',
  '/bad-chunk-size': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n',
  '/status-600': 'HTTP/1.1 600 Weird\r\nContent-Length: 0\r\n\r\n',
  '/good-chunked': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
};

function startRaw(): Promise<{ server: Server; port: number }> {
  const server = createServer((sock) => {
    let head = '';
    sock.setEncoding('latin1');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      head += d;
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const path = head.slice(head.indexOf(' ') + 1, head.indexOf(' ', head.indexOf(' ') + 1));
      head = head.slice(end + 4);
      sock.write(RAW_ANSWERS[path] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port })));
}

beforeAll(async () => {
  live = await startEcho('live');
  slow = await startEcho('slow');
  deadPort = await freePort();
  const gateways = await engines.gateways();
  const r = await startRaw();
  raw = r.server;
  gw = await startGateway({
    files: {
      'config.yaml': yamlDocs(
        ...gateways,
        ...service('app', { v1: live.port }, { extraSubsets: { empty: { version: 'nothing-has-this' } } }),
        ...service('dead', { v1: deadPort }),
        ...service('half', { v1: [deadPort, live.port] }),
        ...service('slow', { v1: slow.port }),
        ...service('raw', { v1: r.port }),
        virtualService('raw', ['raw.test'], [{ route: [dest('raw')] }], { gateways: ENGINE_GATEWAYS }),
        virtualService('status', ['status.test'], [
          { match: [{ uri: { exact: '/empty' } }], route: [dest('app', 'empty')] },
          { match: [{ uri: { exact: '/refused' } }], route: [dest('dead')] },
          { match: [{ uri: { exact: '/half' } }], route: [dest('half')] },
          { match: [{ uri: { exact: '/reset' } }], route: [dest('app')] },
          { match: [{ uri: { exact: '/timeout' } }], timeout: '0.2s', route: [dest('slow')] },
          { match: [{ uri: { exact: '/ok' } }], route: [dest('app')] },
          { match: [{ uri: { exact: '/retry-5xx' } }], retries: { attempts: 3, retryOn: '5xx' }, route: [dest('app')] },
          { match: [{ uri: { exact: '/per-try' } }], retries: { attempts: 2, perTryTimeout: '0.1s', retryOn: 'gateway-error' }, route: [dest('slow')] },
          { match: [{ uri: { exact: '/no-retry' } }], retries: { attempts: 0 }, route: [dest('half')] },
        ], { gateways: ENGINE_GATEWAYS }),
      ),
    },
  });
});

afterAll(async () => {
  await gw?.stop();
  await live?.close();
  await slow?.close();
  raw?.close();
  engines.close();
});


async function requestsTotal(want: Record<string, string | RegExp>): Promise<number> {
  const r = await gw.admin('/stats/prometheus');
  return sumSamples(findSamples(parsePrometheus(r.text), 'istio_requests_total', want));
}

const SKIPS: SkipTable = {};

describe.each(ENGINES)('%s', (name) => {
  const e: EngineClient = engines.clients[name];
  const get = (path: string, headers: Record<string, string> = {}, host = 'status.test') => e.request(path, { headers: { host, ...headers } });

  describe('status codes and response flags', () => {
    itOn(e, SKIPS, 'no route: 404 with an empty body, flag NR', async () => {
      const r = await get('/whatever', {}, 'unrouted.test');
      expect(r.status).toBe(404);
      expect(r.body.length).toBe(0);
      expect(r.headers.server).toBe('istio-envoy');
      expect(await requestsTotal({ response_code: '404', response_flags: 'NR', reporter: 'source' })).toBeGreaterThanOrEqual(1);
    });

    itOn(e, SKIPS, 'a route whose host has no matching path also gives 404 NR', async () => {
      const r = await get('/not-configured');
      expect(r.status).toBe(404);
      expect(r.body.length).toBe(0);
    });

    itOn(e, SKIPS, 'a subset with no endpoints: 503 `no healthy upstream`, flag UH', async () => {
      const r = await get('/empty');
      expect(r.status).toBe(503);
      expect(r.text).toBe('no healthy upstream');
      expect(await requestsTotal({ response_code: '503', response_flags: 'UH', destination_service: fqdn('app') })).toBeGreaterThanOrEqual(1);
    });

    itOn(e, SKIPS, 'connection refused: 503 `upstream connect error ... remote connection failure`, flag UF', async () => {
      const started = Date.now();
      const r = await get('/refused');
      expect(r.status).toBe(503);
      expect(r.text.startsWith('upstream connect error or disconnect/reset before headers. reset reason: remote connection failure')).toBe(true);
      expect(r.headers.server).toBe('istio-envoy');
      expect(Date.now() - started).toBeLessThan(3000);
      expect(await requestsTotal({ response_code: '503', response_flags: /(^|,)UF(,|$)/, destination_service: fqdn('dead') })).toBeGreaterThanOrEqual(1);
    });

    itOn(e, SKIPS, 'connect failures are retried (default 2 retries) on another endpoint: the request succeeds', async () => {
      live.requests.length = 0;
      const results = await Promise.all(Array.from({ length: 6 }, () => get('/half')));
      for (const r of results) expect(r.status).toBe(200);
      const counts = live.requests.filter((q) => q.url === '/half').map((q) => q.headers['x-envoy-attempt-count']);
      expect(counts).toHaveLength(6);
      // Round robin over [dead, live]: some requests tried the dead endpoint first.
      expect(counts.some((c) => c === '2' || c === '3')).toBe(true);
      for (const c of counts) expect(['1', '2', '3']).toContain(c);
    });

    itOn(e, SKIPS, 'upstream resets the connection before answering: 503 `... reset reason: connection termination`, flag UC, not retried', async () => {
      live.requests.length = 0;
      const r = await get('/reset', { 'x-test-destroy': '1' });
      expect(r.status).toBe(503);
      expect(r.text).toBe('upstream connect error or disconnect/reset before headers. reset reason: connection termination');
      expect(live.requests.filter((q) => q.url === '/reset')).toHaveLength(1);
      expect(await requestsTotal({ response_code: '503', response_flags: /(^|,)UC(,|$)/, destination_service: fqdn('app') })).toBeGreaterThanOrEqual(1);
    });

    itOn(e, SKIPS, 'an invalid upstream response (smuggling guards, bad framing): 502 `... reset reason: protocol error`, flag UPE', async () => {
      // An invalid first chunk size arrives after a valid head: the head was held back, so the
      // client still gets the 502 (not an empty reply). A status outside 100-599 is invalid too.
      const upeBefore = await requestsTotal({ response_code: '502', response_flags: 'UPE', destination_service: fqdn('raw') });
      for (const path of ['/te-and-cl', '/gzip-chunked', '/two-lengths', '/bare-lf', '/bad-chunk-size', '/status-600']) {
        const r = await get(path, {}, 'raw.test');
        expect(r.status, path).toBe(502);
        expect(r.text, path).toBe('upstream connect error or disconnect/reset before headers. reset reason: protocol error');
        expect(r.text).not.toContain('abc');
      }
      expect(await requestsTotal({ response_code: '502', response_flags: 'UPE', destination_service: fqdn('raw') })).toBe(upeBefore + 6);
      expect(await requestsTotal({ response_code: '200', response_flags: 'UPE', destination_service: fqdn('raw') })).toBe(0);
      // The same upstream's valid chunked answer passes, de-chunked and re-framed.
      const ok = await get('/good-chunked', {}, 'raw.test');
      expect(ok.status).toBe(200);
      expect(ok.text).toBe('abc');
    });

    itOn(e, SKIPS, 'route timeout 0.2s with a slower upstream: 504 `upstream request timeout`, flag UT', async () => {
      const started = Date.now();
      const r = await get('/timeout', { 'x-test-delay': '1500' });
      const elapsed = Date.now() - started;
      expect(r.status).toBe(504);
      expect(r.text).toBe('upstream request timeout');
      expect(elapsed).toBeGreaterThanOrEqual(180);
      expect(elapsed).toBeLessThan(1200);
      expect(await requestsTotal({ response_code: '504', response_flags: 'UT', destination_service: fqdn('slow') })).toBeGreaterThanOrEqual(1);
    });

    itOn(e, SKIPS, 'the route timeout does not affect a fast enough upstream', async () => {
      const r = await get('/timeout', { 'x-test-delay': '20' });
      expect(r.status).toBe(200);
    });

    itOn(e, SKIPS, 'an upstream 503 is passed through, not retried by default', async () => {
      live.requests.length = 0;
      const r = await get('/ok', { 'x-test-status': '503' });
      expect(r.status).toBe(503);
      expect(r.json.name).toBe('live');
      expect(live.requests.filter((q) => q.url === '/ok')).toHaveLength(1);
      expect(await requestsTotal({ response_code: '503', response_flags: '-', destination_service: fqdn('app') })).toBeGreaterThanOrEqual(1);
    });
  });

  describe('retry policy (VirtualService retries)', () => {
    itOn(e, SKIPS, 'retries.attempts 3 with retryOn 5xx: 4 attempts, then the upstream 503 is returned', async () => {
      live.requests.length = 0;
      const r = await get('/retry-5xx', { 'x-test-status': '503' });
      expect(r.status).toBe(503);
      expect(live.requests.filter((q) => q.url === '/retry-5xx').map((q) => q.headers['x-envoy-attempt-count'])).toEqual(['1', '2', '3', '4']);
    });

    itOn(e, SKIPS, 'perTryTimeout 0.1s with 2 retries on a slow upstream: 504 after 3 attempts, well before the upstream answers', async () => {
      slow.requests.length = 0;
      const started = Date.now();
      const r = await get('/per-try', { 'x-test-delay': '1000' });
      expect(r.status).toBe(504);
      expect(r.text).toBe('upstream request timeout');
      expect(Date.now() - started).toBeLessThan(900);
      expect(slow.requests.filter((q) => q.url === '/per-try')).toHaveLength(3);
    });

    itOn(e, SKIPS, 'retries.attempts 0 disables the default retries: a refused connection is not retried', async () => {
      live.requests.length = 0;
      const results = await Promise.all(Array.from({ length: 6 }, () => get('/no-retry')));
      const statuses = results.map((r) => r.status).sort();
      // Round robin over [dead, live]: the requests that hit the dead endpoint fail.
      expect(statuses).toContain(503);
      expect(statuses).toContain(200);
      for (const q of live.requests.filter((x) => x.url === '/no-retry')) expect(q.headers['x-envoy-attempt-count']).toBe('1');
    });
  });
});

checkSkipTable(SKIPS);
