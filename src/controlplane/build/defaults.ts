// Istio's defaults for what a configuration leaves unset, in one place: every builder reads them
// from the context (`ctx.defaults`), never from a constant of its own. Values are istiod's (pilot
// networking/core and the MeshConfig defaults) and Envoy's where Istio leaves a field to Envoy.

export interface IstioDefaults {
  /** MeshConfig connectTimeout (10 s): a cluster's connect_timeout without connectionPool.tcp.connectTimeout. */
  readonly connectTimeoutMs: number;
  /** Envoy's idle timeout as Istio leaves it: 1 h for HTTP connections and for tcp_proxy. */
  readonly idleTimeoutMs: number;
  /** Circuit-breaker thresholds when unset (or 0, which Istio reads as unset): effectively unlimited. */
  readonly circuitBreakerMax: number;
  /** Istio's default retry policy (pilot retry.go): 2 retries on connection-level failures, other hosts preferred. */
  readonly retry: { readonly retryOn: string; readonly numRetries: number; readonly hostSelectionRetryMaxAttempts: number };
  /** Envoy's consistent-hash defaults (Istio treats 0 as unset). */
  readonly ringHashMinimumRingSize: number;
  readonly maglevTableSize: number;
  /** Outlier detection fields a DestinationRule leaves unset. */
  readonly outlier: {
    readonly consecutive5xx: number;
    readonly intervalMs: number;
    readonly baseEjectionTimeMs: number;
    readonly maxEjectionPercent: number;
    readonly consecutiveLocalOriginFailures: number;
  };
}

/** Istio's default retry_on (pilot retry.go). */
export const DEFAULT_RETRY_ON = 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes';

export const ISTIO_DEFAULTS: IstioDefaults = Object.freeze({
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 3_600_000,
  circuitBreakerMax: 4294967295,
  retry: Object.freeze({ retryOn: DEFAULT_RETRY_ON, numRetries: 2, hostSelectionRetryMaxAttempts: 5 }),
  ringHashMinimumRingSize: 1024,
  maglevTableSize: 65537,
  outlier: Object.freeze({ consecutive5xx: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10, consecutiveLocalOriginFailures: 5 }),
});
