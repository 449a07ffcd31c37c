// WebSocket upgrades through the gateway, as Istio allows them on every HTTP route: messages both
// ways (text and binary), subprotocols, proxy headers and rewrites, close codes both ways, either
// side dying, reloads that must not close open WebSockets, large messages, and flow control.
// Upstreams are real `ws` servers on 127.0.0.1; the client is a `ws` WebSocket. The same suite
// runs on every engine: a plain HTTP server (uWS), an HTTPS server offering h2 and http/1.1 by
// ALPN (the node:http2 engine, whose HTTP/1.1 side takes the upgrade), with `wss://` clients, and
// a plain HTTP server of a Gateway annotated `gatehouse.io/http1-engine: strict` (node:http).
import { readdirSync, readFileSync } from 'node:fs';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { findSamples, parsePrometheus, sumSamples } from '../helpers/metrics.js';
import { freePorts, http, sleep, waitFor } from '../helpers/net.js';
import { pattern, sha256, startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const HOST = 'ws.test';
const APPLY_MS = 1500;
const MiB = 1024 * 1024;

interface UpstreamConn {
  url: string;
  headers: IncomingHttpHeaders;
  protocol: string;
  ws: WebSocket;
  closed: Promise<{ code: number; reason: string }>;
  isClosed: boolean;
  /** After the `sink` command: binary messages are counted here instead of echoed. */
  sink: boolean;
  received: number;
}

interface WsUpstream {
  name: string;
  port: number;
  conns: UpstreamConn[];
  close(): Promise<void>;
}

/**
 * A `ws` server that echoes every message (same type), picks the last offered subprotocol it knows
 * (`chat.v1`, `chat.v2`), and obeys text commands: `whoami` (answers JSON with what it saw),
 * `close:<code>:<reason>`, `die` (drops the TCP connection), `flood:<MiB>` (sends that many 1 MiB
 * binary messages at once), `big:<bytes>` (one binary message of that size), `sink` (count binary
 * messages instead of echoing them, then answer `sinking`).
 */
async function startWsUpstream(name: string): Promise<WsUpstream> {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    maxPayload: 64 * MiB,
    handleProtocols: (offered) => [...offered].reverse().find((p) => p === 'chat.v1' || p === 'chat.v2') ?? false,
  });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const up: WsUpstream = {
    name,
    port: (wss.address() as AddressInfo).port,
    conns: [],
    close: async () => {
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
  wss.on('connection', (ws, req) => {
    let resolveClosed!: (v: { code: number; reason: string }) => void;
    const conn: UpstreamConn = { url: req.url ?? '', headers: req.headers, protocol: ws.protocol, ws, closed: new Promise((r) => (resolveClosed = r)), isClosed: false, sink: false, received: 0 };
    up.conns.push(conn);
    ws.on('error', () => undefined);
    ws.on('close', (code, reason) => {
      conn.isClosed = true;
      resolveClosed({ code, reason: reason.toString() });
    });
    ws.on('message', (data: Buffer, isBinary) => {
      if (conn.sink && isBinary) return void (conn.received += data.length);
      const text = isBinary ? '' : data.toString();
      if (text === 'sink') {
        conn.sink = true;
        return ws.send('sinking');
      }
      if (text === 'whoami') return ws.send(JSON.stringify({ name, url: conn.url, headers: conn.headers, protocol: conn.protocol }));
      if (text.startsWith('close:')) {
        const [, code, reason] = text.split(':');
        return ws.close(Number(code), reason);
      }
      if (text === 'die') return ws.terminate();
      if (text.startsWith('flood:')) {
        const chunk = pattern(MiB);
        for (let i = 0; i < Number(text.slice(6)); i++) ws.send(chunk, { binary: true });
        return;
      }
      if (text.startsWith('big:')) return ws.send(pattern(Number(text.slice(4))), { binary: true });
      ws.send(data, { binary: isBinary });
    });
  });
  return up;
}

interface Client {
  ws: WebSocket;
  messages: Array<{ data: Buffer; isBinary: boolean }>;
  closed: Promise<{ code: number; reason: string }>;
  /** The next message (waits for it). */
  next(): Promise<{ data: Buffer; isBinary: boolean }>;
}

/** Opens a client WebSocket through the gateway; rejects with the status when the handshake fails. */
function connect(p: number, path: string, opts: { host?: string; protocols?: string[]; headers?: Record<string, string> } = {}): Promise<Client> {
  return new Promise((resolve, reject) => {
    const host = opts.host ?? HOST;
    // TLS ports: verified against the test CA, with the Host as SNI.
    const tls = tlsPorts.has(p) ? { ca: ca.certPem, servername: host } : {};
    const ws = new WebSocket(`${tlsPorts.has(p) ? 'wss' : 'ws'}://127.0.0.1:${p}${path}`, opts.protocols ?? [], { headers: { host, ...opts.headers }, maxPayload: 64 * MiB, ...tls });
    const messages: Array<{ data: Buffer; isBinary: boolean }> = [];
    const waiters: Array<(m: { data: Buffer; isBinary: boolean }) => void> = [];
    let resolveClosed!: (v: { code: number; reason: string }) => void;
    const closed = new Promise<{ code: number; reason: string }>((r) => (resolveClosed = r));
    let taken = 0;
    ws.on('message', (data: Buffer, isBinary) => {
      const m = { data, isBinary };
      messages.push(m);
      const w = waiters.shift();
      if (w) {
        taken++;
        w(m);
      }
    });
    ws.on('close', (code, reason) => resolveClosed({ code, reason: reason.toString() }));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        ws.terminate();
        reject(Object.assign(new Error(`handshake failed: ${res.statusCode}`), { status: res.statusCode, headers: res.headers, body }));
      });
    });
    ws.on('error', (err) => reject(err));
    ws.on('open', () =>
      resolve({
        ws,
        messages,
        closed,
        next: () =>
          taken < messages.length
            ? Promise.resolve(messages[taken++]!)
            : new Promise((r, rej) => {
                const t = setTimeout(() => rej(new Error('no message within 5 s')), 5000);
                waiters.push((m) => {
                  clearTimeout(t);
                  r(m);
                });
              }),
      }),
    );
  });
}

