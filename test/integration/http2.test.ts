// Gateway servers with protocol HTTP2 (node:http2 engine): h2c with prior knowledge and HTTP/1.1
// on the same port, routed by VirtualService with the same tables and header rules as the uWS
// listener; bodies streamed both ways; HTTP/2 upstreams (service port protocol HTTP2) over h2c
// with their trailers forwarded.
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { freePort, http, rawExchange, rawStatus, waitFor } from '../helpers/net.js';
import { pattern, sha256, startEcho, type Echo } from '../helpers/upstream.js';
import { dest, service, virtualService, workloadEntry, yamlDocs, type Obj } from '../helpers/yaml.js';

const MiB = 1024 * 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

let gw: GatewayProcess;
let port: number;
let echo: Echo;
let h2up: http2.Http2Server;
let h2upPort: number;
const h2seen: IncomingHttpHeaders[] = [];
const sessionIds = new Map<http2.Http2Session, number>();

function h2Gateway(name: string, p: number, protocol: string): Obj {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace: 'default' },
    spec: { selector: { istio: 'ingressgateway' }, servers: [{ port: { number: p, name: `h2-${p}`, protocol }, hosts: ['*'] }] },
  };
}

interface H2Response {
  status: number;
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders | null;
  body: Buffer;
}

/** One request over an h2c session (prior knowledge). */
function h2request(session: http2.ClientHttp2Session, headers: OutgoingHttpHeaders, body?: Buffer): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let head: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | null = null;
    req.on('response', (h) => (head = h));
    req.on('trailers', (t) => (trailers = t));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ status: Number(head[':status']), headers: head, trailers, body: Buffer.concat(chunks) }));
    req.on('error', reject);
    if (body !== undefined) {
      // Streamed in 64 KiB writes, with backpressure.
      let off = 0;
      const pump = (): void => {
        while (off < body.length) {
          const next = body.subarray(off, off + 64 * 1024);
          off += next.length;
          if (!req.write(next)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    }
  });
}

beforeAll(async () => {
  echo = await startEcho('h2echo');
  // An HTTP/2 (h2c) upstream that answers with a body and trailers.
  h2up = http2.createServer();
  h2up.on('session', (sess) => sessionIds.set(sess, sessionIds.size + 1));
  h2up.on('stream', (stream, headers) => {
    h2seen.push(headers);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      if (headers[':path'] === '/h2up/goaway') {
        // Answer, then tell the gateway this connection takes no new streams.
        stream.respond({ ':status': 200, 'x-session': String(sessionIds.get(stream.session!) ?? 0) });
        stream.end('bye');
        stream.session!.close();
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-upstream': 'h2up' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': sha256(Buffer.concat(chunks)), 'x-trailer-two': 'two' }));
      stream.end(`h2 upstream saw ${headers[':method']} ${headers[':path']}`);
    });
  });
  await new Promise<void>((r) => h2up.listen(0, '127.0.0.1', () => r()));
  h2upPort = (h2up.address() as AddressInfo).port;
  port = await freePort();
  const h2svc: Obj = {
    apiVersion: 'networking.istio.io/v1',
    kind: 'ServiceEntry',
    metadata: { name: 'h2svc', namespace: 'default' },
    spec: { hosts: ['h2svc.default.svc.cluster.local'], location: 'MESH_INTERNAL', resolution: 'STATIC', ports: [{ number: 8080, name: 'http2', protocol: 'HTTP2' }], workloadSelector: { labels: { app: 'h2svc' } } },
  };
  const h2we = workloadEntry('h2svc-0', { app: 'h2svc' }, h2upPort);
  (h2we.spec as Obj).ports = { http2: h2upPort };
  gw = await startGateway({
    files: {
      'config.yaml': yamlDocs(
        h2Gateway('gw', port, 'HTTP2'),
        ...service('web', { v1: echo.port }),
        h2svc,
        h2we,
        virtualService('web', ['web.test'], [{ match: [{ uri: { prefix: '/h2up' } }], route: [dest('h2svc.default.svc.cluster.local')] }, { route: [dest('web')] }]),
      ),
    },
  });
});

