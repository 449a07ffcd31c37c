// `--workers N`: the data plane on N workers (node:cluster processes by default, or threads; see
// spawn.ts), each with its own uWS apps on the same ports (SO_REUSEPORT: the kernel spreads
// connections) and, as processes, its own node:net servers on the listening sockets this process
// shares. The main thread keeps the config pipeline, xDS, admin, ACME and the mesh CA. Snapshots
// are posted to every worker; apply results come back; ready = every live worker applied the
// newest snapshot and bound its ports. Metrics are merged with prom-client's AggregatorRegistry;
// /clusters and /listeners are worker 0's (it serves every listener) with request counts summed
// over the workers. A crashed worker is logged and restarted with the current snapshot, at most
// MAX_RESTARTS times per slot.
import { createServer } from 'node:net';
import { AggregatorRegistry, Gauge, type MetricObjectWithValues, type MetricValue, type Registry } from 'prom-client';
import type { Http1Engine, Snapshot } from '../controlplane/snapshot.js';
import { packSnapshot, type PackedSnapshot } from './snapshot-transfer.js';
import type { ApplyResult, DataPlane } from '../ingress/data-plane.js';
import type { Logger, LoggerOptions } from '../telemetry/log.js';
import { acmeChallenges } from '../tls/acme-challenges.js';
import { EXPIRY_METRIC, type MeshIdentityProvider, type SecretStore } from '../tls/secret-store.js';
import type { ClusterSummary } from '../upstream/cluster-manager.js';
import type { AcmeMaterial, ApplyReply, FromWorker, MeshMaterial, Query, ToWorker, WorkerInit, WorkerMode, WorkerStats } from './protocol.js';
import { spawnWorker, type WorkerHandle } from './spawn.js';

export const MAX_RESTARTS = 5;
const APPLY_TIMEOUT_MS = 30_000;
const QUERY_TIMEOUT_MS = 3_000;

export interface WorkerPoolOptions {
  workers: number;
  /** `--worker-mode`: processes (default) or threads. */
  mode?: WorkerMode | undefined;
  log: Logger;
  logLevel: string;
  logOptions?: LoggerOptions | undefined;
  labels: Record<string, string>;
  namespace: string;
  /** The main thread's copy of the secrets: ACME certificates are sent from here. */
  secrets: SecretStore;
  /** The main thread's mesh identity. */
  mesh: MeshIdentityProvider;
  /** `--http1-engine`: the default HTTP/1.1 engine of every worker's data plane. */
  http1Engine?: Http1Engine | undefined;
  /** The main thread's registry: the workers' state and restarts are exported there. */
  registry?: Registry | undefined;
}

type ListenerSummary = ReturnType<DataPlane['listenersSummary']>[number];

interface Slot {
  index: number;
  worker: WorkerHandle | null;
  started: boolean;
  restarts: number;
  /** Id of the newest apply this worker answered, and how. */
  appliedId: number;
  bound: boolean;
  pending: Map<number, (value: unknown) => void>;
}

export class WorkerPool {
  readonly #o: WorkerPoolOptions;
  readonly #log: Logger;
  readonly #slots: Slot[] = [];
  #nextId = 1;
  /** The newest apply message (restarted workers get it), and its id. */
  /** The newest snapshot, and the same packed once for every worker (copied, not transferred, to each). */
  #current: { id: number; snapshot: Snapshot; packed: PackedSnapshot } | null = null;
  /** `bind:port` of the listeners the workers hold, not probed again. */
  #held = new Set<string>();
  #closing = false;

