// The one context every builder shares: the inputs (inputs.ts: options, mesh config, resources
// by kind, Istio's defaults, the warnings sink) and the indexes built over them once per
// resolve() — the service registry, DestinationRules by host, PeerAuthentication by port, Secrets
// by name. Builders are pure functions of it: they read the context, return what they build, and
// report what they cannot honour through `ctx.warnings`. Nothing here outlives one resolve().
import type { Resource } from '../../config/types.js';
import { secretIndex, type SecretIndex } from '../gateway-tls.js';
import { destinationRuleIndex, type DestinationRuleIndex } from './destination-rules.js';
import { buildInputs, type BuildInputs, type ResolveOptions } from './inputs.js';
import { peerAuthenticationIndex, type PeerAuthenticationIndex } from './peer-authentication.js';
import { buildRegistry, serviceEntryServices, type ServiceRegistry } from './registry.js';

export type { BuildInputs, ResolveOptions, Warn } from './inputs.js';

/** The inputs and the indexes built over them once per resolve(). */
export interface BuildContext extends BuildInputs {
  /** Services (ServiceEntries and their WorkloadEntries) by host. */
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
  const registry = buildRegistry(serviceEntryServices(inputs));
  return { ...inputs, peerAuthentication, registry, destinationRules: destinationRuleIndex(inputs), secrets: secretIndex(resources) };
}
