// Hosts the Kubernetes source (src/config/kubernetes/source.ts) on this thread - the configuration
// thread, or the main thread when none can start - and makes its objects what `--kubernetes`
// configuration jobs run on (config-job.ts). With ACME Gateways it also hosts the Kubernetes half
// of ACME's coordination (src/tls/acme-lease.ts: the Lease and the Secret `gatehouse-acme`), on the
// same connection. Loaded only with `--kubernetes`.
import { KubeClient } from '../config/kubernetes/client.js';
import { connect, type KubeConnection } from '../config/kubernetes/credentials.js';
import { KubernetesSource, type KubeSourceEvent, type KubeSourceOptions } from '../config/kubernetes/source.js';
import { AcmeKubeHost, type AcmeHostEvent, type AcmeHostRequest } from '../tls/acme-lease.js';
import { setKubeJobState } from './config-job.js';
import { KubeJobState } from './kube-job.js';

/** The source's events, ACME's, and `failed` when it cannot start (no credentials). */
export type KubeHostEvent = KubeSourceEvent | AcmeHostEvent | { type: 'failed'; message: string };

export interface KubeHost {
  /** A request for ACME's Lease and Secret (started by the first one). */
  acme(req: AcmeHostRequest): void;
  stop(): Promise<void>;
}

export async function hostKubernetes(opts: KubeSourceOptions, emit: (e: KubeHostEvent) => void): Promise<KubeHost> {
  const source = new KubernetesSource(opts, emit);
  setKubeJobState(new KubeJobState(source));
  let conn: KubeConnection | null = null;
  try {
    conn = await connect({ kubeconfig: opts.kubeconfig });
    await source.start(conn);
  } catch (err) {
    emit({ type: 'failed', message: (err as Error).message });
  }
  let acme: AcmeKubeHost | null = null;
  return {
    acme(req) {
      if (req.type === 'start') {
        if (acme || !conn) return;
        acme = new AcmeKubeHost(new KubeClient(conn), req.settings, emit);
        acme.start();
        return;
      }
      if (acme) acme.handle(req);
      else emit({ type: 'acme-reply', id: req.id, ...(req.type === 'write' ? { error: 'the Kubernetes API cannot be reached (no credentials)', lost: true } : {}) });
    },
    async stop() {
      setKubeJobState(null);
      await acme?.stop();
      await source.stop();
    },
  };
}
