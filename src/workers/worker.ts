// One data-plane worker of `--workers N`, a thread or a node:cluster process: its own DataPlane
// (uWS apps on the shared ports, cluster pools, route tables) fed by snapshots from the main
// thread. File-based certificates are read here; ACME-issued and mesh-CA material comes from the
// main thread by message (RemoteAcme, RemoteMesh). A worker process serves every listener: its
// node:net servers listen on the socket the cluster primary shares. Among threads only worker 0
// serves the node:net listeners (h2, gRPC, mTLS, TCP/TLS passthrough, forward proxy), since Node
// 20 cannot share such a port across threads.
import { parentPort, workerData } from 'node:worker_threads';
import { Registry } from 'prom-client';
import type { Snapshot } from '../controlplane/snapshot.js';
import { unpackSnapshot } from './snapshot-transfer.js';
import { DataPlane } from '../ingress/data-plane.js';
import { NodeListener } from '../ingress/node-listener.js';
import { UwsHttpListener } from '../ingress/uws-listener.js';
import { createLogger, type LogLevel, type Logger } from '../telemetry/log.js';
import { IstioMetrics } from '../telemetry/metrics.js';
import { acmeChallenges } from '../tls/acme-challenges.js';
import { parseCaBundle, parseServerCertificate, type CaBundle, type ServerCertificate } from '../tls/pem.js';
import type { AcmeProvider, MeshIdentityProvider } from '../tls/secret-store.js';
import { WORKER_INIT_ENV, type AcmeMaterial, type ApplyReply, type FromWorker, type MeshMaterial, type Query, type ToWorker, type WorkerInit, type WorkerStats } from './protocol.js';

