// The security filters of one listener and config version, in Istio's HTTP filter order:
// jwt_authn (RequestAuthentication), ext_authz (CUSTOM), rbac DENY, rbac ALLOW — all before CORS,
// fault injection and the router. Compiled once per SecurityConfig; the request lifecycle calls
// `check` and gets a verdict synchronously when nothing has to wait (no JWKS fetch, no CUSTOM
// provider to ask), else a promise.
import { JWT_AUTHN_FILTER, JWT_PAYLOAD_METADATA_KEY, type ExtAuthzConfig, type FilterMetadata, type SecurityConfig } from '../controlplane/snapshot.js';
import type { Logger } from '../telemetry/log.js';
import { CompiledAuthz, type AuthzDecision } from './authz.js';
import { ExtAuthzClient } from './ext-authz.js';
import { createJwtAuthenticator } from './jwt.js';
import type { AuthnOutcome, Authenticator, RequestAuth, SecurityRequest } from './types.js';

/**
 * What the route is selected again with after JWT authentication (Envoy's jwt_authn
 * `clear_route_cache`, set by Istio at gateways): the request headers as authentication left them
 * (token removed, claim headers written) and its dynamic metadata (the verified payload; null
 * without a token). Authorization edits come later and do not count, as in Envoy.
 */
export interface Reroute {
  readonly headers: string[];
  readonly metadata: FilterMetadata | null;
}

export type Verdict =
  /**
   * Go on. `headers`: the upstream header list when a filter edited it (null: unchanged).
   * `reroute`: set when JWT authentication verified a token or edited the headers.
   */
  | { readonly allow: true; readonly headers: string[] | null; readonly responseHeaders: readonly string[] | null; readonly reroute: Reroute | null }
  /** A local reply: 401 (JWT), 403 (RBAC), or the external authorizer's answer. */
  | { readonly allow: false; readonly status: number; readonly body: string | Buffer; readonly flags: string; readonly headers: readonly string[]; readonly policy: string };

/** The verdict of every request a listener without policies (or a passing one) lets through. */
export const ALLOWED: Verdict = Object.freeze({ allow: true, headers: null, responseHeaders: null, reroute: null });
/** Envoy's RBAC filter denial. */
export const RBAC_DENIED_BODY = 'RBAC: access denied';

function rbacDenied(policy: string): Verdict {
  return { allow: false, status: 403, body: RBAC_DENIED_BODY, flags: '', headers: [], policy };
}

export class SecurityFilters {
  readonly config: SecurityConfig;
  /** False when the listener has no RequestAuthentication and no AuthorizationPolicy: nothing to check. */
  readonly active: boolean;
  /** How many X-Forwarded-For hops are trusted (remote.ip). */
  readonly numTrustedProxies: number;
  readonly #authn: Authenticator | null;
  readonly #authz: CompiledAuthz;
  readonly #clients = new Map<string, ExtAuthzClient>();
  readonly #log: Logger;

  constructor(config: SecurityConfig, log: Logger) {
    this.config = config;
    this.#log = log;
    this.numTrustedProxies = config.num_trusted_proxies;
    this.#authn = config.jwt_rules.length > 0 ? createJwtAuthenticator(config.jwt_rules, log) : null;
    this.#authz = new CompiledAuthz(config);
    if (config.audit.length > 0) {
      this.#authz.onAudit = (policy, req) => log.debug({ policy, method: req.method, path: req.path, host: req.host, remoteIp: req.remoteIp }, 'AUDIT policy matched');
    }
    for (const p of config.custom) if (p.provider && !this.#clients.has(p.provider.name)) this.#clients.set(p.provider.name, new ExtAuthzClient(p.provider));
    this.active = this.#authn !== null || this.#authz.active;
  }

  /** AUDIT matches so far, by policy. */
  get auditCounts(): ReadonlyMap<string, number> {
    return this.#authz.auditCounts;
  }

  /** Whether a RequestAuthentication applies: only then can a verdict carry a `reroute`. */
  get authenticates(): boolean {
    return this.#authn !== null;
  }

  check(req: SecurityRequest): Verdict | Promise<Verdict> {
    if (!this.active) return ALLOWED;
    const authn = this.#authn;
    if (authn === null) return this.#authorize(req, null, false, null);
    const out = authn.authenticate(req);
    if (out instanceof Promise) return out.then((o) => this.#afterAuthn(req, o));
    return this.#afterAuthn(req, out);
  }

  #afterAuthn(req: SecurityRequest, o: AuthnOutcome): Verdict | Promise<Verdict> {
    if (!o.ok) return { allow: false, status: o.status, body: o.body, flags: '', headers: o.headers, policy: '' };
    const edited = o.headers !== req.headers;
    if (edited) req.headers = o.headers;
    const reroute = edited || o.auth !== null ? { headers: o.headers, metadata: o.auth !== null ? jwtMetadata(o.auth) : null } : null;
    return this.#authorize(req, o.auth, edited, reroute);
  }

  #authorize(req: SecurityRequest, auth: RequestAuth | null, edited: boolean, reroute: Reroute | null): Verdict | Promise<Verdict> {
    const d = this.#authz.evaluate(req, auth);
    if (d.kind === 'custom') return this.#custom(req, auth, edited, reroute, d);
    return this.#final(d, req, edited, null, reroute);
  }

