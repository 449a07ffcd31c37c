// Hostile and broken clients on raw sockets: the gateway answers what it must (400/414/431/505),
// cancels the upstream request of a client that left, and keeps serving everyone else. On both
// HTTP/1.1 engines (uWS, strict); the HTTP/2 engines run the cases that are not HTTP/1.1 bytes
// (test/helpers/engines.ts).
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { ENGINES, ENGINE_GATEWAYS, EngineSet, RAW_HTTP1, checkSkipTable, itOn, type EngineClient, type SkipTable } from '../helpers/engines.js';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { rawExchange, rawStatus, sleep, waitFor } from '../helpers/net.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const HOST = 'bad.test';

let gw: GatewayProcess;
const engines = new EngineSet();
let echo: Echo;

beforeAll(async () => {
  echo = await startEcho('bad');
  const gateways = await engines.gateways();
  gw = await startGateway({
    files: { 'config.yaml': yamlDocs(...gateways, ...service('bad', { v1: echo.port }), virtualService('bad', [HOST], [{ route: [dest('bad')] }], { gateways: ENGINE_GATEWAYS })) },
  });
});

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
  engines.close();
});

const headerEnd = (s: string): boolean => s.includes('\r\n\r\n');

const FRAMING = ['two different Content-Length values', 'Transfer-Encoding: xchunked', 'Transfer-Encoding: chunked, identity', 'Transfer-Encoding repeated'];
/** The cases that write HTTP/1.1 bytes on a raw socket. */
const RAW_CASES = [
  'a malformed request line is refused (400 or connection closed) and the gateway keeps serving',
  'binary junk instead of a request: connection closed, gateway keeps serving',
  'an invalid Content-Length is refused with 400',
  'an HTTP/1.1 request without Host gets 400 (RFC 9112 §3.2; Envoy answers 400)',
  'a request line with no header lines at all gets no answer (uWS holds it; README known limit) and other clients are unaffected',
  'an invalid Host gets 400',
  'request headers over 60 KiB: 431, not forwarded',
  'one header value over 60 KiB: 431',
  'a URL over 8 KiB: 414',
  'HTTP/1.0: the uWS engine answers 505 and closes (documented; Envoy would answer 426)',
  'the body of a request answered locally (404) is skipped, never parsed as a request',
  'a chunked body of a request answered locally is skipped as well',
  'both Content-Length and Transfer-Encoding: refused (400) or the body is not forwarded as a second request',
  'a method that is not a token (G@T) is 400, not routed',
  ...FRAMING.flatMap((n) => [`${n}: 400 with Connection: close, nothing forwarded`, `${n}, a request pipelined behind it: the connection is closed and that request is never served (uWS drops it unanswered)`]),
  'two Host lines are 400 with Connection: close (RFC 9112 3.2), nothing forwarded',
  'the same Content-Length twice is one length (RFC 9110 8.6): forwarded',
  'Transfer-Encoding: Chunked (any case) is chunked: forwarded',
  'a client that disconnects before the response: the upstream request is aborted, the gateway keeps serving',
  'a client that disconnects in the middle of a request body: upstream request aborted, gateway serving',
  '50 clients aborting at different points in parallel: process alive, ready, still serving',
];