  constructor(opts: WorkerPoolOptions) {
    this.#o = opts;
    this.#log = opts.log;
    for (let i = 0; i < opts.workers; i++) this.#slots.push({ index: i, worker: null, started: false, restarts: 0, appliedId: 0, bound: false, pending: new Map() });
    if (opts.registry) {
      const slots = this.#slots;
      const state = (s: Slot): string => this.#state(s);
      new Gauge({
        name: 'gatehouse_workers',
        help: 'Data plane workers (--workers), by state: ready, not ready, starting, down',
        labelNames: ['state'],
        registers: [opts.registry],
        collect() {
          this.reset();
          for (const st of ['ready', 'not ready', 'starting', 'down']) this.set({ state: st }, slots.filter((s) => state(s) === st).length);
        },
      });
      new Gauge({
        name: 'gatehouse_worker_restarts',
        help: 'Times a data plane worker exited and was restarted, by worker',
        labelNames: ['worker'],
        registers: [opts.registry],
        collect() {
          for (const s of slots) this.set({ worker: String(s.index) }, s.restarts);
        },
      });
    }
  }

  get mode(): WorkerMode {
    return this.#o.mode ?? 'processes';
  }

  /** Starts every worker and waits until each has loaded the data plane. */
  async start(): Promise<void> {
    acmeChallenges.onChange = () => this.#broadcast({ t: 'challenges', challenges: [...acmeChallenges] });
    await Promise.all(this.#slots.map((s) => this.#spawn(s)));
    this.#log.info({ workers: this.#slots.length, mode: this.mode }, `data plane worker ${this.mode} started`);
  }

  #spawn(slot: Slot): Promise<void> {
    const init: WorkerInit = { index: slot.index, mode: this.mode, logLevel: this.#o.logLevel, ...(this.#o.logOptions ? { logOptions: this.#o.logOptions } : {}), labels: this.#o.labels, namespace: this.#o.namespace, ...(this.#o.http1Engine ? { http1Engine: this.#o.http1Engine } : {}) };
    const worker = spawnWorker(init);
    slot.worker = worker;
    slot.started = false;
    slot.appliedId = 0;
    slot.bound = false;
    return new Promise<void>((resolveStarted, rejectStarted) => {
      worker.onMessage((m: FromWorker) => {
        if (m.t === 'started') {
          slot.started = true;
          resolveStarted();
          // A restarted worker catches up with the current configuration.
          if (this.#current) void this.#applyTo(slot, this.#current.id, this.#current.snapshot, this.#current.packed);
          return;
        }
        const done = slot.pending.get(m.id);
        slot.pending.delete(m.id);
        done?.(m.value);
      });
      worker.onError((err) => this.#log.error({ worker: slot.index, err }, 'data plane worker failed'));
      worker.onExit((code) => {
        if (slot.worker !== worker) return;
        slot.worker = null;
        slot.started = false;
        slot.bound = false;
        for (const done of slot.pending.values()) done(undefined);
        slot.pending.clear();
        if (this.#closing) return;
        rejectStarted(new Error(`data plane worker ${slot.index} exited (code ${code}) while starting`));
        if (slot.restarts >= MAX_RESTARTS) {
          this.#log.error({ worker: slot.index, code, restarts: slot.restarts }, 'data plane worker exited; not restarted again (restart limit reached); the gateway is not ready');
          return;
        }
        slot.restarts++;
        this.#log.error({ worker: slot.index, code, restart: slot.restarts }, 'data plane worker exited; restarting it with the current configuration');
        setTimeout(() => {
          if (!this.#closing) this.#spawn(slot).catch(() => undefined);
        }, 100 * slot.restarts).unref();
      });
    });
  }

  /** Sends a message expecting one reply; resolves undefined if the worker dies or does not answer in time. */
  #call(slot: Slot, make: (id: number) => ToWorker, timeoutMs: number): Promise<unknown> {
    const w = slot.worker;
    if (!w || !slot.started) return Promise.resolve(undefined);
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        slot.pending.delete(id);
        resolve(undefined);
      }, timeoutMs);
      slot.pending.set(id, (v) => {
        clearTimeout(timer);
        resolve(v);
      });
      w.send(make(id));
    });
  }

  #broadcast(m: ToWorker): void {
    for (const s of this.#slots) if (s.worker && s.started) s.worker.send(m);
  }

