// H1Pool (src/upstream/h1-pool.ts), our HTTP/1.1 client, against raw TCP servers on 127.0.0.1 that
// write exact bytes: framing (content-length, chunked, read-until-close, no-body statuses), keep-alive
// reuse and limits, queueing, backpressure, streamed request bodies, timeouts with undici's error
// codes, and every smuggling / strictness rejection.
import net from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { H1Pool, type H1PoolOptions } from '../../src/upstream/h1-pool.js';
import { sleep, waitFor } from '../helpers/net.js';

interface ServerRequest {
  head: string;
  body: Buffer;
  conn: number;
  /** Index of the request on its connection. */
  n: number;
  socket: net.Socket;
}

interface RawServer {
  port: number;
  requests: ServerRequest[];
  connections: number;
  sockets: net.Socket[];
  close(): Promise<void>;
}

const servers: RawServer[] = [];
const pools: H1Pool[] = [];

afterEach(async () => {
  for (const p of pools.splice(0)) await p.destroy();
  for (const s of servers.splice(0)) await s.close();
});

/** A server that splits requests (head + content-length or chunked body) and lets `respond` answer. */
async function rawServer(respond: (req: ServerRequest) => void): Promise<RawServer> {
  const state: RawServer = { port: 0, requests: [], connections: 0, sockets: [], close: async () => undefined };
  const srv = net.createServer((socket) => {
    const conn = state.connections++;
    state.sockets.push(socket);
    let n = 0;
    let buf = Buffer.alloc(0);
    socket.on('error', () => undefined);
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        let rest = buf.subarray(end + 4);
        let body = Buffer.alloc(0);
        const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
        if (cl) {
          const len = Number(cl[1]);
          if (rest.length < len) return;
          body = rest.subarray(0, len);
          rest = rest.subarray(len);
        } else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
          const chunks: Buffer[] = [];
          let p = 0;
          for (;;) {
            const lf = rest.indexOf('\r\n', p);
            if (lf < 0) return;
            const size = parseInt(rest.subarray(p, lf).toString('latin1'), 16);
            if (rest.length < lf + 2 + size + 2) return;
            if (size === 0) {
              p = lf + 4;
              break;
            }
            chunks.push(rest.subarray(lf + 2, lf + 2 + size));
            p = lf + 2 + size + 2;
          }
          body = Buffer.concat(chunks);
          rest = rest.subarray(p);
        }
        buf = Buffer.from(rest);
        const req = { head, body, conn, n: n++, socket };
        state.requests.push(req);
        respond(req);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  state.port = (srv.address() as net.AddressInfo).port;
  state.close = () =>
    new Promise<void>((r) => {
      for (const s of state.sockets) s.destroy();
      srv.close(() => r());
    });
  servers.push(state);
  return state;
}

function pool(port: number, opts: H1PoolOptions = {}): H1Pool {
  const p = new H1Pool('127.0.0.1', port, { connectTimeout: 2000, keepAliveTimeout: 4000, headersTimeout: 5000, bodyTimeout: 5000, maxHeaderSize: 16 * 1024, ...opts });
  pools.push(p);
  return p;
}

interface Result {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
  trailers: Array<[string, string]> | null;
  error: (Error & { code?: string }) | null;
  connected: boolean;
}

class Collector {
  status = 0;
  headers: Array<[string, string]> = [];
  chunks: Buffer[] = [];
  abort: ((e?: Error) => void) | null = null;
  pauseHeaders = false;
  onDataHook: ((chunk: Buffer) => boolean) | null = null;
  resume: (() => void) | null = null;
  done!: Promise<Result>;
  #resolve!: (r: Result) => void;
  #connected = false;
  constructor() {
    this.done = new Promise((r) => (this.#resolve = r));
  }
  onStart(abort: (e?: Error) => void): void {
    this.#connected = true;
    this.abort = abort;
  }
  onHead(status: number, raw: Buffer[], resume: () => void): boolean {
    this.status = status;
    this.resume = resume;
    for (let i = 0; i < raw.length; i += 2) this.headers.push([raw[i]!.toString('latin1'), raw[i + 1]!.toString('latin1')]);
    return !this.pauseHeaders;
  }
  onData(chunk: Buffer): boolean {
    this.chunks.push(Buffer.from(chunk));
    return this.onDataHook ? this.onDataHook(chunk) : true;
  }
  onEnd(trailers: unknown): void {
    const t = trailers as Buffer[] | null;
    const pairs: Array<[string, string]> | null = t ? [] : null;
    if (t) for (let i = 0; i < t.length; i += 2) pairs!.push([t[i]!.toString(), t[i + 1]!.toString()]);
    this.#resolve({ status: this.status, headers: this.headers, body: Buffer.concat(this.chunks), trailers: pairs, error: null, connected: this.#connected });
  }
  onError(error: Error): void {
    this.#resolve({ status: this.status, headers: this.headers, body: Buffer.concat(this.chunks), trailers: null, error, connected: this.#connected });
  }
}

function send(p: H1Pool, opts: { path?: string; method?: string; headers?: string[]; body?: Buffer | Readable | null; reset?: boolean } = {}, c = new Collector()): Promise<Result> {
  p.dispatch({ path: opts.path ?? '/', method: (opts.method ?? 'GET') as 'GET', headers: opts.headers ?? ['host', 'example.test'], body: opts.body ?? null, ...(opts.reset ? { reset: true } : {}) }, c as never);
  return c.done;
}

/** A server that answers every request with `bytes`. */
const answer = (bytes: string | Buffer) => (req: ServerRequest) => req.socket.write(bytes);

describe('H1Pool framing', () => {
  it('content-length body, raw headers as Buffers', async () => {
    const s = await rawServer(answer('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  v1 \r\nx-a: v2\r\n\r\nhello'));
    const r = await send(pool(s.port));
    expect(r.error).toBeNull();
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('hello');
    expect(r.headers).toEqual([['Content-Length', '5'], ['X-A', 'v1'], ['x-a', 'v2']]);
    expect(s.requests[0]!.head).toMatch(/^GET \/ HTTP\/1\.1\r\nhost: example\.test\r\nconnection: keep-alive$/);
  });

  it('chunked with extensions and trailers', async () => {
    const s = await rawServer(answer('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1;q="x"\r\nhello\r\n6 ; e\r\n world\r\n0\r\nGrpc-Status: 0\r\nx-t: 1\r\n\r\n'));
    const r = await send(pool(s.port));
    expect(r.error).toBeNull();
    expect(r.body.toString()).toBe('hello world');
    expect(r.trailers).toEqual([['Grpc-Status', '0'], ['x-t', '1']]);
  });

  it('read until close (no length): complete on close, socket not reused', async () => {
    const s = await rawServer((req) => req.socket.end('HTTP/1.1 200 OK\r\n\r\nuntil close'));
    const p = pool(s.port);
    const r = await send(p);
    expect(r.error).toBeNull();
    expect(r.body.toString()).toBe('until close');
    const r2 = await send(p);
    expect(r2.body.toString()).toBe('until close');
    expect(s.connections).toBe(2);
  });

  it('HEAD, 204 and 304 have no body (even with content-length)', async () => {
    const s = await rawServer((req) => {
      if (req.head.startsWith('HEAD')) req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n');
      else if (req.head.includes('/204')) req.socket.write('HTTP/1.1 204 No Content\r\n\r\n');
      else req.socket.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n');
    });
    const p = pool(s.port);
    const h = await send(p, { method: 'HEAD' });
    expect([h.error, h.status, h.body.length]).toEqual([null, 200, 0]);
    const a = await send(p, { path: '/204' });
    expect([a.error, a.status, a.body.length]).toEqual([null, 204, 0]);
    const b = await send(p, { path: '/304' });
    expect([b.error, b.status, b.body.length]).toEqual([null, 304, 0]);
    // HEAD closes after (as undici): the 204 and 304 share the second socket.
    expect(s.connections).toBe(2);
  });

  it('skips 100 Continue and 103 Early Hints', async () => {
    const s = await rawServer(answer('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok'));
    const r = await send(pool(s.port));
    expect([r.error, r.status, r.body.toString(), r.headers]).toEqual([null, 201, 'ok', [['Content-Length', '2']]]);
  });

  it('HTTP/1.0 responses close unless connection: keep-alive', async () => {
    const s = await rawServer((req) => {
      if (req.head.includes('/ka')) req.socket.write('HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\na');
      else req.socket.write('HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb');
    });
    const p = pool(s.port);
    await send(p, { path: '/ka' });
    await send(p, { path: '/ka' });
    expect(s.connections).toBe(1);
    await send(p);
    await send(p, { path: '/ka' });
    expect(s.connections).toBe(2);
  });
});

describe('H1Pool connections', () => {
  it('reuses a keep-alive socket; connection: close is honoured', async () => {
    const s = await rawServer((req) => req.socket.write(req.head.includes('/close') ? 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n' : 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    const p = pool(s.port);
    await send(p);
    await send(p);
    expect(s.connections).toBe(1);
    await send(p, { path: '/close' });
    await send(p);
    expect(s.connections).toBe(2);
  });

  it('reset: true sends connection: close and does not reuse', async () => {
    const s = await rawServer(answer('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    const p = pool(s.port);
    await send(p, { reset: true });
    await send(p);
    expect(s.requests[0]!.head).toContain('connection: close');
    expect(s.connections).toBe(2);
  });

  it('maxRequestsPerClient: undici semantics (N + 1 requests per socket)', async () => {
    const s = await rawServer(answer('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    const p = pool(s.port, { maxRequestsPerClient: 2 });
    for (let i = 0; i < 6; i++) await send(p);
    expect(s.requests.map((r) => r.conn)).toEqual([0, 0, 0, 1, 1, 1]);
    expect(s.requests[2]!.head).toContain('connection: close');
  });

  it('keepAliveTimeout closes idle sockets; a server-closed idle socket is not used', async () => {
    const s = await rawServer(answer('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    const p = pool(s.port, { keepAliveTimeout: 150 });
    await send(p);
    expect(p.connectionCount).toBe(1);
    await waitFor(() => p.connectionCount === 0, 2000);
    await send(p);
    expect(s.connections).toBe(2);
    // The server ends the idle socket: the next request opens a new one instead of failing.
    s.sockets[1]!.end();
    await sleep(50);
    const r = await send(p);
    expect(r.error).toBeNull();
    expect(s.connections).toBe(3);
  });

  it('honours keep-alive: timeout=N (less 2 s)', async () => {
    const s = await rawServer(answer('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 0\r\n\r\n'));
    const p = pool(s.port);
    await send(p);
    await send(p);
    // timeout=2 leaves 0 s after the 2 s threshold: not reused.
    expect(s.connections).toBe(2);
  });

  it('caps connections and queues requests', async () => {
    const pending: net.Socket[] = [];
    const s = await rawServer((req) => pending.push(req.socket));
    const p = pool(s.port, { connections: 2 });
    const results = [send(p), send(p), send(p), send(p), send(p)];
    await waitFor(() => pending.length === 2);
    await sleep(30);
    expect(s.connections).toBe(2);
    expect(p.queued).toBe(3);
    const flush = setInterval(() => {
      for (const sock of pending.splice(0)) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx');
    }, 5);
    const all = await Promise.all(results);
    clearInterval(flush);
    expect(all.every((r) => r.error === null && r.body.toString() === 'x')).toBe(true);
    expect(s.connections).toBe(2);
  });

  it('close() finishes queued and in-flight requests, then closes', async () => {
    const s = await rawServer((req) => setTimeout(() => req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny'), 20));
    const p = pool(s.port, { connections: 1 });
    const results = [send(p), send(p)];
    const closed = p.close();
    const all = await Promise.all(results);
    await closed;
    expect(all.map((r) => r.body.toString())).toEqual(['y', 'y']);
    expect(p.connectionCount).toBe(0);
    const late = await send(p);
    expect(late.error?.code).toBe('UND_ERR_CLOSED');
  });

  it('destroy() fails in-flight and queued requests', async () => {
    const s = await rawServer(() => undefined);
    const p = pool(s.port, { connections: 1 });
    const results = [send(p), send(p)];
    await waitFor(() => s.requests.length === 1);
    await p.destroy();
    const all = await Promise.all(results);
    expect(all.map((r) => r.error?.code)).toEqual(['UND_ERR_DESTROYED', 'UND_ERR_DESTROYED']);
  });

  it('connect failures keep their code; connect timeout is UND_ERR_CONNECT_TIMEOUT', async () => {
    const s = await rawServer(() => undefined);
    const port = s.port;
    await s.close();
    servers.splice(servers.indexOf(s), 1);
    const r = await send(pool(port));
    expect(r.error?.code).toBe('ECONNREFUSED');
    expect(r.connected).toBe(false);
    // A connector that never calls back.
    const p = new H1Pool('127.0.0.1', port, { connectTimeout: 100 }, () => undefined);
    pools.push(p);
    const t = await send(p);
    expect(t.error?.code).toBe('UND_ERR_CONNECT_TIMEOUT');
  });

  it('uses a custom connector (buildConnector signature)', async () => {
    const s = await rawServer(answer('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    let host = '';
    const p = new H1Pool('upstream.test', s.port, {}, (opts, cb) => {
      host = opts.hostname;
      const sock = net.connect({ host: '127.0.0.1', port: Number(opts.port) });
      sock.once('connect', () => cb(null, sock));
      sock.once('error', (e) => cb(e, null));
    });
    pools.push(p);
    const r = await send(p, { headers: [] });
    expect(r.body.toString()).toBe('ok');
    expect(host).toBe('upstream.test');
    expect(s.requests[0]!.head).toContain(`host: upstream.test:${s.port}`);
  });
});

describe('H1Pool bodies and backpressure', () => {
  it('pauses on onHead / onData returning false and resumes', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 'z');
    const s = await rawServer((req) => {
      req.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`);
      req.socket.write(big);
    });
    const p = pool(s.port);
    const c = new Collector();
    c.pauseHeaders = true;
    let pauses = 0;
    let received = 0;
    c.onDataHook = (chunk) => {
      received += chunk.length;
      if (received % 3 === 0 || pauses < 20) {
        pauses++;
        setTimeout(() => c.resume!(), 1);
        return false;
      }
      return true;
    };
    const done = send(p, {}, c);
    await waitFor(() => c.status === 200);
    await sleep(50);
    expect(c.chunks.length).toBe(0); // paused since onHead
    c.resume!();
    const r = await done;
    expect(r.error).toBeNull();
    expect(r.body.length).toBe(big.length);
    expect(pauses).toBeGreaterThan(5);
  });

  it('sends a Buffer body with content-length, a Readable without length chunked, with length as is', async () => {
    const s = await rawServer((req) => req.socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${req.body.length}\r\n\r\n${req.body.toString()}`));
    const p = pool(s.port);
    const a = await send(p, { method: 'POST', body: Buffer.from('abc'), headers: ['host', 'h', 'content-length', '3'] });
    expect(a.body.toString()).toBe('abc');
    expect(s.requests[0]!.head).toContain('content-length: 3');
    const stream = new PassThrough();
    const b = send(p, { method: 'POST', body: stream });
    for (let i = 0; i < 50; i++) {
      stream.write(Buffer.alloc(10_000, 'q'));
      await sleep(1);
    }
    stream.end('end');
    const rb = await b;
    expect(rb.body.length).toBe(500_003);
    expect(s.requests[1]!.head).toContain('transfer-encoding: chunked');
    const c = await send(p, { method: 'PUT', body: Readable.from([Buffer.from('12'), Buffer.from('345')]), headers: ['host', 'h', 'content-length', '5'] });
    expect(c.body.toString()).toBe('12345');
    expect(s.requests[2]!.head).toContain('content-length: 5');
    expect(s.requests[2]!.head).not.toContain('chunked');
    const d = await send(p, { method: 'POST' });
    expect(d.error).toBeNull();
    expect(s.requests[3]!.head).toContain('content-length: 0');
    expect(s.connections).toBe(1);
  });

  it('a large streamed request body honours socket backpressure', async () => {
    let total = 0;
    const srv = net.createServer((sock) => {
      sock.pause();
      setTimeout(() => {
        sock.resume();
        sock.on('data', (d) => {
          total += d.length;
          if (d.includes('0\r\n\r\n') && total > 8 * 1024 * 1024) sock.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
        });
      }, 200);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const p = pool((srv.address() as net.AddressInfo).port);
    const body = new PassThrough({ highWaterMark: 64 * 1024 });
    const done = send(p, { method: 'POST', body });
    let wrote = 0;
    let blocked = false;
    while (wrote < 8 * 1024 * 1024) {
      if (!body.write(Buffer.alloc(64 * 1024, 1))) {
        blocked = true;
        await new Promise((r) => body.once('drain', r));
      }
      wrote += 64 * 1024;
    }
    body.end();
    const r = await done;
    srv.close();
    expect(r.error).toBeNull();
    expect(blocked).toBe(true);
  });
});

describe('H1Pool timeouts and errors', () => {
  it('headers timeout → UND_ERR_HEADERS_TIMEOUT, body timeout → UND_ERR_BODY_TIMEOUT', async () => {
    const s = await rawServer((req) => {
      if (req.head.includes('/body')) req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab');
    });
    const p = pool(s.port, { headersTimeout: 100, bodyTimeout: 100 });
    const h = await send(p);
    expect(h.error?.code).toBe('UND_ERR_HEADERS_TIMEOUT');
    const b = await send(p, { path: '/body' });
    expect(b.error?.code).toBe('UND_ERR_BODY_TIMEOUT');
    expect(b.body.toString()).toBe('ab');
  });

  it('coarse (>= 1 s) timeouts fire too', async () => {
    const s = await rawServer(() => undefined);
    const t0 = Date.now();
    const r = await send(pool(s.port, { headersTimeout: 1000 }));
    expect(r.error?.code).toBe('UND_ERR_HEADERS_TIMEOUT');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450);
  });

  it('other side closed mid-response → UND_ERR_SOCKET', async () => {
    const s = await rawServer((req) => req.socket.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'));
    const r = await send(pool(s.port));
    expect(r.error?.code).toBe('UND_ERR_SOCKET');
    const s2 = await rawServer((req) => req.socket.end());
    const r2 = await send(pool(s2.port));
    expect(r2.error?.code).toBe('UND_ERR_SOCKET');
  });

  it('abort destroys the socket and ends the request with onError', async () => {
    const s = await rawServer((req) => req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab'));
    const p = pool(s.port);
    const c = new Collector();
    c.onDataHook = () => {
      c.abort!(new Error('stop'));
      return true;
    };
    const r = await send(p, {}, c);
    expect(r.error?.message).toBe('stop');
    await waitFor(() => p.connectionCount === 0);
    // Aborted from onStart (before a byte was written): the socket stays usable.
    const c2 = new Collector();
    c2.onStart = (abort) => abort(new Error('early'));
    const s2 = await rawServer(answer('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    const p2 = pool(s2.port);
    await send(p2);
    const r2 = await send(p2, {}, c2);
    expect(r2.error?.message).toBe('early');
    expect((await send(p2)).error).toBeNull();
    expect(s2.requests.length).toBe(2);
    expect(s2.connections).toBe(1);
  });

  it('thousands of queued requests cancelled as they start do not overflow the stack; the socket serves the next one', async () => {
    const s = await rawServer((req) => setTimeout(() => req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'), 20));
    const p = pool(s.port, { connections: 1 });
    const first = send(p);
    const cancelled: Array<Promise<Result>> = [];
    for (let i = 0; i < 20_000; i++) {
      const c = new Collector();
      c.onStart = (abort) => abort(new Error('client went away'));
      cancelled.push(send(p, {}, c));
    }
    const last = send(p);
    expect((await first).error).toBeNull();
    const results = await Promise.all(cancelled);
    expect(results.every((r) => r.error?.message === 'client went away')).toBe(true);
    expect((await last).error).toBeNull();
    expect(s.requests.length).toBe(2);
    expect(s.connections).toBe(1);
  });

  it('rejects invalid request headers without sending', async () => {
    const s = await rawServer(answer('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    const r = await send(pool(s.port), { headers: ['x-a', 'a\r\nx-injected: 1'] });
    expect(r.error?.code).toBe('UND_ERR_INVALID_ARG');
    expect(s.requests.length).toBe(0);
  });
});

describe('H1Pool strictness (smuggling guards)', () => {
  const bad: Array<[string, string]> = [
    ['TE + CL', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['CL + TE', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc'],
    ['two different content-lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'],
    ['content-length list that differs', 'HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd'],
    ['non-digit content-length', 'HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc'],
    ['huge content-length', 'HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nabc'],
    ['TE not ending in chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc'],
    ['TE identity', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nabc'],
    ['another coding before chunked (would reach the client still gzip-coded)', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['another coding in a second field', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['chunked twice', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['non-hex chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n'],
    ['overflowing chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000000000000000\r\nabc\r\n0\r\n\r\n'],
    ['negative chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n'],
    ['chunk without CRLF after data', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n'],
    ['chunk size with bare LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n'],
    ['bare LF in the head', 'HTTP/1.1 200 OK\nContent-Length: 0\n\n'],
    ['bare LF after a header', 'HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 0\r\n\r\n'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 0\r\n\r\n'],
    ['space before colon', 'HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\nabc'],
    ['NUL in a value', 'HTTP/1.1 200 OK\r\nX-A: a\u0000b\r\nContent-Length: 0\r\n\r\n'],
    ['CR in a value', 'HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n'],
    ['bad status line', 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n'],
    ['status above 599', 'HTTP/1.1 600 Weird\r\nContent-Length: 0\r\n\r\n'],
    ['status 999', 'HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n'],
    ['status below 100', 'HTTP/1.1 099 Weird\r\nContent-Length: 0\r\n\r\n'],
    ['bad version', 'HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['not HTTP', 'SSH-2.0-OpenSSH\r\n\r\n'],
    ['101 Switching Protocols', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n'],
    ['trailer with bare LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-t: 1\n\r\n'],
  ];
  for (const [name, bytes] of bad) {
    it(`rejects ${name}`, async () => {
      const s = await rawServer(answer(bytes));
      const p = pool(s.port);
      const r = await send(p);
      expect(r.error, name).not.toBeNull();
      expect(r.error!.code).toMatch(/^(HPE_|UND_ERR_)/);
      await waitFor(() => p.connectionCount === 0);
    });
  }

  it('rejects an oversized head (UND_ERR_HEADERS_OVERFLOW), split over reads too', async () => {
    const s = await rawServer((req) => {
      req.socket.write('HTTP/1.1 200 OK\r\n');
      for (let i = 0; i < 40; i++) req.socket.write(`x-${i}: ${'v'.repeat(500)}\r\n`);
      req.socket.write('\r\n');
    });
    const r = await send(pool(s.port, { maxHeaderSize: 8 * 1024 }));
    expect(r.error?.code).toBe('UND_ERR_HEADERS_OVERFLOW');
  });

  it('extra bytes after a complete response close the socket; never reach the next request', async () => {
    const s = await rawServer(answer('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil'));
    const p = pool(s.port);
    const r = await send(p);
    expect(r.body.toString()).toBe('ok');
    const r2 = await send(p);
    expect(r2.body.toString()).toBe('ok');
    expect(s.connections).toBe(2);
    // Late extra bytes on an idle socket: the socket is closed.
    const s2 = await rawServer((req) => {
      req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      setTimeout(() => req.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil'), 20);
    });
    const p2 = pool(s2.port);
    await send(p2);
    await waitFor(() => p2.connectionCount === 0);
    expect((await send(p2)).body.toString()).toBe('ok');
  });
});
