// The ViewSource of the embedded control plane: what each kind of xDS client gets from the one
// snapshot the gateway itself routes by.
// - proxyless gRPC clients: the sidecar view of their namespace, in the proxyless dialect
//   (src/controlplane/proxyless.ts): API listeners `host:port`, routes `outbound|port||host`,
//   EDS clusters, endpoints;
// - Gatehouse replicas (node metadata GENERATOR "gatehouse"): the gateway's own listeners,
//   routes, clusters and endpoints, and its certificates inlined over SDS (a replica has none of
//   the control plane's files; ACME certificates come already issued);
// - other clients (Envoy): the sidecar view of their namespace, encoded as Envoy reads it.
// With a mesh CA (setMesh), every client also gets SDS `ROOTCA` (the mesh root) and `default`: a
// workload certificate for its own identity, `spiffe://<td>/ns/<ns>/sa/<SERVICE_ACCOUNT metadata,
// else default>` (replicas: `sa/gatehouse`), issued on first ask, cached per identity and re-issued
// near expiry (secretsChanged, which the gateway calls on each rotation of its own, re-checks).
// Encoded bytes are cached per resource object, so shared clusters are encoded once per version.
import { MESH_CERT_SECRET, MESH_ROOT_SECRET, type Cluster, type ClusterLoadAssignment, type Secret, type SidecarView, type Snapshot } from '../snapshot.js';
import { toProxylessCluster, toProxylessRoutes } from '../proxyless.js';
import { encodeSnapshotResource } from './codec.js';
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE } from './protos.js';
import type { ClientInfo, ViewSource, XdsView } from './view.js';

/** PEM material of a secret as the data plane holds it now (files read, ACME issued). */
export interface SecretMaterial {
  certPem?: string;
  keyPem?: string;
  caPem?: string;
}

/** The current material of a snapshot secret (`secret` is its snapshot entry, for other label sets). */
export type SecretLookup = (name: string, secret: Secret) => SecretMaterial | undefined;

type Resources = Map<string, Map<string, Uint8Array>>;

/** The mesh CA as the views need it (src/tls/mesh-ca.ts WorkloadCertificates). */
export interface MeshCertificates {
  trustDomain: string;
  rootPem: string;
  /** A certificate that is still fresh (before its renewal time). */
  cached(spiffeId: string): { certChainPem: string; keyPem: string; serial: string } | undefined;
  /** The last certificate issued, while it has not expired (served while its successor is issued). */
  current(spiffeId: string): { certChainPem: string; keyPem: string; serial: string } | undefined;
  get(spiffeId: string): Promise<unknown>;
}

/** The identity a client's SDS `default` certificate is issued for. */
export function clientSpiffeId(client: ClientInfo, trustDomain: string): string {
  const sa = client.metadata['SERVICE_ACCOUNT'];
  const ns = clientNamespace(client) || 'default';
  const account = typeof sa === 'string' && /^[^/\s]+$/.test(sa) ? sa : client.kind === 'gatehouse' ? 'gatehouse' : 'default';
  return `spiffe://${trustDomain}/ns/${ns.replace(/[/\s]/g, '_')}/sa/${account}`;
}

/** The namespace of a client: metadata NAMESPACE, else Istio's node id `type~ip~pod.ns~ns.svc.cluster.local`. */
export function clientNamespace(client: ClientInfo): string {
  const meta = client.metadata['NAMESPACE'];
  if (typeof meta === 'string' && meta !== '') return meta;
  const parts = client.id.split('~');
  const pod = parts[2];
  if (pod && pod.includes('.')) return pod.slice(pod.indexOf('.') + 1);
  const domain = parts[3];
  if (domain && domain.includes('.')) return domain.slice(0, domain.indexOf('.'));
  return '';
}

/** Node metadata LABELS (a replica's `--labels`), when it sends them. */
function replicaLabels(client: ClientInfo): Record<string, string> | undefined {
  const l = client.metadata['LABELS'];
  if (!l || typeof l !== 'object' || Array.isArray(l)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(l)) if (typeof v === 'string') out[k] = v;
  return out;
}

export class SnapshotViews implements ViewSource {
  #snapshot: Snapshot | null = null;
  #secretsVersion = 0;
  readonly #secrets: SecretLookup;
  /** View per (kind, namespace) for the current snapshot and secrets version. */
  #views = new Map<string, XdsView>();
  #encoded = new WeakMap<object, Uint8Array>();
  /**
   * Encoded bytes by content (type + JSON), this version's and the previous one's: every resolve()
   * makes new objects, but most resources of a new version are unchanged and are not re-encoded.
   */
  #byContent = new Map<string, Uint8Array>();
  #byContentPrev = new Map<string, Uint8Array>();

