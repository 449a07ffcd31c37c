// Hostile clients against the node:http2 engine ports (HTTP2 plaintext h2c + HTTP/1.1, HTTPS
// offering h2, MUTUAL TLS): slow and idle clients are cut by the edge limits (request headers,
// handshake, idle, stream idle), clients that reset mid-request leave no socket or upstream
// request behind, and HTTP/2 floods (rapid reset, too many streams, protocol errors) neither
// reach the upstreams nor leave connections in CLOSE_WAIT. Two gateways: one with short limits
// set through GATEHOUSE_* variables (so a test waits a second, not a minute), one with the
// defaults (so what it shows cannot come from a short timeout). Also what already held and must
// keep holding: uWS cuts slowloris at ~10 s, floods nghttp2 handles are dropped at once, aborted
// downloads leave no descriptor behind.
import http2, { type ClientHttp2Session, type OutgoingHttpHeaders } from 'node:http2';
import { createServer as createHttpServer, Agent, request as httpRequest, type Server as HttpServer } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { FRAME, frame, headers as h2headers, hpackIndexedLiteral, ping, PREFACE, rawH2, requestBlock, rstStream, settings, settingsAck } from '../helpers/h2-frames.js';
import { freePorts, sleep, waitFor } from '../helpers/net.js';
import { createCa, type CertFiles, type TestCa } from '../helpers/openssl-ca.js';
import { connectionsOn, connectionsTo, fdCount } from '../helpers/proc.js';
import { startEcho, type Echo } from '../helpers/upstream.js';
import { dest, service, virtualService, yamlDocs, type Obj } from '../helpers/yaml.js';

const HOST = 'a.test';

// ---- upstreams ----

/** A raw upstream that reads and drops everything and never answers; counts its connections. */
interface HoldUpstream {
  port: number;
  accepted: number;
  open: Set<Socket>;
  /** Bytes received per connection, in accept order. */
  received: number[];
  close(): Promise<void>;
}

