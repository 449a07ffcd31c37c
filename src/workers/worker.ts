// One data-plane thread of `--workers N`: its own DataPlane (uWS apps on the shared ports, cluster
// pools, route tables) fed by snapshots from the main thread. File-based certificates are read
// here; ACME-issued and mesh-CA material comes from the main thread by message (RemoteAcme,
// RemoteMesh). Worker 0 also serves the node:net listeners (h2, gRPC, mTLS, TCP/TLS passthrough,
// forward proxy), which cannot share a port across threads on Node 20.
import { parentPort, workerData } from 'node:worker_threads';
import { Registry } from 'prom-client';
import type { Snapshot } from '../controlplane/snapshot.js';
import { unpackSnapshot } from './snapshot-transfer.js';
import { DataPlane } from '../ingress/data-plane.js';
import { UwsHttpListener } from '../ingress/uws-listener.js';
import { createLogger, type LogLevel, type Logger } from '../telemetry/log.js';
import { IstioMetrics } from '../telemetry/metrics.js';
import { acmeChallenges } from '../tls/acme-challenges.js';
import { parseCaBundle, parseServerCertificate, type CaBundle, type ServerCertificate } from '../tls/pem.js';
import type { AcmeProvider, MeshIdentityProvider } from '../tls/secret-store.js';
import type { AcmeMaterial, ApplyReply, FromWorker, MeshMaterial, Query, ToWorker, WorkerInit, WorkerStats } from './protocol.js';

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

function main(): void {
  const port = parentPort!;
  const init = workerData as WorkerInit;
  const log = createLogger(init.logLevel as LogLevel, init.logOptions).child({ worker: init.index });
  // The kernel spreads connections over the threads listening on one port (SO_REUSEPORT).
  UwsHttpListener.exclusivePort = false;
  const metrics = new IstioMetrics({ labels: init.labels, namespace: init.namespace }, new Registry(), { defaultMetrics: false });
  const acme = new RemoteAcme(log);
  const mesh = new RemoteMesh();
  const dataPlane = new DataPlane(metrics, log.child({ stage: 'ingress' }), { acme, mesh, uwsOnly: init.index > 0, ...(init.http1Engine ? { http1Engine: init.http1Engine } : {}) });
  // As the single-thread gateway: request input never ends the thread.
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception (kept serving)'));
  // A thread ending with a uWS socket open aborts the whole process: close them first, whatever
  // ends it (the main thread then restarts it). A native crash cannot be caught this way.
  process.on('exit', () => dataPlane.abortUws());
  const reply = (id: number, value: unknown): void => port.postMessage({ t: 'reply', id, value } satisfies FromWorker);
  // Snapshots apply one at a time, in order.
  let applying: Promise<void> = Promise.resolve();
  let draining = false;

  port.on('message', (m: ToWorker) => {
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
        const requests = (await metrics.registry.getSingleMetric('istio_requests_total')?.get())?.values.reduce((a, v) => a + v.value, 0) ?? 0;
        const ls = dataPlane.listenersSummary();
        return { requests, active_requests: ls.reduce((a, l) => a + l.active_requests, 0), listeners: ls.length } satisfies WorkerStats;
      }
    }
  }

  port.postMessage({ t: 'started' } satisfies FromWorker);
}

main();