afterAll(async () => {
  await gw?.stop();
  await echo?.close();
  await new Promise<void>((r) => (h2up ? h2up.close(() => r()) : r()));
});

describe('HTTP2 Gateway server (node:http2 engine)', () => {
  it('routes h2c prior-knowledge requests by VirtualService host, and answers 404 NR without a route', async () => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const r = await h2request(s, { ':path': '/hello?x=1', ':authority': 'web.test' });
      expect(r.status).toBe(200);
      expect(r.headers.server).toBe('istio-envoy');
      expect(r.headers['x-envoy-upstream-service-time']).toMatch(/^\d+$/);
      const up = JSON.parse(r.body.toString());
      expect(up.name).toBe('h2echo');
      expect(up.url).toBe('/hello?x=1');
      // The upstream is HTTP/1.1 (service port HTTP): :authority arrives as Host.
      expect(up.headers.host).toBe('web.test');
      const nr = await h2request(s, { ':path': '/', ':authority': 'nothing.test' });
      expect(nr.status).toBe(404);
      // Many requests on one session.
      const many = await Promise.all(Array.from({ length: 20 }, (_, i) => h2request(s, { ':path': `/m${i}`, ':authority': 'web.test' })));
      expect(many.map((m) => JSON.parse(m.body.toString()).url)).toEqual(Array.from({ length: 20 }, (_, i) => `/m${i}`));
    } finally {
      s.close();
    }
  });

  it('serves HTTP/1.1 on the same port', async () => {
    const r = await http(port, '/one', { headers: { host: 'web.test' } });
    expect(r.status).toBe(200);
    expect(r.json.name).toBe('h2echo');
    expect(r.headers.server).toBe('istio-envoy');
    expect((await http(port, '/', { headers: { host: 'other.test' } })).status).toBe(404);
  });

  it('refuses HTTP/1.0 with 426, as Istio does by default', async () => {
    const r = await rawExchange(port, 'GET / HTTP/1.0\r\nHost: web.test\r\n\r\n', { until: (t) => t.includes('\r\n\r\n') });
    expect(rawStatus(r.data)).toBe(426);
  });

  it('applies the proxy header rules of the uWS listener (x-forwarded-*, x-request-id, x-envoy-* stripped)', async () => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const r = await h2request(s, { ':path': '/h', ':authority': 'web.test', 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-envoy-foo': 'evil', 'x-custom': 'ok' });
      const h = JSON.parse(r.body.toString()).headers;
      expect(h['x-forwarded-for']).toBe('203.0.113.7, 127.0.0.1');
      expect(h['x-forwarded-proto']).toBe('http');
      expect(h['x-envoy-foo']).toBeUndefined();
      expect(h['x-custom']).toBe('ok');
      expect(h['x-request-id']).toMatch(UUID);
      expect(h['x-envoy-attempt-count']).toBe('1');
      expect(h['x-envoy-external-address']).toBe('127.0.0.1');
      // Cookies split into several HTTP/2 fields reach an HTTP/1.1 upstream as one header.
      const cookies = await h2request(s, { ':path': '/h', ':authority': 'web.test', cookie: ['a=1', 'b=2'] });
      expect(JSON.parse(cookies.body.toString()).headers.cookie).toBe('a=1; b=2');
      const kept = await h2request(s, { ':path': '/h', ':authority': 'web.test', 'x-request-id': 'mine-1' });
      expect(JSON.parse(kept.body.toString()).headers['x-request-id']).toBe('mine-1');
      // Dot segments are resolved before routing and forwarding.
      const norm = await h2request(s, { ':path': '/a/../b/./c', ':authority': 'web.test' });
      expect(JSON.parse(norm.body.toString()).url).toBe('/b/c');
    } finally {
      s.close();
    }
  });

  it('answers 431 above 60 KiB of request headers, and 400 without an authority', async () => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const big = await h2request(s, { ':path': '/', ':authority': 'web.test', 'x-big': 'a'.repeat(61 * 1024) });
      expect(big.status).toBe(431);
      // nghttp2 itself resets authorities with spaces; userinfo gets through to the gateway's check.
      const bad = await h2request(s, { ':path': '/', ':authority': 'user@web.test' });
      expect(bad.status).toBe(400);
    } finally {
      s.close();
    }
  });

  it('streams 1 MiB request and response bodies both ways intact (h2c)', async () => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const body = pattern(MiB);
      const r = await h2request(s, { ':method': 'POST', ':path': '/raw', ':authority': 'web.test', 'x-test-raw': '1' }, body);
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(MiB);
      expect(sha256(r.body)).toBe(sha256(body));
      const down = await h2request(s, { ':path': '/bytes', ':authority': 'web.test', 'x-test-bytes': String(MiB) });
      expect(down.headers['content-length']).toBe(String(MiB));
      expect(sha256(down.body)).toBe(sha256(pattern(MiB)));
    } finally {
      s.close();
    }
  });

  it('streams 1 MiB both ways over HTTP/1.1 on the same port', async () => {
    const body = pattern(MiB);
    const r = await http(port, '/raw', { method: 'POST', headers: { host: 'web.test', 'x-test-raw': '1' }, body });
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(sha256(body));
  });

  it('forwards to an HTTP2 service port over h2c and passes the upstream trailers to the client', async () => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const body = pattern(256 * 1024);
      const r = await h2request(s, { ':method': 'POST', ':path': '/h2up/x', ':authority': 'web.test' }, body);
      expect(r.status).toBe(200);
      expect(r.headers['x-upstream']).toBe('h2up');
      expect(r.body.toString()).toBe('h2 upstream saw POST /h2up/x');
      expect(r.trailers?.['x-checksum']).toBe(sha256(body));
      expect(r.trailers?.['x-trailer-two']).toBe('two');
      const seen = h2seen[h2seen.length - 1]!;
      expect(seen[':authority']).toBe('web.test');
      expect(seen['x-forwarded-for']).toBe('127.0.0.1');
    } finally {
      s.close();
    }
  });

  it('opens a new upstream HTTP/2 connection after the upstream sent GOAWAY, without failing requests', async () => {
    const seen: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await http(port, '/h2up/goaway', { headers: { host: 'web.test' } });
      expect(r.status).toBe(200);
      expect(r.text).toBe('bye');
      seen.push(String(r.headers['x-session']));
    }
    expect(new Set(seen).size).toBe(3);
  });

  it('holds a large response for a client that stops reading (HTTP/2 flow control), then delivers it whole', async () => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const n = 8 * MiB;
      const body = await new Promise<Buffer>((resolve, reject) => {
        const req = s.request({ ':path': '/big', ':authority': 'web.test', 'x-test-bytes': String(n) });
        const chunks: Buffer[] = [];
        let paused = false;
        req.on('data', (c: Buffer) => {
          chunks.push(c);
          if (!paused) {
            paused = true;
            req.pause();
            setTimeout(() => req.resume(), 400);
          }
        });
        req.on('end', () => resolve(Buffer.concat(chunks)));
        req.on('error', reject);
        req.end();
      });
      expect(body.length).toBe(n);
      expect(sha256(body)).toBe(sha256(pattern(n)));
    } finally {
      s.close();
    }
  });

  it('cancels the upstream request when the client resets its stream', async () => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const before = echo.requests.length;
      const req = s.request({ ':path': '/slow', ':authority': 'web.test', 'x-test-delay': '3000' });
      req.on('error', () => undefined);
      req.end();
      await waitFor(() => echo.requests.length > before);
      req.close(http2.constants.NGHTTP2_CANCEL);
      await waitFor(() => echo.requests[before]!.aborted, 2000);
      // The session is still good.
      const r = await h2request(s, { ':path': '/after', ':authority': 'web.test' });
      expect(r.status).toBe(200);
    } finally {
      s.close();
    }
  });
});
