// Time and stream limits for clients of the node:http2 engine ports (HTTP2/GRPC, MUTUAL TLS,
// HTTPS offering h2): an edge gateway must not let a slow or idle client hold a connection (and
// its file descriptor) for ever. Envoy-like values, each overridable by a GATEHOUSE_* environment
// variable (a duration such as `30s` or `500ms`, or a number of streams), read once at start-up.
// uWS ports have uWebSockets' own fixed limits (10 s to send a request head, 10 s idle).
import { parseDurationMs } from '../config/duration.js';

export interface EdgeLimits {
  /** A TLS handshake must complete, and a plaintext client send its first bytes, within this. */
  handshakeTimeoutMs: number;
  /**
   * An HTTP/1.1 request head must be complete this long after the connection was handed over (or
   * after the first byte of a later request); an HTTP/2 connection must open its first stream
   * within it (Envoy's `request_headers_timeout`, which Envoy leaves off: nginx's
   * `client_header_timeout` is 60 s).
   */
  requestHeadersTimeoutMs: number;
  /**
   * A connection with no request in flight (HTTP/1.1 keep-alive, HTTP/2 without an open stream)
   * is closed after this (nginx's `keepalive_timeout`: 75 s; Envoy's `idle_timeout` is 1 h). An
   * HTTP/2 connection silent this long is also sent a PING.
   */
  idleTimeoutMs: number;
  /**
   * A request whose body is still arriving is answered 408 (or reset once its response started)
   * when nothing moved for this long: no body byte from the client, none taken by the upstream,
   * none sent to the client (Envoy's `stream_idle_timeout`, 5 min). A long upload or gRPC stream
   * that keeps moving is never cut.
   */
  streamIdleTimeoutMs: number;
  /** An HTTP/2 PING sent for liveness must be answered within this (else the connection is closed). */
  pingTimeoutMs: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (Envoy's edge recommendation: 100). */
  h2MaxConcurrentStreams: number;
}

export const DEFAULT_EDGE_LIMITS: Readonly<EdgeLimits> = Object.freeze({
  handshakeTimeoutMs: 10_000,
  requestHeadersTimeoutMs: 30_000,
  idleTimeoutMs: 75_000,
  streamIdleTimeoutMs: 300_000,
  pingTimeoutMs: 10_000,
  h2MaxConcurrentStreams: 100,
});

/** The environment variable of each limit. */
export const EDGE_LIMIT_ENV: Readonly<Record<keyof EdgeLimits, string>> = Object.freeze({
  handshakeTimeoutMs: 'GATEHOUSE_HANDSHAKE_TIMEOUT',
  requestHeadersTimeoutMs: 'GATEHOUSE_REQUEST_HEADERS_TIMEOUT',
  idleTimeoutMs: 'GATEHOUSE_IDLE_TIMEOUT',
  streamIdleTimeoutMs: 'GATEHOUSE_STREAM_IDLE_TIMEOUT',
  pingTimeoutMs: 'GATEHOUSE_H2_PING_TIMEOUT',
  h2MaxConcurrentStreams: 'GATEHOUSE_H2_MAX_CONCURRENT_STREAMS',
});

/** Node's timers take at most 2^31-1 ms. */
const MAX_TIMEOUT_MS = 2_147_483_647;

/** The limits with the environment's overrides; throws on a value that is not valid. */
export function edgeLimitsFromEnv(env: NodeJS.ProcessEnv): EdgeLimits {
  const out: EdgeLimits = { ...DEFAULT_EDGE_LIMITS };
  for (const key of Object.keys(EDGE_LIMIT_ENV) as Array<keyof EdgeLimits>) {
    const name = EDGE_LIMIT_ENV[key];
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    if (key === 'h2MaxConcurrentStreams') {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 1 || n > 0x7fffffff) throw new Error(`${name}="${raw}" must be a whole number of streams, at least 1`);
      out[key] = n;
      continue;
    }
    const ms = parseDurationMs(raw);
    if (ms === undefined || ms < 1 || ms > MAX_TIMEOUT_MS) throw new Error(`${name}="${raw}" must be a duration such as 30s or 500ms (at least 1ms, at most 24 days)`);
    out[key] = Math.round(ms);
  }
  return out;
}

let current: EdgeLimits | undefined;

/** The process's limits (the environment at first use; throws on an invalid value). */
export function edgeLimits(): EdgeLimits {
  current ??= edgeLimitsFromEnv(process.env);
  return current;
}
