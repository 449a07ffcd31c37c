// TLS passthrough: the listener's filter chains by SNI (Envoy's server_names matching: the exact
// name, then the longest `*.suffix` wildcard, then a chain without server_names), and reading the
// ClientHello off a socket without consuming it for the upstream (the bytes are forwarded as read).
import type { Socket } from 'node:net';
import type { FilterChain } from '../controlplane/snapshot.js';
import { MAX_CLIENT_HELLO_BYTES, parseClientHello, type ClientHelloError } from './clienthello.js';
import { CompiledTcpProxy } from './tcp-proxy.js';

/** Envoy's listener filter timeout (tls_inspector waiting for the ClientHello). */
export const CLIENT_HELLO_TIMEOUT_MS = 15_000;

export class SniChains {
  readonly #exact = new Map<string, CompiledTcpProxy>();
  /** `*.example.com` chains by suffix (`example.com`). */
  readonly #wildcard = new Map<string, CompiledTcpProxy>();
  #catchAll: CompiledTcpProxy | undefined;
  readonly size: number;

  constructor(chains: readonly FilterChain[]) {
    let n = 0;
    for (const fc of chains) {
      const f = fc.filters.find((x) => x.name === 'envoy.filters.network.tcp_proxy');
      if (!f || f.name !== 'envoy.filters.network.tcp_proxy') continue;
      const proxy = new CompiledTcpProxy(f.typed_config);
      n++;
      const names = fc.filter_chain_match?.server_names;
      if (!names || names.length === 0) {
        this.#catchAll ??= proxy;
        continue;
      }
      for (const raw of names) {
        const name = raw.toLowerCase();
        if (name.startsWith('*.')) {
          if (!this.#wildcard.has(name.slice(2))) this.#wildcard.set(name.slice(2), proxy);
        } else if (!this.#exact.has(name)) this.#exact.set(name, proxy);
      }
    }
    this.size = n;
  }

  /** The chain for a ClientHello's SNI (null: the client sent none), or undefined when none matches. */
  match(sni: string | null): CompiledTcpProxy | undefined {
    if (sni === null) return this.#catchAll;
    const exact = this.#exact.get(sni);
    if (exact) return exact;
    // `a.b.example.com`: `*.b.example.com`, then `*.example.com`, then `*.com`.
    for (let i = sni.indexOf('.'); i >= 0 && i < sni.length - 1; i = sni.indexOf('.', i + 1)) {
      const hit = this.#wildcard.get(sni.slice(i + 1));
      if (hit) return hit;
    }
    return this.#catchAll;
  }
}

export type PeekResult =
  | { ok: true; sni: string | null; head: Buffer }
  | { ok: false; reason: ClientHelloError | 'timeout' | 'closed'; detail: string };

/**
 * Reads from `sock` (flowing) until a whole ClientHello is in, then pauses it and calls back with
 * every byte read (to forward as is). Bounded by MAX_CLIENT_HELLO_BYTES (plus one record's
 * headers) and `timeoutMs`. The socket is left open either way; the caller closes it on failure.
 */
export function peekClientHello(sock: Socket, timeoutMs: number, cb: (r: PeekResult) => void): void {
  const chunks: Buffer[] = [];
  let total = 0;
  let done = false;
  const finish = (r: PeekResult): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    sock.off('data', onData);
    sock.off('end', onEnd);
    sock.off('close', onEnd);
    sock.pause();
    cb(r);
  };
  const onData = (chunk: Buffer): void => {
    chunks.push(chunk);
    total += chunk.length;
    const buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
    if (chunks.length > 1) chunks.splice(0, chunks.length, buf);
    const r = parseClientHello(buf);
    if (r.status === 'ok') finish({ ok: true, sni: r.sni, head: buf });
    else if (r.status === 'error') finish({ ok: false, reason: r.reason, detail: r.detail });
    // A parser that still wants bytes past the cap (tiny records) is cut off here.
    else if (total > 2 * MAX_CLIENT_HELLO_BYTES) finish({ ok: false, reason: 'too_large', detail: `no ClientHello within ${total} bytes` });
  };
  const onEnd = (): void => finish({ ok: false, reason: 'closed', detail: `client closed after ${total} bytes, before a complete ClientHello` });
  const timer = setTimeout(() => finish({ ok: false, reason: 'timeout', detail: `no complete ClientHello within ${timeoutMs} ms (${total} bytes)` }), timeoutMs);
  sock.on('data', onData);
  sock.once('end', onEnd);
  sock.once('close', onEnd);
  sock.resume();
}
