// Fuzzing H1Pool's response parser with a seeded PRNG, bounded in time: (1) valid random responses
// split at random byte boundaries parse exactly as unsplit; (2) random mutations and random bytes never
// throw out of the parser, always end in a response or an error, and a socket is never reused after an
// error. Real sockets on 127.0.0.1: the server writes each piece separately (with setNoDelay and a
// pause between pieces so that they arrive as separate reads most of the time).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { H1Pool } from '../../src/upstream/h1-pool.js';

/** mulberry32 */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Outcome {
  status: number;
  headers: string[];
  body: string;
  trailers: string[] | null;
  error: string | null;
}

/** The next response to serve (pieces written one by one), and what the server saw. */
let script: Buffer[] = [];
let closeAfter = false;
let connections = 0;
let srv: net.Server;
let port = 0;

beforeAll(async () => {
  srv = net.createServer((sock) => {
    connections++;
    sock.setNoDelay(true);
    sock.on('error', () => undefined);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      while (buf.includes('\r\n\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
        const pieces = script;
        const close = closeAfter;
        let i = 0;
        const next = (): void => {
          if (sock.destroyed) return;
          if (i < pieces.length) {
            sock.write(pieces[i++]!);
            setImmediate(next);
          } else if (close) sock.end();
        };
        next();
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  port = (srv.address() as net.AddressInfo).port;
});

afterAll(() => new Promise<void>((r) => srv.close(() => r())));

function run(p: H1Pool, method = 'GET'): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const out: Outcome = { status: 0, headers: [], body: '', trailers: null, error: null };
    let ended = false;
    const end = (): void => {
      if (ended) reject(new Error('handler ended twice'));
      ended = true;
      resolve(out);
    };
    const timer = setTimeout(() => reject(new Error('no outcome')), 5000);
    p.dispatch(
      { path: '/', method: method as 'GET', headers: ['host', 'fuzz'], body: null },
      {
        onStart() {},
        onHead(status: number, raw: Buffer[]) {
          out.status = status;
          out.headers = raw.map((b) => b.toString('latin1'));
          return true;
        },
        onData(chunk: Buffer) {
          out.body += chunk.toString('latin1');
          return true;
        },
        onEnd(trailers: unknown) {
          clearTimeout(timer);
          out.trailers = trailers ? (trailers as Buffer[]).map((b) => b.toString('latin1')) : null;
          end();
        },
        onError(e: Error & { code?: string }) {
          clearTimeout(timer);
          out.error = e.code ?? e.message;
          end();
        },
      } as never,
    );
  });
}

const TOKENS = ['x-a', 'Server', 'ETag', 'x_b', 'Set-Cookie', 'vary', 'X-Long-Header-Name'];
const VALUES = ['1', 'abc def', '"quoted"', 'a=b; c=d', '\u00e9t\u00e9', '', 'x\ty'];

function randomResponse(r: () => number): { bytes: Buffer; expected: Omit<Outcome, 'error'> } {
  const status = [200, 201, 404, 500, 302][Math.floor(r() * 5)]!;
  const headers: string[] = [];
  const nh = Math.floor(r() * 6);
  for (let i = 0; i < nh; i++) headers.push(TOKENS[Math.floor(r() * TOKENS.length)]!, VALUES[Math.floor(r() * VALUES.length)]!);
  let body = '';
  const len = Math.floor(r() * 3000);
  for (let i = 0; i < len; i++) body += String.fromCharCode(32 + Math.floor(r() * 200));
  let head = `HTTP/1.1 ${status} Reason ${status}\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  let framed: string;
  let trailers: string[] | null = null;
  if (r() < 0.5) {
    headers.push('Content-Length', String(body.length));
    head += `Content-Length: ${body.length}\r\n\r\n`;
    framed = body;
  } else {
    headers.push('Transfer-Encoding', 'chunked');
    head += 'Transfer-Encoding: chunked\r\n\r\n';
    framed = '';
    let p = 0;
    while (p < body.length) {
      const n = 1 + Math.floor(r() * 700);
      const piece = body.slice(p, p + n);
      framed += `${piece.length.toString(16)}${r() < 0.3 ? ';ext=v' : ''}\r\n${piece}\r\n`;
      p += n;
    }
    framed += '0\r\n';
    if (r() < 0.5) {
      trailers = ['x-trailer', String(Math.floor(r() * 100))];
      framed += `x-trailer: ${trailers[1]}\r\n`;
    }
    framed += '\r\n';
  }
  return { bytes: Buffer.from(head + framed, 'latin1'), expected: { status, headers, body, trailers } };
}

function split(bytes: Buffer, r: () => number): Buffer[] {
  const pieces: Buffer[] = [];
  let p = 0;
  while (p < bytes.length) {
    const n = r() < 0.3 ? 1 : 1 + Math.floor(r() * 200);
    pieces.push(bytes.subarray(p, p + n));
    p += n;
  }
  return pieces;
}

describe('H1Pool parser fuzz', () => {
  it('valid responses split at random boundaries parse exactly as unsplit', async () => {
    const r = prng(0xc0ffee);
    const p = new H1Pool('127.0.0.1', port, { keepAliveTimeout: 10_000 });
    const deadline = Date.now() + 3000;
    let n = 0;
    closeAfter = false;
    while (Date.now() < deadline) {
      const { bytes, expected } = randomResponse(r);
      script = [bytes];
      const whole = await run(p);
      script = split(bytes, r);
      const pieces = await run(p);
      expect(whole).toEqual({ ...expected, error: null });
      expect(pieces).toEqual(whole);
      n++;
    }
    expect(n).toBeGreaterThan(20);
    await p.destroy();
  }, 20_000);

  it('mutated and random bytes end in a response or an error, and a failed socket is never reused', async () => {
    const r = prng(0xbadf00d);
    const deadline = Date.now() + 3000;
    let n = 0;
    let errors = 0;
    while (Date.now() < deadline) {
      const p = new H1Pool('127.0.0.1', port, { keepAliveTimeout: 10_000, headersTimeout: 300, bodyTimeout: 300, maxHeaderSize: 4096 });
      let bytes: Buffer;
      if (r() < 0.2) {
        bytes = Buffer.alloc(1 + Math.floor(r() * 300));
        for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(r() * 256);
      } else {
        bytes = Buffer.from(randomResponse(r).bytes);
        const m = 1 + Math.floor(r() * 4);
        for (let i = 0; i < m; i++) {
          const at = Math.floor(r() * bytes.length);
          const k = r();
          if (k < 0.4) bytes[at] = Math.floor(r() * 256);
          else if (k < 0.6) bytes[at] = [10, 13, 0, 32, 58, 59, 48][Math.floor(r() * 7)]!;
          else if (k < 0.8) bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1)]);
          else bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([Math.floor(r() * 256)]), bytes.subarray(at)]);
        }
      }
      script = split(bytes, r);
      closeAfter = r() < 0.5;
      const before = connections;
      const first = await run(p, r() < 0.1 ? 'HEAD' : 'GET');
      // The socket after an error is gone: a second request must open a new connection.
      if (first.error !== null) {
        errors++;
        expect(p.connectionCount).toBe(0);
        script = [Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')];
        closeAfter = false;
        const second = await run(p);
        expect(second.error).toBeNull();
        expect(second.body).toBe('ok');
        expect(connections).toBe(before + 2);
      }
      await p.destroy();
      n++;
    }
    expect(n).toBeGreaterThan(20);
    expect(errors).toBeGreaterThan(5);
  }, 30_000);
});
