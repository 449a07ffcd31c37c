// WebSocket upgrades through the gateway, as Istio allows them on every HTTP route: messages both
// ways (text and binary), subprotocols, proxy headers and rewrites, close codes both ways, either
// side dying, reloads that must not close open WebSockets, large messages, and flow control.
// Upstreams are real `ws` servers on 127.0.0.1; the client is a `ws` WebSocket.
import { readdirSync, readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
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
 * binary messages at once), `big:<bytes>` (one binary message of that size).
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
    const conn: UpstreamConn = { url: req.url ?? '', headers: req.headers, protocol: ws.protocol, ws, closed: new Promise((r) => (resolveClosed = r)), isClosed: false };
    up.conns.push(conn);
    ws.on('error', () => undefined);
    ws.on('close', (code, reason) => {
      conn.isClosed = true;
      resolveClosed({ code, reason: reason.toString() });
    });
    ws.on('message', (data: Buffer, isBinary) => {
      const text = isBinary ? '' : data.toString();
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
    const ws = new WebSocket(`ws://127.0.0.1:${p}${path}`, opts.protocols ?? [], { headers: { host: opts.host ?? HOST, ...opts.headers }, maxPayload: 64 * MiB });
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
let port: number;
let port2: number;
let wsA: WsUpstream;
let wsB: WsUpstream;
let httpEcho: Echo;
let deadPort: number;

const gatewayYaml = (ports: number[]): string => yamlDocs({ ...gateway('gw', ports[0]!), spec: { selector: { istio: 'ingressgateway' }, servers: ports.map((p) => ({ port: { number: p, name: `http-${p}`, protocol: 'HTTP' }, hosts: ['*'] })) } });

beforeAll(async () => {
  wsA = await startWsUpstream('a');
  wsB = await startWsUpstream('b');
  httpEcho = await startEcho('plain');
  [port, port2, deadPort] = (await freePorts(3)) as [number, number, number];
  gw = await startGateway({
    files: {
      'gw.yaml': gatewayYaml([port, port2]),
      'svc.yaml': yamlDocs(...service('wsa', { v1: wsA.port }), ...service('wsb', { v1: wsB.port }), ...service('plain', { v1: httpEcho.port }), ...service('dead', { v1: deadPort })),
      'vs.yaml': yamlDocs(
        virtualService('ws', [HOST], [
          { match: [{ headers: { 'x-upstream': { exact: 'b' } } }], route: [dest('wsb')] },
          { match: [{ uri: { prefix: '/b/' } }], rewrite: { uri: '/rewritten/' }, route: [dest('wsb')] },
          { match: [{ uri: { prefix: '/moved' } }], redirect: { uri: '/new' } },
          { match: [{ uri: { prefix: '/dead' } }], route: [dest('dead')] },
          { match: [{ uri: { prefix: '/fault' } }], fault: { abort: { percentage: { value: 100 }, httpStatus: 418 } }, route: [dest('wsa')] },
          { match: [{ uri: { prefix: '/plain' } }], route: [dest('plain')] },
          { route: [dest('wsa')] },
        ]),
      ),
    },
  });
});

afterAll(async () => {
  await gw?.stop();
  await wsA?.close();
  await wsB?.close();
  await httpEcho?.close();
});

const whoami = async (c: Client): Promise<{ name: string; url: string; headers: IncomingHttpHeaders; protocol: string }> => {
  c.ws.send('whoami');
  return JSON.parse((await c.next()).data.toString());
};

describe('WebSocket proxying', () => {
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
    expect(seen.headers['x-forwarded-proto']).toBe('http');
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
    expect(err.headers.location).toBe(`http://${HOST}/new`);
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

  it('plain HTTP requests on the same listener still work', async () => {
    const r = await http(port, '/plain/get', { headers: { host: HOST } });
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('plain');
    expect(r.json.headers['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('a config reload (unrelated VirtualService) does not close an open WebSocket, which keeps echoing', async () => {
    const before = wsA.conns.length;
    const c = await connect(port, '/reload');
    c.ws.send('before');
    expect((await c.next()).data.toString()).toBe('before');
    gw.writeFile('other.yaml', yamlDocs(virtualService('other', ['other.test'], [{ route: [dest('plain')] }])));
    await waitFor(async () => (await http(port, '/', { headers: { host: 'other.test' } })).status === 200, APPLY_MS);
    await sleep(200);
    for (let i = 0; i < 5; i++) {
      c.ws.send(`after ${i}`);
      expect((await c.next()).data.toString()).toBe(`after ${i}`);
    }
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    expect(wsA.conns[before]!.isClosed).toBe(false);
    c.ws.close();
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
    gw.writeFile('gw.yaml', gatewayYaml([port]));
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
