// One upstream failure vocabulary: every pool and adapter (the HTTP/1.1 pool, undici behind its
// adapter, the HTTP/2 pool) reports the same failure as the same UpstreamError kind, on real
// sockets on 127.0.0.1; and each kind maps to Envoy's response flag and local reply.
import http2 from 'node:http2';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { H1Pool } from '../../src/upstream/h1-pool.js';
import { H2Pool } from '../../src/upstream/h2-pool.js';
import { UndiciPool } from '../../src/upstream/undici-pool.js';
import { UpstreamError, failureReply, kindOfCode, responseFlag, toUpstreamError, type UpstreamPool } from '../../src/upstream/errors.js';
import { webSocketConnectError } from '../../src/upstream/ws-connect.js';

interface Outcome {
  status: number;
  error: UpstreamError | null;
}

function get(pool: UpstreamPool): Promise<Outcome> {
  return new Promise((resolve) => {
    let status = 0;
    pool.dispatch(
      { method: 'GET', path: '/', headers: ['host', 'errors.test'], body: null },
      {
        onStart: () => undefined,
        onHead: (s) => ((status = s), true),
        onData: () => true,
        onEnd: () => resolve({ status, error: null }),
        onError: (error) => resolve({ status, error }),
      },
    );
  });
}

const servers: net.Server[] = [];
/** A TCP server answering every connection with `bytes` (then closing when `close`). */
async function raw(bytes: string, close = false): Promise<number> {
  const srv = net.createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', () => (close ? s.end(bytes) : s.write(bytes)));
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return (srv.address() as net.AddressInfo).port;
}

async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const opts = { connectTimeout: 2000, keepAliveTimeout: 1000, headersTimeout: 3000, bodyTimeout: 3000, pipelining: 1 };
const pools: UpstreamPool[] = [];
const h1 = (port: number): UpstreamPool => pools[pools.push(new H1Pool('127.0.0.1', port, opts)) - 1]!;
const undici = (port: number): UpstreamPool => pools[pools.push(new UndiciPool(`http://127.0.0.1:${port}`, opts)) - 1]!;
const h2 = (port: number): UpstreamPool =>
  pools[pools.push(new H2Pool('127.0.0.1', port, { connectTimeoutMs: 2000, idleTimeoutMs: 1000, streamIdleTimeoutMs: 3000, maxConcurrentStreams: 0, maxSessions: 0, maxStreamsPerSession: 0, tls: null })) - 1]!;

let refusedPort = 0;
let garbagePort = 0;
let cutPort = 0;
let h2Refusing: http2.Http2Server;
let h2RefusingPort = 0;

beforeAll(async () => {
  refusedPort = await closedPort();
  garbagePort = await raw('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
  cutPort = await raw('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part', true);
  h2Refusing = http2.createServer();
  h2Refusing.on('stream', (stream) => {
    stream.on('error', () => undefined);
    stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
  });
  await new Promise<void>((r) => h2Refusing.listen(0, '127.0.0.1', r));
  h2RefusingPort = (h2Refusing.address() as net.AddressInfo).port;
});

afterAll(async () => {
  await Promise.all(pools.map((p) => p.destroy()));
  for (const s of servers) s.close();
  h2Refusing?.close();
});

describe('every pool reports a failure as the same kind', () => {
  it('nothing listening: connect (ECONNREFUSED), for the HTTP/1.1 pool, undici and the HTTP/2 pool', async () => {
    const out = await Promise.all([h1(refusedPort), undici(refusedPort), h2(refusedPort)].map(get));
    expect(out.map((o) => o.error?.kind)).toEqual(['connect', 'connect', 'connect']);
    expect(out.map((o) => o.error?.code)).toEqual(['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED']);
    expect(out.every((o) => o.error instanceof UpstreamError)).toBe(true);
  });

  it('an invalid chunk size: protocol, for the HTTP/1.1 pool and undici', async () => {
    const out = await Promise.all([h1(garbagePort), undici(garbagePort)].map(get));
    expect(out.map((o) => o.error?.kind)).toEqual(['protocol', 'protocol']);
    expect(out.map((o) => responseFlag(o.error!.kind))).toEqual(['UPE', 'UPE']);
  });

  it('the connection closed before the body was complete: reset, for the HTTP/1.1 pool and undici', async () => {
    const out = await Promise.all([h1(cutPort), undici(cutPort)].map(get));
    expect(out.map((o) => o.error?.kind)).toEqual(['reset', 'reset']);
    expect(out.map((o) => o.status)).toEqual([200, 200]);
  });

  it('an HTTP/2 stream refused by the upstream: refused-stream', async () => {
    const o = await get(h2(h2RefusingPort));
    expect(o.error?.kind).toBe('refused-stream');
    expect(responseFlag(o.error!.kind)).toBe('UC');
  });

  it('a closed pool: destroyed, without throwing', async () => {
    const p = h1(garbagePort);
    await p.close();
    const q = h2(h2RefusingPort);
    await q.close();
    const out = await Promise.all([get(p), get(q)]);
    expect(out.map((o) => o.error?.kind)).toEqual(['destroyed', 'destroyed']);
  });
});

describe('the vocabulary', () => {
  it("classifies Node's, undici's and llhttp's codes", () => {
    const codes = ['ECONNREFUSED', 'ENOTFOUND', 'UND_ERR_CONNECT_TIMEOUT', 'CERT_HAS_EXPIRED', 'ERR_SSL_WRONG_VERSION_NUMBER', 'HPE_INVALID_CONSTANT', 'UND_ERR_HEADERS_OVERFLOW', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_SOCKET', 'ECONNRESET', 'UND_ERR_DESTROYED', 'UND_ERR_ABORTED', 'UND_ERR_INVALID_ARG'];
    expect(codes.map(kindOfCode)).toEqual(['connect', 'connect', 'connect-timeout', 'tls', 'tls', 'protocol', 'protocol', 'headers-timeout', 'body-timeout', 'reset', 'reset', 'destroyed', 'cancelled', 'invalid-request']);
  });

  it("maps kinds to Envoy's response flags and local replies", () => {
    const kinds = ['connect', 'connect-timeout', 'tls', 'reset', 'refused-stream', 'protocol', 'headers-timeout', 'overflow'] as const;
    expect(kinds.map(responseFlag)).toEqual(['UF', 'UF', 'UF', 'UC', 'UC', 'UPE', 'UC', 'UO']);
    expect(failureReply(new UpstreamError('connect-timeout', 'x', 'UND_ERR_CONNECT_TIMEOUT'))).toEqual({ status: 503, body: 'upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: connection timeout' });
    expect(failureReply(new UpstreamError('tls', 'certificate has expired', 'CERT_HAS_EXPIRED')).body).toMatch(/transport failure reason: TLS_error: CERT_HAS_EXPIRED: certificate has expired$/);
    expect(failureReply(new UpstreamError('protocol', 'x')).status).toBe(502);
    expect(failureReply(new UpstreamError('overflow', 'x')).body).toMatch(/reset reason: overflow$/);
  });

  it('an error of a connection that never came up is a connect failure, keeping its cause', () => {
    const cause = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    const e = toUpstreamError(cause, true);
    expect([e.kind, e.code, e.cause]).toEqual(['connect', 'ECONNRESET', cause]);
    expect(toUpstreamError(cause).kind).toBe('reset');
  });

  it('the WebSocket upstream connect: a handshake timeout is connect-timeout, a refused connection connect', () => {
    expect(webSocketConnectError(new Error('Opening handshake has timed out')).kind).toBe('connect-timeout');
    expect(webSocketConnectError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })).kind).toBe('connect');
  });
});
