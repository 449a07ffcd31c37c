// One vocabulary for upstream failures, whichever pool or adapter met them (the HTTP/1.1 pool, the
// HTTP/2 pool, undici for TLS origination, the WebSocket upstream connect). Modelled on Envoy's
// Http::StreamResetReason (what the router decides retries and response flags on) and undici's
// lib/core/errors.js (what the error codes meant). The request lifecycle switches on `kind` only;
// `code` and `cause` keep what the transport said, for logs and messages.
import type { Readable } from 'node:stream';

export type UpstreamErrorKind =
  /** No connection: refused, unreachable, no such host (Envoy RemoteConnectionFailure). */
  | 'connect'
  /** The connection was not established in the cluster's connect timeout (Envoy ConnectionTimeout). */
  | 'connect-timeout'
  /** TLS origination failed: handshake, certificate verification, unusable TLS settings. */
  | 'tls'
  /** The connection or stream went away before the response was complete (ConnectionTermination, RemoteReset). */
  | 'reset'
  /** An HTTP/2 stream the upstream refused (REFUSED_STREAM, or past its GOAWAY): never processed. */
  | 'refused-stream'
  /** The response broke the protocol: framing, smuggling guards, an oversized head (ProtocolError). */
  | 'protocol'
  /** No complete response head within the pool's headers timeout. */
  | 'headers-timeout'
  /** The response body stopped moving for the pool's body (stream idle) timeout. */
  | 'body-timeout'
  /** A pool limit refused the request (Envoy Overflow). */
  | 'overflow'
  /** The gateway itself cancelled the request (Envoy LocalReset). */
  | 'cancelled'
  /** The pool was closed or destroyed (a config version going away) before the request could run. */
  | 'destroyed'
  /** The request cannot be written (an invalid header, a body that does not match its length). */
  | 'invalid-request';

export class UpstreamError extends Error {
  readonly kind: UpstreamErrorKind;
  /** The transport's own code (`ECONNREFUSED`, `HPE_INVALID_CHUNK_SIZE`, `UND_ERR_SOCKET`...), or the kind. */
  readonly code: string;

  constructor(kind: UpstreamErrorKind, message: string, code?: string, cause?: unknown) {
    super(message, cause !== undefined ? { cause } : undefined);
    this.kind = kind;
    this.code = code ?? kind;
  }
}

/** The failure happened before a connection existed: Envoy's connection failures (UF; retry_on connect-failure). */
export function isConnectFailure(kind: UpstreamErrorKind): boolean {
  return kind === 'connect' || kind === 'connect-timeout' || kind === 'tls';
}

/** Envoy's response flag of a request that failed upstream with this kind (before URX). */
export function responseFlag(kind: UpstreamErrorKind): 'UF' | 'UC' | 'UPE' | 'UO' {
  switch (kind) {
    case 'connect':
    case 'connect-timeout':
    case 'tls':
      return 'UF';
    case 'protocol':
      return 'UPE';
    case 'overflow':
      return 'UO';
    default:
      return 'UC';
  }
}

/** Outlier detection's view of a failure (Envoy's local-origin failure types). */
export function outlierFailure(kind: UpstreamErrorKind): 'connect' | 'timeout' | 'reset' {
  if (isConnectFailure(kind)) return 'connect';
  if (kind === 'headers-timeout' || kind === 'body-timeout') return 'timeout';
  return 'reset';
}

const RESET_PREFIX = 'upstream connect error or disconnect/reset before headers. reset reason: ';

/** Envoy's local reply to a request that failed upstream before its response began: status and body. */
export function failureReply(err: UpstreamError): { status: number; body: string } {
  switch (err.kind) {
    case 'connect':
    case 'connect-timeout':
    case 'tls': {
      // (`code` is the kind itself when the transport gave none: the message says more then.)
      const reason = err.kind === 'connect-timeout' ? 'connection timeout' : err.kind === 'tls' ? `TLS_error: ${err.code}: ${err.message}` : `delayed connect error: ${err.code !== err.kind ? err.code : err.message}`;
      return { status: 503, body: `${RESET_PREFIX}remote connection failure, transport failure reason: ${reason}` };
    }
    case 'protocol':
      return { status: 502, body: `${RESET_PREFIX}protocol error` };
    case 'overflow':
      return { status: 503, body: `${RESET_PREFIX}overflow` };
    default:
      return { status: 503, body: `${RESET_PREFIX}connection termination` };
  }
}

