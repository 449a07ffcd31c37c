// Starting one data-plane worker of `--workers N` (worker.ts) as a thread or as a node:cluster
// process, behind one small handle: the pool (pool.ts) speaks the same protocol to both.
//
// Processes are the default because they are the only way on Node 20 to serve a node:net port
// (h2, gRPC, mTLS, strict HTTP/1.1, TCP, TLS passthrough) from more than one core: `net` has no
// `reusePort` before Node 22.12 and worker threads cannot receive a socket handle. The cluster
// primary (this process) binds such a port once and hands the listening socket to every worker
// process, which accept on it directly (SCHED_NONE: the kernel wakes an idle acceptor, no hop
// through this process; NODE_CLUSTER_SCHED_POLICY=rr selects Node's round-robin instead). uWS ports
// are bound by each worker with SO_REUSEPORT, as between threads.
import cluster, { type Worker as ClusterWorker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { WORKER_INIT_ENV, type FromWorker, type ToWorker, type WorkerInit } from './protocol.js';

export interface WorkerHandle {
  /** `thread_id` of a thread, `pid` of a process (for /workers). */
  readonly ids: { thread_id: number } | { pid: number };
  send(m: ToWorker): void;
  onMessage(fn: (m: FromWorker) => void): void;
  onError(fn: (err: Error) => void): void;
  /** Once, when it has ended (at once if it already has). */
  onExit(fn: (code: number | null) => void): void;
  /** Ends it without draining. */
  kill(): void;
}

/** The worker entry: worker.js beside this file (worker.ts when run from source with tsx). */
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);

export function spawnWorker(init: WorkerInit): WorkerHandle {
  return init.mode === 'processes' ? spawnProcess(init) : spawnThread(init);
}

function spawnThread(init: WorkerInit): WorkerHandle {
  const w = new Worker(WORKER_URL, { workerData: init, name: `gatehouse-worker-${init.index}` });
  let exited = false;
  w.once('exit', () => (exited = true));
  return {
    ids: { thread_id: w.threadId },
    send: (m) => w.postMessage(m),
    onMessage: (fn) => w.on('message', fn),
    onError: (fn) => w.on('error', fn),
    onExit: (fn) => (exited ? fn(null) : w.once('exit', fn)),
    kill: () => void w.terminate(),
  };
}

let primarySetUp = false;

function spawnProcess(init: WorkerInit): WorkerHandle {
  if (!primarySetUp) {
    primarySetUp = true;
    // Read by node:cluster before the first fork; the environment variable still wins.
    if (!process.env.NODE_CLUSTER_SCHED_POLICY) cluster.schedulingPolicy = cluster.SCHED_NONE;
    // `advanced`: the v8 structured clone, as postMessage (snapshots hold Maps and Uint8Arrays).
    cluster.setupPrimary({ exec: fileURLToPath(WORKER_URL), args: [], serialization: 'advanced' });
  }
  const w: ClusterWorker = cluster.fork({ [WORKER_INIT_ENV]: JSON.stringify(init) });
  return {
    ids: { pid: w.process.pid ?? -1 },
    send: (m) => {
      // A message to a worker that is going away is dropped (its reply never comes: the caller times out).
      if (w.isConnected()) w.send(m);
    },
    onMessage: (fn) => w.on('message', (m: FromWorker) => fn(m)),
    onError: (fn) => w.on('error', fn),
    onExit: (fn) => (w.isDead() ? fn(w.process.exitCode) : w.once('exit', (code: number) => fn(code))),
    kill: () => w.process.kill('SIGKILL'),
  };
}
