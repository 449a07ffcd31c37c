// The router's retry state for one request, after Envoy's source/common/router/retry_state_impl.cc:
// which failures a route's retry policy retries (retryOn: connect-failure, refused-stream, reset,
// 5xx, gateway-error, retriable-4xx, retriable-status-codes, gRPC statuses), how many attempts,
// the per-try timeout, the retry budget of the cluster's circuit breaker (max_retries), the
// jittered exponential backoff (25 ms base, at most 10x), and host avoidance (previous_hosts).
// HTTP exchanges and WebSocket handshakes use it alike.
import type { CompiledRetry } from '../routing/route-table.js';
import type { CircuitBreaker, RetryOwner } from '../upstream/circuit-breaker.js';
import type { UpstreamEndpoint } from '../upstream/cluster-manager.js';
import type { UpstreamErrorKind } from '../upstream/errors.js';

/** Envoy's default retry back-off base interval; the max interval is 10 times it. */
export const RETRY_BACKOFF_BASE_MS = 25;
export const RETRY_BACKOFF_MAX_MS = 10 * RETRY_BACKOFF_BASE_MS;

export class RetryState {
  /** The route's policy; null when it has none (no retries). */
  readonly policy: CompiledRetry | null;
  readonly #breaker: CircuitBreaker;
  /** Attempts started so far (x-envoy-attempt-count of the last one). */
  attempts = 0;
  /** Envoy's JitteredExponentialBackOffStrategy: the next interval to draw from. */
  #interval = RETRY_BACKOFF_BASE_MS;
  /** Hosts tried so far, when the policy avoids them (previous_hosts). */
  #previous: Set<UpstreamEndpoint> | null = null;

  constructor(policy: CompiledRetry | null, breaker: CircuitBreaker) {
    this.policy = policy;
    this.#breaker = breaker;
  }

  /** Per-try timeout in ms, 0 for none. */
  get perTryTimeoutMs(): number {
    return this.policy?.perTryTimeoutMs ?? 0;
  }

  /** Hosts the next pick should avoid (undefined: none). */
  get excludedHosts(): ReadonlySet<UpstreamEndpoint> | undefined {
    return this.#previous ?? undefined;
  }

  /** Envoy's wouldRetryFromHeaders: an upstream status (and a trailers-only gRPC status, -1 when none). */
  retriesStatus(status: number, grpcStatus: number): boolean {
    const p = this.policy;
    if (p === null) return false;
    const on = p.on;
    if (grpcStatus > 0 && on.grpcStatuses.has(grpcStatus)) return true;
    return on.statusCodes.has(status) || (on.fiveXX && status >= 500) || (on.gatewayError && (status === 502 || status === 503 || status === 504)) || (on.retriable4xx && status === 409);
  }

  /** Envoy's wouldRetryFromReset: an upstream failure before the response began. */
  retriesError(kind: UpstreamErrorKind): boolean {
    const p = this.policy;
    if (p === null) return false;
    const on = p.on;
    switch (kind) {
      case 'connect':
      case 'connect-timeout':
      case 'tls':
        return on.connectFailure;
      case 'refused-stream':
        // Never processed by the upstream: safe to send again.
        return on.refusedStream || on.reset;
      case 'overflow':
      case 'cancelled':
        // Envoy never retries an overflow; a cancelled attempt is the gateway's own doing.
        return false;
      default:
        return on.reset;
    }
  }

  /** A per-try timeout: retried under 5xx and gateway-error. */
  retriesPerTryTimeout(): boolean {
    const on = this.policy?.on;
    return on !== undefined && (on.fiveXX || on.gatewayError);
  }

  /**
   * Decides a retry for a failed attempt whose failure `retriable` says the policy retries:
   * attempts left, a replayable request, and the cluster's retry budget (`held`: the failed
   * attempt was itself a counted retry). When it retries, the retry is counted from now on
   * (`owner` takes it when it starts), `host` is avoided next time if the policy says so, and the
   * back-off in ms is returned; -1 when it does not retry.
   */
  schedule(retriable: boolean, replayable: boolean, held: boolean, owner: RetryOwner, host: UpstreamEndpoint | undefined): number {
    const p = this.policy;
    if (p === null || !retriable || this.attempts > p.numRetries || !replayable) return -1;
    const breaker = this.#breaker;
    // Retry overflow (max_retries retries in flight): no retry, the failure stands.
    if (!breaker.retryAllowed(held)) return -1;
    breaker.retryScheduled(owner);
    if (p.avoidPreviousHosts && host !== undefined) (this.#previous ??= new Set()).add(host);
    return this.nextBackOffMs();
  }

  /** Envoy's jittered exponential back-off: uniform in [0, interval), the interval doubling up to the max. */
  nextBackOffMs(): number {
    const interval = this.#interval;
    this.#interval = interval < RETRY_BACKOFF_MAX_MS / 2 ? interval * 2 : RETRY_BACKOFF_MAX_MS;
    return Math.min(Math.floor(Math.random() * interval), RETRY_BACKOFF_MAX_MS);
  }
}
