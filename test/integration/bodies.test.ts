// Request and response bodies streamed through the gateway intact, in both directions, with
// HEAD / 204 semantics and backpressure from a slow client — on both HTTP/1.1 engines: a uWS port
// and a port whose Gateway asks for the strict engine (`gatehouse.io/http1-engine: strict`).
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePorts, http, sleep } from '../helpers/net.js';
import { pattern, sha256, startEcho, type Echo } from '../helpers/upstream.js';
import { dest, gateway, service, virtualService, yamlDocs } from '../helpers/yaml.js';

const MiB = 1024 * 1024;
const HOST = 'body.test';

let gw: GatewayProcess;
/** The port of the engine under test (set by each engine's suite). */
let port: number;
const ports = { uWS: 0, strict: 0 };
let echo: Echo;

beforeAll(async () => {
  echo = await startEcho('body');
  [ports.uWS, ports.strict] = (await freePorts(2)) as [number, number];
  const strict = { ...gateway('gw-strict', ports.strict), metadata: { name: 'gw-strict', namespace: 'default', annotations: { 'gatehouse.io/http1-engine': 'strict' } } };
  gw = await startGateway({
    files: { 'config.yaml': yamlDocs(gateway('gw', ports.uWS), strict, ...service('body', { v1: echo.port }), virtualService('body', [HOST], [{ route: [dest('body')] }], { gateways: ['gw', 'gw-strict'] })) },
  });
});

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
});

interface Streamed {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

/** A request with an optional streamed body; `onResponse` may slow the reading down. */
function send(
  path: string,
  opts: { method?: string; headers?: Record<string, string | number>; body?: Readable | Buffer; agent?: Agent | false; slowRead?: boolean } = {},
): Promise<Streamed> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: { host: HOST, ...(opts.headers ?? {}) }, agent: opts.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      let paused = false;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        if (opts.slowRead && !paused) {
          // Stop reading for a while: the gateway must hold the rest, not drop or truncate it.
          paused = true;
          res.pause();
          setTimeout(() => res.resume(), 600);
        }
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(15_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    if (opts.body instanceof Readable) opts.body.pipe(req);
    else req.end(opts.body);
  });
}

/** `total` bytes of `pattern(total)` as a stream of 16 KiB chunks, produced with small pauses. */
function slowStream(data: Buffer): Readable {
  let offset = 0;
  return new Readable({
    read() {
      if (offset >= data.length) return void this.push(null);
      const chunk = data.subarray(offset, offset + 16 * 1024);
      offset += chunk.length;
      if (offset % (256 * 1024) === 0) setTimeout(() => this.push(chunk), 5);
      else this.push(chunk);
    },
  });
}

for (const engine of ['uWS', 'strict'] as const) {
describe(`bodies on the ${engine} engine`, () => {
  beforeAll(() => {
    port = ports[engine];
  });

describe('request bodies', () => {
  it('a 1 MiB chunked POST from a stream reaches the upstream byte for byte and echoes back intact', async () => {
    const data = pattern(MiB);
    const r = await send('/upload', { method: 'POST', headers: { 'x-test-raw': '1' }, body: slowStream(data) });
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(MiB);
    expect(sha256(r.body)).toBe(sha256(data));
  });

  it('a 1 MiB POST with content-length reaches the upstream intact', async () => {
    const data = pattern(MiB);
    const r = await send('/upload-cl', { method: 'POST', headers: { 'content-length': data.length, 'content-type': 'application/octet-stream' }, body: data });
    expect(r.status).toBe(200);
    const j = JSON.parse(r.body.toString());
    expect(j.bodyLength).toBe(MiB);
    expect(j.bodySha256).toBe(sha256(data));
    expect(j.headers['content-length']).toBe(String(MiB));
  });

  it('a small POST body and its content-type are forwarded', async () => {
    const r = await send('/small', { method: 'POST', headers: { 'content-type': 'text/plain', 'content-length': 5 }, body: Buffer.from('hello') });
    const j = JSON.parse(r.body.toString());
    expect(j).toMatchObject({ method: 'POST', body: 'hello', bodyLength: 5 });
    expect(j.headers['content-type']).toBe('text/plain');
  });
});

describe('response bodies', () => {
  it('an 8 MiB upstream response (content-length) arrives intact', async () => {
    const r = await send('/big', { headers: { 'x-test-bytes': 8 * MiB } });
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(8 * MiB));
    expect(r.body.length).toBe(8 * MiB);
    expect(sha256(r.body)).toBe(sha256(pattern(8 * MiB)));
  });

  it('an 8 MiB chunked upstream response arrives intact', async () => {
    const r = await send('/big-chunked', { headers: { 'x-test-bytes': 8 * MiB, 'x-test-chunked': '1' } });
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(8 * MiB);
    expect(sha256(r.body)).toBe(sha256(pattern(8 * MiB)));
  });

  it('a client that stops reading for a while still gets all 8 MiB (backpressure, no truncation)', async () => {
    const r = await send('/slow-reader', { headers: { 'x-test-bytes': 8 * MiB }, slowRead: true });
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(8 * MiB);
    expect(sha256(r.body)).toBe(sha256(pattern(8 * MiB)));
  });

  it('HEAD returns the headers (with the upstream content-length) and no body', async () => {
    const head = await send('/head', { method: 'HEAD', headers: { 'x-test-bytes': 1000 } });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('1000');
    expect(head.body.length).toBe(0);
    expect(echo.requests.some((q) => q.method === 'HEAD' && q.url === '/head')).toBe(true);
  });

  it('after a HEAD response with a content-length, the keep-alive connection serves the next request', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const head = await send('/head-ka', { method: 'HEAD', headers: { 'x-test-bytes': 1000 }, agent });
      expect(head.status).toBe(200);
      const next = await send('/after-head', { agent });
      expect(next.status).toBe(200);
      expect(JSON.parse(next.body.toString()).url).toBe('/after-head');
    } finally {
      agent.destroy();
    }
  });

  it('a 204 response has no body; the connection stays usable', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const r = await send('/nocontent', { headers: { 'x-test-status': '204' }, agent });
      expect(r.status).toBe(204);
      expect(r.body.length).toBe(0);
      expect(r.headers['transfer-encoding']).toBeUndefined();
      const next = await send('/after-204', { agent });
      expect(next.status).toBe(200);
      expect(JSON.parse(next.body.toString()).url).toBe('/after-204');
    } finally {
      agent.destroy();
    }
  });

  it('keep-alive: several requests in sequence on one connection', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 5; i++) {
        const r = await http(port, `/ka/${i}`, { headers: { host: HOST }, agent });
        expect(r.json.url).toBe(`/ka/${i}`);
      }
      await sleep(0);
    } finally {
      agent.destroy();
    }
  });
});
});
}
