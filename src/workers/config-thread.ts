// The main thread's side of the configuration thread: one worker, one job at a time (reloads are
// serialised by the gateway), started on first use. If the thread cannot start or dies, the job
// runs inline (logged): a reload is never lost, only slower for the serving thread.
import { Worker } from 'node:worker_threads';
import type { Logger } from '../telemetry/log.js';
import { runConfigJob, type ConfigJob, type ConfigJobResult } from './config-job.js';
import { unpackSnapshot, type PackedSnapshot } from './snapshot-transfer.js';

type SnapshotResult = Extract<ConfigJobResult, { kind: 'snapshot' }>;

/** What the configuration thread posts back: a new snapshot comes packed (snapshot-transfer.ts). */
export type ConfigReply =
  | { id: number; result: Exclude<ConfigJobResult, SnapshotResult>; packed?: undefined; error?: undefined }
  | { id: number; packed: Omit<SnapshotResult, 'snapshot'> & { snapshot: PackedSnapshot }; result?: undefined; error?: undefined }
  | { id: number; error: string; result?: undefined; packed?: undefined };

export class ConfigThread {
  readonly #log: Logger;
  #worker: Worker | null = null;
  #seq = 0;
  #pending = new Map<number, { resolve: (r: ConfigReply) => void; reject: (e: Error) => void }>();
  #broken = false;

  constructor(log: Logger) {
    this.#log = log;
  }

  async run(job: ConfigJob): Promise<ConfigJobResult> {
    const w = this.#ensure();
    if (!w) return runConfigJob(job);
    const id = ++this.#seq;
    let reply: ConfigReply;
    try {
      reply = await new Promise<ConfigReply>((resolve, reject) => {
        this.#pending.set(id, { resolve, reject });
        w.postMessage({ id, job });
      });
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'configuration thread failed; processing this change on the serving thread');
      return runConfigJob(job);
    }
    if (reply.result) return reply.result;
    if (reply.packed) {
      // Deserialised in slices, the event loop serving requests in between (snapshot-transfer.ts).
      const { snapshot, ...rest } = reply.packed;
      return { ...rest, snapshot: await unpackSnapshot(snapshot) };
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
    w.on('message', (m: ConfigReply) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      p.resolve(m);
    });
    const fail = (err: Error): void => {
      if (this.#worker === w) this.#worker = null;
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`configuration thread exited (${code})`)));
    this.#worker = w;
    return w;
  }

  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = null;
    this.#broken = true;
    if (w) await w.terminate();
  }
}