async function holdUpstream(opts: { read: boolean }): Promise<HoldUpstream> {
  const u: HoldUpstream = { port: 0, accepted: 0, open: new Set(), received: [], close: async () => undefined };
  const srv = net.createServer((s) => {
    const i = u.accepted++;
    u.received[i] = 0;
    u.open.add(s);
    s.on('error', () => undefined);
    s.on('close', () => u.open.delete(s));
    s.on('data', (d: Buffer) => {
      u.received[i]! += d.length;
      // Not reading: only the request head is taken, then the body waits in the socket buffers.
      if (!opts.read) s.pause();
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  u.port = (srv.address() as AddressInfo).port;
  u.close = () =>
    new Promise<void>((r) => {
      for (const s of u.open) s.destroy();
      srv.close(() => r());
    });
  return u;
}

/** An HTTP upstream that answers every request after `delayMs`, counting requests in flight. */
interface SlowUpstream {
  port: number;
  inflight: number;
  maxInflight: number;
  served: number;
  server: HttpServer;
}

async function slowUpstream(delayMs: number): Promise<SlowUpstream> {
  const u: SlowUpstream = { port: 0, inflight: 0, maxInflight: 0, served: 0, server: undefined as unknown as HttpServer };
  u.server = createHttpServer((req, res) => {
    u.inflight++;
    u.maxInflight = Math.max(u.maxInflight, u.inflight);
    req.resume();
    setTimeout(() => {
      u.inflight--;
      u.served++;
      res.end('slow');
    }, delayMs);
  });
  await new Promise<void>((r) => u.server.listen(0, '127.0.0.1', r));
  u.port = (u.server.address() as AddressInfo).port;
  return u;
}

// ---- gateways ----

interface Ports {
  h2c: number;
  https: number;
  mutual: number;
  http: number;
  /** Plain HTTP on the strict HTTP/1.1 engine (node:http, the same listener). */
  strict: number;
}

interface Gw {
  gw: GatewayProcess;
  P: Ports;
  pid: number;
}

let ca: TestCa;
let serverCert: CertFiles;
let clientCert: CertFiles;
let echo: Echo;
let hold: HoldUpstream;
let noread: HoldUpstream;
/** Upstreams of one test each (so that nothing another test left in flight is counted). */
let rapid: HoldUpstream;
let flood: HoldUpstream;
let many: HoldUpstream;
let slow: SlowUpstream;
let fast: Gw;
let dflt: Gw;

/** Short limits for the slow/idle tests. */
const FAST_ENV = {
  GATEHOUSE_HANDSHAKE_TIMEOUT: '1s',
  GATEHOUSE_REQUEST_HEADERS_TIMEOUT: '1s',
  GATEHOUSE_IDLE_TIMEOUT: '1s',
  GATEHOUSE_STREAM_IDLE_TIMEOUT: '1s',
  GATEHOUSE_H2_PING_TIMEOUT: '500ms',
};

async function startGw(env: Record<string, string> | undefined, ports: number[]): Promise<Gw> {
  const [h2c, https, mutual, http, strict] = ports;
  const P: Ports = { h2c: h2c!, https: https!, mutual: mutual!, http: http!, strict: strict! };
  const tlsServer = (port: number, name: string, tlsOpts: Obj): Obj => ({ port: { number: port, name, protocol: 'HTTPS' }, hosts: ['*'], tls: tlsOpts });
  const gatewayDoc: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    // h2 offered by ALPN: these HTTPS ports are served by the node:http2 engine.
    metadata: { name: 'gw', namespace: 'default', annotations: { 'gatehouse.io/alpn': 'h2,http/1.1' } },
    spec: {
      selector: { istio: 'ingressgateway' },
      servers: [
        { port: { number: P.h2c, name: 'h2c', protocol: 'HTTP2' }, hosts: ['*'] },
        tlsServer(P.https, 'https', { mode: 'SIMPLE', serverCertificate: 'srv.crt', privateKey: 'srv.key' }),
        tlsServer(P.mutual, 'mutual', { mode: 'MUTUAL', serverCertificate: 'srv.crt', privateKey: 'srv.key', caCertificates: 'ca.crt' }),
        { port: { number: P.http, name: 'http', protocol: 'HTTP' }, hosts: ['*'] },
      ],
    },
  };
  const strictGateway: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name: 'gw-strict', namespace: 'default', annotations: { 'gatehouse.io/http1-engine': 'strict' } },
    spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: P.strict, name: 'http-strict', protocol: 'HTTP' }, hosts: ['*'] }] },
  };
  const config = yamlDocs(
    gatewayDoc,
    strictGateway,
    ...service('web', { v1: echo.port }),
    ...service('hold', { v1: hold.port }),
    ...service('noread', { v1: noread.port }),
    ...service('rapid', { v1: rapid.port }),
    ...service('flood', { v1: flood.port }),
    ...service('many', { v1: many.port }),
    ...service('slow', { v1: slow.port }),
    virtualService('routes', ['*'], [
      { match: [{ uri: { prefix: '/hold' } }], route: [dest('hold')] },
      { match: [{ uri: { prefix: '/noread' } }], route: [dest('noread')] },
      { match: [{ uri: { prefix: '/rapid' } }], route: [dest('rapid')] },
      { match: [{ uri: { prefix: '/flood' } }], route: [dest('flood')] },
      { match: [{ uri: { prefix: '/many' } }], route: [dest('many')] },
      { match: [{ uri: { prefix: '/slow' } }], route: [dest('slow')] },
      { route: [dest('web')] },
    ], { gateways: ['gw', 'gw-strict'] }),
  );
  const gw = await startGateway({
    files: { 'gw.yaml': config, 'srv.crt': serverCert.certPem, 'srv.key': serverCert.keyPem, 'ca.crt': ca.certPem },
    ...(env ? { env } : {}),
  });
  return { gw, P, pid: gw.proc.pid! };
}

