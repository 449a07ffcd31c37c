// Per-route configuration of Envoy's HTTP filters, as Istio sets it from an HTTPRoute: fault
// injection (envoy.filters.http.fault) and CORS (envoy.filters.http.cors). A new per-route filter
// setting (a local rate limit, say) is one more function here and one line in routeFilters().
import { parseDurationMs } from '../../config/duration.js';
import type { HTTPRoute, Resource, VirtualServiceSpec } from '../../config/types.js';
import { durationFromMs, type CorsPolicy, type FractionalPercent, type HttpFault, type Route, type StringMatcher } from '../snapshot.js';
import type { Warn } from './inputs.js';
import { stringMatcher } from './route-match.js';

const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

/** Istio percentages (0-100, fractional) as Envoy's parts per million. */
export function perMillion(percent: number): FractionalPercent {
  return { numerator: Math.round(Math.min(100, Math.max(0, percent)) * 10_000), denominator: 'MILLION' };
}

/** Fault injection and CORS, as Istio configures Envoy's fault and cors filters per route. */
export function routeFilters(owner: Resource<VirtualServiceSpec>, http: HTTPRoute, base: Array<string | number>, warn: Warn): Route['typed_per_filter_config'] | undefined {
  const filters: NonNullable<Route['typed_per_filter_config']> = {};
  const fault = faultFilter(owner, http, base, warn);
  if (fault) filters['envoy.filters.http.fault'] = fault;
  const cors = corsFilter(http);
  if (cors) filters['envoy.filters.http.cors'] = cors;
  return filters['envoy.filters.http.fault'] || filters['envoy.filters.http.cors'] ? filters : undefined;
}

function faultFilter(owner: Resource<VirtualServiceSpec>, http: HTTPRoute, base: Array<string | number>, warn: Warn): HttpFault | undefined {
  const f = http.fault;
  if (!f) return undefined;
  const fault: HttpFault = {};
  if (f.delay?.fixedDelay !== undefined) {
    fault.delay = { fixed_delay: durationFromMs(parseDurationMs(f.delay.fixedDelay) ?? 0), percentage: perMillion(f.delay.percentage?.value ?? f.delay.percent ?? 0) };
  }
  if (f.abort) {
    const percentage = perMillion(f.abort.percentage?.value ?? 0);
    if (f.abort.httpStatus !== undefined) fault.abort = { http_status: f.abort.httpStatus, percentage };
    else if (f.abort.grpcStatus !== undefined) fault.abort = { grpc_status: GRPC_CODES.indexOf(f.abort.grpcStatus.toUpperCase()), percentage };
    else if (f.abort.http2Error !== undefined) warn(owner, [...base, 'fault', 'abort', 'http2Error'], 'http2Error aborts are not implemented by Gatehouse; ignored');
  }
  if (http.timeout !== undefined || http.retries !== undefined) warn(owner, [...base, 'fault'], 'a route with fault injection has no timeout and no retries (as in Istio); its timeout/retries are ignored');
  return fault.delay || fault.abort ? fault : undefined;
}

function corsFilter(http: HTTPRoute): CorsPolicy | undefined {
  const c = http.corsPolicy;
  if (!c) return undefined;
  const origins: StringMatcher[] = [];
  for (const o of c.allowOrigins ?? []) {
    const sm = stringMatcher(o);
    if (sm) origins.push(sm);
  }
  for (const o of c.allowOrigin ?? []) origins.push({ exact: o });
  const cors: CorsPolicy = { allow_origin_string_match: origins, forward_not_matching_preflights: c.unmatchedPreflights !== 'IGNORE' };
  if (c.allowMethods?.length) cors.allow_methods = c.allowMethods.join(',');
  if (c.allowHeaders?.length) cors.allow_headers = c.allowHeaders.join(',');
  if (c.exposeHeaders?.length) cors.expose_headers = c.exposeHeaders.join(',');
  if (c.maxAge !== undefined) cors.max_age = String(Math.floor((parseDurationMs(c.maxAge) ?? 0) / 1000));
  if (c.allowCredentials !== undefined) cors.allow_credentials = c.allowCredentials;
  return cors;
}