/** ACME certificates as the main thread's AcmeManager issued them. */
class RemoteAcme implements AcmeProvider {
  readonly #certs = new Map<string, ServerCertificate>();
  readonly #log: Logger;
  onUpdate: (name: string) => void = () => undefined;
  constructor(log: Logger) {
    this.#log = log;
  }
  /** Stores the material; with `notify`, tells the SecretStore which certificates changed. */
  set(material: AcmeMaterial, notify: boolean): void {
    for (const [name, certPem, keyPem] of material) {
      const prev = this.#certs.get(name);
      if (prev && prev.certPem === certPem && prev.keyPem === keyPem) continue;
      try {
        this.#certs.set(name, parseServerCertificate(certPem, keyPem, `ACME certificate "${name}"`, `ACME key "${name}"`));
      } catch (err) {
        this.#log.error({ secret: name, err: (err as Error).message }, 'ACME certificate from the main thread rejected');
        continue;
      }
      if (notify) this.onUpdate(name);
    }
  }
  ensure(name: string): Promise<ServerCertificate> {
    const c = this.#certs.get(name);
    return c ? Promise.resolve(c) : Promise.reject(new Error(`no ACME certificate "${name}" from the main thread`));
  }
  retain(names: ReadonlySet<string>): void {
    for (const n of [...this.#certs.keys()]) if (!names.has(n)) this.#certs.delete(n);
  }
}

class RemoteMesh implements MeshIdentityProvider {
  #cert: ServerCertificate | undefined;
  #root: CaBundle | undefined;
  #key = '';
  set(m: MeshMaterial): void {
    const key = `${m.cert?.certPem}\0${m.cert?.keyPem}\0${m.rootPem}`;
    if (key === this.#key) return;
    this.#key = key;
    this.#cert = m.cert ? parseServerCertificate(m.cert.certPem, m.cert.keyPem, 'mesh certificate', 'mesh key') : undefined;
    this.#root = m.rootPem ? parseCaBundle(m.rootPem, 'mesh root certificate') : undefined;
  }
  certificate(): ServerCertificate | undefined {
    return this.#cert;
  }
  root(): CaBundle | undefined {
    return this.#root;
  }
}

function setChallenges(entries: Array<[string, string]>): void {
  acmeChallenges.clear();
  for (const [k, v] of entries) acmeChallenges.set(k, v);
}

/** The link to the main thread: the parent port of a thread, the IPC channel of a process. */
interface Channel {
  init: WorkerInit;
  post(m: FromWorker): void;
  onMessage(fn: (m: ToWorker) => void): void;
  close(): void;
}

function channel(): Channel {
  if (parentPort) {
    const port = parentPort;
    return { init: workerData as WorkerInit, post: (m) => port.postMessage(m), onMessage: (fn) => port.on('message', fn), close: () => port.close() };
  }
  const init = process.env[WORKER_INIT_ENV];
  if (!init || !process.send) throw new Error('the data plane worker runs as a worker thread or a node:cluster process of gatehouse');
  return {
    init: JSON.parse(init) as WorkerInit,
    post: (m) => process.send?.(m),
    onMessage: (fn) => process.on('message', (m) => fn(m as ToWorker)),
    close: () => process.disconnect?.(),
  };
}

function main(): void {
  const port = channel();
  const init = port.init;
  const log = createLogger(init.logLevel as LogLevel, init.logOptions).child({ worker: init.index });
  // The kernel spreads connections over the workers listening on one port (SO_REUSEPORT).
  UwsHttpListener.exclusivePort = false;
  const processes = init.mode === 'processes';
  // node:net servers of a worker process take the listening socket the cluster primary shares.
  if (processes) NodeListener.sharedPort = true;
  // Process metrics (CPU, memory, fds, event loop): a thread's are the main thread's; a process
  // reports its own, summed with the others' in the merged /stats/prometheus.
  const metrics = new IstioMetrics({ labels: init.labels, namespace: init.namespace }, new Registry(), { defaultMetrics: processes });
  const acme = new RemoteAcme(log);
  const mesh = new RemoteMesh();
  const dataPlane = new DataPlane(metrics, log.child({ stage: 'ingress' }), { acme, mesh, uwsOnly: !processes && init.index > 0, ...(init.http1Engine ? { http1Engine: init.http1Engine } : {}) });
  // As the single-thread gateway: request input never ends the thread.
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception (kept serving)'));
  // A thread ending with a uWS socket open aborts the whole process: close them first, whatever
  // ends it (the main thread then restarts it). A native crash cannot be caught this way.
  process.on('exit', () => dataPlane.abortUws());
  const reply = (id: number, value: unknown): void => port.post({ t: 'reply', id, value } satisfies FromWorker);
  // Snapshots apply one at a time, in order.
  let applying: Promise<void> = Promise.resolve();
  let draining = false;
  // Ctrl-C reaches the whole process group: the main thread drains the worker processes, in order.
  // (Should the main process die, node:cluster ends this one as its IPC channel closes.)
  if (processes) for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => undefined);

  port.onMessage((m: ToWorker) => {
    switch (m.t) {
      case 'apply':
        applying = applying.then(async () => {
          acme.set(m.acme, false);
          mesh.set(m.mesh);
          setChallenges(m.challenges);
          let result: ApplyReply;
          try {
            if (draining) throw new Error('draining');
            // Deserialised in slices: this thread keeps serving requests meanwhile.
            const applied = await dataPlane.apply(Object.freeze(await unpackSnapshot(m.snapshot)) as Snapshot);
            result = { errors: applied.errors, allBound: dataPlane.allBound };
          } catch (err) {
            result = { errors: [`worker ${init.index}: ${(err as Error).message}`], allBound: false };
          }
          reply(m.id, result);
        });
        return;
      case 'acme':
        acme.set(m.acme, true);
        return;
      case 'mesh':
        mesh.set(m.mesh);
        return;
      case 'challenges':
        setChallenges(m.challenges);
        return;
      case 'refresh':
        dataPlane.refreshSecrets();
        return;
      case 'query':
        void answer(m.what).then(
          (v) => reply(m.id, v),
          (err: unknown) => {
            log.error({ err }, 'admin query failed');
            reply(m.id, undefined);
          },
        );
        return;
      case 'drain':
        draining = true;
        void applying
          .then(() => dataPlane.close(m.ms))
          .catch((err: unknown) => log.error({ err }, 'error while draining'))
          .then(() => {
            reply(m.id, true);
            port.close();
            // Anything still holding the loop (a timer, a socket) must not keep the thread alive.
            setTimeout(() => process.exit(0), 500).unref();
          });
        return;
    }
  });

  async function answer(what: Query): Promise<unknown> {
    switch (what) {
      case 'metrics':
        return metrics.registry.getMetricsAsJSON();
      case 'clusters':
        return dataPlane.clusters.summary();
      case 'listeners':
        return dataPlane.listenersSummary();
      case 'stats': {
        const sum = async (name: string): Promise<number> => (await metrics.registry.getSingleMetric(name)?.get())?.values.reduce((a, v) => a + v.value, 0) ?? 0;
        const ls = dataPlane.listenersSummary();
        return {
          requests: await sum('istio_requests_total'),
          tcp_connections: await sum('istio_tcp_connections_opened_total'),
          active_requests: ls.reduce((a, l) => a + l.active_requests, 0),
          listeners: ls.length,
        } satisfies WorkerStats;
      }
    }
  }

  port.post({ t: 'started' } satisfies FromWorker);
}

main();
