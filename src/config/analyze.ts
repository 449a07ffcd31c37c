// Analyzer checks, modelled on `istioctl analyze` where they make sense without Kubernetes: valid
// configuration that does not do what its author meant. Every finding is a warning with the line
// of the field it is about and, where Istio has one, Istio's message code (`[IST0130] ...`).
// Checks Istio makes against pods, Services, webhooks or the cluster have no equivalent here; the
// README lists which checks exist and which do not.
import type { FieldPath, Problem, Resource } from './types.js';
import { resourceId } from './types.js';
import { completeHost, DEFAULT_CLUSTER_DOMAIN } from './hosts.js';
import { routingClaim } from './jwt-claims.js';
import { describeLabels, formatLabels, gatewayApplies, reporterFor, resolveGatewayRef } from './validate-refs.js';

export interface AnalyzeOptions {
  /** The labels in force: `--labels`, else the default `istio=ingressgateway`. */
  labels: Readonly<Record<string, string>>;
  /** `--namespace`: the gateway's own namespace. */
  gatewayNamespace: string;
  /** The mesh config's root namespace (policies there apply to every workload). */
  rootNamespace: string;
  /** `--cluster-domain`: short hosts complete to `<name>.<namespace>.svc.<domain>` (default cluster.local). */
  clusterDomain?: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const asObj = (v: unknown): Obj => (isObj(v) ? v : {});
const asArr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const asStr = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const spec = (r: Resource): Obj => asObj(r.spec);
const nsName = (r: Resource): string => `${r.metadata.namespace}/${r.metadata.name}`;

/** JSON with object keys sorted, so that equal matches compare equal whatever their key order. */
const stableJson = (v: unknown): string =>
  JSON.stringify(v, (_k, x: unknown) => (isObj(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x));

export function analyze(resources: readonly Resource[], opts: AnalyzeOptions): Problem[] {
  const problems: Problem[] = [];
  const ofKind = (k: string): Resource[] => resources.filter((r) => r.kind === k);
  const gateways = ofKind('Gateway');
  const virtualServices = ofKind('VirtualService');
  const domain = opts.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
  gatewaySelectors(gateways, opts, problems);
  for (const vs of virtualServices) unreachableRules(vs, problems);
  meshHostConflicts(virtualServices, domain, problems);
  for (const dr of ofKind('DestinationRule')) caCertificates(dr, problems);
  serviceEntryProtocols(ofKind('ServiceEntry'), problems);
  subsetsSelectingNothing(ofKind('DestinationRule'), ofKind('ServiceEntry'), ofKind('WorkloadEntry'), domain, problems);
  sidecarSelectors(ofKind('Sidecar'), opts, problems);
  jwtClaimRoutes(virtualServices, gateways, ofKind('RequestAuthentication'), opts, problems);
  for (const r of resources) deprecatedFields(r, problems);
  return problems;
}

// ---- Gateways whose selector does not select this gateway (IST0101) ------------------------------

function gatewaySelectors(gateways: readonly Resource[], opts: AnalyzeOptions, problems: Problem[]): void {
  const labels = describeLabels(opts.labels);
  for (const g of gateways) {
    if (gatewayApplies(g, opts.labels)) continue;
    const selector = formatLabels(asObj(spec(g).selector));
    reporterFor(g, problems).warn(
      ['spec', 'selector'],
      `[IST0101] selector ${selector} selects nothing here: this gateway's labels are ${labels}, so none of this Gateway's servers is served (run with --labels ${selector} to serve them)`,
    );
  }
}

// ---- VirtualService rules that never match (IST0130, IST0131) ------------------------------------

const STRING_MATCH_KEYS = new Set(['exact', 'prefix', 'regex']);

/**
 * Every value `b` matches is matched by `a` (a StringMatch: exact, prefix or RE2 regex). `{}` (or
 * no matcher key) only asks for presence. Conservative: false whenever it cannot be shown.
 */
function stringCovers(a: unknown, b: unknown, lower = false): boolean {
  if (a === undefined) return true;
  if (!isObj(a) || !Object.keys(a).every((k) => STRING_MATCH_KEYS.has(k))) return false;
  if (b === undefined) return false;
  if (!isObj(b) || !Object.keys(b).every((k) => STRING_MATCH_KEYS.has(k))) return false;
  const norm = (s: unknown): string | undefined => (typeof s === 'string' ? (lower ? s.toLowerCase() : s) : undefined);
  if (a.exact === undefined && a.prefix === undefined && a.regex === undefined) return true;
  if (a.exact !== undefined) return norm(b.exact) !== undefined && norm(b.exact) === norm(a.exact);
  if (a.prefix !== undefined) {
    const p = norm(a.prefix);
    const v = norm(b.exact) ?? norm(b.prefix);
    return p !== undefined && v !== undefined && v.startsWith(p);
  }
  return typeof a.regex === 'string' && b.regex === a.regex;
}

/** Every named StringMatch in `a` covers `b`'s for the same name (header names ignore case). */
function mapCovers(a: unknown, b: unknown, caseInsensitiveKeys: boolean): boolean {
  if (a === undefined) return true;
  if (!isObj(a)) return false;
  const key = (k: string): string => (caseInsensitiveKeys ? k.toLowerCase() : k);
  const bm = new Map(Object.entries(asObj(b)).map(([k, v]) => [key(k), v]));
  return Object.entries(a).every(([k, v]) => bm.has(key(k)) && stringCovers(v, bm.get(key(k))));
}

/** The fields of an HTTPMatchRequest this analysis understands; any other field makes it give up. */
const HTTP_MATCH_KEYS = new Set(['name', 'uri', 'scheme', 'method', 'authority', 'headers', 'port', 'sourceLabels', 'gateways', 'queryParams', 'ignoreUriCase', 'withoutHeaders', 'sourceNamespace', 'statPrefix']);

/** `uri: {prefix: /}` takes every path, as no uri condition does. */
const anyPath = (m: Obj): boolean => m.uri === undefined || stableJson(m.uri) === '{"prefix":"/"}';

/** Whether every request match `b` takes is taken by match `a` (first match wins, so `b` is dead). */
function httpMatchCovers(a: Obj, b: Obj): boolean {
  if (!Object.keys(a).every((k) => HTTP_MATCH_KEYS.has(k))) return false;
  if (!anyPath(a)) {
    if (b.ignoreUriCase === true && a.ignoreUriCase !== true) return false;
    if (!stringCovers(a.uri, b.uri, a.ignoreUriCase === true)) return false;
  }
  if (!stringCovers(a.scheme, b.scheme) || !stringCovers(a.method, b.method) || !stringCovers(a.authority, b.authority, true)) return false;
  if (!mapCovers(a.headers, b.headers, true) || !mapCovers(a.queryParams, b.queryParams, false)) return false;
  if (a.withoutHeaders !== undefined) {
    // `a` refuses requests carrying these headers; `b` must refuse at least those, identically.
    const bw = asObj(b.withoutHeaders);
    if (!Object.entries(asObj(a.withoutHeaders)).every(([k, v]) => stableJson(bw[k]) === stableJson(v))) return false;
  }
  if (a.port !== undefined && a.port !== b.port) return false;
  if (a.sourceNamespace !== undefined && a.sourceNamespace !== b.sourceNamespace) return false;
  if (a.sourceLabels !== undefined) {
    const bl = asObj(b.sourceLabels);
    if (!Object.entries(asObj(a.sourceLabels)).every(([k, v]) => bl[k] === v)) return false;
  }
  const ag = asArr(a.gateways);
  if (ag.length > 0) {
    const bg = asArr(b.gateways);
    if (bg.length === 0 || !bg.every((g) => ag.includes(g))) return false;
  }
  return true;
}

/** A match with no condition (but a name, a stat prefix, `uri: {prefix: /}`): it takes every request. */
const matchesEverything = (m: Obj): boolean => anyPath(m) && Object.keys(m).every((k) => ['name', 'statPrefix', 'uri', 'ignoreUriCase'].includes(k));

function unreachableRules(vs: Resource, problems: Problem[]): void {
  const out = reporterFor(vs, problems);
  const s = spec(vs);
  for (const kind of ['http', 'tcp', 'tls'] as const) {
    const rules = asArr(s[kind]);
    const ruleName = (i: number): string => {
      const n = kind === 'http' ? asStr(asObj(rules[i]).name) : undefined;
      return n ? JSON.stringify(n) : `#${i}`;
    };
    const matchName = (m: Obj, j: number): string => {
      const n = kind === 'http' ? asStr(m.name) : undefined;
      return n ? JSON.stringify(n) : `#${j}`;
    };
    /** The rule that takes every request (no match, or one that matches everything), once there is one. */
    let catchAll = -1;
    let catchAllHasMatch = false;
    const earlier: Array<{ rule: number; m: Obj; json: string }> = [];
    rules.forEach((raw, i) => {
      const rule = asObj(raw);
      const matches = asArr(rule.match).map(asObj);
      const path: FieldPath = ['spec', kind, i];
      if (catchAll >= 0) {
        const reason = catchAllHasMatch
          ? `rule ${ruleName(catchAll)} before it matches every request`
          : matches.length === 0
            ? 'only the last rule can have no matches'
            : 'route without matches defined before';
        out.warn(path, `[IST0130] VirtualService rule ${ruleName(i)} not used (${reason})`);
        return;
      }
      // A delegating rule falls through when no route of its delegate matches: it hides nothing.
      const delegates = kind === 'http' && rule.delegate !== undefined;
      if (matches.length === 0) {
        if (!delegates) catchAll = i;
        return;
      }
      const dead: Array<[FieldPath, string]> = [];
      matches.forEach((m, j) => {
        const json = stableJson({ ...m, name: undefined });
        const prior = earlier.find((e) => e.json === json || (kind === 'http' && httpMatchCovers(e.m, m)));
        if (prior) {
          dead.push([[...path, 'match', j], `[IST0131] VirtualService rule ${ruleName(i)} match ${matchName(m, j)} is not used (duplicate/overlapping match in rule ${ruleName(prior.rule)})`]);
          return;
        }
        if (!delegates) earlier.push({ rule: i, m, json });
      });
      // The rule first, then its matches.
      if (dead.length === matches.length) out.warn(path, `[IST0130] VirtualService rule ${ruleName(i)} not used (all matches used by prior rules)`);
      for (const [p, message] of dead) out.warn(p, message);
      if (!delegates && kind === 'http' && matches.some(matchesEverything)) {
        catchAll = i;
        catchAllHasMatch = true;
      }
    });
  }
}

// ---- VirtualServices for the mesh defining the same host (IST0109) ---------------------------------

function exportScopes(exportTo: unknown, namespace: string): string[] {
  const e = asArr(exportTo).filter((x): x is string => typeof x === 'string');
  if (e.length === 0 || e.includes('*')) return ['*'];
  return [...new Set(e.map((x) => (x === '.' ? namespace : x)))];
}

/** Whether two host names overlap: equal, or one a wildcard (`*`, `*.example.com`) covering the other. */
function hostsOverlap(a: string, b: string): boolean {
  const covers = (pattern: string, host: string): boolean => pattern === '*' || (pattern.startsWith('*.') && host.endsWith(pattern.slice(1)));
  return a === b || covers(a, b) || covers(b, a);
}

function meshHostConflicts(virtualServices: readonly Resource[], domain: string, problems: Problem[]): void {
  const byScopedHost = new Map<string, Array<{ vs: Resource; index: number }>>();
  /** Hosts visible to every namespace (exportTo `*`), and the wildcard ones among them. */
  const everywhere = new Map<string, Array<{ vs: Resource; index: number }>>();
  const everywhereWild: string[] = [];
  for (const vs of virtualServices) {
    const s = spec(vs);
    const gws = asArr(s.gateways);
    if (gws.length > 0 && !gws.includes('mesh')) continue;
    for (const scope of exportScopes(s.exportTo, vs.metadata.namespace)) {
      asArr(s.hosts).forEach((h, index) => {
        if (typeof h !== 'string') return;
        const host = completeHost(h, vs.metadata.namespace, domain);
        const key = `${scope}|${host}`;
        const list = byScopedHost.get(key) ?? [];
        if (!list.some((e) => e.vs === vs)) list.push({ vs, index });
        byScopedHost.set(key, list);
        if (scope === '*') {
          if (!everywhere.has(host) && host.includes('*')) everywhereWild.push(host);
          everywhere.set(host, list);
        }
      });
    }
  }
  const reported = new Set<Resource>();
  for (const [key, own] of byScopedHost) {
    const bar = key.indexOf('|');
    const scope = key.slice(0, bar);
    const host = key.slice(bar + 1);
    const list = [...own];
    if (scope !== '*') {
      // A namespace also sees what is exported everywhere (Istio adds those for overlapping hosts).
      const overlapping = host.includes('*') ? [...everywhere.keys()].filter((h) => hostsOverlap(host, h)) : [host, ...everywhereWild.filter((w) => hostsOverlap(host, w))];
      for (const h of overlapping) for (const e of everywhere.get(h) ?? []) if (!list.some((x) => x.vs === e.vs)) list.push(e);
    }
    if (list.length < 2) continue;
    const names = list.map((e) => nsName(e.vs)).sort().join(',');
    for (const e of list) {
      if (reported.has(e.vs)) continue;
      reported.add(e.vs);
      reporterFor(e.vs, problems).warn(
        ['spec', 'hosts', e.index],
        `[IST0109] The VirtualServices ${names} associated with mesh gateway define the same host ${host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.`,
      );
    }
  }
}

// ---- DestinationRule TLS origination that verifies nothing it was told to (IST0128, IST0129) ------

function caCertificates(dr: Resource, problems: Problem[]): void {
  const out = reporterFor(dr, problems);
  const s = spec(dr);
  const host = asStr(s.host) ?? '';
  const unverified = (tls: Obj): string | undefined => {
    const mode = asStr(tls.mode)?.toUpperCase();
    if (mode !== 'SIMPLE' && mode !== 'MUTUAL') return undefined;
    // A Secret (credentialName) may carry the CA; insecureSkipVerify says so on purpose.
    if (asStr(tls.caCertificates) || asStr(tls.credentialName) || tls.insecureSkipVerify === true) return undefined;
    return mode;
  };
  const policy = (tp: unknown, base: FieldPath, subset?: string): void => {
    const p = asObj(tp);
    const of = subset ? ` (subset ${subset})` : '';
    const mode = unverified(asObj(p.tls));
    if (mode) {
      out.warn([...base, 'tls', 'mode'], `[IST0128] DestinationRule ${dr.metadata.name} in namespace ${dr.metadata.namespace} has TLS mode set to ${mode} but no caCertificates are set to validate server identity for host: ${host}${of}; the server is then only checked against the public CA roots Node.js ships`);
    }
    asArr(p.portLevelSettings).forEach((pl, i) => {
      const pls = asObj(pl);
      const m = unverified(asObj(pls.tls));
      if (!m) return;
      const port = asObj(pls.port).number;
      out.warn([...base, 'portLevelSettings', i, 'tls', 'mode'], `[IST0129] DestinationRule ${dr.metadata.name} in namespace ${dr.metadata.namespace} has TLS mode set to ${m} but no caCertificates are set to validate server identity for host: ${host} at port ${String(port)}${of}; the server is then only checked against the public CA roots Node.js ships`);
    });
  };
  policy(s.trafficPolicy, ['spec', 'trafficPolicy']);
  asArr(s.subsets).forEach((sub, i) => policy(asObj(sub).trafficPolicy, ['spec', 'subsets', i, 'trafficPolicy'], asStr(asObj(sub).name)));
}

// ---- ServiceEntries giving one host and port different protocols (IST0177) -----------------------

function serviceEntryProtocols(serviceEntries: readonly Resource[], problems: Problem[]): void {
  const index = new Map<string, Array<{ se: Resource; port: number; protocol: string }>>();
  for (const se of serviceEntries) {
    const s = spec(se);
    for (const scope of exportScopes(s.exportTo, se.metadata.namespace)) {
      for (const h of asArr(s.hosts)) {
        if (typeof h !== 'string') continue;
        asArr(s.ports).forEach((p, port) => {
          const number = asObj(p).number;
          if (typeof number !== 'number') return;
          const key = `${scope}|${h.toLowerCase()}|${number}`;
          const list = index.get(key) ?? [];
          list.push({ se, port, protocol: (asStr(asObj(p).protocol) ?? '').toUpperCase() });
          index.set(key, list);
        });
      }
    }
  }
  const reported = new Set<Resource>();
  for (const [key, own] of index) {
    const [scope, host, port] = key.split('|') as [string, string, string];
    const entries = scope === '*' ? own : [...own, ...(index.get(`*|${host}|${port}`) ?? [])];
    const protocols = [...new Set(entries.map((e) => e.protocol))].sort();
    if (protocols.length < 2) continue;
    const names = [...new Set(entries.map((e) => nsName(e.se)))].sort().join(', ');
    for (const e of entries) {
      if (reported.has(e.se)) continue;
      reported.add(e.se);
      reporterFor(e.se, problems).warn(
        ['spec', 'ports', e.port, 'protocol'],
        `[IST0177] Multiple ServiceEntries (${names}) define the same host ${JSON.stringify(host)} and port ${port} with conflicting protocols (${protocols.map((p) => p || '""').join(', ')})`,
      );
    }
  }
}

// ---- DestinationRule subsets that select no endpoint of their ServiceEntry (IST0173) -------------

function subsetsSelectingNothing(drs: readonly Resource[], serviceEntries: readonly Resource[], workloadEntries: readonly Resource[], domain: string, problems: Problem[]): void {
  // Each host's endpoints' label sets, from the ServiceEntry defining it first (as resolve does).
  const endpointsByHost = new Map<string, { se: Resource; labels: Array<Record<string, string>> }>();
  /** Each WorkloadEntry's labels (resource and spec labels), by namespace. */
  const weLabels = new Map<string, Array<Record<string, string>>>();
  for (const we of workloadEntries) {
    const list = weLabels.get(we.metadata.namespace) ?? [];
    list.push({ ...(we.metadata.labels ?? {}), ...(asObj(spec(we).labels) as Record<string, string>) });
    weLabels.set(we.metadata.namespace, list);
  }
  for (const se of serviceEntries) {
    const s = spec(se);
    const labels: Array<Record<string, string>> = asArr(s.endpoints).map((e) => ({ ...(asObj(asObj(e).labels) as Record<string, string>) }));
    if (s.workloadSelector !== undefined) {
      const selector = Object.entries(asObj(asObj(s.workloadSelector).labels));
      for (const l of weLabels.get(se.metadata.namespace) ?? []) if (selector.every(([k, v]) => l[k] === v)) labels.push(l);
    }
    for (const h of asArr(s.hosts)) {
      if (typeof h !== 'string') continue;
      const host = completeHost(h, se.metadata.namespace, domain);
      if (!endpointsByHost.has(host)) endpointsByHost.set(host, { se, labels });
    }
  }
  for (const dr of drs) {
    const s = spec(dr);
    const host = asStr(s.host);
    if (!host) continue;
    const known = endpointsByHost.get(completeHost(host, dr.metadata.namespace, domain));
    // Without endpoints (DNS, NONE, or none written yet) there is nothing to select from.
    if (!known || known.labels.length === 0) continue;
    asArr(s.subsets).forEach((sub, i) => {
      const want = asObj(asObj(sub).labels);
      const name = asStr(asObj(sub).name) ?? `#${i}`;
      if (known.labels.some((l) => Object.entries(want).every(([k, v]) => l[k] === v))) return;
      reporterFor(dr, problems).warn(
        ['spec', 'subsets', i, Object.keys(want).length > 0 ? 'labels' : 'name'],
        `[IST0173] The Subset ${name} defined in the DestinationRule does not select any endpoint of ${resourceId(known.se)}, which leads to 503 UH (no healthy upstream)`,
      );
    });
  }
}

// ---- Sidecars: several for one namespace or for this gateway (IST0110, IST0111) ------------------

function sidecarSelectors(sidecars: readonly Resource[], opts: AnalyzeOptions, problems: Problem[]): void {
  const withoutSelector = new Map<string, Resource[]>();
  const selectingMe: Resource[] = [];
  for (const sc of sidecars) {
    const labels = asObj(asObj(spec(sc).workloadSelector).labels);
    if (Object.keys(labels).length === 0) {
      const list = withoutSelector.get(sc.metadata.namespace) ?? [];
      list.push(sc);
      withoutSelector.set(sc.metadata.namespace, list);
    } else if (sc.metadata.namespace === opts.gatewayNamespace && Object.entries(labels).every(([k, v]) => opts.labels[k] === v)) {
      selectingMe.push(sc);
    }
  }
  for (const [ns, list] of withoutSelector) {
    if (list.length < 2) continue;
    const names = list.map((r) => r.metadata.name).sort().join(', ');
    for (const sc of list) reporterFor(sc, problems).warn(['metadata', 'name'], `[IST0111] The Sidecars ${names} in namespace ${JSON.stringify(ns)} have no workload selector, which can lead to undefined behavior`);
  }
  if (selectingMe.length > 1) {
    const names = selectingMe.map((r) => r.metadata.name).sort().join(', ');
    for (const sc of selectingMe) {
      reporterFor(sc, problems).warn(['spec', 'workloadSelector'], `[IST0110] The Sidecars ${names} in namespace ${JSON.stringify(opts.gatewayNamespace)} select the same workload (this gateway, labels ${describeLabels(opts.labels)}), which can lead to undefined behavior`);
    }
  }
}

// ---- JWT claim routing on a gateway no RequestAuthentication applies to (IST0149) ----------------

function jwtClaimRoutes(virtualServices: readonly Resource[], gateways: readonly Resource[], ras: readonly Resource[], opts: AnalyzeOptions, problems: Problem[]): void {
  const byKey = new Map(gateways.map((g) => [nsName(g), g]));
  const applies = ras.some((ra) => {
    const ns = ra.metadata.namespace;
    if (ns !== opts.rootNamespace && ns !== opts.gatewayNamespace) return false;
    const sel = asObj(asObj(spec(ra).selector).matchLabels);
    return Object.entries(sel).every(([k, v]) => opts.labels[k] === v);
  });
  if (applies) return;
  for (const vs of virtualServices) {
    const s = spec(vs);
    let found: { path: FieldPath; key: string } | undefined;
    asArr(s.http).forEach((rule, i) =>
      asArr(asObj(rule).match).forEach((m, j) => {
        for (const field of ['headers', 'withoutHeaders']) {
          for (const k of Object.keys(asObj(asObj(m)[field]))) if (!found && routingClaim(k) !== null) found = { path: ['spec', 'http', i, 'match', j, field, k], key: k };
        }
      }),
    );
    if (!found) continue;
    for (const ref of asArr(s.gateways)) {
      if (typeof ref !== 'string' || ref === 'mesh') continue;
      const gw = byKey.get(resolveGatewayRef(ref, vs.metadata.namespace));
      if (!gw || !gatewayApplies(gw, opts.labels)) continue;
      reporterFor(vs, problems).warn(
        found.path,
        `[IST0149] The virtual service uses the JWT claim based routing (key: ${found.key}) but found no request authentication for the gateway (${nsName(gw)}) pod (this gateway, labels ${describeLabels(opts.labels)}). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing; until then the match never matches`,
      );
      break;
    }
  }
}

// ---- Deprecated fields (IST0002), as istio/api marks them ----------------------------------------

interface Deprecation {
  /** Field names as YAML may spell them (camelCase, or the proto's snake_case). */
  names: readonly string[];
  /** Only when the field has this value (an enum value that is deprecated). */
  value?: string;
  message: string;
}

const VS_HTTP_DEPRECATED: ReadonlyArray<[FieldPath, Deprecation]> = [
  [[], { names: ['mirrorPercent', 'mirror_percent'], message: 'HTTPRoute.mirrorPercent is deprecated; use HTTPRoute.mirrorPercentage' }],
  [['fault', 'delay'], { names: ['percent'], message: 'HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage' }],
  [['corsPolicy'], { names: ['allowOrigin', 'allow_origin'], message: 'CorsPolicy.allowOrigin is deprecated; use CorsPolicy.allowOrigins' }],
];

const TRAFFIC_POLICY_DEPRECATED: ReadonlyArray<[FieldPath, Deprecation]> = [
  [['loadBalancer'], { names: ['simple'], value: 'LEAST_CONN', message: 'LoadBalancerSettings.simple LEAST_CONN is deprecated; use LEAST_REQUEST' }],
  [['loadBalancer', 'consistentHash'], { names: ['minimumRingSize', 'minimum_ring_size'], message: 'ConsistentHashLB.minimumRingSize is deprecated; use ConsistentHashLB.ringHash.minimumRingSize' }],
  [['loadBalancer'], { names: ['warmupDurationSecs', 'warmup_duration_secs'], message: 'LoadBalancerSettings.warmupDurationSecs is deprecated; use LoadBalancerSettings.warmup.duration' }],
  [['outlierDetection'], { names: ['consecutiveErrors', 'consecutive_errors'], message: 'OutlierDetection.consecutiveErrors is deprecated; use OutlierDetection.consecutive5xxErrors' }],
];

function deprecatedIn(r: Resource, base: FieldPath, at: unknown, table: ReadonlyArray<[FieldPath, Deprecation]>, problems: Problem[]): void {
  for (const [sub, d] of table) {
    let o: unknown = at;
    for (const seg of sub) o = asObj(o)[seg as string];
    if (!isObj(o)) continue;
    for (const name of d.names) {
      const v = o[name];
      if (v === undefined || (d.value !== undefined && String(v).toUpperCase() !== d.value)) continue;
      reporterFor(r, problems).warn([...base, ...sub, name], `[IST0002] Deprecated: ${d.message}`);
    }
  }
}

function deprecatedFields(r: Resource, problems: Problem[]): void {
  const s = spec(r);
  switch (r.kind) {
    case 'VirtualService':
      asArr(s.http).forEach((h, i) => deprecatedIn(r, ['spec', 'http', i], h, VS_HTTP_DEPRECATED, problems));
      return;
    case 'DestinationRule': {
      const policy = (tp: unknown, base: FieldPath): void => {
        deprecatedIn(r, base, tp, TRAFFIC_POLICY_DEPRECATED, problems);
        asArr(asObj(tp).portLevelSettings).forEach((pl, i) => deprecatedIn(r, [...base, 'portLevelSettings', i], pl, TRAFFIC_POLICY_DEPRECATED, problems));
      };
      policy(s.trafficPolicy, ['spec', 'trafficPolicy']);
      asArr(s.subsets).forEach((sub, i) => policy(asObj(sub).trafficPolicy, ['spec', 'subsets', i, 'trafficPolicy']));
      return;
    }
    case 'Gateway':
      asArr(s.servers).forEach((srv, i) => {
        if (asObj(asObj(srv).port).targetPort !== undefined) reporterFor(r, problems).warn(['spec', 'servers', i, 'port', 'targetPort'], '[IST0002] Deprecated: Port.targetPort is deprecated and has no effect on a Gateway');
      });
      return;
    case 'Sidecar': {
      const out = reporterFor(r, problems);
      const otp = asObj(s.outboundTrafficPolicy);
      if (otp.egressProxy !== undefined || otp.egress_proxy !== undefined) {
        out.warn(['spec', 'outboundTrafficPolicy', otp.egressProxy !== undefined ? 'egressProxy' : 'egress_proxy'], '[IST0002] Deprecated: OutboundTrafficPolicy.egressProxy ignored');
      }
      for (const dir of ['ingress', 'egress']) {
        asArr(s[dir]).forEach((l, i) => {
          if (asObj(asObj(l).port).targetPort !== undefined) out.warn(['spec', dir, i, 'port', 'targetPort'], '[IST0002] Deprecated: SidecarPort.targetPort is deprecated and has no effect');
        });
      }
      return;
    }
    default:
  }
}
