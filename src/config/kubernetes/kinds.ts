// What `--kubernetes` watches, and where: every Istio kind Gatehouse reads (the newest version the
// API server serves, as istiod prefers), the Secrets `credentialName` may name, the mesh
// ConfigMap `istio` of the root namespace, and Services, EndpointSlices and Pods for the service
// registry. For each, the exact RBAC rule a missing permission calls for.
import { NETWORKING_KINDS, NETWORKING_VERSIONS, SECURITY_KINDS, SECURITY_VERSIONS, readsKind } from '../types.js';

export interface WatchedKind {
  kind: string;
  /** API group ('' for the core group). */
  group: string;
  /** Plural resource name, as in the URL and in RBAC rules. */
  resource: string;
  /** Versions Gatehouse reads, newest first: the first one the server serves is watched. */
  versions: readonly string[];
  /** Which namespaces: the watched ones, those plus the gateway's (Secrets), or the root one (mesh). */
  scope: 'watched' | 'secrets' | 'root';
  fieldSelector?: string;
  /** Part of an optional API group (a CRD): absent means "not installed", not an error. */
  crd: boolean;
}

const PLURALS: Readonly<Record<string, string>> = {
  Gateway: 'gateways',
  VirtualService: 'virtualservices',
  DestinationRule: 'destinationrules',
  ServiceEntry: 'serviceentries',
  WorkloadEntry: 'workloadentries',
  Sidecar: 'sidecars',
  PeerAuthentication: 'peerauthentications',
  RequestAuthentication: 'requestauthentications',
  AuthorizationPolicy: 'authorizationpolicies',
  Telemetry: 'telemetries',
};

const versionsOf = (apiVersions: readonly string[]): string[] => apiVersions.map((v) => v.slice(v.indexOf('/') + 1));

/**
 * Secrets that cannot hold a certificate are left out on the server side, as istiod's
 * credentials controller does (Helm release records are large and many).
 */
export const SECRETS_FIELD_SELECTOR = 'type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token';

/** Pods that will never serve again carry no endpoint. */
export const PODS_FIELD_SELECTOR = 'status.phase!=Failed,status.phase!=Succeeded';

/** Every kind `--kubernetes` watches. */
export function watchedKinds(): WatchedKind[] {
  const out: WatchedKind[] = [];
  for (const kind of NETWORKING_KINDS) out.push({ kind, group: 'networking.istio.io', resource: PLURALS[kind]!, versions: versionsOf(NETWORKING_VERSIONS), scope: 'watched', crd: true });
  for (const kind of SECURITY_KINDS) out.push({ kind, group: 'security.istio.io', resource: PLURALS[kind]!, versions: versionsOf(SECURITY_VERSIONS), scope: 'watched', crd: true });
  // Telemetry is watched once the configuration layer reads it.
  const telemetry = ['v1', 'v1alpha1'].filter((v) => readsKind(`telemetry.istio.io/${v}`, 'Telemetry'));
  if (telemetry.length > 0) out.push({ kind: 'Telemetry', group: 'telemetry.istio.io', resource: 'telemetries', versions: telemetry, scope: 'watched', crd: true });
  out.push(
    { kind: 'Secret', group: '', resource: 'secrets', versions: ['v1'], scope: 'secrets', fieldSelector: SECRETS_FIELD_SELECTOR, crd: false },
    { kind: 'ConfigMap', group: '', resource: 'configmaps', versions: ['v1'], scope: 'root', fieldSelector: 'metadata.name=istio', crd: false },
    { kind: 'Service', group: '', resource: 'services', versions: ['v1'], scope: 'watched', crd: false },
    { kind: 'EndpointSlice', group: 'discovery.k8s.io', resource: 'endpointslices', versions: ['v1'], scope: 'watched', crd: false },
    { kind: 'Pod', group: '', resource: 'pods', versions: ['v1'], scope: 'watched', fieldSelector: PODS_FIELD_SELECTOR, crd: false },
  );
  return out;
}

/**
 * The namespaces a kind is watched in; `null` is all of them (one cluster-wide watch).
 * `--watch-namespaces` limits Istio config, Services, EndpointSlices and Pods; Secrets are also
 * read in the gateway's own namespace (where `credentialName` is looked up first); the mesh
 * ConfigMap only in the root namespace.
 */
export function namespacesFor(k: WatchedKind, o: { watchNamespaces: readonly string[] | null; gatewayNamespace: string; rootNamespace: string }): string[] | null {
  if (k.scope === 'root') return [o.rootNamespace];
  if (!o.watchNamespaces) return null;
  const ns = new Set(o.watchNamespaces);
  if (k.scope === 'secrets') ns.add(o.gatewayNamespace);
  return [...ns].sort();
}

/** `group/version` as in an apiVersion ('v1' for the core group). */
export function apiVersionOf(group: string, version: string): string {
  return group ? `${group}/${version}` : version;
}

/** The collection path of a kind at one version, cluster-wide or in one namespace. */
export function collectionPath(k: Pick<WatchedKind, 'group' | 'resource'>, version: string, namespace: string | null): string {
  const base = k.group ? `/apis/${k.group}/${version}` : `/api/${version}`;
  return namespace === null ? `${base}/${k.resource}` : `${base}/namespaces/${encodeURIComponent(namespace)}/${k.resource}`;
}

/**
 * The RBAC rule that lets Gatehouse list and watch a kind, written as it goes into a ClusterRole
 * (or a Role in the namespace, for a namespaced watch).
 */
export function rbacRule(k: Pick<WatchedKind, 'group' | 'resource'>, namespace: string | null): string {
  const rule = `apiGroups: [${JSON.stringify(k.group)}], resources: [${JSON.stringify(k.resource)}], verbs: ["list","watch"]`;
  return namespace === null ? `${rule} (in a ClusterRole)` : `${rule} (in a Role in namespace ${JSON.stringify(namespace)}, or a ClusterRole)`;
}

/** `virtualservices.networking.istio.io`, `secrets` */
export function qualifiedResource(k: Pick<WatchedKind, 'group' | 'resource'>): string {
  return k.group ? `${k.resource}.${k.group}` : k.resource;
}
