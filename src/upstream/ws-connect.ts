// The WebSocket upstream connect: a `ws` client to one endpoint for one proxied WebSocket (each
// has its own upstream connection, no pool), and its failures in the upstream error vocabulary.
import WebSocket from 'ws';
import { UpstreamError, toUpstreamError } from './errors.js';

/** Largest message accepted from the upstream (`ws` `maxPayload`). */
export const WS_MAX_PAYLOAD = 16 * 1024 * 1024;

/**
 * Opens the upstream WebSocket to `hostPort` (no redirects, no compression: extensions are per
 * hop). Invalid subprotocols or header values throw an UpstreamError `invalid-request`.
 */
export function openUpstreamWebSocket(hostPort: string, path: string, protocols: string[], headers: Record<string, string | string[]>, connectTimeoutMs: number): WebSocket {
  try {
    return new WebSocket(`ws://${hostPort}${path}`, protocols, {
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
