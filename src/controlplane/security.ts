// Istio security policies → the SecurityConfig each HTTP listener carries (called by resolve()).
// Selection as istiod does it for a gateway workload: policies in the root namespace apply to
// every workload (when their selector, if any, matches), policies in the gateway's own namespace
// apply when their selector matches its labels (no selector: namespace-wide), others never.
// `targetRef(s)` (Gateway API attachment) are not supported: such a policy is skipped with a warning.
// CUSTOM policies get their provider from the mesh config's `extensionProviders`
// (`envoyExtAuthzHttp`); a missing or unusable provider makes the workload deny everything, as
// Istio fails closed.
import { parseDurationMs } from '../config/duration.js';
import type { MeshConfig, Resource } from '../config/types.js';
import type { AuthzPolicyConfig, AuthzRuleConfig, ExtAuthzConfig, JwtRuleConfig, SecurityConfig } from './snapshot.js';

type Warn = (r: Resource, path: ReadonlyArray<string | number>, message: string) => void;

interface Selectable {
  selector?: { matchLabels?: Record<string, string> };
  targetRef?: unknown;
  targetRefs?: unknown[];
}

interface JwtRuleSpec {
  issuer: string;
  audiences?: string[];
  jwksUri?: string;
  /** The CRD's (protobuf) name of jwksUri. */
  jwks_uri?: string;
  jwks?: string;
  fromHeaders?: Array<{ name: string; prefix?: string }>;
  fromParams?: string[];
  fromCookies?: string[];
  outputPayloadToHeader?: string;
  outputClaimToHeaders?: Array<{ header: string; claim: string }>;
  forwardOriginalToken?: boolean;
  timeout?: string;
  spaceDelimitedClaims?: string[];
}

interface RequestAuthenticationSpec extends Selectable {
  jwtRules?: JwtRuleSpec[];
}

interface AuthorizationPolicySpec extends Selectable {
  action?: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
  provider?: { name: string };
  rules?: Array<{
    from?: Array<{ source?: Record<string, string[]> }>;
    to?: Array<{ operation?: Record<string, string[]> }>;
    when?: Array<{ key: string; values?: string[]; notValues?: string[] }>;
  }>;
}

export interface SecurityOptions {
  labels: Readonly<Record<string, string>>;
  namespace: string;
  mesh: MeshConfig;
}

/** JWKS fetch timeout when a jwtRule sets none (Istio's default). */
const DEFAULT_JWKS_TIMEOUT_MS = 5_000;
/** Istio's envoyExtAuthzHttp defaults. */
const DEFAULT_EXT_AUTHZ_TIMEOUT_MS = 600_000;
const DEFAULT_STATUS_ON_ERROR = 403;

/**
 * The security config of this gateway's HTTP listeners; null when nothing applies (no policy and
 * numTrustedProxies 0), so that listeners without policies carry nothing.
 */
