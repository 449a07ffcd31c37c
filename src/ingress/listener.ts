// What the data plane (data-plane.ts) needs of a listener and of the TLS side of an HTTPS
// listener, whatever the engine: below the engines (uws-listener.ts, node-listener.ts, uws-tls.ts,
// node-tls.ts) and the data plane that starts them, so that none of them imports another's file.
import type { DataPlaneContext } from './context.js';
import type { TlsChainSpec } from './https.js';

/** What the data plane needs of a listener, whatever its engine. */
export interface ServedListener {
  readonly bind: string;
  readonly port: number;
  readonly routeName: string;
  /** Its current version (route table, clusters, policies): one reference, read once per request. */
  ctx: DataPlaneContext;
  readonly listening: boolean;
  readonly inflight: number;
  listen(): Promise<void>;
  close(drainMs: number): Promise<void>;
}

/** The TLS side of an HTTPS listener: its certificates by SNI, swapped in place. */
export interface TlsBinding {
  readonly listener: ServedListener;
  update(chains: TlsChainSpec[]): void;
  secretsChanged(): void;
  /** Hashes of the certificates it serves (private files to keep). */
  hashes(): string[];
}

/**
 * A closing listener's wait for the requests in flight: resolves once the listener reports idle
 * (it calls the callback handed to `onIdle` when its last request is done) or after `drainMs`.
 */
export function requestsDrained(inflight: number, drainMs: number, onIdle: (idle: () => void) => void): Promise<void> {
  if (inflight === 0 || drainMs <= 0) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, drainMs);
    onIdle(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