const STRICT = 'the strict engine (node:http, llhttp) answers as Envoy does; test/integration/http1-engines.test.ts holds both engines side by side';
const SKIPS: SkipTable = {
  ...Object.fromEntries(RAW_CASES.map((n) => [n, { h2c: RAW_HTTP1, h2: RAW_HTTP1 }])),
  'a request line with no header lines at all gets no answer (uWS holds it; README known limit) and other clients are unaffected': { h2c: RAW_HTTP1, h2: RAW_HTTP1, strict: `uWS holds such a request; ${STRICT} (400)` },
  'HTTP/1.0: the uWS engine answers 505 and closes (documented; Envoy would answer 426)': { h2c: RAW_HTTP1, h2: RAW_HTTP1, strict: `uWS answers 505 before the application sees the request; ${STRICT} (426)` },
  'HTTP/1.0 is answered 426 Upgrade Required, as Envoy answers it, and not forwarded': { h2c: RAW_HTTP1, h2: RAW_HTTP1, uws: 'uWS answers HTTP/1.0 with 505 before the application sees the request (README: known limits)' },
  'Transfer-Encoding: xchunked: 400 with Connection: close, nothing forwarded': { h2c: RAW_HTTP1, h2: RAW_HTTP1, strict: `an unknown transfer coding; ${STRICT} (501)` },
  'Transfer-Encoding: xchunked, a request pipelined behind it: the connection is closed and that request is never served (uWS drops it unanswered)': { h2c: RAW_HTTP1, h2: RAW_HTTP1, strict: `an unknown transfer coding; ${STRICT} (501)` },
  'the same Content-Length twice is one length (RFC 9110 8.6): forwarded': { h2c: RAW_HTTP1, h2: RAW_HTTP1, strict: 'llhttp refuses a repeated Content-Length line even with the same value (400): an engine difference, not a lifecycle one' },
};