export function buildSecurityConfig(resources: readonly Resource[], opts: SecurityOptions, warn: Warn): SecurityConfig | null {
  const applies = (r: Resource<Selectable>): boolean => {
    const ns = r.metadata.namespace;
    if (ns !== opts.mesh.rootNamespace && ns !== opts.namespace) return false;
    if (r.spec.targetRef !== undefined || (r.spec.targetRefs !== undefined && r.spec.targetRefs.length > 0)) {
      warn(r, ['spec', r.spec.targetRef !== undefined ? 'targetRef' : 'targetRefs'], 'targetRef/targetRefs are not supported by Gatehouse; this policy is not applied');
      return false;
    }
    const sel = r.spec.selector?.matchLabels ?? {};
    for (const k in sel) if (opts.labels[k] !== sel[k]) return false;
    return true;
  };

  const jwt_rules: JwtRuleConfig[] = [];
  for (const r of resources) {
    if (r.kind !== 'RequestAuthentication') continue;
    const ra = r as Resource<RequestAuthenticationSpec>;
    if (!applies(ra)) continue;
    const policy = `${r.metadata.namespace}/${r.metadata.name}`;
    for (const rule of ra.spec.jwtRules ?? []) jwt_rules.push(jwtRule(policy, rule));
  }

  const out: Pick<SecurityConfig, 'custom' | 'deny' | 'allow' | 'audit'> = { custom: [], deny: [], allow: [], audit: [] };
  const customProviders = new Set<string>();
  for (const r of resources) {
    if (r.kind !== 'AuthorizationPolicy') continue;
    const ap = r as Resource<AuthorizationPolicySpec>;
    if (!applies(ap)) continue;
    const policy: AuthzPolicyConfig = { policy: `${r.metadata.namespace}/${r.metadata.name}`, rules: (ap.spec.rules ?? []).map((x) => rule(x, r.metadata.namespace)) };
    const action = ap.spec.action ?? 'ALLOW';
    if (action === 'CUSTOM') {
      const name = ap.spec.provider?.name ?? '';
      customProviders.add(name);
      const provider = extAuthzProvider(opts.mesh.extensionProviders, name);
      if (typeof provider === 'string') warn(r, ['spec', 'provider', 'name'], `${provider}; the gateway denies every request while this policy applies (Istio fails closed)`);
      else policy.provider = provider;
      out.custom.push(policy);
    } else if (action === 'DENY') out.deny.push(policy);
    else if (action === 'AUDIT') out.audit.push(policy);
    else out.allow.push(policy);
  }
  if (customProviders.size > 1) {
    // Istio: only one CUSTOM provider per workload; more is an error that denies all.
    const first = resources.find((r) => r.kind === 'AuthorizationPolicy' && out.custom.some((p) => p.policy === `${r.metadata.namespace}/${r.metadata.name}`))!;
    warn(first, ['spec', 'provider', 'name'], `CUSTOM policies for this gateway name ${customProviders.size} providers (${[...customProviders].join(', ')}); only one is allowed per workload, so every request is denied`);
    for (const p of out.custom) delete p.provider;
  }

  const num_trusted_proxies = opts.mesh.defaultConfig.gatewayTopology?.numTrustedProxies ?? 0;
  const any = jwt_rules.length + out.custom.length + out.deny.length + out.allow.length + out.audit.length > 0;
  if (!any && num_trusted_proxies <= 0) return null;
  return { jwt_rules, ...out, num_trusted_proxies };
}

function jwtRule(policy: string, r: JwtRuleSpec): JwtRuleConfig {
  const c: JwtRuleConfig = {
    policy,
    issuer: r.issuer,
    audiences: r.audiences ?? [],
    timeout_ms: (r.timeout !== undefined ? parseDurationMs(r.timeout) : undefined) ?? DEFAULT_JWKS_TIMEOUT_MS,
    from_headers: (r.fromHeaders ?? []).map((h) => ({ name: h.name.toLowerCase(), prefix: h.prefix ?? '' })),
    from_params: r.fromParams ?? [],
    from_cookies: r.fromCookies ?? [],
    output_claim_to_headers: (r.outputClaimToHeaders ?? []).map((h) => ({ header: h.header.toLowerCase(), claim: h.claim })),
    forward_original_token: r.forwardOriginalToken ?? false,
  };
  // Inline jwks wins over jwksUri, as in Istio.
  if (r.jwks !== undefined) c.jwks = r.jwks;
  else if ((r.jwksUri ?? r.jwks_uri) !== undefined) c.jwks_uri = (r.jwksUri ?? r.jwks_uri)!;
  if (r.outputPayloadToHeader !== undefined) c.output_payload_to_header = r.outputPayloadToHeader.toLowerCase();
  // Istio always splits `permission` and `scope` (the data plane knows those); others as listed.
  const extra = [...new Set(r.spaceDelimitedClaims ?? [])].filter((n) => n !== 'permission' && n !== 'scope').sort();
  if (extra.length > 0) c.space_delimited_claims = extra;
  return c;
}

/** Istio: a service account without a namespace is in the policy's own namespace. */
const qualifySa = (policyNs: string) => (sa: string): string => (sa.includes('/') ? sa : `${policyNs}/${sa}`);