beforeAll(async () => {
  ca = createCa('hostile');
  serverCert = ca.issue('srv', { sans: [`DNS:${HOST}`] });
  clientCert = ca.issue('client', { client: true, sans: ['URI:spiffe://cluster.local/ns/default/sa/client'] });
  echo = await startEcho('web');
  hold = await holdUpstream({ read: true });
  noread = await holdUpstream({ read: false });
  [rapid, flood, many] = await Promise.all([holdUpstream({ read: true }), holdUpstream({ read: true }), holdUpstream({ read: true })]);
  slow = await slowUpstream(150);
  // All ports at once: two lookups running side by side could hand out the same port twice.
  const ports = await freePorts(10);
  [fast, dflt] = await Promise.all([startGw(FAST_ENV, ports.slice(0, 5)), startGw(undefined, ports.slice(5))]);
}, 30_000);

afterAll(async () => {
  await Promise.all([fast?.gw.stop(), dflt?.gw.stop()]);
  await echo?.close();
  await hold?.close();
  await noread?.close();
  for (const u of [rapid, flood, many]) await u?.close();
  await new Promise<void>((r) => (slow ? slow.server.close(() => r()) : r()));
  ca?.remove();
});

// ---- client helpers ----

/** plain: the HTTP2 port (h2c and HTTP/1.1); strict: a plain HTTP port on the strict engine (HTTP/1.1 only). */
type Transport = 'plain' | 'tls' | 'mutual' | 'strict';

function portOf(g: Gw, t: Transport): number {
  return t === 'plain' ? g.P.h2c : t === 'tls' ? g.P.https : t === 'mutual' ? g.P.mutual : g.P.strict;
}

/** A connected client socket (TLS handshake done for TLS), HTTP/1.1 by ALPN. */
function open(g: Gw, t: Transport, alpn: string[] = ['http/1.1']): Promise<Socket | TLSSocket> {
  return new Promise((resolve, reject) => {
    const port = portOf(g, t);
    if (t === 'plain' || t === 'strict') {
      const s = net.connect(port, '127.0.0.1', () => resolve(s));
      s.once('error', reject);
      return;
    }
    const s = tls.connect({ host: '127.0.0.1', port, servername: HOST, ca: ca.certPem, ALPNProtocols: alpn, ...(t === 'mutual' ? { cert: clientCert.certPem, key: clientCert.keyPem } : {}) }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves with what the server sent once it closed the connection, or null after `ms`. */
function closedWithin(s: Socket, ms: number): Promise<string | null> {
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    const finish = (v: string | null): void => {
      if (done) return;
      done = true;
      clearTimeout(t);
      resolve(v);
    };
    const t = setTimeout(() => finish(null), ms);
    s.on('data', (d: Buffer) => (data += d.toString('latin1')));
    s.on('error', () => undefined);
    s.once('close', () => finish(data));
    if (s.destroyed) finish(data);
  });
}

function h2connect(g: Gw, t: Transport): ClientHttp2Session {
  const port = portOf(g, t);
  const s =
    t === 'plain'
      ? http2.connect(`http://127.0.0.1:${port}`)
      : http2.connect(`https://127.0.0.1:${port}`, { servername: HOST, ca: ca.certPem, ...(t === 'mutual' ? { cert: clientCert.certPem, key: clientCert.keyPem } : {}) });
  s.on('error', () => undefined);
  return s;
}

function sessionClosedWithin(s: ClientHttp2Session, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (s.closed || s.destroyed) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

interface H2Reply {
  status: number;
  body: string;
}

function h2request(s: ClientHttp2Session, path: string, opts: { method?: string; body?: Buffer } = {}): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const headers: OutgoingHttpHeaders = { ':path': path, ':authority': HOST, ':method': opts.method ?? 'GET' };
    const req = s.request(headers, { endStream: opts.body === undefined });
    let status = 0;
    let body = '';
    req.on('response', (h) => (status = Number(h[':status'])));
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => resolve({ status, body }));
    req.on('error', reject);
    if (opts.body !== undefined) req.end(opts.body);
  });
}

/** HTTP/1.1 request head for a POST whose body will be sent by the test. */
const postHead = (path: string, length: number): string => `POST ${path} HTTP/1.1\r\nhost: ${HOST}\r\ncontent-length: ${length}\r\n\r\n`;

