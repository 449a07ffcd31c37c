// The configuration thread: runs reload jobs (config-job.ts) off the thread that serves requests.
// A new snapshot travels in chunks (snapshot-transfer.ts) so that the serving thread can take it
// in without one long stall.
import fs from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { parentPort } from 'node:worker_threads';
import { runConfigJob, type ConfigJob } from './config-job.js';
import { packSnapshot } from './snapshot-transfer.js';
import type { ConfigReply } from './config-thread.js';
import type { KubeSourceOptions } from '../config/kubernetes/source.js';
import type { AcmeHostRequest } from '../tls/acme-lease.js';
import type { KubeHost } from './kube-host.js';
import type { Snapshot } from '../controlplane/snapshot.js';

// A large reload keeps this thread busy for seconds: on a small machine it competes with the
// serving thread for CPU (measured: in-swap p99 2× the outside one on 2 cores). Linux lets one
// thread be niced alone (its id is in /proc/thread-self); elsewhere it stays as it is.
try {
  const tid = Number(/\/task\/(\d+)$/.exec(fs.readlinkSync('/proc/thread-self'))?.[1]);
  if (tid > 0) os.setPriority(tid, 10);
} catch {
  // not Linux, or not allowed: run at the normal priority
}

/** `--kubernetes`: the source hosted on this thread. */
let kubeHost: Promise<KubeHost> | null = null;
/**
 * The last snapshot posted, by the id of its job: the main thread names the one it holds with each
 * job, and a new snapshot travels as the difference from it (snapshot-transfer.ts).
 */
let sent: { id: number; snapshot: Snapshot } | null = null;

parentPort?.on('message', (m: { id: number; job: ConfigJob; base?: number | null } | { kube: KubeSourceOptions } | { acme: AcmeHostRequest }) => {
  if ('kube' in m) {
    // `--kubernetes`: the source lives on this thread; its events go to the main thread.
    kubeHost = import('./kube-host.js').then((h) => h.hostKubernetes(m.kube, (kubeEvent) => parentPort!.postMessage({ kubeEvent })));
    return;
  }
  if ('acme' in m) {
    // ACME's Lease and Secret, on the source's connection (the main thread sends `kube` first).
    void kubeHost?.then((h) => h.acme(m.acme));
    return;
  }
  let reply: ConfigReply;
  let transfer: ArrayBuffer[] = [];
  try {
    const result = runConfigJob(m.job);
    if (result.kind === 'snapshot') {
      const { snapshot, ...rest } = result;
      const t0 = performance.now();
      const base = sent !== null && sent.id === m.base ? sent.snapshot : undefined;
      const p = packSnapshot(snapshot, base);
      sent = { id: m.id, snapshot };
      transfer = p.transfer;
      const stages = { ...rest.stages, pack: Math.round((performance.now() - t0) * 10) / 10 };
      reply = { id: m.id, packed: { ...rest, stages, snapshot: p.packed }, sentAt: performance.timeOrigin + performance.now() };
    } else {
      reply = { id: m.id, result };
    }
  } catch (err) {
    reply = { id: m.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
  }
  parentPort!.postMessage(reply, transfer);
});
