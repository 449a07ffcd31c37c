// Messages between the main thread (control plane, admin, ACME, mesh CA) and the data-plane
// workers of `--workers N`: threads (postMessage) or processes (node:cluster IPC with `advanced`
// serialization, the same structured clone). Snapshots keep their Maps (frozenness is lost, which
// nothing relies on); certificates travel as PEM text and are parsed again in the worker
// (X509Certificate objects do not clone).
import type { LoggerOptions } from '../telemetry/log.js';
import type { Http1Engine } from '../controlplane/snapshot.js';
import type { PackedSnapshot } from './snapshot-transfer.js';

/**
 * How `--workers N` runs the data plane. `processes` (default): node:cluster child processes,
 * every one serving every port (uWS ports with SO_REUSEPORT, node:net ports on the listening socket
 * the primary shares). `threads`: worker threads in this process, which cannot share a node:net
 * port on Node 20, so worker 0 alone serves those (h2, gRPC, mTLS, strict, TCP, passthrough).
 */
export const WORKER_MODES = ['processes', 'threads'] as const;
export type WorkerMode = (typeof WORKER_MODES)[number];

/** The environment variable carrying a worker process's WorkerInit (JSON). */
export const WORKER_INIT_ENV = 'GATEHOUSE_WORKER_INIT';

export interface WorkerInit {
  index: number;
  mode: WorkerMode;
  logLevel: string;
  /** The main thread's log format (a worker thread's stdout is no terminal to tell by). */
  logOptions?: LoggerOptions;
  labels: Record<string, string>;
  namespace: string;
  /** `--http1-engine` (with threads, worker 0 serves the strict engine's ports, as every node:net listener). */
  http1Engine?: Http1Engine;
}

/** ACME-issued certificates by secret name: [name, certPem, keyPem]. */
export type AcmeMaterial = Array<[name: string, certPem: string, keyPem: string]>;

/** The main thread's mesh identity (SDS `default` and `ROOTCA`). */
export interface MeshMaterial {
  cert: { certPem: string; keyPem: string } | null;
  rootPem: string | null;
}

export type Query = 'metrics' | 'clusters' | 'listeners' | 'stats';

export type ToWorker =
  /** The snapshot packed in chunks (snapshot-transfer.ts): the worker takes it in without one long stall. */
  | { t: 'apply'; id: number; snapshot: PackedSnapshot; acme: AcmeMaterial; mesh: MeshMaterial; challenges: Array<[string, string]> }
  | { t: 'acme'; acme: AcmeMaterial }
  | { t: 'mesh'; mesh: MeshMaterial }
  | { t: 'challenges'; challenges: Array<[string, string]> }
  | { t: 'refresh' }
  | { t: 'query'; id: number; what: Query }
  | { t: 'drain'; id: number; ms: number };

export type FromWorker =
  | { t: 'started' }
  | { t: 'reply'; id: number; value: unknown };

export interface ApplyReply {
  errors: string[];
  allBound: boolean;
}

/** Per-worker figures for the admin `/workers` page. */
export interface WorkerStats {
  requests: number;
  /** TCP and TLS passthrough connections proxied (istio_tcp_connections_opened_total). */
  tcp_connections: number;
  active_requests: number;
  listeners: number;
}