  readonly #resolveFor: ((labels: Record<string, string>) => Snapshot) | undefined;
  #mesh: MeshCertificates | null = null;
  /** Issuances in flight, by identity. */
  readonly #issuing = new Set<string>();
  /** Called when a certificate a client waits for was issued: the server should push. */
  onMeshIssued: () => void = () => undefined;

  /** Serve SDS `default` / `ROOTCA` from this mesh CA. */
  setMesh(mesh: MeshCertificates): void {
    this.#mesh = mesh;
    this.#views.clear();
  }

  /**
   * `resolveFor`: the gateway snapshot for other workload labels (a replica whose node metadata
   * LABELS differ from the control plane's own gets the Gateways that select it, as istiod does).
   */
  constructor(secrets: SecretLookup, resolveFor?: (labels: Record<string, string>) => Snapshot) {
    this.#secrets = secrets;
    this.#resolveFor = resolveFor;
  }

  /** A new configuration version. */
  update(snapshot: Snapshot): void {
    if (snapshot === this.#snapshot) return;
    this.#snapshot = snapshot;
    this.#views.clear();
    this.#byContentPrev = this.#byContent;
    this.#byContent = new Map();
  }

  /** Certificates changed (rotation, ACME issuance): replicas' SDS views are rebuilt. */
  secretsChanged(): void {
    this.#secretsVersion++;
    for (const k of [...this.#views.keys()]) if (k.startsWith('gatehouse') || k.includes('|spiffe://')) this.#views.delete(k);
  }

  version(): string {
    return this.#snapshot?.version ?? '';
  }

  view(client: ClientInfo): XdsView {
    const s = this.#snapshot;
    if (!s) return EMPTY;
    const labels = client.kind === 'gatehouse' ? replicaLabels(client) : undefined;
    const ns = client.kind === 'gatehouse' ? '' : clientNamespace(client);
    const mesh = this.#mesh;
    const identity = mesh ? clientSpiffeId(client, mesh.trustDomain) : '';
    // Per identity only when a mesh certificate exists: views of one namespace share otherwise.
    const cert = mesh ? mesh.current(identity) : undefined;
    const key = `${client.kind}|${ns}|${labels ? JSON.stringify(Object.entries(labels).sort()) : ''}${cert ? `|${identity}` : ''}`;
    let v = this.#views.get(key);
    if (!v) {
      if (client.kind === 'gatehouse') {
        const own = !labels || !this.#resolveFor;
        v = this.#gatewayView(own ? s : { ...this.#resolveFor!(labels), version: s.version });
      } else {
        v = this.#sidecarView(s, s.sidecar.get(ns) ?? s.sidecar.get('') ?? EMPTY_SIDECAR, client.kind === 'proxyless');
      }
      if (mesh) v = this.#withMesh(v, mesh, cert);
      this.#views.set(key, v);
    }
    if (mesh && !mesh.cached(identity)) this.#issue(mesh, identity);
    return v;
  }

  /** SDS `ROOTCA` and (once issued) `default` added to a view. */
  #withMesh(v: XdsView, mesh: MeshCertificates, cert: ReturnType<MeshCertificates['cached']>): XdsView {
    const r: Resources = new Map([...v.resources].map(([t, m]) => [t, t === SECRET_TYPE ? new Map(m) : (m as Map<string, Uint8Array>)]));
    let secrets = r.get(SECRET_TYPE);
    if (!secrets) r.set(SECRET_TYPE, (secrets = new Map()));
    // A Gateway credential of the same name keeps its place.
    if (!secrets.has(MESH_ROOT_SECRET)) secrets.set(MESH_ROOT_SECRET, encodeSnapshotResource(SECRET_TYPE, { name: MESH_ROOT_SECRET, validation_context: { trusted_ca: { inline_string: mesh.rootPem } } } satisfies Secret));
    if (cert && !secrets.has(MESH_CERT_SECRET)) {
      const secret: Secret = { name: MESH_CERT_SECRET, tls_certificate: { certificate_chain: { inline_string: cert.certChainPem }, private_key: { inline_string: cert.keyPem } } };
      secrets.set(MESH_CERT_SECRET, encodeSnapshotResource(SECRET_TYPE, secret));
    }
    return { version: cert ? `${v.version}.c${cert.serial.slice(0, 8)}` : v.version, resources: r };
  }

  #issue(mesh: MeshCertificates, identity: string): void {
    if (this.#issuing.has(identity)) return;
    this.#issuing.add(identity);
    mesh.get(identity).then(
      () => {
        this.#issuing.delete(identity);
        // Views are rebuilt with the new certificate (resources stay encoded), then pushed.
        this.#views.clear();
        this.onMeshIssued();
      },
      () => this.#issuing.delete(identity),
    );
  }

  #encode(typeUrl: string, obj: object): Uint8Array {
    let b = this.#encoded.get(obj);
    if (b) return b;
    const key = `${typeUrl}\n${JSON.stringify(obj)}`;
    b = this.#byContent.get(key) ?? this.#byContentPrev.get(key) ?? encodeSnapshotResource(typeUrl, obj);
    this.#byContent.set(key, b);
    this.#encoded.set(obj, b);
    return b;
  }

  #sidecarView(s: Snapshot, view: SidecarView, proxyless: boolean): XdsView {
    const r: Resources = new Map([
      [LISTENER_TYPE, new Map()],
      [ROUTE_TYPE, new Map()],
      [CLUSTER_TYPE, new Map()],
      [ENDPOINT_TYPE, new Map()],
    ]);
    for (const [name, l] of view.listeners) r.get(LISTENER_TYPE)!.set(name, this.#encode(LISTENER_TYPE, l));
    for (const [name, rc] of view.routes) {
      r.get(ROUTE_TYPE)!.set(name, this.#encode(ROUTE_TYPE, proxyless ? toProxylessRoutes(rc, s.clusters) : rc));
    }
    for (const [name, c] of s.clusters) {
      if (c.metadata.filter_metadata.istio.kind !== 'service') continue;
      const cla: ClusterLoadAssignment | undefined = s.endpoints.get(name);
      if (proxyless) {
        r.get(CLUSTER_TYPE)!.set(name, this.#encode(CLUSTER_TYPE, toProxylessCluster(c)));
        if (cla) r.get(ENDPOINT_TYPE)!.set(name, this.#encode(ENDPOINT_TYPE, cla));
        continue;
      }
      r.get(CLUSTER_TYPE)!.set(name, this.#encode(CLUSTER_TYPE, withInlineEndpoints(c, cla)));
      if (cla && c.type === 'EDS') r.get(ENDPOINT_TYPE)!.set(name, this.#encode(ENDPOINT_TYPE, cla));
    }
    return { version: s.version, resources: r };
  }

  #gatewayView(s: Snapshot): XdsView {
    const r: Resources = new Map([
      [LISTENER_TYPE, new Map()],
      [ROUTE_TYPE, new Map()],
      [CLUSTER_TYPE, new Map()],
      [ENDPOINT_TYPE, new Map()],
      [SECRET_TYPE, new Map()],
    ]);
    for (const l of s.listeners) r.get(LISTENER_TYPE)!.set(l.name, this.#encode(LISTENER_TYPE, l));
    for (const [name, rc] of s.routes) r.get(ROUTE_TYPE)!.set(name, this.#encode(ROUTE_TYPE, rc));
    for (const [name, c] of s.clusters) r.get(CLUSTER_TYPE)!.set(name, this.#encode(CLUSTER_TYPE, withInlineEndpoints(c, s.endpoints.get(name))));
    for (const [name, cla] of s.endpoints) if (s.clusters.get(name)?.type === 'EDS') r.get(ENDPOINT_TYPE)!.set(name, this.#encode(ENDPOINT_TYPE, cla));
    for (const [name, source] of s.secrets) {
      const m = this.#secrets(name, source);
      if (!m) continue;
      const secret: Secret = { name };
      if (m.certPem !== undefined && m.keyPem !== undefined) secret.tls_certificate = { certificate_chain: { inline_string: m.certPem }, private_key: { inline_string: m.keyPem } };
      else if (m.caPem !== undefined) secret.validation_context = { trusted_ca: { inline_string: m.caPem } };
      else continue;
      r.get(SECRET_TYPE)!.set(name, encodeSnapshotResource(SECRET_TYPE, secret));
    }
    return { version: this.#secretsVersion > 0 ? `${s.version}.s${this.#secretsVersion}` : s.version, resources: r };
  }
}

const EMPTY: XdsView = { version: '', resources: new Map() };
const EMPTY_SIDECAR: SidecarView = { listeners: new Map(), routes: new Map() };

/**
 * A cluster as Envoy expects it on the wire: only EDS clusters take their endpoints from EDS;
 * STRICT_DNS / LOGICAL_DNS / STATIC ones carry them inline in `load_assignment` (the host names a
 * DNS cluster resolves). Without it a replica or an Envoy had no endpoints for them (503 UH).
 */
function withInlineEndpoints(c: Cluster, cla: ClusterLoadAssignment | undefined): Cluster {
  if (!cla || c.type === 'EDS' || c.type === 'ORIGINAL_DST') return c;
  return { ...c, load_assignment: cla } as Cluster;
}
