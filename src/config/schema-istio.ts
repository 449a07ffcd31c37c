// Schemas of the Istio and Kubernetes documents Gatehouse reads, written for Gatehouse (field lists
// follow the interfaces in types.ts; semantics follow Istio's own validation). One line per field.
// Rules that need only the object they sit on live here; rules that need other resources live in
// validate-refs.ts.
import { isIP } from 'node:net';
import { celProblem } from './cel.js';
import { isValidHostPattern } from './hosts.js';
import { claimKeyProblem, routingClaim } from './jwt-claims.js';
import {
  any, asArr, asObj, asStr, atMostOne, bool, duration, exactlyOne, has, ignored, int, intOneOf, isObj, list, looseObj, map,
  nonEmptyStr, num, obj, oneOf, port, quote, refine, regex, req, setKeys, str, base64,
  type ObjectRule, type Schema,
} from './schema.js';

// ---- enums -------------------------------------------------------------------------------------

/** Every port protocol Istio parses (pkg/config/protocol, case-insensitive). */
export const PROTOCOLS = ['HTTP', 'HTTPS', 'GRPC', 'GRPC-WEB', 'HTTP2', 'HTTP_PROXY', 'MONGO', 'MYSQL', 'REDIS', 'TCP', 'TLS', 'UDP'] as const;
const SERVER_TLS_MODES = ['PASSTHROUGH', 'SIMPLE', 'MUTUAL', 'AUTO_PASSTHROUGH', 'ISTIO_MUTUAL', 'OPTIONAL_MUTUAL'];
const TLS_VERSIONS = ['TLS_AUTO', 'TLSV1_0', 'TLSV1_1', 'TLSV1_2', 'TLSV1_3'];
const LB_SIMPLE = ['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM', 'PASSTHROUGH', 'LEAST_CONN', 'UNSPECIFIED'];
/** Service (ServiceEntry, Sidecar) port protocols: Istio's, or unset/"" (Istio sniffs the protocol). */
const servicePortProtocol = (): Schema => {
  const named = oneOf(PROTOCOLS, true);
  return { shape: named.shape, check: (v, path, out) => (v === '' ? undefined : named.check(v, path, out)) };
};
const GRPC_CODES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE',
  'DATA_LOSS', 'UNAUTHENTICATED',
];
const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
const RETRY_ON = new Set([
  '5xx', 'gateway-error', 'reset', 'reset-before-request', 'connect-failure', 'envoy-ratelimited', 'retriable-4xx',
  'refused-stream', 'retriable-status-codes', 'retriable-headers', 'http3-post-connect-failure',
  'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
]);
const WHEN_KEYS = new Set([
  'source.ip', 'remote.ip', 'source.namespace', 'source.principal', 'source.serviceAccount', 'source.trustDomain',
  'request.auth.principal', 'request.auth.audiences', 'request.auth.presenter', 'destination.ip', 'destination.port', 'connection.sni',
]);
/** `request.headers[<name>]` and `request.auth.claims[<claim>]` (nested: `[a][b]`). */
const WHEN_HEADER_KEY = /^request\.headers\[[^\[\]]+\]$/;
const WHEN_CLAIM_KEY = /^request\.auth\.claims(\[[^\[\]]+\])+$/;
/** `when` keys whose values are IP addresses or CIDRs, and the one whose values are ports. */
const WHEN_IP_KEYS = new Set(['source.ip', 'remote.ip', 'destination.ip']);

/**
 * Protocols whose servers share one plaintext HTTP listener, a TLS (SNI) listener, or a raw TCP
 * one, as Istio's gateway builds them: HTTP-based protocols (HTTP, HTTP2, GRPC, GRPC-WEB,
 * HTTP_PROXY) get HTTP routes, HTTPS and TLS an SNI listener, every other one (TCP, MONGO, MYSQL,
 * REDIS, UDP) TCP routes.
 */
export function listenerClass(protocol: string): 'http' | 'tls' | 'tcp' {
  const p = protocol.toUpperCase();
  if (p === 'HTTPS' || p === 'TLS') return 'tls';
  if (p === 'HTTP' || p === 'HTTP2' || p === 'GRPC' || p === 'GRPC-WEB' || p === 'HTTP_PROXY') return 'http';
  return 'tcp';
}

