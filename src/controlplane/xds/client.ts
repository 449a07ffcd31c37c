// The ADS client of a data-plane-only replica (`gatehouse run --xds-address host:port`): one
// state-of-the-world stream to another Gatehouse, as Envoy runs it. It asks for every listener
// and cluster, then for the routes and secrets the listeners name and the endpoints of the
// clusters; decodes each response back into snapshot objects (ACK), or NACKs what does not
// decode and keeps the last good; and hands a complete Snapshot to the gateway whenever the
// assembled content changes. The stream is re-opened with backoff; the gateway keeps serving its
// last snapshot meanwhile.
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { meshOnlyTelemetry } from '../build/telemetry.js';
import { DEFAULT_MESH_CONFIG } from '../../config/types.js';
import type { Cluster, ClusterLoadAssignment, Listener, RouteConfiguration, Secret, Snapshot } from '../snapshot.js';
// pino's type, not telemetry/log.ts: the control plane sits below telemetry (test/unit/architecture.test.ts).
import type { Logger } from 'pino';
import { decodeSnapshotResource } from './codec.js';
import { adsServiceClient, shortTypeName, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE } from './protos.js';

export interface ReplicaOptions {
  /** `host:port` of the control plane's xDS port. */
  address: string;
  namespace: string;
  /** `--labels`: sent as node metadata LABELS; the control plane serves the Gateways selecting them. */
  labels: Record<string, string>;
  log: Logger;
  /** A complete snapshot assembled from the control plane (called again on every change). */
  onSnapshot: (s: Snapshot) => void;
  /** Node id; default `router~<ip>~gatehouse-<host>-<pid>.<ns>~<ns>.svc.cluster.local`. */
  nodeId?: string;
}

interface TypeState {
  names: string[] | null; // null: wildcard
  version: string;
  nonce: string;
  resources: Map<string, unknown>;
}

interface DiscoveryResponse {
  version_info: string;
  resources: Array<{ type_url: string; value: Buffer }>;
  type_url: string;
  nonce: string;
}

/** How long a replica waits for named routes, endpoints or secrets that may never come. */
const WARMING_TIMEOUT_MS = 2_000;

export class XdsReplicaClient {
  readonly #o: ReplicaOptions;
  readonly #node: Record<string, unknown>;
  #client: grpc.Client | null = null;
  #call: grpc.ClientDuplexStream<unknown, DiscoveryResponse> | null = null;
  #types = new Map<string, TypeState>();
  /** SDS names the listeners and the clusters need (one SDS subscription holds both). */
  #listenerSecrets: string[] = [];
  #clusterSecrets: string[] = [];
  #closed = false;
  #backoffMs = 250;
  #retry: NodeJS.Timeout | null = null;
  #lastHash = '';
  #connected = false;
  #warming: NodeJS.Timeout | null = null;

