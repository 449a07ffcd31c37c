// The few API calls Gatehouse makes: a JSON GET (discovery, list pages), a watch (a chunked
// stream of JSON lines), and the writes of `--write-status` (PATCH) and of ACME's Lease and
// Secret (PUT). Plain node:https with the credentials of the kubeconfig
// (credentials.ts), so that the informer (reflector.ts) controls what client-node's ListWatch
// does not: bookmarks, paging, timeouts, and the Status of a refused request.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { KubeConnection } from './credentials.js';

export interface ApiObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

/** A `Status` object (metav1.Status) from an error answer or an ERROR watch event. */
export interface ApiStatus {
  code?: number;
  reason?: string;
  message?: string;
}

export interface JsonAnswer {
  status: number;
  body: unknown;
}

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: ApiObject & ApiStatus;
}

/** How a watch ended. `http`: refused with this status before streaming. */
export type WatchEnd = { how: 'closed' } | { how: 'http'; status: number; body: unknown };

export class ApiRequestError extends Error {}

function query(q: Record<string, string | number | boolean | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

export class KubeClient {
  readonly #conn: KubeConnection;

  constructor(conn: KubeConnection) {
    this.#conn = conn;
  }

  get server(): string {
    return this.#conn.server;
  }

  async #open(path: string, signal: AbortSignal, send?: { method: string; body: string; contentType: string }): Promise<IncomingMessage> {
    const url = new URL(this.#conn.server + path);
    const opts = await this.#conn.requestOptions();
    const request = url.protocol === 'http:' ? httpRequest : httpsRequest;
    const headers: Record<string, string> = { ...(opts.headers as Record<string, string>), accept: 'application/json', 'user-agent': 'gatehouse' };
    if (send) headers['content-type'] = send.contentType;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(url, { ...opts, method: send?.method ?? 'GET', signal, headers }, resolve);
      req.once('error', (err) => reject(new ApiRequestError(`${url.host}: ${(err as Error).message}`)));
      req.once('socket', (s) => s.setKeepAlive(true, 30_000));
      req.end(send?.body);
    });
  }

  /** A PATCH (`--write-status`), answered with JSON. */
  async patch(path: string, body: unknown, contentType: string, timeoutMs = 30_000): Promise<JsonAnswer> {
    const res = await this.#open(path, AbortSignal.timeout(timeoutMs), { method: 'PATCH', body: JSON.stringify(body), contentType });
    return readJson(res, path);
  }

  /** A PUT (replace) of a whole object, answered with JSON: 409 when its `metadata.resourceVersion` is not the stored one. */
  async put(path: string, body: unknown, timeoutMs = 30_000): Promise<JsonAnswer> {
    const res = await this.#open(path, AbortSignal.timeout(timeoutMs), { method: 'PUT', body: JSON.stringify(body), contentType: 'application/json' });
    return readJson(res, path);
  }

  /** A GET answered with JSON (whatever its status); rejects on a network failure or after `timeoutMs`. */
  async get(path: string, q: Record<string, string | number | boolean | undefined> = {}, timeoutMs = 60_000, stop?: AbortSignal): Promise<JsonAnswer> {
    const signal = stop ? AbortSignal.any([stop, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
    return readJson(await this.#open(path + query(q), signal), path);
  }

  /**
   * Watches `path` from `resourceVersion`, calling `onEvent` for each event in order. Resolves when
   * the server ends the stream (its timeout) or refuses the watch; rejects when the connection
   * breaks, or when nothing arrives for `deadlineMs` in all (a server gone without a word).
   */
  async watch(
    path: string,
    q: Record<string, string | number | boolean | undefined>,
    on: { event: (e: WatchEvent) => void; open?: () => void },
    deadlineMs: number,
    stop: AbortSignal,
  ): Promise<WatchEnd> {
    const onEvent = on.event;
    const signal = AbortSignal.any([stop, AbortSignal.timeout(deadlineMs)]);
    const res = await this.#open(path + query({ ...q, watch: true }), signal);
    if (res.statusCode !== 200) {
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        body = undefined;
      }
      return { how: 'http', status: res.statusCode ?? 0, body };
    }
    on.open?.();
    res.setEncoding('utf8');
    let buffered = '';
    return new Promise<WatchEnd>((resolve, reject) => {
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          let e: WatchEvent;
          try {
            e = JSON.parse(line) as WatchEvent;
          } catch {
            res.destroy();
            reject(new ApiRequestError(`${path}: a watch event is not JSON: ${line.slice(0, 80)}`));
            return;
          }
          onEvent(e);
        }
      });
      // `end` only when the server finished the chunked body; a broken connection is `aborted`/`error`.
      res.once('end', () => resolve({ how: 'closed' }));
      res.once('aborted', () => reject(new ApiRequestError(`${path}: the watch connection broke`)));
      res.once('error', (err) => reject(new ApiRequestError(`${path}: ${err.message}`)));
      res.once('close', () => {
        if (!res.complete) reject(new ApiRequestError(`${path}: the watch connection broke`));
      });
    });
  }
}

async function readJson(res: IncomingMessage, path: string): Promise<JsonAnswer> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of res) chunks.push(c as Buffer);
  } catch (err) {
    throw new ApiRequestError(`${path}: ${(err as Error).message}`);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON (a proxy's error page): kept as text
  }
  return { status: res.statusCode ?? 0, body };
}

/** The Status in an error answer, if it is one. */
export function asStatus(body: unknown): ApiStatus | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as Record<string, unknown>;
  return b.kind === 'Status' ? { code: b.code as number, reason: b.reason as string, message: b.message as string } : undefined;
}