describe.each(ENGINES)('%s', (name) => {
  const e: EngineClient = engines.clients[name];
  async function stillServing(): Promise<void> {
    const r = await e.request('/alive', { headers: { host: HOST } });
    expect(r.status).toBe(200);
    expect(r.json.url).toBe('/alive');
    expect(gw.proc.exitCode).toBeNull();
  }

  describe('bad input: malformed requests', () => {
    itOn(e, SKIPS, 'a malformed request line is refused (400 or connection closed) and the gateway keeps serving', async () => {
      const r = await rawExchange(e.port, 'GARBAGE\r\n\r\n', { timeoutMs: 2000 });
      expect(r.closed || rawStatus(r.data) === 400).toBe(true);
      await stillServing();
    });

    itOn(e, SKIPS, 'binary junk instead of a request: connection closed, gateway keeps serving', async () => {
      const r = await rawExchange(e.port, Buffer.from([0, 1, 2, 3, 0xff, 0x20, 0x0d, 0x0a, 0x0d, 0x0a]), { timeoutMs: 2000 });
      expect(r.closed).toBe(true);
      await stillServing();
    });

    itOn(e, SKIPS, 'an invalid Content-Length is refused with 400', async () => {
      const r = await rawExchange(e.port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: abc\r\n\r\n`, { timeoutMs: 2000 });
      expect(rawStatus(r.data)).toBe(400);
      await stillServing();
    });

    itOn(e, SKIPS, 'an HTTP/1.1 request without Host gets 400 (RFC 9112 §3.2; Envoy answers 400)', async () => {
      const r = await rawExchange(e.port, 'GET / HTTP/1.1\r\nUser-Agent: raw\r\n\r\n', { timeoutMs: 2000, until: headerEnd });
      expect(rawStatus(r.data)).toBe(400);
    });

    itOn(e, SKIPS, 'a request line with no header lines at all gets no answer (uWS holds it; README known limit) and other clients are unaffected', async () => {
      const r = await rawExchange(e.port, 'GET / HTTP/1.1\r\n\r\n', { timeoutMs: 500, until: headerEnd });
      expect(r.data).toBe('');
      await stillServing();
    });

    itOn(e, SKIPS, 'responses carry no uWebSockets fingerprint header (uWS.js silent mode); Date stays, as Envoy sends one', async () => {
      const r = await e.request('/fingerprint', { headers: { host: HOST } });
      expect(r.status).toBe(200);
      expect(r.headers.uwebsockets).toBeUndefined();
      expect(r.headers.date).toBeDefined();
      expect(r.headers.server).toBe('istio-envoy');
    });

    itOn(e, SKIPS, 'an invalid Host gets 400', async () => {
      const r = await rawExchange(e.port, 'GET / HTTP/1.1\r\nHost: bad host\r\n\r\n', { timeoutMs: 2000, until: headerEnd });
      expect(rawStatus(r.data)).toBe(400);
    });

    itOn(e, SKIPS, 'request headers over 60 KiB: 431, not forwarded', async () => {
      const before = echo.requests.length;
      const many = Array.from({ length: 64 }, (_, i) => `x-h${i}: ${'b'.repeat(1000)}\r\n`).join('');
      const r = await rawExchange(e.port, `GET /big-headers HTTP/1.1\r\nHost: ${HOST}\r\n${many}\r\n`, { timeoutMs: 3000, until: headerEnd });
      expect(rawStatus(r.data)).toBe(431);
      expect(echo.requests.slice(before).some((q) => q.url === '/big-headers')).toBe(false);
      await stillServing();
    });

    itOn(e, SKIPS, 'one header value over 60 KiB: 431', async () => {
      const r = await rawExchange(e.port, `GET / HTTP/1.1\r\nHost: ${HOST}\r\nx-big: ${'a'.repeat(62 * 1024)}\r\n\r\n`, { timeoutMs: 3000, until: headerEnd });
      expect(rawStatus(r.data)).toBe(431);
    });

    itOn(e, SKIPS, 'headers under the limit (30 KiB) are accepted and forwarded', async () => {
      const r = await e.request('/mid-headers', { headers: { host: HOST, 'x-big': 'a'.repeat(30 * 1024) } });
      expect(r.status).toBe(200);
      expect(r.json.headers['x-big']).toHaveLength(30 * 1024);
    });

    itOn(e, SKIPS, 'a URL over 8 KiB: 414', async () => {
      const r = await rawExchange(e.port, `GET /${'u'.repeat(9000)} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, { timeoutMs: 3000, until: headerEnd });
      expect(rawStatus(r.data)).toBe(414);
      await stillServing();
    });

    itOn(e, SKIPS, 'HTTP/1.0 is answered 426 Upgrade Required, as Envoy answers it, and not forwarded', async () => {
      const before = echo.requests.length;
      const r = await rawExchange(e.port, `GET /old HTTP/1.0\r\nHost: ${HOST}\r\n\r\n`, { timeoutMs: 2000, until: headerEnd });
      expect(rawStatus(r.data)).toBe(426);
      expect(echo.requests.length).toBe(before);
    });

    itOn(e, SKIPS, 'HTTP/1.0: the uWS engine answers 505 and closes (documented; Envoy would answer 426)', async () => {
      const before = echo.requests.length;
      const r = await rawExchange(e.port, `GET /old HTTP/1.0\r\nHost: ${HOST}\r\n\r\n`, { timeoutMs: 2000 });
      expect(rawStatus(r.data)).toBe(505);
      expect(r.closed).toBe(true);
      expect(echo.requests.length).toBe(before);
    });
  });

  // Raw HTTP/1.1 bytes only: HTTP/2 input is framed (the skip table gives the reason per case).
  if (e.protocol === 'HTTP/1.1') {
    describe('bad input: request smuggling', () => {
      const inner = `GET /smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;
      const next = `GET /next HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;
      const count = (s: string): number => (s.match(/HTTP\/1\.1 \d{3}/g) ?? []).length;

      itOn(e, SKIPS, 'the body of a request answered locally (404) is skipped, never parsed as a request', async () => {
        const before = echo.requests.length;
        const r = await rawExchange(e.port, `POST / HTTP/1.1\r\nHost: unrouted.test\r\nContent-Length: ${inner.length}\r\n\r\n${inner}${next}`, {
          timeoutMs: 2000,
          until: (s) => count(s) >= 2 && s.includes('/next'),
        });
        expect(rawStatus(r.data)).toBe(404);
        const urls = echo.requests.slice(before).map((q) => q.url);
        expect(urls).not.toContain('/smuggled');
        expect(urls).toContain('/next');
      });

      itOn(e, SKIPS, 'a chunked body of a request answered locally is skipped as well', async () => {
        const before = echo.requests.length;
        const body = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
        await rawExchange(e.port, `POST / HTTP/1.1\r\nHost: unrouted.test\r\nTransfer-Encoding: chunked\r\n\r\n${body}${next}`, {
          timeoutMs: 2000,
          until: (s) => count(s) >= 2 && s.includes('/next'),
        });
        const urls = echo.requests.slice(before).map((q) => q.url);
        expect(urls).not.toContain('/smuggled');
        expect(urls).toContain('/next');
      });

      itOn(e, SKIPS, 'both Content-Length and Transfer-Encoding: refused (400) or the body is not forwarded as a second request', async () => {
        const before = echo.requests.length;
        const body = `0\r\n\r\n${inner}`;
        const r = await rawExchange(e.port, `POST /cl-te HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`, { timeoutMs: 1500 });
        expect([0, 400, 200]).toContain(rawStatus(r.data));
        await sleep(100);
        expect(echo.requests.slice(before).map((q) => q.url)).not.toContain('/smuggled');
      });
    });
  }

  // Raw HTTP/1.1 bytes only: HTTP/2 input is framed (the skip table gives the reason per case).
  if (e.protocol === 'HTTP/1.1') {
    describe('bad input: what uWS passes and the handler refuses (400, never forwarded)', () => {
      const inner = `GET /smuggled HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`;

      itOn(e, SKIPS, 'a method that is not a token (G@T) is 400, not routed', async () => {
        const before = echo.requests.length;
        const r = await rawExchange(e.port, `G@T /odd-method HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, { timeoutMs: 2000, until: headerEnd });
        expect(rawStatus(r.data)).toBe(400);
        expect(echo.requests.slice(before).map((q) => q.url)).not.toContain('/odd-method');
        await stillServing();
      });

      const framing: Array<[string, string]> = [
        ['two different Content-Length values', `POST /cl-cl HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 3\r\nContent-Length: ${3 + inner.length}\r\n\r\nabc${inner}`],
        ['Transfer-Encoding: xchunked', `POST /te HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n${inner}`],
        ['Transfer-Encoding: chunked, identity', `POST /te HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n${inner}`],
        ['Transfer-Encoding repeated', `POST /te HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n${inner}`],
      ];
      for (const [name, bytes] of framing) {
        itOn(e, SKIPS, `${name}: 400 with Connection: close, nothing forwarded`, async () => {
          const before = echo.requests.length;
          const r = await rawExchange(e.port, bytes.slice(0, bytes.length - inner.length), { timeoutMs: 2000 });
          expect(rawStatus(r.data)).toBe(400);
          expect(r.data.toLowerCase()).toContain('connection: close');
          expect(r.closed).toBe(true);
          await sleep(50);
          expect(echo.requests.length).toBe(before);
        });

        itOn(e, SKIPS, `${name}, a request pipelined behind it: the connection is closed and that request is never served (uWS drops it unanswered)`, async () => {
          const before = echo.requests.length;
          const r = await rawExchange(e.port, bytes, { timeoutMs: 2000 });
          expect(r.closed).toBe(true);
          expect((r.data.match(/HTTP\/1\.1 \d{3}/g) ?? []).length).toBeLessThanOrEqual(1);
          expect([0, 400]).toContain(rawStatus(r.data));
          await sleep(50);
          expect(echo.requests.length).toBe(before);
        });
      }

      itOn(e, SKIPS, 'two Host lines are 400 with Connection: close (RFC 9112 3.2), nothing forwarded', async () => {
        const before = echo.requests.length;
        const r = await rawExchange(e.port, `GET /two-hosts HTTP/1.1\r\nHost: ${HOST}\r\nHost: other.test\r\n\r\n`, { timeoutMs: 2000 });
        expect(rawStatus(r.data)).toBe(400);
        expect(r.closed).toBe(true);
        await sleep(50);
        expect(echo.requests.length).toBe(before);
      });

      itOn(e, SKIPS, 'the same Content-Length twice is one length (RFC 9110 8.6): forwarded', async () => {
        const r = await rawExchange(e.port, `POST /cl-same HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc`, { timeoutMs: 2000, until: (d) => d.includes('/cl-same') });
        expect(rawStatus(r.data)).toBe(200);
      });

      itOn(e, SKIPS, 'Transfer-Encoding: Chunked (any case) is chunked: forwarded', async () => {
        const r = await rawExchange(e.port, `POST /te-case HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, { timeoutMs: 2000, until: (d) => d.includes('/te-case') });
        expect(rawStatus(r.data)).toBe(200);
      });
    });
  }

  // Raw HTTP/1.1 bytes only: HTTP/2 input is framed (the skip table gives the reason per case).
  if (e.protocol === 'HTTP/1.1') {
    describe('bad input: clients that go away', () => {
      itOn(e, SKIPS, 'a client that disconnects before the response: the upstream request is aborted, the gateway keeps serving', async () => {
        const sock = connect(e.port, '127.0.0.1');
        await new Promise<void>((r) => sock.once('connect', () => r()));
        sock.write(`GET /abandoned HTTP/1.1\r\nHost: ${HOST}\r\nx-test-delay: 1500\r\n\r\n`);
        const rec = await waitFor(() => echo.requests.find((q) => q.url === '/abandoned'), 2000);
        sock.destroy();
        await waitFor(() => rec.aborted, 1200);
        expect(rec.completed).toBe(false);
        await stillServing();
      });

      itOn(e, SKIPS, 'a client that disconnects in the middle of a request body: upstream request aborted, gateway serving', async () => {
        const sock = connect(e.port, '127.0.0.1');
        await new Promise<void>((r) => sock.once('connect', () => r()));
        sock.write(`POST /half-body HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(70000)}`);
        const rec = await waitFor(() => echo.requests.find((q) => q.url === '/half-body'), 2000);
        sock.destroy();
        await waitFor(() => rec.aborted, 1500);
        await stillServing();
      });

      itOn(e, SKIPS, '50 clients aborting at different points in parallel: process alive, ready, still serving', async () => {
        const sockets: Socket[] = [];
        const opened = Array.from({ length: 50 }, (_, i) =>
          new Promise<void>((resolve) => {
            const s = connect(e.port, '127.0.0.1');
            sockets.push(s);
            s.on('error', () => undefined);
            s.once('connect', () => {
              switch (i % 5) {
                case 0:
                  s.write(`GET /partial HTTP/1.1\r\nHost: ${HOST}\r\nx-incompl`);
                  break;
                case 1:
                  s.write(`POST /body HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5000\r\n\r\n${'y'.repeat(1000)}`);
                  break;
                case 2:
                  s.write(`GET /slow HTTP/1.1\r\nHost: ${HOST}\r\nx-test-delay: 300\r\n\r\n`);
                  break;
                case 3:
                  s.write(`POST /chunked HTTP/1.1\r\nHost: ${HOST}\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n`);
                  break;
                default:
                  s.write(`GET /big HTTP/1.1\r\nHost: ${HOST}\r\nx-test-bytes: 4000000\r\n\r\n`);
              }
              resolve();
            });
          }),
        );
        await Promise.all(opened);
        await sleep(100);
        for (const s of sockets) s.destroy();
        await sleep(200);
        expect(gw.proc.exitCode).toBeNull();
        const ready = await gw.admin('/healthz/ready');
        expect(ready.status).toBe(200);
        await stillServing();
        // Nothing stays in flight once everyone has gone and the slow upstream answers.
        await waitFor(async () => /::active_requests::0\b/.test((await gw.admin('/listeners')).text), 2000);
      });
    });
  }
});

checkSkipTable(SKIPS);
