// undici's Pool behind Gatehouse's upstream handler protocol: TLS origination (and plain HTTP/1.1
// with GATEHOUSE_H1_CLIENT=undici). The only file that speaks undici's dispatch handler API, so the
// move to undici 8's handler (onRequestStart / onResponseStart...) is this one file. undici 7's
// Pool calls the legacy methods natively (the new ones are wrapped and cost 4-11% CPU per request,
// PERFORMANCE.md), hence the legacy methods here.
// undici is required by the first pool or connector that needs it (TLS origination, a named
// upstream host), not at import: a gateway whose upstreams are all plain HTTP/1.1 to addresses or
// HTTP/2 never loads it.
import { createRequire } from 'node:module';
import type { Dispatcher, Pool } from 'undici';
import { toUpstreamError, type UpstreamHandler, type UpstreamPool, type UpstreamRequest } from './errors.js';

const require = createRequire(import.meta.url);
let undici: typeof import('undici') | undefined;

/** The undici module, required on first use. */
export function loadUndici(): typeof import('undici') {
  return (undici ??= require('undici') as typeof import('undici'));
}

export class UndiciPool implements UpstreamPool {
  readonly #pool: Pool;

  constructor(origin: string, options: Pool.Options) {
    this.#pool = new (loadUndici().Pool)(origin, options);
  }

  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void {
    const adapter = new UndiciHandler(handler);
    try {
      this.#pool.dispatch(req as Dispatcher.DispatchOptions, adapter);
    } catch (err) {
      adapter.onError(err as Error);
    }
  }

  close(): Promise<void> {
    return this.#pool.close();
  }

  destroy(): Promise<void> {
    return this.#pool.destroy();
  }
}

/** undici's (legacy) handler calls, as Gatehouse's; undici's errors as UpstreamErrors. */
class UndiciHandler implements Dispatcher.DispatchHandler {
  readonly #h: UpstreamHandler;
  #ended = false;

  constructor(h: UpstreamHandler) {
    this.#h = h;
  }

  onConnect(abort: (err?: Error) => void): void {
    this.#h.onStart(abort);
  }

  onHeaders(statusCode: number, headers: Buffer[], resume: () => void): boolean {
    return this.#h.onHead(statusCode, headers, resume);
  }

  onData(chunk: Buffer): boolean {
    return this.#h.onData(chunk);
  }

  onComplete(trailers: string[] | null): void {
    if (this.#ended) return;
    this.#ended = true;
    // undici gives raw Buffers (chunked trailers), typed string[].
    this.#h.onEnd(trailers as ReadonlyArray<Buffer | string> | null);
  }

  onError(err: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#h.onError(toUpstreamError(err));
  }
}