const withTimeout = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<T>((_r, rej) => setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms))]);

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

let gw: GatewayProcess;
let ca: TestCa;
let cert: CertFiles;
let wsA: WsUpstream;
let wsB: WsUpstream;
let httpEcho: Echo;
let deadPort: number;
/** The ports of each engine (the second one is removed by the last test of its suite). */
const P = { http: 0, http2: 0, https: 0, https2: 0, strict: 0, strict2: 0 };
const tlsPorts = new Set<number>();
/** Plain HTTP ports of the Gateway that asks for the strict HTTP/1.1 engine. */
const strictPorts = new Set<number>();
/** The Gateway's servers now (a removed port is dropped from it). */
const serving = new Set<number>();

const server = (p: number): Record<string, unknown> =>
  tlsPorts.has(p) ? { port: { number: p, name: `https-${p}`, protocol: 'HTTPS' }, hosts: ['*'], tls: { mode: 'SIMPLE', serverCertificate: 'ws.crt', privateKey: 'ws.key' } } : { port: { number: p, name: `http-${p}`, protocol: 'HTTP' }, hosts: ['*'] };
const gatewayYaml = (): string =>
  yamlDocs(
    {
      ...gateway('gw', P.http),
      spec: {
        selector: { istio: 'ingressgateway' },
        // No gatehouse.io/alpn annotation: HTTPS offers h2 and http/1.1 (the node:http2 engine).
        servers: [...serving].filter((p) => !strictPorts.has(p)).map(server),
      },
    },
    {
      ...gateway('gw-strict', P.strict),
      metadata: { name: 'gw-strict', namespace: 'default', annotations: { 'gatehouse.io/http1-engine': 'strict' } },
      spec: { selector: { istio: 'ingressgateway' }, servers: [...serving].filter((p) => strictPorts.has(p)).map(server) },
    },
  );

