// Objects from the API are accepted one by one (in a cluster many teams write configuration, and
// one bad object must not hold back the others): an object whose current version has an error is
// left out and its last good version - the one the configuration serving was built from - is used
// instead, if that one is still valid beside the others; otherwise the object is left out of this
// version (it comes back by itself once the set is consistent again, e.g. when the Gateway it
// names returns). An error can be blamed on another object than the one it is reported on: a
// certificate that does not load is reported on the Gateway naming its Secret, but it is the new
// version of the Secret that is refused.
// Files stay all-or-nothing: their errors are the caller's to handle.
import type { Problem, Resource } from '../types.js';
import { toResource, type StoredObject } from './objects.js';

export interface AcceptInput {
  /** Resources from `--config` files, first in the set (they win a kind/namespace/name clash). */
  files: readonly Resource[];
  /** The API objects, current versions, in Istio's order. */
  objects: readonly StoredObject[];
  /** What the configuration serving was built from, by id. */
  lastGood: ReadonlyMap<string, StoredObject>;
  /** Every problem of a set of resources (only errors decide). */
  check(resources: readonly Resource[]): Problem[];
  /**
   * The objects an error should be blamed on instead of the one it is reported on, if any of them
   * changed since the last good configuration: e.g. the Secret a Gateway names.
   */
  culprits?(p: Problem, set: readonly Resource[]): string[];
}

export interface Rejection {
  /** The version that was refused. */
  object: StoredObject;
  /** Its errors (as found the first time it was refused in this round). */
  problems: Problem[];
  /** The version used instead (its last good one), or null: the object is left out. */
  kept: StoredObject | null;
}

export interface AcceptResult {
  /** Files first, then the accepted objects, in order. */
  resources: Resource[];
  /** The objects used, by id: the next round's `lastGood`. */
  accepted: Map<string, StoredObject>;
  /** The final set's problems: the files' errors (if any) and every warning. */
  problems: Problem[];
  rejected: Rejection[];
}

const resources = new WeakMap<StoredObject, Resource>();
function resourceOf(o: StoredObject): Resource {
  let r = resources.get(o);
  if (!r) resources.set(o, (r = toResource(o)));
  return r;
}

export function acceptObjects(input: AcceptInput): AcceptResult {
  const chosen = new Map<string, StoredObject>();
  for (const o of input.objects) chosen.set(o.id, o);
  const current = new Map(chosen);
  const rejected = new Map<string, Rejection>();
  /** The object's current version is in the set, and it is not its last good one. */
  const changed = (id: string): boolean => {
    const now = chosen.get(id);
    return now !== undefined && now === current.get(id) && now.fingerprint !== input.lastGood.get(id)?.fingerprint;
  };
  // Each round replaces a current version by its last good one, or leaves an object out: at most
  // two rounds per object.
  const limit = 2 * input.objects.length + 2;
  for (let round = 0; ; round++) {
    const set = [...input.files, ...[...chosen.values()].map(resourceOf)];
    const problems = input.check(set);
    const errors = new Map<string, Problem[]>();
    for (const p of problems) {
      if (p.severity !== 'error' || p.file !== '') continue;
      const blamed = (input.culprits?.(p, set) ?? []).filter(changed);
      const targets = blamed.length > 0 ? blamed : chosen.has(p.resource) ? [p.resource] : [];
      for (const id of targets) {
        let list = errors.get(id);
        if (!list) errors.set(id, (list = []));
        list.push(p);
      }
    }
    if (errors.size === 0 || round > limit) {
      return { resources: set, accepted: chosen, problems: problems.filter((p) => p.file !== '' || p.severity === 'warning'), rejected: [...rejected.values()] };
    }
    for (const [id, list] of errors) {
      const now = chosen.get(id)!;
      const good = input.lastGood.get(id);
      const fallback = now === current.get(id) && good && good.fingerprint !== now.fingerprint ? good : null;
      const r = rejected.get(id);
      // The second time round, the last good version failed too: the object is left out.
      if (r) r.kept = fallback;
      else rejected.set(id, { object: current.get(id) ?? now, problems: list, kept: fallback });
      if (fallback) chosen.set(id, fallback);
      else chosen.delete(id);
    }
  }
}

/**
 * The names of the Secrets the configuration may read (`credentialName` of Gateway servers and of
 * DestinationRule TLS settings, and their `-cacert` companions): only those Secrets take part,
 * whatever else a namespace holds.
 */
export function referencedSecrets(set: readonly Pick<Resource, 'kind' | 'spec'>[]): Set<string> {
  const names = new Set<string>();
  const add = (v: unknown): void => {
    if (typeof v !== 'string' || v === '') return;
    const name = v.replace(/^kubernetes:\/\//, '');
    for (const n of [name, name.slice(name.lastIndexOf('/') + 1)]) {
      names.add(n);
      names.add(`${n}-cacert`);
    }
  };
  const tlsOf = (policy: unknown): void => {
    if (typeof policy !== 'object' || policy === null) return;
    const p = policy as { tls?: { credentialName?: unknown }; portLevelSettings?: Array<{ tls?: { credentialName?: unknown } }> };
    add(p.tls?.credentialName);
    for (const pl of p.portLevelSettings ?? []) add(pl?.tls?.credentialName);
  };
  for (const r of set) {
    const spec = r.spec as Record<string, any>;
    if (r.kind === 'Gateway') {
      for (const s of Array.isArray(spec?.servers) ? spec.servers : []) {
        add(s?.tls?.credentialName);
        for (const n of Array.isArray(s?.tls?.credentialNames) ? s.tls.credentialNames : []) add(n);
      }
    } else if (r.kind === 'DestinationRule') {
      tlsOf(spec?.trafficPolicy);
      for (const sub of Array.isArray(spec?.subsets) ? spec.subsets : []) tlsOf(sub?.trafficPolicy);
    }
  }
  return names;
}

/** The value at a field path as problems write it (`spec.servers[0].tls.credentialName`). */
export function valueAt(root: unknown, path: string): unknown {
  let cur: unknown = root;
  for (const seg of path.match(/[^.[\]]+/g) ?? []) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = Array.isArray(cur) ? cur[Number(seg)] : (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

/**
 * For a certificate error reported on a Gateway's or DestinationRule's `credentialName`: the
 * Secrets it may come from (`Secret/<ns>/<name>` and `<name>-cacert`, in the gateway's namespace
 * and the resource's own).
 */
export function credentialCulprits(gatewayNamespace: string) {
  return (p: Problem, set: readonly Resource[]): string[] => {
    const m = /^(Gateway|DestinationRule)\/([^/]+)\/(.+)$/.exec(p.resource);
    if (!m || !/credentialNames?(\[\d+\])?$/.test(p.path)) return [];
    const r = set.find((x) => x.kind === m[1] && x.metadata.namespace === m[2] && x.metadata.name === m[3]);
    if (!r) return [];
    // Problems on a Gateway are at `spec....`; the resource's spec is its `spec`.
    const v = valueAt({ spec: r.spec }, p.path);
    if (typeof v !== 'string' || v === '') return [];
    const name = v.slice(v.lastIndexOf('/') + 1);
    const out: string[] = [];
    for (const ns of new Set([gatewayNamespace, m[2]!])) out.push(`Secret/${ns}/${name}`, `Secret/${ns}/${name}-cacert`);
    return out;
  };
}
