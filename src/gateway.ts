// Composition root of `gatehouse run`: config pipeline → resolve → data plane and the embedded
// xDS control plane, the admin port, hot reload, and graceful shutdown; or, as a replica
// (`--xds-address`), snapshots from another Gatehouse's control plane → data plane. Only the CLI
// imports this file.
import { hostname } from 'node:os';
import { Counter } from 'prom-client';
import { AdminServer } from './admin/server.js';
import { loadPaths } from './config/load.js';
import { loadMeshConfigFile } from './config/mesh.js';
import type { PipelineResult } from './config/pipeline.js';
import { apiSource, DEFAULT_MESH_CONFIG, formatProblem, type ConfigSet, type GatewaySpec, type MeshConfig, type Problem, type Resource } from './config/types.js';
import { describeLabels, gatewaySelection } from './config/validate-refs.js';
import { ConfigWatcher } from './config/watch.js';
import { resolve } from './controlplane/resolve.js';
import { MESH_CERT_SECRET, type Http1Engine, type Snapshot } from './controlplane/snapshot.js';
import type { XdsReplicaClient } from './controlplane/xds/client.js';
import { XdsServer } from './controlplane/xds/server.js';
import { SnapshotViews } from './controlplane/xds/snapshot-views.js';
import { DataPlane, type ApplyResult } from './ingress/data-plane.js';
import type { Logger, LoggerOptions } from './telemetry/log.js';
import { IstioMetrics } from './telemetry/metrics.js';
import { AcmeManager } from './tls/acme.js';
import { KubeAcmeCoordination } from './tls/acme-coordination.js';
import { DEFAULT_LEASE } from './tls/acme-lease.js';
import { CaMetrics } from './tls/ca-metrics.js';
import { loadSecret } from './tls/material.js';
import { CertFileWatcher } from './tls/file-watch.js';
import { CA_CERT_ENV, GatewayIdentity, MeshCa, WorkloadCertificates, workloadTtlMs } from './tls/mesh-ca.js';
import { parseCaBundle, type CaBundle } from './tls/pem.js';
import { spiffeId } from './tls/spiffe.js';
import { loadCheckedConfig, type ConfigJob, type ConfigJobResult } from './workers/config-job.js';
import { ConfigThread } from './workers/config-thread.js';
import type { KubeHostEvent } from './workers/kube-host.js';
import type { KubeJobInfo } from './workers/kube-job.js';
import { WorkerPool } from './workers/pool.js';
import type { WorkerMode } from './workers/protocol.js';

export interface RunOptions {
  configPaths: string[];
  bind: string;
  adminPort: number;
  adminBind: string;
  xdsPort: number;
  /** Replica mode: take every configuration from this control plane (`host:port`). */
  xdsAddress?: string | undefined;
  labels: Record<string, string>;
  namespace: string;
  meshConfigFile?: string | undefined;
  /** Data-plane workers (src/workers); 1 (default): the data plane runs on the main thread. */
  workers?: number | undefined;
  /** `--worker-mode`: the workers are node:cluster processes (default) or worker threads. */
  workerMode?: WorkerMode | undefined;
  /**
   * `--http1-engine`: the HTTP/1.1 engine of plain HTTP and SIMPLE HTTPS ports whose Gateways do
   * not choose one (`gatehouse.io/http1-engine`); default `uws`.
   */
  http1Engine?: Http1Engine | undefined;
  /** The log level, passed on to the workers. */
  logLevel?: string | undefined;
  /** The log format, passed on to the workers (theirs is no terminal to tell by). */
  logOptions?: LoggerOptions | undefined;
  /** `--kubernetes`: configuration from the Kubernetes API too (beside any `--config` files). */
  kubernetes?: KubernetesOptions | undefined;
}

export interface KubernetesOptions {
  /** `--kubeconfig` (else KUBECONFIG, else the in-cluster service account). */
  kubeconfig?: string | undefined;
  /** `--watch-namespaces`; null: all namespaces. */
  watchNamespaces: string[] | null;
  /** `--cluster-domain`, for the service registry's `<name>.<ns>.svc.<domain>` hosts. */
  clusterDomain: string;
  /** `--write-status`: Istio's `status.validationMessages` on the Istio objects. */
  writeStatus?: boolean | undefined;
}

/** The configuration serving: its hash, mesh config and (read again on demand) its resources. */
interface ServingConfig {
  hash: string;
  mesh: MeshConfig;
  resources: () => readonly Resource[];
}

export class ConfigError extends Error {
  readonly problems: Problem[];
  constructor(message: string, problems: Problem[]) {
    super(message);
    this.problems = problems;
  }
}

/** How long SIGTERM lets requests in flight finish. */
export const SHUTDOWN_DRAIN_MS = 10_000;

