// Istio HTTPRetry → Envoy's RetryPolicy, with Istio's default policy when a route sets none
// (pilot networking/core/route/retry).
import { parseDurationMs } from '../../config/duration.js';
import type { HTTPRoute } from '../../config/types.js';
import { durationFromMs, type RetryPolicy } from '../snapshot.js';
import type { IstioDefaults } from './defaults.js';

/** The retry policy of a route; undefined when retries are off (`attempts: 0`). */
export function retryPolicy(http: HTTPRoute, defaults: IstioDefaults['retry']): RetryPolicy | undefined {
  const r = http.retries;
  if (r && r.attempts === 0) return undefined;
  const policy: RetryPolicy = {
    retry_on: defaults.retryOn,
    num_retries: defaults.numRetries,
    retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts' }],
    host_selection_retry_max_attempts: defaults.hostSelectionRetryMaxAttempts,
  };
  if (!r) return policy;
  if (r.attempts !== undefined) policy.num_retries = r.attempts;
  if (r.retryOn !== undefined) {
    const parts = r.retryOn.split(',').map((s) => s.trim()).filter(Boolean);
    const codes = parts.filter((p) => /^\d+$/.test(p)).map(Number);
    const conds = parts.filter((p) => !/^\d+$/.test(p));
    if (codes.length > 0) {
      if (!conds.includes('retriable-status-codes')) conds.push('retriable-status-codes');
      policy.retriable_status_codes = codes;
    }
    policy.retry_on = conds.join(',');
  }
  if (r.perTryTimeout !== undefined) policy.per_try_timeout = durationFromMs(parseDurationMs(r.perTryTimeout) ?? 0);
  if (r.retryIgnorePreviousHosts === false) delete policy.retry_host_predicate;
  return policy;
}
