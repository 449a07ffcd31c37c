// The HTTP external authorizer of CUSTOM AuthorizationPolicies (Istio's envoyExtAuthzHttp, i.e.
// Envoy's ext_authz filter with an http_service): the request's head, without its body, is sent
// to `http://<service>:<port><pathPrefix><path>` with the original method and Host, the
// Authorization header, the headers named in includeRequestHeadersInCheck and the fixed ones of
// includeAdditionalHeadersInCheck. 200 allows (Envoy's rule: any other status denies with that
// status); an error or timeout gives statusOnError, or allows with failOpen.
// undici is required when the first ext_authz client is made, not with this file.
import { createRequire } from 'node:module';
import type { Agent } from 'undici';
import type { ExtAuthzConfig } from '../controlplane/snapshot.js';
import { matchString, stringMatch, type StringMatch } from './authz.js';
import type { SecurityRequest } from './types.js';

const require = createRequire(import.meta.url);

export type ExtAuthzResult =
  | { allow: true; upstreamHeaders: string[]; downstreamHeaders: string[] }
  | { allow: false; status: number; body: Buffer; headers: string[]; error: boolean };

// Response headers never copied anywhere: they describe the authorizer's connection and body.
const CONNECTION_HEADERS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date', 'server', 'host', 'upgrade', 'proxy-connection', 'te', 'trailer']);
/** Largest authorizer response body relayed to the client on deny. */
const MAX_BODY = 64 * 1024;

/** One provider, compiled: header matchers and a connection pool (closed with the config version). */
export class ExtAuthzClient {
  readonly config: ExtAuthzConfig;
  readonly #origin: string;
  readonly #include: StringMatch[];
  readonly #additional: string[];
  readonly #toUpstream: StringMatch[];
  readonly #toDownstreamOnAllow: StringMatch[];
  readonly #toDownstreamOnDeny: StringMatch[] | null;
  readonly #agent: Agent;
  readonly #request: typeof import('undici').request;

  constructor(config: ExtAuthzConfig) {
    this.config = config;
    const host = config.service.includes(':') && !config.service.startsWith('[') ? `[${config.service}]` : config.service;
    this.#origin = `http://${host}:${config.port}`;
    const lower = { lower: true };
    // Envoy always includes Authorization (with Host, method and path, which the request line carries).
    this.#include = ['authorization', ...config.include_request_headers_in_check].map((h) => stringMatch(h, lower));
    this.#additional = Object.entries(config.include_additional_headers_in_check).flat();
    this.#toUpstream = config.headers_to_upstream_on_allow.map((h) => stringMatch(h, lower));
    this.#toDownstreamOnAllow = config.headers_to_downstream_on_allow.map((h) => stringMatch(h, lower));
    // Unset: every authorizer header goes to the client on deny (Envoy's allowed_client_headers default).
    this.#toDownstreamOnDeny = config.headers_to_downstream_on_deny.length > 0 ? config.headers_to_downstream_on_deny.map((h) => stringMatch(h, lower)) : null;
    const undici = require('undici') as typeof import('undici');
    this.#request = undici.request;
    this.#agent = new undici.Agent({ keepAliveTimeout: 30_000, connect: { timeout: Math.min(config.timeout_ms, 10_000) } });
  }

  async check(req: SecurityRequest): Promise<ExtAuthzResult> {
    const c = this.config;
    const headers: string[] = ['host', req.authority];
    const h = req.headers;
    for (let i = 0; i < h.length; i += 2) {
      const name = h[i]!;
      if (name === 'host' || name === 'content-length' || name === 'transfer-encoding') continue;
      if (matches(this.#include, name)) headers.push(name, h[i + 1]!);
    }
    for (let i = 0; i < this.#additional.length; i++) headers.push(this.#additional[i]!);
    headers.push('content-length', '0');
    const path = `${c.path_prefix}${req.path}${req.query ? `?${req.query}` : ''}`;
    let status: number;
    let raw: Record<string, string | string[] | undefined>;
    let body: Buffer;
    try {
      const res = await this.#request(this.#origin + (path.startsWith('/') ? path : `/${path}`), {
        method: req.method as 'GET',
        headers,
        dispatcher: this.#agent,
        signal: AbortSignal.timeout(c.timeout_ms),
        headersTimeout: c.timeout_ms,
        bodyTimeout: c.timeout_ms,
      });
      status = res.statusCode;
      raw = res.headers;
      body = await readCapped(res.body);
    } catch {
      if (c.fail_open) return { allow: true, upstreamHeaders: [], downstreamHeaders: [] };
      return { allow: false, status: c.status_on_error, body: Buffer.alloc(0), headers: [], error: true };
    }
    if (status === 200) {
      return { allow: true, upstreamHeaders: pick(raw, this.#toUpstream), downstreamHeaders: pick(raw, this.#toDownstreamOnAllow) };
    }
    return { allow: false, status, body, headers: pick(raw, this.#toDownstreamOnDeny), error: false };
  }

  close(): void {
    void this.#agent.close().catch(() => undefined);
  }
}

function matches(ms: readonly StringMatch[], name: string): boolean {
  for (const m of ms) if (matchString(m, name)) return true;
  return false;
}

/** The response headers that match (null: all), as a flat list, connection headers excepted. */
function pick(raw: Record<string, string | string[] | undefined>, ms: readonly StringMatch[] | null): string[] {
  const out: string[] = [];
  if (ms !== null && ms.length === 0) return out;
  for (const [name, v] of Object.entries(raw)) {
    if (v === undefined || CONNECTION_HEADERS.has(name)) continue;
    if (ms !== null && !matches(ms, name)) continue;
    if (Array.isArray(v)) for (const x of v) out.push(name, x);
    else out.push(name, v);
  }
  return out;
}

async function readCapped(body: AsyncIterable<Buffer> & { destroy?: () => void }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += c.length;
    if (n > MAX_BODY) {
      body.destroy?.();
      break;
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}