  #acme(snapshot: Snapshot): AcmeMaterial {
    const out: AcmeMaterial = [];
    for (const s of snapshot.secrets?.values() ?? []) {
      if (!s.acme) continue;
      const c = this.#o.secrets.certificate(s.name);
      if (c) out.push([s.name, c.certPem, c.keyPem]);
    }
    return out;
  }

  #mesh(): MeshMaterial {
    const c = this.#o.mesh.certificate();
    return { cert: c ? { certPem: c.certPem, keyPem: c.keyPem } : null, rootPem: this.#o.mesh.root()?.caPem ?? null };
  }

  async #applyTo(slot: Slot, id: number, snapshot: Snapshot, packed: PackedSnapshot): Promise<ApplyReply> {
    const r = (await this.#call(
      slot,
      (_id) => ({ t: 'apply', id: _id, snapshot: packed, acme: this.#acme(snapshot), mesh: this.#mesh(), challenges: [...acmeChallenges] }),
      APPLY_TIMEOUT_MS,
    )) as ApplyReply | undefined;
    if (!r) return { errors: [`data plane worker ${slot.index} did not apply configuration ${snapshot.version}`], allBound: false };
    if (this.#current?.id === id) {
      slot.appliedId = id;
      slot.bound = r.allBound;
    }
    return r;
  }

  /**
   * Applies a snapshot on every worker. New ports are probed first: the workers share ports
   * (SO_REUSEPORT), so a stale process on one would otherwise silently take part of its connections.
   */
  async apply(received: Snapshot): Promise<ApplyResult> {
    const errors: string[] = [];
    const wanted = new Set<string>();
    const busy = new Set<string>();
    for (const l of received.listeners) {
      const a = l.address.socket_address;
      const key = `${a.address}:${a.port_value}`;
      wanted.add(key);
      if (this.#held.has(key)) continue;
      const why = await probe(a.address, a.port_value);
      if (why) {
        busy.add(key);
        errors.push(`cannot listen on ${key}: ${why}`);
      }
    }
    // The sidecar views are served over xDS only; the workers do not need them.
    const snapshot: Snapshot = {
      ...received,
      sidecar: new Map(),
      listeners: busy.size === 0 ? received.listeners : received.listeners.filter((l) => !busy.has(`${l.address.socket_address.address}:${l.address.socket_address.port_value}`)),
    };
    const id = this.#nextId++;
    const packed = packSnapshot(snapshot).packed;
    this.#current = { id, snapshot, packed };
    const replies = await Promise.all(this.#slots.map((s) => this.#applyTo(s, id, snapshot, packed)));
    for (const r of replies) for (const e of r.errors) if (!errors.includes(e)) errors.push(e);
    this.#held = new Set([...wanted].filter((k) => !busy.has(k)));
    return { errors };
  }

  /** Every worker is running, applied the newest snapshot and bound all its listeners. */
  get allBound(): boolean {
    const id = this.#current?.id;
    return id !== undefined && this.#slots.every((s) => s.worker !== null && s.started && s.appliedId === id && s.bound);
  }

  /** ACME certificates were issued or renewed in the main thread. */
  secretsChanged(): void {
    if (this.#current) this.#broadcast({ t: 'acme', acme: this.#acme(this.#current.snapshot) });
  }

  /** The mesh identity rotated. */
  meshChanged(): void {
    this.#broadcast({ t: 'mesh', mesh: this.#mesh() });
  }

  /** Certificate files changed: every worker re-reads its file-based secrets. */
  refreshSecrets(): void {
    this.#broadcast({ t: 'refresh' });
  }

  #query(what: Query): Promise<unknown[]> {
    return Promise.all(this.#slots.map((s) => this.#call(s, (id) => ({ t: 'query', id, what }), QUERY_TIMEOUT_MS)));
  }

  /**
   * Prometheus text: the main thread's registry (process metrics, ACME, certificate expiry) and
   * every worker's (Istio metrics, clusters; a worker process's own process metrics too) summed
   * series by series (event loop lag: averaged, its max: the largest).
   */
  async prometheus(main: Registry): Promise<string> {
    const own = (await main.getMetricsAsJSON()).map((m) => ({ ...m, aggregator: m.aggregator === 'omit' ? 'first' : m.aggregator })) as MetricObjectWithValues<MetricValue<string>>[];
    const fromWorkers = ((await this.#query('metrics')).filter(Boolean) as MetricObjectWithValues<MetricValue<string>>[][]).map((list) =>
      // The main thread reports the certificates it checked; each worker would repeat them.
      list.filter((m) => m.name !== EXPIRY_METRIC),
    );
    return AggregatorRegistry.aggregate([own, ...fromWorkers] as Parameters<typeof AggregatorRegistry.aggregate>[0]).metrics();
  }

  /** Worker 0's clusters (it serves every listener) with active requests and ejections summed. */
  async clusters(): Promise<ClusterSummary[]> {
    const all = (await this.#query('clusters')) as Array<ClusterSummary[] | undefined>;
    const base = all[0] ?? all.find(Boolean) ?? [];
    const others = all.filter((x): x is ClusterSummary[] => x !== undefined && x !== base);
    return base.map((c) => {
      const peers = others.map((o) => o.find((x) => x.name === c.name)).filter((x): x is ClusterSummary => x !== undefined);
      return {
        ...c,
        endpoints: c.endpoints.map((e) => {
          let active = e.active;
          let ejections = e.ejections;
          for (const p of peers) {
            const pe = p.endpoints.find((x) => x.address === e.address);
            active += pe?.active ?? 0;
            ejections += pe?.ejections ?? 0;
          }
          return { ...e, active, ejections };
        }),
      };
    });
  }

  /** Worker 0's listeners with active requests summed over the workers. */
  async listeners(): Promise<ListenerSummary[]> {
    const all = (await this.#query('listeners')) as Array<ListenerSummary[] | undefined>;
    const base = all[0] ?? all.find(Boolean) ?? [];
    return base.map((l) => ({ ...l, active_requests: all.reduce((a, ls) => a + (ls && ls !== base ? (ls.find((x) => x.name === l.name)?.active_requests ?? 0) : 0), l.active_requests) }));
  }

  #state(s: Slot): string {
    return !s.worker ? 'down' : !s.started ? 'starting' : s.appliedId === this.#current?.id && s.bound ? 'ready' : 'not ready';
  }

  /** Per-worker state for the admin `/workers` page. */
  async workers(): Promise<unknown> {
    const stats = (await this.#query('stats')) as Array<WorkerStats | undefined>;
    return this.#slots.map((s, i) => ({
      worker: s.index,
      ...(s.worker?.ids ?? {}),
      state: this.#state(s),
      restarts: s.restarts,
      ...(stats[i] ?? {}),
    }));
  }

  /** Drain: every worker stops accepting, lets requests finish (up to `drainMs`), closes and exits. */
  async close(drainMs: number): Promise<void> {
    this.#closing = true;
    acmeChallenges.onChange = null;
    await Promise.all(
      this.#slots.map(async (s) => {
        const w = s.worker;
        if (!w) return;
        const exited = new Promise<void>((r) => w.onExit(() => r()));
        await this.#call(s, (id) => ({ t: 'drain', id, ms: drainMs }), drainMs + 5_000);
        const t = setTimeout(() => {
          this.#log.warn({ worker: s.index }, 'data plane worker did not exit after draining; terminating it');
          w.kill();
        }, 2_000);
        await exited;
        clearTimeout(t);
      }),
    );
  }
}

/** Whether a port can be bound exclusively right now (null) or why not. */
function probe(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'EADDRINUSE' ? 'address in use (another process holds the port)' : `${e.code ?? e.message}`));
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(null)));
  });
}
