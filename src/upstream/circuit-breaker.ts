// Envoy's cluster circuit breakers (DestinationRule connectionPool): counters of requests in flight,
// requests waiting for a connection and retries in flight, checked when an attempt starts. One
// breaker per cluster name, kept across config versions so that requests in flight stay counted.
import type { CircuitBreakerThresholds } from '../controlplane/snapshot.js';

/** Envoy's local reply when a limit is hit: 503, flag UO, `x-envoy-overloaded: true`. */
export const OVERFLOW_REPLY = {
  status: 503,
  flags: 'UO',
  body: 'upstream connect error or disconnect/reset before headers. reset reason: overflow',
  headers: ['x-envoy-overloaded', 'true'] as readonly string[],
} as const;

const UNLIMITED = 4294967295;

/** Results of `admit`: refused (overflow), admitted with a connection free, admitted to wait for one. */
export const OVERFLOW = -1;
export const ADMITTED = 0;
export const PENDING = 1;
export type Admission = typeof OVERFLOW | typeof ADMITTED | typeof PENDING;

/** A request that scheduled a retry; once its response is closed the retry can no longer start. */
export interface RetryOwner {
  readonly sink: { readonly closed: boolean };
}

export class CircuitBreaker {
  /** tcp.maxConnections: connections per endpoint pool (undici `connections`); 0 = unlimited. */
  maxConnections = 0;
  /** http.http1MaxPendingRequests */
  maxPending = UNLIMITED;
  /** http.http2MaxRequests (Envoy applies max_requests to every protocol) */
  maxRequests = UNLIMITED;
  /** http.maxRetries: retries in flight in the cluster */
  maxRetries = UNLIMITED;

  /** Attempts in flight (Envoy rq_active). */
  active = 0;
  /** Attempts queued for a connection (Envoy rq_pending_active). */
  pending = 0;
  /** Retries scheduled or in flight (Envoy rq_retry_open). */
  retries = 0;
  /** Requests whose counted retry has not started yet (backoff). */
  readonly #scheduled = new Set<RetryOwner>();
  // Envoy's upstream_rq_pending_overflow / upstream_rq_retry_overflow, plus max_requests overflows.
  pendingOverflow = 0;
  requestOverflow = 0;
  retryOverflow = 0;

  configure(t: CircuitBreakerThresholds | undefined): void {
    const maxConn = t?.max_connections ?? UNLIMITED;
    this.maxConnections = maxConn > 0 && maxConn < UNLIMITED ? maxConn : 0;
    this.maxPending = t?.max_pending_requests ?? UNLIMITED;
    this.maxRequests = t?.max_requests ?? UNLIMITED;
    this.maxRetries = t?.max_retries ?? UNLIMITED;
  }

  /**
   * Admits one attempt to an endpoint that has `endpointActive` attempts in flight. With pipelining 1
   * an endpoint pool serves `maxConnections` requests at once: any more wait for a connection and
   * count as pending (Envoy's HTTP/1 pool, which also lets every host open at least one connection).
   */
  admit(endpointActive: number): Admission {
    if (this.active >= this.maxRequests) {
      this.requestOverflow++;
      return OVERFLOW;
    }
    let result: Admission = ADMITTED;
    if (this.maxConnections > 0 && endpointActive >= this.maxConnections) {
      if (this.pending >= this.maxPending) {
        this.pendingOverflow++;
        return OVERFLOW;
      }
      this.pending++;
      result = PENDING;
    }
    this.active++;
    return result;
  }

  /** A pending attempt got its connection (undici wrote it to a socket). */
  connected(): void {
    if (this.pending > 0) this.pending--;
  }

  /** An admitted attempt is over; `pending` when it never got a connection. */
  release(pending: boolean, retry: boolean): void {
    if (this.active > 0) this.active--;
    if (pending && this.pending > 0) this.pending--;
    if (retry && this.retries > 0) this.retries--;
  }

  /**
   * Whether one more retry may be scheduled (Envoy checks when it schedules one, and counts it from
   * then on). `held`: the failed attempt is itself a retry still counted, which Envoy releases first.
   */
  retryAllowed(held: boolean): boolean {
    if (this.retries - (held ? 1 : 0) < this.maxRetries) return true;
    // Retries whose request ended during the backoff never start: forget them, then look again.
    for (const owner of this.#scheduled) {
      if (!owner.sink.closed) continue;
      this.#scheduled.delete(owner);
      this.retries--;
    }
    if (this.retries - (held ? 1 : 0) < this.maxRetries) return true;
    this.retryOverflow++;
    return false;
  }

  /** A retry was scheduled: it counts from now. */
  retryScheduled(owner: RetryOwner): void {
    this.retries++;
    this.#scheduled.add(owner);
  }

  /** The owner's scheduled retry starts now; true when it had one (still counted, now by the attempt). */
  takeRetry(owner: RetryOwner): boolean {
    return this.#scheduled.size > 0 && this.#scheduled.delete(owner);
  }

  /** A taken retry did not start after all (no host, overflow, request over). */
  dropRetry(): void {
    if (this.retries > 0) this.retries--;
  }
}
