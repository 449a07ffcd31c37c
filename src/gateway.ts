// Composition root of `gatehouse run`: config pipeline → resolve → data plane, the admin port,
// hot reload, and graceful shutdown. Only the CLI imports this file.
import { AdminServer } from './admin/server.js';
import { loadConfig } from './config/pipeline.js';
import { formatProblem, type ConfigSet, type Problem } from './config/types.js';
import { ConfigWatcher } from './config/watch.js';
import { resolve } from './controlplane/resolve.js';
import type { Snapshot } from './controlplane/snapshot.js';
import { DataPlane } from './ingress/data-plane.js';
import type { Logger } from './telemetry/log.js';
import { IstioMetrics } from './telemetry/metrics.js';
import { AcmeManager } from './tls/acme.js';
import { checkCertificates } from './tls/check.js';
import { CertFileWatcher } from './tls/file-watch.js';

export interface RunOptions {
  configPaths: string[];
  bind: string;
  adminPort: number;
  adminBind: string;
  xdsPort: number;
  labels: Record<string, string>;
  namespace: string;
  meshConfigFile?: string | undefined;
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
  readonly dataPlane: DataPlane;
  #admin: AdminServer | null = null;
  #watcher: ConfigWatcher | null = null;
  readonly #acme: AcmeManager;
  /** The certificate files the configuration names (outside the config folders). */
  readonly #certWatcher = new CertFileWatcher(() => {
    this.#certsChanged = true;
    void this.reload();
  });
  #certsChanged = false;
  #config: ConfigSet | null = null;
  #snapshot: Snapshot | null = null;
  #seq = 0;
  #ready = false;
  #draining = false;
  #reloading: Promise<void> | null = null;
  #reloadAgain = false;
  adminPort = 0;

  constructor(opts: RunOptions, log: Logger) {
    this.#opts = opts;
    this.#log = log;
    this.metrics = new IstioMetrics({ labels: opts.labels, namespace: opts.namespace });
    this.#acme = new AcmeManager({ log: log.child({ stage: 'acme' }), registry: this.metrics.registry });
    this.dataPlane = new DataPlane(this.metrics, log.child({ stage: 'ingress' }), { acme: this.#acme });
  }

  get ready(): boolean {
    return this.#ready && !this.#draining && this.dataPlane.allBound;
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
        clusters: () => this.dataPlane.clusters.summary(),
        listeners: () => this.dataPlane.listenersSummary(),
        syncz: () => ({ active: false, note: 'the xDS control plane is not active in this version', clients: [] }),
      });
      this.adminPort = await this.#admin.listen(o.adminPort, o.adminBind);
      this.#log.info({ port: this.adminPort, bind: o.adminBind }, 'admin listening');
    }
    const result = this.#load();
    this.#logWarnings(result.problems);
    if (!result.config) throw new ConfigError('invalid configuration', result.problems.filter((p) => p.severity === 'error'));
    const snapshot = this.#resolve(result.config);
    const applied = await this.dataPlane.apply(snapshot);
    if (applied.errors.length > 0) throw new Error(applied.errors.join('; '));
    await this.#certWatcher.set(this.dataPlane.secretFiles());
    this.#config = result.config;
    this.#snapshot = snapshot;
    this.#ready = true;
    this.#log.info({ version: snapshot.version, listeners: snapshot.listeners.length, clusters: snapshot.clusters.size }, 'configuration applied');
    this.#watcher = new ConfigWatcher(o.configPaths, () => void this.reload());
    await this.#watcher.ready();
  }

  /** The config pipeline plus the certificate checks (files and Secrets must load and match). */
  #load(): ReturnType<typeof loadConfig> {
    const o = this.#opts;
    const result = loadConfig({ paths: o.configPaths, meshConfigFile: o.meshConfigFile, gatewayNamespace: o.namespace, labels: o.labels });
    if (!result.config) return result;
    const certProblems = checkCertificates(result.config.resources, { namespace: o.namespace, labels: o.labels });
    if (certProblems.length === 0) return result;
    return { problems: [...result.problems, ...certProblems] };
  }

  #resolve(config: ConfigSet): Snapshot {
    const o = this.#opts;
    const s = resolve(config.resources, { labels: o.labels, namespace: o.namespace, bind: o.bind, mesh: config.mesh });
    this.#seq++;
    this.#logWarnings(s.warnings);
    return Object.freeze({ ...s, version: `${this.#seq}-${s.hash.slice(0, 8)}` });
  }

  #logWarnings(problems: readonly Problem[]): void {
    for (const p of problems) if (p.severity === 'warning') this.#log.warn({ problem: formatProblem(p) }, 'config warning');
  }

  /** Re-reads the config; an invalid change is logged and rejected, the last good config keeps serving. */
  reload(): Promise<void> {
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

  async #reloadOnce(): Promise<void> {
    if (this.#draining) return;
    const started = performance.now();
    const certsChanged = this.#certsChanged;
    this.#certsChanged = false;
    const result = this.#load();
    if (!result.config) {
      const errors = result.problems.filter((p) => p.severity === 'error');
      for (const p of errors) this.#log.error({ problem: formatProblem(p) }, 'config problem');
      this.#log.error({ problems: errors.length, serving: this.#snapshot?.version }, 'configuration change rejected; the last good configuration keeps serving');
      return;
    }
    if (result.config.hash === this.#config?.hash) {
      if (certsChanged) this.dataPlane.refreshSecrets();
      else this.#log.debug('configuration unchanged');
      return;
    }
    this.#logWarnings(result.problems);
    let snapshot: Snapshot;
    try {
      const o2 = this.#opts;
      const s = resolve(result.config.resources, { labels: o2.labels, namespace: o2.namespace, bind: o2.bind, mesh: result.config.mesh });
      if (s.hash === this.#snapshot?.hash) {
        this.#config = result.config;
        if (certsChanged) this.dataPlane.refreshSecrets();
        else this.#log.info('configuration changed, resolved config unchanged; nothing to apply');
        return;
      }
      snapshot = this.#resolve(result.config);
    } catch (err) {
      this.#log.error({ err }, 'configuration change could not be resolved; the last good configuration keeps serving');
      return;
    }
    const applied = await this.dataPlane.apply(snapshot);
    for (const e of applied.errors) this.#log.error({ error: e }, 'listener could not be opened');
    if (certsChanged) this.dataPlane.refreshSecrets();
    await this.#certWatcher.set(this.dataPlane.secretFiles());
    this.#config = result.config;
    this.#snapshot = snapshot;
    this.#log.info({ version: snapshot.version, ms: Math.round(performance.now() - started) }, 'configuration applied');
  }

  /** Graceful stop: readiness fails, listeners stop accepting, requests finish (bounded), then close. */
  async stop(drainMs = SHUTDOWN_DRAIN_MS): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    this.#log.info({ drainMs }, 'draining');
    await this.#watcher?.close();
    await this.#certWatcher.close();
    this.#acme.close();
    await this.dataPlane.close(drainMs);
    await this.#admin?.close();
    this.#log.info('stopped');
  }
}
