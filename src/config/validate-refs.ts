// Checks across resources: references (gateways, subsets, delegates, secrets) and conflicts
// (Gateway servers sharing a port, VirtualServices sharing a host on a gateway), with Istio's
// name resolution: short hosts complete in the namespace of the resource that names them, and a
// DestinationRule is only seen from the namespaces its exportTo allows.
import type { FieldPath, Problem, Resource } from './types.js';
import { formatPath, resourceId } from './types.js';
import { completeHost, DEFAULT_CLUSTER_DOMAIN, hostMatches, hostsIntersect } from './hosts.js';
import { asArr, asObj, asStr, isObj, quote, type Reporter } from './schema.js';
import { PROTOCOLS, listenerClass } from './schema-istio.js';

export interface CrossCheckOptions {
  gatewayNamespace: string;
  labels: Record<string, string>;
  /**
   * `validate` without --labels: check the servers of every Gateway, as each workload their
   * selectors name would serve them (a Gateway with another selector never shares its ports).
   */
  allGateways?: boolean;
  /** `--cluster-domain`: short hosts complete to `<name>.<namespace>.svc.<domain>` (default cluster.local). */
  clusterDomain?: string;
}

/** Reports problems of one resource, with the line of the offending field. */
export function reporterFor(r: Resource, problems: Problem[]): Reporter {
  const push = (severity: Problem['severity']) => (path: FieldPath, message: string): void => {
    problems.push({ file: r.source.file, line: r.source.lineOf(path), resource: resourceId(r), path: formatPath(path), message, severity });
  };
  return { error: push('error'), warn: push('warning') };
}

const key = (r: Resource): string => `${r.metadata.namespace}/${r.metadata.name}`;
const spec = (r: Resource): Record<string, unknown> => asObj(r.spec);

/** `mesh`, `ns/name` (`./name` = own namespace), legacy `name.ns[.svc...]`, or `name` in the VirtualService's namespace. */
export function resolveGatewayRef(ref: string, namespace: string): string {
  if (ref === 'mesh') return 'mesh';
  const slash = ref.indexOf('/');
  if (slash >= 0) {
    const ns = ref.slice(0, slash);
    return `${ns === '.' ? namespace : ns}/${ref.slice(slash + 1)}`;
  }
  const parts = ref.split('.');
  if (parts.length > 1) return `${parts[1]}/${parts[0]}`;
  return `${namespace}/${ref}`;
}

/** This gateway's workload labels without `--labels`: those of Istio's ingress gateway deployment. */
export const DEFAULT_GATEWAY_LABELS: Readonly<Record<string, string>> = Object.freeze({ istio: 'ingressgateway' });