  constructor(o: ReplicaOptions) {
    this.#o = o;
    const id = o.nodeId ?? `router~127.0.0.1~gatehouse-${hostname()}-${process.pid}.${o.namespace}~${o.namespace}.svc.cluster.local`;
    this.#node = {
      id,
      cluster: 'gatehouse',
      metadata: {
        fields: {
          GENERATOR: { stringValue: 'gatehouse' },
          NAMESPACE: { stringValue: o.namespace },
          LABELS: { structValue: { fields: Object.fromEntries(Object.entries(o.labels).map(([k, v]) => [k, { stringValue: v }])) } },
        },
      },
      user_agent_name: 'gatehouse',
      locality: {},
    };
  }

  get connected(): boolean {
    return this.#connected;
  }

  start(): void {
    const Ctor = adsServiceClient();
    this.#client = new Ctor(this.#o.address, grpc.credentials.createInsecure(), { 'grpc.keepalive_time_ms': 30_000 });
    this.#open();
  }

  close(): void {
    this.#closed = true;
    if (this.#retry) clearTimeout(this.#retry);
    if (this.#warming) clearTimeout(this.#warming);
    this.#call?.cancel();
    this.#client?.close();
  }

  #open(): void {
    if (this.#closed || !this.#client) return;
    const call = (this.#client as unknown as { StreamAggregatedResources(): grpc.ClientDuplexStream<unknown, DiscoveryResponse> }).StreamAggregatedResources();
    this.#call = call;
    // A new stream starts over: subscriptions are re-sent with the versions we hold.
    const prev = this.#types;
    this.#types = new Map();
    for (const t of [LISTENER_TYPE, CLUSTER_TYPE]) this.#subscribe(t, null, prev.get(t));
    for (const t of [ROUTE_TYPE, ENDPOINT_TYPE, SECRET_TYPE]) {
      const p = prev.get(t);
      if (p && p.names && p.names.length > 0) this.#subscribe(t, p.names, p);
    }
    call.on('data', (r: DiscoveryResponse) => {
      if (!this.#connected) this.#o.log.info({ address: this.#o.address }, 'connected to the xDS control plane');
      this.#connected = true;
      this.#backoffMs = 250;
      this.#onResponse(r);
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (this.#closed) return;
      this.#o.log.warn({ address: this.#o.address, code: err.code, err: err.details }, 'xDS stream failed; retrying (the last configuration keeps serving)');
    });
    call.on('close', () => {
      if (this.#call !== call) return;
      this.#connected = false;
      this.#call = null;
      if (this.#closed) return;
      this.#retry = setTimeout(() => this.#open(), this.#backoffMs);
      this.#backoffMs = Math.min(this.#backoffMs * 2, 5_000);
    });
  }

  #subscribe(typeUrl: string, names: string[] | null, prev?: TypeState): void {
    const st: TypeState = prev ? { ...prev, names, nonce: '' } : { names, version: '', nonce: '', resources: new Map() };
    this.#types.set(typeUrl, st);
    this.#send(typeUrl, st);
  }

  #send(typeUrl: string, st: TypeState, error?: string): void {
    this.#call?.write({
      node: this.#node,
      type_url: typeUrl,
      resource_names: st.names ?? [],
      version_info: st.version,
      response_nonce: st.nonce,
      ...(error ? { error_detail: { code: grpc.status.INVALID_ARGUMENT, message: error } } : {}),
    });
  }

  #onResponse(r: DiscoveryResponse): void {
    const st = this.#types.get(r.type_url);
    if (!st) return;
    const decoded = new Map<string, unknown>();
    try {
      for (const any of r.resources) {
        if (any.type_url !== r.type_url) throw new Error(`resource of type ${any.type_url} in a ${r.type_url} response`);
        const obj = decodeSnapshotResource(r.type_url, any.value) as { name?: string; cluster_name?: string };
        const name = obj.name ?? obj.cluster_name;
        if (!name) throw new Error('a resource without a name');
        decoded.set(name, obj);
      }
    } catch (err) {
      st.nonce = r.nonce;
      const message = `${shortTypeName(r.type_url)} version ${r.version_info}: ${(err as Error).message}`;
      this.#o.log.error({ type: shortTypeName(r.type_url), version: r.version_info, err: (err as Error).message }, 'xDS response rejected (NACK); the last good configuration keeps serving');
      this.#send(r.type_url, st, message);
      return;
    }
    st.version = r.version_info;
    st.nonce = r.nonce;
    // SotW: LDS and CDS carry every resource; RDS, EDS, SDS the ones asked for that exist.
    st.resources = decoded;
    this.#send(r.type_url, st);
    if (r.type_url === LISTENER_TYPE) {
      this.#follow(ROUTE_TYPE, routeNames([...decoded.values()] as Listener[]));
      this.#listenerSecrets = secretNames([...decoded.values()] as Listener[]);
      this.#follow(SECRET_TYPE, [...this.#listenerSecrets, ...this.#clusterSecrets]);
    } else if (r.type_url === CLUSTER_TYPE) {
      this.#follow(ENDPOINT_TYPE, [...(decoded.values() as Iterable<Cluster>)].filter((c) => c.type === 'EDS').map((c) => c.name));
      // ISTIO_MUTUAL clusters name the mesh identity over SDS (`default`, `ROOTCA`).
      this.#clusterSecrets = clusterSecretNames([...decoded.values()] as Cluster[]);
      if (this.#types.get(SECRET_TYPE) || this.#clusterSecrets.length > 0) this.#follow(SECRET_TYPE, [...this.#listenerSecrets, ...this.#clusterSecrets]);
    }
    this.#maybeEmit();
  }

  /** Subscribes a dependent type to exactly these names (Envoy re-sends the request when they change). */
  #follow(typeUrl: string, names: string[]): void {
    const sorted = [...new Set(names)].sort();
    const st = this.#types.get(typeUrl);
    if (st && st.names && st.names.join('\n') === sorted.join('\n')) return;
    if (st) for (const k of [...st.resources.keys()]) if (!sorted.includes(k)) st.resources.delete(k);
    this.#subscribe(typeUrl, sorted, st);
  }

  /** Emits when everything the listeners and clusters name has arrived (Envoy's warming). */
  #maybeEmit(force = false): void {
    const lds = this.#types.get(LISTENER_TYPE);
    const cds = this.#types.get(CLUSTER_TYPE);
    if (!lds?.version || !cds?.version) return;
    for (const t of [ROUTE_TYPE, ENDPOINT_TYPE, SECRET_TYPE]) {
      const st = this.#types.get(t);
      if (force || !st || !st.names) continue;
      const missing = st.names.filter((n) => !st.resources.has(n));
      if (missing.length === 0) continue;
      // Names the control plane does not have never arrive: after a while, go with what came.
      this.#warming ??= setTimeout(() => {
        this.#warming = null;
        const still = st.names?.filter((n) => !st.resources.has(n)) ?? [];
        if (still.length > 0) this.#o.log.warn({ type: shortTypeName(t), missing: still.slice(0, 10) }, 'xDS resources named but not served by the control plane; applying without them');
        this.#maybeEmit(true);
      }, WARMING_TIMEOUT_MS);
      return;
    }
    if (this.#warming) {
      clearTimeout(this.#warming);
      this.#warming = null;
    }
    const get = <T>(t: string): T[] => [...(this.#types.get(t)?.resources.values() ?? [])].sort((a, b) => key(a).localeCompare(key(b))) as T[];
    const listeners = get<Listener>(LISTENER_TYPE);
    const routes = get<RouteConfiguration>(ROUTE_TYPE);
    const clusters = get<Cluster>(CLUSTER_TYPE).map((c) => {
      const { load_assignment: _inline, ...rest } = c as Cluster & { load_assignment?: unknown };
      return _inline === undefined ? c : (rest as Cluster);
    });
    // DNS and static clusters bring their endpoints inline; EDS clusters' come over EDS.
    const endpoints = [
      ...get<ClusterLoadAssignment>(ENDPOINT_TYPE),
      ...get<Cluster & { load_assignment?: ClusterLoadAssignment }>(CLUSTER_TYPE).flatMap((c) => (c.load_assignment ? [{ ...c.load_assignment, cluster_name: c.name }] : [])),
    ];
    const secrets = get<Secret>(SECRET_TYPE);
    const hash = createHash('sha256').update(JSON.stringify({ listeners, routes, clusters, endpoints, secrets })).digest('hex').slice(0, 16);
    if (hash === this.#lastHash) return;
    this.#lastHash = hash;
    const snapshot: Snapshot = {
      version: `xds-${lds.version}`,
      hash,
      listeners,
      routes: new Map(routes.map((r) => [r.name, r])),
      clusters: new Map(clusters.map((c) => [c.name, c])),
      endpoints: new Map(endpoints.map((e) => [e.cluster_name, e])),
      secrets: new Map(secrets.map((s) => [s.name, s])),
      sidecar: new Map(),
      mesh: DEFAULT_MESH_CONFIG,
      // Telemetry is not served over xDS yet: a replica logs, counts and traces by the default mesh config.
      telemetry: meshOnlyTelemetry(DEFAULT_MESH_CONFIG, this.#o.labels['app'] ?? 'gatehouse'),
      warnings: [],
    };
    this.#o.onSnapshot(snapshot);
  }
}

function key(o: unknown): string {
  const r = o as { name?: string; cluster_name?: string };
  return r.name ?? r.cluster_name ?? '';
}

function routeNames(listeners: Listener[]): string[] {
  return listeners.flatMap((l) => (l.filter_chains ?? []).flatMap((fc) => (fc.filters ?? []).map((f) => f.typed_config?.rds?.route_config_name).filter((n): n is string => !!n)));
}

function clusterSecretNames(clusters: Cluster[]): string[] {
  const out: string[] = [];
  for (const c of clusters) {
    const ctx = c.transport_socket?.typed_config.common_tls_context;
    for (const s of ctx?.tls_certificate_sds_secret_configs ?? []) out.push(s.name);
    const v = ctx?.combined_validation_context?.validation_context_sds_secret_config.name;
    if (v) out.push(v);
  }
  return out;
}

function secretNames(listeners: Listener[]): string[] {
  const out: string[] = [];
  for (const l of listeners) {
    for (const fc of l.filter_chains ?? []) {
      const c = fc.transport_socket?.typed_config.common_tls_context;
      if (!c) continue;
      for (const s of c.tls_certificate_sds_secret_configs) out.push(s.name);
      const v = c.combined_validation_context?.validation_context_sds_secret_config.name;
      if (v) out.push(v);
    }
  }
  return out;
}

