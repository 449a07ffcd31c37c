// DestinationRules: which rule applies to a host (as the gateway's namespace sees them), and how
// a subset's and a port's settings merge into the rule's traffic policy.
import { completeHost, hostMatches } from '../../config/hosts.js';
import type { DestinationRuleSpec, Resource, TrafficPolicy } from '../../config/types.js';
import type { BuildInputs } from './inputs.js';
import { exportedTo } from './visibility.js';

export interface DestinationRuleIndex {
  /** The rule for a host: an exact host first, else the longest wildcard that matches. */
  forHost(host: string): Resource<DestinationRuleSpec> | undefined;
}

export function destinationRuleIndex({ opts, config, domain }: BuildInputs): DestinationRuleIndex {
  // By host, exportTo-visible to the gateway's namespace.
  const byHost = new Map<string, Resource<DestinationRuleSpec>>();
  for (const dr of config.destinationRules) {
    if (!exportedTo(dr.spec.exportTo, dr.metadata.namespace, opts.namespace)) continue;
    const host = completeHost(dr.spec.host, dr.metadata.namespace, domain);
    const prev = byHost.get(host);
    // A rule in the gateway's own namespace wins over one elsewhere (Istio's lookup order).
    if (!prev || (dr.metadata.namespace === opts.namespace && prev.metadata.namespace !== opts.namespace)) byHost.set(host, dr);
  }
  return {
    forHost(host) {
      const exact = byHost.get(host);
      if (exact) return exact;
      let best: Resource<DestinationRuleSpec> | undefined;
      let bestLen = -1;
      for (const [pattern, dr] of byHost) {
        if (pattern.includes('*') && hostMatches(pattern, host) && pattern.length > bestLen) {
          best = dr;
          bestLen = pattern.length;
        }
      }
      return best;
    },
  };
}

/** Istio: a subset's policy overrides the rule's policy field by field (each top-level setting whole). */
export function mergePolicy(base: TrafficPolicy | undefined, over: TrafficPolicy | undefined): TrafficPolicy | undefined {
  if (!over) return base;
  if (!base) return over;
  const merged: TrafficPolicy = { ...base };
  for (const k of ['loadBalancer', 'connectionPool', 'outlierDetection', 'tls', 'tunnel', 'proxyProtocol'] as const) {
    if (over[k] !== undefined) (merged as Record<string, unknown>)[k] = over[k];
  }
  if (over.portLevelSettings) merged.portLevelSettings = over.portLevelSettings;
  return merged;
}

/** Istio: a matching portLevelSettings entry replaces each setting it specifies. */
export function portPolicy(policy: TrafficPolicy | undefined, port: number): TrafficPolicy | undefined {
  const pl = policy?.portLevelSettings?.find((p) => p.port?.number === port);
  if (!pl) return policy;
  const { port: _port, ...rest } = pl;
  return mergePolicy(policy, rest);
}

/** The traffic policy of one destination (host, subset, port), or undefined without a rule. */
export function destinationPolicy(rules: DestinationRuleIndex, host: string, subset: string, port: number): TrafficPolicy | undefined {
  const dr = rules.forHost(host);
  if (!dr) return undefined;
  const sub = subset ? dr.spec.subsets?.find((x) => x.name === subset) : undefined;
  return portPolicy(mergePolicy(dr.spec.trafficPolicy, sub?.trafficPolicy), port);
}

// DestinationRule settings the data plane does not enforce yet: said once per rule, not dropped silently.
const UNENFORCED: Array<[Array<string>, string]> = [
  [['loadBalancer', 'localityLbSetting'], 'locality load balancing is not implemented by Gatehouse yet; ignored'],
];

/** Warnings for the settings of every DestinationRule that Gatehouse does not enforce. */
export function destinationRuleWarnings({ config, warnings }: BuildInputs): void {
  for (const dr of config.destinationRules) {
    const policies: Array<[Array<string | number>, TrafficPolicy | undefined]> = [[['spec', 'trafficPolicy'], dr.spec.trafficPolicy]];
    (dr.spec.subsets ?? []).forEach((s, i) => policies.push([['spec', 'subsets', i, 'trafficPolicy'], s.trafficPolicy]));
    for (const [base, policy] of policies) {
      const levels: Array<[Array<string | number>, unknown]> = [[base, policy]];
      (policy?.portLevelSettings ?? []).forEach((pl, i) => levels.push([[...base, 'portLevelSettings', i], pl]));
      for (const [path, p] of levels) {
        for (const [fields, message] of UNENFORCED) {
          let v: unknown = p;
          for (const f of fields) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[f] : undefined;
          if (v !== undefined && !(fields[0] === 'tls' && (v as { mode?: string }).mode === 'DISABLE')) warnings.warn(dr, [...path, ...fields], message);
        }
      }
    }
  }
}