beforeAll(async () => {
  ca = createCa('ws-ca');
  cert = ca.issue('ws', { sans: [`DNS:${HOST}`, 'DNS:nope.test', 'DNS:other.test'] });
  wsA = await startWsUpstream('a');
  wsB = await startWsUpstream('b');
  httpEcho = await startEcho('plain');
  [P.http, P.http2, P.https, P.https2, P.strict, P.strict2, deadPort] = (await freePorts(7)) as [number, number, number, number, number, number, number];
  for (const p of [P.http, P.http2, P.https, P.https2, P.strict, P.strict2]) serving.add(p);
  tlsPorts.add(P.https).add(P.https2);
  strictPorts.add(P.strict).add(P.strict2);
  gw = await startGateway({
    files: {
      'ws.crt': cert.certPem,
      'ws.key': cert.keyPem,
      'gw.yaml': gatewayYaml(),
      'svc.yaml': yamlDocs(...service('wsa', { v1: wsA.port }), ...service('wsb', { v1: wsB.port }), ...service('plain', { v1: httpEcho.port }), ...service('dead', { v1: deadPort })),
      'vs.yaml': yamlDocs(
        virtualService(
          'ws',
          [HOST],
          [
            { match: [{ headers: { 'x-upstream': { exact: 'b' } } }], route: [dest('wsb')] },
            { match: [{ uri: { prefix: '/b/' } }], rewrite: { uri: '/rewritten/' }, route: [dest('wsb')] },
            { match: [{ uri: { prefix: '/moved' } }], redirect: { uri: '/new' } },
            { match: [{ uri: { prefix: '/dead' } }], route: [dest('dead')] },
            { match: [{ uri: { prefix: '/fault' } }], fault: { abort: { percentage: { value: 100 }, httpStatus: 418 } }, route: [dest('wsa')] },
            { match: [{ uri: { prefix: '/retry-5xx' } }], retries: { attempts: 2, retryOn: '5xx' }, route: [dest('plain')] },
            { match: [{ uri: { prefix: '/plain' } }], route: [dest('plain')] },
            { route: [dest('wsa')] },
          ],
          { gateways: ['gw', 'gw-strict'] },
        ),
      ),
    },
  });
});

afterAll(async () => {
  await gw?.stop();
  await wsA?.close();
  await wsB?.close();
  await httpEcho?.close();
  ca?.remove();
});

/** A plain request on either kind of port. */
function get(p: number, path: string, host: string): Promise<{ status: number; json: any }> {
  if (!tlsPorts.has(p)) return http(p, path, { headers: { host } });
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: p, path, headers: { host }, servername: host, ca: ca.certPem, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(body || 'null') }));
    });
    req.on('error', reject);
    req.end();
  });
}

const whoami = async (c: Client): Promise<{ name: string; url: string; headers: IncomingHttpHeaders; protocol: string }> => {
  c.ws.send('whoami');
  return JSON.parse((await c.next()).data.toString());
};

