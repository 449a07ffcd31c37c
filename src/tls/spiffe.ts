// SPIFFE identities as Istio writes them: `spiffe://<trust domain>/ns/<namespace>/sa/<service
// account>` in a certificate's URI SAN; the authorization attribute `source.principal` is the
// same without the scheme, `source.namespace` the `ns` segment. No imports: the request path
// uses it.

export const SPIFFE_PREFIX = 'spiffe://';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

export interface Principal {
  /** `cluster.local/ns/<ns>/sa/<sa>` (Istio's `source.principal`). */
  principal: string;
  /** The `ns` segment (`source.namespace`), '' when the id has none. */
  namespace: string;
}

/** `spiffe://<td>/ns/<ns>/sa/<sa>`. */
export function spiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `${SPIFFE_PREFIX}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/**
 * Istio's principal and namespace of a peer identity (`spiffe://td/ns/x/sa/y` →
 * `td/ns/x/sa/y`, `x`); undefined for anything that is not a spiffe:// URI.
 */
export function principalOf(id: string | undefined): Principal | undefined {
  if (!id || !id.startsWith(SPIFFE_PREFIX)) return undefined;
  const principal = id.slice(SPIFFE_PREFIX.length);
  if (!principal || principal.includes('://')) return undefined;
  const parts = principal.split('/');
  const i = parts.indexOf('ns');
  return { principal, namespace: i >= 1 && i + 1 < parts.length ? parts[i + 1]! : '' };
}

/** Parses a workload SPIFFE id; undefined when it is not `spiffe://<td>/ns/<ns>/sa/<sa>`. */
export function parseSpiffeId(id: string): { trustDomain: string; namespace: string; serviceAccount: string } | undefined {
  const m = /^spiffe:\/\/([^/\s]+)\/ns\/([^/\s]+)\/sa\/([^/\s]+)$/.exec(id);
  return m ? { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[3]! } : undefined;
}

/** The first `URI:spiffe://...` of a certificate's subjectAltName text (node:crypto's format). */
export function spiffeIdOfSan(subjectAltName: string | undefined): string | undefined {
  if (!subjectAltName) return undefined;
  for (const part of subjectAltName.split(/,\s*/)) {
    if (!part.startsWith('URI:')) continue;
    let v = part.slice(4);
    if (v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
    if (v.startsWith(SPIFFE_PREFIX)) return v;
  }
  return undefined;
}