/** Every transport of the node engine that speaks HTTP/2, and with it HTTP/1.1. */
const TRANSPORTS: Transport[] = ['plain', 'tls', 'mutual'];
/** Every transport that speaks HTTP/1.1 (the strict engine's plain ports too). */
const H1_TRANSPORTS: Transport[] = [...TRANSPORTS, 'strict'];

// ---- slow and idle clients (short limits) ----

describe('slow and idle clients on node:http2 engine ports (limits shortened to 1 s)', () => {
  it.each(H1_TRANSPORTS)('%s: a request head trickled a header line at a time (slowloris) is answered 408 and closed after the request headers timeout', async (t) => {
    const s = await open(fast, t);
    s.write(`GET / HTTP/1.1\r\nhost: ${HOST}\r\n`);
    const trickle = setInterval(() => s.writable && s.write('x-slow: 1\r\n'), 200);
    const data = await closedWithin(s, 6000);
    clearInterval(trickle);
    s.destroy();
    expect(data, 'still open after 6 s').not.toBeNull();
    if (data) expect(data).toMatch(/^HTTP\/1\.1 408 /);
  });

  it.each(H1_TRANSPORTS)('%s: a connection that sends nothing (no TLS handshake, no first byte) is closed after the handshake timeout', async (t) => {
    const s = net.connect(portOf(fast, t), '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    const data = await closedWithin(s, 6000);
    s.destroy();
    expect(data, 'still open after 6 s').not.toBeNull();
  });

  it.each(['tls', 'mutual'] as Transport[])('%s: a TLS connection idle after its handshake (HTTP/1.1) is answered 408 and closed', async (t) => {
    const s = await open(fast, t);
    const data = await closedWithin(s, 6000);
    s.destroy();
    expect(data, 'still open after 6 s').not.toBeNull();
    if (data) expect(data).toMatch(/^HTTP\/1\.1 408 /);
  });

  it.each(TRANSPORTS)('%s: an HTTP/2 connection that opens no stream is closed (GOAWAY) after the request headers timeout, PINGs or not', async (t) => {
    const s = h2connect(fast, t);
    await new Promise((r) => s.once('connect', r));
    // Frames keep coming (PINGs), but no stream is ever opened.
    const pinger = setInterval(() => !s.closed && !s.destroyed && s.ping(() => undefined), 200);
    let goaway = false;
    s.once('goaway', () => (goaway = true));
    const closed = await sessionClosedWithin(s, 6000);
    clearInterval(pinger);
    s.destroy();
    expect(closed, 'still open after 6 s').toBe(true);
    expect(goaway).toBe(true);
  });

  it.each(TRANSPORTS)('%s: an HTTP/2 connection is closed after the idle timeout once its streams are done', async (t) => {
    const s = h2connect(fast, t);
    expect((await h2request(s, '/idle')).status).toBe(200);
    const closed = await sessionClosedWithin(s, 6000);
    s.destroy();
    expect(closed, 'still open after 6 s').toBe(true);
  });

  it('HTTP/1.1: a keep-alive connection with no request in flight is closed after the idle timeout', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const socket = await new Promise<Socket>((resolve, reject) => {
        const req = httpRequest({ host: '127.0.0.1', port: fast.P.h2c, path: '/keepalive', headers: { host: HOST }, agent }, (res) => {
          res.resume();
          res.on('end', () => resolve(req.socket!));
        });
        req.on('error', reject);
        req.end();
      });
      // Node's own default would be 5 s: 1 s here.
      const closed = await closedWithin(socket, 3500);
      expect(closed, 'still open after 3.5 s').not.toBeNull();
    } finally {
      agent.destroy();
    }
  });

  it.each(H1_TRANSPORTS)('%s (HTTP/1.1): a request body that stops arriving is answered 408 after the stream idle timeout, and its upstream request is aborted', async (t) => {
    const before = hold.accepted;
    const s = await open(fast, t);
    s.write(postHead('/hold/stalled', 1000));
    s.write('x'.repeat(10));
    await waitFor(() => hold.accepted > before && hold.received[before]! > 0, 3000);
    const upstream = [...hold.open].at(-1)!;
    const data = await closedWithin(s, 6000);
    s.destroy();
    expect(data, 'still open after 6 s').not.toBeNull();
    expect(data).toMatch(/^HTTP\/1\.1 408 /);
    expect(data).toMatch(/\r\nconnection: close\r\n/i);
    await waitFor(() => upstream.destroyed || !hold.open.has(upstream), 3000);
  });

  it.each(TRANSPORTS)('%s (HTTP/2): a request body that stops arriving is answered 408 after the stream idle timeout, and its upstream request is aborted', async (t) => {
    const before = hold.accepted;
    const s = h2connect(fast, t);
    try {
      const req = s.request({ ':path': '/hold/stalled', ':authority': HOST, ':method': 'POST' }, { endStream: false });
      req.on('error', () => undefined);
      const status = new Promise<number>((resolve) => {
        req.on('response', (h) => resolve(Number(h[':status'])));
        setTimeout(() => resolve(0), 6000);
      });
      req.write('x'.repeat(10));
      await waitFor(() => hold.accepted > before && hold.received[before]! > 0, 3000);
      const upstream = [...hold.open].at(-1)!;
      expect(await status).toBe(408);
      await waitFor(() => !hold.open.has(upstream), 3000);
      // The stream is closed once the answer is sent (RST_STREAM NO_ERROR: the rest of the body is not wanted).
      await waitFor(() => req.closed, 3000);
      expect(req.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
    } finally {
      s.destroy();
    }
  });

  it('a slow but steady upload (a chunk every 300 ms for 3 s, over HTTP/1.1 and HTTP/2) is never cut', async () => {
    const chunks = 10;
    const h1 = (async () => {
      const s = await open(fast, 'tls');
      s.write(postHead('/upload', chunks * 100));
      for (let i = 0; i < chunks; i++) {
        await sleep(300);
        s.write('u'.repeat(100));
      }
      const data = await new Promise<string>((resolve) => {
        let d = '';
        s.on('data', (b: Buffer) => {
          d += b.toString('latin1');
          if (d.includes('"bodyLength"')) resolve(d);
        });
        setTimeout(() => resolve(d), 3000);
      });
      s.destroy();
      return data;
    })();
    const h2 = (async () => {
      const s = h2connect(fast, 'plain');
      const req = s.request({ ':path': '/upload', ':authority': HOST, ':method': 'POST' }, { endStream: false });
      let status = 0;
      let body = '';
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (d: Buffer) => (body += d.toString()));
      const ended = new Promise<void>((r) => req.on('end', () => r()));
      req.on('error', () => undefined);
      for (let i = 0; i < chunks; i++) {
        await sleep(300);
        req.write('u'.repeat(100));
      }
      req.end();
      await ended;
      s.destroy();
      return { status, body };
    })();
    const [a, b] = await Promise.all([h1, h2]);
    expect(a).toMatch(/^HTTP\/1\.1 200 /);
    expect(a).toContain(`"bodyLength":${chunks * 100}`);
    expect(b.status).toBe(200);
    expect(JSON.parse(b.body).bodyLength).toBe(chunks * 100);
  });

  it('HTTP/2: a connection nghttp2 ends for a protocol error (DATA on stream 0) is closed, not left in CLOSE_WAIT', async () => {
    const c = await rawH2(fast.P.h2c);
    c.write(settingsAck());
    c.write(frame(FRAME.DATA, 0, 0, Buffer.from('bad')));
    await waitFor(() => c.goaway(), 3000);
    c.socket.end();
    await Promise.race([c.closed, sleep(6000)]);
    expect(c.isClosed(), 'the gateway kept its side open').toBe(true);
    await waitFor(() => connectionsOn(fast.pid, fast.P.h2c).every((s) => s.state !== 'CLOSE_WAIT'), 3000);
  });

  it('HTTP/2: a stream in flight when nghttp2 ends the connection is aborted upstream, and the connection closed (a PING goes unanswered)', async () => {
    const before = hold.accepted;
    const c = await rawH2(fast.P.h2c);
    c.write(settingsAck());
    // A GET in flight to an upstream that never answers, then a connection error.
    c.write(h2headers(1, requestBlock(HOST, { path: '/hold/inflight' })));
    await waitFor(() => hold.accepted > before, 3000);
    const upstream = [...hold.open].at(-1)!;
    c.write(frame(FRAME.DATA, 0, 0, Buffer.from('bad')));
    await waitFor(() => c.goaway(), 3000);
    // The client keeps its side open and never answers: the gateway must let go by itself.
    await Promise.race([c.closed, sleep(8000)]);
    expect(c.isClosed(), 'the gateway kept the connection').toBe(true);
    await waitFor(() => !hold.open.has(upstream), 3000);
  });
});