/** `a=b,c=d` (as `--labels` takes them), or `(none)`. */
export function formatLabels(labels: Readonly<Record<string, unknown>>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}=${String(v)}`);
  return parts.length > 0 ? parts.join(',') : '(none)';
}

/** The labels in force, said so when they are the default: `istio=ingressgateway (the default)`. */
export function describeLabels(labels: Readonly<Record<string, string>>): string {
  const d = Object.entries(DEFAULT_GATEWAY_LABELS);
  const isDefault = Object.keys(labels).length === d.length && d.every(([k, v]) => labels[k] === v);
  return `${formatLabels(labels)}${isDefault ? ' (the default)' : ''}`;
}

/** Whether a Gateway applies to this gateway process (empty selector, or all its labels match). */
export function gatewayApplies(g: Resource, labels: Readonly<Record<string, string>>): boolean {
  return Object.entries(asObj(spec(g).selector)).every(([k, v]) => labels[k] === v);
}

interface DrInfo {
  r: Resource;
  host: string;
  subsets: Set<string>;
  exportTo: string[];
}

function visibleFrom(dr: DrInfo, ns: string): boolean {
  const e = dr.exportTo;
  if (e.length === 0 || e.includes('*')) return true;
  if (dr.r.metadata.namespace === ns) return !(e.length === 1 && e[0] === '~');
  return e.includes(ns);
}

/** Every destination of a VirtualService, with its path. */
function destinations(vs: Record<string, unknown>): Array<[FieldPath, Record<string, unknown>]> {
  const out: Array<[FieldPath, Record<string, unknown>]> = [];
  for (const kind of ['http', 'tls', 'tcp']) {
    asArr(vs[kind]).forEach((route, i) => {
      const r = asObj(route);
      asArr(r.route).forEach((d, j) => {
        const dest = asObj(d).destination;
        if (isObj(dest)) out.push([['spec', kind, i, 'route', j, 'destination'], dest]);
      });
      if (kind !== 'http') return;
      if (isObj(r.mirror)) out.push([['spec', kind, i, 'mirror'], r.mirror]);
      asArr(r.mirrors).forEach((m, j) => {
        const dest = asObj(m).destination;
        if (isObj(dest)) out.push([['spec', kind, i, 'mirrors', j, 'destination'], dest]);
      });
    });
  }
  return out;
}

/** Every gateway reference of a VirtualService (top level and per match), with its path. */
function gatewayRefs(vs: Record<string, unknown>): Array<[FieldPath, string]> {
  const out: Array<[FieldPath, string]> = [];
  asArr(vs.gateways).forEach((g, i) => typeof g === 'string' && out.push([['spec', 'gateways', i], g]));
  for (const kind of ['http', 'tls', 'tcp']) {
    asArr(vs[kind]).forEach((route, i) => {
      asArr(asObj(route).match).forEach((m, j) => {
        asArr(asObj(m).gateways).forEach((g, k) => typeof g === 'string' && out.push([['spec', kind, i, 'match', j, 'gateways', k], g]));
      });
    });
  }
  return out;
}

const stableJson = (v: unknown): string =>
  JSON.stringify(v, (_k, x: unknown) => (isObj(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1))) : x));

export function crossCheck(accepted: readonly Resource[], opts: CrossCheckOptions, problems: Problem[]): void {
  const ofKind = (k: string): Resource[] => accepted.filter((r) => r.kind === k);
  const domain = opts.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
  const gateways = new Map(ofKind('Gateway').map((g) => [key(g), g]));
  const virtualServices = ofKind('VirtualService');
  const vsByKey = new Map(virtualServices.map((v) => [key(v), v]));
  const secrets = new Map(ofKind('Secret').map((s) => [key(s), s]));
  const drs: DrInfo[] = ofKind('DestinationRule').flatMap((r) => {
    const host = asStr(spec(r).host);
    if (!host) return [];
    const subsets = new Set(asArr(spec(r).subsets).map((s) => asStr(asObj(s).name)).filter((n): n is string => !!n));
    const exportTo = asArr(spec(r).exportTo).filter((e): e is string => typeof e === 'string');
    return [{ r, host: completeHost(host, r.metadata.namespace, domain), subsets, exportTo }];
  });

  /** The DestinationRules Istio would use for a host: exact ones, else the most specific wildcard. */
  const drsFor = (host: string, fromNs: string): DrInfo[] => {
    const visible = drs.filter((d) => visibleFrom(d, fromNs));
    const exact = visible.filter((d) => d.host === host);
    if (exact.length > 0) return exact;
    const wild = visible.filter((d) => d.host.startsWith('*') && hostMatches(d.host, host));
    const longest = Math.max(0, ...wild.map((d) => d.host.length));
    return wild.filter((d) => d.host.length === longest);
  };

  const hostOnGateway = new Map<string, Resource>();
  for (const vs of virtualServices) {
    const out = reporterFor(vs, problems);
    const s = spec(vs);
    const ns = vs.metadata.namespace;

    // Gateways named by the VirtualService must exist.
    for (const [path, ref] of gatewayRefs(s)) {
      const gw = resolveGatewayRef(ref, ns);
      if (gw !== 'mesh' && !gateways.has(gw)) out.error(path, `gateway ${quote(gw)} not found`);
    }

    // Subsets must be defined by a DestinationRule for the destination host that this namespace sees.
    for (const [path, dest] of destinations(s)) {
      const host = asStr(dest.host);
      const subset = asStr(dest.subset);
      if (!host || !subset) continue;
      const fqdn = completeHost(host, ns, domain);
      if (!drsFor(fqdn, ns).some((d) => d.subsets.has(subset))) {
        out.error([...path, 'subset'], `subset ${quote(subset)} is not defined by any DestinationRule for ${fqdn}`);
      }
    }

    // Delegates must exist and be delegates (no hosts).
    asArr(s.http).forEach((route, i) => {
      const d = asObj(asObj(route).delegate);
      const name = asStr(d.name);
      if (!name) return;
      const target = `${asStr(d.namespace) || ns}/${name}`;
      const t = vsByKey.get(target);
      if (!t) out.error(['spec', 'http', i, 'delegate', 'name'], `delegate VirtualService ${quote(target)} not found`);
      else if (asArr(spec(t).hosts).length > 0) out.error(['spec', 'http', i, 'delegate', 'name'], `VirtualService ${quote(target)} cannot be a delegate: it has hosts`);
    });

    // Hosts on the gateways it binds to.
    const hosts = asArr(s.hosts).map((h, i) => [i, h] as const).filter((e): e is readonly [number, string] => typeof e[1] === 'string');
    if (hosts.length === 0) continue;
    const warned = new Set<number>();
    const seenGw = new Set<string>();
    asArr(s.gateways).forEach((ref, gi) => {
      if (typeof ref !== 'string') return;
      const gw = resolveGatewayRef(ref, ns);
      if (gw === 'mesh' || seenGw.has(gw)) return;
      seenGw.add(gw);
      for (const [i, h] of hosts) {
        const k = `${gw}|${completeHost(h, ns, domain)}`;
        const prev = hostOnGateway.get(k);
        if (!prev) hostOnGateway.set(k, vs);
        else if (prev !== vs && !warned.has(i)) {
          warned.add(i);
          out.warn(['spec', 'hosts', i], `host ${quote(h)} is also defined by ${resourceId(prev)} bound to the same gateway ${quote(gw)} (Istio merges their routes in no defined order)`);
        }
      }
      const g = gateways.get(gw);
      if (!g) return;
      const admitted = asArr(spec(g).servers).flatMap((srv) =>
        asArr(asObj(srv).hosts).flatMap((sh) => {
          if (typeof sh !== 'string') return [];
          const slash = sh.indexOf('/');
          const hns = slash < 0 ? '*' : sh.slice(0, slash);
          const name = (slash < 0 ? sh : sh.slice(slash + 1)).toLowerCase();
          const ok = hns === '*' || (hns === '.' ? g.metadata.namespace === ns : hns === ns);
          return ok ? [name] : [];
        }),
      );
      if (!hosts.some(([, h]) => admitted.some((a) => hostsIntersect(a, completeHost(h, ns, domain))))) {
        out.warn(['spec', 'gateways', gi], `[IST0132] no host of this VirtualService is admitted by gateway ${quote(gw)} for namespace ${ns}; Istio ignores this binding`);
      }
    });
  }

  // Servers of the Gateways this process serves: one listener per port; protocols and TLS must agree.
  const allGw = ofKind('Gateway');
  if (!opts.allGateways) {
    checkServers(allGw.filter((g) => gatewayApplies(g, opts.labels)), secrets, opts, problems);
    return;
  }
  // Every workload a selector names (labelled exactly so) serves the Gateways whose selectors it satisfies.
  const workloads = new Map<string, Record<string, string>>([[stableJson(opts.labels), opts.labels]]);
  for (const g of allGw) {
    const sel = Object.fromEntries(Object.entries(asObj(spec(g).selector)).filter((e): e is [string, string] => typeof e[1] === 'string'));
    workloads.set(stableJson(sel), sel);
  }
  const seen = new Set<string>();
  for (const labels of workloads.values()) {
    const found: Problem[] = [];
    checkServers(allGw.filter((g) => gatewayApplies(g, labels)), secrets, opts, found);
    for (const p of found) {
      const k = `${p.file}|${p.line}|${p.path}|${p.message}`;
      if (seen.has(k)) continue;
      seen.add(k);
      problems.push(p);
    }
  }
}

function checkServers(gateways: readonly Resource[], secrets: ReadonlyMap<string, Resource>, opts: CrossCheckOptions, problems: Problem[]): void {
  interface Slot { gw: Resource; protocol: string; cls: string; hosts: Set<string>; tls: string }
  const slots = new Map<string, Slot[]>();
  for (const g of gateways) {
    const out = reporterFor(g, problems);
    asArr(spec(g).servers).forEach((srv, i) => {
      const sv = asObj(srv);
      const p = asObj(sv.port);
      const number = p.number;
      const protocol = asStr(p.protocol)?.toUpperCase();
      if (typeof number !== 'number' || !protocol || !(PROTOCOLS as readonly string[]).includes(protocol)) return;
      const slotKey = `${asStr(sv.bind) ?? ''}|${number}`;
      const existing = slots.get(slotKey) ?? [];
      const cls = listenerClass(protocol);
      const tls = stableJson(sv.tls ?? null);
      const hosts = asArr(sv.hosts).map((h) => (typeof h === 'string' ? h.slice(h.indexOf('/') + 1).toLowerCase() : ''));
      const clash = existing.find((e) => e.cls !== cls);
      if (clash) {
        out.error(['spec', 'servers', i, 'port', 'protocol'], `protocol ${protocol} conflicts with the ${clash.protocol} server on port ${number} of ${resourceId(clash.gw)}: plaintext HTTP, TLS and TCP servers need different ports`);
      } else {
        hosts.forEach((h, k) => {
          if (!h) return;
          const other = existing.find((e) => e.hosts.has(h) && (e.protocol !== protocol || e.tls !== tls));
          if (other) out.error(['spec', 'servers', i, 'hosts', k], `conflicting server for host ${quote(h)} on port ${number}: already defined by ${resourceId(other.gw)}`);
        });
      }
      existing.push({ gw: g, protocol, cls, hosts: new Set(hosts.filter(Boolean)), tls });
      slots.set(slotKey, existing);

      // credentialName: a Secret in the gateway's namespace, then in the Gateway's namespace.
      const t = asObj(sv.tls);
      const mode = asStr(t.mode) ?? 'PASSTHROUGH';
      if (!['SIMPLE', 'MUTUAL', 'OPTIONAL_MUTUAL'].includes(mode)) return;
      // ACME Gateways (controlplane/gateway-tls.ts): credentialName names the issued certificate.
      if (mode === 'SIMPLE' && g.metadata.annotations?.['gatehouse.io/acme-directory']) return;
      const creds: Array<[FieldPath, string]> = [];
      if (typeof t.credentialName === 'string') creds.push([['spec', 'servers', i, 'tls', 'credentialName'], t.credentialName]);
      asArr(t.credentialNames).forEach((c, j) => typeof c === 'string' && creds.push([['spec', 'servers', i, 'tls', 'credentialNames', j], c]));
      for (const [path, raw] of creds) {
        const name = raw.replace(/^kubernetes:\/\//, '');
        if (name.includes('/')) continue;
        const namespaces = [...new Set([opts.gatewayNamespace, g.metadata.namespace])];
        const found = namespaces.map((n) => secrets.get(`${n}/${name}`)).find((x) => x !== undefined);
        if (!found) {
          out.warn(path, `secret ${quote(name)} not found in namespace ${namespaces.join(' or ')}`);
          continue;
        }
        const doc = asObj(found.spec);
        const keys = new Set([...Object.keys(asObj(doc.data)), ...Object.keys(asObj(doc.stringData))]);
        if (!((keys.has('tls.crt') && keys.has('tls.key')) || (keys.has('cert') && keys.has('key')))) {
          out.warn(path, `secret ${quote(name)} has no tls.crt and tls.key (or cert and key)`);
        }
        if (mode !== 'SIMPLE' && !keys.has('ca.crt') && !keys.has('cacert') && !secrets.has(`${found.metadata.namespace}/${name}-cacert`)) {
          out.warn(path, `secret ${quote(name)} has no ca.crt (or cacert) and there is no secret ${quote(`${name}-cacert`)}; mode ${mode} needs a CA`);
        }
      }
    });
  }
}


export interface GatewaySelection {
  /** `namespace/name` and where each Gateway is defined. */
  selected: Array<{ gateway: string; file: string; line: number }>;
  /** The Gateways whose selector these labels do not satisfy, with the selector and its line. */
  skipped: Array<{ gateway: string; file: string; line: number; selector: string }>;
}

/** Which Gateways a gateway with these labels serves, and which it skips (and why). */
export function gatewaySelection(resources: readonly Resource[], labels: Readonly<Record<string, string>>): GatewaySelection {
  const out: GatewaySelection = { selected: [], skipped: [] };
  for (const g of resources) {
    if (g.kind !== 'Gateway') continue;
    if (gatewayApplies(g, labels)) out.selected.push({ gateway: key(g), file: g.source.file, line: g.source.line });
    else out.skipped.push({ gateway: key(g), file: g.source.file, line: g.source.lineOf(['spec', 'selector']), selector: formatLabels(asObj(spec(g).selector)) });
  }
  return out;
}