// ---- string checks -------------------------------------------------------------------------------

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const isDnsLabel = (s: string): boolean => s.length <= 63 && DNS_LABEL.test(s);
const HEADER_NAME = /^:?[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$/;

const dnsLabel = (what: string) => (s: string): string | undefined =>
  isDnsLabel(s) ? undefined : `invalid ${what} ${quote(s)}: must be a lowercase RFC 1123 label`;

function hostProblem(h: string, opts: { star?: boolean } = {}): string | undefined {
  if (h === '*' && !opts.star) return `host "*" is not allowed here: name a service or a domain`;
  if (!isValidHostPattern(h)) return `invalid host ${quote(h)}: must be a DNS name, optionally with a leading "*." wildcard`;
  return undefined;
}

/** Gateway server hosts and Sidecar egress hosts: `[namespace/]dnsName`. */
function nsHostProblem(h: string, opts: { nsRequired: boolean; allowNone: boolean }): string | undefined {
  const i = h.indexOf('/');
  if (i < 0 && opts.nsRequired) return `invalid host ${quote(h)}: must be namespace/dnsName, e.g. "*/example.com" or "./*"`;
  const ns = i < 0 ? '*' : h.slice(0, i);
  const name = i < 0 ? h : h.slice(i + 1);
  if (!(ns === '*' || ns === '.' || (ns === '~' && opts.allowNone) || isDnsLabel(ns))) {
    return `invalid namespace ${quote(ns)} in host ${quote(h)}: must be "*", "."${opts.allowNone ? ', "~"' : ''} or a namespace name`;
  }
  if (!isValidHostPattern(name)) {
    return `invalid host ${quote(h)}: must be [namespace/]dnsName, e.g. "example.com", "*.example.com" or "prod/*"`;
  }
  return undefined;
}

function isCidr(s: string): boolean {
  const i = s.indexOf('/');
  if (i < 0) return isIP(s) !== 0;
  const ip = s.slice(0, i);
  const bits = s.slice(i + 1);
  const v = isIP(ip);
  if (v === 0 || !/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (v === 4 ? 32 : 128);
}
const ipOrCidr = (s: string): string | undefined => (isCidr(s) ? undefined : `invalid address ${quote(s)}: must be an IP address or CIDR`);

function headerNameProblem(s: string): string | undefined {
  return HEADER_NAME.test(s) ? undefined : `invalid header name ${quote(s)}`;
}
/** Control characters in a value that ends up in a header (HTAB allowed): CR/LF would inject lines. */
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/;
function headerValueProblem(s: string): string | undefined {
  if (!CONTROL.test(s)) return undefined;
  const what = /[\r\n]/.test(s) ? 'CR or LF' : s.includes('\u0000') ? 'NUL' : 'a control character';
  return `must not contain ${what}: it would end the header line and inject protocol (${quote(s)})`;
}
/** A string written into a header (values, redirect parts, CORS lists). */
const headerValue = () => str(headerValueProblem);
/** Header names in a match: Istio requires lowercase (Envoy sees lowercase names). */
function matchHeaderNameProblem(s: string): string | undefined {
  if (s !== s.toLowerCase()) return `header name ${quote(s)} must be lowercase`;
  return headerNameProblem(s);
}
/** A `headers`/`withoutHeaders` key: a header name, or a JWT claim (`@request.auth.claims.<claim>`, case kept). */
function matchHeaderKeyProblem(s: string): string | undefined {
  if (routingClaim(s) !== null || s.startsWith('@')) return claimKeyProblem(s);
  return matchHeaderNameProblem(s);
}

function gatewayRefProblem(s: string): string | undefined {
  if (s === 'mesh') return undefined;
  const parts = s.split('/');
  if (parts.length > 2) return `invalid gateway ${quote(s)}: must be "mesh", "name" or "namespace/name"`;
  const [ns, name] = parts.length === 2 ? [parts[0]!, parts[1]!] : ['.', parts[0]!];
  if (!(ns === '.' || isDnsLabel(ns)) || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name)) {
    return `invalid gateway ${quote(s)}: must be "mesh", "name" or "namespace/name"`;
  }
  return undefined;
}

function retryOnProblem(s: string): string | undefined {
  for (const raw of s.split(',')) {
    const p = raw.trim();
    if (RETRY_ON.has(p)) continue;
    if (/^\d+$/.test(p) && Number(p) >= 100 && Number(p) <= 599) continue;
    return `invalid retryOn policy ${quote(p)}: use Envoy retry conditions such as 5xx, gateway-error, connect-failure, refused-stream, or status codes`;
  }
  return undefined;
}

function whenKeyProblem(k: string): string | undefined {
  if (WHEN_KEYS.has(k) || WHEN_HEADER_KEY.test(k) || WHEN_CLAIM_KEY.test(k) || k.startsWith('experimental.')) return undefined;
  return `unknown condition key ${quote(k)}: use e.g. request.headers[<name>], source.ip, remote.ip, source.namespace, request.auth.claims[<claim>]`;
}

/** A `when` condition's values, checked by key: addresses for *.ip, port numbers for destination.port. */
function whenValueProblem(key: unknown, v: string): string | undefined {
  if (typeof key !== 'string') return undefined;
  if (WHEN_IP_KEYS.has(key)) return ipOrCidr(v);
  if (key === 'destination.port' && !(/^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 65535)) return `invalid port ${quote(v)}: must be a port number`;
  if (key === 'source.serviceAccount') return serviceAccountProblem(v);
  if (key === 'source.trustDomain') return trustDomainProblem(v);
  return undefined;
}

/** Istio's CheckServiceAccount: `sa` or `namespace/sa`, no wildcards. */
function serviceAccountProblem(v: string): string | undefined {
  const parts = v.split('/');
  if (v.includes('*')) return `invalid service account ${quote(v)}: wildcards are not allowed`;
  if (parts.length > 2 || parts.some((x) => x === '') || v.length > 320) return `invalid service account ${quote(v)}: must be "serviceAccount" or "namespace/serviceAccount"`;
  return undefined;
}

/** Istio's CheckTrustDomainValues: no "/", one "*" at most, at the start or the end. */
function trustDomainProblem(v: string): string | undefined {
  if (v === '') return 'must not be empty';
  if (v.includes('/')) return `invalid trust domain ${quote(v)}: must not contain "/"`;
  return wildcardProblem(v);
}
function wildcardProblem(v: string): string | undefined {
  const stars = v.split('*').length - 1;
  if (stars > 1 || (stars === 1 && v !== '*' && !v.startsWith('*') && !v.endsWith('*'))) return `invalid value ${quote(v)}: "*" may only be used once, at the start or the end`;
  return undefined;
}

function urlProblem(s: string): string | undefined {
  try {
    const u = new URL(s);
    if (u.protocol === 'http:' || u.protocol === 'https:') return undefined;
  } catch {
    // fall through
  }
  return `invalid URL ${quote(s)}: must be an http:// or https:// URL`;
}

function jsonProblem(s: string): string | undefined {
  try {
    JSON.parse(s);
    return undefined;
  } catch {
    return 'must be a JSON Web Key Set (JSON)';
  }
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}

function portKeyProblem(k: string): string | undefined {
  return /^\d+$/.test(k) && Number(k) >= 1 && Number(k) <= 65535 ? undefined : `invalid port ${quote(k)}: keys must be port numbers 1-65535`;
}

/** A Kubernetes ConfigMap/Secret key. */
function configKeyProblem(k: string): string | undefined {
  return /^[-._a-zA-Z0-9]+$/.test(k) && k.length <= 253 ? undefined : `invalid key ${quote(k)}: use letters, digits, "-", "_" and "."`;
}

// ---- common pieces -----------------------------------------------------------------------------

const labels = map(str());
const exportTo = refine(
  list(str((e) => (e === '.' || e === '*' || e === '~' || isDnsLabel(e) ? undefined : `invalid exportTo ${quote(e)}: must be ".", "*", "~" or a namespace name`)), { unique: true }),
  (v, path, out) => {
    const a = asArr(v);
    for (const special of ['*', '~']) {
      if (a.length > 1 && a.includes(special)) out.error([...path, a.indexOf(special)], `${quote(special)} cannot be combined with other exportTo values`);
    }
  },
);
const presenceMatch = obj({ exact: str(), prefix: str(), regex: regex() }, atMostOne('exact', 'prefix', 'regex'));
const stringMatch = obj({ exact: str(), prefix: str(), regex: regex() }, exactlyOne('exact', 'prefix', 'regex'));
const headerMatches = map(presenceMatch, matchHeaderKeyProblem);
const percent = obj({ value: num(0, 100) });
const portSelector = obj({ number: port() });
const destination = obj({ host: req(str((h) => hostProblem(h))), subset: str(dnsLabel('subset name')), port: portSelector });
const headerOps = obj({ set: map(headerValue(), headerNameProblem), add: map(headerValue(), headerNameProblem), remove: list(str(headerNameProblem)) });
const headers = obj({ request: headerOps, response: headerOps });
const selector = obj({ matchLabels: labels });
const targetRef = obj({ group: str(), kind: req(nonEmptyStr()), name: req(nonEmptyStr()), namespace: str() });
const gatewayRefs = list(str(gatewayRefProblem));
/** Addresses or CIDRs; an unquoted IPv6 address ending in ':' reads as a mapping in YAML 1.2: say so. */
const cidrs = list({
  shape: { type: 'string' },
  check: (v, path, out) => {
    if (isObj(v) && Object.keys(v).length === 1 && Object.values(v)[0] === null && Object.keys(v)[0]!.includes(':')) {
      return out.error(path, `must be a string: YAML reads the unquoted ${quote(`${Object.keys(v)[0]!}:`)} as a mapping; quote IPv6 addresses`);
    }
    str(ipOrCidr).check(v, path, out);
  },
});

/** A route weight: relative to the other destinations' (Istio: weight / sum of weights), int32. */
const weight = int(0, 2147483647);

/**
 * Weights are relative, as in Istio since 1.15 (istio/istio#39544): a destination gets
 * weight/(sum of weights). Only a total of 0 over more than one destination is invalid
 * (Istio: "total destination weight = 0"); a single destination gets everything.
 */
function weightsNotAllZero(key: string): ObjectRule {
  return (o, path, out) => {
    const routes = asArr(o[key]);
    if (routes.length < 2) return;
    let sum = 0;
    for (const r of routes) {
      const w = asObj(r).weight;
      if (w === undefined || w === null) continue;
      if (typeof w !== 'number' || !Number.isInteger(w)) return; // already reported
      sum += w;
    }
    if (sum === 0) out.error([...path, key], 'total destination weight is 0: give at least one destination a weight above 0 (weights are relative)');
  };
}

// ---- VirtualService ------------------------------------------------------------------------------

const httpMatch = obj({
  name: str(),
  uri: stringMatch,
  scheme: stringMatch,
  method: stringMatch,
  authority: stringMatch,
  headers: headerMatches,
  withoutHeaders: headerMatches,
  queryParams: map(presenceMatch),
  ignoreUriCase: bool(),
  port: port(),
  gateways: gatewayRefs,
  sourceLabels: labels,
  sourceNamespace: str(),
  statPrefix: str(),
});

const redirect = obj(
  {
    uri: headerValue(),
    authority: headerValue(),
    port: port(),
    derivePort: oneOf(['FROM_PROTOCOL_DEFAULT', 'FROM_REQUEST_PORT']),
    scheme: headerValue(),
    redirectCode: intOneOf([301, 302, 303, 307, 308]),
    prefixRewrite: ignored(str(), 'redirect prefixRewrite is not implemented by Gatehouse yet; the redirect keeps the request path'),
  },
  atMostOne('port', 'derivePort'),
  atMostOne('uri', 'prefixRewrite'),
  (o, path, out) => {
    if (!['uri', 'authority', 'port', 'derivePort', 'scheme', 'prefixRewrite'].some((k) => has(o, k))) out.error(path, 'must set at least one of uri, authority, scheme, port, derivePort, prefixRewrite');
  },
);

const directResponse = obj({
  status: req(int(200, 599)),
  body: obj({ string: str(), bytes: base64() }, atMostOne('string', 'bytes')),
});

const rewrite = obj(
  { uri: headerValue(), authority: headerValue(), uriRegexRewrite: obj({ match: req(regex()), rewrite: req(headerValue()) }) },
  atMostOne('uri', 'uriRegexRewrite'),
  (o, path, out) => {
    if (!['uri', 'authority', 'uriRegexRewrite'].some((k) => has(o, k))) out.error(path, 'must set at least one of uri, authority, uriRegexRewrite');
  },
);

const retries = obj({
  attempts: int(0),
  perTryTimeout: duration({ min: 1 }),
  retryOn: str(retryOnProblem),
  retryRemoteLocalities: bool(),
  retryIgnorePreviousHosts: bool(),
  backoff: duration({ min: 1 }),
});

const fault = obj(
  {
    delay: obj(
      {
        fixedDelay: duration({ min: 1 }),
        // Valid in the CRD, refused by Istio's own validation ("exponentialDelay not supported yet").
        exponentialDelay: { shape: { type: 'string' }, check: (_v, path, out) => out.error(path, 'exponentialDelay is not supported (Istio refuses it too); use fixedDelay') },
        percentage: percent,
        percent: int(0, 100),
      },
      // Istio's validation accepts a delay without a delay type (it delays nothing).
      (o, path, out) => void (!has(o, 'fixedDelay') && !has(o, 'exponentialDelay') && out.warn(path, 'a delay without fixedDelay delays nothing (Istio accepts it as well)')),
      atMostOne('fixedDelay', 'exponentialDelay'),
      atMostOne('percentage', 'percent'),
    ),
    abort: obj(
      { httpStatus: int(200, 599), grpcStatus: oneOf(GRPC_CODES), http2Error: str(), percentage: percent },
      exactlyOne('httpStatus', 'grpcStatus', 'http2Error'),
    ),
  },
  (o, path, out) => void (!has(o, 'delay') && !has(o, 'abort') && out.error(path, 'must set delay, abort or both')),
);

const corsPolicy = obj({
  allowOrigins: list(stringMatch),
  allowOrigin: list(headerValue()),
  allowMethods: list(oneOf(HTTP_METHODS)),
  allowHeaders: list(headerValue()),
  exposeHeaders: list(headerValue()),
  maxAge: duration(),
  allowCredentials: bool(),
  unmatchedPreflights: oneOf(['UNSPECIFIED', 'FORWARD', 'IGNORE']),
});

const ROUTE_ACTIONS = ['route', 'redirect', 'directResponse', 'delegate'];
const oneRouteAction: ObjectRule = (o, path, out) => {
  const set = setKeys(o, ROUTE_ACTIONS).filter((k) => !(Array.isArray(o[k]) && o[k].length === 0));
  if (set.length === 0) out.error(path, `must set one of ${ROUTE_ACTIONS.join(', ')}`);
  else if (set.length > 1) out.error([...path, set[1]!], `set only one of ${ROUTE_ACTIONS.join(', ')} (found ${set.join(' and ')})`);
  if (has(o, 'redirect')) {
    for (const k of ['rewrite', 'fault']) if (has(o, k)) out.error([...path, k], `${k} cannot be used with redirect`);
  }
};

const httpRoute = obj(
  {
    name: str(),
    match: list(httpMatch),
    route: list(obj({ destination: req(destination), weight, headers })),
    redirect,
    directResponse,
    delegate: obj({ name: req(nonEmptyStr()), namespace: str() }),
    rewrite,
    timeout: duration(),
    retries,
    fault,
    mirror: destination,
    mirrors: list(obj({ destination: req(destination), percentage: percent })),
    mirrorPercentage: percent,
    mirrorPercent: int(0, 100),
    // The CRD's own name for the deprecated mirrorPercent (its protobuf name); honoured the same.
    mirror_percent: int(0, 100),
    corsPolicy,
    headers,
  },
  oneRouteAction,
  weightsNotAllZero('route'),
  atMostOne('mirror', 'mirrors'),
  atMostOne('mirrorPercentage', 'mirrorPercent', 'mirror_percent'),
);

const l4MatchFields = { destinationSubnets: cidrs, port: port(), sourceLabels: labels, gateways: gatewayRefs, sourceNamespace: str() };
const routeDestinations = list(obj({ destination: req(destination), weight }), { nonEmpty: true });
const tlsRoute = obj(
  {
    match: req(list(obj({ ...l4MatchFields, sniHosts: req(list(str((h) => hostProblem(h, { star: true })), { nonEmpty: true })) }), { nonEmpty: true })),
    route: req(routeDestinations),
  },
  weightsNotAllZero('route'),
);
const tcpRoute = obj(
  {
    match: list(obj({ ...l4MatchFields, sourceSubnet: ignored(str(ipOrCidr), 'sourceSubnet is not supported by Gatehouse; this match condition is ignored') })),
    route: req(routeDestinations),
  },
  weightsNotAllZero('route'),
);

export const bindsMesh = (gateways: unknown): boolean => {
  const g = asArr(gateways);
  return g.length === 0 || g.includes('mesh');
};

const virtualServiceRules: ObjectRule = (o, path, out) => {
  const hosts = asArr(o.hosts);
  const delegate = hosts.length === 0;
  if (delegate) {
    // Istio: a VirtualService without hosts is a delegate; it may only be reached from another one.
    if (asArr(o.gateways).length > 0) out.error([...path, 'hosts'], 'missing required field (only a delegate VirtualService, which has no gateways, may omit it)');
    for (const k of ['tls', 'tcp']) if (asArr(o[k]).length > 0) out.error([...path, k], `a delegate VirtualService (no hosts) cannot have ${k} routes`);
    asArr(o.http).forEach((r, i) => {
      if (has(asObj(r), 'delegate')) out.error([...path, 'http', i, 'delegate'], 'a delegate VirtualService cannot delegate again (one level only)');
    });
  }
  if (!['http', 'tls', 'tcp'].some((k) => asArr(o[k]).length > 0)) out.error(path, 'must have at least one of http, tls, tcp routes');
  const mesh = bindsMesh(o.gateways);
  hosts.forEach((h, i) => {
    if (h === '*' && mesh) out.error([...path, 'hosts', i], 'host "*" is not allowed for a VirtualService bound to the mesh (list its gateways)');
  });
  // sniHosts must be covered by the VirtualService's hosts.
  const hostStrs = hosts.filter((h): h is string => typeof h === 'string').map((h) => h.toLowerCase());
  asArr(o.tls).forEach((t, i) => {
    asArr(asObj(t).match).forEach((m, j) => {
      asArr(asObj(m).sniHosts).forEach((s, k) => {
        if (typeof s !== 'string' || hostStrs.length === 0) return;
        const sni = s.toLowerCase();
        const covered = hostStrs.some((h) => h === sni || h === '*' || (h.startsWith('*.') && (sni.startsWith('*.') ? sni.slice(1).endsWith(h.slice(1)) : sni.endsWith(h.slice(1)))));
        if (!covered) out.error([...path, 'tls', i, 'match', j, 'sniHosts', k], `sni host ${quote(s)} is not covered by the VirtualService hosts`);
      });
    });
  });
  // Istio applies sourceLabels/sourceNamespace only when the VirtualService is bound to the mesh.
  if (!mesh) {
    for (const kind of ['http', 'tls', 'tcp']) {
      asArr(o[kind]).forEach((r, i) => {
        asArr(asObj(r).match).forEach((m, j) => {
          for (const k of ['sourceLabels', 'sourceNamespace']) {
            if (has(asObj(m), k)) out.warn([...path, kind, i, 'match', j, k], `${k} applies to sidecars only (this VirtualService is not bound to mesh); ignored`);
          }
        });
      });
    }
  }
};

export const virtualServiceSpec = obj(
  { hosts: list(str((h) => hostProblem(h, { star: true }))), gateways: gatewayRefs, http: list(httpRoute), tls: list(tlsRoute), tcp: list(tcpRoute), exportTo },
  virtualServiceRules,
);

// ---- Gateway -------------------------------------------------------------------------------------

const serverTlsRules: ObjectRule = (o, path, out) => {
  const mode = asStr(o.mode) ?? 'PASSTHROUGH';
  const at = has(o, 'mode') ? [...path, 'mode'] : path;
  const certFields = ['serverCertificate', 'privateKey', 'caCertificates', 'credentialName', 'credentialNames', 'tlsCertificates'];
  if (mode === 'ISTIO_MUTUAL') {
    for (const k of certFields) if (has(o, k)) out.error([...path, k], `${k} cannot be set with mode ISTIO_MUTUAL (it uses the workload certificate)`);
    return;
  }
  if (mode === 'PASSTHROUGH' || mode === 'AUTO_PASSTHROUGH') {
    for (const k of certFields) if (has(o, k)) out.warn([...path, k], `mode ${mode} does not terminate TLS; ${k} is ignored`);
    return;
  }
  const tlsCertificates = asArr(o.tlsCertificates);
  const sources = [has(o, 'serverCertificate') || has(o, 'privateKey'), has(o, 'credentialName'), asArr(o.credentialNames).length > 0, tlsCertificates.length > 0].filter(Boolean).length;
  if (sources > 1) out.error(at, 'set only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates');
  if (has(o, 'credentialName') || asArr(o.credentialNames).length > 0) return;
  if (tlsCertificates.length > 0) {
    // Istio checks each entry as it would serverCertificate/privateKey.
    tlsCertificates.forEach((c, i) => {
      for (const k of ['serverCertificate', 'privateKey']) if (!has(asObj(c), k)) out.error([...path, 'tlsCertificates', i, k], 'missing required field');
    });
  } else if (!has(o, 'serverCertificate')) out.error(at, `mode ${mode} needs serverCertificate and privateKey, or credentialName`);
  else if (!has(o, 'privateKey')) out.error(at, `mode ${mode} needs privateKey (with serverCertificate), or credentialName`);
  if ((mode === 'MUTUAL' || mode === 'OPTIONAL_MUTUAL') && !has(o, 'caCertificates')) out.error(at, `mode ${mode} needs caCertificates, or credentialName`);
};

const serverTls = obj(
  {
    httpsRedirect: bool(),
    mode: oneOf(SERVER_TLS_MODES),
    serverCertificate: nonEmptyStr(),
    privateKey: nonEmptyStr(),
    caCertificates: nonEmptyStr(),
    caCrl: str(),
    credentialName: nonEmptyStr(),
    credentialNames: list(nonEmptyStr(), { unique: true }),
    tlsCertificates: ignored(
      list(obj({ serverCertificate: nonEmptyStr(), privateKey: nonEmptyStr(), caCertificates: nonEmptyStr() })),
      'tlsCertificates is not implemented by Gatehouse yet (use serverCertificate/privateKey or credentialName); without another certificate this server is not served',
    ),
    caCertCredentialName: ignored(nonEmptyStr(), 'caCertCredentialName is not implemented by Gatehouse yet; client certificates are checked against caCertificates or the credentialName Secret'),
    insecureSkipVerify: ignored(bool(), 'insecureSkipVerify is not implemented for Gateway servers by Gatehouse; client certificates are verified'),
    ecdhCurves: ignored(list(str()), 'ecdhCurves is not implemented by Gatehouse yet; Node\'s default curves are offered'),
    subjectAltNames: list(str()),
    verifyCertificateSpki: list(str()),
    verifyCertificateHash: list(str()),
    minProtocolVersion: oneOf(TLS_VERSIONS),
    maxProtocolVersion: oneOf(TLS_VERSIONS),
    cipherSuites: list(str()),
  },
  serverTlsRules,
);

const serverRules: ObjectRule = (o, path, out) => {
  const protocol = asStr(asObj(o.port).protocol);
  if (!protocol || !(PROTOCOLS as readonly string[]).includes(protocol.toUpperCase())) return;
  const p = protocol.toUpperCase();
  const tls = o.tls;
  if ((p === 'HTTPS' || p === 'TLS') && !has(o, 'tls')) {
    out.error([...path, 'port', 'protocol'], `protocol ${p} needs tls settings (mode SIMPLE, MUTUAL, PASSTHROUGH, ...)`);
  } else if (p !== 'HTTPS' && p !== 'TLS' && isObj(tls)) {
    const onlyRedirect = Object.keys(tls).every((k) => k === 'httpsRedirect' || (k === 'mode' && tls.mode === 'PASSTHROUGH'));
    if (listenerClass(p) === 'http' && !onlyRedirect) out.error([...path, 'tls'], `a plaintext ${p} server can only have tls.httpsRedirect; use protocol HTTPS to terminate TLS`);
    else if (listenerClass(p) !== 'http') out.error([...path, 'tls'], `protocol ${p} cannot have tls settings; use protocol TLS or HTTPS`);
  }
};

const server = obj(
  {
    port: req(
      obj({
        number: req(port()),
        protocol: req(oneOf(PROTOCOLS, true)),
        name: req(nonEmptyStr()),
        targetPort: { shape: { type: 'integer' }, check: (_v, path, out) => out.error(path, 'targetPort has no effect on Gateways; remove it') },
      }),
    ),
    bind: str((s) => (isIP(s) || s.startsWith('unix://') ? undefined : `invalid bind ${quote(s)}: must be an IP address or unix:// path`)),
    hosts: req(list(str((h) => nsHostProblem(h, { nsRequired: false, allowNone: false })), { nonEmpty: true })),
    tls: serverTls,
    defaultEndpoint: ignored(str(), 'defaultEndpoint is not implemented for gateways; ignored'),
    name: str(),
  },
  serverRules,
);

export const gatewaySpec = obj(
  { servers: req(list(server, { nonEmpty: true })), selector: labels },
  (o, path, out) => {
    const names = new Map<string, number>();
    asArr(o.servers).forEach((s, i) => {
      const n = asStr(asObj(s).name);
      if (!n) return;
      if (names.has(n)) out.error([...path, 'servers', i, 'name'], `duplicate server name ${quote(n)} (also servers[${names.get(n)!}])`);
      else names.set(n, i);
    });
  },
);

// ---- DestinationRule -----------------------------------------------------------------------------

const consistentHash = obj(
  {
    httpHeaderName: nonEmptyStr(),
    httpCookie: obj({
      name: req(nonEmptyStr()),
      path: str(),
      ttl: duration(),
      attributes: ignored(list(obj({ name: req(nonEmptyStr()), value: str() })), 'cookie attributes are not implemented by Gatehouse yet; a generated cookie carries only its path and max-age'),
    }),
    useSourceIp: bool(),
    httpQueryParameterName: nonEmptyStr(),
    ringHash: obj({ minimumRingSize: int(0) }),
    maglev: obj({ tableSize: refine(int(1), (v, path, out) => void (!isPrime(v as number) && out.error(path, `table size ${v as number} is not prime: use a prime such as 65537`))) }),
    minimumRingSize: int(0),
  },
  exactlyOne('httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName'),
  atMostOne('ringHash', 'maglev', 'minimumRingSize'),
);

const loadBalancer = obj(
  {
    simple: oneOf(LB_SIMPLE),
    consistentHash,
    localityLbSetting: obj(
      {
        enabled: bool(),
        distribute: list(obj({ from: str(), to: map(int(1, 100)) })),
        failover: list(obj({ from: str(), to: str() })),
        failoverPriority: list(str()),
      },
      atMostOne('distribute', 'failover'),
    ),
    zoneAwareLbSetting: ignored(
      obj({ enabled: bool(), failover: list(obj({ from: str(), to: str() })), failoverPriority: list(str()), minClusterSize: int(0) }),
      'zone-aware load balancing is not implemented by Gatehouse yet; ignored',
    ),
    warmupDurationSecs: ignored(duration(), 'warmupDurationSecs is deprecated (use warmup), and slow-start warmup is not implemented by Gatehouse yet; ignored'),
    warmup: ignored(
      obj({ duration: req(duration({ min: 1 })), minimumPercent: num(0, 100), aggression: num(0) }),
      'slow-start warmup is not implemented by Gatehouse yet: new endpoints get their full share at once; ignored',
    ),
    backendUtilization: ignored(
      obj({
        errorUtilizationPenaltyPercent: int(0, 4294967295),
        metricNamesForComputingUtilization: list(str()),
        weightExpirationPeriod: duration(),
        weightStabilizationPeriod: duration(),
        weightUpdatePeriod: duration(),
      }),
      'utilization-based load balancing (ORCA) is not implemented by Gatehouse; round robin is used',
    ),
  },
  atMostOne('simple', 'consistentHash', 'backendUtilization'),
  atMostOne('warmupDurationSecs', 'warmup'),
  atMostOne('localityLbSetting', 'zoneAwareLbSetting'),
);

const connectionPool = obj({
  tcp: obj({
    maxConnections: int(0),
    connectTimeout: duration({ min: 1 }),
    tcpKeepalive: ignored(obj({ probes: int(0), time: duration(), interval: duration() }), 'tcpKeepalive is not implemented by Gatehouse yet; upstream sockets use the system keepalive settings'),
    maxConnectionDuration: ignored(duration({ min: 1 }), 'maxConnectionDuration is not implemented by Gatehouse yet; ignored'),
    idleTimeout: duration(),
  }),
  http: obj(
    {
      http1MaxPendingRequests: int(0),
      http2MaxRequests: int(0),
      maxRequestsPerConnection: int(0),
      maxRetries: int(0),
      idleTimeout: duration(),
      h2UpgradePolicy: oneOf(['DEFAULT', 'DO_NOT_UPGRADE', 'UPGRADE']),
      useClientProtocol: ignored(bool(), 'useClientProtocol is not implemented by Gatehouse yet: the upstream protocol follows the service port protocol'),
      maxConcurrentStreams: int(0),
      http2KeepAlive: ignored(obj({ interval: req(duration({ min: 1 })), timeout: req(duration({ min: 1 })) }), 'http2KeepAlive (HTTP/2 PINGs upstream) is not implemented by Gatehouse yet; ignored'),
    },
    (o, path, out) => void (o.h2UpgradePolicy === 'UPGRADE' && o.useClientProtocol === true && out.error([...path, 'useClientProtocol'], 'useClientProtocol must not be true when h2UpgradePolicy is UPGRADE')),
  ),
});

const outlierDetection = obj({
  splitExternalLocalOriginErrors: bool(),
  consecutiveLocalOriginFailures: int(0),
  consecutiveGatewayErrors: int(0),
  consecutive5xxErrors: int(0),
  consecutiveErrors: int(0),
  interval: duration({ min: 1 }),
  baseEjectionTime: duration({ min: 1 }),
  maxEjectionPercent: int(0, 100),
  minHealthPercent: int(0, 100),
  outlierDetectionHttpErrorCodes: ignored(list(int(100, 599)), 'outlierDetectionHttpErrorCodes is not implemented by Gatehouse yet: 5xx and gateway errors count as before'),
});

const clientTls = obj(
  {
    mode: oneOf(['DISABLE', 'SIMPLE', 'MUTUAL', 'ISTIO_MUTUAL']),
    clientCertificate: nonEmptyStr(),
    privateKey: nonEmptyStr(),
    caCertificates: nonEmptyStr(),
    caCrl: str(),
    credentialName: nonEmptyStr(),
    subjectAltNames: list(str()),
    sni: str(),
    insecureSkipVerify: bool(),
  },
  (o, path, out) => {
    const at = has(o, 'mode') ? [...path, 'mode'] : path;
    if (o.mode === 'MUTUAL' && !has(o, 'credentialName')) {
      if (!has(o, 'clientCertificate') || !has(o, 'privateKey')) out.error(at, 'mode MUTUAL needs clientCertificate and privateKey, or credentialName');
    }
    if (o.mode === 'ISTIO_MUTUAL') {
      for (const k of ['clientCertificate', 'privateKey', 'caCertificates', 'credentialName']) {
        if (has(o, k)) out.error([...path, k], `${k} cannot be set with mode ISTIO_MUTUAL (it uses the workload certificate)`);
      }
    }
  },
);

/** What a portLevelSettings entry may set (Istio's PortTrafficPolicy). */
const portTrafficPolicyFields = { loadBalancer, connectionPool, outlierDetection, tls: clientTls };

const trafficPolicy = obj(
  {
    ...portTrafficPolicyFields,
    portLevelSettings: list(obj({ port: req(obj({ number: req(port()) })), ...portTrafficPolicyFields })),
    tunnel: ignored(
      obj({ protocol: oneOf(['CONNECT', 'POST']), targetHost: req(nonEmptyStr()), targetPort: req(port()) }),
      'tunnel (HTTP CONNECT/POST upstream tunnelling) is not implemented by Gatehouse yet; connections go to the destination directly',
    ),
    proxyProtocol: ignored(obj({ version: oneOf(['V1', 'V2']) }), 'sending the PROXY protocol upstream is not implemented by Gatehouse yet; ignored'),
    retryBudget: ignored(
      obj({ percent: num(0, 100), minRetryConcurrency: int(0), budgetInterval: duration() }),
      'retryBudget is not implemented by Gatehouse yet; retries are limited by connectionPool.http.maxRetries only',
    ),
  },
  atMostOne('tunnel', 'proxyProtocol'),
  (o, path, out) => {
    const seen = new Set<number>();
    asArr(o.portLevelSettings).forEach((s, i) => {
      const n = asObj(asObj(s).port).number;
      if (typeof n !== 'number') return;
      if (seen.has(n)) out.error([...path, 'portLevelSettings', i, 'port', 'number'], `duplicate port ${n} in portLevelSettings`);
      seen.add(n);
    });
  },
);

export const destinationRuleSpec = obj(
  {
    host: req(str((h) => hostProblem(h, { star: true }))),
    trafficPolicy,
    subsets: list(obj({ name: req(str(dnsLabel('subset name'))), labels, trafficPolicy })),
    exportTo,
    workloadSelector: obj({ matchLabels: labels }),
  },
  (o, path, out) => {
    const seen = new Set<string>();
    asArr(o.subsets).forEach((s, i) => {
      const n = asStr(asObj(s).name);
      if (n === undefined) return;
      if (seen.has(n)) out.error([...path, 'subsets', i, 'name'], `duplicate subset name ${quote(n)}`);
      seen.add(n);
    });
  },
);

// ---- ServiceEntry / WorkloadEntry ---------------------------------------------------------------

const workloadAddress = (s: string): string | undefined =>
  isIP(s) || s.startsWith('unix://') || (isValidHostPattern(s) && !s.startsWith('*'))
    ? undefined
    : `invalid address ${quote(s)}: must be an IP address, a DNS name or unix:// path`;

const addressUnlessNetwork: ObjectRule = (o, path, out) => {
  if (!has(o, 'address') && !has(o, 'network')) out.error([...path, 'address'], 'missing required field (only an entry with a network may omit it)');
};

const workloadEntryFields = {
  address: str(workloadAddress),
  ports: map(port(), dnsLabel('port name')),
  labels,
  network: str(),
  locality: str(),
  weight: int(0, 4294967295),
  serviceAccount: str(),
};

export const workloadEntrySpec = obj(workloadEntryFields, addressUnlessNetwork);

const serviceEntryRules: ObjectRule = (o, path, out) => {
  const resolution = asStr(o.resolution) ?? 'NONE';
  const endpoints = asArr(o.endpoints);
  const hasSelector = has(o, 'workloadSelector');
  // Ports: unique names and numbers; the names are what endpoints' `ports` refer to.
  const names = new Set<string>();
  const numbers = new Set<number>();
  asArr(o.ports).forEach((p, i) => {
    const { name, number } = asObj(p);
    if (typeof name === 'string') {
      if (names.has(name)) out.error([...path, 'ports', i, 'name'], `duplicate port name ${quote(name)}`);
      names.add(name);
    }
    if (typeof number === 'number') {
      if (numbers.has(number)) out.error([...path, 'ports', i, 'number'], `duplicate port ${number}`);
      numbers.add(number);
    }
  });
  if (endpoints.length > 0 && hasSelector) out.error([...path, 'workloadSelector'], 'set only one of endpoints, workloadSelector');
  if (resolution === 'NONE' && endpoints.length > 0) out.error([...path, 'endpoints'], 'endpoints are not allowed with resolution NONE; use STATIC or DNS');
  if (resolution === 'STATIC' && endpoints.length === 0 && !hasSelector) {
    out.error(has(o, 'resolution') ? [...path, 'resolution'] : path, 'resolution STATIC needs endpoints or a workloadSelector');
  }
  if (resolution === 'DNS_ROUND_ROBIN' && endpoints.length > 1) out.error([...path, 'endpoints'], 'resolution DNS_ROUND_ROBIN allows at most one endpoint');
  if (resolution === 'DYNAMIC_DNS') {
    // Istio: Envoy's dynamic forward proxy, for wildcard hosts only, on HTTP/TLS/GRPC/HTTP2 ports.
    asArr(o.hosts).forEach((h, i) => {
      if (typeof h === 'string' && !h.startsWith('*')) out.error([...path, 'hosts', i], `host ${quote(h)} must be a wildcard (e.g. "*.example.com") with resolution DYNAMIC_DNS`);
    });
    if (asArr(o.addresses).length > 0) out.error([...path, 'addresses'], 'addresses cannot be set with resolution DYNAMIC_DNS');
    if (endpoints.length > 0) out.error([...path, 'endpoints'], 'endpoints cannot be set with resolution DYNAMIC_DNS');
    asArr(o.ports).forEach((p, i) => {
      const proto = asStr(asObj(p).protocol)?.toUpperCase() ?? '';
      if (!['HTTP', 'TLS', 'GRPC', 'HTTP2'].includes(proto)) out.error([...path, 'ports', i, 'protocol'], 'resolution DYNAMIC_DNS supports only HTTP, TLS, GRPC and HTTP2 ports');
    });
  }
  if ((resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN') && endpoints.length === 0) {
    asArr(o.hosts).forEach((h, i) => {
      if (typeof h === 'string' && h.startsWith('*')) {
        out.error([...path, 'hosts', i], `wildcard host ${quote(h)} cannot be resolved by DNS: use resolution NONE, or list endpoints`);
      }
    });
  }
  asArr(o.addresses).forEach((a, i) => {
    if (typeof a === 'string' && a.includes('/') && resolution !== 'NONE' && resolution !== 'STATIC') {
      out.error([...path, 'addresses', i], `CIDR addresses need resolution NONE or STATIC, not ${resolution}`);
    }
  });
  endpoints.forEach((e, i) => {
    const ep = asObj(e);
    const addr = asStr(ep.address);
    if (resolution === 'STATIC' && addr !== undefined && !isIP(addr) && !addr.startsWith('unix://')) {
      out.error([...path, 'endpoints', i, 'address'], `address ${quote(addr)} must be an IP address with resolution STATIC`);
    }
    for (const name of Object.keys(asObj(ep.ports))) {
      if (!names.has(name)) {
        const known = [...names].join(', ') || 'none';
        out.error([...path, 'endpoints', i, 'ports', name], `port ${quote(name)} is not a port name of this ServiceEntry (ports: ${known})`);
      }
    }
  });
};

/** Istio accepts a partial wildcard (`*x.example.com`) on a ServiceEntry with a warning. */
const serviceEntryHost: Schema = {
  shape: { type: 'string' },
  check: (v, path, out) => {
    if (typeof v === 'string' && /^\*[^.]/.test(v) && isValidHostPattern(`*.${v.slice(1)}`)) {
      return out.warn(path, `partial wildcard host ${quote(v)} is accepted by Istio with a warning; Gatehouse matches only "*." wildcards, so this host matches nothing`);
    }
    str((h) => hostProblem(h)).check(v, path, out);
  },
};

export const serviceEntrySpec = obj(
  {
    hosts: req(list(serviceEntryHost, { nonEmpty: true })),
    addresses: cidrs,
    ports: list(obj({ number: req(port()), protocol: servicePortProtocol(), name: req(str(dnsLabel('port name'))), targetPort: port() })),
    location: oneOf(['MESH_EXTERNAL', 'MESH_INTERNAL']),
    resolution: oneOf(['NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN', 'DYNAMIC_DNS']),
    endpoints: list(obj(workloadEntryFields, addressUnlessNetwork)),
    workloadSelector: obj({ labels }),
    exportTo,
    subjectAltNames: list(str()),
  },
  serviceEntryRules,
);

// ---- Sidecar ---------------------------------------------------------------------------------------

const sidecarPort = obj({ number: port(), protocol: servicePortProtocol(), name: str(), targetPort: port() });
const CAPTURE_MODES = ['DEFAULT', 'IPTABLES', 'NONE'];

// Gatehouse reads a Sidecar for its outboundTrafficPolicy.mode only (see README).
export const sidecarSpec = obj({
  workloadSelector: obj({ labels }),
  ingress: ignored(
    list(obj({ port: req(sidecarPort), bind: str(), captureMode: oneOf(CAPTURE_MODES), defaultEndpoint: str(), tls: serverTls, connectionPool })),
    'Sidecar ingress listeners configure a sidecar\'s inbound traffic; Gatehouse has none: ignored',
  ),
  egress: ignored(
    list(
      obj({
        port: sidecarPort,
        bind: str(),
        captureMode: oneOf(CAPTURE_MODES),
        hosts: req(list(str((h) => nsHostProblem(h, { nsRequired: true, allowNone: true })), { nonEmpty: true })),
      }),
    ),
    'Sidecar egress listeners (the hosts a sidecar sees) are not applied by Gatehouse, to the gateway or to proxyless clients; ignored',
  ),
  inboundConnectionPool: ignored(connectionPool, 'inboundConnectionPool applies to a sidecar\'s inbound traffic; Gatehouse has none: ignored'),
  outboundTrafficPolicy: obj({
    mode: oneOf(['ALLOW_ANY', 'REGISTRY_ONLY']),
    egressProxy: ignored(destination, 'egressProxy is not implemented by Gatehouse; ALLOW_ANY traffic goes to its own destination'),
  }),
});

// ---- security.istio.io -------------------------------------------------------------------------

const mtlsMode = obj({ mode: oneOf(['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT']) });

export const peerAuthenticationSpec = obj(
  { selector, mtls: mtlsMode, portLevelMtls: map(mtlsMode, portKeyProblem) },
  (o, path, out) => void (has(o, 'portLevelMtls') && !has(o, 'selector') && out.error([...path, 'portLevelMtls'], 'portLevelMtls needs a selector')),
);

const jwtRule = obj({
  issuer: req(nonEmptyStr()),
  audiences: list(str()),
  jwksUri: str(urlProblem),
  // The CRD's own name for jwksUri (its protobuf name); honoured the same.
  jwks_uri: str(urlProblem),
  jwks: str(jsonProblem),
  fromHeaders: list(obj({ name: req(nonEmptyStr()), prefix: str() })),
  fromParams: list(str()),
  fromCookies: list(str()),
  outputPayloadToHeader: str(headerNameProblem),
  outputClaimToHeaders: list(obj({ header: req(str(headerNameProblem)), claim: req(nonEmptyStr()) })),
  forwardOriginalToken: bool(),
  timeout: duration(),
  spaceDelimitedClaims: list(nonEmptyStr()),
  presence: refine(oneOf(['OPTIONAL', 'REQUIRED']), (v, path, out) => {
    if (v === 'REQUIRED') out.warn(path, 'presence REQUIRED is not implemented by Gatehouse yet: a request without a token still passes authentication; require one with an AuthorizationPolicy on requestPrincipals: ["*"]');
  }),
}, atMostOne('jwksUri', 'jwks_uri'));

const workloadTarget = atMostOne('selector', 'targetRef', 'targetRefs');

export const requestAuthenticationSpec = obj({ selector, targetRef, targetRefs: list(targetRef), jwtRules: list(jwtRule) }, workloadTarget);

const strings = list(str());
const nonEmptyBlock = (what: string): ObjectRule => (o, path, out) => {
  if (Object.keys(o).length === 0) out.error(path, `${what} must not be empty`);
};
const serviceAccounts = list(str(serviceAccountProblem));
const trustDomains = list(str(trustDomainProblem));
const source = obj(
  {
    principals: strings, notPrincipals: strings, requestPrincipals: strings, notRequestPrincipals: strings,
    namespaces: strings, notNamespaces: strings, ipBlocks: cidrs, notIpBlocks: cidrs, remoteIpBlocks: cidrs, notRemoteIpBlocks: cidrs,
    serviceAccounts, notServiceAccounts: serviceAccounts, trustDomains, notTrustDomains: trustDomains,
  },
  nonEmptyBlock('source'),
  (o, path, out) => {
    // Istio: service accounts name a namespace already; they do not combine with namespaces or principals.
    const sa = setKeys(o, ['serviceAccounts', 'notServiceAccounts']);
    const other = setKeys(o, ['principals', 'notPrincipals', 'namespaces', 'notNamespaces']);
    if (sa.length > 0 && other.length > 0) out.error([...path, sa[0]!], `serviceAccounts cannot be combined with ${other.join(', ')}`);
    for (const k of ['serviceAccounts', 'notServiceAccounts']) if (asArr(o[k]).length > 16) out.error([...path, k], 'at most 16 service accounts');
  },
);
const portStrings = list(str((s) => (/^\d+$/.test(s) && Number(s) >= 1 && Number(s) <= 65535 ? undefined : `invalid port ${quote(s)}: must be a port number`)));
const operation = obj(
  { hosts: strings, notHosts: strings, ports: portStrings, notPorts: portStrings, methods: strings, notMethods: strings, paths: strings, notPaths: strings },
  nonEmptyBlock('operation'),
);
const condition = obj(
  { key: req(str(whenKeyProblem)), values: strings, notValues: strings },
  (o, path, out) => void (!has(o, 'values') && !has(o, 'notValues') && out.error(path, 'must set values, notValues or both')),
  (o, path, out) => {
    for (const field of ['values', 'notValues'] as const) {
      asArr(o[field]).forEach((v, i) => {
        const problem = typeof v === 'string' ? whenValueProblem(o.key, v) : undefined;
        if (problem) out.error([...path, field, i], problem);
      });
    }
    // Envoy filter metadata Gatehouse does not have: as in Envoy without that metadata, nothing matches.
    if (typeof o.key === 'string' && o.key.startsWith('experimental.')) {
      out.warn([...path, 'key'], `condition key ${quote(o.key)} reads Envoy filter metadata that Gatehouse does not have: its values never match (notValues always do)`);
    }
  },
);

export const authorizationPolicySpec = obj(
  {
    selector,
    targetRef,
    targetRefs: list(targetRef),
    action: oneOf(['ALLOW', 'DENY', 'AUDIT', 'CUSTOM']),
    provider: obj({ name: req(nonEmptyStr()) }),
    rules: list(obj({ from: list(obj({ source: req(source) })), to: list(obj({ operation: req(operation) })), when: list(condition) })),
  },
  workloadTarget,
  (o, path, out) => {
    if (o.action === 'CUSTOM' && !has(o, 'provider')) out.error([...path, 'action'], 'action CUSTOM needs a provider');
    if (has(o, 'provider') && o.action !== 'CUSTOM') out.error([...path, 'provider'], 'provider is only used with action CUSTOM');
  },
);

// ---- Kubernetes v1 Secret / ConfigMap (paths from the document root) ----------------------------

const k8sEnvelope = { apiVersion: str(), kind: str(), metadata: any(), immutable: bool() };

export const secretDocument = obj(
  { ...k8sEnvelope, type: str(), data: map(base64(), configKeyProblem), stringData: map(str(), configKeyProblem) },
  (o, path, out) => {
    if (o.type !== 'kubernetes.io/tls') return;
    for (const key of ['tls.crt', 'tls.key']) {
      if (!Object.hasOwn(asObj(o.data), key) && !Object.hasOwn(asObj(o.stringData), key)) {
        out.error(has(o, 'data') ? [...path, 'data'] : [...path, 'type'], `a kubernetes.io/tls secret needs ${quote(key)} in data or stringData`);
      }
    }
  },
);

export const configMapDocument = obj({ ...k8sEnvelope, data: map(str(), configKeyProblem), binaryData: map(base64(), configKeyProblem) });

// ---- telemetry.istio.io Telemetry ----------------------------------------------------------------

const workloadMode = oneOf(['CLIENT_AND_SERVER', 'CLIENT', 'SERVER']);
const providerRefs = refine(list(obj({ name: req(nonEmptyStr()) })));
/** Only the first provider of a tracing entry is used, in Istio as here. */
const tracingProviders = refine(providerRefs, (v, path, out) => {
  if (asArr(v).length > 1) out.warn([...path, 1], 'only one tracing provider per entry is used (the first), as in Istio');
});
const customTag = obj(
  {
    literal: obj({ value: req(str()) }),
    environment: obj({ name: req(nonEmptyStr()), defaultValue: str() }),
    header: obj({ name: req(str(headerNameProblem)), defaultValue: str() }),
    formatter: obj({ value: req(nonEmptyStr()) }),
  },
  exactlyOne('literal', 'environment', 'header', 'formatter'),
);
const tracing = obj({
  match: obj({ mode: workloadMode }),
  providers: tracingProviders,
  randomSamplingPercentage: num(0, 100),
  disableSpanReporting: bool(),
  customTags: map(customTag),
  useRequestIdForTraceSampling: bool(),
  enableIstioTags: bool(),
  disableContextPropagation: bool(),
});
export const ISTIO_METRICS = [
  'ALL_METRICS', 'REQUEST_COUNT', 'REQUEST_DURATION', 'REQUEST_SIZE', 'RESPONSE_SIZE', 'TCP_OPENED_CONNECTIONS', 'TCP_CLOSED_CONNECTIONS',
  'TCP_SENT_BYTES', 'TCP_RECEIVED_BYTES', 'GRPC_REQUEST_MESSAGES', 'GRPC_RESPONSE_MESSAGES',
] as const;
/** A metric tag value: a CEL expression over Envoy's attributes (Istio's stats plugin). */
const celValue = str((v) => (v === '' ? undefined : celProblem(v, 'any')));
const tagOverride = obj({ operation: oneOf(['UPSERT', 'REMOVE']), value: celValue }, (o, path, out) => {
  if (o.operation === 'UPSERT' && (typeof o.value !== 'string' || o.value === '')) out.error(has(o, 'value') ? [...path, 'value'] : path, 'value must be set when operation is UPSERT');
  if (o.operation === 'REMOVE' && has(o, 'value')) out.error([...path, 'value'], 'value must not be set when operation is REMOVE');
});
const metricsOverride = obj({
  match: obj({ metric: oneOf(ISTIO_METRICS), customMetric: nonEmptyStr(), mode: workloadMode }, atMostOne('metric', 'customMetric')),
  disabled: bool(),
  tagOverrides: map(tagOverride, (k) => (k === '' ? 'tag name must not be empty' : undefined)),
});
const metrics = obj({
  providers: providerRefs,
  overrides: list(metricsOverride),
  reportingInterval: ignored(duration({ min: 1 }), 'Gatehouse reports TCP metrics as bytes flow, not at an interval'),
});
const accessLogging = obj({
  match: obj({ mode: workloadMode }),
  providers: providerRefs,
  disabled: bool(),
  filter: obj({ expression: str((v) => celProblem(v, 'bool')) }),
});
const telemetryTargetRefs = refine(list(targetRef), (v, path, out) => {
  if (asArr(v).length > 16) out.error(path, 'at most 16 targetRefs');
});

export const telemetrySpec = obj(
  { selector, targetRef, targetRefs: telemetryTargetRefs, tracing: list(tracing), metrics: list(metrics), accessLogging: list(accessLogging) },
  workloadTarget,
);

// ---- MeshConfig ------------------------------------------------------------------------------------

const providerHeaders = list(obj({ name: req(str(headerNameProblem)), value: headerValue(), envName: nonEmptyStr() }, atMostOne('value', 'envName')));
const collectorPath = str((p) => (p.startsWith('/') ? headerValueProblem(p) : `must be a path starting with "/", got ${quote(p)}`));
const collectorService = str((h) => (h === '' ? 'must name the collector service' : hostProblem(h.includes('/') ? h.slice(h.indexOf('/') + 1) : h)));
const zipkinProvider = obj({
  service: req(collectorService),
  port: req(port()),
  maxTagLength: int(0),
  enable64bitTraceId: bool(),
  path: collectorPath,
  traceContextOption: oneOf(['USE_B3', 'USE_B3_WITH_W3C_PROPAGATION']),
  timeout: duration({ min: 1 }),
  headers: providerHeaders,
});
const openTelemetryProvider = obj(
  {
    service: req(collectorService),
    port: req(port()),
    maxTagLength: int(0),
    http: obj({ path: collectorPath, timeout: duration({ min: 1 }), headers: providerHeaders }),
    grpc: obj({ timeout: duration({ min: 1 }), initialMetadata: providerHeaders }),
    resourceDetectors: ignored(any(), 'OpenTelemetry resource detectors are not implemented by Gatehouse'),
    dynatraceSampler: ignored(any(), 'the Dynatrace sampler is not implemented by Gatehouse'),
    serviceAttributeEnrichment: ignored(any(), 'service attribute enrichment is not implemented by Gatehouse'),
  },
  atMostOne('http', 'grpc'),
);
const fileAccessLogProvider = obj({
  path: str(),
  logFormat: obj({ text: str(), labels: map(any()) }, atMostOne('text', 'labels')),
  omitEmptyValues: bool(),
});
/** The provider kinds of an extensionProviders entry (one each); those not listed here are left to the code that reads them. */
const PROVIDER_KINDS = [
  'envoyExtAuthzHttp', 'envoyExtAuthzGrpc', 'zipkin', 'lightstep', 'datadog', 'stackdriver', 'opencensus', 'skywalking', 'opentelemetry',
  'prometheus', 'envoyFileAccessLog', 'envoyHttpAls', 'envoyTcpAls', 'envoyOtelAls', 'sds',
];
const extensionProvider = looseObj(
  { name: req(nonEmptyStr()), zipkin: zipkinProvider, opentelemetry: openTelemetryProvider, envoyFileAccessLog: fileAccessLogProvider, prometheus: obj({}) },
  (o, path, out) => {
    const kinds = setKeys(o, PROVIDER_KINDS);
    if (kinds.length === 0) out.error(path, `must set one provider: ${PROVIDER_KINDS.join(', ')}`);
    else if (kinds.length > 1) out.error([...path, kinds[1]!], `set only one provider (found ${kinds.join(' and ')})`);
  },
);
const extensionProviders = refine(list(extensionProvider), (v, path, out) => {
  const seen = new Set<string>();
  asArr(v).forEach((p, i) => {
    const name = asStr(asObj(p).name);
    if (name === undefined) return;
    if (seen.has(name)) out.error([...path, i, 'name'], `duplicate extension provider name ${quote(name)}`);
    seen.add(name);
  });
});
const providerNames = list(nonEmptyStr());

/** The parts of MeshConfig (ConfigMap `istio`, key `mesh`, or `--mesh-config`) Gatehouse reads; other fields are left alone. */
export const meshConfigSchema = looseObj({
  rootNamespace: str(dnsLabel('namespace')),
  trustDomain: str(),
  outboundTrafficPolicy: looseObj({ mode: oneOf(['ALLOW_ANY', 'REGISTRY_ONLY']) }),
  accessLogFile: str(),
  accessLogEncoding: oneOf(['TEXT', 'JSON']),
  accessLogFormat: str(),
  enableTracing: bool(),
  defaultConfig: looseObj({
    tracing: looseObj({
      sampling: num(0, 100),
      custom_tags: map(customTag),
      customTags: map(customTag),
      max_path_tag_length: int(0),
      maxPathTagLength: int(0),
    }),
    gatewayTopology: looseObj({ numTrustedProxies: int(0) }),
  }),
  extensionProviders,
  defaultProviders: obj({ tracing: providerNames, metrics: providerNames, accessLogging: providerNames }),
});
