// Istio HTTPMatchRequest → Envoy's RouteMatch (uri, headers, query parameters, JWT claims), and
// how a delegate's match merges into the delegating route's.
import { routingClaim } from '../../config/jwt-claims.js';
import type { HTTPMatchRequest, StringMatch } from '../../config/types.js';
import { JWT_AUTHN_FILTER, JWT_PAYLOAD_METADATA_KEY, type HeaderMatcher, type MetadataMatcher, type QueryParameterMatcher, type RouteMatch, type StringMatcher } from '../snapshot.js';

export function stringMatcher(m: StringMatch, ignoreCase = false): StringMatcher | undefined {
  if (m.exact !== undefined) return { exact: m.exact, ...(ignoreCase ? { ignore_case: true } : {}) };
  if (m.prefix !== undefined) return { prefix: m.prefix, ...(ignoreCase ? { ignore_case: true } : {}) };
  if (m.regex !== undefined) return { safe_regex: { regex: m.regex } };
  return undefined;
}

export function routeMatch(m: HTTPMatchRequest | undefined): RouteMatch {
  const match: RouteMatch = { case_sensitive: !m?.ignoreUriCase, headers: [], query_parameters: [] };
  const uri = m?.uri;
  if (uri?.exact !== undefined) match.path = uri.exact;
  else if (uri?.regex !== undefined) match.safe_regex = { regex: uri.regex };
  else match.prefix = uri?.prefix ?? '/';
  const header = (name: string, sm: StringMatch, invert: boolean): HeaderMatcher => {
    const string_match = stringMatcher(sm);
    // `{}` (or an empty exact, as Istio reads it for headers) means "present".
    const hm: HeaderMatcher = string_match && !(sm.exact === '' && Object.keys(sm).length === 1) ? { name, string_match } : { name, present_match: true };
    if (invert) hm.invert_match = true;
    return hm;
  };
  const headerOrClaim = (name: string, sm: StringMatch, invert: boolean): void => {
    // Istio: a `@request.auth.claims...` key matches a claim of the verified JWT, not a header.
    const claims = routingClaim(name);
    if (claims === null) match.headers.push(header(name.toLowerCase(), sm, invert));
    else {
      const c = claimMatcher(claims, sm, invert);
      if (c) (match.dynamic_metadata ??= []).push(c);
    }
  };
  for (const [name, sm] of Object.entries(m?.headers ?? {})) headerOrClaim(name, sm, false);
  for (const [name, sm] of Object.entries(m?.withoutHeaders ?? {})) headerOrClaim(name, sm, true);
  if (m?.method) match.headers.push(header(':method', m.method, false));
  if (m?.authority) match.headers.push(header(':authority', m.authority, false));
  if (m?.scheme) match.headers.push(header(':scheme', m.scheme, false));
  for (const [name, sm] of Object.entries(m?.queryParams ?? {})) {
    const string_match = stringMatcher(sm);
    const q: QueryParameterMatcher = string_match && !(sm.exact === '' && Object.keys(sm).length === 1) ? { name, string_match } : { name, present_match: true };
    match.query_parameters.push(q);
  }
  return match;
}

/**
 * A JWT claim match as Istio emits it (MetadataMatcherForJWTClaims): the claim under the JWT
 * filter's `payload` metadata, matched as a string or, for a list claim, by any element.
 * `withoutHeaders` inverts it, so a request without a verified token matches. undefined for a
 * match without a value (validation refuses it; Envoy would reject the route).
 */
function claimMatcher(claims: readonly string[], sm: StringMatch, invert: boolean): MetadataMatcher | undefined {
  if (stringMatcher(sm) === undefined) return undefined;
  const m: MetadataMatcher = {
    filter: JWT_AUTHN_FILTER,
    path: [JWT_PAYLOAD_METADATA_KEY, ...claims].map((key) => ({ key })),
    value: { or_match: { value_matchers: [{ list_match: { one_of: { string_match: stringMatcher(sm)! } } }, { string_match: stringMatcher(sm)! }] } },
  };
  if (invert) m.invert = true;
  return m;
}

/**
 * A delegate route's match merged into the delegating route's, as Istio merges them: the
 * delegate's conditions are added to the root's; a condition both set must agree (a delegate uri
 * must lie within the root's prefix). null when they conflict.
 */
export function mergeMatch(root: HTTPMatchRequest | undefined, leaf: HTTPMatchRequest | undefined): HTTPMatchRequest | undefined | null {
  if (!root) return leaf;
  if (!leaf) return root;
  const merged: HTTPMatchRequest = { ...root, ...leaf };
  if (root.uri && leaf.uri) {
    const r = root.uri;
    const l = leaf.uri;
    const within =
      r.prefix !== undefined ? (l.prefix ?? l.exact ?? '\u0000').startsWith(r.prefix) : r.exact !== undefined ? l.exact === r.exact : r.regex !== undefined && l.regex === r.regex;
    if (!within) return null;
  }
  for (const k of ['scheme', 'method', 'authority'] as const) {
    if (root[k] && leaf[k] && JSON.stringify(root[k]) !== JSON.stringify(leaf[k])) return null;
  }
  if (root.port !== undefined && leaf.port !== undefined && root.port !== leaf.port) return null;
  for (const k of ['headers', 'withoutHeaders', 'queryParams'] as const) {
    const a = root[k];
    const b = leaf[k];
    if (!a || !b) continue;
    for (const name of Object.keys(b)) if (a[name] && JSON.stringify(a[name]) !== JSON.stringify(b[name])) return null;
    merged[k] = { ...a, ...b };
  }
  if (root.gateways) merged.gateways = root.gateways;
  return merged;
}