function rule(r: NonNullable<AuthorizationPolicySpec['rules']>[number], policyNs: string): AuthzRuleConfig {
  const q = qualifySa(policyNs);
  return {
    from: (r.from ?? []).map((f) => {
      const s: Record<string, string[]> = { ...(f.source ?? {}) };
      for (const k of ['serviceAccounts', 'notServiceAccounts']) if (s[k]) s[k] = s[k].map(q);
      return s;
    }),
    to: (r.to ?? []).map((t) => ({ ...(t.operation ?? {}) })),
    when: (r.when ?? []).map((w) => {
      const sa = w.key === 'source.serviceAccount';
      return { key: w.key, values: sa ? (w.values ?? []).map(q) : (w.values ?? []), not_values: sa ? (w.notValues ?? []).map(q) : (w.notValues ?? []) };
    }),
  };
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const strList = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

/**
 * The mesh config's `extensionProviders` entry named `name`, as an ExtAuthzConfig; a string saying
 * why when there is none or it cannot be used (only `envoyExtAuthzHttp` is supported).
 */
export function extAuthzProvider(providers: readonly unknown[], name: string): ExtAuthzConfig | string {
  const entry = providers.find((p) => isObj(p) && p.name === name);
  if (!isObj(entry)) return `extension provider "${name}" is not defined in the mesh config's extensionProviders`;
  const h = entry.envoyExtAuthzHttp;
  if (!isObj(h)) {
    const kind = Object.keys(entry).find((k) => k !== 'name') ?? 'none';
    return `extension provider "${name}" is ${kind}; Gatehouse supports envoyExtAuthzHttp only`;
  }
  if (typeof h.service !== 'string' || !h.service) return `extension provider "${name}": envoyExtAuthzHttp.service is required`;
  const port = Number(h.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `extension provider "${name}": envoyExtAuthzHttp.port must be a port number`;
  let timeout = DEFAULT_EXT_AUTHZ_TIMEOUT_MS;
  if (h.timeout !== undefined) {
    const t = typeof h.timeout === 'string' ? parseDurationMs(h.timeout) : undefined;
    if (t === undefined) return `extension provider "${name}": invalid timeout ${JSON.stringify(h.timeout)}`;
    timeout = t;
  }
  const statusOnError = h.statusOnError === undefined ? DEFAULT_STATUS_ON_ERROR : Number(h.statusOnError);
  if (!Number.isInteger(statusOnError) || statusOnError < 100 || statusOnError > 599) return `extension provider "${name}": statusOnError must be an HTTP status`;
  const additional: Record<string, string> = {};
  if (isObj(h.includeAdditionalHeadersInCheck)) for (const [k, v] of Object.entries(h.includeAdditionalHeadersInCheck)) if (typeof v === 'string') additional[k.toLowerCase()] = v;
  const lower = (v: unknown): string[] => strList(v).map((s) => s.toLowerCase());
  // `namespace/host` names the service in a namespace; the host part is what is dialled.
  const service = h.service.includes('/') ? h.service.slice(h.service.indexOf('/') + 1) : h.service;
  return {
    name,
    service,
    port,
    path_prefix: typeof h.pathPrefix === 'string' ? h.pathPrefix : '',
    timeout_ms: timeout,
    fail_open: h.failOpen === true,
    status_on_error: statusOnError,
    include_request_headers_in_check: lower(h.includeRequestHeadersInCheck ?? h.includeHeadersInCheck),
    include_additional_headers_in_check: additional,
    headers_to_upstream_on_allow: lower(h.headersToUpstreamOnAllow),
    headers_to_downstream_on_deny: lower(h.headersToDownstreamOnDeny),
    headers_to_downstream_on_allow: lower(h.headersToDownstreamOnAllow),
  };
}

/**
 * Gatehouse annotation on a Gateway: `gatehouse.io/proxy-protocol: "true"` makes its HTTP ports
 * expect the PROXY protocol (v1 text or v2 binary) before each connection's first byte, as an
 * Istio gateway does with the `envoy.filters.listener.proxy_protocol` listener filter (added there
 * by an EnvoyFilter or the `proxy.istio.io/config` gatewayTopology.proxyProtocol setting). The
 * PROXY source address then is the client's address (`source.ip`, X-Forwarded-For, remote.ip).
 */
export const PROXY_PROTOCOL_ANNOTATION = 'gatehouse.io/proxy-protocol';
