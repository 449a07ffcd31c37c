// The WebSocket upstream connect: a `ws` client to one endpoint for one proxied WebSocket (each
// has its own upstream connection, no pool), and its failures in the upstream error vocabulary.
// `ws` is required on the first proxied WebSocket, not at import: a gateway that proxies none
// never loads it (about 2 MB of heap and code).
import { createRequire } from 'node:module';
import type WebSocket from 'ws';
import type { WebSocketServer } from 'ws';
import { UpstreamError, toUpstreamError } from './errors.js';

const require = createRequire(import.meta.url);
let wsModule: { WebSocket: typeof WebSocket; WebSocketServer: typeof WebSocketServer } | undefined;

/** The `ws` classes, loaded on first use. */
export function loadWs(): { WebSocket: typeof WebSocket; WebSocketServer: typeof WebSocketServer } {
  if (!wsModule) {
    const m = require('ws') as typeof WebSocket & { WebSocketServer: typeof WebSocketServer };
    wsModule = { WebSocket: m, WebSocketServer: m.WebSocketServer };
  }
  return wsModule;
}

/** WebSocket readyState values (the WHATWG ones, as `ws` defines them). */
export const WS_CONNECTING = 0;
export const WS_OPEN = 1;

/** Largest message accepted from the upstream (`ws` `maxPayload`). */
export const WS_MAX_PAYLOAD = 16 * 1024 * 1024;

/**
 * Opens the upstream WebSocket to `hostPort` (no redirects, no compression: extensions are per
 * hop). Invalid subprotocols or header values throw an UpstreamError `invalid-request`.
 */
export function openUpstreamWebSocket(hostPort: string, path: string, protocols: string[], headers: Record<string, string | string[]>, connectTimeoutMs: number): WebSocket {
  try {
    const Ws = loadWs().WebSocket;
    return new Ws(`ws://${hostPort}${path}`, protocols, {
      headers,
      perMessageDeflate: false,
      handshakeTimeout: Math.max(1, Math.round(connectTimeoutMs)),
      maxPayload: WS_MAX_PAYLOAD,
      followRedirects: false,
    });
  } catch (err) {
    throw new UpstreamError('invalid-request', (err as Error).message, undefined, err);
  }
}

/** An `error` of the upstream WebSocket before it opened, as an UpstreamError. */
export function webSocketConnectError(err: Error & { code?: string }): UpstreamError {
  // `ws` reports its opening handshake timeout (connect and upgrade answer) without a code.
  if (err.code === undefined && err.message.includes('timed out')) return new UpstreamError('connect-timeout', err.message, undefined, err);
  return toUpstreamError(err);
}
