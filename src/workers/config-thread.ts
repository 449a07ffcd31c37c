// The main thread's side of the configuration thread: one worker, one job at a time (reloads are
// serialised by the gateway), started on first use. If the thread cannot start or dies, the job
// runs inline (logged): a reload is never lost, only slower for the serving thread.
// With `--kubernetes` the thread also hosts the Kubernetes source (kube-host.ts): the list and
// watch traffic, the parsing of objects and their validation stay off the serving thread. Its
// events come back here; if the thread dies it is started again at once and the source lists
// anew (jobs answer `waiting` until it has); if no thread can start, the source runs inline.
// ACME's Lease and Secret (src/tls/acme-lease.ts) are worked there too, on the same connection.
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { KubeSourceOptions } from '../config/kubernetes/source.js';
import type { AcmeHostRequest } from '../tls/acme-lease.js';
import type { Logger } from '../telemetry/log.js';
import { runConfigJob, type ConfigJob, type ConfigJobResult } from './config-job.js';
import type { KubeHost, KubeHostEvent } from './kube-host.js';
import type { Snapshot } from '../controlplane/snapshot.js';
import { unpackSnapshot, type PackedSnapshot } from './snapshot-transfer.js';

type SnapshotResult = Extract<ConfigJobResult, { kind: 'snapshot' }>;

/** What the configuration thread posts back: a new snapshot comes packed (snapshot-transfer.ts). */
export type ConfigReply =
  | { id: number; result: Exclude<ConfigJobResult, SnapshotResult>; packed?: undefined; error?: undefined }
  | { id: number; packed: Omit<SnapshotResult, 'snapshot'> & { snapshot: PackedSnapshot }; sentAt?: number; result?: undefined; error?: undefined }
  | { id: number; error: string; result?: undefined; packed?: undefined };

export class ConfigThread {
  readonly #log: Logger;
  #worker: Worker | null = null;
  #seq = 0;
  #pending = new Map<number, { resolve: (r: ConfigReply) => void; reject: (e: Error) => void }>();
  #broken = false;
  #closed = false;
  #kube: { opts: KubeSourceOptions; onEvent: (e: KubeHostEvent) => void } | null = null;
  /** The last snapshot received, by its job's id: the next one comes as the difference from it. */
  #held: { id: number; snapshot: Snapshot } | null = null;
  /** The source, when it runs on this (the main) thread. */
  #inlineKube: Promise<KubeHost> | null = null;
  /** ACME's start request, sent again to a restarted thread. */
  #acmeStart: AcmeHostRequest | null = null;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Starts the Kubernetes source on the configuration thread (or inline); its events go to `onEvent`. */
  startKubernetes(opts: KubeSourceOptions, onEvent: (e: KubeHostEvent) => void): void {
    this.#kube = { opts, onEvent };
    const w = this.#ensure();
    if (w) w.postMessage({ kube: opts });
    else this.#startInlineKube();
  }

  #startInlineKube(): void {
    const k = this.#kube!;
    this.#log.warn('the Kubernetes source runs on the serving thread (no configuration thread)');
    this.#inlineKube = import('./kube-host.js').then((m) => m.hostKubernetes(k.opts, k.onEvent));
  }

  /** A request for ACME's Lease and Secret, to where the Kubernetes source runs (after startKubernetes). */
  acme(req: AcmeHostRequest): void {
    if (req.type === 'start') this.#acmeStart = req;
    if (this.#inlineKube) {
      void this.#inlineKube.then((h) => h.acme(req));
      return;
    }
    this.#ensure()?.postMessage({ acme: req });
  }

  async run(job: ConfigJob): Promise<ConfigJobResult> {
    const w = this.#ensure();
    if (!w) return runConfigJob(job);
    const id = ++this.#seq;
    let reply: ConfigReply;
    try {
      reply = await new Promise<ConfigReply>((resolve, reject) => {
        this.#pending.set(id, { resolve, reject });
        w.postMessage({ id, job, base: this.#held?.id ?? null });
      });
    } catch (err) {
      // The Kubernetes source lived on that thread: its objects are there to list again, not here.
      if (job.kubernetes) return { kind: 'waiting', problems: [] };
      this.#log.warn({ err: (err as Error).message }, 'configuration thread failed; processing this change on the serving thread');
      return runConfigJob(job);
    }
    if (reply.result) return reply.result;
    if (reply.packed) {
      // Deserialised in slices, the event loop serving requests in between (snapshot-transfer.ts).
      const { snapshot, ...rest } = reply.packed;
      // The message's time in the queue (posted → received here), then its deserialisation.
      const received = performance.now();
      const post = reply.sentAt !== undefined ? Math.round((performance.timeOrigin + received - reply.sentAt) * 10) / 10 : undefined;
      const unpacked = await unpackSnapshot(snapshot, undefined, snapshot.based ? this.#held?.snapshot : undefined);
      this.#held = { id, snapshot: unpacked };
      return { ...rest, stages: { ...rest.stages, ...(post !== undefined ? { post } : {}), unpack: Math.round((performance.now() - received) * 10) / 10 }, snapshot: unpacked };
    }
    if (job.kubernetes) {
      this.#log.error({ err: reply.error }, 'configuration job failed; the last good configuration keeps serving');
      return { kind: 'waiting', problems: [] };
    }
    this.#log.warn({ err: reply.error }, 'configuration thread failed; processing this change on the serving thread');
    return runConfigJob(job);
  }

  #ensure(): Worker | null {
    if (this.#worker || this.#broken) return this.#worker;
    let w: Worker;
    try {
      w = new Worker(new URL('./config-worker.js', import.meta.url));
    } catch (err) {
      this.#broken = true;
      this.#log.warn({ err: (err as Error).message }, 'no configuration thread; changes are processed on the serving thread');
      return null;
    }
    w.unref();
    w.on('message', (m: ConfigReply | { kubeEvent: KubeHostEvent }) => {
      if ('kubeEvent' in m) {
        this.#kube?.onEvent(m.kubeEvent);
        return;
      }
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      p.resolve(m);
    });
    const fail = (err: Error): void => {
      if (this.#worker !== w) return;
      this.#worker = null;
      // A new thread has no snapshot to send the difference from.
      this.#held = null;
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
      // The Kubernetes source went with it: a new thread lists again.
      if (this.#kube && !this.#closed) {
        this.#log.error({ err: err.message }, 'configuration thread died; restarting it and the Kubernetes watches (the last good configuration keeps serving)');
        // ACME's lease went with it: no ordering nor writing until the new thread holds it again.
        if (this.#acmeStart) this.#kube.onEvent({ type: 'acme-reset', reason: `the configuration thread died (${err.message})` });
        const again = this.#ensure();
        if (again) {
          again.postMessage({ kube: this.#kube.opts });
          if (this.#acmeStart) again.postMessage({ acme: this.#acmeStart });
        } else {
          this.#startInlineKube();
          const start = this.#acmeStart;
          if (start) void this.#inlineKube!.then((h) => h.acme(start));
        }
      }
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`configuration thread exited (${code})`)));
    this.#worker = w;
    return w;
  }

  async close(): Promise<void> {
    const w = this.#worker;
    this.#closed = true;
    this.#worker = null;
    this.#broken = true;
    if (w) await w.terminate();
    if (this.#inlineKube) await (await this.#inlineKube).stop();
  }
}
