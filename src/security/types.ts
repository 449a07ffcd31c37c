// The contract between the request lifecycle and the security filters (Istio's order: JWT
// authentication, then CUSTOM / DENY / ALLOW authorization), written once so that each side can
// be built and tested on its own. Policies are compiled once per config version; nothing here
// parses configuration per request.

/** The request as the security filters see it (read-only but for `headers`, see below). */
export interface SecurityRequest {
  method: string;
  /** Path without the query. */
  path: string;
  query: string;
  /** Host without port (lower case) and the authority as received. */
  host: string;
  authority: string;
  /**
   * Request headers as a flat [name, value, ...] list with lower-case names, as they will go
   * upstream. Authentication may edit it (remove the token header unless forwardOriginalToken,
   * add outputPayloadToHeader / outputClaimToHeaders headers): it returns the new list.
   */
  headers: string[];
  /** The listener port (`destination.port`). */
  localPort: number;
  /** `source.ip`: the direct peer's address. */
  sourceIp: string;
  /** `remote.ip`: the original client (XFF / PROXY protocol with numTrustedProxies), else sourceIp. */
  remoteIp: string;
  /** `destination.ip`: the local address the connection came in on. */
  destinationIp: string;
  /** mTLS peer: `source.principal` (`cluster.local/ns/x/sa/y`) and `source.namespace`; '' without. */
  sourcePrincipal: string;
  sourceNamespace: string;
  /** `connection.sni` ('' without TLS or SNI). */
  sni: string;
}

/** What RequestAuthentication established (null: no token was presented). */
export interface RequestAuth {
  /** `request.auth.principal`: `<iss>/<sub>`. */
  principal: string;
  /** `request.auth.audiences` (the `aud` claim as a list). */
  audiences: string[];
  /** `request.auth.presenter` (the `azp` claim, '' without). */
  presenter: string;
  /** `request.auth.claims[...]`: the verified payload. */
  claims: Record<string, unknown>;
}

export type AuthnOutcome =
  /** Passed: with the verified identity (null when no token) and the headers to send upstream. */
  | { ok: true; auth: RequestAuth | null; headers: string[] }
  /**
   * 401 with Envoy's body (`Jwt is expired`, `Jwt verification fails`, `Jwks doesn't have key to
   * match kid or alg from Jwt`, ...) and its `www-authenticate` header; 403 for a token whose
   * audiences are not allowed (Envoy's JwtAudienceNotAllowed).
   */
  | { ok: false; status: 401 | 403; body: string; headers: string[] };

/** RequestAuthentication, compiled for one workload (listener) and config version. */
export interface Authenticator {
  authenticate(req: SecurityRequest): AuthnOutcome | Promise<AuthnOutcome>;
  /** Stops JWKS refreshes of a version no longer in use. */
  close(): void;
}