for (const engine of ['uWS (plain HTTP)', 'node:http2 (HTTPS, h2 and http/1.1 by ALPN)', 'node:http (plain HTTP, strict HTTP/1.1 engine)'] as const) {
describe(`WebSocket proxying on ${engine}`, () => {
  const tls = engine.startsWith('node:http2');
  /** A node engine (node:http2 or the strict node:http): node:http's upgrade and flow control. */
  const node = engine.startsWith('node');
  let port: number;
  let port2: number;
  const scheme = tls ? 'https' : 'http';
  beforeAll(() => {
    port = tls ? P.https : node ? P.strict : P.http;
    port2 = tls ? P.https2 : node ? P.strict2 : P.http2;
  });

  it(`the port is served by the ${tls ? 'node:http2 engine (h2 offered by default)' : node ? 'strict node:http engine' : 'uWS engine'}`, async () => {
    const listeners = (await gw.admin('/listeners')).text;
    expect(listeners).toContain(`127.0.0.1:${port}::${tls ? 'HTTPS (HTTP/1.1, h2)' : 'HTTP/1.1'}::`);
    const rows = JSON.parse((await gw.admin('/listeners?format=json')).text).listener_statuses as Array<{ address: string; engine: string }>;
    expect(rows.find((r) => r.address === `127.0.0.1:${port}`)?.engine).toBe(tls ? 'node:http2' : node ? 'node:http' : 'uWS');
  });

  it('echoes text and binary messages, keeping their type', async () => {
    const c = await connect(port, '/echo');
    c.ws.send('hello');
    const t = await c.next();
    expect(t.isBinary).toBe(false);
    expect(t.data.toString()).toBe('hello');
    const bin = Buffer.from([0, 1, 2, 255, 254]);
    c.ws.send(bin);
    const b = await c.next();
    expect(b.isBinary).toBe(true);
    expect(b.data.equals(bin)).toBe(true);
    c.ws.close();
    await c.closed;
  });

  it('negotiates the subprotocol with the upstream: the client gets the one the upstream chose', async () => {
    const c = await connect(port, '/proto', { protocols: ['chat.v2', 'chat.v1', 'other'] });
    expect(c.ws.protocol).toBe('chat.v1');
    const seen = await whoami(c);
    expect(seen.protocol).toBe('chat.v1');
    expect(String(seen.headers['sec-websocket-protocol']).split(',').map((s) => s.trim())).toEqual(['chat.v2', 'chat.v1', 'other']);
    c.ws.close();
  });

  it('the upstream sees x-forwarded-for, x-forwarded-proto, x-request-id, the Host and no x-envoy-* from the client', async () => {
    const c = await connect(port, '/hdr?q=1', { headers: { 'x-forwarded-for': '203.0.113.9', 'x-envoy-evil': '1', 'x-custom': 'ok' } });
    const seen = await whoami(c);
    expect(seen.name).toBe('a');
    expect(seen.url).toBe('/hdr?q=1');
    expect(seen.headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe(scheme);
    expect(seen.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(seen.headers.host).toBe(HOST);
    expect(seen.headers['x-custom']).toBe('ok');
    expect(seen.headers['x-envoy-evil']).toBeUndefined();
    c.ws.close();
  });

  it('routes by header and by path to different upstreams, applying the route rewrite', async () => {
    const byHeader = await connect(port, '/x', { headers: { 'x-upstream': 'b' } });
    expect((await whoami(byHeader)).name).toBe('b');
    const byPath = await connect(port, '/b/chat?room=1');
    const seen = await whoami(byPath);
    expect(seen.name).toBe('b');
    expect(seen.url).toBe('/rewritten/chat?room=1');
    const other = await connect(port, '/a');
    expect((await whoami(other)).name).toBe('a');
    for (const c of [byHeader, byPath, other]) c.ws.close();
  });

  it('a close code and reason from the client reach the upstream', async () => {
    const before = wsA.conns.length;
    const c = await connect(port, '/close-from-client');
    await whoami(c);
    const conn = wsA.conns[before]!;
    c.ws.close(4001, 'client bye');
    expect(await withTimeout(conn.closed, 2000, 'upstream close')).toEqual({ code: 4001, reason: 'client bye' });
    expect((await c.closed).code).toBe(4001);
  });

  it('a close code and reason from the upstream reach the client', async () => {
    const c = await connect(port, '/close-from-upstream');
    c.ws.send('close:4002:server bye');
    expect(await withTimeout(c.closed, 2000, 'client close')).toEqual({ code: 4002, reason: 'server bye' });
  });

  it('a close without a code stays without a code (1005) both ways', async () => {
    const before = wsA.conns.length;
    const c = await connect(port, '/close-no-code');
    await whoami(c);
    c.ws.close();
    expect((await withTimeout(wsA.conns[before]!.closed, 2000, 'upstream close')).code).toBe(1005);
  });

  it('the upstream dying closes the client (1011)', async () => {
    const c = await connect(port, '/die');
    c.ws.send('die');
    const closed = await withTimeout(c.closed, 2000, 'client close');
    expect(closed.code).toBe(1011);
  });

  it('the client dying closes the upstream connection within 1 s', async () => {
    const before = wsA.conns.length;
    const c = await connect(port, '/client-dies');
    await whoami(c);
    const conn = wsA.conns[before]!;
    const t0 = Date.now();
    c.ws.terminate(); // TCP gone, no close frame
    const closed = await withTimeout(conn.closed, 1000, 'upstream close');
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(closed.code).toBe(1011);
  });

  it('no matching route: the handshake fails with 404 (as HTTP: NR, server istio-envoy)', async () => {
    const err = (await connect(port, '/', { host: 'nope.test' }).catch((e: unknown) => e)) as { status: number; headers: IncomingHttpHeaders };
    expect(err.status).toBe(404);
    expect(err.headers.server).toBe('istio-envoy');
  });

  it('a redirect route answers the handshake with the redirect, as for HTTP', async () => {
    const err = (await connect(port, '/moved').catch((e: unknown) => e)) as { status: number; headers: IncomingHttpHeaders };
    expect(err.status).toBe(301);
    expect(err.headers.location).toBe(`${scheme}://${HOST}/new`);
  });

  it('a fault abort on the route answers the handshake with its status (FI), as for HTTP', async () => {
    const err = (await connect(port, '/fault').catch((e: unknown) => e)) as { status: number; body: string };
    expect(err.status).toBe(418);
    expect(err.body).toBe('fault filter abort');
  });

  it('an endpoint refusing connections: 503 UF with the HTTP path body', async () => {
    const err = (await connect(port, '/dead').catch((e: unknown) => e)) as { status: number; body: string };
    expect(err.status).toBe(503);
    expect(err.body).toMatch(/^upstream connect error or disconnect\/reset before headers\. reset reason: remote connection failure/);
  });

  it('an upstream answering the upgrade with another status: relayed to the client', async () => {
    // A plain HTTP server does not switch protocols: its answer goes back as it is.
    const err = (await connect(port, '/plain/x').catch((e: unknown) => e)) as { status: number; headers: IncomingHttpHeaders; body: string };
    expect(err.status).toBe(200);
    expect(err.headers.server).toBe('istio-envoy');
    expect(JSON.parse(err.body).name).toBe('plain');
  });

  it('an upstream refusing the upgrade with 503 is retried as an HTTP request would be (retries on 5xx), then relayed', async () => {
    const path = `/retry-5xx/busy-${port}`;
    const err = (await connect(port, path, { headers: { 'x-test-status': '503' } }).catch((e: unknown) => e)) as { status: number; body: string };
    expect(err.status).toBe(503);
    expect(JSON.parse(err.body).name).toBe('plain');
    const attempts = httpEcho.requests.filter((q) => q.url === path).map((q) => q.headers['x-envoy-attempt-count']);
    expect(attempts).toEqual(['1', '2', '3']);
  });

  if (node) {
    it('an upgrade other than websocket is refused 403 (as Envoy refuses upgrades Istio does not configure); a bad WebSocket key 400', async () => {
      const ask = (headers: Record<string, string>): Promise<number> =>
        new Promise((resolve, reject) => {
          const opts = { host: '127.0.0.1', port, path: '/', headers: { host: HOST, connection: 'Upgrade', ...headers }, agent: false, timeout: 5000 };
          const onResponse = (res: IncomingMessage): void => {
            res.resume();
            resolve(res.statusCode ?? 0);
          };
          const req = tls ? httpsRequest({ ...opts, servername: HOST, ca: ca.certPem }, onResponse) : httpRequest(opts, onResponse);
          req.on('upgrade', (res) => resolve(res.statusCode ?? 0));
          req.on('error', reject);
          req.end();
        });
      expect(await ask({ upgrade: 'spdy/3.1' })).toBe(403);
      expect(await ask({ upgrade: 'websocket', 'sec-websocket-key': 'not a key', 'sec-websocket-version': '13' })).toBe(400);
    });
  }

  it('plain HTTP requests on the same listener still work', async () => {
    const r = await get(port, '/plain/get', HOST);
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('plain');
    expect(r.json.headers['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('a config reload (unrelated VirtualService) does not close an open WebSocket, which keeps echoing', async () => {
    const before = wsA.conns.length;
    const c = await connect(port, '/reload');
    try {
      c.ws.send('before');
      expect((await c.next()).data.toString()).toBe('before');
      gw.writeFile(`other-${port}.yaml`, yamlDocs(virtualService(`other-${port}`, [`other-${port}.test`], [{ route: [dest('plain')] }])));
      // What is checked is that the reload leaves the socket open, not how fast it applies (hot-reload.test.ts).
      await waitFor(async () => (await http(P.http, '/', { headers: { host: `other-${port}.test` } })).status === 200, 4 * APPLY_MS);
      await sleep(200);
      for (let i = 0; i < 5; i++) {
        c.ws.send(`after ${i}`);
        expect((await c.next()).data.toString()).toBe(`after ${i}`);
      }
      expect(c.ws.readyState).toBe(WebSocket.OPEN);
      expect(wsA.conns[before]!.isClosed).toBe(false);
    } finally {
      // Left open, it would count as an active upstream request in the churn test below.
      c.ws.close();
    }
  });

  it('a 4 MiB binary message round-trips intact', async () => {
    const c = await connect(port, '/big');
    const big = pattern(4 * MiB);
    c.ws.send(big);
    const back = await c.next();
    expect(back.data.length).toBe(big.length);
    expect(sha256(back.data)).toBe(sha256(big));
    c.ws.close();
  });

  it('a client message over 16 MiB closes the connection; the upstream gets 1009', async () => {
    const before = wsA.conns.length;
    const c = await connect(port, '/too-big');
    await whoami(c);
    c.ws.send(Buffer.alloc(16 * MiB + 1));
    expect((await withTimeout(wsA.conns[before]!.closed, 3000, 'upstream close')).code).toBe(1009);
    await withTimeout(c.closed, 3000, 'client close');
  });

  it('an upstream message over 16 MiB closes the client with 1009', async () => {
    const c = await connect(port, '/too-big-up');
    c.ws.send(`big:${16 * MiB + 1}`);
    expect((await withTimeout(c.closed, 3000, 'client close')).code).toBe(1009);
  });

  it('backpressure: a client that does not read while the upstream floods 50 MiB does not grow the gateway; everything arrives once it reads', async () => {
    const pid = gw.proc.pid!;
    const before = wsA.conns.length;
    const c = await connect(port, '/flood');
    await whoami(c);
    const conn = wsA.conns[before]!;
    const rss0 = rssKb(pid);
    c.ws.pause(); // stop reading: the kernel buffers fill, then the gateway's
    c.ws.send('flood:50');
    await sleep(1500);
    const rss1 = rssKb(pid);
    // The gateway stopped reading from the upstream: most of the flood is still in the upstream.
    expect(conn.ws.bufferedAmount).toBeGreaterThan(25 * MiB);
    expect(rss1 - rss0).toBeLessThan(64 * 1024);
    let received = 0;
    c.ws.on('message', (d: Buffer) => (received += d.length));
    c.ws.resume();
    await waitFor(() => received >= 50 * MiB, 10_000);
    expect(received).toBe(50 * MiB);
    c.ws.close();
  });

  it(
    node
      ? 'backpressure towards the upstream: a client sending 80 MiB to an upstream that stopped reading is paused, not cut off; everything arrives'
      : 'a client more than 64 MiB ahead of an upstream that stopped reading is closed with 1013 (uWS cannot pause reading a WebSocket)',
    async () => {
      const before = wsA.conns.length;
      const c = await connect(port, '/slow-upstream');
      c.ws.send('sink');
      expect((await c.next()).data.toString()).toBe('sinking');
      const conn = wsA.conns[before]!;
      conn.ws.pause(); // the upstream stops reading: the kernel buffers fill, then the gateway's
      const chunk = pattern(MiB);
      for (let i = 0; i < 80; i++) c.ws.send(chunk, { binary: true });
      if (!node) {
        expect((await withTimeout(c.closed, 5000, 'client close')).code).toBe(1013);
        conn.ws.resume();
        return;
      }
      await sleep(1500);
      // The gateway stopped reading from the client: most of the 80 MiB is still in the client.
      expect(c.ws.readyState).toBe(WebSocket.OPEN);
      expect(c.ws.bufferedAmount).toBeGreaterThan(40 * MiB);
      conn.ws.resume();
      await waitFor(() => conn.received >= 80 * MiB, 10_000);
      expect(conn.received).toBe(80 * MiB);
      expect(c.ws.readyState).toBe(WebSocket.OPEN);
      c.ws.close();
    },
  );

  it('each upgrade is one istio_requests_total sample: 101 for proxied WebSockets, NR 404 for no route', async () => {
    const c = await connect(port, '/metrics');
    c.ws.close();
    await c.closed;
    await sleep(100);
    const samples = parsePrometheus((await gw.admin('/stats/prometheus')).text);
    const ok = findSamples(samples, 'istio_requests_total', { response_code: '101', destination_service_name: 'wsa' });
    expect(sumSamples(ok)).toBeGreaterThanOrEqual(10);
    expect(ok.every((s) => s.labels.response_flags === '-' || /^(DC|UC)$/.test(s.labels.response_flags!))).toBe(true);
    expect(sumSamples(findSamples(samples, 'istio_requests_total', { response_code: '404', response_flags: 'NR' }))).toBeGreaterThanOrEqual(1);
    expect(sumSamples(findSamples(samples, 'istio_requests_total', { response_code: '503', response_flags: /^UF/ }))).toBeGreaterThanOrEqual(1);
  });

  it('churn: 60 WebSockets ended every way leave no file descriptors or active upstream requests behind', async () => {
    const pid = gw.proc.pid!;
    const fds = (): number => readdirSync(`/proc/${pid}/fd`).length;
    await sleep(200);
    const fd0 = fds();
    for (let batch = 0; batch < 6; batch++) {
      const conns = await Promise.all(Array.from({ length: 10 }, (_, i) => connect(port, `/churn/${batch}/${i}`)));
      await Promise.all(conns.map((c) => whoami(c)));
      conns.forEach((c, i) => {
        if (i % 3 === 0) c.ws.terminate(); // client gone without a close frame
        else if (i % 3 === 1) c.ws.close(1000, 'done');
        else c.ws.send('die'); // upstream gone
      });
      await Promise.all(conns.map((c) => withTimeout(c.closed, 3000, 'client close')));
    }
    await waitFor(() => fds() <= fd0, 3000);
    const clusters = (await gw.admin('/clusters')).text;
    const active = clusters.split('\n').filter((l) => l.includes('wsa.default') && l.includes('::rq_active::'));
    expect(active.length).toBeGreaterThan(0);
    for (const l of active) expect(l).toMatch(/::rq_active::0$/);
  });

  it('a removed listener closes its WebSockets with 1001 (going away), forwarded to the upstream', async () => {
    const before = wsA.conns.length;
    const c = await connect(port2, '/on-removed-port');
    await whoami(c);
    serving.delete(port2);
    gw.writeFile('gw.yaml', gatewayYaml());
    const closed = await withTimeout(c.closed, 5000, 'client close');
    expect(closed.code).toBe(1001);
    expect((await withTimeout(wsA.conns[before]!.closed, 2000, 'upstream close')).code).toBe(1001);
    // The remaining listener still proxies WebSockets.
    const d = await connect(port, '/still');
    d.ws.send('ok');
    expect((await d.next()).data.toString()).toBe('ok');
    d.ws.close();
  });
});
}