describe('the limits are set by GATEHOUSE_* variables', () => {
  it('gatehouse run refuses an invalid value with a message (exit 2)', async () => {
    const g = await startGateway({ files: { 'gw.yaml': '' }, env: { GATEHOUSE_REQUEST_HEADERS_TIMEOUT: 'soon' }, waitReady: false });
    expect(await g.exited).toBe(2);
    expect(g.stderr()).toContain('GATEHOUSE_REQUEST_HEADERS_TIMEOUT="soon" must be a duration such as 30s or 500ms');
    await g.stop();
  });
});

// ---- resets and floods (default limits) ----

describe('clients that reset, and HTTP/2 floods (default limits)', () => {
  it('TLS HTTP/1.1: a client that resets while its body is held back (upstream not reading) frees its socket and aborts the upstream request at once', async () => {
    const fd0 = fdCount(dflt.pid);
    const before = noread.accepted;
    const raw = net.connect(dflt.P.https, '127.0.0.1');
    raw.on('error', () => undefined);
    const s = tls.connect({ socket: raw, servername: HOST, ca: ca.certPem, ALPNProtocols: ['http/1.1'] });
    s.on('error', () => undefined);
    await new Promise((r) => s.once('secureConnect', r));
    s.write(postHead('/noread/upload', 1_000_000_000));
    // Write until the gateway stops reading (the upstream takes nothing).
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    await new Promise<void>((resolve) => {
      let last = Date.now();
      const pump = (): void => {
        while (s.write(chunk));
        last = Date.now();
        s.once('drain', pump);
      };
      pump();
      const t = setInterval(() => {
        if (Date.now() - last > 500) {
          clearInterval(t);
          resolve();
        }
      }, 100);
    });
    expect(noread.accepted).toBe(before + 1);
    expect(connectionsTo(dflt.pid, noread.port).length).toBe(1);
    raw.resetAndDestroy();
    await waitFor(() => connectionsTo(dflt.pid, noread.port).length === 0, 5000);
    await waitFor(() => fdCount(dflt.pid) <= fd0, 5000);
  });

  it('TLS HTTP/1.1: 50 clients that reset mid-body at once leave no descriptor and no upstream connection behind', async () => {
    const fd0 = fdCount(dflt.pid);
    await Promise.all(
      Array.from(
        { length: 50 },
        (_, i) =>
          new Promise<void>((resolve) => {
            const raw = net.connect(dflt.P.https, '127.0.0.1');
            raw.on('error', () => undefined);
            const s = tls.connect({ socket: raw, servername: HOST, ca: ca.certPem, ALPNProtocols: ['http/1.1'] }, () => {
              s.write(postHead('/hold/reset', 10_000_000));
              s.write(Buffer.alloc(100_000));
              setTimeout(() => {
                raw.resetAndDestroy();
                resolve();
              }, i % 3);
            });
            s.on('error', () => undefined);
          }),
      ),
    );
    await waitFor(() => connectionsTo(dflt.pid, hold.port).length === 0, 8000);
    await waitFor(() => fdCount(dflt.pid) <= fd0, 8000);
  });

  it('HTTP/2: streams reset in the same read as their HEADERS (rapid reset) start nothing upstream', async () => {
    const c = await rawH2(dflt.P.h2c);
    c.write(settingsAck());
    const parts: Buffer[] = [];
    for (let i = 0; i < 200; i++) parts.push(h2headers(1 + 2 * i, requestBlock(HOST, { path: '/rapid' })), rstStream(1 + 2 * i));
    c.write(Buffer.concat(parts));
    // A request after them on the same connection is served: the resets were all processed.
    c.write(h2headers(401, requestBlock(HOST)));
    await waitFor(() => c.frames.some((f) => f.type === FRAME.HEADERS && f.streamId === 401), 5000);
    expect(rapid.accepted).toBe(0);
    c.socket.destroy();
  });

  it('HTTP/2: a rapid-reset flood (3,000 streams) is cut off; nothing reaches the upstream and nothing stays in CLOSE_WAIT', async () => {
    const c = await rawH2(dflt.P.h2c);
    c.write(settingsAck());
    const parts: Buffer[] = [];
    for (let i = 0; i < 3000; i++) parts.push(h2headers(1 + 2 * i, requestBlock(HOST, { path: '/flood' })), rstStream(1 + 2 * i));
    c.write(Buffer.concat(parts));
    await waitFor(() => c.goaway() || c.isClosed(), 5000);
    c.socket.end();
    await Promise.race([c.closed, sleep(5000)]);
    expect(c.isClosed(), 'the gateway kept its side open').toBe(true);
    expect(flood.accepted).toBe(0);
    await waitFor(() => connectionsOn(dflt.pid, dflt.P.h2c).every((s) => s.state !== 'CLOSE_WAIT'), 3000);
  });

  // In the connection's first bytes too: node reads those itself (the listener tells h2c from
  // HTTP/1.1 by them) and emits their streams only once it processed the whole read, resets included.
  for (const first of [false, true]) {
    it(`HTTP/2: a connection whose streams the client mostly resets at once is closed (Envoy's premature-reset guard), below nghttp2's own limit${first ? ', when they come with the preface' : ''}`, async () => {
      const c = await rawH2(dflt.P.h2c, { preface: !first });
      // 600 streams, each reset as it opens: more than 250 premature resets, fewer than nghttp2's 1,000.
      const parts: Buffer[] = first ? [PREFACE, settings()] : [];
      parts.push(settingsAck());
      for (let i = 0; i < 600; i++) parts.push(h2headers(1 + 2 * i, requestBlock(HOST, { path: '/rapid' })), rstStream(1 + 2 * i));
      c.write(Buffer.concat(parts));
      await Promise.race([c.closed, sleep(15_000)]);
      expect(c.isClosed(), 'the connection was not closed').toBe(true);
      // (The GOAWAY may be lost if the close overtakes bytes the gateway had not read: a reset.)
      const goaway = c.goaway();
      if (goaway) expect(goaway[1]).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      expect(rapid.accepted).toBe(0);
    });
  }

  it('HTTP/2: SETTINGS_MAX_CONCURRENT_STREAMS is 100: a client opening 300 streams is served 100 at a time, all answered', async () => {
    const s = h2connect(dflt, 'plain');
    try {
      await new Promise((r) => s.once('remoteSettings', r));
      expect(s.remoteSettings.maxConcurrentStreams).toBe(100);
      slow.maxInflight = 0;
      const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => h2request(s, `/slow/${i}`)));
      expect(replies.every((r) => r.status === 200 && r.body === 'slow')).toBe(true);
      expect(slow.maxInflight).toBeLessThanOrEqual(100);
    } finally {
      s.destroy();
    }
  });

  it('HTTP/2: a client ignoring the limit (300 HEADERS at once) gets at most 100 streams upstream', async () => {
    const c = await rawH2(dflt.P.h2c);
    c.write(settingsAck());
    const parts: Buffer[] = [];
    for (let i = 0; i < 300; i++) parts.push(h2headers(1 + 2 * i, requestBlock(HOST, { path: '/many' })));
    c.write(Buffer.concat(parts));
    await waitFor(() => many.accepted >= 100 || c.isClosed(), 5000);
    await sleep(300);
    expect(many.accepted).toBeLessThanOrEqual(100);
    c.socket.destroy();
    await waitFor(() => connectionsTo(dflt.pid, many.port).length === 0, 5000);
  });

  it('HTTP/2: a client resetting a stream in flight aborts its upstream request at once', async () => {
    const before = hold.accepted;
    const s = h2connect(dflt, 'tls');
    try {
      const req = s.request({ ':path': '/hold/cancel', ':authority': HOST });
      req.on('error', () => undefined);
      await waitFor(() => hold.accepted > before && hold.received[before]! > 0, 3000);
      const upstream = [...hold.open].at(-1)!;
      req.close(http2.constants.NGHTTP2_CANCEL);
      await waitFor(() => !hold.open.has(upstream), 3000);
    } finally {
      s.destroy();
    }
  });

  it('HTTP/2: PING, SETTINGS and CONTINUATION floods close the connection at once; an HPACK bomb is refused', async () => {
    const floods: Record<string, Buffer> = {
      ping: Buffer.concat(Array.from({ length: 50_000 }, () => ping())),
      settings: Buffer.concat(Array.from({ length: 50_000 }, () => settings())),
      continuation: Buffer.concat([frame(FRAME.HEADERS, 0, 1, requestBlock(HOST)), ...Array.from({ length: 10_000 }, () => frame(FRAME.CONTINUATION, 0, 1, Buffer.from([0x00, 0x01, 0x61, 0x01, 0x62])))]),
    };
    for (const [name, bytes] of Object.entries(floods)) {
      const c = await rawH2(dflt.P.h2c);
      c.write(settingsAck());
      // The client reads nothing back while it floods (PING and SETTINGS floods pile up answers),
      // then reads what came, up to the end of the connection.
      c.socket.pause();
      await new Promise<void>((r) => c.socket.write(bytes, () => r()));
      c.socket.resume();
      await Promise.race([c.closed, sleep(5000)]);
      expect(c.isClosed(), `${name} flood: connection still open`).toBe(true);
    }
    // A header block that decodes to megabytes (one 4 KB dynamic table entry, referenced 3,000 times).
    const before = hold.accepted;
    const c = await rawH2(dflt.P.h2c);
    c.write(settingsAck());
    // 0xbe: indexed field 62, the first dynamic table entry.
    c.write(h2headers(1, Buffer.concat([requestBlock(HOST, { path: '/hold/bomb' }), hpackIndexedLiteral('x-b', Buffer.alloc(4000, 0x61)), Buffer.alloc(3000, 0xbe)])));
    await waitFor(() => c.frames.some((f) => f.type === FRAME.RST_STREAM && f.streamId === 1) || c.isClosed(), 5000);
    expect(hold.accepted - before).toBe(0);
    c.socket.destroy();
  });

  it('aborted downloads (HTTP/2 and TLS HTTP/1.1) leave no descriptor behind', async () => {
    const fd0 = fdCount(dflt.pid);
    const size = 16 * 1024 * 1024;
    const h2 = Array.from({ length: 8 }, async () => {
      const s = h2connect(dflt, 'tls');
      const req = s.request({ ':path': '/download', ':authority': HOST, 'x-test-bytes': String(size) });
      req.on('error', () => undefined);
      await new Promise((r) => req.once('data', r));
      s.destroy();
    });
    const h1 = Array.from({ length: 8 }, async () => {
      const s = await open(dflt, 'tls');
      s.write(`GET /download HTTP/1.1\r\nhost: ${HOST}\r\nx-test-bytes: ${size}\r\n\r\n`);
      await new Promise((r) => s.once('data', r));
      s.destroy();
    });
    await Promise.all([...h2, ...h1]);
    await waitFor(() => fdCount(dflt.pid) <= fd0, 8000);
  });

  it('uWS ports (unchanged): a slowloris request head is cut after ~10 s', async () => {
    const s = net.connect(dflt.P.http, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    s.write(`GET / HTTP/1.1\r\nhost: ${HOST}\r\n`);
    const trickle = setInterval(() => s.writable && s.write('x-slow: 1\r\n'), 500);
    const data = await closedWithin(s, 16_000);
    clearInterval(trickle);
    s.destroy();
    expect(data, 'still open after 16 s').not.toBeNull();
  }, 25_000);
});
