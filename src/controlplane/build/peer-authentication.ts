// PeerAuthentication → the mTLS mode of each port of this gateway (security hand-off: the
// listeners builder applies it to the servers that verify client certificates).
import type { Resource } from '../../config/types.js';
import { resourceId } from '../../config/types.js';
import type { BuildInputs, PeerAuthenticationSpec } from './inputs.js';
import { labelsMatch } from './visibility.js';

export type MtlsMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE';

/** The mode that applies to a port, and the policy (`Kind/ns/name`) that sets it; undefined: none. */
export type PeerAuthenticationIndex = (port: number) => { mode: MtlsMode; policy: string } | undefined;

/**
 * The PeerAuthentication mode of this gateway per port, as Istio scopes it: a policy in the root
 * namespace (no selector) applies to everything, one in the gateway's namespace without a
 * selector to the namespace, one there whose selector matches `--labels` to this workload (with
 * `portLevelMtls`). The narrowest wins; UNSET inherits from the wider one. With no policy at all
 * (or only UNSET) the function answers undefined: the servers keep their own TLS mode. Several
 * policies at one level: the first by name applies (Istio takes the oldest), the others are reported.
 */
export function peerAuthenticationIndex({ opts, config, warnings }: BuildInputs): PeerAuthenticationIndex {
  const policies = config.peerAuthentications;
  const root = opts.mesh.rootNamespace;
  const pick = (list: Array<Resource<PeerAuthenticationSpec>>, level: string): Resource<PeerAuthenticationSpec> | undefined => {
    const sorted = [...list].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
    for (const other of sorted.slice(1)) warnings.warn(other, ['spec'], `more than one ${level} PeerAuthentication applies to this gateway; ${resourceId(sorted[0]!)} is used, this one is ignored`);
    return sorted[0];
  };
  const hasSelector = (p: Resource<PeerAuthenticationSpec>): boolean => p.spec.selector?.matchLabels !== undefined && Object.keys(p.spec.selector.matchLabels).length > 0;
  const mesh = pick(policies.filter((p) => p.metadata.namespace === root && !hasSelector(p) && root !== opts.namespace), 'mesh-wide');
  const ns = pick(policies.filter((p) => p.metadata.namespace === opts.namespace && !hasSelector(p)), 'namespace-wide');
  const workload = pick(policies.filter((p) => p.metadata.namespace === opts.namespace && hasSelector(p) && labelsMatch(p.spec.selector!.matchLabels!, opts.labels)), 'workload');
  if (!mesh && !ns && !workload) return () => undefined;
  const set = (m: string | undefined): m is MtlsMode => m === 'STRICT' || m === 'PERMISSIVE' || m === 'DISABLE';
  return (port) => {
    const portMode = workload?.spec.portLevelMtls?.[String(port)]?.mode;
    if (set(portMode)) return { mode: portMode, policy: resourceId(workload!) };
    for (const p of [workload, ns, mesh]) {
      const m = p?.spec.mtls?.mode;
      if (p && set(m)) return { mode: m, policy: resourceId(p) };
    }
    return undefined;
  };
}
