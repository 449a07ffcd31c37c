// Istio's security filters at a gateway, as one step of the chain: jwt_authn
// (RequestAuthentication), ext_authz (CUSTOM), rbac (DENY, ALLOW). The policies themselves live in
// src/security; this hands the request over and applies the verdict: a denial is a local reply, an
// allow may rewrite the upstream headers, add response headers (ext_authz) and re-select the route
// with what JWT authentication established (Envoy's clear_route_cache: the JWT-claim re-route).
import { firstMatch, headerOps } from '../../routing/route-table.js';
import { RBAC_DENIED_BODY, type Verdict } from '../../security/pipeline.js';
import { securityRequest } from '../connection.js';
import { CONTINUE, respond, type FilterRequest, type FilterVerdict, type HttpFilter } from './filter.js';

/** A failing policy fails closed. */
const FAILED = respond(403, '', RBAC_DENIED_BODY);

export const securityFilter: HttpFilter = {
  name: 'envoy.filters.http.jwt_authn+ext_authz+rbac',
  decode(req: FilterRequest): FilterVerdict {
    const sec = req.ctx.security;
    if (sec == null || !sec.active) return CONTINUE;
    const verdict = sec.check(securityRequest(req.head, req.conn, sec.numTrustedProxies, req.upstreamHeaders));
    if (verdict instanceof Promise) {
      return {
        kind: 'wait',
        until: verdict.then(
          (v) => apply(req, v),
          () => FAILED,
        ),
      };
    }
    return apply(req, verdict);
  },
};

function apply(req: FilterRequest, v: Verdict): FilterVerdict {
  if (!v.allow) return respond(v.status, v.flags, v.body, v.headers);
  const r = v.reroute;
  if (r !== null && req.rerouteIn !== null) {
    const head = r.headers === req.head.headers ? req.head : { ...req.head, headers: r.headers };
    req.route = firstMatch(req.rerouteIn, head, r.metadata ?? undefined);
  }
  if (v.headers !== null) req.upstreamHeaders = v.headers;
  if (v.responseHeaders !== null) req.addResponseOps(headerOps([], pairs(v.responseHeaders), []));
  return CONTINUE;
}

/** A flat [name, value, ...] list as pairs. */
function pairs(list: readonly string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i < list.length; i += 2) out.push([list[i]!, list[i + 1]!]);
  return out;
}
