// AuthorizationPolicy evaluation: a SecurityConfig's policies compiled once per config version
// into matchers (CIDRs parsed, strings classified as exact / prefix / suffix / presence, claim
// paths split), then evaluated per request in Istio's order: CUSTOM, DENY, ALLOW; AUDIT never
// decides. Pure: no I/O here (the CUSTOM check itself is ext-authz.ts).
import { isIP } from 'node:net';
import type { AuthzPolicyConfig, AuthzRuleConfig, ExtAuthzConfig, SecurityConfig } from '../controlplane/snapshot.js';
import type { RequestAuth, SecurityRequest } from './types.js';

// ---- IP / CIDR --------------------------------------------------------------------------------

/** An IPv4 or IPv6 CIDR as 16 bytes (IPv4 mapped into ::ffff:0:0/96) and a prefix length. */
export class Cidr {
  readonly #bytes: Uint8Array;
  readonly #bits: number;
  constructor(bytes: Uint8Array, bits: number) {
    this.#bytes = bytes;
    this.#bits = bits;
  }
  /** `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128). Throws on anything else. */
  static parse(text: string): Cidr {
    const slash = text.indexOf('/');
    const ip = slash < 0 ? text : text.slice(0, slash);
    const bytes = ipBytes(ip);
    if (bytes === null) throw new Error(`invalid address "${text}"`);
    const v4 = isIP(ip) === 4;
    let bits = v4 ? 32 : 128;
    if (slash >= 0) {
      const b = text.slice(slash + 1);
      if (!/^\d{1,3}$/.test(b) || Number(b) > bits) throw new Error(`invalid prefix length in "${text}"`);
      bits = Number(b);
    }
    return new Cidr(bytes, v4 ? bits + 96 : bits);
  }
  /** Whether the address (16 bytes from ipBytes) lies in this block. */
  contains(addr: Uint8Array | null): boolean {
    if (addr === null) return false;
    const bits = this.#bits;
    const full = bits >> 3;
    const a = this.#bytes;
    for (let i = 0; i < full; i++) if (a[i] !== addr[i]) return false;
    const rest = bits & 7;
    if (rest === 0) return true;
    const mask = (0xff << (8 - rest)) & 0xff;
    return (a[full]! & mask) === (addr[full]! & mask);
  }
}

/** Request addresses already parsed (read-only): most requests come from a few addresses. */
const peers = new Map<string, Uint8Array | null>();
const PEERS_MAX = 4096;

/** ipBytes for the addresses of requests, through a bounded cache (the result is shared: read it only). */
export function peerBytes(text: string): Uint8Array | null {
  let b = peers.get(text);
  if (b === undefined) {
    if (peers.size >= PEERS_MAX) peers.clear();
    b = ipBytes(text);
    peers.set(text, b);
  }
  return b;
}

/** An IPv4 / IPv6 address as 16 bytes (IPv4 as ::ffff:a.b.c.d); null when it is not an address. */
export function ipBytes(text: string): Uint8Array | null {
  let s = text;
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  const v = isIP(s);
  if (v === 0) return null;
  const out = new Uint8Array(16);
  if (v === 4) {
    out[10] = 0xff;
    out[11] = 0xff;
    const parts = s.split('.');
    for (let i = 0; i < 4; i++) out[12 + i] = Number(parts[i]);
    return out;
  }
  // IPv6, possibly with an embedded IPv4 tail and one `::`.
  let head = s;
  let tail4: number[] | null = null;
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) > 0) {
    tail4 = s.slice(lastColon + 1).split('.').map(Number);
    head = s.slice(0, lastColon + 1) + '0:0';
  }
  const dbl = head.indexOf('::');
  const left = dbl >= 0 ? head.slice(0, dbl) : head;
  const right = dbl >= 0 ? head.slice(dbl + 2) : '';
  const l = left ? left.split(':') : [];
  const r = right ? right.split(':') : [];
  const groups = [...l, ...new Array<string>(8 - l.length - r.length).fill('0'), ...r];
  for (let i = 0; i < 8; i++) {
    const g = parseInt(groups[i]!, 16);
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  }
  if (tail4) for (let i = 0; i < 4; i++) out[12 + i] = tail4[i]!;
  return out;
}