// Codes of Node's sockets and of undici's errors (lib/core/errors.js), by kind.
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'ETIMEDOUT']);
// Errors of a TLS handshake (certificate verification, alerts) that Envoy reports as a connection
// failure ("TLS_error") rather than a reset.
const TLS_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_REVOKED',
  'INVALID_CA',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_TLS_HANDSHAKE_TIMEOUT',
  'EPROTO',
  'ERR_TLS_ORIGINATION_CONFIG',
]);

export function isTlsCode(code: string | undefined): boolean {
  return code !== undefined && (TLS_CODES.has(code) || code.startsWith('ERR_SSL_'));
}

/** The kind of an error a transport raised, by its code (Node, undici, llhttp). */
export function kindOfCode(code: string | undefined): UpstreamErrorKind {
  if (code === undefined) return 'reset';
  if (CONNECT_CODES.has(code)) return 'connect';
  if (isTlsCode(code)) return 'tls';
  if (code.startsWith('HPE_')) return 'protocol';
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'connect-timeout';
    case 'UND_ERR_HEADERS_OVERFLOW':
      return 'protocol';
    case 'UND_ERR_HEADERS_TIMEOUT':
      return 'headers-timeout';
    case 'UND_ERR_BODY_TIMEOUT':
      return 'body-timeout';
    case 'UND_ERR_ABORTED':
      return 'cancelled';
    case 'UND_ERR_DESTROYED':
    case 'UND_ERR_CLOSED':
      return 'destroyed';
    case 'UND_ERR_INVALID_ARG':
    case 'UND_ERR_NOT_SUPPORTED':
    case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
      return 'invalid-request';
    default:
      return 'reset';
  }
}

/**
 * Any error as an UpstreamError (unchanged when it already is one). `connecting`: it ended a
 * connection that never came up, so whatever it says it is a connection failure.
 */
export function toUpstreamError(err: unknown, connecting = false): UpstreamError {
  if (err instanceof UpstreamError) {
    if (!connecting || isConnectFailure(err.kind)) return err;
    return new UpstreamError('connect', err.message, err.code, err.cause ?? err);
  }
  const e: Error & { code?: unknown } = err instanceof Error ? err : new Error(String(err));
  const code = typeof e.code === 'string' ? e.code : undefined;
  // undici's llhttp errors often carry no code: its HTTPParserError is a protocol error all the same.
  let kind = code === undefined && e.name === 'HTTPParserError' ? 'protocol' : kindOfCode(code);
  if (connecting && !isConnectFailure(kind)) kind = 'connect';
  return new UpstreamError(kind, e.message, code, e);
}

/** A request as every pool takes it: header names lower-case, as a flat [name, value, ...] list. */
export interface UpstreamRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: readonly string[];
  readonly body: Buffer | Readable | null;
  /** Close the connection after this request (Connection: close). */
  readonly reset?: boolean | undefined;
}

/**
 * Gatehouse's own upstream handler: what a pool tells the request it carries. Exactly one of
 * `onEnd` / `onError` ends it (none after `abort`), and nothing follows that.
 */
export interface UpstreamHandler {
  /** The request is going out on a connection; `abort` cancels it (before a byte was written, the connection stays usable). */
  onStart(abort: (reason?: Error) => void): void;
  /** The response head: raw [name, value, ...] pairs. False pauses reading until `resume` is called. */
  onHead(status: number, headers: Buffer[], resume: () => void): boolean;
  /** A response body chunk; false pauses reading until the `resume` of onHead is called. */
  onData(chunk: Buffer): boolean;
  /** The response is complete; trailers as raw [name, value, ...] pairs (HTTP/2, chunked HTTP/1.1), or null. */
  onEnd(trailers: ReadonlyArray<Buffer | string> | null): void;
  onError(err: UpstreamError): void;
}

/** A connection pool to one endpoint: the HTTP/1.1 pool, the HTTP/2 pool, or undici behind its adapter. */
export interface UpstreamPool {
  /** Never throws: a request that cannot run ends with `handler.onError`. */
  dispatch(req: UpstreamRequest, handler: UpstreamHandler): void;
  close(): Promise<void>;
  destroy(): Promise<void>;
}
