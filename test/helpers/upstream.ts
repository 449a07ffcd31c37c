// Real upstream servers (node:http on 127.0.0.1) that echo what they received, so a test can
// observe where the gateway routed a request and what it forwarded.
//
// Controls, as request headers (forwarded unchanged by the gateway):
//   x-test-delay: <ms>     wait before answering
//   x-test-status: <code>  answer with this status (204/304: no body)
//   x-test-raw: 1          stream the request body back as the response body (chunked)
//   x-test-bytes: <n>      answer with n bytes of `pattern(n)` (content-length; `x-test-chunked: 1` for chunked)
//   x-test-destroy: 1      destroy the socket without answering
//   x-test-cookies: <n>    add n Set-Cookie headers (c0=0 ... c<n-1>=<n-1>) to the JSON answer
import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** Raw header pairs as received (repeated headers kept). */
  rawHeaders: string[];
  /** True once the response was fully written. */
  completed: boolean;
  /** True when the connection went away before the response was finished. */
  aborted: boolean;
}

export interface EchoBody {
  name: string;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  bodyLength: number;
  bodySha256: string;
  body: string;
}

export interface Echo {
  name: string;
  port: number;
  server: Server;
  requests: RecordedRequest[];
  /** TCP connections accepted so far. */
  connections: number;
  close(): Promise<void>;
}

/** n deterministic bytes (the same for every call). */
export function pattern(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = 0x12345678;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** `host`: the loopback address to listen on (default 127.0.0.1; e.g. 127.0.0.11 as a Pod IP). */
export async function startEcho(name: string, opts: { port?: number; host?: string } = {}): Promise<Echo> {
  const sockets = new Set<Socket>();
  const echo: Echo = {
    name,
    port: 0,
    server: undefined as unknown as Server,
    requests: [],
    connections: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => echo.server.close(() => r()));
    },
  };
  const server = createServer({ keepAliveTimeout: 5000, maxHeaderSize: 256 * 1024 }, (req, res) => {
    const rec: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, completed: false, aborted: false };
    echo.requests.push(rec);
    res.on('finish', () => (rec.completed = true));
    res.on('close', () => {
      if (!rec.completed) rec.aborted = true;
    });
    const h = req.headers;
    if (h['x-test-destroy']) {
      req.socket.destroy();
      return;
    }
    const status = Number(h['x-test-status'] ?? 200);
    const delay = Number(h['x-test-delay'] ?? 0);
    if (h['x-test-raw']) {
      res.writeHead(status, { 'content-type': 'application/octet-stream', 'x-upstream': name });
      req.pipe(res);
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const answer = (): void => {
        if (res.destroyed) return;
        if (h['x-test-bytes']) {
          const body = pattern(Number(h['x-test-bytes']));
          const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream', 'x-upstream': name };
          if (!h['x-test-chunked']) headers['content-length'] = body.length;
          res.writeHead(status, headers);
          res.end(body);
          return;
        }
        if (status === 204 || status === 304) {
          res.writeHead(status, { 'x-upstream': name });
          res.end();
          return;
        }
        const body = Buffer.concat(chunks);
        const out: EchoBody = {
          name,
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          rawHeaders: req.rawHeaders,
          bodyLength: body.length,
          bodySha256: sha256(body),
          body: body.length <= 64 * 1024 ? body.toString('utf8') : '',
        };
        const json = Buffer.from(JSON.stringify(out));
        const cookies = Array.from({ length: Number(h['x-test-cookies'] ?? 0) }, (_, i) => `c${i}=${i}; Path=/`);
        if (cookies.length > 0) res.setHeader('set-cookie', cookies);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': json.length, 'x-upstream': name, server: 'echo-upstream' });
        res.end(json);
      };
      if (delay > 0) setTimeout(answer, delay);
      else answer();
    });
  });
  server.on('connection', (s: Socket) => {
    echo.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  echo.server = server;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  echo.port = (server.address() as AddressInfo).port;
  return echo;
}