// ---- String matchers ----------------------------------------------------------------------------

const enum Kind {
  Exact,
  Prefix,
  Suffix,
  Presence,
  Template,
}

/** Istio's string match: `abc` exact, `abc*` prefix, `*abc` suffix, `*` any non-empty value. */
export interface StringMatch {
  readonly kind: Kind;
  readonly text: string;
  readonly re: RegExp | null;
}

export function stringMatch(pattern: string, opts: { lower?: boolean; templates?: boolean } = {}): StringMatch {
  const p = opts.lower ? pattern.toLowerCase() : pattern;
  if (p === '*') return { kind: Kind.Presence, text: '', re: null };
  if (opts.templates && (p.includes('{*}') || p.includes('{**}'))) {
    // Path templates: `{*}` one segment, `{**}` one or more (Istio 1.22+).
    const re = p
      .split('/')
      .map((seg) => (seg === '{*}' ? '[^/]+' : seg === '{**}' ? '.+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
      .join('/');
    return { kind: Kind.Template, text: p, re: new RegExp(`^${re}$`) };
  }
  if (p.endsWith('*')) return { kind: Kind.Prefix, text: p.slice(0, -1), re: null };
  if (p.startsWith('*')) return { kind: Kind.Suffix, text: p.slice(1), re: null };
  return { kind: Kind.Exact, text: p, re: null };
}

export function matchString(m: StringMatch, v: string): boolean {
  switch (m.kind) {
    case Kind.Exact:
      return v === m.text;
    case Kind.Prefix:
      return v.startsWith(m.text);
    case Kind.Suffix:
      return v.endsWith(m.text);
    case Kind.Presence:
      return v.length > 0;
    case Kind.Template:
      return m.re!.test(v);
  }
}

function anyString(ms: readonly StringMatch[], v: string): boolean {
  for (let i = 0; i < ms.length; i++) if (matchString(ms[i]!, v)) return true;
  return false;
}

function anyCidr(cs: readonly Cidr[], addr: Uint8Array | null): boolean {
  for (let i = 0; i < cs.length; i++) if (cs[i]!.contains(addr)) return true;
  return false;
}

/** Hosts match the authority case-insensitively, with or without its port (Istio's host matcher). */
function matchHost(ms: readonly StringMatch[], authority: string): boolean {
  const a = authority.toLowerCase();
  if (anyString(ms, a)) return true;
  const colon = a.lastIndexOf(':');
  if (colon > 0 && a.indexOf(']', colon) < 0 && /^\d+$/.test(a.slice(colon + 1))) return anyString(ms, a.slice(0, colon));
  return false;
}

// ---- The per-request view ----------------------------------------------------------------------

/** What the matchers read, derived lazily from a SecurityRequest (addresses parsed once). */
class View {
  readonly req: SecurityRequest;
  readonly auth: RequestAuth | null;
  #src: Uint8Array | null | undefined;
  #remote: Uint8Array | null | undefined;
  #dst: Uint8Array | null | undefined;
  constructor(req: SecurityRequest, auth: RequestAuth | null) {
    this.req = req;
    this.auth = auth;
  }
  get sourceIp(): Uint8Array | null {
    if (this.#src === undefined) this.#src = peerBytes(this.req.sourceIp);
    return this.#src;
  }
  get remoteIp(): Uint8Array | null {
    if (this.#remote === undefined) this.#remote = peerBytes(this.req.remoteIp);
    return this.#remote;
  }
  get destinationIp(): Uint8Array | null {
    if (this.#dst === undefined) this.#dst = peerBytes(this.req.destinationIp);
    return this.#dst;
  }
  header(name: string): string | undefined {
    const h = this.req.headers;
    let out: string | undefined;
    for (let i = 0; i < h.length; i += 2) if (h[i] === name) out = out === undefined ? h[i + 1]! : `${out},${h[i + 1]!}`;
    return out;
  }
}

// ---- Compiled rules ------------------------------------------------------------------------------

type Test = (v: View) => boolean;

/** A field with values and its not* twin: values (if any) must match, not-values must not. */
function field<T>(values: T[] | undefined, notValues: T[] | undefined, test: (v: View, ms: T[]) => boolean, out: Test[]): void {
  if (values && values.length > 0) out.push((v) => test(v, values));
  if (notValues && notValues.length > 0) out.push((v) => !test(v, notValues));
}

const strs = (xs: string[] | undefined, opts?: { lower?: boolean; templates?: boolean }): StringMatch[] | undefined => xs?.map((x) => stringMatch(x, opts));
const cidrs = (xs: string[] | undefined): Cidr[] | undefined => xs?.map((x) => Cidr.parse(x));

function all(tests: Test[]): Test {
  if (tests.length === 0) return () => true;
  if (tests.length === 1) return tests[0]!;
  return (v) => {
    for (let i = 0; i < tests.length; i++) if (!tests[i]!(v)) return false;
    return true;
  };
}

function any(tests: Test[]): Test {
  if (tests.length === 1) return tests[0]!;
  return (v) => {
    for (let i = 0; i < tests.length; i++) if (tests[i]!(v)) return true;
    return false;
  };
}

function compileSource(s: Record<string, string[]>): Test {
  const t: Test[] = [];
  field(strs(s.principals), strs(s.notPrincipals), (v, ms) => anyString(ms, v.req.sourcePrincipal), t);
  field(strs(s.requestPrincipals), strs(s.notRequestPrincipals), (v, ms) => v.auth !== null && anyString(ms, v.auth.principal), t);
  field(strs(s.namespaces), strs(s.notNamespaces), (v, ms) => anyString(ms, v.req.sourceNamespace), t);
  field(cidrs(s.ipBlocks), cidrs(s.notIpBlocks), (v, cs) => anyCidr(cs, v.sourceIp), t);
  field(cidrs(s.remoteIpBlocks), cidrs(s.notRemoteIpBlocks), (v, cs) => anyCidr(cs, v.remoteIp), t);
  field(serviceAccounts(s.serviceAccounts), serviceAccounts(s.notServiceAccounts), (v, rs) => anyRegex(rs, v.req.sourcePrincipal), t);
  field(trustDomains(s.trustDomains), trustDomains(s.notTrustDomains), (v, rs) => anyRegex(rs, v.req.sourcePrincipal), t);
  return all(t);
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Istio's serviceAccounts / source.serviceAccount (`namespace/name`): the mTLS identity of that
 * service account in any trust domain, `<td>/ns/<namespace>/[...]/sa/<name>[/...]` (Istio's regex
 * over `spiffe://` identities; principals here carry no `spiffe://`).
 */
function serviceAccountRegex(value: string): RegExp {
  const i = value.indexOf('/');
  const ns = i < 0 ? '[^/]+' : escapeRe(value.slice(0, i));
  const sa = escapeRe(i < 0 ? value : value.slice(i + 1));
  return new RegExp(`^.+/ns/${ns}/(.+/|)sa/${sa}(/.+)?$`);
}

/** Istio's trustDomains / source.trustDomain: `*` any mTLS identity, `td` exact, `*.td` / `td*` one wildcard. */
function trustDomainRegex(value: string): RegExp {
  if (value === '*') return /^./;
  const star = value.indexOf('*');
  const td = star < 0 ? escapeRe(value) : `${escapeRe(value.slice(0, star))}[^/]*${escapeRe(value.slice(star + 1))}`;
  return new RegExp(`^${td}/`);
}

const serviceAccounts = (xs: string[] | undefined): RegExp[] | undefined => xs?.map(serviceAccountRegex);
const trustDomains = (xs: string[] | undefined): RegExp[] | undefined => xs?.map(trustDomainRegex);

function anyRegex(rs: readonly RegExp[], v: string): boolean {
  for (let i = 0; i < rs.length; i++) if (rs[i]!.test(v)) return true;
  return false;
}

function compileOperation(o: Record<string, string[]>): Test {
  const t: Test[] = [];
  field(strs(o.hosts, { lower: true }), strs(o.notHosts, { lower: true }), (v, ms) => matchHost(ms, v.req.authority), t);
  const ports = (xs: string[] | undefined): number[] | undefined => xs?.map(Number);
  field(ports(o.ports), ports(o.notPorts), (v, ps) => ps.includes(v.req.localPort), t);
  field(strs(o.methods), strs(o.notMethods), (v, ms) => anyString(ms, v.req.method), t);
  field(strs(o.paths, { templates: true }), strs(o.notPaths, { templates: true }), (v, ms) => anyString(ms, v.req.path), t);
  return all(t);
}

/** `[a][b]` (after `request.auth.claims`) as ['a', 'b']. */
export function claimPath(rest: string): string[] {
  const out: string[] = [];
  const re = /\[([^\]]*)\]/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(rest)) !== null) out.push(m[1]!);
  return out;
}

function claimValues(claims: Record<string, unknown>, path: readonly string[]): string[] {
  let cur: unknown = claims;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return [];
    cur = (cur as Record<string, unknown>)[p];
  }
  if (typeof cur === 'string') return [cur];
  if (Array.isArray(cur)) return cur.filter((x): x is string => typeof x === 'string');
  return [];
}

/** A `when` key's reader: the request's value(s) for it, and how values are compared. */
function conditionTest(key: string, values: string[]): Test {
  const ms = strs(values)!;
  const one = (get: (v: View) => string | undefined): Test => (v) => {
    const x = get(v);
    return x !== undefined && anyString(ms, x);
  };
  if (key.startsWith('request.headers[') && key.endsWith(']')) {
    const name = key.slice('request.headers['.length, -1).toLowerCase();
    return one((v) => v.header(name));
  }
  if (key.startsWith('request.auth.claims[')) {
    const path = claimPath(key.slice('request.auth.claims'.length));
    return (v) => {
      if (v.auth === null) return false;
      for (const c of claimValues(v.auth.claims, path)) if (anyString(ms, c)) return true;
      return false;
    };
  }
  switch (key) {
    case 'source.ip':
    case 'remote.ip':
    case 'destination.ip': {
      const cs = values.map((x) => Cidr.parse(x));
      if (key === 'source.ip') return (v) => anyCidr(cs, v.sourceIp);
      if (key === 'remote.ip') return (v) => anyCidr(cs, v.remoteIp);
      return (v) => anyCidr(cs, v.destinationIp);
    }
    case 'source.namespace':
      return one((v) => v.req.sourceNamespace);
    case 'source.principal':
      return one((v) => v.req.sourcePrincipal);
    case 'source.serviceAccount': {
      const rs = values.map(serviceAccountRegex);
      return (v) => anyRegex(rs, v.req.sourcePrincipal);
    }
    case 'source.trustDomain': {
      const rs = values.map(trustDomainRegex);
      return (v) => anyRegex(rs, v.req.sourcePrincipal);
    }
    case 'request.auth.principal':
      return one((v) => v.auth?.principal);
    case 'request.auth.presenter':
      return one((v) => v.auth?.presenter);
    case 'request.auth.audiences':
      return (v) => v.auth !== null && v.auth.audiences.some((a) => anyString(ms, a));
    case 'destination.port': {
      const ports = values.map(Number);
      return (v) => ports.includes(v.req.localPort);
    }
    case 'connection.sni':
      return one((v) => v.req.sni);
    default:
      // Validation refuses other keys; a replica given one by an older control plane matches nothing.
      return () => false;
  }
}

function compileRule(r: AuthzRuleConfig): Test {
  const t: Test[] = [];
  if (r.from.length > 0) t.push(any(r.from.map(compileSource)));
  if (r.to.length > 0) t.push(any(r.to.map(compileOperation)));
  for (const c of r.when) {
    if (c.values.length > 0) t.push(conditionTest(c.key, c.values));
    if (c.not_values.length > 0) {
      const n = conditionTest(c.key, c.not_values);
      t.push((v) => !n(v));
    }
  }
  return all(t);
}

export interface CompiledPolicy {
  /** `namespace/name` */
  readonly name: string;
  readonly matches: Test;
  /** CUSTOM: the provider (undefined: missing or invalid, which denies every request, as Istio). */
  readonly provider?: ExtAuthzConfig;
}

function compilePolicy(p: AuthzPolicyConfig): CompiledPolicy {
  // No rules: matches nothing (`spec: {}` is then a deny-all ALLOW policy). `rules: [{}]`: matches all.
  const rules = p.rules.map(compileRule);
  const matches: Test = rules.length === 0 ? () => false : any(rules);
  return { name: p.policy, matches, ...(p.provider ? { provider: p.provider } : {}) };
}

export type AuthzDecision =
  | { readonly kind: 'allow' }
  | { readonly kind: 'deny'; readonly policy: string }
  /** A CUSTOM policy matched: ask its provider, then evaluate again with `customDone`. */
  | { readonly kind: 'custom'; readonly policy: string; readonly provider: ExtAuthzConfig };

export const ALLOW_DECISION: AuthzDecision = Object.freeze({ kind: 'allow' });

/** A SecurityConfig's AuthorizationPolicies, compiled. */
export class CompiledAuthz {
  readonly custom: readonly CompiledPolicy[];
  readonly deny: readonly CompiledPolicy[];
  readonly allow: readonly CompiledPolicy[];
  readonly audit: readonly CompiledPolicy[];
  /** True when some policy applies at all (else every request is allowed without looking). */
  readonly active: boolean;
  /** AUDIT matches, by policy (cheap counter; the data plane may export it). */
  readonly auditCounts = new Map<string, number>();
  onAudit: ((policy: string, req: SecurityRequest) => void) | null = null;

  constructor(config: Pick<SecurityConfig, 'custom' | 'deny' | 'allow' | 'audit'>) {
    this.custom = config.custom.map(compilePolicy);
    this.deny = config.deny.map(compilePolicy);
    this.allow = config.allow.map(compilePolicy);
    this.audit = config.audit.map(compilePolicy);
    this.active = this.custom.length + this.deny.length + this.allow.length + this.audit.length > 0;
  }

  /** Istio's order: CUSTOM (unless `customDone`), DENY, then ALLOW (none: allow); AUDIT is only logged. */
  evaluate(req: SecurityRequest, auth: RequestAuth | null, customDone = false): AuthzDecision {
    if (!this.active) return ALLOW_DECISION;
    const v = new View(req, auth);
    if (!customDone) {
      // A CUSTOM policy without a usable provider denies everything, matching or not (Istio
      // generates its "deny-due-to-bad-CUSTOM-action" deny-all policy, failing closed).
      for (const p of this.custom) if (!p.provider) return { kind: 'deny', policy: p.name };
      for (const p of this.custom) if (p.matches(v)) return { kind: 'custom', policy: p.name, provider: p.provider! };
    }
    for (const p of this.audit) {
      if (!p.matches(v)) continue;
      this.auditCounts.set(p.name, (this.auditCounts.get(p.name) ?? 0) + 1);
      this.onAudit?.(p.name, req);
    }
    for (const p of this.deny) if (p.matches(v)) return { kind: 'deny', policy: p.name };
    if (this.allow.length === 0) return ALLOW_DECISION;
    for (const p of this.allow) if (p.matches(v)) return ALLOW_DECISION;
    return { kind: 'deny', policy: '' };
  }
}