  #final(d: AuthzDecision, req: SecurityRequest, edited: boolean, responseHeaders: readonly string[] | null, reroute: Reroute | null): Verdict {
    if (d.kind === 'deny') return rbacDenied(d.policy);
    if (!edited && responseHeaders === null && reroute === null) return ALLOWED;
    return { allow: true, headers: edited ? req.headers : null, responseHeaders, reroute };
  }

  async #custom(req: SecurityRequest, auth: RequestAuth | null, edited: boolean, reroute: Reroute | null, d: { policy: string; provider: ExtAuthzConfig }): Promise<Verdict> {
    const client = this.#clients.get(d.provider.name)!;
    const r = await client.check(req);
    if (!r.allow) {
      if (r.error) this.#log.warn({ policy: d.policy, provider: d.provider.name, status: r.status }, 'external authorizer failed; request denied (statusOnError)');
      return { allow: false, status: r.status, body: r.body, flags: 'UAEX', headers: r.headers, policy: d.policy };
    }
    if (r.upstreamHeaders.length > 0) {
      req.headers = setHeaders(req.headers, r.upstreamHeaders);
      edited = true;
    }
    return this.#final(this.#authz.evaluate(req, auth, true), req, edited, r.downstreamHeaders.length > 0 ? r.downstreamHeaders : null, reroute);
  }

  /** Stops what the version keeps running (JWKS refreshes, authorizer connections). */
  close(): void {
    this.#authn?.close();
    for (const c of this.#clients.values()) c.close();
  }
}

/** The JWT filter's dynamic metadata for a verified token (Istio's `payload_in_metadata: payload`). */
function jwtMetadata(auth: RequestAuth): FilterMetadata {
  return { [JWT_AUTHN_FILTER]: { [JWT_PAYLOAD_METADATA_KEY]: auth.claims } };
}

/** `list` with each header of `set` replacing every value of that name (added when absent). */
export function setHeaders(list: readonly string[], set: readonly string[]): string[] {
  const names = new Set<string>();
  for (let i = 0; i < set.length; i += 2) names.add(set[i]!);
  const out: string[] = [];
  for (let i = 0; i < list.length; i += 2) if (!names.has(list[i]!)) out.push(list[i]!, list[i + 1]!);
  for (let i = 0; i < set.length; i++) out.push(set[i]!);
  return out;
}

/**
 * The filters of each distinct SecurityConfig of a config version, shared by every listener with
 * the same config (compared by content); `replace` closes the previous version's filters.
 */
export class SecurityRegistry {
  #current = new Map<string, SecurityFilters>();
  readonly #log: Logger;
  constructor(log: Logger) {
    this.#log = log;
  }

  /** Starts a version: returns a lookup for its listeners' configs; call `commit` once all are looked up. */
  begin(): { get(config: SecurityConfig | undefined): SecurityFilters | null; commit(): void } {
    const next = new Map<string, SecurityFilters>();
    const prev = this.#current;
    return {
      get: (config) => {
        if (!config) return null;
        const key = JSON.stringify(config);
        let f = next.get(key);
        if (!f) {
          // An unchanged config keeps its compiled filters (and the authenticator's JWKS cache).
          f = prev.get(key) ?? new SecurityFilters(config, this.#log);
          next.set(key, f);
        }
        return f;
      },
      commit: () => {
        for (const [k, f] of prev) if (!next.has(k)) f.close();
        this.#current = next;
      },
    };
  }

  close(): void {
    for (const f of this.#current.values()) f.close();
    this.#current = new Map();
  }
}
