// JWT claim based routing: a VirtualService match key `@request.auth.claims.<claim>` (or
// `[<claim>]`), in `headers` or `withoutHeaders`, matches a claim of the token that
// RequestAuthentication verified instead of a request header. Parsed as Istio parses it
// (pkg/jwt/routing.go): the prefix is case-insensitive; `.` separates nested claims, or the
// `[a][b]` form does (for claim names that contain dots); the claim names keep their case.
// Shared by validation (here) and the translation into Envoy's metadata matcher (resolve.ts).
import type { Resource } from './types.js';
import { asArr, asObj, isObj, quote, type Reporter } from './schema.js';

export const JWT_CLAIM_KEY_PREFIX = '@request.auth.claims';

/**
 * The claim path of a match key (`['groups']`, `['nested', 'key']`), or null when the key is not a
 * claim key (then it is a header name). Segments may be empty here; `claimKeyProblem` says so.
 */
export function routingClaim(key: string): string[] | null {
  if (key.length <= JWT_CLAIM_KEY_PREFIX.length || key.slice(0, JWT_CLAIM_KEY_PREFIX.length).toLowerCase() !== JWT_CLAIM_KEY_PREFIX) return null;
  const rest = key.slice(JWT_CLAIM_KEY_PREFIX.length);
  if (rest.startsWith('.') && rest.length > 1) return rest.slice(1).split('.');
  if (rest.startsWith('[') && rest.endsWith(']') && rest.length > 2) return rest.slice(1, -1).split('][');
  return null;
}

const USAGE = 'use "@request.auth.claims.<claim>" (nested: "@request.auth.claims.<a>.<b>") or "@request.auth.claims[<claim>]" (nested: "[<a>][<b>]")';

/**
 * What is wrong with a match key that looks like a claim key: `undefined` for a well-formed one
 * and for keys that are not meant as claims (header names are checked elsewhere).
 */
export function claimKeyProblem(key: string): string | undefined {
  const path = routingClaim(key);
  if (path !== null) {
    // Envoy refuses an empty metadata path segment (the route configuration would be rejected).
    if (path.some((s) => s === '')) return `invalid JWT claim key ${quote(key)}: a claim name is empty; ${USAGE}`;
    return undefined;
  }
  if (key.startsWith('@')) return `invalid JWT claim key ${quote(key)}: ${USAGE}`;
  return undefined;
}

/**
 * The checks of a VirtualService's claim matches that need the whole resource (Istio's own
 * validation): claim routing is a gateway feature, so a VirtualService that applies to sidecars
 * (no `gateways`, or `mesh` among them; delegates have none) may not use it; and a claim match
 * needs a value (`exact`, `prefix` or `regex`: Envoy has no "claim present" form for it).
 */
export function checkClaimRoutes(r: Resource, out: Reporter): void {
  const spec = asObj(r.spec);
  const gateways = asArr(spec.gateways);
  const mesh = gateways.length === 0 || gateways.includes('mesh');
  asArr(spec.http).forEach((http, i) => {
    asArr(asObj(http).match).forEach((m, j) => {
      for (const field of ['headers', 'withoutHeaders'] as const) {
        const matches = asObj(asObj(m)[field]);
        for (const [key, value] of Object.entries(matches)) {
          if (routingClaim(key) === null) continue;
          const path = ['spec', 'http', i, 'match', j, field, key];
          if (mesh) {
            const where = gateways.length === 0 ? 'it has no gateways' : 'its gateways include "mesh"';
            out.error(path, `JWT claim based routing is only supported for gateways, and ${where} (sidecars never see the claims); bind it to gateways only`);
          }
          if (isObj(value) && value.exact === undefined && value.prefix === undefined && value.regex === undefined) {
            out.error(path, 'a JWT claim match needs exact, prefix or regex');
          }
        }
      }
    });
  });
}
