// Small network helpers shared by the integration tests. Everything stays on 127.0.0.1.
import { readFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import http2 from 'node:http2';

/**
 * Where freePort looks: below the kernel's ephemeral range (ip_local_port_range, 32768–60999 by
 * default), which bind-to-0 and outgoing connections draw from. A port chosen there can be taken
 * between the check and the gateway's bind by any connection the suite opens in the meantime; below
 * it, only another freePort could, and each vitest worker (VITEST_POOL_ID) has its own slice.
 */
const PORT_SLICE = 1_000;
const portCursor = ((): { next: number; end: number; start: number } | null => {
  let low = 32_768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    // not Linux: the default
  }
  const slices = Math.floor((low - 10_000) / PORT_SLICE);
  if (!(slices >= 1)) return null; // an ephemeral range reaching down this far: bind to 0 instead
  const pool = Number(process.env.VITEST_POOL_ID) || process.pid;
  const start = 10_000 + (pool % slices) * PORT_SLICE;
  // A random point of the slice: the files a worker runs one after another start at different ports.
  return { start, end: start + PORT_SLICE, next: start + Math.floor(Math.random() * PORT_SLICE) };
})();

/** Binds `port` on 127.0.0.1 (0: a port the kernel picks) and closes it again: the port, or null if it was taken. */
function tryBind(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(null));
    srv.listen(port, '127.0.0.1', () => {
      const addr = srv.address();
      const bound = typeof addr === 'object' && addr ? addr.port : null;
      srv.close(() => resolve(bound));
    });
  });
}

/** A TCP port that was free a moment ago and that no other freePort of the suite hands out meanwhile. */
export async function freePort(): Promise<number> {
  for (let tries = 0; portCursor !== null && tries < PORT_SLICE; tries++) {
    const port = portCursor.next;
    portCursor.next = port + 1 >= portCursor.end ? portCursor.start : port + 1;
    if ((await tryBind(port)) !== null) return port;
  }
  const port = await tryBind(0);
  if (port === null) throw new Error('freePort: cannot bind 127.0.0.1');
  return port;
}

/** Several distinct free ports. */
export async function freePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort());
  return [...out];
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value (or stops throwing); rejects after `timeoutMs`. */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 3000, intervalMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      last = new Error(`condition returned ${String(v)}`);
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) throw new Error(`waitFor: timed out after ${timeoutMs} ms: ${(last as Error)?.message ?? last}`);
    await sleep(intervalMs);
  }
}

export interface SimpleResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
  /** Parsed JSON body, or undefined when the body is not JSON. */
  json: any;
  /** Client-side port of the connection that carried the request (same port = same connection). */
  localPort: number;
}

export interface GetOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
  timeoutMs?: number;
  /** Keep-alive agent; default: a fresh connection closed after the response. */
  agent?: import('node:http').Agent | false;
}

/**
 * One HTTP/1.1 request with node:http, which sends the Host header exactly as given
 * (fetch would not). Resolves with the whole body.
 */
export function http(port: number, path: string, opts: GetOptions = {}): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers ?? {}, agent: opts.agent ?? false, timeout: opts.timeoutMs ?? 5000 },
      (res) => {
        const localPort = res.socket?.localPort ?? 0;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, ...bodyOf(chunks), localPort }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`request ${path} timed out`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** A response body as bytes, text and (when it is JSON) parsed. */
function bodyOf(chunks: Buffer[]): Pick<SimpleResponse, 'body' | 'text' | 'json'> {
  const body = Buffer.concat(chunks);
  const text = body.toString('utf8');
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { body, text, json };
}

export interface H2Options extends Omit<GetOptions, 'agent'> {
  /** h2 over TLS (ALPN) with these client options; without: h2c with prior knowledge. */
  tls?: { ca: string; servername?: string; cert?: string; key?: string };
}

/**
 * One request on a fresh HTTP/2 session, closed after the response. A `host` header becomes
 * `:authority` (and the TLS server name, unless given). Resolves with the whole body and the
 * protocol ALPN settled on (false for h2c).
 */
export function h2Request(port: number, path: string, opts: H2Options = {}): Promise<SimpleResponse & { alpn: string | false }> {
  const headers: http2.OutgoingHttpHeaders = { ':method': opts.method ?? 'GET', ':path': path };
  for (const [k, v] of Object.entries(opts.headers ?? {})) {
    if (k.toLowerCase() === 'host') headers[':authority'] = v as string;
    else headers[k.toLowerCase()] = v;
  }
  const authority = (headers[':authority'] as string | undefined) ?? 'engines.test';
  const t = opts.tls;
  return new Promise((resolve, reject) => {
    const session = t
      ? http2.connect(`https://127.0.0.1:${port}`, { ca: t.ca, servername: t.servername ?? authority.replace(/:\d+$/, ''), checkServerIdentity: () => undefined, ...(t.cert ? { cert: t.cert, key: t.key } : {}) })
      : http2.connect(`http://127.0.0.1:${port}`);
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`request ${path} timed out`));
    }, opts.timeoutMs ?? 5000);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      session.destroy();
      reject(err);
    };
    session.on('error', fail);
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: opts.body === undefined });
    } catch (err) {
      return fail(err as Error);
    }
    stream.on('error', fail);
    stream.on('response', (h) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        clearTimeout(timer);
        const localPort = session.socket?.localPort ?? 0;
        const alpn = session.alpnProtocol ?? false;
        session.close();
        const out: Record<string, string | string[] | undefined> = {};
        for (const [k, v] of Object.entries(h)) if (!k.startsWith(':')) out[k] = v as string | string[];
        resolve({ status: Number(h[':status']), headers: out, ...bodyOf(chunks), localPort, alpn });
      });
    });
    if (opts.body !== undefined) stream.end(opts.body);
  });
}

/**
 * Sends raw bytes on a fresh TCP connection and collects what comes back until the server closes
 * the connection, `until` returns true for the data so far, or `timeoutMs` passes.
 */
export function rawExchange(
  port: number,
  data: string | Buffer,
  opts: { timeoutMs?: number; until?: (soFar: string) => boolean } = {},
): Promise<{ data: string; closed: boolean }> {
  return new Promise((resolve) => {
    const sock: Socket = connect(port, '127.0.0.1');
    let buf = '';
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ data: buf, closed });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 2000);
    sock.on('connect', () => sock.write(data));
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (opts.until?.(buf)) finish(false);
    });
    sock.on('end', () => finish(true));
    sock.on('close', () => finish(true));
    sock.on('error', () => finish(true));
  });
}

/** Status code of the first response in raw HTTP text, or 0. */
export function rawStatus(text: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  return m ? Number(m[1]) : 0;
}
