// Envoy's tracing decision (ConnectionManagerUtility::mutateTracingRequestHeader with Istio's
// settings: client_sampling and overall_sampling 100%, random_sampling = the configured percent):
// `x-client-trace-id` forces a trace; `x-envoy-force-trace` forces one from a trusted internal
// hop; else the request is sampled at the configured percent, on the x-request-id (so that every
// hop of a request decides alike) unless useRequestIdForTraceSampling is off. An incoming sampled
// decision (W3C flags, B3 sampled) is then respected, as Envoy's tracers do.

export const NOT_TRACEABLE = 0;
export const SAMPLED = 1;
export const FORCED = 2;
export const CLIENT_FORCED = 3;
export type Reason = typeof NOT_TRACEABLE | typeof SAMPLED | typeof FORCED | typeof CLIENT_FORCED;

/** A percentage as Envoy's runtime compares it: parts per 10,000. */
export function percentToTenThousandths(percent: number): number {
  if (!(percent > 0)) return 0;
  return percent >= 100 ? 10_000 : Math.round(percent * 100);
}

/** Envoy's UUID request id extension: the first 8 hex digits as an integer (undefined when not hex). */
export function requestIdInteger(rid: string): number | undefined {
  if (rid.length < 8) return undefined;
  const n = Number.parseInt(rid.slice(0, 8), 16);
  return Number.isNaN(n) || !/^[0-9a-fA-F]{8}/.test(rid) ? undefined : n;
}

/**
 * The reason a request is traced. `tenThousandths`: the sampling percent in parts per 10,000;
 * `requestId`: the x-request-id when sampling on it, else undefined (a random roll).
 */
export function traceReason(tenThousandths: number, requestId: string | undefined, clientTraceId: boolean, forceTrace: boolean): Reason {
  if (clientTraceId) return CLIENT_FORCED;
  if (forceTrace) return FORCED;
  if (tenThousandths <= 0) return NOT_TRACEABLE;
  if (tenThousandths >= 10_000) return SAMPLED;
  const n = requestId !== undefined ? requestIdInteger(requestId) : undefined;
  const roll = n !== undefined ? n % 10_000 : Math.floor(Math.random() * 10_000);
  return roll < tenThousandths ? SAMPLED : NOT_TRACEABLE;
}
