// The one context every builder shares: the inputs (inputs.ts: options, mesh config, resources
// by kind, Istio's defaults, the warnings sink) and the indexes built over them once per
// resolve() — the service registry, DestinationRules by host, PeerAuthentication by port, Secrets
// by name. Builders are pure functions of it: they read the context, return what they build, and
// report what they cannot honour through `ctx.warnings`. Nothing here outlives one resolve().
import { completeHost } from '../../config/hosts.js';
import type { Resource } from '../../config/types.js';
import { secretIndex, type SecretIndex } from '../gateway-tls.js';
import { destinationRuleIndex, type DestinationRuleIndex } from './destination-rules.js';
import { buildInputs, type BuildInputs, type ResolveOptions } from './inputs.js';
import { peerAuthenticationIndex, type PeerAuthenticationIndex } from './peer-authentication.js';
import { kubernetesServices } from './kubernetes.js';
import { buildRegistry, serviceEntryServices, type ServiceRegistry } from './registry.js';

export type { BuildInputs, ResolveOptions, Warn } from './inputs.js';

/** The inputs and the indexes built over them once per resolve(). */
export interface BuildContext extends BuildInputs {
  /** Services (Kubernetes Services, ServiceEntries, the WorkloadEntries they select) by host. */
  readonly registry: ServiceRegistry;
  /** The DestinationRule of a host, as the gateway's namespace sees them. */
  readonly destinationRules: DestinationRuleIndex;
  /** The PeerAuthentication mode of each port of this gateway. */
  readonly peerAuthentication: PeerAuthenticationIndex;
  /** Secrets by `namespace/name` (Gateway and DestinationRule `credentialName`). */
  readonly secrets: SecretIndex;
}

/**
 * The context of one resolve(). The indexes are built here, in this order, so that their
 * warnings come first in the snapshot, in this order: PeerAuthentication, then the registry.
 */
export function createContext(resources: readonly Resource[], opts: ResolveOptions): BuildContext {
  const inputs = buildInputs(resources, opts);
  const peerAuthentication = peerAuthenticationIndex(inputs);
  const registry = buildRegistry([kubernetesServices(inputs), serviceEntryServices(inputs)], (lost, winner) => {
    if (lost.origin !== 'serviceentry' || winner.origin !== 'kubernetes') return;
    const se = lost.source;
    const i = ((se.spec as { hosts?: string[] }).hosts ?? []).findIndex((h) => completeHost(h, se.metadata.namespace, inputs.domain) === lost.host);
    inputs.warnings.warnOnce(se, ['spec', 'hosts', Math.max(0, i)], `host ${lost.host} is also Kubernetes Service ${winner.namespace}/${winner.source.metadata.name}, which takes precedence (as in Istio); this ServiceEntry's ports and endpoints for it are not used`);
  });
  for (const svc of registry.declared) {
    if (svc.aliasFor !== undefined && !registry.get(svc.aliasFor)) {
      inputs.warnings.warnOnce(svc.source, ['spec', 'externalName'], `ExternalName ${svc.aliasFor} is neither a Service nor a ServiceEntry host here: routes to ${svc.host} find no cluster (503). Istio treats an ExternalName Service as an alias of the host it names; declare that host (e.g. with a ServiceEntry) to route to it`);
    }
  }
  return { ...inputs, peerAuthentication, registry, destinationRules: destinationRuleIndex(inputs), secrets: secretIndex(resources) };
}