export class Gateway {
  readonly #opts: RunOptions;
  readonly #log: Logger;
  readonly metrics: IstioMetrics;
  /**
   * The data plane. With `--workers N` (N > 1) it serves no listener: it keeps the main thread's
   * copy of the secrets (SDS for xDS, ACME, watched files) and the pool runs the listeners.
   */
  readonly dataPlane: DataPlane;
  readonly #pool: WorkerPool | null = null;
  #admin: AdminServer | null = null;
  #watcher: ConfigWatcher | null = null;
  readonly #acme: AcmeManager;
  /** `--kubernetes`: ACME's Lease and Secret, shared with the other replicas. */
  readonly #acmeKube: KubeAcmeCoordination | null = null;
  /** The mesh CA and this gateway's own workload identity (ISTIO_MUTUAL); null in replicas. */
  #identity: GatewayIdentity | null = null;
  /** The first issuance of #identity: at the first configuration with an ISTIO_MUTUAL cluster. */
  #identityStarted: Promise<void> | null = null;
  #meshRoot: CaBundle | undefined;
  /** The certificate files the configuration names (outside the config folders). */
  readonly #certWatcher = new CertFileWatcher(() => {
    this.#certsChanged = true;
    void this.reload();
  });
  #certsChanged = false;
  /** The configuration serving: its hash, mesh config and (read again on demand) its resources. */
  #config: ServingConfig | null = null;
  /** Reloads are read, validated and resolved on this thread, not the serving one. */
  #configThread: ConfigThread | null = null;
  #snapshot: Snapshot | null = null;
  #seq = 0;
  #ready = false;
  #draining = false;
  #reloading: Promise<void> | null = null;
  #reloadAgain = false;
  #changedDuringStart = false;
  /** Ports open after the last configuration applied (-1: none applied yet); "no listener" is said once per drop to 0. */
  #openPorts = -1;
  adminPort = 0;
  xdsPort = 0;
  readonly #views: SnapshotViews;
  #xds: XdsServer | null = null;
  #replica: XdsReplicaClient | null = null;
  /** Replica mode: snapshots are applied one at a time, the newest wins. */
  #replicaApplying: Promise<void> = Promise.resolve();
  /** `--kubernetes`: the accepted API objects, as the configuration thread reports them. */
  readonly #kubeObjects = new Map<string, Resource>();
  /** `--kubernetes`: waiters for the source's next "first full list" (at start, or after the thread restarted). */
  #kubeSynced: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  #kubeFailed: string | null = null;
  /** When the source reported the oldest change not yet taken up by a reload (0: none). */
  #changedAt = 0;
  readonly #rejected: Counter<'kind'>;
  readonly #reloads: Counter<'result'>;

  constructor(opts: RunOptions, log: Logger) {
    this.#opts = opts;
    this.#log = log;
    this.metrics = new IstioMetrics({ labels: opts.labels, namespace: opts.namespace });
    this.#rejected = new Counter({
      name: 'gatehouse_config_rejected_total',
      help: 'Configuration objects from the Kubernetes API refused by validation (each refused version once), by kind',
      labelNames: ['kind'],
      registers: [this.metrics.registry],
    });
    this.#reloads = new Counter({
      name: 'gatehouse_config_reloads_total',
      help: 'Configuration changes processed, by result: applied (a new snapshot), unchanged (same content or same resolved config), rejected (invalid: the last good configuration keeps serving), error',
      labelNames: ['result'],
      registers: [this.metrics.registry],
    });
    const acmeLog = log.child({ stage: 'acme' });
    if (opts.kubernetes) {
      // Several replicas share one ACME state: the Lease and the Secret `gatehouse-acme` in
      // --namespace, worked where the Kubernetes source runs (the configuration thread).
      this.#acmeKube = new KubeAcmeCoordination({
        settings: { namespace: opts.namespace, identity: acmeIdentity(), ...acmeLeaseTuning() },
        send: (r) => this.#configThread?.acme(r),
        log: acmeLog,
      });
    }
    this.#acme = new AcmeManager({ log: acmeLog, registry: this.metrics.registry, ...(this.#acmeKube ? { coordination: this.#acmeKube } : {}) });
    this.dataPlane = new DataPlane(this.metrics, log.child({ stage: 'ingress' }), {
      acme: this.#acme,
      mesh: { certificate: () => this.#identity?.certificate ?? undefined, root: () => this.#meshRoot },
      ...(opts.http1Engine ? { http1Engine: opts.http1Engine } : {}),
    });
    const secrets = this.dataPlane.secrets;
    this.#views = new SnapshotViews(
      (name, source) => {
        const c = secrets.certificate(name);
        if (c) return { certPem: c.certPem, keyPem: c.keyPem };
        const ca = secrets.ca(name);
        if (ca) return { caPem: ca.caPem };
        // A secret only a replica's Gateways use (other labels): read it now; ACME ones are issued here only.
        if (source.acme) return undefined;
        try {
          const m = loadSecret(source);
          return m.kind === 'cert' ? { certPem: m.certPem, keyPem: m.keyPem } : { caPem: m.caPem };
        } catch (err) {
          log.warn({ secret: name, err: (err as Error).message }, 'a replica asked for a certificate that cannot be read');
          return undefined;
        }
      },
      (labels) => {
        if (this.#snapshot && sameLabels(labels, opts.labels)) return this.#snapshot;
        const c = this.#config!;
        // A replica with other labels gets the gateway's own resources, never the sidecar views.
        return resolve(c.resources(), { labels, namespace: opts.namespace, bind: opts.bind, mesh: c.mesh, sidecarViews: false, ...(opts.kubernetes ? { clusterDomain: opts.kubernetes.clusterDomain } : {}) });
      },
    );
    this.dataPlane.onSecretsChanged = () => {
      this.#views.secretsChanged();
      this.#xds?.push('secret');
      this.#pool?.secretsChanged();
    };
    if ((opts.workers ?? 1) > 1) {
      this.#pool = new WorkerPool({
        workers: opts.workers!,
        mode: opts.workerMode,
        log: log.child({ stage: 'workers' }),
        logLevel: opts.logLevel ?? 'info',
        logOptions: opts.logOptions,
        labels: opts.labels,
        namespace: opts.namespace,
        secrets,
        mesh: { certificate: () => this.#identity?.certificate ?? undefined, root: () => this.#meshRoot },
        http1Engine: opts.http1Engine,
        registry: this.metrics.registry,
      });
    }
  }

  /** The data plane applies a snapshot: on this thread, or on every worker. */
  async #apply(snapshot: Snapshot): Promise<ApplyResult> {
    if (this.#identity && !this.#identity.current && usesMeshCertificate(snapshot)) await (this.#identityStarted ?? this.#startIdentity());
    if (!this.#pool) return this.dataPlane.apply(snapshot);
    // The main thread's copy of the secrets (ACME issuance, SDS for xDS clients, watched files).
    await this.dataPlane.secrets.update(snapshot.secrets ?? new Map());
    return this.#pool.apply(snapshot);
  }

  #refreshSecrets(): void {
    this.dataPlane.refreshSecrets();
    this.#pool?.refreshSecrets();
  }

  get ready(): boolean {
    return this.#ready && !this.#draining && (this.#pool ? this.#pool.allBound : this.dataPlane.allBound);
  }

  get snapshot(): Snapshot | null {
    return this.#snapshot;
  }

  async start(): Promise<void> {
    const o = this.#opts;
    if (o.adminPort > 0) {
      this.#admin = new AdminServer({
        ready: () => this.ready,
        snapshot: () => this.#snapshot,
        registry: this.metrics.registry,
        clusters: () => (this.#pool ? this.#pool.clusters() : this.dataPlane.clusters.summary()),
        listeners: () => (this.#pool ? this.#pool.listeners() : this.dataPlane.listenersSummary()),
        ...(this.#pool ? { prometheus: () => this.#pool!.prometheus(this.metrics.registry), workers: () => this.#pool!.workers() } : {}),
        syncz: () => (this.#xds ? this.#xds.syncz() : { version: null, clients: [], note: this.#replica ? `replica of ${o.xdsAddress}; no control plane here` : 'the xDS port is off (--xds-port 0)' }),
      });
      this.adminPort = await this.#admin.listen(o.adminPort, o.adminBind);
      this.#log.info({ port: this.adminPort, bind: o.adminBind }, 'admin listening');
    }
    await this.#pool?.start();
    if (o.xdsAddress) return this.#startReplica(o.xdsAddress);
    if (o.kubernetes) return this.#startKubernetes(o.kubernetes);
    // Watch before reading, so that a change made while starting is not lost: it is applied once
    // the first configuration is (reload() compares content hashes, so a no-op costs nothing).
    this.#watcher = new ConfigWatcher(o.configPaths, () => {
      if (this.#ready) void this.reload();
      else this.#changedDuringStart = true;
    });
    const result = this.#load();
    // Every problem, warnings among them: the caller prints them all before giving up.
    if (!result.config) throw new ConfigError('invalid configuration', result.problems);
    this.#logWarnings(result.problems);
    await this.#startMesh(result.config.mesh.trustDomain);
    const snapshot = this.#resolve(result.config);
    const applied = await this.#apply(snapshot);
    if (applied.errors.length > 0) throw new Error(applied.errors.join('; '));
    await this.#certWatcher.set(this.dataPlane.secretFiles());
    const initial = result.config;
    this.#config = { hash: initial.hash, mesh: initial.mesh, resources: () => initial.resources };
    this.#setSnapshot(snapshot);
    this.#log.info({ version: snapshot.version, listeners: snapshot.listeners.length, clusters: snapshot.clusters.size }, 'configuration applied');
    if (o.xdsPort > 0) {
      this.#xds = new XdsServer(this.#views, { log: this.#log.child({ stage: 'xds' }), registry: this.metrics.registry });
      this.xdsPort = await this.#xds.listen(o.bind, o.xdsPort);
    }
    await this.#watcher.ready();
    // Ready only once the watcher sees every change: a file written right after readiness is applied.
    this.#ready = true;
    await this.#reportStartup(initial.resources, snapshot);
    if (this.#changedDuringStart) void this.reload();
  }

  /** The listeners actually open (on worker 0 with `--workers N`, which serves every port). */
  async #listenerRows(): Promise<ReturnType<DataPlane['listenersSummary']>> {
    return this.#pool ? this.#pool.listeners() : this.dataPlane.listenersSummary();
  }

  /**
   * The start-up lines: what listens where (each port with its protocol, TLS mode and engine; the
   * admin and xDS ports), which Gateways were selected and which skipped (and why); a warning
   * when no port at all is open, saying what to change.
   */
  async #reportStartup(resources: readonly Resource[], snapshot: Snapshot): Promise<void> {
    const o = this.#opts;
    const rows = await this.#listenerRows();
    this.#openPorts = rows.length;
    const selection = gatewaySelection(resources, o.labels);
    const selected = new Set(selection.selected.map((g) => g.gateway));
    const listeners = rows.map((row) => {
      const port = Number(row.address.slice(row.address.lastIndexOf(':') + 1));
      const l = snapshot.listeners.find((x) => x.address.socket_address.port_value === port);
      const protocol = l?.metadata.filter_metadata.istio.protocol ?? row.protocol;
      const gateways = new Set<string>();
      const modes = new Set<string>();
      for (const g of resources) {
        if (g.kind !== 'Gateway' || !selected.has(`${g.metadata.namespace}/${g.metadata.name}`)) continue;
        for (const srv of (g.spec as GatewaySpec).servers ?? []) {
          if (srv.port?.number !== port) continue;
          gateways.add(`${g.metadata.namespace}/${g.metadata.name}`);
          if (srv.tls?.mode && ['HTTPS', 'TLS'].includes(String(srv.port.protocol).toUpperCase())) modes.add(srv.tls.mode);
        }
      }
      return { address: row.address, protocol, ...(modes.size > 0 ? { tls: [...modes].join('/') } : {}), engine: row.engine, serves: row.protocol, gateways: [...gateways] };
    });
    const admin = this.adminPort > 0 ? `${o.adminBind}:${this.adminPort}` : 'off';
    const xds = this.xdsPort > 0 ? `${o.bind}:${this.xdsPort}` : 'off';
    const where = listeners.map((l) => `${l.address} (${l.protocol}${l.tls ? ` ${l.tls}` : ''} on ${l.engine})`).join(', ');
    this.#log.info({ version: snapshot.version, listeners, admin, xds }, `ready: ${listeners.length > 0 ? `listening on ${where}` : 'no listener'}; admin ${admin === 'off' ? 'off' : `on ${admin}`}; xDS ${xds === 'off' ? 'off' : `on ${xds}`}`);
    const labels = describeLabels(o.labels);
    const at = (g: { file: string; line: number }): string => (g.file ? `${g.file}:${g.line}` : 'Kubernetes API');
    const sel = selection.selected.map((g) => `${g.gateway} (${at(g)})`).join(', ');
    const skip = selection.skipped.map((g) => `${g.gateway} (${at(g)}: selector ${g.selector})`).join(', ');
    if (resources.some((r) => r.kind === 'Gateway')) {
      this.#log.info({ labels: o.labels, selected: selection.selected, skipped: selection.skipped }, `Gateways for labels ${labels}: ${sel ? `selected ${sel}` : 'none selected'}${skip ? `; skipped ${skip}, whose selector these labels do not satisfy` : ''}`);
    }
    if (listeners.length > 0) return;
    let why: string;
    if (!resources.some((r) => r.kind === 'Gateway')) why = 'the configuration has no Gateway (a Gateway server opens each port)';
    else if (selection.selected.length === 0) {
      const first = selection.skipped[0]!;
      why = `no Gateway selects this gateway's labels ${labels}: ${skip}; run with --labels ${first.selector}`;
    } else why = `the selected Gateways (${sel}) yield no port that can be opened; see the warnings above`;
    this.#log.warn({ labels: o.labels, selected: selection.selected, skipped: selection.skipped }, `no listener: ${why}`);
  }

  /**
   * The mesh CA (state dir or GATEHOUSE_CA_CERT/KEY) and this gateway's workload certificate,
   * `spiffe://<trust domain>/ns/<--namespace>/sa/gatehouse`, rotated at 80% of its lifetime.
   * Without a usable state dir the gateway runs on, without a mesh identity (ISTIO_MUTUAL
   * connections then fail with 503 UF); CA files that were named but cannot be used stop it.
   */
  async #startMesh(trustDomain: string): Promise<void> {
    const log = this.#log.child({ stage: 'mesh-ca' });
    const ttlMs = workloadTtlMs();
    let ca: MeshCa;
    try {
      ca = await MeshCa.open({ trustDomain, log });
    } catch (err) {
      if (process.env[CA_CERT_ENV]) throw err;
      log.error({ err: (err as Error).message }, 'the mesh CA cannot be loaded or created; running without a mesh identity (ISTIO_MUTUAL and SDS default/ROOTCA are unavailable)');
      return;
    }
    ca.metrics = new CaMetrics(this.metrics.registry, { root: new Date(ca.root.validTo), chain: ca.signerNotAfter });
    const certs = new WorkloadCertificates(ca, { ttlMs });
    const identity = new GatewayIdentity(certs, spiffeId(trustDomain, this.#opts.namespace, 'gatehouse'), log);
    // Its certificate is issued when a configuration first needs it (#apply: an ISTIO_MUTUAL
    // cluster), so that a gateway without one does not load the certificate builder at all.
    this.#meshRoot = parseCaBundle(ca.rootPem, 'mesh root certificate');
    this.#identity = identity;
    identity.onRotate = () => {
      // TLS origination re-reads SDS material for new connections; SDS clients get theirs re-checked.
      this.#views.secretsChanged();
      this.#xds?.push('secret');
      this.#pool?.meshChanged();
    };
    this.#views.setMesh({
      trustDomain,
      rootPem: ca.rootPem,
      cached: (id) => certs.cached(id),
      current: (id) => certs.current(id),
      get: (id) => certs.get(id),
    });
    this.#views.onMeshIssued = () => this.#xds?.push('secret');
    log.info({ spiffeId: identity.spiffeId, root: ca.source, rootNotAfter: new Date(ca.root.validTo).toISOString() }, 'mesh CA ready; the workload certificate is issued when a configuration first needs it (ISTIO_MUTUAL)');
  }

  /**
   * Issues the gateway's workload certificate (then renewed on its own) before the first snapshot
   * that originates ISTIO_MUTUAL is applied. A failure is logged and retried at the next
   * configuration; meanwhile ISTIO_MUTUAL connections fail (503 UF) as without a mesh identity.
   */
  #startIdentity(): Promise<void> {
    const identity = this.#identity!;
    const log = this.#log.child({ stage: 'mesh-ca' });
    return (this.#identityStarted = identity.start().then(
      () => log.info({ spiffeId: identity.spiffeId, notAfter: identity.current?.notAfter.toISOString() }, 'mesh identity ready'),
      (err: unknown) => {
        this.#identityStarted = null;
        log.error({ spiffeId: identity.spiffeId, err: (err as Error).message }, 'the workload certificate cannot be issued; ISTIO_MUTUAL connections fail until it can');
      },
    ));
  }

  /** The snapshot the data plane now serves is what the control plane serves too. */
  #setSnapshot(snapshot: Snapshot): void {
    this.#snapshot = snapshot;
    this.#views.update(snapshot);
    this.#xds?.push();
  }

  /** Replica: no config files; ready once the first snapshot from the control plane is applied. */
  async #startReplica(address: string): Promise<void> {
    // grpc-js (the client) is imported by replicas only.
    const { XdsReplicaClient } = await import('./controlplane/xds/client.js');
    this.#replica = new XdsReplicaClient({
      address,
      namespace: this.#opts.namespace,
      labels: this.#opts.labels,
      log: this.#log.child({ stage: 'xds-client' }),
      onSnapshot: (s) => {
        this.#replicaApplying = this.#replicaApplying.then(() => this.#applyReplica(s));
      },
    });
    this.#replica.start();
    this.#log.info({ address }, 'replica: taking configuration from the xDS control plane');
  }

  async #applyReplica(received: Snapshot): Promise<void> {
    if (this.#draining) return;
    const started = performance.now();
    // Listeners bind to this replica's own --bind, not the control plane's.
    const bind = this.#opts.bind;
    const snapshot: Snapshot = { ...received, listeners: received.listeners.map((l) => ({ ...l, address: { socket_address: { ...l.address.socket_address, address: bind } } })) };
    const applied = await this.#apply(snapshot);
    for (const e of applied.errors) this.#log.error({ error: e }, 'listener could not be opened');
    this.#snapshot = snapshot;
    const first = !this.#ready;
    this.#ready = true;
    this.#log.info({ version: snapshot.version, listeners: snapshot.listeners.length, clusters: snapshot.clusters.size, ms: Math.round(performance.now() - started) }, 'configuration from the control plane applied');
    if (first) {
      const rows = await this.#listenerRows();
      const o = this.#opts;
      const admin = this.adminPort > 0 ? `${o.adminBind}:${this.adminPort}` : 'off';
      const where = rows.map((l) => `${l.address} (${l.protocol} on ${l.engine})`).join(', ');
      this.#log.info({ version: snapshot.version, listeners: rows, admin, controlPlane: this.#opts.xdsAddress }, `ready: ${rows.length > 0 ? `listening on ${where}` : 'no listener'}; admin ${admin === 'off' ? 'off' : `on ${admin}`}; configuration from the control plane at ${this.#opts.xdsAddress}`);
    }
    const dropped = snapshot.listeners.length === 0 && this.#openPorts !== 0;
    this.#openPorts = snapshot.listeners.length;
    if (dropped) {
      this.#log.warn({ version: snapshot.version, labels: this.#opts.labels }, `no listener: the control plane at ${this.#opts.xdsAddress} has no Gateway selecting this replica's labels ${describeLabels(this.#opts.labels)}`);
    }
  }

  /** The config pipeline plus the certificate checks (files and Secrets must load and match). */
  #load(): PipelineResult {
    const o = this.#opts;
    return loadCheckedConfig({ paths: o.configPaths, meshConfigFile: o.meshConfigFile, namespace: o.namespace, labels: o.labels });
  }

  #resolve(config: ConfigSet): Snapshot {
    const o = this.#opts;
    return this.#version(resolve(config.resources, { labels: o.labels, namespace: o.namespace, bind: o.bind, mesh: config.mesh, ...(o.xdsPort > 0 ? {} : { sidecarViews: false }) }));
  }

  /**
   * A resolved snapshot with this process's version number; its warnings are logged (with
   * `--kubernetes` the configuration thread reports them, each once, among the job's problems).
   */
  #version(s: Snapshot): Snapshot {
    this.#seq++;
    if (!this.#opts.kubernetes) this.#logWarnings(s.warnings);
    return Object.freeze({ ...s, version: `${this.#seq}-${s.hash.slice(0, 8)}` });
  }

  #logWarnings(problems: readonly Problem[]): void {
    for (const p of problems) if (p.severity === 'warning') this.#log.warn({ problem: formatProblem(p) }, `config warning: ${formatProblem(p)}`);
  }

  /** Re-reads the config; an invalid change is logged and rejected, the last good config keeps serving. */
  reload(): Promise<void> {
    if (this.#replica) return Promise.resolve();
    if (this.#reloading) {
      this.#reloadAgain = true;
      return this.#reloading;
    }
    this.#reloading = (async () => {
      try {
        do {
          this.#reloadAgain = false;
          await this.#reloadOnce();
        } while (this.#reloadAgain && !this.#draining);
      } finally {
        this.#reloading = null;
      }
    })();
    return this.#reloading;
  }

  /** The job a reload sends to the configuration thread. */
  #job(): ConfigJob {
    const o = this.#opts;
    return {
      paths: o.configPaths,
      meshConfigFile: o.meshConfigFile,
      namespace: o.namespace,
      labels: o.labels,
      bind: o.bind,
      configHash: this.#config?.hash ?? null,
      snapshotHash: this.#snapshot?.hash ?? null,
      ...(o.kubernetes ? { kubernetes: true, clusterDomain: o.kubernetes.clusterDomain } : {}),
      // Only the xDS server serves the sidecar views.
      ...(o.xdsPort > 0 ? {} : { sidecarViews: false }),
    };
  }

  async #reloadOnce(): Promise<void> {
    if (this.#draining) return;
    const started = performance.now();
    // How long the change waited for the reload before (debounced already by the source).
    const queued = this.#changedAt > 0 ? started - this.#changedAt : 0;
    this.#changedAt = 0;
    const certsChanged = this.#certsChanged;
    this.#certsChanged = false;
    const o = this.#opts;
    this.#configThread ??= new ConfigThread(this.#log.child({ stage: 'config' }));
    let r: ConfigJobResult;
    try {
      r = await this.#configThread.run(this.#job());
    } catch (err) {
      this.#reloads.inc({ result: 'error' });
      this.#log.error({ err }, 'configuration change could not be processed; the last good configuration keeps serving');
      return;
    }
    if (this.#draining) return;
    if (r.kind === 'waiting') {
      // The Kubernetes source is listing again (its thread restarted): it says when it is done.
      this.#log.debug('configuration change waits for the Kubernetes source to list every kind');
      return;
    }
    if (r.kind === 'invalid') {
      // Every problem, in validate's order: the errors and what else the change would bring.
      for (const p of r.problems) {
        if (p.severity === 'error') this.#log.error({ problem: formatProblem(p) }, `config problem: ${formatProblem(p)}`);
        else this.#logWarnings([p]);
      }
      const errors = r.problems.filter((p) => p.severity === 'error').length;
      this.#reloads.inc({ result: 'rejected' });
      this.#log.error({ problems: errors, serving: this.#snapshot?.version }, `configuration change rejected (${errors} error${errors === 1 ? '' : 's'}); the last good configuration keeps serving`);
      return;
    }
    this.#noteKube(r.kube);
    this.#reloads.inc({ result: r.kind === 'snapshot' ? 'applied' : 'unchanged' });
    if (r.kind === 'unchanged') {
      if (certsChanged) this.#refreshSecrets();
      else this.#log.debug('configuration unchanged');
      return;
    }
    this.#logWarnings(r.problems);
    if (r.kind === 'same-snapshot') {
      this.#config = this.#configOf(r.configHash, r.mesh);
      if (certsChanged) this.#refreshSecrets();
      else this.#log.info('configuration changed, resolved config unchanged; nothing to apply');
      return;
    }
    const received = performance.now();
    const snapshot = this.#version(r.snapshot);
    const applied = await this.#apply(snapshot);
    const appliedAt = performance.now();
    for (const e of applied.errors) this.#log.error({ error: e }, 'listener could not be opened');
    if (certsChanged) this.#refreshSecrets();
    await this.#certWatcher.set(this.dataPlane.secretFiles());
    this.#config = this.#configOf(r.configHash, r.mesh);
    this.#setSnapshot(snapshot);
    // Per stage (debug): the configuration job's steps, the transfer, the data plane's steps.
    const stages = { queued: Math.round(queued), ...r.stages, job: Math.round(received - started), ...applied.stages, apply: Math.round(appliedAt - received), views: Math.round(performance.now() - appliedAt) };
    this.#log.info({ version: snapshot.version, ms: Math.round(performance.now() - started), ...(this.#log.isLevelEnabled('debug') ? { stages } : {}) }, 'configuration applied');
    // The listeners this configuration asks for (one that cannot be opened is logged as an error).
    const open = snapshot.listeners.length;
    const dropped = open === 0 && this.#openPorts !== 0;
    this.#openPorts = open;
    if (dropped) {
      this.#log.warn({ version: snapshot.version, labels: o.labels }, `no listener: this configuration opens no port for this gateway's labels ${describeLabels(o.labels)}; see the config warnings above`);
    }
  }

  // ---- Kubernetes (`--kubernetes`) ---------------------------------------------------------------

  /**
   * The Kubernetes source runs on the configuration thread. Nothing is applied (and
   * `/healthz/ready` stays 503) until the first full list of every watched kind is in and the
   * configuration built from it is applied (istio#19980); then changes apply as they come, and
   * if the API server goes away the last good configuration keeps serving, ready.
   */
  async #startKubernetes(k: KubernetesOptions): Promise<void> {
    const o = this.#opts;
    const log = this.#log.child({ stage: 'kubernetes' });
    // The mesh ConfigMap is read in the root namespace that --mesh-config names (else istio-system).
    const rootNamespace = o.meshConfigFile ? loadMeshConfigFile(o.meshConfigFile).mesh.rootNamespace : DEFAULT_MESH_CONFIG.rootNamespace;
    this.#configThread ??= new ConfigThread(this.#log.child({ stage: 'config' }));
    this.#configThread.startKubernetes(
      { kubeconfig: k.kubeconfig, watchNamespaces: k.watchNamespaces, gatewayNamespace: o.namespace, rootNamespace, writeStatus: k.writeStatus === true, ...kubeTuning() },
      (e) => this.#onKubeEvent(e, log),
    );
    if (o.configPaths.length > 0) {
      this.#watcher = new ConfigWatcher(o.configPaths, () => {
        if (this.#ready) void this.reload();
        else this.#changedDuringStart = true;
      });
    }
    let r: ConfigJobResult;
    do {
      await this.#nextKubeSync();
      if (this.#draining) return;
      r = await this.#configThread.run(this.#job());
    } while (r.kind === 'waiting');
    if (r.kind === 'invalid') throw new ConfigError('invalid configuration', r.problems);
    if (r.kind !== 'snapshot') throw new Error(`unexpected first configuration result: ${r.kind}`);
    this.#noteKube(r.kube);
    this.#logWarnings(r.problems);
    await this.#startMesh(r.mesh.trustDomain);
    const snapshot = this.#version(r.snapshot);
    const applied = await this.#apply(snapshot);
    if (applied.errors.length > 0) throw new Error(applied.errors.join('; '));
    await this.#certWatcher.set(this.dataPlane.secretFiles());
    this.#config = this.#configOf(r.configHash, r.mesh);
    this.#setSnapshot(snapshot);
    this.#log.info({ version: snapshot.version, listeners: snapshot.listeners.length, clusters: snapshot.clusters.size, objects: r.kube?.objects }, 'configuration applied');
    if (o.xdsPort > 0) {
      this.#xds = new XdsServer(this.#views, { log: this.#log.child({ stage: 'xds' }), registry: this.metrics.registry });
      this.xdsPort = await this.#xds.listen(o.bind, o.xdsPort);
    }
    await this.#watcher?.ready();
    this.#ready = true;
    await this.#reportStartup(this.#config.resources(), snapshot);
    // Whatever changed while the first configuration was built (an identical result costs nothing).
    void this.reload();
  }

  /** Resolves at the source's next "first full list of every kind"; rejects if it cannot start. */
  #nextKubeSync(): Promise<void> {
    if (this.#kubeFailed) return Promise.reject(new Error(this.#kubeFailed));
    return new Promise((resolve, reject) => this.#kubeSynced.push({ resolve, reject }));
  }

  #onKubeEvent(e: KubeHostEvent, log: Logger): void {
    switch (e.type) {
      case 'log':
        log[e.level](e.fields ?? {}, e.msg);
        return;
      case 'failed': {
        this.#kubeFailed = `Kubernetes: ${e.message}`;
        for (const w of this.#kubeSynced.splice(0)) w.reject(new Error(this.#kubeFailed));
        if (this.#ready) log.error(this.#kubeFailed);
        return;
      }
      case 'synced':
        for (const w of this.#kubeSynced.splice(0)) w.resolve();
        if (this.#ready) void this.reload();
        return;
      case 'changed':
        if (this.#changedAt === 0) this.#changedAt = performance.now();
        if (this.#ready) void this.reload();
        return;
      case 'acme-lease':
      case 'acme-secret':
      case 'acme-reply':
      case 'acme-reset':
        this.#acmeKube?.handle(e);
        return;
    }
  }

  /** A job's Kubernetes part: objects refused (logged once, counted), a refused file change, the accepted objects. */
  #noteKube(k: KubeJobInfo | undefined): void {
    if (!k) return;
    for (const r of k.rejections) {
      this.#rejected.inc({ kind: r.kind });
      const what = r.kept ? 'its last good version keeps serving' : 'left out: it has no valid version to keep';
      for (const line of r.lines) this.#log.error({ problem: line, kind: r.kind, kept: r.kept }, `${line} (object rejected; ${what})`);
    }
    if (k.filesRejected.length > 0) {
      for (const p of k.filesRejected) {
        if (p.severity === 'error') this.#log.error({ problem: formatProblem(p) }, `config problem: ${formatProblem(p)}`);
      }
      const errors = k.filesRejected.filter((p) => p.severity === 'error').length;
      this.#log.error({ problems: errors }, `configuration file change rejected (${errors} error${errors === 1 ? '' : 's'}); the last good files keep serving beside the Kubernetes objects`);
    }
    const m = k.mirror;
    if (m.reset) this.#kubeObjects.clear();
    for (const id of m.deletes) this.#kubeObjects.delete(id);
    for (const u of m.upserts) {
      this.#kubeObjects.set(`${u.kind}/${u.metadata.namespace}/${u.metadata.name}`, { apiVersion: u.apiVersion, kind: u.kind, metadata: u.metadata, spec: u.spec, source: apiSource(u.resourceVersion) });
    }
  }

  /** A reloaded configuration; its resources are read again only if a replica with other labels asks. */
  #configOf(hash: string, mesh: MeshConfig): ServingConfig {
    let cached: readonly Resource[] | null = null;
    if (this.#opts.kubernetes) {
      // The files as they are now, beside the API objects accepted by the configuration thread.
      const objects = [...this.#kubeObjects.values()];
      const paths = this.#opts.configPaths;
      return { hash, mesh, resources: () => (cached ??= [...(paths.length > 0 ? loadPaths(paths).resources : []), ...objects]) };
    }
    return {
      hash,
      mesh,
      resources: () => (cached ??= this.#load().config?.resources ?? []),
    };
  }

  /** Graceful stop: readiness fails, listeners stop accepting, requests finish (bounded), then close. */
  async stop(drainMs = SHUTDOWN_DRAIN_MS): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    this.#log.info({ drainMs }, 'draining');
    for (const w of this.#kubeSynced.splice(0)) w.resolve();
    // First, so that another replica takes the ACME lease at once (it is released on the configuration thread).
    await this.#acme.close();
    await this.#watcher?.close();
    await this.#certWatcher.close();
    await this.#configThread?.close();
    this.#replica?.close();
    await this.#xds?.close();
    this.#identity?.close();
    if (this.#pool) await this.#pool.close(drainMs);
    await this.dataPlane.close(drainMs);
    await this.#admin?.close();
    this.#log.info('stopped');
  }
}

/**
 * Test hooks for the Kubernetes source's timings (reconnect backoff, recheck of absent or forbidden
 * kinds): GATEHOUSE_KUBE_BACKOFF_MS=initial,max and GATEHOUSE_KUBE_RECHECK_MS. Not a user setting.
 */
function kubeTuning(): { backoffInitialMs?: number; backoffMaxMs?: number; recheckMs?: number } {
  const out: { backoffInitialMs?: number; backoffMaxMs?: number; recheckMs?: number } = {};
  const b = process.env.GATEHOUSE_KUBE_BACKOFF_MS?.split(',').map(Number);
  if (b && b.length === 2 && b.every((x) => x > 0)) [out.backoffInitialMs, out.backoffMaxMs] = b as [number, number];
  const r = Number(process.env.GATEHOUSE_KUBE_RECHECK_MS);
  if (r > 0) out.recheckMs = r;
  return out;
}

/** This replica's name in the ACME Lease: the pod's name (POD_NAME from the downward API, else the hostname, which is the pod's name in a pod). */
function acmeIdentity(): string {
  return process.env.POD_NAME || hostname();
}

/**
 * Test hook for the ACME Lease's timings: GATEHOUSE_ACME_LEASE_SECONDS=<lease duration>,<retry
 * period> (seconds; the renew deadline is 2/3 of the duration). Default 15,5. Not a user setting.
 */
function acmeLeaseTuning(): typeof DEFAULT_LEASE {
  const v = process.env.GATEHOUSE_ACME_LEASE_SECONDS?.split(',').map(Number);
  if (!v || v.length !== 2 || !v.every((x) => x > 0)) return DEFAULT_LEASE;
  const duration = Math.max(1, Math.round(v[0]!));
  return { leaseDurationSeconds: duration, retryPeriodMs: Math.round(v[1]! * 1000), renewDeadlineMs: Math.round((duration * 2000) / 3) };
}

/** Whether a cluster of the snapshot presents the mesh certificate (SDS `default`: ISTIO_MUTUAL). */
function usesMeshCertificate(snapshot: Snapshot): boolean {
  if (snapshot.secrets?.has(MESH_CERT_SECRET)) return false;
  for (const c of snapshot.clusters.values()) {
    const configs = c.transport_socket?.typed_config.common_tls_context?.tls_certificate_sds_secret_configs;
    if (configs?.some((x) => x.name === MESH_CERT_SECRET)) return true;
  }
  return false;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}
